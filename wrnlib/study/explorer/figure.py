"""The width explorer's figure, drawn without pyplot so that widget callbacks can draw it on any thread.

JupyterLab sends widget messages over a kernel subshell, so a slider callback may run on another
thread than the cells. pyplot keeps global state (its list of open figures, which the inline
backend redraws after every cell), so the explorer never touches it: each figure is a plain
:class:`matplotlib.figure.Figure` on its own Agg canvas, and :data:`DRAW_LOCK` keeps two explorer
drawings from running at once (matplotlib's text parsers are not thread-safe).

Three panels: parameters against width (computed, with the budget and finished runs), training
FLOPs and activation memory against width (computed / estimated), and the measured test accuracy
of finished runs against their parameter count, with the chosen size marked.
"""
from __future__ import annotations

import math
import threading
from typing import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..collect import WIDTH_SWEEP
from ..plots import png
from .numbers import GIB, WIDTH_MIN, WIDTH_STEP, Choice, benchmark_mask, budget_label, run_points, width_curve

DRAW_LOCK = threading.RLock()


def figure(choice: Choice, runs: pd.DataFrame | None = None, widths: Sequence[float] | None = None,
           other_depths: Sequence[int] = (16, 28, 40)) -> Figure:
    """The explorer's three panels for one choice, on a canvas of its own (never registered with pyplot)."""
    if widths is None:
        top = max(8.0, math.ceil(choice.width * 1.3))
        widths = [round(WIDTH_MIN + WIDTH_STEP * i, 4) for i in range(int((top - WIDTH_MIN) / WIDTH_STEP) + 1)]
    depths = sorted(set(other_depths) | {choice.depth})
    curve = width_curve(depths, widths, choice.batch_size)
    curve["params_m"] = curve["params"] / 1e6
    points = run_points(runs)
    fig = Figure(figsize=(17, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    _params_panel(axes[0], choice, curve, depths, points)
    _compute_panel(axes[1], choice, curve)
    _accuracy_panel(axes[2], choice, points)
    fig.tight_layout()
    return fig


def draw(choice: Choice, runs: pd.DataFrame | None = None) -> tuple[Figure, bytes]:
    """Build and render the figure under :data:`DRAW_LOCK`: (figure, PNG bytes)."""
    with DRAW_LOCK:
        fig = figure(choice, runs)
        return fig, png(fig)


def _palette(depths: Sequence[int]) -> dict[int, tuple]:
    import seaborn as sns

    return dict(zip(depths, sns.color_palette("crest", len(depths))))


def _params_panel(ax, choice: Choice, curve: pd.DataFrame, depths: list[int], points: pd.DataFrame) -> None:
    palette = _palette(depths)
    for d in depths:
        part = curve[curve["depth"] == d]
        ax.plot(part["width"], part["params_m"], color=palette[d], lw=2.5 if d == choice.depth else 1,
                alpha=1 if d == choice.depth else 0.55, label=f"WRN-{d}-k")
    budget_m = choice.budget / 1e6
    ax.axhline(budget_m, color="tab:red", ls="--", lw=1.2, label=f"budget {budget_m:g} M")
    ax.axhspan(budget_m, max(curve["params_m"].max(), choice.params / 1e6) * 1.05, color="tab:red", alpha=0.06)
    color = "tab:green" if choice.status == "within" else "tab:red"
    ax.scatter([choice.width], [choice.params / 1e6], marker="*", s=260, color=color, edgecolor="black", zorder=5,
               label=f"{choice.name}: {choice.params / 1e6:.2f} M ({choice.status})")
    if not points.empty:
        ax.scatter(points["width"].astype(float), points["params"].astype(float) / 1e6, marker="o", s=45,
                   facecolor="none", edgecolor="black", zorder=4, label=f"finished runs ({len(points)})")
    ax.set_yscale("log")
    ax.set_xlabel("widening factor k")
    ax.set_ylabel("parameters (M, log scale)")
    ax.set_title("computed: parameters against width")
    ax.legend(fontsize=7, loc="upper left")


def _compute_panel(ax, choice: Choice, curve: pd.DataFrame) -> None:
    part = curve[curve["depth"] == choice.depth]
    ax.plot(part["width"], 3 * part["forward_flops"] / 1e9, color="tab:blue", label="training GFLOP / image")
    ax.scatter([choice.width], [choice.train_flops / 1e9], marker="*", s=200, color="tab:blue", edgecolor="black",
               zorder=5)
    ax.set_xlabel("widening factor k")
    ax.set_ylabel("training GFLOP per image", color="tab:blue")
    twin = ax.twinx()
    twin.plot(part["width"], part["activation_gib"], color="tab:orange", ls="--",
              label=f"activations, batch {choice.batch_size} (estimate)")
    twin.scatter([choice.width], [choice.activation_bytes_batch / GIB], marker="*", s=200, color="tab:orange",
                 edgecolor="black", zorder=5)
    twin.set_ylabel(f"activation GiB (batch {choice.batch_size}, bf16)", color="tab:orange")
    twin.grid(False)
    ax.set_title(f"WRN-{choice.depth}-k: compute (computed) and memory (estimate)")
    lines, lines2 = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")


def _budget_points(ax, scored: pd.DataFrame) -> None:
    """Runs on the full test set, one colour per budget (device and epochs); only a width sweep's points of one
    budget and depth are joined into a curve (mean over seeds), so different budgets are never one line."""
    import seaborn as sns

    budgets = list(dict.fromkeys(scored["budget"]))
    colors = dict(zip(budgets, sns.color_palette("tab10", max(len(budgets), 1))))
    for budget in budgets:
        part = scored[scored["budget"] == budget]
        ax.scatter(part["params"].astype(float) / 1e6, 100 * part["test_acc"].astype(float), s=40, zorder=4,
                   color=colors[budget], edgecolor="black", linewidth=0.5, label=f"{budget} ({len(part)} runs)")
        sweep = part[part.get("group", pd.Series("", index=part.index)) == WIDTH_SWEEP]
        for depth, line in sweep.groupby("depth"):
            mean = line.assign(acc=line["test_acc"].astype(float)).groupby("params")["acc"].mean()
            if len(mean) > 1:
                ax.plot(mean.index.astype(float) / 1e6, 100 * mean.to_numpy(), color=colors[budget], lw=1.5,
                        zorder=3, label=f"width sweep WRN-{int(depth)}-k, {budget}")


def _accuracy_panel(ax, choice: Choice, points: pd.DataFrame) -> None:
    """Measured test accuracy of the finished runs against their size; the chosen size as a vertical line."""
    chosen_m, budget_m = choice.params / 1e6, choice.budget / 1e6
    ax.axvline(budget_m, color="tab:red", ls="--", lw=1.2, label=f"budget {budget_m:g} M")
    ax.axvline(chosen_m, color="tab:green" if choice.status == "within" else "tab:red", lw=2, alpha=0.7,
               label=f"{choice.name} (chosen)")
    scored = points.dropna(subset=["test_acc"]) if not points.empty else points
    if scored.empty:
        ax.text(0.5, 0.5, "no finished runs in the results folder:\nthe accuracy of any size is unknown",
                transform=ax.transAxes, ha="center", va="center", fontsize=9)
        ax.set_xlim(min(chosen_m, budget_m) / 3, max(chosen_m, budget_m) * 3)
    else:
        scored = scored.assign(budget=[budget_label(row) for _, row in scored.iterrows()])
        bench = benchmark_mask(scored)
        _budget_points(ax, scored[bench])
        rest = scored[~bench]
        if not rest.empty:
            ax.scatter(rest["params"].astype(float) / 1e6, 100 * rest["test_acc"].astype(float), s=40, zorder=4,
                       facecolor="none", edgecolor="gray", label=f"sample or subset: not the benchmark ({len(rest)})")
        here = scored[(scored["depth"].astype(int) == choice.depth)
                      & ((scored["width"].astype(float) - choice.width).abs() < 1e-9)]
        if not here.empty:
            ax.scatter([chosen_m] * len(here), 100 * here["test_acc"].astype(float), marker="*", s=220,
                       color="gold", edgecolor="black", zorder=5, label=f"measured at {choice.name}")
        ax.set_xlim(min(chosen_m, budget_m, scored["params"].astype(float).min() / 1e6) / 2,
                    max(chosen_m, budget_m, scored["params"].astype(float).max() / 1e6) * 2)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (M, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("measured: test accuracy of finished runs, by budget")
    ax.legend(fontsize=7, loc="lower right")
