"""The training engine end to end on real CIFAR-10 images (CPU)."""
import contextlib
from dataclasses import replace
import json
import math
import re
import types

import pytest
import torch

import wrnlib.device as devices
import wrnlib.progress as progress
import wrnlib.train as train_module
from wrnlib import NonFiniteLossError, RunExistsError, checkpoints, device, distributed, files, fit, runfolder
from wrnlib.config import TrainConfig
from wrnlib.data import CIFAR10, DataError, load_cifar10
from wrnlib.errors import command_line
from wrnlib.model import WideResNet
from wrnlib.evaluation import evaluate_run


def tiny(tmp_path, **overrides) -> TrainConfig:
    """A WRN-10-1 on a small real subset: seconds per epoch on two cores."""
    base = dict(name="tiny", out_dir=str(tmp_path), depth=10, width=1, epochs=2, batch_size=64, lr=0.1,
                val_size=100, train_limit=256, test_limit=200, warmup_epochs=0.0, progress=False)
    return TrainConfig(**(base | overrides))


def _ctrl_c_after_epoch(n: int):
    """An on_epoch_end callback that stands in for Ctrl-C at the end of epoch ``n``."""
    def stop(row):
        if row["epoch"] == n:
            raise KeyboardInterrupt
    return stop


def test_end_to_end_training_beats_chance_and_writes_the_run_folder(real_data, tmp_path):
    full = real_data.source != "sample"  # the complete CIFAR-10 (CIFAR10_DIR), not the shipped sample
    config = tiny(tmp_path, name="e2e", epochs=5, label_smoothing=0.1, save_model=True,
                  val_size=500 if full else 200, train_limit=2500 if full else 0, test_limit=1000 if full else 0)
    seen = []
    result = fit(config, data=real_data, on_epoch_end=seen.append)

    # learns: ten classes, so chance is 10 %
    assert result.summary["test_acc"] > (0.30 if full else 0.2)
    assert result.metrics[-1]["train_loss"] < result.metrics[0]["train_loss"]

    run_dir = tmp_path / "e2e"
    assert runfolder.load_config(run_dir) == config
    env = json.loads((run_dir / runfolder.ENV).read_text())
    assert env["data_checksum"] == real_data.checksum and env["torch"] == torch.__version__
    assert {"device", "python", "torchvision", "git_commit"} <= set(env)
    rows = runfolder.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5] == [r["epoch"] for r in seen]
    assert all(0 <= r["test_acc"] <= 1 and r["lr"] >= 0 for r in rows)
    assert rows[-1]["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in rows), rel=1e-4)
    summary = json.loads((run_dir / runfolder.SUMMARY).read_text())
    assert summary["best_val_acc"] == pytest.approx(max(r["val_acc"] for r in rows), abs=1e-6)
    assert summary["test_images"] == (1000 if full else len(real_data.test_labels))
    assert summary["params"] == 77_850

    # the committed fp16 checkpoint reproduces the recorded accuracy exactly on this device
    weights = torch.load(run_dir / runfolder.MODEL_FP16, weights_only=True)
    assert weights["fc.weight"].dtype == torch.float16
    report = evaluate_run(run_dir, data_dir=real_data.source)
    assert report["test_acc"] == summary["test_acc"]
    assert report["test_acc_tta"] == summary["test_acc_tta"]


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(real_data, tmp_path):
    # SAM, EMA, CutMix, AutoAugment and dropout: every piece of state and randomness a resume must restore
    settings = dict(epochs=3, deterministic=True, optimizer="sam", ema_decay=0.9, mix="cutmix", mix_prob=0.5,
                    policy="autoaugment", policy_group=16, dropout=0.1, cutout=8)
    straight = fit(tiny(tmp_path, name="straight", **settings), data=real_data)

    config = tiny(tmp_path, name="resumed", **settings)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=_ctrl_c_after_epoch(2))
    assert torch.load(tmp_path / "resumed" / runfolder.STATE, weights_only=True)["epoch"] == 2
    resumed = fit(config, existing="resume", data=real_data)

    a = torch.load(tmp_path / "straight" / runfolder.STATE, weights_only=True)
    b = torch.load(tmp_path / "resumed" / runfolder.STATE, weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    assert [r["train_loss"] for r in straight.metrics] == [r["train_loss"] for r in resumed.metrics]
    assert straight.summary["test_acc"] == resumed.summary["test_acc"]
    assert len(runfolder.read_metrics(tmp_path / "resumed")) == 3


def test_a_budgeted_run_resumes_to_the_epochs_chosen_at_its_start(real_data, tmp_path, monkeypatch):
    chosen = []

    def fit_budget(c, *args):
        chosen.append(c.epochs)
        return replace(c, epochs=3), {"budget": {"epochs": 3}}

    monkeypatch.setattr(train_module, "fit_budget", fit_budget)
    config = tiny(tmp_path, budget_minutes=1.0, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=_ctrl_c_after_epoch(2))
    resumed = fit(config, existing="resume", data=real_data)  # asks for 2 epochs: the run's own 3 are kept
    assert chosen == [2] and resumed.config.epochs == 3 and [r["epoch"] for r in resumed.metrics] == [1, 2, 3]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(real_data, tmp_path, monkeypatch):
    real_make_step = train_module.make_train_step

    def poisoned_after_first_epoch(*args, **kwargs):
        step, calls = real_make_step(*args, **kwargs), []

        def step_with_nan(x, targets):
            calls.append(1)
            loss, logits = step(x, targets)
            return (loss * math.nan if len(calls) > 256 // 64 else loss), logits
        return step_with_nan

    monkeypatch.setattr(train_module, "make_train_step", poisoned_after_first_epoch)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*end of epoch 1.*Lower lr"):
        fit(tiny(tmp_path, epochs=3), data=real_data)
    state = torch.load(tmp_path / "tiny" / runfolder.STATE, weights_only=True)
    assert state["epoch"] == 1 and (state["config"]["name"], state["config"]["epochs"]) == ("tiny", 3)  # its config
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(runfolder.read_metrics(tmp_path / "tiny")) == 1


def test_an_existing_run_is_never_overwritten(real_data, tmp_path):
    fit(tiny(tmp_path, epochs=1), data=real_data)
    metrics = (tmp_path / "tiny" / runfolder.METRICS).read_bytes()
    with pytest.raises(RunExistsError) as error:
        fit(tiny(tmp_path, epochs=1, lr=0.05), data=real_data)
    assert str(error.value) == (f"run folder {tmp_path / 'tiny'} already exists (finished); pass existing='resume' "
                                "to continue it (a finished run is read back), or choose another name (nothing was "
                                "overwritten)")
    assert (tmp_path / "tiny" / runfolder.METRICS).read_bytes() == metrics


def _interrupted_at_step(n):
    """Stands in for make_train_step: a step that Ctrl-C stops at its ``n``-th call (counting from 1)."""
    real_make_step, calls = train_module.make_train_step, []

    def make_step(*args, **kwargs):
        step = real_make_step(*args, **kwargs)

        def interrupted(x, targets):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return step(x, targets)
        return interrupted
    return make_step


def test_resume_errors_are_specific(real_data, tmp_path):
    with pytest.raises(ValueError) as raised:
        fit(tiny(tmp_path), existing="keep", data=real_data)
    assert str(raised.value) == "existing must be one of error, resume, reuse; got 'keep'"
    with pytest.raises(FileNotFoundError, match="without existing='resume'"):
        fit(tiny(tmp_path), existing="resume", data=real_data)
    fit(tiny(tmp_path, epochs=1), data=real_data)
    with pytest.raises(ValueError) as raised:
        fit(tiny(tmp_path, epochs=1, lr=0.3, momentum=0.8), existing="resume", data=real_data)
    assert str(raised.value) == (
        f"{tmp_path / 'tiny'} exists with other settings (lr: saved 0.1 vs requested 0.3, momentum: saved 0.9 vs "
        f"requested 0.8); use the saved settings, or start a new run under another name (nothing was changed)")


def test_fit_refuses_a_run_folder_that_another_process_is_training(real_data, tmp_path):
    with files.folder_lock(tmp_path / "tiny"):  # flock: a second open of the lock file conflicts, as another process's
        with pytest.raises(files.FolderLockedError, match="^" + re.escape(f"{tmp_path / 'tiny'} is in use")):
            fit(tiny(tmp_path), data=real_data)


def test_fit_says_what_it_does_with_each_kind_of_folder_it_finds(real_data, tmp_path, monkeypatch, capsys):
    config, run_dir = tiny(tmp_path, checkpoint_every=1), tmp_path / "tiny"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError) as raised:  # a folder that is not a run
        fit(config, data=real_data, existing="reuse")
    assert str(raised.value) == (f"{run_dir} exists but is not a run folder (no {runfolder.CONFIG}); choose another "
                                 f"name or out_dir (nothing was changed)")
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]
    (run_dir / "notes.txt").unlink()

    with monkeypatch.context() as patch:  # stopped in its first epoch: no checkpoint
        patch.setattr(train_module, "make_train_step", _interrupted_at_step(1))
        with pytest.raises(KeyboardInterrupt):
            fit(config, data=real_data)
    assert runfolder.status(run_dir) == "unstarted"
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=_ctrl_c_after_epoch(1))
    assert capsys.readouterr().out == (f"{run_dir} holds a run that stopped before its first checkpoint: starting "
                                       f"it again\n\nInterrupted with 1 of 2 epochs done. The checkpoint at the end "
                                       f"of epoch 1 is intact in {run_dir}; continue with "
                                       f"`fit(config, existing='resume')` with the same config.\n")
    resumed = fit(config, data=real_data, existing="resume")
    assert capsys.readouterr().out == f"{run_dir} was interrupted: resuming it\n"
    read_back = fit(config, data=real_data, existing="resume")
    assert capsys.readouterr().out == f"{run_dir} is already finished: reading it back instead of training again\n"
    assert read_back.metrics == runfolder.read_metrics(run_dir) and len(resumed.metrics) == 2


