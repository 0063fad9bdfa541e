"""Ablations: a grid of training configs, run by an executor, gathered into tidy tables.

Executors: ``local`` trains the runs one after another in this process (no extra dependency; the steps
of its time-budgeted runs are timed together first, :func:`time_together`);
``ray`` sends each run to a Ray cluster as a task with its share of a GPU (:mod:`wrnlib.study.cluster`,
``pip install wrnlib[cluster]``). Either way finished runs are read back rather than trained again,
a failed run is reported by name without losing the others, and the tables come from the same
run results, so they are the same whichever executor ran them.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .. import files, runfolder as runs
from ..config import TrainConfig
from ..data import CIFAR10, load_cifar10
from ..progress import format_epoch
from ..runfolder import EXISTING, RunResult
from ..train import fit, time_step
from . import cluster, profiles, tables
from .cluster import one_line

EXECUTORS = ("local", "ray")
PER_RUN_FIELDS = ("name", "out_dir", "schedule", "seed")  # set by the sweep for each run
SHARED_FIELDS = {f.name for f in fields(TrainConfig)} - set(PER_RUN_FIELDS)


class SweepError(RuntimeError):
    """Some runs of a sweep failed; the others finished and their tables were written."""


@dataclass
class SweepResult:
    done: list[RunResult]  # the finished runs (trained now or read back), in the configs' order
    failed: dict[str, str] = field(default_factory=dict)  # run name -> its error, one line
    reused: list[str] = field(default_factory=list)  # runs read back rather than trained

    def describe(self) -> str:
        trained = len(self.done) - len(self.reused)
        return (f"{len(self.done) + len(self.failed)} runs: {trained} trained, {len(self.reused)} read back, "
                f"{len(self.failed)} failed" + "".join(f"\n  FAILED {name}: {error}"
                                                    for name, error in self.failed.items()))

    def check(self) -> list[RunResult]:
        """The finished runs; a SweepError naming every failed run, if any failed."""
        if self.failed:
            raise SweepError(f"{len(self.failed)} of {len(self.failed) + len(self.done)} runs failed: "
                             + "; ".join(f"{name} ({error})" for name, error in self.failed.items()))
        return self.done


def schedule_configs(schedules: Sequence[str], seeds: Sequence[int], out_dir: str | Path,
                     base: TrainConfig) -> list[TrainConfig]:
    """One validated config per (schedule, seed), named ``<schedule>-seed<seed>``, all else from ``base``."""
    return [replace(base, name=f"{schedule}-seed{seed}", schedule=schedule, seed=seed, out_dir=str(out_dir)).validate()
            for schedule in schedules for seed in seeds]


def width_configs(widths: Sequence[float], seeds: Sequence[int], out_dir: str | Path, depth: int | Sequence[int],
                  base: TrainConfig) -> list[TrainConfig]:
    """One validated config per (depth, width, seed) of WRN-depth-k, named ``wrn<depth>-<k>-seed<seed>``, all else
    from ``base`` (its ``budget_minutes`` gives every run the same training time)."""
    depths = [depth] if isinstance(depth, int) else list(depth)
    return [replace(base, name=f"wrn{d}-{width:g}-seed{seed}", depth=d, width=float(width), seed=seed,
                    out_dir=str(out_dir)).validate()
            for d in depths for width in widths for seed in seeds]


def seed_configs(base: TrainConfig, seeds: Sequence[int]) -> list[TrainConfig]:
    """``base`` again with each of ``seeds``, named ``<name>-seed<seed>`` (the recipe of one run, trained with other
    seeds so that a claim about it rests on more than one)."""
    if len(set(seeds)) != len(seeds) or base.seed in seeds:
        raise ValueError(f"other seeds {list(seeds)} repeat a seed or the run's own (seed {base.seed}): list each "
                         f"other seed once")
    return [replace(base, name=f"{base.name}-seed{seed}", seed=seed).validate() for seed in seeds]


def run_sweep(configs: Iterable[TrainConfig], executor: str = "local", *, existing: str = "reuse",
              data: CIFAR10 | None = None, gpus_per_run: float | None = None, cpus_per_run: float | None = None,
              timeout_s: float | None = None) -> SweepResult:
    """Train every config with ``executor``; finished runs are read back, failures collected by name.

    ``data``: an already loaded data set for the local executor. ``gpus_per_run`` (ray): each
    run's GPU share, e.g. 0.5 packs two runs on a GPU (None: 1 when the cluster has GPUs, else
    0). ``cpus_per_run``: each run's CPU share and torch thread count (local: None keeps this
    process's threads; ray: None is 1). CPU results depend on the thread count, through the order
    of float sums, so compare sweeps made with the same one. ``timeout_s`` (ray) bounds the wait.
    """
    configs = list(configs)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}; got {existing!r}")
    names = [c.run_dir for c in configs]
    if len(set(names)) != len(names):
        raise ValueError("two configs of the sweep write the same run folder; give each run its own name")
    if cpus_per_run is not None and not cpus_per_run > 0:
        raise ValueError(f"cpus_per_run must be > 0; got {cpus_per_run!r}")
    if executor == "local":
        return _run_local(configs, existing, data, cpus_per_run)
    todo = [c for c in configs if runs.status(c.run_dir) != "finished"]  # finished ones are read back here
    outcome = cluster.run_on_ray(todo, existing=existing, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                                 timeout_s=timeout_s) if todo else {}
    return _gather(configs, outcome, existing)


def _gather(configs: list[TrainConfig], outcome: dict[str, tuple[str, Any]], existing: str) -> SweepResult:
    """The Ray tasks' outcomes, and the runs that were not sent (finished ones, read back), in config order."""
    swept = SweepResult(done=[])
    for config in configs:
        kind, value = outcome.get(config.name, ("read back", None))
        if kind == "ok":
            swept.done.append(value)
        elif kind == "error":
            swept.failed[config.name] = value
        else:
            record(swept, config, lambda: fit(config, existing=existing))
    return swept


