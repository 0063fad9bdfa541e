"""The executed study as web pages: one HTML rendering per executed notebook and an index page that says
what the study found (its headline numbers and figures) and links them.

:func:`render_html` runs after a successful study (``python -m wrnlib study``, ``make study``); the
pages sit beside the executed notebooks and open in any browser without Jupyter.
"""
from __future__ import annotations

import html
import os
import urllib.parse
from pathlib import Path
from typing import Any

from .profiles import REPO_ROOT, StudyError, in_repo, load_profile

INDEX = "index.html"
_SKIP = (".running.ipynb", ".failed.ipynb")  # an execution in progress, or a failed one kept for reading
QUICK = "quick"  # the smoke profile: its numbers must not be read as results
QUICK_NOTICE = ("These numbers only show that the pipeline runs: a tiny model trained for a few epochs on a small "
                "subset of CIFAR-10. They are not results; the full profile's study gives those.")
FIGURE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}td,th{padding:.3em 1em;text-align:left}"
          ".notice{border-left:4px solid #c60;background:#fff4e6;padding:.6em 1em;font-weight:bold}"
          "figure{display:inline-block;margin:0 1em 1.5em 0;vertical-align:top}"
          "figure img{max-width:36em;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}")


def executed_notebooks(folder: str | Path) -> list[Path]:
    """The finished executed notebooks in ``folder``, in order."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.endswith(_SKIP))


def title(path: Path) -> str:
    """The notebook's first markdown heading ("# 01 · The data ..."), else its file name."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def render_html(folder: str | Path, profile: str = "", results_root: str | Path | None = None) -> Path:
    """Write ``<name>.html`` for each executed notebook in ``folder`` (those newer than their page) and
    ``index.html``: what the study found (its finished runs and schedule ablation, read from
    ``results_root``), the notebooks, then the figures; return the index's path.

    ``results_root`` defaults to the one the executed notebooks were given (papermill records it), else
    the profile's; neither known (no profile): the index lists the notebooks only.
    """
    from nbconvert import HTMLExporter

    folder = Path(folder)
    notebooks = executed_notebooks(folder)
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {folder} to render")
    exporter = HTMLExporter(template_name="lab")
    rows = []
    for path in notebooks:
        page, name = path.with_suffix(".html"), title(path)
        if not page.exists() or page.stat().st_mtime < path.stat().st_mtime:
            body, _ = exporter.from_filename(str(path), resources={"metadata": {"name": name}})
            page.write_text(body, encoding="utf-8")
        rows.append(f"<tr><td><a href='{html.escape(page.name)}'>{html.escape(name)}</a></td>"
                    f"<td><a href='{html.escape(path.name)}'>{html.escape(path.name)}</a></td></tr>")
    spec = _profile(profile)
    root = Path(results_root) if results_root is not None else _recorded_root(notebooks, spec)
    heading = f"wrnlib study{': ' + html.escape(profile) if profile else ''}"
    body = [f"<h1>{heading}</h1>"]
    if profile == QUICK:
        body.append(f"<p class='notice'>{html.escape(QUICK_NOTICE)}</p>")
    if spec.get("description"):
        body.append(f"<p>{html.escape(spec['description'])}</p>")
    body += _findings(root, folder) if root is not None else []
    body += ["<h2>Notebooks</h2>", f"<p>The executed notebooks of {html.escape(str(folder))}.</p>",
             "<table><tr><th>notebook</th><th>executed copy</th></tr>" + "".join(rows) + "</table>"]
    body += _figures(root, folder) if root is not None else []
    index = folder / INDEX
    index.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{heading}</title><style>{_STYLE}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>\n", encoding="utf-8")
    return index


def _profile(name: str) -> dict[str, Any]:
    """The profile's JSON, or {} when there is none by that name (an ad-hoc rendering)."""
    if not name:
        return {}
    try:
        return load_profile(name)
    except StudyError:
        return {}


def _recorded_root(notebooks: list[Path], spec: dict[str, Any]) -> Path | None:
    """The results root the executed notebooks were given (papermill keeps their parameters), else the
    profile's. The notebooks ran in the repository root, so a relative one is relative to it."""
    import nbformat

    root = spec.get("results_root")
    for path in notebooks:
        params = nbformat.read(str(path), as_version=4).metadata.get("papermill", {}).get("parameters", {})
        if params.get("results_root"):
            root = params["results_root"]
            break
    return None if root is None else REPO_ROOT / root  # an absolute root stays as it is


def _findings(root: Path, folder: Path) -> list[str]:
    """The headline numbers under ``root``: its finished runs and the schedule ablation (if any)."""
    from . import tables
    from .collect import collect

    found = collect(root)
    summary = root / "summary.md"
    out = ["<h2>Findings</h2>", f"<p>Read from {html.escape(in_repo(root))}"
           + ("" if root.is_dir() else " (which does not exist yet)") + "."
           + (f" All its tables: <a href='{html.escape(_link(summary, folder))}'>{html.escape(in_repo(summary))}</a>."
              if summary.exists() else "") + "</p>", "<h3>Training runs</h3>"]
    header, rows = tables.finished_run_rows(found)
    out.append(_table(header, rows) if rows else "<p>No finished runs yet.</p>")
    schedules = tables.schedule_table(found.ablation_final)
    if not schedules.empty:
        out += ["<h3>Learning-rate schedule ablation</h3>", _table(*tables.schedule_rows(schedules))]
    return out


def _figures(root: Path, folder: Path) -> list[str]:
    """Every figure of ``<root>/figures``, linked by a path relative to the index: the page works wherever the
    repository (or a copy of the results and executed folders together) lies."""
    figures = sorted(p for p in (root / "figures").glob("*") if p.suffix.lower() in FIGURE_SUFFIXES)
    if not figures:
        return []
    out = ["<h2>Figures</h2>", f"<p>From {html.escape(in_repo(root / 'figures'))}.</p>"]
    for path in figures:
        caption = caption_of(path)
        out.append(f"<figure><img src='{html.escape(_link(path, folder))}' alt='{html.escape(caption)}'>"
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return out


def caption_of(figure: Path) -> str:
    """A figure's caption from its file name: "04_studies_side_by_side.png" -> "notebook 04: studies side by side"."""
    number, _, rest = figure.stem.partition("_")
    words = (rest if number.isdigit() else figure.stem).replace("_", " ")
    return f"notebook {number}: {words}" if number.isdigit() else words


def _link(path: Path, folder: Path) -> str:
    """``path`` relative to the index's folder: the page works wherever the repository (or a copy of the results
    and executed folders together) lies."""
    return urllib.parse.quote(Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix())


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of text cells, escaped."""
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + cells + "</table>"
