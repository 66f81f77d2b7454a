"""Writing TFRecord detection data: `make_example` and `write_tfrecords` (``tf-centernet convert-data``).

The layout is that of `tf_centernet.data.tfrecord_format` (TF OD API keys);
the original image file bytes are stored unchanged.
"""

from __future__ import annotations

import os
from typing import List

import tensorflow as tf

from tf_centernet.data.base import Record
from tf_centernet.data.tfrecord_format import BOX_KEYS


def _feature(values, kind):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _crowd_regions(dataset, record):
    """(boxes, class indices) of the record's crowd / ignore regions."""
    if record.image_id in getattr(dataset, "ignored", {}):
        boxes, classes = dataset.ignored[record.image_id]
        return [list(b) for b in boxes], [int(c) for c in classes]
    coco = getattr(dataset, "coco", None)
    if coco is None or getattr(dataset, "crowd", "drop") != "drop":
        return [], []
    class_of = {cid: i for i, cid in enumerate(dataset.category_ids)}
    boxes, classes = [], []
    for ann in coco.imgToAnns.get(record.image_id, []):
        if ann.get("iscrowd") and ann.get("category_id") in class_of:
            x, y, w, h = ann["bbox"]
            if w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
                classes.append(class_of[ann["category_id"]])
    return boxes, classes


def make_example(dataset, record: Record) -> tf.train.Example:
    """The TF OD API `tf.train.Example` of one record (image bytes unchanged).

    Args:
        dataset: a reader (``category_ids``, ``class_names``; ``ignored``
            or a COCO ``coco`` object for crowd regions).
        record: `Record` of that dataset.

    Returns:
        `tf.train.Example`; boxes normalised by the image width / height.
    """
    encoded = record.encoded  # read once: a TFRecord record reads it from its file
    if encoded is None:
        with open(record.file_name, "rb") as handle:
            encoded = handle.read()
    height, width = record.height, record.width
    if not height or not width:
        shape = tf.io.extract_jpeg_shape(encoded) if tf.io.is_jpeg(encoded) else tf.shape(
            tf.io.decode_image(encoded, channels=3, expand_animations=False))
        height, width = int(shape[0]), int(shape[1])
    crowd_boxes, crowd_classes = _crowd_regions(dataset, record)
    boxes = [list(map(float, b)) for b in record.boxes] + [list(map(float, b)) for b in crowd_boxes]
    classes = [int(c) for c in record.classes] + crowd_classes
    is_crowd = [0] * record.num_objects + [1] * len(crowd_boxes)
    fmt = "jpeg" if encoded[:2] == b"\xff\xd8" else "png" if encoded[:4] == b"\x89PNG" else ""
    features = {
        "image/encoded": _feature([encoded], "bytes"),
        "image/format": _feature([fmt.encode()], "bytes"),
        "image/height": _feature([int(height)], "int"),
        "image/width": _feature([int(width)], "int"),
        "image/source_id": _feature([str(record.image_id).encode()], "bytes"),
        # The file system's bytes (a name that is not UTF-8 is kept as it is).
        "image/filename": _feature([os.fsencode(os.path.basename(record.file_name))], "bytes"),
        "image/object/class/label": _feature([int(dataset.category_ids[c]) for c in classes], "int"),
        "image/object/class/text": _feature([dataset.class_names[c].encode() for c in classes], "bytes"),
        "image/object/is_crowd": _feature(is_crowd, "int"),
    }
    for axis, key in enumerate(BOX_KEYS):
        size = width if axis % 2 == 0 else height
        features[key] = _feature([b[axis] / size for b in boxes], "float")
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_tfrecords(dataset, prefix: str, num_shards: int = 1) -> List[str]:
    """Writes a dataset as TFRecord shards ``PREFIX-00000-of-0000N.tfrecord``.

    Records go round-robin to the shards. Label ids are the dataset's
    ``category_ids`` (COCO ids, or ``1..n`` for VOC), with the class names
    as ``class/text``; crowd (COCO, ``crowd=drop``) and ignore regions
    (VOC ``difficult=ignore``) are written with ``is_crowd = 1``.

    Shards are written as ``.partial-NAME`` files and renamed once all are
    complete: a failed run (disk full, read-only folder) removes its partial
    files and leaves earlier shards of the same names as they were.

    Returns:
        list of the written paths.

    Raises:
        ValueError: `num_shards` < 1.
        OSError: the output cannot be written (``errno`` and ``filename``
            set, e.g. ENOSPC, EROFS, EACCES); no partial file is left.
    """
    import errno as errno_lib

    from tf_centernet.filesystem import errno_of_text

    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
    folder = os.path.dirname(os.path.abspath(prefix))
    paths = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    partials = [os.path.join(os.path.dirname(p), ".partial-" + os.path.basename(p)) for p in paths]
    writers = []
    current = folder
    try:
        os.makedirs(folder, exist_ok=True)
        for partial in partials:
            current = partial
            writers.append(tf.io.TFRecordWriter(partial))
        for number, record in enumerate(dataset.records):
            current = partials[number % num_shards]
            writers[number % num_shards].write(make_example(dataset, record).SerializeToString())
        for partial, writer in zip(partials, writers):
            current = partial
            writer.close()  # flushes: a full disk shows here
        writers = []
        for partial, path in zip(partials, paths):
            current = path
            os.replace(partial, path)
    except (OSError, tf.errors.OpError) as error:
        for writer in writers:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed below
                pass
        for partial in partials:
            try:
                os.remove(partial)
            except OSError:
                pass  # never created
        number = getattr(error, "errno", None) or errno_of_text(getattr(error, "message", error)) or errno_lib.EIO
        raise OSError(number, os.strerror(number), current) from None
    return paths
