"""The mutation report counts mutmut's results per module, sets listed equivalents apart and flags stale ones."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as the report script needs

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_report", REPO / "scripts" / "mutation_report.py")
report = sys.modules["mutation_report"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(report)


def _meta(mutants: Path, path: str, codes: dict[str, int | None]) -> None:
    meta = mutants / f"{path}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {}, "durations_by_key": {},
                                "estimated_durations_by_key": {}}))


@pytest.fixture
def mutants(tmp_path):
    root = tmp_path / "mutants"
    # killed by a test (1), a timeout (36), survived (0), no tests (33), not checked (None)
    _meta(root, "wrnlib/model.py", {"wrnlib.model.x_a__mutmut_1": 1, "wrnlib.model.x_a__mutmut_2": 0,
                                    "wrnlib.model.x_a__mutmut_3": 0, "wrnlib.model.x_b__mutmut_1": 36,
                                    "wrnlib.model.x_b__mutmut_2": 33, "wrnlib.model.x_b__mutmut_3": None})
    _meta(root, "wrnlib/study/results.py", {"wrnlib.study.results.x_c__mutmut_1": 1})
    return root


def test_counts_per_module_with_equivalents_apart(mutants):
    equivalents = {"wrnlib.model.x_a__mutmut_3": "changes only a log message"}
    counts = {c.module: c for c in report.count(mutants, equivalents)}
    assert set(counts) == {"wrnlib.model", "wrnlib.study.results"}
    model = counts["wrnlib.model"]
    assert (model.mutants, model.killed, model.survived, model.equivalent, model.no_tests, model.not_checked) == \
        (6, 2, 1, 1, 1, 1)
    assert model.timed_out == 1  # the timeout is one of the two killed, and counted apart too
    assert model.survivors == ["wrnlib.model.x_a__mutmut_2", "wrnlib.model.x_b__mutmut_2"]
    assert model.score == pytest.approx(2 / 4)  # one without tests counts as not killed, one unchecked not at all
    assert counts["wrnlib.study.results"].score == 1.0


def test_survivors_that_only_a_gpu_could_tell_apart_are_counted_apart_and_out_of_the_score(mutants):
    listed = {"wrnlib.model.x_a__mutmut_2": "CUDA only: the fused kernel is chosen on a GPU",
              "wrnlib.model.x_a__mutmut_3": "changes only a log message"}
    model = {c.module: c for c in report.count(mutants, listed)}["wrnlib.model"]
    assert (model.killed, model.survived, model.equivalent, model.needs_cuda) == (2, 0, 1, 1)
    assert model.survivors == ["wrnlib.model.x_b__mutmut_2"] and model.score == pytest.approx(2 / 3)
    text = report.markdown([model], {}, listed, [], None)
    assert "| killed | of which timed out | survived |" in text and "| needs CUDA |" in text
    assert "| `wrnlib.model` | 6 | 2 | 1 | 0 | 1 | 1 | 1 | 1 | 66.7 % |" in text


def test_recheck_names_the_survivors_not_listed_and_the_timeouts(mutants, capsys):
    counts = report.count(mutants, {"wrnlib.model.x_a__mutmut_3": "changes only a log message"})
    # survived (0), no tests (33) and the timeout (36); not the killed, the listed or the unchecked
    assert report.recheck_names(counts) == ["wrnlib.model.x_a__mutmut_2", "wrnlib.model.x_b__mutmut_1",
                                            "wrnlib.model.x_b__mutmut_2"]
    assert report.main(["--mutants", str(mutants), "--out", str(mutants / "out"), "--recheck",
                        "--equivalents", str(mutants / "none.toml")]) == 0
    assert capsys.readouterr().out.split() == ["wrnlib.model.x_a__mutmut_2", "wrnlib.model.x_a__mutmut_3",
                                               "wrnlib.model.x_b__mutmut_1", "wrnlib.model.x_b__mutmut_2"]
    assert not (mutants / "out").exists()  # names only: no report written


def test_equivalents_that_no_longer_survive_are_stale(mutants):
    equivalents = {"wrnlib.model.x_a__mutmut_2": "r", "wrnlib.model.x_a__mutmut_1": "r", "wrnlib.model.gone": "r"}
    counts = report.count(mutants, equivalents)
    assert report.stale_equivalents(counts, equivalents) == ["wrnlib.model.gone", "wrnlib.model.x_a__mutmut_1"]


def test_report_lists_survivors_and_compares_with_a_snapshot(mutants, tmp_path):
    out = tmp_path / "out"
    assert report.main(["--mutants", str(mutants), "--out", str(out), "--equivalents", str(tmp_path / "none.toml"),
                        "--snapshot", "before"]) == 0
    saved = json.loads((out / "before.json").read_text())["modules"]["wrnlib.model"]
    assert saved["killed"] == 2 and saved["score"] == pytest.approx(2 / 5)
    text = (out / "report.md").read_text()
    assert "`wrnlib.model.x_a__mutmut_2`" in text and "`wrnlib.model.x_a__mutmut_1`" not in text
    assert "score before" in text and "40.0 %" in text


def test_an_equivalent_without_a_reason_is_refused(tmp_path):
    listed = tmp_path / "eq.toml"
    listed.write_text('"wrnlib.model.x_a__mutmut_2" = ""\n')
    with pytest.raises(SystemExit, match="reason"):
        report.load_equivalents(listed)


def test_no_results_says_how_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match="make mutation"):
        report.count(tmp_path, {})


def test_the_committed_equivalents_each_name_a_mutated_module_and_a_reason():
    listed = tomllib.loads(report.EQUIVALENTS.read_text()) if report.EQUIVALENTS.exists() else {}
    modules = {Path(p).with_suffix("").as_posix().replace("/", ".")
               for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]}
    for name, reason in listed.items():
        assert name.rsplit(".", 1)[0] in modules, name
        assert isinstance(reason, str) and len(reason.split()) >= 3, name


def test_the_mutation_selection_leaves_out_only_the_tests_that_need_ray():
    """`-k "not ray"` matches substrings: a fast test named "..._arrays" would silently drop out of mutmut's runs
    (it did: the npz tests, so their kills were never counted). Every test it deselects must be a Ray one."""
    import re
    import subprocess

    args = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    files = [a for a in args if a.endswith(".py")]

    def collected(*extra: str) -> set[str]:
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *files, *extra], cwd=REPO, capture_output=True, text=True, check=True).stdout
        return {line.strip() for line in out.splitlines() if "::" in line}

    def needs_ray(name: str) -> bool:
        return re.search(r"(^|_)ray(_|$)", name) is not None

    everything, selected = collected(), collected(*args[len(files):])
    assert selected and selected < everything
    dropped = sorted(everything - selected)
    assert [t for t in dropped if not needs_ray(t.split("::")[-1].split("[")[0])] == []
    # and the other way round: a test that starts Ray (its fixture) has "ray" in its name, or every mutant it
    # reaches would start a cluster (one did, and its mutants timed out instead of being judged)
    import ast

    for path in files:
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if "ray_session" in {a.arg for a in node.args.args}:
                    assert needs_ray(node.name), f"{path}::{node.name} starts Ray but mutmut's -k would keep it"


def test_the_kept_state_restores_mutmuts_results_where_they_are_missing(mutants, tmp_path):
    assert report.main(["--mutants", str(mutants), "--out", str(tmp_path / "out"),
                        "--equivalents", str(tmp_path / "none.toml")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "state.jsonl").read_text().splitlines()]
    assert [(e["file"], e["function"], e["exit_codes"]) for e in lines] == [
        ("wrnlib/model.py", "x_a", {"1": 1, "2": 0, "3": 0}), ("wrnlib/model.py", "x_b", {"1": 36, "2": 33, "3": None}),
        ("wrnlib/study/results.py", "x_c", {"1": 1})]
    fresh = tmp_path / "fresh"
    kept = fresh / "wrnlib" / "study" / "results.py.meta"
    kept.parent.mkdir(parents=True)
    kept.write_text("newer")
    assert report.main(["--restore", "--mutants", str(fresh), "--out", str(tmp_path / "out")]) == 0
    assert kept.read_text() == "newer"  # a result already there is newer than the kept one
    restored = json.loads((fresh / "wrnlib" / "model.py.meta").read_text())
    assert restored["exit_code_by_key"] == json.loads((mutants / "wrnlib" / "model.py.meta").read_text())[
        "exit_code_by_key"]
    assert report.main(["--restore", "--mutants", str(tmp_path / "none"), "--out", str(tmp_path / "nothing")]) == 0


def test_mutmut_keeps_the_restored_results_of_unchanged_functions_and_checks_changed_ones_again(tmp_path,
                                                                                              monkeypatch):
    pytest.importorskip("mutmut")
    from mutmut.__main__ import create_mutants_for_file
    from mutmut.mutation.file_mutation import mutate_file_contents

    monkeypatch.chdir(tmp_path)
    source = Path("pkg/m.py")
    source.parent.mkdir()
    before = "def a(x):\n    return x + 1\n\n\ndef b(x):\n    return x * 2\n"
    hashes = mutate_file_contents(str(source), before).hash_by_function_name
    Path("state.jsonl").write_text("".join(
        json.dumps({"file": "pkg/m.py", "function": f, "hash": hashes[f], "exit_codes": {"1": 1, "2": 0}}) + "\n"
        for f in ("x_a", "x_b")))
    source.write_text(before.replace("x * 2", "x * 3"))  # b changed since the results were kept
    report.restore(Path("state.jsonl"), Path("mutants"))
    create_mutants_for_file(source, Path("mutants/pkg/m.py"))
    codes = json.loads(Path("mutants/pkg/m.py.meta").read_text())["exit_code_by_key"]
    assert {k: v for k, v in codes.items() if ".x_a__" in k} == {"pkg.m.x_a__mutmut_1": 1, "pkg.m.x_a__mutmut_2": 0}
    assert {v for k, v in codes.items() if ".x_b__" in k} == {None}
