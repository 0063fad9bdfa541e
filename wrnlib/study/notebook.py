"""What every study notebook does first: the working folder, the data it will use, and whether training fits its time.

* :func:`setup`: work from the repository root, the study's plotting style;
* :func:`choose_data`: the data folder a notebook loads and the split sizes that fit it. A notebook
  opened by a person with no ``CIFAR10_DIR`` falls back to the sample shipped with wrnlib, and says
  so (:meth:`DataChoice.show`): it is not the benchmark;
* :func:`train_config`: the TrainConfig of the notebook's parameters, none of them typed again;
* :func:`check_training_time`: refuse at once, with a clear message, training that would take far
  longer than the notebook's ``max_train_minutes`` (e.g. WRN-28-3.5 for 30 epochs on a CPU);
* :func:`epoch_printer`: fit's one line per epoch, for notebooks that run fit without its bar.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .. import runfolder as runs
from ..config import RESUME_MUTABLE, TrainConfig, fit_to_sample
from ..data import ENV_VAR, SAMPLE, default_cache_dir, has_cifar10, sample_size, sample_split
from ..device import resolve_device
from ..progress import format_epoch, rough_epoch_seconds  # also behind fit's "roughly N per epoch" line
from . import plots
from .formats import duration
from .profiles import REPO_ROOT
from .tables import ReferenceCurve

CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES = 50_000, 10_000


def setup() -> Path:
    """Work from the repository root (as the study runner does) and set the plotting style.

    Paths in the notebooks' parameters are relative to the repository root; a notebook opened
    from ``notebooks/`` in Jupyter starts one folder below it.
    """
    if (REPO_ROOT / "notebooks").is_dir() and Path.cwd().resolve() == (REPO_ROOT / "notebooks").resolve():
        os.chdir(REPO_ROOT)
    plots.setup()
    return Path.cwd()


def epoch_printer(prefix: str = "") -> Callable[[dict[str, Any]], None]:
    """An ``on_epoch_end`` callback printing fit's one line per epoch (notebooks run fit without its bar)."""
    def show(row: dict[str, Any]) -> None:
        print(prefix + format_epoch(row), flush=True)
    return show


