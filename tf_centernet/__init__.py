"""tf-centernet: CenterNet (keypoint triplets) and CornerNet in TensorFlow 2 / Keras 3.

Modules, in the direction of their imports: `ops` -> `layers` -> `models`
-> `targets`, `losses`, `data`, `decode` -> `training`, `inference`,
`evaluation` -> `cli`. See README.md for the tour.
"""

__version__ = "0.1.0"
