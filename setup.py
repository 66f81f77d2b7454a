"""Installation script for tf-centernet.

The core install pulls TensorFlow 2.20.x (the range that tf-models-official,
our optional extra, supports), Keras 3 and the small libraries the product
relies on. Nothing here downloads weights or data.
"""
import glob
import os

from setuptools import find_packages, setup

CORE = [
    "tensorflow>=2.20,<2.21",
    "keras>=3.10,<4",
    "numpy>=1.26",
    "pycocotools>=2.0.7",
    "opencv-python-headless>=4.9",
    "omegaconf>=2.3",
    "pyyaml>=6.0",
    "tqdm>=4.66",
]

# Deployment runtimes (`tf-centernet export`). The ONNX handlers in
# tf_centernet/export.py use tf2onnx's graph API, checked with 1.17.
TFLITE = ["ai-edge-litert>=1.2"]
ONNX = ["tf2onnx>=1.16,<1.18", "onnx>=1.14", "onnxruntime>=1.17"]

# Reading the authors' PyTorch snapshots (`tf-centernet convert`,
# `train --init-from SNAPSHOT`): torch.load(weights_only=True) reads their
# legacy and zip formats. The CPU build is enough: install it from PyTorch's
# CPU wheel index (--extra-index-url https://download.pytorch.org/whl/cpu).
CONVERT = ["torch>=2.1,<3"]

EXTRAS = {
    # The export tests run TFLite and onnxruntime (about 55 MB of wheels).
    "test": ["pytest>=8", *TFLITE, *ONNX],
    "tflite": TFLITE,
    "onnx": ONNX,
    "convert": CONVERT,
    # Reading TF Model Garden / TF OD API TFRecords. Pulls tf-keras; never
    # imported by the core package.
    "model-garden": ["tf-models-official~=2.20.0"],
}

# Sources of the compiled corner-pooling ops. `tf_centernet.ops.custom`
# compiles them on first use (nothing is compiled at install time): from the
# checkout for an editable install, from share/tf-centernet/custom_ops for a
# regular one.
CUSTOM_OPS_FILES = [
    (os.path.join("share", "tf-centernet", folder), sorted(glob.glob(os.path.join(folder, pattern))))
    for folder, pattern in [
        ("custom_ops", "build.py"),
        ("custom_ops", "README.md"),
        ("custom_ops/cc/ops", "*.cc"),
        ("custom_ops/cc/kernels", "*"),
        ("custom_ops/cuda_check", "*"),
    ]
]

setup(
    name="tf-centernet",
    version="0.1.0",
    description=(
        "CenterNet (keypoint triplets) and CornerNet object detectors in "
        "TensorFlow 2 / Keras 3"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_centernet", "tf_centernet.*"]),
    # Named configurations, found by `tf_centernet.config` when not run from
    # a checkout, and the compiled pooling ops' sources (see CUSTOM_OPS_FILES).
    data_files=[("share/tf-centernet/configs", sorted(glob.glob("configs/*.yaml"))), *CUSTOM_OPS_FILES],
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tf-centernet=tf_centernet.cli:main"]},
)
