"""`fit(config)`: train a WRN, evaluate every epoch and write the run folder.

The whole data set lives on the training device as uint8; each step gathers a batch, augments
it there, runs forward/backward under bf16 autocast and updates the weights, without reading
anything back to the host. Metrics are summed on the device and read once per epoch.

Run folder (``<out_dir>/<name>/``, see :mod:`wrnlib.runs`): config.json, env.json, metrics.csv
(one row per epoch), summary.json, state.pt (resume checkpoint, written atomically) and, on
request, model_fp16.pt. `fit` alone decides what happens to a folder that already exists.

Started by torchrun, the same code trains one run on several processes (:mod:`wrnlib.distributed`):
`fit` and `Trainer` call its hooks, which do nothing in a one-process run.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import distributed, runs
from .runs import RunResult
from .augment import BatchAugment
from .config import TrainConfig, resume_conflicts
from .data import CIFAR10, NUM_CLASSES, load_cifar10, test_subset, train_val_split
from .engine import choose_precision, evaluate, keep_freed_memory, make_train_step, resolve_device
from .model import WideResNet, count_forward_flops, count_parameters, forward_flops
from .optim import SAM, ModelEMA, make_sgd
from .schedules import lr_multiplier

ACCURACY_MILESTONES = (0.94, 0.95)
EXISTING = ("error", "resume", "reuse")


class NonFiniteError(FloatingPointError):
    """The loss, the weights, the learning rate or an evaluation loss became NaN or infinite."""


NonFiniteLossError = NonFiniteError  # the name used before the weights and lr were checked too


class RunExistsError(FileExistsError):
    """A run folder with this name already exists and neither resuming nor reusing it was asked for."""


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
    """Holds a run's model, optimiser and data; `fit` drives it epoch by epoch.

    ``dist`` is this process's part in a data-parallel run (see :mod:`wrnlib.distributed`); its
    hooks do nothing in a one-process run.
    """

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device,
                 dist: distributed.Single | None = None):
        self.config, self.splits, self.device = config, splits, device
        self.dist = dist or distributed.Single(device)
        self.bf16, self.precision = choose_precision(config.precision, device)  # (bool, why: for the record)
        if device.type == "cpu":
            keep_freed_memory()  # no page faults on every step's activations (see engine)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        torch.manual_seed(config.seed)
        self.model = self.dist.prepare(WideResNet(config.depth, config.width, NUM_CLASSES, config.dropout).to(
            device, memory_format=self.memory_format))
        sgd = make_sgd(self.model, config.lr, config.momentum, config.nesterov, config.weight_decay,
                       config.decay_bn_bias)
        self.optimizer = SAM(sgd, config.sam_rho) if config.optimizer == "sam" else sgd
        self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay else None
        forward = self.dist.wrap(self.model)
        forward = torch.compile(forward, mode=config.compile_mode) if config.compile else forward
        self.step = make_train_step(self.model, forward, self.optimizer, device=device, bf16=self.bf16,
                                    label_smoothing=config.label_smoothing, no_sync=self.dist.no_sync(forward))
        self.augment = BatchAugment.from_config(config)
        self.schedule = config.schedule_params()
        self.steps_per_epoch = len(splits.train_y) // config.batch_size  # the last partial batch is dropped

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def lr_at(self, epochs_done: float) -> float:
        c = self.config
        return c.lr * lr_multiplier(c.schedule, epochs_done, c.epochs, self.schedule)

    def train_epoch(self, epoch: int, progress: Callable[[], Any] | None = None) -> dict[str, float]:
        """One pass over the training set; returns its loss/accuracy, read back once at the end.

        ``weights_finite`` is 0.0 when any parameter became NaN or infinite (checked in the same
        host read). ``progress()`` is called after every step (a counter; it never syncs).
        """
        c, s = self.config, self.splits
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        order = torch.randperm(len(s.train_y), device=self.device)
        for i in range(self.steps_per_epoch):
            idx = order[i * c.batch_size:(i + 1) * c.batch_size]
            x, targets = self.augment(s.train_x[idx], s.train_y[idx])
            # data-parallel: every process augments the global batch alike and trains on its slice
            x, targets = self.dist.shard(x), self.dist.shard(targets)
            x = x.contiguous(memory_format=self.memory_format)
            # The lr of a step is the schedule's value where the step ends: the first step is
            # above zero and the last warm-up step reaches the peak.
            lr = self.lr_at(epoch + (i + 1) / self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self.dist.step_rng(epoch * self.steps_per_epoch + i):
                loss, logits = self.step(x, targets)
            loss_sum += loss
            correct += (logits.argmax(1) == targets.argmax(1)).sum()
            if self.ema is not None:
                self.ema.update(self.model)
            if progress is not None:
                progress()
        self.dist.sync_buffers(self.model, *([self.ema.module] if self.ema is not None else []))
        finite = torch.stack(torch._foreach_norm(list(self.model.parameters()))).isfinite().all()
        totals = self.dist.sum(torch.stack([loss_sum, correct.to(loss_sum.dtype), finite.to(loss_sum.dtype)]))
        loss_sum, correct, finite = totals.tolist()  # the one host sync
        seen = self.steps_per_epoch * c.batch_size
        return {"train_loss": loss_sum / (self.steps_per_epoch * self.dist.world), "train_acc": correct / seen,
                "lr": lr, "weights_finite": float(finite == self.dist.world)}

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, *, tta: bool = False,
                 model: torch.nn.Module | None = None, bf16: bool | None = None) -> dict[str, float]:
        if len(labels) == 0:
            return {"loss": float("nan"), "acc": float("nan")}
        return evaluate(model if model is not None else self.eval_model, images, labels, batch_size=self.config.eval_batch_size,
                        bf16=self.bf16 if bf16 is None else bf16,
                        channels_last=self.config.channels_last, tta=tta)

    def evaluate_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """The per-epoch evaluation; a data-parallel run splits the images among its processes."""
        return self.dist.evaluate(self.evaluate, images, labels)

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
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}; got {existing!r}")
    dist = distributed.setup(config)  # one process, or one of torchrun's (only rank 0 touches the folder)
    config = dist.agree(config)
    with contextlib.ExitStack() as held:
        # One writer per run folder, from the first look at it to the summary: rank 0 holds the lock.
        dist.on_main(lambda: held.enter_context(runs.folder_lock(config.run_dir)))
        state = dist.on_main(lambda: _existing_run(config, existing))
        if isinstance(state, RunResult):
            dist.close()
            return state
        data = data if data is not None else load_cifar10(config.data_dir, download=config.download)
        dist.same_data(data.checksum)
        previous_determinism = torch.are_deterministic_algorithms_enabled()
        if config.deterministic:
            _enable_determinism()
        else:
            torch.backends.cudnn.benchmark = True  # shapes are fixed, so cuDNN's autotuning pays off once
        try:
            result = _train(config, dist, data, state, on_epoch_end)
        finally:
            torch.use_deterministic_algorithms(previous_determinism)
    dist.close()  # after _train returned: the trainer (and DDP's hold on the process group) is gone
    return result


def _train(config: TrainConfig, dist: distributed.Single, data: CIFAR10, state: dict[str, Any] | None,
           on_epoch_end: Callable | None) -> RunResult:
    """Build the trainer, start or resume the run folder, train the remaining epochs and finish."""
    trainer = Trainer(config, make_splits(config, data, dist.device), dist.device, dist)
    start_epoch, rows, train_time = trainer.load_state_dict(state) if state else (0, [], 0.0)
    if state:  # metrics.csv may have run ahead of the checkpoint: rewind it
        dist.on_main(lambda: runs.write_metrics(config.run_dir / runs.METRICS, rows))
    else:  # only now, with data and model ready: a failed start leaves no folder behind
        dist.on_main(lambda: runs.start_run_folder(  # rank 0 alone records the environment (git, versions)
            config, runs.environment(dist.device, data.checksum, data.source) | dist.describe()
            | {"precision": trainer.precision, "test_data_checksum": data.test_checksum}))
    if config.progress and dist.is_main:
        print(_start_line(trainer), flush=True)
    rows, train_time = _train_epochs(trainer, start_epoch, rows, train_time, on_epoch_end)
    summary, final_model = _finish(trainer, rows, train_time)
    return RunResult(config.run_dir, config, rows, summary, final_model)


def _existing_run(config: TrainConfig, existing: str) -> dict[str, Any] | RunResult | None:
    """None to start afresh, a checkpoint to resume from, or the finished run read back."""
    run_dir = config.run_dir
    status = runs.status(run_dir)
    if status == "absent" and existing == "resume":
        raise FileNotFoundError(f"cannot resume: there is no run in {run_dir}; start the run without --resume")
    if status == "absent":
        return None
    if status == "foreign":
        raise RunExistsError(f"{run_dir} exists but is not a run folder (no {runs.CONFIG}); choose another "
                             f"--name or --out-dir (nothing was changed)")
    if status == "unstarted":
        print(f"{run_dir} holds a run that stopped before its first checkpoint: starting it again", flush=True)
        runs.clear_unstarted(run_dir)
        return None
    if existing == "error":
        raise RunExistsError(f"run folder {run_dir} already exists ({status}); pass --resume to continue it (a "
                             f"finished run is read back), or choose another --name (nothing was overwritten)")
    saved = runs.load_config(run_dir)
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        details = ", ".join(f"{k}: saved {getattr(saved, k)!r} vs requested {getattr(config, k)!r}"
                            for k in conflicts)
        raise ValueError(f"{run_dir} exists with other settings ({details}); use the saved settings, or start a "
                         f"new run under another --name (nothing was changed)")
    if status == "finished":
        print(f"{run_dir} is already finished: reading it back instead of training again", flush=True)
        return runs.read_result(run_dir)
    print(f"{run_dir} was interrupted: resuming it", flush=True)
    return runs.load_checkpoint(run_dir)


def _enable_determinism() -> None:
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _start_line(trainer: Trainer) -> str:
    c, device, world = trainer.config, trainer.device, trainer.dist.world
    where = runs.device_name(device)
    if c.device == "auto" and device.type == "cpu":
        where += " (device 'auto': no CUDA GPU is visible, so this runs on the CPU)"
    if world > 1:
        where = (f"{world} processes ({trainer.dist.backend}, {c.batch_size // world} images each per step), "
                 f"each on {where}")
    seconds = rough_epoch_seconds(c, trainer.steps_per_epoch * c.batch_size, 0, device) / world
    return (f"{c.name}: WRN-{c.depth}-{c.width:g}, {c.epochs} epochs of {trainer.steps_per_epoch} steps, on {where}; "
            f"{trainer.precision}; roughly {rough_duration(seconds)} per epoch")


# Training FLOP/s per CPU thread in each precision, from the committed CPU benchmark
# (results/benchmarks/cpu-wrn16-2/bench.json, the fp32 and bf16 modes; tests check they agree),
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


def rough_duration(seconds: float) -> str:
    """A rough duration for people: never "0 s" (the closed form is rough for tiny models)."""
    if seconds < 1:
        return "under 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _train_epochs(trainer: Trainer, start_epoch: int, rows: list[dict], train_time: float,
                  on_epoch_end: Callable | None) -> tuple[list[dict], float]:
    c, s, run_dir = trainer.config, trainer.splits, trainer.config.run_dir
    steps, show = trainer.steps_per_epoch, c.progress and trainer.dist.is_main
    bar = tqdm(total=c.epochs * steps, initial=start_epoch * steps, desc=c.name, unit="step", mininterval=2.0,
               disable=not show)
    for epoch in range(start_epoch, c.epochs):
        t0 = time.perf_counter()
        try:
            row = trainer.train_epoch(epoch, progress=bar.update)
        except KeyboardInterrupt:
            bar.close()
            if trainer.dist.is_main:
                print(_interrupted(run_dir, epoch), flush=True)
            raise
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        epoch_time = time.perf_counter() - t0
        _check_finite(row, epoch, c, run_dir)
        del row["weights_finite"]
        train_time += epoch_time
        t0 = time.perf_counter()
        val, test = trainer.evaluate_epoch(s.val_x, s.val_y), trainer.evaluate_epoch(s.test_x, s.test_y)
        row = {"epoch": epoch + 1, **row, "val_loss": val["loss"], "val_acc": val["acc"],
               "test_loss": test["loss"], "test_acc": test["acc"], "epoch_time_s": epoch_time,
               "train_time_s": train_time, "eval_time_s": time.perf_counter() - t0,
               "images_per_s": steps * c.batch_size / epoch_time}
        _check_finite(row, epoch, c, run_dir)
        rows.append(row)
        # rank 0 writes; the others wait for it, so on_epoch_end always follows a safe checkpoint
        trainer.dist.on_main(lambda: _save_epoch(trainer, epoch, rows, train_time))
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=_pct(row["val_acc"]), test=_pct(row["test_acc"]),
                        refresh=False)
        if show:
            bar.write(format_epoch(row, c.epochs))
        if on_epoch_end is not None:
            on_epoch_end(dict(row))
    bar.close()
    return rows, train_time


def _save_epoch(trainer: Trainer, epoch: int, rows: list[dict], train_time: float) -> None:
    c = trainer.config
    # The checkpoint first: if it cannot be written (a full disk), nothing of the run changes.
    if epoch + 1 == c.epochs or (c.checkpoint_every and (epoch + 1) % c.checkpoint_every == 0):
        runs.save_checkpoint(trainer.state_dict(epoch + 1, rows, train_time), c.run_dir)
    runs.write_metrics(c.run_dir / runs.METRICS, rows)


def _check_finite(row: dict[str, Any], epoch: int, config: TrainConfig, run_dir: Path) -> None:
    """Stop the run when the loss, the weights, the lr or an evaluation loss is NaN or infinite."""
    bad = [k for k in ("train_loss", "lr", "test_loss") if k in row and not math.isfinite(row[k])]
    if config.val_size and "val_loss" in row and not math.isfinite(row["val_loss"]):
        bad.append("val_loss")
    if row.get("weights_finite", 1.0) != 1.0:  # 0.0 when train_epoch saw a NaN or infinite parameter
        bad.append("weights")
    if bad:
        raise NonFiniteError(
            f"{' and '.join(bad)} became NaN or infinite in epoch {epoch + 1} of run {config.name}; the last good "
            f"checkpoint ({runs.checkpoint_epoch(run_dir)}) is kept in {run_dir}. Lower --lr, add "
            f"--warmup-epochs, or use --precision fp32 to find the cause.")


def _finish(trainer: Trainer, rows: list[dict], train_time: float):
    """Evaluate the final model as it will be saved: fp16-rounded weights, float32 arithmetic.

    TF32 is switched off for this evaluation so that the training device computes what
    `python -m wrnlib evaluate` recomputes from model_fp16.pt on a CPU; summary.json names the
    device that measured it.
    """
    final = copy.deepcopy(trainer.eval_model).float()
    with torch.no_grad():
        for tensor in final.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    # rank 0 alone evaluates it, on one device like `wrnlib evaluate`, and writes the summary
    summary = trainer.dist.on_main(lambda: _evaluate_final(trainer, final, rows, train_time))
    return summary, final.cpu().eval()


def _evaluate_final(trainer: Trainer, final: torch.nn.Module, rows: list[dict], train_time: float) -> dict:
    c, s = trainer.config, trainer.splits
    t0 = time.perf_counter()
    with _no_tf32():
        plain = trainer.evaluate(s.test_x, s.test_y, model=final, bf16=False)
        flipped = trainer.evaluate(s.test_x, s.test_y, model=final, bf16=False, tta=True) if c.tta else None
    eval_time = time.perf_counter() - t0
    _check_finite({"test_loss": plain["loss"]}, len(rows) - 1, c, c.run_dir)
    if c.save_model:
        runs.save_fp16_model(final, c.run_dir / runs.MODEL_FP16)
    summary = summarize(rows, c, plain, flipped, train_time, trainer.model, len(s.test_y))
    summary["final_eval"] = {"device": runs.device_name(trainer.device), "precision": "fp32, TF32 off",
                             "time_s": eval_time}
    runs.write_json(c.run_dir / runs.SUMMARY, summary)
    return summary


class _no_tf32:
    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


def summarize(rows: list[dict], config: TrainConfig, plain: dict, flipped: dict | None, train_time: float,
              model: torch.nn.Module, test_images: int) -> dict[str, Any]:
    """summary.json: final test accuracy (with and without flip-TTA), validation, times.

    ``train_time_s`` is the time of the training steps alone; ``eval_time_s`` is the per-epoch
    evaluation (validation + test) on top of it. ``first_crossing_<p>_epoch`` is the first epoch
    of this schedule whose test accuracy reached p %, reported mid-run: not the time a schedule
    budgeted to end at p % would take.
    """
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
        "eval_time_s": sum(r.get("eval_time_s", 0.0) for r in rows),
        "mean_images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
    }
    for threshold in ACCURACY_MILESTONES:
        hit = next((r for r in rows if r["test_acc"] >= threshold), None)
        key = f"first_crossing_{round(threshold * 100)}"
        summary[f"{key}_epoch"] = hit["epoch"] if hit else None
        summary[f"{key}_train_time_s"] = hit["train_time_s"] if hit else None
    return summary


def _interrupted(run_dir: Path, epoch: int) -> str:
    return (f"\nInterrupted during epoch {epoch + 1}. The checkpoint at the {runs.checkpoint_epoch(run_dir)} is "
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
