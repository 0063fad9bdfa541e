"""The width explorer's widgets: sliders for depth, width and batch size, a live view, and a button that trains.

Two things about where widget callbacks run shape this module:

* JupyterLab (4.2 and later) sends widget messages over a kernel *subshell*, so a callback can run on
  another thread than the cells, and two callbacks can overlap. Each redraw therefore happens
  under a lock and always shows the sliders' values *at drawing time*, redrawing until they stop
  changing: the last value wins, whatever order the callbacks finish in. The view is two HTML
  widgets (the table, and the figure as a PNG ``<img>``) whose values are replaced, never an Output
  widget (whose capture follows the message being handled, not the widget).
* An exception inside an ``Output`` widget's ``with`` block is displayed and swallowed by the widget,
  so the training button catches everything itself and shows one message in its status line.

:func:`interactive` decides whether to build the widgets at all: only when a front end that can
show them is connected (headless runs, e.g. papermill, can stall on widget messages).
"""
from __future__ import annotations

import base64
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ... import runfolder as runs_io
from ...config import TrainConfig
from ...data import DataError, load_cifar10
from .. import notebook
from ..formats import pct
from . import figure, numbers
from .numbers import BUDGET, DEPTHS, WIDTH_MAX, WIDTH_MIN, WIDTH_STEP, Choice

BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048)


def show(depth: int, width: float, batch_size: int = 512, budget: int = BUDGET, runs: pd.DataFrame | None = None):
    """Display the table and the figure for one choice (in a notebook); returns (choice, figure)."""
    from IPython.display import Image, Markdown, display

    choice = numbers.describe(depth, width, batch_size, budget)
    fig, data = figure.draw(choice, runs)
    display(Markdown(numbers.markdown(choice, runs)))
    display(Image(data=data, format="png"))
    return choice, fig


def interactive(requested: bool | None = None) -> bool:
    """Whether to build the sliders: ``requested`` when given, else whether a front end that can interact is
    connected, i.e. the running cell was sent with ``allow_stdin`` (JupyterLab, Notebook and VS Code send
    True; papermill, nbconvert and other nbclient runs send False, and widgets there can stall them)."""
    if requested is not None:
        return bool(requested)
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:  # plain Python or terminal IPython: nothing could show a widget
        return False
    parent = kernel.get_parent() or {}
    return bool(parent.get("content", {}).get("allow_stdin", False))


