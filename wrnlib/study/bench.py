"""Throughput benchmark of the real training step (augmentation, forward, backward, SGD update).

Each mode times ``steps`` training steps after ``warmup`` untimed ones (compilation happens in
the warm-up and is reported on its own), then forward-only inference. Achieved TFLOP/s counts
the model's convolution and linear FLOPs (training = 3 x forward) and is compared with the
card's measured bf16 matrix rate when known.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..augment import BatchAugment
from ..data import load_cifar10
from ..engine import autocast, make_train_step, resolve_device
from ..model import WideResNet, count_forward_flops, count_parameters
from ..optim import make_sgd

# mode -> (bf16 autocast, channels_last, torch.compile)
MODES = {
    "fp32": (False, False, False),
    "bf16-nchw": (True, False, False),
    "bf16": (True, True, False),
    "bf16-compile": (True, True, True),
}
# Measured dense bf16 matrix rate of the cards this project is run on (8192^3 products; see
# the device notes): about 790 TFLOP/s on both the H100 and H200 lent here.
MEASURED_BF16_TFLOPS = {"H100": 790.0, "H200": 790.0}
TRAIN_IMAGES_PER_EPOCH = 45_000  # 50,000 minus the default 5,000-image validation split


@dataclass
class BenchResult:
    mode: str
    device: str
    depth: int
    width: float
    batch_size: int
    params: int
    forward_gflops_per_image: float
    train_images_per_s: float
    epoch_time_s: float
    train_tflops: float
    fraction_of_peak: float | None
    inference_images_per_s: float
    compile_time_s: float | None
    step_ms: float
    augment_ms: float  # the batch augmentation alone, timed on its own
    peak_memory_gib: float | None


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((rate for key, rate in MEASURED_BF16_TFLOPS.items() if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of real CIFAR-10 images (the shipped sample, repeated as needed); speed does not
    depend on the content, but the augmentation sees real pixels."""
    sample = load_cifar10("sample")
    reps = -(-batch_size // len(sample.train_labels))
    images = sample.train_images.repeat(reps, 1, 1, 1)[:batch_size]
    labels = sample.train_labels.repeat(reps)[:batch_size]
    return images.to(device), labels.to(device)


def _timed(fn, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``fn``, with one sync at the end as in training."""
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def bench_mode(mode: str, depth: int = 28, width: float = 3.5, batch_size: int = 512, steps: int = 30,
               warmup: int = 5, device: str = "auto", compile_mode: str = "default",
               profile_path: str | None = None) -> BenchResult:
    """Time the training step (augmentation, forward, backward, SGD update) and inference in one mode."""
    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}; choose from {', '.join(MODES)}")
    dev = resolve_device(device)
    bf16, channels_last, compile_ = MODES[mode]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as in training: fixed shapes, so let cuDNN pick its fastest kernels
    model = WideResNet(depth, width).to(dev, memory_format=memory_format)
    flops = count_forward_flops(model)
    forward = torch.compile(model, mode=compile_mode) if compile_ else model
    step = make_train_step(model, forward, make_sgd(model, 0.01, 0.9, True, 5e-4, False), device=dev, bf16=bf16)
    augment = BatchAugment()
    images, labels = real_batch(batch_size, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def train_step():
        x, targets = augment(images, labels)
        step(x.contiguous(memory_format=memory_format), targets)

    warmup_time = _timed(train_step, warmup, dev)  # compilation happens here
    train_rate = batch_size * steps / _timed(train_step, steps, dev)
    augment_time = _timed(lambda: augment(images, labels), steps, dev)  # its share of a step, on its own
    if profile_path:
        write_profile(train_step, dev, profile_path)
    infer_rate = _inference_rate(model, forward, augment.eval_transform(images).contiguous(memory_format=memory_format),
                                 steps, dev, bf16)
    achieved = 3 * flops * train_rate / 1e12
    peak = peak_tflops(dev)
    return BenchResult(
        mode=mode, device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        depth=depth, width=width, batch_size=batch_size, params=count_parameters(model),
        forward_gflops_per_image=flops / 1e9, train_images_per_s=train_rate,
        epoch_time_s=TRAIN_IMAGES_PER_EPOCH / train_rate, train_tflops=achieved,
        fraction_of_peak=achieved / peak if peak else None, inference_images_per_s=infer_rate,
        compile_time_s=warmup_time if compile_ else None, step_ms=1000 * batch_size / train_rate,
        augment_ms=1000 * augment_time / steps,
        peak_memory_gib=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None)


def _inference_rate(model, forward, x: torch.Tensor, steps: int, device: torch.device, bf16: bool) -> float:
    """Forward-only images per second in eval mode, after three untimed passes."""
    model.eval()

    def infer():
        with autocast(device, bf16):
            forward(x)
    with torch.no_grad():
        _timed(infer, 3, device)
        return len(x) * steps / _timed(infer, steps, device)


def write_profile(train_step, device: torch.device, path: str, steps: int = 5) -> None:
    """Where a step's time goes: torch.profiler's per-operator table, heaviest device time first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        _sync(device)
    averages = prof.key_averages()
    keys = ("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ()
    for key in keys + ("self_cpu_time_total",):
        try:
            table = averages.table(sort_by=key, row_limit=30)
            break
        except (AttributeError, KeyError, RuntimeError):
            continue
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# torch.profiler, {steps} training steps on {device}, sorted by {key}\n{table}\n")


def results_table(results: list[BenchResult]) -> str:
    """A markdown table of benchmark results."""
    header = ("| mode | batch | train img/s | epoch (45k) s | step ms | augment alone ms | TFLOP/s | of peak "
              "| inference img/s | compile s | peak mem GiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        frac = f"{100 * r.fraction_of_peak:.1f}%" if r.fraction_of_peak is not None else "n/a"
        comp = f"{r.compile_time_s:.1f}" if r.compile_time_s is not None else "-"
        mem = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        lines.append(f"| {r.mode} | {r.batch_size} | {r.train_images_per_s:,.0f} | {r.epoch_time_s:.2f} | "
                     f"{r.step_ms:.1f} | {r.augment_ms:.1f} | {r.train_tflops:.1f} | {frac} | {r.inference_images_per_s:,.0f} | "
                     f"{comp} | {mem} |")
    return header + "\n".join(lines) + "\n"


def as_dicts(results: list[BenchResult]) -> list[dict]:
    return [asdict(r) for r in results]


def run_benchmarks(modes: list[str], *, out: str | None = None, profile_out: str | None = None,
                   **kwargs) -> list[BenchResult]:
    """Benchmark each mode (printing a line per mode and the table); with ``out``, write bench.json and
    bench.md there. ``profile_out`` profiles the last mode listed."""
    results = []
    for mode in modes:
        result = bench_mode(mode, profile_path=profile_out if mode == modes[-1] else None, **kwargs)
        print(f"{mode}: {result.train_images_per_s:,.0f} train img/s, {result.train_tflops:.1f} TFLOP/s", flush=True)
        results.append(result)
    table = results_table(results)
    print(table)
    if out:
        from .. import runs

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        env = runs.environment(resolve_device(kwargs.get("device", "auto")),
                               data_checksum="n/a (shipped sample images)", data_source="sample")
        runs.write_json(folder / "bench.json", {"env": env, "args": {"modes": modes, **kwargs},
                                                 "results": as_dicts(results)})
        runs.atomic_write_bytes(folder / "bench.md", f"Device: {env['device']}, torch {env['torch']}, commit "
                                                     f"{env['git_commit']}\n\n{table}".encode())
        print(f"wrote {folder / 'bench.json'} and {folder / 'bench.md'}")
    return results
