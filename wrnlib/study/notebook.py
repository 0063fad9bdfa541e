"""What every study notebook does first, and the per-epoch line the training notebooks print."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..train import format_epoch
from . import plots
from .runner import REPO_ROOT


def setup() -> Path:
    """Work from the repository root (as the study runner does) and set the plotting style.

    Paths in the notebooks' parameters are relative to the repository root; a notebook opened
    from ``notebooks/`` in Jupyter starts one folder below it.
    """
    if (REPO_ROOT / "notebooks").is_dir() and Path.cwd().resolve() == (REPO_ROOT / "notebooks").resolve():
        os.chdir(REPO_ROOT)
    plots.setup()
    return Path.cwd()


def epoch_printer(prefix: str = "") -> Callable[[dict[str, Any]], None]:
    """An ``on_epoch_end`` callback printing fit's one line per epoch (notebooks run fit without its bar)."""
    def show(row: dict[str, Any]) -> None:
        print(prefix + format_epoch(row), flush=True)
    return show
