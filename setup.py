"""Installation script for tf-centernet.

The core install pulls TensorFlow 2.20.x (the range that tf-models-official,
our optional extra, supports), Keras 3 and the small libraries the product
relies on. Nothing here downloads weights or data.
"""
import glob

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

EXTRAS = {
    "test": ["pytest>=8"],
    # Reading TF Model Garden / TF OD API TFRecords. Pulls tf-keras; never
    # imported by the core package.
    "model-garden": ["tf-models-official~=2.20.0"],
}

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
    # a checkout.
    data_files=[("share/tf-centernet/configs", sorted(glob.glob("configs/*.yaml")))],
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tf-centernet=tf_centernet.cli:main"]},
)
