"""TrainConfig: every knob of a training run, in one typed dataclass saved with the run."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .model import validate_architecture
from .schedules import ScheduleParams, validate_schedule

OPTIMIZERS = ("sgd", "sam")
PRECISIONS = ("auto", "fp32", "bf16")
MIXES = ("none", "mixup", "cutmix")
POLICIES = ("none", "autoaugment", "trivialaugment")
PAD_MODES = ("reflect", "constant")


@dataclass
class TrainConfig:
    # run bookkeeping
    name: str = ""  # run folder name under out_dir; empty -> wrn<depth>-<width>-<timestamp>
    out_dir: str = "results/runs"
    # data
    data_dir: str | None = None  # folder, "sample" for the shipped sample, or None -> $CIFAR10_DIR / cache
    download: bool = False  # allow torchvision to download into the cache when no data is found
    val_size: int = 5000  # class-stratified hold-out from the training set, for model selection
    train_limit: int = 0  # use a stratified subset of this many training images (0: all)
    test_limit: int = 0  # evaluate on the first this-many test images per run (0: all 10,000)
    # model
    depth: int = 28
    width: float = 3.5
    dropout: float = 0.0
    # optimisation
    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.4  # peak lr; 0.1 at batch 128 in the study, scaled linearly with the batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_bias: bool = False
    label_smoothing: float = 0.0
    optimizer: str = "sgd"  # "sgd" or "sam"
    sam_rho: float = 0.05
    ema_decay: float = 0.0  # 0 disables the weight EMA; otherwise evaluation uses the EMA weights
    # lr schedule (see wrnlib.schedules)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_frac: float = 0.0
    step_milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    step_gamma: float = 0.2
    sgdr_t0: float = 10.0
    sgdr_tmult: float = 2.0
    onecycle_peak: float = 0.25
    onecycle_start: float = 0.1
    # augmentation (see wrnlib.augment)
    crop_padding: int = 4
    pad_mode: str = "reflect"
    flip: bool = True
    policy: str = "none"  # "autoaugment", "trivialaugment" or "none"
    policy_group: int = 32  # images that share one sampled policy op
    cutout: int = 0  # side of the Cutout square in pixels (0: off)
    mix: str = "none"  # "mixup", "cutmix" or "none"
    mix_alpha: float = 1.0
    mix_prob: float = 1.0
    tta: bool = True  # also report flip test-time augmentation at the end
    # execution
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    seed: int = 0
    deterministic: bool = False  # bitwise-reproducible kernels (slower); exact resume relies on it on GPU
    eval_batch_size: int = 1000
    checkpoint_every: int = 1  # epochs between resume checkpoints (0: only at the end)
    save_model: bool = False  # write model_fp16.pt, small enough to commit
    progress: bool = True

    def __post_init__(self) -> None:
        self.step_milestones = tuple(float(m) for m in self.step_milestones)
        if not self.name:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.name = f"wrn{self.depth}-{self.width:g}-{stamp}"

    # -- validation -------------------------------------------------------------------------

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field, its value and what is allowed."""
        validate_architecture(self.depth, self.width, 10, self.dropout)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("mix", self.mix, MIXES)
        _choice("policy", self.policy, POLICIES)
        _choice("pad_mode", self.pad_mode, PAD_MODES)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("policy_group", self.policy_group)
        for name in ("val_size", "train_limit", "test_limit", "checkpoint_every", "cutout", "crop_padding"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {getattr(self, name)!r}")
        validate_schedule(self.schedule, self.epochs, self.schedule_params())
        _in_range("lr", self.lr, 0.0, None, low_open=True)
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, None)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _in_range("mix_prob", self.mix_prob, 0.0, 1.0)
        _in_range("mix_alpha", self.mix_alpha, 0.0, None, low_open=True)
        if self.optimizer == "sam":
            _in_range("sam_rho", self.sam_rho, 0.0, None, low_open=True)
        if self.ema_decay != 0.0:
            _in_range("ema_decay", self.ema_decay, 0.0, 1.0, low_open=True, high_open=True)
        if "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a plain folder name (no '/'); got {self.name!r}")
        return self

    def schedule_params(self) -> ScheduleParams:
        return ScheduleParams(**{f.name: getattr(self, f.name) for f in fields(ScheduleParams)})

    # -- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["step_milestones"] = list(self.step_milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# Fields that may differ when a run is resumed: they change how it runs, not what it computes.
RESUME_MUTABLE = frozenset({"out_dir", "data_dir", "download", "progress", "compile", "compile_mode",
                            "checkpoint_every", "save_model", "eval_batch_size"})


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """Fields whose values differ between a run's saved config and a resume request."""
    a, b = saved.to_dict(), requested.to_dict()
    return [k for k in a if k not in RESUME_MUTABLE and a[k] != b[k]]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float | None, *, low_open: bool = False,
              high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok:
        ok = (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ("inf)" if high is None else f"{high}{')' if high_open else ']'}")
        raise ValueError(f"{name} must be in {lo}{low}, {hi}; got {value!r}")
