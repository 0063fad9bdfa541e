"""The study notebooks: clean sources, and one real execution of the quick profile through the study runner.

The quick study runs once per module (about a minute on 2 cores) with every output redirected into a
temporary folder; the tests then check what it produced. Data: $CIFAR10_DIR when set, else the real
sample shipped in wrnlib.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from wrnlib import cli, fit, runfolder
from wrnlib.device import choose_precision
from wrnlib.study import collect, profiles, tables
from wrnlib.study import runner as study

NOTEBOOKS = profiles.find_notebooks()
EXPECTED = ["01_data_exploration.ipynb", "02_train.ipynb", "03_lr_schedule_ablation.ipynb", "04_results.ipynb",
            "05_width_explorer.ipynb", "06_calibration_robustness.ipynb"]
QUICK = profiles.load_profile("quick")
RUN_NAME = QUICK["notebooks"]["02"]["run_name"]
HEADLINES = [RUN_NAME] + [f"{RUN_NAME}-seed{seed}" for seed in QUICK["notebooks"]["02"]["other_seeds"]]
ABLATION = QUICK["notebooks"]["03"]["ablation_name"]
SWEPT_WIDTHS = QUICK["notebooks"]["05"]["sweep_widths"]
TIMED = [(d, k) for d in QUICK["notebooks"]["05"]["time_sweep_depths"]
         for k in QUICK["notebooks"]["05"]["time_sweep_widths"]]


def test_the_six_notebooks_exist_in_order():
    assert [p.name for p in NOTEBOOKS.values()] == EXPECTED


@pytest.mark.parametrize("path", list(NOTEBOOKS.values()), ids=lambda p: p.name)
def test_source_notebook_is_clean(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] for c in code), "commit notebooks without outputs"
    assert all(c.execution_count is None for c in code), "commit notebooks without execution counts"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.skipif(not (shutil.which("git") and shutil.which("make")), reason="needs git and make")
def test_outputs_saved_in_jupyterlab_never_reach_git(tmp_path):
    """`make hooks` (part of the install) makes git strip outputs from notebooks/*.ipynb when they are staged."""
    source = profiles.NOTEBOOKS_DIR / "05_width_explorer.ipynb"
    saved = nbformat.read(str(source), as_version=4)  # as JupyterLab saves it after a run
    for count, cell in enumerate((c for c in saved.cells if c.cell_type == "code"), 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output {count}\n")]
    saved.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    repo = tmp_path / "clone"
    for rel in ("notebooks/05_width_explorer.ipynb", "results/executed/full/05_width_explorer.ipynb"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(saved, str(repo / rel))
    for name in (".gitattributes", "Makefile"):
        shutil.copy(profiles.REPO_ROOT / name, repo / name)
    env = dict(os.environ, HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1")

    def run(*cmd):
        return subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    assert "lose their outputs" in run("make", "--no-print-directory", "hooks", f"PY={sys.executable}")
    run("git", "add", "notebooks", "results")
    assert run("git", "show", ":notebooks/05_width_explorer.ipynb") == source.read_text()  # the clean source
    assert "output 1" in run("git", "show", ":results/executed/full/05_width_explorer.ipynb")  # executed: kept


@pytest.mark.parametrize("profile", profiles.known_profiles())
def test_profile_parameters_are_declared_by_the_notebooks(profile):
    spec = profiles.load_profile(profile)
    assert spec["notebooks"] and set(spec["notebooks"]) <= set(NOTEBOOKS)
    for prefix, path in NOTEBOOKS.items():
        declared = profiles.declared_parameters(path)
        params = profiles.notebook_parameters(spec, prefix, declared)
        assert set(params) <= declared, (profile, path.name, set(params) - declared)


# --------------------------------------------------------------------------- one real quick study


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    base = tmp_path_factory.mktemp("quick_study")
    log = io.StringIO()
    rc = study.run_study("quick", output_root=base / "executed", results_root=base / "results",
                         progress_bar=False, stream=log)
    assert rc == 0, log.getvalue()
    return {"base": base, "executed": base / "executed" / "quick", "results": base / "results", "log": log.getvalue()}


def _outputs(path: Path) -> list[dict]:
    nb = nbformat.read(str(path), as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(path: Path) -> str:
    parts = []
    for o in _outputs(path):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("display_data", "execute_result"):
            parts.append(str(o.data.get("text/markdown", "")) + str(o.data.get("text/plain", "")))
    return "\n".join(parts)


def test_executed_notebooks_have_no_errors(quick):
    assert f"finished: {len(EXPECTED)} notebook(s)" in quick["log"]
    for name in EXPECTED:
        path = quick["executed"] / name
        assert path.exists(), name
        nb = nbformat.read(str(path), as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert not [o for o in _outputs(path) if o.output_type == "error"], name
        assert not [o for o in _outputs(path) if o.output_type == "stream" and o.name == "stderr"
                    and "Traceback" in o.text], name
        assert any("image/png" in o.get("data", {}) for o in _outputs(path)), f"{name} shows no figure"


def test_the_executed_study_as_web_pages(quick):
    index = quick["executed"] / "index.html"
    assert f"open the executed study in a browser: {index.resolve().as_uri()}" in quick["log"]
    listing = index.read_text()
    for name in EXPECTED:
        page = quick["executed"] / name.replace(".ipynb", ".html")
        assert f"href='{page.name}'" in listing, name
        figures = sum("image/png" in o.get("data", {}) for o in _outputs(quick["executed"] / name))
        assert page.read_text().count("data:image/png;base64") >= figures > 0, name


def test_training_run_folder(quick):
    run = quick["results"] / "runs" / RUN_NAME
    for name in ("config.json", "env.json", "metrics.csv", "summary.json", "model_fp16.pt"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    epochs = QUICK["notebooks"]["02"]["epochs"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0 and 0.0 <= summary["test_acc_tta"] <= 1.0
    assert summary["test_images"] == QUICK["notebooks"]["02"]["test_limit"]
    config = json.loads((run / "config.json").read_text())
    assert (config["depth"], config["width"], config["device"]) == (10, 1.0, "cpu")
    text = _text(quick["executed"] / "02_train.ipynb")
    assert f"{100 * summary['test_acc']:.2f}%" in text  # the notebook reports the run's own number
    assert "recomputed test accuracy" in text
    # other_seeds: the same recipe with each other seed, in its own folder, and the mean over all of them
    others = [json.loads((run.parent / name / "summary.json").read_text()) for name in HEADLINES[1:]]
    assert [runfolder.load_config(run.parent / name).seed for name in HEADLINES[1:]] == QUICK["notebooks"]["02"][
        "other_seeds"]
    mean = (summary["test_acc"] + sum(s["test_acc"] for s in others)) / len(HEADLINES)
    assert f"| mean of {len(HEADLINES)} | – | – | {100 * mean:.2f}% |" in text


def test_ablation_tables_have_one_row_per_schedule_and_seed(quick):
    folder = quick["results"] / "ablations" / ABLATION
    spec = QUICK["notebooks"]["03"]
    expected = {(s, seed) for s in spec["schedules"] for seed in spec["seeds"]}
    final = list(csv.DictReader((folder / "final.csv").open()))
    assert len(final) == len(expected)
    assert {(r["schedule"], int(r["seed"])) for r in final} == expected
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in final)
    epochs = list(csv.DictReader((folder / "epochs.csv").open()))
    assert len(epochs) == len(expected) * spec["epochs"]
    by_schedule = list(csv.DictReader((folder / "by_schedule.csv").open()))
    assert [r["schedule"] for r in by_schedule] == spec["schedules"]
    for r in final:  # every table row is backed by its run folder
        summary = json.loads((folder / "runs" / r["run"] / "summary.json").read_text())
        assert abs(summary["test_acc"] - float(r["test_acc"])) < 1e-5


def test_figures_and_summary(quick):
    figures = quick["results"] / "figures"
    expected = ["01_class_balance", "01_samples_per_class", "01_channel_stats", "01_pixel_distributions",
                "01_augmentations", f"02_{RUN_NAME}_curves", f"02_{RUN_NAME}_confusion", f"02_{RUN_NAME}_per_class",
                f"02_{RUN_NAME}_confident_errors", f"03_{ABLATION}_lr_curves", f"03_{ABLATION}_val_acc",
                f"03_{ABLATION}_final", "04_training_curves", "04_accuracy_vs_params", f"04_schedules_{ABLATION}",
                "04_throughput", "05_width_explorer", "05_width_study", "06_reliability", "06_corruptions"]
    for name in expected:
        path = figures / f"{name}.png"
        assert path.exists(), name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000, name
    summary = (quick["results"] / "summary.md").read_text()
    assert RUN_NAME in summary
    for schedule in QUICK["notebooks"]["03"]["schedules"]:
        assert f"| {schedule} |" in summary
    assert "No benchmarks yet." in summary


def test_explorer_notebook_shows_the_parameter_choice(quick):
    text = _text(quick["executed"] / "05_width_explorer.ipynb")
    assert "WRN-28-3.5" in text and "4,480,474" in text and "**within** the budget" in text
    runs = len(HEADLINES) + 4 + len(SWEPT_WIDTHS) + len(TIMED)
    assert f"{runs} finished run(s)" in text  # the quick study's runs, read back


def test_trust_notebook_assesses_the_kept_model(quick):
    """06 scores the quick run's kept weights: calibration and every corruption, written beside the results."""
    report = json.loads((quick["results"] / collect.TRUST / RUN_NAME / "trust.json").read_text())
    assert report["settings"]["corruption_images"] == QUICK["notebooks"]["06"]["corruption_images"]
    assert 0 <= report["calibration"]["ece_plain"] <= 1 and report["calibration"]["temperature"] > 0
    text = _text(quick["executed"] / "06_calibration_robustness.ipynb")
    assert f"{len(HEADLINES)} run(s) with kept weights: {', '.join(HEADLINES)}" in text
    assert "mean_corruption_acc" in text
    assert (quick["results"] / "figures" / "06_reliability.png").exists()


def test_explorer_notebook_trains_the_width_sweep(quick):
    """05 with sweep_widths trains one run per width into <results>/width_sweep/runs, tabulated and collected."""
    sweep_runs = quick["results"] / collect.WIDTH_SWEEP / "runs"
    depth = QUICK["notebooks"]["05"]["sweep_depth"]
    assert sorted(p.name for p in sweep_runs.iterdir()) == sorted(f"wrn{depth}-{k:g}-seed0" for k in SWEPT_WIDTHS)
    for width in SWEPT_WIDTHS:
        config = json.loads((sweep_runs / f"wrn{depth}-{width:g}-seed0" / "config.json").read_text())
        assert (config["depth"], config["width"]) == (depth, width)
        assert config["epochs"] == QUICK["notebooks"]["05"]["sweep_config"]["epochs"]  # one budget for all
    text = _text(quick["executed"] / "05_width_explorer.ipynb")
    assert f"WRN-{depth}-k for k in {SWEPT_WIDTHS}" in text and "2 runs: 2 trained, 0 read back, 0 failed" in text
    found = collect.collect(quick["results"])
    assert list(tables.width_table(found.runs)["model"]) == [f"WRN-{depth}-{k:g}" for k in SWEPT_WIDTHS]


def test_explorer_notebook_trains_the_time_sweep_and_draws_both_sweeps(quick):
    """05 with time_sweep_depths gives every WRN-d-k the same training time: each run's epochs were chosen from its
    own step timed here (config.json and env.json say so), and the figure and its reading follow."""
    runs, minutes = quick["results"] / collect.TIME_SWEEP / "runs", QUICK["notebooks"]["05"]["time_sweep_minutes"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"wrn{d}-{k:g}-seed0" for d, k in TIMED)
    for d, k in TIMED:
        config = json.loads((runs / f"wrn{d}-{k:g}-seed0" / "config.json").read_text())
        budget = json.loads((runs / f"wrn{d}-{k:g}-seed0" / "env.json").read_text())["budget"]
        assert config["budget_minutes"] == budget["minutes"] == minutes and config["epochs"] == budget["epochs"] >= 1
    text = _text(quick["executed"] / "05_width_explorer.ipynb")
    assert f"{minutes:g} min of training each" in text and "At equal training time: **WRN-" in text
    assert (quick["results"] / "figures" / "05_width_study.png").exists()


def test_results_collects_the_study(quick):
    found = collect.collect(quick["results"])
    assert found.problems == []
    assert sorted(found.main_runs["name"]) == HEADLINES and set(found.main_runs["status"]) == {"finished"}
    ablation_runs = len(QUICK["notebooks"]["03"]["schedules"]) * len(QUICK["notebooks"]["03"]["seeds"])
    assert len(found.finished_runs) == len(HEADLINES) + ablation_runs + len(SWEPT_WIDTHS) + len(TIMED)
    assert set(found.metrics["name"]) == set(found.runs["name"])
    assert found.benchmarks.empty


def test_reexecuting_reuses_the_finished_runs(quick, tmp_path):
    metrics = quick["results"] / "runs" / RUN_NAME / "metrics.csv"
    ablation_runs = quick["results"] / "ablations" / ABLATION / "runs"
    final = quick["results"] / "ablations" / ABLATION / "final.csv"
    before = metrics.read_bytes(), metrics.stat().st_mtime_ns, final.read_bytes()
    for state in ablation_runs.glob("*/state.pt"):
        state.unlink()  # as after a fresh clone: checkpoints are not committed, and 03 needs no weights
    log = io.StringIO()
    rc = study.run_study("quick", only=["02", "03"], output_root=tmp_path, results_root=quick["results"],
                         progress_bar=False, stream=log)
    assert rc == 0, log.getvalue()
    assert (metrics.read_bytes(), metrics.stat().st_mtime_ns, final.read_bytes()) == before
    assert "already finished: reading it back" in _text(tmp_path / "quick" / "02_train.ipynb")
    assert _text(tmp_path / "quick" / "03_lr_schedule_ablation.ipynb").count("already finished") == len(
        list(ablation_runs.iterdir()))


