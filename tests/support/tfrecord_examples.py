"""TF Object Detection API examples built by hand for the TFRecord tests."""

import numpy as np
import tensorflow as tf


def od_api_example(**features):
    """A serialised `tf.train.Example`; keyword ``image__encoded`` is the key ``image/encoded``."""
    def feature(value):
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            return tf.train.Feature(float_list=tf.train.FloatList(value=np.atleast_1d(value)))
        if isinstance(value, bytes) or (isinstance(value, list) and value and isinstance(value[0], bytes)):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=value if isinstance(value, list) else [value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(value)))

    return tf.train.Example(
        features=tf.train.Features(feature={k.replace("__", "/"): feature(v) for k, v in features.items()})
    ).SerializeToString()
