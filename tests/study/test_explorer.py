"""The width explorer's numbers, budget verdicts, view and widgets (without a kernel)."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from wrnlib import model_stats  # noqa: E402
from wrnlib.model import forward_flops, param_count  # noqa: E402
from wrnlib.study import explorer, results  # noqa: E402

# --------------------------------------------------------------------------- explorer logic


CHOICES = [(10, 1.0), (16, 2.0), (22, 0.75), (28, 3.5), (28, 3.75), (40, 2.5), (10, 1.3)]


@pytest.mark.parametrize("depth,width", CHOICES)
def test_explorer_matches_model_stats(depth, width):
    stats = model_stats(depth, width)
    choice = explorer.describe(depth, width, batch_size=256)
    assert choice.params == stats.params == param_count(depth, width)
    assert choice.forward_flops == stats.forward_flops == forward_flops(depth, width)
    assert choice.train_flops == stats.train_flops
    assert choice.stage_widths == tuple(stats.stage_widths)
    assert choice.activation_bytes_batch == 256 * stats.activation_bytes
    text = explorer.markdown(choice)
    assert f"{stats.params:,}" in text and " / ".join(map(str, stats.stage_widths)) in text


def test_budget_classification():
    assert explorer.budget_status(5_000_000) == "within"
    assert explorer.budget_status(5_000_001) == "over"
    assert explorer.describe(28, 3.5).status == "within"  # 4.48 M, the study's model
    assert explorer.describe(28, 3.75).status == "over"  # 5.13 M
    assert explorer.describe(28, 3.75, budget=6_000_000).status == "within"
    choice = explorer.describe(28, 3.5)
    assert choice.budget_fraction == pytest.approx(4_480_474 / 5_000_000)
    for depth in (10, 16, 28, 40):
        k = explorer.max_width_within(depth)
        assert model_stats(depth, k).params <= 5_000_000 < model_stats(depth, k + 0.25).params
    assert explorer.max_width_within(28) == 3.5


def test_explorer_view_and_widgets_without_a_kernel(tmp_path):
    runs = results.collect(tmp_path / "none").runs  # no runs: the view still renders
    fig = explorer.figure(explorer.describe(16, 4.0), runs)
    assert len(fig.axes) == 3
    ui = explorer.Explorer(28, 3.5, 512, runs=runs, train_overrides=dict(
        epochs=1, data_dir="sample", device="cpu", out_dir=str(tmp_path / "explore"), val_size=200,
        train_limit=200, test_limit=100, batch_size=50, progress=False))
    assert ui.choice.params == 4_480_474
    ui.depth.value, ui.width.value, ui.batch.value = 10, 1.0, 64
    assert (ui.choice.name, ui.choice.params, ui.choice.batch_size) == ("WRN-10-1", model_stats(10, 1.0).params, 64)
    assert not (tmp_path / "explore").exists()  # slider moves never train
    ui._on_train(None)  # the button: a real (tiny) run of the chosen WRN
    summary = json.loads((tmp_path / "explore" / "explore-wrn10-1" / "summary.json").read_text())
    assert summary["params"] == model_stats(10, 1.0).params
