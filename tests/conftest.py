"""Shared pytest fixtures.

`shared_data_dir` is ``../shared/data`` beside the repository (the project's
shared folder); tests that need it are skipped when it is absent.
"""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")


@pytest.fixture(scope="session")
def repo_root():
    """Absolute path of the repository checkout."""
    return REPO_ROOT


def _folder_or_skip(*parts):
    """The folder ``os.path.join(*parts)``; skips the test when it is absent."""
    path = os.path.join(*parts)
    if not os.path.isdir(path):
        pytest.skip(f"{os.path.basename(path)} not found: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data_dir():
    """``../shared/data``; skips the test when it is absent."""
    return _folder_or_skip(SHARED_DIR, "data")


@pytest.fixture(scope="session")
def coco_tiny(shared_data_dir):
    """Paths of coco-tiny: dict split -> (annotation_file, image_dir)."""
    root = _folder_or_skip(shared_data_dir, "coco-tiny")
    return {
        split: (
            os.path.join(root, "annotations", f"instances_{split}2017.json"),
            os.path.join(root, f"{split}2017"),
        )
        for split in ("train", "val")
    }


@pytest.fixture(scope="session")
def fixtures_dir(shared_data_dir):
    """``../shared/data/release-fixtures`` (snapshots in the releases' format); skips when absent."""
    return _folder_or_skip(shared_data_dir, "release-fixtures")


@pytest.fixture(scope="session")
def bccd(shared_data_dir):
    """``../shared/data/bccd`` (Pascal VOC layout); skips when absent."""
    return _folder_or_skip(shared_data_dir, "bccd")


@pytest.fixture(scope="session")
def compiled_ops():
    """The compiled op library (pooling, soft-NMS), built or reused.

    Skips where no C++ compiler exists; fails with the compiler's output
    where one exists and the build fails.
    """
    import shutil

    from tf_centernet.ops import custom

    if not shutil.which(os.environ.get("CXX", "g++")):
        pytest.skip("no C++ compiler to build the custom ops")
    try:
        return custom.load()
    except custom.CustomOpsUnavailable as error:
        pytest.fail(f"the custom ops did not build or load:\n{error}")


@pytest.fixture(params=["loop", "custom"])
def soft_nms_impl(request):
    """Each soft-NMS implementation: the TensorFlow loop and the compiled op."""
    if request.param == "custom":
        request.getfixturevalue("compiled_ops")
    return request.param


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """A synthetic COCO dataset (16 images, 3 classes): (image_dir, annotation_file)."""
    from tf_centernet.data.synthetic import make_synthetic_coco

    out_dir = tmp_path_factory.mktemp("synthetic_coco")
    return make_synthetic_coco(str(out_dir), num_images=16, seed=0)


def pytest_configure(config):
    """Splits the CPU into two logical devices before TensorFlow starts.

    Lets tests run `MirroredStrategy` with two replicas without GPUs; every
    other test runs on the first logical CPU as usual.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if getattr(config.option, "loadscopereorder", None):  # pytest-xdist >= 3.6: keep the order set below
        config.option.loadscopereorder = False
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # already initialised (e.g. a plugin imported TF first)
        pass
    # TensorFlow and Keras are hundreds of thousands of long-lived objects:
    # frozen, they are no longer walked by every full garbage collection
    # (one per module below, and pytest's own at the end).
    import gc

    import keras  # noqa: F401

    import tf_centernet.training  # noqa: F401

    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _fresh_keras_state():
    """Frees each test module's models and traced graphs when it ends.

    Without it, a long run keeps every earlier module's Keras state (name
    counters, graphs, XLA caches) alive, and later tests trace and run
    slower and slower (a two-replica fit took 86 s after the XLA test
    instead of 33 s alone). The collection runs over what the module left
    only: `pytest_configure` froze everything imported before (`gc.freeze`).
    """
    yield
    import keras

    keras.utils.clear_session(free_memory=True)


# Seconds each of the longest files takes in one process of the README's
# command (2-core CPU, measured, rounded): the order in which the two
# processes take them. Other files count 0.2 s a test.
FILE_SECONDS = {
    "export/test_export.py": 150, "models/test_model.py": 222, "training/test_distributed.py": 221,
    "reliability/test_training_faults.py": 166, "cli/test_cli.py": 133, "convert/test_convert.py": 133,
    "models/test_keras_api.py": 131, "convert/test_convert_cli.py": 118, "training/test_optimizer.py": 115,
    "export/test_export_tflite.py": 70, "ops/test_custom_ops.py": 67, "training/test_training.py": 54,
    "training/test_callbacks.py": 53, "export/test_export_tflite_int8_full.py": 40,
    "reliability/test_detect_and_export_interruptions.py": 34, "reliability/test_file_system_faults.py": 34,
    "reliability/test_model_dir.py": 32, "cli/test_readme_recipes.py": 28, "reliability/test_serving_input.py": 25,
    "reliability/test_model_mismatch.py": 25, "data/test_data_formats.py": 21, "data/test_pipeline_options.py": 17,
    "export/test_export_onnx.py": 15,
}


def pytest_collection_modifyitems(config, items):
    """The longest files first (`FILE_SECONDS`), then the others by their number of tests.

    With ``-n 2 --dist loadfile`` each process takes whole files in this
    order, so the long files start early and the two processes finish
    together instead of one of them running a long file alone at the end.
    (pytest-xdist's own order, by test count alone, would start the many
    quick files first and leave the few-test files of real training runs to
    the end: `pytest_configure` turns it off.)
    """
    import inspect

    for item in items:  # markers read from what a test does (-m "not subprocess", -m compiled_ops)
        try:
            source = inspect.getsource(item.function)
        except (AttributeError, OSError, TypeError):
            continue
        if "subprocess." in source or "Popen" in source or "_start(" in source:
            item.add_marker(pytest.mark.subprocess)
        if "custom." in source or '"custom"' in source or "build-ops" in source:
            item.add_marker(pytest.mark.compiled_ops)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    cost = {}
    for item in items:
        name = os.path.relpath(str(item.path), tests_dir).replace(os.sep, "/")
        cost[item.path] = FILE_SECONDS.get(name, cost.get(item.path, 0.0) + 0.2)
    items.sort(key=lambda item: -cost[item.path])
