"""Datasets (COCO, Pascal VOC, TFRecord: `records.open_dataset`), augmentation and the `tf.data` input pipeline (docs/reference.md §4 and 6).

Imports point one way (tests/test_data_layering.py checks there is no circle):
``paths, images, classes <- base <- coco, voc (voc_layout), tfrecord
(tfrecord_format, tfrecord_write) <- records (the reader registry) <-
pipeline (transforms; tfrecord_stream for TFRecord data), check``.
"""

from tf_centernet.data.augment import (
    apply_color_jitter,
    augment_for_training,
    clip_boxes,
    color_jitter,
    crop_border,
    flip_horizontal,
    full_image_crop,
    grayscale,
    lighting,
    normalize,
    random_crop,
    random_flip,
    resize,
)
from tf_centernet.data.base import CocoRecord, Reader, Record
from tf_centernet.data.coco import CocoDataset, load_image
from tf_centernet.data.pipeline import build_train_dataset, decode_image
from tf_centernet.data.records import READERS, coco_ground_truth, detect_format, open_dataset
from tf_centernet.data.synthetic import make_synthetic_coco

__all__ = [
    "CocoDataset",
    "CocoRecord",
    "READERS",
    "Reader",
    "Record",
    "apply_color_jitter",
    "coco_ground_truth",
    "detect_format",
    "open_dataset",
    "augment_for_training",
    "build_train_dataset",
    "clip_boxes",
    "color_jitter",
    "crop_border",
    "decode_image",
    "flip_horizontal",
    "full_image_crop",
    "grayscale",
    "lighting",
    "load_image",
    "make_synthetic_coco",
    "normalize",
    "random_crop",
    "random_flip",
    "resize",
]
