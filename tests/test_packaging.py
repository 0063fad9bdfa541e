"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages and versions."""
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch", "ray-core": "ray"}  # conda-forge name -> PyPI name


def parse(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(parse(r) for r in project["dependencies"] + extras["dev"] + extras["cluster"])
    conda, section = {}, None
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^[a-z]", line):
            section = line.split(":")[0]
        m = re.match(r"^  - ([A-Za-z].*)$", line)  # top-level entries of the dependencies list
        if section == "dependencies" and m and not m.group(1).startswith(("python", "pip")):
            name, spec = parse(m.group(1))
            conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == wanted
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()
