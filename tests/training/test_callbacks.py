"""Watching training: plain progress lines, COCO evaluation and image summaries in TensorBoard."""

import glob
import io
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_centernet.checkpoints import validate_checkpoint
from tf_centernet.config import load_config
from tf_centernet.training.callbacks import EvaluationCallback, ImageSummaries, ProgressLog
from tf_centernet.training.task import build_callbacks, check_validation_data, evaluation_cadence, progress_mode


class _FakeModel:
    def __init__(self, step):
        self.optimizer = types.SimpleNamespace(iterations=tf.Variable(step, dtype=tf.int64), learning_rate=0.5)


def test_progress_log_lines_have_no_control_characters():
    lines = []
    callback = ProgressLog(total_steps=10, every=4, log=lines.append)
    model = _FakeModel(0)
    callback.set_model(model)
    callback.on_train_begin()
    for step in range(1, 11):
        model.optimizer.iterations.assign(step)
        callback.on_train_batch_end(step - 1, {"loss": 2.5, "pull": 0.125})
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert "loss=2.5000 pull=0.1250" in lines[0] and "steps/s=" in lines[0] and "ETA=" in lines[0]
    assert lines[-1].endswith("ETA=0:00:00")
    assert not any("\r" in line or "\x1b" in line or "\b" in line for line in lines)


def test_progress_mode():
    assert progress_mode(None, verbose=1, isatty=True) == "bar"
    assert progress_mode(None, verbose=1, isatty=False) == "log"
    assert progress_mode(None, verbose=0) == "none"
    assert progress_mode("log", verbose=0) == "log"
    with pytest.raises(ValueError, match="progress"):
        progress_mode("fancy")


def test_legacy_mixed_precision_sets_the_one_precision_field():
    """``train.mixed_precision`` (earlier releases) maps onto ``model.compute_dtype`` with a warning."""
    for old, new in (("true", "float16"), ("false", "float32"), ("none", "float32"), ("bfloat16", "bfloat16")):
        with pytest.warns(FutureWarning, match="train.mixed_precision is deprecated"):
            assert load_config("demo", [f"train.mixed_precision={old}"]).model.compute_dtype == new
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="model.compute_dtype"):
        load_config("demo", ["train.mixed_precision=half"])


def _events(folder):
    found = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


