"""Throughput benchmark of the real training step (augmentation, forward, backward, SGD update).

Each mode times ``steps`` training steps after ``warmup`` untimed ones (compilation happens in
the warm-up and is reported on its own), then forward-only inference. Achieved TFLOP/s counts
the model's convolution and linear FLOPs (training = 3 x forward) and is compared with the
device's own dense rate in the same precision, measured in the same run: the better of a large
matrix product and a 3x3 convolution (on a CPU, fp32 products go to the BLAS, which can lag far
behind oneDNN's convolutions).

The ``conventional`` mode trains the same model the way most CIFAR-10 scripts do, for a side by
side ratio: PIL images through torchvision's RandomCrop / RandomHorizontalFlip / ToTensor /
Normalize in a DataLoader, batch 128, plain SGD; fp32 on a CPU, bf16 autocast (AMP) on a GPU.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..augment import BatchAugment
from ..data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from ..device import choose_precision, keep_freed_memory, resolve_device
from ..engine import autocast, make_train_step
from ..model import WideResNet, count_forward_flops, count_parameters
from ..optim import make_sgd
from .formats import markdown_table, pct

# mode -> (bf16 autocast, channels_last, torch.compile, the step replayed from a CUDA graph)
MODES = {
    "fp32": (False, False, False, False),
    "fp32-cl": (False, True, False, False),
    "bf16-nchw": (True, False, False, False),
    "bf16": (True, True, False, False),
    "bf16-compile": (True, True, True, False),
    "bf16-graph": (True, True, False, True),
}
GPU_ONLY = ("bf16-graph",)
CONVENTIONAL = "conventional"
ALL_MODES = (*MODES, CONVENTIONAL)
TRAIN_IMAGES_PER_EPOCH = 45_000  # 50,000 minus the default 5,000-image validation split
CONVENTIONAL_BATCH = 128  # what the usual CIFAR-10 scripts use


def default_modes(device: torch.device) -> list[str]:
    """What `bench` measures unless told: the conventional loop, fp32, and wrnlib's default (plus
    torch.compile and the CUDA graph on a GPU; on a CPU compiling made training slower)."""
    modes = [CONVENTIONAL, "fp32", wrnlib_default_mode(device)]
    return modes + (["bf16-compile", "bf16-graph"] if device.type == "cuda" else [])


def uses_bf16(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` trains under bf16 autocast on ``device`` (the conventional loop: AMP's on a GPU only)."""
    return MODES[mode][0] if mode in MODES else device.type == "cuda"


def wrnlib_default_mode(device: torch.device) -> str:
    """The mode that `TrainConfig()`'s defaults train in on ``device`` (precision auto, channels_last)."""
    return "bf16" if choose_precision("auto", device)[0] else "fp32-cl"


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
    fraction_of_peak: float | None  # of the measured dense rate in the mode's precision (see dense_rates)
    inference_images_per_s: float
    compile_time_s: float | None
    step_ms: float
    augment_ms: float  # the batch augmentation alone, timed on its own
    peak_memory_gib: float | None
    precision: str = ""  # "bf16" or "fp32": the arithmetic of the matrix work
    peak_tflops: float | None = None  # the device's measured dense rate in that precision
    loader_workers: int | None = None  # conventional mode: DataLoader worker processes


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int | None = None,
                  min_seconds: float = 1.0) -> float:
    """The device's dense matrix-multiply rate: square ``size`` x ``size`` products in ``dtype``
    (8192 on a GPU, 2048 on a CPU; 512 for bf16 on a CPU that emulates it, where one product of 2048
    takes about a minute)."""
    if size is None:
        emulated = dtype == torch.bfloat16 and not choose_precision("auto", device)[0]
        size = 8192 if device.type == "cuda" else 512 if emulated else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return _rate(lambda: torch.mm(a, b), 2 * size ** 3, device, min_seconds)


