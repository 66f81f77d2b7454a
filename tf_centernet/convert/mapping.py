"""The releases' state-dict keys <-> the variables of a `KeypointDetector`.

The mapping is built from the model's own structure (not from Keras'
generated variable paths): each release module name is paired with the
layer that implements it (docs/reference.md §1-3):

====================================  ======================================
release key prefix                    layer here
====================================  ======================================
``pre.0`` / ``pre.1``                 ``backbone.stem.conv`` / ``.residual``
``kps.S`` (``up1.i``, ``low1.i``,     ``backbone.hourglasses[S]`` (``upper``,
``low2`` recursive or ``low2.i``,     ``down``, ``inner``, ``up``)
``low3.i``)
``cnvs.S``                            ``backbone.cnvs[S]``
``inters_.S`` / ``cnvs_.S`` /         ``backbone.inter_convs[S]`` /
``inters.S``                          ``cnv_convs[S]`` / ``inter_blocks[S]``
``tl_cnvs.S``, ``br_cnvs.S``,         pooling modules ``tl_pool``,
``ct_cnvs.S``                         ``br_pool``, ``ct_pool`` of stack S
``{tl,br,ct}_heats.S``,               heads ``*_heatmap``, ``*_embedding``,
``{tl,br}_tags.S``,                   ``*_offset`` of stack S
``{tl,br,ct}_regrs.S``
====================================  ======================================

Layout changes: convolution kernels OIHW -> HWIO; BatchNorm ``weight``,
``bias``, ``running_mean``, ``running_var`` -> ``gamma``, ``beta``,
``moving_mean``, ``moving_variance`` (``num_batches_tracked`` is accepted
and dropped). Colour order: the releases feed BGR images (OpenCV, BGR
mean/std) and this project RGB, so the input channels of the first
convolution (``pre.0.conv.weight``) are reversed; a converted model on RGB
input then computes exactly what the release computes on the same image in
BGR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import keras
import numpy as np

from tf_centernet.convert.describe import as_overrides, describe_state
from tf_centernet.layers.convolution import ConvModule
from tf_centernet.layers.pooling import CascadeCornerPooling

__all__ = [
    "Entry",
    "KeyMismatch",
    "MappingError",
    "release_entries",
    "match_keys",
    "load_release_state",
    "release_state",
    "to_keras",
    "to_release",
]

CONV, FIRST_CONV, VECTOR = "conv", "first_conv", "vector"
_BN_NAMES = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))
POOLS = (("tl_pool", "tl_cnvs"), ("br_pool", "br_cnvs"), ("ct_pool", "ct_cnvs"))
HEADS = (
    ("tl_heatmap", "tl_heats"), ("br_heatmap", "br_heats"), ("ct_heatmap", "ct_heats"),
    ("tl_embedding", "tl_tags"), ("br_embedding", "br_tags"),
    ("tl_offset", "tl_regrs"), ("br_offset", "br_regrs"), ("ct_offset", "ct_regrs"),
)


class MappingError(ValueError):
    """A snapshot (or key list) does not match the model; the message lists the keys."""


@dataclass(frozen=True)
class Entry:
    """One release key and the Keras variable it fills.

    Attributes:
        key: str. Release key without the ``module.`` prefix.
        variable: the `keras.Variable`.
        kind: "conv" (OIHW <-> HWIO), "first_conv" (also BGR <-> RGB) or
            "vector" (1-D, unchanged).
        heatmap_output: bool. The 1x1 output convolution of a heatmap head
            (its shape depends on the number of classes).
    """

    key: str
    variable: object
    kind: str
    heatmap_output: bool = False

    @property
    def release_shape(self) -> Tuple[int, ...]:
        """The shape the release stores (OIHW for kernels)."""
        shape = tuple(int(d) for d in self.variable.shape)
        if self.kind in (CONV, FIRST_CONV):
            return (shape[3], shape[2], shape[0], shape[1])
        return shape


def to_keras(entry: Entry, array: np.ndarray) -> np.ndarray:
    """A release array in the Keras layout of `entry` (float32)."""
    array = np.asarray(array, np.float32)
    if entry.kind == FIRST_CONV:
        array = array[:, ::-1]  # BGR -> RGB input channels
    if entry.kind in (CONV, FIRST_CONV):
        array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return np.ascontiguousarray(array)


def to_release(entry: Entry, value) -> np.ndarray:
    """The inverse of `to_keras`: a Keras value in the release layout."""
    array = np.asarray(value, np.float32)
    if entry.kind in (CONV, FIRST_CONV):
        array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if entry.kind == FIRST_CONV:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def _conv2d(layer):
    """The `Conv2D` of a layer (strided convolutions are padding + Conv2D)."""
    if isinstance(layer, keras.Sequential):
        convs = [sub for sub in layer.layers if isinstance(sub, keras.layers.Conv2D)]
        if len(convs) != 1:
            raise TypeError(f"{layer.name}: expected one Conv2D, found {len(convs)}.")
        return convs[0]
    return layer


class _Builder:
    """Collects `Entry` objects while walking the model."""

    def __init__(self):
        self.entries: List[Entry] = []
        self.optional: List[str] = []

    def conv(self, prefix, layer, first=False, heatmap_output=False):
        conv = _conv2d(layer)
        self.entries.append(Entry(prefix + ".weight", conv.kernel, FIRST_CONV if first else CONV, heatmap_output))
        if conv.use_bias:
            self.entries.append(Entry(prefix + ".bias", conv.bias, VECTOR, heatmap_output))

    def bn(self, prefix, bn):
        for theirs, ours in _BN_NAMES:
            self.entries.append(Entry(f"{prefix}.{theirs}", getattr(bn, ours), VECTOR))
        self.optional.append(prefix + ".num_batches_tracked")

    def conv_module(self, prefix, module, first=False):
        self.conv(prefix + ".conv", module.conv, first)
        if module.bn is not None:
            self.bn(prefix + ".bn", module.bn)

    def sequential_conv_bn(self, prefix, sequential):
        conv, bn = sequential.layers
        self.conv(prefix + ".0", conv)
        self.bn(prefix + ".1", bn)

    def residual(self, prefix, block):
        self.conv(prefix + ".conv1", block.conv1)
        self.bn(prefix + ".bn1", block.bn1)
        self.conv(prefix + ".conv2", block.conv2)
        self.bn(prefix + ".bn2", block.bn2)
        if block.skip_conv is not None:
            self.conv(prefix + ".skip.0", block.skip_conv)
            self.bn(prefix + ".skip.1", block.skip_bn)

    def hourglass(self, prefix, module):
        for name, blocks in (("up1", module.upper), ("low1", module.down)):
            for i, block in enumerate(blocks):
                self.residual(f"{prefix}.{name}.{i}", block)
        if isinstance(module.inner, list):
            for i, block in enumerate(module.inner):
                self.residual(f"{prefix}.low2.{i}", block)
        else:
            self.hourglass(prefix + ".low2", module.inner)
        for i, block in enumerate(module.up):
            self.residual(f"{prefix}.low3.{i}", block)

    def pool(self, prefix, module):
        if isinstance(module, ConvModule):  # the center-pooling ablation
            self.conv_module(prefix, module)
            return
        self.conv_module(prefix + ".p1_conv1", module.branch_1)
        self.conv_module(prefix + ".p2_conv1", module.branch_2)
        self.conv(prefix + ".p_conv1", module.p_conv)
        self.bn(prefix + ".p_bn1", module.p_bn)
        self.conv(prefix + ".conv1", module.skip_conv)
        self.bn(prefix + ".bn1", module.skip_bn)
        self.conv_module(prefix + ".conv2", module.out_conv)
        if isinstance(module, CascadeCornerPooling):
            self.conv_module(prefix + ".look_conv1", module.look_1)
            self.conv_module(prefix + ".look_conv2", module.look_2)
            self.conv(prefix + ".P1_look_conv", module.look_conv_1)
            self.conv(prefix + ".P2_look_conv", module.look_conv_2)

    def head(self, prefix, head, heatmap):
        self.conv(prefix + ".0.conv", head.hidden.conv)
        self.conv(prefix + ".1", head.out, heatmap_output=heatmap)


def release_entries(model) -> Tuple[List[Entry], List[str]]:
    """Every variable of `model` paired with its release key.

    Args:
        model: a built `tf_centernet.models.KeypointDetector` (any hourglass
            size, class count, CenterNet or CornerNet).

    Returns:
        (entries, optional_keys): `Entry` list in the releases' module order,
        and the keys a snapshot may carry that fill nothing
        (``*.num_batches_tracked``).

    Raises:
        ValueError: the model is not built.
        MappingError: a model variable has no key or two keys (a defect of
            this mapping, never of the snapshot).
    """
    if not model.built:
        raise ValueError("Build the model (model.build((None, size, size, 3))) before mapping it.")
    b = _Builder()
    bb = model.backbone
    b.conv_module("pre.0", bb.stem.conv, first=True)
    b.residual("pre.1", bb.stem.residual)
    for s, hourglass in enumerate(bb.hourglasses):
        b.hourglass(f"kps.{s}", hourglass)
    for s, cnv in enumerate(bb.cnvs):
        b.conv_module(f"cnvs.{s}", cnv)
    for i in range(len(bb.inter_blocks)):
        b.sequential_conv_bn(f"inters_.{i}", bb.inter_convs[i])
        b.sequential_conv_bn(f"cnvs_.{i}", bb.cnv_convs[i])
        b.residual(f"inters.{i}", bb.inter_blocks[i])
    for ours, theirs in POOLS:
        for s, modules in enumerate(model.stack_modules):
            if ours in modules:
                b.pool(f"{theirs}.{s}", modules[ours])
    for ours, theirs in HEADS:
        for s, modules in enumerate(model.stack_modules):
            if ours in modules:
                b.head(f"{theirs}.{s}", modules[ours], heatmap=ours.endswith("heatmap"))

    counts: Dict[int, List[str]] = {}
    for entry in b.entries:
        counts.setdefault(id(entry.variable), []).append(entry.key)
    unmapped = [v.path for v in model.weights if id(v) not in counts]
    twice = [keys for keys in counts.values() if len(keys) > 1]
    if unmapped or twice or len(counts) != len(model.weights):
        raise MappingError(f"Mapping defect: variables without a key {unmapped[:5]}, keys sharing a variable {twice[:5]}.")
    return b.entries, b.optional


@dataclass
class KeyMismatch:
    """Differences between the keys a model needs and those a snapshot has."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    # The snapshot's own architecture as --set overrides, when recognisable.
    snapshot_overrides: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def message(self, source: str, limit: int = 3) -> str:
        """One paragraph naming the first mismatching keys of each kind."""
        parts = []
        if self.shapes:
            first = ", ".join(f"{k} {tuple(s)} vs model {tuple(m)}" for k, s, m in self.shapes[:limit])
            parts.append(f"{len(self.shapes)} shape mismatch(es) (snapshot vs model, OIHW): {first}")
        if self.missing:
            parts.append(f"{len(self.missing)} key(s) the model needs are missing: {', '.join(self.missing[:limit])}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} key(s) fill no model variable: {', '.join(self.unexpected[:limit])}")
        text = f"{source} does not match the model's architecture: " + "; ".join(parts) + "."
        if self.snapshot_overrides:
            text += f" The snapshot describes: --set {self.snapshot_overrides}"
        else:
            text += (" Check model.architecture, num_stacks, levels, widths, blocks, stem_channels,"
                     " head_channels, pool_channels and num_classes (--set model.KEY=VALUE).")
        return text


