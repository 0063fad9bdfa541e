"""The width explorer of notebooks/05: what a (depth, widening factor) choice costs, against the 5 M budget.

The logic is plain functions (testable without a kernel):

* :func:`describe` -> :class:`Choice`: parameters, FLOPs, stage widths and activation memory of
  one WRN, straight from :func:`wrnlib.model_stats`, and its budget classification;
* :func:`wrnlib.model.param_count` / :func:`wrnlib.model.forward_flops`: the same numbers in closed
  form (instant), used for the curves over many widths;
* :func:`figure` and :func:`markdown`: the view; :func:`show` displays both (what papermill
  records for the parameter values).

:class:`Explorer` wires ipywidgets sliders to that view. Slider callbacks only recompute the
view; training happens only when its button is clicked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import pandas as pd

from ..model import forward_flops, model_stats, param_count

BUDGET = 5_000_000
DEPTHS = tuple(6 * n + 4 for n in range(1, 9))  # 10, 16, ..., 52
WIDTH_MIN, WIDTH_MAX, WIDTH_STEP = 0.5, 12.0, 0.25
GIB = 2 ** 30


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
    from ..model import activation_bytes_per_image

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
    """Finished runs with depth, width, params and test accuracy (for the scatter); empty if none."""
    cols = ["name", "group", "depth", "width", "params", "test_acc"]
    if runs is None or runs.empty:
        return pd.DataFrame(columns=cols)
    df = runs[runs["status"] == "finished"].copy() if "status" in runs else runs.copy()
    df = df.dropna(subset=["depth", "width", "params"])
    return df[[c for c in cols if c in df]].reset_index(drop=True)


def markdown(choice: Choice) -> str:
    """A markdown table of the choice's numbers and its budget verdict."""
    verdict = ("**within** the budget" if choice.status == "within" else "**over** the budget")
    fit = (f"the widest WRN-{choice.depth} within the budget has k = {choice.max_width_within:g}"
           if choice.max_width_within else f"no WRN-{choice.depth} fits the budget")
    rows = [
        ("parameters", f"{choice.params:,} ({choice.params / 1e6:.2f} M)"),
        ("budget", f"{choice.budget:,}: {100 * choice.budget_fraction:.1f}% used, {verdict}; {fit}"),
        ("forward FLOPs / image", f"{choice.forward_flops / 1e9:.3f} GFLOP (training ≈ {choice.train_flops / 1e9:.2f} GFLOP)"),
        ("stage widths", " / ".join(map(str, choice.stage_widths)) + " channels"),
        ("activations (bf16, estimate)", f"{choice.activation_bytes_per_image / 2**20:.2f} MiB per image, "
                                         f"{choice.activation_bytes_batch / GIB:.2f} GiB for a batch of {choice.batch_size}"),
    ]
    return f"### {choice.name}\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def figure(choice: Choice, runs: pd.DataFrame | None = None, widths: Sequence[float] | None = None,
           other_depths: Sequence[int] = (16, 28, 40)):
    """Two panels: parameters against width (budget line, the choice, finished runs) and compute/memory."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if widths is None:
        top = max(8.0, math.ceil(choice.width * 1.3))
        widths = [round(WIDTH_MIN + WIDTH_STEP * i, 4) for i in range(int((top - WIDTH_MIN) / WIDTH_STEP) + 1)]
    depths = sorted(set(other_depths) | {choice.depth})
    curve = width_curve(depths, widths, choice.batch_size)
    curve["params_m"] = curve["params"] / 1e6
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    ax = axes[0]
    palette = dict(zip(depths, sns.color_palette("crest", len(depths))))
    for d in depths:
        part = curve[curve["depth"] == d]
        ax.plot(part["width"], part["params_m"], color=palette[d], lw=2.5 if d == choice.depth else 1,
                alpha=1 if d == choice.depth else 0.55, label=f"WRN-{d}-k")
    ax.axhline(choice.budget / 1e6, color="tab:red", ls="--", lw=1.2, label=f"budget {choice.budget / 1e6:g} M")
    ax.axhspan(choice.budget / 1e6, max(curve["params_m"].max(), choice.params / 1e6) * 1.05, color="tab:red",
               alpha=0.06)
    color = "tab:green" if choice.status == "within" else "tab:red"
    ax.scatter([choice.width], [choice.params / 1e6], marker="*", s=260, color=color, edgecolor="black", zorder=5,
               label=f"{choice.name}: {choice.params / 1e6:.2f} M ({choice.status})")
    points = run_points(runs)
    if not points.empty:
        ax.scatter(points["width"].astype(float), points["params"].astype(float) / 1e6, marker="o", s=45,
                   facecolor="none", edgecolor="black", zorder=4, label=f"finished runs ({len(points)})")
        for _, r in points.drop_duplicates(["depth", "width"]).iterrows():
            acc = r.get("test_acc")
            text = f"{int(r['depth'])}-{float(r['width']):g}" + (f": {100 * acc:.1f}%" if acc == acc and acc is not None else "")
            ax.annotate(text, (float(r["width"]), float(r["params"]) / 1e6), fontsize=7, xytext=(4, -9),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("widening factor k")
    ax.set_ylabel("parameters (M, log scale)")
    ax.set_title("parameters against width")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    part = curve[curve["depth"] == choice.depth]
    ax.plot(part["width"], 3 * part["forward_flops"] / 1e9, color="tab:blue", label="training GFLOP / image")
    ax.scatter([choice.width], [choice.train_flops / 1e9], marker="*", s=200, color="tab:blue", edgecolor="black",
               zorder=5)
    ax.set_xlabel("widening factor k")
    ax.set_ylabel("training GFLOP per image", color="tab:blue")
    twin = ax.twinx()
    twin.plot(part["width"], part["activation_gib"], color="tab:orange", ls="--",
              label=f"activations, batch {choice.batch_size}")
    twin.scatter([choice.width], [choice.activation_bytes_batch / GIB], marker="*", s=200, color="tab:orange",
                 edgecolor="black", zorder=5)
    twin.set_ylabel(f"activation GiB (batch {choice.batch_size}, bf16)", color="tab:orange")
    twin.grid(False)
    ax.set_title(f"WRN-{choice.depth}-k: compute and memory")
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def show(depth: int, width: float, batch_size: int = 512, budget: int = BUDGET, runs: pd.DataFrame | None = None):
    """Display the markdown table and the figure for one choice (in a notebook); returns (choice, figure)."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    choice = describe(depth, width, batch_size, budget)
    display(Markdown(markdown(choice)))
    fig = figure(choice, runs)
    display(fig)
    plt.close(fig)
    return choice, fig


