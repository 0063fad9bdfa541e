"""How far to trust a trained model: calibration and accuracy under corruptions, per run (notebook 06).

For a run folder with kept weights (``model_fp16.pt``) :func:`assess` computes, on a CPU or GPU:

* calibration on the test set: ECE (15 bins) and a reliability table, plain and with flip-TTA,
  then again after temperature scaling fitted on the run's *own* validation split (rebuilt from
  its config: the same ``val_size`` and seed as training held out);
* accuracy under CIFAR-10-C style corruptions (:mod:`.corruptions`, generated here,
  not the published files), per kind and severity, on a fixed stratified test subset.

The results go to ``<out_dir>/<run name>/`` (``trust.json``, ``reliability.csv``,
``corruptions.csv``) with the settings, the data checksum and the environment; an assessment
whose settings and data match is read back instead of computed again.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ... import runfolder as runs
from ...config import BUDGET_DERIVED, RESUME_MUTABLE, TrainConfig
from ...data import CIFAR10, test_subset, train_val_split
from ...device import choose_precision, resolve_device
from ...engine import predict_logits
from ...files import write_json
from ...provenance import environment
from ..formats import points
from . import calibration, corruptions

TRUST_JSON, RELIABILITY_CSV, CORRUPTIONS_CSV = "trust.json", "reliability.csv", "corruptions.csv"
# fields that say how a run was executed or filed, not what it learned: never "the one setting" of a pair
_BOOKKEEPING = set(RESUME_MUTABLE) | {"name", "device", "precision", "deterministic", "channels_last", "tta",
                                      "sync_bn"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an assessment computes; saved with it, and compared before reading one back."""
    corruption_images: int = 2000  # fixed stratified test subset (seed 0) for the corruptions
    kinds: tuple[str, ...] = corruptions.KINDS
    severities: tuple[int, ...] = corruptions.SEVERITIES
    seed: int = 0  # of the corruptions' noise
    bins: int = calibration.DEFAULT_BINS
    precision: str = "auto"  # inference: bf16 autocast where the device computes it natively
    batch_size: int = 500

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def runs_with_weights(folders: Sequence[str | Path]) -> list[Path]:
    """Run folders among ``folders`` (each a run folder or a folder of them) that hold model_fp16.pt."""
    found = []
    for folder in map(Path, folders):
        candidates = [folder] if (folder / runs.CONFIG).exists() else sorted(p for p in folder.glob("*") if p.is_dir())
        found += [p for p in candidates if (p / runs.MODEL_FP16).exists()]
    return found


def assess(run_dir: str | Path, data: CIFAR10, out_dir: str | Path, settings: Settings = Settings(), *,
           device: str = "auto") -> dict[str, Any]:
    """The run's calibration and corruption accuracy, computed or read back from ``<out_dir>/<run name>/``."""
    run_dir = Path(run_dir)
    folder = Path(out_dir) / run_dir.name
    previous = _read_back(folder, settings, data.checksum)
    if previous is not None:
        return previous
    torch_device = resolve_device(device)
    model, config = runs.load_run_model(run_dir, device=str(torch_device))
    bf16, why = choose_precision(settings.precision, torch_device)
    started = time.perf_counter()
    calib, reliability = _calibration(model, config, data, settings, bf16)
    calibration_s = time.perf_counter() - started
    table = corruption_accuracy(model, data, settings, bf16)
    report = {"run": run_dir.name, "run_dir": str(run_dir), "settings": settings.to_dict(),
              "data_checksum": data.checksum, "model": f"WRN-{config.depth}-{config.width:g}",
              "epochs": config.epochs, "inference": why, "calibration": calib,
              "calibration_time_s": calibration_s,
              "corruption_time_s": float(table["seconds"].sum()),
              "clean_subset_acc": float(table.loc[table["severity"] == 0, "accuracy"].iloc[0]),
              "mean_corruption_acc": float(table.loc[table["severity"] > 0, "accuracy"].mean()),
              "env": environment(torch_device, data.checksum, data.source)}
    folder.mkdir(parents=True, exist_ok=True)
    reliability.to_csv(folder / RELIABILITY_CSV, index=False, float_format="%.6g")
    table.to_csv(folder / CORRUPTIONS_CSV, index=False, float_format="%.6g")
    write_json(folder / TRUST_JSON, report)  # last: its presence means the folder is complete
    return report


def _read_back(folder: Path, settings: Settings, checksum: str) -> dict[str, Any] | None:
    path = folder / TRUST_JSON
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    same = report.get("settings") == settings.to_dict() and report.get("data_checksum") == checksum
    return report if same and (folder / CORRUPTIONS_CSV).exists() and (folder / RELIABILITY_CSV).exists() else None


