"""`make mutation`: mutation testing (mutmut, configured in pyproject.toml's [tool.mutmut]) of the modules whose
numbers the result tables publish, then the score per module and the surviving mutants (docs/testing.md).

    python scripts/mutation.py                    # run every module's mutants, then the summary
    python scripts/mutation.py verdicts confusion # only these modules' (names as in MODULES), then the summary
    python scripts/mutation.py --summary          # the summary of what mutants/ holds, running nothing
    python scripts/mutation.py --survivors        # run again only the mutants not killed last time

mutmut keeps its results in mutants/ (ignored by git). A run tests every mutant of the modules it names (mutmut runs
again the mutants it is given by name), and a module run alone adds to the others' results; `--survivors` runs only
the mutants not killed, `--fresh` deletes mutants/ first. mutmut copies ganlab/ into mutants/ once: the copies of
files that changed since, other than the mutated modules (which mutmut regenerates itself), are dropped first so that
it copies them again.
The score is killed / (all mutants run): a timeout counts as killed (the mutant spun past the tests' time limit),
"no tests" (no selected test reaches the function) and "survived" count against it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "mutants"

# name -> (source file, mutmut's globs for its mutants). Of report.py the aggregation only: the statistics of a
# row (mean_se, Stat.text, _stat), what counts (Group's counts and curves, drop_repeated_seeds / _preference,
# build_report's per-group numbers), the verdicts' wiring (_assign_baselines, _verdict_cells), the flags and the
# reference rows. Its labels, table layout and file writing are left out.
MODULES = {
    "verdicts": ("ganlab/verdicts.py", ["ganlab.verdicts.*"]),
    "confusion": ("ganlab/metrics/confusion.py", ["ganlab.metrics.confusion.*"]),
    "modes": ("ganlab/metrics/modes.py", ["ganlab.metrics.modes.*"]),
    "classes": ("ganlab/metrics/classes.py", ["ganlab.metrics.classes.*"]),
    "mmd": ("ganlab/metrics/mmd.py", ["ganlab.metrics.mmd.*"]),
    "wasserstein": ("ganlab/metrics/wasserstein.py", ["ganlab.metrics.wasserstein.*"]),
    "frechet": ("ganlab/metrics/frechet.py", ["ganlab.metrics.frechet.*"]),
    "kid": ("ganlab/metrics/kid.py", ["ganlab.metrics.kid.*"]),
    "prdc": ("ganlab/metrics/prdc.py", ["ganlab.metrics.prdc.*"]),
    "report": ("ganlab/report.py", [f"ganlab.report.{f}__mutmut_*" for f in (
        "x_mean_se", "xǁStatǁtext", "xǁGroupǁ*", "x__stat", "x__verdict_cells", "x__assign_baselines", "x__flags",
        "x__reference_rows", "x_drop_repeated_seeds", "x__preference", "x_build_report")]),
}

# mutmut's exit codes (mutmut/stats.py): what each means for the score.
KILLED = {1, 3, -24, 24, 152, 255, 36}          # a test failed, pytest broke, or it timed out
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious", None: "not checked",
          -11: "segfault", -9: "segfault", 37: "caught by type check", 2: "interrupted"}


def selected(name: str, module: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, glob) for glob in MODULES[module][1])


def results(module: str) -> dict[str, int | None]:
    meta = MUTANTS / (MODULES[module][0] + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {k: v for k, v in codes.items() if selected(k, module)}


def status(code: int | None) -> str:
    return "killed" if code in KILLED else STATUS.get(code, f"exit {code}")


def summary(modules: list[str]) -> int:
    """Print the score per module and every mutant that was not killed, with its diff; the number not killed."""
    os.chdir(REPO)
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    print(f"\n{'module':<32} {'killed':>6} / {'total':<6} {'score':>7}   not killed")
    left: list[tuple[str, str, str]] = []
    all_killed = all_total = 0
    for module in modules:
        codes = results(module)
        if not codes:
            print(f"{MODULES[module][0]:<32} {'':>6}   {'':<6} {'':>7}   (not run)")
            continue
        killed = sum(status(c) == "killed" for c in codes.values())
        others: dict[str, int] = {}
        for name, code in sorted(codes.items(), key=lambda kv: (kv[0].rpartition("__mutmut_")[0],
                                                                int(kv[0].rpartition("_")[2]))):
            if status(code) != "killed":
                others[status(code)] = others.get(status(code), 0) + 1
                left.append((module, name, status(code)))
        all_killed, all_total = all_killed + killed, all_total + len(codes)
        print(f"{MODULES[module][0]:<32} {killed:>6} / {len(codes):<6} {killed / len(codes):>7.1%}   "
              + ", ".join(f"{n} {s}" for s, n in sorted(others.items())))
    if all_total:
        print(f"{'all':<32} {all_killed:>6} / {all_total:<6} {all_killed / all_total:>7.1%}")
    if left:
        print(f"\n{len(left)} mutants not killed (show one: .venv/bin/mutmut show NAME):")
        for module, name, what in left:
            print(f"\n--- {name}: {what}")
            try:
                diff = get_diff_for_mutant(name, path=MODULES[module][0])
            except Exception as e:  # noqa: BLE001 - a diff that cannot be made still leaves the name printed
                diff = f"(no diff: {e})"
            print("\n".join(line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return len(left)


def refresh_copies() -> None:
    """mutmut copies ganlab/ into mutants/ once and regenerates only the mutated modules when they change: drop the
    copies of the other files that changed since, so that mutmut copies them again."""
    mutated = {path for path, _ in MODULES.values()}
    for copy in (MUTANTS / "ganlab").rglob("*"):
        source = REPO / copy.relative_to(MUTANTS)
        # (a copy without a source is mutmut's own: *.meta, *.spans)
        if copy.is_file() and source.is_file() and str(source.relative_to(REPO)) not in mutated:
            if source.read_bytes() != copy.read_bytes():
                copy.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"some of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--summary", action="store_true", help="print what mutants/ holds; run nothing")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ (mutmut's results) first")
    parser.add_argument("--survivors", action="store_true",
                        help="run again only the mutants the last run did not kill (after new tests: a test added "
                             "cannot bring a killed mutant back)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested at once (default: the cores)")
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; choose from: {', '.join(MODULES)}")
    modules = args.modules or list(MODULES)
    if not args.summary:
        if args.fresh and MUTANTS.exists():
            shutil.rmtree(MUTANTS)
        elif MUTANTS.exists():
            refresh_copies()
        # One thread each for BLAS and torch, as `make test`'s workers (tests/conftest.py): mutmut tests
        # --max-children mutants at once, in forked processes.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        globs = [g for m in modules for g in MODULES[m][1]]
        if args.survivors:
            globs = [name for m in modules for name, code in results(m).items() if status(code) != "killed"]
            if not globs:
                print("no mutant left to run again")
                summary(modules)
                return 0
        start = time.monotonic()
        load = os.getloadavg()
        done = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "run", "--max-children",
                               str(args.max_children), *globs], cwd=REPO, env=env)
        minutes = (time.monotonic() - start) / 60
        print(f"\nmutmut run: {minutes:.1f} min, exit status {done.returncode}; load average at the start "
              f"{load[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        if done.returncode != 0:
            return done.returncode
    summary(modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
