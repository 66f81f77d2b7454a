"""`Decoder`: decoding as a Keras layer, part of the detector's config.

The detector's `predict_step` (and so `model.predict`, a reloaded `.keras`
file and `model.export`) runs `Decoder.detect`, the test-time loop over
scales and the flipped copy; `Predictor` runs the same loop for any callable.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Union

import keras
import tensorflow as tf

from tf_centernet.config import DecodeConfig
from tf_centernet.decode.geometry import ScaleGeometry, input_geometry
from tf_centernet.decode.pipeline import decode_detections

__all__ = ["Decoder", "PAD_CLASS"]

# Class index of the padding rows past ``num_detections`` (keras-hub's value).
PAD_CLASS = -1


@keras.saving.register_keras_serializable(package="tf_centernet")
class Decoder(keras.layers.Layer):
    """Head outputs -> padded detections; its config is a `DecodeConfig`.

    Runs `tf_centernet.decode.decode_detections` (keypoints, corner pairs,
    flip merge, central-region filter, soft-NMS; docs/reference.md,
    "Decoding") and marks the padding rows. The layer has no weights; swap or
    re-configure it with ``model.decoder = Decoder(DecodeConfig(...))``.
    With ``decode_config.jit_compile`` the decoding runs as one XLA-compiled
    `tf.function` (compiled once per input shape, also inside an outer
    `tf.function`); results equal the uncompiled ones within float rounding.

    Args:
        decode_config: `DecodeConfig`, a dict of its fields, or None for
            ``DecodeConfig()``. ``test_scales`` and ``flip_test`` drive
            `detect`; `call` and `decode` decode what they are given.
        use_centers: bool. Apply CenterNet's central-region filter (needs
            ``ct_heatmap``/``ct_offset``). Defaults to `True`.
        **kwargs: `keras.layers.Layer` arguments (``name``, ...).

    Call arguments:
        outputs: dict of float tensors `(batch', H_out, W_out, c)` as the
            detector returns them (see `decode_detections`); with
            ``decode_config.flip_test`` ``batch' = 2 * batch``, the
            horizontally flipped inputs in the second half.
        images: float tensor `(batch, H, W, 3)`. The (unflipped) network
            input; only its shape is used, to map boxes to its pixels.

    Returns:
        dict with
        - ``boxes``: float32 `(batch, N, 4)`, ``[x1, y1, x2, y2]`` in pixels
          of the network input (absolute "xyxy"), 0 past ``num_detections``.
        - ``scores``: float32 `(batch, N)`, best first, 0 past
          ``num_detections``.
        - ``classes``: int32 `(batch, N)`, 0-based class index, ``-1`` past
          ``num_detections`` (keras-hub's padding).
        - ``num_detections``: int32 `(batch,)`.
        where ``N = decode_config.max_detections``.

    Raises:
        KeyError: a head output the configuration needs is missing.
        ValueError: see `decode_detections`; at construction ``jit_compile``
            with ``nms="tf"``, or `use_centers` without ``decode_config.center_scale`` (1) among the
            test scales.
    """

    def __init__(
        self,
        decode_config: Optional[Union[DecodeConfig, dict]] = None,
        use_centers: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if isinstance(decode_config, dict):
            decode_config = DecodeConfig(**decode_config)
        self.decode_config = decode_config if decode_config is not None else DecodeConfig()
        self.use_centers = bool(use_centers)
        if self.decode_config.jit_compile and self.decode_config.nms == "tf":
            raise ValueError(
                "decode.jit_compile needs decode.nms 'gaussian', 'merge' or 'none': "
                "TF's soft-NMS kernel (nms 'tf') has no XLA kernel."
            )
        center_scale = float(self.decode_config.center_scale)
        if self.use_centers and center_scale not in [float(v) for v in self.decode_config.test_scales]:
            raise ValueError(
                f"The central-region filter takes its centers from scale {center_scale:g} (decode.center_scale; "
                f"docs/reference.md §7.4); decode.test_scales {list(self.decode_config.test_scales)} lack it."
            )
        self._compiled = None
        self.built = True  # no weights

    @property
    def flip_test(self) -> bool:
        """Whether the outputs hold a flipped copy of every input."""
        return bool(self.decode_config.flip_test)

    def call(self, outputs, images):
        last = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        output_size = tf.shape(last["tl_heatmap"])[1:3]
        return self.decode(outputs, input_geometry(images, output_size))

    @property
    def test_scales(self):
        """The test scales, floats (``decode_config.test_scales``)."""
        return tuple(float(s) for s in self.decode_config.test_scales)

    def detect(self, network, make_canvas, flip_test: Optional[bool] = None) -> Dict[str, tf.Tensor]:
        """The test-time loop: per scale a canvas, the network (with the flipped copy), then decoding.

        The one loop behind `model.predict`, the exports and `Predictor`
        (docs/reference.md §7.5).

        Args:
            network: callable ``canvas -> dict of head outputs`` (e.g.
                ``lambda x: model(x, training=False)``).
            make_canvas: callable ``scale -> (canvas float32 (batch, Hc, Wc,
                3), ScaleGeometry)``, e.g. a bound `CenterNetImageConverter`.
            flip_test: bool or None. Defaults to ``decode_config.flip_test``.

        Returns:
            The dict of `call`, boxes in the pixels the geometries map to
            (original-image pixels for the converter's geometry).
        """
        flip = self.flip_test if flip_test is None else bool(flip_test)
        outputs, geometry = [], []
        for scale in self.test_scales:
            canvas, geo = make_canvas(scale)
            if flip:
                # (2 * batch, Hc, Wc, 3): unflipped first, as decode expects.
                canvas = tf.concat([canvas, tf.reverse(canvas, axis=[2])], axis=0)
            outputs.append(network(canvas))
            geometry.append(geo)
        return self.decode(outputs, geometry, flip_test=flip)

    def decode(
        self,
        outputs,
        geometry: Union[ScaleGeometry, Sequence[ScaleGeometry]],
        flip_test: Optional[bool] = None,
    ) -> Dict[str, tf.Tensor]:
        """Decodes outputs of any test scales with their geometry.

        Args:
            outputs: dict, or one dict per scale (see `decode_detections`).
            geometry: `ScaleGeometry`, or one per scale.
            flip_test: bool or None. Defaults to ``decode_config.flip_test``.

        Returns:
            The dict of `call`, boxes in the pixels `geometry` maps to.
        """
        if self.decode_config.jit_compile:
            if self._compiled is None:
                # Compiled per input shape (XLA); traced per flip_test value.
                self._compiled = tf.function(self._decode_detections, jit_compile=True)
            detections = self._compiled(outputs, geometry, flip_test)
        else:
            detections = self._decode_detections(outputs, geometry, flip_test)
        count = detections["num_detections"]
        rows = tf.range(tf.shape(detections["classes"])[1])[None, :]
        detections["classes"] = tf.where(
            rows < count[:, None], detections["classes"], tf.constant(PAD_CLASS, tf.int32)
        )
        return detections

    def _decode_detections(self, outputs, geometry, flip_test):
        return decode_detections(
            outputs, geometry, self.decode_config,
            use_centers=self.use_centers, flip_test=flip_test,
        )

    def compute_output_spec(self, outputs, images):
        n = self.decode_config.max_detections
        batch = images.shape[0]
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "scores": keras.KerasTensor((batch, n), "float32"),
            "classes": keras.KerasTensor((batch, n), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            decode_config=dataclasses.asdict(self.decode_config),
            use_centers=self.use_centers,
        )
        return config
