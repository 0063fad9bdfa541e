"""The width explorer's numbers: what a (depth, widening factor) choice costs against the 5 M budget, and what is
known about it. Plain functions, testable without a kernel:

* :func:`describe` -> :class:`Choice`: parameters, FLOPs, stage widths and activation memory of
  one WRN, straight from :func:`wrnlib.model_stats`, and its budget classification;
* :func:`wrnlib.model.param_count` / :func:`wrnlib.model.forward_flops`: the same numbers in closed
  form (instant), used for the curves over many widths;
* :func:`measured`: the finished runs under ``results/`` at exactly that size (measured accuracy);
* :func:`view_rows`, :func:`markdown`, :func:`html`: the view, each number marked as exact, estimate or measured.

:mod:`.figure` draws them, :mod:`.widgets` shows them in a notebook.
"""
from __future__ import annotations

import html as html_lib
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import pandas as pd

from ...model import forward_flops, model_stats, param_count
from ..formats import markdown_table, pct

BUDGET = 5_000_000
DEPTHS = tuple(6 * n + 4 for n in range(1, 9))  # 10, 16, ..., 52
WIDTH_MIN, WIDTH_MAX, WIDTH_STEP = 0.5, 12.0, 0.25
GIB = 2 ** 30
FULL_TEST_SET = 10_000  # CIFAR-10's test images: runs scored on fewer (the sample, a subset) are not the benchmark


def budget_status(params: int, budget: int = BUDGET) -> str:
    """"within" when ``params <= budget``, else "over"."""
    return "within" if params <= budget else "over"


def max_width_within(depth: int, budget: int = BUDGET, step: float = WIDTH_STEP,
                     max_width: float = 64.0) -> float | None:
    """The largest widening factor on the ``step`` grid whose WRN of ``depth`` fits the budget (None: none)."""
    best = None
    k = step
    while k <= max_width + 1e-9:
        if param_count(depth, k) > budget:
            break  # parameters grow monotonically with the width
        best = k
        k = round(k + step, 10)
    return best


def width_curve(depths: Sequence[int], widths: Sequence[float], batch_size: int = 512) -> pd.DataFrame:
    """Tidy (depth, width, params, forward_flops, activation GiB for the batch) over a grid, in closed form."""
    from ...model import activation_bytes_per_image

    rows = [{"depth": d, "width": w, "params": param_count(d, w), "forward_flops": forward_flops(d, w),
             "activation_gib": activation_bytes_per_image(d, w) * batch_size / GIB}
            for d in depths for w in widths]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- one choice


@dataclass(frozen=True)
class Choice:
    depth: int
    width: float
    batch_size: int
    budget: int
    params: int
    forward_flops: int
    train_flops: int
    stage_widths: tuple[int, int, int]
    activation_bytes_per_image: int
    activation_bytes_batch: int
    budget_fraction: float
    status: str  # "within" or "over"
    max_width_within: float | None  # largest width on the 0.25 grid that fits, at this depth

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.width:g}"


@lru_cache(maxsize=256)
def _stats(depth: int, width: float):
    return model_stats(depth, width)


def describe(depth: int, width: float, batch_size: int = 512, budget: int = BUDGET) -> Choice:
    """Everything the explorer shows for one choice; the numbers come from :func:`wrnlib.model_stats`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    stats = _stats(int(depth), float(width))
    return Choice(depth=int(depth), width=float(width), batch_size=batch_size, budget=int(budget),
                  params=stats.params, forward_flops=stats.forward_flops, train_flops=stats.train_flops,
                  stage_widths=tuple(stats.stage_widths), activation_bytes_per_image=stats.activation_bytes,
                  activation_bytes_batch=stats.activation_bytes * batch_size,
                  budget_fraction=stats.params / budget, status=budget_status(stats.params, budget),
                  max_width_within=max_width_within(int(depth), budget))


def run_points(runs: pd.DataFrame | None) -> pd.DataFrame:
    """Finished runs with their size, test accuracy and data (for the figure and the table); empty if none."""
    cols = ["name", "group", "depth", "width", "params", "epochs", "test_acc", "test_images", "data_source",
            "device_type"]
    if runs is None or runs.empty:
        return pd.DataFrame(columns=cols)
    df = runs[runs["status"] == "finished"].copy() if "status" in runs else runs.copy()
    df = df.dropna(subset=["depth", "width", "params"])
    return df[[c for c in cols if c in df]].reset_index(drop=True)


def benchmark_mask(points: pd.DataFrame) -> pd.Series:
    """True for runs scored on the whole CIFAR-10 test set (not the sample, not a subset)."""
    if points.empty:
        return pd.Series(dtype=bool)
    source = points.get("data_source", pd.Series("", index=points.index)).fillna("").astype(str)
    images = pd.to_numeric(points.get("test_images", pd.Series(0, index=points.index)), errors="coerce")
    return (source != "sample") & (images == FULL_TEST_SET)


def budget_label(row: pd.Series) -> str:
    """What a measured point's accuracy was bought with: its device kind and epochs, e.g. "CPU, 4 epochs"."""
    device = str(row.get("device_type") or "unknown device")
    device = device.upper() if device in ("cpu", "cuda") else device
    device = "GPU" if device == "CUDA" else device
    epochs = pd.to_numeric(row.get("epochs"), errors="coerce")
    return f"{device}, {int(epochs)} epochs" if pd.notna(epochs) else device


