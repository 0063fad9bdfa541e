"""scripts/cpu_recipe.py: each trial changes only its own settings of the baseline, and the table ranks the finished
trials on validation without showing the test set."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from wrnlib import TrainConfig

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cpu_recipe", REPO / "scripts" / "cpu_recipe.py")
recipe = sys.modules["cpu_recipe"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


def test_each_trial_is_the_baseline_with_its_own_settings_at_the_same_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe, "OUT", tmp_path)
    baseline = recipe.config("baseline", 30.0).to_dict()
    assert (baseline["budget_minutes"], baseline["val_size"], baseline["seed"]) == (30.0, 5000, 0)
    for name, (_, changes) in recipe.TRIALS.items():
        trial = recipe.config(name, 30.0).to_dict()
        differs = {k for k in trial if trial[k] != baseline[k]} - {"name"}
        assert differs == set(changes), name
        assert trial["name"] == name and trial["out_dir"] == str(tmp_path / "runs")
    again = recipe.config("ema", 30.0, seed=1).to_dict()
    assert {k for k in again if again[k] != baseline[k]} == {"name", "ema_decay", "seed"}
    assert (again["name"], again["seed"]) == ("ema-seed1", 1)


def _finished(folder: Path, name: str, val: float, epochs: int, seed: int = 0, seconds: float = 1795) -> None:
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    TrainConfig(name=name, epochs=epochs, seed=seed).save(run_dir / "config.json")
    (run_dir / "summary.json").write_text(json.dumps({"final_val_acc": val, "test_acc": 0.5,
                                                      "train_time_s": seconds}))
    (run_dir / "env.json").write_text(json.dumps({"device": "a cpu"}))


def test_the_table_ranks_finished_trials_on_validation_with_their_gain_and_names_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe, "OUT", tmp_path)
    for name, val, epochs in (("baseline", 0.90, 20), ("ema", 0.912, 20), ("ls0", 0.8955, 21)):
        _finished(tmp_path / "runs", name, val, epochs)
    (tmp_path / "runs" / "cutout8").mkdir()  # started, nothing in it yet
    # two seeds of wrn16-3 rank on their mean (seed 0 alone would rank first); its unfinished seed 2 is left out
    _finished(tmp_path / "runs", "wrn16-3", 0.92, 14)
    _finished(tmp_path / "runs", "wrn16-3-seed1", 0.9, 15, seed=1, seconds=1770)
    (tmp_path / "runs" / "wrn16-3-seed2").mkdir()
    lines = recipe.table().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| trial")]
    assert rows == [
        "| ema | an EMA of the weights (decay 0.999) is evaluated | 0 | 20 | 29.9 min | 91.20 % | +1.20 points "
        "| a cpu |",
        "| wrn16-3 | WRN-16-3 (wider) | 0, 1 | 14 / 15 | 29.9 / 29.5 min | 91.00 % (92.00, 90.00) | +1.00 points "
        "| a cpu |",
        "| baseline | the CPU headline's recipe | 0 | 20 | 29.9 min | 90.00 % | – | a cpu |",
        "| ls0 | no label smoothing | 0 | 21 | 29.9 min | 89.55 % | -0.45 points | a cpu |"]
    assert "50.00" not in "\n".join(lines)  # the test set is not shown
    assert lines[-1] == "Not finished yet: ls0.2, cutout8, batch256, momentum, wd1e-3, wrn16-3+ema."


def test_trials_trains_each_chosen_trial_with_each_seed_reusing_finished_runs_then_writes_the_table(monkeypatch,
                                                                                                     tmp_path):
    monkeypatch.setattr(recipe, "OUT", tmp_path)
    trained = []
    monkeypatch.setattr(recipe, "fit", lambda c, existing: trained.append((c.name, c.seed, c.budget_minutes, existing)))
    assert recipe.main(["trials", "--minutes", "12", "--only", "ema", "ls0", "--seeds", "0", "1"]) == 0
    assert trained == [("ema", 0, 12.0, "reuse"), ("ema-seed1", 1, 12.0, "reuse"), ("ls0", 0, 12.0, "reuse"),
                       ("ls0-seed1", 1, 12.0, "reuse")]
    assert (tmp_path / "recipe.md").read_text() == recipe.table()
