"""Seaborn / matplotlib figures of the study; every function returns a Figure (the notebooks show and save it)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.rcParams.setdefault("figure.max_open_warning", 0)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from .collect import TIME_SWEEP, WIDTH_SWEEP, finished_in  # noqa: E402
from .formats import pct  # noqa: E402
from .tables import ReferenceCurve  # noqa: E402

SAVE_DPI = 110


def setup() -> None:
    """The study's plotting style."""
    sns.set_theme(style="whitegrid", context="notebook", palette="deep")
    plt.rcParams.update({"figure.dpi": 80, "savefig.bbox": "tight", "axes.titlesize": "medium"})


def save(fig: plt.Figure, folder: str | Path | None, name: str, *, dpi: int = SAVE_DPI) -> Path | None:
    """Write ``fig`` as ``<folder>/<name>.png`` (folder created) and return the path; no folder: no file."""
    if folder is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def png(fig: matplotlib.figure.Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (what a notebook or a widget shows in place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def to_display(images: Any) -> np.ndarray:
    """(N, 3, H, W) uint8 images or normalised float images -> (N, H, W, 3) floats in [0, 1]."""
    import torch

    x = torch.as_tensor(images).detach().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:  # normalised by wrnlib.augment.normalize: undo it
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        x = x.float() * std + mean
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _percent_axis(ax: plt.Axes) -> None:
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))


# --------------------------------------------------------------------------- data


