"""The throughput benchmark, run for real on the CPU through the command line."""
from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from wrnlib.cli import main
from wrnlib.data import CIFAR10_MEAN, CIFAR10_STD
from wrnlib.model import WideResNet, count_forward_flops
from wrnlib.study import bench


def test_bench_writes_json_and_markdown_against_the_measured_dense_rate(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--depth", "10", "--width", "1", "--batch-size", "32", "--steps", "2", "--warmup", "1",
                 "--modes", "fp32,bf16", "--device", "cpu", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    flops = count_forward_flops(WideResNet(10, 1))
    assert [r["mode"] for r in data["results"]] == ["fp32", "bf16"]
    for precision in ("bf16", "fp32"):
        rates = data["dense_tflops"][precision]
        assert rates["matmul"] > 0 and rates["conv3x3"] > 0
        assert data["peak_tflops"][precision] == max(rates["matmul"], rates["conv3x3"])
    for r, precision in zip(data["results"], ("fp32", "bf16")):
        assert r["train_images_per_s"] > 0 and r["inference_images_per_s"] > 0
        assert r["train_tflops"] == pytest.approx(3 * flops * r["train_images_per_s"] / 1e12)
        assert r["epoch_time_s"] == pytest.approx(45_000 / r["train_images_per_s"])
        # each mode against the device's own rate in its own precision
        assert r["precision"] == precision and r["peak_tflops"] == data["peak_tflops"][precision]
        assert r["fraction_of_peak"] == pytest.approx(r["train_tflops"] / data["peak_tflops"][precision])
    text = (out / "bench.md").read_text()
    assert "| fp32 | fp32 |" in text and "Measured dense rates" in text
    assert data["env"]["torch"] and "avx512_bf16" in data["env"]["cpu"]


def test_the_conventional_loop_runs_on_the_sample_beside_the_default(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    default = bench.wrnlib_default_mode(torch.device("cpu"))
    assert main(["bench", "--depth", "10", "--width", "1", "--batch-size", "32", "--steps", "2", "--warmup", "1",
                 "--modes", f"conventional,{default}", "--loader-workers", "0", "--device", "cpu",
                 "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    conventional, ours = data["results"]
    assert conventional["mode"] == "conventional" and conventional["batch_size"] == 128
    assert conventional["precision"] == "fp32" and conventional["loader_workers"] == 0
    assert conventional["train_images_per_s"] > 0
    ratio = ours["train_images_per_s"] / conventional["train_images_per_s"]
    assert f"against the conventional loop (batch 128): {ratio:.1f}x" in (out / "bench.md").read_text()


def test_the_conventional_pipeline_is_torchvisions_crop_flip_normalize():
    loader, workers = bench.conventional_loader(batch_size=16, workers=0)
    x, y = next(iter(loader))
    assert workers == 0 and x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    pixels = x * std + mean  # undo Normalize: ToTensor's [0, 1], in steps of 1/255
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.allclose(pixels * 255, (pixels * 255).round(), atol=1e-3)
    names = [type(t).__name__ for t in loader.dataset.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert loader.dataset.transform.transforms[0].padding == 4


# Python 3.12 warns of any fork after torch's threads started, as in every DataLoader with workers: the usual loop
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_the_conventional_loops_worker_processes_end_with_its_bench():
    # idle workers left behind would share the cores with the modes timed after it
    result = bench.bench_conventional(10, 1, steps=2, warmup=1, device="cpu", peaks={}, workers=1)
    assert result.loader_workers == 1 and multiprocessing.active_children() == []


def test_matmul_rate_counts_two_flops_per_multiply_add(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.5])  # perf_counter: start, then after each product
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    rate = bench.matmul_tflops(torch.device("cpu"), torch.float32, size=64, min_seconds=1.0)
    assert rate == pytest.approx(2 * 64 ** 3 * 2 / 1.0 / 1e12)  # two timed products in one second


@pytest.mark.parametrize("native, dtype, size", [(True, torch.bfloat16, 2048), (False, torch.bfloat16, 512),
                                                 (False, torch.float32, 2048)])
def test_matmul_rate_uses_smaller_products_for_emulated_bf16_only(native, dtype, size, monkeypatch):
    monkeypatch.setattr(bench, "choose_precision", lambda precision, device: (native, "why"))
    clock = iter([0.0, 1.0])  # one timed product in one second
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench.torch, "mm", lambda a, b: a[:1, :1])  # the rate counts the sizes, not a product
    rate = bench.matmul_tflops(torch.device("cpu"), dtype, min_seconds=1.0)
    assert rate == pytest.approx(2 * size ** 3 / 1e12)


def test_unknown_modes_are_refused_before_anything_runs(monkeypatch):
    with pytest.raises(ValueError, match="unknown bench mode 'fp8'.*conventional"):
        bench.run_benchmarks(["fp8"], device="cpu")
    monkeypatch.setattr(bench, "dense_rates", lambda device, precisions: pytest.fail("measured"))
    with pytest.raises(ValueError, match=r"^bench mode 'bf16-graph' replays a CUDA graph and needs a GPU; this "
                                         r"device is cpu: leave it out of the modes$"):
        bench.run_benchmarks(["fp32", "bf16-graph"], device="cpu")


def test_a_gpu_is_benchmarked_with_torch_compile_and_the_cuda_graph_too():
    assert bench.default_modes(torch.device("cuda")) == ["conventional", "fp32", "bf16", "bf16-compile", "bf16-graph"]
    assert "bf16-graph" not in bench.default_modes(torch.device("cpu"))
    assert bench.MODES["bf16-graph"] == (True, True, False, True)  # bf16, channels_last, eager, graphed


@pytest.mark.parametrize("native", [True, False])
def test_bf16_modes_on_a_cpu_without_native_bf16_are_announced_as_emulated(native, monkeypatch, capsys):
    monkeypatch.setattr(bench, "choose_precision", lambda precision, device: (native, "why"))

    def measured(device, precisions):  # the note comes before anything is timed
        raise InterruptedError

    monkeypatch.setattr(bench, "dense_rates", measured)
    with pytest.raises(InterruptedError):
        bench.run_benchmarks(["conventional", "fp32", "bf16-nchw", "bf16"], device="cpu")
    out = capsys.readouterr().out
    assert ("no native bf16 (AMX or AVX512-BF16): bf16-nchw, bf16 run emulated" in out) is not native


@pytest.mark.parametrize("modes, precisions", [(["conventional", "fp32-cl"], ["fp32"]), (["bf16"], ["bf16"]),
                                               (["bf16-compile", "fp32"], ["bf16", "fp32"])])
def test_dense_rates_are_measured_in_the_precisions_of_the_modes_only(modes, precisions, monkeypatch):
    asked = []

    def measured(device, precisions):
        asked.extend(precisions)
        raise InterruptedError

    monkeypatch.setattr(bench, "dense_rates", measured)
    with pytest.raises(InterruptedError):
        bench.run_benchmarks(modes, device="cpu")
    assert asked == precisions


def test_conv_rate_counts_the_multiply_adds_of_a_3x3_convolution(monkeypatch):
    clock = iter([0.0, 2.0])  # one timed convolution in two seconds
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    rate = bench.conv_tflops(torch.device("cpu"), torch.float32, min_seconds=1.0)
    assert rate == pytest.approx(2 * 128 * 16 * 16 * 64 * 64 * 9 / 2.0 / 1e12)
