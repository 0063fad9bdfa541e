"""What a new user meets first: evaluate never disagrees silently, the command line fits the sample, scratch runs
stay out of git's way, estimates never read as zero, and mistakes end in one line with the right cause."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from wrnlib import evaluation, runfolder
from wrnlib.cli import main
from wrnlib.config import TrainConfig
from wrnlib.data import load_cifar10, sample_dir
from wrnlib.study import notebook
from wrnlib import fit
from wrnlib.progress import duration

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, name: str, **overrides) -> TrainConfig:
    base = dict(name=name, out_dir=str(tmp_path), data_dir="sample", depth=10, width=1, epochs=1, batch_size=64,
                val_size=100, train_limit=256, test_limit=0, warmup_epochs=0.0, progress=False, save_model=True)
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs of the same shape whose accuracies differ by far more than rounding."""
    root = tmp_path_factory.mktemp("runs")
    fit(tiny(root, "a", epochs=1, lr=0.01))
    fit(tiny(root, "b", epochs=3, lr=0.1, seed=1))
    a, b = (json.loads((root / n / runfolder.SUMMARY).read_text())["test_acc"] for n in "ab")
    assert abs(a - b) * 600 > 10, "the two runs must differ to test disagreement"
    return root


def test_weights_of_another_run_are_reported_and_never_recorded(two_runs, tmp_path, capsys):
    swapped = tmp_path / "a"
    shutil.copytree(two_runs / "a", swapped)
    shutil.copy(two_runs / "b" / runfolder.MODEL_FP16, swapped / runfolder.MODEL_FP16)
    before = (swapped / runfolder.SUMMARY).read_text()
    report = evaluation.evaluate_run(swapped, device="cpu")
    assert report["agrees"] is False and "do not belong to the run" in report["disagreement"]
    rc = main(["evaluate", str(swapped), "--device", "cpu", "--record"])
    captured = capsys.readouterr()
    assert rc == 2 and "Nothing was recorded" in captured.err and "do not belong" in captured.err
    assert (swapped / runfolder.SUMMARY).read_text() == before and not (swapped / runfolder.EVALUATION).exists()
    assert main(["evaluate", str(swapped), "--device", "cpu"]) == 1  # a plain evaluate says so too
    assert "warning:" in capsys.readouterr().err


def test_its_own_weights_agree_and_are_recorded(two_runs, tmp_path, capsys):
    own = tmp_path / "b"
    shutil.copytree(two_runs / "b", own)
    assert main(["evaluate", str(own), "--device", "cpu", "--record"]) == 0
    assert json.loads((own / runfolder.EVALUATION).read_text())["agrees"] is True


def test_other_test_images_are_named_as_the_cause(two_runs, tmp_path):
    moved = tmp_path / "a"
    shutil.copytree(two_runs / "a", moved)
    env = json.loads((moved / runfolder.ENV).read_text())
    env["test_data_checksum"] = "0" * 64  # as if the run had been scored on other images
    (moved / runfolder.ENV).write_text(json.dumps(env))
    shutil.copy(two_runs / "b" / runfolder.MODEL_FP16, moved / runfolder.MODEL_FP16)
    assert "test images differ" in evaluation.evaluate_run(moved, device="cpu")["disagreement"]


def test_the_data_to_evaluate_on_is_the_users_not_the_path_another_machine_recorded(two_runs, tmp_path, monkeypatch,
                                                                                     capsys):
    """A committed run read on another machine: its config names no folder of the machine that trained it (an older
    one may), and `evaluate` takes --data-dir, else CIFAR10_DIR, else the cache; the checksum says if it is right."""
    assert json.loads((two_runs / "b" / runfolder.CONFIG).read_text())["data_dir"] == "sample"  # a name, not a path
    elsewhere = tmp_path / "b"
    shutil.copytree(two_runs / "b", elsewhere)
    config = json.loads((elsewhere / runfolder.CONFIG).read_text())
    (elsewhere / runfolder.CONFIG).write_text(json.dumps(config | {"data_dir": "/home/someone/cifar10"}))
    monkeypatch.setenv("CIFAR10_DIR", "sample")
    assert main(["evaluate", str(elsewhere), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["agrees"] is True
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "missing"))  # the flag comes first
    assert main(["evaluate", str(elsewhere), "--device", "cpu", "--data-dir", "sample"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(elsewhere), "--device", "cpu"]) == 2
    assert "(from the CIFAR10_DIR environment variable) does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(two_runs / "b"), "--device", "cpu"]) == 0  # trained on the sample: scored on it
    assert json.loads(capsys.readouterr().out)["agrees"] is True