@pytest.mark.parametrize("overrides,error,needle", [
    ({"width": 0}, ValueError, "width"),
    ({"schedule": "exp"}, ValueError, "cosine"),
    ({"batch_size": 5000}, ValueError, "batch_size"),
    ({"train_limit": 10**6}, ValueError, "train_limit"),
    ({"data_dir": "/nonexistent/cifar"}, DataError, "/nonexistent/cifar"),
    ({"cuda_graph": True}, ValueError, r"^cuda_graph=True captures the step on a CUDA device, and this run's "
                                       r"device is cpu: use cuda_graph=False, or train on a GPU$"),
    ({"cuda_graph": True, "optimizer": "sam"}, ValueError, r"^cuda_graph=True captures the SGD step, not SAM's two "
                                                           r"passes: use optimizer='sgd' or cuda_graph=False$"),
    ({"cuda_graph": True, "compile": True}, ValueError, r"^cuda_graph=True captures the eager step, and "
                                                        r"compile=True makes graphs of its own \(its mode "
                                                        r"'reduce-overhead'\): use one of them, not both$"),
])
def test_bad_input_gets_a_clear_error_before_any_training(real_data, tmp_path, overrides, error, needle):
    data = None if "data_dir" in overrides else real_data
    with pytest.raises(error, match=needle):
        fit(tiny(tmp_path, **overrides), data=data)
    assert not (tmp_path / "tiny" / runfolder.STATE).exists()


def test_warmup_starts_above_zero_and_reaches_the_peak(real_data, tmp_path, monkeypatch):
    """The lr of each step is the schedule where that step ends: >0 at the first, the peak at the last warm-up step."""
    real_make_step = train_module.make_train_step
    seen = []

    def recording(model, forward, optimizer, **kwargs):
        step = real_make_step(model, forward, optimizer, **kwargs)

        def record(x, targets):
            seen.append(optimizer.param_groups[0]["lr"])
            return step(x, targets)
        return record

    monkeypatch.setattr(train_module, "make_train_step", recording)
    fit(tiny(tmp_path, epochs=2, warmup_epochs=1.0, schedule="constant", lr=0.4), data=real_data)
    steps = 256 // 64
    assert seen[0] > 0 and seen[0] == pytest.approx(0.4 / steps)
    assert seen[steps - 1] == pytest.approx(0.4)
    assert seen[:steps] == sorted(seen[:steps]) and seen[steps:] == [pytest.approx(0.4)] * steps


