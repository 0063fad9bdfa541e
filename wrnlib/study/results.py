"""Read everything under ``results/`` into tidy pandas DataFrames, and the small tables the notebooks show.

Layout read (any part may be missing, empty or half-written; nothing here raises for that):

* ``<root>/runs/<name>/``: run folders written by :func:`wrnlib.fit` (config.json, env.json,
  metrics.csv, summary.json);
* ``<root>/ablations/<ablation>/``: ``epochs.csv`` (one row per run and epoch), ``final.csv``
  (one row per run) and the ablation's own run folders under ``runs/``;
* ``<root>/benchmarks/<name>/bench.json``: written by ``python -m wrnlib bench --out``.

Folders that cannot be read are skipped and described in :attr:`Results.problems`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from .. import runfolder as runs_io

RUN_COLUMNS = (
    "name", "group", "status", "depth", "width", "epochs", "epochs_done", "schedule", "batch_size", "lr",
    "seed", "optimizer", "policy", "cutout", "mix", "label_smoothing", "ema_decay", "params", "forward_flops",
    "test_acc", "test_acc_tta", "best_val_acc", "final_val_acc", "last_test_acc", "train_time_s",
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
WIDTH_SWEEP = "width_sweep"  # <results>/width_sweep/runs/: the width sweep of notebook 05 (its own group)
SCHEDULE_TABLE_COLUMNS = ("ablation", "schedule", "runs", "seeds", "test_acc_mean", "test_acc_std", "test_acc_min",
                          "test_acc_max", "test_acc_tta_mean", "best_val_acc_mean", "train_time_s_mean")

EPOCHS_CSV, FINAL_CSV, BY_SCHEDULE_CSV = "epochs.csv", "final.csv", "by_schedule.csv"
_CONFIG_KEYS = ("depth", "width", "epochs", "schedule", "batch_size", "lr", "seed", "optimizer", "policy", "cutout",
                "mix", "label_smoothing", "ema_decay")
_SUMMARY_KEYS = ("params", "forward_flops", "test_acc", "test_acc_tta", "best_val_acc", "final_val_acc",
                 "train_time_s", "mean_images_per_s", "test_images")


def empty_frame(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def _frame(rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    columns = list(columns)
    if not rows:
        return empty_frame(columns)
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df:
            df[c] = None
    extra = [c for c in df.columns if c not in columns]
    return df[columns + extra].infer_objects()


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
                lines.append(f"ablation {name}: {len(part)} runs, schedules {', '.join(map(str, part['schedule'].unique()))}")
        lines.append("no benchmarks yet" if self.benchmarks.empty else
                     f"benchmarks: {self.benchmarks['name'].nunique()} folder(s), {len(self.benchmarks)} mode rows")
        lines += [f"skipped: {p}" for p in self.problems]
        return "\n".join(lines)


def collect(root: str | Path = "results") -> Results:
    """Read runs, ablations and benchmarks under ``root``; a missing or empty root gives empty tables."""
    root = Path(root)
    problems: list[str] = []
    run_dirs = [("runs", d) for d in _subdirs(root / "runs")]
    for ablation in _subdirs(root / "ablations"):
        run_dirs += [(f"ablation:{ablation.name}", d) for d in _subdirs(ablation / "runs")]
    run_dirs += [(WIDTH_SWEEP, d) for d in _subdirs(root / WIDTH_SWEEP / "runs")]
    run_rows, metric_rows = [], []
    for group, run_dir in run_dirs:
        row, metrics = read_run(run_dir, group, problems)
        if row is not None:
            run_rows.append(row)
            metric_rows += metrics
    epochs, final = load_ablations(root / "ablations", problems)
    return Results(root=root, runs=_frame(run_rows, RUN_COLUMNS), metrics=_frame(metric_rows, METRIC_COLUMNS),
                   ablation_epochs=epochs, ablation_final=final,
                   benchmarks=load_benchmarks(root / "benchmarks", problems), problems=problems)


def _subdirs(folder: Path) -> list[Path]:
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
    for ablation in _subdirs(Path(folder)):
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
    for bench in _subdirs(Path(folder)):
        data = _read_json(bench / "bench.json", problems)
        if data is None:
            if not any(bench.glob("*.json")):  # other measurements (e.g. a step ablation's ablation.json) are fine
                problems.append(f"{bench}: no bench.json")
            continue
        env = data.get("env") or {}
        for result in data.get("results") or []:
            rows.append({"name": bench.name, **result, "torch": env.get("torch"), "git_commit": env.get("git_commit")})
    return _frame(rows, BENCH_COLUMNS)


# --------------------------------------------------------------------------- ablations


def ablation_tables(run_results: Iterable[Any], ablation: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch, per-run) tidy tables from the ablation's :class:`wrnlib.RunResult` objects."""
    epoch_rows, final_rows = [], []
    for r in run_results:
        c, s = r.config, r.summary
        key = {"ablation": ablation, "schedule": c.schedule, "seed": c.seed, "run": c.name}
        epoch_rows += [{**key, **{k: m.get(k) for k in runs_io.METRIC_COLUMNS}} for m in r.metrics]
        final_rows.append({**key, "epochs": s.get("epochs"), **{k: s.get(k) for k in ABLATION_FINAL_COLUMNS[5:]}})
    return _frame(epoch_rows, ABLATION_EPOCH_COLUMNS), _frame(final_rows, ABLATION_FINAL_COLUMNS)


