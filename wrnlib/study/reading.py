"""A reading of a schedule ablation, computed from its runs: which differences exceed the seed spread.

Notebook 03 prints this under its figures, so every number in the text comes from the runs. The
test used is deliberately simple and stated in the text: two schedules differ by more than their
seed spread when the ranges of their seeds' results do not overlap. With two seeds per schedule
that is weak evidence either way, and the text says so.
"""
from __future__ import annotations

import itertools
from typing import Mapping

import pandas as pd

ZERO = 1e-3  # a schedule "decays to zero" when it ends below this fraction of the peak learning rate


def by_schedule(final: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Per schedule: seeds, mean, min and max of ``metric`` (in %), best mean first."""
    values = final.assign(value=100 * pd.to_numeric(final[metric], errors="coerce")).dropna(subset=["value"])
    table = values.groupby("schedule", sort=False)["value"].agg(["count", "mean", "min", "max"])
    return table.sort_values("mean", ascending=False)


def pairs(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(resolved, unresolved) comparisons of every two schedules, as text, the better one first."""
    resolved, unresolved = [], []
    for a, b in itertools.combinations(table.index, 2):  # a's mean >= b's: the table is sorted
        gap = table.at[a, "mean"] - table.at[b, "mean"]
        if table.at[a, "min"] > table.at[b, "max"]:
            resolved.append(f"{a} > {b} (+{gap:.2f} points)")
        else:
            unresolved.append(f"{a} vs {b} ({gap:.2f} points)")
    return resolved, unresolved


def _ranking(table: pd.DataFrame) -> str:
    return ", ".join(f"{name} {r['mean']:.2f} % [{r['min']:.2f}–{r['max']:.2f}]" for name, r in table.iterrows())


def reading_markdown(final: pd.DataFrame, end_multipliers: Mapping[str, float] | None = None) -> str:
    """The ablation's reading as markdown bullets, from its final table (one row per run).

    ``end_multipliers``: each schedule's learning rate at the end of the budget as a fraction of the
    peak (from :func:`wrnlib.schedules.lr_multiplier`); with it, the schedules that decay to zero are
    compared with those that do not (the question of Li, Yumer & Ramanan's "Budgeted Training").
    """
    if final.empty:
        return "No finished runs: nothing to read yet."
    test = by_schedule(final, "test_acc")
    seeds = ", ".join(str(int(n)) for n in sorted(set(test["count"])))
    lines = [f"* **Ranking** by mean final test accuracy over the seeds ({seeds} per schedule; the range over "
             f"seeds in brackets): {_ranking(test)}."]
    resolved, unresolved = pairs(test)
    lines.append("* **Larger than the seed spread** (the two schedules' ranges do not overlap): "
                 + ("; ".join(resolved) if resolved else "none") + ".")
    lines.append("* **Within the seed spread** (not resolved by these seeds): "
                 + ("; ".join(unresolved) if unresolved else "none") + ".")
    if "final_val_acc" in final and final["final_val_acc"].notna().any():
        val = by_schedule(final, "final_val_acc")
        lines.append(f"* **On the validation split** (what settings are chosen on), by mean final validation "
                     f"accuracy: {_ranking(val)}. Best on validation: **{val.index[0]}**.")
    if end_multipliers:
        to_zero = [s for s in test.index if end_multipliers.get(s, 1.0) < ZERO]
        others = [s for s in test.index if s not in to_zero]
        if to_zero and others:
            ahead = test.loc[to_zero, "mean"].mean() - test.loc[others, "mean"].mean()
            ends = ", ".join(f"{s} at {end_multipliers[s]:.3g}" for s in others if s in end_multipliers)
            best_other = test.loc[others, "max"].max()
            beaten = [s for s in to_zero if test.at[s, "min"] > best_other]
            lines.append(
                f"* **Decay to zero at the budget**: {', '.join(to_zero)} end at a learning rate of zero; "
                f"{ends} of the peak. The first group averages {test.loc[to_zero, 'mean'].mean():.2f} %, the "
                f"second {test.loc[others, 'mean'].mean():.2f} % ({ahead:+.2f} points). "
                + (f"Every seed of {', '.join(beaten)} beats every seed of the others."
                   if beaten else "No decay-to-zero schedule beats every seed of the others."))
    return "\n".join(lines)
