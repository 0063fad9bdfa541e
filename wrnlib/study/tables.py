"""Tables computed from collected results: an ablation's per-epoch and per-run tables and its schedules compared
over seeds, the width sweep, the validation evidence a recipe is chosen on, a run against a reported curve, and the
rows the study's markdown and HTML show.

Which schedule differences exceed the seed spread (:func:`by_schedule`, :func:`pairs`) uses a deliberately simple
test, stated wherever it is shown: two schedules differ by more than their seed spread when the ranges of their
seeds' results do not overlap. With two seeds per schedule that is weak evidence either way.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from .. import runfolder as runs_io
from .collect import (ABLATION_EPOCH_COLUMNS, ABLATION_FINAL_COLUMNS, BY_SCHEDULE_CSV, EPOCHS_CSV, FINAL_CSV,
                      TIME_SWEEP, WIDTH_SWEEP, Results, empty_frame, finished_in, frame, read_run, subfolders)
from .formats import duration, number, pct, text

SCHEDULE_TABLE_COLUMNS = ("ablation", "schedule", "runs", "seeds", "test_acc_mean", "test_acc_std", "test_acc_min",
                          "test_acc_max", "test_acc_tta_mean", "best_val_acc_mean", "train_time_s_mean")


def ablation_tables(run_results: Iterable[Any], ablation: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch, per-run) tidy tables from the ablation's :class:`wrnlib.RunResult` objects."""
    epoch_rows, final_rows = [], []
    for r in run_results:
        c, s = r.config, r.summary
        key = {"ablation": ablation, "schedule": c.schedule, "seed": c.seed, "run": c.name}
        epoch_rows += [{**key, **{k: m.get(k) for k in runs_io.METRIC_COLUMNS}} for m in r.metrics]
        final_rows.append({**key, "epochs": s.get("epochs"), **{k: s.get(k) for k in ABLATION_FINAL_COLUMNS[5:]}})
    return frame(epoch_rows, ABLATION_EPOCH_COLUMNS), frame(final_rows, ABLATION_FINAL_COLUMNS)


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


def width_table(runs: pd.DataFrame, group: str = WIDTH_SWEEP) -> pd.DataFrame:
    """The finished runs of a sweep of notebook 05 (``width_sweep``: equal epochs; ``time_sweep``: equal training
    time), one row each, by depth, width and seed, with the training compute that bought each accuracy."""
    cols = ["model", "params (M)", "seed", "epochs", "batch", "schedule", "device", "final val acc", "test acc",
            "train min", "PFLOP"]
    part = finished_in(runs, group)
    if part.empty:
        return pd.DataFrame(columns=cols)
    part = part.sort_values(["depth", "width", "seed"])
    return pd.DataFrame({
        "model": [f"WRN-{int(d)}-{float(k):g}" for d, k in zip(part["depth"], part["width"])],
        "params (M)": (part["params"].astype(float) / 1e6).round(3), "seed": part["seed"],
        "epochs": part["epochs"], "batch": part["batch_size"], "schedule": part["schedule"], "device": part["device"],
        "final val acc": (100 * part["final_val_acc"].astype(float)).round(2),
        "test acc": (100 * part["test_acc"].astype(float)).round(2),
        "train min": (part["train_time_s"].astype(float) / 60).round(1),
        "PFLOP": part["train_pflop"].astype(float).round(3)}, columns=cols).reset_index(drop=True)


def sweep_winner(runs: pd.DataFrame, group: str = TIME_SWEEP) -> str:
    """Which WRN of a sweep wins on validation (mean final validation accuracy over seeds; the test set is only
    reported), by how much over the next, and whether that gap is larger than the seeds' spread (the two
    models' ranges over seeds do not overlap)."""
    part = finished_in(runs, group)
    if part.empty:
        return "No finished runs in this sweep yet."
    part = part.assign(model=[f"WRN-{int(d)}-{float(k):g}" for d, k in zip(part["depth"], part["width"])],
                       val=100 * part["final_val_acc"].astype(float), test=100 * part["test_acc"].astype(float))
    table = part.groupby("model")[["val", "test"]].agg(["mean", "min", "max", "count"])
    table = table.sort_values(("val", "mean"), ascending=False)
    best = table.index[0]
    line = (f"**{best}** has the best mean final validation accuracy, {table.at[best, ('val', 'mean')]:.2f} % over "
            f"{table.at[best, ('val', 'count')]:.0f} seed(s) ({table.at[best, ('test', 'mean')]:.2f} % on the test "
            f"set)")
    if len(table) == 1:
        return line + "."
    second = table.index[1]
    gap = table.at[best, ("val", "mean")] - table.at[second, ("val", "mean")]
    line += f"; the next, {second}, is {gap:.2f} points behind"
    if min(table.at[best, ("val", "count")], table.at[second, ("val", "count")]) < 2:
        return line + " (one seed: no spread to weigh the gap against)."
    beyond = table.at[best, ("val", "min")] > table.at[second, ("val", "max")]
    return line + (", more than the seed spread (their ranges over seeds do not overlap)." if beyond else
                   ", within the seed spread (their ranges over seeds overlap): not a difference these seeds resolve.")


