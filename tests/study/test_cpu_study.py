"""The committed CPU-scale study: every run the cpu profile names is in the repository, finished, with the
settings the profile's notebooks would give it, so `study --profile cpu` on a clean clone reads them back."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import cell_parameters
from wrnlib import TrainConfig
from wrnlib import runfolder
from wrnlib.config import resume_conflicts
from wrnlib.study import collect, notebook, profiles, sweep
from wrnlib.study.collect import TIME_SWEEP, WIDTH_SWEEP

CPU = profiles.load_profile("cpu")
ROOT = profiles.REPO_ROOT


def _params(prefix: str) -> dict:
    return cell_parameters.namespace("cpu", prefix)


def _expected_configs() -> tuple[list[TrainConfig], list[TrainConfig]]:
    """The headline's seeds (notebook 02) and the other runs (notebooks 03 and 05: both sweeps) the profile's
    notebooks build (paths relative to the repository)."""
    nb2, nb3, nb5 = _params("02"), _params("03"), _params("05")
    on_cifar10 = cell_parameters.on_cifar10
    headline = notebook.train_config(nb2, on_cifar10(nb2))
    headlines = [headline, *sweep.seed_configs(headline, nb2["other_seeds"])]
    ablation = sweep.schedule_configs(nb3["schedules"], nb3["seeds"],
                                      Path(nb3["ablation_dir"]) / nb3["ablation_name"] / "runs",
                                      notebook.train_config(nb3, on_cifar10(nb3)))
    widths = sweep.width_configs(nb5["sweep_widths"], nb5["sweep_seeds"],
                                 Path(nb5["results_root"]) / WIDTH_SWEEP / "runs", nb5["sweep_depth"],
                                 notebook.train_config(nb5["sweep_config"], on_cifar10(nb5), device=nb5["device"]))
    timed = sweep.width_configs(nb5["time_sweep_widths"], nb5["time_sweep_seeds"],
                                Path(nb5["results_root"]) / TIME_SWEEP / "runs", nb5["time_sweep_depths"],
                                notebook.train_config(nb5["sweep_config"], on_cifar10(nb5), device=nb5["device"],
                                                      budget_minutes=nb5["time_sweep_minutes"]))
    return headlines, [*ablation, *widths, *timed]


HEADLINES, OTHERS = _expected_configs()
CONFIGS = [*HEADLINES, *OTHERS]
TIMED = [c for c in OTHERS if c.budget_minutes]  # notebook 05's sweep at equal training time


def test_the_profile_names_a_headline_an_ablation_and_both_width_sweeps():
    assert CPU["results_root"] == "results/cpu"  # apart from the full profile's results
    nb3, nb5 = _params("03"), _params("05")
    assert len(HEADLINES) >= 2 and len({c.seed for c in HEADLINES}) == len(HEADLINES)  # its claim rests on 2 seeds
    assert all(c.val_size == 0 for c in HEADLINES)  # the recipe was chosen before: it trains on every image
    assert len(nb3["schedules"]) == 5 and len(nb3["seeds"]) >= 2
    assert len(nb5["sweep_widths"]) >= 3
    assert len(nb5["time_sweep_widths"]) >= 4 and len(nb5["time_sweep_depths"]) >= 2  # the equal-time grid
    timed = len(nb5["time_sweep_widths"]) * len(nb5["time_sweep_depths"]) * len(nb5["time_sweep_seeds"])
    assert len(CONFIGS) == (len(HEADLINES) + 5 * len(nb3["seeds"])
                            + len(nb5["sweep_widths"]) * len(nb5["sweep_seeds"]) + timed)
    assert all(c.device == "cpu" and c.train_limit == 0 and c.test_limit == 0 for c in CONFIGS)  # the full data


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_every_run_of_the_profile_is_committed_and_finished(config):
    run_dir = ROOT / config.run_dir
    assert runfolder.status(run_dir) == "finished", f"{config.run_dir} is not a finished run: run the cpu study"
    for name in (runfolder.CONFIG, runfolder.ENV, runfolder.METRICS, runfolder.SUMMARY):
        assert (run_dir / name).is_file(), f"{config.run_dir} lacks {name}"
    saved = TrainConfig.load(run_dir / runfolder.CONFIG)
    assert resume_conflicts(saved, config) == [], "the notebook would not read this run back but refuse it"
    env = json.loads((run_dir / runfolder.ENV).read_text())
    summary = json.loads((run_dir / runfolder.SUMMARY).read_text())
    assert env["device_type"] == "cpu" and env["data_checksum"] and env["git_commit"]
    epochs = env["budget"]["epochs"] if config.budget_minutes else config.epochs  # a budget's, chosen at its start
    assert summary["test_images"] == 10_000 and len(runfolder.read_metrics(run_dir)) == epochs == saved.epochs
    if config.save_model:  # only the headline keeps its weights
        assert (run_dir / "model_fp16.pt").is_file()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_runs_are_in_git_not_only_on_this_disk():
    tracked = set(subprocess.run(["git", "ls-files", CPU["results_root"]], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    missing = [str(c.run_dir) for c in CONFIGS if str(c.run_dir / runfolder.SUMMARY) not in tracked]
    assert missing == [], f"finished but not committed: {missing}"


@pytest.mark.parametrize("headline", HEADLINES, ids=lambda c: c.name)
def test_each_seed_of_the_headline_stays_within_its_time_budget(headline):
    summary = json.loads((ROOT / headline.run_dir / runfolder.SUMMARY).read_text())
    assert summary["train_time_s"] <= 30 * 60  # the budget: at most 30 minutes of training


def test_each_study_keeps_its_benchmarks_and_assessments_in_its_own_folder():
    """A study's summary lists its own runs, benchmarks and assessments: the CPU's benchmarks and the assessment of
    its headline are under results/cpu/, and the full profile's notebook 06 assesses only results/runs."""
    gpu = collect.collect(ROOT / "results")
    cpu = collect.collect(ROOT / CPU["results_root"])
    assert set(cpu.benchmarks["device"]) == {"cpu"} and "cpu" not in set(gpu.benchmarks["device"])
    for found in (gpu, cpu):
        assessed = {p.name for p in (found.root / collect.TRUST).iterdir() if p.is_dir()}
        assert assessed and assessed <= set(found.main_runs["name"]), found.root
    full = profiles.notebook_parameters(profiles.load_profile("full"), "06")
    assert full["run_dirs"] == ["results/runs"]


