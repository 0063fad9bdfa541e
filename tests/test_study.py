"""The study runner (profiles, selection, failure path), the width explorer's logic and results.py on empty folders."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook  # noqa: E402

from wrnlib import cli, explorer, model_stats, results, study  # noqa: E402

# --------------------------------------------------------------------------- profiles and selection


def test_known_profiles():
    assert {"quick", "full"} <= set(study.known_profiles())


def test_unknown_profile_is_a_clear_error(tmp_path):
    with pytest.raises(study.StudyError, match=r"unknown study profile 'nope'; known profiles: full, quick"):
        study.run_study("nope", output_root=tmp_path)
    assert not (tmp_path / "nope").exists()


def test_unknown_profile_from_the_command_line(capsys, tmp_path):
    assert cli.main(["study", "--profile", "nope", "--output-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown study profile 'nope'" in err and "full, quick" in err


def test_unknown_notebook_prefix_lists_the_notebooks(tmp_path):
    with pytest.raises(study.StudyError, match=r"no notebook with prefix '07'.*02 \(02_train.ipynb\)"):
        study.run_study("quick", only=["07"], output_root=tmp_path)


def test_select_accepts_prefix_spellings():
    notebooks = study.find_notebooks()
    assert study._select(notebooks, ["3", "02_train", "02"]) == ["02", "03"]
    assert study._select(notebooks, None) == list(notebooks)


def test_profile_paths_and_data_dir(monkeypatch, tmp_path):
    quick, full = study.load_profile("quick"), study.load_profile("full")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    params = study.notebook_parameters(quick, "02", study.declared_parameters(study.find_notebooks()["02"]))
    assert params["data_dir"] == "sample" and params["device"] == "cpu"
    assert params["out_dir"] == "results/quick/runs" and params["figures_dir"] == "results/quick/figures"
    assert study.notebook_parameters(full, "02")["data_dir"] is None  # the loader's own default
    assert study.notebook_parameters(full, "02")["out_dir"] == "results/runs"
    assert study.notebook_parameters(full, "03")["ablation_dir"] == "results/ablations"
    assert study.notebook_parameters(full, "04")["summary_path"] == "results/summary.md"
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    params = study.notebook_parameters(quick, "03", results_root=tmp_path / "r", overrides={"03": {"epochs": 1}})
    assert params["data_dir"] == str(tmp_path.resolve())
    assert params["ablation_dir"] == str(tmp_path / "r" / "ablations") and params["epochs"] == 1


def test_full_profile_is_the_real_study():
    full = study.load_profile("full")["notebooks"]
    assert (full["02"]["depth"], full["02"]["width"]) == (28, 3.5)  # the study's 4.48 M-parameter model
    assert full["02"]["train_limit"] == 0 and full["02"]["test_limit"] == 0
    assert full["03"]["schedules"] == ["constant", "step", "cosine", "sgdr", "onecycle"]
    assert len(full["03"]["seeds"]) >= 2
    assert study.load_profile("full")["common"]["device"] == "auto"


def test_undeclared_profile_parameter_is_refused(tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"notebooks": {"04": {"figure_dir": "x"}}}))
    with pytest.raises(study.StudyError, match=r"\['figure_dir'\].*does not declare"):
        study.run_study("typo", only=["04"], output_root=tmp_path / "out", profiles_dir=tmp_path)


# --------------------------------------------------------------------------- failure path (real kernels)


def _notebook(path: Path, *cells) -> None:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_markdown_cell("# test notebook")]
    for kind, source in cells:
        cell = new_code_cell(source)
        if kind == "parameters":
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.write(nb, str(path))


def test_failing_notebook_stops_the_batch_with_a_clear_message(tmp_path):
    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profiles.mkdir()
    marker = tmp_path / "third_ran"
    _notebook(notebooks / "01_fine.ipynb", ("parameters", "value = 1"), ("code", "import wrnlib\nprint(value + 1)"))
    _notebook(notebooks / "02_broken.ipynb", ("parameters", "value = 1"), ("code", "x = value * 2"),
              ("code", "# compute something\nraise RuntimeError(f'deliberate failure {x}')"))
    _notebook(notebooks / "03_after.ipynb", ("parameters", "marker = ''"),
              ("code", "open(marker, 'w').write('ran')"))
    (profiles / "t.json").write_text(json.dumps({"notebooks": {"01": {"value": 2}, "02": {"value": 21},
                                                               "03": {"marker": str(marker)}}}))
    log = io.StringIO()
    rc = study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profiles,
                         progress_bar=False, stream=log)
    message = log.getvalue()
    assert rc != 0
    assert "FAILED: notebook 02_broken.ipynb" in message
    assert "cell 4 (In [" in message and "# compute something" in message  # 4th cell of the source notebook
    assert "failing line: raise RuntimeError(f'deliberate failure {x}')" in message
    assert "RuntimeError: deliberate failure 42" in message
    assert (tmp_path / "out" / "t" / "01_fine.ipynb").exists()
    assert (tmp_path / "out" / "t" / "02_broken.ipynb").exists()  # kept, with the traceback
    assert not marker.exists() and not (tmp_path / "out" / "t" / "03_after.ipynb").exists()


def test_a_cell_past_the_profile_timeout_fails_instead_of_hanging(tmp_path):
    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profiles.mkdir()
    _notebook(notebooks / "01_stuck.ipynb", ("parameters", "seconds = 1"), ("code", "import time\ntime.sleep(seconds)"))
    (profiles / "t.json").write_text(json.dumps({"cell_timeout_s": 3, "notebooks": {"01": {"seconds": 120}}}))
    log = io.StringIO()
    started = time.perf_counter()
    rc = study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profiles,
                         progress_bar=False, stream=log)
    assert rc == 1 and time.perf_counter() - started < 90
    assert "FAILED: notebook 01_stuck.ipynb did not finish" in log.getvalue()
    assert "Timeout" in log.getvalue()


def test_study_command_line_runs_without_an_activated_venv(tmp_path):
    """`.venv/bin/python -m wrnlib study` with a PATH that has no venv: the kernel must still be this python."""
    import subprocess
    import sys

    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profiles.mkdir()
    out_file = tmp_path / "kernel_python.txt"
    _notebook(notebooks / "01_which.ipynb", ("parameters", "out = ''"),
              ("code", "import sys, wrnlib, papermill\nopen(out, 'w').write(sys.executable)"))
    (profiles / "p.json").write_text(json.dumps({"notebooks": {"01": {"out": str(out_file)}}}))
    code = ("import sys; from wrnlib.study import run_study; "
            f"sys.exit(run_study('p', output_root={str(tmp_path / 'out')!r}, notebooks_dir={str(notebooks)!r}, "
            f"profiles_dir={str(profiles)!r}, progress_bar=False))")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=study.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(out_file.read_text()).resolve() == Path(sys.executable).resolve()


# --------------------------------------------------------------------------- explorer logic


CHOICES = [(10, 1.0), (16, 2.0), (22, 0.75), (28, 3.5), (28, 3.75), (40, 2.5), (10, 1.3)]


@pytest.mark.parametrize("depth,width", CHOICES)
def test_explorer_matches_model_stats(depth, width):
    stats = model_stats(depth, width)
    choice = explorer.describe(depth, width, batch_size=256)
    assert choice.params == stats.params == explorer.param_count(depth, width)
    assert choice.forward_flops == stats.forward_flops == explorer.forward_flops(depth, width)
    assert choice.train_flops == stats.train_flops
    assert choice.stage_widths == tuple(stats.stage_widths)
    assert choice.activation_bytes_batch == 256 * stats.activation_bytes
    text = explorer.markdown(choice)
    assert f"{stats.params:,}" in text and " / ".join(map(str, stats.stage_widths)) in text


def test_budget_classification():
    assert explorer.budget_status(5_000_000) == "within"
    assert explorer.budget_status(5_000_001) == "over"
    assert explorer.describe(28, 3.5).status == "within"  # 4.48 M, the study's model
    assert explorer.describe(28, 3.75).status == "over"  # 5.13 M
    assert explorer.describe(28, 3.75, budget=6_000_000).status == "within"
    choice = explorer.describe(28, 3.5)
    assert choice.budget_fraction == pytest.approx(4_480_474 / 5_000_000)
    for depth in (10, 16, 28, 40):
        k = explorer.max_width_within(depth)
        assert model_stats(depth, k).params <= 5_000_000 < model_stats(depth, k + 0.25).params
    assert explorer.max_width_within(28) == 3.5


def test_explorer_view_and_widgets_without_a_kernel(tmp_path):
    runs = results.collect(tmp_path / "none").runs  # no runs: the view still renders
    fig = explorer.figure(explorer.describe(16, 4.0), runs)
    assert len(fig.axes) == 3
    ui = explorer.Explorer(28, 3.5, 512, runs=runs, train_overrides=dict(
        epochs=1, data_dir="sample", device="cpu", out_dir=str(tmp_path / "explore"), val_size=200,
        train_limit=200, test_limit=100, batch_size=50, progress=False))
    assert ui.choice.params == 4_480_474
    ui.depth.value, ui.width.value, ui.batch.value = 10, 1.0, 64
    assert (ui.choice.name, ui.choice.params, ui.choice.batch_size) == ("WRN-10-1", model_stats(10, 1.0).params, 64)
    assert not (tmp_path / "explore").exists()  # slider moves never train
    ui._on_train(None)  # the button: a real (tiny) run of the chosen WRN
    summary = json.loads((tmp_path / "explore" / "explore-wrn10-1" / "summary.json").read_text())
    assert summary["params"] == model_stats(10, 1.0).params


# --------------------------------------------------------------------------- results on empty / broken folders


def test_results_on_a_missing_or_empty_folder(tmp_path):
    for root in (tmp_path / "missing", tmp_path):
        found = results.collect(root)
        assert found.runs.empty and found.metrics.empty and found.benchmarks.empty
        assert found.ablation_final.empty and found.ablation_epochs.empty
        assert list(found.runs.columns) == list(results.RUN_COLUMNS)
        assert found.finished_runs.empty and found.main_runs.empty
        assert "no runs yet" in found.describe() and "no benchmarks yet" in found.describe()
        text = results.summary_markdown(found)
        assert "No runs yet." in text and "No ablations yet." in text and "No benchmarks yet." in text
        assert results.schedule_table(found.ablation_final).empty
        assert explorer.run_points(found.runs).empty


def test_results_skip_broken_files(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "config.json").write_text("{oops")
    (tmp_path / "ablations" / "unfinished").mkdir(parents=True)
    (tmp_path / "benchmarks" / "nothing").mkdir(parents=True)
    found = results.collect(tmp_path)
    assert found.runs.empty and found.benchmarks.empty and found.ablation_final.empty
    problems = "\n".join(found.problems)
    for name in ("empty", "bad", "unfinished", "nothing"):
        assert name in problems
    assert "## Skipped" in results.summary_markdown(found)
