"""`fit(config)`: train a WRN, evaluate it after every epoch and keep everything in its run folder.

The whole data set lives on the training device as uint8; each step gathers a batch, augments it
there, runs forward/backward under bf16 autocast and updates the weights, without reading anything
back to the host: the losses and correct counts are summed on the device and read once per epoch.

The run folder (:mod:`wrnlib.runfolder`) holds config.json, env.json, metrics.csv, summary.json, the
resume checkpoint and, on request, the fp16 weights. Started by torchrun, the same code trains one
run on several processes (:mod:`wrnlib.distributed`); in one process its hooks do nothing.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import checkpoints, distributed
from .augment import BatchAugment
from .config import TrainConfig, fit_to_sample
from .data import CIFAR10, NUM_CLASSES, load_cifar10, test_subset, train_val_split
from .device import choose_precision, device_name, keep_freed_memory, resolve_device
from .engine import evaluate, make_train_step
from .errors import setting
from .model import WideResNet, count_forward_flops, count_parameters
from .optim import SAM, ModelEMA, make_sgd
from .progress import Progress, interrupted
from .provenance import environment
from .runfolder import EXISTING, RunFolder, RunResult, checkpoint_epoch
from .schedules import lr_multiplier

ACCURACY_MILESTONES = (0.94, 0.95)


class NonFiniteError(FloatingPointError):
    """The loss, the weights, the learning rate or an evaluation loss became NaN or infinite."""


NonFiniteLossError = NonFiniteError  # the name used before the weights and lr were checked too


def fit(config: TrainConfig, *, existing: str = "error", data: CIFAR10 | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train per ``config``, writing ``<out_dir>/<name>/``.

    ``existing`` says what to do with that folder: ``"error"`` refuses one that holds a run
    (nothing is overwritten); ``"resume"`` continues an interrupted run from its checkpoint and
    reads a finished one back (and fails when there is no run to resume); ``"reuse"`` does the
    same but starts the run when there is none (notebooks and sweeps re-executed). A resumed or
    reused run must have been made with the same settings. A folder whose run stopped before
    its first checkpoint holds nothing to keep, so it is started again whatever ``existing`` says.

    ``data`` reuses an already loaded data set; ``on_epoch_end(row)`` is called with each
    epoch's metrics after the checkpoint is safely on disk (notebooks print or plot from it).
    """
    config.validate()
    config, fitted = fit_to_sample(config)
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}; got {existing!r}")
    dist = distributed.setup(config)  # this process alone, or one of torchrun's
    config = dist.agree(config)
    if fitted and dist.is_main:
        print(fitted, flush=True)
    with RunFolder(config, existing, dist) as folder:
        if folder.finished is not None:
            dist.close()
            return folder.finished
        data = data if data is not None else load_cifar10(config.data_dir, download=config.download)
        dist.same_data(data.checksum)
        with _kernels(config.deterministic):
            result = _train(folder.config, data, dist, folder, on_epoch_end)
    dist.close()  # only now: the model's DDP wrapper, which uses the process group, is gone with _train
    return result