def test_a_new_run_records_no_folder_of_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", "sample")
    data = tmp_path / "cifar10"
    shutil.copytree(sample_dir(), data)
    fit(tiny(tmp_path / "runs", "here", data_dir=str(data), epochs=1))
    saved = json.loads((tmp_path / "runs" / "here" / runfolder.CONFIG).read_text())
    assert saved["data_dir"] is None and "out_dir" not in saved
    assert json.loads((tmp_path / "runs" / "here" / runfolder.ENV).read_text())["data_source"] == str(data)


def test_a_run_resumes_only_on_the_data_it_was_trained_on(tmp_path, capsys):
    config = tiny(tmp_path, "r", epochs=2, checkpoint_every=1)

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, on_epoch_end=stop)
    other = tmp_path / "other"
    shutil.copytree(sample_dir(), other)
    shutil.copy(sample_dir() / "test.npz", other / "train_1.npz")  # other images
    (other / "MANIFEST.json").unlink()
    metrics = (tmp_path / "r" / runfolder.METRICS).read_bytes()
    assert main(["train", "--resume", "--name", "r", "--out-dir", str(tmp_path), "--data-dir", str(other)]) == 2
    err = capsys.readouterr().err
    recorded = json.loads((tmp_path / "r" / runfolder.ENV).read_text())
    assert (f"was trained on other data than this (data checksum {load_cifar10(other).checksum[:12]}, the run's "
            f"{recorded['data_checksum'][:12]}); point --data-dir or CIFAR10_DIR at the data it was trained on "
            f"({recorded['data_source']}) (nothing was changed)") in err
    assert (tmp_path / "r" / runfolder.METRICS).read_bytes() == metrics  # nothing was changed
    assert main(["train", "--resume", "--name", "r", "--out-dir", str(tmp_path), "--data-dir", "sample"]) == 0


def test_a_run_that_recorded_no_data_checksum_resumes(tmp_path):
    """An env.json from before data checksums were recorded, or none at all: there is nothing to check against."""
    config = tiny(tmp_path, "r", epochs=3, checkpoint_every=1)
    env = tmp_path / "r" / runfolder.ENV

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, on_epoch_end=stop)
    env.write_text(json.dumps({k: v for k, v in json.loads(env.read_text()).items() if k != "data_checksum"}))
    with pytest.raises(KeyboardInterrupt):
        fit(config, existing="resume", on_epoch_end=stop)
    env.unlink()
    assert len(fit(config, existing="resume").metrics) == 3


