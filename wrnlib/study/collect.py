"""Read a results folder into tidy pandas DataFrames: its runs, their epochs, its ablations and benchmarks.

Layout read (any part may be missing, empty or half-written; nothing here raises for that):

* ``<root>/runs/<name>/``: run folders written by :func:`wrnlib.fit` (config.json, env.json,
  metrics.csv, summary.json);
* ``<root>/ablations/<ablation>/``: ``epochs.csv`` (one row per run and epoch), ``final.csv``
  (one row per run) and the ablation's own run folders under ``runs/``;
* ``<root>/width_sweep/runs/``, ``<root>/time_sweep/runs/``: notebook 05's sweeps of depth and width at equal
  epochs and at equal training time;
* ``<root>/benchmarks/<name>/bench.json``: written by ``python -m wrnlib bench --out``.

Folders that cannot be read are skipped and described in :attr:`Results.problems`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .. import runfolder as runs_io

RUN_COLUMNS = (
    "name", "group", "status", "depth", "width", "epochs", "epochs_done", "schedule", "batch_size", "lr",
    "seed", "optimizer", "policy", "cutout", "mix", "label_smoothing", "ema_decay", "budget_minutes", "params",
    "forward_flops", "train_pflop", "test_acc", "test_acc_tta", "best_val_acc", "final_val_acc", "last_test_acc",
    "train_time_s",
    "mean_images_per_s", "test_images", "device", "device_type", "torch", "git_commit", "data_source", "run_dir",
)
METRIC_COLUMNS = ("name", "group") + runs_io.METRIC_COLUMNS
ABLATION_EPOCH_COLUMNS = ("ablation", "schedule", "seed", "run") + runs_io.METRIC_COLUMNS
ABLATION_FINAL_COLUMNS = ("ablation", "schedule", "seed", "run", "epochs", "params", "test_acc", "test_acc_tta",
                          "best_val_acc", "final_val_acc", "train_time_s", "mean_images_per_s", "test_images")
BENCH_COLUMNS = ("name", "mode", "device", "depth", "width", "batch_size", "params", "forward_gflops_per_image",
                 "train_images_per_s", "epoch_time_s", "train_tflops", "fraction_of_peak",
                 "inference_images_per_s", "compile_time_s", "step_ms", "peak_memory_gib", "torch", "git_commit")
TRUST = "trust"  # <results>/trust/<run>/: notebook 06's calibration and corruption assessments
WIDTH_SWEEP = "width_sweep"  # <results>/width_sweep/runs/: notebook 05's sweep at equal epochs (its own group)
TIME_SWEEP = "time_sweep"  # <results>/time_sweep/runs/: notebook 05's sweep at equal training time

EPOCHS_CSV, FINAL_CSV, BY_SCHEDULE_CSV = "epochs.csv", "final.csv", "by_schedule.csv"
_CONFIG_KEYS = ("depth", "width", "epochs", "schedule", "batch_size", "lr", "seed", "optimizer", "policy", "cutout",
                "mix", "label_smoothing", "ema_decay", "budget_minutes")
_SUMMARY_KEYS = ("params", "forward_flops", "train_pflop", "test_acc", "test_acc_tta", "best_val_acc",
                 "final_val_acc", "train_time_s", "mean_images_per_s", "test_images")


def empty_frame(columns: Iterable[str]) -> pd.DataFrame:
    """A table with these columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def frame(rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    """The rows as a table with ``columns`` first (a missing one empty), then any others they hold."""
    columns = list(columns)
    if not rows:
        return empty_frame(columns)
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df:
            df[c] = None
    extra = [c for c in df.columns if c not in columns]
    return df[columns + extra].infer_objects()


def finished_in(runs: pd.DataFrame, group: str) -> pd.DataFrame:
    """The finished runs of one group (a sweep's, an ablation's); an empty frame as it is."""
    return runs if runs.empty else runs[(runs["group"] == group) & (runs["status"] == "finished")]


@dataclass
class Results:
    """Everything found under one results folder."""
    root: Path
    runs: pd.DataFrame  # one row per run folder (RUN_COLUMNS); group "runs", "ablation:<name>" or "width_sweep"
    metrics: pd.DataFrame  # per-epoch rows of every run (METRIC_COLUMNS)
    ablation_epochs: pd.DataFrame  # ABLATION_EPOCH_COLUMNS
    ablation_final: pd.DataFrame  # ABLATION_FINAL_COLUMNS
    benchmarks: pd.DataFrame  # BENCH_COLUMNS, one row per (bench folder, mode)
    problems: list[str] = field(default_factory=list)

    @property
    def finished_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "finished"]

    @property
    def main_runs(self) -> pd.DataFrame:
        """Runs of results/runs (not the ablations' own runs)."""
        return self.runs[self.runs["group"] == "runs"]

    def describe(self) -> str:
        lines = [f"results folder: {self.root}" + ("" if self.root.is_dir() else " (does not exist yet)")]
        if self.runs.empty:
            lines.append("no runs yet")
        else:
            counts = self.runs.groupby(["group", "status"]).size()
            lines.append("runs: " + ", ".join(f"{n} {status} in {group}" for (group, status), n in counts.items()))
        if self.ablation_final.empty:
            lines.append("no ablations yet")
        else:
            for name, part in self.ablation_final.groupby("ablation"):
                schedules = ", ".join(map(str, part["schedule"].unique()))
                lines.append(f"ablation {name}: {len(part)} runs, schedules {schedules}")
        lines.append("no benchmarks yet" if self.benchmarks.empty else
                     f"benchmarks: {self.benchmarks['name'].nunique()} folder(s), {len(self.benchmarks)} mode rows")
        lines += [f"skipped: {p}" for p in self.problems]
        return "\n".join(lines)


