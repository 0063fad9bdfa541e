"""The notebooks as a person sees them: JupyterLab in a real Chromium, driven by keyboard and mouse.

One JupyterLab serves throwaway copies of the notebooks (never ``notebooks/`` itself), with the
parameters a test needs injected the way papermill injects them. Notebook 05 runs once from a fresh
kernel with its own defaults for ``interactive``; the explorer tests then act on it in order (the
first one is the first slider move after "Run All"). About a minute and a half on two cores.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

import browser
from wrnlib import model_stats
from wrnlib.study import profiles

pytestmark = pytest.mark.browser

EXPLORER = "05_width_explorer.ipynb"
QUICK = profiles.load_profile("quick")
RUN_ALL_TIMEOUT_S = 240  # the quick notebooks take well under a minute on two cores; this only bounds a hang
VIEW_TIMEOUT_S = 30  # a slider move redraws in about a second


def _measured(depth: int, width: float) -> list[str]:
    """Test accuracies of the committed finished runs of WRN-depth-width, from their summary.json, as shown."""
    found = []
    for summary in sorted((profiles.REPO_ROOT / "results" / "runs").glob("*/summary.json")):
        config = json.loads((summary.parent / "config.json").read_text())
        if (config["depth"], config["width"]) == (depth, width):
            found.append(f"{100 * json.loads(summary.read_text())['test_acc']:.2f}%")
    return found


def _copy_notebook(name: str, folder: Path, params: dict) -> None:
    nb = load_notebook_node(str(profiles.NOTEBOOKS_DIR / name))  # papermill's reader: cells get their tags list
    nbformat.write(parameterize_notebook(nb, params), str(folder / name))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = browser.unavailable()
    if reason:
        if os.environ.get(browser.REQUIRE_ENV) == "require":
            pytest.fail(f"browser tests required ({browser.REQUIRE_ENV}=require) but {reason}")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("lab")
    root, results = base / "notebooks", base / "results"
    root.mkdir()
    no_data = base / "no-cifar10"  # a data folder without CIFAR-10 in it, for the train button
    no_data.mkdir()
    train_out = base / "explorer_runs"
    _copy_notebook(EXPLORER, root, {"results_root": str(profiles.REPO_ROOT / "results"), "data_dir": str(no_data),
                                    "train_out_dir": str(train_out)})
    for prefix, name in (("01", "01_data_exploration.ipynb"), ("02", "02_train.ipynb")):
        declared = profiles.declared_parameters(profiles.NOTEBOOKS_DIR / name)
        _copy_notebook(name, root, profiles.notebook_parameters(QUICK, prefix, declared, results_root=results))
    server = browser.LabServer(root, base / "state")
    yield {"server": server, "base": base, "no_data": no_data, "train_out": train_out, "results": results}
    server.stop()


@pytest.fixture(scope="module")
def chromium(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = browser.launch_chromium(p, lab["base"] / "chromium-profile")
        context.set_default_timeout(VIEW_TIMEOUT_S * 1000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def explorer(lab, chromium):
    """Notebook 05 opened in JupyterLab and run once (Run All) from a fresh kernel."""
    tab = browser.LabPage(chromium.new_page(), lab["server"])
    tab.open(EXPLORER)
    tab.ran_ok = tab.run_all(RUN_ALL_TIMEOUT_S)
    tab.widget = tab.page.locator(".jp-OutputArea-output .widget-vbox").filter(
        has=tab.page.locator(".widget-slider")).first
    yield tab
    tab.page.close()


# --------------------------------------------------------------------------- reading the explorer


def _slider(tab, description: str):
    return tab.widget.locator(".widget-slider").filter(has_text=description)


def _readouts(tab) -> tuple[int, float, int]:
    """(depth, width, batch size) as the three sliders show them."""
    values = [_slider(tab, d).locator(".widget-readout").text_content().strip()
              for d in ("depth", "widening", "batch")]
    return int(values[0]), float(values[1]), int(values[2])


def _headings(tab) -> list[str]:
    return [h.replace("\u00b6", "").strip() for h in tab.widget.locator("h3").all_text_contents()]  # ¶: lab's anchor


def _view_state(tab) -> str:
    """What the explorer's table says (heading, parameters, batch), for failure messages."""
    text = tab.widget.text_content()
    found = [m.group(0) for m in re.finditer(r"[\d,]{7,} \(|a batch of \d+", text)]
    return f"{_headings(tab)} {found}"


