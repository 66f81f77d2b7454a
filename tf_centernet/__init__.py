"""tf-centernet-triplets: CenterNet (keypoint triplets) and CornerNet in TensorFlow 2 / Keras 3.

Modules, in the direction of their imports: `ops` -> `layers`, `decode` ->
`models` -> `targets`, `losses`, `data` -> `training`, `inference`,
`evaluation` -> `export` -> `cli`. The behaviour each implements, with its
sources, is described in docs/reference.md (cited as ``docs/reference.md
§N``); README.md is the tour.
"""

__version__ = "0.1.0"
