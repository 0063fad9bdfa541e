import math

import pytest

from wrnlib.schedules import SCHEDULES, ScheduleParams, lr_curve, lr_multiplier, validate_schedule

P = ScheduleParams(warmup_epochs=0)  # the pure schedules, no warm-up


def test_cosine_endpoints_and_midpoint():
    assert lr_multiplier("cosine", 0, 100, P) == pytest.approx(1.0)
    assert lr_multiplier("cosine", 50, 100, P) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 100, 100, P) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier("cosine", 25, 100, P) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    floored = ScheduleParams(min_lr_frac=0.1, warmup_epochs=0)
    assert lr_multiplier("cosine", 100, 100, floored) == pytest.approx(0.1)


def test_step_drops_by_gamma_at_each_milestone():
    # WRN: x0.2 at epochs 60, 120, 160 of 200
    assert lr_multiplier("step", 59.9, 200, P) == 1.0
    assert lr_multiplier("step", 60, 200, P) == pytest.approx(0.2)
    assert lr_multiplier("step", 120, 200, P) == pytest.approx(0.04)
    assert lr_multiplier("step", 199, 200, P) == pytest.approx(0.008)


def test_sgdr_restarts_after_t0_then_t0_times_tmult():
    p = ScheduleParams(sgdr_t0=10, sgdr_tmult=2, warmup_epochs=0)
    assert lr_multiplier("sgdr", 0, 70, p) == pytest.approx(1.0)
    assert lr_multiplier("sgdr", 5, 70, p) == pytest.approx(0.5)
    assert lr_multiplier("sgdr", 9.999, 70, p) < 1e-6
    assert lr_multiplier("sgdr", 10, 70, p) == pytest.approx(0.0, abs=1e-12)  # the first cycle's end
    assert lr_multiplier("sgdr", 10.001, 70, p) == pytest.approx(1.0, abs=1e-6)  # first restart, just after
    assert lr_multiplier("sgdr", 20, 70, p) == pytest.approx(0.5)  # middle of the 20-epoch cycle
    assert lr_multiplier("sgdr", 30, 70, p) == pytest.approx(0.0, abs=1e-12)  # second cycle's end (10 + 20)
    assert lr_multiplier("sgdr", 30.001, 70, p) == pytest.approx(1.0, abs=1e-6)  # second restart
    assert lr_multiplier("sgdr", 50, 70, p) == pytest.approx(0.5)


def test_sgdr_whose_cycles_end_at_the_budget_ends_at_the_floor():
    """The trainer's last step asks for the lr at t = budget: an annealed one, not a restarted peak."""
    p = ScheduleParams(sgdr_t0=4, sgdr_tmult=1.5, min_lr_frac=0.01, warmup_epochs=1)
    assert lr_multiplier("sgdr", 10, 10, p) == pytest.approx(0.01)
    assert lr_multiplier("sgdr", 4, 10, p) == pytest.approx(0.01)
    assert lr_multiplier("sgdr", 4 + 1e-6, 10, p) == pytest.approx(1.0, abs=1e-6)


