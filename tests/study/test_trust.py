"""Notebook 06's assessments: calibration with a temperature fitted on the run's own validation split,
accuracy under corruptions, read back when nothing changed, and pairs of runs that differ in one setting."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from wrnlib import TrainConfig, load_cifar10, test_subset, train_val_split
from wrnlib import checkpoints, runfolder
from wrnlib.engine import evaluate
from wrnlib.model import WideResNet
from wrnlib.study import collect, report, trust
from wrnlib.study.trust import assessment, calibration

SETTINGS = trust.Settings(corruption_images=60, kinds=("contrast", "gaussian_noise"), severities=(1, 5),
                          precision="fp32")


@pytest.fixture(scope="module")
def sample():
    return load_cifar10("sample")


def _run_folder(folder, name="tiny", **config):
    config = TrainConfig(**{"name": name, "out_dir": str(folder), "depth": 10, "width": 1.0, "val_size": 100,
                            "seed": 3} | config).validate()
    config.run_dir.mkdir(parents=True)
    config.save(config.run_dir / runfolder.CONFIG)
    torch.manual_seed(0)
    checkpoints.save_fp16(WideResNet(10, 1.0, 10), config.run_dir / runfolder.MODEL_FP16)
    return config.run_dir


def test_assessment_scores_the_model_and_fits_the_temperature_on_its_validation_split(sample, tmp_path,
                                                                                       monkeypatch):
    run_dir = _run_folder(tmp_path / "runs")
    fitted_on = []
    real_fit = calibration.fit_temperature
    monkeypatch.setattr(calibration, "fit_temperature",
                        lambda logits, labels: fitted_on.append(labels.clone()) or real_fit(logits, labels))
    result = trust.assess(run_dir, sample, tmp_path / "trust", SETTINGS, device="cpu")

    _, val_idx = train_val_split(sample.train_labels, 100, 3)  # the run's val_size and seed
    assert len(fitted_on) == 1 and torch.equal(fitted_on[0], sample.train_labels[val_idx])
    model, _ = runfolder.load_run_model(run_dir, device="cpu")
    assert result["calibration"]["test_acc_plain"] == pytest.approx(
        evaluate(model, sample.test_images, sample.test_labels)["acc"])
    calib = result["calibration"]
    assert calib["val_nll_scaled"] <= calib["val_nll"] + 1e-9  # the fit never makes validation worse
    assert calib["temperature"] > 0 and 0 <= calib["ece_plain"] <= 1 and "ece_tta_scaled" in calib

    table = pd.read_csv(tmp_path / "trust" / "tiny" / assessment.CORRUPTIONS_CSV)
    assert list(zip(table["kind"], table["severity"])) == [("clean", 0), ("contrast", 1), ("contrast", 5),
                                                           ("gaussian_noise", 1), ("gaussian_noise", 5)]
    images, labels = test_subset(sample, 60)
    assert table["images"].unique().tolist() == [len(labels)]
    assert table.loc[0, "accuracy"] == pytest.approx(evaluate(model, images, labels)["acc"])
    assert result["mean_corruption_acc"] == pytest.approx(table.loc[1:, "accuracy"].mean())
    reliability = pd.read_csv(tmp_path / "trust" / "tiny" / assessment.RELIABILITY_CSV)
    assert set(zip(reliability["tta"], reliability["scaled"])) == {(False, False), (True, False), (False, True),
                                                                   (True, True)}
    assert (reliability.groupby(["tta", "scaled"])["count"].sum() == len(sample.test_labels)).all()


def test_assessment_is_read_back_unless_settings_or_data_changed(sample, tmp_path, monkeypatch):
    run_dir = _run_folder(tmp_path / "runs")
    first = trust.assess(run_dir, sample, tmp_path / "trust", SETTINGS, device="cpu")
    calls = []
    real_predict = assessment.predict_logits
    monkeypatch.setattr(assessment, "predict_logits", lambda *a, **k: calls.append(1) or real_predict(*a, **k))
    assert trust.assess(run_dir, sample, tmp_path / "trust", SETTINGS, device="cpu") == first and calls == []
    fewer = trust.Settings(**{**SETTINGS.__dict__, "severities": (1,)})
    again = trust.assess(run_dir, sample, tmp_path / "trust", fewer, device="cpu")
    assert calls and again["settings"]["severities"] == [1]
    stored = json.loads((tmp_path / "trust" / "tiny" / assessment.TRUST_JSON).read_text())
    assert stored["settings"]["severities"] == [1] and stored["data_checksum"] == sample.checksum


def test_runs_with_weights_and_one_setting_pairs(tmp_path):
    a = _run_folder(tmp_path / "runs", "a", label_smoothing=0.1)
    b = _run_folder(tmp_path / "runs", "b")
    c = _run_folder(tmp_path / "runs", "c", cutout=8, ema_decay=0.99)
    d = _run_folder(tmp_path / "other", "d", label_smoothing=0.1, progress=False)  # differs from a in bookkeeping
    (tmp_path / "runs" / "no-weights").mkdir()
    assert trust.runs_with_weights([tmp_path / "runs", d]) == [a, b, c, d]
    assert trust.one_setting_pairs([a, b, c, d]) == [("a", "b", "label_smoothing"), ("b", "d", "label_smoothing")]


def test_two_seeds_of_one_budgeted_recipe_pair_on_the_seed_alone(tmp_path):
    """Notebook 02 times its other seeds' step before training them (budget_step_s), the first seed's in its run."""
    first = _run_folder(tmp_path / "runs", "headline", budget_minutes=5.0)
    other = _run_folder(tmp_path / "runs", "headline-seed1", budget_minutes=5.0, budget_step_s=0.2, seed=1)
    assert trust.one_setting_pairs([first, other]) == [("headline", "headline-seed1", "seed")]
    timed_longer = _run_folder(tmp_path / "runs", "headline-seed2", budget_minutes=5.0, epochs=40, seed=2)
    fixed = _run_folder(tmp_path / "fixed", "fixed", epochs=40, seed=2)  # no budget: its epochs are a setting
    assert trust.one_setting_pairs([first, timed_longer, fixed]) == [("headline", "headline-seed2", "seed"),
                                                                      ("headline-seed2", "fixed", "budget_minutes")]


def test_summary_lists_each_assessed_model(sample, tmp_path):
    run_dir = _run_folder(tmp_path / "runs")
    trust.assess(run_dir, sample, tmp_path / collect.TRUST, SETTINGS, device="cpu")
    text = report.summary_markdown(collect.collect(tmp_path))
    section = text.split("## Calibration and robustness")[1]
    assert "| tiny | WRN-10-1 | 30 |" in section and "60 test images" in section


def test_notebook_tables_show_points_pairs_side_by_side_and_the_mean_over_severities():
    summary = pd.DataFrame({"run": ["a", "b"], "model": ["WRN-10-1"] * 2, "epochs": [3, 3],
                            "test_acc_plain": [0.91234, 0.9], "ece_plain": [0.0412, 0.0205],
                            "test_acc_tta": [0.92, 0.91], "ece_tta": [0.03, 0.01], "temperature": [1.23456, 0.9],
                            "clean_subset_acc": [0.9, 0.9]})
    table = trust.calibration_table(summary)
    assert list(table.columns) == ["run", "model", "epochs", "test_acc_plain", "ece_plain", "test_acc_tta", "ece_tta",
                                   "temperature"]  # what was assessed, in the table's order; no other columns
    assert table.loc[0, "test_acc_plain"] == 91.23 and table.loc[0, "ece_plain"] == 4.12
    assert table.loc[0, "temperature"] == 1.235 and summary.loc[0, "ece_plain"] == 0.0412  # the input is kept
    pairs = trust.one_setting_table(summary, [("b", "a", "label_smoothing")])
    assert pairs.to_dict("records") == [{"runs": "b vs a", "setting": "label_smoothing", "ECE plain": "2.05 vs 4.12",
                                         "ECE flip-TTA": "1.00 vs 3.00"}]
    assert list(trust.one_setting_table(summary, []).columns) == ["runs", "setting", "ECE plain", "ECE flip-TTA"]
    corrupted = pd.DataFrame({"run": ["a"] * 5, "kind": ["clean", "blur", "blur", "noise", "noise"],
                              "severity": [0, 1, 5, 1, 5], "accuracy": [0.9, 0.8, 0.5, 0.7, 0.4]})
    pivot = trust.corruption_table(corrupted)
    assert list(pivot.index) == [("a", "blur"), ("a", "noise")] and list(pivot.columns) == [1, 5, "mean"]
    assert pivot.loc[("a", "blur")].tolist() == [80.0, 50.0, 65.0] and pivot.loc[("a", "noise"), "mean"] == 55.0
