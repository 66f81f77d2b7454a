"""Test-time preprocessing, network call and decoding in one graph (docs/reference.md §7.5).

`Predictor` turns a batch of uint8 RGB images of different sizes into
detections in original-image pixels. Per test scale ``s`` each image of size
``(h, w)`` is resized to ``(int(h * s), int(w * s))`` pixels, pasted centred
into a zero canvas, normalised, and run through the model together with its
horizontally flipped copy; `tf_centernet.decode.decode_detections` does the
rest.

The releases use one canvas per image, ``(int(h * s) | 127, int(w * s) |
127)``. A batch needs one common canvas, so here it is ``(max_b int(h_b * s)
| 127, max_b int(w_b * s) | 127)`` (still ``127 mod 128``) and every image
is centred in it with its own borders. With a batch of one image (or of
images of one size) this is exactly the releases' input.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tf_centernet.config import Config
from tf_centernet.decode import Decoder, ScaleGeometry

__all__ = ["Predictor", "preprocess_images", "pad_batch"]


def preprocess_images(
    images: tf.Tensor,
    image_sizes: tf.Tensor,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tuple[tf.Tensor, ScaleGeometry]:
    """Builds the network input of one test scale (docs/reference.md §7.5).

    Each image is cropped to its true size, resized (bilinear, half-pixel
    centres, no antialiasing, rounded to integers like OpenCV's uint8
    `cv2.resize`; skipped at scale 1) to ``(int(h * s), int(w * s))``, and
    pasted into a zero canvas of the common size ``(Hc, Wc)`` with its top-left
    corner at ``(Hc // 2 - hs // 2, Wc // 2 - ws // 2)`` (the releases'
    `crop_image` centred at ``(hs // 2, ws // 2)``). The whole canvas,
    padding included, is then normalised: ``(pixel / 255 - mean) / std``, so
    padding is ``-mean / std`` as in the releases.

    Args:
        images: uint8 tensor `(batch, max_height, max_width, 3)`. RGB images,
            each in the top-left corner, zero-padded at the bottom and right.
        image_sizes: int32 tensor `(batch, 2)`. True ``(height, width)`` of
            each image in pixels.
        scale: float. Test scale.
        mean: three floats, RGB order, for pixels scaled to [0, 1].
        std: three floats, RGB order.

    Returns:
        (canvas, geometry): float32 tensor `(batch, Hc, Wc, 3)` with ``Hc,
        Wc = 127 mod 128``, and the `ScaleGeometry` of the batch.
    """
    sizes = tf.cast(image_sizes, tf.int32)
    # int(h * s) in Python double precision.
    scaled = tf.cast(tf.floor(tf.cast(sizes, tf.float64) * float(scale)), tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            scaled, 1, message=f"An image is smaller than one pixel at scale {scale}."
        )
    ]
    with tf.control_dependencies(checks):
        hc = tf.bitwise.bitwise_or(tf.reduce_max(scaled[:, 0]), 127)
        wc = tf.bitwise.bitwise_or(tf.reduce_max(scaled[:, 1]), 127)
    tops = hc // 2 - scaled[:, 0] // 2
    lefts = wc // 2 - scaled[:, 1] // 2

    def paste(args):
        image, size, new_size, top, left = args
        crop = tf.cast(image[: size[0], : size[1], :], tf.float32)
        if float(scale) != 1.0:
            crop = tf.image.resize(crop, new_size, method="bilinear")
            crop = tf.clip_by_value(tf.round(crop), 0.0, 255.0)
        return tf.pad(
            crop,
            [[top, hc - new_size[0] - top], [left, wc - new_size[1] - left], [0, 0]],
        )

    # One image at a time: every image has its own resize size.
    canvas = tf.map_fn(
        paste,
        (images, sizes, scaled, tops, lefts),
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
    )
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    canvas = (canvas / 255.0 - mean) / std

    batch = tf.shape(sizes)[0]
    out_h = (hc + 1) // 4
    out_w = (wc + 1) // 4
    # Ratios in double, then float32, like the releases' numpy arrays.
    ratios = tf.cast(
        tf.stack(
            [tf.cast(out_h, tf.float64) / tf.cast(hc, tf.float64),
             tf.cast(out_w, tf.float64) / tf.cast(wc, tf.float64)]
        ),
        tf.float32,
    )
    borders = tf.cast(
        tf.stack([tops, tops + scaled[:, 0], lefts, lefts + scaled[:, 1]], axis=1),
        tf.float32,
    )
    geometry = ScaleGeometry(
        scale=float(scale),
        borders=borders,
        sizes=tf.cast(scaled, tf.float32),
        ratios=tf.tile(ratios[None, :], [batch, 1]),
    )
    return canvas, geometry


def pad_batch(images: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Stacks uint8 RGB images of different sizes, zero-padded bottom/right.

    Args:
        images: sequence of uint8 arrays `(height, width, 3)`.

    Returns:
        (batch, sizes): uint8 `(n, max_height, max_width, 3)` and int32
        `(n, 2)` true ``(height, width)``.

    Raises:
        TypeError: an image is not a uint8 numpy array.
        ValueError: an image is not `(height, width, 3)` or is empty.
    """
    if len(images) == 0:
        raise ValueError("No images given.")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"Image {i} is a {type(image).__name__}, expected a numpy array.")
        if image.dtype != np.uint8:
            raise TypeError(
                f"Image {i} has dtype {image.dtype}; expected uint8 RGB (0-255)."
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"Image {i} has shape {image.shape}; expected (height, width, 3) RGB."
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"Image {i} is empty: shape {image.shape}.")
    sizes = np.array([image.shape[:2] for image in images], dtype=np.int32)
    batch = np.zeros((len(images), sizes[:, 0].max(), sizes[:, 1].max(), 3), np.uint8)
    for i, image in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = image
    return batch, sizes


class Predictor:
    """Runs a CornerNet/CenterNet model on images and decodes its detections.

    The model is only called (``model(images, training=False)``), never
    modified. Its output contract: a dict of float tensors on the output grid
    (see `tf_centernet.decode.decode_detections`); a list of such dicts (one
    per stack) decodes its last entry.

    Args:
        model: callable. The detector.
        config: `Config`. Uses ``decode`` (thresholds, scales, flip) and
            ``data.mean``/``data.std`` (RGB); ``model.architecture`` and
            ``model.central_region`` choose the central-region filter.
        use_centers: bool or None. Override of the central-region filter.
            Defaults to CenterNet with ``central_region`` on.
        scales: sequence of floats or None. Override of
            ``config.decode.test_scales``.
        flip_test: bool or None. Override of ``config.decode.flip_test``.

    Attributes:
        decoder: the `tf_centernet.decode.Decoder` of ``config.decode``.
        predict: the `tf.function` ``(images uint8 (None, None, None, 3),
            image_sizes int32 (None, 2)) -> dict`` (see `__call__`); its
            concrete function is the serving signature.

    Raises:
        ValueError: centers requested but 1 is not a test scale.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from tf_centernet.config import Config
    >>> def blank_model(x, training=False):
    ...     b = tf.shape(x)[0]; h = (tf.shape(x)[1] + 1) // 4; w = (tf.shape(x)[2] + 1) // 4
    ...     z = lambda c: tf.zeros([b, h, w, c]) - 10.0
    ...     return {"tl_heatmap": z(80), "br_heatmap": z(80), "tl_embedding": z(1),
    ...             "br_embedding": z(1), "tl_offset": z(2), "br_offset": z(2)}
    >>> config = Config()
    >>> config.model.architecture = "cornernet"
    >>> predictor = Predictor(blank_model, config)
    >>> result = predictor.predict_images([np.zeros((100, 150, 3), np.uint8)])
    >>> result[0]["boxes"].shape
    (0, 4)
    """

    def __init__(
        self,
        model,
        config: Config,
        use_centers: Optional[bool] = None,
        scales: Optional[Sequence[float]] = None,
        flip_test: Optional[bool] = None,
    ):
        self.model = model
        self.config = config
        self.decode_config = config.decode
        self.scales = tuple(float(s) for s in (scales if scales is not None else config.decode.test_scales))
        if not self.scales:
            raise ValueError("At least one test scale is needed.")
        self.flip_test = config.decode.flip_test if flip_test is None else bool(flip_test)
        if use_centers is None:
            use_centers = config.model.uses_centers and config.model.central_region
        self.use_centers = bool(use_centers)
        if self.use_centers and 1.0 not in self.scales:
            raise ValueError(
                "The central-region filter takes its centers from scale 1 (docs/"
                f"reference.md §7.4); test scales {list(self.scales)} lack it."
            )
        self.decoder = Decoder(config.decode, use_centers=self.use_centers)
        self.mean = tuple(float(v) for v in config.data.mean)
        self.std = tuple(float(v) for v in config.data.std)
        self.predict = tf.function(
            self._predict,
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                tf.TensorSpec([None, 2], tf.int32, name="image_sizes"),
            ],
        )

    def detect(self, images: tf.Tensor, preprocess: Callable) -> Dict[str, tf.Tensor]:
        """The per-scale loop: preprocess, network (with the flipped copy), decode.

        The one loop behind `predict` and the exports' fixed-size graphs.

        Args:
            images: uint8 tensor `(batch, height, width, 3)`.
            preprocess: callable ``(images, scale) -> (canvas, ScaleGeometry)``,
                e.g. `preprocess_images` with the image sizes bound.

        Returns:
            The dict of `Decoder` (boxes in original-image pixels).
        """
        outputs, geometry = [], []
        for scale in self.scales:
            canvas, geo = preprocess(images, scale)
            if self.flip_test:
                # (2 * batch, Hc, Wc, 3): unflipped first, as decode expects.
                canvas = tf.concat([canvas, tf.reverse(canvas, axis=[2])], axis=0)
            outputs.append(self.model(canvas, training=False))
            geometry.append(geo)
        return self.decoder.decode(outputs, geometry, flip_test=self.flip_test)

    def _predict(self, images: tf.Tensor, image_sizes: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self.detect(
            images,
            lambda batch, scale: preprocess_images(batch, image_sizes, scale, self.mean, self.std),
        )

    def __call__(
        self,
        images: Union[np.ndarray, tf.Tensor],
        image_sizes: Optional[Union[np.ndarray, tf.Tensor]] = None,
    ) -> Dict[str, tf.Tensor]:
        """Detections for a padded batch.

        Args:
            images: uint8 tensor `(batch, max_height, max_width, 3)`. RGB,
                each image top-left aligned and zero-padded bottom/right.
            image_sizes: int32 tensor `(batch, 2)` or None. True ``(height,
                width)`` per image. Defaults to the full padded size.

        Returns:
            dict with ``boxes`` float32 `(batch, max_detections, 4)` ``[x1,
            y1, x2, y2]`` in original-image pixels, ``scores`` float32
            `(batch, max_detections)`, ``classes`` int32 `(batch,
            max_detections)` (0-based), ``num_detections`` int32 `(batch,)`;
            past ``num_detections`` boxes and scores are 0 and classes -1
            (`tf_centernet.decode.Decoder`).

        Raises:
            TypeError: images are not uint8.
            ValueError: wrong ranks or shapes, or sizes outside the batch.
        """
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(
                f"images must be uint8 RGB (0-255), got {images.dtype.name}; "
                "normalisation happens inside the predictor."
            )
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be (batch, height, width, 3), got shape {images.shape}."
            )
        if image_sizes is None:
            shape = tf.shape(images)
            image_sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        image_sizes = tf.convert_to_tensor(image_sizes)
        if not image_sizes.dtype.is_integer:
            raise TypeError(f"image_sizes must be integers, got {image_sizes.dtype.name}.")
        image_sizes = tf.cast(image_sizes, tf.int32)
        if image_sizes.shape.rank != 2 or image_sizes.shape[-1] != 2:
            raise ValueError(
                f"image_sizes must be (batch, 2), got shape {image_sizes.shape}."
            )
        if tf.executing_eagerly():
            sizes = image_sizes.numpy()
            if sizes.shape[0] != images.shape[0]:
                raise ValueError(
                    f"{sizes.shape[0]} image sizes for {images.shape[0]} images."
                )
            if (sizes < 1).any() or (sizes[:, 0] > images.shape[1]).any() or (
                sizes[:, 1] > images.shape[2]
            ).any():
                raise ValueError(
                    f"image_sizes {sizes.tolist()} must lie within the batch's "
                    f"{images.shape[1]}x{images.shape[2]} pixels and be positive."
                )
        return self.predict(images, image_sizes)

    def predict_images(
        self, images: Union[Sequence[np.ndarray], np.ndarray], batch_size: int = 1
    ) -> List[Dict[str, np.ndarray]]:
        """Detections for a list of RGB images of any sizes.

        Args:
            images: list of uint8 arrays `(height, width, 3)` (RGB), or one
                such array, or a uint8 array `(n, height, width, 3)`.
            batch_size: int. Images per network call; images of a call share
                one canvas (the largest), so 1 reproduces the releases exactly.
                Defaults to `1`.

        Returns:
            list with one dict per image: ``boxes`` float32 `(n, 4)` ``[x1,
            y1, x2, y2]`` in the image's pixels, ``scores`` float32 `(n,)`,
            ``classes`` int32 `(n,)` (0-based), best first.

        Raises:
            TypeError / ValueError: see `pad_batch`.
        """
        if isinstance(images, np.ndarray):
            images = [images] if images.ndim == 3 else list(images)
        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        results: List[Dict[str, np.ndarray]] = []
        for start in range(0, len(images), batch_size):
            batch, sizes = pad_batch(images[start : start + batch_size])
            out = self.predict(tf.constant(batch), tf.constant(sizes))
            out = {key: value.numpy() for key, value in out.items()}
            for i, count in enumerate(out["num_detections"]):
                results.append(
                    {
                        "boxes": out["boxes"][i, :count],
                        "scores": out["scores"][i, :count],
                        "classes": out["classes"][i, :count],
                    }
                )
        return results
