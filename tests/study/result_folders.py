"""Results folders written for the tests, with values known to the digit, and reading a markdown table back."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from wrnlib import TrainConfig, runfolder
from wrnlib.model import param_count
from wrnlib.study import collect, tables

CONFIG = {"depth": 16, "width": 2.5, "epochs": 18, "schedule": "onecycle", "batch_size": 128, "lr": 0.1, "seed": 0,
          "label_smoothing": 0.1}
SUMMARY = {"params": 1_234_567, "test_acc": 0.91234, "test_acc_tta": 0.9187, "best_val_acc": 0.9051,
           "final_val_acc": 0.9003, "train_time_s": 1428.4, "test_images": 10_000, "best_val_epoch": 17,
           "mean_images_per_s": 567.8, "eval_time_s": 61.25}


def cells(markdown: str, first: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``first``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{markdown}")


def write_run(root: Path, name: str, *, config: dict, summary: dict | None, env: dict, epochs_done: int) -> Path:
    """A run folder with these files as given (any config keys), and ``epochs_done`` rows of metrics."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / runfolder.CONFIG).write_text(json.dumps(config))
    (run_dir / runfolder.ENV).write_text(json.dumps(env))
    if summary is not None:
        (run_dir / runfolder.SUMMARY).write_text(json.dumps(summary))
    rows = [{"epoch": e + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5,
             "test_loss": 1.0, "test_acc": 0.25 + e / 100} for e in range(epochs_done)]
    runfolder.write_metrics(run_dir / runfolder.METRICS, rows)
    return run_dir


def study(root: Path) -> Path:
    """A finished and a half-way run, a two-schedule ablation (its runs and tables) and one benchmark."""
    write_run(root / "runs", "headline", config=CONFIG, summary=SUMMARY, env={"device": "A CPU (2 cores)"},
              epochs_done=18)
    write_run(root / "runs", "halfway", config={**CONFIG, "depth": 28, "width": 10}, summary=None, env={},
              epochs_done=3)
    ablation = root / "ablations" / "lr_schedules"
    for schedule, seed, acc in (("cosine", 0, 0.80), ("cosine", 1, 0.82), ("step", 0, 0.70)):
        write_run(ablation / "runs", f"{schedule}-seed{seed}",
                  config={**CONFIG, "schedule": schedule, "seed": seed, "epochs": 10, "depth": 10, "width": 1},
                  summary={**SUMMARY, "test_acc": acc, "epochs": 10}, env={"device": "A CPU (2 cores)"},
                  epochs_done=10)
    final = pd.DataFrame([{"ablation": "lr_schedules", "schedule": s, "seed": seed, "run": f"{s}-seed{seed}",
                           "epochs": 10, "test_acc": acc, "test_acc_tta": acc + 0.01, "best_val_acc": acc - 0.01,
                           "train_time_s": t}
                          for s, seed, acc, t in (("cosine", 0, 0.80, 100), ("cosine", 1, 0.82, 110),
                                                  ("step", 0, 0.70, 90))])
    tables.write_ablation(ablation, pd.DataFrame(columns=list(collect.ABLATION_EPOCH_COLUMNS)), final)
    bench = root / "benchmarks" / "cpu-wrn16-2"
    bench.mkdir(parents=True)
    (bench / "bench.json").write_text(json.dumps({"env": {"torch": "2.x"}, "results": [
        {"mode": "bf16", "device": "cpu", "depth": 16, "width": 2, "batch_size": 128, "train_images_per_s": 1234.5,
         "epoch_time_s": 36.456, "train_tflops": 0.61, "inference_images_per_s": 3523.2}]}))
    return root


def saved_run(folder: Path, name: str, *, device_type: str = "cpu", test_acc: float, val: float, minutes: float,
              **config) -> None:
    """A finished run folder whose config.json is a saved TrainConfig of ``config``."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    TrainConfig(name=name, out_dir=str(folder), **config).save(run_dir / "config.json")
    (run_dir / "env.json").write_text(json.dumps({"device": f"a {device_type}", "device_type": device_type}))
    cfg = TrainConfig(**config)
    (run_dir / "summary.json").write_text(json.dumps({
        "name": name, "epochs": cfg.epochs, "params": param_count(cfg.depth, cfg.width), "test_acc": test_acc,
        "final_val_acc": val, "best_val_acc": val, "train_time_s": 60 * minutes, "test_images": 10_000}))


def cpu_study(root: Path) -> Path:
    """A study at CPU scale: a width sweep at one budget (4 epochs), a schedule ablation (10) and a headline (20)."""
    for k, acc in ((1, 0.70), (2, 0.80), (3, 0.84)):
        saved_run(root / collect.WIDTH_SWEEP / "runs", f"wrn16-{k}-seed0", test_acc=acc, val=acc - 0.01,
                  minutes=k * 2, depth=16, width=float(k), epochs=4)
    for schedule, acc, val in (("cosine", 0.87, 0.86), ("step", 0.88, 0.85)):
        saved_run(root / "ablations" / "lr_schedules" / "runs", f"{schedule}-seed0", test_acc=acc, val=val,
                  minutes=10, depth=16, width=2.0, epochs=10, schedule=schedule)
    saved_run(root / "runs", "headline", test_acc=0.91, val=0.9, minutes=25, depth=16, width=2.0, epochs=20)
    return root