def validation_table(folders: Iterable[str | Path]) -> pd.DataFrame:
    """The finished runs in ``folders`` (each a folder of run folders) by final validation accuracy, best first:
    the evidence a recipe is chosen on. Test accuracy is left out on purpose: settings are never chosen on it."""
    cols = ["runs in", "run", "model", "epochs", "schedule", "label smoothing", "final val acc", "train min"]
    rows = []
    for folder in map(Path, folders):
        for run_dir in subfolders(folder):
            row, _ = read_run(run_dir, folder.name)
            if row is None or row["status"] != "finished" or row.get("final_val_acc") is None:
                continue
            rows.append([str(folder), row["name"], f"WRN-{row['depth']}-{float(row['width']):g}", row["epochs"],
                         row["schedule"], row["label_smoothing"], round(100 * float(row["final_val_acc"]), 2),
                         round(float(row["train_time_s"]) / 60, 1)])
    table = pd.DataFrame(rows, columns=cols)
    return table.sort_values("final val acc", ascending=False).reset_index(drop=True)


@dataclass(frozen=True)
class ReferenceCurve:
    """Test accuracies another study reported at some of its epochs, as fractions: a value (low == high) or a range."""
    label: str
    epochs: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


def reference_curve(points: Sequence[Sequence[float]], label: str) -> ReferenceCurve | None:
    """Notebook 02's ``reference_points`` ([epoch, accuracy %] or [epoch, low %, high %] each) as a curve, None
    when there are none; a ValueError names a point that is neither."""
    if not points:
        return None
    epochs, low, high = [], [], []
    for i, point in enumerate(points):
        numbers = isinstance(point, (list, tuple)) and len(point) in (2, 3) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
        if not (numbers and point[0] == int(point[0]) >= 1 and 0 <= point[1] <= point[-1] <= 100):
            raise ValueError(f"reference_points[{i}] = {point!r} is neither [epoch, accuracy %] nor [epoch, low %, "
                             f"high %] (an epoch from 1, percentages from 0 to 100, low <= high); fix that point")
        epochs.append(int(point[0]))
        low.append(point[1] / 100)
        high.append(point[-1] / 100)
    return ReferenceCurve(label or "reported", tuple(epochs), tuple(low), tuple(high))


def reference_table(metrics: pd.DataFrame, curve: ReferenceCurve) -> pd.DataFrame:
    """At each epoch the curve reports: what it reports, and this run's test accuracy there (a dash past its end)."""
    reached = dict(zip(metrics["epoch"], metrics["test_acc"]))
    return pd.DataFrame([{"epoch": epoch, curve.label: pct(low) if low == high else f"{pct(low)}–{pct(high)}",
                          "this run": pct(reached.get(epoch))}
                         for epoch, low, high in zip(curve.epochs, curve.low, curve.high)])


def write_ablation(folder: str | Path, epochs: pd.DataFrame, final: pd.DataFrame) -> dict[str, Path]:
    """Write epochs.csv, final.csv and by_schedule.csv into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"epochs": folder / EPOCHS_CSV, "final": folder / FINAL_CSV, "by_schedule": folder / BY_SCHEDULE_CSV}
    epochs.to_csv(paths["epochs"], index=False, float_format="%.6g")
    final.to_csv(paths["final"], index=False, float_format="%.6g")
    schedule_table(final).to_csv(paths["by_schedule"], index=False, float_format="%.6g")
    return paths


# --------------------------------------------------------------------------- a schedule ablation over seeds


def by_schedule(final: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per schedule: seeds, mean, min and max of ``metric`` (in %), best mean first (equal means in the
    ablation's order)."""
    values = final.assign(value=100 * pd.to_numeric(final[metric], errors="coerce")).dropna(subset=["value"])
    table = values.groupby("schedule", sort=False)["value"].agg(["count", "mean", "min", "max"])
    return table.sort_values("mean", ascending=False, kind="stable")


def pairs(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(resolved, unresolved) comparisons of every two schedules, as text, the better one first."""
    resolved, unresolved = [], []
    for a, b in itertools.combinations(table.index, 2):  # a's mean >= b's: the table is sorted
        gap = table.at[a, "mean"] - table.at[b, "mean"]
        if table.at[a, "min"] > table.at[b, "max"]:
            resolved.append(f"{a} > {b} (+{gap:.2f} points)")
        else:
            unresolved.append(f"{a} vs {b} ({gap:.2f} points)")
    return resolved, unresolved


# --------------------------------------------------------------------------- rows of text


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


def finished_run_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the finished runs of ``<root>/runs`` as text: the headline numbers of the study's index."""
    runs = results.main_runs
    rows = [[str(r["name"]), f"WRN-{number(r['depth'], '.0f')}-{number(r['width'], 'g')}",
             f"{r['epochs_done']}/{number(r['epochs'], '.0f')}", pct(r["test_acc"]),
             pct(r["test_acc_tta"]), duration(r["train_time_s"]), text(r["device"])]
            for _, r in runs[runs["status"] == "finished"].sort_values("name").iterrows()]
    return ["run", "model", "epochs", "test acc", "flip-TTA", "train time", "device"], rows


def schedule_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the schedule table as text, for the markdown summary and the study's HTML index."""
    rows = [[str(r["ablation"]), str(r["schedule"]), str(r["runs"]),
             pct(r["test_acc_mean"]) + (f" ± {number(100 * r['test_acc_std'], '.2f')}"
                                                if r["runs"] > 1 else " (one seed)"),
             f"{pct(r['test_acc_min'])} – {pct(r['test_acc_max'])}",
             pct(r["test_acc_tta_mean"]), pct(r["best_val_acc_mean"]),
             number(r["train_time_s_mean"], ".0f") + " s"] for _, r in table.iterrows()]
    return ["ablation", "schedule", "runs", "test acc mean ± std", "min – max", "flip-TTA mean", "best val mean",
            "train time"], rows