def test_a_run_folder_with_other_settings_is_not_reused(quick):
    config = runfolder.load_config(quick["results"] / "runs" / RUN_NAME)
    config.lr *= 2
    with pytest.raises(ValueError, match=r"exists with other settings \(lr: saved"):
        fit(config, existing="reuse")


def test_results_notebook_copes_with_empty_and_partial_folders(quick, tmp_path, capsys):
    # empty: nothing at all under the results folder
    empty = tmp_path / "empty"
    rc = study.run_study("quick", only=["04"], output_root=tmp_path / "exec_empty", results_root=empty,
                         progress_bar=False, stream=io.StringIO())
    assert rc == 0
    text = _text(tmp_path / "exec_empty" / "quick" / "04_results.ipynb")
    for line in ("no runs yet", "no finished runs yet", "no ablations yet", "no benchmarks yet"):
        assert line in text
    assert "No runs yet." in (empty / "summary.md").read_text()

    # partial: the quick study's folder with an interrupted run, an unfinished ablation, an empty run
    # folder, a broken benchmark, and one real benchmark measured here
    partial = tmp_path / "partial"
    shutil.copytree(quick["results"], partial)
    (partial / "runs" / RUN_NAME / "summary.json").unlink()
    (partial / "ablations" / ABLATION / "final.csv").unlink()
    (partial / "runs" / "empty-run").mkdir()
    (partial / "benchmarks" / "broken").mkdir(parents=True)
    (partial / "benchmarks" / "broken" / "bench.json").write_text("{not json")
    assert cli.main(["bench", "--depth", "10", "--width", "1", "--batch-size", "32", "--steps", "2", "--warmup", "1",
                     "--modes", "fp32", "--device", "cpu", "--out", str(partial / "benchmarks" / "cpu")]) == 0
    capsys.readouterr()

    found = collect.collect(partial)
    run = found.runs.set_index("name").loc[RUN_NAME]
    assert run["status"] == "partial" and run["epochs_done"] == QUICK["notebooks"]["02"]["epochs"]
    assert found.ablation_final.empty and not found.ablation_epochs.empty
    assert len(found.benchmarks) == 1 and found.benchmarks.iloc[0]["mode"] == "fp32"
    assert found.benchmarks.iloc[0]["train_images_per_s"] > 0
    problems = "\n".join(found.problems)
    assert "empty-run" in problems and "broken" in problems and "final.csv" in problems

    rc = study.run_study("quick", only=["04"], output_root=tmp_path / "exec_partial", results_root=partial,
                         progress_bar=False, stream=io.StringIO())
    assert rc == 0
    summary = (partial / "summary.md").read_text()
    assert "| partial |" in summary and "No ablations yet." in summary and "| fp32 |" in summary
    assert (partial / "figures" / "04_throughput.png").exists()


