"""Conversion time and peak memory for a full-size release snapshot.

Writes a snapshot with the release's exact keys and shapes (from the key
list in ``../shared/data/release-fixtures``) and random values, in torch
0.4's legacy format like the published files, then converts it with
``tf-centernet convert`` in a child process and reports that process' wall
time and peak resident memory (``ru_maxrss``), next to the snapshot's size.

    python benchmarks/convert_snapshot.py [--release CenterNet-52] [--work /tmp/convert_bench]

``--release`` is one of CenterNet-52 (config centernet_hg52), CenterNet-104
(centernet_hg104), CornerNet (cornernet_hg104). Nothing is written into the
repository.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(REPO), "shared", "data", "release-fixtures")
RELEASES = {"CenterNet-52": "centernet_hg52", "CenterNet-104": "centernet_hg104", "CornerNet": "cornernet_hg104"}


def make_snapshot(release, path, seed=0):
    """A legacy-format snapshot with the release's keys, shapes and random values."""
    sys.path.insert(0, REPO)
    from tf_centernet.convert.snapshot import save_snapshot

    with open(os.path.join(FIXTURES, f"release_keys_{release}.json"), encoding="utf-8") as f:
        keys = json.load(f)
    rng = np.random.default_rng(seed)
    arrays = {}
    for entry in keys:
        name = entry["key"][len("module."):]
        if entry["dtype"] == "int64":
            arrays[name] = np.zeros(entry["shape"], np.int64)
        elif name.endswith("running_var"):
            arrays[name] = rng.uniform(0.5, 1.5, entry["shape"]).astype(np.float32)
        else:
            arrays[name] = (0.01 * rng.standard_normal(entry["shape"])).astype(np.float32)
    save_snapshot(arrays, path, legacy=True)
    return sum(a.size for a in arrays.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="CenterNet-52", choices=sorted(RELEASES))
    parser.add_argument("--work", default="/tmp/convert_bench")
    args = parser.parse_args(argv)

    os.makedirs(args.work, exist_ok=True)
    snapshot = os.path.join(args.work, f"{args.release}_random.pkl")
    model_dir = os.path.join(args.work, "converted")
    shutil.rmtree(model_dir, ignore_errors=True)
    values = make_snapshot(args.release, snapshot)  # random values, seed 0

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "tf_centernet", "convert", snapshot,
               "--config", RELEASES[args.release], "--model-dir", model_dir]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mib = usage.ru_maxrss / 1024.0
    if result.returncode != 0:
        print(result.stderr[-3000:])
        return result.returncode
    checkpoint = os.path.join(model_dir, "checkpoints", "ckpt-0.weights.h5")
    print(f"release            {args.release} ({RELEASES[args.release]})")
    print(f"values             {values:,} (float32 and int64 entries)")
    print(f"snapshot           {os.path.getsize(snapshot) / 2**20:.1f} MiB (legacy format)")
    print(f"checkpoint         {os.path.getsize(checkpoint) / 2**20:.1f} MiB")
    print(f"convert wall time  {wall:.1f} s (process start, imports, build, read, map, write)")
    print(f"convert CPU time   {usage.ru_utime + usage.ru_stime:.1f} s (user + system; less sensitive to a busy machine)")
    print(f"convert peak RSS   {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
