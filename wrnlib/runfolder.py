"""A run folder: what it holds, the one process that writes it, and reading it (and its model) back.

``<out_dir>/<name>/`` holds config.json, env.json, metrics.csv (one row per epoch), summary.json,
the resume checkpoint state.pt and, on request, model_fp16.pt. :class:`RunFolder` is `fit`'s
handle on it: it holds the folder's lock while the run trains, decides what an existing folder
means, and writes each file atomically (under torchrun, rank 0 alone).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import checkpoints
from .checkpoints import CheckpointError
from .config import BUDGET_DERIVED, TrainConfig, resume_conflicts
from .data import ENV_VAR, NUM_CLASSES, SAMPLE
from .device import resolve_device
from .errors import setting
from .files import folder_lock, read_json, write_bytes, write_json
from .model import WideResNet

CONFIG, ENV, METRICS, SUMMARY = "config.json", "env.json", "metrics.csv", "summary.json"
STATE, MODEL_FP16, EVALUATION = "state.pt", "model_fp16.pt", "evaluation.json"
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                  "test_acc", "epoch_time_s", "train_time_s", "eval_time_s", "images_per_s")
EXISTING = ("error", "resume", "reuse")


@dataclass
class RunResult:
    """A run as fit returns it, or as it is read back from its folder."""
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    model: torch.nn.Module | None  # the evaluated model (the EMA when enabled), on the CPU, eval mode


class RunExistsError(FileExistsError):
    """A run folder with this name already exists and neither resuming nor reusing it was asked for."""


class RunFolder:
    """`fit`'s handle on its run folder, used as a context that holds the folder's lock.

    On entry it looks at the folder and sets ``finished`` (the run read back: nothing to train) or
    ``checkpoint`` (the state to resume from), or neither (a fresh start); ``existing`` says what may
    be done with a folder that holds a run (see `fit`). ``dist`` is the process's part in the run
    (:mod:`wrnlib.distributed`): rank 0 alone locks, reads and writes, and every process gets its answer.
    """

    def __init__(self, config: TrainConfig, existing: str, dist):
        self.config, self.path, self.existing, self.dist = config, config.run_dir, existing, dist
        self.finished: RunResult | None = None
        self.checkpoint: dict[str, Any] | None = None
        self._held = contextlib.ExitStack()

    def __enter__(self) -> "RunFolder":
        # one writer per run folder, from the first look at it to the summary
        self.dist.on_main(lambda: self._held.enter_context(folder_lock(self.path)))
        try:
            self.finished, self.checkpoint = self.dist.on_main(self._look)
            if self.checkpoint is not None and self.config.budget_minutes:  # its epochs were chosen at its start
                saved = TrainConfig.from_dict(self.checkpoint["config"])  # config.json, already read, agrees
                self.config = dataclasses.replace(self.config, **{k: getattr(saved, k) for k in BUDGET_DERIVED})
        except BaseException:
            self._held.close()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._held.close()
        return False

    def _look(self) -> tuple[RunResult | None, dict[str, Any] | None]:
        """(finished run, checkpoint) for what the folder holds, or an error saying why it may not be used."""
        path, state = self.path, status(self.path)
        if state == "absent" and self.existing == "resume":
            raise FileNotFoundError(f"cannot resume: there is no run in {path}; start the run without "
                                    f"{setting('existing', 'resume')}")
        if state == "absent":
            return None, None
        if state == "foreign":
            raise RunExistsError(f"{path} exists but is not a run folder (no {CONFIG}); choose another "
                                 f"{setting('name')} or {setting('out_dir')} (nothing was changed)")
        if state == "unstarted":
            print(f"{path} holds a run that stopped before its first checkpoint: starting it again", flush=True)
            clear_unstarted(path)
            return None, None
        if self.existing == "error":
            raise RunExistsError(f"run folder {path} already exists ({state}); pass {setting('existing', 'resume')} "
                                 f"to continue it (a finished run is read back), or choose another {setting('name')} "
                                 f"(nothing was overwritten)")
        saved = load_config(path)
        conflicts = resume_conflicts(saved, self.config)
        if conflicts:
            details = ", ".join(f"{k}: saved {getattr(saved, k)!r} vs requested {getattr(self.config, k)!r}"
                                for k in conflicts)
            raise ValueError(f"{path} exists with other settings ({details}); use the saved settings, or start a "
                             f"new run under another {setting('name')} (nothing was changed)")
        if state == "finished":
            print(f"{path} is already finished: reading it back instead of training again", flush=True)
            return read_result(path), None
        print(f"{path} was interrupted: resuming it", flush=True)
        return None, checkpoints.load_checkpoint(path / STATE)

    def start(self, environment: Callable[[], dict[str, Any]], data_checksum: str) -> None:
        """Once data and model are ready: a resumed run, checked to go on with the data it was trained on, gets
        its metrics.csv rewound to its checkpoint (it may have run ahead); a new run gets its folder, with
        config.json, env.json (``environment()``) and an empty metrics.csv (a failed start leaves none)."""
        if self.checkpoint is not None:
            self.dist.on_main(lambda: self._resume(data_checksum))
        else:
            self.dist.on_main(lambda: create(self.config, environment()))

    def _resume(self, data_checksum: str) -> None:
        env = read_json(self.path / ENV) if (self.path / ENV).exists() else {}
        if env.get("data_checksum", data_checksum) != data_checksum:
            raise ValueError(f"{self.path} was trained on other data than this (data checksum {data_checksum[:12]}, "
                             f"the run's {env['data_checksum'][:12]}); point {setting('data_dir')} or {ENV_VAR} at "
                             f"the data it was trained on ({env.get('data_source')}) (nothing was changed)")
        write_metrics(self.path / METRICS, self.checkpoint["metrics"])

    def save_epoch(self, rows: list[dict], state: Callable[[], dict[str, Any]]) -> None:
        """After each epoch: the checkpoint ``state()`` when one is due, then metrics.csv. The checkpoint goes
        first: when it cannot be written (a full disk), nothing of the run changes."""
        epoch, c = len(rows), self.config
        due = epoch == c.epochs or (c.checkpoint_every and epoch % c.checkpoint_every == 0)

        def save() -> None:
            if due:
                checkpoints.save(state(), self.path / STATE)
            write_metrics(self.path / METRICS, rows)
        self.dist.on_main(save)

    def finish(self, summarize: Callable[[], dict[str, Any]], model: torch.nn.Module) -> dict[str, Any]:
        """The run's summary.json (and model_fp16.pt with save_model), from ``summarize()`` run on rank 0."""
        def write() -> dict[str, Any]:
            summary = summarize()
            if self.config.save_model:
                checkpoints.save_fp16(model, self.path / MODEL_FP16)
            write_json(self.path / SUMMARY, summary)
            return summary
        return self.dist.on_main(write)

    def checkpoint_epoch(self) -> int | None:
        """The epoch the run's checkpoint was saved at; None before the first one (or when it is unreadable)."""
        return checkpoint_epoch(self.path)