def conv_tflops(device: torch.device, dtype: torch.dtype, min_seconds: float = 1.0) -> float:
    """The device's rate on the op these models are made of: a 3x3 convolution, channels_last, in
    ``dtype`` (64 -> 64 channels on 128 16x16 images on a CPU; 256 -> 256 on 512 of them on a GPU).
    On a CPU it can beat torch.mm: convolutions run on oneDNN, fp32 products on the BLAS (MKL)."""
    batch, channels = (512, 256) if device.type == "cuda" else (128, 64)
    x = torch.randn(batch, channels, 16, 16, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    return _rate(lambda: F.conv2d(x, w, padding=1), 2 * batch * 16 * 16 * channels * channels * 9, device,
                 min_seconds)


def dense_rates(device: torch.device, precisions=("bf16", "fp32")) -> dict[str, dict[str, float]]:
    """{precision: {"matmul": TFLOP/s, "conv3x3": TFLOP/s}} measured on ``device`` now."""
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    return {name: {"matmul": matmul_tflops(device, dtypes[name]), "conv3x3": conv_tflops(device, dtypes[name])}
            for name in precisions}


def _rate(run, flops: float, device: torch.device, min_seconds: float) -> float:
    """TFLOP/s of ``run`` (``flops`` each), repeated for at least ``min_seconds`` after two untimed calls."""
    with torch.no_grad():
        for _ in range(2):
            run()
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while True:
            run()
            reps += 1
            if reps % 4 == 0 or device.type == "cpu":
                _sync(device)
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds:
                    return flops * reps / elapsed / 1e12


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
               profile_path: str | None = None, peaks: dict[str, float] | None = None,
               loader_workers: int | None = None) -> BenchResult:
    """Time the training step (augmentation, forward, backward, SGD update) and inference in one mode.

    ``peaks`` maps "bf16" / "fp32" to the device's measured dense TFLOP/s (see `dense_rates`).
    """
    if mode == CONVENTIONAL:
        return bench_conventional(depth, width, steps=steps, warmup=warmup, device=device, peaks=peaks,
                                  workers=loader_workers)
    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}; choose from {', '.join(ALL_MODES)}")
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # as fit does on a CPU
    bf16, channels_last, compile_, graph = MODES[mode]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as in training: fixed shapes, so let cuDNN pick its fastest kernels
    model = WideResNet(depth, width).to(dev, memory_format=memory_format)
    flops = count_forward_flops(model)
    forward = torch.compile(model, mode=compile_mode) if compile_ else model
    step = make_train_step(model, forward, make_sgd(model, 0.01, 0.9, True, 5e-4, False), device=dev, bf16=bf16,
                           cuda_graph=graph)
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
    return _result(mode, dev, model, flops, batch_size, train_rate, infer_rate, "bf16" if bf16 else "fp32", peaks,
                   compile_time_s=warmup_time if compile_ else None, augment_ms=1000 * augment_time / steps)


def _result(mode: str, dev: torch.device, model: torch.nn.Module, flops: int, batch_size: int, train_rate: float,
            infer_rate: float, precision: str, peaks: dict[str, float] | None, **extra) -> BenchResult:
    achieved = 3 * flops * train_rate / 1e12
    peak = (peaks or {}).get(precision)
    return BenchResult(
        mode=mode, device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        depth=model.depth, width=model.width, batch_size=batch_size, params=count_parameters(model),
        forward_gflops_per_image=flops / 1e9, train_images_per_s=train_rate,
        epoch_time_s=TRAIN_IMAGES_PER_EPOCH / train_rate, train_tflops=achieved,
        fraction_of_peak=achieved / peak if peak else None, inference_images_per_s=infer_rate,
        step_ms=1000 * batch_size / train_rate,
        peak_memory_gib=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        precision=precision, peak_tflops=peak, **{"compile_time_s": None, "augment_ms": 0.0, **extra})


class _PILImages(torch.utils.data.Dataset):
    """CIFAR-10 served as torchvision.datasets.CIFAR10 serves it: a PIL image per item, through
    ``transform``, and an int label (here from uint8 arrays, so no download is needed)."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def conventional_loader(batch_size: int = CONVENTIONAL_BATCH, workers: int | None = None):
    """The usual CIFAR-10 input pipeline over the shipped sample: PIL images, torchvision's
    RandomCrop(32, 4) / RandomHorizontalFlip / ToTensor / Normalize, a shuffling DataLoader."""
    from torchvision import transforms

    sample = load_cifar10("sample")
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    images = sample.train_images.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as PIL wants
    dataset = _PILImages(images, sample.train_labels.numpy(), transform)
    workers = default_loader_workers() if workers is None else workers
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, persistent_workers=workers > 0), workers


def default_loader_workers() -> int:
    # one worker per core, as the usual scripts' num_workers=2..8 amounts to on a small machine
    return min(4, os.cpu_count() or 1)


def bench_conventional(depth: int = 28, width: float = 3.5, *, steps: int = 30, warmup: int = 5,
                       device: str = "auto", peaks: dict[str, float] | None = None,
                       workers: int | None = None) -> BenchResult:
    """The training loop people write, timed like the others: DataLoader batches of 128 moved to the
    device, an NCHW model, fp32 on a CPU (bf16 autocast, the usual AMP, on a GPU), plain SGD."""
    dev = resolve_device(device)
    bf16 = uses_bf16(CONVENTIONAL, dev)
    torch.manual_seed(0)
    model = WideResNet(depth, width).to(dev)
    flops = count_forward_flops(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader, workers = conventional_loader(CONVENTIONAL_BATCH, workers)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def train_step():
        x, y = next(stream)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast(dev, bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    _timed(train_step, warmup, dev)
    train_rate = CONVENTIONAL_BATCH * steps / _timed(train_step, steps, dev)
    loader_time = _timed(lambda: next(stream), steps, dev)  # the input pipeline alone (workers keep up or not)
    x = next(stream)[0].to(dev)
    infer_rate = _inference_rate(model, model, x, steps, dev, bf16)
    return _result(CONVENTIONAL, dev, model, flops, CONVENTIONAL_BATCH, train_rate, infer_rate,
                   "bf16" if bf16 else "fp32", peaks, augment_ms=1000 * loader_time / steps, loader_workers=workers)


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
    header = ["mode", "precision", "batch", "train img/s", "epoch (45k) s", "step ms", "input alone ms", "TFLOP/s",
              "of dense rate", "inference img/s", "compile s", "peak mem GiB"]
    rows = []
    for r in results:
        frac = pct(r.fraction_of_peak, missing="n/a", digits=1)
        comp = f"{r.compile_time_s:.1f}" if r.compile_time_s is not None else "-"
        mem = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        mode = r.mode if r.loader_workers is None else f"{r.mode} ({r.loader_workers} workers)"
        rows.append([mode, r.precision, str(r.batch_size), f"{r.train_images_per_s:,.0f}", f"{r.epoch_time_s:.2f}",
                     f"{r.step_ms:.1f}", f"{r.augment_ms:.1f}", f"{r.train_tflops:.2f}", frac,
                     f"{r.inference_images_per_s:,.0f}", comp, mem])
    return markdown_table(header, rows) + "\n"


def as_dicts(results: list[BenchResult]) -> list[dict]:
    return [asdict(r) for r in results]


def summary_lines(results: list[BenchResult], rates: dict[str, dict[str, float]], device: torch.device) -> list[str]:
    """The measured dense rates, and wrnlib's default against the conventional loop, as a ratio."""
    lines = ["Measured dense rates of this device (same run): " + "; ".join(
                 f"{p} matmul {r['matmul']:.2f}, 3x3 conv {r['conv3x3']:.2f} TFLOP/s" for p, r in rates.items())
             + ". Each mode's \"of dense rate\" is its training TFLOP/s against the higher of its precision's two."]
    by_mode = {r.mode: r for r in results}
    default = wrnlib_default_mode(device)
    if CONVENTIONAL in by_mode and default in by_mode:
        ours, theirs = by_mode[default], by_mode[CONVENTIONAL]
        lines.append(f"wrnlib's default ({default}, batch {ours.batch_size}) against the conventional loop "
                     f"(batch {theirs.batch_size}): {ours.train_images_per_s / theirs.train_images_per_s:.1f}x "
                     f"the training images/s.")
    return lines


