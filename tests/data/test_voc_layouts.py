"""The three Pascal VOC folder layouts read the same records.

One small data set (5 images drawn with NumPy and encoded by OpenCV, 2
classes, XML written here, one file name that is not UTF-8) is laid out
as (1) the classic VOC layout with image-set files, (2) a plain folder of
XML files with the images beside them and (3) LabelImg / Roboflow's
``images/`` + ``annotations/`` side by side. Every way of naming each
layout must give the records this file expects from its own description of
the data set, and the side-by-side layout goes through ``check-data``.
"""

import logging
import os

import cv2
import numpy as np
import pytest

from tf_centernet.cli import main
from tf_centernet.data.records import detect_format
from tf_centernet.data.voc import VocDataset, detect_voc_layout, resolve_voc_paths

CLASSES = ["cat", "dog"]  # sorted: class indices 0, 1
NON_UTF8_STEM = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8

# stem -> (image extension, (height, width), [(class, [xmin, ymin, xmax, ymax], difficult)])
SAMPLES = {
    "a_one": (".jpg", (48, 64), [("cat", [4, 6, 30, 40], False)]),
    "b_two": (".jpg", (64, 48), [("dog", [2, 3, 20, 22], False), ("cat", [24, 30, 46, 60], True)]),
    "c_png": (".png", (40, 40), [("dog", [10, 10, 30, 30], False), ("dog", [1, 1, 8, 9], False)]),
    "d_empty": (".jpg", (32, 56), []),
    NON_UTF8_STEM: (".jpg", (50, 50), [("cat", [5, 5, 45, 45], False)]),
}
STEMS = sorted(SAMPLES)  # the order of a folder read without image set


def _write_image(path, size, objects):
    """A grey image with each box filled in its class colour, encoded by
    OpenCV and written by Python (OpenCV cannot open non-UTF-8 names)."""
    image = np.full((*size, 3), 96, np.uint8)
    for name, (x1, y1, x2, y2), _ in objects:
        image[y1:y2, x1:x2] = (255, 0, 0) if name == "cat" else (0, 0, 255)
    ok, encoded = cv2.imencode(os.path.splitext(path)[1], image)
    assert ok
    with open(path, "wb") as handle:
        handle.write(encoded.tobytes())


def _write_xml(path, stem, extension, size, objects):
    """A LabelImg-style annotation. The non-UTF-8 name cannot be written in
    XML (UTF-8 text), so that one has no <filename>: the reader finds the
    image by the XML's stem."""
    parts = ["<annotation><folder>x</folder>"]
    if stem != NON_UTF8_STEM:
        parts.append(f"<filename>{stem}{extension}</filename>")
    parts.append(f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name><truncated>0</truncated>"
                     f"<difficult>{int(difficult)}</difficult><bndbox>{coords}</bndbox></object>")
    parts.append("</annotation>")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(parts))


