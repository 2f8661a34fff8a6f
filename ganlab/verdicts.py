"""Statistics over seeds behind the report's claims (DESIGN 3, "What a number is compared with").

- `compare`: a group against its baseline, by Welch's t-test at α = 0.05 (unequal variances: a
  remedy can make runs more or less variable): "better" / "worse" / "no difference", with p;
- `within`: whether two means are within 2 standard errors of their difference (the Gaussian-blob
  flag, and the "reproduced" rule against a paper's number);
- `still_moving`: whether a row's metric changed over the last 20 % of its evaluations by more than
  2 standard errors of that change.

Pure functions of numbers: the report (ganlab/report.py) and the results scripts call them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from ganlab.metrics import BETTER

ALPHA = 0.05
LAST_FRACTION = 0.2  # still_moving: the last 20 % of the evaluations


@dataclass(frozen=True)
class Verdict:
    word: str            # better | worse | no difference | higher | lower | n/a
    p: float | None      # Welch's two-sided p-value; None when it cannot be computed
    why: str = ""        # for "n/a": what is missing

    def text(self) -> str:
        if self.p is None:
            return f"n/a ({self.why})" if self.why else "n/a"
        return f"{self.word} ({p_text(self.p)})"


def p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _finite(values) -> list[float]:
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


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


def decide(metric: str, mean_a: float, mean_b: float, p: float) -> str:
    """The verdict word for `a` against baseline `b`, given Welch's p (NaN: cannot tell)."""
    if not math.isfinite(p):
        return "n/a"
    if p >= ALPHA:
        return "no difference"
    higher = mean_a > mean_b
    better = BETTER.get(metric)
    if better is None:  # no better side (the D gap, a diagnostic): say which way it went
        return "higher" if higher else "lower"
    return "better" if higher == (better == "higher") else "worse"


def compare(metric: str, values: list, baseline: list) -> Verdict:
    """Group values against baseline values of one metric, over seeds (non-finite values left out)."""
    a, b = _finite(values), _finite(baseline)
    p = welch_p(a, b)
    if p is None:
        return Verdict("n/a", None, "fewer than 2 seeds")
    if not math.isfinite(p):
        return Verdict("n/a", None, "the test is undefined for these values")
    return Verdict(decide(metric, sum(a) / len(a), sum(b) / len(b), p), p)


def within(mean_a: float, se_a: float | None, mean_b: float, se_b: float | None, k: float = 2.0) -> bool:
    """|a - b| <= k standard errors of the difference (a missing s.e. counts as 0)."""
    se = math.hypot(se_a or 0.0, se_b or 0.0)
    return abs(mean_a - mean_b) <= k * se


@dataclass(frozen=True)
class Movement:
    moving: bool | None   # None: cannot tell (fewer than 2 seeds or 2 evaluations)
    change: float | None  # mean over seeds of (last value - value at the window's start)
    se: float | None      # its standard error over seeds
    since_step: int | None


def still_moving(steps: list[int], curves: list[list]) -> Movement:
    """Whether a metric still changed over the last LAST_FRACTION of the evaluations: each seed's
    change from the window's first evaluation to its last, and whether their mean is more than 2 s.e.
    from 0, judged as the verdicts are (a one-sample t-test at α = 0.05: with 5 seeds "2 s.e." alone
    would flag 12 % of settled rows). The window spans at least LAST_FRACTION of the intervals
    between evaluations. `curves` are the seeds' values at `steps` (the same steps for every seed)."""
    if len(steps) < 2:
        return Movement(None, None, None, None)
    first = len(steps) - 1 - math.ceil(LAST_FRACTION * (len(steps) - 1))
    changes = []
    for curve in curves:
        start, end = curve[first], curve[-1]
        if _finite([start, end]) == [start, end]:
            changes.append(float(end) - float(start))
    if len(changes) < 2:
        return Movement(None, changes[0] if changes else None, None, steps[first])
    mean = sum(changes) / len(changes)
    se = math.sqrt(sum((c - mean) ** 2 for c in changes) / (len(changes) - 1) / len(changes))
    if se == 0:
        return Movement(mean != 0, mean, se, steps[first])
    from scipy import stats

    p = 2 * stats.t.sf(abs(mean) / se, len(changes) - 1)
    return Movement(bool(p < ALPHA), mean, se, steps[first])
