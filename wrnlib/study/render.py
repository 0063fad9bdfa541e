"""The executed study as web pages: one HTML rendering per executed notebook and an index page linking them.

:func:`render_html` runs after a successful study (``python -m wrnlib study``, ``make study``); the
pages sit beside the executed notebooks and open in any browser without Jupyter.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

INDEX = "index.html"
_SKIP = (".running.ipynb", ".failed.ipynb")  # an execution in progress, or a failed one kept for reading


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


def render_html(folder: str | Path, profile: str = "") -> Path:
    """Write ``<name>.html`` for each executed notebook in ``folder`` (those newer than their page) and
    ``index.html`` listing them all; return the index's path."""
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
        executed = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        rows.append(f"<tr><td><a href='{html.escape(page.name)}'>{html.escape(name)}</a></td>"
                    f"<td><a href='{html.escape(path.name)}'>{html.escape(path.name)}</a></td><td>{executed}</td></tr>")
    heading = f"wrnlib study{': ' + html.escape(profile) if profile else ''}"
    index = folder / INDEX
    index.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{heading}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}</style></head>"
        f"<body><h1>{heading}</h1><p>The executed notebooks of {html.escape(str(folder))}.</p>"
        "<table><tr><th>notebook</th><th>executed copy</th><th>executed</th></tr>" + "".join(rows)
        + "</table></body></html>\n", encoding="utf-8")
    return index
