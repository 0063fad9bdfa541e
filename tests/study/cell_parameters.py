"""What a notebook's code sees of its parameters: the defaults of its parameters cell, then a profile's values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from wrnlib.study import notebook, profiles


def defaults(path: Path) -> dict[str, Any]:
    """The names the notebook's ``parameters`` cell assigns, with their values."""
    cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict[str, Any] = {}
    exec(cell.source, namespace)  # the committed cell: assignments of literals
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def namespace(profile: str, prefix: str) -> dict[str, Any]:
    """The parameters notebook ``prefix`` runs with under ``profile``: its defaults, replaced by the profile's."""
    path = profiles.find_notebooks()[prefix]
    given = profiles.notebook_parameters(profiles.load_profile(profile), prefix, profiles.declared_parameters(path))
    return defaults(path) | given


def on_cifar10(params: dict[str, Any]) -> notebook.DataChoice:
    """The data notebook.choose_data picks on the complete CIFAR-10: the parameters' own folder and sizes."""
    return notebook.DataChoice(params["data_dir"], params["val_size"], params["train_limit"], params["test_limit"],
                               notebook.CIFAR10_TRAIN_IMAGES, notebook.CIFAR10_TEST_IMAGES)