# --------------------------------------------------------------------------- training a choice


def train_config(depth: int, width: float, **overrides: Any):
    """The TrainConfig the explorer's button trains: the chosen WRN plus the notebook's training parameters."""
    from ..config import TrainConfig

    overrides.setdefault("name", f"explore-wrn{depth}-{width:g}")
    return TrainConfig(depth=int(depth), width=float(width), **overrides).validate()


# --------------------------------------------------------------------------- widgets


class Explorer:
    """Sliders for depth, width and batch size, a live view, and a button that trains the choice."""

    def __init__(self, depth: int = 28, width: float = 3.5, batch_size: int = 512, budget: int = BUDGET,
                 runs: pd.DataFrame | None = None, train_overrides: dict[str, Any] | None = None,
                 fit: Callable | None = None):
        import ipywidgets as w

        self.budget, self.runs = budget, runs
        self.train_overrides = dict(train_overrides or {})
        self._fit = fit
        style = {"description_width": "110px"}
        layout = w.Layout(width="520px")
        self.depth = w.SelectionSlider(options=sorted(set(DEPTHS) | {int(depth)}), value=int(depth), description="depth (6n+4)",
                                       continuous_update=False, style=style, layout=layout)
        self.width = w.FloatSlider(value=width, min=min(WIDTH_MIN, width), max=max(WIDTH_MAX, width), step=WIDTH_STEP,
                                   description="widening k", continuous_update=False, readout_format=".2f",
                                   style=style, layout=layout)
        self.batch = w.SelectionSlider(options=sorted({32, 64, 128, 256, 512, 1024, 2048, int(batch_size)}),
                                       value=int(batch_size),
                                       description="batch size", continuous_update=False, style=style, layout=layout)
        self.view = w.Output()
        self.button = w.Button(description="Train this WRN", icon="play", button_style="warning",
                               tooltip="runs wrnlib.fit with the notebook's training parameters (slow)")
        self.train_log = w.Output()
        for slider in (self.depth, self.width, self.batch):
            slider.observe(self._on_change, names="value")
        self.button.on_click(self._on_train)
        self.widget = w.VBox([self.depth, self.width, self.batch, self.view, self.button, self.train_log])
        self.choice: Choice | None = None
        self.refresh()

    def _on_change(self, _change: dict) -> None:
        self.refresh()  # cheap: model_stats of one WRN (cached) and closed-form curves; never training

    def refresh(self) -> Choice:
        self.view.clear_output(wait=True)
        with self.view:
            self.choice, _ = show(self.depth.value, self.width.value, self.batch.value, self.budget, self.runs)
        return self.choice

    def config(self):
        return train_config(self.depth.value, self.width.value, **self.train_overrides)

    def _on_train(self, _button: Any) -> None:
        from ..train import fit as default_fit
        from ..train import format_epoch

        fit = self._fit or default_fit
        self.button.disabled = True
        try:
            with self.train_log:
                config = self.config()
                print(f"training {config.name} ({config.epochs} epochs) into {config.run_dir} ...", flush=True)
                result = fit(config, on_epoch_end=lambda row: print(format_epoch(row, config.epochs), flush=True))
                print(f"done: test accuracy {100 * result.summary['test_acc']:.2f}%; run folder {result.run_dir}")
        except Exception as exc:  # shown in the widget; the notebook keeps running
            with self.train_log:
                print(f"training failed: {type(exc).__name__}: {exc}")
        finally:
            self.button.disabled = False

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
