"""The step-by-step (unfused) augmentation chain, as a test reference.

The package's `augment_for_training` folds ``/ 255``, colour jitter, PCA
lighting and normalisation into one affine pass; this is the chain as it
was written before (one float pass per step), built from the package's step
functions with the same seeds, so the two must agree up to float rounding.
"""

import tensorflow as tf

from tf_centernet.data.augment import (
    _fold,
    clip_boxes,
    color_jitter,
    full_image_crop,
    lighting,
    normalize,
    random_crop,
    random_flip,
    resize,
)


def augment_unfused(image_uint8, boxes, classes, config, training=True, seed=None):
    """`augment_for_training` with one pass per photometric step."""
    size = int(config.input_size)
    image = tf.convert_to_tensor(image_uint8)
    boxes = tf.reshape(tf.convert_to_tensor(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    if training and config.random_crop:
        image, boxes = random_crop(image, boxes, config.rand_scales, size, config.border, _fold(seed, 10))
    else:
        image, boxes = full_image_crop(image, boxes)
    image, boxes = resize(image, boxes, size)
    boxes, classes = clip_boxes(boxes, classes, size, size)
    if training and config.flip:
        image, boxes = random_flip(image, boxes, 0.5, _fold(seed, 11))
    image = tf.cast(image, tf.float32) / 255.0
    if training and config.color_jitter:
        image = color_jitter(image, 0.4, _fold(seed, 12))
    if training and config.lighting:
        image = lighting(image, config.lighting_std, _fold(seed, 13))
    image = normalize(image, config.mean, config.std)
    return image, boxes, classes
