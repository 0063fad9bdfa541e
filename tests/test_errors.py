"""How problems are told: one line with the cause and the fix, naming each setting as the caller gives it."""
from __future__ import annotations

import pytest
import torch

from wrnlib import TrainConfig
from wrnlib.cli import main
from wrnlib.errors import command_line, for_the_user, one_line, setting


@pytest.mark.parametrize("name, value, python, flag", [
    ("batch_size", None, "batch_size", "--batch-size"),
    ("lr", 0.1, "lr=0.1", "--lr 0.1"),
    ("precision", "fp32", "precision='fp32'", "--precision fp32"),
    ("save_model", True, "save_model=True", "--save-model"),
    ("flip", False, "flip=False", "--no-flip"),
    ("existing", "resume", "existing='resume'", "--resume"),
])
def test_a_setting_is_spelt_as_python_or_as_a_flag(name, value, python, flag):
    assert setting(name, value) == python
    with command_line():
        assert setting(name, value) == flag
    assert setting(name, value) == python  # only inside


def test_the_same_mistake_in_python_and_on_the_command_line(tmp_path, capsys):
    with pytest.raises(ValueError) as raised:
        TrainConfig(name="r", crop_padding=32).validate()
    assert str(raised.value).endswith("got 32: lower crop_padding or use pad_mode='constant'")
    assert main(["train", "--crop-padding", "32", "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.endswith("got 32: lower --crop-padding or use --pad-mode constant\n")


def test_an_expected_problem_is_its_message_and_anything_else_keeps_its_traceback():
    assert for_the_user(ValueError("lr must be > 0")) == "lr must be > 0"
    assert for_the_user(FileNotFoundError("no such run")) == "no such run"
    assert for_the_user(FloatingPointError("loss became NaN")) == "loss became NaN"
    assert for_the_user(KeyError("bug")) is None and for_the_user(RuntimeError("bug")) is None
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    assert for_the_user(oom) == "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); lower batch_size " \
                                "or the model size"
    with command_line():
        assert for_the_user(oom).endswith("lower --batch-size or the model size")


def test_a_bug_is_not_dressed_as_a_users_mistake(monkeypatch):
    import wrnlib.cli as cli

    monkeypatch.setattr(cli, "cmd_params", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        main(["params"])


def test_one_line_names_the_type_and_the_first_line():
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(RuntimeError()) == "RuntimeError"
