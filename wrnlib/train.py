"""`fit(config)`: train a WRN, evaluate every epoch and write the run folder.

The whole data set lives on the training device as uint8; each step gathers a batch, augments
it there, runs forward/backward under bf16 autocast and updates the weights, without reading
anything back to the host. Metrics are summed on the device and read once per epoch.

Run folder (``<out_dir>/<name>/``): config.json, env.json, metrics.csv (one row per epoch),
summary.json, state.pt (resume checkpoint, written atomically) and, on request, model_fp16.pt.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import runs
from .augment import BatchAugment
from .config import TrainConfig, resume_conflicts
from .data import CIFAR10, load_cifar10, test_subset, train_val_split
from .engine import evaluate, make_train_step, resolve_device, use_bf16
from .model import WideResNet, count_forward_flops, count_parameters
from .optim import SAM, ModelEMA, make_sgd
from .schedules import lr_multiplier

ACCURACY_MILESTONES = (0.94, 0.95)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class RunExistsError(FileExistsError):
    """A run folder with this name already exists and resume was not asked for."""


@dataclass
class Splits:
    """uint8 images and int64 labels on the training device."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    model: torch.nn.Module  # the evaluated model (the EMA when enabled), on the CPU, eval mode


def make_splits(config: TrainConfig, data: CIFAR10, device: torch.device) -> Splits:
    """Carve the validation set (and the optional subsets) and move everything to ``device``."""
    train_idx, val_idx = train_val_split(data.train_labels, config.val_size, config.seed)
    if config.train_limit:
        if config.train_limit > len(train_idx):
            raise ValueError(f"train_limit={config.train_limit} exceeds the {len(train_idx)} training images "
                             f"left after holding out val_size={config.val_size}")
        if config.train_limit < len(train_idx):
            # reuse the stratified splitter to draw a class-balanced subset of the training part
            _, keep = train_val_split(data.train_labels[train_idx], config.train_limit, config.seed + 1)
            train_idx = train_idx[keep]
    test_x, test_y = test_subset(data, config.test_limit)
    if config.batch_size > len(train_idx):
        raise ValueError(f"batch_size={config.batch_size} is larger than the {len(train_idx)} training images; "
                         f"lower --batch-size")

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)
    return Splits(put(data.train_images[train_idx]), put(data.train_labels[train_idx]),
                  put(data.train_images[val_idx]), put(data.train_labels[val_idx]), put(test_x), put(test_y))


