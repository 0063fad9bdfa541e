"""What a training run tells the person watching it: the start line with a time estimate, a progress bar,
one line per epoch, and where an interrupted run stands. Also the one duration formatter of the package."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .device import choose_precision, device_name, resolve_device
from .errors import on_command_line, setting
from .model import forward_flops

# Training FLOP/s per CPU thread, from the committed CPU benchmarks (tests check they agree): fp32 and bf16 on a
# CPU with AVX512 (results/cpu/benchmarks/cpu-wrn16-2/bench.json), fp32 on one with only AVX2, which has half the
# vector width (cpu-avx2-wrn16-2; its rate stands for the other ISAs too, whose own is not measured here); and
# the H200's measured bf16 rate (results/benchmarks/h200-wrn28-3.5).
CPU_FLOPS_PER_THREAD = {"fp32": 1.3e11, "bf16": 2.8e11, "fp32-avx2": 6e10}
GPU_FLOPS = 1.4e14


def rough_epoch_seconds(config: TrainConfig, train_images: int, eval_images: int, device: torch.device) -> float:
    """An order-of-magnitude time for one epoch: 3 x the forward FLOPs per training image, 1 x per
    evaluated image, at the measured rate of the precision `precision` chooses on ``device`` (in fp32 on a CPU,
    of its vector ISA)."""
    if device.type == "cuda":
        rate = GPU_FLOPS
    else:
        bf16, _ = choose_precision(config.precision, device)
        fp32 = "fp32" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "fp32-avx2"
        rate = CPU_FLOPS_PER_THREAD["bf16" if bf16 else fp32] * max(1, torch.get_num_threads())
    return forward_flops(config.depth, config.width) * (3 * train_images + eval_images) / rate


def rough_eval_seconds(config: TrainConfig, images: int, device: str = "auto") -> float:
    """An order-of-magnitude time to evaluate ``images`` forward passes in fp32 (as `evaluate` does)."""
    return rough_epoch_seconds(dataclasses.replace(config, precision="fp32"), 0, images, resolve_device(device))


def duration(seconds: Any, missing: str = "-") -> str:
    """Seconds for people, from a smoke run to a day-long one: "under 1 s", "42 s", "12.5 min", "3.2 h" (never
    "0 s": an estimate for a tiny model is rough); ``missing`` when there is no number."""
    s = number(seconds)
    if s is None:
        return missing
    if s < 1:
        return "under 1 s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def pct(value: Any, missing: str = "-", digits: int = 2) -> str:
    """A fraction as a percentage, "91.20%"; ``missing`` when there is no number (None, NaN, text)."""
    v = number(value)
    return missing if v is None else f"{100 * v:.{digits}f}%"


def number(value: Any) -> float | None:
    """A float, or None for a missing or NaN value (an empty CSV cell reads as NaN) or text."""
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


LONG_RUN_S = 30 * 60  # a run past this is said to be long on its device, with what would take minutes instead
REFINE_STEPS, REFINE_S = 5, 10.0  # the estimate is measured on this many steps after the first, or this long


def start_line(config: TrainConfig, steps: int, eval_images: int, device: torch.device, precision: str, dist,
               epochs_left: int) -> str:
    """What trains where, in which precision, and roughly how long an epoch and the whole run take (from the
    model's FLOPs at this kind of device's measured rate; the first steps then measure it here)."""
    c, world = config, dist.world
    where = device_name(device)
    if c.device == "auto" and device.type == "cpu":
        where += " (device 'auto': no CUDA GPU is visible, so this runs on the CPU)"
    if world > 1:
        where = f"{world} processes ({dist.backend}, {c.batch_size // world} images each per step), each on {where}"
    epoch = rough_epoch_seconds(c, steps * c.batch_size, eval_images, device) / world
    epochs = f"{c.epochs} epochs" + (f" (what {duration(60 * c.budget_minutes)} of training fits, timed here)"
                                     if c.budget_minutes else "")
    return (f"{c.name}: WRN-{c.depth}-{c.width:g}, {epochs} of {steps} steps, on {where}; {precision}; "
            f"roughly {duration(epoch)} per epoch, {duration(epochs_left * epoch)} in all"
            + long_run_warning(c, epochs_left * epoch, device))


def long_run_warning(config: TrainConfig, seconds: float, device: torch.device) -> str:
    """"" for a run of at most half an hour, else a warning with what would train in minutes instead."""
    if seconds <= LONG_RUN_S:
        return ""
    ratio = forward_flops(config.depth, config.width) / forward_flops(16, 2)
    instead = (f"WRN-16-2 ({setting('depth')} 16 {setting('width')} 2) costs {ratio:.0f}x less per image" if ratio > 2
               else f"about {max(1, int(config.epochs * LONG_RUN_S / seconds))} epochs fit in half an hour")
    where = "CPU" if device.type == "cpu" else "GPU"
    return (f"\nwarning: this run will take about {duration(seconds)} on this {where}, more than half an hour; for "
            f"minutes instead, train fewer {setting('epochs')} or a smaller model: {instead}")


def interrupted(run_dir: Path, epochs_done: int, epochs: int, checkpoint_epoch: int | None) -> str:
    """Where an interrupted run stands and how to go on, in the caller's language."""
    done = f"Interrupted with {epochs_done} of {epochs} epochs done"
    if checkpoint_epoch is None:
        return f"\n{done}, before the run's first checkpoint: nothing to keep yet, so the same command starts it again."
    again = (f"`python -m wrnlib train --resume --name {run_dir.name} --out-dir {run_dir.parent}`"
             if on_command_line() else "`fit(config, existing='resume')` with the same config")
    return (f"\n{done}. The checkpoint at the end of epoch {checkpoint_epoch} is intact in {run_dir}; continue "
            f"with {again}.")


