"""The detector's test-time path: RGB images of any size in, detections in original-image pixels out.

`DetectionMixin` holds the methods of `KeypointObjectDetector` that
detect (`detect`, `detect_canvas`, `predict`, `predict_images`,
`predict_step`, `predict_on_batch`): the preprocessor's image converter
brings the images onto canvases, the decoder's test-time loop (test
scales, flip test) runs the network and decodes (docs/reference.md §7).
`unpad_detections` cuts the padded result into one dict per image.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_centernet.models.preprocessor import pad_images

__all__ = ["DetectionMixin", "unpad_detections"]


class DetectionMixin:
    """Detection methods of `KeypointObjectDetector` (a `keras.Model`).

    They use the detector's ``image_converter``, ``preprocessor``,
    ``decoder`` and its call on normalised canvases (``_network``).
    """

    def detect(self, images, image_sizes=None, static=False, flip_test=None):
        """Detections of RGB images in original-image pixels (docs/reference.md §7).

        Runs the decoder's test-time loop (`Decoder.detect`: every test scale,
        the flipped copy with ``flip_test``) on the canvases of the image
        converter. Without `image_sizes` the images fill the batch and share
        one canvas (one size per batch: the SavedModel's contract). With
        `image_sizes` that differ, each image is detected on its own canvas,
        exactly as the releases do one image at a time, so results never
        depend on the rest of the batch.

        Args:
            images: uint8 (or float in [0, 255]) `(batch, height, width, 3)`,
                RGB, each image top-left, padded bottom/right.
            image_sizes: int `(batch, 2)` or None. True ``(height, width)``.
            static: bool. Static-shape preprocessing for a batch of one
                static size (TFLite, ONNX).
            flip_test: bool or None. Overrides the decoder's ``flip_test``.

        Returns:
            dict: ``boxes`` float32 `(batch, N, 4)` ``[x1, y1, x2, y2]`` in
            pixels of each original image, ``scores`` float32 `(batch, N)`,
            ``classes`` int32 `(batch, N)` (0-based; -1 past
            ``num_detections``), ``num_detections`` int32 `(batch,)`;
            ``N = decoder.decode_config.max_detections``.
        """
        converter = self.image_converter
        images = tf.convert_to_tensor(images)
        if static or image_sizes is None:
            return self.decoder.detect(
                self._network, lambda scale: converter(images, None, scale, static=static), flip_test
            )
        sizes = tf.cast(image_sizes, tf.int32)

        def together():
            return self.decoder.detect(self._network, lambda scale: converter(images, sizes, scale), flip_test)

        def one_by_one():
            n = self.decoder.decode_config.max_detections

            def detect_one(args):
                image, size = args
                single = image[None, : size[0], : size[1], :]
                out = self.decoder.detect(self._network, lambda scale: converter(single, None, scale), flip_test)
                return {key: value[0] for key, value in out.items()}

            return tf.map_fn(
                detect_one, (images, sizes),
                fn_output_signature={
                    "boxes": tf.TensorSpec([n, 4], tf.float32), "scores": tf.TensorSpec([n], tf.float32),
                    "classes": tf.TensorSpec([n], tf.int32), "num_detections": tf.TensorSpec([], tf.int32),
                },
            )

        # (batch,): images that fill the padded batch share its canvas exactly.
        same = tf.reduce_all(tf.equal(sizes, sizes[:1]))
        return tf.cond(same, together, one_by_one)

    def detect_canvas(self, canvas):
        """Detections of normalised network inputs, in canvas pixels (one scale).

        What `predict` runs with ``model.preprocessor = None``.

        Args:
            canvas: float32 `(batch, H, W, 3)`, normalised, sizes as `call`.

        Returns:
            The dict of `detect`, boxes in canvas pixels.
        """
        canvas = tf.convert_to_tensor(canvas, tf.float32)
        inputs = canvas
        if self.decoder.flip_test:
            inputs = tf.concat([canvas, tf.reverse(canvas, axis=[2])], axis=0)
        return self.decoder(self(inputs, training=False), images=canvas)

    def predict_step(self, data):
        """`model.predict`: `detect` on the preprocessor's padded batch (or `detect_canvas`)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            return self.detect(x["images"], x["image_sizes"])
        return self.detect_canvas(x)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Detections of RGB images of any sizes, in original-image pixels.

        Args:
            x: a list of images (uint8 `(h, w, 3)`, grayscale `(h, w)` or
                `(h, w, 1)`, RGBA `(h, w, 4)`, or float in [0, 255]); one
                image; a batch `(n, h, w, 3)`; a `tf.RaggedTensor`; a dict
                ``{"images", "image_sizes"}``; or a `tf.data.Dataset` of such
                batches. With ``model.preprocessor = None``: normalised
                canvases, as `detect_canvas` takes.
            batch_size: int or None. Images per step (default 32, or 1 for a
                list, which runs each image at once like the releases).
            verbose, steps, callbacks: as `keras.Model.predict`.

        Returns:
            dict of NumPy arrays as `detect` returns, one row per image:
            ``boxes`` `(n, N, 4)` xyxy pixels, ``scores`` `(n, N)`,
            ``classes`` `(n, N)` (``-1`` padding), ``num_detections`` `(n,)`.

        Raises:
            TypeError / ValueError: an image that is not an array, not 2-D
                or 3-D, with another channel count, or empty.
        """
        if self.preprocessor is None:
            return keras.Model.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps,
                                       callbacks=callbacks)
        if isinstance(x, tf.data.Dataset):
            dataset = x.map(self.preprocess_samples, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = _image_dataset(x, batch_size).map(self.preprocessor)
        return keras.Model.predict(self, dataset.prefetch(tf.data.AUTOTUNE), verbose=verbose, steps=steps,
                                   callbacks=callbacks)

    def predict_images(self, images, batch_size=1, flip_test=None):
        """Detections per image, without padding: what evaluation and drawing want.

        Args:
            images: list of images as `predict` takes them (uint8 RGB,
                grayscale, RGBA), or one image.
            batch_size: int. Images per call. Defaults to `1`.
            flip_test: bool or None. Overrides the decoder's ``flip_test``.

        Returns:
            list with one dict per image: ``boxes`` float32 `(n, 4)` ``[x1,
            y1, x2, y2]`` in the image's pixels, ``scores`` float32 `(n,)`,
            ``classes`` int32 `(n,)` (0-based), best first.

        Raises:
            TypeError / ValueError: as `predict`.
        """
        if isinstance(images, (np.ndarray, tf.Tensor)) and len(images.shape) != 4:
            images = [images]
        images = [_as_rgb(image, i) for i, image in enumerate(images)]
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        key = (self.decoder, flip_test)
        if getattr(self, "_image_function_key", None) != key:
            # One traced function per decoder and flip setting (retraced
            # after `model.decoder = ...`).
            self._image_function = tf.function(
                lambda x, sizes: self.detect(x, sizes, flip_test=flip_test), reduce_retracing=True
            )
            self._image_function_key = key
        results = []
        for start in range(0, len(images), batch_size):
            batch, sizes = pad_images(images[start : start + batch_size])
            out = self._image_function(tf.constant(batch), tf.constant(sizes))
            results += unpad_detections({key: value.numpy() for key, value in out.items()})
        return results

    def predict_on_batch(self, x):
        """`predict` on one batch: the same inputs, the same detections."""
        if self.preprocessor is None:
            return keras.Model.predict_on_batch(self, x)
        n = len(x) if isinstance(x, (list, tuple)) else None
        return self.predict(x, batch_size=n, verbose=0)


def unpad_detections(detections):
    """The padded dict of `detect` (NumPy) -> one dict per image with its ``num_detections`` rows."""
    return [
        {key: detections[key][i, :count] for key in ("boxes", "scores", "classes")}
        for i, count in enumerate(detections["num_detections"])
    ]


def _as_rgb(image, index):
    """One image for `predict`: an array `(h, w)`, `(h, w, 1|3|4)` -> `(h, w, 3)`."""
    if isinstance(image, tf.Tensor):
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Image {index} is a {type(image).__name__}, expected a NumPy array.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"Image {index} has shape {image.shape}; expected (height, width[, 1, 3 or 4]).")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Image {index} is empty: shape {image.shape}.")
    if image.shape[2] == 1:  # grayscale: the same value in R, G and B
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]  # RGBA: alpha dropped


def _image_dataset(x, batch_size):
    """`predict`'s input as a batched `tf.data.Dataset` the preprocessor maps."""
    if isinstance(x, dict) or isinstance(x, tf.RaggedTensor):
        return tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 32)
    if isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) == 4:
        return tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 32)
    images = [x] if isinstance(x, (np.ndarray, tf.Tensor)) else list(x)
    if not images:
        raise ValueError("No images given.")
    images = [_as_rgb(image, i) for i, image in enumerate(images)]
    dtype = tf.uint8 if all(image.dtype == np.uint8 for image in images) else tf.float32
    sizes = np.array([image.shape[:2] for image in images], np.int32)

    def generate():
        for image, size in zip(images, sizes):
            yield {"images": image.astype(dtype.as_numpy_dtype, copy=False), "image_sizes": size}

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature={"images": tf.TensorSpec([None, None, 3], dtype),
                          "image_sizes": tf.TensorSpec([2], tf.int32)},
    )
    # A known length: Keras then knows when the images end (no "ran out of data").
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(images)))
    return dataset.padded_batch(batch_size or 1)