def schedule_table(final: pd.DataFrame) -> pd.DataFrame:
    """Per (ablation, schedule): runs, seeds and test accuracy mean / std / min / max (std NaN for one seed)."""
    if final.empty:
        return empty_frame(SCHEDULE_TABLE_COLUMNS)
    final = final.copy()
    final["ablation"] = final["ablation"] if "ablation" in final else ""
    rows = []
    order = {name: i for i, name in enumerate(dict.fromkeys(final["schedule"]))}
    for (ablation, schedule), part in final.groupby(["ablation", "schedule"], sort=False):
        acc = pd.to_numeric(part["test_acc"], errors="coerce")
        rows.append({"ablation": ablation, "schedule": schedule, "runs": len(part),
                     "seeds": ",".join(str(s) for s in sorted(part["seed"].unique())),
                     "test_acc_mean": acc.mean(), "test_acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
                     "test_acc_min": acc.min(), "test_acc_max": acc.max(),
                     "test_acc_tta_mean": pd.to_numeric(part.get("test_acc_tta"), errors="coerce").mean(),
                     "best_val_acc_mean": pd.to_numeric(part.get("best_val_acc"), errors="coerce").mean(),
                     "train_time_s_mean": pd.to_numeric(part.get("train_time_s"), errors="coerce").mean(),
                     "_order": order[schedule]})
    return pd.DataFrame(rows).sort_values(["ablation", "_order"]).drop(columns="_order").reset_index(drop=True)


def width_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of the width sweep (group ``width_sweep``), one row each, by depth, width and seed."""
    cols = ["model", "params (M)", "seed", "epochs", "batch", "schedule", "device", "final val acc", "test acc",
            "train min"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    part = runs[(runs["group"] == WIDTH_SWEEP) & (runs["status"] == "finished")]
    part = part.sort_values(["depth", "width", "seed"])
    return pd.DataFrame({
        "model": [f"WRN-{int(d)}-{float(k):g}" for d, k in zip(part["depth"], part["width"])],
        "params (M)": (part["params"].astype(float) / 1e6).round(3), "seed": part["seed"],
        "epochs": part["epochs"], "batch": part["batch_size"], "schedule": part["schedule"], "device": part["device"],
        "final val acc": (100 * part["final_val_acc"].astype(float)).round(2),
        "test acc": (100 * part["test_acc"].astype(float)).round(2),
        "train min": (part["train_time_s"].astype(float) / 60).round(1)}, columns=cols).reset_index(drop=True)


def validation_table(folders: Iterable[str | Path]) -> pd.DataFrame:
    """The finished runs in ``folders`` (each a folder of run folders) by final validation accuracy, best first:
    the evidence a recipe is chosen on. Test accuracy is left out on purpose: settings are never chosen on it."""
    cols = ["runs in", "run", "model", "epochs", "schedule", "label smoothing", "final val acc", "train min"]
    rows = []
    for folder in map(Path, folders):
        for run_dir in _subdirs(folder):
            row, _ = read_run(run_dir, folder.name)
            if row is None or row["status"] != "finished" or row.get("final_val_acc") is None:
                continue
            rows.append([str(folder), row["name"], f"WRN-{row['depth']}-{float(row['width']):g}", row["epochs"],
                         row["schedule"], row["label_smoothing"], round(100 * float(row["final_val_acc"]), 2),
                         round(float(row["train_time_s"]) / 60, 1)])
    table = pd.DataFrame(rows, columns=cols)
    return table.sort_values("final val acc", ascending=False).reset_index(drop=True)


def write_ablation(folder: str | Path, epochs: pd.DataFrame, final: pd.DataFrame) -> dict[str, Path]:
    """Write epochs.csv, final.csv and by_schedule.csv into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"epochs": folder / EPOCHS_CSV, "final": folder / FINAL_CSV, "by_schedule": folder / BY_SCHEDULE_CSV}
    epochs.to_csv(paths["epochs"], index=False, float_format="%.6g")
    final.to_csv(paths["final"], index=False, float_format="%.6g")
    schedule_table(final).to_csv(paths["by_schedule"], index=False, float_format="%.6g")
    return paths


