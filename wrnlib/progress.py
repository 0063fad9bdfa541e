"""What a training run tells the person watching it: the start line with a time estimate, a progress bar,
one line per epoch, and where an interrupted run stands. Also the one duration formatter of the package."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .device import choose_precision, device_name, resolve_device
from .model import forward_flops

# Training FLOP/s per CPU thread in each precision, from the committed CPU benchmark
# (results/cpu/benchmarks/cpu-wrn16-2/bench.json, the fp32 and bf16 modes; tests check they agree),
# and the H200's measured bf16 rate (results/benchmarks/h200-wrn28-3.5).
CPU_FLOPS_PER_THREAD = {"fp32": 1.3e11, "bf16": 2.8e11}
GPU_FLOPS = 1.4e14


def rough_epoch_seconds(config: TrainConfig, train_images: int, eval_images: int, device: torch.device) -> float:
    """An order-of-magnitude time for one epoch: 3 x the forward FLOPs per training image, 1 x per
    evaluated image, at the measured rate of the precision `precision` chooses on ``device``."""
    if device.type == "cuda":
        rate = GPU_FLOPS
    else:
        bf16, _ = choose_precision(config.precision, device)
        rate = CPU_FLOPS_PER_THREAD["bf16" if bf16 else "fp32"] * max(1, torch.get_num_threads())
    return forward_flops(config.depth, config.width) * (3 * train_images + eval_images) / rate


def rough_eval_seconds(config: TrainConfig, images: int, device: str = "auto") -> float:
    """An order-of-magnitude time to evaluate ``images`` forward passes in fp32 (as `evaluate` does)."""
    return rough_epoch_seconds(dataclasses.replace(config, precision="fp32"), 0, images, resolve_device(device))


def duration(seconds: Any, missing: str = "-") -> str:
    """Seconds for people, from a smoke run to a day-long one: "under 1 s", "42 s", "12.5 min", "3.2 h" (never
    "0 s": an estimate for a tiny model is rough); ``missing`` when there is no number."""
    s = _number(seconds)
    if s is None:
        return missing
    if s < 1:
        return "under 1 s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def pct(value: Any, missing: str = "-", digits: int = 2) -> str:
    """A fraction as a percentage, "91.20%"; ``missing`` when there is no number (None, NaN, text)."""
    v = _number(value)
    return missing if v is None else f"{100 * v:.{digits}f}%"


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def format_epoch(row: dict, epochs: int | None = None) -> str:
    """One log line for an epoch's metrics row."""
    of = f"/{epochs}" if epochs else ""
    return (f"epoch {int(row['epoch']):>3}{of}  lr {row['lr']:.4f}  train {row['train_loss']:.3f} "
            f"{pct(row['train_acc'])}  val {pct(row['val_acc'])}  test {pct(row['test_acc'])}  "
            f"{row['epoch_time_s']:.1f}s ({row['images_per_s']:.0f} img/s)")


def start_line(config: TrainConfig, steps: int, device: torch.device, precision: str, dist) -> str:
    """What trains where, in which precision, and roughly how long an epoch takes."""
    c, world = config, dist.world
    where = device_name(device)
    if c.device == "auto" and device.type == "cpu":
        where += " (device 'auto': no CUDA GPU is visible, so this runs on the CPU)"
    if world > 1:
        where = f"{world} processes ({dist.backend}, {c.batch_size // world} images each per step), each on {where}"
    seconds = rough_epoch_seconds(c, steps * c.batch_size, 0, device) / world
    return (f"{c.name}: WRN-{c.depth}-{c.width:g}, {c.epochs} epochs of {steps} steps, on {where}; "
            f"{precision}; roughly {duration(seconds)} per epoch")


def interrupted(run_dir: Path, epoch: int, checkpoint_epoch: int | None) -> str:
    saved = "none yet" if checkpoint_epoch is None else f"end of epoch {checkpoint_epoch}"
    return (f"\nInterrupted during epoch {epoch + 1}. The checkpoint at the {saved} is "
            f"intact in {run_dir}; continue with `python -m wrnlib train --resume --name {run_dir.name} "
            f"--out-dir {run_dir.parent}`.")


class Progress:
    """The start line, a bar over every step of the budget and a line per epoch; silent unless ``show``."""

    def __init__(self, config: TrainConfig, steps: int, start_epoch: int, show: bool, start: str):
        self.config, self.show = config, show
        if show:
            print(start, flush=True)
        self.bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, desc=config.name, unit="step",
                        mininterval=2.0, disable=not show)

    def step(self) -> None:
        self.bar.update()

    def epoch(self, row: dict[str, Any]) -> None:
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=pct(row["val_acc"]), test=pct(row["test_acc"]),
                             refresh=False)
        if self.show:
            self.bar.write(format_epoch(row, self.config.epochs))

    def close(self) -> None:
        self.bar.close()
