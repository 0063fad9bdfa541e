"""Reading results folders: empty, missing and broken ones give empty tables and named problems."""
from __future__ import annotations

from wrnlib.study import explorer, results

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


def test_a_benchmark_folder_of_another_kind_is_not_a_problem(tmp_path):
    """A folder with other measurements (a step ablation's ablation.json) is no mode benchmark, and no error."""
    (tmp_path / "benchmarks" / "step-ablation").mkdir(parents=True)
    (tmp_path / "benchmarks" / "step-ablation" / "ablation.json").write_text("{}")
    (tmp_path / "benchmarks" / "nothing").mkdir()
    found = results.collect(tmp_path)
    assert found.benchmarks.empty
    assert [p for p in found.problems if "benchmarks" in p] == [f"{tmp_path / 'benchmarks' / 'nothing'}: no bench.json"]