def run_benchmarks(modes: list[str] | None, *, out: str | None = None, profile_out: str | None = None,
                   **kwargs) -> list[BenchResult]:
    """Measure the device's dense rates, then benchmark each mode (printing a line per mode and the
    table); with ``out``, write bench.json and bench.md there. ``profile_out`` profiles the last
    mode listed. ``modes`` None: `default_modes` of the device."""
    device = resolve_device(kwargs.get("device", "auto"))
    # The conventional loop goes first: fit's process-wide allocator setting (see engine.keep_freed_memory),
    # which the wrnlib modes apply on a CPU, is then not yet in force for it.
    modes = sorted(modes or default_modes(device), key=lambda m: m != CONVENTIONAL)
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        raise ValueError(f"unknown bench mode {unknown[0]!r}; choose from {', '.join(ALL_MODES)}")
    gpu_only = [m for m in modes if m in GPU_ONLY and device.type != "cuda"]
    if gpu_only:
        raise ValueError(f"bench mode {gpu_only[0]!r} replays a CUDA graph and needs a GPU; this device is "
                         f"{device.type}: leave it out of the modes")
    emulated = [] if choose_precision("auto", device)[0] else [m for m in modes if uses_bf16(m, device)]
    if emulated:  # asked for bf16 where it is not native: say why its steps may take minutes before they do
        print(f"this CPU has no native bf16 (AMX or AVX512-BF16): {', '.join(emulated)} run emulated, many times "
              f"slower than fp32 (the dense rates below show how much); wrnlib trains in fp32 here", flush=True)
    # only the precisions the modes train in: a rate in another precision is no mode's peak, and costs seconds
    rates = dense_rates(device, sorted({"bf16" if uses_bf16(m, device) else "fp32" for m in modes}))
    peaks = {precision: max(r.values()) for precision, r in rates.items()}
    print("dense rates: " + "; ".join(f"{p} " + ", ".join(f"{k} {v:.2f}" for k, v in r.items())
                                      for p, r in rates.items()) + " TFLOP/s", flush=True)
    results = []
    for mode in modes:
        result = bench_mode(mode, profile_path=profile_out if mode == modes[-1] else None, peaks=peaks, **kwargs)
        print(f"{mode}: {result.train_images_per_s:,.0f} train img/s, {result.train_tflops:.2f} TFLOP/s", flush=True)
        results.append(result)
    table = results_table(results)
    notes = summary_lines(results, rates, device)
    print(table + "\n" + "\n".join(notes))
    if out:
        from ..files import write_bytes, write_json
        from ..provenance import environment

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        env = environment(device, data_checksum="n/a (shipped sample images)", data_source="sample")
        write_json(folder / "bench.json", {"env": env, "args": {"modes": modes, **kwargs},
                                                 "dense_tflops": rates, "peak_tflops": peaks,
                                                 "results": as_dicts(results)})
        write_bytes(folder / "bench.md", (
            f"Device: {env['device']}, torch {env['torch']}, commit {env['git_commit']}\n\n{table}\n"
            + "\n".join(notes) + "\n").encode())
        print(f"wrote {folder / 'bench.json'} and {folder / 'bench.md'}")
    return results
