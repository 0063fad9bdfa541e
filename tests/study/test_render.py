"""The executed study as web pages: one page per executed notebook, an index that says what the study found, and
pages kept when up to date."""
from __future__ import annotations

import html
import json
import os
import re
import urllib.parse

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from wrnlib import TrainConfig, fit
from wrnlib.study import profiles, render


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


# --------------------------------------------------------------------------- what the study found


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    """A results root with one real finished run (a WRN-10-1 on the shipped sample, seconds), a two-seed
    schedule ablation table and two figures, one with a name that needs escaping."""
    root = tmp_path_factory.mktemp("results")
    fit(TrainConfig(name="tiny", out_dir=str(root / "runs"), data_dir="sample", depth=10, width=1, epochs=2,
                    batch_size=64, lr=0.1, val_size=100, train_limit=256, test_limit=200, warmup_epochs=0.0,
                    progress=False))
    ablation = root / "ablations" / "lr"
    ablation.mkdir(parents=True)
    ablation.joinpath("final.csv").write_text("ablation,schedule,seed,run,epochs,test_acc\n"
                                              "lr,cosine,0,c0,2,0.5\nlr,cosine,1,c1,2,0.6\nlr,step,0,s0,2,0.4\n")
    (root / "figures").mkdir()
    for name in ("04_accuracy_vs_params.png", "a&b <c>.png"):
        (root / "figures" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "figures" / "notes.txt").write_text("not a figure")
    return root


def _index(folder, profile="", results_root=None, recorded=None):
    folder.mkdir(exist_ok=True)
    _executed(folder / "01_a.ipynb", "# 01 · First", "out\n")
    if recorded is not None:  # as papermill records the parameters it gave
        nb = nbformat.read(str(folder / "01_a.ipynb"), as_version=4)
        nb.metadata["papermill"] = {"parameters": {"results_root": str(recorded)}}
        nbformat.write(nb, str(folder / "01_a.ipynb"))
    return render.render_html(folder, profile, results_root=results_root).read_text()


def test_the_index_shows_the_finished_runs_the_ablation_and_the_figures(results_root):
    folder = results_root / "executed"  # as results/executed/<profile> beside results/figures
    page = _index(folder, "full", results_root)
    summary = json.loads((results_root / "runs" / "tiny" / "summary.json").read_text())
    acc, tta = f"{100 * summary['test_acc']:.2f}%", f"{100 * summary['test_acc_tta']:.2f}%"
    assert f"<tr><td>tiny</td><td>WRN-10-1</td><td>2/2</td><td>{acc}</td><td>{tta}</td>" in page
    assert "<td>lr</td><td>cosine</td><td>2</td><td>55.00% ± 7.07</td>" in page
    assert "<td>lr</td><td>step</td><td>1</td><td>40.00% (one seed)</td>" in page
    assert ("<img src='../figures/04_accuracy_vs_params.png' alt='notebook 04: accuracy vs params'>"
            "<figcaption>notebook 04: accuracy vs params</figcaption>") in page  # a caption, not a file name
    for src in re.findall(r"<img src='([^']+)'", page):  # each one opens from the index's folder
        assert (folder / urllib.parse.unquote(src)).resolve().parent == results_root / "figures"
    assert "<img src='../figures/a%26b%20%3Cc%3E.png'" in page and "<figcaption>a&amp;b &lt;c&gt;</figcaption>" in page
    assert "<th>executed</th>" not in page  # a clone's file times say nothing of when a notebook ran
    assert "All its tables" not in page  # no summary.md in this results root: no link to one
    (results_root / "summary.md").write_text("# summary\n")
    page = _index(folder, "full", results_root)
    assert "All its tables: <a href='../summary.md'>" in page
    (results_root / "summary.md").unlink()
    assert "notes.txt" not in page and "<c>" not in page
    assert html.escape(profiles.load_profile("full")["description"]) in page
    assert page.index("Findings") < page.index("<h2>Notebooks</h2>") < page.index("<h2>Figures</h2>")


def test_only_the_quick_profile_says_its_numbers_are_no_results(results_root, tmp_path):
    quick = _index(tmp_path / "quick", "quick", results_root)
    notice = f"<p class='notice'>{html.escape(render.QUICK_NOTICE)}</p>"
    assert "They are not results" in render.QUICK_NOTICE and notice in quick
    assert quick.index(notice) < quick.index("<h2>Findings</h2>")  # before any number
    for profile in ("full", ""):
        assert "class='notice'" not in _index(tmp_path / (profile or "none"), profile, results_root)


def test_the_results_root_defaults_to_the_one_the_notebooks_were_given(results_root, tmp_path):
    summary = json.loads((results_root / "runs" / "tiny" / "summary.json").read_text())
    page = _index(tmp_path / "recorded", "quick", recorded=results_root)
    assert f"<td>{100 * summary['test_acc']:.2f}%</td>" in page and "04_accuracy_vs_params.png" in page
    # no profile and nothing recorded: the notebooks alone
    page = _index(tmp_path / "bare", "")
    assert "Findings" not in page and "<img" not in page and "01 · First" in page


def test_a_results_root_without_runs_says_so(tmp_path):
    page = _index(tmp_path / "executed", "full", tmp_path / "nothing")
    assert "(which does not exist yet)" in page and "No finished runs yet." in page and "<img" not in page
