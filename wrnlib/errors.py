"""How wrnlib tells a problem: one line with the cause and the fix, naming each setting the way the caller gives
it (``--batch-size`` on the command line, ``batch_size`` in Python)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any

_COMMAND_LINE = contextvars.ContextVar("wrnlib_command_line", default=False)
EXPECTED = (ValueError, OSError, FloatingPointError)  # bad values, data, run folders, a full disk, a NaN loss


@contextlib.contextmanager
def command_line():
    """Inside, messages name settings as flags (the command line sets this around each command)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    return _COMMAND_LINE.get()


def setting(name: str, value: Any = None) -> str:
    """A setting as the caller gives it: ``--lr 0.1`` / ``lr=0.1``, ``--save-model`` / ``save_model=True``; fit's
    ``existing="resume"`` is the command line's ``--resume``."""
    if not _COMMAND_LINE.get():
        return name if value is None else f"{name}={value!r}"
    if name == "existing":
        return f"--{value}"
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return flag if value is None else f"{flag} {value}"


def one_line(exc: BaseException) -> str:
    """An error as one line: its type and the first line of its message (a sweep's record of a failed run)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def for_the_user(exc: BaseException) -> str | None:
    """What the command line prints after "error: " for an expected problem; None for anything else (a bug,
    which keeps its traceback)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory ({str(exc).splitlines()[0]}); lower {setting('batch_size')} or the model size"
    return str(exc) if isinstance(exc, EXPECTED) else None
