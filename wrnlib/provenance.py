"""What a run records about where it came from: the code's commit and the software and hardware it ran on."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .device import cpu_capability, device_name


def git_commit(path: Path = Path(__file__).resolve().parent) -> str:
    """The commit the code came from, with '-dirty' when tracked files differ from it.

    Where the code travels without its .git folder (a copy sent to a GPU machine), the
    WRNLIB_GIT_COMMIT environment variable names the commit instead.
    """
    if os.environ.get("WRNLIB_GIT_COMMIT"):
        return os.environ["WRNLIB_GIT_COMMIT"]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10)
    try:
        commit = git("rev-parse", "HEAD").stdout.strip()
        if not commit:
            return "unknown"
        # `diff-index` against HEAD sees staged and unstaged edits alike (exit 1 = differences);
        # `update-index --refresh` first, so a file merely touched is not counted as changed. A new,
        # not yet committed file inside the package is code that ran, so it makes the tree dirty too.
        git("update-index", "-q", "--refresh")
        edited = git("diff-index", "--quiet", "HEAD", "--").returncode != 0
        added = git("ls-files", "--others", "--exclude-standard", "--", ".").stdout.strip()
        return commit + ("-dirty" if edited or added else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
