"""`benchmarks/accuracy.py`'s `Budget`: the learning-rate schedule in budget fractions."""

import importlib.util
import os
import time

import pytest


@pytest.fixture(scope="module")
def accuracy(repo_root):
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", os.path.join(repo_root, "benchmarks", "accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cosine_rate_by_budget_fraction(accuracy):
    budget = accuracy.Budget(600, None, 2e-3, 0.85, 0.1, schedule="cosine", warmup=0.1)
    assert budget.rate_at(0.0) == 0.0
    assert budget.rate_at(0.05) == pytest.approx(1e-3)
    assert budget.rate_at(0.1) == pytest.approx(2e-3)
    assert budget.rate_at(0.55) == pytest.approx(1e-3)
    assert budget.rate_at(1.0) == pytest.approx(0.0, abs=1e-12)


def test_deadline_drives_the_schedule_when_it_comes_first(accuracy):
    budget = accuracy.Budget(3600, time.time() + 100, 1e-3, 0.85, 0.1)
    assert budget.fraction() < 0.01  # little CPU or wall time spent yet
    budget.deadline, budget.wall_start = time.time() + 10, time.time() - 90  # 90 of 100 wall seconds gone
    assert budget.fraction() == pytest.approx(0.9, abs=0.01)
    assert accuracy.Budget(3600, None, 1e-3, 0.85, 0.1).fraction() < 0.01
