"""Run folders: environment capture, atomic writes, checkpoints and reading runs back."""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

CONFIG, ENV, METRICS, SUMMARY = "config.json", "env.json", "metrics.csv", "summary.json"
STATE, MODEL_FP16 = "state.pt", "model_fp16.pt"

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                  "test_acc", "epoch_time_s", "train_time_s", "images_per_s")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def git_commit(path: Path = Path(__file__).resolve().parent) -> str:
    """The commit the code came from, with '-dirty' when tracked files differ from it.

    Where the code travels without its .git folder (a copy sent to a GPU machine), the
    WRNLIB_GIT_COMMIT environment variable names the commit instead.
    """
    if os.environ.get("WRNLIB_GIT_COMMIT"):
        return os.environ["WRNLIB_GIT_COMMIT"]
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return "unknown"
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device, data_checksum: str, data_source: str) -> dict[str, Any]:
    import numpy
    import torchvision

    env = {
        "device": device_name(device),
        "device_type": device.type,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "data_checksum": data_checksum,
        "data_source": data_source,
    }
    return env


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a crash leaves either the old file or the new one, never half of one


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv with all rows so far (small: one row per epoch); atomic like the rest."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / METRICS, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_fp16_model(model: torch.nn.Module, path: Path) -> None:
    """Float weights rounded to fp16 (half the size of fp32; 9 MB for WRN-28-3.5), buffers kept."""
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)


def load_model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's evaluated weights as float32: model_fp16.pt if present, else the resume checkpoint."""
    fp16 = run_dir / MODEL_FP16
    if fp16.exists():
        state = torch.load(fp16, map_location="cpu", weights_only=True)
    elif (run_dir / STATE).exists():
        checkpoint = torch.load(run_dir / STATE, map_location="cpu", weights_only=False)
        state = checkpoint["ema"]["module"] if checkpoint.get("ema") else checkpoint["model"]
    else:
        raise FileNotFoundError(f"{run_dir} holds neither {MODEL_FP16} nor {STATE}; train with "
                                f"--save-model (or keep the resume checkpoint) to evaluate later")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
