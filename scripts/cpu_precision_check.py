"""Does bf16 autocast on the CPU train as well as fp32? Short real runs, then a table.

Trains WRN-16-2 on the complete CIFAR-10 (``$CIFAR10_DIR``) for a few epochs in fp32 and in bf16
autocast, with several seeds each, on the CPU, and writes ``<out>/precision.md``: per precision the
final test accuracy of every seed, their mean and spread, and the training time. The final
evaluation of every run is fp32 either way (as ``python -m wrnlib evaluate`` recomputes it), so
the table compares what the two precisions *trained*.

Runs resume where they stopped and finished ones are read back, so the script can be stopped and
started again:

    python scripts/cpu_precision_check.py [--precisions fp32 bf16] [--seeds 0 1] [--epochs 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from wrnlib import TrainConfig, fit
from wrnlib import runfolder as runs
from wrnlib.files import read_json

RECIPE = dict(depth=16, width=2.0, batch_size=128, lr=0.1, warmup_epochs=1.0, schedule="cosine", device="cpu",
              val_size=5000, tta=False, checkpoint_every=1)


def run_name(precision: str, seed: int, epochs: int) -> str:
    return f"wrn16-2-{epochs}ep-{precision}-s{seed}"


def table(out: Path, precisions: list[str], seeds: list[int], epochs: int) -> str:
    lines = [f"# bf16 autocast against fp32 on the CPU: WRN-16-2, {epochs} epochs, full CIFAR-10", "",
             "Made by `python scripts/cpu_precision_check.py` from the run folders under `runs/` (config, env, "
             "metrics, summary). Final test accuracy of the last epoch's model, evaluated in fp32 on all 10,000 "
             "test images; batch 128, lr 0.1, cosine, 1 warm-up epoch, 5,000 training images held out for "
             "validation. Training time is the training steps alone, as they ran: some runs shared the machine "
             "with other work, so these times are no speed measurement (the benchmarks in results/benchmarks are).",
             "",
             "| precision | seed | final test acc | final val acc | training time | images/s | device |",
             "|---|---|---|---|---|---|---|"]
    accs: dict[str, list[float]] = {}
    for precision in precisions:
        for seed in seeds:
            run_dir = out / "runs" / run_name(precision, seed, epochs)
            if runs.status(run_dir) != "finished":
                lines.append(f"| {precision} | {seed} | (not finished) | | | | |")
                continue
            s = read_json(run_dir / runs.SUMMARY)
            env = read_json(run_dir / runs.ENV)
            accs.setdefault(precision, []).append(s["test_acc"])
            lines.append(f"| {precision} | {seed} | {100 * s['test_acc']:.2f} % | {100 * s['final_val_acc']:.2f} % | "
                         f"{s['train_time_s'] / 60:.1f} min | {s['mean_images_per_s']:.0f} | {env['device']} |")
    lines += ["", "| precision | seeds | mean | std over seeds | min–max |", "|---|---|---|---|---|"]
    for precision, values in accs.items():
        std = f"{100 * statistics.stdev(values):.2f}" if len(values) > 1 else "–"
        lines.append(f"| {precision} | {len(values)} | {100 * statistics.mean(values):.2f} % | {std} | "
                     f"{100 * min(values):.2f}–{100 * max(values):.2f} % |")
    if {"fp32", "bf16"} <= set(accs) and len(accs["fp32"]) >= 2:
        lo, hi = min(accs["fp32"]), max(accs["fp32"])
        below = [a for a in accs["bf16"] if a < lo]
        above = [a for a in accs["bf16"] if a > hi]
        mean_gap = 100 * (statistics.mean(accs["bf16"]) - statistics.mean(accs["fp32"]))
        lines += ["", f"bf16 seeds within fp32's min–max: {len(accs['bf16']) - len(below) - len(above)} of "
                      f"{len(accs['bf16'])}; below it: {len(below)}; above it: {len(above)}. Mean bf16 − mean fp32 = "
                      f"{mean_gap:+.2f} points, against fp32's own spread of {100 * (hi - lo):.2f} points."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $CIFAR10_DIR)")
    parser.add_argument("--out", default="results/cpu-precision")
    parser.add_argument("--table-only", action="store_true", help="only rewrite precision.md")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.table_only:
        for precision in args.precisions:
            for seed in args.seeds:
                config = TrainConfig(name=run_name(precision, seed, args.epochs), out_dir=str(out / "runs"),
                                     data_dir=args.data_dir, epochs=args.epochs, seed=seed, precision=precision,
                                     **RECIPE)
                fit(config, existing="reuse")
    text = table(out, ["fp32", "bf16"], args.seeds, args.epochs)
    (out / "precision.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
