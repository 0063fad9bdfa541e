"""Tensor files: the resume checkpoint (everything a run needs to continue exactly) and the fp16 weights.

Loading never runs code from a file (``weights_only``), and every bad file gives one clear error.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import write_atomic


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, truncated, corrupt or not a plain tensor file."""


def safe_torch_load(path: Path) -> Any:
    """torch.load that never runs code from the file, with one clear error for any bad file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except pickle.UnpicklingError as exc:
        # Either a pickle that asks for code (a crafted file) or bytes that are no pickle at all.
        detail = re.search(r"Unsupported (?:global|operand)[^.\n]*", str(exc))
        raise CheckpointError(f"refusing to load {path}: it is not a plain tensor file, or it is truncated or "
                              f"corrupt ({detail.group(0) if detail else 'not a checkpoint'}); nothing in it was "
                              f"run. Delete it, or re-train the run") from None
    except Exception as exc:  # torch's readers fail on damaged bytes with many types (IndexError, KeyError, ...)
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: it is truncated or corrupt ({first}); delete it and resume "
                              f"from an earlier copy, or re-train the run") from None


def save(obj: Any, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


# --------------------------------------------------------------------------- the resume checkpoint


def training_state(model: nn.Module, optimizer, ema, device: torch.device, rows: list[dict], train_time: float,
                   config: dict[str, Any]) -> dict[str, Any]:
    """Everything a run needs to continue exactly where it is: weights, optimiser, EMA, both RNGs, metrics."""
    return {
        "epoch": len(rows), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "metrics": rows, "train_time": train_time, "config": config,
    }


def restore(state: dict[str, Any], model: nn.Module, optimizer, ema, device: torch.device) -> tuple[list[dict], float]:
    """Put a checkpoint's state back; returns its (metrics rows, training time)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    return state["metrics"], state["train_time"]


def load_checkpoint(path: Path) -> dict[str, Any]:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "metrics"} <= set(state):
        raise CheckpointError(f"{path} is not a wrnlib resume checkpoint; delete it to start the run again")
    return state


# --------------------------------------------------------------------------- the evaluated weights


def save_fp16(model: nn.Module, path: Path) -> None:
    """Float weights rounded to fp16 (half the size of fp32; 9 MB for WRN-28-3.5), buffers kept."""
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    save(state, path)

