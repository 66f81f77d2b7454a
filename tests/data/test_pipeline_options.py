"""`tf.data` options of the training pipeline: cache, order, parallelism."""

import numpy as np
import tensorflow as tf

from tf_centernet.config import Config
from tf_centernet.data import CocoDataset, build_train_dataset


def _batches(dataset, config, count):
    pipeline = build_train_dataset(dataset, config, batch_size=2)
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in pipeline.take(count)]


def test_cache_and_parallelism_give_the_same_batches(synthetic_coco):
    """16 images, batch 2, 10 batches: over an epoch boundary (reshuffle)."""
    image_dir, annotation_file = synthetic_coco
    dataset = CocoDataset(annotation_file, image_dir)
    config = Config()
    config.model.num_classes = 3
    config.data.input_size = 63
    config.data.num_parallel_calls = 0
    reference = _batches(dataset, config, 10)
    config.data.cache_images = True
    config.data.num_parallel_calls = 2
    cached = _batches(dataset, config, 10)
    for (x_ref, y_ref), (x, y) in zip(reference, cached):
        np.testing.assert_array_equal(x, x_ref)
        for key in y_ref:
            np.testing.assert_array_equal(y[key], y_ref[key], err_msg=key)
    # Unordered: each image still a function of its element number; the
    # first 16 out may include a few of the next epoch's, never new ones.
    config.data.cache_images = False
    config.data.deterministic = False
    unordered = _batches(dataset, config, 8)
    reference_images = [img for x, _ in reference for img in x]
    for x, _ in unordered:
        for img in x:
            assert any(np.array_equal(img, ref) for ref in reference_images)
    assert tf.data.AUTOTUNE == -1  # the config's -1 means AUTOTUNE


def test_sparse_targets_carry_the_dense_heatmaps(synthetic_coco):
    """``heatmaps="sparse"`` batches, drawn (as the loss does), equal the dense batches."""
    from tf_centernet.gaussians import draw_heatmaps

    image_dir, annotation_file = synthetic_coco
    dataset = CocoDataset(annotation_file, image_dir)
    config = Config()
    config.model.num_classes = 3
    config.data.input_size = 63
    dense = build_train_dataset(dataset, config, batch_size=2).take(3)
    sparse = build_train_dataset(dataset, config, batch_size=2, heatmaps="sparse").take(3)
    for (x_dense, y_dense), (x_sparse, y_sparse) in zip(dense, sparse):
        np.testing.assert_array_equal(x_sparse.numpy(), x_dense.numpy())
        drawn = draw_heatmaps(y_sparse, config.data.output_size, 3)
        assert sorted(drawn) == sorted(y_dense)
        for key in y_dense:
            np.testing.assert_array_equal(drawn[key].numpy(), y_dense[key].numpy(), err_msg=key)