def test_summary_separates_training_from_evaluation_time(real_data, tmp_path):
    result = fit(tiny(tmp_path, epochs=2), data=real_data)
    rows, summary = runfolder.read_metrics(tmp_path / "tiny"), result.summary
    assert summary["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in rows), rel=1e-4)
    assert summary["eval_time_s"] == pytest.approx(sum(r["eval_time_s"] for r in rows), rel=1e-4)
    assert all(r["eval_time_s"] > 0 for r in rows)
    assert summary["final_eval"]["precision"].startswith("fp32")


# --------------------------------------------------------------------------- what a run prints


@pytest.mark.parametrize("world, device", [(1, "auto"), (1, "cpu"), (2, "auto")])
def test_the_start_line_says_what_trains_where_and_for_how_long(monkeypatch, world, device):
    from types import SimpleNamespace

    asked = []
    monkeypatch.setattr(progress, "rough_epoch_seconds", lambda c, train, evals, dev: asked.append(
        (train, evals, dev.type)) or 48.0)
    where = devices.device_name(torch.device("cpu"))
    if device == "auto":
        where += " (device 'auto': no CUDA GPU is visible, so this runs on the CPU)"
    if world > 1:
        where = f"2 processes (gloo, 64 images each per step), each on {where}"
    config = TrainConfig(name="r", depth=16, width=2.5, epochs=7, batch_size=128, device=device)
    line = progress.start_line(config, 351, 15_000, torch.device("cpu"), "bf16 autocast (asked for)",
                               SimpleNamespace(world=world, backend="gloo"), 5)
    epoch, total = ("48 s", "4.0 min") if world == 1 else ("24 s", "2.0 min")  # the 5 epochs left
    assert line == (f"r: WRN-16-2.5, 7 epochs of 351 steps, on {where}; bf16 autocast (asked for); roughly "
                    f"{epoch} per epoch, {total} in all")
    assert asked == [(351 * 128, 15_000, "cpu")]  # one epoch's training and evaluated images, per process


def test_a_run_longer_than_half_an_hour_is_said_to_be_with_what_would_take_minutes():
    cpu = torch.device("cpu")
    big, small = TrainConfig(name="r", depth=28, width=3.5, epochs=30), TrainConfig(name="s", depth=10, width=1,
                                                                                  epochs=200)
    assert progress.long_run_warning(big, 30 * 60, cpu) == ""
    assert progress.long_run_warning(big, 9000, cpu) == (
        "\nwarning: this run will take about 2.5 h on this CPU, more than half an hour; for minutes instead, train "
        "fewer epochs or a smaller model: WRN-16-2 (depth 16 width 2) costs 6x less per image")
    with command_line():
        assert "train fewer --epochs or a smaller model: WRN-16-2 (--depth 16 --width 2)" in progress.long_run_warning(
            big, 9000, torch.device("cuda"))
    assert progress.long_run_warning(small, 3600, cpu).endswith("about 100 epochs fit in half an hour")
    assert progress.long_run_warning(replace(small, epochs=1), 7200, cpu).endswith("about 1 epochs fit in half an hour")
    assert progress.long_run_warning(replace(big, width=3.0, depth=16), 9000, torch.device("cuda")) == (
        "\nwarning: this run will take about 2.5 h on this GPU, more than half an hour; for minutes instead, train "
        "fewer epochs or a smaller model: WRN-16-2 (depth 16 width 2) costs 2x less per image")  # 2.2x the FLOPs


def test_the_estimate_measured_on_the_first_steps_follows_the_steps_after_the_first(monkeypatch):
    """The first step warms up (kernels, caches) and is left out; the next five are timed, or as many as take ten
    seconds; an evaluated image counts as a third of a trained one."""
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    config = TrainConfig(name="r", depth=16, width=2, epochs=4, batch_size=100, device="cpu")
    alone = distributed.Single(torch.device("cpu"))
    log = progress.Progress(config, steps=50, start_epoch=1, eval_images=3000, dist=alone, precision="fp32")
    for seconds in (30.0, 2.0, 2.0, 2.0, 2.0):  # the first step is slow
        now[0] += seconds
        log.step()
        assert log.measured is None
    now[0] += 2.0
    log.step()
    # 2 s a step, 50 steps: 100 s of training; evaluation 3,000 / (3 x 5,000) of it; 3 epochs left
    assert log.measured == {"epoch_train_s": 100.0, "total_s": pytest.approx(3 * 100.0 * 1.2)}
    slow = progress.Progress(config, steps=50, start_epoch=0, eval_images=0, dist=alone, precision="fp32")
    for seconds in (1.0, 6.0, 6.0):  # ten seconds reached after two timed steps
        now[0] += seconds
        slow.step()
    assert slow.measured == {"epoch_train_s": 300.0, "total_s": 1200.0}
    log.close(), slow.close()


def test_the_estimate_is_measured_after_five_fast_steps_or_exactly_ten_seconds_and_said_once(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    alone = distributed.Single(torch.device("cpu"))
    config = TrainConfig(name="r", depth=16, width=2, epochs=4, batch_size=100, device="cpu")
    monkeypatch.setattr(progress, "rough_epoch_seconds", lambda *args: 1.0)  # the start line warns of nothing
    fast = progress.Progress(config, steps=50, start_epoch=1, eval_images=0, dist=alone, precision="fp32")
    for step in range(6):  # five timed steps of 1 s, far from ten seconds
        assert fast.measured is None
        now[0] += 1.0
        fast.step()
    lines = capsys.readouterr().out.splitlines()
    assert "r: WRN-16-2, 4 epochs of 50 steps, on " in lines[0]
    assert "; fp32; roughly 1 s per epoch, 3 s in all" in lines[0]
    assert lines[-1] == ("measured on 5 steps: 50 s of training per epoch, about 2.5 min for the 3 epochs with their "
                         "evaluations")
    edge = progress.Progress(replace(config, budget_minutes=1.5), steps=50, start_epoch=0, eval_images=0, dist=alone,
                             precision="bf16")
    assert "r: WRN-16-2, 4 epochs (what 90 s of training fits, timed here) of 50 steps" in capsys.readouterr().out
    for seconds in (1.0, 5.0, 5.0):  # exactly ten seconds after two timed steps
        now[0] += seconds
        edge.step()
    assert edge.measured == {"epoch_train_s": 250.0, "total_s": 1000.0}
    capsys.readouterr()
    for warned in (False, True):  # a run longer than half an hour is warned of once: at the start, or here
        monkeypatch.setattr(progress, "rough_epoch_seconds", lambda *args: 3600.0 if warned else 1.0)
        long = progress.Progress(config, steps=50, start_epoch=0, eval_images=0, dist=alone, precision="fp32")
        assert long.warned is warned
        if warned:  # the start line's own warning, for the whole run at the rough rate
            assert progress.long_run_warning(config, 4 * 3600.0, alone.device) in capsys.readouterr().out
        for seconds in (1.0, 60.0):
            now[0] += seconds
            long.step()
        out = capsys.readouterr().out
        said = out[out.index("measured on"):]
        warning = "" if warned else progress.long_run_warning(config, 12000.0, alone.device)
        assert said == ("measured on 1 steps: 50.0 min of training per epoch, about 3.3 h for the 4 epochs with "
                        "their evaluations" + warning + "\n")
    for log in (fast, edge, long):
        log.close()


class _TwoProcesses(distributed.Single):
    """What fit_budget sees on one of two data-parallel processes that timed the same step."""
    world = 2

    def sum(self, tensor):
        return tensor * 2


def _timed_budget(monkeypatch, durations, process=None, **settings):
    """fit_budget over a clock under which each step takes the next of ``durations`` (three untimed, then timed),
    with the model, the EMA each step updates and the step's calls recorded."""
    calls, updated = [], []
    readings = iter([t for d in durations for t in (100.0, 100.0 + d)])  # each step's start, then its end

    def step(x, targets):
        calls.append((x.shape, targets.shape))

    class Ema:
        def update(self, model):
            updated.append(model)

    model = torch.nn.Linear(1, 1)
    monkeypatch.setattr(train_module, "build", lambda c, dist, bf16: (model, None, Ema(), step))
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: next(readings)))
    config = TrainConfig(name="b", depth=10, width=1, batch_size=4, device="cpu", **settings).validate()
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    splits = train_module.Splits(images, torch.zeros(8, dtype=torch.int64), *([images[:0], torch.zeros(0)] * 2))
    dist = process or distributed.Single(torch.device("cpu"))
    fitted, record = train_module.fit_budget(config, splits, dist, False, steps=11)
    assert updated and all(m is model for m in updated) and len(updated) == len(calls)  # the EMA is timed with it
    assert calls[0] == ((4, 3, 32, 32), (4, 10))
    return fitted, record["budget"], len(calls)