def _calibration(model, config: TrainConfig, data: CIFAR10, settings: Settings,
                 bf16: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    """ECE on the test set plain / flip-TTA, before and after a temperature fitted on the run's validation split."""
    logits = {tta: predict_logits(model, data.test_images, batch_size=settings.batch_size, bf16=bf16, tta=tta).cpu()
              for tta in (False, True)}
    labels = data.test_labels.cpu()
    result: dict[str, Any] = {"test_images": len(labels), "val_images": config.val_size}
    if 0 < config.val_size < len(data.train_labels):  # the run's own held-out images: never trained on, not test
        _, val_idx = train_val_split(data.train_labels, config.val_size, config.seed)
        val_logits = predict_logits(model, data.train_images[val_idx], batch_size=settings.batch_size, bf16=bf16).cpu()
        val_labels = data.train_labels[val_idx].cpu()
        temperature = calibration.fit_temperature(val_logits, val_labels)
        result.update(temperature=temperature, val_nll=calibration.nll(val_logits, val_labels),
                      val_nll_scaled=calibration.nll(val_logits, val_labels, temperature))
    else:
        temperature = None
        result.update(temperature=None, val_nll=None, val_nll_scaled=None)
    frames = []
    for tta, z in logits.items():
        key = "tta" if tta else "plain"
        result[f"test_acc_{key}"] = float((z.argmax(1) == labels).float().mean())
        result[f"ece_{key}"] = calibration.ece(z, labels, settings.bins)
        result[f"test_nll_{key}"] = calibration.nll(z, labels)
        frames.append(calibration.reliability(z, labels, settings.bins).assign(tta=tta, scaled=False))
        if temperature is not None:
            result[f"ece_{key}_scaled"] = calibration.ece(z / temperature, labels, settings.bins)
            result[f"test_nll_{key}_scaled"] = calibration.nll(z, labels, temperature)
            frames.append(calibration.reliability(z / temperature, labels, settings.bins).assign(tta=tta, scaled=True))
    return result, pd.concat(frames, ignore_index=True)


def corruption_accuracy(model, data: CIFAR10, settings: Settings, bf16: bool) -> pd.DataFrame:
    """Accuracy per (kind, severity) on the fixed test subset, with the clean subset as severity 0."""
    images, labels = test_subset(data, settings.corruption_images)
    labels = labels.cpu()
    rows = []

    def score(kind: str, severity: int, batch: torch.Tensor, started: float) -> None:
        predicted = predict_logits(model, batch, batch_size=settings.batch_size, bf16=bf16).argmax(1).cpu()
        rows.append({"kind": kind, "severity": severity, "accuracy": float((predicted == labels).float().mean()),
                     "images": len(labels), "seconds": time.perf_counter() - started})

    score("clean", 0, images, time.perf_counter())
    for kind, severity in itertools.product(settings.kinds, settings.severities):
        started = time.perf_counter()
        score(kind, severity, corruptions.corrupt(images.cpu(), kind, severity, settings.seed), started)
    return pd.DataFrame(rows)


def load(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(one row per assessed run, reliability rows, corruption rows) of every assessment in ``out_dir``."""
    summaries, reliability, corrupted = [], [], []
    for folder in sorted(p for p in Path(out_dir).glob("*") if (p / TRUST_JSON).exists()):
        report = json.loads((folder / TRUST_JSON).read_text())
        summaries.append({"run": report["run"], "model": report["model"], "epochs": report["epochs"],
                          "device": report["env"].get("device"), **report["calibration"],
                          "clean_subset_acc": report["clean_subset_acc"],
                          "mean_corruption_acc": report["mean_corruption_acc"],
                          "corruption_images": report["settings"]["corruption_images"],
                          "time_s": report["calibration_time_s"] + report["corruption_time_s"]})
        reliability.append(pd.read_csv(folder / RELIABILITY_CSV).assign(run=report["run"]))
        corrupted.append(pd.read_csv(folder / CORRUPTIONS_CSV).assign(run=report["run"]))
    if not summaries:
        return (pd.DataFrame(columns=["run", "model", "epochs"]), pd.DataFrame(columns=["run", "count"]),
                pd.DataFrame(columns=["run", "kind", "severity", "accuracy"]))
    return (pd.DataFrame(summaries), pd.concat(reliability, ignore_index=True),
            pd.concat(corrupted, ignore_index=True))


def one_setting_pairs(run_dirs: Sequence[str | Path]) -> list[tuple[str, str, str]]:
    """(run a, run b, field) for every two runs whose training configs differ in exactly one setting."""
    configs = {Path(d).name: runs.load_config(Path(d)).to_dict() for d in run_dirs}
    pairs = []
    for (a, ca), (b, cb) in itertools.combinations(configs.items(), 2):
        # two time budgets settle their epochs by timing the step: measurements, as a resume treats them
        derived = set(BUDGET_DERIVED) if ca["budget_minutes"] and cb["budget_minutes"] else set()
        differ = [k for k in ca if k not in _BOOKKEEPING | derived and ca[k] != cb.get(k)]
        if len(differ) == 1:
            pairs.append((a, b, differ[0]))
    return pairs


_CALIBRATION_COLUMNS = ("run", "model", "epochs", "test_acc_plain", "ece_plain", "ece_plain_scaled", "test_acc_tta",
                        "ece_tta", "ece_tta_scaled", "temperature", "val_nll", "val_nll_scaled", "device")


def calibration_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per assessed run: accuracy and ECE in points, before and after its fitted temperature."""
    table = summary[[c for c in _CALIBRATION_COLUMNS if c in summary]].copy()
    for column in [c for c in table if c.startswith(("ece", "test_acc"))]:
        table[column] = (100 * table[column]).round(2)
    return table.round(3)


def one_setting_table(summary: pd.DataFrame, pairs: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """The ECE of each pair of runs that differ in one setting, side by side in points ("a vs b")."""
    by_run = summary.set_index("run")

    def side_by_side(a: str, b: str, column: str) -> str:
        return f"{points(by_run.loc[a, column])} vs {points(by_run.loc[b, column])}"

    return pd.DataFrame([{"runs": f"{a} vs {b}", "setting": field, "ECE plain": side_by_side(a, b, "ece_plain"),
                          "ECE flip-TTA": side_by_side(a, b, "ece_tta")} for a, b, field in pairs],
                        columns=["runs", "setting", "ECE plain", "ECE flip-TTA"])


def corruption_table(corrupted: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in % per run and kind (rows) and severity (columns), with the mean over the severities."""
    pivot = corrupted[corrupted["severity"] > 0].pivot_table(index=["run", "kind"], columns="severity",
                                                             values="accuracy")
    pivot["mean"] = pivot.mean(axis=1)
    return (100 * pivot).round(1)