def test_a_quick_look_reads_only_the_test_file_and_is_not_recorded(two_runs, tmp_path, capsys):
    only_test = tmp_path / "cifar10"
    only_test.mkdir()
    shutil.copy(sample_dir() / "test.npz", only_test / "test.npz")  # no training files at all
    rc = main(["evaluate", str(two_runs / "b"), "--data-dir", str(only_test), "--test-limit", "100", "--no-tta",
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0 and "on 100 test images: roughly" in captured.err.splitlines()[0]
    report = json.loads(captured.out)
    assert report["test_images"] == 100 and report["test_acc_tta"] is None and "agrees" not in report
    rc = main(["evaluate", str(two_runs / "b"), "--data-dir", str(only_test), "--no-tta", "--record",
               "--device", "cpu"])
    assert rc == 2 and "drop --test-limit and --no-tta" in capsys.readouterr().err


def test_the_readmes_sample_example_learns_and_says_what_it_fitted(tmp_path, capsys):
    """`train --data-dir sample --depth 10 --width 1 --epochs 10`, the README's example: the defaults that do not
    suit 1,200 images are fitted (5,000 validation images; batch 512, one step per epoch) and said; it learns."""
    assert main(["train", "--data-dir", "sample", "--depth", "10", "--width", "1", "--epochs", "10", "--out-dir",
                 str(tmp_path), "--name", "s", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the sample shipped with wrnlib (1,200 training images, not the benchmark): val_size "
                          "5,000 -> 200, batch_size 512 -> 64, lr 0.4 -> 0.05\n")
    config = runfolder.load_config(tmp_path / "s")
    assert (config.val_size, config.batch_size, config.lr) == (200, 64, 0.05)
    assert json.loads((tmp_path / "s" / runfolder.SUMMARY).read_text())["test_acc"] > 0.2  # chance is 0.1


def test_the_python_api_fits_the_sample_as_the_command_line_does(tmp_path, capsys):
    result = fit(TrainConfig(name="api", out_dir=str(tmp_path), data_dir="sample", depth=10, width=1, epochs=1,
                             progress=False))
    assert capsys.readouterr().out.startswith("the sample shipped with wrnlib (1,200 training images, not the "
                                              "benchmark): val_size 5,000 -> 200, batch_size 512 -> 64")
    assert (result.config.val_size, result.config.batch_size) == (200, 64)
    assert runfolder.load_config(tmp_path / "api") == result.config


def test_a_setting_given_on_the_sample_is_kept_and_its_error_names_the_fix(tmp_path, capsys):
    assert main(["train", "--data-dir", "sample", "--out-dir", str(tmp_path), "--name", "t", "--val-size", "1500",
                 "--batch-size", "32", "--depth", "10", "--width", "1", "--epochs", "1", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "val_size" not in captured.out and "batch_size" not in captured.out  # nothing fitted: both were given
    assert captured.err == "error: --val-size 1500 leaves no training images: this data set has 1,200; lower it\n"
    assert not (tmp_path / "t").exists()


def test_scratch_runs_default_to_a_git_ignored_folder():
    out_dir = TrainConfig.__dataclass_fields__["out_dir"].default
    assert not out_dir.startswith("results")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out_dir}/my-run/config.json"], cwd=REPO)
    assert ignored.returncode == 0


@pytest.mark.parametrize("argv,needles", [
    (["train", "--name", "x" * 300], ("300 bytes", "shorter --name")),
    (["train", "--data-dir", "sample", "--out-dir", "FILE", "--depth", "10", "--width", "1", "--epochs", "1"],
     ("is a file, not a folder", "--out-dir")),
])
def test_first_stumbles_end_in_one_line_with_the_fix(tmp_path, capsys, argv, needles):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Errno" not in err
    assert all(n in err for n in needles), err


def test_random_bytes_are_a_corrupt_file_not_advice_to_unpickle(tmp_path, capsys):
    (tmp_path / "train_1.npz").write_bytes(bytes(range(256)) * 40)
    shutil.copy(sample_dir() / "test.npz", tmp_path / "test.npz")
    assert main(["train", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "r"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "train_1.npz" in err and "corrupt" in err and "allow_pickle" not in err and "unsafely" not in err


def test_estimates_never_read_as_zero():
    assert duration(0.02) == "under 1 s" and duration(7.9) == "8 s" and duration(600) == "10.0 min"
    assert "0 s" not in notebook.describe_estimate(0.001) and "1 s" in notebook.describe_estimate(0.001)
    assert notebook.describe_estimate(0.0).startswith("nothing to train")
    assert "36 s" in notebook.describe_estimate(0.6)


def test_where_evaluate_finds_the_data(tmp_path, monkeypatch):
    """The flag; the sample for a run trained on it; the user's CIFAR10_DIR (or cache: None); an older run's
    recorded folder only when it exists here."""
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    assert evaluation._data_location("mine", "sample") == "mine"
    assert evaluation._data_location(None, "sample") == "sample"
    assert evaluation._data_location(None, str(tmp_path)) == str(tmp_path)
    assert evaluation._data_location(None, str(tmp_path / "not-here")) is None
    assert evaluation._data_location(None, None) is None
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "data"))
    assert evaluation._data_location(None, str(tmp_path)) is None  # the user's data, not the recorded folder