@pytest.fixture(scope="module")
def small_model():
    """The demo model (small hourglass, 3 classes), built at 127 px, with an optimizer."""
    import keras

    from tf_centernet.models.presets import build_model

    config = load_config("demo", ["model.pooling_impl=scan"])
    model = build_model(config.model, config.loss)
    model.build((None, 127, 127, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return config, model


def test_evaluation_writes_ap_to_tensorboard_and_jsonl(small_model, synthetic_coco, tmp_path):
    config, model = small_model
    image_dir, annotation_file = synthetic_coco
    model_dir = str(tmp_path)
    config = load_config(
        "demo", ["model.pooling_impl=scan", f"validation_data.annotations={annotation_file}", f"validation_data.images={image_dir}"]
    )
    callback = EvaluationCallback(
        config, model_dir, 5, ["rectangle", "ellipse", "triangle"], [1, 2, 3], max_images=2
    )
    callback.set_model(model)
    model.optimizer.iterations.assign(5)
    callback.on_train_batch_end(4)
    model.optimizer.iterations.assign(7)
    callback.on_train_batch_end(6)  # not a multiple of 5: no evaluation
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [5]
    assert 0.0 <= records[0]["AP"] <= 1.0 and 0.0 <= records[0]["FD"] <= 1.0
    events = _events(os.path.join(model_dir, "logs", "validation"))
    assert {"AP", "AP50", "FD"} <= set(events)
    step, value = events["AP"][0]
    assert step == 5
    assert float(tf.make_ndarray(value.tensor)) == pytest.approx(records[0]["AP"])
    # First evaluation is the best so far: its weights are kept, intact.
    best = glob.glob(os.path.join(model_dir, "best", "checkpoints", "ckpt-5.weights.h5"))
    assert best and validate_checkpoint(best[0]) is None
    with open(os.path.join(model_dir, "best", "best.json")) as f:
        assert json.load(f)["step"] == 5


def test_image_summaries_shapes(small_model, tmp_path):
    config, model = small_model
    height, width = 90, 120
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 60, 70]], np.float32)
    callback = ImageSummaries(config, str(tmp_path), 3, image, boxes, np.array([1]), ["a", "b", "c"])
    callback.set_model(model)
    model.optimizer.iterations.assign(3)
    callback.on_train_batch_end(2)
    callback.on_train_end()
    events = _events(os.path.join(str(tmp_path), "logs", "images"))
    assert {"images/ground_truth", "images/detections", "heatmaps/tl_heatmap", "heatmaps/br_heatmap",
            "heatmaps/ct_heatmap"} <= set(events)
    assert "learning_rate" not in events  # the train run has it (Keras' TensorBoard): no second copy

    def picture(tag):
        value = events[tag][0][1]
        raw = tf.make_ndarray(value.tensor)  # [width, height, PNG]
        return int(raw[0]), int(raw[1]), np.asarray(Image.open(io.BytesIO(raw[2])))

    w, h, truth = picture("images/ground_truth")
    assert (w, h) == (width, height) and truth.shape == (height, width, 3)
    assert not np.array_equal(truth, image)  # the box is drawn
    w, h, drawn = picture("images/detections")
    assert drawn.shape == (height, width, 3)
    # Heatmaps: one channel on the output grid of the test canvas, whose
    # sides are ``side | 127`` (SPEC 7.5), at stride 4: (side | 127 + 1) / 4.
    for key in ("tl_heatmap", "br_heatmap", "ct_heatmap"):
        w, h, heat = picture(f"heatmaps/{key}")
        assert heat.shape == (h, w) == (((height | 127) + 1) // 4, ((width | 127) + 1) // 4)


def _write_voc_folder(synthetic_coco, folder, count):
    """The first `count` synthetic images as a VOC folder (XML files, images beside them)."""
    import shutil
    from xml.sax.saxutils import escape

    image_dir, annotation_file = synthetic_coco
    with open(annotation_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    os.makedirs(folder)
    for image in sorted(coco["images"], key=lambda i: i["id"])[:count]:
        shutil.copy(os.path.join(image_dir, image["file_name"]), folder)
        objects = "".join(
            f"<object><name>{escape(names[a['category_id']])}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{a['bbox'][0] + 1:.0f}</xmin><ymin>{a['bbox'][1] + 1:.0f}</ymin>"
            f"<xmax>{a['bbox'][0] + a['bbox'][2]:.0f}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]:.0f}</ymax>"
            "</bndbox></object>"
            for a in coco["annotations"] if a["image_id"] == image["id"]
        )
        stem = os.path.splitext(image["file_name"])[0]
        with open(os.path.join(folder, stem + ".xml"), "w") as f:
            f.write(
                f"<annotation><filename>{image['file_name']}</filename><size><width>{image['width']}</width>"
                f"<height>{image['height']}</height><depth>3</depth></size>{objects}</annotation>"
            )
    return folder


@pytest.mark.parametrize("val_format", ["voc", "tfrecord"])
def test_eval_every_during_training_with_voc_and_tfrecord_validation(val_format, synthetic_coco, tmp_path,
                                                                    monkeypatch):
    """`train.eval_every` scores non-COCO validation data through `evaluate_dataset`
    and writes AP / AP50 to the ``logs/validation`` TensorBoard run."""
    import tf_centernet.evaluation as evaluation
    from support.tiny import TINY_MODEL
    from tf_centernet.training import train

    image_dir, annotation_file = synthetic_coco
    if val_format == "voc":
        val_annotations = _write_voc_folder(synthetic_coco, str(tmp_path / "voc"), count=3)
        expected = ("VocDataset", 3)
    else:
        from tf_centernet.data.coco import CocoDataset
        from tf_centernet.data.tfrecord import write_tfrecords

        write_tfrecords(CocoDataset(annotation_file, image_dir), str(tmp_path / "val" / "shapes"))
        val_annotations = str(tmp_path / "val")
        expected = ("TfRecordDataset", 16)
    seen = []
    real = evaluation.evaluate_dataset

    def spy(predictor, dataset, *args, **kwargs):
        seen.append((type(dataset).__name__, len(dataset.records), kwargs.get("max_images")))
        return real(predictor, dataset, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_dataset", spy)
    model_dir = str(tmp_path / "model")
    config = load_config("demo", [
        f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
        f"validation_data.annotations={val_annotations}", f"train.model_dir={model_dir}",
        "data.input_size=63", "train.batch_size=2", "train.total_steps=4", "train.checkpoint_every=4",
        "train.eval_every=2", "train.eval_max_images=2", *TINY_MODEL,
    ])
    train(config, verbose=0)

    # The validation data was read once (same dataset object twice) in its own format.
    assert [s[0:2] for s in seen] == [expected, expected] and seen[0][2] == 2
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [2, 4]
    events = _events(os.path.join(model_dir, "logs", "validation"))
    for tag in ("AP", "AP50", "FD"):
        assert [step for step, _ in events[tag]] == [2, 4], tag
    for record, (_, value) in zip(records, events["AP"]):
        assert float(tf.make_ndarray(value.tensor)) == pytest.approx(record["AP"])
        assert 0.0 <= record["AP"] <= record["AP50"] <= 1.0
    assert not os.path.exists(os.path.join(model_dir, "logs", "eval"))


def test_check_validation_data_before_training(synthetic_coco, tmp_path):
    image_dir, annotation_file = synthetic_coco
    with pytest.raises(ValueError, match="train.eval_every needs validation_data.annotations"):
        check_validation_data(load_config("demo"))  # no validation data by default
    with pytest.raises(ValueError, match="validation_data.images"):
        check_validation_data(load_config("demo", [f"validation_data.annotations={annotation_file}", "validation_data.images=''"]))
    with pytest.raises(ValueError, match="Cannot tell the data format"):
        check_validation_data(load_config("demo", [f"validation_data.annotations={tmp_path / 'nothing.dat'}"]))
    voc = _write_voc_folder(synthetic_coco, str(tmp_path / "voc"), count=1)
    assert check_validation_data(load_config("demo", [f"validation_data.annotations={voc}", "validation_data.images=''"])) == "voc"
    assert check_validation_data(
        load_config("demo", [f"validation_data.annotations={annotation_file}", f"validation_data.images={image_dir}"])
    ) == "coco"


def test_evaluation_and_pictures_are_on_by_default_with_validation_data(synthetic_coco, tmp_path):
    """-1 (the default): with validation data, pictures at every checkpoint and at most 4 evaluations,
    at checkpoints; nothing without validation data; explicit values win."""
    from tf_centernet.data.records import open_dataset
    from tf_centernet.training.callbacks import InterruptGuard

    image_dir, annotation_file = synthetic_coco
    data = [f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
            f"train.model_dir={tmp_path / 'model'}", "train.checkpoint_every=40",
            "train.eval_every=-1", "train.image_summary_every=-1"]  # the default (the demo sets its own)
    val = [f"validation_data.annotations={annotation_file}", f"validation_data.images={image_dir}"]
    assert load_config("centernet_small").train.eval_every == -1
    assert load_config("centernet_small").train.image_summary_every == -1
    assert load_config("demo").train.eval_every == 0  # the demo evaluates once, after training
    assert evaluation_cadence(load_config("demo", data)) == (0, 0)
    assert load_config("demo").train.total_steps == 300
    assert evaluation_cadence(load_config("demo", data + val)) == (80, 40)  # 300 steps: 80, 160, 240
    assert evaluation_cadence(load_config("demo", data + val + ["train.total_steps=100"])) == (40, 40)
    assert evaluation_cadence(load_config("demo", data + val + ["train.total_steps=20000"])) == (5000, 40)
    assert evaluation_cadence(load_config("demo", data + val + ["train.eval_every=0",
                                                                "train.image_summary_every=7"])) == (0, 7)
    assert evaluation_cadence(load_config("demo", data + ["train.eval_every=5"])) == (5, 0)

    def kinds(config):
        callbacks = build_callbacks(config, open_dataset(config, "train"), InterruptGuard(), "none")
        return {type(c).__name__: c for c in callbacks}

    found = kinds(load_config("demo", data + val))
    assert found["EvaluationCallback"].every == 80 and found["ImageSummaries"].every == 40
    found = kinds(load_config("demo", data))
    assert "EvaluationCallback" not in found and "ImageSummaries" not in found
