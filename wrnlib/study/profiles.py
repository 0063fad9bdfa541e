"""Study profiles and the notebooks they parameterise: what the runner executes and the index page describes.

A profile is ``wrnlib/study/profiles/<name>.json``::

    {"description": "...",
     "results_root": "results/quick",          # where runs/, ablations/, figures/, summary.md go
     "data_dir_default": "sample",             # data_dir when $CIFAR10_DIR is unset (null: the loader's default)
     "cell_timeout_s": 300,                    # a cell running longer fails the study (default 3600)
     "common": {...},                          # given to every notebook that declares the parameter
     "notebooks": {"01": {...}, "02": {...}}}  # per-notebook parameters (must be declared by it)

In parameter values, the strings ``{results}`` and ``{data_dir}`` are replaced by the results root
and by ``$CIFAR10_DIR`` (else ``data_dir_default``). Notebooks run with the repository root as
their working directory, so relative paths in parameters are relative to the repository root.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

STUDY_DIR = Path(__file__).resolve().parent
REPO_ROOT = STUDY_DIR.parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = STUDY_DIR / "profiles"
DATA_ENV = "CIFAR10_DIR"


def in_repo(path: Path) -> str:
    """A path as a reader of the repository knows it: relative to its root when it lies inside, else as it is
    (what an executed notebook or the study's index names, so that it names no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class StudyError(ValueError):
    """A study cannot start: unknown profile, unknown notebook prefix, bad parameters."""


def known_profiles(profiles_dir: str | Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.json"))


def load_profile(name: str, profiles_dir: str | Path = PROFILES_DIR) -> dict[str, Any]:
    """The profile's JSON; a clear StudyError listing the known profiles when there is none by that name."""
    path = Path(profiles_dir) / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        raise StudyError(f"unknown study profile {name!r}; known profiles: {', '.join(known_profiles(profiles_dir))} "
                         f"(files in {profiles_dir})")
    try:
        profile = json.loads(path.read_text())
    except ValueError as exc:
        raise StudyError(f"profile {path} is not valid JSON: {exc}") from exc
    if not isinstance(profile.get("notebooks"), dict):
        raise StudyError(f"profile {path} needs a 'notebooks' object mapping notebook prefixes to parameters")
    return profile


def _substitute(value: Any, table: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, replacement in table.items():
            token = "{" + key + "}"
            if value == token:
                return replacement  # a whole-string placeholder keeps its type (None, a path string)
            if token in value:
                if replacement is None:
                    raise StudyError(f"parameter {value!r} uses {token}, which has no value here")
                value = value.replace(token, str(replacement))
        return value
    if isinstance(value, list):
        return [_substitute(v, table) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, table) for k, v in value.items()}
    return value


def resolve_data_dir(profile: dict[str, Any]) -> str | None:
    """$CIFAR10_DIR, else the profile's data_dir_default; an existing relative folder is made absolute
    (the kernels run in the repository root, which need not be the caller's working directory)."""
    value = os.environ.get(DATA_ENV) or profile.get("data_dir_default")
    if value and value != "sample" and Path(value).expanduser().is_dir():
        return str(Path(value).expanduser().resolve())
    return value


def notebook_parameters(profile: dict[str, Any], prefix: str, declared: set[str] | None = None, *,
                        results_root: str | Path | None = None,
                        overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The parameters one notebook gets: profile common (those in ``declared``) + its own + overrides.

    ``overrides`` maps a prefix (or "*" for every notebook) to parameter values; "*" entries, like
    "common", only reach notebooks that declare the parameter.
    """
    root = str(results_root) if results_root is not None else profile.get("results_root", "results")
    table = {"results": root, "data_dir": resolve_data_dir(profile)}
    overrides = overrides or {}

    def shared(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if declared is None or k in declared}

    params = shared(profile.get("common", {}))
    params.update(profile["notebooks"].get(prefix, {}))
    params.update(shared(overrides.get("*", {})))
    params.update(overrides.get(prefix, {}))
    return _substitute(copy.deepcopy(params), table)


def find_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> dict[str, Path]:
    """{prefix: path} of ``NN_*.ipynb`` in the folder, in order."""
    found = {}
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        prefix = path.name.split("_", 1)[0]
        if prefix.isdigit():
            found[prefix] = path
    return found


def declared_parameters(path: str | Path) -> set[str]:
    """Names assigned in the notebook's ``parameters``-tagged cell."""
    import papermill as pm

    return set(pm.inspect_notebook(str(path)).keys())
