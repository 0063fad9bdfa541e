import json
import subprocess
import sys

from wrnlib.cli import main
from wrnlib.model import WideResNet, count_parameters


def test_params_reports_the_model(capsys):
    assert main(["params", "--depth", "28", "--width", "3.5"]) == 0
    out = capsys.readouterr().out
    assert f"{count_parameters(WideResNet(28, 3.5)):,}" in out
    assert "56 / 112 / 224" in out


def tiny_args(tmp_path, *extra):
    return ["train", "--data-dir", "sample", "--depth", "10", "--width", "1", "--epochs", "1", "--batch-size", "64",
            "--val-size", "200", "--out-dir", str(tmp_path), "--name", "cli", "--no-progress", *extra]


def test_train_evaluate_and_resume_from_the_command_line(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--no-flip", "--step-milestones", "0.5", "0.75", "--save-model")) == 0
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert config["flip"] is False and config["step_milestones"] == [0.5, 0.75] and config["epochs"] == 1
    assert "final test accuracy" in capsys.readouterr().out

    assert main(["evaluate", str(tmp_path / "cli")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_acc"] == report["recorded_test_acc"]

    # a second run under the same name is refused, and nothing is lost
    assert main(tiny_args(tmp_path)) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_values_exit_with_one_clear_line(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--width", "-1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: width") and "Traceback" not in err
    assert main(tiny_args(tmp_path, "--schedule", "nope")) == 2
    assert "cosine" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "wrnlib", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("params", "train", "evaluate", "bench", "study"):
        assert command in result.stdout


def test_a_misspelt_flag_gets_the_one_it_was_close_to(capsys):
    assert main(["train", "--widht", "1"]) == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --widht 1; did you mean --width? (see "
                                       "`python -m wrnlib train --help`)\n")
    assert main(["evaluate", "runs/x", "--no-tda"]) == 2  # each command suggests from its own flags
    assert "did you mean --no-tta?" in capsys.readouterr().err
    assert main(["train", "--zzzzzz"]) == 2  # nothing close: no guess
    assert capsys.readouterr().err == "error: unrecognized arguments: --zzzzzz (see `python -m wrnlib train --help`)\n"


def test_the_help_leads_from_the_commands_to_their_flags(capsys):
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "`python -m wrnlib COMMAND --help` lists its flags" in out and "python -m wrnlib train --help" in out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--width WIDTH" in out and "(default: 3.5)" in out and "--resume" in out


def test_the_study_help_lists_its_profiles(capsys):
    from wrnlib.study.profiles import known_profiles

    assert main(["study", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"one of {', '.join(known_profiles())}" in out and known_profiles() == ["cpu", "full", "paper", "quick"]
