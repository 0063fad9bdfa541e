"""Run the study: execute notebooks/NN_*.ipynb in order with papermill, parameters from a profile.

    python -m wrnlib study --profile quick            # CPU smoke study, a few minutes
    python -m wrnlib study --profile full --only 02 03

What a profile holds and how its parameters reach a notebook: :mod:`wrnlib.study.profiles`. Executed
copies go to ``<output_root>/<profile>/`` (relative to the caller's working directory).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .profiles import (NOTEBOOKS_DIR, PROFILES_DIR, REPO_ROOT, StudyError, declared_parameters, find_notebooks,
                       in_repo, load_profile, notebook_parameters)

KERNEL_NAME = "python3"  # jupyter_client starts it with sys.executable: the venv's python, activated or not
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]  # keep the kernel's start-up chatter out of the study log
# A cell running longer than this fails the study instead of hanging it (a profile's "cell_timeout_s"
# overrides it; the full profile's training cells need far longer than the quick one's).
DEFAULT_CELL_TIMEOUT_S = 3600


def _first_line(source: str) -> str:
    lines = [ln for ln in (source or "").splitlines() if ln.strip()]
    return (lines[0][:100] + (" ..." if len(lines) > 1 else "")) if lines else "(empty cell)"


def _failed_cell(output: Path, exc: Exception) -> str:
    """'cell N (In [k]): first line' of the failing cell, counted among the SOURCE notebook's cells."""
    exec_count = getattr(exc, "exec_count", None)
    source = getattr(exc, "source", "") or ""
    number = None
    try:
        import nbformat

        nb = nbformat.read(str(output), as_version=4)
        cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])
                 and "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
        for i, cell in enumerate(cells):
            if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                number, source = i + 1, source or cell.source
                break
    except Exception:  # the executed copy may be missing when the kernel never started
        pass
    where = f"cell {number}" if number is not None else "a cell"
    if exec_count is not None:
        where += f" (In [{exec_count}])"
    where += f": {_first_line(source)}"
    line = _failing_line(getattr(exc, "traceback", None) or [])
    return where + (f"\n  failing line: {line}" if line else "")


def _failing_line(traceback: list[str]) -> str | None:
    """The source line IPython marks with '---->' in the cell's own frame (the first frame), if any."""
    import re

    for frame in traceback:
        for raw in re.sub(r"\x1b\[[0-9;]*m", "", frame).splitlines():
            match = re.match(r"\s*-+>\s*\d+\s(.*)", raw)
            if match:
                return match.group(1).strip()
    return None


def run_study(profile: str, only: list[str] | None = None, output_root: str | Path = "results/executed", *,
              results_root: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
              notebooks_dir: str | Path | None = None, profiles_dir: str | Path | None = None,
              cwd: str | Path | None = None, kernel_name: str = KERNEL_NAME, progress_bar: bool = True,
              log_output: bool = False, stream: TextIO | None = None) -> int:
    """Execute the profile's notebooks in order; 0 when all succeed, 1 at the first failure (which stops the batch).

    ``only``: notebook prefixes ("02", "3" and "03_lr_schedule_ablation" all work). ``results_root``
    replaces the profile's (tests point it into a temporary folder); ``overrides`` changes parameters
    ({"02": {"epochs": 1}, "*": {...}}); ``notebooks_dir``/``profiles_dir``/``cwd`` replace the repo's
    folders; ``log_output`` streams the cells' output (training lines) while they run. Unknown
    profiles, prefixes or parameters raise :class:`StudyError` before anything runs. A failing
    notebook leaves the last good executed copy in place and writes ``<name>.failed.ipynb`` beside it.
    After a successful study the executed notebooks are also rendered as HTML, with an ``index.html``.
    """
    from ..files import folder_lock

    out = stream or sys.stdout
    spec = load_profile(profile, profiles_dir or PROFILES_DIR)
    plan = plan_study(spec, profile, only, results_root, overrides, notebooks_dir)
    out_dir = Path(output_root) / profile
    root = Path(cwd or REPO_ROOT) / (results_root if results_root is not None else spec.get("results_root", "results"))
    # One study at a time per results root and per executed folder: a second one is refused at once
    # instead of resuming runs the first is still training (each run folder is locked by fit too).
    with folder_lock(root, doing="running a study into it"), \
            folder_lock(out_dir, doing=f"running the {profile!r} study into it"):
        out_dir.mkdir(parents=True, exist_ok=True)
        return _run_plan(plan, profile, spec, out_dir, results_root, cwd, kernel_name, progress_bar, log_output,
                         stream, out, root)


