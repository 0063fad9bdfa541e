"""``python -m wrnlib runs [FOLDER]``: the runs one has, one line each, read from their folders alone.

Which runs finished, which stopped part-way (and can be resumed), which never reached a checkpoint and
which a live process is training right now, with the numbers that tell them apart: epochs done, final
test accuracy and training time. Nothing is loaded but the small JSON and CSV files of each folder.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import files
from .. import runfolder as runs
from ..progress import number
from . import formats
from .collect import read_run, subfolders

DEFAULT_FOLDER = "results/runs"
MISSING = "-"  # plain ASCII in a terminal's table
NOT_A_RUN = "not a run"  # a folder with files but no config.json: listed so nothing in FOLDER goes unexplained
COLUMNS = (("name", "name"), ("status", "status"), ("model", "model"), ("epochs", "epochs"),
           ("test acc", "test_acc"), ("train time", "train_time_s"), ("date", "date"))


def list_runs(folder: str | Path) -> list[dict[str, Any]]:
    """One row per run folder in ``folder`` (by name): name, status, model, epochs_done, epochs, test_acc
    (a fraction; None until finished), train_time_s (so far, for an unfinished run), date and run_dir.

    status is finished, interrupted (a checkpoint to resume from), unstarted (stopped before its first
    checkpoint), locked (a live process holds the folder: it is being trained) or "not a run".
    """
    rows = []
    for run_dir in subfolders(Path(folder)):
        state = runs.status(run_dir)
        if state == "absent":  # an empty folder: nothing to list
            continue
        if state == "foreign":
            rows.append({"name": run_dir.name, "status": NOT_A_RUN, "run_dir": run_dir})
            continue
        rows.append(_run_row(run_dir, state))
    return rows


def _run_row(run_dir: Path, state: str) -> dict[str, Any]:
    row, epochs = read_run(run_dir)
    row = row or {}  # its config.json unreadable and nothing else there: listed with what is known
    last_time = epochs[-1].get("train_time_s") if epochs else None
    train_time = row.get("train_time_s") if state == "finished" else last_time
    locked = files.is_locked(run_dir)
    return {"name": run_dir.name, "status": "locked" if locked else state, "model": _model(row),
            "epochs_done": row.get("epochs_done", 0), "epochs": row.get("epochs"),
            "test_acc": row.get("test_acc") if state == "finished" else None,
            "train_time_s": number(train_time), "date": _date(run_dir), "run_dir": run_dir}


def _model(row: dict[str, Any]) -> str | None:
    depth, width = number(row.get("depth")), number(row.get("width"))
    return None if depth is None or width is None else f"WRN-{depth:.0f}-{width:g}"


def _date(run_dir: Path) -> str | None:
    """When the run was set up: config.json's modification time (written once, when it starts), else env.json's."""
    for name in (runs.CONFIG, runs.ENV):
        path = run_dir / name
        if path.exists():
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    return None


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table with aligned columns; "-" where a value does not exist (yet)."""
    cells = [[title for title, _ in COLUMNS]] + [[_cell(row, key) for _, key in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "epochs":
        total = number(value)
        return MISSING if total is None else f"{row.get('epochs_done', 0)}/{total:.0f}"
    if key == "test_acc":
        return formats.pct(value, missing=MISSING)
    if key == "train_time_s":
        return formats.duration(value, missing=MISSING)
    return MISSING if value is None else str(value)


def runs_command(folder: str | None = None) -> int:
    """Print the table of the runs in ``folder`` (default results/runs); an absent or empty folder is no error."""
    folder = folder or DEFAULT_FOLDER
    rows = list_runs(folder)
    if not rows:
        out_dir = "" if folder == DEFAULT_FOLDER else f" --out-dir {folder}"
        print(f"no runs in {folder} (train one with `python -m wrnlib train{out_dir}` or notebooks/02_train.ipynb)")
        return 0
    print(format_runs(rows))
    return 0