def _view_matches(tab, depth: int, width: float, batch: int) -> bool:
    """The heading, the parameter count and the batch in the explorer's table are those of this choice."""
    name = f"WRN-{depth}-{width:g}"
    headings = _headings(tab)
    text = tab.widget.text_content()
    return headings == [name] and f"{model_stats(depth, width).params:,}" in text and f"a batch of {batch}" in text


def _assert_clean(tab) -> None:
    tracebacks = tab.tracebacks()
    assert not tracebacks, f"the page shows a traceback:\n{tracebacks[0][:1500]}"
    assert not tab.console_errors, f"browser console errors: {tab.console_errors[:5]}"


def _figure(tab) -> dict:
    images = tab.images(tab.widget)
    assert len(images) == 1, f"expected one figure in the explorer, found {len(images)}"
    assert images[0]["width"] > 0, "the explorer's figure did not load"
    return images[0]


def _figure_src(tab) -> str:
    """The src of the explorer's (first) image before a move; "" when there is none."""
    images = tab.images(tab.widget)
    return images[0]["src"] if images else ""


def _figure_redrawn(tab, before_src: str) -> bool:
    images = tab.images(tab.widget)
    return len(images) == 1 and images[0]["width"] > 0 and images[0]["src"] != before_src


def _assert_view_follows(tab, before_src: str) -> None:
    """After a move: the table and the figure show the sliders' values, with nothing broken on the page."""
    depth, width, batch = _readouts(tab)
    tab.wait_for(lambda: tab.tracebacks() or (_view_matches(tab, depth, width, batch)
                                              and _figure_redrawn(tab, before_src)),
                 VIEW_TIMEOUT_S, f"the explorer to show WRN-{depth}-{width:g}, batch {batch}, and a new figure")
    _assert_clean(tab)
    _figure(tab)


def _press(tab, description: str, key: str, times: int = 1) -> None:
    handle = _slider(tab, description).locator(".noUi-handle")
    handle.focus()
    for _ in range(times):
        tab.page.keyboard.press(key)


def _drag(tab, description: str, dx: float) -> None:
    box = _slider(tab, description).locator(".noUi-handle").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    tab.page.mouse.move(x, y)
    tab.page.mouse.down()
    tab.page.mouse.move(x + dx / 2, y, steps=4)
    tab.page.mouse.move(x + dx, y, steps=4)
    tab.page.mouse.up()


# --------------------------------------------------------------------------- the explorer


def test_explorer_renders_sliders_table_and_figure(explorer):
    assert explorer.ran_ok, "Run All did not finish without errors"
    explorer.wait_for(lambda: explorer.widget.count(), VIEW_TIMEOUT_S, "the explorer's widgets")
    labels = " ".join(explorer.widget.locator(".widget-slider .widget-label").all_text_contents())
    for description in ("depth", "widening k", "batch size"):
        assert description in labels
    assert _readouts(explorer) == (28, 3.5, 512)  # the notebook's parameters
    explorer.wait_for(lambda: _view_matches(explorer, 28, 3.5, 512), VIEW_TIMEOUT_S, "the table of WRN-28-3.5")
    assert "4,480,474" in explorer.widget.text_content()  # the study's model, as published
    measured = _measured(28, 3.5)
    assert measured and all(m in explorer.widget.text_content() for m in measured), "measured accuracy not shown"
    _figure(explorer)
    _assert_clean(explorer)


def test_explorer_first_slider_move_by_keyboard(explorer):
    before = _figure_src(explorer)
    _press(explorer, "widening", "ArrowRight")
    explorer.wait_for(lambda: _readouts(explorer)[1] == 3.75, VIEW_TIMEOUT_S, "the width slider to move to 3.75")
    _assert_view_follows(explorer, before)
    assert not any(m in explorer.widget.text_content() for m in _measured(28, 3.5))  # no run of WRN-28-3.75


