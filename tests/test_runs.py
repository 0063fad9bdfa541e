"""Run folders: their status, what fit writes there, the commit it records, and safe reading back."""
from __future__ import annotations

import errno
import json
import pickle
import re
import tempfile
from pathlib import Path

import pytest
import torch

from wrnlib import checkpoints, device, evaluation, files, runfolder
from wrnlib.config import TrainConfig


def test_status_follows_the_life_of_a_run_folder(tmp_path):
    run = tmp_path / "r"
    assert runfolder.status(run) == "absent"
    run.mkdir()
    assert runfolder.status(run) == "absent"  # an empty folder holds nothing
    (run / "notes.txt").write_text("x")
    assert runfolder.status(run) == "foreign"
    runfolder.create(TrainConfig(name="r", out_dir=str(tmp_path)), {"device": "cpu"})
    assert runfolder.status(run) == "unstarted"
    checkpoints.save({"epoch": 1}, run / runfolder.STATE)
    assert runfolder.status(run) == "interrupted"
    files.write_json(run / runfolder.SUMMARY, {})
    assert runfolder.status(run) == "finished"


def test_the_saved_config_has_no_machine_path_and_loads_where_the_folder_is(tmp_path):
    config = TrainConfig(name="r", out_dir=str(tmp_path / "far" / "away"), depth=16)
    runfolder.create(config, {"device": "cpu"})
    saved = json.loads((config.run_dir / runfolder.CONFIG).read_text())
    assert "out_dir" not in saved and saved["depth"] == 16
    moved = tmp_path / "elsewhere" / "r"
    moved.parent.mkdir()
    config.run_dir.rename(moved)
    loaded = runfolder.load_config(moved)
    assert loaded.run_dir == moved and loaded.depth == 16


