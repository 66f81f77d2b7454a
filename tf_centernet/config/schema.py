"""The configuration's dataclasses, the allowed values of every enumerated field, and `validate`.

Every default below is the release default described in docs/reference.md,
section named next to each field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

# Named hourglass backbones (docs/reference.md §1). `levels` is the recursion depth n,
# `widths` has n + 1 entries and `blocks` the residual blocks per level.
_HOURGLASS_52 = dict(
    num_stacks=1,
    levels=5,
    widths=[256, 256, 384, 384, 384, 512],
    blocks=[2, 2, 2, 2, 2, 4],
    stem_channels=128,
    head_channels=256,
    pool_channels=128,
)
BACKBONES = {
    "hourglass_52": _HOURGLASS_52,
    # Two stacks of the same hourglass.
    "hourglass_104": dict(_HOURGLASS_52, num_stacks=2),
    # A CPU-sized hourglass for tests and small experiments.
    "hourglass_small": dict(
        num_stacks=2,
        levels=3,
        widths=[32, 32, 48, 64],
        blocks=[1, 1, 1, 2],
        stem_channels=16,
        head_channels=32,
        pool_channels=16,
    ),
}
# Spellings of earlier releases of this project (config files keep working).
BACKBONE_ALIASES = {"hourglass52": "hourglass_52", "hourglass104": "hourglass_104"}


def resolve_backbone(name: str) -> dict:
    """The hyper-parameters of a named hourglass size (a copy of its `BACKBONES` row).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    key = BACKBONE_ALIASES.get(name, name)
    if key not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    spec = dict(BACKBONES[key])
    spec["widths"], spec["blocks"] = list(spec["widths"]), list(spec["blocks"])
    return spec


@dataclass
class ModelConfig:
    """Detector architecture (docs/reference.md §1-3).

    `architecture` is ``"centernet"`` (keypoint triplets) or ``"cornernet"``.
    `backbone` names an entry of `BACKBONES`; any of the hourglass fields set
    here (not None) override that entry.
    """

    architecture: str = "centernet"
    backbone: str = "hourglass_104"
    num_classes: int = 80
    num_stacks: Optional[int] = None
    levels: Optional[int] = None
    widths: Optional[List[int]] = None
    blocks: Optional[List[int]] = None
    stem_channels: Optional[int] = None
    head_channels: Optional[int] = None
    pool_channels: Optional[int] = None
    # CenterNet ablation switches (CenterNet paper, Table 4).
    cascade_corner_pooling: bool = True
    center_pooling: bool = True
    central_region: bool = True
    heatmap_bias: float = -2.19
    # "auto" | "scan" | "custom": implementation of the directional pooling
    # (tf_centernet.ops.pooling). "auto": the compiled ops (custom_ops/,
    # built on first use) where they load, else the pure-TF scans with one
    # warning; exports always use the scans.
    pooling_impl: str = "auto"
    # The one precision setting, for training and inference: "float32"
    # (default), "bfloat16" or "float16": the network computes in that type
    # (Keras "mixed_*" policy: float32 weights, so checkpoints are
    # interchangeable; heads cast back to float32 before the loss and
    # decoding). float16 trains with loss scaling. Opt-in, for accelerators
    # and CPUs with bf16 units; see docs/bfloat16.md.
    compute_dtype: str = "float32"

    def hourglass(self) -> dict:
        """The resolved hourglass hyper-parameters.

        Returns:
            dict with keys num_stacks, levels, widths, blocks, stem_channels,
            head_channels, pool_channels.

        Raises:
            ValueError: unknown backbone name or inconsistent lengths.
        """
        spec = resolve_backbone(self.backbone)
        for key in spec:
            value = getattr(self, key)
            if value is not None:
                spec[key] = list(value) if isinstance(value, Sequence) else value
        if len(spec["widths"]) != spec["levels"] + 1:
            raise ValueError(
                f"widths needs levels + 1 = {spec['levels'] + 1} entries, got "
                f"{len(spec['widths'])}."
            )
        if len(spec["blocks"]) != spec["levels"] + 1:
            raise ValueError(
                f"blocks needs levels + 1 = {spec['levels'] + 1} entries, got "
                f"{len(spec['blocks'])}."
            )
        return spec

    @property
    def uses_centers(self) -> bool:
        """True when the model predicts center keypoints (CenterNet)."""
        return self.architecture == "centernet"


