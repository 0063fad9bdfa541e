"""Shared fixtures: the real CIFAR-10 when CIFAR10_DIR points at it, else the shipped real sample."""
import os

import pytest

from wrnlib.data import load_cifar10


def full_data_dir() -> str | None:
    path = os.environ.get("CIFAR10_DIR", "")
    return path if path and path != "sample" and os.path.isdir(path) else None


@pytest.fixture(scope="session")
def real_data():
    return load_cifar10(full_data_dir() or "sample")