def test_clearing_an_unstarted_run_keeps_other_files(tmp_path):
    config = TrainConfig(name="r", out_dir=str(tmp_path))
    runfolder.create(config, {"device": "cpu"})
    (config.run_dir / "mine.txt").write_text("keep")
    runfolder.clear_unstarted(config.run_dir)
    assert sorted(p.name for p in config.run_dir.iterdir()) == ["mine.txt"]


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    files.write_json(path, {"v": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        files.write_json(path, {"v": Unserialisable()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_checkpoints_round_trip_and_foreign_files_are_refused(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "optimizer": {}, "metrics": [{"epoch": 3}]}
    checkpoints.save(state, tmp_path / runfolder.STATE)
    loaded = checkpoints.load_checkpoint(tmp_path / runfolder.STATE)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert runfolder.checkpoint_epoch(tmp_path) == 3
    torch.save({"something": torch.zeros(1)}, tmp_path / runfolder.STATE)
    with pytest.raises(checkpoints.CheckpointError, match="not a wrnlib resume checkpoint"):
        checkpoints.load_checkpoint(tmp_path / runfolder.STATE)
    assert runfolder.checkpoint_epoch(tmp_path) is None  # unreadable: no epoch to continue from


def test_cpu_model_is_the_kernels_model_name_else_the_architecture(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45 128-Core Processor\n")
    monkeypatch.setattr(device, "Path", lambda path: info if path == "/proc/cpuinfo" else Path(path))
    assert device.cpu_model() == "AMD EPYC 9B45 128-Core Processor"
    info.unlink()  # an OS without /proc/cpuinfo
    monkeypatch.setattr(device.platform, "processor", lambda: "")
    monkeypatch.setattr(device.platform, "machine", lambda: "arm64")
    assert device.cpu_model() == "arm64 CPU"
    monkeypatch.setattr(device.platform, "processor", lambda: "arm")
    assert device.cpu_model() == "arm CPU"


def test_record_evaluation_keeps_the_training_devices_number_labelled(tmp_path):
    files.write_json(tmp_path / runfolder.SUMMARY, {"test_acc": 0.9556, "test_acc_tta": 0.9619})
    report = {"test_acc": 0.9556, "test_acc_tta": 0.9618, "device": "x86_64 CPU", "agrees": True}
    evaluation.record_evaluation(tmp_path, report)
    summary = json.loads((tmp_path / runfolder.SUMMARY).read_text())
    assert summary["test_acc"] == 0.9556 and "test_acc_on_training_device" not in summary
    assert summary["test_acc_tta"] == 0.9618 and summary["test_acc_tta_on_training_device"] == 0.9619
    assert json.loads((tmp_path / runfolder.EVALUATION).read_text()) == report
    evaluation.record_evaluation(tmp_path, report)  # again: the training device's number is not lost
    assert json.loads((tmp_path / runfolder.SUMMARY).read_text())["test_acc_tta_on_training_device"] == 0.9619


# --------------------------------------------------------------------------- small helpers that write the folder


def test_json_holds_tuples_sets_and_paths_and_refuses_the_rest(tmp_path):
    path = tmp_path / "x.json"
    files.write_json(path, {"t": (1, 2), "s": {3}, "p": tmp_path / "a"})
    assert json.loads(path.read_text()) == {"t": [1, 2], "s": [3], "p": str(tmp_path / "a")}
    with pytest.raises(TypeError, match="not JSON serialisable: complex"):
        files.write_json(path, {"z": 1j})


def test_clear_unstarted_removes_what_a_start_writes_and_nothing_else(tmp_path):
    run = tmp_path / "r"
    runfolder.create(TrainConfig(name="r", out_dir=str(tmp_path)), {"device": "cpu"})
    for name in (runfolder.METRICS, runfolder.STATE + ".tmp", runfolder.STATE, runfolder.MODEL_FP16, "notes.txt"):
        (run / name).write_text("x")
    runfolder.clear_unstarted(run)
    assert sorted(p.name for p in run.iterdir()) == sorted([runfolder.STATE, runfolder.MODEL_FP16, "notes.txt"])


def _finished(tmp_path, **summary):
    run = tmp_path / "r"
    run.mkdir()
    files.write_json(run / runfolder.SUMMARY, {"test_acc": 0.9, "test_acc_tta": 0.91, **summary})
    return run


REPORT = {"agrees": True, "test_acc": 0.9012, "test_acc_tta": 0.91, "device": "cpu", "test_images": 10_000}


def test_record_evaluation_keeps_the_report_and_the_reproduced_numbers(tmp_path):
    run = _finished(tmp_path)
    evaluation.record_evaluation(run, REPORT)
    assert files.read_json(run / runfolder.EVALUATION) == REPORT
    summary = files.read_json(run / runfolder.SUMMARY)
    # the reproduced number replaces the training device's, which stays beside it, labelled; an equal one is kept
    assert summary["test_acc"] == 0.9012 and summary["test_acc_on_training_device"] == 0.9
    assert summary["test_acc_tta"] == 0.91 and "test_acc_tta_on_training_device" not in summary
    assert summary["reproduced_by"] == {"file": runfolder.EVALUATION, "device": "cpu"}


@pytest.mark.parametrize("report, needle", [
    ({**REPORT, "agrees": False, "disagreement": "r: the recomputed test acc differs"},
     "r: the recomputed test acc differs. Nothing was recorded."),
    ({k: v for k, v in REPORT.items() if k != "agrees"}, "--record keeps a full evaluation of the run's own test "
                                                          "images with flip-TTA; drop --test-limit and --no-tta to "
                                                          "record (nothing was recorded)"),
    ({**REPORT, "test_acc_tta": None}, "drop --test-limit and --no-tta to record"),
])
def test_record_evaluation_refuses_what_it_must_not_keep_and_writes_nothing(tmp_path, report, needle):
    run = _finished(tmp_path)
    before = (run / runfolder.SUMMARY).read_bytes()
    with pytest.raises(ValueError) as raised:
        evaluation.record_evaluation(run, report)
    assert needle in str(raised.value)
    assert (run / runfolder.SUMMARY).read_bytes() == before and not (run / runfolder.EVALUATION).exists()


def test_is_locked_exactly_while_a_lock_is_held(tmp_path):
    folder = tmp_path / "r"
    assert not files.is_locked(folder)  # no lock file yet
    with files.folder_lock(folder):
        assert files.is_locked(folder)
    assert files.lock_path(folder).exists() and not files.is_locked(folder)  # the file stays, the lock does not


def test_a_folders_lock_file_is_one_for_every_spelling_of_it_in_the_machines_shared_lock_folder(tmp_path, monkeypatch):
    """Every wrnlib process (of any checkout or version) must meet at the same file for the same folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "r")
    path = files.lock_path(tmp_path / "r")
    assert files.lock_path("r") == files.lock_path(tmp_path / "link") == path != files.lock_path(tmp_path / "s")
    assert path.parent == Path(tempfile.gettempdir()) / "wrnlib-locks"
    assert re.fullmatch(r"[0-9a-f]{32}\.lock", path.name)  # a fixed-length name, whatever the folder's path


@pytest.mark.parametrize("kept", ["fp16", "state", "none"])
def test_read_result_reads_a_finished_run_back_with_the_weights_it_kept(tmp_path, monkeypatch, kept):
    from wrnlib.model import WideResNet

    real = runfolder.load_run_model
    config = TrainConfig(name="r", out_dir=str(tmp_path), depth=10, width=1)
    run = tmp_path / "r"
    runfolder.create(config, {"device": "cpu"})
    runfolder.write_metrics(run / runfolder.METRICS, [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.25,
                                             "val_loss": 2.1, "val_acc": 0.2, "test_loss": 2.2, "test_acc": 0.3}])
    files.write_json(run / runfolder.SUMMARY, {"test_acc": 0.3})
    model = WideResNet(10, 1, 10)
    if kept == "fp16":
        checkpoints.save_fp16(model, run / runfolder.MODEL_FP16)
    elif kept == "state":
        checkpoints.save({"epoch": 1, "model": model.state_dict(), "optimizer": {}, "metrics": []},
                         run / runfolder.STATE)
    asked = []  # the device the model is loaded on: the CPU, even where a GPU is visible
    monkeypatch.setattr(runfolder, "load_run_model", lambda *args, **kwargs: asked.append((args, kwargs)) or real(
        *args, **kwargs))
    result = runfolder.read_result(run)
    assert asked == ([] if kept == "none" else [((run,), {"device": "cpu"})])
    assert result.run_dir == run and result.config == runfolder.load_config(run) and result.summary == {"test_acc": 0.3}
    assert [m["test_acc"] for m in result.metrics] == [0.3]
    if kept == "none":
        assert result.model is None
        return
    assert isinstance(result.model, WideResNet) and not result.model.training
    expected = model.state_dict()
    for key, value in result.model.state_dict().items():
        want = expected[key].half().float() if kept == "fp16" and value.is_floating_point() else expected[key]
        assert value.device.type == "cpu" and torch.equal(value, want), key
    assert runfolder.read_result(run, with_model=False).model is None


def test_checkpoint_epoch_names_the_checkpoint_or_its_absence(tmp_path):
    assert runfolder.checkpoint_epoch(tmp_path) is None
    checkpoints.save({"epoch": 4, "model": {}, "optimizer": {}, "metrics": []}, tmp_path / runfolder.STATE)
    assert runfolder.checkpoint_epoch(tmp_path) == 4
    (tmp_path / runfolder.STATE).write_bytes(b"not a checkpoint")
    assert runfolder.checkpoint_epoch(tmp_path) is None  # unreadable: no epoch to continue from


@pytest.fixture
def kept_run(tmp_path):
    """A run folder with kept weights (an untrained WRN-10-1) whose config reads the shipped sample."""
    from wrnlib.model import WideResNet

    config = TrainConfig(name="kept", out_dir=str(tmp_path), depth=10, width=1, data_dir="/nowhere", test_limit=40)
    runfolder.create(config, {"device": "cpu"})
    torch.manual_seed(0)
    checkpoints.save_fp16(WideResNet(10, 1, 10), tmp_path / "kept" / runfolder.MODEL_FP16)
    return tmp_path / "kept"


@pytest.mark.parametrize("flags, needle", [
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--batch-size", "8.0"], "argument --batch-size: expected an integer >= 1, got '8.0'"),
    (["--test-limit", "-1"], "argument --test-limit: expected an integer >= 0, got -1"),
    (["--test-limit", "five"], "argument --test-limit: expected an integer >= 0, got 'five'"),
])
def test_evaluate_refuses_bad_settings_before_loading_anything(kept_run, monkeypatch, capsys, flags, needle):
    from wrnlib.cli import main

    monkeypatch.setattr(evaluation, "load_run_model", lambda *args, **kwargs: pytest.fail("loaded the run"))
    assert main(["evaluate", str(kept_run), "--device", "cpu", *flags]) == 2
    assert capsys.readouterr().err == f"error: {needle} (see `python -m wrnlib evaluate --help`)\n"


def test_evaluate_run_reads_the_test_set_it_is_given_at_the_edges_of_its_settings(kept_run):
    from wrnlib.data import load_cifar10

    sample = load_cifar10("sample", test_only=True)
    # batch size 1 and a limit of 5 are allowed; data_dir overrides the config's (which does not exist here)
    report = evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu", batch_size=1, test_limit=5, tta=False)
    assert report["test_images"] == 5 and report["test_acc_tta"] is None
    # 0 means every test image; None means the images the run was scored on (its config's test_limit)
    assert evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu", test_limit=0)["test_images"] == len(
        sample.test_labels)
    assert evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu")["test_images"] == 40
    assert report["test_data_checksum"] == sample.test_checksum
    if not torch.cuda.is_available():  # a GPU asked for where none is visible: an error, not a CPU evaluation
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            evaluation.evaluate_run(kept_run, data_dir="sample", device="cuda")


def test_every_field_of_an_evaluation_is_what_it_says(kept_run, monkeypatch, capsys):
    """evaluate_run's report, field by field, against the evaluations it asks engine for."""
    from wrnlib import engine
    from wrnlib.data import load_cifar10, test_subset

    calls, started, freed = [], [], []
    real_evaluate = engine.evaluate

    def spy(model, images, labels, **kwargs):
        result = real_evaluate(model, images, labels, **kwargs)
        calls.append((model, images, labels, kwargs, result))
        return result

    monkeypatch.setattr(evaluation, "evaluate", spy)
    monkeypatch.setattr(evaluation, "keep_freed_memory", lambda: freed.append(True))
    # a fixed commit to compare with: in CI a second call to git once answered "unknown" where the first had not
    monkeypatch.setenv("WRNLIB_GIT_COMMIT", "0123abc")
    (kept_run / runfolder.SUMMARY).write_text(json.dumps({"test_acc": 0.5, "test_acc_tta": 0.25, "test_images": 40}))
    report = evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu", batch_size=7, progress=True,
                               on_start=lambda config, images: started.append((config.name, images)))
    assert started == [("kept", 40)] and freed == [True]  # on the CPU, freed activations stay mapped
    (model, images, labels, plain_kwargs, plain), (_, _, _, flip_kwargs, flipped) = calls
    expected_images, expected_labels = test_subset(load_cifar10("sample", test_only=True), 40)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert plain_kwargs == {"batch_size": 7, "progress": "test"}
    assert flip_kwargs == {"batch_size": 7, "tta": True, "progress": "flip-TTA"}
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert report == {
        "run": str(kept_run), "device": device.device_name(torch.device("cpu")), "torch": torch.__version__,
        "git_commit": "0123abc", "test_images": 40,
        "test_data_checksum": load_cifar10("sample", test_only=True).test_checksum,
        "test_acc": plain["acc"], "test_acc_tta": flipped["acc"], "test_loss": plain["loss"],
        "recorded_test_acc": 0.5, "recorded_test_acc_tta": 0.25,
        **evaluation._agreement(kept_run, report, {"test_acc": 0.5, "test_acc_tta": 0.25}),
    }
    assert "agrees" in report
    calls.clear()
    quiet = evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu", test_limit=20, tta=False)
    assert [kwargs for *_, kwargs, _ in calls] == [{"batch_size": 500, "progress": False}]
    # other images than the run's: the recorded numbers are shown, but no verdict is given
    assert quiet["recorded_test_acc"] == 0.5 and "agrees" not in quiet and quiet["test_acc_tta"] is None
    (kept_run / runfolder.SUMMARY).write_text(json.dumps({"test_acc": 0.5, "test_images": 10}))
    assert "agrees" not in evaluation.evaluate_run(kept_run, data_dir="sample", device="cpu", tta=False)


def test_evaluate_run_reads_only_the_test_file_of_the_folder_given_or_else_the_runs_own(kept_run, tmp_path,
                                                                                       monkeypatch):
    import numpy as np

    from wrnlib.data import sample_dir

    only_test = tmp_path / "only-test"  # 50 test images and no training file at all
    only_test.mkdir()
    with np.load(sample_dir() / "test.npz") as archive:
        np.savez(only_test / "test.npz", images=archive["images"][:50], labels=archive["labels"][:50])
    given = evaluation.evaluate_run(kept_run, data_dir=str(only_test), device="cpu", test_limit=0, tta=False)
    assert given["test_images"] == 50
    config = json.loads((kept_run / runfolder.CONFIG).read_text())
    (kept_run / runfolder.CONFIG).write_text(json.dumps(config | {"data_dir": str(only_test)}))  # an older run's
    monkeypatch.setenv("CIFAR10_DIR", "sample")  # the user's data comes first: the sample's 600 test images
    assert evaluation.evaluate_run(kept_run, device="cpu", test_limit=0, tta=False)["test_images"] == 600
    monkeypatch.delenv("CIFAR10_DIR")
    own = evaluation.evaluate_run(kept_run, device="cpu", test_limit=0, tta=False)  # the folder the run names
    assert own["test_images"] == 50 and own["test_data_checksum"] == given["test_data_checksum"]
    # an older summary.json without test_images: the run's own images are assumed, and a verdict given
    unjudged = evaluation.evaluate_run(kept_run, device="cpu", tta=False)
    assert "agrees" not in unjudged  # no summary.json: nothing recorded to agree with
    (kept_run / runfolder.SUMMARY).write_text(json.dumps({"test_acc": unjudged["test_acc"]}))
    assert evaluation.evaluate_run(kept_run, device="cpu", tta=False)["agrees"] is True


def _report(acc: float, tta: float | None, images: int = 10_000, checksum: str = "a" * 64) -> dict:
    return {"test_acc": acc, "test_acc_tta": tta, "test_images": images, "test_data_checksum": checksum}


@pytest.mark.parametrize("report, summary, agrees", [
    (_report(0.9000, None), {"test_acc": 0.9010, "test_acc_tta": 0.95}, True),  # 10 of 10,000: rounding
    (_report(0.9000, 0.95), {"test_acc": 0.9011, "test_acc_tta": 0.95}, False),  # 11: more than 0.1 %
    (_report(0.9000, 0.95), {"test_acc": 0.9000, "test_acc_tta": 0.9511}, False),  # the TTA number counts too
    (_report(0.9000, 0.95), {"test_acc": 0.9000, "test_acc_tta": None}, True),  # nothing recorded to compare
    (_report(0.50, None, 600), {"test_acc": 0.50 + 2 / 600}, True),  # a small test set still allows 2 images
    (_report(0.50, None, 600), {"test_acc": 0.50 - 3 / 600}, False),
])
def test_agreement_allows_what_rounding_explains_and_no_more(tmp_path, report, summary, agrees):
    (tmp_path / runfolder.ENV).write_text(json.dumps({"test_data_checksum": "a" * 64}))
    verdict = evaluation._agreement(tmp_path, report, summary)
    assert verdict["agrees"] is agrees and set(verdict) == ({"agrees"} if agrees else {"agrees", "disagreement"})


def test_a_disagreement_says_by_how_much_and_names_its_likely_cause(tmp_path):
    report, summary = _report(0.9000, 0.9100), {"test_acc": 0.9000, "test_acc_tta": 0.9211}
    weights = f"the weights in {runfolder.MODEL_FP16} do not belong to the run that recorded it"
    said = (f"{tmp_path}: the recomputed test acc tta 91.00 % differs from the recorded 92.11 % by 111 of 10000 "
            "images, more than rounding explains (10): ")
    assert evaluation._agreement(tmp_path, report, summary)["disagreement"] == (
        said + weights + ", or the test images differ (this run's env.json has no test checksum)")
    (tmp_path / runfolder.ENV).write_text(json.dumps({"test_data_checksum": "a" * 64}))
    assert evaluation._agreement(tmp_path, report, summary)["disagreement"] == said + weights
    (tmp_path / runfolder.ENV).write_text(json.dumps({"test_data_checksum": "b" * 64}))
    assert evaluation._agreement(tmp_path, report, summary)["disagreement"] == (
        said + "the test images differ from the run's (their checksum is not the one in env.json)")


def test_the_evaluated_weights_are_the_kept_model_or_else_the_checkpoints_ema(tmp_path):
    from wrnlib.model import WideResNet

    config = TrainConfig(name="w", out_dir=str(tmp_path), depth=10, width=1, dropout=0.3)
    run = tmp_path / "w"
    runfolder.create(config, {"device": "cpu"})
    with pytest.raises(FileNotFoundError) as missing:
        runfolder.load_run_model(run)
    assert str(missing.value) == (f"{run} holds neither {runfolder.MODEL_FP16} nor {runfolder.STATE}; train with "
                                  "save_model=True (or keep the resume checkpoint) to evaluate later")
    torch.manual_seed(0)
    live, averaged, kept = WideResNet(10, 1), WideResNet(10, 1), WideResNet(10, 1)
    checkpoint = {"epoch": 1, "model": live.state_dict(), "optimizer": {}, "metrics": []}
    for ema, expected in ((None, live), ({"module": averaged.state_dict(), "updates": 5, "decay": 0.9}, averaged)):
        checkpoints.save(checkpoint | {"ema": ema}, run / runfolder.STATE)
        model, loaded_config = runfolder.load_run_model(run)  # "auto": this machine's device, the CPU here
        assert loaded_config == config and not model.training
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())
    # the run's dropout is rebuilt with the model, so that a resumed or fine-tuned model trains as it did
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.3] * 3
    checkpoints.save_fp16(kept, run / runfolder.MODEL_FP16)  # preferred over the checkpoint when both are there
    weights = runfolder.load_model_weights(run)
    for key, value in kept.state_dict().items():
        assert weights[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype), key
        assert torch.equal(weights[key], value.half().float() if value.is_floating_point() else value), key
    for not_weights in ({"fc.weight": 1.0}, [torch.zeros(1)]):
        torch.save(not_weights, run / runfolder.MODEL_FP16)
        with pytest.raises(checkpoints.CheckpointError) as wrong:
            runfolder.load_model_weights(run)
        assert str(wrong.value) == (f"{run / runfolder.MODEL_FP16} does not hold a model's weights; re-train with "
                                    "save_model=True")


def test_weights_of_another_shape_or_no_run_folder_are_named_as_such(tmp_path):
    from wrnlib.model import WideResNet

    with pytest.raises(FileNotFoundError) as no_run:
        runfolder.load_run_model(tmp_path)
    assert str(no_run.value) == (f"{tmp_path} is not a run folder (no {runfolder.CONFIG}); pass a folder such as "
                                 "results/runs/<name>")
    runfolder.create(TrainConfig(name="w", out_dir=str(tmp_path), depth=10, width=1), {"device": "cpu"})
    wider = WideResNet(10, 2)
    checkpoints.save_fp16(wider, tmp_path / "w" / runfolder.MODEL_FP16)
    with pytest.raises(RuntimeError) as torch_says:
        WideResNet(10, 1).load_state_dict(runfolder.load_model_weights(tmp_path / "w"))
    last_line = [line.strip() for line in str(torch_says.value).splitlines() if line.strip()][-1]
    assert len(last_line) > 120  # so that the cut is seen
    with pytest.raises(checkpoints.CheckpointError) as mismatch:
        runfolder.load_run_model(tmp_path / "w")
    assert str(mismatch.value) == (f"the weights in {tmp_path / 'w'} do not fit WRN-10-1 ({last_line[:120]}); the "
                                   "files of this run folder do not belong together")


def test_json_files_write_tuples_sets_and_paths_and_refuse_anything_else(tmp_path):
    files.write_json(tmp_path / "a.json", {"t": (1, 2), "s": {3}, "p": Path("x") / "y"})
    assert json.loads((tmp_path / "a.json").read_text()) == {"t": [1, 2], "s": [3], "p": "x/y"}
    with pytest.raises(TypeError, match="^not JSON serialisable: object$"):
        files.write_json(tmp_path / "b.json", {"o": object()})


class _Crafted:
    """An object a checkpoint must never hold: loading it would run the pickle's code."""


REFUSED = ("refusing to load {}: it is not a plain tensor file, or it is truncated or corrupt ({}); nothing in it was "
           "run. Delete it, or re-train the run")
UNREADABLE = ("cannot read {}: it is truncated or corrupt ({}); delete it and resume from an earlier copy, or "
              "re-train the run")


def _load_error(path) -> str:
    with pytest.raises(checkpoints.CheckpointError) as raised:
        checkpoints.safe_torch_load(path)
    return str(raised.value)


def test_safe_torch_load_gives_back_tensors_and_refuses_a_pickle_that_asks_for_code(tmp_path, monkeypatch):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(checkpoints.safe_torch_load(good)["w"], torch.arange(3.0))
    assert _load_error(tmp_path / "missing.pt") == f"{tmp_path / 'missing.pt'} does not exist"
    crafted = tmp_path / "crafted.pt"
    torch.save({"w": _Crafted()}, crafted)
    start, end = REFUSED.format(crafted, "Unsupported global: GLOBAL ").split("Unsupported global: GLOBAL ")
    said = _load_error(crafted)  # refused, not run: the detail names the class it asked for
    assert said.startswith(start + "Unsupported global: GLOBAL ") and said.endswith(end)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert re.fullmatch(re.escape(REFUSED.format(garbage, "@")).replace("@", r"Unsupported operand \d+"),
                        _load_error(garbage))

    def unpickling_error(*args, **kwargs):
        raise pickle.UnpicklingError("worded in a way the message does not look for")

    monkeypatch.setattr(torch, "load", unpickling_error)
    assert _load_error(garbage) == REFUSED.format(garbage, "not a checkpoint")


def test_safe_torch_load_names_a_damaged_file_with_the_first_line_of_what_went_wrong(tmp_path):
    """Whatever torch's reader raises for damaged bytes (the type and wording vary between torch versions), the
    error is a CheckpointError naming the file and the first line of torch's message, cut at 160 characters, or
    its type when it has none: a truncated zip (a RuntimeError), an empty file, and an unpickler's IndexError."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    for name, content in (("truncated.pt", good.read_bytes()[:200]), ("empty.pt", b""), ("popped.pt", b"}(.")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(Exception) as torch_says:
            torch.load(path, weights_only=True)
        said = _load_error(path)
        if isinstance(torch_says.value, pickle.UnpicklingError):
            assert said.startswith(f"refusing to load {path}: "), said
            continue
        text = str(torch_says.value).strip()
        assert said == UNREADABLE.format(path, text.splitlines()[0][:160] if text else type(torch_says.value).__name__)


def test_a_resume_checkpoint_without_model_weights_is_named_when_its_weights_are_asked_for(tmp_path):
    torch.save({"epoch": 1, "model": {"w": "not a tensor"}, "optimizer": {}, "metrics": []}, tmp_path / runfolder.STATE)
    with pytest.raises(checkpoints.CheckpointError) as raised:
        runfolder.load_model_weights(tmp_path)
    assert str(raised.value) == (f"{tmp_path / runfolder.STATE} does not hold a model's weights; "
                                 "re-train with save_model=True")


_NO_SPACE = OSError(errno.ENOSPC, "No space left on device")
# torch.save reports a short write as a RuntimeError from its zip writer, over several lines
_SHORT_WRITE = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nframe #0: ...")


@pytest.mark.parametrize("error, reason, code", [
    (_NO_SPACE, "No space left on device", errno.ENOSPC),
    (_SHORT_WRITE, "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0", None),
])
def test_a_failed_write_leaves_no_partial_file_keeps_the_previous_one_and_says_why(tmp_path, error, reason, code):
    path = tmp_path / "state.pt"

    def fails_half_way(f):
        assert f.name == str(path) + ".tmp"  # written beside it under the name clear_unstarted knows
        f.write(b"partial")
        raise error

    advice = "free disk space or check the folder's permissions"
    with pytest.raises(OSError) as raised:
        files.write_atomic(path, fails_half_way)
    assert (raised.value.errno, raised.value.strerror) == (code, f"could not write {path} ({reason}); nothing was "
                                                                 f"written; {advice}")
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(OSError) as raised:
        files.write_atomic(path, fails_half_way)
    assert raised.value.strerror == f"could not write {path} ({reason}); the previous file is intact; {advice}"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"] and path.read_bytes() == b"old"


def test_a_write_into_a_missing_folder_says_so(tmp_path):
    path = tmp_path / "gone" / "config.json"
    with pytest.raises(OSError) as raised:
        files.write_json(path, {"a": 1})
    assert (raised.value.errno, raised.value.strerror) == (errno.ENOENT, (
        f"could not write {path} (No such file or directory); nothing was written; free disk space or check the "
        f"folder's permissions"))


def test_a_run_folder_that_fails_to_start_leaves_what_was_there_before(tmp_path):
    config = TrainConfig(name="r", out_dir=str(tmp_path))
    unwritable_env = {"device": object()}  # env.json cannot hold it: the start fails after config.json
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        runfolder.create(config, unwritable_env)
    assert not config.run_dir.exists()  # made by the start, so removed with it
    config.run_dir.mkdir()
    with pytest.raises(TypeError):
        runfolder.create(config, unwritable_env)
    assert config.run_dir.is_dir() and list(config.run_dir.iterdir()) == []  # there before: kept, emptied


def test_json_and_metrics_are_written_for_readable_diffs(tmp_path):
    files.write_json(tmp_path / "a.json", {"a": [1]})
    assert (tmp_path / "a.json").read_bytes() == b'{\n  "a": [\n    1\n  ]\n}\n'  # two-space indent, final newline
    runfolder.write_metrics(tmp_path / runfolder.METRICS, [{"epoch": 1, "train_loss": 0.123456789}])
    written = (tmp_path / runfolder.METRICS).read_bytes()
    assert b"\r" not in written  # Unix line ends, as git keeps them
    assert b",0.123457," in written and b"0.1234567" not in written  # six significant digits
