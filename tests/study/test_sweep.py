"""Sweeps (wrnlib.study.sweep) on both executors: a tiny 2 x 2 schedule ablation on the shipped sample.

"The same tables whichever executor ran them" means: with deterministic=True and the same threads per
run (one), every column but the timings (epoch/train/eval time, images per second) is equal; and a
sweep over finished runs reads them back, so its tables equal the first ones byte for byte.
Ray runs as a local instance with 2 CPUs, started and shut down here.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import wrnlib.config as config_module
from wrnlib import TrainConfig
from wrnlib import files, runfolder
from wrnlib.data import CIFAR10
from wrnlib.cli import main
from wrnlib.study import cluster, profiles, sweep
from wrnlib.study.collect import BY_SCHEDULE_CSV, EPOCHS_CSV, FINAL_CSV

TABLES = (EPOCHS_CSV, FINAL_CSV, BY_SCHEDULE_CSV)
TIMING = {"epoch_time_s", "train_time_s", "eval_time_s", "images_per_s", "mean_images_per_s", "train_time_s_mean"}
SHARED = dict(data_dir="sample", device="cpu", depth=10, width=1, epochs=1, batch_size=64, lr=0.05, val_size=100,
              train_limit=128, test_limit=200, warmup_epochs=0.0, deterministic=True, progress=False, tta=False)
RAY_WAIT_S = 600


def grid(folder):
    """2 schedules x 2 seeds, and a run that fails inside fit (more training images than there are)."""
    good = sweep.schedule_configs(["cosine", "onecycle"], [0, 1], folder / "runs", TrainConfig(**SHARED))
    too_many = TrainConfig(**(SHARED | {"train_limit": 10**6}))
    broken = sweep.schedule_configs(["step"], [0], folder / "runs", too_many)
    return good, broken


def deterministic_columns(path) -> pd.DataFrame:
    table = pd.read_csv(path)
    return table[[c for c in table.columns if c not in TIMING]]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "abl"
    good, broken = grid(folder)
    swept = sweep.run_sweep(good + broken, "local", cpus_per_run=1)
    sweep.write_tables(swept.done, folder, "abl")
    return folder, swept


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="the ray executor's tests need Ray: pip install -e '.[cluster]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def test_a_failed_run_is_reported_by_name_and_the_others_finish(local_sweep):
    folder, swept = local_sweep
    assert [r.config.name for r in swept.done] == ["cosine-seed0", "cosine-seed1", "onecycle-seed0", "onecycle-seed1"]
    assert list(swept.failed) == ["step-seed0"]
    assert swept.failed["step-seed0"].startswith("ValueError: train_limit=1000000 exceeds")
    with pytest.raises(sweep.SweepError, match=r"1 of 5 runs failed: step-seed0 \(ValueError"):
        swept.check()
    final = pd.read_csv(folder / FINAL_CSV)
    assert list(final["run"]) == [r.config.name for r in swept.done] and final["test_acc"].between(0, 1).all()


def test_ray_sweep_writes_the_tables_of_the_local_one(local_sweep, ray_session, tmp_path):
    folder = tmp_path / "abl"
    good, broken = grid(folder)
    swept = sweep.run_sweep(good + broken, "ray", cpus_per_run=1, timeout_s=RAY_WAIT_S)
    sweep.write_tables(swept.done, folder, "abl")

    assert swept.failed == local_sweep[1].failed  # the failure is the run's own error, by name
    assert not swept.reused and len(swept.done) == 4
    for table in TABLES:
        ours, theirs = deterministic_columns(folder / table), deterministic_columns(local_sweep[0] / table)
        assert list(ours.columns) == list(theirs.columns)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert all((folder / "runs" / c.name / "summary.json").exists() for c in good)  # the tasks wrote the folders


def test_ray_runs_past_the_deadline_are_cancelled_and_reported(ray_session, tmp_path):
    good, _ = grid(tmp_path / "abl")
    swept = sweep.run_sweep(good[:1], "ray", timeout_s=0.01)
    assert not swept.done
    assert swept.failed == {"cosine-seed0": "TimeoutError: did not finish within 0.01 s; cancelled"}


def test_a_sweep_over_finished_runs_reads_them_back_and_rewrites_the_same_tables(local_sweep, monkeypatch):
    folder, _ = local_sweep
    before = {t: (folder / t).read_bytes() for t in TABLES}
    good, _ = grid(folder)
    monkeypatch.setitem(sys.modules, "ray", None)  # nothing left to train: no task, and no Ray needed
    swept = sweep.run_sweep(good, "ray")
    assert swept.reused == [c.name for c in good] and not swept.failed
    sweep.write_tables(swept.done, folder, "abl")
    assert {t: (folder / t).read_bytes() for t in TABLES} == before


def test_sweep_command_reads_back_finished_runs_and_reports_failures(local_sweep, capsys):
    folder, _ = local_sweep
    flags = ["--schedules", "cosine", "onecycle", "--seeds", "0", "1", "--ablation", "abl", "--ablation-dir",
             str(folder.parent), "--data-dir", "sample", "--device", "cpu", "--depth", "10", "--width", "1",
             "--epochs", "1", "--batch-size", "64", "--lr", "0.05", "--val-size", "100", "--test-limit", "200",
             "--warmup-epochs", "0", "--deterministic", "--no-tta"]
    assert main(["sweep", *flags, "--train-limit", "128"]) == 0
    assert "4 runs: 0 trained, 4 read back, 0 failed" in capsys.readouterr().out
    # other settings under the same names: every run is refused, by name, and the command says so
    assert main(["sweep", *flags, "--train-limit", "64"]) == 1
    out = capsys.readouterr().out
    assert "4 failed" in out and "FAILED onecycle-seed1: ValueError:" in out and "exists with other settings" in out


def test_the_ray_executor_without_ray_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    with pytest.raises(ValueError, match=r"pip install 'wrnlib\[cluster\]'"):
        sweep.run_sweep(grid(tmp_path)[0], "ray")
    with pytest.raises(ValueError, match="unknown executor 'slurm'; choose one of: local, ray"):
        sweep.run_sweep(grid(tmp_path)[0], "slurm")


def test_gpu_shares(tmp_path):
    configs, cuda = grid(tmp_path)[0], [TrainConfig(name="c", device="cuda")]
    assert cluster.gpu_share(None, configs, 0.0) == 0.0  # device cpu
    assert cluster.gpu_share(None, [TrainConfig(name="a")], 2.0) == 1.0  # device auto on a GPU cluster
    assert cluster.gpu_share(0.5, configs, 1.0) == 0.5
    for share, runs, gpus, needle in [(1.5, configs, 4.0, "a whole number"), (-1.0, configs, 4.0, "a whole number"),
                                      (0.0, cuda, 4.0, "ask for device cuda"), (2.0, configs, 1.0, "has 1")]:
        with pytest.raises(ValueError, match=needle):
            cluster.gpu_share(share, runs, gpus)


def test_profile_settings_are_the_ablation_notebooks():
    quick = sweep.profile_settings("quick")
    assert quick["schedules"] == ["cosine", "onecycle"] and quick["seeds"] == [0, 1]
    assert quick["ablation_dir"] == "results/quick/ablations" and quick["executor"] == "local"
    assert "seed" not in quick  # the profile's common seed is not the ablation notebook's


def test_check_names_every_failed_run_with_its_error():
    result = sweep.SweepResult(done=[], failed={"a-seed0": "ValueError: bad", "b-seed1": "RuntimeError: NaN"})
    with pytest.raises(sweep.SweepError) as raised:
        result.check()
    assert str(raised.value) == "2 of 2 runs failed: a-seed0 (ValueError: bad); b-seed1 (RuntimeError: NaN)"
    assert sweep.SweepResult(done=["r"], failed={}).check() == ["r"]


def test_run_local_reads_back_finished_runs_and_names_the_failures(local_sweep):
    folder, swept = local_sweep
    good, broken = grid(folder)
    assert [r.config.name for r in sweep.run_local(good)] == [r.config.name for r in swept.done]
    with pytest.raises(sweep.SweepError, match=r"1 of 5 runs failed: step-seed0"):
        sweep.run_local(good + broken)
    with pytest.raises(sweep.SweepError, match="4 of 4 runs failed"):  # existing="error" is passed on to fit
        sweep.run_local(good, existing="error")


def test_sweep_command_builds_the_profiles_configs_and_passes_every_setting_on(monkeypatch, tmp_path, capsys):
    """The profile's ablation settings (and its extra_config) reach each run's config; the executor settings reach
    run_sweep; a sweep where nothing finished leaves the tables as they were, and says so."""
    seen = {}

    def fake_run_sweep(configs, executor, **kwargs):
        seen.update(configs=list(configs), executor=executor, **kwargs)
        assert files.is_locked(tmp_path / "abl" / "lr")  # the ablation folder is held while it runs
        return sweep.SweepResult(done=[], failed={c.name: "ValueError: x" for c in configs})

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    overrides = {"ablation_dir": str(tmp_path / "abl"), "ablation_name": "lr", "schedules": ["sgdr"], "seeds": [3],
                 "executor": "ray", "existing": "resume", "gpus_per_run": 0.5, "epochs": None}
    code = sweep.sweep_command("full", overrides=overrides, shared={"depth": 10}, cpus_per_run=2)
    assert code == 1
    (config,) = seen["configs"]
    profile = json.loads((Path(sweep.__file__).parent / "profiles" / "full.json").read_text())["notebooks"]["03"]
    assert (config.name, config.schedule, config.seed, config.depth) == ("sgdr-seed3", "sgdr", 3, 10)
    assert config.epochs == profile["epochs"]  # an override of None keeps the profile's value
    assert (config.batch_size, config.lr, config.warmup_epochs) == (profile["batch_size"], profile["lr"],
                                                                   profile["warmup_epochs"])
    assert config.progress is False  # a line per epoch, not a bar per run
    assert profile["extra_config"]  # the full profile sets SGDR's cycle: it must reach the config
    for key, value in profile["extra_config"].items():
        assert getattr(config, key) == value
    assert (seen["executor"], seen["existing"], seen["gpus_per_run"], seen["cpus_per_run"]) == ("ray", "resume",
                                                                                                  0.5, 2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"sweep lr: 1 runs on executor 'ray' -> {tmp_path / 'abl' / 'lr'}"
    assert out[-1] == f"no run finished: the tables in {tmp_path / 'abl' / 'lr'} were left as they were"
    assert not (tmp_path / "abl" / "lr" / FINAL_CSV).exists()


def test_sweep_command_names_the_tables_it_wrote(local_sweep, monkeypatch, capsys):
    folder, swept = local_sweep
    monkeypatch.setattr(sweep, "run_sweep", lambda configs, executor, **kwargs: swept)
    overrides = {"ablation_dir": str(folder.parent), "ablation_name": folder.name}
    assert sweep.sweep_command(None, overrides=overrides, shared={}) == 1  # the fixture's sweep has a failed run
    out = capsys.readouterr().out.splitlines()
    tables = ", ".join(str(folder / name) for name in (EPOCHS_CSV, FINAL_CSV, BY_SCHEDULE_CSV))
    assert f"wrote {tables}" in out
    assert "5 runs: 4 trained, 0 read back, 1 failed" in out


def test_the_local_executor_loads_the_data_once_logs_each_run_and_passes_its_settings(monkeypatch, tmp_path,
                                                                                     capsys):
    """Data is loaded (as the first config says) only when a run needs training, then shared; each run gets a
    numbered line, each epoch an indented one, each failure a FAILED line; existing= reaches fit."""
    good, broken = grid(tmp_path)
    configs = [good[0], replace(good[1], data_dir="elsewhere", download=True), *broken]
    finished = configs[0].run_dir
    finished.mkdir(parents=True)
    configs[0].save(finished / runfolder.CONFIG)
    (finished / runfolder.SUMMARY).write_text("{}")  # read back by fit, no data needed for it
    loaded, fitted = [], []
    monkeypatch.setattr(sweep, "load_cifar10", lambda data_dir, download: loaded.append((data_dir, download)) or "D")
    row = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_acc": 0.5, "test_acc": 0.5,
           "epoch_time_s": 1.0, "images_per_s": 10.0}

    def fake_fit(config, *, data, existing, on_epoch_end):
        fitted.append((config.name, data, existing))
        on_epoch_end(row)
        if config.schedule == "step":
            raise ValueError("no good")
        return config.name

    monkeypatch.setattr(sweep, "fit", fake_fit)
    swept = sweep.run_sweep(configs, "local", existing="resume")
    assert loaded == [("sample", False)]
    assert fitted == [("cosine-seed0", "D", "resume"), ("cosine-seed1", "D", "resume"), ("step-seed0", "D", "resume")]
    assert swept.done == ["cosine-seed0", "cosine-seed1"] and swept.reused == ["cosine-seed0"]
    assert swept.failed == {"step-seed0": "ValueError: no good"}
    epoch_line = "    " + sweep.format_epoch(row)
    assert capsys.readouterr().out.splitlines() == [
        "[1/3] cosine-seed0", epoch_line, "[2/3] cosine-seed1", epoch_line, "[3/3] step-seed0", epoch_line,
        "    FAILED step-seed0: ValueError: no good"]
    sweep.run_sweep(configs[:1], "local")  # nothing to train: nothing loaded
    assert loaded == [("sample", False)] and fitted[-1] == ("cosine-seed0", None, "reuse")


def test_profile_settings_take_the_common_settings_the_sweep_uses():
    settings = sweep.profile_settings("full")
    assert settings["device"] == "auto" and "data_dir" in settings  # TrainConfig fields from the profile's "common"
    # not TrainConfig fields, or set per run: notebook settings the sweep has no use for
    assert not {"figures_dir", "results_root", "seed"} & set(settings)


def test_profile_settings_come_from_the_profile_without_reading_the_notebooks(monkeypatch):
    """The profile alone says what the sweep runs: an install without the notebooks folder (mutmut's copy, a wheel)
    gets the same settings."""
    expected = sweep.profile_settings("quick")

    def unread(*args, **kwargs):
        raise AssertionError("the sweep's settings must not read a notebook")

    monkeypatch.setattr(profiles, "find_notebooks", unread)
    monkeypatch.setattr(profiles, "declared_parameters", unread)
    assert sweep.profile_settings("quick") == expected
    assert expected["ablation_dir"] == "results/quick/ablations" and expected["epochs"] == 2
    assert expected["device"] == "cpu"
    assert expected["data_dir"] == profiles.resolve_data_dir(profiles.load_profile("quick"))


def test_a_second_sweep_of_the_same_ablation_is_refused_saying_why(monkeypatch, tmp_path):
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: pytest.fail("a locked ablation must not run"))
    overrides = {"ablation_dir": str(tmp_path), "ablation_name": "lr"}
    with files.folder_lock(tmp_path / "lr"):
        with pytest.raises(files.FolderLockedError, match="another process is running this ablation"):
            sweep.sweep_command(None, overrides=overrides, shared={})


def test_run_local_hands_its_data_and_existing_to_fit(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(sweep, "fit", lambda config, *, data, existing, on_epoch_end: seen.append((data, existing))
                        or config.name)
    assert sweep.run_local(grid(tmp_path)[0][:1], data="D", existing="resume") == ["cosine-seed0"]
    assert seen == [("D", "resume")]


def test_describe_lists_every_failure_on_its_own_line():
    result = sweep.SweepResult(done=["x"], failed={"a": "ValueError: bad", "b": "OSError: gone"}, reused=["x"])
    assert result.describe() == ("3 runs: 0 trained, 1 read back, 2 failed\n  FAILED a: ValueError: bad\n"
                                 "  FAILED b: OSError: gone")


def test_a_sweep_refuses_bad_settings_before_training_naming_the_fix(monkeypatch, tmp_path):
    import re

    monkeypatch.setattr(sweep, "fit", lambda *a, **k: pytest.fail("nothing may train"))
    configs = grid(tmp_path)[0]
    for kwargs, message in (
            (dict(executor="slurm"), "unknown executor 'slurm'; choose one of: local, ray"),
            (dict(existing="keep"), "existing must be one of error, resume, reuse; got 'keep'"),
            (dict(cpus_per_run=0), "cpus_per_run must be > 0; got 0")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            sweep.run_sweep(configs, **kwargs)
    with pytest.raises(ValueError, match="^two configs of the sweep write the same run folder; give each run its "
                                         "own name$"):
        sweep.run_sweep([configs[0], configs[0]])


def test_the_local_executor_is_the_default_and_trains_with_cpus_per_run_threads(monkeypatch, tmp_path):
    import torch

    threads_seen = []
    monkeypatch.setattr(sweep, "fit", lambda config, *, data, existing, on_epoch_end:
                        threads_seen.append(torch.get_num_threads()) or config.name)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert sweep.run_sweep(grid(tmp_path)[0][:1], data="D", cpus_per_run=1).done == ["cosine-seed0"]
        assert threads_seen == [1] and torch.get_num_threads() == 2  # this process's threads come back after
        sweep.run_sweep(grid(tmp_path)[0][:1], data="D")  # None: the process's own threads
        assert threads_seen == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_the_cluster_executors_outcomes_are_gathered_by_run_in_config_order(monkeypatch, tmp_path):
    """What the cluster executor hands back (run name -> ("ok", result) or ("error", message)) becomes the sweep's
    result; a finished run is not sent at all but read back here. The cluster itself is stood in for."""
    good = grid(tmp_path)[0][:3]
    finished = good[0].run_dir
    finished.mkdir(parents=True)
    good[0].save(finished / runfolder.CONFIG)
    (finished / runfolder.SUMMARY).write_text("{}")
    sent = []

    def run_on_cluster(todo, *, existing, gpus_per_run, cpus_per_run, timeout_s):
        sent.append(([c.name for c in todo], existing, gpus_per_run, cpus_per_run, timeout_s))
        return {good[1].name: ("ok", "result-1"), good[2].name: ("error", "ValueError: no good")}

    monkeypatch.setattr(cluster, "run_on_ray", run_on_cluster)
    monkeypatch.setattr(sweep, "fit", lambda config, *, existing: f"read back {config.name} ({existing})")
    swept = sweep.run_sweep(good, "ray", existing="resume", gpus_per_run=0.5, cpus_per_run=2, timeout_s=9.0)
    assert sent == [([good[1].name, good[2].name], "resume", 0.5, 2, 9.0)]
    assert swept.done == [f"read back {good[0].name} (resume)", "result-1"]
    assert swept.failed == {good[2].name: "ValueError: no good"} and swept.reused == [good[0].name]


def test_width_configs_name_each_width_and_seed_and_share_the_rest(tmp_path):
    configs = sweep.width_configs([1, 2.5], [0, 1], tmp_path, 16, TrainConfig(epochs=4, lr=0.1))
    assert [c.name for c in configs] == ["wrn16-1-seed0", "wrn16-1-seed1", "wrn16-2.5-seed0", "wrn16-2.5-seed1"]
    assert {(c.depth, c.epochs, c.lr) for c in configs} == {(16, 4, 0.1)}
    assert [c.width for c in configs] == [1.0, 1.0, 2.5, 2.5] and [c.seed for c in configs] == [0, 1, 0, 1]
    assert {c.out_dir for c in configs} == {str(tmp_path)}


def test_width_configs_over_several_depths(tmp_path):
    configs = sweep.width_configs([2], [0], tmp_path, (10, 16), TrainConfig(epochs=4))
    assert [(c.name, c.depth) for c in configs] == [("wrn10-2-seed0", 10), ("wrn16-2-seed0", 16)]


def test_profile_settings_take_the_ablations_own_settings_and_extra_config_from_common(monkeypatch):
    profile = {"common": {"executor": "ray", "seeds": [3], "extra_config": {"cutout": 8}, "figures_dir": "f",
                          "epochs": 7},
               "notebooks": {"03": {"schedules": ["cosine"]}}}
    monkeypatch.setattr(profiles, "load_profile", lambda name: profile)
    settings = sweep.profile_settings("made-up")
    assert (settings["executor"], settings["seeds"], settings["extra_config"]) == ("ray", [3], {"cutout": 8})
    assert settings["schedules"] == ["cosine"] and settings["epochs"] == 7 and "figures_dir" not in settings


def test_seed_configs_repeat_the_recipe_with_each_other_seed(tmp_path):
    base = TrainConfig(name="headline", out_dir=str(tmp_path), width=3.0, ema_decay=0.999, budget_minutes=25.0)
    configs = sweep.seed_configs(base, [1, 2])
    assert [(c.name, c.seed) for c in configs] == [("headline-seed1", 1), ("headline-seed2", 2)]
    assert all(c.to_dict() | {"name": "headline", "seed": 0} == base.to_dict() for c in configs)
    assert sweep.seed_configs(base, []) == []


@pytest.mark.parametrize("seeds", [[1, 1], [0, 1]])
def test_seed_configs_refuse_a_seed_twice(seeds):
    message = f"other seeds {seeds} repeat a seed or the run's own (seed 0): list each other seed once"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        sweep.seed_configs(TrainConfig(name="headline"), seeds)


def test_budgeted_runs_yet_to_start_have_their_steps_timed_together_in_turn(monkeypatch, tmp_path, capsys):
    """time_together: each kind of step (the config but for name, folder and seed) timed three times in turn with
    the others, and every run of that kind yet to start (no folder, or one stopped before its first checkpoint)
    given the median; finished and interrupted runs, unbudgeted ones and ones given a step time keep theirs."""
    base = TrainConfig(**(SHARED | {"budget_minutes": 1.0}))
    configs = sweep.width_configs([1, 2], [0, 1], tmp_path, [10, 16], base)  # wrn10-1, wrn10-2, wrn16-1, wrn16-2
    configs += [replace(base, name="plain", budget_minutes=0.0), replace(base, name="given", budget_step_s=9.0),
                replace(configs[0], out_dir=str(tmp_path / "elsewhere"))]  # another folder: the same step
    for config, files_ in [(configs[1], [runfolder.CONFIG]), (configs[4], [runfolder.CONFIG, runfolder.SUMMARY]),
                           (configs[5], [runfolder.CONFIG, runfolder.STATE])]:  # unstarted, finished, interrupted
        config.run_dir.mkdir(parents=True)
        for name in files_:
            (config.run_dir / name).write_text("{}")
    readings = {"wrn10-1-seed0": [0.3, 0.1, 0.2], "wrn10-2-seed0": [5.0, 4.0, 6.0], "wrn16-2-seed0": [1.0, 3.0, 2.0]}
    timed, clock = [], iter(range(10**6))
    monkeypatch.setattr(sweep, "time_step", lambda config, data: timed.append((config.name, data))
                        or readings[config.name][sum(name == config.name for name, _ in timed) - 1])
    monkeypatch.setattr(config_module.time, "strftime", lambda fmt: str(next(clock)))  # every name stamped anew
    out = sweep.time_together(configs, data="D")
    assert timed == [(name, "D") for name in ["wrn10-1-seed0", "wrn10-2-seed0", "wrn16-2-seed0"] * 3]
    assert [c.budget_step_s for c in out] == [0.2, 0.2, 5.0, 5.0, 0.0, 0.0, 2.0, 2.0, 0.0, 9.0, 0.2]
    assert [replace(c, budget_step_s=0.0) for c in out[:8] + out[10:]] == configs[:8] + configs[10:]
    assert out[8:10] == configs[8:10]
    assert capsys.readouterr().out == ("timed together, seconds per step: wrn10-1-seed0 0.200, wrn10-2-seed0 5.000, "
                                       "wrn16-2-seed0 2.000\n")
    assert sweep.time_together(out, data="D") == out and len(timed) == 9  # nothing left to time: as they are


def test_a_seed_added_to_a_budgeted_sweep_divides_its_budget_by_the_step_time_of_its_kind_begun_before(
        monkeypatch, tmp_path, capsys):
    """A run yet to start takes the step time saved by a finished or interrupted run of its kind, so that the seeds
    of one network train the same epochs however the machine runs now; a kind whose runs begun before timed their
    own step (none saved), or none begun, is timed."""
    base = TrainConfig(**(SHARED | {"budget_minutes": 1.0}))
    configs = sweep.width_configs([1, 2, 3, 4], [0, 1, 2], tmp_path, [10], base)
    # interrupted then finished (the first gives its kind's step), timed itself, unstarted, the only one finished
    saved = {0: (0.5, runfolder.STATE), 1: (0.25, runfolder.SUMMARY), 3: (0.0, runfolder.SUMMARY),
             5: (0.75, runfolder.CONFIG), 7: (1.5, runfolder.SUMMARY)}
    for i, (step_s, last) in saved.items():
        configs[i].run_dir.mkdir(parents=True)
        replace(configs[i], budget_step_s=step_s).save(configs[i].run_dir / runfolder.CONFIG)
        if last != runfolder.CONFIG:
            (configs[i].run_dir / last).write_text("{}")
    timed = []
    monkeypatch.setattr(sweep, "time_step", lambda config, data: timed.append(config.name) or 2.0)
    out = sweep.time_together(configs, data="D")
    assert timed == ["wrn10-2-seed1", "wrn10-4-seed0"] * 3
    assert [c.budget_step_s for c in out] == [0.0, 0.0, 0.5, 0.0, 2.0, 2.0, 1.5, 0.0, 1.5, 2.0, 2.0, 2.0]
    assert capsys.readouterr().out == "timed together, seconds per step: wrn10-2-seed1 2.000, wrn10-4-seed0 2.000\n"


def test_a_local_sweep_divides_the_budgets_of_its_runs_by_steps_timed_together(tmp_path, monkeypatch):
    """The local executor times the budgeted runs yet to start before training any, with the run's threads, and
    each run then trains the epochs its budget holds at that step time: the seeds of a network alike."""
    import torch

    timed = []
    monkeypatch.setattr(sweep, "time_step", lambda config, data: timed.append(
        (torch.get_num_threads(), isinstance(data, CIFAR10))) or 2 ** -4)
    base = TrainConfig(**(SHARED | {"budget_minutes": 2 ** -6, "epochs": 30}))
    configs = sweep.width_configs([1], [0, 1], tmp_path, 10, base)
    swept = sweep.run_sweep(configs, "local", cpus_per_run=1)
    assert timed == [(1, True)] * 3 and not swept.failed  # on the data the runs train on, loaded once
    for run in swept.done:  # 0.9375 s / (0.0625 s x 2 steps of 64 of the 128 images) = 7.5: 7 epochs
        env = json.loads((run.run_dir / runfolder.ENV).read_text())
        assert (run.config.budget_step_s, run.config.epochs, env["budget"]) == (
            2 ** -4, 7, {"minutes": 2 ** -6, "seconds_per_step": 2 ** -4, "epochs": 7})