@pytest.mark.parametrize("description,key", [("depth", "ArrowRight"), ("widening", "ArrowLeft"),
                                             ("batch", "ArrowLeft")])
def test_explorer_each_slider_by_keyboard(explorer, description, key):
    before_values, before_src = _readouts(explorer), _figure_src(explorer)
    _press(explorer, description, key)
    explorer.wait_for(lambda: _readouts(explorer) != before_values, VIEW_TIMEOUT_S, f"the {description} slider to move")
    _assert_view_follows(explorer, before_src)


@pytest.mark.parametrize("description,dx", [("depth", -60), ("widening", 45), ("batch", 50)])
def test_explorer_each_slider_by_dragging(explorer, description, dx):
    before_values, before_src = _readouts(explorer), _figure_src(explorer)
    _drag(explorer, description, dx)
    explorer.wait_for(lambda: _readouts(explorer) != before_values, VIEW_TIMEOUT_S, f"the {description} slider to move")
    _assert_view_follows(explorer, before_src)


@pytest.mark.parametrize("description,key,times", [("batch", "ArrowLeft", 2), ("widening", "ArrowRight", 3)])
def test_explorer_rapid_moves_end_on_the_last_value(explorer, description, key, times):
    start = _readouts(explorer)
    _press(explorer, description, key, times)  # back to back, without waiting for the view
    explorer.wait_for(lambda: _readouts(explorer) != start, VIEW_TIMEOUT_S, f"the {description} slider to move")
    explorer.page.wait_for_timeout(1000)  # let the slider settle on its last value
    final = _readouts(explorer)
    explorer.wait_for(lambda: explorer.tracebacks() or _view_matches(explorer, *final), VIEW_TIMEOUT_S,
                      f"the explorer to show the last value {final}", state=lambda: _view_state(explorer))
    explorer.page.wait_for_timeout(3000)  # a late, stale redraw would land in this window
    assert _readouts(explorer) == final
    assert _view_matches(explorer, *final), f"sliders say {final}, the view says {_view_state(explorer)}"
    _assert_clean(explorer)
    depth, width, _ = final
    title = _figure(explorer)["title"]  # the figure names the choice it shows (its tooltip)
    assert f"WRN-{depth}-{width:g}" in title, f"sliders say {final}, the figure is labelled {title!r}"


def test_explorer_train_button_without_data_shows_one_message(explorer, lab):
    button = explorer.widget.locator("button").filter(has_text="Train this WRN")
    button.click()
    no_data = str(lab["no_data"])
    explorer.wait_for(lambda: no_data in explorer.widget.text_content() or explorer.tracebacks(), VIEW_TIMEOUT_S,
                      "a message about the missing data")
    explorer.wait_idle()
    _assert_clean(explorer)
    text = explorer.widget.text_content()
    assert text.count(no_data) == 1, f"expected one message naming {no_data}:\n{text}"
    assert "CIFAR-10" in text
    assert button.is_enabled()
    assert not lab["train_out"].exists(), f"a failed start left {sorted(lab['train_out'].rglob('*'))} behind"


# --------------------------------------------------------------------------- notebooks 01 and 02, quick parameters


@pytest.fixture
def tab(lab, chromium):
    page = browser.LabPage(chromium.new_page(), lab["server"])
    yield page
    page.page.close()


@pytest.mark.parametrize("name", ["01_data_exploration.ipynb", "02_train.ipynb"])
def test_quick_notebook_renders_its_figures(tab, name):
    tab.open(name)
    assert tab.run_all(RUN_ALL_TIMEOUT_S), "Run All stopped at an error"
    _assert_clean(tab)
    source = nbformat.read(str(profiles.NOTEBOOKS_DIR / name), as_version=4)
    figures = sum(len(re.findall(r"plots\.save\(", c.source)) for c in source.cells if c.cell_type == "code")
    images = tab.images(tab.page.locator(".jp-NotebookPanel:visible .jp-OutputArea"))
    assert len(images) >= figures, f"{len(images)} images shown for {figures} figures"
    assert all(i["width"] > 0 for i in images), "a figure did not load"