def measured(runs: pd.DataFrame | None, depth: int, width: float) -> pd.DataFrame:
    """The finished runs of exactly WRN-depth-width that have a test accuracy, best first."""
    points = run_points(runs)
    if points.empty or "test_acc" not in points:
        return points.iloc[0:0]
    same = (points["depth"].astype(int) == int(depth)) & ((points["width"].astype(float) - float(width)).abs() < 1e-9)
    return points[same].dropna(subset=["test_acc"]).sort_values("test_acc", ascending=False).reset_index(drop=True)


def _measured_text(runs: pd.DataFrame | None, choice: Choice, shown: int = 3) -> str:
    here = measured(runs, choice.depth, choice.width)
    if here.empty:
        return (f"no finished run of {choice.name} in the results folder: its accuracy is unknown "
                f"(the figure's right panel shows what was measured at other sizes)")
    bench = benchmark_mask(here)
    parts = [f"{pct(r['test_acc'])} ({r['name']}, {budget_label(r)}"
             + ("" if bench.iloc[i] else "; sample or subset, not the benchmark") + ")"
             for i, (_, r) in enumerate(here.head(shown).iterrows())]
    more = len(here) - shown
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def view_rows(choice: Choice, runs: pd.DataFrame | None = None) -> list[tuple[str, str, str]]:
    """(quantity, value, kind) rows of the view; kind says where a number comes from: exact, estimate, measured."""
    verdict = "within the budget" if choice.status == "within" else "over the budget"
    fit = (f"the widest WRN-{choice.depth} within the budget has k = {choice.max_width_within:g}"
           if choice.max_width_within else f"no WRN-{choice.depth} fits the budget")
    return [
        ("parameters", f"{choice.params:,} ({choice.params / 1e6:.2f} M)", "exact"),
        ("budget", f"{choice.budget:,}: {pct(choice.budget_fraction, digits=1)} used, {verdict}; {fit}", "exact"),
        ("forward FLOPs / image",
         f"{choice.forward_flops / 1e9:.3f} GFLOP (training ≈ {choice.train_flops / 1e9:.2f} GFLOP)", "exact"),
        ("stage widths", " / ".join(map(str, choice.stage_widths)) + " channels", "exact"),
        ("activations (bf16)", f"{choice.activation_bytes_per_image / 2**20:.2f} MiB per image, "
                               f"{choice.activation_bytes_batch / GIB:.2f} GiB for a batch of {choice.batch_size}",
         "estimate"),
        ("test accuracy", _measured_text(runs, choice), "measured"),
    ]


def markdown(choice: Choice, runs: pd.DataFrame | None = None) -> str:
    """A markdown table of the choice's numbers, each marked exact, estimate or measured."""
    rows = [(k, v.replace("within the budget", "**within** the budget").replace("over the budget",
                                                                               "**over** the budget"), kind)
            for k, v, kind in view_rows(choice, runs)]
    return f"### {choice.name}\n\n{markdown_table(['', '', ''], rows)}\n"


def html(choice: Choice, runs: pd.DataFrame | None = None) -> str:
    """The same table as HTML (for the widget, which cannot render markdown)."""
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html_lib.escape(k)}</th>"
                    f"<td style='text-align:left'>{html_lib.escape(v)}</td>"
                    f"<td style='text-align:left;color:gray;padding-left:1em'><i>{kind}</i></td></tr>"
                    for k, v, kind in view_rows(choice, runs))
    return f"<h3>{html_lib.escape(choice.name)}</h3><table>{cells}</table>"
