"""Reading results folders: empty, missing and broken ones give empty tables and named problems; every run,
epoch, ablation table and benchmark is read with where it came from."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from result_folders import CONFIG, SUMMARY, write_run
from wrnlib import runfolder
from wrnlib.study import collect, report, tables
from wrnlib.study.explorer import numbers

def test_results_on_a_missing_or_empty_folder(tmp_path):
    for root in (tmp_path / "missing", tmp_path):
        found = collect.collect(root)
        assert found.runs.empty and found.metrics.empty and found.benchmarks.empty
        assert found.ablation_final.empty and found.ablation_epochs.empty
        assert list(found.runs.columns) == list(collect.RUN_COLUMNS)
        assert found.finished_runs.empty and found.main_runs.empty
        assert "no runs yet" in found.describe() and "no benchmarks yet" in found.describe()
        text = report.summary_markdown(found)
        assert "No runs yet." in text and "No ablations yet." in text and "No benchmarks yet." in text
        assert tables.schedule_table(found.ablation_final).empty
        assert numbers.run_points(found.runs).empty


def test_results_skip_broken_files(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "config.json").write_text("{oops")
    (tmp_path / "ablations" / "unfinished").mkdir(parents=True)
    (tmp_path / "benchmarks" / "nothing").mkdir(parents=True)
    found = collect.collect(tmp_path)
    assert found.runs.empty and found.benchmarks.empty and found.ablation_final.empty
    problems = "\n".join(found.problems)
    for name in ("empty", "bad", "unfinished", "nothing"):
        assert name in problems
    assert "## Skipped" in report.summary_markdown(found)


def test_a_benchmark_folder_of_another_kind_is_not_a_problem(tmp_path):
    """A folder with other measurements (a step ablation's ablation.json) is no mode benchmark, and no error."""
    (tmp_path / "benchmarks" / "step-ablation").mkdir(parents=True)
    (tmp_path / "benchmarks" / "step-ablation" / "ablation.json").write_text("{}")
    (tmp_path / "benchmarks" / "nothing").mkdir()
    found = collect.collect(tmp_path)
    assert found.benchmarks.empty
    assert [p for p in found.problems if "benchmarks" in p] == [f"{tmp_path / 'benchmarks' / 'nothing'}: no bench.json"]


def test_describe_counts_runs_per_group_and_status(study):
    text = collect.collect(study).describe()
    assert text.splitlines() == [
        f"results folder: {study}",
        "runs: 3 finished in ablation:lr_schedules, 1 finished in runs, 1 partial in runs",
        "ablation lr_schedules: 3 runs, schedules cosine, step",
        "benchmarks: 1 folder(s), 1 mode rows"]
    (study / "benchmarks" / "broken").mkdir()
    broken = study / "benchmarks" / "broken"
    assert collect.collect(study).describe().splitlines()[-1] == f"skipped: {broken}: no bench.json"
    assert collect.collect(study / "missing").describe().splitlines() == [
        f"results folder: {study / 'missing'} (does not exist yet)", "no runs yet", "no ablations yet",
        "no benchmarks yet"]


def test_finished_in_keeps_the_finished_runs_of_one_group_and_an_empty_frame_as_it_is():
    runs = pd.DataFrame({"name": list("abcd"), "group": ["width_sweep", "width_sweep", "runs", "width_sweep"],
                         "status": ["finished", "partial", "finished", "finished"]})
    assert list(collect.finished_in(runs, "width_sweep")["name"]) == ["a", "d"]
    assert list(collect.finished_in(runs, "runs")["name"]) == ["c"]
    nothing = pd.DataFrame()  # a caller with no runs may pass a frame without even the columns
    assert collect.finished_in(nothing, "width_sweep") is nothing


def test_read_run_row_by_status_and_what_it_could_not_read(tmp_path):
    env = {"device": "A CPU", "device_type": "cpu", "torch": "2.x", "git_commit": "abc", "data_source": "/d"}
    finished = write_run(tmp_path, "done", config=CONFIG, summary=SUMMARY, env=env, epochs_done=3)
    row, epochs = collect.read_run(finished)
    assert {k: row[k] for k in env} == env and epochs[0]["group"] == "runs"
    assert row["group"] == "runs" and row["run_dir"] == str(finished) and row["status"] == "finished"
    assert row["epochs_done"] == 3 and row["last_test_acc"] == pytest.approx(0.27) and row["device"] == "A CPU"
    assert [e["test_acc"] for e in epochs] == pytest.approx([0.25, 0.26, 0.27]) and epochs[0]["name"] == "done"
    assert {k: row[k] for k in ("depth", "schedule", "test_acc", "params")} == {
        "depth": 16, "schedule": "onecycle", "test_acc": 0.91234, "params": 1_234_567}
    partial = write_run(tmp_path, "partial", config=CONFIG, summary=None, env={}, epochs_done=2)
    assert collect.read_run(partial, "g")[0]["status"] == "partial"
    started = write_run(tmp_path, "started", config=CONFIG, summary=None, env={}, epochs_done=0)
    (started / runfolder.METRICS).unlink()
    row, epochs = collect.read_run(started)
    assert (row["status"], row["epochs_done"], row["last_test_acc"], epochs) == ("started", 0, None, [])
    # a metrics file that cannot be read is a named problem, and the rest of the run is still read
    (partial / runfolder.METRICS).write_text("epoch,lr\n1,not-a-number\n")
    (partial / runfolder.ENV).write_text("{broken")
    problems = []
    row, _ = collect.read_run(partial, "g", problems)
    assert row["status"] == "started" and row["depth"] == 16
    assert any(p.startswith(f"{partial / runfolder.METRICS}: unreadable (ValueError") for p in problems)
    assert any(p.startswith(f"{partial / runfolder.ENV}: unreadable") for p in problems)
    (partial / runfolder.SUMMARY).write_text("[1, 2]")
    problems = []
    assert collect.read_run(partial, "g", problems)[0]["status"] == "started"
    assert any(p.startswith(f"{partial / runfolder.SUMMARY}: unreadable") for p in problems)
    assert collect.read_run(partial)[0]["status"] == "started"  # without a list to note problems in, no error
    only_summary = tmp_path / "only-summary"
    only_summary.mkdir()
    (only_summary / runfolder.SUMMARY).write_text(json.dumps(SUMMARY))
    assert collect.read_run(only_summary)[0]["status"] == "finished"


def test_ablation_and_benchmark_files_are_read_with_their_origin_and_problems_named(tmp_path):
    ablations, benches = tmp_path / "ablations", tmp_path / "benchmarks"
    (ablations / "a").mkdir(parents=True)
    pd.DataFrame([{"schedule": "cosine", "seed": 0, "test_acc": 0.5}]).to_csv(ablations / "a" / collect.FINAL_CSV,
                                                                              index=False)
    (ablations / "b").mkdir()
    pd.DataFrame([{"epoch": 1}]).to_csv(ablations / "b" / collect.EPOCHS_CSV, index=False)  # no final.csv yet
    (ablations / "c").mkdir()
    (ablations / "c" / collect.FINAL_CSV).write_bytes(b"\xff\xfe\x00")
    (ablations / "d").mkdir()
    pd.DataFrame([{"schedule": "step", "seed": 1, "test_acc": 0.6}]).to_csv(ablations / "d" / collect.FINAL_CSV,
                                                                            index=False)
    problems = []
    epochs, final = collect.load_ablations(ablations, problems)
    assert list(final.columns[:2]) == ["ablation", "schedule"] and list(final["ablation"]) == ["a", "d"]
    assert list(epochs["ablation"]) == ["b"] and list(epochs.columns[:2]) == ["ablation", "epoch"]
    assert problems[0] == f"{ablations / 'b'}: no {collect.FINAL_CSV} yet (ablation unfinished?)"
    assert problems[1].startswith(f"{ablations / 'c' / collect.FINAL_CSV}: unreadable (UnicodeDecodeError: ")
    assert len(problems) == 2
    for name, env in (("first", {"torch": "2.11", "git_commit": "abc"}), ("second", None)):
        (benches / name).mkdir(parents=True)
        (benches / name / "bench.json").write_text(json.dumps({"env": env, "results": [{"mode": "bf16"}]}))
    (benches / "third").mkdir()
    (benches / "third" / "bench.json").write_text("{not json")
    problems = []
    table = collect.load_benchmarks(benches, problems)
    assert table[["name", "mode", "torch", "git_commit"]].values.tolist()[0] == ["first", "bf16", "2.11", "abc"]
    assert table["name"].tolist() == ["first", "second"] and table[["torch", "git_commit"]].iloc[1].isna().all()
    assert len(problems) == 1 and problems[0].startswith(str(benches / "third" / "bench.json"))


def test_collect_keeps_the_epochs_of_every_run_and_reads_results_by_default(tmp_path, monkeypatch):
    root = tmp_path / "results"
    write_run(root / "runs", "a", config=CONFIG, summary=SUMMARY, env={}, epochs_done=2)
    write_run(root / "runs", "b", config=CONFIG, summary=None, env={}, epochs_done=3)
    (root / "runs" / ".ipynb_checkpoints").mkdir()  # Jupyter's folder, not a run
    (root / "runs" / "notes.txt").write_text("a file beside the runs")  # not a folder, not a run
    found = collect.collect(root)
    assert found.problems == [] and list(found.runs["name"]) == ["a", "b"]
    assert found.metrics["name"].value_counts().to_dict() == {"a": 2, "b": 3}
    assert list(found.metrics.columns[:2]) == ["name", "group"] and len(found.metrics) == 5
    monkeypatch.chdir(tmp_path)
    assert list(collect.collect().runs["name"]) == ["a", "b"]  # a notebook run from the project root


def test_a_json_file_that_is_not_an_object_is_named_as_such(tmp_path):
    run_dir = write_run(tmp_path, "run", config=CONFIG, summary=None, env={}, epochs_done=1)
    (run_dir / runfolder.SUMMARY).write_text("[1, 2]")
    problems = []
    collect.read_run(run_dir, "runs", problems)
    assert problems == [f"{run_dir / runfolder.SUMMARY}: unreadable (ValueError: not a JSON object)"]


def test_a_field_no_benchmark_recorded_is_missing_not_blank(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "bench.json").write_text(json.dumps({"results": [{"mode": "bf16", "batch_size": 128}]}))
    table = collect.load_benchmarks(tmp_path)
    assert table["train_tflops"].isna().all() and table["batch_size"].tolist() == [128]


def test_ablations_and_benchmarks_read_past_a_bad_file_with_or_without_a_problem_list(tmp_path):
    ablations, benches = tmp_path / "ablations", tmp_path / "benchmarks"
    tables = {"a": ("unreadable", True), "b": (2, True), "c": (1, False), "d": (0, True)}  # epochs.csv, final.csv
    for name, (epoch_rows, has_final) in tables.items():
        (ablations / name).mkdir(parents=True)
        if has_final:
            pd.DataFrame([{"schedule": "cosine", "seed": 0, "test_acc": 0.5}]).to_csv(
                ablations / name / collect.FINAL_CSV, index=False)
        if epoch_rows == "unreadable":  # a's final.csv is still read
            (ablations / name / collect.EPOCHS_CSV).write_bytes(b"\xff\xfe\x00")
        elif epoch_rows:  # d has no epochs.csv: its final.csv is still read
            pd.DataFrame([{"epoch": e + 1} for e in range(epoch_rows)]).to_csv(ablations / name / collect.EPOCHS_CSV,
                                                                              index=False)
    epochs, final = collect.load_ablations(ablations)  # c is unfinished: a problem, with no list to note it in
    assert list(final["ablation"]) == ["a", "b", "d"] and list(final.index) == [0, 1, 2]
    assert list(epochs["ablation"]) == ["b", "b", "c"] and list(epochs.index) == [0, 1, 2]
    (benches / "a-first").mkdir(parents=True)  # no bench.json: a problem, and the next folder is still read
    (benches / "b-second").mkdir()
    (benches / "b-second" / "bench.json").write_text(json.dumps({"results": [{"mode": "fp32"}, {"mode": "bf16"}]}))
    assert collect.load_benchmarks(benches)["mode"].tolist() == ["fp32", "bf16"]