def test_a_budget_takes_the_median_of_the_timed_steps_after_three_untimed_ones(monkeypatch):
    timed = [0.9, 0.1, 0.55, 0.2, 0.6, 0.55, 0.1, 0.3, 0.7, 0.55]  # median (the 6th of ten, sorted): 0.55
    fitted, budget, calls = _timed_budget(monkeypatch, [100.0] * 3 + timed, budget_minutes=1.0, warmup_epochs=0)
    # 60 s / (0.55 s x 11 steps) = 9.9 epochs: 9 fit
    assert budget == {"minutes": 1.0, "seconds_per_step": pytest.approx(0.55, rel=1e-12), "steps_timed": 10,
                      "epochs": 9} and calls == 13  # in float64: float32 would be 0.55000001
    assert fitted.epochs == 9 and fitted.budget_minutes == 1.0
    _, budget, calls = _timed_budget(monkeypatch, [100.0] * 3 + [1.0] * 10, budget_minutes=1.0, warmup_epochs=0)
    assert (budget["steps_timed"], calls) == (5, 8)  # five seconds of timed steps are enough
    _, budget, _ = _timed_budget(monkeypatch, [1.0] * 3 + [0.55] * 10, _TwoProcesses(torch.device("cpu")),
                                 budget_minutes=1.0, warmup_epochs=0)
    assert budget["seconds_per_step"] == pytest.approx(0.55, rel=1e-12)  # the processes' mean: all choose alike


def test_time_step_times_the_step_a_budget_would_on_the_config_as_fit_trains_it(monkeypatch):
    """time_step (a local sweep's runs timed together): the median of the same timed steps a budget takes, of the
    config fitted to its data as fit fits it (the sample: batch 64), with the kernels and the memory advice the run
    will have, and the process's random state untouched."""
    calls, readings = [], iter([t for d in [9.0] * 3 + [0.3, 0.1, 0.2] * 3 + [0.9] for t in (0.0, d)])
    monkeypatch.setattr(train_module, "build", lambda c, dist, bf16: (torch.nn.Linear(1, 1), None, None, lambda x, y: (
        calls.append((x.shape, bf16, torch.are_deterministic_algorithms_enabled())))))
    kept = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: kept.append(True))
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: next(readings)))
    sample, loaded, asked = load_cifar10("sample"), [], []
    monkeypatch.setattr(train_module, "load_cifar10", lambda *args, **kwargs: loaded.append((args, kwargs)) or sample)
    monkeypatch.setattr(train_module, "choose_precision", lambda *args: asked.append(args) or (False, "fp32"))
    real_splits = train_module.make_splits
    monkeypatch.setattr(train_module, "make_splits", lambda c, data, device: asked.append(device) or real_splits(
        c, data, device))
    state = torch.get_rng_state()
    config = TrainConfig(data_dir="sample", device="cpu", precision="fp32", depth=10, width=1, batch_size=512,
                         deterministic=True)
    assert train_module.time_step(config) == 0.2  # the median of the ten timed steps
    assert calls == [((64, 3, 32, 32), False, True)] * 13 and kept == [True]
    assert loaded == [(("sample",), {"download": False})]
    assert asked == [("fp32", torch.device("cpu")), torch.device("cpu")]
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), state)
    readings = iter([t for d in [1.0] * 13 for t in (0.0, d)])
    assert train_module.time_step(config, data=sample) == 1.0 and len(loaded) == 1  # given: not loaded


def test_a_budget_too_short_trains_one_epoch_and_refuses_fewer_than_its_warmup(monkeypatch):
    fitted, budget, _ = _timed_budget(monkeypatch, [1.0] * 13, budget_minutes=0.001, warmup_epochs=1)
    assert fitted.epochs == budget["epochs"] == 1  # one epoch even when not even one fits; its warm-up is one
    with pytest.raises(ValueError) as error:
        _timed_budget(monkeypatch, [1.0] * 13, budget_minutes=0.001, warmup_epochs=2)
    assert str(error.value) == ("budget_minutes=0.001 holds 1 epoch(s) of WRN-10-1 here, fewer than its 2 warm-up "
                                "epochs; raise the budget or lower warmup_epochs")


