"""The benchmark scripts still run against the current config layout (they are not imported by the
package, so nothing else would notice a break). Tiny step counts: these check that they work and
print their figures, not the figures themselves."""

import re
import subprocess
import sys

from conftest import REPO


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)


def test_bench_loop_prints_its_ratios():
    out = script("scripts/bench_loop.py", "--steps", "20", "--repeats", "1", "eval.every=10", "eval.samples=200",
                 "eval.w_samples=100")
    assert out.returncode == 0, out.stderr
    assert re.search(r"wall-clock.*\d+\.\d+", out.stdout) and re.search(r"ratio", out.stdout, re.IGNORECASE)


def test_bench_remedies_prints_a_row_per_remedy():
    out = script("scripts/bench_remedies.py", "--steps", "5", "--repeats", "1", "--remedies", "none,pacgan,drs")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()
            if line.split() and line.split()[0] in ("none", "pacgan", "drs")}
    assert set(rows) == {"none", "pacgan", "drs"} and rows["none"][1] == "1.00"
    assert all(float(row[2]) > 0 for row in rows.values())  # the evaluation time column
