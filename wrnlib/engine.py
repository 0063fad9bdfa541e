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


def autocast(device: torch.device, bf16: bool, cache: bool = True):
    if not bf16:
        return contextlib.nullcontext()
    # a CUDA graph's capture must not keep autocast's casts of the weights (torch.cuda.graphs' rule)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)


def make_train_step(model: nn.Module, forward: Callable, optimizer, *, device: torch.device, bf16: bool,
                    label_smoothing: float = 0.0, no_sync: Callable[[], ContextManager] | None = None,
                    cuda_graph: bool = False) -> Callable:
    """Returns ``step(x, targets) -> (loss, logits)`` doing forward, backward and the update.

    ``forward`` is the model or its torch.compile'd / DistributedDataParallel wrapper; ``model`` is
    the module itself (for SAM's batch-norm freeze). ``targets`` are soft labels (B, classes).
    ``no_sync`` (DDP's) keeps SAM's first forward/backward local to this process: its gradient
    only sets the perturbation, and only the second backward is all-reduced. ``cuda_graph``: the
    step is a :class:`GraphedStep` (one process, SGD, eager ``forward``, on a CUDA device).
    """
    sam = optimizer if isinstance(optimizer, SAM) else None
    local = no_sync if sam is not None and no_sync is not None else contextlib.nullcontext

    def loss_of(x: torch.Tensor, targets: torch.Tensor):
        with autocast(device, bf16, cache=not cuda_graph):
            logits = forward(x)
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing), logits

    if cuda_graph:
        def update(x: torch.Tensor, targets: torch.Tensor):
            optimizer.zero_grad(set_to_none=True)  # the backward then writes the grads instead of adding to them
            loss, logits = loss_of(x, targets)
            loss.backward()
            optimizer.step()
            return loss.detach(), logits.detach()
        return GraphedStep(update, optimizer)

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


class GraphedStep:
    """A training step captured once in a CUDA graph and replayed: one launch for the hundreds of kernels of a
    forward, backward and update, which leave a GPU idle between them at small batches.

    The first ``warmup`` calls run ``update`` eagerly on a side stream (cuDNN picks its kernels, the grads and
    the momentum buffers get their memory), the next one captures it and every call replays it. The batch is
    copied into the graph's input tensors, and each parameter group's learning rate (a number, set by the caller
    before each step) into a device tensor that the captured update reads; the (loss, logits) returned are the
    graph's output tensors, overwritten by the next call. ``update`` must run the same kernels on the same
    tensors at every step and read nothing back to the host; whatever it allocates lives in the graph's memory.
    """

    def __init__(self, update: Callable, optimizer, warmup: int = 3):
        self.update, self.optimizer, self.warmup, self.eager_steps = update, optimizer, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] = ()
        self.outputs: tuple[torch.Tensor, torch.Tensor] = ()
        self.lrs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, targets: torch.Tensor):
        if self.eager_steps < self.warmup:
            self.eager_steps += 1
            side, main = torch.cuda.Stream(x.device), torch.cuda.current_stream(x.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                outputs = self.update(x, targets)
            main.wait_stream(side)
            return outputs
        groups = self.optimizer.param_groups
        if self.graph is None:
            self.inputs = x.clone(), targets.clone()
            numbers = [group["lr"] for group in groups]
            self.lrs = [torch.tensor(lr, device=x.device) for lr in numbers]
            for group, lr in zip(groups, self.lrs):  # the captured SGD reads these tensors at every replay
                group["lr"] = lr
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records the step's kernels; it runs them at the replay below
                self.outputs = self.update(*self.inputs)
            for group, lr in zip(groups, numbers):
                group["lr"] = lr
        else:
            self.inputs[0].copy_(x)
            self.inputs[1].copy_(targets)
            for group, lr in zip(groups, self.lrs):
                lr.fill_(group["lr"])
        self.graph.replay()
        return self.outputs


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
