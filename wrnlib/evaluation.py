"""`python -m wrnlib evaluate`: a run's test accuracy recomputed from its saved weights, checked against
what the run recorded, and kept in the run folder on request."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from .config import TrainConfig
from .data import ENV_VAR, SAMPLE, load_cifar10, test_subset
from .device import device_name, keep_freed_memory
from .engine import evaluate
from .files import read_json, write_json
from .provenance import git_commit
from .runfolder import ENV, EVALUATION, MODEL_FP16, SUMMARY, load_run_model


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto",
                 batch_size: int = 500, progress: bool = False, test_limit: int | None = None,
                 tta: bool = True, on_start: Callable[[TrainConfig, int], None] | None = None) -> dict[str, Any]:
    """Test accuracy (and flip-TTA unless ``tta`` is False) in float32, next to what the run recorded.

    Reads only the test file. ``test_limit``: a fixed stratified subset of that many test images
    (None: the images the run was scored on). When the images are the run's own, the report says
    whether it agrees with the recorded accuracy (``agrees``), and ``disagreement`` says why not.
    ``on_start(config, images)`` is called once the model and the data are loaded, before evaluating.
    """
    run_dir = Path(run_dir)
    model, config = load_run_model(run_dir, device)
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()
    data = load_cifar10(_data_location(data_dir, config.data_dir), test_only=True)
    limit = config.test_limit if test_limit is None else test_limit
    images, labels = test_subset(data, limit)
    if on_start is not None:
        on_start(config, len(labels))
    plain = evaluate(model, images, labels, batch_size=batch_size, progress=progress and "test")
    flipped = (evaluate(model, images, labels, batch_size=batch_size, tta=True, progress=progress and "flip-TTA")
               if tta else None)
    report = {"run": str(run_dir), "device": device_name(next(model.parameters()).device),
              "torch": torch.__version__, "git_commit": git_commit(), "test_images": len(labels),
              "test_data_checksum": data.test_checksum,
              "test_acc": plain["acc"], "test_acc_tta": flipped["acc"] if flipped else None, "test_loss": plain["loss"]}
    if (run_dir / SUMMARY).exists():
        summary = read_json(run_dir / SUMMARY)
        report["recorded_test_acc"] = summary.get("test_acc")
        report["recorded_test_acc_tta"] = summary.get("test_acc_tta")
        if len(labels) == summary.get("test_images", len(labels)) and limit == config.test_limit:
            report.update(_agreement(run_dir, report, summary))
    return report


def _data_location(asked: str | None, recorded: str | None) -> str | None:
    """The data to score on: ``asked`` (--data-dir); else the sample when the run was trained on it (it is the same
    everywhere); else the user's, $CIFAR10_DIR or the cache, before the folder an older run recorded (only when it
    exists here). Which data it is, is checked by its checksum."""
    if asked is not None or recorded == SAMPLE:
        return asked if asked is not None else SAMPLE
    if os.environ.get(ENV_VAR):
        return None
    return recorded if recorded and Path(recorded).is_dir() else None


def _agreement(run_dir: Path, report: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Whether a recomputed accuracy matches the recorded one within what rounding explains.

    The same weights evaluated in fp32 on another device (or another torch) can differ in a few
    borderline images; more than max(2 images, 0.1 %) means these weights did not make that
    number, or the test images differ.
    """
    n = report["test_images"]
    tolerance = max(2, round(0.001 * n))
    off = {key: round(abs(report[key] - summary[key]) * n) for key in ("test_acc", "test_acc_tta")
           if report.get(key) is not None and summary.get(key) is not None}
    bad = {key: images for key, images in off.items() if images > tolerance}
    if not bad:
        return {"agrees": True}
    env = read_json(run_dir / ENV) if (run_dir / ENV).exists() else {}
    recorded_data = env.get("test_data_checksum")
    if recorded_data and recorded_data != report["test_data_checksum"]:
        cause = "the test images differ from the run's (their checksum is not the one in env.json)"
    else:
        cause = (f"the weights in {MODEL_FP16} do not belong to the run that recorded it"
                 + ("" if recorded_data else ", or the test images differ (this run's env.json has no test checksum)"))
    key = next(iter(bad))
    return {"agrees": False, "disagreement": (
        f"{run_dir}: the recomputed {key.replace('_', ' ')} {100 * report[key]:.2f} % differs from the recorded "
        f"{100 * summary[key]:.2f} % by {bad[key]} of {n} images, more than rounding explains ({tolerance}): {cause}")}


def record_evaluation(run_dir: str | Path, report: dict[str, Any]) -> None:
    """Keep an evaluation in the run folder (evaluation.json), and make summary.json carry the numbers
    the checkpoint reproduces; a differing number of the training device stays, labelled as such."""
    run_dir = Path(run_dir)
    if report.get("agrees") is False:
        raise ValueError(f"{report['disagreement']}. Nothing was recorded.")
    if "agrees" not in report or report.get("test_acc_tta") is None:
        raise ValueError("--record keeps a full evaluation of the run's own test images with flip-TTA; drop "
                         "--test-limit and --no-tta to record (nothing was recorded)")
    write_json(run_dir / EVALUATION, report)
    summary = read_json(run_dir / SUMMARY)
    for key in ("test_acc", "test_acc_tta"):
        if summary.get(key) is not None and summary[key] != report[key]:
            summary.setdefault(f"{key}_on_training_device", summary[key])
            summary[key] = report[key]
    summary["reproduced_by"] = {"file": EVALUATION, "device": report["device"]}
    write_json(run_dir / SUMMARY, summary)