@dataclass
class InputConfig:
    """One split's data: where it is and how to read it (``train_data``, ``validation_data``).

    Relative paths written in a config file resolve against that file's
    folder (`load_config`); command-line overrides against the working
    directory.
    """

    # A COCO .json, a VOC root / XML folder / ImageSets .txt, or TFRecord
    # files (a file, glob pattern, comma list or folder).
    annotations: str = ""
    # The image folder (COCO; a VOC layout finds its own; unused for TFRecord).
    images: str = ""
    # "coco" | "voc" | "tfrecord"; empty: detected from `annotations`
    # (tf_centernet.data.records.detect_format).
    format: str = ""
    # VOC / TFRecord class list file (one name per line); empty: VOC names
    # found in the XML (sorted), TFRecord `image/object/class/text` names.
    classes: str = ""


@dataclass
class DataConfig:
    """Input pipeline and training targets (docs/reference.md §4 and 6).

    Where the data are is per split: `Config.train_data` and
    `Config.validation_data` (`InputConfig`).

    Image sizes are in pixels. Colour statistics are in RGB order (the
    releases list them in BGR; docs/reference.md §6).
    """

    # VOC `difficult` objects: "drop", "ignore" (not trained on, ignore
    # regions in evaluation, as COCO crowd) or "keep".
    difficult: str = "ignore"
    # Share of the training images held out as validation data when
    # validation_data names none (a data set that comes as one folder): the
    # same images in every run, chosen from the file names and split_seed
    # (tf_centernet.data.holdout). 0: no split.
    validation_split: float = 0.0
    split_seed: int = 0
    input_size: int = 511
    max_objects: int = 128
    # Random crop (docs/reference.md §6).
    random_crop: bool = True
    rand_scales: List[float] = field(
        default_factory=lambda: [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    )
    border: int = 128
    flip: bool = True
    color_jitter: bool = True
    lighting: bool = True
    lighting_std: float = 0.1
    mean: List[float] = field(
        default_factory=lambda: [0.47026115, 0.44719302, 0.40789654]
    )
    std: List[float] = field(
        default_factory=lambda: [0.27809835, 0.27408164, 0.28863828]
    )
    # Targets (docs/reference.md §4).
    gaussian_bump: bool = True
    gaussian_iou: float = 0.7
    # gaussian_radius formula: "release" (the releases' roots, default) or
    # "paper" (the geometric radius); see tf_centernet.targets.gaussian_radius.
    radius_variant: str = "release"
    # Crowd boxes: "drop" (default) or "keep" (treated as ordinary objects,
    # as the releases do).
    crowd: str = "drop"
    # tf.data: images decoded, augmented and encoded in parallel: -1 lets
    # tf.data tune it (AUTOTUNE), 0 runs sequentially, n > 0 uses n calls.
    num_parallel_calls: int = -1  # tf.data.AUTOTUNE
    # tf.data: keep the input order of the parallel map (reproducible
    # batches). False lets a fast element overtake a slow one; each image's
    # augmentation is still a function of its element number.
    deterministic: bool = True
    # tf.data: keep the decoded uint8 images in memory after the first epoch
    # (for small sets: about H * W * 3 bytes per image). Same batches.
    cache_images: bool = False

    @property
    def output_size(self) -> int:
        """Output-grid size in cells: the network's stride is 4 (docs/reference.md §1)."""
        return (self.input_size + 1) // 4


@dataclass
class LossConfig:
    """Loss weights (docs/reference.md §5)."""

    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    pull_weight: float = 0.1
    push_weight: float = 0.1
    offset_weight: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation schedule (docs/reference.md §6) and bookkeeping.

    `learning_rate` is for `batch_size` images; `total_steps` and
    `decay_steps` count optimiser steps.
    """

    batch_size: int = 48
    # "adam" (the releases') | "adamw" | "sgd", wrapped in the non-finite
    # guard (tf_centernet.training.optimizer). momentum and nesterov are
    # SGD's; weight_decay (decoupled) is AdamW's and SGD's (0: none).
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    learning_rate: float = 2.5e-4
    total_steps: int = 480000
    decay_steps: List[int] = field(default_factory=lambda: [450000])
    decay_rate: float = 0.1
    # "step" (the releases': x decay_rate after each of decay_steps) or
    # "cosine": linear warmup from 0 over warmup_steps, then a half cosine
    # from learning_rate to 0 at total_steps (decay_steps unused).
    lr_schedule: str = "step"
    warmup_steps: int = 0
    steps_per_epoch: int = 1000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    model_dir: str = "runs/centernet"
    # "auto" | "one_device" | "mirrored" | "multi_worker" | "tpu"; see
    # tf_centernet.training.distribute.get_strategy ("auto": multi_worker when
    # TF_CONFIG names several workers, else mirrored over the GPUs).
    strategy: str = "auto"
    # XLA-compile the train step (the pooling then uses the pure-TF scans).
    jit_compile: bool = False
    # How the input pipeline hands over the heatmap targets: "sparse" (the
    # objects' keypoints, radii and classes; the training step draws the
    # maps, tf_centernet.gaussians.draw_heatmaps), "dense" (the maps
    # themselves, 3 x H x W x classes floats an image), "auto": sparse,
    # dense under jit_compile (XLA needs the drawing's static shape).
    heatmaps: str = "auto"
    # Steps between COCO evaluations on validation_data (0: none), images used
    # (0: all); steps between TensorBoard pictures (0: none); steps between
    # plain progress lines and train-run scalars. -1 (auto), when
    # validation_data.annotations is set: pictures at every checkpoint, and
    # at most 4 evaluations per run at checkpoints (e.g. 80, 160, 240 of 300
    # steps with checkpoint_every=40); off without validation data
    # (tf_centernet.training.task.evaluation_cadence). Cost on a 2-core CPU,
    # centernet_small on coco-tiny's 80 validation images: one evaluation
    # ~34 training steps, pictures ~3 (benchmarks/evaluation_cost.py).
    eval_every: int = -1
    eval_max_images: int = 0
    image_summary_every: int = -1
    log_every: int = 100
    seed: int = 0
    # Initial weights for a new run (ignored when model_dir has checkpoints):
    # a model directory (converted or trained) or a release snapshot; with
    # another class count the heatmap output layers are re-initialized
    # (tf_centernet.convert.finetune).
    init_from: str = ""
    # A step whose loss or gradients hold a NaN / Inf is never applied.
    # "stop": end training with an error naming the step and loss terms;
    # "skip": log and count it, go on, stop after max_consecutive_nonfinite
    # skips in a row. See tf_centernet.training.callbacks.NonFiniteGuard.
    on_nonfinite: str = "stop"
    max_consecutive_nonfinite: int = 10


@dataclass
class DecodeConfig:
    """Inference decoding (docs/reference.md §7)."""

    # Keypoints kept per heatmap (top-K over class, y, x).
    top_k: int = 70
    # Largest embedding distance of a corner pair (CornerNet's associative embedding).
    ae_threshold: float = 0.5
    # Best corner pairs kept per image before soft-NMS.
    num_dets: int = 1000
    # Window of the heatmaps' max-pool NMS, in output-grid cells.
    nms_kernel: int = 3
    # Central region (CenterNet eq. 1): n for small and large boxes.
    small_region_n: int = 3
    large_region_n: int = 5
    region_area_threshold: float = 22500.0
    # Soft-NMS (docs/reference.md §7.6): "gaussian" or "merge" (the releases'),
    # "tf" (TF's fused kernel: faster, not bit-exact) or "none" (skips it).
    nms: str = "gaussian"
    # "auto" | "custom" | "loop": implementation of "gaussian"/"merge": the
    # compiled op (custom_ops/, CPU) where it loads, else the TensorFlow loop
    # (the portable one, always used in exports and under XLA). Same detections.
    soft_nms_impl: str = "auto"
    # Gaussian soft-NMS: a box's score is multiplied by exp(-IoU^2 / sigma).
    soft_nms_sigma: float = 0.5
    # Boxes scoring below this leave soft-NMS.
    score_threshold: float = 0.001
    # "merge": exponent of the weights that average overlapping boxes.
    merge_weight_exp: float = 8.0
    # Detections per image, best first.
    max_detections: int = 100
    # Also decode the horizontally flipped image and merge (docs/reference.md §7.5).
    flip_test: bool = True
    # Image scales of multi-scale testing (1.0: the image's own size).
    test_scales: List[float] = field(default_factory=lambda: [1.0])
    # The test scale whose center keypoints the central-region filter uses
    # (docs/reference.md §7.4); must be one of `test_scales`. The releases'
    # 1.0; another value suits a model trained on shrunk images (e.g.
    # configs/bccd_small.yaml: rand_scales around 2, test_scales [0.5]).
    center_scale: float = 1.0
    # Boxes reaching this many pixels past the image into the padding are rejected.
    border_tolerance: float = 5.0
    # XLA-compile the decoding after the network (`Decoder`); not with nms "tf".
    # For accelerators: on CPU XLA's heatmap top-K is a full sort (slower).
    jit_compile: bool = False


# Every enumerated setting, "section.key" -> its allowed values: the one
# place they are listed and checked (`validate`, `check_choice`). Modules
# that take such a value as an argument check it here too.
CHOICES = {
    "model.architecture": ("centernet", "cornernet"),
    "model.backbone": tuple(BACKBONES) + tuple(BACKBONE_ALIASES),
    "model.pooling_impl": ("auto", "scan", "custom"),
    "model.compute_dtype": ("float32", "bfloat16", "float16"),
    "train_data.format": ("", "coco", "voc", "tfrecord"),
    "validation_data.format": ("", "coco", "voc", "tfrecord"),
    "data.difficult": ("drop", "ignore", "keep"),
    "data.radius_variant": ("release", "paper"),
    "data.crowd": ("drop", "keep"),
    "train.strategy": ("auto", "one_device", "mirrored", "multi_worker", "tpu"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.lr_schedule": ("step", "cosine"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.heatmaps": ("auto", "sparse", "dense"),
    "decode.nms": ("gaussian", "merge", "tf", "none"),
    "decode.soft_nms_impl": ("auto", "custom", "loop"),
}


def check_choice(key: str, value):
    """`value` when it is one of ``CHOICES[key]``.

    Raises:
        ValueError: another value; the message names the key and the
            allowed values.
    """
    allowed = CHOICES[key]
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.")
    return value


def validate(config: "Config") -> "Config":
    """Checks every enumerated setting (`CHOICES`), the hourglass sizes and the validation split; returns `config`.

    Called by `load_config`, so that a typo fails when the configuration
    loads, not when a graph is traced mid-run.

    Raises:
        ValueError: the first bad value, naming its key and the allowed values.
    """
    for key in CHOICES:
        section, field_name = key.split(".")
        check_choice(key, getattr(getattr(config, section), field_name))
    config.model.hourglass()
    split = config.data.validation_split
    if not 0.0 <= split < 1.0:
        raise ValueError(f"data.validation_split must be in [0, 1) (a share of the images), got {split}.")
    if split > 0 and config.validation_data.annotations:
        raise ValueError(
            "data.validation_split holds out training images as validation data, but validation_data.annotations "
            "names validation data too: set one of them."
        )
    if config.train.jit_compile and config.train.heatmaps == "sparse":
        raise ValueError(
            "train.heatmaps=sparse draws the heatmaps in the training step, which XLA (train.jit_compile) cannot "
            "compile (no static shape): use train.heatmaps=auto or dense with jit_compile."
        )
    return config


@dataclass
class Config:
    """The whole experiment."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data: InputConfig = field(default_factory=InputConfig)
    validation_data: InputConfig = field(default_factory=InputConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def replace(config, **changes):
    """`dataclasses.replace`, re-exported for callers building configs."""
    return dataclasses.replace(config, **changes)


def input_config(config: "Config", split: str) -> InputConfig:
    """The input section of a split.

    ``"train"`` -> `Config.train_data`; ``"val"`` or ``"validation"`` ->
    `Config.validation_data`, or `Config.train_data` when
    ``data.validation_split`` > 0 (validation is then a held-out share of
    the training data; `validate` forbids both at once).

    Raises:
        ValueError: another split name.
    """
    if split == "train":
        return config.train_data
    if split in ("val", "validation"):
        return config.train_data if config.data.validation_split > 0 else config.validation_data
    raise ValueError(f"split must be 'train', 'val' or 'validation'; got {split!r}.")
