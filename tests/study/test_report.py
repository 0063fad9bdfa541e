"""The study's markdown: every cell of the summary's tables and of a run's table rendered from run folders whose
values are known, another study as a section of its own, and the reading of a schedule ablation.

(Found wanting by mutation testing: a cell could show another field, drop its unit or lose a digit while only
"the table exists" was checked.)"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from result_folders import CONFIG, SUMMARY, cells, saved_run, write_run
from wrnlib.study import collect, report, tables

def test_every_cell_of_a_finished_run_row(study):
    text = report.summary_markdown(collect.collect(study))
    assert cells(text, "headline") == ["headline", "WRN-16-2.5", "1.23 M", "18/18", "onecycle", "91.23%", "91.87%",
                                       "90.51%", "1428 s", "10,000", "A CPU (2 cores)", "finished"]
    # an unfinished run: what it has, and a dash for each number it has not written yet
    assert cells(text, "halfway") == ["halfway", "WRN-28-10", "– M", "3/18", "onecycle", "–", "–", "–", "– s", "–",
                                      "–", "partial"]
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| run | model | params")))
    assert lines[header + 1] == "|" + "---|" * 12 and lines[header - 1] == ""


def test_every_cell_of_the_schedule_and_throughput_tables(study):
    found = collect.collect(study)
    text = report.summary_markdown(found)
    assert cells(text, "lr_schedules")[:3] == ["lr_schedules", "cosine", "2"]
    cosine, step = [line for line in text.splitlines() if line.startswith("| lr_schedules |")]
    std = 100 * pd.Series([0.80, 0.82]).std(ddof=1)
    assert cells(cosine, "lr_schedules") == ["lr_schedules", "cosine", "2", f"81.00% ± {std:.2f}", "80.00% – 82.00%",
                                             "82.00%", "80.00%", "105 s"]
    assert cells(step, "lr_schedules")[3] == "70.00% (one seed)"
    assert "- lr_schedules: WRN-10-1, 10 epochs, batch 128, on A CPU (2 cores)" in text
    assert cells(text, "cpu-wrn16-2") == ["cpu-wrn16-2", "cpu", "bf16", "WRN-16-2", "128", "1,234", "36.46", "0.6",
                                          "3,523"]


def test_the_index_and_the_run_notebook_show_the_same_numbers(study):
    found = collect.collect(study)
    header, rows = tables.finished_run_rows(found)
    assert header == ["run", "model", "epochs", "test acc", "flip-TTA", "train time", "device"]
    assert rows == [["headline", "WRN-16-2.5", "18/18", "91.23%", "91.87%", "23.8 min", "A CPU (2 cores)"]]
    table = report.run_markdown(SUMMARY)
    assert cells(table, "final test accuracy") == ["final test accuracy", "91.23%"]
    assert cells(table, "with flip-TTA") == ["with flip-TTA", "91.87%"]
    assert cells(table, "best validation accuracy") == ["best validation accuracy", "90.51% (epoch 17)"]
    assert cells(table, "test images") == ["test images", "10,000"]
    assert cells(table, "parameters") == ["parameters", "1,234,567"]
    assert cells(table, "training time (steps only)") == ["training time (steps only)", "1428.4 s (568 images/s)"]
    assert cells(table, "evaluation time (every epoch)") == ["evaluation time (every epoch)", "61.2 s"]
    assert cells(report.run_markdown({}), "evaluation time (every epoch)")[1] == "–"


def test_another_study_is_a_section_of_its_own_one_heading_level_down(study):
    found = collect.collect(study)
    text = report.summary_markdown(found, {"CPU study": found})
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
    _assessment(tmp_path / collect.TRUST / "a", "a", ece=0.07559, scaled=0.011549, temperature=0.68219)
    _assessment(tmp_path / collect.TRUST / "b", "b", ece=0.0716, scaled=None, temperature=None)
    lines = report.trust_section(tmp_path / collect.TRUST)
    assert lines[:3] == ["", "## Calibration and robustness", ""]
    assert "9 kinds x 5 severities, 2,000 test images; not comparable with published CIFAR-10-C tables" in lines[3]
    table = "\n".join(lines[4:])
    assert cells(table, "run") == ["run", "model", "epochs", "test acc (bf16 here)", "ECE", "ECE scaled",
                                   "temperature", "clean subset", "mean corrupted", "device"]
    assert cells(table, "a") == ["a", "WRN-16-2", "18", "91.23%", "7.56", "1.15", "0.68", "91.15%", "67.89%",
                                 "A CPU (2 cores)"]
    assert cells(table, "b")[4:7] == ["7.16", "–", "–"]  # no temperature fitted: dashes, not numbers
    assert report.trust_section(tmp_path / "none") == []
    summary = report.summary_markdown(collect.collect(tmp_path))
    assert "\n".join(lines) in summary and summary.index("## Calibration") < summary.index("## Throughput")


def test_the_summary_puts_each_table_under_its_heading_with_its_header(study):
    width = study / collect.WIDTH_SWEEP / "runs"
    for name, k, seed, acc in (("w2-s1", 2, 1, 0.905), ("w1", 1, 0, 0.87), ("w2-s0", 2, 0, 0.9)):
        write_run(width, name, config={**CONFIG, "depth": 16, "width": k, "seed": seed},
             summary={**SUMMARY, "test_acc": acc, "params": 691_674 * k}, env={"device": "A CPU (2 cores)"},
             epochs_done=18)
    timed = study / collect.TIME_SWEEP / "runs"
    for name, k, seed, acc in (("t3-s0", 3, 0, 0.91), ("t3-s1", 3, 1, 0.92)):
        write_run(timed, name, config={**CONFIG, "depth": 10, "width": k, "seed": seed, "budget_minutes": 10.0},
                  summary={**SUMMARY, "test_acc": acc, "params": 1_000_000}, env={"device": "A CPU (2 cores)"},
                  epochs_done=18)
    found = collect.collect(study)
    found.problems.append("somewhere: unreadable")
    lines = report.summary_markdown(found).splitlines()

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
                         "| train min | PFLOP |")
    assert widths[2:5] == [  # runs that recorded no training compute (older ones) show none
        "| WRN-16-1 | 0.692 | 0 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 87.0 | 23.8 | – |",
        "| WRN-16-2 | 1.383 | 0 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 90.0 | 23.8 | – |",
        "| WRN-16-2 | 1.383 | 1 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 90.5 | 23.8 | – |"]
    assert widths[5] == "" and widths[6].startswith("**WRN-16-")  # which wins on validation, against the seed spread
    timed = under("## Width sweep at equal training time")  # its own runs, under its own heading
    assert timed[2:5] == ["| WRN-10-3 | 1.0 | 0 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 91.0 | 23.8 | – |",
                          "| WRN-10-3 | 1.0 | 1 | 18 | 128 | onecycle | A CPU (2 cores) | 90.03 | 92.0 | 23.8 | – |",
                          ""]
    assert timed[5].startswith("**WRN-10-3** has the best mean final validation accuracy")
    assert under("## Throughput")[0] == ("| bench | device | mode | model | batch | train img/s | epoch (45k) s | "
                                         "TFLOP/s | inference img/s |")
    assert under("## Skipped") == ["- somewhere: unreadable"]


def test_an_empty_study_says_so_under_each_heading(tmp_path):
    lines = report.summary_markdown(collect.collect(tmp_path)).splitlines()
    for heading, empty in (("## Training runs", "No runs yet."), ("## Learning-rate schedule ablation",
                                                                  "No ablations yet."),
                           ("## Throughput", "No benchmarks yet.")):
        assert lines[lines.index(heading) + 2] == empty
    assert "## Width sweep" not in lines and "## Skipped" not in lines


def test_a_run_without_a_parameter_count_shows_a_dash_and_millions_round_at_the_second_decimal(tmp_path):
    write_run(tmp_path / "runs", "no-params", config=CONFIG, summary={"test_acc": 0.9}, env={}, epochs_done=1)
    assert cells(report.summary_markdown(collect.collect(tmp_path)), "no-params")[2] == "– M"
    write_run(tmp_path / "runs", "params", config=CONFIG, summary={"params": 1_005_001}, env={}, epochs_done=1)
    assert cells(report.summary_markdown(collect.collect(tmp_path)), "params")[2] == "1.01 M"


def test_the_summary_says_what_its_numbers_are_and_that_another_study_is_not_comparable(study):
    found = collect.collect(study)
    text = " ".join(report.summary_markdown(found, {"CPU study": found}).split())
    assert ("Every number below comes from a run folder, ablation table or benchmark file in that folder. Test "
            "accuracy is the final epoch's; train time is the training steps alone (the evaluation after every "
            "epoch is extra).") in text
    assert ("another device and other budgets, so its numbers are not comparable run for run with the sections "
            "above.") in text


def test_the_robustness_section_names_every_image_count_and_leaves_a_blank_line_before_its_table(tmp_path):
    _assessment(tmp_path / "a", "a", ece=0.07, scaled=0.01, temperature=0.7)
    _assessment(tmp_path / "b", "b", ece=0.07, scaled=0.01, temperature=0.7)
    saved = json.loads((tmp_path / "b" / "trust.json").read_text())
    saved["settings"]["corruption_images"] = 500
    (tmp_path / "b" / "trust.json").write_text(json.dumps(saved))
    lines = report.trust_section(tmp_path)
    assert "2,000, 500 test images" in lines[3] and lines[4] == "" and lines[5].startswith("| run |")


def test_a_run_summary_table_has_a_blank_header():
    assert report.run_markdown(SUMMARY).splitlines()[:2] == ["|  |  |", "|---|---|"]


def test_summary_gives_another_study_a_section_of_its_own(cpu_study, tmp_path):
    gpu = tmp_path / "gpu"
    saved_run(gpu / "runs", "big", device_type="cuda", test_acc=0.95, val=0.95, minutes=2, depth=28, width=3.5,
              epochs=96)
    text = report.summary_markdown(collect.collect(gpu), {"CPU study": collect.collect(cpu_study)})
    mine, other = text.split("## CPU study")
    assert "big" in mine and "headline" not in mine
    assert "### Training runs" in other and "headline" in other and "\n## " not in other  # headings one level down
    assert "lr_schedules: WRN-16-2, 10 epochs, batch 512, on a cpu" in other
    assert "### Width sweep" in other and "WRN-16-3" in other


# --------------------------------------------------------------------------- the reading of a schedule ablation


def _final(values: dict[str, list[float]], val: dict[str, list[float]] | None = None) -> pd.DataFrame:
    rows = []
    for schedule, accs in values.items():
        for seed, acc in enumerate(accs):
            rows.append({"schedule": schedule, "seed": seed, "test_acc": acc,
                         "final_val_acc": (val or values)[schedule][seed]})
    return pd.DataFrame(rows)


def test_reading_separates_gaps_beyond_the_seed_spread_from_those_within():
    final = _final({"cosine": [0.870, 0.874], "onecycle": [0.872, 0.868], "constant": [0.790, 0.800]})
    text = report.reading_markdown(final)
    resolved = text.split("Larger than the seed spread")[1].split("\n")[0]
    within = text.split("Within the seed spread")[1].split("\n")[0]
    assert "cosine > constant (+7.70 points)" in resolved and "onecycle > constant" in resolved
    assert "cosine vs onecycle (0.20 points)" in within and "cosine" not in resolved.split(";")[-1].split(">")[1]
    assert text.index("cosine 87.20 % [87.00–87.40]") < text.index("onecycle 87.00 %") < text.index("constant")


def test_reading_ranks_validation_on_validation_accuracy_not_test():
    final = _final({"step": [0.86, 0.861], "cosine": [0.85, 0.851]}, val={"step": [0.80, 0.81], "cosine": [0.9, 0.9]})
    text = report.reading_markdown(final)
    assert "Best on validation: **cosine**" in text  # although step is better on the test set
    assert text.index("Ranking") < text.index("step 86.05 %") < text.index("cosine 85.05 %")


def test_reading_compares_the_schedules_that_decay_to_zero_with_the_others():
    final = _final({"cosine": [0.87, 0.88], "step": [0.85, 0.86], "constant": [0.79, 0.80]})
    text = report.reading_markdown(final, {"cosine": 0.0, "step": 0.008, "constant": 1.0})
    line = text.split("Decay to zero")[1]
    assert "cosine end at a learning rate of zero" in line and "step at 0.008, constant at 1 of the peak" in line
    assert "first group averages 87.50 %, the second 82.50 % (+5.00 points)" in line
    assert "Every seed of cosine beats every seed of the others" in line
    overlapping = report.reading_markdown(_final({"cosine": [0.85, 0.88], "step": [0.86, 0.86]}),
                                           {"cosine": 0.0, "step": 0.008})
    assert overlapping.endswith("(+0.50 points). No decay-to-zero schedule beats every seed of the others.")
    two = report.reading_markdown(_final({"cosine": [0.87, 0.88], "onecycle": [0.86, 0.87], "step": [0.80, 0.81]}),
                                  {"cosine": 0.0, "onecycle": 0.0, "step": 0.008})
    assert two.endswith("Every seed of cosine, onecycle beats every seed of the others.")


def test_reading_of_nothing():
    assert "nothing to read" in report.reading_markdown(pd.DataFrame(columns=["schedule", "test_acc"]))


def test_the_reading_word_for_word_at_the_edges_of_its_comparisons():
    """Every line exactly: a tie of one schedule's worst seed with another's best is no resolved gap and beats no
    one; a schedule ending at exactly ZERO of its peak, or missing from the end multipliers, does not decay to
    zero."""
    final = _final({"cosine": [0.870, 0.880], "onecycle": [0.875, 0.877], "step": [0.860, 0.870],
                    "constant": [0.790, 0.800]},
                   val={"cosine": [0.86, 0.87], "onecycle": [0.87, 0.88], "step": [0.85, 0.85],
                        "constant": [0.78, 0.79]})
    assert report.reading_markdown(final, {"cosine": 0.0, "onecycle": 0.0, "step": report.ZERO}) == (
        "* **Ranking** by mean final test accuracy over the seeds (2 per schedule; the range over seeds in brackets): "
        "onecycle 87.60 % [87.50–87.70], cosine 87.50 % [87.00–88.00], step 86.50 % [86.00–87.00], "
        "constant 79.50 % [79.00–80.00].\n"
        "* **Larger than the seed spread** (the two schedules' ranges do not overlap): onecycle > step (+1.10 points); "
        "onecycle > constant (+8.10 points); cosine > constant (+8.00 points); step > constant (+7.00 points).\n"
        "* **Within the seed spread** (not resolved by these seeds): onecycle vs cosine (0.10 points); "
        "cosine vs step (1.00 points).\n"
        "* **On the validation split** (what settings are chosen on), by mean final validation accuracy: "
        "onecycle 87.50 % [87.00–88.00], cosine 86.50 % [86.00–87.00], step 85.00 % [85.00–85.00], "
        "constant 78.50 % [78.00–79.00]. Best on validation: **onecycle**.\n"
        "* **Decay to zero at the budget**: onecycle, cosine end at a learning rate of zero; step at 0.001 of the "
        "peak. The first group averages 87.55 %, the second 83.00 % (+4.55 points). Every seed of onecycle beats "
        "every seed of the others.")


def test_the_reading_says_none_where_nothing_is_resolved_or_unresolved_and_needs_no_validation_column():
    apart = _final({"cosine": [0.87, 0.88], "step": [0.80, 0.81]}).drop(columns="final_val_acc")
    assert report.reading_markdown(apart, {"cosine": 0.0, "step": 0.0}) == (  # all decay to zero: nothing to compare
        "* **Ranking** by mean final test accuracy over the seeds (2 per schedule; the range over seeds in brackets): "
        "cosine 87.50 % [87.00–88.00], step 80.50 % [80.00–81.00].\n"
        "* **Larger than the seed spread** (the two schedules' ranges do not overlap): cosine > step (+7.00 points).\n"
        "* **Within the seed spread** (not resolved by these seeds): none.")
    close = report.reading_markdown(_final({"cosine": [0.87, 0.88], "step": [0.86, 0.87, 0.865]}))
    assert "over the seeds (2, 3 per schedule;" in close
    assert "* **Larger than the seed spread** (the two schedules' ranges do not overlap): none.\n" in close
    assert report.reading_markdown(pd.DataFrame(columns=["schedule", "test_acc"])) == (
        "No finished runs: nothing to read yet.")


def test_seeds_table_gives_each_seed_and_their_mean():
    from types import SimpleNamespace

    from wrnlib import TrainConfig

    def run(seed, test_acc, tta, minutes):
        return SimpleNamespace(config=TrainConfig(seed=seed), summary={
            "epochs": 17, "train_time_s": 60 * minutes, "test_acc": test_acc, "test_acc_tta": tta})
    table = report.seeds_markdown([run(0, 0.9301, 0.9342, 24.6), run(1, 0.9291, 0.9350, 25.1)])
    lines = table.splitlines()
    assert lines[:2] == ["| seed | epochs | training time | final test acc | flip-TTA |", "|---|---|---|---|---|"]
    assert cells(table, "0") == ["0", "17", "24.6 min", "93.01%", "93.42%"]
    assert cells(table, "1") == ["1", "17", "25.1 min", "92.91%", "93.50%"]
    assert cells(table, "mean of 2") == ["mean of 2", "–", "–", "92.96%", "93.46%"]
    assert len(lines) == 5
    without_tta = report.seeds_markdown([run(0, 0.93, None, 24.6), run(1, 0.92, 0.93, 25.1)])
    assert cells(without_tta, "mean of 2") == ["mean of 2", "–", "–", "92.50%", "–"]
