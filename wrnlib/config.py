"""TrainConfig: every knob of a training run, in one typed dataclass saved with the run.

Each field carries its help text (and its allowed values, where there is a fixed set) as field
metadata: the command line's flags, their ``--help`` and the checks of a JSON config all read them
from here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .augment import MIXES, PAD_MODES, POLICIES
from .data import ENV_VAR, NUM_CLASSES, SAMPLE, sample_size, sample_split
from .errors import setting
from .model import validate_architecture
from .schedules import SCHEDULES, ScheduleParams, validate_schedule

OPTIMIZERS = ("sgd", "sam")
MAX_NAME_BYTES = 200  # file systems allow 255 per name; the lock (".<name>.lock") and temp files add a few
PRECISIONS = ("auto", "fp32", "bf16")
_SCHEDULE = ScheduleParams()  # the schedule knobs' defaults live in wrnlib.schedules


def knob(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its help text and, optionally, its allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    # run bookkeeping
    name: str = knob("", "run folder name under out_dir (empty: wrn<depth>-<width>-<timestamp>)")
    out_dir: str = knob("runs", "folder that holds the run folders (the default, runs/, is git-ignored scratch; "
                                "the study's committed runs live under results/)")
    # data
    data_dir: str | None = knob(None, "CIFAR-10 folder, 'sample' for the shipped sample, unset: $CIFAR10_DIR or "
                                      "the cache")
    download: bool = knob(False, "let torchvision download CIFAR-10 into the cache when none is found")
    val_size: int = knob(5000, "class-stratified validation images held out of the training set (model selection)")
    train_limit: int = knob(0, "train on a stratified subset of this many images (0: all)")
    test_limit: int = knob(0, "score on a fixed stratified subset of this many test images (0: all 10,000)")
    # model
    depth: int = knob(28, "WRN depth, 6n + 4 (10, 16, 22, 28, ...)")
    width: float = knob(3.5, "widening factor k; fractional values round each stage's channels")
    dropout: float = knob(0.0, "dropout between the two convolutions of a block, in [0, 1)")
    # optimisation
    epochs: int = knob(30, "training epochs: the schedule's budget")
    budget_minutes: float = knob(0.0, "train for about this many minutes on this machine: before training, the "
                                      "step is timed here and the epochs that fit are chosen and recorded (0: "
                                      "train for epochs)")
    budget_step_s: float = knob(0.0, "with budget_minutes: seconds per training step measured beforehand (a local "
                                     "sweep times its runs together), so it is not timed at the start (0: timed there)")
    batch_size: int = knob(512, "training batch size; under torchrun the global batch, split evenly among the "
                                "processes")
    lr: float = knob(0.4, "peak learning rate (the study's 0.1 at batch 128, scaled linearly with the batch)")
    momentum: float = knob(0.9, "SGD momentum, in [0, 1)")
    nesterov: bool = knob(True, "Nesterov momentum")
    weight_decay: float = knob(5e-4, "L2 weight decay")
    decay_bn_bias: bool = knob(False, "also decay BatchNorm parameters and biases (the study decays everything)")
    label_smoothing: float = knob(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    optimizer: str = knob("sgd", "sgd, or sam (sharpness-aware minimisation around SGD)", OPTIMIZERS)
    sam_rho: float = knob(0.05, "SAM's neighbourhood radius")
    ema_decay: float = knob(0.0, "weight EMA decay, e.g. 0.999; evaluation then uses the EMA (0: off)")
    # lr schedule (see wrnlib.schedules)
    schedule: str = knob("cosine", "learning-rate schedule", tuple(SCHEDULES))
    warmup_epochs: float = knob(_SCHEDULE.warmup_epochs, "linear warm-up to the peak lr, in epochs")
    min_lr_frac: float = knob(_SCHEDULE.min_lr_frac, "floor of cosine / SGDR / one-cycle, as a fraction of the peak")
    step_milestones: tuple[float, ...] = knob(_SCHEDULE.step_milestones, "step schedule: drops at these fractions "
                                                                        "of the budget")
    step_gamma: float = knob(_SCHEDULE.step_gamma, "step schedule: factor of each drop")
    sgdr_t0: float = knob(_SCHEDULE.sgdr_t0, "SGDR: epochs in the first cycle")
    sgdr_tmult: float = knob(_SCHEDULE.sgdr_tmult, "SGDR: each cycle is this much longer than the last")
    onecycle_peak: float = knob(_SCHEDULE.onecycle_peak, "one-cycle: fraction of the budget at the peak")
    onecycle_start: float = knob(_SCHEDULE.onecycle_start, "one-cycle: multiplier of the peak at the start")
    # augmentation (see wrnlib.augment)
    crop_padding: int = knob(4, "random-crop padding in pixels (0: no crop)")
    pad_mode: str = knob("reflect", "padding of the random crop", PAD_MODES)
    flip: bool = knob(True, "random horizontal flips")
    policy: str = knob("none", "learned augmentation policy", POLICIES)
    policy_group: int = knob(32, "images that share one sampled policy op")
    cutout: int = knob(0, "side of the Cutout square in pixels (0: off)")
    mix: str = knob("none", "batch mixing", MIXES)
    mix_alpha: float = knob(1.0, "Beta(alpha, alpha) of the mixing ratio")
    mix_prob: float = knob(1.0, "probability that a batch is mixed")
    tta: bool = knob(True, "also report flip test-time augmentation at the end")
    # execution
    device: str = knob("auto", "auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    precision: str = knob("auto", "auto: bf16 autocast on CUDA and on a CPU that computes bf16 natively (AMX or "
                                  "AVX512-BF16), fp32 on other CPUs; the final evaluation is fp32 either way",
                          PRECISIONS)
    channels_last: bool = knob(True, "channels_last memory format (fast convolutions on GPUs)")
    compile: bool = knob(False, "torch.compile the model")
    compile_mode: str = knob("default", "torch.compile mode")
    cuda_graph: bool = knob(False, "capture the training step in a CUDA graph and replay it, one launch a step instead "
                                   "of hundreds (a GPU, one process, SGD, no compile)")
    seed: int = knob(0, "seed of the initialisation, batch order, augmentation and validation split")
    deterministic: bool = knob(False, "bitwise-reproducible kernels (slower); exact resume on a GPU relies on it")
    eval_batch_size: int = knob(1000, "batch size of the evaluations")
    checkpoint_every: int = knob(1, "epochs between resume checkpoints (0: only at the end)")
    save_model: bool = knob(False, "write model_fp16.pt, the evaluated weights (9 MB for WRN-28-3.5)")
    progress: bool = knob(True, "progress bars and one log line per epoch")
    sync_bn: bool = knob(False, "under torchrun: batch-norm statistics over the global batch (SyncBatchNorm), not "
                                "each process's share")

    def __post_init__(self) -> None:
        if isinstance(self.step_milestones, (list, tuple)):
            self.step_milestones = tuple(self.step_milestones)
        if not self.name:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.name = f"wrn{self.depth}-{self.width:g}-{stamp}"

    # -- validation -------------------------------------------------------------------------

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field, its value and what is allowed."""
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
            if f.metadata["choices"] is not None:
                _choice(f.name, getattr(self, f.name), f.metadata["choices"])
        validate_architecture(self.depth, self.width, NUM_CLASSES, self.dropout)
        for name in ("epochs", "batch_size", "eval_batch_size", "policy_group"):
            _at_least(name, getattr(self, name), 1)
        for name in ("val_size", "train_limit", "test_limit", "checkpoint_every", "cutout", "crop_padding"):
            _at_least(name, getattr(self, name), 0)
        if self.pad_mode == "reflect" and self.crop_padding >= 32:
            raise ValueError(f"crop_padding must be < 32 (the image side) with reflect padding; got "
                             f"{self.crop_padding}: lower {setting('crop_padding')} or use "
                             f"{setting('pad_mode', 'constant')}")
        validate_schedule(self.schedule, self.epochs, self.schedule_params())
        _in_range("lr", self.lr, 0.0, None, low_open=True)
        _in_range("budget_minutes", self.budget_minutes, 0.0, None)
        _in_range("budget_step_s", self.budget_step_s, 0.0, None)
        if self.budget_step_s and not self.budget_minutes:
            raise ValueError(f"budget_step_s={self.budget_step_s:g} divides a time budget, and there is none: set "
                             f"{setting('budget_minutes')} or leave budget_step_s 0")
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, None)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _in_range("mix_prob", self.mix_prob, 0.0, 1.0)
        _in_range("mix_alpha", self.mix_alpha, 0.0, None, low_open=True)
        if self.optimizer == "sam":
            _in_range("sam_rho", self.sam_rho, 0.0, None, low_open=True)
        if self.cuda_graph and self.optimizer == "sam":
            raise ValueError(f"{setting('cuda_graph', True)} captures the SGD step, not SAM's two passes: use "
                             f"{setting('optimizer', 'sgd')} or {setting('cuda_graph', False)}")
        if self.cuda_graph and self.compile:
            raise ValueError(f"{setting('cuda_graph', True)} captures the eager step, and {setting('compile', True)} "
                             f"makes graphs of its own (its mode 'reduce-overhead'): use one of them, not both")
        if self.ema_decay != 0.0:
            _in_range("ema_decay", self.ema_decay, 0.0, 1.0, low_open=True, high_open=True)
        if not self.name or "/" in self.name or "\\" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a plain folder name (no '/'); got {self.name!r}")
        if len(self.name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"name is {len(self.name.encode())} bytes long; a folder name can have at most "
                             f"{MAX_NAME_BYTES}: choose a shorter {setting('name')}")
        return self

    def schedule_params(self) -> ScheduleParams:
        return ScheduleParams(**{f.name: getattr(self, f.name) for f in fields(ScheduleParams)})

    # -- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["step_milestones"] = list(self.step_milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a JSON object; every field's type is checked, naming the field and ``source``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must be a JSON object of TrainConfig fields; got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown TrainConfig field(s) {unknown}; known fields: {sorted(known)}")
        for name, value in data.items():
            check_type(name, value, known[name].type, source)
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config; a malformed file is a ValueError naming the file and the line."""
        return cls.from_dict(read_config_file(path), source=str(path))

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


SAMPLE_BATCH = 64  # 15 steps per epoch on the sample's 1,000 training images (the default 512 would give one)


def fit_to_sample(config: TrainConfig) -> tuple[TrainConfig, str]:
    """On the sample shipped with wrnlib (1,200 training images, not the benchmark), the settings left at their
    defaults that do not suit it, fitted: at most 200 validation images, and batch 64 with the learning rate
    scaled linearly. Returns the config and a line saying what changed ("" when nothing did, or the data is not
    the sample)."""
    if (config.data_dir if config.data_dir is not None else os.environ.get(ENV_VAR)) != SAMPLE:
        return config, ""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    wanted = sample_split(config.val_size, config.train_limit, config.test_limit)
    if config.batch_size == defaults["batch_size"]:
        wanted["batch_size"] = SAMPLE_BATCH
        if config.lr == defaults["lr"]:
            wanted["lr"] = config.lr * SAMPLE_BATCH / config.batch_size
    fitted = {k: v for k, v in wanted.items() if getattr(config, k) == defaults[k] and v != getattr(config, k)}
    if not fitted:
        return config, ""
    return dataclasses.replace(config, **fitted), (
        f"the sample shipped with wrnlib ({sample_size()[0]:,} training images, not the benchmark): "
        + ", ".join(f"{k} {getattr(config, k):,g} -> {v:,g}" for k, v in fitted.items()))


# Fields that may differ when a run is resumed: they change how it runs, not what it computes.
RESUME_MUTABLE = frozenset({"out_dir", "data_dir", "download", "progress", "compile", "compile_mode", "cuda_graph",
                            "checkpoint_every", "save_model", "eval_batch_size"})


# With a time budget, what the run's start settled (the epochs, from the step time): a resume keeps the saved ones.
BUDGET_DERIVED = ("epochs", "budget_step_s")


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """Fields whose values differ between a run's saved config and a resume request (with a time budget, the
    epochs are the saved run's: chosen when it started)."""
    a, b = saved.to_dict(), requested.to_dict()
    derived = set(BUDGET_DERIVED) if saved.budget_minutes else set()
    return [k for k in a if k not in RESUME_MUTABLE | derived and a[k] != b[k]]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a config file; a ValueError naming the file (and the line) when it is none."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
                         f"fix that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a JSON object of TrainConfig fields; got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- checks

_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "str | None": "a string or null", "tuple[float, ...]": "a list of numbers"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_type(name: str, value: Any, annotation: Any, source: str = "config") -> None:
    """ValueError when ``value`` is not of the field's declared type (JSON spelling in the message)."""
    kind = str(annotation)
    ok = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": _is_number,
        "str": lambda v: isinstance(v, str),
        "str | None": lambda v: v is None or isinstance(v, str),
        "tuple[float, ...]": lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v),
    }[kind](value)
    if not ok:
        raise ValueError(f"{source}: field {name!r} must be {_TYPE_WORDS[kind]}; got {value!r} "
                         f"({type(value).__name__})")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float | None, *, low_open: bool = False,
              high_open: bool = False) -> None:
    ok = _is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ("inf)" if high is None else f"{high}{')' if high_open else ']'}")
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {hi}; got {value!r}")
