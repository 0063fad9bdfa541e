"""Data-parallel training (wrnlib.distributed): 2 gloo processes on the CPU, started by torchrun.

Every launch goes through the real entry points (`torchrun -m wrnlib train`, or tests/ddp_worker.py
for what needs a hook inside a process); a tiny WRN-10-1 on the shipped sample of the real CIFAR-10.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wrnlib import TrainConfig, WideResNet, distributed, fit
from wrnlib import runfolder
from wrnlib.cli import main
from wrnlib.evaluation import evaluate_run

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
LAUNCH_TIMEOUT_S = 300


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` with this checkout's wrnlib; output kept."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONFAULTHANDLER": "1"}  # a process killed by a signal still shows where it was
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


def why(launched: subprocess.CompletedProcess) -> str:
    """The lines of a failed launch that say what went wrong (torchrun's summary alone does not)."""
    crash = launched.stderr.find("Fatal Python error")
    if crash >= 0:
        return launched.stderr[crash:crash + 4000]
    lines = [line for line in launched.stderr.splitlines() if re.search(r"rror|terminat|bort|Signal|Exception", line)]
    return "\n".join(lines[-60:]) or launched.stderr[-3000:]


def tiny(out_dir: Path, name: str, **overrides) -> TrainConfig:
    base = dict(name=name, out_dir=str(out_dir), data_dir="sample", device="cpu", depth=10, width=1, epochs=2,
                batch_size=64, lr=0.02, val_size=100, train_limit=128, test_limit=200, warmup_epochs=0.0,
                progress=False)
    return TrainConfig(**(base | overrides))


def weights(run_dir: Path, part: str = "model") -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / runfolder.STATE, weights_only=True)
    return state["ema"]["module"] if part == "ema" else state[part]


def trainable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}


def test_ddp_with_sync_bn_matches_one_process_at_the_same_global_batch(tmp_path):
    """2 processes x 32 images with SyncBatchNorm = 1 process x 64 images, up to rounding; one run folder."""
    ddp_dir = tmp_path / "ddp"
    # fp32: bf16's rounding (AMX or AVX512 kernels, one thread or two) would hide what SyncBatchNorm changes
    config = tiny(ddp_dir, "ddp", sync_bn=True, precision="fp32")
    flags = ["--device", "cpu", "--data-dir", "sample", "--depth", "10", "--width", "1", "--epochs", "2",
             "--batch-size", "64", "--lr", "0.02", "--val-size", "100", "--train-limit", "128", "--test-limit",
             "200", "--warmup-epochs", "0", "--no-progress", "--sync-bn", "--precision", "fp32", "--out-dir",
             str(ddp_dir), "--name", "ddp"]
    launched = torchrun("-m", "wrnlib", "train", *flags, cwd=tmp_path)
    assert launched.returncode == 0, why(launched)
    assert launched.stdout.count("final test accuracy") == 1  # rank 0 speaks for the run
    single = fit(tiny(tmp_path / "single", "single", precision="fp32"))

    # one complete run folder, written by rank 0 alone, readable like any other
    assert [p.name for p in ddp_dir.iterdir()] == ["ddp"]
    run_dir = ddp_dir / "ddp"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([runfolder.CONFIG, runfolder.ENV, runfolder.METRICS,
                                                                runfolder.SUMMARY, runfolder.STATE])
    assert runfolder.load_config(run_dir) == config
    env = json.loads((run_dir / runfolder.ENV).read_text())
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # the machine's cores, shared by its 2 processes
    assert env["processes"] == 2 and env["backend"] == "gloo" and f"{threads} threads" in env["device"]
    summary = json.loads((run_dir / runfolder.SUMMARY).read_text())
    assert evaluate_run(run_dir)["test_acc"] == summary["test_acc"]

    # the weights: every difference is rounding, far below what one training step changes
    torch.manual_seed(0)
    start = WideResNet(10, 1).state_dict()
    a, b = trainable(weights(run_dir)), trainable(weights(tmp_path / "single" / "single"))
    moved = max((b[k] - start[k]).abs().max().item() for k in b)
    gap = max((a[k] - b[k]).abs().max().item() for k in b)
    assert gap <= 0.05 * moved, (gap, moved)  # measured: gap ~1 % of moved; without SyncBatchNorm ~30 %
    # the metrics are the global batch's, summed over the processes
    rows = runfolder.read_metrics(run_dir)
    for ours, theirs in zip(rows, single.metrics):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-3), key
        assert ours["train_acc"] == pytest.approx(theirs["train_acc"], abs=2 / 128)
        assert ours["lr"] == pytest.approx(theirs["lr"])