# --------------------------------------------------------------------------- plain papermill, each notebook's defaults


def test_the_paper_profile_at_quick_sizes_sets_its_run_beside_the_reported_curve(tmp_path):
    """The paper profile's GPU command, dry-run on the CPU: notebook 02 alone, its run and the reported points."""
    small = {"data_dir": "sample", "device": "cpu", "depth": 10, "width": 1.0, "epochs": 2, "batch_size": 64,
             "train_limit": 1000, "test_limit": 500, "reference_points": [[1, 10, 20], [2, 15], [500, 95]]}
    log = io.StringIO()
    rc = study.run_study("paper", output_root=tmp_path / "executed", results_root=tmp_path / "results",
                         overrides={"02": small}, progress_bar=False, stream=log)
    assert rc == 0, log.getvalue()
    executed = tmp_path / "executed" / "paper"
    assert sorted(p.name for p in executed.glob("*.ipynb")) == ["02_train.ipynb"]
    run = tmp_path / "results" / "runs" / "wrn28-3.5-paper"
    with open(run / runfolder.METRICS) as f:
        reached = [tables.pct(float(row["test_acc"])) for row in csv.DictReader(f)]
    table = next(o.data["text/plain"] for o in _outputs(executed / "02_train.ipynb")
                 if "this run" in o.get("data", {}).get("text/plain", ""))
    rows = [line.split()[1:] for line in table.splitlines()[1:]]
    assert table.splitlines()[0].split() == ["epoch", "the", "published", "study", "this", "run"]
    assert rows == [["1", "10.00%–20.00%", reached[0]], ["2", "15.00%", reached[1]], ["500", "95.00%", "–"]]


