"""The explorer's widgets without a browser: the view follows the sliders (last value wins), and the button
trains with progress, or says in one message why it did not, leaving nothing behind."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import types

import matplotlib

matplotlib.use("Agg")

import IPython  # noqa: E402
import pytest  # noqa: E402

from wrnlib import TrainConfig, model_stats
from wrnlib import runfolder  # noqa: E402
from wrnlib.study.explorer import figure, widgets  # noqa: E402

TINY = dict(epochs=2, data_dir="sample", device="cpu", val_size=200, train_limit=200, test_limit=100, batch_size=50,
            progress=False)


def _png(ui) -> bytes:
    """The PNG the explorer's figure widget shows."""
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", ui.figure.value)
    return base64.b64decode(match.group(1)) if match else b""


def _ui(tmp_path, **overrides):
    base = TrainConfig(**(TINY | {"out_dir": str(tmp_path / "explore")} | overrides))
    return widgets.Explorer(10, 1.0, 64, train_base=base)


# --------------------------------------------------------------------------- whether to build the widgets


def _kernel_shell(allow_stdin):
    parent = {"content": {"code": "...", "allow_stdin": allow_stdin}}
    return types.SimpleNamespace(kernel=types.SimpleNamespace(get_parent=lambda: parent))


def test_sliders_only_when_a_front_end_can_show_them(monkeypatch):
    assert widgets.interactive(True) is True and widgets.interactive(False) is False
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # plain python
    assert widgets.interactive(None) is False
    monkeypatch.setattr(IPython, "get_ipython", lambda: _kernel_shell(True))  # JupyterLab's execute_request
    assert widgets.interactive(None) is True
    monkeypatch.setattr(IPython, "get_ipython", lambda: _kernel_shell(False))  # nbclient (papermill, nbconvert)
    assert widgets.interactive(None) is False
    assert widgets.interactive(True) is True  # an explicit choice wins


# --------------------------------------------------------------------------- the view


def test_each_slider_updates_the_table_and_the_figure(tmp_path):
    ui = _ui(tmp_path)
    for attr, value in (("depth", 16), ("width", 2.25), ("batch", 256)):
        before = _png(ui)
        setattr(getattr(ui, attr), "value", value)
        depth, width, batch = ui.depth.value, ui.width.value, ui.batch.value
        name = f"WRN-{depth}-{width:g}"
        assert (ui.choice.name, ui.choice.batch_size) == (name, batch)
        assert f"<h3>{name}</h3>" in ui.table.value and f"{model_stats(depth, width).params:,}" in ui.table.value
        assert f"a batch of {batch}" in ui.table.value
        assert _png(ui) != before and _png(ui)[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"title='{name}, batch {batch}" in ui.figure.value
    assert not (tmp_path / "explore").exists()  # slider moves never train


def test_last_slider_value_wins_when_callbacks_overlap(monkeypatch):
    """JupyterLab sends widget messages over a kernel subshell: two callbacks can run on two threads at once.
    Whatever order their drawing finishes in, the view must end on the slider's last value."""
    ui = widgets.Explorer(28, 3.5, 512)
    real_figure, slow_started = figure.figure, threading.Event()

    def slow_figure(choice, *args, **kwargs):
        if choice.batch_size == 256:  # the first move draws slowly ...
            slow_started.set()
            time.sleep(1.0)
        return real_figure(choice, *args, **kwargs)

    monkeypatch.setattr(figure, "figure", slow_figure)
    first = threading.Thread(target=lambda: setattr(ui.batch, "value", 256))
    first.start()
    assert slow_started.wait(20)
    ui.batch.value = 128  # ... while the second move arrives on another thread
    first.join(20)
    assert ui.batch.value == 128
    assert ui.choice.batch_size == 128, f"the slider says 128, the view shows batch {ui.choice.batch_size}"
    assert "a batch of 128" in ui.table.value and "title='WRN-28-3.5, batch 128" in ui.figure.value


# --------------------------------------------------------------------------- the training button


def test_train_button_trains_the_choice_with_progress(tmp_path):
    ui = _ui(tmp_path)
    seen = []
    ui.progress.observe(lambda change: seen.append((change["new"], ui.status.value)), names="value")
    ui._on_train(None)  # the button: a real (tiny) run of the chosen WRN
    run_dir = tmp_path / "explore" / "explore-wrn10-1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == model_stats(10, 1.0).params
    assert ui.progress.max == TINY["epochs"] and ui.progress.value == TINY["epochs"]
    assert any(value == 1 and "epoch   1/2" in status for value, status in seen)  # progress while it trains
    assert f"{100 * summary['test_acc']:.2f}%" in ui.status.value and str(run_dir) in ui.status.value
    assert not ui.button.disabled


def test_train_button_without_data_shows_one_message_and_leaves_nothing(tmp_path):
    empty = tmp_path / "no-cifar10"
    empty.mkdir()
    ui = _ui(tmp_path, data_dir=str(empty))
    ui._on_train(None)
    assert ui.status.value.count(str(empty)) == 1 and "No CIFAR-10 to train on" in ui.status.value
    assert "Traceback" not in ui.status.value
    assert not (tmp_path / "explore").exists()
    assert not ui.button.disabled


def test_train_button_refuses_a_run_far_over_its_time_limit(tmp_path):
    base = TrainConfig(**(TINY | {"epochs": 300, "train_limit": 0, "out_dir": str(tmp_path / "explore")}))
    ui = widgets.Explorer(28, 3.5, 512, train_base=base, max_train_minutes=5)
    ui._on_train(None)
    assert "Not started" in ui.status.value and "max_train_minutes = 5" in ui.status.value
    assert not (tmp_path / "explore").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    def failing_fit(config, **_):
        runfolder.create(config, {"device": "cpu"})  # what fit writes first ...
        raise RuntimeError("CUDA out of memory")  # ... then the first epoch fails

    ui = _ui(tmp_path)
    ui._fit = failing_fit
    ui._on_train(None)
    assert "Training failed: RuntimeError: CUDA out of memory" in ui.status.value
    assert not (tmp_path / "explore").exists()


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_start_keeps_an_output_folder_that_was_there(tmp_path, existing):
    out = tmp_path / "explore"
    if existing:
        out.mkdir()
    ui = _ui(tmp_path, data_dir=str(tmp_path / "missing"))
    ui._on_train(None)
    assert out.exists() == existing