def test_onecycle_rises_to_peak_then_falls_to_zero():
    p = ScheduleParams(onecycle_peak=0.25, onecycle_start=0.1, warmup_epochs=0)
    ts, ys = lr_curve("onecycle", 40, p, points=401)
    peak_index = max(range(len(ys)), key=ys.__getitem__)
    assert ts[peak_index] == pytest.approx(10.0)
    assert ys[0] == pytest.approx(0.1) and ys[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b + 1e-12 for a, b in zip(ys[:peak_index], ys[1:peak_index + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(ys[peak_index:], ys[peak_index + 1:]))


def test_constant_is_constant():
    assert {lr_multiplier("constant", t, 10, P) for t in (0, 3.3, 10)} == {1.0}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_warmup_ramps_linearly_on_every_schedule(name):
    p = ScheduleParams(warmup_epochs=2)
    assert lr_multiplier(name, 0, 20, p) == 0.0
    base = lr_multiplier(name, 1, 20, P)
    assert lr_multiplier(name, 1, 20, p) == pytest.approx(0.5 * base)
    assert lr_multiplier(name, 2, 20, p) == pytest.approx(lr_multiplier(name, 2, 20, P))


_STEP = "step schedule needs 0 < step_gamma <= 1 and milestones strictly inside (0, 1) as fractions of the budget; "
_ONECYCLE = "onecycle needs 0 < onecycle_peak < 1 and 0 <= onecycle_start <= 1; "
SP = ScheduleParams


# (schedule, epochs, params, the error exactly or None): each limit at its edge, and just past it
@pytest.mark.parametrize("name,epochs,params,error", [
    ("linear-decay", 10, P,
     "unknown lr schedule 'linear-decay'; known schedules: constant, step, cosine, sgdr, onecycle"),
    ("cosine", 0.5, P, None), ("cosine", 0, P, "the epoch budget must be > 0; got 0"),
    ("cosine", 10, SP(warmup_epochs=0), None), ("cosine", 10, SP(warmup_epochs=10), None),
    ("cosine", 10, SP(warmup_epochs=11), "warmup_epochs must be in [0, epochs=10]; got 11"),
    ("cosine", 10, SP(warmup_epochs=-1), "warmup_epochs must be in [0, epochs=10]; got -1"),
    ("cosine", 10, SP(min_lr_frac=0.0), None), ("cosine", 10, SP(min_lr_frac=1.0), None),
    ("cosine", 10, SP(min_lr_frac=2), "min_lr_frac must be in [0, 1]; got 2"),
    ("cosine", 10, SP(min_lr_frac=-0.5), "min_lr_frac must be in [0, 1]; got -0.5"),
    ("step", 10, SP(step_gamma=1.0, step_milestones=(0.01, 0.99)), None),
    ("step", 10, SP(step_gamma=0), _STEP + "got gamma=0, milestones=(0.3, 0.6, 0.8)"),
    ("step", 10, SP(step_gamma=1.5), _STEP + "got gamma=1.5, milestones=(0.3, 0.6, 0.8)"),
    ("step", 10, SP(step_milestones=(0.0, 0.5)), _STEP + "got gamma=0.2, milestones=(0.0, 0.5)"),
    ("step", 10, SP(step_milestones=(0.5, 1.0)), _STEP + "got gamma=0.2, milestones=(0.5, 1.0)"),
    ("sgdr", 10, SP(sgdr_t0=0.5, sgdr_tmult=1.0), None),
    ("sgdr", 10, SP(sgdr_t0=0), "sgdr needs sgdr_t0 > 0 epochs and sgdr_tmult >= 1; got T0=0, Tmult=2.0"),
    ("sgdr", 10, SP(sgdr_tmult=0.5), "sgdr needs sgdr_t0 > 0 epochs and sgdr_tmult >= 1; got T0=10.0, Tmult=0.5"),
    ("onecycle", 10, SP(onecycle_peak=0.99, onecycle_start=0.0), None),
    ("onecycle", 10, SP(onecycle_peak=0.01, onecycle_start=1.0), None),
    ("onecycle", 10, SP(onecycle_peak=0.0), _ONECYCLE + "got peak=0.0, start=0.1"),
    ("onecycle", 10, SP(onecycle_peak=1.0), _ONECYCLE + "got peak=1.0, start=0.1"),
    ("onecycle", 10, SP(onecycle_start=1.5), _ONECYCLE + "got peak=0.25, start=1.5"),
    ("onecycle", 10, SP(onecycle_start=-0.1), _ONECYCLE + "got peak=0.25, start=-0.1"),
])
def test_each_schedule_limit_is_where_its_error_says(name, epochs, params, error):
    if error is None:
        validate_schedule(name, epochs, params)
        return
    with pytest.raises(ValueError) as raised:
        validate_schedule(name, epochs, params)
    assert str(raised.value) == error


def test_one_cycle_stays_at_its_floor_past_the_budget_and_curves_have_500_points():
    from wrnlib.schedules import SCHEDULES

    params = ScheduleParams(min_lr_frac=0.05)
    assert SCHEDULES["onecycle"](15.0, 10.0, params) == pytest.approx(0.05)  # e.g. a resumed run given more epochs
    epochs, values = lr_curve("cosine", 10.0)
    assert len(epochs) == len(values) == 500 and epochs[0] == 0.0 and epochs[-1] == 10.0


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_cosine_past_the_end_of_the_budget_stays_at_its_floor(floor):
    """A resumed run given more steps than its budget (or rounding at the end) must not see the lr climb back."""
    p = ScheduleParams(min_lr_frac=floor, warmup_epochs=0)
    for t in (10.0, 12.5, 15.0, 20.0):
        assert lr_multiplier("cosine", t, 10.0, p) == pytest.approx(floor, abs=1e-12)
