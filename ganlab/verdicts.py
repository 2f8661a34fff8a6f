"""Statistics over seeds behind the report's claims (docs/cli.md, Comparing runs).

Seeds are few (3-10), metrics are bounded counts with arms of zero spread (8 ± 0 modes) or
heavy-tailed (reverse KL), so nothing here assumes normality:

- `compare`: a group against its baseline: the difference of means, an exact **permutation test**
  of it (every split of the pooled seeds when they number up to MAX_EXACT_SPLITS, else that many
  random splits with a fixed seed), and a 95 % **percentile bootstrap interval** of the difference
  (each arm resampled on its own, BOOTSTRAP_RESAMPLES times, fixed seed). Welch's p rides along as
  an extra column. The word is provisional until `adjust` has seen the whole table;
- `adjust`: **Benjamini-Hochberg** over the comparisons of one table (the family), which sets each
  comparison's q and its word: "better" / "worse" (or "higher" / "lower" where a metric has no better
  side) at q < ALPHA, else "not significant". Never "no difference": a test that finds nothing has
  not shown equivalence, and the interval says how large a difference the data still allow;
- `within`: whether two means are within 2 standard errors of their difference (the Gaussian-blob
  flag, and the "reproduced" rule against a paper's number);
- `still_moving`: each seed's least-squares slope over every evaluation of the last 20 % of the run,
  and a one-sample t-test of the slopes against 0.

Pure functions of numbers: the report (ganlab/report.py) and the results scripts call them.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from ganlab.metrics import BETTER

ALPHA = 0.05
LAST_FRACTION = 0.2            # still_moving: the last 20 % of the evaluations
MAX_EXACT_SPLITS = 100_000     # up to this many splits the permutation test enumerates all of them
RANDOM_SPLITS = 100_000        # else this many random ones (p = (1 + hits) / (1 + RANDOM_SPLITS))
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0                       # the random splits' and the bootstrap's: a table is the same every time it is made
NOT_SIGNIFICANT = "not significant"

METHOD = (f"difference of means over seeds; two-sided exact permutation test (all splits of the pooled seeds up to "
          f"{MAX_EXACT_SPLITS:,}, else {RANDOM_SPLITS:,} random ones); {CONFIDENCE:.0%} percentile bootstrap interval of "
          f"the difference ({BOOTSTRAP_RESAMPLES:,} resamples of each arm); Benjamini-Hochberg q over the table's "
          f"comparisons; better/worse at q < {ALPHA}, else '{NOT_SIGNIFICANT}' (not a finding of equality)")


@dataclass(frozen=True)
class Verdict:
    word: str                  # better | worse | higher | lower | not significant | n/a
    p: float | None            # the permutation test's two-sided p; None when it cannot be computed
    why: str = ""              # for "n/a": what is missing
    q: float | None = None     # Benjamini-Hochberg over the table's family (set by `adjust`)
    diff: float | None = None  # mean(group) - mean(baseline)
    low: float | None = None   # the bootstrap interval of diff
    high: float | None = None
    welch: float | None = None  # Welch's t-test p, for comparison with older tables
    family: int = 0            # how many comparisons q was adjusted over

    def text(self) -> str:
        """'better (q=0.012)' / 'not significant (q=0.31)' / 'n/a (why)'."""
        if self.p is None:
            return f"n/a ({self.why})" if self.why else "n/a"
        return f"{self.word} ({q_text(self.q if self.q is not None else self.p, 'q' if self.q is not None else 'p')})"

    def interval_text(self) -> str:
        """'+1.20 [0.40, 2.00]': the difference and its bootstrap interval."""
        if self.diff is None:
            return ""
        return f"{_signed(self.diff)} {self.ci_text()}"

    def ci_text(self, digits: int = 3) -> str:
        """'[0.40, 2.00]': the bootstrap interval alone, to `digits` significant digits."""
        if self.low is None or self.high is None:
            return ""
        # Resampled means of equal values differ from them by rounding (4e-16): print those as the value.
        scale = max(abs(self.diff or 0.0), abs(self.low), abs(self.high))
        low, high = (0.0 if abs(x) <= 1e-9 * scale else x for x in (self.low, self.high))
        return f"[{_num(low, digits)}, {_num(high, digits)}]"


def pq_cell(value: float | None) -> str:
    """A p or q in a table cell: '0.012', '<0.001', '' when there is none."""
    if value is None:
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def q_text(value: float, name: str = "q") -> str:
    return f"{name}<0.001" if value < 0.001 else f"{name}={value:.3f}"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return "0" if x == 0 else f"{x:.{digits}g}"


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + _num(x)


def _finite(values) -> list[float]:
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def permutation_p(a: list[float], b: list[float]) -> float:
    """Two-sided p of the difference of means under exchangeable seeds: the share of the splits of
    the pooled values into groups of len(a) and len(b) whose |difference| is at least the observed one
    (the observed split counts). All splits when there are at most MAX_EXACT_SPLITS (5 against 5: 252;
    10 against 5: 3,003), else RANDOM_SPLITS random ones from a fixed seed."""
    pooled = np.asarray(a + b, dtype=np.float64)
    na, n = len(a), len(a) + len(b)
    total = pooled.sum()
    observed = abs(np.mean(a) - np.mean(b))
    # Splits whose difference equals the observed one up to rounding count as at least as extreme.
    tolerance = 1e-9 * max(1.0, float(np.abs(pooled).max()))
    if math.comb(n, na) <= MAX_EXACT_SPLITS:
        picks = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), na)), dtype=np.intp)
        sums = pooled[picks.reshape(-1, na)].sum(axis=1)
        diffs = np.abs(sums / na - (total - sums) / (n - na))
        return float(np.mean(diffs >= observed - tolerance))
    rng = np.random.default_rng(SEED)
    hits = 0
    for start in range(0, RANDOM_SPLITS, 10_000):  # blocks of 10,000 shuffles: bounded memory
        count = min(10_000, RANDOM_SPLITS - start)
        shuffled = rng.permuted(np.broadcast_to(pooled, (count, n)), axis=1)
        sums = shuffled[:, :na].sum(axis=1)
        hits += int(np.sum(np.abs(sums / na - (total - sums) / (n - na)) >= observed - tolerance))
    return (1 + hits) / (1 + RANDOM_SPLITS)


def bootstrap_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """The CONFIDENCE percentile bootstrap interval of mean(a) - mean(b): each arm resampled with
    replacement on its own. With 3-5 seeds the percentile interval is somewhat too narrow (it cannot
    be wider than the values allow); it shows the size of the difference, the permutation test decides."""
    rng = np.random.default_rng(SEED)
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma = xa[rng.integers(0, len(xa), (BOOTSTRAP_RESAMPLES, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), (BOOTSTRAP_RESAMPLES, len(xb)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(ma - mb, [tail, 1 - tail])
    return float(low), float(high)


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test between samples a and b; None with fewer than 2 values on a side.
    With no spread on either side the test is degenerate: p = 1 for equal means, 0 otherwise."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    if va == 0 and vb == 0:
        return 1.0 if ma == mb else 0.0
    with warnings.catch_warnings():  # nearly equal values (KL = log 8 to the last bit) warn of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def welch_p_from_stats(mean_a: float, se_a: float, n_a: int, mean_b: float, se_b: float, n_b: int) -> float:
    """Welch's p from means, standard errors and counts (what a table prints)."""
    from scipy import stats

    return float(stats.ttest_ind_from_stats(mean_a, se_a * math.sqrt(n_a), n_a, mean_b, se_b * math.sqrt(n_b), n_b,
                                            equal_var=False).pvalue)