class Progress:
    """The start line, a bar over every step of the budget, the estimate measured on the first steps, and a line
    per epoch; silent unless ``show``."""

    def __init__(self, config: TrainConfig, steps: int, start_epoch: int, eval_images: int, dist, precision: str):
        self.config, self.steps, self.show, self.device = config, steps, config.progress and dist.is_main, dist.device
        self.epochs_left, self.eval_images = config.epochs - start_epoch, eval_images
        start = start_line(config, steps, eval_images, dist.device, precision, dist, self.epochs_left)
        self.warned, self.done, self.clock = "warning:" in start, 0, None
        self.measured: dict[str, float] | None = None  # seconds of training per epoch, and for the whole run
        if self.show:
            print(start, flush=True)
        self.bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, desc=config.name, unit="step",
                        mininterval=2.0, disable=not self.show)

    def step(self) -> None:
        self.bar.update()
        if self.show and self.measured is None:
            self._measure()

    def _measure(self) -> None:
        """Time the steps after the first (which warms up kernels and caches) and say what the run will take."""
        self.done += 1
        last = self.done == min(REFINE_STEPS + 1, self.steps * self.epochs_left)
        if self.clock is not None and not last and time.perf_counter() - self.clock < REFINE_S:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # twice in a run: the steps are asynchronous
        now = time.perf_counter()
        if self.clock is None:
            self.clock = now
            return
        train = (now - self.clock) / (self.done - 1) * self.steps
        # an evaluated image costs about a third of a trained one (a forward pass, no backward)
        total = train * (1 + self.eval_images / (3 * self.steps * self.config.batch_size)) * self.epochs_left
        self.measured = {"epoch_train_s": train, "total_s": total}
        self.bar.write(f"measured on {self.done - 1} steps: {duration(train)} of training per epoch, about "
                       f"{duration(total)} for the {self.epochs_left} epochs with their evaluations"
                       + ("" if self.warned else long_run_warning(self.config, total, self.device)))

    def epoch(self, row: dict[str, Any]) -> None:
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=pct(row["val_acc"]), test=pct(row["test_acc"]),
                             refresh=False)
        if self.show:
            self.bar.write(format_epoch(row, self.config.epochs))

    def close(self) -> None:
        self.bar.close()
