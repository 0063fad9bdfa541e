"""Figures: every study plot renders from tidy tables, and saving writes where asked and nowhere else."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from result_folders import saved_run  # noqa: E402
from wrnlib.study import collect, plots, tables  # noqa: E402


def test_save_writes_a_png_only_when_given_a_folder(tmp_path):
    fig = plots.confusion_matrix(np.eye(10, dtype=int) * 7)
    assert plots.save(fig, None, "x") is None
    path = plots.save(fig, tmp_path / "figs", "x")
    assert path == tmp_path / "figs" / "x.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["x.png"]


def test_training_curves_draw_every_split():
    metrics = pd.DataFrame({"epoch": [1, 2, 3], "lr": [0.1, 0.05, 0.0], "train_loss": [2.0, 1.5, 1.2],
                            "val_loss": [1.9, 1.6, 1.4], "test_loss": [1.9, 1.6, 1.5], "train_acc": [0.2, 0.4, 0.5],
                            "val_acc": [0.25, 0.38, 0.45], "test_acc": [0.24, 0.37, 0.44]})
    fig = plots.training_curves(metrics)
    assert len(fig.axes) == 3
    assert len(fig.axes[1].get_lines()) >= 3  # train, val and test accuracy
    assert fig.axes[1].get_lines()[0].get_ydata().max() <= 1.0


def test_a_reported_curve_is_drawn_beside_the_accuracy_with_its_ranges():
    metrics = pd.DataFrame({"epoch": [1, 2, 3], "lr": [0.1, 0.05, 0.0], "train_loss": [2.0, 1.5, 1.2],
                            "val_loss": [1.9, 1.6, 1.4], "test_loss": [1.9, 1.6, 1.5], "train_acc": [0.2, 0.4, 0.5],
                            "val_acc": [0.25, 0.38, 0.45], "test_acc": [0.24, 0.37, 0.44]})
    assert not plots.training_curves(metrics).axes[1].containers
    ax = plots.training_curves(metrics, reference=tables.reference_curve([[1, 20, 30], [3, 50]], "the study")).axes[1]
    (points,) = ax.containers
    marker, _, (bars,) = points.lines
    assert list(marker.get_xdata()) == [1, 3] and list(marker.get_ydata()) == pytest.approx([0.25, 0.5])
    assert [list(seg[:, 1]) for seg in bars.get_segments()] == [pytest.approx([0.2, 0.3]), pytest.approx([0.5, 0.5])]
    assert "test: the study" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_benchmarks_are_drawn_one_bar_per_folder_and_mode_never_averaged():
    bench = pd.DataFrame({"name": ["cpu-a", "cpu-a", "cpu-b", "cpu-b", "cpu-c"], "device": ["cpu"] * 5,
                          "mode": ["fp32", "bf16", "fp32", "bf16", "fp32"], "depth": 16, "width": 2.0,
                          "train_images_per_s": [400.0, 900.0, 190.0, 20.0, 80.0]})
    ax = plots.throughput(bench, None).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpu-a", "cpu-b", "cpu-c"]
    heights = {(name, bar.get_x() < 0.5): bar.get_height()  # mode fp32 drawn first, at x = 0
               for name, bars in zip(["cpu-a", "cpu-b", "cpu-c"], ax.containers) for bar in bars}
    assert heights[("cpu-a", True)] == 400.0 and heights[("cpu-b", False)] == 20.0 and heights[("cpu-c", True)] == 80.0
    assert not ax.get_lines()  # no error bars: each bar is one measurement


def test_labels_of_runs_of_one_size_do_not_overlap():
    # heights in points: three runs of one size, two of them at the very same accuracy, one close below
    offsets = plots.label_offsets([77_850, 77_850, 77_850, 4_480_474, 77_850], [100.0, 100.0, 96.0, 100.0, 300.0])
    dx, dy = plots.LABEL_OFFSET
    assert offsets[2] == (dx, dy)  # the lowest of its size stays beside its dot
    label = {i: h + offsets[i][1] for i, h in enumerate([100.0, 100.0, 96.0, 100.0, 300.0])}
    assert label[0] == label[2] + plots.LABEL_STEP and label[1] == label[0] + plots.LABEL_STEP  # stacked, in order
    assert offsets[3] == (dx, dy) and offsets[4] == (dx, dy)  # another size, or far above: left alone
    assert plots.LABEL_STEP > plots.LABEL_FONTSIZE

    # drawn: every label of the four ablation runs of one size (two tied) at least a line from the others
    runs = pd.DataFrame({"name": ["cosine-s0", "cosine-s1", "step-s0", "step-s1", "big"],
                         "params": [77_850, 77_850, 77_850, 77_850, 4_480_474], "depth": [10, 10, 10, 10, 28],
                         "width": [1, 1, 1, 1, 3.5], "test_acc": [0.228, 0.196, 0.228, 0.19, 0.9]})
    fig = plots.accuracy_vs_params(runs)
    ax = fig.axes[0]
    heights = {t.get_text(): ax.transData.transform(t.xy)[1] * 72 / fig.dpi + t.xyann[1] for t in ax.texts}
    assert set(heights) == set(runs["name"])
    same_size = sorted(heights[n] for n in runs["name"][:4])
    assert all(b - a >= plots.LABEL_STEP - 1e-6 for a, b in zip(same_size, same_size[1:]))


def test_studies_are_drawn_side_by_side_never_on_one_axis(cpu_study, tmp_path):
    gpu = tmp_path / "gpu"
    saved_run(gpu / "runs", "big", device_type="cuda", test_acc=0.95, val=0.95, minutes=2, depth=28, width=3.5,
              epochs=96)
    fig = plots.studies_side_by_side({"GPU": collect.collect(gpu).finished_runs,
                                      "CPU": collect.collect(cpu_study).finished_runs})
    gpu_ax, cpu_ax = fig.axes[:2]
    gpu_labels = [t.get_text() for t in gpu_ax.get_legend().get_texts()]
    cpu_labels = [t.get_text() for t in cpu_ax.get_legend().get_texts()]
    assert gpu_labels == ["runs: WRN-28-3.5, 96 epochs, GPU"]
    assert "width_sweep: WRN-16-3, 4 epochs, CPU" in cpu_labels and "runs: WRN-16-2, 20 epochs, CPU" in cpu_labels
    assert sum(len(c.get_offsets()) for c in gpu_ax.collections) == 1
    assert sum(len(c.get_offsets()) for c in cpu_ax.collections) == 6