class Trainer:
    """Holds a run's model, optimiser and data; `fit` drives it epoch by epoch."""

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device):
        self.config, self.splits, self.device = config, splits, device
        self.bf16 = use_bf16(config.precision, device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        torch.manual_seed(config.seed)
        self.model = WideResNet(config.depth, config.width, 10, config.dropout).to(device,
                                                                                    memory_format=self.memory_format)
        sgd = make_sgd(self.model, config.lr, config.momentum, config.nesterov, config.weight_decay,
                       config.decay_bn_bias)
        self.optimizer = SAM(sgd, config.sam_rho) if config.optimizer == "sam" else sgd
        self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay else None
        forward = torch.compile(self.model, mode=config.compile_mode) if config.compile else self.model
        self.step = make_train_step(self.model, forward, self.optimizer, device=device, bf16=self.bf16,
                                    label_smoothing=config.label_smoothing)
        self.augment = BatchAugment(crop_padding=config.crop_padding, pad_mode=config.pad_mode, flip=config.flip,
                                    policy=config.policy, policy_group=config.policy_group, cutout=config.cutout,
                                    mix=config.mix, mix_alpha=config.mix_alpha, mix_prob=config.mix_prob)
        self.steps_per_epoch = len(splits.train_y) // config.batch_size  # the last partial batch is dropped

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def lr_at(self, epochs_done: float) -> float:
        c = self.config
        return c.lr * lr_multiplier(c.schedule, epochs_done, c.epochs, c.schedule_params())

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns its loss/accuracy, read back once at the end."""
        c, s = self.config, self.splits
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        order = torch.randperm(len(s.train_y), device=self.device)
        for i in range(self.steps_per_epoch):
            idx = order[i * c.batch_size:(i + 1) * c.batch_size]
            x, targets = self.augment(s.train_x[idx], s.train_y[idx])
            x = x.contiguous(memory_format=self.memory_format)
            lr = self.lr_at(epoch + i / self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss, logits = self.step(x, targets)
            loss_sum += loss
            correct += (logits.argmax(1) == targets.argmax(1)).sum()
            if self.ema is not None:
                self.ema.update(self.model)
        loss_sum, correct = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()  # the one host sync
        seen = self.steps_per_epoch * c.batch_size
        return {"train_loss": loss_sum / self.steps_per_epoch, "train_acc": correct / seen, "lr": lr}

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, *, tta: bool = False,
                 model: torch.nn.Module | None = None, bf16: bool | None = None) -> dict[str, float]:
        if len(labels) == 0:
            return {"loss": float("nan"), "acc": float("nan")}
        return evaluate(model or self.eval_model, images, labels, batch_size=self.config.eval_batch_size,
                        bf16=self.bf16 if bf16 is None else bf16,
                        channels_last=self.config.channels_last, tta=tta)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self, epoch: int, rows: list[dict], train_time: float) -> dict[str, Any]:
        return {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "metrics": rows, "train_time": train_time, "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, list[dict], float]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        return state["epoch"], state["metrics"], state["train_time"]


def fit(config: TrainConfig, *, resume: bool = False, data: CIFAR10 | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train per ``config``, writing ``<out_dir>/<name>/``; ``resume=True`` continues that run.

    ``data`` reuses an already loaded data set; ``on_epoch_end(row)`` is called with each
    epoch's metrics after the checkpoint is safely on disk (notebooks plot live from it).
    """
    config.validate()
    run_dir = config.run_dir
    state = _prepare_run_dir(config, run_dir, resume)
    device = resolve_device(config.device)
    data = data if data is not None else load_cifar10(config.data_dir, download=config.download)
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        _enable_determinism()
    else:
        torch.backends.cudnn.benchmark = True  # shapes are fixed, so cuDNN's autotuning pays off once
    try:
        trainer = Trainer(config, make_splits(config, data, device), device)
        start_epoch, rows, train_time = trainer.load_state_dict(state) if state else (0, [], 0.0)
        if not state:
            config.save(run_dir / runs.CONFIG)
            runs.write_json(run_dir / runs.ENV, runs.environment(device, data.checksum, data.source))
        runs.write_metrics(run_dir / runs.METRICS, rows)
        rows, train_time = _train_epochs(trainer, run_dir, start_epoch, rows, train_time, on_epoch_end)
        summary, final_model = _finish(trainer, run_dir, rows, train_time)
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
    return RunResult(run_dir, config, rows, summary, final_model)


def _prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Create the run folder, or load its checkpoint for a resume; never overwrite a run."""
    if resume:
        if not (run_dir / runs.STATE).exists():
            raise FileNotFoundError(f"cannot resume: {run_dir / runs.STATE} does not exist (no checkpoint was "
                                    f"written yet); start the run again without --resume")
        saved = TrainConfig.load(run_dir / runs.CONFIG)
        conflicts = resume_conflicts(saved, config)
        if conflicts:
            details = ", ".join(f"{k}: saved {getattr(saved, k)!r} vs requested {getattr(config, k)!r}"
                                for k in conflicts)
            raise ValueError(f"cannot resume {run_dir} with a different configuration ({details}); "
                             f"resume with the saved settings or start a new run under another --name")
        return torch.load(run_dir / runs.STATE, map_location="cpu", weights_only=True)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunExistsError(f"run folder {run_dir} already exists; pass --resume to continue it, or choose "
                             f"another --name (nothing was overwritten)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _enable_determinism() -> None:
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _train_epochs(trainer: Trainer, run_dir: Path, start_epoch: int, rows: list[dict], train_time: float,
                  on_epoch_end: Callable | None) -> tuple[list[dict], float]:
    c, s = trainer.config, trainer.splits
    bar = tqdm(range(start_epoch, c.epochs), desc=c.name, unit="epoch", mininterval=2.0,
               disable=not c.progress, initial=start_epoch, total=c.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        try:
            row = trainer.train_epoch(epoch)
        except KeyboardInterrupt:
            _interrupted(run_dir, epoch)
            raise
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        epoch_time = time.perf_counter() - t0
        if not math.isfinite(row["train_loss"]):
            raise NonFiniteLossError(
                f"training loss became {row['train_loss']} in epoch {epoch + 1} of run {c.name}; the last good "
                f"checkpoint ({_checkpoint_epoch(run_dir)}) is kept in {run_dir}. Lower --lr, add "
                f"--warmup-epochs, or use --precision fp32 to find the cause.")
        train_time += epoch_time
        val, test = trainer.evaluate(s.val_x, s.val_y), trainer.evaluate(s.test_x, s.test_y)
        row = {"epoch": epoch + 1, **row, "val_loss": val["loss"], "val_acc": val["acc"],
               "test_loss": test["loss"], "test_acc": test["acc"], "epoch_time_s": epoch_time,
               "train_time_s": train_time,
               "images_per_s": trainer.steps_per_epoch * c.batch_size / epoch_time}
        rows.append(row)
        runs.write_metrics(run_dir / runs.METRICS, rows)
        last = epoch + 1 == c.epochs
        if last or (c.checkpoint_every and (epoch + 1) % c.checkpoint_every == 0):
            runs.atomic_torch_save(trainer.state_dict(epoch + 1, rows, train_time), run_dir / runs.STATE)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=_pct(row["val_acc"]), test=_pct(row["test_acc"]),
                        refresh=False)
        if c.progress:
            bar.write(format_epoch(row, c.epochs))
        if on_epoch_end is not None:
            on_epoch_end(dict(row))
    bar.close()
    return rows, train_time


def _finish(trainer: Trainer, run_dir: Path, rows: list[dict], train_time: float):
    """Evaluate the final model as it will be saved (fp16-rounded weights, float32 arithmetic).

    That is exactly what `python -m wrnlib evaluate` recomputes from model_fp16.pt, on any device.
    """
    c, s = trainer.config, trainer.splits
    final = copy.deepcopy(trainer.eval_model).float()
    with torch.no_grad():
        for tensor in final.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    plain = trainer.evaluate(s.test_x, s.test_y, model=final, bf16=False)
    flipped = trainer.evaluate(s.test_x, s.test_y, model=final, bf16=False, tta=True) if c.tta else None
    if c.save_model:
        runs.save_fp16_model(final, run_dir / runs.MODEL_FP16)
    summary = summarize(rows, c, plain, flipped, train_time, trainer.model, len(s.test_y))
    runs.write_json(run_dir / runs.SUMMARY, summary)
    return summary, final.cpu().eval()


def summarize(rows: list[dict], config: TrainConfig, plain: dict, flipped: dict | None, train_time: float,
              model: torch.nn.Module, test_images: int) -> dict[str, Any]:
    val_rows = [r for r in rows if r["val_acc"] == r["val_acc"]]  # drop NaN (no validation split)
    best_val = max(val_rows, key=lambda r: r["val_acc"]) if val_rows else None
    summary = {
        "name": config.name,
        "epochs": len(rows),
        "params": count_parameters(model),
        "forward_flops": count_forward_flops(copy.deepcopy(model).float().cpu()),
        "test_acc": plain["acc"],
        "test_loss": plain["loss"],
        "test_acc_tta": flipped["acc"] if flipped else None,
        "test_images": test_images,
        "final_val_acc": rows[-1]["val_acc"] if val_rows else None,
        "best_val_acc": best_val["val_acc"] if best_val else None,
        "best_val_epoch": best_val["epoch"] if best_val else None,
        "train_time_s": train_time,
        "mean_images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
    }
    for threshold in ACCURACY_MILESTONES:
        hit = next((r for r in rows if r["test_acc"] >= threshold), None)
        key = f"{round(threshold * 100)}"
        summary[f"time_to_{key}_s"] = hit["train_time_s"] if hit else None
        summary[f"epoch_to_{key}"] = hit["epoch"] if hit else None
    return summary


def _checkpoint_epoch(run_dir: Path) -> str:
    path = run_dir / runs.STATE
    if not path.exists():
        return "none yet"
    return f"end of epoch {torch.load(path, map_location='cpu', weights_only=True)['epoch']}"


def _interrupted(run_dir: Path, epoch: int) -> None:
    print(f"\nInterrupted during epoch {epoch + 1}. The checkpoint at the {_checkpoint_epoch(run_dir)} is "
          f"intact in {run_dir}; continue with `python -m wrnlib train --resume --name {run_dir.name} "
          f"--out-dir {run_dir.parent}`.")


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}%"


def format_epoch(row: dict, epochs: int | None = None) -> str:
    """One log line for an epoch's metrics row."""
    of = f"/{epochs}" if epochs else ""
    return (f"epoch {int(row['epoch']):>3}{of}  lr {row['lr']:.4f}  train {row['train_loss']:.3f} "
            f"{_pct(row['train_acc'])}  val {_pct(row['val_acc'])}  test {_pct(row['test_acc'])}  "
            f"{row['epoch_time_s']:.1f}s ({row['images_per_s']:.0f} img/s)")
