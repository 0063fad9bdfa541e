"""Tables computed from collected results: the ablation's tables and their schedule comparison, the width sweep,
the validation evidence and the budgets of an ablation, each column to its digits."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from result_folders import CONFIG, SUMMARY, write_run
from wrnlib.study import collect, tables

def test_validation_table_columns_and_row_and_which_runs_it_leaves_out(study, tmp_path):
    table = tables.validation_table([study / "runs", study / "ablations" / "lr_schedules" / "runs"])
    assert list(table.columns) == ["runs in", "run", "model", "epochs", "schedule", "label smoothing",
                                   "final val acc", "train min"]
    # the unfinished run is left out; one row per finished run, best validation first
    assert len(table) == 4 and "halfway" not in set(table["run"])
    headline = table[table["run"] == "headline"].iloc[0].tolist()
    assert headline == [str(study / "runs"), "headline", "WRN-16-2.5", 18, "onecycle", 0.1, 90.03, 23.8]
    # a finished run that recorded no validation accuracy has nothing to be chosen on
    write_run(tmp_path / "more", "no-val", config=CONFIG, summary={**SUMMARY, "final_val_acc": None}, env={},
         epochs_done=18)
    write_run(tmp_path / "more", "zz-val", config=CONFIG, summary=SUMMARY, env={}, epochs_done=18)
    write_run(tmp_path / "more", "zz-better", config=CONFIG, summary={**SUMMARY, "final_val_acc": 0.95}, env={},
         epochs_done=18)
    assert list(tables.validation_table([tmp_path / "more"])["run"]) == ["zz-better", "zz-val"]


def test_ablation_budgets_name_every_distinct_value(study):
    found = collect.collect(study)
    runs = found.runs.copy()
    more = runs[runs["group"] == "ablation:lr_schedules"].iloc[:1].assign(epochs=20.0, batch_size=256.0,
                                                                          depth=16.0, width=2.5, device="A GPU")
    found.runs = pd.concat([runs, more], ignore_index=True)
    assert tables.ablation_budgets(found) == [
        "lr_schedules: WRN-10-1, WRN-16-2.5, 10, 20 epochs, batch 128, 256, on A CPU (2 cores), A GPU"]


def test_ablation_tables_from_run_results():
    from types import SimpleNamespace

    from wrnlib import TrainConfig

    metrics = [{"epoch": e, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5,
                "test_loss": 1.0, "test_acc": 0.6 + e / 100} for e in (1, 2)]
    run = SimpleNamespace(config=TrainConfig(name="cosine-seed1", schedule="cosine", seed=1), metrics=metrics,
                          summary={**SUMMARY, "epochs": 2})
    epochs, final = tables.ablation_tables([run, run], "abl")
    assert len(epochs) == 4 and list(epochs.columns) == list(collect.ABLATION_EPOCH_COLUMNS)
    assert epochs.iloc[1][["ablation", "schedule", "seed", "run", "epoch", "test_acc"]].tolist() == [
        "abl", "cosine", 1, "cosine-seed1", 2, 0.62]
    assert list(final.columns) == list(collect.ABLATION_FINAL_COLUMNS) and len(final) == 2
    assert final.iloc[0].tolist() == ["abl", "cosine", 1, "cosine-seed1", 2, 1_234_567, 0.91234, 0.9187, 0.9051,
                                      0.9003, 1428.4, 567.8, 10_000]


def _finals(rows: list[tuple[str, int, object]]) -> pd.DataFrame:
    return pd.DataFrame([{"schedule": s, "seed": seed, "run": f"{s}-{seed}", "test_acc": acc, "test_acc_tta": acc,
                          "best_val_acc": acc, "train_time_s": 100.0 if acc != "n/a" else acc}
                         for s, seed, acc in rows])


def test_the_schedule_table_by_schedule_without_an_ablation_column_and_past_a_cell_that_is_not_a_number():
    final = _finals([("cosine", 1, 0.80), ("cosine", 0, 0.82), ("cosine", 2, "n/a"), ("step", 0, 0.70)])
    table = tables.schedule_table(final)
    assert list(table.columns) == list(tables.SCHEDULE_TABLE_COLUMNS) and list(table.index) == [0, 1]
    cosine, step = table.iloc[0], table.iloc[1]
    assert (cosine["ablation"], cosine["schedule"], cosine["runs"], cosine["seeds"]) == ("", "cosine", 3, "0,1,2")
    assert cosine["test_acc_mean"] == pytest.approx(0.81) and cosine["test_acc_min"] == 0.80
    assert cosine["test_acc_std"] == pytest.approx(pd.Series([0.80, 0.82]).std(ddof=1))
    for column in ("test_acc_tta_mean", "best_val_acc_mean"):
        assert cosine[column] == pytest.approx(0.81)
    assert cosine["train_time_s_mean"] == pytest.approx(100.0)
    assert (step["schedule"], step["seeds"], step["test_acc_mean"]) == ("step", "0", 0.70)
    assert math.isnan(step["test_acc_std"])  # one seed: no spread to show


def test_write_ablation_writes_three_tables_that_read_back_as_written(tmp_path):
    final = _finals([("cosine", 0, 0.8123456789), ("cosine", 1, 0.8223456789)]).assign(ablation="abl")
    epochs = pd.DataFrame([{"ablation": "abl", "schedule": "cosine", "seed": 0, "epoch": 1, "test_acc": 0.5}])
    paths = tables.write_ablation(tmp_path / "new" / "abl", epochs, final)  # its parent does not exist yet
    assert sorted(paths) == ["by_schedule", "epochs", "final"]
    for key, table in (("epochs", epochs), ("final", final), ("by_schedule", tables.schedule_table(final))):
        assert list(pd.read_csv(paths[key]).columns) == list(table.columns), key  # no index column
    # six significant digits: enough for an accuracy, short enough to read
    assert "0.812346" in paths["final"].read_text() and "0.8123456789" not in paths["final"].read_text()
    assert "0.817346" in paths["by_schedule"].read_text() and "0.8173456789" not in paths["by_schedule"].read_text()
    assert pd.read_csv(paths["by_schedule"])["test_acc_mean"].tolist() == [0.817346]


def test_the_width_table_rounds_each_column_to_its_own_digits():
    assert list(tables.width_table(pd.DataFrame()).columns) == [
        "model", "params (M)", "seed", "epochs", "batch", "schedule", "device", "final val acc", "test acc",
        "train min", "PFLOP"]
    runs = pd.DataFrame([{"group": group, "status": "finished", "depth": 16, "width": 1.5, "seed": 0,
                          "epochs": 18, "batch_size": 128, "schedule": "cosine", "device": "cpu",
                          "params": 1_000_501, "final_val_acc": 0.123456, "test_acc": 0.654321,
                          "train_time_s": 1234.0, "train_pflop": 0.12345}
                         for group in (collect.WIDTH_SWEEP, collect.TIME_SWEEP)])
    for group in (collect.WIDTH_SWEEP, collect.TIME_SWEEP):  # each sweep's table holds its own runs
        table = tables.width_table(runs, group)
        assert len(table) == 1
        row = table.iloc[0]
        assert (row["model"], row["params (M)"], row["final val acc"], row["test acc"], row["train min"],
                row["PFLOP"]) == ("WRN-16-1.5", 1.001, 12.35, 65.43, 20.6, 0.123)


def _sweep(*runs) -> pd.DataFrame:
    return pd.DataFrame([{"group": collect.TIME_SWEEP, "status": "finished", "depth": d, "width": k, "seed": seed,
                          "final_val_acc": val, "test_acc": test} for d, k, seed, val, test in runs])


def test_the_sweeps_winner_is_read_on_validation_with_its_gap_against_the_seed_spread():
    resolved = _sweep((16, 2, 0, 0.90, 0.89), (16, 2, 1, 0.91, 0.90), (16, 4, 0, 0.88, 0.95), (16, 4, 1, 0.89, 0.95))
    assert tables.sweep_winner(resolved) == (
        "**WRN-16-2** has the best mean final validation accuracy, 90.50 % over 2 seed(s) (89.50 % on the test set); "
        "the next, WRN-16-4, is 2.00 points behind, more than the seed spread (their ranges over seeds do not "
        "overlap).")  # the test set's favourite is not the winner: settings are read on validation
    overlapping = _sweep((10, 1, 0, 0.80, 0.8), (10, 1, 1, 0.84, 0.8), (10, 2, 0, 0.81, 0.8), (10, 2, 1, 0.82, 0.8))
    assert tables.sweep_winner(overlapping).endswith(
        "the next, WRN-10-2, is 0.50 points behind, within the seed spread (their ranges over seeds overlap): not a "
        "difference these seeds resolve.")
    assert tables.sweep_winner(_sweep((10, 1, 0, 0.8, 0.8))).endswith("over 1 seed(s) (80.00 % on the test set).")
    one_seed = _sweep((10, 1, 0, 0.80, 0.8), (10, 2, 0, 0.82, 0.8))
    assert tables.sweep_winner(one_seed).endswith(
        "is 2.00 points behind (one seed: no spread to weigh the gap against).")
    assert tables.sweep_winner(resolved, collect.WIDTH_SWEEP) == "No finished runs in this sweep yet."


def test_the_width_study_draws_equal_epochs_and_equal_time_side_by_side():
    from wrnlib.study import plots

    runs = _sweep((16, 2, 0, 0.90, 0.89), (16, 4, 0, 0.88, 0.95), (10, 2, 0, 0.85, 0.86)).assign(
        params=[0.69e6, 2.7e6, 0.3e6], epochs=[30, 8, 40], budget_minutes=[15.0] * 3)
    equal_epochs = runs.assign(group=collect.WIDTH_SWEEP, epochs=4, budget_minutes=0.0)
    fig = plots.width_study(pd.concat([equal_epochs, runs]))
    left, right = fig.axes[:2]
    assert left.get_title() == "equal epochs (4 epochs)"
    assert right.get_title() == "equal training time (15 min of training)"
    assert {len(line.get_xdata()) for line in right.get_lines() if len(line.get_xdata())} >= {1, 2}  # a line per depth
    assert sorted(t.get_text() for t in right.texts) == ["30 ep", "40 ep", "8 ep"]  # what each budget held
    assert len(left.texts) == 0  # one number of epochs for all, in the title
    empty = plots.width_study(runs)
    assert empty.axes[0].get_title() == "equal epochs: no finished runs"


def test_the_validation_table_skips_a_folder_that_holds_no_run_and_rounds_to_hundredths(tmp_path):
    write_run(tmp_path / "runs", "run", config=CONFIG, summary={**SUMMARY, "final_val_acc": 0.123456}, env={},
         epochs_done=18)
    (tmp_path / "runs" / "notes").mkdir()
    table = tables.validation_table([tmp_path / "runs"])
    assert table["run"].tolist() == ["run"] and table["final val acc"].tolist() == [12.35]


def test_ablation_budgets_leave_out_a_run_whose_model_is_not_recorded(study):
    found = collect.collect(study)
    first = found.runs.index[found.runs["group"] == "ablation:lr_schedules"][0]
    found.runs.loc[first, "width"] = math.nan
    assert tables.ablation_budgets(found)[0].startswith("lr_schedules: WRN-10-1, 10 epochs")


def test_width_table_holds_the_width_sweep_only(cpu_study):
    table = tables.width_table(collect.collect(cpu_study).runs)
    assert list(table["model"]) == ["WRN-16-1", "WRN-16-2", "WRN-16-3"]  # not the ablation's WRN-16-2 runs
    assert list(table["test acc"]) == [70.0, 80.0, 84.0] and list(table["train min"]) == [2.0, 4.0, 6.0]
    assert set(table["device"]) == {"a cpu"}


def test_validation_table_ranks_by_validation_and_hides_the_test_set(cpu_study):
    folders = [cpu_study / "ablations" / "lr_schedules" / "runs", cpu_study / collect.WIDTH_SWEEP / "runs"]
    table = tables.validation_table(folders)
    assert list(table["run"][:2]) == ["cosine-seed0", "step-seed0"]  # step is better on test, cosine on val
    assert not any("test" in column for column in table.columns)
    assert len(table) == 5


def test_by_schedule_counts_the_seeds_with_a_number_and_keeps_the_ablations_order_for_equal_means():
    final = pd.DataFrame([{"schedule": s, "seed": seed, "test_acc": acc, "final_val_acc": val}
                          for s, seed, acc, val in (("step", 0, 0.8, None), ("cosine", 0, "n/a", 0.7),
                                                    ("cosine", 1, 0.8, 0.7), ("sgdr", 0, 0.9, 0.7))])
    table = tables.by_schedule(final, "test_acc")  # a missing validation number does not drop a test number
    assert list(table.index) == ["sgdr", "step", "cosine"] and table["count"].tolist() == [1, 1, 1]
    assert table.loc["step"].tolist() == [1, 80.0, 80.0, 80.0]
    assert list(tables.by_schedule(final, "final_val_acc").index) == ["cosine", "sgdr"]
    ties = [f"s{i}" for i in range(20)]  # more than numpy's unstable sort keeps in order
    many = pd.DataFrame({"schedule": ties + ["best"], "test_acc": [0.9] * 20 + [0.95]})
    assert list(tables.by_schedule(many, "test_acc").index) == ["best"] + ties


def test_sweep_winner_of_no_runs_at_all_and_a_tie_of_ranges_is_within_the_spread():
    assert tables.sweep_winner(pd.DataFrame()) == "No finished runs in this sweep yet."
    touching = _sweep((10, 1, 0, 0.82, 0.8), (10, 1, 1, 0.84, 0.8), (10, 2, 0, 0.81, 0.8), (10, 2, 1, 0.82, 0.8))
    assert tables.sweep_winner(touching).endswith("within the seed spread (their ranges over seeds overlap): not a "
                                                  "difference these seeds resolve.")


def test_a_reported_curve_takes_values_and_ranges_and_names_a_bad_point():
    curve = tables.reference_curve([[10, 62, 65], [15, 73.66], [397, 95]], "the published study")
    assert (curve.label, curve.epochs) == ("the published study", (10, 15, 397))
    assert curve.low == pytest.approx((0.62, 0.7366, 0.95)) and curve.high == pytest.approx((0.65, 0.7366, 0.95))
    assert tables.reference_curve([], "the published study") is None
    assert tables.reference_curve([[1, 0], [2.0, 100]], "").label == "reported"  # the bounds themselves are fine
    for bad in ([10], [10, 1, 2, 3], [0, 50], [2.5, 50], [10, 101], [10, -1], [10, 65, 62], [10, True], ["10", 50],
                [10, math.nan], [math.inf, 50], 10):
        with pytest.raises(ValueError, match=r"reference_points\[1\] = .* is neither \[epoch, accuracy %\] nor "
                                             r"\[epoch, low %, high %\] \(an epoch from 1, percentages from 0 to "
                                             r"100, low <= high\); fix that point"):
            tables.reference_curve([[1, 50], bad], "x")


def test_a_run_beside_a_reported_curve_at_its_epochs():
    curve = tables.reference_curve([[1, 40, 45], [2, 55.5], [5, 90]], "the study")
    metrics = pd.DataFrame({"epoch": [1, 2, 3], "test_acc": [0.4321, 0.5, 0.6]})
    assert tables.reference_table(metrics, curve).to_dict("list") == {
        "epoch": [1, 2, 5], "the study": ["40.00%–45.00%", "55.50%", "90.00%"], "this run": ["43.21%", "50.00%", "–"]}
