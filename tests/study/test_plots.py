"""Figures: every study plot renders from tidy tables, and saving writes where asked and nowhere else."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from wrnlib.study import plots  # noqa: E402


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