def status(run_dir: Path) -> str:
    """absent (no folder or an empty one), foreign (files but no config.json), unstarted (config but
    no checkpoint: it stopped before its first one), interrupted (a checkpoint, no summary), finished."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "absent"
    if not (run_dir / CONFIG).exists():
        return "foreign"
    if (run_dir / SUMMARY).exists():
        return "finished"
    return "interrupted" if (run_dir / STATE).exists() else "unstarted"


def create(config: TrainConfig, env: dict[str, Any]) -> None:
    run_dir = config.run_dir
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        saved = config.to_dict()
        # Where the folders lie is machine-specific: the run folder is where it is, and the data is named by its
        # checksum in env.json (a run read back elsewhere finds it by --data-dir, CIFAR10_DIR or the cache).
        del saved["out_dir"]
        saved["data_dir"] = SAMPLE if config.data_dir == SAMPLE else None
        write_json(run_dir / CONFIG, saved)
        write_json(run_dir / ENV, env)
        write_metrics(run_dir / METRICS, [])
    except BaseException:
        clear_unstarted(run_dir)
        if created:
            run_dir.rmdir()
        raise


def clear_unstarted(run_dir: Path) -> None:
    """Remove the files of a run that never reached its first checkpoint (nothing else)."""
    for name in (CONFIG, ENV, METRICS, STATE + ".tmp"):
        (Path(run_dir) / name).unlink(missing_ok=True)


def checkpoint_epoch(run_dir: Path) -> int | None:
    path = Path(run_dir) / STATE
    if not path.exists():
        return None
    try:
        return checkpoints.load_checkpoint(path)["epoch"]
    except CheckpointError:
        return None


# --------------------------------------------------------------------------- reading a run back


def load_config(run_dir: Path) -> TrainConfig:
    """The run's config, placed where the folder is now."""
    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir / CONFIG)
    config.out_dir, config.name = str(run_dir.parent), run_dir.name
    return config


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv with all rows so far (small: one row per epoch); atomic like the rest."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # 6 significant digits; csv writes None (a missing value) as ""
        writer.writerow({k: f"{v:.6g}" if isinstance(v := row.get(k), float) else v for k in METRIC_COLUMNS})
    write_bytes(path, buf.getvalue().encode())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / METRICS, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


def read_result(run_dir: Path, with_model: bool = True) -> RunResult:
    """A finished run read back; its model only when it was kept."""
    run_dir = Path(run_dir)
    has_weights = (run_dir / MODEL_FP16).exists() or (run_dir / STATE).exists()
    model = load_run_model(run_dir, device="cpu")[0] if with_model and has_weights else None
    return RunResult(run_dir, load_config(run_dir), read_metrics(run_dir), read_json(run_dir / SUMMARY), model)


def load_model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's evaluated weights as float32: model_fp16.pt if present, else the resume checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / MODEL_FP16).exists():
        source = run_dir / MODEL_FP16
        state = checkpoints.safe_torch_load(source)
    elif (run_dir / STATE).exists():
        source = run_dir / STATE
        checkpoint = checkpoints.load_checkpoint(source)
        state = checkpoint["ema"]["module"] if checkpoint.get("ema") else checkpoint["model"]
    else:
        raise FileNotFoundError(f"{run_dir} holds neither {MODEL_FP16} nor {STATE}; train with "
                                f"{setting('save_model', True)} (or keep the resume checkpoint) to evaluate later")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} does not hold a model's weights; re-train with {setting('save_model', True)}")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_run_model(run_dir: str | Path, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig]:
    """The run's model (fp16 weights as float32) in eval mode, and its config."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG}); pass a folder such as "
                                f"results/runs/<name>")
    config = load_config(run_dir)
    model = WideResNet(config.depth, config.width, NUM_CLASSES, config.dropout)
    try:
        model.load_state_dict(load_model_weights(run_dir))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CheckpointError(f"the weights in {run_dir} do not fit WRN-{config.depth}-{config.width:g} "
                              f"({lines[-1][:120]}); the files of this run folder do not belong together") from None
    return model.to(resolve_device(device)).eval(), config