def _run_plan(plan, profile: str, spec: dict[str, Any], out_dir: Path, results_root, cwd, kernel_name: str,
              progress_bar: bool, log_output: bool, stream: TextIO | None, out: TextIO, root: Path) -> int:
    results_shown = results_root if results_root is not None else spec.get("results_root", "results")
    print(f"study {profile!r}: {len(plan)} notebook(s) -> {out_dir}; results under {results_shown}", file=out,
          flush=True)
    started = time.perf_counter()
    options = dict(kernel_name=kernel_name, cwd=str(Path(cwd or REPO_ROOT).resolve()), progress_bar=progress_bar,
                   execution_timeout=spec.get("cell_timeout_s", DEFAULT_CELL_TIMEOUT_S))
    if log_output:  # what the cells print (the training lines), as it comes, instead of a cell counter
        options.update(progress_bar=False, stdout_file=_Indented(out))
    with _kernel_env():
        for i, (path, params) in enumerate(plan, 1):
            print(f"[{i}/{len(plan)}] {path.name}", file=out, flush=True)
            t0 = time.perf_counter()
            try:
                error = execute_notebook(path, out_dir / path.name, params, **options)
            except KeyboardInterrupt:  # Ctrl-C, or a time limit's SIGINT: the kernel and its training end with us
                print(f"\ninterrupted in {path.name}: each run it was training keeps its last checkpoint; the same "
                      f"command resumes them and reads finished runs back", file=stream or sys.stderr, flush=True)
                raise
            if error:
                print(error, file=stream or sys.stderr, flush=True)
                return 1
            print(f"      done in {time.perf_counter() - t0:.1f}s -> {out_dir / path.name}", file=out, flush=True)
    print(f"study {profile!r} finished: {len(plan)} notebook(s) in {time.perf_counter() - started:.1f}s",
          file=out, flush=True)
    return _write_html(out_dir, profile, out, stream or sys.stderr, root)


def _write_html(out_dir: Path, profile: str, out: TextIO, err: TextIO,
                results_root: Path | None = None) -> int:
    """Render the executed notebooks as HTML with an index page (the study's findings from
    ``results_root``), and say where to open it."""
    from .render import render_html

    try:
        index = render_html(out_dir, profile, results_root=results_root)
    except Exception as exc:  # the notebooks ran; only their web pages are missing
        print(f"FAILED: the study ran, but rendering it as HTML did not: {type(exc).__name__}: {exc}", file=err,
              flush=True)
        return 1
    print(f"open the executed study in a browser: {index.resolve().as_uri()}", file=out, flush=True)
    return 0


