"""What the study reads out of its runs: the ablation's reading, the width sweep and validation tables, the
summary with another study as its own section, and the figures that keep budgets and studies apart."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from wrnlib import TrainConfig  # noqa: E402
from wrnlib.study import explorer, explorer_figure, plots, reading, results, sweep  # noqa: E402


def _final(values: dict[str, list[float]], val: dict[str, list[float]] | None = None) -> pd.DataFrame:
    rows = []
    for schedule, accs in values.items():
        for seed, acc in enumerate(accs):
            rows.append({"schedule": schedule, "seed": seed, "test_acc": acc,
                         "final_val_acc": (val or values)[schedule][seed]})
    return pd.DataFrame(rows)


def test_reading_separates_gaps_beyond_the_seed_spread_from_those_within():
    final = _final({"cosine": [0.870, 0.874], "onecycle": [0.872, 0.868], "constant": [0.790, 0.800]})
    text = reading.reading_markdown(final)
    resolved = text.split("Larger than the seed spread")[1].split("\n")[0]
    within = text.split("Within the seed spread")[1].split("\n")[0]
    assert "cosine > constant (+7.70 points)" in resolved and "onecycle > constant" in resolved
    assert "cosine vs onecycle (0.20 points)" in within and "cosine" not in resolved.split(";")[-1].split(">")[1]
    assert text.index("cosine 87.20 % [87.00–87.40]") < text.index("onecycle 87.00 %") < text.index("constant")


def test_reading_ranks_validation_on_validation_accuracy_not_test():
    final = _final({"step": [0.86, 0.861], "cosine": [0.85, 0.851]}, val={"step": [0.80, 0.81], "cosine": [0.9, 0.9]})
    text = reading.reading_markdown(final)
    assert "Best on validation: **cosine**" in text  # although step is better on the test set
    assert text.index("Ranking") < text.index("step 86.05 %") < text.index("cosine 85.05 %")


def test_reading_compares_the_schedules_that_decay_to_zero_with_the_others():
    final = _final({"cosine": [0.87, 0.88], "step": [0.85, 0.86], "constant": [0.79, 0.80]})
    text = reading.reading_markdown(final, {"cosine": 0.0, "step": 0.008, "constant": 1.0})
    line = text.split("Decay to zero")[1]
    assert "cosine end at a learning rate of zero" in line and "step at 0.008, constant at 1 of the peak" in line
    assert "first group averages 87.50 %, the second 82.50 % (+5.00 points)" in line
    assert "Every seed of cosine beats every seed of the others" in line
    overlapping = reading.reading_markdown(_final({"cosine": [0.85, 0.88], "step": [0.86, 0.86]}),
                                           {"cosine": 0.0, "step": 0.008})
    assert "No decay-to-zero schedule beats every seed" in overlapping


def test_reading_of_nothing():
    assert "nothing to read" in reading.reading_markdown(pd.DataFrame(columns=["schedule", "test_acc"]))


# --------------------------------------------------------------------------- tables from run folders


def _run(folder: Path, name: str, *, device_type: str = "cpu", test_acc: float, val: float, minutes: float,
         **config) -> None:
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    TrainConfig(name=name, out_dir=str(folder), **config).save(run_dir / "config.json")
    (run_dir / "env.json").write_text(json.dumps({"device": f"a {device_type}", "device_type": device_type}))
    cfg = TrainConfig(**config)
    from wrnlib.model import param_count

    (run_dir / "summary.json").write_text(json.dumps({
        "name": name, "epochs": cfg.epochs, "params": param_count(cfg.depth, cfg.width), "test_acc": test_acc,
        "final_val_acc": val, "best_val_acc": val, "train_time_s": 60 * minutes, "test_images": 10_000}))


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "cpu"
    for k, acc in ((1, 0.70), (2, 0.80), (3, 0.84)):
        _run(root / results.WIDTH_SWEEP / "runs", f"wrn16-{k}-seed0", test_acc=acc, val=acc - 0.01, minutes=k * 2,
             depth=16, width=float(k), epochs=4)
    for schedule, acc, val in (("cosine", 0.87, 0.86), ("step", 0.88, 0.85)):
        _run(root / "ablations" / "lr_schedules" / "runs", f"{schedule}-seed0", test_acc=acc, val=val, minutes=10,
             depth=16, width=2.0, epochs=10, schedule=schedule)
    _run(root / "runs", "headline", test_acc=0.91, val=0.9, minutes=25, depth=16, width=2.0, epochs=20)
    return root


def test_width_configs_name_each_width_and_seed_and_share_the_rest(tmp_path):
    configs = sweep.width_configs([1, 2.5], [0, 1], tmp_path, 16, epochs=4, lr=0.1)
    assert [c.name for c in configs] == ["wrn16-1-seed0", "wrn16-1-seed1", "wrn16-2.5-seed0", "wrn16-2.5-seed1"]
    assert {(c.depth, c.epochs, c.lr) for c in configs} == {(16, 4, 0.1)}
    assert [c.width for c in configs] == [1.0, 1.0, 2.5, 2.5] and [c.seed for c in configs] == [0, 1, 0, 1]
    assert {c.out_dir for c in configs} == {str(tmp_path)}


def test_width_table_holds_the_width_sweep_only(study):
    table = results.width_table(results.collect(study).runs)
    assert list(table["model"]) == ["WRN-16-1", "WRN-16-2", "WRN-16-3"]  # not the ablation's WRN-16-2 runs
    assert list(table["test acc"]) == [70.0, 80.0, 84.0] and list(table["train min"]) == [2.0, 4.0, 6.0]
    assert set(table["device"]) == {"a cpu"}


def test_validation_table_ranks_by_validation_and_hides_the_test_set(study):
    folders = [study / "ablations" / "lr_schedules" / "runs", study / results.WIDTH_SWEEP / "runs"]
    table = results.validation_table(folders)
    assert list(table["run"][:2]) == ["cosine-seed0", "step-seed0"]  # step is better on test, cosine on val
    assert not any("test" in column for column in table.columns)
    assert len(table) == 5


def test_summary_gives_another_study_a_section_of_its_own(study, tmp_path):
    gpu = tmp_path / "gpu"
    _run(gpu / "runs", "big", device_type="cuda", test_acc=0.95, val=0.95, minutes=2, depth=28, width=3.5, epochs=96)
    text = results.summary_markdown(results.collect(gpu), {"CPU study": results.collect(study)})
    mine, other = text.split("## CPU study")
    assert "big" in mine and "headline" not in mine
    assert "### Training runs" in other and "headline" in other and "\n## " not in other  # headings one level down
    assert "lr_schedules: WRN-16-2, 10 epochs, batch 512, on a cpu" in other
    assert "### Width sweep" in other and "WRN-16-3" in other


# --------------------------------------------------------------------------- figures


def test_measured_panel_joins_only_a_width_sweep_of_one_budget(study):
    fig = explorer_figure.figure(explorer.describe(16, 2.0), results.collect(study).runs)
    panel = fig.axes[2]
    labels = [t.get_text() for t in panel.get_legend().get_texts()]
    assert "CPU, 4 epochs (3 runs)" in labels and "CPU, 10 epochs (2 runs)" in labels
    assert "CPU, 20 epochs (1 runs)" in labels
    joined = [line for line in panel.get_lines() if line.get_label().startswith("width sweep")]
    assert len(joined) == 1 and joined[0].get_label() == "width sweep WRN-16-k, CPU, 4 epochs"
    assert [round(y, 2) for y in joined[0].get_ydata()] == [70.0, 80.0, 84.0]


def test_studies_are_drawn_side_by_side_never_on_one_axis(study, tmp_path):
    gpu = tmp_path / "gpu"
    _run(gpu / "runs", "big", device_type="cuda", test_acc=0.95, val=0.95, minutes=2, depth=28, width=3.5, epochs=96)
    fig = plots.studies_side_by_side({"GPU": results.collect(gpu).finished_runs,
                                      "CPU": results.collect(study).finished_runs})
    gpu_ax, cpu_ax = fig.axes[:2]
    gpu_labels = [t.get_text() for t in gpu_ax.get_legend().get_texts()]
    cpu_labels = [t.get_text() for t in cpu_ax.get_legend().get_texts()]
    assert gpu_labels == ["runs: WRN-28-3.5, 96 epochs, GPU"]
    assert "width_sweep: WRN-16-3, 4 epochs, CPU" in cpu_labels and "runs: WRN-16-2, 20 epochs, CPU" in cpu_labels
    assert sum(len(c.get_offsets()) for c in gpu_ax.collections) == 1
    assert sum(len(c.get_offsets()) for c in cpu_ax.collections) == 6
