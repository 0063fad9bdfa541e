"""Calibration of a classifier's confidences: ECE, reliability tables and temperature scaling.

All functions take raw logits (N, classes) and integer labels (N,) as tensors on any device.

* ``ece``: expected calibration error as ``torchmetrics``' ``MulticlassCalibrationError``
  computes it (equal-width confidence bins over [0, 1], l1 norm, top-1 confidence).
* ``reliability``: the per-bin table a reliability diagram plots, binned as ``ece`` bins.
* ``fit_temperature`` / ``nll``: temperature scaling (Guo et al., "On Calibration of Modern
  Neural Networks", ICML 2017): one scalar T > 0 dividing the logits, fitted by minimising the
  negative log-likelihood on held-out data; it changes confidences but never the predictions.

Logits of uint8 images come from :func:`wrnlib.engine.predict_logits` (the evaluation's own
preprocessing, bf16 and flip-TTA).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F


DEFAULT_BINS = 15


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a float (N, classes) tensor")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point() \
            or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be an int (N,) tensor matching the {logits.shape[0]} rows of logits")


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """Float32 softmax probabilities on the CPU: what both ece and reliability bin."""
    return logits.detach().float().softmax(dim=1).cpu()


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of (share of images) * |accuracy - mean confidence|.

    Softmax probabilities, not logits, are handed to torchmetrics: it would only apply the
    softmax itself when some value lies outside [0, 1], so logits that happen to lie inside
    would be taken for probabilities.
    """
    from torchmetrics.classification import MulticlassCalibrationError  # lazy: slow import

    _check(logits, labels)
    metric = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=bins, norm="l1")
    return float(metric(_probs(logits), labels.detach().cpu()))


def reliability(logits: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """One row per confidence bin: ``bin``, ``lower``, ``upper``, ``confidence`` (mean top-1
    confidence), ``accuracy`` (fraction correct), ``count``; empty bins have NaN means.

    Bin b holds confidences in [lower, upper), as in torchmetrics, except that the last bin also
    holds confidence exactly 1.0, which torchmetrics counts in a bin of its own; so
    ``sum(count / N * |accuracy - confidence|)`` equals :func:`ece` unless some float32
    confidences round to 1.0 (it is then the textbook ECE, closed at 1).
    """
    _check(logits, labels)
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r} is invalid: expected an int >= 1")
    confidence, predicted = _probs(logits).max(dim=1)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float32)  # float32, as torchmetrics bins
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, bins - 1)
    confidence, correct = confidence.double(), (predicted == labels.detach().cpu()).double()
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence, minlength=bins)
    correct_sum = torch.bincount(index, weights=correct, minlength=bins)
    nonempty = count > 0
    nan = torch.full_like(count, float("nan"))
    return pd.DataFrame({
        "bin": range(bins),
        "lower": torch.linspace(0, 1, bins + 1, dtype=torch.float64)[:-1].numpy(),
        "upper": torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:].numpy(),
        "confidence": torch.where(nonempty, conf_sum / count.clamp_min(1), nan).numpy(),
        "accuracy": torch.where(nonempty, correct_sum / count.clamp_min(1), nan).numpy(),
        "count": count.long().numpy(),
    })


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (cross-entropy, nats) of ``logits / temperature``."""
    _check(logits, labels)
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} is invalid: expected a number > 0")
    z = logits.detach().double() / float(temperature)
    return float(F.cross_entropy(z, labels.detach().to(z.device)))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising ``nll(logits, labels, T)``, for held-out (validation) logits.

    Optimises log T (so T stays positive) from T = 1 with L-BFGS and a strong-Wolfe line
    search, in float64: deterministic, and converged to the optimum for this convex 1-D problem.
    """
    _check(logits, labels)
    z = logits.detach().double().cpu()
    y = labels.detach().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z * torch.exp(-log_t), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