def _train(c: TrainConfig, data: CIFAR10, dist, folder: RunFolder, on_epoch_end) -> RunResult:
    """Set up, then for each epoch: the steps (augment, lr, step, EMA), the evaluations and the checkpoint."""
    device = dist.device
    s = make_splits(c, data, device)
    bf16, precision = choose_precision(c.precision, device)  # (bool, why: for the record)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on every step's activations (see wrnlib.device)
    steps = len(s.train_y) // c.batch_size  # the last partial batch is dropped
    budget = {}
    if c.budget_minutes and folder.checkpoint is None:  # the epochs that fit the budget, measured before the run
        c, budget = fit_budget(c, s, dist, bf16, steps)
        folder.config = c
    torch.manual_seed(c.seed)
    model, optimizer, ema, step = build(c, dist, bf16)
    augment, schedule = BatchAugment.from_config(c), c.schedule_params()
    eval_model = ema.module if ema is not None else model

    def score(images, labels, model=eval_model, bf16=bf16, tta=False) -> dict[str, float]:
        if len(labels) == 0:
            return {"loss": math.nan, "acc": math.nan}
        return evaluate(model, images, labels, batch_size=c.eval_batch_size, bf16=bf16,
                        channels_last=c.channels_last, tta=tta)

    rows, train_time = (checkpoints.restore(folder.checkpoint, model, optimizer, ema, device)
                        if folder.checkpoint else ([], 0.0))
    folder.start(lambda: environment(device, data.checksum, data.source) | dist.describe() | budget
                 | {"precision": precision, "test_data_checksum": data.test_checksum}, data.checksum)
    log = Progress(c, steps, len(rows), len(s.val_y) + len(s.test_y), dist, precision)
    try:
        for epoch in range(len(rows), c.epochs):
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            order = torch.randperm(len(s.train_y), device=device)
            for i in range(steps):
                idx = order[i * c.batch_size:(i + 1) * c.batch_size]
                x, targets = augment(s.train_x[idx], s.train_y[idx])
                # data-parallel: every process augments the global batch alike and trains on its slice
                x, targets = dist.shard(x).contiguous(memory_format=layout(c)), dist.shard(targets)
                # the lr of a step is the schedule's where the step ends: above zero at the first step,
                # the peak at the last warm-up step
                lr = c.lr * lr_multiplier(c.schedule, epoch + (i + 1) / steps, c.epochs, schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with dist.step_rng(epoch * steps + i):
                    loss, logits = step(x, targets)
                loss_sum += loss
                correct += (logits.argmax(1) == targets.argmax(1)).sum()
                if ema is not None:
                    ema.update(model)
                log.step()
            dist.sync_buffers(model, *([ema.module] if ema is not None else []))
            finite = torch.stack(torch._foreach_norm(list(model.parameters()))).isfinite().all()
            totals = dist.sum(torch.stack([loss_sum, correct.to(loss_sum.dtype), finite.to(loss_sum.dtype)]))
            loss_sum, correct, finite = totals.tolist()  # the epoch's one host sync
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            t0 = time.perf_counter()
            val, test = dist.evaluate(score, s.val_x, s.val_y), dist.evaluate(score, s.test_x, s.test_y)
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / (steps * dist.world),
                   "train_acc": correct / (steps * c.batch_size), "val_loss": val["loss"], "val_acc": val["acc"],
                   "test_loss": test["loss"], "test_acc": test["acc"], "epoch_time_s": epoch_time,
                   "train_time_s": train_time, "eval_time_s": time.perf_counter() - t0,
                   "images_per_s": steps * c.batch_size / epoch_time}
            check_finite(row | {"weights_finite": float(finite == dist.world)}, epoch, c)
            rows.append(row)
            # rank 0 writes and the others wait for it, so on_epoch_end always follows a safe checkpoint
            folder.save_epoch(rows, lambda: checkpoints.training_state(model, optimizer, ema, device, rows,
                                                                      train_time, c.to_dict()))
            log.epoch(row)
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    except KeyboardInterrupt:
        log.close()
        if dist.is_main:
            print(interrupted(folder.path, len(rows), c.epochs, folder.checkpoint_epoch()), flush=True)
        raise
    log.close()
    final = _fp16_rounded(eval_model)
    summary = folder.finish(lambda: _final_summary(c, rows, train_time, final, s, score, model, device), final)
    return RunResult(folder.path, c, rows, summary, final.cpu().eval())


# --------------------------------------------------------------------------- the parts `_train` uses


def build(c: TrainConfig, dist, bf16: bool) -> tuple[torch.nn.Module, Any, ModelEMA | None, Callable]:
    """The model on its device, its optimiser, the weight EMA (or None) and the training step."""
    model = dist.prepare(WideResNet(c.depth, c.width, NUM_CLASSES, c.dropout).to(dist.device,
                                                                                  memory_format=layout(c)))
    sgd = make_sgd(model, c.lr, c.momentum, c.nesterov, c.weight_decay, c.decay_bn_bias)
    optimizer = SAM(sgd, c.sam_rho) if c.optimizer == "sam" else sgd
    ema = ModelEMA(model, c.ema_decay) if c.ema_decay else None
    forward = dist.wrap(model)
    forward = torch.compile(forward, mode=c.compile_mode) if c.compile else forward
    step = make_train_step(model, forward, optimizer, device=dist.device, bf16=bf16,
                           label_smoothing=c.label_smoothing, no_sync=dist.no_sync(forward), cuda_graph=c.cuda_graph)
    return model, optimizer, ema, step


def layout(c: TrainConfig) -> torch.memory_format:
    return torch.channels_last if c.channels_last else torch.contiguous_format


BUDGET_WARMUP, BUDGET_STEPS, BUDGET_S = 3, 10, 5.0  # untimed steps, then timed ones (at most this many seconds)