# 02 trains WRN-28-3.5 for 30 epochs on the sample on a CPU with native bf16 (about 3 min on two cores);
# the others take under a minute; a hang (nbclient#312) would never end
PLAIN_TIMEOUT_S = 600


def _plain_papermill(notebook: Path, out: Path, cwd: Path, env: dict) -> tuple[int | None, str, float]:
    """``papermill NOTEBOOK OUT`` as a batch user types it: (exit code or None on timeout, its log, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "papermill", str(notebook), str(out)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=PLAIN_TIMEOUT_S)
        return proc.returncode, log, time.monotonic() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # papermill and its kernel
        log, _ = proc.communicate()
        return None, log, time.monotonic() - t0


@pytest.mark.parametrize("name", EXPECTED)
def test_each_notebook_runs_under_plain_papermill_with_its_defaults(name, tmp_path):
    """No profile, no parameters, no CIFAR10_DIR, an empty cache: what a person with a fresh clone gets.
    The notebook either finishes, or (training far too long for this machine) fails at once saying why."""
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR10_DIR", "MPLBACKEND")}
    paths = [str(profiles.REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), XDG_CACHE_HOME=str(tmp_path / "cache"),
               MPLCONFIGDIR=str(Path.home() / ".cache" / "matplotlib"))  # keep matplotlib's font cache
    out = tmp_path / name
    rc, log, seconds = _plain_papermill(profiles.NOTEBOOKS_DIR / name, out, tmp_path, env)
    assert rc is not None, f"papermill {name} hung for {PLAIN_TIMEOUT_S} s:\n{log[-3000:]}"
    on_cpu = not torch.cuda.is_available()
    # On a CPU, 03 (ten runs of WRN-28-3.5 for 15 epochs) is far over its 10-minute limit even on the sample;
    # 02 (one run of 30 epochs on the sample's 1,000 training images) fits where the CPU computes bf16 (and
    # must then train), and is near the limit in fp32 (either outcome, if it is the right one).
    bf16_cpu = on_cpu and choose_precision("auto", torch.device("cpu"))[0]
    if on_cpu and (name.startswith("03") or (name.startswith("02") and not bf16_cpu and rc != 0)):
        assert rc != 0 and "TrainingTimeError" in log and "would take about" in log, log[-3000:]
        assert not any((tmp_path / "results").rglob("config.json")), "it started training anyway"
        return
    assert rc == 0, f"papermill {name} failed after {seconds:.0f} s:\n{log[-3000:]}"
    text, outputs = _text(out), _outputs(out)
    assert not [o for o in outputs if o.output_type == "error"]
    if name.startswith(("01", "02", "03")):
        assert "not the benchmark" in text  # the sample, and the reader is told so
    if name.startswith("02"):  # while it trains: a line per epoch and one figure of the curves, redrawn in place
        training = next(c for c in nbformat.read(str(out), as_version=4).cells if "live_curves" in c.source)
        assert [o.output_type for o in training.outputs if "image/png" in o.get("data", {})] == ["display_data"]
        assert sum(o.get("text", "").count("epoch ") for o in training.outputs) == 30
    if name.startswith("06"):
        assert "run(s) with kept weights" in text and "corruptions: 9 kinds x 5 severities" in text
    if name.startswith("05"):
        assert "WRN-28-3.5" in text and "4,480,474" in text and "No sliders" in text
        assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