def run_local(configs: Iterable[TrainConfig], *, data: CIFAR10 | None = None,
              existing: str = "reuse") -> list[RunResult]:
    """Train the configs in order in this process; a SweepError names the runs that failed."""
    return run_sweep(configs, "local", data=data, existing=existing).check()


def _run_local(configs: list[TrainConfig], existing: str, data: CIFAR10 | None,
               cpus_per_run: float | None) -> SweepResult:
    import torch

    swept, threads = SweepResult(done=[]), torch.get_num_threads()
    try:
        if cpus_per_run is not None:
            torch.set_num_threads(max(1, int(cpus_per_run)))
        if any(runs.status(c.run_dir) != "finished" for c in configs):
            data = data if data is not None else load_cifar10(configs[0].data_dir, download=configs[0].download)
            configs = time_together(configs, data)
        for i, config in enumerate(configs, 1):
            print(f"[{i}/{len(configs)}] {config.name}", flush=True)
            record(swept, config, lambda: fit(config, data=data, existing=existing,
                                              on_epoch_end=lambda row: print("    " + format_epoch(row), flush=True)))
    finally:
        torch.set_num_threads(threads)
    return swept


def time_together(configs: list[TrainConfig], data: CIFAR10, rounds: int = 3) -> list[TrainConfig]:
    """The configs, the time-budgeted runs yet to start given the seconds per step their budget divides
    (``budget_step_s``): that of a run of the same kind begun before (a seed added later trains the epochs of the
    others), else each kind of step timed ``rounds`` times in turn with the others, the median kept.

    One run after another, each timing its own step at its start, would divide their budgets at whatever speed a
    shared machine had at each start (it drifts by tens of percent within minutes); timed together, they share
    the same speed, and the seeds of one network the same epochs."""
    status = {c.run_dir: runs.status(c.run_dir) for c in configs}
    todo = {c.run_dir: c for c in configs
            if c.budget_minutes and not c.budget_step_s and status[c.run_dir] in ("absent", "unstarted")}
    needed, step_s = {_step_kind(c) for c in todo.values()}, {}
    for c in configs:
        kind = _step_kind(c)
        if kind in needed and kind not in step_s and status[c.run_dir] in ("interrupted", "finished"):
            begun = runs.load_config(c.run_dir).budget_step_s
            if begun:
                step_s[kind] = begun
    kinds: dict[str, TrainConfig] = {}  # the first run of each kind left to time, in order
    for c in todo.values():
        if _step_kind(c) not in step_s:
            kinds.setdefault(_step_kind(c), c)
    if kinds:
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(rounds):
            for kind in times:
                times[kind].append(time_step(kinds[kind], data))
        step_s |= {kind: statistics.median(seconds) for kind, seconds in times.items()}
        print("timed together, seconds per step: " + ", ".join(
            f"{kinds[kind].name} {step_s[kind]:.3f}" for kind in kinds), flush=True)
    return [replace(c, budget_step_s=step_s[_step_kind(c)]) if c.run_dir in todo else c for c in configs]