def decide(metric: str, mean_a: float, mean_b: float, significance: float) -> str:
    """The verdict word for `a` against baseline `b`, given its q (or p before adjustment; NaN: cannot tell)."""
    if not math.isfinite(significance):
        return "n/a"
    if significance >= ALPHA:
        return NOT_SIGNIFICANT
    higher = mean_a > mean_b
    better = BETTER.get(metric)
    if better is None:  # no better side (the D gap, a diagnostic): say which way it went
        return "higher" if higher else "lower"
    return "better" if higher == (better == "higher") else "worse"


def compare(metric: str, values: list, baseline: list) -> Verdict:
    """Group values against baseline values of one metric, over seeds (non-finite values left out).
    The word is judged on p alone until `adjust` runs over the table (a single comparison is a family of one)."""
    a, b = _finite(values), _finite(baseline)
    if len(a) < 2 or len(b) < 2:
        return Verdict("n/a", None, "fewer than 2 seeds")
    p = permutation_p(a, b)
    low, high = bootstrap_interval(a, b)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    return Verdict(decide(metric, ma, mb, p), p, diff=ma - mb, low=low, high=high, welch=welch_p(a, b), family=1)


def bh_adjust(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q), in the order given: q_(i) = min over j >= i of
    m p_(j) / j, at most 1, for the p-values sorted ascending."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, ps[i] * m / rank)
        q[i] = running
    return q


