"""The ``ray`` executor of :mod:`wrnlib.study.sweep`: each run is one Ray task with its share of a GPU.

    pip install 'wrnlib[cluster]'
    ray start --head                       # or nothing: a local Ray starts for the sweep
    RAY_ADDRESS=<head>:6379 python -m wrnlib sweep --executor ray --gpus-per-run 0.5 ...

Ray connects as ``ray.init()`` does: to ``$RAY_ADDRESS``, else to a cluster that ``ray start``
made on this machine, else to a new local instance (shut down again after the sweep). A Ray this
process already started is used as it is. Each task trains one run with `fit`, in the run folder
its config names, and returns its metrics and summary (not its weights), which the tables are
made of. On several machines the results folder must be storage every node sees, for the run
folders to be found again (and finished runs to be read back instead of retrained), and every
node needs wrnlib and its dependencies installed.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..config import TrainConfig
from ..progress import format_epoch
from ..runfolder import RunResult
from ..train import fit


def import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("the 'ray' executor needs Ray: pip install 'wrnlib[cluster]' (or conda env create -f "
                         "environment.yml); the 'local' executor needs nothing more") from None
    return ray


def gpu_share(gpus_per_run: float | None, configs: list[TrainConfig], cluster_gpus: float) -> float:
    """The GPUs each task asks for: a fraction packs several runs on one GPU, a whole number spans GPUs."""
    if gpus_per_run is None:
        return 1.0 if cluster_gpus >= 1 and any(c.device != "cpu" for c in configs) else 0.0
    if not 0 <= gpus_per_run or (gpus_per_run > 1 and gpus_per_run != int(gpus_per_run)):
        raise ValueError(f"gpus_per_run must be 0, a fraction of one GPU such as 0.5, or a whole number; "
                         f"got {gpus_per_run!r}")
    wants_cuda = [c.name for c in configs if c.device.startswith("cuda")]
    if gpus_per_run == 0 and wants_cuda:
        raise ValueError(f"runs {wants_cuda} ask for device cuda but gpus_per_run is 0; give each run a GPU share")
    if gpus_per_run > cluster_gpus:
        raise ValueError(f"each run asks for {gpus_per_run:g} GPU(s) but the Ray cluster has {cluster_gpus:g}; "
                         f"lower gpus_per_run or add GPU nodes")
    return float(gpus_per_run)


def train_task(config: dict[str, Any], existing: str, threads: int) -> RunResult:
    """One run inside a Ray task; Ray shows only this task's GPU(s), so device auto/cuda means its share."""
    import torch

    torch.set_num_threads(threads)
    config = TrainConfig.from_dict(config)
    result = fit(config, existing=existing,
                 on_epoch_end=lambda row: print(f"{config.name} {format_epoch(row)}", flush=True))
    return dataclasses.replace(result, model=None)  # the weights stay in the run folder


def run_on_ray(configs: list[TrainConfig], *, existing: str, gpus_per_run: float | None,
               cpus_per_run: float | None, timeout_s: float | None = None) -> dict[str, tuple[str, Any]]:
    """One task per run: {name: ("ok", RunResult) | ("error", one line)} as the tasks end."""
    return _run_tasks(configs, existing, gpus_per_run, 1.0 if cpus_per_run is None else cpus_per_run, timeout_s)


def _run_tasks(configs: list[TrainConfig], existing: str, gpus_per_run: float | None, cpus: float,
               timeout_s: float | None) -> dict[str, Any]:
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init()
    try:
        gpus = gpu_share(gpus_per_run, configs, ray.cluster_resources().get("GPU", 0.0))
        task, submitted = ray.remote(train_task), {}
        for config in configs:
            options = dict(num_cpus=cpus, num_gpus=gpus, max_retries=0, name=f"wrnlib {config.name}")
            submitted[task.options(**options).remote(config.to_dict(), existing, max(1, int(cpus)))] = config.name
        print(f"ray: {len(submitted)} run(s) sent as tasks ({gpus:g} GPU, {cpus:g} CPU each)", flush=True)
        return _collect(ray, submitted, timeout_s)
    finally:
        if started:
            ray.shutdown()


def _collect(ray, submitted: dict, timeout_s: float | None) -> dict[str, Any]:
    """{name: ("ok", RunResult) | ("error", message)} as the tasks end; those past the deadline are cancelled."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pending, outcome = list(submitted), {}
    try:
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not ready:
                break
            name = submitted[ready[0]]
            try:
                outcome[name] = ("ok", ray.get(ready[0]))
            except Exception as exc:  # the run's own error travels as RayTaskError.cause
                outcome[name] = ("error", one_line(getattr(exc, "cause", None) or exc))
            print(f"[{len(outcome)}/{len(submitted)}] {name}: "
                  f"{'finished' if outcome[name][0] == 'ok' else 'FAILED ' + outcome[name][1]}", flush=True)
    finally:
        for ref in pending:  # past the deadline, or interrupted: stop what is still running
            ray.cancel(ref, force=True)
    for ref in pending:
        outcome[submitted[ref]] = ("error", f"TimeoutError: did not finish within {timeout_s:g} s; cancelled")
    return outcome


def one_line(exc: BaseException) -> str:
    """An error as one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
