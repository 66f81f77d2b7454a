"""Accuracy on a real data set for a fixed training budget.

Trains a named config from scratch (a fresh model directory) until the
budget is spent, then evaluates the held-out split (``data.val_*``) with the
CLI's own ``tf-centernet evaluate`` and prints one line per run:

    config arch backbone budget steps cpu_min wall_min AP AP50 FD FD50

The budget is either optimiser steps (``--steps``) or *process CPU minutes*
(``--cpu-minutes``: user + system time of this process and all its threads,
`resource.getrusage`), so other jobs on a shared machine slow a run down but
do not change how much computation it gets; wall time is recorded beside
it. ``--deadline HH:MM`` (UTC) also stops training at that wall time (the
line then shows the CPU minutes actually used); the learning-rate schedule
below then runs to the deadline instead (the budget fraction is the larger
of CPU and wall fractions), so a run cut short still decays. With a CPU budget the
learning rate follows ``train.lr_schedule`` in budget fractions, since the
step count is not known ahead: "step" is ``train.learning_rate`` until
``--decay-at`` of the budget (default 0.85), then x ``train.decay_rate``
(the step schedule of docs/reference.md §6); "cosine" warms up linearly
over the fraction ``train.warmup_steps / train.total_steps`` of the budget,
then decays along a half cosine to 0 at its end.

BCCD (train on ``train``, evaluate on ``test``), CenterNet and CornerNet with
the same small backbone and budget:

    nice -n 10 python benchmarks/accuracy.py --config bccd_small --cpu-minutes 30
    nice -n 10 python benchmarks/accuracy.py --config bccd_small --cpu-minutes 30 \\
        --set model.architecture=cornernet data.gaussian_iou=0.3 decode.border_tolerance=.inf

AP and AP50 are COCO's (pycocotools); FD and FD50 the false discovery rates
of the CenterNet paper (1 - AP over IoU 0.05:0.5, and at IoU 0.5).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tf_centernet import cli  # noqa: E402
from tf_centernet.config import load_config, to_yaml  # noqa: E402
from tf_centernet.training import train  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Budget(keras.callbacks.Callback):
    """Stops `fit` when the CPU budget or the wall deadline is spent.

    Args:
        cpu_limit: float or None. CPU seconds of training allowed.
        deadline: float or None. `time.time()` at which to stop.
        learning_rate: float. Initial (peak) rate.
        decay_at: float. Budget fraction after which the rate is multiplied
            by `decay_rate` (once; schedule "step").
        decay_rate: float.
        schedule: "step" or "cosine": linear warmup from 0 over the budget
            fraction `warmup`, then a half cosine to 0 at the end of the
            budget (``train.lr_schedule`` in budget fractions).
        warmup: float. Budget fraction of the warmup (schedule "cosine").
    """

    def __init__(self, cpu_limit, deadline, learning_rate, decay_at, decay_rate, schedule="step", warmup=0.0):
        super().__init__()
        self.cpu_limit, self.deadline = cpu_limit, deadline
        self.learning_rate, self.decay_at, self.decay_rate = learning_rate, decay_at, decay_rate
        self.schedule, self.warmup = schedule, warmup
        self.cpu_start = cpu_seconds()
        self.wall_start = time.time()
        self.decayed = False

    def used(self):
        return cpu_seconds() - self.cpu_start

    def rate_at(self, fraction):
        """The cosine schedule's rate at a budget fraction in [0, 1]."""
        if fraction < self.warmup:
            return self.learning_rate * fraction / self.warmup
        progress = min(1.0, (fraction - self.warmup) / max(1e-9, 1.0 - self.warmup))
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def fraction(self):
        """The budget fraction spent: CPU, or wall time to the deadline when that is larger.

        So a run that the deadline cuts short still completes its schedule.
        """
        spent = self.used() / self.cpu_limit
        if self.deadline:
            spent = max(spent, (time.time() - self.wall_start) / max(1e-9, self.deadline - self.wall_start))
        return spent

    def on_train_batch_begin(self, batch, logs=None):
        if self.cpu_limit and self.schedule == "cosine":
            self.model.optimizer.learning_rate.assign(self.rate_at(self.fraction()))

    def on_train_batch_end(self, batch, logs=None):
        used = self.used()
        if self.cpu_limit:
            if self.schedule == "step" and not self.decayed and self.fraction() >= self.decay_at:
                self.model.optimizer.learning_rate.assign(self.learning_rate * self.decay_rate)
                self.decayed = True
                print(f"[budget] learning rate x{self.decay_rate} at {used / 60:.1f} CPU min", flush=True)
            if used >= self.cpu_limit:
                self.model.stop_training = True
        if self.deadline and time.time() >= self.deadline:
            print("[budget] wall deadline reached", flush=True)
            self.model.stop_training = True


