"""Rules that hold over a whole range, checked with hypothesis: schedule shapes for any budget and
warm-up, validation splits for any sizes, and the crop / flip / cutout invariants for any setting."""
from __future__ import annotations

import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wrnlib.augment import cutout, random_crop, random_flip
from wrnlib.data import train_val_split
from wrnlib.schedules import SCHEDULES, ScheduleParams, lr_multiplier, validate_schedule

FAST = settings(max_examples=60, deadline=None)


@st.composite
def budgets(draw):
    """(schedule, total epochs, params) accepted by validate_schedule."""
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    total = draw(st.floats(0.5, 500))
    params = ScheduleParams(
        warmup_epochs=draw(st.floats(0, total)),
        min_lr_frac=draw(st.floats(0, 1)),
        step_milestones=tuple(sorted(draw(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4)))),
        step_gamma=draw(st.floats(0.01, 1)),
        sgdr_t0=draw(st.floats(0.1, 200)),
        sgdr_tmult=draw(st.floats(1, 3)),
        onecycle_peak=draw(st.floats(0.05, 0.95)),
        onecycle_start=draw(st.floats(0, 1)))
    validate_schedule(name, total, params)
    return name, total, params


@FAST
@given(budgets(), st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_every_schedule_stays_between_zero_and_the_peak_and_warms_up_linearly(budget, fractions):
    name, total, p = budget
    for f in fractions:
        t = f * total
        m = lr_multiplier(name, t, total, p)
        assert 0.0 <= m <= 1.0 + 1e-12
        if p.warmup_epochs > 0 and t < p.warmup_epochs:
            unwarmed = SCHEDULES[name](t, total, p)
            assert math.isclose(m, unwarmed * t / p.warmup_epochs, rel_tol=1e-12, abs_tol=1e-15)


@FAST
@given(budgets())
def test_annealed_schedules_never_rise_after_their_peak_and_end_at_their_floor(budget):
    name, total, p = budget
    start = p.onecycle_peak * total if name == "onecycle" else 0.0
    ts = [start + (total - start) * i / 200 for i in range(201)]
    values = [SCHEDULES[name](t, total, p) for t in ts]
    if name in ("step", "cosine", "onecycle", "constant"):
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), name
    end = values[-1]
    if name in ("cosine", "onecycle"):
        assert math.isclose(end, p.min_lr_frac, abs_tol=1e-12)
    if name == "step":
        assert math.isclose(end, p.step_gamma ** len(p.step_milestones), rel_tol=1e-12)
    if name == "constant":
        assert end == 1.0


@FAST
@given(st.floats(0.1, 50), st.floats(1, 3), st.floats(0, 0.5), st.integers(1, 5))
@example(7.402416628641518, 2.5, 0.0, 5)  # found by hypothesis: the summed cycle ends were off in the last bit
def test_sgdr_reaches_its_floor_at_the_end_of_every_cycle_and_restarts_after_it(t0, tmult, floor, cycles):
    p = ScheduleParams(sgdr_t0=t0, sgdr_tmult=tmult, min_lr_frac=floor)
    end = sum(t0 * tmult ** i for i in range(cycles))
    total = end * 2
    assert math.isclose(SCHEDULES["sgdr"](end, total, p), floor, abs_tol=1e-9)
    just_after = SCHEDULES["sgdr"](end + 1e-6 * t0, total, p)
    assert just_after > floor + 0.99 * (1 - floor) - 1e-6  # back near the peak


@st.composite
def labelled(draw):
    classes = draw(st.integers(1, 10))
    labels = draw(st.lists(st.integers(0, classes - 1), min_size=2, max_size=400))
    val_size = draw(st.integers(0, len(labels) - 1))
    return torch.tensor(labels), val_size, draw(st.integers(0, 2**31 - 1))


@FAST
@given(labelled())
def test_any_split_partitions_the_images_stratified_and_reproducibly(case):
    labels, val_size, seed = case
    train_idx, val_idx = train_val_split(labels, val_size, seed)
    n = len(labels)
    assert len(val_idx) == val_size and len(train_idx) == n - val_size
    assert torch.equal(torch.sort(torch.cat([train_idx, val_idx])).values, torch.arange(n))  # disjoint, complete
    assert torch.equal(train_idx, torch.sort(train_idx).values) and torch.equal(val_idx, torch.sort(val_idx).values)
    counts = torch.bincount(labels)
    val_counts = torch.bincount(labels[val_idx], minlength=len(counts))
    share = counts.double() * val_size / n
    assert ((val_counts.double() - share).abs() < 1 + 1e-9).all()  # each class within one image of its share
    again = train_val_split(labels, val_size, seed)
    assert torch.equal(again[0], train_idx) and torch.equal(again[1], val_idx)


def _images(seed: int, n: int = 4, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@FAST
@given(st.integers(0, 7), st.sampled_from(["reflect", "constant"]), st.integers(0, 1000))
def test_a_crop_is_a_shift_of_the_padded_image_by_at_most_the_padding(padding, mode, seed):
    images = _images(seed)
    torch.manual_seed(seed)
    out = random_crop(images, padding, mode)
    assert out.shape == images.shape and out.dtype == images.dtype
    pad = torch.nn.functional.pad(images.float(), [padding] * 4, mode="reflect" if mode == "reflect" else "constant")
    size = images.shape[-1]
    for i in range(len(images)):
        windows = [pad[i, :, dy:dy + size, dx:dx + size] for dy in range(2 * padding + 1)
                   for dx in range(2 * padding + 1)]
        assert any(torch.equal(out[i].float(), w) for w in windows)


@FAST
@given(st.integers(0, 1000), st.lists(st.booleans(), min_size=4, max_size=4))
def test_a_flip_mirrors_exactly_the_chosen_images(seed, chosen):
    images = _images(seed)
    mask = torch.tensor(chosen)
    out = random_flip(images, mask)
    for i, flipped in enumerate(chosen):
        assert torch.equal(out[i], images[i].flip(-1) if flipped else images[i])


@FAST
@given(st.integers(0, 12), st.integers(0, 1000))
def test_cutout_zeroes_one_clipped_square_of_at_most_the_side_and_keeps_the_rest(size, seed):
    x = _images(seed).float() + 1  # no zeros before cutout
    torch.manual_seed(seed)
    out = cutout(x, size)
    zeroed = out == 0
    assert torch.equal(out[~zeroed], x[~zeroed])
    assert (zeroed.all(dim=1) == zeroed.any(dim=1)).all()  # the same pixels in every channel
    for i in range(len(x)):
        rows = zeroed[i, 0].any(dim=1).nonzero().flatten()
        cols = zeroed[i, 0].any(dim=0).nonzero().flatten()
        if size == 0:
            assert len(rows) == 0
            continue
        assert len(rows) > 0  # the centre pixel always lies in the image, so some of the square survives
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert height <= size and width <= size
        assert zeroed[i, 0, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one filled rectangle
        assert int(zeroed[i, 0].sum()) == height * width
