"""Run folders: what they hold, writing them safely, and reading them (and their models) back.

A run folder ``<out_dir>/<name>/`` holds config.json, env.json, metrics.csv, summary.json, the
resume checkpoint state.pt and, on request, model_fp16.pt. Writes are atomic (a crash leaves the
old file or the new one), and loading a checkpoint never runs code from it (``weights_only``).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import engine
from .config import TrainConfig

CONFIG, ENV, METRICS, SUMMARY = "config.json", "env.json", "metrics.csv", "summary.json"
STATE, MODEL_FP16, EVALUATION = "state.pt", "model_fp16.pt", "evaluation.json"

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                  "test_acc", "epoch_time_s", "train_time_s", "eval_time_s", "images_per_s")


@dataclass
class RunResult:
    """A run as fit returns it, or as it is read back from its folder."""
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    model: torch.nn.Module | None  # the evaluated model (the EMA when enabled), on the CPU, eval mode


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, truncated, corrupt or not a plain tensor file."""


# --------------------------------------------------------------------------- environment


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's marketing name where the OS tells it (for the record only), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def cpu_capability() -> dict[str, Any]:
    """What torch's CPU kernels can use here: its vector ISA and the native bf16 units (see engine)."""
    return {"model": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(), **engine.cpu_bf16_support(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def git_commit(path: Path = Path(__file__).resolve().parent) -> str:
    """The commit the code came from, with '-dirty' when tracked files differ from it.

    Where the code travels without its .git folder (a copy sent to a GPU machine), the
    WRNLIB_GIT_COMMIT environment variable names the commit instead.
    """
    if os.environ.get("WRNLIB_GIT_COMMIT"):
        return os.environ["WRNLIB_GIT_COMMIT"]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10)
    try:
        commit = git("rev-parse", "HEAD").stdout.strip()
        if not commit:
            return "unknown"
        # `diff-index` against HEAD sees staged and unstaged edits alike (exit 1 = differences);
        # `update-index --refresh` first, so a file merely touched is not counted as changed. A new,
        # not yet committed file inside the package is code that ran, so it makes the tree dirty too.
        git("update-index", "-q", "--refresh")
        edited = git("diff-index", "--quiet", "HEAD", "--").returncode != 0
        added = git("ls-files", "--others", "--exclude-standard", "--", ".").stdout.strip()
        return commit + ("-dirty" if edited or added else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device, data_checksum: str, data_source: str) -> dict[str, Any]:
    import numpy
    import torchvision

    return {
        "device": device_name(device),
        "device_type": device.type,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "platform": platform.platform(),
        "cpu": cpu_capability(),
        "git_commit": git_commit(),
        "data_checksum": data_checksum,
        "data_source": data_source,
    }


# --------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def _atomic(path: Path, write) -> None:
    """Write through ``<path>.tmp`` then rename: a crash or a full disk leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # torch.save reports a short write (a full disk) as a RuntimeError from its zip writer
        if isinstance(exc, (OSError, RuntimeError)):
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise OSError(getattr(exc, "errno", None), f"could not write {path} ({reason}); {kept}; free disk "
                                                       f"space or check the folder's permissions") from None
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv with all rows so far (small: one row per epoch); atomic like the rest."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value  # csv writes None (a missing value) as ""


# --------------------------------------------------------------------------- one writer per folder


class FolderLockedError(OSError):
    """Another live process holds the folder's lock (it is training that run, or running that study)."""


def lock_path(folder: str | Path) -> Path:
    """The lock file of a folder: in the machine's temporary folder, named after the folder's absolute
    path, so the folder itself (and the one around it) stays exactly as the run leaves it."""
    key = hashlib.sha256(os.fsencode(Path(folder).resolve())).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / "wrnlib-locks" / f"{key}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, doing: str = "training it"):
    """Hold an exclusive OS lock (flock) on ``folder`` for the duration; refuse at once when another
    process holds it. The kernel releases the lock when its process ends, however it ends, so a
    killed run never leaves a stale lock. The lock file itself stays (empty, in the temporary folder):
    removing it while another process may be opening it would let two processes each lock a different
    file. Locks are per machine (a shared folder used from two machines is not covered)."""
    folder = Path(folder)
    if folder.parent.exists() and not folder.parent.is_dir():
        raise NotADirectoryError(f"{folder.parent} is a file, not a folder; point the output folder (--out-dir) "
                                 f"somewhere else")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; choose another --name or --out-dir")
    path = lock_path(folder)
    if not path.parent.is_dir():
        path.parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(path.parent, 0o1777)  # like /tmp: every user may lock, none may remove another's lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderLockedError(f"{folder} is in use: another process is {doing} (it holds the lock {path}); "
                                f"wait for it to finish, or choose another name") from None
    try:
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds ``folder``'s lock right now (this one included)."""
    path = lock_path(folder)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock taken to test it
    return False


