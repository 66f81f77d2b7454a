"""The `tf-centernet` command line.

Commands:

* ``train``: train or resume (`tf_centernet.training.train`);
* ``evaluate``: COCO AP of a trained model on the validation set;
* ``detect``: draw detections on images and write them as COCO JSON;
* ``demo``: the whole loop on a synthetic data set it creates (no download).

Every command takes ``--config`` (a name in ``configs/`` or a YAML path) and
``--set key=value ...`` overrides with dotted keys, e.g.
``--set train.total_steps=100 data.input_size=127``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

    overrides = list(args.set or [])
    name = args.config
    model_dir = getattr(args, "model_dir", None)
    if name is None and model_dir and os.path.isfile(os.path.join(model_dir, "config.yaml")):
        name = os.path.join(model_dir, "config.yaml")
    if name is None:
        raise SystemExit("error: give --config NAME_OR_PATH (or --model-dir of a trained model).")
    if model_dir and args.command == "train":
        overrides.append(f"train.model_dir={model_dir}")
    return load_config(name, overrides)


def _checkpoint(args, config):
    return args.checkpoint or getattr(args, "model_dir", None) or config.train.model_dir


def cmd_train(args):
    from tf_centernet.training import train

    config = _load_config(args)
    _, history = train(config)
    losses = history.history.get("loss", []) if history is not None else []
    if losses:
        logger.info("Loss by epoch: %s", ", ".join(f"{v:.3f}" for v in losses))
    logger.info("Checkpoints in %s", os.path.join(config.train.model_dir, "checkpoints"))
    return 0


def cmd_evaluate(args):
    from tf_centernet.evaluation import evaluate_coco
    from tf_centernet.inference import Predictor
    from tf_centernet.training import load_trained_model

    config = _load_config(args)
    model = load_trained_model(config, _checkpoint(args, config))
    _, category_ids = _class_names(config, args)
    predictor = Predictor(model, config)
    output = args.output or os.path.join(config.train.model_dir, "eval")
    os.makedirs(output, exist_ok=True)
    evaluate_coco(
        predictor,
        config.data.val_annotations,
        config.data.val_images,
        category_ids,
        output_json=os.path.join(output, "detections.json"),
        metrics_json=os.path.join(output, "metrics.json"),
        max_images=args.max_images,
    )
    logger.info("Wrote %s", output)
    return 0


def _class_names(config, args):
    """(class names, COCO category ids) indexed by the model's class index.

    From the model directory's ``classes.json`` (written by training), else
    from the categories of the annotation files, else numbered 1..N.
    """
    from tf_centernet.training import read_classes

    model_dir = getattr(args, "model_dir", None) or config.train.model_dir
    classes = read_classes(model_dir)
    if classes is not None:
        return classes["names"], classes["category_ids"]
    for path in (config.data.train_annotations, config.data.val_annotations):
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                categories = sorted(json.load(f).get("categories", []), key=lambda c: c["id"])
            if len(categories) == config.model.num_classes:
                return [c["name"] for c in categories], [c["id"] for c in categories]
    n = config.model.num_classes
    return [str(i + 1) for i in range(n)], list(range(1, n + 1))


def cmd_detect(args):
    import cv2

    from tf_centernet.data.coco import load_image
    from tf_centernet.inference import Predictor
    from tf_centernet.training import load_trained_model
    from tf_centernet.visualize import draw_detections

    config = _load_config(args)
    model = load_trained_model(config, _checkpoint(args, config))
    predictor = Predictor(model, config)
    names, category_ids = _class_names(config, args)
    os.makedirs(args.output, exist_ok=True)
    results = []
    for path in args.images:
        image = load_image(path)
        det = predictor.predict_images([image])[0]
        drawn = draw_detections(
            image, det["boxes"], det["scores"], det["classes"], names, score_threshold=args.score_threshold
        )
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + "_detections.jpg")
        cv2.imwrite(out_path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        kept = int((det["scores"] >= args.score_threshold).sum())
        logger.info("%s: %d detections (%d >= %.2f) -> %s", path, len(det["scores"]), kept, args.score_threshold, out_path)
        for box, score, cls in zip(det["boxes"], det["scores"], det["classes"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "file_name": os.path.basename(path),
                    "category_id": int(category_ids[int(cls)]),
                    "category": names[int(cls)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    json_path = os.path.join(args.output, "detections.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f)
    logger.info("Wrote %s", json_path)
    return 0


def cmd_demo(args):
    """Synthetic data -> train -> evaluate -> detect, all under --output."""
    from tf_centernet.data.synthetic import make_synthetic_coco

    out = args.output
    train_dir, train_ann = make_synthetic_coco(os.path.join(out, "data", "train"), num_images=64, seed=1)
    val_dir, val_ann = make_synthetic_coco(os.path.join(out, "data", "val"), num_images=16, seed=2)
    base = [
        f"data.train_images={train_dir}",
        f"data.train_annotations={train_ann}",
        f"data.val_images={val_dir}",
        f"data.val_annotations={val_ann}",
        f"train.model_dir={os.path.join(out, 'model')}",
        f"train.total_steps={args.steps}",
        *(args.set or []),
    ]
    common = dict(config=args.config, set=base, checkpoint=None, model_dir=None)
    cmd_train(argparse.Namespace(command="train", **common))
    cmd_evaluate(
        argparse.Namespace(command="evaluate", output=os.path.join(out, "eval"), max_images=None, **common)
    )
    images = sorted(os.listdir(val_dir))[:2]
    cmd_detect(
        argparse.Namespace(
            command="detect",
            images=[os.path.join(val_dir, f) for f in images],
            output=os.path.join(out, "detections"),
            score_threshold=0.3,
            **common,
        )
    )
    logger.info("Demo finished: see %s", out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tf-centernet",
        description="CenterNet (keypoint triplets) and CornerNet in TensorFlow 2 / Keras 3.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, config_required=False):
        p.add_argument(
            "--config",
            required=config_required,
            help="config name in configs/ (e.g. centernet_small) or a YAML path",
        )
        p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="config overrides, e.g. train.total_steps=100")

    p = sub.add_parser("train", help="train, or resume from the latest checkpoint")
    common(p)
    p.add_argument("--model-dir", help="where checkpoints, logs and config.yaml go (train.model_dir)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="COCO AP on data.val_annotations")
    common(p)
    p.add_argument("--model-dir", help="a trained model's directory (its config.yaml is the default config)")
    p.add_argument("--checkpoint", help="checkpoint prefix, directory or .weights.h5 (default: the model dir)")
    p.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    p.add_argument("--output", help="folder for detections.json and metrics.json (default: MODEL_DIR/eval)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("detect", help="draw detections on images")
    common(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model-dir", help="a trained model's directory")
    p.add_argument("--checkpoint", help="checkpoint prefix, directory or .weights.h5")
    p.add_argument("--output", default="detections", help="output folder (default: ./detections)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw boxes scoring at least this")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("demo", help="train, evaluate and detect on a synthetic data set it creates")
    p.add_argument("--config", default="demo", help="config (default: demo)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        if args.verbose:
            raise
        logger.error("%s (run with -v for the traceback)", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
