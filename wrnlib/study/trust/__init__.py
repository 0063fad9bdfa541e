"""How far to trust a trained model (notebook 06): calibration and accuracy under corruptions, per run.

* :mod:`.assessment`: assess a run with kept weights, read the assessments back, find runs that differ in one
  setting, and the tables notebook 06 shows;
* :mod:`.calibration`: ECE, reliability tables and temperature scaling;
* :mod:`.corruptions`: CIFAR-10-C style corruptions, generated here.
"""
from .assessment import (Settings, assess, calibration_table, corruption_table, load, one_setting_pairs,
                         one_setting_table, runs_with_weights)
from .corruptions import KINDS, SEVERITIES

__all__ = ["KINDS", "SEVERITIES", "Settings", "assess", "calibration_table", "corruption_table", "load",
           "one_setting_pairs", "one_setting_table", "runs_with_weights"]
