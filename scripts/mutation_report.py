"""Mutation score per module, from mutmut's results, with the survivors judged equivalent set apart.

``make mutation`` runs ``mutmut run`` (configured in pyproject.toml's ``[tool.mutmut]``) and then this
script, which reads mutmut's per-file results (``mutants/<path>.meta``) and the committed list of
equivalent mutants (``tests/mutation_equivalents.toml``: mutant name -> why no test can tell it from
the original), and writes ``results/mutation/report.md`` and ``report.json``:

- per module: mutants, killed (a failing test, a timeout or a crash of the tests; the timeouts also counted
  apart), survived, equivalent
  (survived and listed), needing CUDA (survived and listed with a reason that starts "CUDA only:": a GPU path
  that no test on a machine without one can reach), without tests, not yet checked, and the score: killed /
  (mutants - equivalent - needing CUDA - not checked), partial while mutants are still unchecked;
- every survivor that is not listed as equivalent, by name (``mutmut show NAME`` prints its diff);
- listed equivalents that are no longer survivors (killed since, or renumbered by a change to their
  function): the list is stale there and wants a look.

It also keeps each mutant's result, with the hash of its function, in ``results/mutation/state.jsonl`` (one
line per function). ``mutants/`` is not in git, so a new checkout starts without mutmut's results; ``--restore``
(which ``make mutation`` runs first) writes them back as mutmut's ``.meta`` files, and mutmut then checks again only
the mutants of functions whose code changed since (their hash differs) and new ones.

``--snapshot before`` also keeps the counts as ``results/mutation/before.json``; the report then shows
them beside the current ones.

    python scripts/mutation_report.py [--mutants mutants] [--out results/mutation] [--snapshot NAME] [--restore]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from wrnlib.device import cpu_model  # noqa: E402  (needs the path above)

EQUIVALENTS = REPO_ROOT / "tests" / "mutation_equivalents.toml"

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into what the score needs
KILLED_CODES = {1, 3, 24, -24, 152, 255, 36, -11, -9}  # a failing test, a timeout, or the tests' process killed
TIMEOUT_CODES = {24, -24, 152, 255, 36}  # of those, the timeouts: shown apart, since a slow machine makes them too
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
# A listed survivor whose reason starts so is not equivalent: it changes what a GPU run does, which a CPU-only
# machine (where `make mutation` runs) cannot show. It is counted apart, and out of the score, for that reason.
CUDA_ONLY = "CUDA only:"


@dataclass
class ModuleCounts:
    module: str
    mutants: int = 0
    killed: int = 0
    timed_out: int = 0  # of the killed: by mutmut's timeout rather than a failing test
    survived: int = 0
    equivalent: int = 0
    needs_cuda: int = 0
    no_tests: int = 0
    not_checked: int = 0
    other: int = 0  # skipped, interrupted, suspicious: neither a kill nor a survivor
    survivors: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)  # the timed-out kills, by name
    equivalents: list[str] = field(default_factory=list)  # the listed survivors (either kind) that survived here

    @property
    def score(self) -> float | None:
        """Killed / checked non-equivalent mutants (those without tests count as not killed; those not checked
        yet, in an unfinished run, count neither way: the table shows how many there are; nor do those that need
        CUDA to be told apart)."""
        relevant = self.mutants - self.equivalent - self.needs_cuda - self.not_checked
        return self.killed / relevant if relevant else None


def module_name(meta_path: Path, mutants_dir: Path) -> str:
    """``mutants/wrnlib/study/report.py.meta`` -> ``wrnlib.study.report``."""
    relative = meta_path.relative_to(mutants_dir).as_posix().removesuffix(".py.meta")
    return relative.replace("/", ".")


def count(mutants_dir: Path, equivalents: dict[str, str]) -> list[ModuleCounts]:
    """Counts per mutated module, from every ``*.py.meta`` file mutmut left in ``mutants_dir``."""
    metas = sorted(mutants_dir.rglob("*.py.meta"))
    if not metas:
        raise SystemExit(f"no mutmut results in {mutants_dir}/: run `make mutation` (or `mutmut run`) first")
    out = []
    for meta_path in metas:
        exit_codes: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
        counts = ModuleCounts(module_name(meta_path, mutants_dir), mutants=len(exit_codes))
        for name, code in sorted(exit_codes.items()):
            if code is None:
                counts.not_checked += 1
            elif code in KILLED_CODES:
                counts.killed += 1
                if code in TIMEOUT_CODES:
                    counts.timed_out += 1
                    counts.timeouts.append(name)
            elif code in SURVIVED_CODES and name in equivalents:
                if equivalents[name].startswith(CUDA_ONLY):
                    counts.needs_cuda += 1
                else:
                    counts.equivalent += 1
                counts.equivalents.append(name)
            elif code in SURVIVED_CODES:
                counts.survived += 1
                counts.survivors.append(name)
            elif code in NO_TESTS_CODES:
                counts.no_tests += 1
                counts.survivors.append(name)
            else:
                counts.other += 1
        if counts.mutants:
            out.append(counts)
    return out


def stale_equivalents(counts: list[ModuleCounts], equivalents: dict[str, str]) -> list[str]:
    """Listed equivalents that are not survivors now (killed, renumbered or gone)."""
    return sorted(set(equivalents) - {name for c in counts for name in c.equivalents})


def recheck_names(counts: list[ModuleCounts]) -> list[str]:
    """The survivors not listed as equivalent, and the timeouts: what a re-run may judge differently."""
    return sorted({name for c in counts for name in (*c.survivors, *c.timeouts)})


def from_json(modules: dict[str, dict]) -> dict[str, ModuleCounts]:
    """A snapshot's per-module counts (as ``report.json`` / ``before.json`` hold them) back as ModuleCounts."""
    return {name: ModuleCounts(**{k: v for k, v in m.items() if k != "score"}) for name, m in modules.items()}


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise SystemExit("reading tests/mutation_equivalents.toml needs Python >= 3.11 (tomllib)") from None
    listed = tomllib.loads(path.read_text())
    missing_reason = [name for name, reason in listed.items() if not isinstance(reason, str) or not reason.strip()]
    if missing_reason:
        raise SystemExit(f"{path}: every equivalent mutant needs a one-line reason; none for {missing_reason}")
    return listed