def _is_heatmap_output(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 4 and parts[0] in ("tl_heats", "br_heats", "ct_heats") and parts[2] == "1"


def match_keys(
    entries: Sequence[Entry], optional: Iterable[str], shapes: Mapping[str, Sequence[int]]
) -> KeyMismatch:
    """Compares the model's keys and shapes with a snapshot's (or a key list's).

    Args:
        entries, optional: from `release_entries`.
        shapes: dict release key (no prefix) -> shape.

    Returns:
        `KeyMismatch`, in the model's key order (unexpected keys in the
        snapshot's order).
    """
    result = KeyMismatch()
    wanted = {e.key for e in entries}
    optional = set(optional)
    for entry in entries:
        if entry.key not in shapes:
            result.missing.append(entry.key)
        elif tuple(shapes[entry.key]) != entry.release_shape:
            result.shapes.append((entry.key, tuple(shapes[entry.key]), entry.release_shape))
    result.unexpected = [k for k in shapes if k not in wanted and k not in optional]
    if not result.ok:
        found = describe_state(shapes)
        result.snapshot_overrides = as_overrides(found) if found else ""
    return result


@dataclass
class LoadReport:
    """What `load_release_state` did: keys loaded, and keys left initialized."""

    loaded: List[str]
    reinitialized: List[str]


def load_release_state(
    model, state: Mapping[str, np.ndarray], source: str = "snapshot", new_classes: bool = False
) -> LoadReport:
    """Assigns a release state dict to a built model, every key exactly once.

    Args:
        model: a built `KeypointDetector`.
        state: dict release key (without ``module.``) -> array, release
            layout (`tf_centernet.convert.snapshot.read_snapshot`).
        source: str. Names the snapshot in error messages.
        new_classes: bool. Allow a different class count: heatmap output
            layers whose shapes differ only there keep their fresh
            initialization (bias = model.heatmap_bias) instead of failing.

    Returns:
        `LoadReport`.

    Raises:
        MappingError: missing, leftover or mis-shaped keys (nothing is
            assigned then); the message names the first of each.
    """
    entries, optional = release_entries(model)
    mismatch = match_keys(entries, optional, {k: np.shape(v) for k, v in state.items()})
    skipped = []
    if new_classes:
        kept = []
        for key, theirs, ours in mismatch.shapes:
            if _is_heatmap_output(key) and theirs[1:] == ours[1:]:
                skipped.append(key)
            else:
                kept.append((key, theirs, ours))
        mismatch.shapes = kept
    if not mismatch.ok:
        raise MappingError(mismatch.message(source))
    loaded = []
    for entry in entries:
        if entry.key in skipped:
            continue
        entry.variable.assign(to_keras(entry, state[entry.key]))
        loaded.append(entry.key)
    return LoadReport(loaded=loaded, reinitialized=skipped)


def release_state(model, with_batch_counts: bool = True) -> Dict[str, np.ndarray]:
    """The model's variables as a release state dict (the inverse mapping).

    Args:
        model: a built `KeypointDetector`.
        with_batch_counts: bool. Add ``num_batches_tracked`` (0, int64) for
            every BatchNorm, as current PyTorch state dicts have.

    Returns:
        dict release key (without ``module.``) -> NumPy array, release
        layout (OIHW, BGR first convolution).
    """
    entries, optional = release_entries(model)
    state = {e.key: to_release(e, e.variable.numpy()) for e in entries}
    if with_batch_counts:
        state.update({key: np.zeros((), np.int64) for key in optional})
    return state
