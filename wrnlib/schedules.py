"""Learning-rate schedules as pure functions of training progress.

Each schedule maps ``t`` (epochs elapsed, a float: the trainer steps it every iteration) and the
total epoch budget to a multiplier of the peak learning rate. Keeping them pure makes them easy
to plot, test and resume: the lr at any step is recomputed, never accumulated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ScheduleParams:
    step_milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # fractions of the budget (WRN: 60/120/160 of 200)
    step_gamma: float = 0.2  # WRN's x0.2 drops
    sgdr_t0: float = 10.0  # epochs in the first cycle
    sgdr_tmult: float = 2.0  # each cycle is this much longer than the last
    onecycle_peak: float = 0.25  # fraction of the budget at which the triangle peaks
    onecycle_start: float = 0.1  # multiplier at t = 0
    min_lr_frac: float = 0.0  # floor of cosine/SGDR/one-cycle, as a fraction of the peak
    warmup_epochs: float = 1.0  # linear ramp up to the peak, multiplied onto any schedule


def constant(t: float, total: float, p: ScheduleParams) -> float:
    return 1.0


def step(t: float, total: float, p: ScheduleParams) -> float:
    drops = sum(t >= m * total for m in p.step_milestones)
    return p.step_gamma ** drops


def _cosine(fraction: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def cosine(t: float, total: float, p: ScheduleParams) -> float:
    return _cosine(t / total, p.min_lr_frac)


def sgdr(t: float, total: float, p: ScheduleParams) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter, 2017): cycles of T0, T0*Tmult, ...

    A cycle is (start, start + length]: its end anneals to the floor, and the restart comes just
    after it. Trainers ask for the lr where a step ends, so the last step of a cycle (and of a budget
    that ends with a cycle) steps at the floor, not at the restarted peak.
    """
    cycle_length, start = p.sgdr_t0, 0.0
    # a t at a cycle's end belongs to that cycle even when the summed cycle lengths carry rounding (the
    # end of cycle 5 of T0=7.4024, Tmult=2.5 summed here differs from T0 (1 + Tmult + ...) in the last bit)
    while t > (start + cycle_length) * (1 + 1e-12):
        start += cycle_length
        cycle_length *= p.sgdr_tmult
    return _cosine((t - start) / cycle_length, p.min_lr_frac)


def onecycle(t: float, total: float, p: ScheduleParams) -> float:
    """Triangular one-cycle: linear from onecycle_start up to 1 at the peak, then down to the floor."""
    peak = p.onecycle_peak * total
    if t < peak:
        return p.onecycle_start + (1.0 - p.onecycle_start) * t / peak
    return 1.0 - (1.0 - p.min_lr_frac) * min((t - peak) / (total - peak), 1.0)


SCHEDULES: dict[str, Callable[[float, float, ScheduleParams], float]] = {
    "constant": constant, "step": step, "cosine": cosine, "sgdr": sgdr, "onecycle": onecycle,
}


def validate_schedule(name: str, total_epochs: float, params: ScheduleParams) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; known schedules: {', '.join(SCHEDULES)}")
    if not total_epochs > 0:
        raise ValueError(f"the epoch budget must be > 0; got {total_epochs!r}")
    if params.warmup_epochs < 0 or params.warmup_epochs > total_epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={total_epochs}]; got {params.warmup_epochs}")
    if not 0.0 <= params.min_lr_frac <= 1.0:
        raise ValueError(f"min_lr_frac must be in [0, 1]; got {params.min_lr_frac}")
    if name == "step" and (not 0.0 < params.step_gamma <= 1.0
                           or any(not 0.0 < m < 1.0 for m in params.step_milestones)):
        raise ValueError("step schedule needs 0 < step_gamma <= 1 and milestones strictly inside (0, 1) "
                         f"as fractions of the budget; got gamma={params.step_gamma}, "
                         f"milestones={params.step_milestones}")
    if name == "sgdr" and (params.sgdr_t0 <= 0 or params.sgdr_tmult < 1.0):
        raise ValueError(f"sgdr needs sgdr_t0 > 0 epochs and sgdr_tmult >= 1; got T0={params.sgdr_t0}, "
                         f"Tmult={params.sgdr_tmult}")
    if name == "onecycle" and not (0.0 < params.onecycle_peak < 1.0 and 0.0 <= params.onecycle_start <= 1.0):
        raise ValueError("onecycle needs 0 < onecycle_peak < 1 and 0 <= onecycle_start <= 1; "
                         f"got peak={params.onecycle_peak}, start={params.onecycle_start}")


def lr_multiplier(name: str, t: float, total_epochs: float, params: ScheduleParams = ScheduleParams()) -> float:
    """Multiplier of the peak lr after ``t`` epochs of ``total_epochs``, including warm-up."""
    factor = SCHEDULES[name](t, total_epochs, params)
    if params.warmup_epochs > 0 and t < params.warmup_epochs:
        factor *= t / params.warmup_epochs
    return factor


def lr_curve(name: str, total_epochs: float, params: ScheduleParams = ScheduleParams(),
             points: int = 500) -> tuple[list[float], list[float]]:
    """(epochs, multipliers) sampled evenly over the budget, for plots."""
    validate_schedule(name, total_epochs, params)
    ts = [total_epochs * i / (points - 1) for i in range(points)]
    return ts, [lr_multiplier(name, t, total_epochs, params) for t in ts]
