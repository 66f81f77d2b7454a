"""The smallest detector the pipeline, training and export tests need.

One stack, one hourglass level, 16 channels: the same layers and heads as
any configuration (stem, residual blocks, corner, cascade corner and center
pooling, every head and loss term), a fraction of the graph to trace and
compile. Tests of the architecture itself (test_model, test_layers,
test_convert) use the real sizes.

Not 8 stem channels: TF 2.20's oneDNN convolution backward-filter kernel
corrupts the heap on some small shapes (see the README's known issues).
"""

TINY_MODEL = [
    "model.num_stacks=1", "model.levels=1", "model.widths=[16,16]", "model.blocks=[1,1]",
    "model.stem_channels=16", "model.head_channels=16", "model.pool_channels=16",
]
