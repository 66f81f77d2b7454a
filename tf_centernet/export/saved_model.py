"""SavedModel export for TF Serving: ``serving_default`` and ``serving_bytes``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Optional, Sequence

import tensorflow as tf

from tf_centernet.export.common import prepare_output, quiet_absl
from tf_centernet.export.module import DEFAULT_MAX_MEGAPIXELS, DetectionModule, label_map

logger = logging.getLogger("tf_centernet")

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
LABEL_MAP_FILE = "label_map.json"


def export_saved_model(
    model, output: str,
    category_ids: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    flip_test: Optional[bool] = None,
    max_megapixels: Optional[float] = DEFAULT_MAX_MEGAPIXELS,
) -> str:
    """Writes a SavedModel with the ``serving_default`` and ``serving_bytes`` signatures.

    ``serving_default``: ``images`` uint8 `(batch, height, width, 3)` (RGB,
    any size; one size per request batch). ``serving_bytes``:
    ``image_bytes`` string `(batch,)` of encoded JPEG/PNG images, of any
    sizes, each detected on its own. Both return the `to_detection_api`
    dict. The label map (``[{"id": ..., "name": ...}]`` in class order) is
    saved as the asset ``assets/label_map.json``.

    TF Serving wants a numbered version folder: write to
    ``.../MODEL_NAME/1``.

    Args:
        model: a built detector (see `DetectionModule`).
        output: str. SavedModel folder (created; must not hold a SavedModel).
        category_ids: sequence of ints or None. Defaults to the model's
            (`tf_centernet.export.module.label_map`).
        class_names: sequence of str or None. Defaults likewise.
        flip_test: bool or None. Defaults to the decoder's.
        max_megapixels: float or None. ``serving_bytes`` rejects images whose
            header declares more (million pixels) before decoding them;
            None: no limit. Defaults to `DEFAULT_MAX_MEGAPIXELS` (8).

    Returns:
        str. The absolute path of the SavedModel folder.

    Raises:
        FileExistsError: `output` already holds a SavedModel.
    """
    output = os.path.abspath(output)
    if os.path.exists(os.path.join(output, "saved_model.pb")):
        raise FileExistsError(f"{output} already holds a SavedModel; choose a new version folder.")
    category_ids, class_names = label_map(model, category_ids, class_names)
    module = DetectionModule(
        model, category_ids=category_ids, flip_test=flip_test, max_megapixels=max_megapixels
    )
    if os.path.isdir(output) and os.listdir(output):
        raise FileExistsError(f"{output} is not empty; choose a new version folder.")
    parent = prepare_output(os.path.dirname(output), is_dir=True)
    # Written beside its place and renamed when complete: an interrupted
    # export (SIGTERM, a full disk) leaves no version folder TF Serving would load.
    partial = os.path.join(parent, ".partial-" + os.path.basename(output))
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write(module, partial, class_names)
        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked above)
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("Wrote SavedModel %s (signatures %s, %s)", output, SERVING_DEFAULT, SERVING_BYTES)
    return output


def _write(module, output, class_names):
    """The SavedModel of `module` (signatures, label map asset) in folder `output`."""
    with tempfile.TemporaryDirectory() as tmp:
        label_path = os.path.join(tmp, LABEL_MAP_FILE)
        entries = [{"id": int(i), "name": str(n)} for i, n in zip(module.category_ids, class_names)]
        with open(label_path, "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
        module.label_map = tf.saved_model.Asset(label_path)
        signatures = {
            SERVING_DEFAULT: module.serve.get_concrete_function(),
            SERVING_BYTES: module.serve_bytes.get_concrete_function(),
        }
        module.heads.get_concrete_function()
        with quiet_absl():
            tf.saved_model.save(module, output, signatures=signatures)