def _write_samples(xml_dir, image_dir):
    os.makedirs(xml_dir, exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    for stem, (extension, size, objects) in SAMPLES.items():
        _write_image(os.path.join(image_dir, stem + extension), size, objects)
        _write_xml(os.path.join(xml_dir, stem + ".xml"), stem, extension, size, objects)


def _write_image_set(root, name="train"):
    folder = os.path.join(root, "ImageSets", "Main")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".txt"), "wb") as handle:  # ids are file names: bytes
        handle.write(b"".join(os.fsencode(stem) + b"\n" for stem in STEMS))
    return os.path.join(folder, name + ".txt")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same data set in the three layouts: dict name -> root folder."""
    base = tmp_path_factory.mktemp("voc_layouts")
    classic, plain, side = (str(base / name) for name in ("classic", "plain", "labelimg"))
    _write_samples(os.path.join(classic, "Annotations"), os.path.join(classic, "JPEGImages"))
    _write_image_set(classic)
    _write_samples(plain, plain)
    _write_samples(os.path.join(side, "annotations"), os.path.join(side, "images"))
    _write_image_set(side)  # image-set files work beside annotations/ too
    custom = str(base / "custom")
    _write_samples(os.path.join(custom, "labels"), os.path.join(custom, "pics"))
    return dict(classic=classic, plain=plain, side=side, custom=custom)


def _expected():
    """Per image, from SAMPLES alone: (basename, height, width, kept boxes,
    kept classes, difficult boxes, difficult classes), with the default
    ``difficult="ignore"`` (difficult objects become ignore regions)."""
    rows = []
    for stem in STEMS:
        extension, (height, width), objects = SAMPLES[stem]
        kept = [(box, CLASSES.index(name)) for name, box, difficult in objects if not difficult]
        hard = [(box, CLASSES.index(name)) for name, box, difficult in objects if difficult]
        rows.append((stem + extension, height, width, [b for b, _ in kept], [c for _, c in kept],
                     [b for b, _ in hard], [c for _, c in hard]))
    return rows


def _rows(dataset):
    rows = []
    for record in dataset.records:
        hard_boxes, hard_classes = dataset.ignored.get(record.image_id, (np.zeros((0, 4)), np.zeros(0)))
        rows.append((os.path.basename(record.file_name), record.height, record.width,
                     record.boxes.tolist(), record.classes.tolist(),
                     np.asarray(hard_boxes).tolist(), np.asarray(hard_classes).tolist()))
    return rows


@pytest.mark.parametrize("layout, path, kwargs, kind", [
    ("classic", "ImageSets/Main/train.txt", {}, "voc"),
    ("classic", ".", dict(split="train"), "voc"),
    ("classic", ".", {}, "voc"),
    ("classic", "Annotations", {}, "voc"),
    ("plain", ".", {}, "folder"),
    ("side", ".", {}, "side_by_side"),
    ("side", "annotations", {}, "side_by_side"),
    ("side", "ImageSets/Main/train.txt", {}, "side_by_side"),
    ("side", ".", dict(split="train"), "side_by_side"),
    ("custom", ".", dict(annotations_dir="labels", images_dir="pics"), "side_by_side"),
    ("custom", "labels", dict(annotations_dir="labels", images_dir="pics"), "side_by_side"),
])
def test_every_layout_reads_the_same_records(layouts, layout, path, kwargs, kind, caplog):
    annotations = os.path.normpath(os.path.join(layouts[layout], path))
    with caplog.at_level(logging.INFO, logger="tf_centernet.data.voc_layout"):
        dataset = VocDataset(annotations, **kwargs)
    assert dataset.layout.kind == kind
    assert dataset.class_names == CLASSES
    assert _rows(dataset) == _expected()
    assert dataset.skipped == {"difficult": 1}
    # Every image path is in the layout's image folder and exists (the
    # non-UTF-8 one included: os functions round-trip its bytes).
    image_dir = {"classic": "JPEGImages", "plain": "", "side": "images", "custom": "pics"}[layout]
    for record in dataset.records:
        assert os.path.dirname(record.file_name) == os.path.normpath(os.path.join(layouts[layout], image_dir))
        assert os.path.isfile(record.file_name)
    chosen = [r.getMessage() for r in caplog.records if "Pascal VOC layout" in r.getMessage()]
    assert len(chosen) == 1 and f"layout '{kind}'" in chosen[0]


def test_the_side_by_side_root_is_detected_as_voc(layouts):
    assert detect_format(layouts["side"]) == "voc"
    assert detect_format(os.path.join(layouts["side"], "annotations")) == "voc"


def test_resolve_voc_paths_keeps_its_three_values(layouts):
    paths, image_dir, image_set = resolve_voc_paths(layouts["side"])
    assert [os.path.basename(p) for p in paths] == [s + ".xml" for s in STEMS]
    assert (image_dir, image_set) == (os.path.join(layouts["side"], "images"), None)
    image_set_file = os.path.join(layouts["classic"], "ImageSets", "Main", "train.txt")
    paths, image_dir, image_set = resolve_voc_paths(image_set_file)
    assert paths == [os.path.join(layouts["classic"], "Annotations", s + ".xml") for s in STEMS]
    assert (image_dir, image_set) == (os.path.join(layouts["classic"], "JPEGImages"), image_set_file)


def test_an_image_folder_given_wins_over_the_layouts_own(layouts, tmp_path):
    # train_data.images names the folder: here the classic layout's images
    # serve the side-by-side annotations (whose own images/ is not used).
    dataset = VocDataset(layouts["side"], images=os.path.join(layouts["classic"], "JPEGImages"))
    assert dataset.layout.kind == "side_by_side"
    assert {os.path.dirname(r.file_name) for r in dataset.records} == {os.path.join(layouts["classic"], "JPEGImages")}
    assert _rows(dataset) == _expected()
    # Without images/, annotations/ alone needs the image folder named.
    (tmp_path / "annotations").mkdir()
    _write_xml(str(tmp_path / "annotations" / "a.xml"), "a", ".jpg", (10, 10), [("cat", [1, 1, 5, 5], False)])
    with pytest.raises(FileNotFoundError, match=r"found annotations/ but no images/ beside it .*train_data.images"):
        VocDataset(str(tmp_path))
    assert VocDataset(str(tmp_path), images=layouts["plain"], check_files=False).layout.kind == "side_by_side"


def test_an_unrecognised_folder_names_the_three_layouts_and_what_it_holds(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "labels.json").write_text("{}")
    (tmp_path / "annotations").mkdir()  # a COCO-style annotations/ folder: no XML in it
    (tmp_path / "annotations" / "train.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as error:
        VocDataset(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}: no Pascal VOC layout found in {tmp_path}")
    assert "folders annotations/, pics/; files 1 .json, 1 .txt" in message
    for layout in ("(1) VOC layout (ROOT/Annotations/ + ROOT/JPEGImages/)",
                   "(2) plain folder of XML files with the images beside them",
                   "(3) ROOT/images/ + ROOT/annotations/ side by side, XML in annotations/"):
        assert layout in message
    # The folder names asked for are the ones the message lists.
    with pytest.raises(FileNotFoundError, match=r"\(3\) ROOT/pics/ \+ ROOT/labels/ side by side"):
        detect_voc_layout(str(tmp_path), annotations_dir="labels", images_dir="pics")
    with pytest.raises(FileNotFoundError, match="VOC annotations not found: .*no_such"):
        VocDataset(str(tmp_path / "no_such"))


def test_check_data_reads_the_labelimg_layout(layouts, capsys):
    code = main([
        "check-data", "--config", "bccd_small", "--split", "train", "--set", "train_data.format=voc",
        f"train_data.annotations={layouts['side']}", "train_data.images=''", "validation_data.annotations=''",
        "model.num_classes=2",
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    objects = [o for _, (_, _, objs) in SAMPLES.items() for o in objs if not o[2]]
    assert f"images: {len(SAMPLES)} (1 without objects)" in printed
    assert f"objects: {len(objects)}" in printed
    for name in CLASSES:
        assert f"  {name}: {sum(o[0] == name for o in objects)}" in printed
    assert printed.rstrip().endswith("check-data: OK")
