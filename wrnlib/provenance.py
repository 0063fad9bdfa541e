"""What a run records about where it came from: the code's commit and the software and hardware it ran on."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .device import cpu_capability, device_name


PACKAGE = Path(__file__).resolve().parent


def git_commit(package: Path = PACKAGE) -> str:
    """The commit the code came from, with '-dirty' when the code that runs differs from it: a file of this
    package or of the notebooks folder beside it edited, added or removed (a regenerated result is no change
    to the code; a notebook counts as changed only when its cells' sources do, not its outputs).

    Read-only: git is only asked what HEAD holds and which files it tracks or ignores, never to refresh or
    write its index, and with its optional locks off, so any number of processes may ask at once and the
    user's repository is never locked. Where the code travels without its .git folder (a copy sent to a
    GPU machine), the WRNLIB_GIT_COMMIT environment variable names the commit instead.
    """
    if os.environ.get("WRNLIB_GIT_COMMIT"):
        return os.environ["WRNLIB_GIT_COMMIT"]
    env = os.environ | {"GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str, cwd: Path | None = None) -> str:
        return subprocess.run(["git", *args], cwd=cwd or top, capture_output=True, text=True, timeout=60, env=env,
                              check=True).stdout
    try:
        top = Path(git("rev-parse", "--show-toplevel", cwd=package).strip())  # the paths below are relative to it
        commit = git("rev-parse", "HEAD").strip()
        code = [os.path.relpath(p, top) for p in (package, top / "notebooks") if p.is_dir()]
        committed = {}
        for entry in git("ls-tree", "-r", "-z", "HEAD", "--", *code).split("\0"):
            if entry:
                meta, path = entry.split("\t", 1)
                committed[path] = meta.split()[2]
        on_disk = set(filter(None, git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                                       *code).split("\0")))
        changed = set(committed) ^ {p for p in on_disk if (top / p).is_file()}
        changed |= {p for p, blob in committed.items() if p not in changed and _differs(top / p, blob, git)}
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")


def _differs(path: Path, blob: str, git) -> bool:
    """Whether a file differs from its committed blob; for a notebook, whether its cells' sources do."""
    data = path.read_bytes()
    if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob:
        return False
    if path.suffix != ".ipynb":
        return True
    return _cells(data) != _cells(git("cat-file", "blob", blob).encode())


def _cells(notebook: bytes) -> list[tuple[str, str]] | None:
    try:
        cells = json.loads(notebook)["cells"]
        return [(c["cell_type"], "".join(c["source"])) for c in cells]
    except (ValueError, KeyError, TypeError):
        return None


def environment(device: torch.device, data_checksum: str, data_source: str) -> dict[str, Any]:
    import numpy
    import torchvision

    return {
        "device": device_name(device),
        "device_type": device.type,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "platform": platform.platform(),
        "cpu": cpu_capability(),
        "git_commit": git_commit(),
        "data_checksum": data_checksum,
        "data_source": data_source,
    }
