"""Re-evaluate a finished run's saved model on the real test set."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import runs
from .config import TrainConfig
from .data import load_cifar10, test_subset
from .engine import evaluate, resolve_device
from .model import WideResNet


def load_run_model(run_dir: str | Path, device: str = "auto") -> tuple[WideResNet, TrainConfig]:
    """The run's model (fp16 weights as float32) in eval mode, and its config."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {runs.CONFIG}); pass a folder "
                                f"under results/runs/")
    config = TrainConfig.load(run_dir / runs.CONFIG)
    model = WideResNet(config.depth, config.width, 10, config.dropout)
    model.load_state_dict(runs.load_model_weights(run_dir))
    return model.to(resolve_device(device)).eval(), config


def evaluate_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto",
                 batch_size: int = 500) -> dict[str, Any]:
    """Test accuracy with and without flip-TTA in float32, next to what the run recorded."""
    run_dir = Path(run_dir)
    model, config = load_run_model(run_dir, device)
    data = load_cifar10(data_dir if data_dir is not None else config.data_dir)
    images, labels = test_subset(data, config.test_limit)  # the images the run was scored on
    plain = evaluate(model, images, labels, batch_size=batch_size)
    flipped = evaluate(model, images, labels, batch_size=batch_size, tta=True)
    report = {"run": str(run_dir), "device": runs.device_name(next(model.parameters()).device),
              "test_images": len(labels), "data_checksum": data.checksum,
              "test_acc": plain["acc"], "test_acc_tta": flipped["acc"], "test_loss": plain["loss"]}
    if (run_dir / runs.SUMMARY).exists():
        summary = runs.read_json(run_dir / runs.SUMMARY)
        report["recorded_test_acc"] = summary.get("test_acc")
        report["recorded_test_acc_tta"] = summary.get("test_acc_tta")
    return report