def run(args, overrides):
    config = load_config(args.config, overrides)
    tc = config.train
    run_name = f"{os.path.splitext(os.path.basename(args.config))[0]}-{config.model.architecture}"
    model_dir = os.path.abspath(os.path.join(args.output, run_name))
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)  # from scratch
    tc.model_dir = model_dir
    # The whole budget trains: one evaluation at the end, no pictures.
    tc.eval_every = tc.image_summary_every = 0
    budget_text = f"{args.steps} steps"
    callback = None
    if args.cpu_minutes:
        # The callback runs train.lr_schedule in budget fractions (the
        # warmup: warmup_steps / total_steps of the configuration).
        schedule, warmup = tc.lr_schedule, tc.warmup_steps / max(1, tc.total_steps)
        tc.lr_schedule, tc.warmup_steps = "step", 0
        tc.total_steps = 10**9
        tc.decay_steps = []  # the callback decays the rate
        tc.checkpoint_every = 10**9  # one checkpoint at the end
        deadline = None
        if args.deadline:
            hours, minutes = (int(v) for v in args.deadline.split(":"))
            now = datetime.datetime.now(datetime.timezone.utc)
            stop = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
            deadline = stop.timestamp()
        callback = Budget(
            args.cpu_minutes * 60, deadline, tc.learning_rate, args.decay_at, tc.decay_rate, schedule, warmup
        )
        budget_text = f"{args.cpu_minutes:g} CPU min"
    elif args.steps:
        tc.total_steps = args.steps
    print(to_yaml(config), flush=True)
    cpu0, wall0 = cpu_seconds(), time.time()
    model, _ = train(config, verbose=2, extra_callbacks=[callback] if callback else [])
    steps = int(model.optimizer.iterations.numpy())
    cpu_min, wall_min = (cpu_seconds() - cpu0) / 60, (time.time() - wall0) / 60
    del model
    keras.backend.clear_session()
    code = cli.main(["evaluate", "--model-dir", model_dir, "--config", os.path.join(model_dir, "config.yaml")])
    if code:
        raise SystemExit(f"evaluation failed with exit code {code}")
    with open(os.path.join(model_dir, "eval", "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)["metrics"]
    line = (
        f"RESULT config={args.config} arch={config.model.architecture} backbone={config.model.backbone} "
        f"input={config.data.input_size} batch={tc.batch_size} budget={budget_text!r} steps={steps} "
        f"cpu_min={cpu_min:.1f} wall_min={wall_min:.1f} AP={metrics['AP']:.3f} AP50={metrics['AP50']:.3f} "
        f"FD={metrics['FD']:.3f} FD50={metrics['FD50']:.3f}"
    )
    print(line, flush=True)
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config name or YAML path (e.g. bccd_small)")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--cpu-minutes", type=float, help="training budget in process CPU minutes")
    budget.add_argument("--steps", type=int, help="training budget in optimiser steps")
    parser.add_argument("--deadline", help="HH:MM UTC: also stop training at this wall time")
    parser.add_argument("--decay-at", type=float, default=0.85, help="budget fraction of the LR decay")
    parser.add_argument("--output", default="runs/accuracy", help="parent of the model directories")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    run(args, list(args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
