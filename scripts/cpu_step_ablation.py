"""Which CPU settings make the training step faster? Each variant measured alone, in a fresh process.

Every variant times the real training step (BatchAugment on the device, forward, backward, SGD
update) of one WRN on real CIFAR-10 images (the shipped sample), after untimed warm-up steps, in its
own Python process, so that process-wide settings (the allocator, thread counts) of one variant
cannot leak into the next. Variants are run in turn, and the whole list ``--repeats`` times,
interleaved, so a slow moment of the machine spreads over all of them; the table gives the median.

    python scripts/cpu_step_ablation.py [--depth 16 --width 2 --batch-size 128] [--out DIR]

Writes ``<out>/ablation.json`` (environment, every measurement) and ``<out>/ablation.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> settings; the first is bench's old fp32 mode (fp32, NCHW, foreach SGD, glibc's allocator), the second
# fit's old CPU default
VARIANTS = {
    "fp32 NCHW (bench's old fp32 mode)": dict(bf16=False, channels_last=False),
    "fp32 channels_last (the old CPU default of fit)": dict(bf16=False, channels_last=True),
    "bf16 NCHW": dict(bf16=True, channels_last=False),
    "bf16 channels_last": dict(bf16=True, channels_last=True),
    "bf16 channels_last, keep freed memory": dict(bf16=True, channels_last=True, keep_memory=True),
    "... + fused SGD": dict(bf16=True, channels_last=True, keep_memory=True, sgd="fused"),
    "... + 1 intra-op thread": dict(bf16=True, channels_last=True, keep_memory=True, threads=1),
    "... + batch 256": dict(bf16=True, channels_last=True, keep_memory=True, batch_size=256),
    "fp32 channels_last, keep freed memory": dict(bf16=False, channels_last=True, keep_memory=True),
}


def measure(settings: dict, depth: int, width: float, batch_size: int, steps: int, warmup: int) -> dict:
    """Runs in the child process: time ``steps`` training steps with ``settings``."""
    import resource

    import torch

    from wrnlib import device as devices, engine
    from wrnlib.augment import BatchAugment
    from wrnlib.model import WideResNet, count_forward_flops
    from wrnlib.optim import parameter_groups
    from wrnlib.study.bench import real_batch

    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    if settings.get("keep_memory"):
        devices.keep_freed_memory()
    batch_size = settings.get("batch_size", batch_size)
    device = torch.device("cpu")
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    torch.manual_seed(0)
    model = WideResNet(depth, width).to(memory_format=memory_format)
    sgd_kind = {"fused": True} if settings.get("sgd") == "fused" else {"foreach": True}
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4, False), lr=0.01, momentum=0.9, nesterov=True,
                                **sgd_kind)
    step = engine.make_train_step(model, model, optimizer, device=device, bf16=settings["bf16"])
    augment = BatchAugment()
    images, labels = real_batch(batch_size, device)

    def train_step():
        x, targets = augment(images, labels)
        step(x.contiguous(memory_format=memory_format), targets)

    for _ in range(warmup):
        train_step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    flops = count_forward_flops(model)
    return {"images_per_s": batch_size * steps / seconds, "batch_size": batch_size,
            "train_tflops": 3 * flops * batch_size * steps / seconds / 1e12,
            "page_faults_per_step": faults / steps, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--width", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=None, help="names of VARIANTS (default: all)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement, printed as JSON for the parent
        print(json.dumps(measure(json.loads(args.child), args.depth, args.width, args.batch_size, args.steps,
                                 args.warmup)))
        return 0
    names = args.variants or list(VARIANTS)
    measured: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            cmd = [sys.executable, __file__, "--child", json.dumps(VARIANTS[name]), "--depth", str(args.depth),
                   "--width", str(args.width), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            measured[name].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {result['images_per_s']:.0f} img/s, "
                  f"{result['page_faults_per_step']:.0f} page faults/step", flush=True)
    base = statistics.median(r["images_per_s"] for r in measured[names[0]])
    lines = [f"# CPU training-step ablation: WRN-{args.depth}-{args.width:g}, batch {args.batch_size}", "",
             f"Made by `python scripts/cpu_step_ablation.py` ({args.steps} timed steps after {args.warmup} warm-up "
             f"steps, each variant in a fresh process, {args.repeats} interleaved repeats; median shown). "
             "Training images/s of the whole step: augmentation, forward, backward, SGD update.", "",
             "| variant | batch | threads | train img/s (median) | runs | vs first row | TFLOP/s "
             "| page faults / step |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        rates = [r["images_per_s"] for r in measured[name]]
        last = measured[name][-1]
        lines.append(f"| {name} | {last['batch_size']} | {last['threads']} | {statistics.median(rates):,.0f} | "
                     f"{', '.join(f'{r:.0f}' for r in rates)} | {statistics.median(rates) / base:.2f}x | "
                     f"{statistics.median(r['train_tflops'] for r in measured[name]):.2f} | "
                     f"{statistics.median(r['page_faults_per_step'] for r in measured[name]):,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        import torch

        from wrnlib.files import write_json
        from wrnlib.provenance import environment

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        env = environment(torch.device("cpu"), "n/a (shipped sample images)", "sample")
        write_json(out / "ablation.json", {"env": env, "args": vars(args) | {"child": None},
                                                "variants": {n: VARIANTS[n] for n in names}, "measured": measured})
        (out / "ablation.md").write_text(f"Device: {env['device']}, torch {env['torch']}, commit "
                                         f"{env['git_commit']}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
