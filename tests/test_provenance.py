"""What a run records about where it came from: the commit of the code that ran, read without ever locking or
writing the user's repository, and the machine and library versions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from wrnlib import device, provenance


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _repo(root: Path) -> tuple[Path, str]:
    """A repository laid out like a checkout of wrnlib: the package, its notebooks, a results folder, all
    committed; returns (the package folder, HEAD)."""
    package, notebooks, results = root / "wrnlib", root / "notebooks", root / "results"
    for folder in (package, notebooks, results):
        folder.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (notebooks / "01_n.ipynb").write_text(json.dumps(_notebook("print(1)")))
    (results / "summary.md").write_text("# results\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return package, head.stdout.strip()


def _notebook(source: str, outputs: list | None = None) -> dict:
    cell = {"cell_type": "code", "execution_count": 3 if outputs else None, "id": "c1", "metadata": {},
            "outputs": outputs or [], "source": [source]}
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_git_commit_marks_edited_and_new_files_as_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("WRNLIB_GIT_COMMIT", raising=False)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(package) == head
    (package / "a.py").write_text("x = 2\n")
    assert provenance.git_commit(package) == head + "-dirty"
    _git(tmp_path, "checkout", "-q", "--", ".")
    (package / "new.py").write_text("y = 1\n")
    assert provenance.git_commit(package) == head + "-dirty"
    monkeypatch.setenv("WRNLIB_GIT_COMMIT", "abc123")
    assert provenance.git_commit(package) == "abc123"


def test_a_clean_checkout_is_clean_whatever_its_file_names_hold(tmp_path, monkeypatch):
    monkeypatch.delenv("WRNLIB_GIT_COMMIT", raising=False)
    package = tmp_path / "wrnlib"
    package.mkdir()
    (package / "a\tb c.py").write_text("x = 1\n")  # a tab and a space: git's listing puts a tab before the name
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(package) == head


def test_git_commit_ignores_touched_and_ignored_files_and_says_unknown_without_a_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("WRNLIB_GIT_COMMIT", raising=False)
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / ".gitignore").write_text("*.pyc\n")
    _git(package.parent, "init", "-q")
    _git(package.parent, "add", ".")
    _git(package.parent, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True).stdout.strip()
    os.utime(package / "a.py", (2_000_000_000, 2_000_000_000))  # touched, not changed
    (package / "a.cpython-311.pyc").write_bytes(b"\0")  # ignored: not code that is part of the tree
    assert provenance.git_commit(package) == head
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert provenance.git_commit(outside) == "unknown"  # no repository around it
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert provenance.git_commit(package) == "unknown"  # no git on this machine


def test_dirty_means_the_code_that_runs_differs_not_a_result_or_a_notebooks_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("WRNLIB_GIT_COMMIT", raising=False)
    package, head = _repo(tmp_path)
    notebook = tmp_path / "notebooks" / "01_n.ipynb"
    (tmp_path / "results" / "summary.md").write_text("# regenerated\n")  # a result written again
    (tmp_path / "results" / "new.png").write_bytes(b"\x89PNG")
    notebook.write_text(json.dumps(_notebook("print(1)", [{"output_type": "stream", "name": "stdout",
                                                            "text": ["1\n"]}])))  # run and saved with its output
    assert provenance.git_commit(package) == head
    saved = _notebook("print(1)")
    saved["cells"][0]["source"] = "print(1)"  # the same code as one string, not a list of lines (nbformat allows both)
    notebook.write_text(json.dumps(saved))
    assert provenance.git_commit(package) == head
    notebook.write_text(json.dumps(_notebook("print(2)")))  # its code changed
    assert provenance.git_commit(package) == head + "-dirty"
    notebook.write_text(json.dumps(_notebook("print(1)")))
    (tmp_path / "notebooks" / "02_new.ipynb").write_text(json.dumps(_notebook("pass")))  # a new notebook
    assert provenance.git_commit(package) == head + "-dirty"
    (tmp_path / "notebooks" / "02_new.ipynb").unlink()
    (package / "a.py").unlink()  # a file of the package removed
    assert provenance.git_commit(package) == head + "-dirty"


def test_many_processes_ask_at_once_without_running_gits_filters_or_touching_its_index(tmp_path):
    """What `make study` does: the runner and several notebook kernels record the commit at once, over a tree whose
    notebooks were touched (their stat data no longer matches the index) and are cleaned by a filter. Each gets the
    right answer, git's clean filter never runs (it would rewrite the notebooks in a user's checkout: nbstripout),
    and the repository's index is neither written nor left locked."""
    package, head = _repo(tmp_path)
    ran = tmp_path / "filter-ran"
    (tmp_path / ".gitattributes").write_text("*.ipynb filter=marking\n")
    _git(tmp_path, "add", ".gitattributes")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "attributes")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    _git(tmp_path, "config", "filter.marking.clean", f"touch {ran}; cat")
    _git(tmp_path, "config", "filter.marking.required", "true")
    notebook = tmp_path / "notebooks" / "01_n.ipynb"
    os.utime(notebook, (2_000_000_000, 2_000_000_000))  # touched, not changed
    index = tmp_path / ".git" / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    ask = ("import sys; from pathlib import Path; from wrnlib.provenance import git_commit; "
           "print(git_commit(Path(sys.argv[1])))")
    env = {k: v for k, v in os.environ.items() if k != "WRNLIB_GIT_COMMIT"}
    askers = [subprocess.Popen([sys.executable, "-c", ask, str(package)], stdout=subprocess.PIPE, text=True, env=env)
              for _ in range(6)]
    answers = [p.communicate(timeout=120)[0].strip() for p in askers]
    assert answers == [head] * 6
    assert not ran.exists()  # no filter ran: nothing compared the worktree through git
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before  # the index was never rewritten
    assert not (tmp_path / ".git" / "index.lock").exists()


def test_the_environment_records_the_machine_and_library_versions_a_run_ran_with():
    import platform
    import sys

    import numpy

    env = provenance.environment(torch.device("cpu"), "sum", "sample")
    assert env["python"] == platform.python_version() == sys.version.split()[0]
    assert (env["torch"], env["numpy"], env["platform"]) == (torch.__version__, numpy.__version__, platform.platform())
    assert env["cuda"] is None and env["cudnn"] is None  # a CPU run: no CUDA or cuDNN version, even in a CUDA build
    cpu = env["cpu"]
    assert set(cpu) == {"model", "isa", "amx_bf16", "avx512_bf16", "threads", "interop_threads"}
    assert (cpu["model"], cpu["isa"]) == (device.cpu_model(), torch.backends.cpu.get_cpu_capability())
    assert (cpu["threads"], cpu["interop_threads"]) == (torch.get_num_threads(), torch.get_num_interop_threads())
    assert (env["data_checksum"], env["data_source"]) == ("sum", "sample")