def adjust(family: Iterable[tuple[str, Verdict, float, float] | None]) -> list[Verdict | None]:
    """Benjamini-Hochberg over one table's comparisons. `family` holds (metric, verdict, mean of the
    group, mean of the baseline) per comparison; None and n/a verdicts pass through and are not counted.
    Returns the verdicts with q, family size and the word judged on q."""
    family = list(family)
    tested = [i for i, item in enumerate(family) if item is not None and item[1].p is not None]
    qs = bh_adjust([family[i][1].p for i in tested])
    out: list[Verdict | None] = [item[1] if item is not None else None for item in family]
    for i, q in zip(tested, qs):
        metric, verdict, mean_a, mean_b = family[i]
        out[i] = replace(verdict, q=q, family=len(tested), word=decide(metric, mean_a, mean_b, q))
    return out


def within(mean_a: float, se_a: float | None, mean_b: float, se_b: float | None, k: float = 2.0) -> bool:
    """|a - b| <= k standard errors of the difference (a missing s.e. counts as 0)."""
    se = math.hypot(se_a or 0.0, se_b or 0.0)
    return abs(mean_a - mean_b) <= k * se


@dataclass(frozen=True)
class Movement:
    moving: bool | None   # None: cannot tell (fewer than 2 seeds or 2 evaluations in the window)
    change: float | None  # mean over seeds of the fitted slope x the window's length in steps
    se: float | None      # its standard error over seeds
    since_step: int | None


def still_moving(steps: list[int], curves: list[list]) -> Movement:
    """Whether a metric still changed over the last LAST_FRACTION of the run: each seed's least-squares
    slope against the step over every evaluation in the window (not two end points: one noisy
    evaluation cannot decide it), and a one-sample t-test of the seeds' slopes against 0 at α = 0.05.
    The window spans at least LAST_FRACTION of the intervals between evaluations. `curves` are the
    seeds' values at `steps` (the same steps for every seed); a seed with a non-finite value in the
    window is left out. `change` is the mean slope times the window's length: the change it implies."""
    if len(steps) < 2:
        return Movement(None, None, None, None)
    first = len(steps) - 1 - math.ceil(LAST_FRACTION * (len(steps) - 1))
    x = np.asarray(steps[first:], dtype=np.float64)
    span = float(x[-1] - x[0])
    changes = []
    for curve in curves:
        window = curve[first:]
        if len(_finite(window)) == len(window):
            y = np.asarray(window, dtype=np.float64)
            slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
            changes.append(slope * span)
    if len(changes) < 2:
        return Movement(None, changes[0] if changes else None, None, steps[first])
    mean = sum(changes) / len(changes)
    se = math.sqrt(sum((c - mean) ** 2 for c in changes) / (len(changes) - 1) / len(changes))
    if se == 0:
        return Movement(abs(mean) > 1e-12 * max(1.0, *map(abs, changes)), mean, se, steps[first])
    from scipy import stats

    p = 2 * stats.t.sf(abs(mean) / se, len(changes) - 1)
    return Movement(bool(p < ALPHA), mean, se, steps[first])
