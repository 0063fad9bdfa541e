"""What notebook 01 shows about CIFAR-10: class balance, example images, channel statistics, pixel intensities,
and every augmentation of the study applied to the same images.

Plain functions of tensors returning numbers or pandas tables: the notebook only calls and plots.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import augment
from ..data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, NUM_CLASSES


def class_counts(labels_by_split: dict[str, Any]) -> pd.DataFrame:
    """Long table (split, class, count, fraction) from {split: int labels}."""
    rows = []
    for split, labels in labels_by_split.items():
        counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(CIFAR10_CLASSES))
        total = max(int(counts.sum()), 1)
        rows += [{"split": split, "class": CIFAR10_CLASSES[i], "count": int(n), "fraction": int(n) / total}
                 for i, n in enumerate(counts)]
    return pd.DataFrame(rows, columns=["split", "class", "count", "fraction"])


def channel_stats(images, chunk: int = 5000) -> pd.DataFrame:
    """Per-channel mean and std of uint8 (N, 3, H, W) images scaled to [0, 1], beside the published values."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    rows = [{"channel": ch, "mean": float(mean[i]), "published_mean": CIFAR10_MEAN[i],
             "std": float(std[i]), "published_std": CIFAR10_STD[i]} for i, ch in enumerate(("red", "green", "blue"))]
    df = pd.DataFrame(rows)
    df["mean_diff"] = df["mean"] - df["published_mean"]
    df["std_diff"] = df["std"] - df["published_std"]
    return df


def pixel_histogram(images) -> pd.DataFrame:
    """Long table (channel, value 0..255, count, density) of uint8 (N, 3, H, W) images."""
    rows = []
    for i, ch in enumerate(("red", "green", "blue")):
        counts = torch.bincount(images[:, i].reshape(-1).to(torch.int64), minlength=256).tolist()
        total = max(sum(counts), 1)
        rows += [{"channel": ch, "value": v, "count": n, "density": n / total} for v, n in enumerate(counts)]
    return pd.DataFrame(rows)


def brightness(images: torch.Tensor, labels: torch.Tensor, chunk: int = 5000) -> pd.DataFrame:
    """Mean brightness (0..1) of each uint8 image, with its class name."""
    values = torch.cat([part.float().mean(dim=(1, 2, 3)) / 255 for part in images.split(chunk)])
    return pd.DataFrame({"class": [CIFAR10_CLASSES[i] for i in labels.tolist()], "brightness": values.numpy()})


def class_examples(labels: torch.Tensor, indices: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first ``per_class`` of ``indices`` of each class, class by class (labels indexed by position)."""
    labels = labels[indices]
    return torch.cat([indices[labels == c][:per_class] for c in range(NUM_CLASSES)])


# --------------------------------------------------------------------------- augmentations


def augmentation_rows(images: torch.Tensor, labels: torch.Tensor, lam: float = 0.6,
                      seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], str]:
    """Every augmentation of the study applied to the same images: ({row name: images}, titles, the
    full pipeline's description). Mixup and CutMix pair each image with its left neighbour at
    ratio ``lam``; the policies sample one op per image."""
    torch.manual_seed(seed)
    targets = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
    partner = torch.roll(torch.arange(len(images)), 1)
    normalized = augment.normalize(images)
    mixed, mixed_t = augment.mixup(normalized, targets, lam, partner)
    cut, cut_t = augment.cutmix(normalized, targets, lam, partner)
    pipeline = augment.BatchAugment(policy="trivialaugment", policy_group=1, cutout=8)
    rows = {
        "original": images,
        "crop (pad 4)": augment.random_crop(images, 4, "reflect"),
        "flip": augment.random_flip(images, torch.ones(len(images), dtype=torch.bool)),
        "Cutout 16": augment.cutout(normalized, 16),
        "Mixup": mixed,
        "CutMix": cut,
        "AutoAugment": augment.apply_policy(images, "autoaugment", group=1),
        "TrivialAugment": augment.apply_policy(images, "trivialaugment", group=1),
        "full pipeline": pipeline(images, labels)[0],
    }
    names = [CIFAR10_CLASSES[i] for i in labels.tolist()]

    def mix_titles(t: torch.Tensor) -> list[str]:
        return [f"{names[i][:5]} {t[i, labels[i]]:.0%}+{names[j][:5]}" for i, j in enumerate(partner.tolist())]
    titles = {"original": names, "Mixup": mix_titles(mixed_t), "CutMix": mix_titles(cut_t)}
    return rows, titles, pipeline.describe()