def class_balance(counts: pd.DataFrame) -> plt.Figure:
    """Bar chart of images per class, one panel per split (from dataset.class_counts)."""
    splits = list(dict.fromkeys(counts["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), squeeze=False)
    for ax, split in zip(axes[0], splits):
        part = counts[counts["split"] == split]
        sns.barplot(data=part, x="class", y="count", ax=ax, color=sns.color_palette()[0])
        ax.set_title(f"{split}: {int(part['count'].sum()):,} images")
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def image_grid(images: Any, titles: Sequence[str] | None = None, *, ncols: int = 8, size: float = 1.25,
               row_labels: Sequence[str] | None = None, suptitle: str | None = None,
               title_colors: Sequence[str] | None = None) -> plt.Figure:
    """Images (uint8 or normalised) in a grid, with optional per-image titles and per-row labels."""
    pics = to_display(images)
    n = len(pics)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.25 if titles else 1.0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(pics[i], interpolation="nearest")
        if titles:
            ax.set_title(titles[i], fontsize=7.5, color=(title_colors[i] if title_colors else "black"))
        for spine in ax.spines.values():
            spine.set_visible(False)
    if row_labels:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def channel_stats(stats: pd.DataFrame) -> plt.Figure:
    """Measured per-channel mean and std beside the published CIFAR-10 values (from dataset.channel_stats)."""
    long = pd.concat([
        pd.DataFrame({"channel": stats["channel"], "statistic": "mean", "source": "measured", "value": stats["mean"]}),
        pd.DataFrame({"channel": stats["channel"], "statistic": "mean", "source": "published",
                      "value": stats["published_mean"]}),
        pd.DataFrame({"channel": stats["channel"], "statistic": "std", "source": "measured", "value": stats["std"]}),
        pd.DataFrame({"channel": stats["channel"], "statistic": "std", "source": "published",
                      "value": stats["published_std"]}),
    ])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, statistic in zip(axes, ("mean", "std")):
        sns.barplot(data=long[long["statistic"] == statistic], x="channel", y="value", hue="source", ax=ax)
        ax.set_title(f"per-channel {statistic} (pixels / 255)")
        ax.set_xlabel("")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def pixel_distributions(histogram: pd.DataFrame, brightness: pd.DataFrame | None = None) -> plt.Figure:
    """Per-channel pixel-value densities; beside them, per-image mean brightness by class if given."""
    ncols = 2 if brightness is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.4), squeeze=False)
    ax = axes[0, 0]
    sns.lineplot(data=histogram, x="value", y="density", hue="channel", palette=["tab:red", "tab:green", "tab:blue"],
                 ax=ax)
    ax.set_title("pixel intensity per channel")
    ax.set_xlabel("pixel value (0-255)")
    ax.set_xlim(0, 255)
    if brightness is not None:
        ax = axes[0, 1]
        sns.boxplot(data=brightness, x="class", y="brightness", ax=ax, color=sns.color_palette()[0],
                    fliersize=1, order=list(CIFAR10_CLASSES))
        ax.set_title("mean brightness per image, by class")
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def augmentation_preview(rows: Mapping[str, Any], titles: Mapping[str, Sequence[str]] | None = None,
                         size: float = 1.35) -> plt.Figure:
    """One row per augmentation (name -> batch of images, uint8 or normalised), the same images per column."""
    names = list(rows)
    ncols = len(to_display(rows[names[0]]))
    fig, axes = plt.subplots(len(names), ncols, figsize=(size * ncols + 1.2, size * len(names) * 1.08), squeeze=False)
    for r, name in enumerate(names):
        pics = to_display(rows[name])
        for c in range(ncols):
            ax = axes[r, c]
            ax.imshow(pics[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if titles and name in titles:
                ax.set_title(titles[name][c], fontsize=6.5)
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training


def training_curves(metrics: pd.DataFrame, hue: str | None = None,
                    reference: ReferenceCurve | None = None) -> plt.Figure:
    """Loss, accuracy and lr against epoch; ``hue`` names a column separating runs; ``reference``: the test
    accuracies another study reported, as points (a bar for a reported range) beside the accuracy curves."""
    metrics = metrics.copy()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    loss = metrics.melt(id_vars=[c for c in ("epoch", hue) if c], value_vars=["train_loss", "val_loss", "test_loss"],
                        var_name="split", value_name="loss")
    loss["split"] = loss["split"].str.replace("_loss", "")
    acc = metrics.melt(id_vars=[c for c in ("epoch", hue) if c], value_vars=["train_acc", "val_acc", "test_acc"],
                       var_name="split", value_name="accuracy")
    acc["split"] = acc["split"].str.replace("_acc", "")
    kwargs = {"style": "split", "hue": hue} if hue else {"hue": "split"}
    if metrics["epoch"].nunique() <= 30:  # markers only while they stay readable
        kwargs.update(marker="o", markersize=4)
    line = {k: v for k, v in kwargs.items() if k in ("marker", "markersize")}
    sns.lineplot(data=loss.dropna(), x="epoch", y="loss", ax=axes[0], **kwargs)
    sns.lineplot(data=acc.dropna(), x="epoch", y="accuracy", ax=axes[1], **kwargs)
    sns.lineplot(data=metrics, x="epoch", y="lr", ax=axes[2], hue=hue, **line)
    if reference is not None:
        middle = [(low + high) / 2 for low, high in zip(reference.low, reference.high)]
        half = [(high - low) / 2 for low, high in zip(reference.low, reference.high)]
        axes[1].errorbar(reference.epochs, middle, yerr=half, fmt="D", color="black", markersize=4, capsize=3,
                         linewidth=1, label=f"test: {reference.label}")
    axes[0].set_title("loss (train: augmented batches)")
    axes[1].set_title("accuracy")
    axes[2].set_title("learning rate at the end of each epoch")
    _percent_axis(axes[1])
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, classes: Sequence[str] = CIFAR10_CLASSES, title: str = "") -> plt.Figure:
    """Row-normalised confusion matrix (true class rows), with counts annotated."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    sns.heatmap(rates, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1, square=True, cbar_kws={"shrink": 0.75},
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7}, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (colour: fraction of the true class; numbers: images)")
    fig.tight_layout()
    return fig


def per_class_accuracy(table: pd.DataFrame, overall: float | None = None) -> plt.Figure:
    """Horizontal bars of accuracy per class (columns class, accuracy)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.barplot(data=table, y="class", x="accuracy", ax=ax, color=sns.color_palette()[0], orient="h")
    if overall is not None:
        ax.axvline(overall, color="black", ls="--", lw=1, label=f"overall {pct(overall, digits=1)}")
        ax.legend(loc="lower right", fontsize=8)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    ax.set_ylabel("")
    ax.set_title("test accuracy per class")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- schedules / ablation


def lr_curves(curves: pd.DataFrame) -> plt.Figure:
    """lr against epoch per schedule (columns schedule, epoch, lr)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.lineplot(data=curves, x="epoch", y="lr", hue="schedule", ax=ax)
    ax.set_title("learning-rate schedules over the same epoch budget")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def ablation_curves(epochs: pd.DataFrame, y: str = "val_acc") -> plt.Figure:
    """``y`` against epoch per schedule: mean over seeds with the min-max band."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.lineplot(data=epochs, x="epoch", y=y, hue="schedule", errorbar=("pi", 100), marker="o", markersize=4, ax=ax)
    ax.set_title(f"{y.replace('_', ' ')} per epoch (line: mean over seeds; band: min-max)")
    _percent_axis(ax)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def ablation_final(final: pd.DataFrame) -> plt.Figure:
    """Final test accuracy per schedule: each seed as a dot, mean ± std as a bar with error line."""
    order = list(dict.fromkeys(final["schedule"]))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.pointplot(data=final, x="schedule", y="test_acc", order=order, errorbar="sd", capsize=0.2,
                  linestyles="none", color="black", ax=ax, label="mean ± std")
    sns.stripplot(data=final, x="schedule", y="test_acc", order=order, hue="seed", palette="deep", size=7,
                  jitter=False, dodge=True, ax=ax)  # each seed at its own offset: the same figure every time
    ax.set_title("final test accuracy per schedule (dots: seeds)")
    _percent_axis(ax)
    ax.legend(fontsize=8, title="seed", title_fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- results across runs


LABEL_FONTSIZE = 7  # points; run labels beside their dot
LABEL_STEP = LABEL_FONTSIZE + 2  # points between the baselines of two labels that would otherwise touch
LABEL_OFFSET = (4.0, 3.0)  # points right of and above its dot, where a label sits when nothing is in its way


def label_offsets(params: Sequence[float], heights: Sequence[float],
                  step: float = LABEL_STEP) -> list[tuple[float, float]]:
    """Offsets (points) for the run labels of :func:`accuracy_vs_params`, from each dot's height in points.

    Runs of one size (the seeds and schedules of an ablation) sit on one vertical line, often at nearly
    the same accuracy, so their labels would print over each other. Within such a group, from the lowest
    dot up, a label goes beside its dot unless that is less than ``step`` above the label below it; then
    it goes just ``step`` above that one. Labels of other sizes stay where they are.
    """
    params = pd.to_numeric(pd.Series(list(params)), errors="coerce")
    heights = pd.to_numeric(pd.Series(list(heights)), errors="coerce").fillna(0.0)
    dx, dy = LABEL_OFFSET
    offsets = [(dx, dy)] * len(params)
    below: dict[float, float] = {}  # per size: the height of the last label placed
    for i in sorted(range(len(params)), key=lambda i: (heights[i], i)):
        size = params[i]
        placed = heights[i] if size not in below else max(heights[i], below[size] + step)
        below[size] = placed
        offsets[i] = (dx, dy + placed - heights[i])
    return offsets


def accuracy_vs_params(runs: pd.DataFrame, budget: float | None = 5e6) -> plt.Figure:
    """Final test accuracy against parameter count, colour = widening factor, marker = depth."""
    df = runs.copy()
    df["params_m"] = pd.to_numeric(df["params"]) / 1e6
    df["width"] = pd.to_numeric(df["width"])
    df["WRN depth"] = df["depth"].astype(int).astype(str)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.scatterplot(data=df, x="params_m", y="test_acc", hue="width", style="WRN depth", s=80, palette="viridis",
                    ax=ax)
    if budget:
        ax.axvline(budget / 1e6, color="tab:red", ls="--", lw=1, label=f"{budget / 1e6:g} M budget")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (M, log scale)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("test accuracy against model size")
    _percent_axis(ax)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()  # the axes' final place first: the labels are stacked in points on it
    heights = ax.transData.transform(df[["params_m", "test_acc"]].to_numpy(dtype=float))[:, 1] * 72 / fig.dpi
    for (_, r), offset in zip(df.iterrows(), label_offsets(df["params"], heights)):
        ax.annotate(str(r["name"]), (r["params_m"], r["test_acc"]), fontsize=LABEL_FONTSIZE, xytext=offset,
                    textcoords="offset points")
    return fig


def width_study(runs: pd.DataFrame) -> plt.Figure:
    """Notebook 05's sweeps side by side: final test accuracy against parameters at equal epochs (left) and at
    equal training time (right, each network's epochs beside it), a line per depth through the mean over seeds, each
    seed a dot."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, group, what in zip(axes, (WIDTH_SWEEP, TIME_SWEEP), ("equal epochs", "equal training time")):
        part = finished_in(runs, group)
        if part.empty:
            ax.set_title(f"{what}: no finished runs")
            continue
        part = part.assign(params_m=part["params"].astype(float) / 1e6, test_acc=part["test_acc"].astype(float),
                           depth=part["depth"].astype(int).map(lambda d: f"WRN-{d}"))
        sns.lineplot(data=part, x="params_m", y="test_acc", hue="depth", errorbar=None, marker="o", ax=ax)
        sns.scatterplot(data=part, x="params_m", y="test_acc", hue="depth", legend=False, alpha=0.5, s=25, ax=ax)
        epochs = ", ".join(dict.fromkeys(f"{e:.0f}" for e in part["epochs"].astype(float)))
        minutes = pd.to_numeric(part["budget_minutes"], errors="coerce").dropna()
        timed = bool(len(minutes) and minutes.iloc[0])
        ax.set_title(f"{what} ({minutes.iloc[0]:g} min of training)" if timed else f"{what} ({epochs} epochs)")
        if timed:  # each network trained the epochs its budget held: said at its point
            below = part["depth"].min()  # one depth's labels under its points, the others' above: apart where close
            for (depth, params_m), net in part.groupby(["depth", "params_m"]):
                low, high = net["epochs"].astype(int).agg(["min", "max"])
                ax.annotate(f"{low} ep" if low == high else f"{low}–{high} ep", (params_m, net["test_acc"].mean()),
                            fontsize=LABEL_FONTSIZE, xytext=(4, -10 if depth == below else 5),
                            textcoords="offset points")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("final test accuracy")
        _percent_axis(ax)
    fig.tight_layout()
    return fig


def studies_side_by_side(studies: dict[str, pd.DataFrame]) -> plt.Figure:
    """One panel per study (label -> its finished runs): final test accuracy against training minutes, so that
    studies on different devices sit side by side and are never drawn on one axis; the legend names each point's
    runs, model, epochs and device."""
    fig, axes = plt.subplots(1, len(studies), figsize=(6.5 * len(studies), 4.2), squeeze=False, sharey=True)
    for ax, (label, runs) in zip(axes[0], studies.items()):
        df = runs.dropna(subset=["test_acc", "train_time_s"]).copy()
        ax.set_title(label)
        ax.set_xlabel("training minutes (steps only)")
        if df.empty:
            ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
            continue
        df["minutes"] = pd.to_numeric(df["train_time_s"]) / 60
        df["test_acc"] = pd.to_numeric(df["test_acc"])
        device = df["device_type"].map({"cuda": "GPU", "cpu": "CPU"}).fillna("device?")
        df["runs"] = (df["group"].astype(str).str.replace("ablation:", "ablation ", regex=False) + ": WRN-"
                      + df["depth"].astype(int).astype(str) + "-" + df["width"].astype(float).map("{:g}".format)
                      + ", " + df["epochs"].astype(int).astype(str) + " epochs, " + device)
        sns.scatterplot(data=df, x="minutes", y="test_acc", hue="runs", s=60, ax=ax)
        ax.set_xlim(0, df["minutes"].max() * 1.15)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("final test accuracy")
    _percent_axis(axes[0][0])
    fig.tight_layout()
    return fig


def reliability_diagrams(reliability: pd.DataFrame) -> plt.Figure:
    """Accuracy against mean confidence per confidence bin, one panel per run, plain and flip-TTA, before and
    after temperature scaling; the diagonal is perfect calibration and the bars' area is each bin's share."""
    names = list(dict.fromkeys(reliability["run"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        part = reliability[(reliability["run"] == name) & (reliability["count"] > 0)]
        for (tta, scaled), curve in part.groupby(["tta", "scaled"]):
            label = ("flip-TTA" if tta else "plain") + (", temperature-scaled" if scaled else "")
            ax.plot(curve["confidence"], curve["accuracy"], marker="o", ms=3, ls="--" if scaled else "-",
                    label=label)
        plain = part[~part["tta"].astype(bool) & ~part["scaled"].astype(bool)]
        ax.bar((plain["lower"] + plain["upper"]) / 2, plain["count"] / plain["count"].sum(),
               width=plain["upper"] - plain["lower"], color="gray", alpha=0.25, label="share of test images")
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("mean confidence in the bin")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("accuracy in the bin")
    fig.tight_layout()
    return fig


def corruption_curves(corrupted: pd.DataFrame) -> plt.Figure:
    """Accuracy against severity, one panel per corruption, one line per run (severity 0: the clean subset)."""
    clean = corrupted[corrupted["severity"] == 0]
    rows = [corrupted[corrupted["severity"] > 0]]
    for kind in corrupted.loc[corrupted["severity"] > 0, "kind"].unique():
        rows.append(clean.assign(kind=kind))  # every curve starts at the clean accuracy
    df = pd.concat(rows, ignore_index=True)
    grid = sns.relplot(data=df, x="severity", y="accuracy", hue="run", col="kind", col_wrap=5, kind="line",
                       marker="o", height=2.4, aspect=1.1, facet_kws={"sharey": True})
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.set_xticks(sorted(df["severity"].unique()))
        _percent_axis(ax)
    return grid.figure


def throughput(bench: pd.DataFrame | None, runs: pd.DataFrame | None) -> plt.Figure:
    """Training images/s: benchmark modes (if any) and the measured mean of each run (if any)."""
    panels = [p for p in ((bench, "bench"), (runs, "runs")) if p[0] is not None and not p[0].empty]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.6), squeeze=False)
    for ax, (df, kind) in zip(axes[0], panels):
        df = df.copy()
        if kind == "bench":  # one bar per folder and mode: a folder is one model on one machine, never averaged
            sns.barplot(data=df, x="mode", y="train_images_per_s", hue="name", errorbar=None, ax=ax)
            ax.set_title("benchmark: training throughput by mode")
            ax.set_ylabel("training images / s")
        else:
            df["label"] = (df["name"].astype(str) + " (WRN-" + df["depth"].astype(int).astype(str) + "-"
                           + df["width"].astype(float).map("{:g}".format) + ")")
            sns.barplot(data=df, y="label", x="mean_images_per_s", hue="device", ax=ax, orient="h")
            ax.set_title("runs: mean training throughput")
            ax.set_ylabel("")
            ax.set_xlabel("images / s")
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
