"""The CPU headline's recipe, chosen on the validation split at the time budget it will train for.

Each trial changes one thing of the baseline (the CPU headline's recipe before this choice; the last puts
together the two that gained most alone) and trains for the same minutes of training on this machine
(``budget_minutes``: the step is timed first and the epochs that fit are chosen), seed 0 unless ``--seeds``
says more, 5,000 training images held out for validation. The table ranks them by final validation
accuracy, with each one's gain over the baseline; the test set is not looked at: this table is the
evidence the CPU headline's recipe is chosen on.

    python scripts/cpu_recipe.py trials [--minutes 30] [--only ls0 ema] [--seeds 0 1]   # train (or read back)
    python scripts/cpu_recipe.py table                                                  # results/cpu/recipe/recipe.md

Runs resume where they stopped and finished ones are read back, so the script can be stopped and
started again. Time them on an idle machine: the epochs a budget holds are measured.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wrnlib import TrainConfig, fit
from wrnlib import runfolder as runs
from wrnlib.files import read_json
from wrnlib.study.formats import MISSING, markdown_table
from wrnlib.study.sweep import seed_configs

OUT = Path("results/cpu/recipe")
# The CPU headline's recipe before the trials (its run, wrn16-2-cpu-headline, is in git's history): WRN-16-2,
# one-cycle, batch 128 at peak lr 0.1, one warm-up epoch, label smoothing 0.1, crop + flip, SGD-Nesterov, wd 5e-4.
BASELINE = dict(depth=16, width=2.0, batch_size=128, lr=0.1, warmup_epochs=1.0, schedule="onecycle",
                label_smoothing=0.1, device="cpu", val_size=5000, seed=0, checkpoint_every=1, progress=False)
TRIALS = {  # name: (what changes, the settings that change it)
    "baseline": ("the CPU headline's recipe", {}),
    "ls0": ("no label smoothing", {"label_smoothing": 0.0}),
    "ls0.2": ("label smoothing 0.2", {"label_smoothing": 0.2}),
    "ema": ("an EMA of the weights (decay 0.999) is evaluated", {"ema_decay": 0.999}),
    "cutout8": ("Cutout 8", {"cutout": 8}),
    "batch256": ("batch 256, peak lr 0.2 (scaled linearly)", {"batch_size": 256, "lr": 0.2}),
    "momentum": ("plain momentum instead of Nesterov", {"nesterov": False}),
    "wd1e-3": ("weight decay 1e-3", {"weight_decay": 1e-3}),
    "wrn16-3": ("WRN-16-3 (wider)", {"width": 3.0}),
    "wrn16-3+ema": ("WRN-16-3 and an EMA of the weights (decay 0.999)", {"width": 3.0, "ema_decay": 0.999}),
}


def config(name: str, minutes: float, seed: int = 0) -> TrainConfig:
    """Seed 0 trains in runs/<trial>, another seed in runs/<trial>-seed<n> (notebook 02's other_seeds naming)."""
    trial = TrainConfig(name=name, out_dir=str(OUT / "runs"), budget_minutes=minutes,
                        **(BASELINE | TRIALS[name][1])).validate()
    return trial if seed == trial.seed else seed_configs(trial, [seed])[0]


def _joined(values) -> str:
    return " / ".join(dict.fromkeys(values))  # each distinct value once, in seed order


def table() -> str:
    rows = {}  # trial: [(summary, config, env) of each finished seed], and their mean final val acc
    for name in TRIALS:
        seeds = [(read_json(d / runs.SUMMARY), runs.load_config(d), read_json(d / runs.ENV))
                 for d in [OUT / "runs" / name, *sorted((OUT / "runs").glob(f"{name}-seed*"))]
                 if runs.status(d) == "finished"]
        if seeds:
            rows[name] = seeds, sum(summary["final_val_acc"] for summary, _, _ in seeds) / len(seeds)
    lines = ["# The CPU recipe, chosen on validation at its time budget", "",
             "Made by `python scripts/cpu_recipe.py table` from the run folders under `runs/`. Each trial changes one "
             "thing of the baseline (wrn16-3+ema puts together the two that gained most alone) and trains for the "
             "same minutes of training on the same machine (the epochs that fit were chosen by timing its step "
             "first); 5,000 training images held out. "
             "Ranked by final validation accuracy; the test set is not shown: settings are not chosen on it. With "
             "one seed, a gain of a few tenths of a point is within the noise of a seed; a trial run with more seeds "
             "shows their mean (each seed's in brackets), and its gain is that mean's.", ""]
    base, cells = rows["baseline"][1] if "baseline" in rows else None, []
    for name, (seeds, mean) in sorted(rows.items(), key=lambda r: -r[1][1]):
        gain = MISSING if base is None or name == "baseline" else f"{100 * (mean - base):+.2f} points"
        summaries, configs, envs = zip(*seeds)
        accs = [f"{100 * summary['final_val_acc']:.2f}" for summary in summaries]
        minutes = _joined(f"{summary['train_time_s'] / 60:.1f}" for summary in summaries)
        each = f" ({', '.join(accs)})" if len(accs) > 1 else ""
        cells.append([name, TRIALS[name][0], ", ".join(str(cfg.seed) for cfg in configs),
                      _joined(str(cfg.epochs) for cfg in configs), f"{minutes} min", f"{100 * mean:.2f} %{each}", gain,
                      _joined(env["device"] for env in envs)])
    lines.append(markdown_table(["trial", "what changes", "seeds", "epochs", "training time", "final val acc",
                                 "gain over baseline", "device"], cells))
    missing = [name for name in TRIALS if name not in rows]
    if missing:
        lines += ["", "Not finished yet: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("trials", "table"))
    parser.add_argument("--minutes", type=float, default=30.0, help="training minutes of each trial (default: 30)")
    parser.add_argument("--only", nargs="+", choices=sorted(TRIALS), help="these trials only (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="train each trial with these seeds "
                        "(default: 0)")
    args = parser.parse_args(argv)
    if args.command == "trials":
        for name in args.only or TRIALS:
            for seed in args.seeds:
                print(f"[{name}, seed {seed}] {TRIALS[name][0]}", flush=True)
                fit(config(name, args.minutes, seed), existing="reuse")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "recipe.md").write_text(table())
    print(f"wrote {OUT / 'recipe.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