# --------------------------------------------------------------------------- the folder's life


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


def start_run_folder(config: TrainConfig, env: dict[str, Any]) -> None:
    """Create the folder with config.json (without out_dir: the folder's place says it), env.json and
    an empty metrics.csv. A failure part-way removes what it created."""
    run_dir = config.run_dir
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        saved = config.to_dict()
        del saved["out_dir"]  # machine-specific; where the run folder lies is where the run is
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


def load_config(run_dir: Path) -> TrainConfig:
    """The run's config, placed where the folder is now."""
    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir / CONFIG)
    config.out_dir, config.name = str(run_dir.parent), run_dir.name
    return config


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


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


# --------------------------------------------------------------------------- checkpoints and models


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


def save_checkpoint(state: dict[str, Any], run_dir: Path) -> None:
    atomic_torch_save(state, Path(run_dir) / STATE)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    state = safe_torch_load(Path(run_dir) / STATE)
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "metrics"} <= set(state):
        raise CheckpointError(f"{Path(run_dir) / STATE} is not a wrnlib resume checkpoint; delete it to start "
                              f"the run again")
    return state


def checkpoint_epoch(run_dir: Path) -> str:
    """'end of epoch N' for the run's checkpoint, or 'none yet'."""
    path = Path(run_dir) / STATE
    if not path.exists():
        return "none yet"
    try:
        return f"end of epoch {load_checkpoint(run_dir)['epoch']}"
    except CheckpointError:
        return "unreadable"


def save_fp16_model(model: torch.nn.Module, path: Path) -> None:
    """Float weights rounded to fp16 (half the size of fp32; 9 MB for WRN-28-3.5), buffers kept."""
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)


def load_model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's evaluated weights as float32: model_fp16.pt if present, else the resume checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / MODEL_FP16).exists():
        source = run_dir / MODEL_FP16
        state = safe_torch_load(source)
    elif (run_dir / STATE).exists():
        source = run_dir / STATE
        checkpoint = load_checkpoint(run_dir)
        state = checkpoint["ema"]["module"] if checkpoint.get("ema") else checkpoint["model"]
    else:
        raise FileNotFoundError(f"{run_dir} holds neither {MODEL_FP16} nor {STATE}; train with "
                                f"--save-model (or keep the resume checkpoint) to evaluate later")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} does not hold a model's weights; re-train with --save-model")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_run_model(run_dir: str | Path, device: str = "auto"):
    """The run's model (fp16 weights as float32) in eval mode, and its config."""
    from .data import NUM_CLASSES
    from .engine import resolve_device
    from .model import WideResNet

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


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto",
                 batch_size: int = 500, progress: bool = False, test_limit: int | None = None,
                 tta: bool = True, on_start: Callable[[TrainConfig, int], None] | None = None) -> dict[str, Any]:
    """Test accuracy (and flip-TTA unless ``tta`` is False) in float32, next to what the run recorded.

    Reads only the test file. ``test_limit``: a fixed stratified subset of that many test images
    (None: the images the run was scored on). When the images are the run's own, the report says
    whether it agrees with the recorded accuracy (``agrees``), and ``disagreement`` says why not.
    ``on_start(config, images)`` is called once the model and the data are loaded, before evaluating.
    """
    from .data import load_cifar10, test_subset
    from .engine import evaluate

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1; got {batch_size!r}")
    if test_limit is not None and (isinstance(test_limit, bool) or not isinstance(test_limit, int) or test_limit < 0):
        raise ValueError(f"--test-limit must be an integer >= 0 (0: all test images); got {test_limit!r}")
    run_dir = Path(run_dir)
    model, config = load_run_model(run_dir, device)
    if next(model.parameters()).device.type == "cpu":
        engine.keep_freed_memory()
    data = load_cifar10(data_dir if data_dir is not None else config.data_dir, test_only=True)
    limit = config.test_limit if test_limit is None else test_limit
    images, labels = test_subset(data, limit)
    if on_start is not None:
        on_start(config, len(labels))
    plain = evaluate(model, images, labels, batch_size=batch_size, progress=progress and "test")
    flipped = (evaluate(model, images, labels, batch_size=batch_size, tta=True, progress=progress and "flip-TTA")
               if tta else None)
    report = {"run": str(run_dir), "device": device_name(next(model.parameters()).device),
              "torch": torch.__version__, "git_commit": git_commit(), "test_images": len(labels),
              "test_data_checksum": data.test_checksum,
              "test_acc": plain["acc"], "test_acc_tta": flipped["acc"] if flipped else None, "test_loss": plain["loss"]}
    if (run_dir / SUMMARY).exists():
        summary = read_json(run_dir / SUMMARY)
        report["recorded_test_acc"] = summary.get("test_acc")
        report["recorded_test_acc_tta"] = summary.get("test_acc_tta")
        if len(labels) == summary.get("test_images", len(labels)) and limit == config.test_limit:
            report.update(_agreement(run_dir, report, summary))
    return report


