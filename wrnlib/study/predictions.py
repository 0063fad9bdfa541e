"""A trained model's predictions on a labelled set and the tables notebook 02 shows from them: the confusion
matrix, accuracy per class and the most confident mistakes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data import CIFAR10_CLASSES, NUM_CLASSES
from ..engine import predict_logits


@dataclass
class Predictions:
    """A model's predictions on a labelled set, and the tables the training notebook shows."""
    labels: torch.Tensor  # (N,) true classes
    pred: torch.Tensor  # (N,) predicted classes
    confidence: torch.Tensor  # (N,) softmax probability of the prediction

    @property
    def accuracy(self) -> float:
        return (self.pred == self.labels).float().mean().item()

    def confusion(self) -> np.ndarray:
        """Counts, true class by row, predicted class by column."""
        flat = torch.bincount(self.labels * NUM_CLASSES + self.pred, minlength=NUM_CLASSES ** 2)
        return flat.reshape(NUM_CLASSES, NUM_CLASSES).numpy()

    def per_class(self) -> pd.DataFrame:
        """Columns class, images (test images of the class) and accuracy (a fraction, for the figure)."""
        cm = self.confusion()
        images = cm.sum(axis=1).astype(np.int64)
        return pd.DataFrame({"class": CIFAR10_CLASSES, "images": images,
                             "accuracy": cm.diagonal() / np.maximum(images, 1)})

    def per_class_table(self) -> pd.DataFrame:
        """:meth:`per_class` for reading: one row per class, its image count as an integer and its accuracy in
        percent. Not transposed: a transposed table has one dtype per column, which shows counts as 50.00."""
        table = self.per_class().set_index("class")
        return pd.DataFrame({"images": table["images"], "accuracy (%)": (100 * table["accuracy"]).round(2)})

    def confident_errors(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """Indices of the ``n`` wrong predictions made with the highest confidence, and their titles."""
        wrong = torch.nonzero(self.pred != self.labels).flatten()
        worst = wrong[self.confidence[wrong].argsort(descending=True)][:n]
        titles = [f"{CIFAR10_CLASSES[self.labels[i]]}\n→ {CIFAR10_CLASSES[self.pred[i]]} {self.confidence[i]:.0%}"
                  for i in worst.tolist()]
        return worst, titles

    @property
    def errors(self) -> int:
        return int((self.pred != self.labels).sum())


def predictions(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                batch_size: int = 1000) -> Predictions:
    """Float32 predictions (no TTA) of ``model`` on uint8 ``images``, on the CPU."""
    probs = predict_logits(model, images, batch_size=batch_size).cpu().softmax(dim=1)
    confidence, pred = probs.max(dim=1)
    return Predictions(labels.cpu(), pred, confidence)
