"""The hot path: one training step and batched evaluation, shared by `fit` and `bench`.

Nothing here reads a value back to the host: losses and correct counts stay device tensors
that the caller sums and reads once per epoch.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import normalize
from .optim import SAM, frozen_bn_stats


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return device


_KEPT = False


def keep_freed_memory() -> bool:
    """Keep freed buffers in this process's heap instead of handing them back to the OS (glibc).

    A CPU training step frees and reallocates tens of MB of activations. glibc serves blocks over
    its mmap threshold with fresh mappings and unmaps them when freed, so every step faults them
    back in page by page, and the kernel zeroes each page: about 21,000 page faults per WRN-16-2
    step at batch 128. Raising the mmap and trim thresholds (mallopt) keeps those pages mapped for
    reuse; the process keeps its high-water mark of memory. Process-wide, and the same advice as
    using jemalloc or tcmalloc for PyTorch on CPUs. Linux with glibc only (True when applied);
    ``WRNLIB_KEEP_FREED_MEMORY=0`` turns it off.
    """
    global _KEPT
    if _KEPT:
        return True
    if os.environ.get("WRNLIB_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    _KEPT = bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return _KEPT


def cpu_bf16_support() -> dict[str, bool]:
    """What torch says this CPU computes natively in bf16: AMX tiles (Intel Sapphire Rapids and
    later) and the AVX512-BF16 dot products (Intel Cooper Lake and later, AMD Zen 4 and later).
    Probed through torch, not /proc; a torch that lacks a probe reports False for it."""
    def probe(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return {"amx_bf16": probe("_is_amx_tile_supported"), "avx512_bf16": probe("_is_avx512_bf16_supported")}


def choose_precision(precision: str, device: torch.device) -> tuple[bool, str]:
    """(bf16 autocast?, why) for a config's ``precision`` on ``device``.

    ``auto`` is bf16 on CUDA and on a CPU that computes bf16 natively; elsewhere fp32, because
    bf16 autocast emulated on a CPU without those instructions is slower than fp32 (pytorch
    issues 86270, 118499).
    """
    if precision != "auto":
        return precision == "bf16", f"{'bf16 autocast' if precision == 'bf16' else 'fp32'} (asked for)"
    if device.type == "cuda":
        return True, "bf16 autocast (auto: a CUDA GPU)"
    support = cpu_bf16_support()
    native = [label for key, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if support[key]]
    if native:
        return True, f"bf16 autocast (auto: this CPU computes bf16 natively, {' and '.join(native)})"
    return False, "fp32 (auto: this CPU has no native bf16, AMX or AVX512-BF16, where bf16 would be slower)"


def use_bf16(precision: str, device: torch.device) -> bool:
    return choose_precision(precision, device)[0]


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
