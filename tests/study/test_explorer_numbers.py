"""The width explorer's numbers, budget verdicts, and the view's table with what was measured."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from wrnlib import model_stats  # noqa: E402
from wrnlib.model import forward_flops, param_count  # noqa: E402
from wrnlib.study import collect, profiles  # noqa: E402
from wrnlib.study.explorer import numbers  # noqa: E402

# --------------------------------------------------------------------------- explorer logic


CHOICES = [(10, 1.0), (16, 2.0), (22, 0.75), (28, 3.5), (28, 3.75), (40, 2.5), (10, 1.3)]


@pytest.mark.parametrize("depth,width", CHOICES)
def test_explorer_matches_model_stats(depth, width):
    stats = model_stats(depth, width)
    choice = numbers.describe(depth, width, batch_size=256)
    assert choice.params == stats.params == param_count(depth, width)
    assert choice.forward_flops == stats.forward_flops == forward_flops(depth, width)
    assert choice.train_flops == stats.train_flops
    assert choice.stage_widths == tuple(stats.stage_widths)
    assert choice.activation_bytes_batch == 256 * stats.activation_bytes
    text = numbers.markdown(choice)
    assert f"{stats.params:,}" in text and " / ".join(map(str, stats.stage_widths)) in text


def test_budget_classification():
    assert numbers.budget_status(5_000_000) == "within"
    assert numbers.budget_status(5_000_001) == "over"
    assert numbers.describe(28, 3.5).status == "within"  # 4.48 M, the study's model
    assert numbers.describe(28, 3.75).status == "over"  # 5.13 M
    assert numbers.describe(28, 3.75, budget=6_000_000).status == "within"
    choice = numbers.describe(28, 3.5)
    assert choice.budget_fraction == pytest.approx(4_480_474 / 5_000_000)
    for depth in (10, 16, 28, 40):
        k = numbers.max_width_within(depth)
        assert model_stats(depth, k).params <= 5_000_000 < model_stats(depth, k + 0.25).params
    assert numbers.max_width_within(28) == 3.5


# --------------------------------------------------------------------------- what is known: finished runs


COMMITTED = collect.collect(profiles.REPO_ROOT / "results")


def _committed_accuracies(depth, width):
    """test_acc of the committed finished runs of WRN-depth-width, read from their summary.json."""
    found = []
    for summary_path in sorted((profiles.REPO_ROOT / "results" / "runs").glob("*/summary.json")):
        config = json.loads((summary_path.parent / "config.json").read_text())
        if (config["depth"], config["width"]) == (depth, width):
            found.append(json.loads(summary_path.read_text())["test_acc"])
    return found


def test_measured_runs_at_the_chosen_size():
    accuracies = _committed_accuracies(28, 3.5)
    assert len(accuracies) >= 2  # the two H200 runs in results/runs
    here = numbers.measured(COMMITTED.runs, 28, 3.5)
    assert list(here["test_acc"]) == sorted(accuracies, reverse=True)
    assert numbers.measured(COMMITTED.runs, 28, 3.75).empty
    assert numbers.measured(None, 28, 3.5).empty


def test_the_table_marks_exact_estimated_and_measured_numbers():
    choice = numbers.describe(28, 3.5)
    rows = {quantity: (value, kind) for quantity, value, kind in numbers.view_rows(choice, COMMITTED.runs)}
    assert rows["parameters"] == ("4,480,474 (4.48 M)", "exact")
    assert rows["activations (bf16)"][1] == "estimate"
    accuracy, kind = rows["test accuracy"]
    assert kind == "measured"
    for acc in _committed_accuracies(28, 3.5):
        assert f"{100 * acc:.2f}%" in accuracy
    assert "not the benchmark" not in accuracy  # both were scored on the full test set
    text = numbers.markdown(numbers.describe(28, 3.75), COMMITTED.runs)
    assert "| test accuracy |" in text and "unknown" in text and "%" not in text.split("| test accuracy |")[1]
    page = numbers.html(choice, COMMITTED.runs)
    assert page.startswith("<h3>WRN-28-3.5</h3>") and "a batch of 512" in page and "<i>estimate</i>" in page


def test_runs_on_the_sample_are_flagged_as_not_the_benchmark():
    runs = pd.DataFrame([{"name": "quick", "group": "runs", "status": "finished", "depth": 10, "width": 1.0,
                          "params": model_stats(10, 1.0).params, "epochs": 2, "test_acc": 0.31, "test_images": 500,
                          "data_source": "sample"}])
    text = dict((q, v) for q, v, _ in numbers.view_rows(numbers.describe(10, 1.0), runs))["test accuracy"]
    assert "31.00%" in text and "not the benchmark" in text
