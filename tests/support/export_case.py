"""The export tests' detector, images and comparisons (tests/export/).

The detector is the `demo` CenterNet (small hourglass) with random weights,
one class (COCO category 18, "dog") and its embedding heads scaled by 0.01:
untrained, a 3-class model's top-left and bottom-right corners rarely share
a class and every pair fails the embedding test, so nothing would be
detected; this one finds 2-35 boxes per coco-tiny image, which makes the
comparisons about real detections, after soft-NMS.

The fixtures built from these (tests/export/conftest.py) are module-scoped:
the export tests are split over several files so that ``-n 2 --dist
loadfile`` can run them in both processes at once.
"""

import json
import os
import types

import cv2
import numpy as np
import pytest

from support.tiny import TINY_MODEL

CATEGORY_ID = 18
FIXED_SIZE = (240, 320)  # (height, width) of the TFLite and ONNX exports
NUM_IMAGES = 3


def make_detector(root):
    """The test detector, its checkpoint and the config overrides to rebuild it, under `root`."""
    import keras

    from tf_centernet.config import load_config
    from tf_centernet.inference import Predictor
    from tf_centernet.models import build_model

    annotations = str(root / "categories.json")
    with open(annotations, "w", encoding="utf-8") as f:
        json.dump({"images": [], "annotations": [], "categories": [{"id": CATEGORY_ID, "name": "dog"}]}, f)
    # An absolute model dir: the demo config's relative one would read whatever
    # classes.json a demo run left in the working directory.
    overrides = [
        "model.num_classes=1", "decode.top_k=70", f"validation_data.annotations={annotations}",
        f"train.model_dir={root / 'model'}", *TINY_MODEL,
    ]
    config = load_config("demo", overrides)
    keras.utils.set_random_seed(0)
    model = build_model(config.model, config.loss, config.decode, config.data)
    model.category_ids, model.class_names = [CATEGORY_ID], ["dog"]
    size = config.data.input_size
    model.build((None, size, size, 3))
    for modules in model.stack_modules:
        for key in ("tl_embedding", "br_embedding"):
            kernel = modules[key].out.kernel
            kernel.assign(kernel * 0.01)
    checkpoint = str(root / "ckpt-0.weights.h5")
    model.save_weights(checkpoint)
    return types.SimpleNamespace(
        config=config, overrides=overrides, model=model, checkpoint=checkpoint,
        predictor=Predictor(model, config), root=root,
    )


def load_images(coco_tiny):
    """Real coco-tiny images: files, full-size RGB arrays, and FIXED_SIZE copies."""
    _, image_dir = coco_tiny["val"]
    files = [os.path.join(image_dir, f) for f in sorted(os.listdir(image_dir))[:NUM_IMAGES]]
    full = [cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB) for f in files]
    height, width = FIXED_SIZE
    fixed = [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in full]
    return types.SimpleNamespace(files=files, full=full, fixed=fixed)


def to_pixels(boxes, height, width):
    """Normalised [ymin, xmin, ymax, xmax] -> [x1, y1, x2, y2] pixels."""
    boxes = np.asarray(boxes, np.float64) * [height, width, height, width]
    return boxes[:, [1, 0, 3, 2]]


def exported_detections(out, index, height, width):
    """One image's detections from Detection-API outputs, like `predict_images`."""
    n = int(out["num_detections"][index])
    return {
        "boxes": to_pixels(out["detection_boxes"][index, :n], height, width),
        "scores": np.asarray(out["detection_scores"][index, :n]),
        "classes": np.asarray(out["detection_classes"][index, :n]),
        "padding": (
            np.asarray(out["detection_boxes"][index, n:]),
            np.asarray(out["detection_scores"][index, n:]),
            np.asarray(out["detection_classes"][index, n:]),
        ),
    }


def assert_same_detections(ref, got, box_tol, score_tol):
    """Same count, classes and order; boxes and scores within the tolerances."""
    assert len(got["scores"]) == len(ref["scores"])
    np.testing.assert_array_equal(got["classes"], np.full(len(ref["classes"]), CATEGORY_ID))
    np.testing.assert_allclose(got["boxes"], ref["boxes"], atol=box_tol, rtol=0)
    np.testing.assert_allclose(got["scores"], ref["scores"], atol=score_tol, rtol=0)
    for padding in got["padding"]:
        assert not np.any(padding)


def run_tflite(path, image):
    """The TFLite file's detections of one image (no Flex or custom ops in it)."""
    pytest.importorskip("ai_edge_litert")
    from tf_centernet import export as export_lib

    interpreter = export_lib.tflite_interpreter(path, num_threads=2)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    return interpreter.get_signature_runner()(images=image[None])