def test_a_failing_process_stops_all_and_the_run_resumes_exactly(tmp_path):
    """Rank 1 fails after epoch 1: everything stops with its message; resuming ends bit-equal to a straight run."""
    settings = dict(deterministic=True, optimizer="sam", ema_decay=0.9, sync_bn=True, dropout=0.1, mix="cutmix",
                    mix_prob=0.5, tta=False)
    for name in ("straight", "resumed"):
        tiny(tmp_path / "runs", name, **settings).save(tmp_path / f"{name}.json")
    straight = torchrun("-m", "wrnlib", "train", "--config", str(tmp_path / "straight.json"), cwd=tmp_path)
    assert straight.returncode == 0, why(straight)

    t0 = time.perf_counter()
    failed = torchrun(str(WORKER), "fail", str(tmp_path / "resumed.json"), "1", "1", cwd=tmp_path)
    assert failed.returncode != 0
    assert "RuntimeError: injected failure on rank 1 after epoch 1" in failed.stderr
    assert time.perf_counter() - t0 < 120  # stopped, not hung until a collective's timeout
    run_dir = tmp_path / "runs" / "resumed"
    assert torch.load(run_dir / runfolder.STATE, weights_only=True)["epoch"] == 1
    assert not (run_dir / runfolder.SUMMARY).exists()

    resumed = torchrun("-m", "wrnlib", "train", "--config", str(tmp_path / "resumed.json"), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, why(resumed)
    assert "was interrupted: resuming it" in resumed.stdout
    straight_dir = tmp_path / "runs" / "straight"
    for part in ("model", "ema"):
        a, b = weights(straight_dir, part), weights(run_dir, part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    timing = {"epoch_time_s", "train_time_s", "eval_time_s", "images_per_s"}
    assert [{k: v for k, v in row.items() if k not in timing} for row in runfolder.read_metrics(run_dir)] == \
        [{k: v for k, v in row.items() if k not in timing} for row in runfolder.read_metrics(straight_dir)]
    assert json.loads((run_dir / runfolder.SUMMARY).read_text())["test_acc"] == \
        json.loads((straight_dir / runfolder.SUMMARY).read_text())["test_acc"]


def test_sam_first_backward_stays_local(tmp_path):
    """Under DDP each process perturbs its replica with its own gradient; only the second backward all-reduces."""
    launched = torchrun(str(WORKER), "sam", str(tmp_path / "sam.json"), cwd=tmp_path)
    assert launched.returncode == 0, why(launched)
    report = json.loads((tmp_path / "sam.json").read_text())
    assert report["local"] < 1e-5  # one step: the reference with per-process perturbations, up to rounding
    assert report["global"] > 100 * 1e-5  # an early all-reduce (one shared perturbation) would land far off
    assert report["moved"] > 100 * 1e-5


@pytest.fixture
def launched_by_torchrun(monkeypatch):
    """This process looks like rank 0 of 2 started by torchrun (no process group is made by these tests)."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("overrides,needle", [
    ({"batch_size": 63}, "global batch and must split evenly among the 2 processes"),
    ({"compile": True}, "--compile is not supported with data-parallel training"),
    ({"device": "cuda:1"}, "each process uses cuda:LOCAL_RANK"),
])
def test_what_ddp_cannot_run_is_refused_before_anything_starts(launched_by_torchrun, tmp_path, overrides, needle):
    with pytest.raises(ValueError, match=needle):
        fit(tiny(tmp_path, "refused", **overrides))
    assert not torch.distributed.is_initialized()
    assert not (tmp_path / "refused").exists()


def test_the_command_line_names_the_rank_of_an_error_and_tells_torchrun(launched_by_torchrun, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))  # torchrun's file for this rank
    assert main(["train", "--device", "cpu", "--batch-size", "63", "--out-dir", str(tmp_path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rank 0/2: batch_size=63 is the global batch") and "Traceback" not in err
    reported = json.loads((tmp_path / "error.json").read_text())["message"]["message"]
    assert reported.startswith("ValueError: batch_size=63 is the global batch")  # torchrun's summary shows it


def test_dropout_streams_depend_on_their_seed_and_leave_the_shared_one_alone():
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    draws = []
    for seed in (7, 8, 7):
        with distributed._own_stream(cpu, seed):
            draws.append(torch.rand(5))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    assert torch.equal(torch.get_rng_state(), before)


def test_cpu_sync_batchnorm_keeps_the_state_and_acts_as_batchnorm_in_one_process(real_data):
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    converted = distributed.CpuSyncBatchNorm.convert(WideResNet(10, 1))
    converted.load_state_dict(model.state_dict())  # same keys, so checkpoints stay interchangeable
    assert sum(isinstance(m, distributed.CpuSyncBatchNorm) for m in converted.modules()) == 7
    x = (real_data.train_images[:16].float() / 255 - 0.5) / 0.25
    assert torch.equal(model(x), converted(x))  # training mode, no process group: plain batch norm
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), converted.buffers()))