def fit_budget(c: TrainConfig, s: Splits, dist, bf16: bool, steps: int) -> tuple[TrainConfig, dict[str, Any]]:
    """The config with the epochs that fit ``budget_minutes`` of training, from ``budget_step_s`` or else from the
    step timed here (:func:`_median_step`), and the measurement, for env.json."""
    step_s, timed = (c.budget_step_s, {}) if c.budget_step_s else _median_step(c, s, dist, bf16)
    epochs = max(1, int(c.budget_minutes * 60 / (step_s * steps)))
    if epochs < c.warmup_epochs:
        raise ValueError(f"{setting('budget_minutes', c.budget_minutes)} holds {epochs} epoch(s) of "
                         f"WRN-{c.depth}-{c.width:g} here, fewer than its {c.warmup_epochs:g} warm-up epochs; raise "
                         f"the budget or lower {setting('warmup_epochs')}")
    return dataclasses.replace(c, epochs=epochs), {"budget": {
        "minutes": c.budget_minutes, "seconds_per_step": step_s, **timed, "epochs": epochs}}


def _median_step(c: TrainConfig, s: Splits, dist, bf16: bool) -> tuple[float, dict[str, int]]:
    """Seconds per training step, timed on a throwaway copy of the run's model (the run itself then starts from its
    seed as any other), and how many steps were timed. The median counts, so that one step slowed by the machine
    does not."""
    device, times = dist.device, []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model, _, ema, step = build(c, dist, bf16)
        augment = BatchAugment.from_config(c)
        while len(times) < BUDGET_WARMUP + BUDGET_STEPS and sum(times[BUDGET_WARMUP:]) < BUDGET_S:
            t0 = time.perf_counter()
            x, targets = augment(*(t[:c.batch_size] for t in (s.train_x, s.train_y)))
            step(dist.shard(x).contiguous(memory_format=layout(c)), dist.shard(targets))
            if ema is not None:
                ema.update(model)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    timed = sorted(times[BUDGET_WARMUP:])
    median = torch.tensor([timed[len(timed) // 2]], dtype=torch.float64, device=device)
    return float(dist.sum(median)) / dist.world, {"steps_timed": len(timed)}  # every process chooses the same epochs


def time_step(config: TrainConfig, data: CIFAR10 | None = None) -> float:
    """Seconds per training step of ``config`` in this process, as a time budget measures it: for runs timed
    together beforehand (``budget_step_s``)."""
    config, _ = fit_to_sample(config.validate())
    dist = distributed.Single(resolve_device(config.device))
    data = data if data is not None else load_cifar10(config.data_dir, download=config.download)
    bf16, _ = choose_precision(config.precision, dist.device)
    if dist.device.type == "cpu":
        keep_freed_memory()  # as the run will
    with _kernels(config.deterministic):
        return _median_step(config, make_splits(config, data, dist.device), dist, bf16)[0]


@dataclass
class Splits:
    """uint8 images and int64 labels on the training device."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_splits(config: TrainConfig, data: CIFAR10, device: torch.device) -> Splits:
    """Carve the validation set (and the optional subsets) and move everything to ``device``."""
    if config.val_size >= len(data.train_labels):
        raise ValueError(f"{setting('val_size', config.val_size)} leaves no training images: this data set has "
                         f"{len(data.train_labels):,}; lower it")
    train_idx, val_idx = train_val_split(data.train_labels, config.val_size, config.seed)
    if config.train_limit:
        if config.train_limit > len(train_idx):
            raise ValueError(f"{setting('train_limit', config.train_limit)} exceeds the {len(train_idx)} training "
                             f"images left after holding out {setting('val_size', config.val_size)}")
        if config.train_limit < len(train_idx):
            # reuse the stratified splitter to draw a class-balanced subset of the training part
            _, keep = train_val_split(data.train_labels[train_idx], config.train_limit, config.seed + 1)
            train_idx = train_idx[keep]
    test_x, test_y = test_subset(data, config.test_limit)
    if config.batch_size > len(train_idx):
        raise ValueError(f"{setting('batch_size', config.batch_size)} is larger than the {len(train_idx)} training "
                         f"images; lower it")

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)
    return Splits(put(data.train_images[train_idx]), put(data.train_labels[train_idx]),
                  put(data.train_images[val_idx]), put(data.train_labels[val_idx]), put(test_x), put(test_y))


@contextlib.contextmanager
def _kernels(deterministic: bool):
    """Deterministic kernels while training when asked (exact resume on a GPU relies on them), else cuDNN's
    autotuner (shapes are fixed, so it pays off once); the process's setting is restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # set before cuBLAS's first use
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def check_finite(row: dict[str, Any], epoch: int, config: TrainConfig) -> None:
    """Stop the run when the loss, the weights, the lr or an evaluation loss is NaN or infinite."""
    bad = [k for k in ("train_loss", "lr", "test_loss") if k in row and not math.isfinite(row[k])]
    if config.val_size and "val_loss" in row and not math.isfinite(row["val_loss"]):
        bad.append("val_loss")
    if row.get("weights_finite", 1.0) != 1.0:  # 0.0 when a parameter became NaN or infinite
        bad.append("weights")
    if bad:
        saved = checkpoint_epoch(config.run_dir)
        raise NonFiniteError(
            f"{' and '.join(bad)} became NaN or infinite in epoch {epoch + 1} of run {config.name}; the last good "
            f"checkpoint ({'none yet' if saved is None else f'end of epoch {saved}'}) is kept in {config.run_dir}. "
            f"Lower {setting('lr')}, add {setting('warmup_epochs')}, or use {setting('precision', 'fp32')} to find the "
            f"cause.")


def _fp16_rounded(model: torch.nn.Module) -> torch.nn.Module:
    """The model as it will be saved: fp16-rounded weights, computed in float32."""
    final = copy.deepcopy(model).float()
    with torch.no_grad():
        for tensor in final.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    return final


def _final_summary(c: TrainConfig, rows: list[dict], train_time: float, final: torch.nn.Module, s: Splits,
                   score: Callable, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """The final model's test accuracy in float32 with TF32 off, so that the training device computes what
    `python -m wrnlib evaluate` recomputes from model_fp16.pt on a CPU; summary.json names the device."""
    t0 = time.perf_counter()
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        plain = score(s.test_x, s.test_y, model=final, bf16=False)
        flipped = score(s.test_x, s.test_y, model=final, bf16=False, tta=True) if c.tta else None
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    check_finite({"test_loss": plain["loss"]}, len(rows) - 1, c)
    summary = summarize(rows, c, plain, flipped, train_time, model, len(s.test_y))
    summary["final_eval"] = {"device": device_name(device), "precision": "fp32, TF32 off",
                             "time_s": time.perf_counter() - t0}
    return summary


def summarize(rows: list[dict], config: TrainConfig, plain: dict, flipped: dict | None, train_time: float,
              model: torch.nn.Module, test_images: int) -> dict[str, Any]:
    """summary.json: final test accuracy (with and without flip-TTA), validation, times.

    ``train_time_s`` is the time of the training steps alone; ``eval_time_s`` is the per-epoch
    evaluation (validation + test) on top of it; ``train_pflop`` is the training compute (3 forward
    passes' FLOPs per image trained), which compares runs across machines. ``first_crossing_<p>_epoch``
    is the first epoch of this schedule whose test accuracy reached p %, reported mid-run: not the
    time a schedule budgeted to end at p % would take.
    """
    val_rows = [r for r in rows if r["val_acc"] == r["val_acc"]]  # drop NaN (no validation split)
    best_val = max(val_rows, key=lambda r: r["val_acc"]) if val_rows else None
    flops = count_forward_flops(copy.deepcopy(model).float().cpu())
    images = sum(round(r["images_per_s"] * r["epoch_time_s"]) for r in rows)  # steps x batch of each epoch
    summary = {
        "name": config.name,
        "epochs": len(rows),
        "params": count_parameters(model),
        "forward_flops": flops,
        "train_pflop": 3 * flops * images / 1e15,
        "test_acc": plain["acc"],
        "test_loss": plain["loss"],
        "test_acc_tta": flipped["acc"] if flipped else None,
        "test_images": test_images,
        "final_val_acc": rows[-1]["val_acc"] if val_rows else None,
        "best_val_acc": best_val["val_acc"] if best_val else None,
        "best_val_epoch": best_val["epoch"] if best_val else None,
        "train_time_s": train_time,
        "eval_time_s": sum(r.get("eval_time_s", 0.0) for r in rows),
        "mean_images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
    }
    for threshold in ACCURACY_MILESTONES:
        hit = next((r for r in rows if r["test_acc"] >= threshold), None)
        key = f"first_crossing_{round(threshold * 100)}"
        summary[f"{key}_epoch"] = hit["epoch"] if hit else None
        summary[f"{key}_train_time_s"] = hit["train_time_s"] if hit else None
    return summary
