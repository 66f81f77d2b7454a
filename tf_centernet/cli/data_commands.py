"""The data and conversion commands of `tf-centernet`.

* ``check-data``: report on the training and validation data
  (`tf_centernet.data.check`);
* ``convert-data``: write the data as TFRecord shards (TF OD API layout,
  `tf_centernet.data.tfrecord`);
* ``convert``: an authors' PyTorch release snapshot -> a model directory
  (`tf_centernet.convert`).

The parser and the shared helpers (`_load_config`) are in
`tf_centernet.cli`.
"""

from __future__ import annotations

import logging
import os

from tf_centernet.cli import _load_config
from tf_centernet.config import input_config

logger = logging.getLogger("tf_centernet")


def _splits(config, which):
    names = ["train", "val"] if which == "both" else [which]
    return [s for s in names if input_config(config, s).annotations]


def cmd_check_data(args):
    """Reads the training and validation data once and prints the report."""
    from tf_centernet.data.check import check_dataset
    from tf_centernet.data.records import open_dataset

    config = _load_config(args)
    failed, train_names = False, None
    for split in _splits(config, args.split):
        dataset = open_dataset(config, split, class_names=train_names)
        report = check_dataset(dataset, config, decode_images=not args.no_decode)
        if split == "train":
            train_names = list(dataset.class_names)
        elif train_names is not None and list(dataset.class_names) != train_names:
            report.errors.append(f"classes {dataset.class_names} differ from training's {train_names}")
        print(report.text())
        failed = failed or bool(report.errors)
    print("check-data:", "problems found (see ERROR lines)" if failed else "OK")
    return 1 if failed else 0


def cmd_convert_data(args):
    """Writes the configured data as TFRecord shards plus classes.txt.

    --output is checked for writability first (`check_writable`); shards
    are renamed into place only when complete (`write_tfrecords`).
    """
    from tf_centernet.data.records import open_dataset
    from tf_centernet.data.tfrecord import write_class_file, write_tfrecords
    from tf_centernet.filesystem import check_writable

    config = _load_config(args)
    check_writable(args.output, "convert-data --output")  # before reading and encoding the data
    os.makedirs(args.output, exist_ok=True)
    names = None
    for split in _splits(config, args.split):
        dataset = open_dataset(config, split, class_names=names)
        names = names or list(dataset.class_names)
        paths = write_tfrecords(dataset, os.path.join(args.output, split), args.shards)
        logger.info("%s: %d images -> %s", split, len(dataset), ", ".join(paths))
        pattern = os.path.join(args.output, f"{split}-*-of-*.tfrecord")
        section = "train_data" if split == "train" else "validation_data"
        print(f"{section}.annotations={pattern}")
    if names:
        classes = write_class_file(names, os.path.join(args.output, "classes.txt"))
        print(f"train_data.classes={classes} validation_data.classes={classes}")
    return 0


def cmd_convert(args):
    """Converts a release snapshot into a model directory (`tf_centernet.convert`)."""
    from tf_centernet.convert import convert_snapshot

    config = _load_config(args)
    path = convert_snapshot(args.snapshot, config, args.model_dir, classes_file=args.classes)
    logger.info(
        "Converted %s -> %s; run e.g. tf-centernet detect --model-dir %s IMAGE", args.snapshot, path, args.model_dir
    )
    return 0
