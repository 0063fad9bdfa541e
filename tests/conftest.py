"""Shared fixtures: the real CIFAR-10 when CIFAR10_DIR points at it, else the shipped real sample."""
import json
import os
from pathlib import Path

import pytest

from wrnlib.data import load_cifar10


def full_data_dir() -> str | None:
    path = os.environ.get("CIFAR10_DIR", "")
    return path if path and path != "sample" and os.path.isdir(path) else None


@pytest.fixture(scope="session")
def real_data():
    return load_cifar10(full_data_dir() or "sample")


def pytest_collection_modifyitems(config, items):
    """Under mutmut (it sets MUTANT_UNDER_TEST), run a mutant's tests fastest first, by the durations mutmut
    measured: most mutants fall to a quick test, and with -x the slow end-to-end runs then cost only survivors."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    stats = Path(__file__).resolve().parents[1] / "mutmut-stats.json"  # mutants/ when mutmut runs the tests
    try:
        durations = json.loads(stats.read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))  # stable: ties keep their file order