def test_the_final_evaluation_runs_with_tf32_off_and_restores_the_processs_setting(tmp_path):
    """What `evaluate` recomputes on a CPU in fp32: TF32 (a GPU's reduced-precision matmuls) is off while the final
    model is scored, whatever the process had set, and the setting is given back after."""
    seen = []

    def score(images, labels, model=None, bf16=None, tta=False):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, bf16, tta, model))
        return {"loss": 0.5, "acc": 0.8}

    config = TrainConfig(name="f", depth=10, width=1, out_dir=str(tmp_path), tta=True)
    rows = [{"epoch": 1, "val_acc": 0.5, "test_acc": 0.8, "images_per_s": 10.0, "epoch_time_s": 1.0,
             "train_time_s": 1.0}]
    splits = train_module.Splits(*[torch.zeros(0)] * 4, torch.zeros(2, 3, 32, 32), torch.zeros(2))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        final, model = WideResNet(10, 1), WideResNet(10, 1)
        summary = train_module._final_summary(config, rows, 1.0, final, splits, score, model, torch.device("cpu"))
        assert seen == [(False, False, False, False, final), (False, False, False, True, final)]  # the final model
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        assert summary["final_eval"]["precision"] == "fp32, TF32 off" and summary["test_acc_tta"] == 0.8
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_measured_estimate_is_within_a_factor_two_of_the_epochs_that_follow(real_data, tmp_path, monkeypatch):
    logs = []

    class Recorded(progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            logs.append(self)

    monkeypatch.setattr(train_module, "Progress", Recorded)
    result = fit(tiny(tmp_path, depth=16, width=2, epochs=3, progress=True), data=real_data)
    measured = sorted(r["epoch_time_s"] for r in result.metrics)  # the median: one epoch slowed by the machine
    assert 0.5 < logs[0].measured["epoch_train_s"] / measured[1] < 2, (logs[0].measured, measured)
    # the images each epoch's evaluations score: the validation and the test images
    assert logs[0].eval_images == result.config.val_size + result.summary["test_images"]


def test_a_number_is_a_float_or_missing():
    assert progress.number("0.5") == 0.5 and progress.number(3) == 3.0
    assert [progress.number(v) for v in (None, float("nan"), "n/a", "")] == [None] * 4  # "" and NaN: an empty cell


@pytest.mark.parametrize("seconds, text", [(0.4, "under 1 s"), (1, "1 s"), (119.4, "119 s"), (120, "2.0 min"),
                                           (3600, "60.0 min"), (7199, "120.0 min"), (7200, "2.0 h"),
                                           (3.6e6, "1000.0 h"), (None, "-"), (float("nan"), "-"), ("n/a", "-")])
def test_the_one_duration_formatter(seconds, text):
    assert progress.duration(seconds) == text
    assert progress.duration(None, missing="never") == "never"


@pytest.mark.parametrize("value, text, one_digit", [(0.912, "91.20%", "91.2%"), (1, "100.00%", "100.0%"),
                                                     (None, "-", "–"), (float("nan"), "-", "–"), ("x", "-", "–")])
def test_percentages_and_their_missing_value(value, text, one_digit):
    assert progress.pct(value) == text
    assert progress.pct(value, missing="–", digits=1) == one_digit


def test_the_epoch_line():
    row = {"epoch": 3, "lr": 0.05, "train_loss": 1.2345, "train_acc": 0.5, "val_acc": 0.61234, "test_acc": math.nan,
           "epoch_time_s": 12.34, "images_per_s": 3650.4}
    assert progress.format_epoch(row, 10) == ("epoch   3/10  lr 0.0500  train 1.234 50.00%  val 61.23%  test -  "
                                                  "12.3s (3650 img/s)")
    assert "val 61.23%  test 70.00%  12.3s" in progress.format_epoch(row | {"test_acc": 0.7}, 10)
    assert progress.format_epoch(row).startswith("epoch   3  lr 0.0500")


def test_rough_eval_seconds_is_an_fp32_evaluation_of_the_images(monkeypatch):
    asked = []
    monkeypatch.setattr(progress, "rough_epoch_seconds", lambda c, train, evals, dev: asked.append(
        (c.precision, c.depth, train, evals, dev.type)) or 3.0)
    assert progress.rough_eval_seconds(TrainConfig(depth=16, precision="bf16"), 10_000, "cpu") == 3.0
    assert asked == [("fp32", 16, 0, 10_000, "cpu")]
    progress.rough_eval_seconds(TrainConfig(depth=16), 10)  # on the device "auto" picks here
    assert asked[-1][-1] == devices.resolve_device("auto").type


def test_the_interrupted_message_says_where_the_checkpoint_is_and_how_to_resume(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    assert progress.interrupted(run, 3, 10, 2) == (
        f"\nInterrupted with 3 of 10 epochs done. The checkpoint at the end of epoch 2 is intact in {run}; continue "
        f"with `fit(config, existing='resume')` with the same config.")
    with command_line():
        assert progress.interrupted(run, 3, 10, 2) == (
            f"\nInterrupted with 3 of 10 epochs done. The checkpoint at the end of epoch 2 is intact in {run}; "
            f"continue with `python -m wrnlib train --resume --name r --out-dir {tmp_path / 'runs'}`.")
    assert progress.interrupted(run, 1, 10, None) == (
        "\nInterrupted with 1 of 10 epochs done, before the run's first checkpoint: nothing to keep yet, so the same "
        "command starts it again.")


@pytest.mark.parametrize("device, precision, threads, isa, rate_key", [
    ("cuda", "auto", 2, "AVX2", None), ("cpu", "bf16", 1, "AVX512", "bf16"), ("cpu", "fp32", 3, "AVX512", "fp32"),
    ("cpu", "auto", 2, "AVX512", "bf16"), ("cpu", "fp32", 2, "AVX2", "fp32-avx2"),
    ("cpu", "fp32", 2, "DEFAULT", "fp32-avx2"), ("cpu", "bf16", 2, "AVX2", "bf16")])
def test_rough_epoch_seconds_is_the_epochs_flops_at_the_measured_rate(monkeypatch, device, precision, threads, isa,
                                                                      rate_key):
    """3 forward passes' FLOPs per training image (forward and backward), 1 per evaluated image, at the GPU's
    measured rate or the CPU's per thread in the precision chosen (fp32 at AVX2's rate without AVX512), times
    the threads."""
    from wrnlib.model import forward_flops

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    # "auto" on this (pretend) CPU: AVX512-BF16, so bf16
    monkeypatch.setattr(devices, "cpu_bf16_support", lambda: {"amx_bf16": False, "avx512_bf16": True})
    config = TrainConfig(depth=16, width=2, precision=precision)
    rate = progress.GPU_FLOPS if device == "cuda" else progress.CPU_FLOPS_PER_THREAD[rate_key] * threads
    seconds = progress.rough_epoch_seconds(config, 45_000, 10_000, torch.device(device))
    assert seconds == pytest.approx(forward_flops(16, 2) * (3 * 45_000 + 10_000) / rate)


def test_a_checkpoint_restores_the_cuda_rng_on_a_cuda_device_only(tmp_path, monkeypatch):
    """A GPU run's checkpoint keeps its GPU's CUDA RNG, which goes back into the GPU it resumes on; a CPU resume
    leaves CUDA alone.

    No GPU here, so torch.cuda.set_rng_state is recorded rather than called, and the state is told it is
    on a GPU; everything else in the checkpoint loads on the CPU either way.
    """
    from wrnlib.model import WideResNet
    from wrnlib.optim import make_sgd

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    model = WideResNet(10, 1)
    optimizer = make_sgd(model, 0.1, 0.9, True, 5e-4, False)
    config = tiny(tmp_path).to_dict()
    state = checkpoints.training_state(model, optimizer, None, cpu, [{"epoch": 3}] * 3, 1.5, config)
    assert state["epoch"] == 3 and state["metrics"] == [{"epoch": 3}] * 3 and state["train_time"] == 1.5
    assert state["rng_cuda"] is None  # a CPU run has no CUDA RNG to keep
    assert state["config"] == config  # the checkpoint says what it was trained with
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: ("the rng of", device))
    assert checkpoints.training_state(model, optimizer, None, gpu, [], 1.5, config)["rng_cuda"] == ("the rng of", gpu)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args, **kwargs: calls.append((args, kwargs)))
    gpu_rng = torch.arange(16, dtype=torch.uint8)
    assert checkpoints.restore(state | {"rng_cuda": gpu_rng}, model, optimizer, None, cpu) == ([{"epoch": 3}] * 3, 1.5)
    assert calls == []  # resumed on the CPU
    checkpoints.restore(state, model, optimizer, None, gpu)
    assert calls == []  # nothing recorded, nothing to restore
    checkpoints.restore(state | {"rng_cuda": gpu_rng}, model, optimizer, None, gpu)
    assert calls == [((gpu_rng, gpu), {})]


