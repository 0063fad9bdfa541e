"""The hot path: one training step and batched evaluation, shared by `fit`, `evaluate_run` and `bench`.

Nothing here reads a value back to the host: losses and correct counts stay device tensors
that the caller sums and reads once per epoch.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import normalize
from .optim import SAM, frozen_bn_stats


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_train_step(model: nn.Module, forward: Callable, optimizer, *, device: torch.device, bf16: bool,
                    label_smoothing: float = 0.0, no_sync: Callable[[], ContextManager] | None = None) -> Callable:
    """Returns ``step(x, targets) -> (loss, logits)`` doing forward, backward and the update.

    ``forward`` is the model or its torch.compile'd / DistributedDataParallel wrapper; ``model`` is
    the module itself (for SAM's batch-norm freeze). ``targets`` are soft labels (B, classes).
    ``no_sync`` (DDP's) keeps SAM's first forward/backward local to this process: its gradient
    only sets the perturbation, and only the second backward is all-reduced.
    """
    sam = optimizer if isinstance(optimizer, SAM) else None
    local = no_sync if sam is not None and no_sync is not None else contextlib.nullcontext

    def loss_of(x: torch.Tensor, targets: torch.Tensor):
        with autocast(device, bf16):
            logits = forward(x)
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing), logits

    def step(x: torch.Tensor, targets: torch.Tensor):
        with local():
            loss, logits = loss_of(x, targets)
            loss.backward()
        if sam is not None:
            sam.perturb()
            with frozen_bn_stats(model):
                loss_of(x, targets)[0].backward()
            sam.restore()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), logits.detach()

    return step


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, bf16: bool = False,
                   channels_last: bool = False, tta: bool = False, progress: str | bool = False) -> torch.Tensor:
    """Float32 logits for uint8 images (N, 3, 32, 32) on the model's device, in eval mode.

    With ``tta`` the logits of each image and its mirror image are averaged. ``progress`` (a
    label) shows a bar over the batches, for long evaluations on a CPU.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    starts = range(0, len(images), batch_size)
    if progress:
        starts = tqdm(starts, desc=str(progress), unit="batch", mininterval=2.0)
    for start in starts:
        x = normalize(images[start:start + batch_size].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            logits = model(x).float()
            if tta:
                logits = 0.5 * (logits + model(x.flip(3)).float())
        outputs.append(logits)
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0, device=device)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **kwargs) -> dict[str, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` on a labelled set; one host read."""
    logits = predict_logits(model, images, **kwargs)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(1) == labels).sum()
    loss, correct = torch.stack([loss, correct.float()]).tolist()
    return {"loss": loss / len(labels), "acc": correct / len(labels)}