# --------------------------------------------------------------------------- summary markdown


def _pct(value: Any, digits: int = 2) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def _points(value: Any) -> str:
    """A fraction in percentage points without the % sign (an ECE of 0.0789 is 7.89 points)."""
    return _pct(value).rstrip("%")


def _num(value: Any, fmt: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return format(v, fmt) if math.isfinite(v) else "–"  # nan: not recorded; inf: no measurement either


def _text(value: Any) -> str:
    """A text field of a run (its device, ...); a dash where the run did not record it (None, or NaN in a table)."""
    return value if isinstance(value, str) and value else "–"


def duration(seconds: Any, missing: str = "–") -> str:
    """Seconds as "42.0 s", "12.5 min" or "1.52 h", readable from a smoke run to a day-long one."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return missing
    if math.isnan(s):
        return missing
    if s < 60:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(results: Results, others: Mapping[str, Results] | None = None) -> str:
    """A short markdown report: runs, schedule ablations, width sweep and throughput (what exists of them), then
    each of ``others`` (label -> another study's results, e.g. the CPU study) as a section of its own."""
    out = ["# WRN on CIFAR-10: results summary", "",
           f"Generated by `notebooks/04_results.ipynb` from `{results.root}`. Every number below comes "
           "from a run folder, ablation table or benchmark file in that folder. Test accuracy is the final "
           "epoch's; train time is the training steps alone (the evaluation after every epoch is extra).", ""]
    out += _sections(results)
    for label, other in (others or {}).items():
        out += ["", f"## {label}", "", f"From `{other.root}`: another device and other budgets, so its numbers "
                "are not comparable run for run with the sections above.", ""]
        out += ["#" + line if line.startswith("## ") else line for line in _sections(other)]
    return "\n".join(out) + "\n"


def ablation_budgets(results: Results) -> list[str]:
    """What each ablation's runs were: "<ablation>: WRN-16-2, 10 epochs, batch 128, on <device>" (from its runs)."""
    lines = []
    for group, part in results.finished_runs.groupby("group"):
        if not str(group).startswith("ablation:"):
            continue

        def describe(col: str, fmt: str = "{}", part: pd.DataFrame = part) -> str:  # the distinct values
            return ", ".join(fmt.format(v) for v in dict.fromkeys(part[col].dropna()))

        models = ", ".join(dict.fromkeys(f"WRN-{d:.0f}-{w:g}" for d, w in zip(part["depth"], part["width"])
                                        if pd.notna(d) and pd.notna(w)))
        lines.append(f"{str(group)[len('ablation:'):]}: {models}, {describe('epochs', '{:.0f}')} epochs, batch "
                     f"{describe('batch_size', '{:.0f}')}, on {describe('device')}")
    return lines


def trust_section(folder: Path) -> list[str]:
    """Calibration and corruption accuracy per model (notebook 06's assessments in ``folder``), if any."""
    from .trust import load  # torchvision's transforms: only when there is something to read

    summary = load(folder)[0] if folder.is_dir() else pd.DataFrame()
    if summary.empty:
        return []
    rows = [[str(r["run"]), str(r["model"]), f"{int(r['epochs'])}", _pct(r["test_acc_plain"]),
             _points(r["ece_plain"]), _points(r.get("ece_plain_scaled")),
             _num(r.get("temperature"), ".2f"), _pct(r["clean_subset_acc"]), _pct(r["mean_corruption_acc"]),
             str(r["device"])] for _, r in summary.iterrows()]
    images = ", ".join(f"{n:,}" for n in summary["corruption_images"].unique())
    return ["", "## Calibration and robustness", "",
            f"Notebook 06: ECE (15 bins, test set, in points) before and after a temperature fitted on each run's "
            f"validation split; accuracy under locally generated CIFAR-10-C style corruptions (9 kinds x 5 "
            f"severities, {images} test images; not comparable with published CIFAR-10-C tables). Its test accuracy is "
            f"this assessment's own bf16 inference of the kept fp16 weights, which may differ from the run's recorded "
            f"accuracy by a few hundredths of a point.", "",
            _table(["run", "model", "epochs", "test acc (bf16 here)", "ECE", "ECE scaled", "temperature", "clean subset",
                    "mean corrupted", "device"], rows)]


def _sections(results: Results) -> list[str]:
    out = ["## Training runs", ""]
    runs = results.main_runs
    if runs.empty:
        out.append("No runs yet.")
    else:
        rows = []
        for _, r in runs.sort_values("name").iterrows():
            arch = f"WRN-{_num(r['depth'], '.0f')}-{_num(r['width'], 'g')}"
            rows.append([str(r["name"]), arch, _num(r["params"] / 1e6 if r["params"] is not None else None, ".2f") + " M",
                         f"{r['epochs_done']}/{_num(r['epochs'], '.0f')}", str(r["schedule"]), _pct(r["test_acc"]),
                         _pct(r["test_acc_tta"]), _pct(r["best_val_acc"]), _num(r["train_time_s"], ".0f") + " s",
                         _num(r["test_images"], ",.0f"), _text(r["device"]), str(r["status"])])
        out.append(_table(["run", "model", "params", "epochs", "schedule", "test acc", "flip-TTA", "best val",
                           "train time", "test images", "device", "status"], rows))
    out += ["", "## Learning-rate schedule ablation", ""]
    budgets = ablation_budgets(results)
    out += [f"- {line}" for line in budgets] + ([""] if budgets else [])
    table = schedule_table(results.ablation_final)
    out.append("No ablations yet." if table.empty else schedule_markdown(table))
    widths = width_table(results.runs)
    if not widths.empty:
        out += ["", "## Width sweep", "", _table(list(widths.columns), [[str(v) for v in row]
                                                                       for row in widths.itertuples(index=False)])]
    out += trust_section(results.root / TRUST)
    out += ["", "## Throughput", ""]
    bench = results.benchmarks
    if bench.empty:
        out.append("No benchmarks yet.")
    else:
        rows = [[str(r["name"]), str(r["device"]), str(r["mode"]), f"WRN-{_num(r['depth'], '.0f')}-{_num(r['width'], 'g')}",
                 _num(r["batch_size"], ".0f"), _num(r["train_images_per_s"], ",.0f"), _num(r["epoch_time_s"], ".2f"),
                 _num(r["train_tflops"], ".1f"), _num(r["inference_images_per_s"], ",.0f")]
                for _, r in bench.iterrows()]
        out.append(_table(["bench", "device", "mode", "model", "batch", "train img/s", "epoch (45k) s", "TFLOP/s",
                           "inference img/s"], rows))
    if results.problems:
        out += ["", "## Skipped", ""] + [f"- {p}" for p in results.problems]
    return out


def finished_run_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the finished runs of ``<root>/runs`` as text: the headline numbers of the study's index."""
    runs = results.main_runs
    rows = [[str(r["name"]), f"WRN-{_num(r['depth'], '.0f')}-{_num(r['width'], 'g')}",
             f"{r['epochs_done']}/{_num(r['epochs'], '.0f')}", _pct(r["test_acc"]), _pct(r["test_acc_tta"]),
             duration(r["train_time_s"]), _text(r["device"])]
            for _, r in runs[runs["status"] == "finished"].sort_values("name").iterrows()]
    return ["run", "model", "epochs", "test acc", "flip-TTA", "train time", "device"], rows


def schedule_markdown(table: pd.DataFrame) -> str:
    """The schedule table (from :func:`schedule_table`) as markdown: mean ± std over seeds and the range."""
    return _table(*schedule_rows(table))


def schedule_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the schedule table as text, for markdown here and for the study's HTML index."""
    rows = [[str(r["ablation"]), str(r["schedule"]), str(r["runs"]),
             _pct(r["test_acc_mean"]) + (f" ± {_num(100 * r['test_acc_std'], '.2f')}" if r["runs"] > 1
                                         else " (one seed)"),
             f"{_pct(r['test_acc_min'])} – {_pct(r['test_acc_max'])}", _pct(r["test_acc_tta_mean"]),
             _pct(r["best_val_acc_mean"]), _num(r["train_time_s_mean"], ".0f") + " s"] for _, r in table.iterrows()]
    return ["ablation", "schedule", "runs", "test acc mean ± std", "min – max", "flip-TTA mean", "best val mean",
            "train time"], rows


def run_markdown(summary: dict[str, Any]) -> str:
    """A finished run's summary.json as a two-column markdown table."""
    best = f"{_pct(summary.get('best_val_acc'))} (epoch {summary.get('best_val_epoch')})"
    eval_time = summary.get("eval_time_s")
    rows = [["final test accuracy", _pct(summary.get("test_acc"))],
            ["with flip-TTA", _pct(summary.get("test_acc_tta"))],
            ["best validation accuracy", best],
            ["test images", _num(summary.get("test_images"), ",.0f")],
            ["parameters", _num(summary.get("params"), ",.0f")],
            ["training time (steps only)", f"{_num(summary.get('train_time_s'), '.1f')} s "
                                           f"({_num(summary.get('mean_images_per_s'), ',.0f')} images/s)"],
            ["evaluation time (every epoch)", "–" if eval_time is None else f"{eval_time:.1f} s"]]
    return _table(["", ""], rows)
