"""The explorer's figure: three panels, drawn without pyplot, one drawing at a time, measured runs shown."""
from __future__ import annotations

import json
import threading
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from wrnlib.study import collect, profiles  # noqa: E402
from wrnlib.study.explorer import figure, numbers  # noqa: E402

RESULTS = profiles.REPO_ROOT / "results"


def test_figure_is_not_registered_with_pyplot(tmp_path):
    before = plt.get_fignums()
    fig, data = figure.draw(numbers.describe(16, 4.0), collect.collect(tmp_path / "none").runs)
    assert plt.get_fignums() == before  # the inline backend's after-cell redraw never sees it
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("computed") and titles[2].startswith("measured") and len(fig.axes) == 4  # + twin
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_accuracy_panel_shows_the_measured_runs():
    runs = collect.collect(RESULTS).runs
    fig = figure.figure(numbers.describe(28, 3.5), runs)
    panel = fig.axes[2]
    shown = {(round(x, 4), round(y, 4)) for c in panel.collections for x, y in c.get_offsets()}
    for summary_path in (RESULTS / "runs").glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        assert (round(summary["params"] / 1e6, 4), round(100 * summary["test_acc"], 4)) in shown, summary_path


def test_explorer_drawings_never_overlap(monkeypatch):
    active, overlaps, real = [0], [], figure.figure

    def counting_figure(*args, **kwargs):
        active[0] += 1
        overlaps.append(active[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(figure, "figure", counting_figure)
    threads = [threading.Thread(target=figure.draw, args=(numbers.describe(10 + 6 * i, 1.0),))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(overlaps) == 4 and max(overlaps) == 1


def test_measured_panel_joins_only_a_width_sweep_of_one_budget(cpu_study):
    fig = figure.figure(numbers.describe(16, 2.0), collect.collect(cpu_study).runs)
    panel = fig.axes[2]
    labels = [t.get_text() for t in panel.get_legend().get_texts()]
    assert "CPU, 4 epochs (3 runs)" in labels and "CPU, 10 epochs (2 runs)" in labels
    assert "CPU, 20 epochs (1 runs)" in labels
    joined = [line for line in panel.get_lines() if line.get_label().startswith("width sweep")]
    assert len(joined) == 1 and joined[0].get_label() == "width sweep WRN-16-k, CPU, 4 epochs"
    assert [round(y, 2) for y in joined[0].get_ydata()] == [70.0, 80.0, 84.0]
