"""The tables notebook 01 shows about the data, checked against values computed here by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wrnlib import CIFAR10_CLASSES
from wrnlib.study import dataset


def test_class_examples_and_counts(real_data):
    idx = torch.arange(len(real_data.train_labels))
    picks = dataset.class_examples(real_data.train_labels, idx, 3)
    assert real_data.train_labels[picks].tolist() == [c for c in range(10) for _ in range(3)]
    counts = dataset.class_counts({"train": real_data.train_labels})
    expected = np.bincount(real_data.train_labels.numpy(), minlength=10)
    assert counts["count"].tolist() == expected.tolist() and counts["fraction"].sum() == pytest.approx(1.0)


def test_augmentation_rows_show_every_augmentation_of_the_same_images(real_data):
    images, labels = real_data.train_images[:6], real_data.train_labels[:6]
    rows, titles, pipeline = dataset.augmentation_rows(images, labels)
    assert list(rows)[0] == "original" and torch.equal(rows["original"], images)
    assert torch.equal(rows["flip"], images.flip(-1))
    assert all(len(r) == 6 for r in rows.values())
    assert titles["original"] == [CIFAR10_CLASSES[i] for i in labels.tolist()]
    assert "cutout(8)" in pipeline and "trivialaugment" in pipeline


def test_brightness_is_the_mean_pixel_value(real_data):
    images, labels = real_data.train_images[:4], real_data.train_labels[:4]
    table = dataset.brightness(images, labels, chunk=3)
    assert table["brightness"].tolist() == pytest.approx((images.float().mean((1, 2, 3)) / 255).tolist())
