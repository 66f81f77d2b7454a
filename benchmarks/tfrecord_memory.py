"""Peak memory of training on TFRecords: flat in the number of images (streamed input).

Usage::

    python benchmarks/tfrecord_memory.py [--sizes 300 3000] [--steps 6] [--shards 8]

For each size N, writes N synthetic 640x480 JPEG images (about 100 KB
each: smooth noise plus 1-4 coloured rectangles, 3 classes) as TFRecords
in `--shards` shards in a temporary folder, then trains a few steps of the
demo model (small hourglass, ``data.input_size=127``, batch 4) through
`tf_centernet.training.train` in a fresh Python process, which reports its
peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).
Prints one row per size, the difference and the ratio; the acceptance
(issue 20) is a difference within 300 MiB between 300 and 3,000 images.
The temporary folder is removed. CPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
from tf_centernet.config import load_config
from tf_centernet.training import train
result_path, overrides = sys.argv[1], sys.argv[2:]
train(load_config("demo", overrides), progress="none", verbose=0)
with open(result_path, "w") as f:
    json.dump({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)
"""


def write_shards(folder: str, num_images: int, num_shards: int, seed: int = 0) -> int:
    """Writes `num_images` synthetic 640x480 JPEG records into `num_shards` TFRecord files.

    Returns:
        int, the total bytes written.
    """
    import cv2
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    height, width = 480, 640
    # 32 distinct backgrounds (smooth noise), each record its own boxes.
    backgrounds = []
    for _ in range(32):
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        backgrounds.append(np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8))
    writers = [tf.io.TFRecordWriter(os.path.join(folder, f"train-{i:05d}-of-{num_shards:05d}.tfrecord"))
               for i in range(num_shards)]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for number in range(num_images):
        image = backgrounds[number % len(backgrounds)].copy()
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.integers(40, 200, 2)
            x, y = rng.integers(0, width - w), rng.integers(0, height - h)
            label = int(rng.integers(1, 4))
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colours[label - 1], -1)
            boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
            labels.append(label)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        columns = np.asarray(boxes, np.float32).T

        def floats(values):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))

        feature = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg.tobytes()])),
            "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
            "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
            "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
            "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(number + 1).encode()])),
            "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
            **{f"image/object/bbox/{k}": floats(columns[i]) for i, k in enumerate(("xmin", "ymin", "xmax", "ymax"))},
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[number % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def peak_rss(folder: str, steps: int, batch: int, timeout: int) -> dict:
    """Trains `steps` steps on the shards of `folder` in a fresh process; its peak RSS in MiB."""
    result = os.path.join(folder, "result.json")
    overrides = [
        f"train_data.annotations={folder}/train-*-of-*.tfrecord", "train_data.format=tfrecord",
        "model.num_classes=3", "data.input_size=127",
        f"train.batch_size={batch}", f"train.total_steps={steps}", f"train.steps_per_epoch={steps}",
        f"train.checkpoint_every={steps}", "train.decay_steps=[]", f"train.model_dir={folder}/model",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, result, *overrides], check=True, env=env, timeout=timeout)
    with open(result) as f:
        kib = json.load(f)["ru_maxrss_kib"]
    return {"peak_rss_mib": kib / 1024, "seconds": time.perf_counter() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        folder = tempfile.mkdtemp(prefix=f"tfrecord_memory_{size}_")
        try:
            written = write_shards(folder, size, args.shards)
            row = {"images": size, "tfrecord_mib": written / 2**20, **peak_rss(folder, args.steps, args.batch, args.timeout)}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append(row)
        print(f"{size:>6} images  {row['tfrecord_mib']:8.1f} MiB of TFRecords  peak RSS {row['peak_rss_mib']:8.1f} MiB"
              f"  ({row['seconds']:.0f} s)", flush=True)
    if len(rows) >= 2:
        low, high = rows[0], rows[-1]
        difference = high["peak_rss_mib"] - low["peak_rss_mib"]
        print(f"difference {difference:+.1f} MiB, ratio {high['peak_rss_mib'] / low['peak_rss_mib']:.3f} "
              f"({high['images']} vs {low['images']} images); acceptance: within 300 MiB -> "
              f"{'PASS' if abs(difference) <= 300 else 'FAIL'}")
    return rows


if __name__ == "__main__":
    main()