def _agreement(run_dir: Path, report: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Whether a recomputed accuracy matches the recorded one within what rounding explains.

    The same weights evaluated in fp32 on another device (or another torch) can differ in a few
    borderline images; more than max(2 images, 0.1 %) means these weights did not make that
    number, or the test images differ.
    """
    n = report["test_images"]
    tolerance = max(2, round(0.001 * n))
    off = {key: round(abs(report[key] - summary[key]) * n) for key in ("test_acc", "test_acc_tta")
           if report.get(key) is not None and summary.get(key) is not None}
    bad = {key: images for key, images in off.items() if images > tolerance}
    if not bad:
        return {"agrees": True}
    env = read_json(run_dir / ENV) if (run_dir / ENV).exists() else {}
    recorded_data = env.get("test_data_checksum")
    if recorded_data and recorded_data != report["test_data_checksum"]:
        cause = "the test images differ from the run's (their checksum is not the one in env.json)"
    else:
        cause = (f"the weights in {MODEL_FP16} do not belong to the run that recorded it"
                 + ("" if recorded_data else ", or the test images differ (this run's env.json has no test checksum)"))
    key = next(iter(bad))
    return {"agrees": False, "disagreement": (
        f"{run_dir}: the recomputed {key.replace('_', ' ')} {100 * report[key]:.2f} % differs from the recorded "
        f"{100 * summary[key]:.2f} % by {bad[key]} of {n} images, more than rounding explains ({tolerance}): {cause}")}


def record_evaluation(run_dir: str | Path, report: dict[str, Any]) -> None:
    """Keep an evaluation in the run folder (evaluation.json), and make summary.json carry the numbers
    the checkpoint reproduces; a differing number of the training device stays, labelled as such."""
    run_dir = Path(run_dir)
    if report.get("agrees") is False:
        raise ValueError(f"{report['disagreement']}. Nothing was recorded.")
    if "agrees" not in report or report.get("test_acc_tta") is None:
        raise ValueError("--record keeps a full evaluation of the run's own test images with flip-TTA; drop "
                         "--test-limit and --no-tta to record (nothing was recorded)")
    write_json(run_dir / EVALUATION, report)
    summary = read_json(run_dir / SUMMARY)
    for key in ("test_acc", "test_acc_tta"):
        if summary.get(key) is not None and summary[key] != report[key]:
            summary.setdefault(f"{key}_on_training_device", summary[key])
            summary[key] = report[key]
    summary["reproduced_by"] = {"file": EVALUATION, "device": report["device"]}
    write_json(run_dir / SUMMARY, summary)