def state_lines(mutants_dir: Path) -> list[str]:
    """Each mutated function's hash and its mutants' exit codes, one JSON line per function, from mutmut's
    ``.meta`` files (``mutants/wrnlib/train.py.meta`` -> file ``wrnlib/train.py``)."""
    lines = []
    for meta_path in sorted(mutants_dir.rglob("*.py.meta")):
        meta = json.loads(meta_path.read_text())
        module = module_name(meta_path, mutants_dir)
        by_function: dict[str, dict[str, int | None]] = {}
        for name, code in meta["exit_code_by_key"].items():
            function, _, number = name.removeprefix(module + ".").partition("__mutmut_")
            by_function.setdefault(function, {})[number] = code
        hashes = meta.get("hash_by_function_name", {})
        for function in sorted(by_function):
            lines.append(json.dumps({"file": meta_path.relative_to(mutants_dir).as_posix().removesuffix(".meta"),
                                     "function": function, "hash": hashes.get(function),
                                     "exit_codes": by_function[function]}, ensure_ascii=False))
    return lines


def restore(state: Path, mutants_dir: Path) -> list[Path]:
    """Write the ``.meta`` files that ``state`` (as ``state_lines`` wrote it) holds and ``mutants_dir`` lacks; an
    existing one is left as it is (its results are newer). A function without a hash is checked again by mutmut."""
    metas: dict[str, dict] = {}
    for line in state.read_text().splitlines():
        entry = json.loads(line)
        module = module_name(mutants_dir / f"{entry['file']}.meta", mutants_dir)
        meta = metas.setdefault(entry["file"], {"exit_code_by_key": {}, "hash_by_function_name": {},
                                                "type_check_error_by_key": {}, "durations_by_key": {},
                                                "estimated_durations_by_key": {}})
        if entry["hash"] is not None:
            meta["hash_by_function_name"][entry["function"]] = entry["hash"]
        for number, code in entry["exit_codes"].items():
            meta["exit_code_by_key"][f"{module}.{entry['function']}__mutmut_{number}"] = code
    written = []
    for file, meta in metas.items():
        path = mutants_dir / f"{file}.meta"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(meta, indent=4, ensure_ascii=False))
            written.append(path)
    return written


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(mutants_dir: Path) -> dict[str, str]:
    """The report's environment. ``stats_commit``: the commit where mutmut last mapped the tests to the functions
    they run (its stats); the results are those kept since mutmut's first full pass (``state.jsonl``), each mutant
    checked with the code and tests of its own run, up to ``report_commit``."""
    stats = mutants_dir / "mutmut-stats.json"
    tested = json.loads(stats.read_text()).get("git_commit") if stats.exists() else None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "wrnlib", "tests"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"mutmut": _version("mutmut"), "torch": _version("torch"), "python": platform.python_version(),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "stats_commit": tested or "unknown",
            "report_commit": commit + (" (with uncommitted changes to wrnlib/ or tests/)" if dirty else ""),
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _total(counts: Iterable[ModuleCounts]) -> ModuleCounts:
    counts = list(counts)
    return ModuleCounts("all", **{k: sum(getattr(c, k) for c in counts) for k in
                                  ("mutants", "killed", "timed_out", "survived", "equivalent", "needs_cuda",
                                   "no_tests", "not_checked", "other")})


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def markdown(counts: list[ModuleCounts], env: dict[str, str], equivalents: dict[str, str], stale: list[str],
             before: dict[str, ModuleCounts] | None) -> str:
    total = _total(counts)
    if before:
        before = {**before, "all": _total(before.values())}
    head = ["module", "mutants", "killed", "of which timed out", "survived", "equivalent", "needs CUDA", "no tests",
            "not checked", "score"]
    if before:
        head.append("score before")
    lines = ["# Mutation testing report", "",
             "Written by `scripts/mutation_report.py` from the results of `make mutation` (mutmut over the modules "
             "and fast tests that pyproject.toml's `[tool.mutmut]` names). Score: killed / (mutants - equivalent - "
             "needs CUDA - not checked); \"needs CUDA\": survivors that change only what a GPU run does, which no "
             "test on this CPU-only machine can reach; a timeout or a crash of the tests counts as killed (the "
             "timeouts also apart), a mutant no test reaches as not killed; a module with mutants not checked yet has "
             "a partial score. "
             "Equivalents are listed with their reasons in `tests/mutation_equivalents.toml`.", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in [*counts, total]:
        row = [f"`{c.module}`" if c.module != "all" else "**all**", c.mutants, c.killed, c.timed_out, c.survived,
               c.equivalent, c.needs_cuda, c.no_tests, c.not_checked, _pct(c.score)]
        if before:
            row.append(_pct(before[c.module].score) if c.module in before else "–")
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    survivors = [name for c in counts for name in c.survivors]
    lines += ["", f"## Survivors not judged equivalent ({len(survivors)})", ""]
    lines += [f"- `{name}`" for name in survivors] or ["None."]
    if stale:
        lines += ["", "## Listed as equivalent but no longer surviving", "",
                  "Killed since, or renumbered by a change to their function: check and update the list.", ""]
        lines += [f"- `{name}`" for name in stale]
    reasons = Counter(equivalents.values())
    lines += ["", f"## Equivalent and CUDA-only mutants listed ({len(equivalents)}), by reason", ""]
    lines += [f"- {n} x {reason}" for reason, n in reasons.most_common()] or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=Path, default=REPO_ROOT / "mutants")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "mutation")
    parser.add_argument("--equivalents", type=Path, default=EQUIVALENTS)
    parser.add_argument("--snapshot", help="also keep these counts as <out>/<SNAPSHOT>.json (e.g. 'before')")
    parser.add_argument("--restore", action="store_true",
                        help="only write back the results kept in <out>/state.jsonl as mutmut's .meta files where "
                             "--mutants lacks them (`make mutation` does this first)")
    parser.add_argument("--recheck", action="store_true",
                        help="only print the names worth running again (`make mutation-recheck`): the survivors not "
                             "listed as equivalent (new tests may kill them; mutmut only re-runs a mutant it is "
                             "named) and the timeouts (a busy machine makes them too)")
    args = parser.parse_args(argv)

    if args.restore:
        state = args.out / "state.jsonl"
        written = restore(state, args.mutants) if state.exists() else []
        print(f"restored mutmut's results for {len(written)} files from {state}")
        return 0
    equivalents = load_equivalents(args.equivalents)
    counts = count(args.mutants, equivalents)
    if args.recheck:
        print(" ".join(recheck_names(counts)))
        return 0
    env = environment(args.mutants)
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "modules": {c.module: {**asdict(c), "score": c.score} for c in counts}}
    if args.snapshot:
        (args.out / f"{args.snapshot}.json").write_text(json.dumps(data, indent=2) + "\n")
    before_path = args.out / "before.json"
    before = from_json(json.loads(before_path.read_text())["modules"]) if before_path.exists() else None
    (args.out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "state.jsonl").write_text("\n".join(state_lines(args.mutants)) + "\n")
    text = markdown(counts, env, equivalents, stale_equivalents(counts, equivalents), before)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
