"""precision="auto" on the CPU: bf16 autocast where the processor computes bf16 natively, fp32 elsewhere."""
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import wrnlib.device as device
import wrnlib.progress as progress
import wrnlib.train as train_module
from wrnlib import evaluation, fit, runfolder
from wrnlib.config import TrainConfig
from wrnlib.model import forward_flops

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
NONE = {"amx_bf16": False, "avx512_bf16": False}


def fake_cpu(monkeypatch, **support):
    monkeypatch.setattr(device, "cpu_bf16_support", lambda: NONE | support)


@pytest.mark.parametrize("native", [True, False])
def test_the_trainer_trains_in_the_chosen_precision(real_data, tmp_path, monkeypatch, native):
    """The step itself runs under bf16 autocast exactly when auto chose bf16."""
    fake_cpu(monkeypatch, avx512_bf16=native)
    config = TrainConfig(name="p", out_dir=str(tmp_path), depth=10, width=1, epochs=1, batch_size=32, val_size=100,
                         train_limit=64, test_limit=100, device="cpu", progress=False)
    dtypes, real_make_step = [], train_module.make_train_step

    def recording(model, *args, bf16, **kwargs):
        model.fc.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype) if module.training
                                       else None)
        assert bf16 is native
        return real_make_step(model, *args, bf16=bf16, **kwargs)

    monkeypatch.setattr(train_module, "make_train_step", recording)
    fit(config, data=real_data)
    assert len(dtypes) == 64 // 32  # every training step
    assert set(dtypes) == {torch.bfloat16 if native else torch.float32}


def test_the_run_records_the_choice_and_the_cpu_and_evaluates_in_fp32(real_data, tmp_path, monkeypatch, capsys):
    fake_cpu(monkeypatch, amx_bf16=True)
    config = TrainConfig(name="rec", out_dir=str(tmp_path), depth=10, width=1, epochs=1, batch_size=32,
                         val_size=100, train_limit=64, test_limit=100, device="cpu", save_model=True)
    result = fit(config, data=real_data)
    start = capsys.readouterr().out.splitlines()[0]
    assert "bf16 autocast (auto: this CPU computes bf16 natively, AMX-BF16)" in start
    env = json.loads((tmp_path / "rec" / runfolder.ENV).read_text())
    assert env["precision"].startswith("bf16 autocast (auto")
    assert env["cpu"]["amx_bf16"] is True and env["cpu"]["isa"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"]["threads"] == torch.get_num_threads()
    # the final number is fp32 whatever trained it, so `evaluate` reproduces it
    assert result.summary["final_eval"]["precision"].startswith("fp32")
    again = evaluation.evaluate_run(tmp_path / "rec", data_dir=real_data.source)
    assert again["test_acc"] == result.summary["test_acc"]


def test_the_time_estimate_uses_the_rate_of_the_chosen_precision(monkeypatch):
    config = TrainConfig(depth=16, width=2, device="cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # AVX512-BF16 implies it
    fake_cpu(monkeypatch, avx512_bf16=True)
    bf16_seconds = progress.rough_epoch_seconds(config, 45_000, 15_000, CPU)
    fake_cpu(monkeypatch)
    fp32_seconds = progress.rough_epoch_seconds(config, 45_000, 15_000, CPU)
    rates = progress.CPU_FLOPS_PER_THREAD
    assert fp32_seconds / bf16_seconds == pytest.approx(rates["bf16"] / rates["fp32"])
    assert progress.rough_epoch_seconds(replace(config, precision="fp32"), 45_000, 0, CPU) == pytest.approx(
        forward_flops(16, 2) * 3 * 45_000 / (rates["fp32"] * torch.get_num_threads()))


@pytest.mark.parametrize("folder, isa, key, mode", [("cpu-wrn16-2", "AVX512", "fp32", "fp32"),
                                                   ("cpu-wrn16-2", "AVX512", "bf16", "bf16"),
                                                   ("cpu-avx2-wrn16-2", "AVX2", "fp32-avx2", "fp32-cl")])
def test_the_cpu_rates_behind_the_estimates_are_the_committed_benchmarks(folder, isa, key, mode):
    bench = json.loads((REPO / "results" / "cpu" / "benchmarks" / folder / "bench.json").read_text())
    assert bench["env"]["cpu"]["isa"] == isa
    measured = {r["mode"]: r["train_tflops"] * 1e12 / bench["env"]["cpu"]["threads"] for r in bench["results"]}
    assert progress.CPU_FLOPS_PER_THREAD[key] == pytest.approx(measured[mode], rel=0.15)


def test_keeping_freed_memory_ends_the_page_faults_of_each_step():
    """Process-wide, so measured in a fresh interpreter: a freed 64 MB buffer (past glibc's largest dynamic
    mmap threshold, 32 MB) is reused, not mapped and faulted in again page by page."""
    child = textwrap.dedent("""
        import resource, torch
        from wrnlib import device
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):
                torch.ones(16 * 2**20)  # 64 MB, allocated, written and freed
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        default = faults()
        assert device.keep_freed_memory()
        faults()
        print(default, faults())
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.split()
    default, kept = map(int, out)
    assert default > 20 * 10_000 and kept < default / 20  # 16,384 pages per buffer before; ~none after
