"""wrnlib: lightweight Wide Residual Networks on CIFAR-10.

    from wrnlib import TrainConfig, fit
    result = fit(TrainConfig(depth=28, width=3.5, epochs=30))

The library is this package's top level: the model (model), the data (data, augment), the training
run (config, train, schedules, optim, engine) and its folder (runfolder, evaluation). The notebook
study that uses it lives in :mod:`wrnlib.study`; the library never imports it.
"""
from .augment import BatchAugment
from .checkpoints import CheckpointError
from .config import TrainConfig
from .data import (CIFAR10, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, NUM_CLASSES, DataError, load_cifar10,
                   test_subset, train_val_split)
from .device import resolve_device
from .engine import evaluate, predict_logits
from .evaluation import evaluate_run
from .model import WideResNet, model_stats, stage_widths
from .runfolder import RunExistsError, RunResult, load_run_model
from .schedules import SCHEDULES, ScheduleParams, lr_curve, lr_multiplier
from .train import NonFiniteError, NonFiniteLossError, fit

__version__ = "0.1.0"
__all__ = [
    "BatchAugment", "CIFAR10", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "CheckpointError", "DataError",
    "NUM_CLASSES", "NonFiniteError", "NonFiniteLossError", "RunExistsError", "RunResult", "SCHEDULES",
    "ScheduleParams", "TrainConfig", "WideResNet", "evaluate", "evaluate_run", "fit", "load_cifar10",
    "load_run_model", "lr_curve", "lr_multiplier", "model_stats", "predict_logits", "resolve_device",
    "stage_widths", "test_subset", "train_val_split",
]