def test_the_summary_names_the_run_its_epochs_its_flops_and_how_the_final_evaluation_was_made(real_data, tmp_path):
    import time

    from wrnlib.model import count_forward_flops

    started = time.perf_counter()
    result = fit(tiny(tmp_path, epochs=2), data=real_data)
    wall = time.perf_counter() - started
    summary = result.summary
    assert json.loads((tmp_path / "tiny" / runfolder.SUMMARY).read_text()) == summary
    assert (summary["name"], summary["epochs"]) == ("tiny", 2)
    assert summary["forward_flops"] == count_forward_flops(result.model) > 0
    final_eval = summary["final_eval"]
    assert set(final_eval) == {"device", "precision", "time_s"}
    assert final_eval["device"] == device.device_name(torch.device("cpu"))
    assert final_eval["precision"] == "fp32, TF32 off"  # what `wrnlib evaluate` recomputes from model_fp16.pt
    assert 0 < final_eval["time_s"] < wall


def test_a_final_evaluation_that_fails_stops_the_run_saying_so(real_data, tmp_path, monkeypatch):
    real_evaluate = train_module.evaluate

    def final_loss(value, epochs):
        calls = []

        def evaluate(model, images, labels, **kwargs):
            calls.append(1)
            out = real_evaluate(model, images, labels, **kwargs)
            if len(calls) <= 2 * epochs:  # the validation and test evaluation of every epoch stay as they are
                return out
            if isinstance(value, Exception):
                raise value
            return {**out, "loss": value}
        return evaluate

    monkeypatch.setattr(train_module, "evaluate", final_loss(math.nan, epochs=2))
    with pytest.raises(train_module.NonFiniteError) as raised:
        fit(tiny(tmp_path, name="nan", epochs=2), data=real_data)
    run_dir = tmp_path / "nan"
    assert str(raised.value).startswith("test_loss became NaN or infinite in epoch 2 of run nan; the last good "
                                        "checkpoint (") and f") is kept in {run_dir}. Lower lr" in str(raised.value)
    assert not (run_dir / runfolder.SUMMARY).exists()
    monkeypatch.setattr(train_module, "evaluate", final_loss(RuntimeError("the final evaluation broke"), epochs=1))
    with pytest.raises(RuntimeError, match="^the final evaluation broke$"):  # the error itself, not a later one
        fit(tiny(tmp_path, name="broken", epochs=1), data=real_data)


