"""The executed study as web pages: one page per executed notebook, an index, and pages kept when up to date."""
from __future__ import annotations

import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from wrnlib.study import render


def _executed(path, heading, text):
    nb = new_notebook(cells=[new_markdown_cell(f"{heading}\n\nintro"),
                             new_code_cell("print(x)", outputs=[new_output("stream", name="stdout", text=text)])])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def test_pages_and_index(tmp_path):
    _executed(tmp_path / "01_a.ipynb", "# 01 · First", "output of the first\n")
    _executed(tmp_path / "02_b.ipynb", "no heading here", "second\n")
    _executed(tmp_path / "03_c.failed.ipynb", "# 03 · Failed", "a failed run\n")
    index = render.render_html(tmp_path, "quick")
    assert index == tmp_path / "index.html"
    page = index.read_text()
    assert "wrnlib study: quick" in page
    assert "<a href='01_a.html'>01 · First</a>" in page and "<a href='02_b.html'>02_b</a>" in page
    assert "03_c" not in page and not (tmp_path / "03_c.failed.html").exists()
    assert "output of the first" in (tmp_path / "01_a.html").read_text()


def test_up_to_date_pages_are_kept_and_stale_ones_rendered_again(tmp_path):
    _executed(tmp_path / "01_a.ipynb", "# 01", "old output\n")
    render.render_html(tmp_path)
    page = tmp_path / "01_a.html"
    page.write_text("kept")  # an up-to-date page is not rendered again
    render.render_html(tmp_path)
    assert page.read_text() == "kept"
    _executed(tmp_path / "01_a.ipynb", "# 01", "new output\n")
    stamp = page.stat().st_mtime + 5
    os.utime(tmp_path / "01_a.ipynb", (stamp, stamp))  # executed again after the page was written
    render.render_html(tmp_path)
    assert "new output" in page.read_text()


def test_nothing_to_render_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        render.render_html(tmp_path)
