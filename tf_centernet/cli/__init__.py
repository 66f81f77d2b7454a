"""The `tf-centernet` command line.

Commands:

* ``train``: train or resume (`tf_centernet.training.train`);
* ``evaluate``: COCO AP of a trained model on the validation set;
* ``detect``: draw detections on images and write them as COCO JSON;
* ``export``: SavedModel (TF Serving), TFLite, TF-TRT or ONNX (`tf_centernet.export`);
* ``demo``: the whole loop on a synthetic data set it creates (no download).
* ``check-data``: report on the training and validation data (exit 1 when
  something would make training wrong);
* ``convert-data``: write the data as TFRecord shards (TF OD API layout);
* ``convert``: an authors' PyTorch release snapshot -> a model directory
  (`tf_centernet.convert`; needs the ``convert`` extra, torch).
* ``build-ops``: compile the corner-pooling custom ops into their cache
  (`tf_centernet.ops.custom`; otherwise built on first use).

Every command takes ``--config`` (a name in ``configs/`` or a YAML path) and
``--set key=value ...`` overrides with dotted keys, e.g.
``--set train.total_steps=100 data.input_size=127``, anywhere on the line
and repeatable (`split_set_values`); ``tf-centernet --version`` prints the
versions.

This module holds the parser, `main` and the helpers the commands share;
the commands are in `model_commands` (train, evaluate, detect, export,
demo, build-ops) and `data_commands` (check-data, convert-data, convert).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

logger = logging.getLogger("tf_centernet")


def _setup_logging(verbose):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load_config(args):
    from tf_centernet.config import load_config
    from tf_centernet.data.paths import display_path
    from tf_centernet.model_dir import CommandLineError, ModelDirectory, check_model_dir

    overrides = list(args.set or [])
    name = args.config
    model_dir = getattr(args, "model_dir", None)
    if model_dir:  # exists (evaluate, detect, export) or can be created and written (train, convert)
        check_model_dir(model_dir, must_exist=args.command not in ("train", "convert"))
    if name is None and model_dir and os.path.isfile(ModelDirectory(model_dir).config_yaml):
        name = ModelDirectory(model_dir).config_yaml
    if name is None and model_dir:
        raise CommandLineError(
            f"--model-dir {display_path(model_dir)} has no config.yaml (written by `train`): "
            "give --config NAME_OR_PATH too, or the directory of a trained model."
        )
    if name is None:
        raise CommandLineError("give --config NAME_OR_PATH, or --model-dir of a trained model.")
    if getattr(args, "classes", None):
        overrides += [f"train_data.classes={args.classes}", f"validation_data.classes={args.classes}"]
    if model_dir:
        # The model directory is the unit: a copied model's config.yaml keeps
        # the train.model_dir it was trained in, which must not win.
        overrides.append(f"train.model_dir={os.path.abspath(model_dir)}")
    if getattr(args, "init_from", None):
        overrides.append(f"train.init_from={os.path.abspath(args.init_from)}")
    return load_config(name, overrides)


def _checkpoint(args, config):
    return args.checkpoint or getattr(args, "model_dir", None) or config.train.model_dir


def _class_names(config, args):
    """(class names, COCO category ids) by class index: see `class_labels`."""
    from tf_centernet.data.classes import class_labels

    category_ids, names = class_labels(config, getattr(args, "model_dir", None))
    return names, category_ids


@contextlib.contextmanager
def _sigterm_stops(command):
    """SIGTERM ends `command` with status 143 through Python's own unwinding, so its clean-ups run.

    (Without it the process dies at once and, for `export`, a half-written
    folder would stay.)
    """
    def stop(signum, frame):
        logger.error("Interrupted by SIGTERM: %s stopped, nothing was written.", command)
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


SET_HELP = (
    "config overrides, anywhere on the line and repeatable: --set train.total_steps=100 data.input_size=255; "
    "only KEY=VALUE words are taken, so image paths may follow"
)


def _version_line():
    """``tf-centernet X (TensorFlow Y, Keras Z, keras-hub W)`` from the installed metadata (no import)."""
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    from tf_centernet import __version__

    return (f"%(prog)s {__version__} (TensorFlow {version('tensorflow')}, Keras {version('keras')}, "
            f"keras-hub {version('keras-hub')})")


def split_set_values(argv):
    """``--set a=1 b=2 photo.jpg`` -> ``--set a=1 --set b=2 photo.jpg``.

    `--set` takes the ``KEY=VALUE`` words that follow it, and only those, so
    that positional arguments (the images of `detect`) may come after it;
    ``--set=KEY=VALUE`` works too. argparse then collects every override
    (``action="append"``).
    """
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--set":
            i += 1
            start = len(out)
            while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
                out += ["--set", argv[i]]
                i += 1
            if len(out) == start:
                out.append("--set")  # no KEY=VALUE: argparse says what is missing
            continue
        out += ["--set", token[len("--set="):]] if token.startswith("--set=") else [token]
        i += 1
    return out


def build_parser():
    from tf_centernet.cli import model_commands
    from tf_centernet.cli.data_commands import cmd_check_data, cmd_convert, cmd_convert_data
    from tf_centernet.export import FORMATS

    parser = argparse.ArgumentParser(
        prog="tf-centernet",
        description="CenterNet (keypoint triplets) and CornerNet in TensorFlow 2 / Keras 3.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, config_required=False):
        p.add_argument(
            "--config",
            action="append",
            required=config_required,
            help="config name in configs/ (e.g. centernet_small) or a YAML path; repeatable, later ones "
            "override earlier ones (a model configuration, then a data one: --config centernet_small "
            "--config coco_tiny)",
        )
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
        p.add_argument("--classes", help="class list file, one name per line (train_data.classes and validation_data.classes; VOC / TFRecord)")

    p = sub.add_parser("train", help="train, or resume from the latest checkpoint")
    common(p)
    p.add_argument("--model-dir", help="where checkpoints, logs and config.yaml go (train.model_dir)")
    p.add_argument(
        "--init-from",
        metavar="DIR_OR_SNAPSHOT",
        help="start a new run from a converted or trained model directory or a release snapshot "
        "(train.init_from); with another class count the heatmap output layers are re-initialized",
    )
    p.add_argument(
        "--progress", choices=["bar", "log", "none"],
        help="progress display: Keras' bar, one plain line per train.log_every steps, or none "
        "(default: bar on a terminal, log otherwise)",
    )
    p.set_defaults(func=model_commands.cmd_train)

    p = sub.add_parser("evaluate", help="COCO AP on validation_data")
    common(p)
    p.add_argument("--model-dir", help="a trained model's directory (its config.yaml is the default config)")
    p.add_argument("--checkpoint", help="checkpoint prefix, directory or .weights.h5 (default: the model dir)")
    p.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    p.add_argument("--output", help="folder for detections.json and metrics.json (default: MODEL_DIR/eval)")
    p.set_defaults(func=model_commands.cmd_evaluate)

    p = sub.add_parser("detect", help="draw detections on images")
    common(p)
    p.add_argument("images", nargs="+", help="image files, or folders (their images)")
    p.add_argument("--model-dir", help="a trained model's directory")
    p.add_argument("--checkpoint", help="checkpoint prefix, directory or .weights.h5")
    p.add_argument("--output", default="detections", help="output folder (default: ./detections)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw boxes scoring at least this")
    p.set_defaults(func=model_commands.cmd_detect)

    p = sub.add_parser("export", help="SavedModel for TF Serving, TFLite, TF-TRT or ONNX (see docs/serving.md)")
    common(p)
    p.add_argument("--model-dir", help="a trained model's directory (its config.yaml is the default config)")
    p.add_argument("--checkpoint", help="checkpoint prefix, directory or .weights.h5 (default: the model dir)")
    p.add_argument(
        "--format",
        default="savedmodel",
        choices=list(FORMATS),
        help="artifact to write (default: savedmodel)",
    )
    p.add_argument(
        "--output",
        help="SavedModel folder or .tflite/.onnx file (default: MODEL_DIR/export/saved_model/1, "
        "MODEL_DIR/export/model.tflite, ...)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="PIXELS",
        help="fixed image size of tflite*/onnx exports: SIZE or HEIGHT WIDTH (default: data.input_size); "
        "tftrt: build engines for it",
    )
    p.add_argument("--no-flip", action="store_true", help="no flip test in the exported graph (about 2x faster)")
    p.add_argument(
        "--max-megapixels", type=float, default=8.0,
        help="savedmodel: serving_bytes rejects larger images before decoding them (default: 8; 0: no limit)",
    )
    p.add_argument(
        "--calibration-images", type=int, default=100, metavar="N",
        help="tflite-int8-full: training images (train_data) that calibrate the int8 ranges (default: 100)",
    )
    p.set_defaults(func=model_commands.cmd_export)

    p = sub.add_parser("demo", help="train, evaluate and detect on a synthetic data set it creates")
    p.add_argument("--config", default="demo", help="config (default: demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    p.set_defaults(func=model_commands.cmd_demo)

    p = sub.add_parser("check-data", help="report on the data; exit 1 when training would go wrong")
    common(p, config_required=True)
    p.add_argument("--split", default="both", choices=["train", "val", "both"])
    p.add_argument("--no-decode", action="store_true", help="do not decode every image (faster)")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("convert-data", help="write the data as TFRecord shards (TF OD API keys)")
    common(p, config_required=True)
    p.add_argument("--output", required=True, help="folder for SPLIT-0000i-of-0000N.tfrecord and classes.txt")
    p.add_argument("--split", default="both", choices=["train", "val", "both"])
    p.add_argument("--shards", type=int, default=1, help="files per split (default: 1)")
    p.set_defaults(func=cmd_convert_data)

    p = sub.add_parser("convert", help="convert an authors' PyTorch snapshot (.pkl/.pth) into a model directory")
    common(p, config_required=True)
    p.add_argument("snapshot", help="release snapshot, e.g. CenterNet-104_480000.pkl")
    p.add_argument("--model-dir", required=True, help="output model directory (new or without checkpoints)")
    # --classes (from `common`): class names, one per line; default COCO's 80
    # in the releases' order for 80 classes, else 1..N.
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("build-ops", help="compile the corner-pooling custom ops (else built on first use)")
    p.add_argument("--cuda", default="auto", choices=["auto", "yes", "no"],
                   help="CUDA kernels too; auto: when nvcc, a CUDA TensorFlow and a GPU are present")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.set_defaults(func=model_commands.cmd_build_ops)
    return parser


def main(argv=None):
    """Runs one command; returns its exit status.

    0: success; 1: training stopped on a non-finite loss; 2: bad input
    (missing file, invalid configuration or data, unusable checkpoint,
    model directory locked by another training, a folder that cannot be
    written: read-only, disk full, no permission, name too long); 130 /
    143: interrupted by SIGINT (Ctrl-C) / SIGTERM (`train` saves a
    checkpoint first). Every failure is one logged line (``-v`` shows the
    traceback). A bad command line (argparse's, or
    `tf_centernet.model_dir.CommandLineError`) raises `SystemExit` with
    status 2, as argparse does.
    """
    args = build_parser().parse_args(split_set_values(sys.argv[1:] if argv is None else list(argv)))
    _setup_logging(args.verbose)

    def run():
        try:
            return args.func(args)
        except SystemExit as error:
            if getattr(error, "log_line", None):  # CommandLineError: say it once, in the log
                logger.error("%s", error.log_line)
            raise
        except KeyboardInterrupt:
            if args.verbose:
                raise
            logger.error("Interrupted (Ctrl-C): %s stopped.", args.command)
            return 130
        except (FileNotFoundError, ValueError, ImportError) as error:
            # ImportError: an optional extra is missing (the message names it).
            if args.verbose:
                raise
            logger.error("%s (run with -v for the traceback)", _printable(error))
            return 2
        except Exception as error:
            # Project errors carry their exit status (tf_centernet.filesystem, tf_centernet.model_dir, tf_centernet.training.callbacks).
            code = getattr(error, "exit_code", None)
            if code is not None and not args.verbose:
                logger.error("%s", _printable(error))
                return code
            # The file system refused (read-only, full, no permission, name
            # too long, ...): the user's to fix, so one line and status 2.
            from tf_centernet.filesystem import os_error_line, os_error_of

            cause = os_error_of(error)
            if cause is None or args.verbose:
                raise
            logger.error("%s (run with -v for the traceback)", os_error_line(cause, f"{args.command}: cannot use"))
            return 2

    def _printable(error):
        from tf_centernet.data.paths import printable

        return printable(str(error))

    return run()


if __name__ == "__main__":
    sys.exit(main())
