"""Reading results folders (empty, missing and broken ones give empty tables and named problems) and the numbers
the summary and the notebooks show from them, cell by cell."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from wrnlib import runfolder
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

# --------------------------------------------------------------------------- the numbers readers see
# Every cell of the summary's tables, and of the notebooks' run and schedule tables, rendered from run folders
# whose values are known (found wanting by mutation testing: a cell could show another field, drop its unit or
# lose a digit while only "the table exists" was checked).


def _cells(markdown: str, first: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``first``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{markdown}")


def _run(root: Path, name: str, *, config: dict, summary: dict | None, env: dict, epochs_done: int) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / runfolder.CONFIG).write_text(json.dumps(config))
    (run_dir / runfolder.ENV).write_text(json.dumps(env))
    if summary is not None:
        (run_dir / runfolder.SUMMARY).write_text(json.dumps(summary))
    rows = [{"epoch": e + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5,
             "test_loss": 1.0, "test_acc": 0.25 + e / 100} for e in range(epochs_done)]
    runfolder.write_metrics(run_dir / runfolder.METRICS, rows)
    return run_dir


CONFIG = {"depth": 16, "width": 2.5, "epochs": 18, "schedule": "onecycle", "batch_size": 128, "lr": 0.1, "seed": 0,
          "label_smoothing": 0.1}
SUMMARY = {"params": 1_234_567, "test_acc": 0.91234, "test_acc_tta": 0.9187, "best_val_acc": 0.9051,
           "final_val_acc": 0.9003, "train_time_s": 1428.4, "test_images": 10_000, "best_val_epoch": 17,
           "mean_images_per_s": 567.8, "eval_time_s": 61.25}


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "study"
    _run(root / "runs", "headline", config=CONFIG, summary=SUMMARY, env={"device": "A CPU (2 cores)"}, epochs_done=18)
    _run(root / "runs", "halfway", config={**CONFIG, "depth": 28, "width": 10}, summary=None, env={}, epochs_done=3)
    ablation = root / "ablations" / "lr_schedules"
    for schedule, seed, acc in (("cosine", 0, 0.80), ("cosine", 1, 0.82), ("step", 0, 0.70)):
        _run(ablation / "runs", f"{schedule}-seed{seed}",
             config={**CONFIG, "schedule": schedule, "seed": seed, "epochs": 10, "depth": 10, "width": 1},
             summary={**SUMMARY, "test_acc": acc, "epochs": 10}, env={"device": "A CPU (2 cores)"}, epochs_done=10)
    final = pd.DataFrame([{"ablation": "lr_schedules", "schedule": s, "seed": seed, "run": f"{s}-seed{seed}",
                           "epochs": 10, "test_acc": acc, "test_acc_tta": acc + 0.01, "best_val_acc": acc - 0.01,
                           "train_time_s": t}
                          for s, seed, acc, t in (("cosine", 0, 0.80, 100), ("cosine", 1, 0.82, 110),
                                                  ("step", 0, 0.70, 90))])
    results.write_ablation(ablation, pd.DataFrame(columns=list(results.ABLATION_EPOCH_COLUMNS)), final)
    bench = root / "benchmarks" / "cpu-wrn16-2"
    bench.mkdir(parents=True)
    (bench / "bench.json").write_text(json.dumps({"env": {"torch": "2.x"}, "results": [
        {"mode": "bf16", "device": "cpu", "depth": 16, "width": 2, "batch_size": 128, "train_images_per_s": 1234.5,
         "epoch_time_s": 36.456, "train_tflops": 0.61, "inference_images_per_s": 3523.2}]}))
    return root


def test_every_cell_of_a_finished_run_row(study):
    text = results.summary_markdown(results.collect(study))
    assert _cells(text, "headline") == ["headline", "WRN-16-2.5", "1.23 M", "18/18", "onecycle", "91.23%", "91.87%",
                                        "90.51%", "1428 s", "10,000", "A CPU (2 cores)", "finished"]
    # an unfinished run: what it has, and a dash for each number it has not written yet
    assert _cells(text, "halfway") == ["halfway", "WRN-28-10", "– M", "3/18", "onecycle", "–", "–", "–", "– s", "–",
                                       "–", "partial"]
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| run | model | params")))
    assert lines[header + 1] == "|" + "---|" * 12 and lines[header - 1] == ""


def test_every_cell_of_the_schedule_and_throughput_tables(study):
    found = results.collect(study)
    text = results.summary_markdown(found)
    assert _cells(text, "lr_schedules")[:3] == ["lr_schedules", "cosine", "2"]
    cosine, step = [line for line in text.splitlines() if line.startswith("| lr_schedules |")]
    std = 100 * pd.Series([0.80, 0.82]).std(ddof=1)
    assert _cells(cosine, "lr_schedules") == ["lr_schedules", "cosine", "2", f"81.00% ± {std:.2f}", "80.00% – 82.00%",
                                              "82.00%", "80.00%", "105 s"]
    assert _cells(step, "lr_schedules")[3] == "70.00% (one seed)"
    assert "- lr_schedules: WRN-10-1, 10 epochs, batch 128, on A CPU (2 cores)" in text
    assert _cells(text, "cpu-wrn16-2") == ["cpu-wrn16-2", "cpu", "bf16", "WRN-16-2", "128", "1,234", "36.46", "0.6",
                                           "3,523"]


def test_describe_counts_runs_per_group_and_status(study):
    text = results.collect(study).describe()
    assert text.splitlines() == [
        f"results folder: {study}",
        "runs: 3 finished in ablation:lr_schedules, 1 finished in runs, 1 partial in runs",
        "ablation lr_schedules: 3 runs, schedules cosine, step",
        "benchmarks: 1 folder(s), 1 mode rows"]
    (study / "benchmarks" / "broken").mkdir()
    broken = study / "benchmarks" / "broken"
    assert results.collect(study).describe().splitlines()[-1] == f"skipped: {broken}: no bench.json"
    assert results.collect(study / "missing").describe().splitlines() == [
        f"results folder: {study / 'missing'} (does not exist yet)", "no runs yet", "no ablations yet",
        "no benchmarks yet"]


def test_the_index_and_the_run_notebook_show_the_same_numbers(study):
    found = results.collect(study)
    header, rows = results.finished_run_rows(found)
    assert header == ["run", "model", "epochs", "test acc", "flip-TTA", "train time", "device"]
    assert rows == [["headline", "WRN-16-2.5", "18/18", "91.23%", "91.87%", "23.8 min", "A CPU (2 cores)"]]
    table = results.run_markdown(SUMMARY)
    assert _cells(table, "final test accuracy") == ["final test accuracy", "91.23%"]
    assert _cells(table, "with flip-TTA") == ["with flip-TTA", "91.87%"]
    assert _cells(table, "best validation accuracy") == ["best validation accuracy", "90.51% (epoch 17)"]
    assert _cells(table, "test images") == ["test images", "10,000"]
    assert _cells(table, "parameters") == ["parameters", "1,234,567"]
    assert _cells(table, "training time (steps only)") == ["training time (steps only)", "1428.4 s (568 images/s)"]
    assert _cells(table, "evaluation time (every epoch)") == ["evaluation time (every epoch)", "61.2 s"]
    assert _cells(results.run_markdown({}), "evaluation time (every epoch)")[1] == "–"


@pytest.mark.parametrize("seconds, text", [(42, "42.0 s"), (59.94, "59.9 s"), (60, "1.0 min"), (750, "12.5 min"),
                                           (3599, "60.0 min"), (3600, "1.00 h"), (5472, "1.52 h"),
                                           (None, "–"), ("x", "–"), (math.nan, "–")])
def test_duration_reads_from_a_smoke_run_to_a_long_one(seconds, text):
    assert results.duration(seconds) == text


def test_missing_values_are_a_dash_never_a_number():
    assert results._pct(None) == results._pct(math.nan) == results._pct("x") == "–"
    assert results._num(None, ".1f") == results._num(math.nan, ".1f") == "–"
    assert results._pct(0.123456) == "12.35%" and results._pct(0.123456, 1) == "12.3%"
    assert results._points(0.0789) == "7.89" and results._points(None) == "–"
    assert results.duration(None, missing="never") == "never"


def test_validation_table_columns_and_row_and_which_runs_it_leaves_out(study, tmp_path):
    table = results.validation_table([study / "runs", study / "ablations" / "lr_schedules" / "runs"])
    assert list(table.columns) == ["runs in", "run", "model", "epochs", "schedule", "label smoothing",
                                   "final val acc", "train min"]
    # the unfinished run is left out; one row per finished run, best validation first
    assert len(table) == 4 and "halfway" not in set(table["run"])
    headline = table[table["run"] == "headline"].iloc[0].tolist()
    assert headline == [str(study / "runs"), "headline", "WRN-16-2.5", 18, "onecycle", 0.1, 90.03, 23.8]
    # a finished run that recorded no validation accuracy has nothing to be chosen on
    _run(tmp_path / "more", "no-val", config=CONFIG, summary={**SUMMARY, "final_val_acc": None}, env={},
         epochs_done=18)
    _run(tmp_path / "more", "zz-val", config=CONFIG, summary=SUMMARY, env={}, epochs_done=18)
    _run(tmp_path / "more", "zz-better", config=CONFIG, summary={**SUMMARY, "final_val_acc": 0.95}, env={},
         epochs_done=18)
    assert list(results.validation_table([tmp_path / "more"])["run"]) == ["zz-better", "zz-val"]


def test_another_study_is_a_section_of_its_own_one_heading_level_down(study):
    found = results.collect(study)
    text = results.summary_markdown(found, {"CPU study": found})
    lines = text.splitlines()
    assert lines[0] == "# WRN on CIFAR-10: results summary" and lines[1] == "" and text.endswith("|\n")
    at = lines.index("## CPU study")
    assert lines[at - 1] == lines[at + 1] == "" and lines[at + 2].startswith(f"From `{study}`: another device")
    assert lines[at + 3] == ""
    below = lines[at + 1:]
    assert "### Training runs" in below and "### Throughput" in below and "## Training runs" not in below
    assert not any(line.startswith("#") and not line.startswith("###") for line in below)
    # the other study's tables come through whole, under its own heading
    assert sum(line.startswith("| headline |") for line in lines) == 2


def test_ablation_budgets_name_every_distinct_value(study):
    found = results.collect(study)
    runs = found.runs.copy()
    more = runs[runs["group"] == "ablation:lr_schedules"].iloc[:1].assign(epochs=20.0, batch_size=256.0,
                                                                          depth=16.0, width=2.5, device="A GPU")
    found.runs = pd.concat([runs, more], ignore_index=True)
    assert results.ablation_budgets(found) == [
        "lr_schedules: WRN-10-1, WRN-16-2.5, 10, 20 epochs, batch 128, 256, on A CPU (2 cores), A GPU"]


def _assessment(folder: Path, run: str, *, ece: float, scaled: float | None, temperature: float | None) -> None:
    """A notebook-06 assessment folder as trust.assess writes it (the fields the summary reads)."""
    folder.mkdir(parents=True)
    calibration = {"test_acc_plain": 0.91234, "ece_plain": ece, "ece_plain_scaled": scaled,
                   "temperature": temperature}
    (folder / "trust.json").write_text(json.dumps({
        "run": run, "model": "WRN-16-2", "epochs": 18, "env": {"device": "A CPU (2 cores)"},
        "calibration": calibration, "clean_subset_acc": 0.9115, "mean_corruption_acc": 0.678911,
        "settings": {"corruption_images": 2000}, "calibration_time_s": 25.8, "corruption_time_s": 78.6}))
    (folder / "reliability.csv").write_text("bin,count\n")
    (folder / "corruptions.csv").write_text("kind,severity,accuracy\n")


def test_the_calibration_and_robustness_section_cell_by_cell(tmp_path):
    _assessment(tmp_path / results.TRUST / "a", "a", ece=0.07559, scaled=0.011549, temperature=0.68219)
    _assessment(tmp_path / results.TRUST / "b", "b", ece=0.0716, scaled=None, temperature=None)
    lines = results.trust_section(tmp_path / results.TRUST)
    assert lines[:3] == ["", "## Calibration and robustness", ""]
    assert "9 kinds x 5 severities, 2,000 test images; not comparable with published CIFAR-10-C tables" in lines[3]
    table = "\n".join(lines[4:])
    assert _cells(table, "run") == ["run", "model", "epochs", "test acc (bf16 here)", "ECE", "ECE scaled",
                                    "temperature", "clean subset", "mean corrupted", "device"]
    assert _cells(table, "a") == ["a", "WRN-16-2", "18", "91.23%", "7.56", "1.15", "0.68", "91.15%", "67.89%",
                                  "A CPU (2 cores)"]
    assert _cells(table, "b")[4:7] == ["7.16", "–", "–"]  # no temperature fitted: dashes, not numbers
    assert results.trust_section(tmp_path / "none") == []
    summary = results.summary_markdown(results.collect(tmp_path))
    assert "\n".join(lines) in summary and summary.index("## Calibration") < summary.index("## Throughput")


def test_read_run_row_by_status_and_what_it_could_not_read(tmp_path):
    env = {"device": "A CPU", "device_type": "cpu", "torch": "2.x", "git_commit": "abc", "data_source": "/d"}
    finished = _run(tmp_path, "done", config=CONFIG, summary=SUMMARY, env=env, epochs_done=3)
    row, epochs = results.read_run(finished)
    assert {k: row[k] for k in env} == env and epochs[0]["group"] == "runs"
    assert row["group"] == "runs" and row["run_dir"] == str(finished) and row["status"] == "finished"
    assert row["epochs_done"] == 3 and row["last_test_acc"] == pytest.approx(0.27) and row["device"] == "A CPU"
    assert [e["test_acc"] for e in epochs] == pytest.approx([0.25, 0.26, 0.27]) and epochs[0]["name"] == "done"
    assert {k: row[k] for k in ("depth", "schedule", "test_acc", "params")} == {
        "depth": 16, "schedule": "onecycle", "test_acc": 0.91234, "params": 1_234_567}
    partial = _run(tmp_path, "partial", config=CONFIG, summary=None, env={}, epochs_done=2)
    assert results.read_run(partial, "g")[0]["status"] == "partial"
    started = _run(tmp_path, "started", config=CONFIG, summary=None, env={}, epochs_done=0)
    (started / runfolder.METRICS).unlink()
    row, epochs = results.read_run(started)
    assert (row["status"], row["epochs_done"], row["last_test_acc"], epochs) == ("started", 0, None, [])
    # a metrics file that cannot be read is a named problem, and the rest of the run is still read
    (partial / runfolder.METRICS).write_text("epoch,lr\n1,not-a-number\n")
    (partial / runfolder.ENV).write_text("{broken")
    problems = []
    row, _ = results.read_run(partial, "g", problems)
    assert row["status"] == "started" and row["depth"] == 16
    assert any(p.startswith(f"{partial / runfolder.METRICS}: unreadable (ValueError") for p in problems)
    assert any(p.startswith(f"{partial / runfolder.ENV}: unreadable") for p in problems)
    (partial / runfolder.SUMMARY).write_text("[1, 2]")
    problems = []
    assert results.read_run(partial, "g", problems)[0]["status"] == "started"
    assert any(p.startswith(f"{partial / runfolder.SUMMARY}: unreadable") for p in problems)
    assert results.read_run(partial)[0]["status"] == "started"  # without a list to note problems in, no error
    only_summary = tmp_path / "only-summary"
    only_summary.mkdir()
    (only_summary / runfolder.SUMMARY).write_text(json.dumps(SUMMARY))
    assert results.read_run(only_summary)[0]["status"] == "finished"


def test_ablation_tables_from_run_results():
    from types import SimpleNamespace

    from wrnlib import TrainConfig

    metrics = [{"epoch": e, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5,
                "test_loss": 1.0, "test_acc": 0.6 + e / 100} for e in (1, 2)]
    run = SimpleNamespace(config=TrainConfig(name="cosine-seed1", schedule="cosine", seed=1), metrics=metrics,
                          summary={**SUMMARY, "epochs": 2})
    epochs, final = results.ablation_tables([run, run], "abl")
    assert len(epochs) == 4 and list(epochs.columns) == list(results.ABLATION_EPOCH_COLUMNS)
    assert epochs.iloc[1][["ablation", "schedule", "seed", "run", "epoch", "test_acc"]].tolist() == [
        "abl", "cosine", 1, "cosine-seed1", 2, 0.62]
    assert list(final.columns) == list(results.ABLATION_FINAL_COLUMNS) and len(final) == 2
    assert final.iloc[0].tolist() == ["abl", "cosine", 1, "cosine-seed1", 2, 1_234_567, 0.91234, 0.9187, 0.9051,
                                      0.9003, 1428.4, 567.8, 10_000]


def test_the_summary_puts_each_table_under_its_heading_with_its_header(study):
    width = study / results.WIDTH_SWEEP / "runs"
    for name, k, seed, acc in (("w2-s1", 2, 1, 0.905), ("w1", 1, 0, 0.87), ("w2-s0", 2, 0, 0.9)):
        _run(width, name, config={**CONFIG, "depth": 16, "width": k, "seed": seed},
             summary={**SUMMARY, "test_acc": acc, "params": 691_674 * k}, env={"device": "A CPU (2 cores)"},
             epochs_done=18)
    found = results.collect(study)
    found.problems.append("somewhere: unreadable")
    lines = results.summary_markdown(found).splitlines()

    def under(heading: str) -> list[str]:
        at = lines.index(heading)
        assert lines[at - 1] == "" and lines[at + 1] == "", heading  # a blank line each side of a heading
        return lines[at + 2:]

    assert under("## Training runs")[0] == ("| run | model | params | epochs | schedule | test acc | flip-TTA | "
                                            "best val | train time | test images | device | status |")
    schedules = under("## Learning-rate schedule ablation")
    assert schedules[:3] == ["- lr_schedules: WRN-10-1, 10 epochs, batch 128, on A CPU (2 cores)", "",
                             "| ablation | schedule | runs | test acc mean ± std | min – max | flip-TTA mean | "
                             "best val mean | train time |"]
    widths = under("## Width sweep")
    assert widths[0] == ("| model | params (M) | seed | epochs | batch | schedule | device | final val acc | test acc "
                         "| train min |")
    assert widths[2:5] == ["| WRN-16-1 | 0.692 | 0 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 87.0 | 23.8 |",
                           "| WRN-16-2 | 1.383 | 0 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 90.0 | 23.8 |",
                           "| WRN-16-2 | 1.383 | 1 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 90.5 | 23.8 |"]
    assert under("## Throughput")[0] == ("| bench | device | mode | model | batch | train img/s | epoch (45k) s | "
                                         "TFLOP/s | inference img/s |")
    assert under("## Skipped") == ["- somewhere: unreadable"]


def test_an_empty_study_says_so_under_each_heading(tmp_path):
    lines = results.summary_markdown(results.collect(tmp_path)).splitlines()
    for heading, empty in (("## Training runs", "No runs yet."), ("## Learning-rate schedule ablation",
                                                                  "No ablations yet."),
                           ("## Throughput", "No benchmarks yet.")):
        assert lines[lines.index(heading) + 2] == empty
    assert "## Width sweep" not in lines and "## Skipped" not in lines


def test_ablation_and_benchmark_files_are_read_with_their_origin_and_problems_named(tmp_path):
    ablations, benches = tmp_path / "ablations", tmp_path / "benchmarks"
    (ablations / "a").mkdir(parents=True)
    pd.DataFrame([{"schedule": "cosine", "seed": 0, "test_acc": 0.5}]).to_csv(ablations / "a" / results.FINAL_CSV,
                                                                              index=False)
    (ablations / "b").mkdir()
    pd.DataFrame([{"epoch": 1}]).to_csv(ablations / "b" / results.EPOCHS_CSV, index=False)  # no final.csv yet
    (ablations / "c").mkdir()
    (ablations / "c" / results.FINAL_CSV).write_bytes(b"\xff\xfe\x00")
    (ablations / "d").mkdir()
    pd.DataFrame([{"schedule": "step", "seed": 1, "test_acc": 0.6}]).to_csv(ablations / "d" / results.FINAL_CSV,
                                                                            index=False)
    problems = []
    epochs, final = results.load_ablations(ablations, problems)
    assert list(final.columns[:2]) == ["ablation", "schedule"] and list(final["ablation"]) == ["a", "d"]
    assert list(epochs["ablation"]) == ["b"] and list(epochs.columns[:2]) == ["ablation", "epoch"]
    assert problems[0] == f"{ablations / 'b'}: no {results.FINAL_CSV} yet (ablation unfinished?)"
    assert problems[1].startswith(f"{ablations / 'c' / results.FINAL_CSV}: unreadable (UnicodeDecodeError: ")
    assert len(problems) == 2
    for name, env in (("first", {"torch": "2.11", "git_commit": "abc"}), ("second", None)):
        (benches / name).mkdir(parents=True)
        (benches / name / "bench.json").write_text(json.dumps({"env": env, "results": [{"mode": "bf16"}]}))
    (benches / "third").mkdir()
    (benches / "third" / "bench.json").write_text("{not json")
    problems = []
    table = results.load_benchmarks(benches, problems)
    assert table[["name", "mode", "torch", "git_commit"]].values.tolist()[0] == ["first", "bf16", "2.11", "abc"]
    assert table["name"].tolist() == ["first", "second"] and table[["torch", "git_commit"]].iloc[1].isna().all()
    assert len(problems) == 1 and problems[0].startswith(str(benches / "third" / "bench.json"))

# --------------------------------------------------------------------------- what each reader keeps and drops
# (survivors of the second mutation pass: each test below fails on one kind of slip that the tests above let by)


def test_collect_keeps_the_epochs_of_every_run_and_reads_results_by_default(tmp_path, monkeypatch):
    root = tmp_path / "results"
    _run(root / "runs", "a", config=CONFIG, summary=SUMMARY, env={}, epochs_done=2)
    _run(root / "runs", "b", config=CONFIG, summary=None, env={}, epochs_done=3)
    (root / "runs" / ".ipynb_checkpoints").mkdir()  # Jupyter's folder, not a run
    (root / "runs" / "notes.txt").write_text("a file beside the runs")  # not a folder, not a run
    found = results.collect(root)
    assert found.problems == [] and list(found.runs["name"]) == ["a", "b"]
    assert found.metrics["name"].value_counts().to_dict() == {"a": 2, "b": 3}
    assert list(found.metrics.columns[:2]) == ["name", "group"] and len(found.metrics) == 5
    monkeypatch.chdir(tmp_path)
    assert list(results.collect().runs["name"]) == ["a", "b"]  # a notebook run from the project root


def test_a_json_file_that_is_not_an_object_is_named_as_such(tmp_path):
    run_dir = _run(tmp_path, "run", config=CONFIG, summary=None, env={}, epochs_done=1)
    (run_dir / runfolder.SUMMARY).write_text("[1, 2]")
    problems = []
    results.read_run(run_dir, "runs", problems)
    assert problems == [f"{run_dir / runfolder.SUMMARY}: unreadable (ValueError: not a JSON object)"]


def test_a_field_no_benchmark_recorded_is_missing_not_blank(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "bench.json").write_text(json.dumps({"results": [{"mode": "bf16", "batch_size": 128}]}))
    table = results.load_benchmarks(tmp_path)
    assert table["train_tflops"].isna().all() and table["batch_size"].tolist() == [128]


def test_ablations_and_benchmarks_read_past_a_bad_file_with_or_without_a_problem_list(tmp_path):
    ablations, benches = tmp_path / "ablations", tmp_path / "benchmarks"
    tables = {"a": ("unreadable", True), "b": (2, True), "c": (1, False), "d": (0, True)}  # epochs.csv, final.csv
    for name, (epoch_rows, has_final) in tables.items():
        (ablations / name).mkdir(parents=True)
        if has_final:
            pd.DataFrame([{"schedule": "cosine", "seed": 0, "test_acc": 0.5}]).to_csv(
                ablations / name / results.FINAL_CSV, index=False)
        if epoch_rows == "unreadable":  # a's final.csv is still read
            (ablations / name / results.EPOCHS_CSV).write_bytes(b"\xff\xfe\x00")
        elif epoch_rows:  # d has no epochs.csv: its final.csv is still read
            pd.DataFrame([{"epoch": e + 1} for e in range(epoch_rows)]).to_csv(ablations / name / results.EPOCHS_CSV,
                                                                              index=False)
    epochs, final = results.load_ablations(ablations)  # c is unfinished: a problem, with no list to note it in
    assert list(final["ablation"]) == ["a", "b", "d"] and list(final.index) == [0, 1, 2]
    assert list(epochs["ablation"]) == ["b", "b", "c"] and list(epochs.index) == [0, 1, 2]
    (benches / "a-first").mkdir(parents=True)  # no bench.json: a problem, and the next folder is still read
    (benches / "b-second").mkdir()
    (benches / "b-second" / "bench.json").write_text(json.dumps({"results": [{"mode": "fp32"}, {"mode": "bf16"}]}))
    assert results.load_benchmarks(benches)["mode"].tolist() == ["fp32", "bf16"]


def _finals(rows: list[tuple[str, int, object]]) -> pd.DataFrame:
    return pd.DataFrame([{"schedule": s, "seed": seed, "run": f"{s}-{seed}", "test_acc": acc, "test_acc_tta": acc,
                          "best_val_acc": acc, "train_time_s": 100.0 if acc != "n/a" else acc}
                         for s, seed, acc in rows])


def test_the_schedule_table_by_schedule_without_an_ablation_column_and_past_a_cell_that_is_not_a_number():
    final = _finals([("cosine", 1, 0.80), ("cosine", 0, 0.82), ("cosine", 2, "n/a"), ("step", 0, 0.70)])
    table = results.schedule_table(final)
    assert list(table.columns) == list(results.SCHEDULE_TABLE_COLUMNS) and list(table.index) == [0, 1]
    cosine, step = table.iloc[0], table.iloc[1]
    assert (cosine["ablation"], cosine["schedule"], cosine["runs"], cosine["seeds"]) == ("", "cosine", 3, "0,1,2")
    assert cosine["test_acc_mean"] == pytest.approx(0.81) and cosine["test_acc_min"] == 0.80
    assert cosine["test_acc_std"] == pytest.approx(pd.Series([0.80, 0.82]).std(ddof=1))
    for column in ("test_acc_tta_mean", "best_val_acc_mean"):
        assert cosine[column] == pytest.approx(0.81)
    assert cosine["train_time_s_mean"] == pytest.approx(100.0)
    assert (step["schedule"], step["seeds"], step["test_acc_mean"]) == ("step", "0", 0.70)
    assert math.isnan(step["test_acc_std"])  # one seed: no spread to show


def test_write_ablation_writes_three_tables_that_read_back_as_written(tmp_path):
    final = _finals([("cosine", 0, 0.8123456789), ("cosine", 1, 0.8223456789)]).assign(ablation="abl")
    epochs = pd.DataFrame([{"ablation": "abl", "schedule": "cosine", "seed": 0, "epoch": 1, "test_acc": 0.5}])
    paths = results.write_ablation(tmp_path / "new" / "abl", epochs, final)  # its parent does not exist yet
    assert sorted(paths) == ["by_schedule", "epochs", "final"]
    for key, table in (("epochs", epochs), ("final", final), ("by_schedule", results.schedule_table(final))):
        assert list(pd.read_csv(paths[key]).columns) == list(table.columns), key  # no index column
    # six significant digits: enough for an accuracy, short enough to read
    assert "0.812346" in paths["final"].read_text() and "0.8123456789" not in paths["final"].read_text()
    assert "0.817346" in paths["by_schedule"].read_text() and "0.8173456789" not in paths["by_schedule"].read_text()
    assert pd.read_csv(paths["by_schedule"])["test_acc_mean"].tolist() == [0.817346]


def test_the_width_table_rounds_each_column_to_its_own_digits():
    assert list(results.width_table(pd.DataFrame()).columns) == [
        "model", "params (M)", "seed", "epochs", "batch", "schedule", "device", "final val acc", "test acc",
        "train min"]
    runs = pd.DataFrame([{"group": results.WIDTH_SWEEP, "status": "finished", "depth": 16, "width": 1.5, "seed": 0,
                          "epochs": 18, "batch_size": 128, "schedule": "cosine", "device": "cpu",
                          "params": 1_000_501, "final_val_acc": 0.123456, "test_acc": 0.654321,
                          "train_time_s": 1234.0}])
    row = results.width_table(runs).iloc[0]
    assert (row["model"], row["params (M)"], row["final val acc"], row["test acc"], row["train min"]) == (
        "WRN-16-1.5", 1.001, 12.35, 65.43, 20.6)


def test_the_validation_table_skips_a_folder_that_holds_no_run_and_rounds_to_hundredths(tmp_path):
    _run(tmp_path / "runs", "run", config=CONFIG, summary={**SUMMARY, "final_val_acc": 0.123456}, env={},
         epochs_done=18)
    (tmp_path / "runs" / "notes").mkdir()
    table = results.validation_table([tmp_path / "runs"])
    assert table["run"].tolist() == ["run"] and table["final val acc"].tolist() == [12.35]


@pytest.mark.parametrize("seconds, text", [(360_000, "100.00 h"), (7_200, "2.00 h")])
def test_duration_of_a_long_run_in_hours(seconds, text):
    assert results.duration(seconds) == text


def test_a_run_without_a_parameter_count_shows_a_dash_and_millions_round_at_the_second_decimal(tmp_path):
    _run(tmp_path / "runs", "no-params", config=CONFIG, summary={"test_acc": 0.9}, env={}, epochs_done=1)
    assert _cells(results.summary_markdown(results.collect(tmp_path)), "no-params")[2] == "– M"
    _run(tmp_path / "runs", "params", config=CONFIG, summary={"params": 1_005_001}, env={}, epochs_done=1)
    assert _cells(results.summary_markdown(results.collect(tmp_path)), "params")[2] == "1.01 M"


def test_ablation_budgets_leave_out_a_run_whose_model_is_not_recorded(study):
    found = results.collect(study)
    first = found.runs.index[found.runs["group"] == "ablation:lr_schedules"][0]
    found.runs.loc[first, "width"] = math.nan
    assert results.ablation_budgets(found)[0].startswith("lr_schedules: WRN-10-1, 10 epochs")


def test_the_summary_says_what_its_numbers_are_and_that_another_study_is_not_comparable(study):
    found = results.collect(study)
    text = " ".join(results.summary_markdown(found, {"CPU study": found}).split())
    assert ("Every number below comes from a run folder, ablation table or benchmark file in that folder. Test "
            "accuracy is the final epoch's; train time is the training steps alone (the evaluation after every "
            "epoch is extra).") in text
    assert ("another device and other budgets, so its numbers are not comparable run for run with the sections "
            "above.") in text


def test_the_robustness_section_names_every_image_count_and_leaves_a_blank_line_before_its_table(tmp_path):
    _assessment(tmp_path / "a", "a", ece=0.07, scaled=0.01, temperature=0.7)
    _assessment(tmp_path / "b", "b", ece=0.07, scaled=0.01, temperature=0.7)
    report = json.loads((tmp_path / "b" / "trust.json").read_text())
    report["settings"]["corruption_images"] = 500
    (tmp_path / "b" / "trust.json").write_text(json.dumps(report))
    lines = results.trust_section(tmp_path)
    assert "2,000, 500 test images" in lines[3] and lines[4] == "" and lines[5].startswith("| run |")


def test_a_run_summary_table_has_a_blank_header():
    assert results.run_markdown(SUMMARY).splitlines()[:2] == ["|  |  |", "|---|---|"]
