"""The study runner: profiles, notebook selection, parameters, and the failure paths with real kernels."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import cell_parameters
from wrnlib import cli
from wrnlib.study import profiles
from wrnlib.study import runner as study

# --------------------------------------------------------------------------- profiles and selection


def test_known_profiles():
    assert {"quick", "full"} <= set(profiles.known_profiles())


def test_unknown_profile_is_a_clear_error(tmp_path):
    with pytest.raises(profiles.StudyError,
                       match=r"unknown study profile 'nope'; known profiles: cpu, full, paper, quick"):
        study.run_study("nope", output_root=tmp_path)
    assert not (tmp_path / "nope").exists()


def test_unknown_profile_from_the_command_line(capsys, tmp_path):
    assert cli.main(["study", "--profile", "nope", "--output-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown study profile 'nope'" in err and "cpu, full, paper, quick" in err


def test_unknown_notebook_prefix_lists_the_notebooks(tmp_path):
    with pytest.raises(profiles.StudyError, match=r"no notebook with prefix '07'.*02 \(02_train.ipynb\)"):
        study.run_study("quick", only=["07"], output_root=tmp_path)


def test_select_accepts_prefix_spellings():
    notebooks = profiles.find_notebooks()
    assert study._select(notebooks, ["3", "02_train", "02"], "quick") == ["02", "03"]
    assert study._select(notebooks, None, "quick") == list(notebooks)


def test_profile_paths_and_data_dir(monkeypatch, tmp_path):
    quick, full = profiles.load_profile("quick"), profiles.load_profile("full")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    params = profiles.notebook_parameters(quick, "02", profiles.declared_parameters(profiles.find_notebooks()["02"]))
    assert params["data_dir"] == "sample" and params["device"] == "cpu"
    assert params["out_dir"] == "results/quick/runs" and params["figures_dir"] == "results/quick/figures"
    assert profiles.notebook_parameters(full, "02")["data_dir"] is None  # the loader's own default
    assert profiles.notebook_parameters(full, "02")["out_dir"] == "results/runs"
    assert profiles.notebook_parameters(full, "03")["ablation_dir"] == "results/ablations"
    assert profiles.notebook_parameters(full, "04")["summary_path"] == "results/summary.md"
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    params = profiles.notebook_parameters(quick, "03", results_root=tmp_path / "r", overrides={"03": {"epochs": 1}})
    assert params["data_dir"] == str(tmp_path.resolve())
    assert params["ablation_dir"] == str(tmp_path / "r" / "ablations") and params["epochs"] == 1


def test_full_profile_is_the_real_study():
    full = profiles.load_profile("full")["notebooks"]
    assert (full["02"]["depth"], full["02"]["width"]) == (28, 3.5)  # the study's 4.48 M-parameter model
    assert full["02"]["train_limit"] == 0 and full["02"]["test_limit"] == 0
    assert full["03"]["schedules"] == ["constant", "step", "cosine", "sgdr", "onecycle"]
    assert len(full["03"]["seeds"]) >= 2
    assert profiles.load_profile("full")["common"]["device"] == "auto"


def test_the_paper_profile_is_the_published_recipe():
    """Notebook 02 alone, with the study's own recipe: 500 epochs on all 50,000 images, crop (4 px, zeros) + flip,
    plain momentum, L2 on every parameter, cosine from 0.1 per 128 images, nothing else; its reported points."""
    from wrnlib import BatchAugment
    from wrnlib.study import notebook, tables

    assert set(profiles.load_profile("paper")["notebooks"]) == {"02"}
    params = cell_parameters.namespace("paper", "02")
    c = notebook.train_config(params, cell_parameters.on_cifar10(params))
    assert (c.depth, c.width, c.dropout, c.epochs) == (28, 3.5, 0, 500)
    assert (c.val_size, c.train_limit, c.test_limit) == (0, 0, 0)  # all 50,000 training images, all 10,000 test
    assert c.lr / c.batch_size == 0.1 / 128 and c.schedule == "cosine" and c.min_lr_frac == 0
    assert (c.optimizer, c.momentum, c.nesterov, c.weight_decay, c.decay_bn_bias) == ("sgd", 0.9, False, 5e-4, True)
    assert (c.label_smoothing, c.ema_decay, c.cutout, c.policy, c.mix) == (0, 0, 0, "none", "none")
    assert BatchAugment.from_config(c).describe() == "crop(pad=4, constant) -> flip -> normalize"
    assert c.name == "wrn28-3.5-paper" and params["out_dir"] == "results/runs"
    curve = tables.reference_curve(params["reference_points"], params["reference_label"])
    assert curve.epochs == (10, 15, 25, 300, 397) and curve.high[-1] == 0.95


def test_undeclared_profile_parameter_is_refused(tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"notebooks": {"04": {"figure_dir": "x"}}}))
    with pytest.raises(profiles.StudyError, match=r"\['figure_dir'\].*does not declare"):
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


def test_a_profile_runs_the_notebooks_it_names(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("01_a", "02_b", "03_c"):
        _notebook(notebooks / f"{name}.ipynb", ("parameters", "n = 1"))
    spec = {"notebooks": {"03": {"n": 2}, "01": {}}}
    plan = study.plan_study(spec, "t", None, None, None, notebooks)
    assert [(path.name, params) for path, params in plan] == [("01_a.ipynb", {}), ("03_c.ipynb", {"n": 2})]
    with pytest.raises(profiles.StudyError, match=r"no notebook with prefix '02' in profile 't'; it runs: "
                                                  r"01 \(01_a.ipynb\), 03 \(03_c.ipynb\)$"):
        study.plan_study(spec, "t", ["02"], None, None, notebooks)
    with pytest.raises(profiles.StudyError, match=r"profile 't' names none of the notebooks \(01, 02, 03\)"):
        study.plan_study({"notebooks": {"07": {}}}, "t", None, None, None, notebooks)


def test_an_interrupted_study_keeps_what_ran_and_says_how_to_go_on(tmp_path, monkeypatch):
    """Ctrl-C (or a time limit's SIGINT) in a notebook: the partial executed copy is kept as .failed, the
    notebooks after it do not start, and the log says that the same command resumes the runs."""
    import papermill

    notebooks, profile_dir = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profile_dir.mkdir()
    for name in ("01_long", "02_next"):
        _notebook(notebooks / f"{name}.ipynb", ("parameters", "n = 1"))
    (profile_dir / "t.json").write_text(json.dumps({"notebooks": {"01": {}, "02": {}}}))
    started = []

    def interrupted(source, output, **kwargs):
        started.append(Path(source).name)
        Path(output).write_text("partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profile_dir,
                        progress_bar=False, stream=log)
    out = tmp_path / "out" / "t"
    assert started == ["01_long.ipynb"]
    assert (out / "01_long.failed.ipynb").read_text() == "partial"
    assert sorted(p.name for p in out.iterdir()) == ["01_long.failed.ipynb"]
    assert "interrupted in 01_long.ipynb" in log.getvalue() and "the same command resumes them" in log.getvalue()


def test_failing_notebook_stops_the_batch_with_a_clear_message(tmp_path):
    notebooks, profile_dir = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profile_dir.mkdir()
    marker = tmp_path / "third_ran"
    _notebook(notebooks / "01_fine.ipynb", ("parameters", "value = 1"), ("code", "import wrnlib\nprint(value + 1)"))
    _notebook(notebooks / "02_broken.ipynb", ("parameters", "value = 1"), ("code", "x = value * 2"),
              ("code", "# compute something\nraise RuntimeError(f'deliberate failure {x}')"))
    _notebook(notebooks / "03_after.ipynb", ("parameters", "marker = ''"),
              ("code", "open(marker, 'w').write('ran')"))
    (profile_dir / "t.json").write_text(json.dumps({"notebooks": {"01": {"value": 2}, "02": {"value": 21},
                                                               "03": {"marker": str(marker)}}}))
    log = io.StringIO()
    rc = study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profile_dir,
                         progress_bar=False, stream=log)
    message = log.getvalue()
    assert rc != 0
    assert "FAILED: notebook 02_broken.ipynb" in message
    assert "cell 4 (In [" in message and "# compute something" in message  # 4th cell of the source notebook
    assert "failing line: raise RuntimeError(f'deliberate failure {x}')" in message
    assert "RuntimeError: deliberate failure 42" in message
    assert (tmp_path / "out" / "t" / "01_fine.ipynb").exists()
    assert (tmp_path / "out" / "t" / "02_broken.failed.ipynb").exists()  # kept, with the traceback, beside
    assert not (tmp_path / "out" / "t" / "02_broken.ipynb").exists()  # the last good copy (none here)
    assert not marker.exists() and not (tmp_path / "out" / "t" / "03_after.ipynb").exists()


def test_a_cell_past_the_profile_timeout_fails_instead_of_hanging(tmp_path):
    notebooks, profile_dir = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profile_dir.mkdir()
    _notebook(notebooks / "01_stuck.ipynb", ("parameters", "seconds = 1"), ("code", "import time\ntime.sleep(seconds)"))
    (profile_dir / "t.json").write_text(json.dumps({"cell_timeout_s": 3, "notebooks": {"01": {"seconds": 120}}}))
    log = io.StringIO()
    started = time.perf_counter()
    rc = study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profile_dir,
                         progress_bar=False, stream=log)
    assert rc == 1 and time.perf_counter() - started < 90
    assert "FAILED: notebook 01_stuck.ipynb did not finish" in log.getvalue()
    assert "Timeout" in log.getvalue()


def test_study_command_line_runs_without_an_activated_venv(tmp_path):
    """`.venv/bin/python -m wrnlib study` with a PATH that has no venv: the kernel must still be this python."""
    import subprocess
    import sys

    notebooks, profile_dir = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profile_dir.mkdir()
    out_file = tmp_path / "kernel_python.txt"
    _notebook(notebooks / "01_which.ipynb", ("parameters", "out = ''"),
              ("code", "import sys, wrnlib, papermill\nopen(out, 'w').write(sys.executable)"))
    (profile_dir / "p.json").write_text(json.dumps({"notebooks": {"01": {"out": str(out_file)}}}))
    code = ("import sys; from wrnlib.study.runner import run_study; "
            f"sys.exit(run_study('p', output_root={str(tmp_path / 'out')!r}, notebooks_dir={str(notebooks)!r}, "
            f"profiles_dir={str(profile_dir)!r}, progress_bar=False))")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=profiles.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(out_file.read_text()).resolve() == Path(sys.executable).resolve()


def test_the_full_profile_reads_the_committed_headline_run_back():
    """Notebook 02 under the full profile names the committed run with its settings, so it is not retrained."""
    from wrnlib import runfolder
    from wrnlib.config import resume_conflicts
    from wrnlib.study import notebook

    params = cell_parameters.namespace("full", "02")
    config = notebook.train_config(params, cell_parameters.on_cifar10(params))
    committed = profiles.REPO_ROOT / "results" / "runs" / params["run_name"]
    assert runfolder.status(committed) == "finished"
    assert resume_conflicts(runfolder.load_config(committed), config) == []


def test_cell_output_is_streamed_while_the_study_runs(tmp_path):
    """With log_output (the CLI's default), a cell's printed lines reach the study's log as they happen."""
    notebooks, profile_dir = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profile_dir.mkdir()
    _notebook(notebooks / "01_talk.ipynb", ("parameters", "n = 1"),
              ("code", "for i in range(n):\n    print(f'epoch {i + 1} of {n}', flush=True)"))
    (profile_dir / "t.json").write_text(json.dumps({"notebooks": {"01": {"n": 3}}}))
    log = io.StringIO()
    rc = study.run_study("t", output_root=tmp_path / "out", notebooks_dir=notebooks, profiles_dir=profile_dir,
                         progress_bar=False, log_output=True, stream=log)
    assert rc == 0
    assert all(f"epoch {i} of 3" in log.getvalue() for i in (1, 2, 3))


def test_executing_a_notebook_again_writes_the_same_bytes(tmp_path):
    """A study read back on a clone must leave git status clean: an executed notebook keeps no times of its cells,
    no id papermill draws for the parameters cell and no folder of the machine that ran it."""
    source = tmp_path / "01_same.ipynb"
    _notebook(source, ("parameters", "value = 1"), ("code", "import time\ntime.sleep(0.01)\nprint(value * 2)"))
    out = tmp_path / "out" / "01_same.ipynb"
    out.parent.mkdir()
    first = []
    for _ in range(2):
        assert study.execute_notebook(source, out, {"value": 21}, kernel_name=study.KERNEL_NAME,
                                      progress_bar=False) is None
        first.append(out.read_bytes())
    assert first[0] == first[1]
    nb = nbformat.read(str(out), as_version=4)
    assert "42" in nb.cells[-1].outputs[0]["text"]  # it did run
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert [c.id for c in injected] == ["injected-parameters"]
    for cell in nb.cells:
        assert "execution" not in cell.metadata
        assert not {"start_time", "end_time", "duration"} & set(cell.metadata.get("papermill", {}))
    run = nb.metadata["papermill"]
    assert not {"start_time", "end_time", "duration"} & set(run)
    assert run["input_path"] == str(source) and run["output_path"] == str(out)  # outside the repository: as is


def test_the_ablation_figure_is_the_same_picture_every_time(tmp_path):
    import pandas as pd

    from wrnlib.study import plots

    final = pd.DataFrame({"schedule": ["cosine", "cosine", "step", "step"], "seed": [0, 1, 0, 1],
                          "test_acc": [0.88, 0.87, 0.85, 0.86]})
    pictures = [plots.save(plots.ablation_final(final), tmp_path, f"f{i}").read_bytes() for i in range(2)]
    assert pictures[0] == pictures[1]