def _step_kind(config: TrainConfig) -> str:
    """What a step's time depends on: the config but for the run's name, folder and seed."""
    return json.dumps({k: v for k, v in config.to_dict().items() if k not in ("name", "out_dir", "seed")})


def record(swept: SweepResult, config: TrainConfig, train: Callable[[], RunResult]) -> None:
    """Run ``train`` for ``config`` and note its result, or its error (one line) under the run's name."""
    finished = runs.status(config.run_dir) == "finished"
    try:
        result = train()
    except Exception as exc:  # a failed run must not take the others with it; KeyboardInterrupt still stops
        swept.failed[config.name] = one_line(exc)
        print(f"    FAILED {config.name}: {swept.failed[config.name]}", flush=True)
        return
    swept.done.append(result)
    if finished:
        swept.reused.append(config.name)


def write_tables(done: list[RunResult], folder: str | Path, ablation: str) -> dict[str, Path]:
    """epochs.csv, final.csv and by_schedule.csv of the finished runs, in ``folder``."""
    epochs, final = tables.ablation_tables(done, ablation)
    return tables.write_ablation(folder, epochs, final)


# --------------------------------------------------------------------------- `python -m wrnlib sweep`

ABLATION_DEFAULTS = {"ablation_name": "lr_schedules", "ablation_dir": "results/ablations",
                     "schedules": ["constant", "step", "cosine", "sgdr", "onecycle"], "seeds": [0, 1],
                     "existing": "reuse", "executor": "local", "gpus_per_run": None}


def profile_settings(profile: str | None) -> dict[str, Any]:
    """The schedule ablation of a study profile: its "03" section, and of its "common" settings those the sweep
    takes (the TrainConfig fields its runs share, and the ablation's own settings)."""
    if profile is None:
        return dict(ABLATION_DEFAULTS)
    taken = SHARED_FIELDS | set(ABLATION_DEFAULTS) | {"extra_config"}
    return ABLATION_DEFAULTS | profiles.notebook_parameters(profiles.load_profile(profile), "03", taken)


def sweep_command(profile: str | None = None, *, overrides: dict[str, Any], shared: dict[str, Any],
                  cpus_per_run: float | None = None) -> int:
    """Run the schedule ablation of ``profile`` (with ``overrides`` of its settings and ``shared``
    TrainConfig fields) and write its tables; 0 when every run finished, 1 when some failed."""
    settings = profile_settings(profile) | {k: v for k, v in overrides.items() if v is not None}
    config = {k: v for k, v in settings.items() if k in SHARED_FIELDS} | settings.get("extra_config", {}) | shared
    config.setdefault("progress", False)  # one line per epoch instead of a bar per run
    folder = Path(settings["ablation_dir"]) / settings["ablation_name"]
    configs = schedule_configs(settings["schedules"], settings["seeds"], folder / "runs", TrainConfig(**config))
    with files.folder_lock(folder, doing="running this ablation"):  # one sweep per ablation folder
        print(f"sweep {settings['ablation_name']}: {len(configs)} runs on executor {settings['executor']!r} -> "
              f"{folder}", flush=True)
        swept = run_sweep(configs, settings["executor"], existing=settings["existing"],
                          gpus_per_run=settings["gpus_per_run"], cpus_per_run=cpus_per_run)
        print(swept.describe())
        if swept.done:
            paths = write_tables(swept.done, folder, settings["ablation_name"])
            print("wrote", ", ".join(os.fspath(p) for p in paths.values()))
        else:  # keep the tables of an earlier sweep rather than replace them by empty ones
            print(f"no run finished: the tables in {folder} were left as they were")
    return 1 if swept.failed else 0