class Explorer:
    """Sliders for depth, width and batch size, a live view, and a button that trains the choice.

    ``train_base`` is the TrainConfig the button trains (data, sizes, epochs, ...; TrainConfig's defaults when
    None) with the sliders' depth and width and a name of their own; ``max_train_minutes`` refuses, with a
    message, training estimated to take longer (None: no limit); ``fit`` replaces :func:`wrnlib.fit` (tests).
    """

    def __init__(self, depth: int = 28, width: float = 3.5, batch_size: int = 512, budget: int = BUDGET,
                 runs: pd.DataFrame | None = None, train_base: TrainConfig | None = None,
                 fit: Callable | None = None, max_train_minutes: float | None = 10):
        import ipywidgets as w

        self.budget, self.runs = budget, runs
        self.train_base = train_base or TrainConfig()
        self.max_train_minutes = max_train_minutes
        self._fit = fit
        self._lock = threading.Lock()
        self._shown: tuple | None = None
        self.choice: Choice | None = None
        style, layout = {"description_width": "110px"}, w.Layout(width="520px")
        self.depth = w.SelectionSlider(options=sorted(set(DEPTHS) | {int(depth)}), value=int(depth),
                                       description="depth (6n+4)", continuous_update=False, style=style, layout=layout)
        self.width = w.FloatSlider(value=width, min=min(WIDTH_MIN, width), max=max(WIDTH_MAX, width), step=WIDTH_STEP,
                                   description="widening k", continuous_update=False, readout_format=".2f",
                                   style=style, layout=layout)
        self.batch = w.SelectionSlider(options=sorted(set(BATCH_SIZES) | {int(batch_size)}), value=int(batch_size),
                                       description="batch size", continuous_update=False, style=style, layout=layout)
        self.table = w.HTML()
        self.figure = w.HTML()  # an <img> with a title: ipywidgets' Image view breaks when given a tooltip
        self.button = w.Button(description="Train this WRN", icon="play", button_style="warning",
                               tooltip="runs wrnlib.fit with the notebook's training parameters (slow)")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="epochs",
                                      layout=w.Layout(width="520px", visibility="hidden"))
        self.status = w.HTML()
        for slider in (self.depth, self.width, self.batch):
            slider.observe(self._on_change, names="value")
        self.button.on_click(self._on_train)
        self.widget = w.VBox([self.depth, self.width, self.batch, self.table, self.figure, self.button,
                              self.progress, self.status])
        self.refresh()

    # -- the view ---------------------------------------------------------------------------

    def _on_change(self, _change: dict) -> None:
        self.refresh()  # cheap: model_stats of one WRN (cached) and closed-form curves; never training

    def refresh(self, force: bool = False) -> Choice:
        """Show the sliders' current values; callbacks that overlap wait, and the last values win."""
        with self._lock:
            if force:
                self._shown = None
            while True:
                wanted = (self.depth.value, self.width.value, self.batch.value)
                if wanted == self._shown:
                    return self.choice
                self._draw(*wanted)
                self._shown = wanted

    def _draw(self, depth: int, width: float, batch_size: int) -> None:
        choice = numbers.describe(depth, width, batch_size, self.budget)
        _, data = figure.draw(choice, self.runs)
        self.choice = choice
        self.table.value = numbers.html(choice, self.runs)
        label = f"{choice.name}, batch {batch_size}: parameters, compute and memory, measured accuracy"
        self.figure.value = (f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' "
                             f"alt='{label}' title='{label}' style='max-width:100%'>")

    # -- training ---------------------------------------------------------------------------

    def config(self) -> TrainConfig:
        """What the button trains: the chosen WRN, the rest from ``train_base``."""
        depth, width = int(self.depth.value), float(self.width.value)
        return replace(self.train_base, name=f"explore-wrn{depth}-{width:g}", depth=depth, width=width).validate()

    def _say(self, text: str, color: str = "inherit") -> None:
        import html

        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _on_train(self, _button: Any) -> None:
        self.button.disabled = True
        config, made_out_dir = None, False
        try:
            config = self.config()
            made_out_dir = not Path(config.out_dir).exists()
            self._train(config)
        except DataError as exc:
            self._say(f"No CIFAR-10 to train on: {exc}", "firebrick")
        except notebook.TrainingTimeError as exc:
            self._say(f"Not started: {exc}", "firebrick")
        except Exception as exc:  # shown in the widget, once; the notebook and the sliders keep working
            self._say(f"Training failed: {type(exc).__name__}: {exc}", "firebrick")
        finally:
            if config is not None and runs_io.status(config.run_dir) in ("absent", "unstarted"):
                _remove_unstarted(config.run_dir, made_out_dir)
            self.button.disabled = False

    def _train(self, config) -> None:
        from ...progress import format_epoch
        from ...train import fit as default_fit

        data = load_cifar10(config.data_dir)  # before anything is written: no data, no folder
        notebook.check_training_time([config], len(data.train_labels), len(data.test_labels),
                                     self.max_train_minutes)
        self.progress.max, self.progress.value = config.epochs, 0
        self.progress.layout.visibility = "visible"
        self._say(f"training {config.name} ({config.epochs} epochs) into {config.run_dir} ...")

        def on_epoch_end(row: dict) -> None:
            self._say(format_epoch(row, config.epochs))
            self.progress.value = int(row["epoch"])

        result = (self._fit or default_fit)(config, data=data, existing="reuse", on_epoch_end=on_epoch_end)
        self.progress.value = self.progress.max
        self._say(f"done: test accuracy {pct(result.summary['test_acc'])}; run folder {result.run_dir}", "darkgreen")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _remove_unstarted(run_dir: Path, made_out_dir: bool) -> None:
    """Leave nothing behind from a start that failed: the run's files, its folder, and the output folder
    when this click created it."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        runs_io.clear_unstarted(run_dir)
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
    if made_out_dir and run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
        run_dir.parent.rmdir()