class _TwoEqualRanks(distributed.Single):
    """Stands in for two data-parallel processes that see the same numbers: this one trains on the first half of
    each global batch, and an all-reduce doubles what it holds. It records what the trainer hands its hooks."""
    world = 2

    def __init__(self, device):
        super().__init__(device)
        self.rng_steps, self.synced, self.data_checked = [], [], []

    def shard(self, batch):
        return batch[: len(batch) // 2]

    def sum(self, tensor):
        return tensor * self.world

    def step_rng(self, step):
        self.rng_steps.append(step)
        return super().step_rng(step)

    def sync_buffers(self, *modules):
        self.synced.append(modules)

    def same_data(self, checksum):
        self.data_checked.append(checksum)


def test_an_epoch_reports_its_mean_step_loss_and_the_accuracy_over_the_images_it_trained_on(real_data, tmp_path,
                                                                                           monkeypatch):
    """Under a stand-in for two processes (whose finite-weights count then sums to two, not one), each epoch's row
    is the mean step loss over steps and processes and the accuracy over every image trained on; every step draws
    from its own stream, and the batch-norm statistics of the model and its EMA are synchronised every epoch."""
    real_make_step, steps_seen, built = train_module.make_train_step, [], {}

    def recording(model, *args, **kwargs):
        built["model"] = model
        step = real_make_step(model, *args, **kwargs)

        def recorded(x, targets):
            loss, logits = step(x, targets)
            steps_seen.append((float(loss), int((logits.argmax(1) == targets.argmax(1)).sum()), len(targets)))
            return loss, logits
        return recorded

    class RecordedEMA(train_module.ModelEMA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built["ema"] = self

    monkeypatch.setattr(train_module, "make_train_step", recording)
    monkeypatch.setattr(train_module, "ModelEMA", RecordedEMA)
    config, dist = tiny(tmp_path, ema_decay=0.9), _TwoEqualRanks(torch.device("cpu"))
    monkeypatch.setattr(train_module.distributed, "setup", lambda config: dist)
    rows = fit(config, data=real_data).metrics
    steps = 256 // 64
    for epoch, row in enumerate(rows):
        losses, hits, sizes = zip(*steps_seen[epoch * steps:(epoch + 1) * steps])
        assert sizes == (config.batch_size // 2,) * steps  # this process's half of every global batch
        assert row["train_loss"] == pytest.approx(sum(losses) / steps, rel=1e-5)  # mean over steps and processes
        assert row["train_acc"] == pytest.approx(sum(hits) / sum(sizes))  # over every image trained on
    assert len(rows) == 2 and len(steps_seen) == 2 * steps
    assert dist.rng_steps == list(range(2 * steps))  # each step its own stream
    assert dist.synced == [(built["model"], built["ema"].module)] * 2  # batch-norm statistics of both, every epoch


def test_summarize_field_by_field():
    from wrnlib import WideResNet
    from wrnlib.model import forward_flops

    rows = [{"epoch": 1, "val_acc": 0.50, "test_acc": 0.93, "images_per_s": 100.0, "eval_time_s": 2.0,
             "epoch_time_s": 10.0, "train_time_s": 10.0},
            {"epoch": 2, "val_acc": 0.70, "test_acc": 0.94, "images_per_s": 300.0, "eval_time_s": 3.0,
             "epoch_time_s": 10.0, "train_time_s": 20.0},
            {"epoch": 3, "val_acc": 0.60, "test_acc": 0.95, "images_per_s": 200.0,  # read back from an older run:
             "epoch_time_s": 10.0, "train_time_s": 30.0}]                          # no evaluation time recorded
    config, model = TrainConfig(name="s", depth=10, width=1), WideResNet(10, 1)
    summary = train_module.summarize(rows, config, {"acc": 0.95, "loss": 0.2}, {"acc": 0.96}, 60.0, model, 1000)
    assert (summary["test_acc"], summary["test_loss"], summary["test_acc_tta"], summary["test_images"]) == (
        0.95, 0.2, 0.96, 1000)
    assert (summary["final_val_acc"], summary["best_val_acc"], summary["best_val_epoch"]) == (0.60, 0.70, 2)
    assert (summary["train_time_s"], summary["eval_time_s"], summary["mean_images_per_s"]) == (60.0, 5.0, 200.0)
    # 1,000 + 3,000 + 2,000 images trained, each a forward and a backward pass (3 forward passes' FLOPs)
    assert summary["forward_flops"] == forward_flops(10, 1)
    assert summary["train_pflop"] == 3 * forward_flops(10, 1) * 6_000 / 1e15  # in PFLOP: 1e15 FLOPs
    # the first epoch at or above each milestone (exactly at it counts)
    assert (summary["first_crossing_94_epoch"], summary["first_crossing_94_train_time_s"]) == (2, 20.0)
    assert (summary["first_crossing_95_epoch"], summary["first_crossing_95_train_time_s"]) == (3, 30.0)
    no_val = [{**r, "val_acc": math.nan} for r in rows]  # no validation split: nothing to report, not NaN
    summary = train_module.summarize(no_val, config, {"acc": 0.9, "loss": 0.3}, None, 60.0, model, 1000)
    assert summary["final_val_acc"] is None and summary["best_val_acc"] is None and summary["test_acc_tta"] is None
    empty = train_module.summarize([], config, {"acc": 0.1, "loss": 2.3}, None, 0.0, model, 1000)
    assert empty["epochs"] == 0 and empty["mean_images_per_s"] is None and empty["first_crossing_94_epoch"] is None
    assert empty["train_pflop"] == 0


ROW_FIELDS = {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epoch_time_s",
              "train_time_s", "eval_time_s", "images_per_s"}


def test_every_field_of_an_epochs_row_is_what_it_says(real_data, tmp_path):
    import time

    seen = []
    started = time.perf_counter()
    result = fit(tiny(tmp_path, epochs=2), data=real_data, on_epoch_end=seen.append)
    wall = time.perf_counter() - started
    rows, steps = result.metrics, 256 // 64
    assert seen == rows and [set(r) for r in rows] == [ROW_FIELDS] * 2
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 < r["epoch_time_s"] < wall and 0 < r["eval_time_s"] < wall
        assert r["images_per_s"] == pytest.approx(steps * 64 / r["epoch_time_s"])
        assert math.isfinite(r["val_loss"]) and math.isfinite(r["test_loss"]) and 0 <= r["val_acc"] <= 1
    assert [r["train_time_s"] for r in rows] == pytest.approx([rows[0]["epoch_time_s"],
                                                               rows[0]["epoch_time_s"] + rows[1]["epoch_time_s"]])


def test_the_progress_bar_counts_every_step_of_the_budget_from_where_the_run_starts(real_data, tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates, self.lines = kwargs, 0, []
            bars.append(self)

        def update(self, n=1):
            self.updates += n

        def set_postfix(self, **kwargs):
            self.postfix = kwargs

        def write(self, line):
            self.lines.append(line)

        def close(self):
            pass

    monkeypatch.setattr(progress, "tqdm", Bar)
    config, steps = tiny(tmp_path, epochs=3, progress=True, checkpoint_every=1), 256 // 64
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=_ctrl_c_after_epoch(1))
    assert bars[0].kwargs == {"total": 3 * steps, "initial": 0, "desc": "tiny", "unit": "step", "mininterval": 2.0,
                              "disable": False}  # at most one refresh every two seconds: a notebook stays small
    assert bars[0].updates == steps and len(bars[0].lines) == 1  # a line per epoch, not per step
    fit(config, data=real_data, existing="resume")  # the bar of the resumed run starts where the checkpoint is
    assert (bars[1].kwargs["total"], bars[1].kwargs["initial"]) == (3 * steps, steps)
    assert bars[1].updates == 2 * steps and [line[:5] for line in bars[1].lines] == ["epoch", "measu", "epoch"]
    last = runfolder.read_metrics(tmp_path / "tiny")[-1]
    assert bars[1].postfix == {"loss": f"{last['train_loss']:.3f}", "val": f"{100 * last['val_acc']:.2f}%",
                               "test": f"{100 * last['test_acc']:.2f}%", "refresh": False}  # drawn at the next tick


def test_an_interrupted_run_says_where_it_stopped_and_how_to_continue(real_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "make_train_step", _interrupted_at_step(256 // 64 + 1))  # epoch 2's first
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(tmp_path, epochs=3, checkpoint_every=1), data=real_data)
    run_dir = tmp_path / "tiny"
    assert capsys.readouterr().out == (
        f"\nInterrupted with 1 of 3 epochs done. The checkpoint at the end of epoch 1 is intact in {run_dir}; continue "
        f"with `fit(config, existing='resume')` with the same config.\n")


def test_a_weight_that_became_infinite_stops_the_run_though_the_loss_is_finite(real_data, tmp_path, monkeypatch):
    real_make_step = train_module.make_train_step

    def poisoning_a_weight(model, *args, **kwargs):
        step, calls = real_make_step(model, *args, **kwargs), []

        def step_then_poison(x, targets):
            calls.append(1)
            loss, logits = step(x, targets)
            if len(calls) == 256 // 64:  # after the epoch's last loss: its training loss stays finite
                with torch.no_grad():
                    model.fc.bias[0] = math.inf
            return loss, logits
        return step_then_poison

    monkeypatch.setattr(train_module, "make_train_step", poisoning_a_weight)
    with pytest.raises(train_module.NonFiniteError,
                       match=r"^test_loss and val_loss and weights became NaN or infinite in epoch 1 "):
        fit(tiny(tmp_path, epochs=2), data=real_data)


def test_a_nan_validation_loss_stops_the_run_naming_its_epoch(real_data, tmp_path, monkeypatch):
    real_evaluate, calls = train_module.evaluate, []

    def nan_in_the_second_epoch(model, images, labels, **kwargs):
        out = real_evaluate(model, images, labels, **kwargs)
        calls.append(1)
        return {**out, "loss": math.nan} if len(calls) == 3 else out  # epoch 2's validation (val, test per epoch)

    monkeypatch.setattr(train_module, "evaluate", nan_in_the_second_epoch)
    with pytest.raises(train_module.NonFiniteError) as raised:
        fit(tiny(tmp_path, epochs=3, checkpoint_every=1), data=real_data)
    run_dir = tmp_path / "tiny"
    assert str(raised.value).startswith(f"val_loss became NaN or infinite in epoch 2 of run tiny; the last good "
                                        f"checkpoint (end of epoch 1) is kept in {run_dir}.")


@pytest.mark.parametrize("row, val_size, named", [
    ({"train_loss": math.nan, "lr": 0.1}, 100, "train_loss"),
    ({"train_loss": 1.0, "lr": math.inf}, 100, "lr"),
    ({"train_loss": 1.0, "lr": 0.1, "weights_finite": 0.0}, 100, "weights"),
    ({"train_loss": math.nan, "lr": 0.1, "weights_finite": 0.0}, 100, "train_loss and weights"),
    ({"val_loss": math.nan, "test_loss": 1.0}, 100, "val_loss"),
    ({"val_loss": 1.0, "test_loss": -math.inf}, 100, "test_loss"),
    ({"val_loss": math.nan, "test_loss": 1.0}, 0, None),  # no validation split: its NaN loss is no failure
    ({"train_loss": 1.0, "lr": 0.1, "weights_finite": 1.0}, 100, None),
])
def test_check_finite_names_everything_that_became_nan_or_infinite(tmp_path, row, val_size, named):
    config = TrainConfig(name="r", out_dir=str(tmp_path), val_size=val_size)
    if named is None:
        train_module.check_finite(row, 4, config)
        return
    with pytest.raises(train_module.NonFiniteError) as raised:
        train_module.check_finite(row, 4, config)
    assert str(raised.value) == (f"{named} became NaN or infinite in epoch 5 of run r; the last good checkpoint "
                                 f"(none yet) is kept in {tmp_path / 'r'}. Lower lr, add warmup_epochs, or use "
                                 "precision='fp32' to find the cause.")


def test_a_cpu_trainer_keeps_freed_memory_for_its_next_step(real_data, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1))
    fit(tiny(tmp_path, epochs=1), data=real_data)
    assert calls == [1]


def test_fit_trains_in_the_process_context_it_set_up_and_records_the_run(real_data, tmp_path, monkeypatch):
    """The trainer gets the context distributed.setup made (a stand-in for two processes here), and env.json records
    the precision and the test set's checksum beside the machine and the process count."""
    dist = _TwoEqualRanks(torch.device("cpu"))
    monkeypatch.setattr(train_module.distributed, "setup", lambda config: dist)
    config = tiny(tmp_path, epochs=1)
    result = fit(config, data=real_data)
    assert result.run_dir == config.run_dir == tmp_path / "tiny"
    assert len(dist.synced) == 1  # the epoch's batch-norm sync went through it
    env = json.loads((config.run_dir / runfolder.ENV).read_text())
    assert env["precision"] == train_module.choose_precision(config.precision, dist.device)[1]
    assert env["test_data_checksum"] == real_data.test_checksum and env["processes"] == 1
    assert dist.data_checked == [real_data.checksum]  # every process checks it loaded the same training data


def test_a_resume_rewinds_the_metrics_that_ran_ahead_of_its_checkpoint(real_data, tmp_path, monkeypatch):
    """metrics.csv is written every epoch, the checkpoint every checkpoint_every epochs: a resumed run starts at the
    checkpoint, so if it is stopped again before its next one, metrics.csv holds no epoch it will train again."""
    config = tiny(tmp_path, epochs=4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=_ctrl_c_after_epoch(3))
    assert [r["epoch"] for r in runfolder.read_metrics(config.run_dir)] == [1, 2, 3]

    monkeypatch.setattr(train_module, "make_train_step", _interrupted_at_step(1))
    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, existing="resume")
    assert [r["epoch"] for r in runfolder.read_metrics(config.run_dir)] == [1, 2]


def test_sam_keeps_its_first_backward_local_with_the_contexts_no_sync(real_data, tmp_path, monkeypatch):
    """Under DDP, SAM's perturbing backward runs inside no_sync of the forward the trainer trains with."""
    entered = []

    class NoSyncRecorded(_TwoEqualRanks):
        def no_sync(self, forward):
            entered.append(forward)

            @contextlib.contextmanager
            def local():
                entered.append("step")
                yield
            return local

    built, real_make_step = [], train_module.make_train_step
    monkeypatch.setattr(train_module, "make_train_step", lambda model, *a, **k: built.append(model) or real_make_step(
        model, *a, **k))
    config, dist = tiny(tmp_path, optimizer="sam", epochs=1), NoSyncRecorded(torch.device("cpu"))
    monkeypatch.setattr(train_module.distributed, "setup", lambda config: dist)
    fit(config, data=real_data)
    assert entered == built + ["step"] * (256 // 64)  # the forward it trains with (the model, in one process)


def test_splits_that_leave_too_few_training_images_name_the_setting_to_lower(tmp_path):
    images = torch.zeros(40, 3, 32, 32, dtype=torch.uint8)
    data = CIFAR10(images, torch.arange(40) % 10, images[:10], torch.arange(10), source="x", checksum="c")
    meta = torch.device("meta")
    for overrides, message in [
        (dict(val_size=40), "val_size=40 leaves no training images: this data set has 40; lower it"),
        (dict(val_size=10, train_limit=31), "train_limit=31 exceeds the 30 training images left after holding out "
                                            "val_size=10"),
        (dict(val_size=10, train_limit=0, batch_size=31), "batch_size=31 is larger than the 30 training images; "
                                                          "lower it"),
    ]:
        with pytest.raises(ValueError) as error:
            train_module.make_splits(tiny(tmp_path, test_limit=0, **overrides), data, meta)
        assert str(error.value) == message
    splits = train_module.make_splits(tiny(tmp_path, val_size=10, train_limit=0, test_limit=0, batch_size=30), data,
                                      meta)
    assert {t.device for t in vars(splits).values()} == {meta}  # everything moves to the training device
    assert (len(splits.train_y), len(splits.val_y)) == (30, 10)


def test_a_train_limit_or_batch_of_every_training_image_is_allowed_and_takes_them_all(real_data, tmp_path):
    cpu = torch.device("cpu")
    full = train_module.make_splits(tiny(tmp_path, train_limit=0), real_data, cpu)
    n = len(full.train_y)
    same = train_module.make_splits(tiny(tmp_path, train_limit=n, batch_size=n), real_data, cpu)
    assert torch.equal(same.train_x, full.train_x) and torch.equal(same.train_y, full.train_y)
