"""The study's formatters: the core's percentage and duration with a missing value shown as a dash, never a number,
and its one markdown table writer."""
from __future__ import annotations

import math

import pytest

from wrnlib import progress
from wrnlib.study import formats


# The core's formatter (wrnlib.progress.duration), read from a smoke run to a long one; the study's dash when
# there is no number.
@pytest.mark.parametrize("seconds, text", [(42, "42 s"), (59.94, "60 s"), (60, "60 s"), (750, "12.5 min"),
                                           (3599, "60.0 min"), (3600, "60.0 min"), (5472, "91.2 min"),
                                           (None, "–"), ("x", "–"), (math.nan, "–")])
def test_duration_reads_from_a_smoke_run_to_a_long_one(seconds, text):
    assert formats.duration(seconds) == text
    if text != "–":
        assert formats.duration(seconds) == progress.duration(seconds)  # one duration formatter in the package


@pytest.mark.parametrize("seconds, text", [(360_000, "100.0 h"), (7_200, "2.0 h")])
def test_duration_of_a_long_run_in_hours(seconds, text):
    assert formats.duration(seconds) == text


def test_missing_values_are_a_dash_never_a_number():
    assert formats.pct(None) == formats.pct(math.nan) == formats.pct("x") == "–"
    assert formats.number(None, ".1f") == formats.number(math.nan, ".1f") == "–"
    assert formats.number(math.inf, ".1f") == "–"  # no measurement either
    assert formats.pct(0.123456) == "12.35%" and formats.pct(0.123456, digits=1) == "12.3%"
    assert formats.points(0.0789) == "7.89" and formats.points(None) == "–"
    assert formats.duration(None, missing="never") == "never" and formats.pct(None, missing="-") == "-"
    assert formats.text("A CPU") == "A CPU" and formats.text(None) == formats.text(math.nan) == "–"
    assert formats.text("") == "–"


def test_the_markdown_table_writer():
    assert formats.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"
    assert formats.markdown_table(["", ""], []) == "|  |  |\n|---|---|"
