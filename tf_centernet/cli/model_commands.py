"""The model commands of `tf-centernet`: train, evaluate, detect, export, demo, build-ops.

* ``train``: train or resume (`tf_centernet.training.train`);
* ``evaluate``: COCO AP of a trained model on the validation set
  (`tf_centernet.evaluation.evaluate_dataset`);
* ``detect``: draw detections on images and write them as COCO JSON;
* ``export``: SavedModel (TF Serving), TFLite, TF-TRT or ONNX (`tf_centernet.export`);
* ``demo``: the whole loop on a synthetic data set it creates (no download);
* ``build-ops``: compile the corner-pooling custom ops into their cache.

The parser and the shared helpers (`_load_config`) are in `tf_centernet.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from tf_centernet.cli import _checkpoint, _class_names, _load_config, _sigterm_stops

logger = logging.getLogger("tf_centernet")


def cmd_train(args):
    from tf_centernet.model_dir import ModelDirectory
    from tf_centernet.training import train

    config = _load_config(args)
    _, history = train(config, progress=getattr(args, "progress", None))
    losses = history.history.get("loss", []) if history is not None else []
    if losses:
        logger.info("Loss by epoch: %s", ", ".join(f"{v:.3f}" for v in losses))
    logger.info("Checkpoints in %s", ModelDirectory(config.train.model_dir).checkpoints)
    return 0


def cmd_evaluate(args):
    from tf_centernet.data.records import open_dataset
    from tf_centernet.evaluation import evaluate_dataset
    from tf_centernet.inference import load_trained_model
    from tf_centernet.model_dir import ModelDirectory

    config = _load_config(args)
    model = load_trained_model(config, _checkpoint(args, config))
    names, category_ids = _class_names(config, args)
    dataset = open_dataset(config, "val", class_names=names)
    predictor = model
    output = args.output or ModelDirectory(config.train.model_dir).eval
    os.makedirs(output, exist_ok=True)
    evaluate_dataset(
        predictor,
        dataset,
        category_ids,
        output_json=os.path.join(output, "detections.json"),
        metrics_json=os.path.join(output, "metrics.json"),
        max_images=args.max_images,
        compute_fd=True,
    )
    logger.info("Wrote %s", output)
    return 0


def cmd_detect(args):
    import cv2

    from tf_centernet.data.coco import load_image
    from tf_centernet.evaluation import detections_to_coco
    from tf_centernet.inference import load_trained_model
    from tf_centernet.visualize import draw_detections

    config = _load_config(args)
    model = load_trained_model(config, _checkpoint(args, config))
    names, category_ids = _class_names(config, args)
    os.makedirs(args.output, exist_ok=True)
    images, empty_folders = _image_files(args.images)
    results, failed = [], []
    for path in images:
        try:
            image = load_image(path)
        except (FileNotFoundError, ValueError) as error:  # one bad file of many: skip it
            logger.warning("Skipping %s", error)
            failed.append(path)
            continue
        det = model.predict_images([image])[0]
        drawn = draw_detections(
            image, det["boxes"], det["scores"], det["classes"], names, score_threshold=args.score_threshold
        )
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + "_detections.jpg")
        cv2.imwrite(out_path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        kept = int((det["scores"] >= args.score_threshold).sum())
        logger.info("%s: %d detections (%d >= %.2f) -> %s", path, len(det["scores"]), kept, args.score_threshold, out_path)
        entries = detections_to_coco(0, det["boxes"], det["scores"], det["classes"], category_ids)
        for entry, cls in zip(entries, det["classes"]):
            del entry["image_id"]
            results.append({"file_name": os.path.basename(path), "category": names[int(cls)], **entry})
    json_path = os.path.join(args.output, "detections.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f)
    logger.info("Wrote %s (%d of %d images)", json_path, len(images) - len(failed), len(images))
    if failed:
        logger.warning("%d image(s) could not be read: %s", len(failed), ", ".join(failed))
    return 1 if failed or empty_folders else 0


# Files `detect` takes from a folder (by extension, any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _image_files(paths):
    """`detect`'s arguments -> (image files, folders without images): folders give their images, sorted."""
    files, empty = [], []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
        if not found:
            logger.warning("Skipping folder %s: no image files (%s) in it", path, ", ".join(IMAGE_SUFFIXES))
            empty.append(path)
        logger.info("%s: %d image(s)", path, len(found))
        files += found
    return files, empty


def cmd_export(args):
    """Exports a trained model: ``model.export`` with the format registry's default path."""
    from tf_centernet import export as export_lib

    fmt = export_lib.get_format(args.format)
    # Fail before loading anything when the target toolchain is missing.
    ready, message = fmt.check()
    if not ready:
        logger.error("%s", message)
        return 2
    input_size = None
    if args.input_size:
        if len(args.input_size) > 2 or min(args.input_size) < 1:
            logger.error("--input-size takes SIZE or HEIGHT WIDTH (positive), got %s.", args.input_size)
            return 2
        input_size = tuple(args.input_size) if len(args.input_size) == 2 else args.input_size[0]
    from tf_centernet.inference import load_trained_model
    from tf_centernet.model_dir import ModelDirectory

    config = _load_config(args)
    if args.no_flip:
        config.decode.flip_test = False
    model = load_trained_model(config, _checkpoint(args, config))
    output = args.output or os.path.join(
        ModelDirectory(getattr(args, "model_dir", None) or config.train.model_dir).export, fmt.default_path
    )
    calibration = {}
    if fmt.name == "tflite-int8-full":
        # Activation ranges from the training data (train_data of the config).
        count = getattr(args, "calibration_images", 100)
        calibration = dict(
            representative_images=export_lib.representative_training_images(config, count, model.class_names),
            calibration_images=count,
        )
    try:
        limit = args.max_megapixels if args.max_megapixels and args.max_megapixels > 0 else None
        with _sigterm_stops("export"):
            path = model.export(output, format=args.format, input_size=input_size, max_megapixels=limit,
                                **calibration)
    except (RuntimeError, ImportError, FileExistsError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    logger.info("Exported %s -> %s", args.format, path)
    return 0


def cmd_demo(args):
    """Synthetic data -> train -> evaluate -> detect, all under --output."""
    from tf_centernet.data.synthetic import make_synthetic_coco

    out = args.output
    train_dir, train_ann = make_synthetic_coco(os.path.join(out, "data", "train"), num_images=64, seed=1)
    val_dir, val_ann = make_synthetic_coco(os.path.join(out, "data", "val"), num_images=16, seed=2)
    base = [
        f"train_data.images={train_dir}",
        f"train_data.annotations={train_ann}",
        f"validation_data.images={val_dir}",
        f"validation_data.annotations={val_ann}",
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


def cmd_build_ops(args):
    """Compiles (or finds cached) and loads the corner-pooling custom ops."""
    from tf_centernet.ops import custom

    cuda = {"auto": "auto", "yes": True, "no": False}[args.cuda]
    try:
        path = custom.build(cuda=cuda, force=args.force, verbose=True)
        custom.load(path)  # proves it loads
    except custom.CustomOpsUnavailable as error:
        logger.error("%s", error)
        return 1
    gpu = "with" if custom.has_gpu_kernels() else "without"
    logger.info("Corner-pooling ops ready (%s CUDA kernels): %s", gpu, path)
    print(path)
    return 0