def collect(root: str | Path = "results") -> Results:
    """Read runs, ablations and benchmarks under ``root``; a missing or empty root gives empty tables."""
    root = Path(root)
    problems: list[str] = []
    run_dirs = [("runs", d) for d in subfolders(root / "runs")]
    for ablation in subfolders(root / "ablations"):
        run_dirs += [(f"ablation:{ablation.name}", d) for d in subfolders(ablation / "runs")]
    run_dirs += [(sweep, d) for sweep in (WIDTH_SWEEP, TIME_SWEEP) for d in subfolders(root / sweep / "runs")]
    run_rows, metric_rows = [], []
    for group, run_dir in run_dirs:
        row, metrics = read_run(run_dir, group, problems)
        if row is not None:
            run_rows.append(row)
            metric_rows += metrics
    epochs, final = load_ablations(root / "ablations", problems)
    return Results(root=root, runs=frame(run_rows, RUN_COLUMNS), metrics=frame(metric_rows, METRIC_COLUMNS),
                   ablation_epochs=epochs, ablation_final=final,
                   benchmarks=load_benchmarks(root / "benchmarks", problems), problems=problems)


def subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` by name, hidden ones left out (.ipynb_checkpoints); [] when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
        return None


def read_run(run_dir: Path, group: str = "runs",
             problems: list[str] | None = None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """One run folder as (row, per-epoch rows); (None, []) when it holds no run at all.

    status: "finished" (summary.json written), "partial" (some epochs in metrics.csv, e.g. an
    interrupted run) or "started" (config only).
    """
    problems = problems if problems is not None else []
    config = _read_json(run_dir / runs_io.CONFIG, problems)
    summary = _read_json(run_dir / runs_io.SUMMARY, problems)
    env = _read_json(run_dir / runs_io.ENV, problems) or {}
    metrics: list[dict[str, Any]] = []
    if (run_dir / runs_io.METRICS).exists():
        try:
            metrics = runs_io.read_metrics(run_dir)
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{run_dir / runs_io.METRICS}: unreadable ({type(exc).__name__}: {exc})")
    if config is None and summary is None and not metrics:
        problems.append(f"{run_dir}: not a run folder (no {runs_io.CONFIG}, {runs_io.SUMMARY} or {runs_io.METRICS})")
        return None, []
    config = config or {}
    summary = summary or {}
    row: dict[str, Any] = {"name": run_dir.name, "group": group, "run_dir": str(run_dir),
                           "status": "finished" if summary else ("partial" if metrics else "started"),
                           "epochs_done": len(metrics)}
    row.update({k: config.get(k) for k in _CONFIG_KEYS})
    row.update({k: summary.get(k) for k in _SUMMARY_KEYS})
    row["last_test_acc"] = metrics[-1].get("test_acc") if metrics else None
    row.update({"device": env.get("device"), "device_type": env.get("device_type"), "torch": env.get("torch"),
                "git_commit": env.get("git_commit"), "data_source": env.get("data_source")})
    epoch_rows = [{"name": run_dir.name, "group": group, **m} for m in metrics]
    return row, epoch_rows


def load_ablations(folder: str | Path, problems: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch, per-run) tables of every ``<folder>/<ablation>/{epochs,final}.csv``."""
    problems = problems if problems is not None else []
    epochs, finals = [], []
    for ablation in subfolders(Path(folder)):
        for name, sink in ((EPOCHS_CSV, epochs), (FINAL_CSV, finals)):
            path = ablation / name
            if not path.exists():
                if name == FINAL_CSV:
                    problems.append(f"{ablation}: no {FINAL_CSV} yet (ablation unfinished?)")
                continue
            try:
                df = pd.read_csv(path)
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
                continue
            if "ablation" not in df:
                df.insert(0, "ablation", ablation.name)
            sink.append(df)
    epochs_df = pd.concat(epochs, ignore_index=True) if epochs else empty_frame(ABLATION_EPOCH_COLUMNS)
    final_df = pd.concat(finals, ignore_index=True) if finals else empty_frame(ABLATION_FINAL_COLUMNS)
    return epochs_df, final_df


def load_benchmarks(folder: str | Path, problems: list[str] | None = None) -> pd.DataFrame:
    """One row per mode of every ``<folder>/<name>/bench.json``."""
    problems = problems if problems is not None else []
    rows = []
    for bench in subfolders(Path(folder)):
        data = _read_json(bench / "bench.json", problems)
        if data is None:
            if not any(bench.glob("*.json")):  # other measurements (e.g. a step ablation's ablation.json) are fine
                problems.append(f"{bench}: no bench.json")
            continue
        env = data.get("env") or {}
        for result in data.get("results") or []:
            rows.append({"name": bench.name, **result, "torch": env.get("torch"), "git_commit": env.get("git_commit")})
    return frame(rows, BENCH_COLUMNS)