def plan_study(spec: dict[str, Any], profile: str, only: list[str] | None, results_root: str | Path | None,
               overrides: dict[str, dict[str, Any]] | None,
               notebooks_dir: str | Path | None) -> list[tuple[Path, dict[str, Any]]]:
    """(notebook, parameters) in order, for the notebooks the profile names; every parameter must be declared by
    its notebook."""
    found = find_notebooks(notebooks_dir or NOTEBOOKS_DIR)
    if not found:
        raise StudyError(f"no notebooks named NN_*.ipynb in {notebooks_dir or NOTEBOOKS_DIR}")
    notebooks = {prefix: path for prefix, path in found.items() if prefix in spec["notebooks"]}
    if not notebooks:
        raise StudyError(f"profile {profile!r} names none of the notebooks ({', '.join(found)}) under 'notebooks'")
    plan = []
    for prefix in _select(notebooks, only, profile):
        declared = declared_parameters(notebooks[prefix])
        params = notebook_parameters(spec, prefix, declared, results_root=results_root, overrides=overrides)
        unknown = sorted(set(params) - declared)
        if unknown:
            raise StudyError(f"profile {profile!r} gives {notebooks[prefix].name} parameter(s) {unknown} that its "
                             f"'parameters' cell does not declare (declared: {sorted(declared)})")
        plan.append((notebooks[prefix], params))
    return plan


def execute_notebook(path: Path, output: Path, params: dict[str, Any], **options: Any) -> str | None:
    """Run one notebook with papermill into ``output``; None on success, else the failure message.

    The execution writes to ``<name>.running.ipynb`` and replaces ``output`` only when it succeeded,
    so a failure never overwrites the last good executed copy; the failed one is kept beside it.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    running = output.with_name(output.stem + ".running.ipynb")
    failed = output.with_name(output.stem + ".failed.ipynb")
    try:
        pm.execute_notebook(str(path), str(running), parameters=params, request_save_on_cell_execute=True,
                            extra_arguments=KERNEL_ARGS, **options)
    except PapermillExecutionError as exc:
        _keep_failed(running, failed)
        return (f"FAILED: notebook {path.name}, {_failed_cell(failed, exc)}\n  {exc.ename}: {exc.evalue}\n"
                f"  the executed copy with the full traceback: {failed}")
    except KeyboardInterrupt:
        _keep_failed(running, failed)
        raise
    except Exception as exc:  # kernel start failure, dead kernel, cell timeout, missing module
        _keep_failed(running, failed)
        return (f"FAILED: notebook {path.name} did not finish: {type(exc).__name__}: {exc}\n"
                f"  executed copy (if any): {failed}")
    _without_the_clock(running, output)
    os.replace(running, output)
    failed.unlink(missing_ok=True)
    return None


def _without_the_clock(path: Path, output: Path) -> None:
    """Take out of an executed notebook what changes from one execution to the next though the numbers do not:
    the times of each cell, the id papermill draws for its parameters cell, the machine's paths. A re-run that
    computes the same numbers then leaves the committed copy as it was."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
    run = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration"):
        run.pop(key, None)
    run["input_path"], run["output_path"] = in_repo(run.get("input_path", "")), in_repo(output)
    nbformat.write(nb, str(path))


def _keep_failed(running: Path, failed: Path) -> None:
    if running.exists():
        os.replace(running, failed)


class _Indented:
    """A text stream that indents what is written to it, so the cells' lines stand out in the study's log."""

    def __init__(self, stream: TextIO, prefix: str = "      | "):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> None:
        for piece in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self.at_line_start else "") + piece)
            self.at_line_start = piece.endswith("\n")

    def flush(self) -> None:
        self.stream.flush()


def _select(notebooks: dict[str, Path], only: list[str] | None, profile: str) -> list[str]:
    if not only:
        return list(notebooks)
    selected = []
    for item in only:
        key = str(item).split("_", 1)[0]
        match = next((p for p in notebooks if key.isdigit() and int(p) == int(key)), None)
        if match is None:
            raise StudyError(f"no notebook with prefix {item!r} in profile {profile!r}; it runs: "
                             f"{', '.join(p + ' (' + notebooks[p].name + ')' for p in notebooks)}")
        if match not in selected:
            selected.append(match)
    return sorted(selected, key=lambda p: list(notebooks).index(p))


class _kernel_env:
    """Let the kernels import this wrnlib (also when it is not installed) and draw inline."""

    def __init__(self):
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        paths = [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        updates = {"PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        for key, value in updates.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return False
