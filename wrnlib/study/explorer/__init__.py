"""The width explorer of notebook 05: what a (depth, widening factor) choice costs against the 5 M budget, and what
is known about it.

* :mod:`.numbers`: the numbers of one choice (exact, estimated or measured), as rows, markdown or HTML;
* :mod:`.figure`: its three-panel figure, drawn without pyplot;
* :mod:`.widgets`: the view in a notebook, and the sliders with a button that trains the choice.
"""
from .numbers import BUDGET, DEPTHS, Choice, describe, max_width_within
from .widgets import Explorer, interactive, show

__all__ = ["BUDGET", "DEPTHS", "Choice", "Explorer", "describe", "interactive", "max_width_within", "show"]
