"""`HourglassBackbone`: the stacked hourglass as a keras-hub `Backbone` (docs/reference.md §1).

The named sizes live in one table, `tf_centernet.config.BACKBONES`
(``hourglass_52``, ``hourglass_104``, ``hourglass_small``; the older
spellings ``hourglass52`` / ``hourglass104`` are accepted), and
`HourglassBackbone.from_size` builds any of them.

Why a subclassed and not a functional model: the stacks' features are the
only outputs, so a functional graph would add nothing a user can reach, but
it would store every weight under ``layers/<layer name>`` instead of the
attribute paths (``hourglasses/...``, ``cnvs/...``) of the project's earlier
checkpoints, which would then no longer load. As a subclassed model the
weights keep those paths (Keras reads the stem, now saved under
``layers/stem``, from its earlier place too; tests/test_model.py checks an
earlier-layout file).
"""

from __future__ import annotations

import keras
from keras_hub.models import Backbone

from tf_centernet.config import resolve_backbone
from tf_centernet.layers.convolution import ConvModule, ResidualBlock, batch_norm
from tf_centernet.layers.hourglass import HourglassModule, Stem

__all__ = ["HourglassBackbone"]


@keras.saving.register_keras_serializable(package="tf_centernet")
class HourglassBackbone(Backbone):
    """Stacked hourglass network (docs/reference.md §1).

    Stem, then `num_stacks` x (hourglass module, 3x3 convolution module
    ``cnv`` to `head_channels`). Between stacks: ReLU(BN(conv1x1(x)) +
    BN(conv1x1(cnv))) followed by a residual block, where x is the stem
    output or the previous merge. Intermediate predictions are not added
    back into the trunk.

    Args:
        num_stacks: int. 1 for Hourglass-52, 2 for Hourglass-104.
        levels: int. Recursion depth n of each hourglass (5 in the releases).
        widths: list of ``levels + 1`` ints. Channels per level.
        blocks: list of ``levels + 1`` ints. Residual blocks per level.
        stem_channels: int. Channels of the 7x7 stem convolution. Defaults
            to `128`.
        head_channels: int. Channels of each stack's ``cnv`` output (the
            releases' cnv_dim). Defaults to `256`.
        pool_channels: int. Width of the pooled branches of the heads that
            sit on this backbone (the releases' 128); stored here so that a
            named size describes the whole network. Defaults to `128`.
        dtype: dtype policy or None.
        **kwargs: `keras.Model` arguments (``name``, ``trainable``).

    Call arguments:
        images: float32 `(batch, height, width, 3)`, normalised
            (`tf_centernet.models.CenterNetImageConverter`); height and width
            ``4 * 2**levels * k - 1`` or ``4 * 2**levels * k`` pixels (511
            for the full models).
        training: bool.

    Returns:
        List of `num_stacks` float tensors `(batch, ceil(H/4), ceil(W/4),
        head_channels)`, one per stack (output-grid cells).

    Example:

    >>> backbone = HourglassBackbone.from_size("hourglass_small")
    >>> [f.shape for f in backbone(keras.ops.zeros((1, 63, 63, 3)))]
    [TensorShape([1, 16, 16, 32]), TensorShape([1, 16, 16, 32])]
    """

    def __init__(
        self,
        num_stacks,
        levels,
        widths,
        blocks,
        stem_channels=128,
        head_channels=256,
        pool_channels=128,
        dtype=None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        if len(widths) != levels + 1 or len(blocks) != levels + 1:
            raise ValueError(
                f"widths and blocks need levels + 1 = {levels + 1} entries, got "
                f"{len(widths)} and {len(blocks)}."
            )
        self.num_stacks = int(num_stacks)
        self.levels = int(levels)
        self.widths = [int(w) for w in widths]
        self.blocks = [int(b) for b in blocks]
        self.stem_channels = int(stem_channels)
        self.head_channels = int(head_channels)
        self.pool_channels = int(pool_channels)
        w0 = widths[0]
        self.stem = Stem(stem_channels, w0, name="stem")
        self.hourglasses = [
            HourglassModule(levels, widths, blocks, name=f"hourglass_{i}") for i in range(num_stacks)
        ]
        self.cnvs = [ConvModule(head_channels, 3, name=f"cnv_{i}") for i in range(num_stacks)]
        self.inter_convs = []  # applied to the trunk (the releases' inters_)
        self.cnv_convs = []  # applied to cnv (the releases' cnvs_)
        self.inter_blocks = []  # the releases' inters
        for i in range(num_stacks - 1):
            self.inter_convs.append(
                keras.Sequential([keras.layers.Conv2D(w0, 1, use_bias=False), batch_norm()], name=f"inter_conv_{i}")
            )
            self.cnv_convs.append(
                keras.Sequential([keras.layers.Conv2D(w0, 1, use_bias=False), batch_norm()], name=f"cnv_conv_{i}")
            )
            self.inter_blocks.append(ResidualBlock(w0, name=f"inter_{i}"))
        self.relu = keras.layers.ReLU()

    @classmethod
    def from_size(cls, size, **overrides):
        """The backbone of a named size (`tf_centernet.config.BACKBONES`).

        Args:
            size: str. ``"hourglass_52"``, ``"hourglass_104"`` or
                ``"hourglass_small"`` (or ``"hourglass52"``, ``"hourglass104"``).
            **overrides: constructor arguments replacing the table's.

        Raises:
            ValueError: unknown size.
        """
        return cls(**{**resolve_backbone(size), **overrides})

    @property
    def image_shape(self):
        """Any height and width: ``(None, None, 3)`` (keras-hub convention)."""
        return (None, None, 3)

    def call(self, images, training=None):
        inter = self.stem(images, training=training)
        features = []
        for i in range(self.num_stacks):
            hourglass = self.hourglasses[i](inter, training=training)
            cnv = self.cnvs[i](hourglass, training=training)
            features.append(cnv)
            if i < self.num_stacks - 1:
                inter = self.relu(
                    self.inter_convs[i](inter, training=training) + self.cnv_convs[i](cnv, training=training)
                )
                inter = self.inter_blocks[i](inter, training=training)
        return features

    def get_config(self):
        config = super().get_config()
        config.update(
            num_stacks=self.num_stacks, levels=self.levels, widths=list(self.widths),
            blocks=list(self.blocks), stem_channels=self.stem_channels,
            head_channels=self.head_channels, pool_channels=self.pool_channels,
        )
        return config