def test_the_readme_reports_the_headline_its_run_folders_hold():
    """The README's CPU headline (each seed, and the mean in bold) is what the committed summaries say."""
    readme = (ROOT / "README.md").read_text()
    summaries = [json.loads((ROOT / c.run_dir / runfolder.SUMMARY).read_text()) for c in HEADLINES]
    for config, summary in zip(HEADLINES, summaries):
        row = next(line for line in readme.splitlines() if line.startswith(f"| [`{config.name}`]"))
        assert f"| {100 * summary['test_acc']:.2f} % | {100 * summary['test_acc_tta']:.2f} % |" in row
    mean, mean_tta = (sum(100 * s[key] for s in summaries) / len(summaries) for key in ("test_acc", "test_acc_tta"))
    assert f"| **{mean:.2f} %** | **{mean_tta:.2f} %** |" in readme


def test_the_readme_reports_the_equal_time_sweep_its_run_folders_hold():
    """The README's equal-time table (each network's epochs, its final validation and test accuracy, the mean over
    the profile's seeds) and the winner it names on validation are what the committed summaries say."""
    readme = (ROOT / "README.md").read_text()
    nets: dict[str, list[dict]] = {}
    for c in TIMED:
        nets.setdefault(f"WRN-{c.depth}-{c.width:g}", []).append(
            json.loads((ROOT / c.run_dir / runfolder.SUMMARY).read_text()))
    val = {}
    for model, summaries in nets.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {model} |"))
        low, high = min(s["epochs"] for s in summaries), max(s["epochs"] for s in summaries)
        val[model], test = (sum(100 * s[k] for s in summaries) / len(summaries) for k in ("final_val_acc", "test_acc"))
        minutes = ", ".join(f"{s['train_time_s'] / 60:.1f}" for s in summaries)
        assert row.endswith(f"| {low if low == high else f'{low}–{high}'} | {val[model]:.2f} % | {test:.2f} % | "
                            f"{minutes} min |"), row
    spent = [s["train_time_s"] / 60 for summaries in nets.values() for s in summaries]
    assert f"trained for {min(spent):.1f} to {max(spent):.1f} minutes" in " ".join(readme.split())
    best, second = sorted(val, key=val.get, reverse=True)[:2]
    assert f"**{best}** scores best on validation, {val[best] - val[second]:.2f} points ahead of {second}" in readme
