"""Runs `train` in its own process for the multi-worker tests.

Usage: python train_worker.py OUT.npz LOGICAL_CPUS KEY=VALUE...
(TF_CONFIG comes from the environment). Writes the final weights
(``w0, w1, ...``), the indices of the trainable ones (``trainable``) and the per-step running-mean losses (``loss``) to OUT.npz.
"""

import os
import sys


def main():
    out, cpus, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import numpy as np
    import tensorflow as tf

    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    import keras

    keras.config.disable_traceback_filtering()

    from tf_centernet.config import load_config
    from tf_centernet.training import train

    losses = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    config = load_config("demo", overrides)
    model, _ = train(config, extra_callbacks=[Record()], progress="log")
    arrays = {f"w{i}": np.asarray(w.value) for i, w in enumerate(model.weights)}
    trainable = np.array([i for i, w in enumerate(model.weights) if w.trainable])
    np.savez(out, loss=np.array(losses), trainable=trainable, **arrays)


if __name__ == "__main__":
    main()