def live_curves(done: list[dict[str, Any]] | None = None,
                reference: ReferenceCurve | None = None) -> Callable[[dict[str, Any]], None]:
    """An ``on_epoch_end`` callback for a notebook watching a run: fit's line per epoch, and the training curves
    (with ``reference``'s points) redrawn in place after each epoch (one figure, replaced). ``done``: the epochs a
    resumed run already has."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from IPython.display import Image, display

    rows, handle = list(done or []), None

    def show(row: dict[str, Any]) -> None:
        nonlocal handle
        print(format_epoch(row), flush=True)
        rows.append(row)
        fig = plots.training_curves(pd.DataFrame(rows), reference=reference)
        image = Image(data=plots.png(fig), format="png")
        plt.close(fig)
        if handle is None:
            handle = display(image, display_id=True)
        else:
            handle.update(image)
    return show


# --------------------------------------------------------------------------- which data


@dataclass(frozen=True)
class DataChoice:
    """The data a notebook uses: ``data_dir`` for load_cifar10 / TrainConfig, split sizes that fit it, a note."""
    data_dir: str | None
    val_size: int
    train_limit: int
    test_limit: int
    train_images: int  # training images in that data set (for time estimates; 50,000 unless it is the sample)
    test_images: int
    note: str = ""  # markdown to show the reader: why the sample, what was changed ("" when nothing)

    @property
    def is_sample(self) -> bool:
        return self.data_dir == SAMPLE

    def show(self) -> None:
        """Display the note (if any) in the notebook."""
        if self.note:
            from IPython.display import Markdown, display

            display(Markdown(self.note))


def choose_data(data_dir: str | None = None, val_size: int = 5000, train_limit: int = 0,
                test_limit: int = 0) -> DataChoice:
    """The data a notebook loads: ``data_dir``, else ``$CIFAR10_DIR``, else the loader's cache folder when it
    holds CIFAR-10, else the shipped sample (with a note). On the sample, the sizes are cut to fit it."""
    if data_dir is None and not os.environ.get(ENV_VAR) and not has_cifar10(default_cache_dir()):
        why = (f"No CIFAR-10 found (`data_dir` is None, `{ENV_VAR}` is not set and {default_cache_dir()} holds "
               f"no data), so this notebook uses")
        return _on_sample(why, val_size, train_limit, test_limit)
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if chosen == SAMPLE:
        return _on_sample("This notebook uses", val_size, train_limit, test_limit)
    return DataChoice(data_dir, val_size, train_limit, test_limit, CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES)


def _on_sample(why: str, val_size: int, train_limit: int, test_limit: int) -> DataChoice:
    n_train, n_test = sample_size()
    fitted = sample_split(val_size, train_limit, test_limit)
    asked = {"val_size": val_size, "train_limit": train_limit, "test_limit": test_limit}
    changed = [f"`{k}` {asked[k]:,} → {v:,}" + (" (all)" if v == 0 else "")
               for k, v in fitted.items() if v != asked[k]]
    note = (f"**Data: the sample shipped with wrnlib ({n_train:,} training and {n_test:,} test images), not the "
            f"benchmark.** {why} it; accuracies on it say nothing about CIFAR-10. For results, set `{ENV_VAR}` "
            f"(or `data_dir`) to the full data set.")
    if changed:
        note += " Sizes fitted to the sample: " + ", ".join(changed) + "."
    return DataChoice(SAMPLE, fitted["val_size"], fitted["train_limit"], fitted["test_limit"], n_train, n_test, note)


# --------------------------------------------------------------------------- the config of its parameters

_FIELDS = {f.name for f in fields(TrainConfig)}


def train_config(parameters: Mapping[str, Any], source: DataChoice | None = None, **fixed: Any) -> TrainConfig:
    """The validated TrainConfig of a notebook's parameters (``globals()``, or a dict of them).

    Every name that is a TrainConfig field is taken, ``run_name`` as ``name`` (None: :func:`run_name`); other
    names are ignored (a notebook's globals hold much else). Then, each replacing what came before: the entries of
    ``extra_config`` (a name there that is no field is refused), the data ``source`` chose (its data_dir and the
    split sizes fitted to it), progress off (the notebooks print a line per epoch instead), and ``fixed``. On the
    sample, what fit would fit to it is fitted here, and said.
    """
    values = {k: v for k, v in parameters.items() if k in _FIELDS}
    if parameters.get("run_name"):
        values["name"] = parameters["run_name"]
    values |= parameters.get("extra_config") or {}
    if source is not None:
        values |= {"data_dir": source.data_dir, "val_size": source.val_size, "train_limit": source.train_limit,
                   "test_limit": source.test_limit}
    values |= {"progress": False} | fixed
    config = TrainConfig.from_dict(values | {"name": values.get("name") or "run"},
                                   source="the notebook's parameters and extra_config").validate()
    config, fitted = fit_to_sample(config)  # what fit would do, shown before the settings are printed
    if fitted:
        print(fitted)
    return config if values.get("name") else replace(config, name=run_name(config))


def run_name(config: TrainConfig) -> str:
    """A run folder name that follows the settings: "wrn16-2-" and a digest of every setting that changes what
    is computed, so that other settings train another run and the same ones read it back."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUME_MUTABLE | {"name"}}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"wrn{config.depth}-{config.width:g}-{digest}"


# --------------------------------------------------------------------------- how long training takes


class TrainingTimeError(RuntimeError):
    """Training would take far longer than the notebook allows; the message says what to change."""


def estimate_minutes(config: TrainConfig, train_images: int, test_images: int) -> float:
    """A rough training time: 3 x forward FLOPs per training image, 1 x per evaluated image, at fit's rate; with a
    time budget, the budget and the evaluations of the epochs it would roughly hold."""
    train = config.train_limit or max(train_images - config.val_size, 0)
    evaluated = config.val_size + (min(config.test_limit, test_images) if config.test_limit else test_images)
    device = resolve_device(config.device)
    epoch = rough_epoch_seconds(config, train, 0, device)
    evaluation = rough_epoch_seconds(config, 0, evaluated, device)
    epochs = config.budget_minutes * 60 / epoch if config.budget_minutes else config.epochs
    return epochs * (epoch + evaluation) / 60


def check_training_time(configs: Iterable[TrainConfig], train_images: int, test_images: int,
                        max_minutes: float | None) -> float:
    """Minutes the unfinished runs would take; :class:`TrainingTimeError` when that exceeds ``max_minutes``.

    Finished runs are read back, not trained, so they cost nothing. ``max_minutes`` None: no limit.
    """
    todo = [c for c in configs if runs.status(c.run_dir) != "finished"]
    minutes = sum(estimate_minutes(c, train_images, test_images) for c in todo)
    if max_minutes is not None and minutes > max_minutes:
        first = todo[0]
        what = (f"{len(todo)} run(s) of WRN-{first.depth}-{first.width:g} for {first.epochs} epochs on "
                f"{resolve_device(first.device).type}")
        raise TrainingTimeError(
            f"{what} would take about {duration(60 * minutes)} (a rough estimate from the model's FLOPs), more than "
            f"max_train_minutes = {max_minutes:g}. Use a GPU (device = \"cuda\"), fewer epochs or a smaller WRN "
            f"(the quick study: python -m wrnlib study --profile quick), or raise max_train_minutes "
            f"(None: no limit).")
    return minutes


def describe_estimate(minutes: float) -> str:
    """The notebooks' line about the training to come: nothing (all read back), or a rough time that never
    reads as zero."""
    if minutes == 0:
        return "nothing to train: the finished runs are read back"
    return f"estimated training time: {duration(60 * minutes)} (a rough estimate from the FLOPs)"
