"""Ablations: a grid of training configs run one after another, gathered into tidy tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import TrainConfig
from ..data import CIFAR10
from ..train import RunResult, fit
from . import results
from .notebook import epoch_printer


def schedule_configs(schedules: Sequence[str], seeds: Sequence[int], out_dir: str | Path,
                     **shared: Any) -> list[TrainConfig]:
    """One validated config per (schedule, seed), named ``<schedule>-seed<seed>``, all else shared."""
    return [TrainConfig(name=f"{schedule}-seed{seed}", schedule=schedule, seed=seed, out_dir=str(out_dir),
                        **shared).validate()
            for schedule in schedules for seed in seeds]


def run_local(configs: Iterable[TrainConfig], *, data: CIFAR10 | None = None,
              existing: str = "reuse") -> list[RunResult]:
    """Train the configs in order in this process; finished runs are read back, not trained again."""
    configs = list(configs)
    done = []
    for i, config in enumerate(configs, 1):
        print(f"[{i}/{len(configs)}] {config.name}", flush=True)
        done.append(fit(config, data=data, existing=existing, on_epoch_end=epoch_printer("    ")))
    return done


def write_tables(done: list[RunResult], folder: str | Path, ablation: str) -> dict[str, Path]:
    """epochs.csv, final.csv and by_schedule.csv of the finished runs, in ``folder``."""
    epochs, final = results.ablation_tables(done, ablation)
    return results.write_ablation(folder, epochs, final)
