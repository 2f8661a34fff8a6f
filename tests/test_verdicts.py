"""The statistics behind the report's claims: Welch's t-test verdicts, the 2-s.e. rule, still moving."""

import math

import numpy as np
import pytest
from scipy import stats

from ganlab.verdicts import (
    compare,
    decide,
    still_moving,
    welch_p,
    welch_p_from_stats,
    within,
)


def sample_with(mean, se, n, seed=0):
    """n values with exactly this mean and standard error."""
    x = np.random.default_rng(seed).standard_normal(n)
    x = (x - x.mean()) / x.std(ddof=1)
    return list(mean + x * se * math.sqrt(n))


def test_pacgan2_against_gan_on_the_grid_is_no_difference():
    """The old toy table's 'holds' (11.6 ± 1.4 vs 8.6 ± 1.3 modes, n = 5 each) is 1.6 s.e. apart:
    Welch's test at α = 0.05 does not support it."""
    p = welch_p_from_stats(11.6, 1.4, 5, 8.6, 1.3, 5)
    assert 0.1 < p < 0.2
    assert decide("modes_captured", 11.6, 8.6, p) == "no difference"
    verdict = compare("modes_captured", sample_with(11.6, 1.4, 5), sample_with(8.6, 1.3, 5, seed=1))
    assert verdict.word == "no difference" and verdict.p == pytest.approx(p, rel=1e-9)
    assert verdict.text() == f"no difference (p={p:.3f})"


def test_welch_matches_scipy_and_is_not_the_pooled_test():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 9.0, 14.0, 3.0, 11.0, 20.0]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p(a, b) != pytest.approx(stats.ttest_ind(a, b).pvalue)


def test_direction_follows_each_metrics_better_side():
    more, fewer = [8.0, 8.0, 7.0, 8.0, 8.0], [1.0, 0.0, 2.0, 1.0, 0.0]
    assert compare("modes_captured", more, fewer).word == "better"
    assert compare("modes_captured", fewer, more).word == "worse"
    assert compare("reverse_kl", [0.1, 0.2, 0.1], [2.0, 1.9, 2.1]).word == "better"  # lower is better
    assert compare("wasserstein1", [2.0, 1.9, 2.1], [0.1, 0.2, 0.1]).word == "worse"
    assert compare("critic_gap", [2.0, 1.9, 2.1], [0.1, 0.2, 0.1]).word == "higher"  # no better side


def test_degenerate_and_missing_cases():
    assert compare("modes_captured", [8, 8, 8], [8, 8]).word == "no difference"  # no spread, equal means
    assert compare("modes_captured", [8, 8, 8], [7, 7]).word == "better"          # no spread, different means
    short = compare("modes_captured", [8], [1, 2, 3])
    assert short.word == "n/a" and short.p is None and "fewer than 2 seeds" in short.text()
    # undefined values (reverse_kl_hq without a high-quality sample) are left out, not counted as 0
    assert compare("reverse_kl_hq", [None, math.nan, 0.1], [1.0, 1.1]).word == "n/a"


def test_within_two_standard_errors_of_the_difference():
    assert within(10.0, 1.0, 12.0, 1.0)            # 2 <= 2 * 1.41
    assert not within(10.0, 0.5, 12.0, 0.5)        # 2 > 2 * 0.71
    assert within(3.0, None, 3.0, None) and not within(3.0, None, 3.1, None)


def test_still_moving_looks_at_the_last_fifth_of_the_evaluations():
    steps = list(range(500, 10001, 500))  # 20 evaluations: the window is 8,000 to 10,000 (20 % of the span)
    # settled: each seed wanders a little, the changes over the window average to 0
    flat = [[5.0] * 16 + [5.0, 5.1, 4.9, 5.0 + change] for change in (0.2, -0.2, 0.1, -0.1, 0.0)]
    settled = still_moving(steps, flat)
    assert settled.moving is False and settled.since_step == 8000
    rising = [[float(i) + 0.1 * s for i in range(20)] for s in range(5)]
    moving = still_moving(steps, rising)
    assert moving.moving is True and moving.change == pytest.approx(4.0)
    assert still_moving(steps, rising[:1]).moving is None  # one seed: no s.e., cannot tell
    assert still_moving([500], [[1.0]]).moving is None


def test_still_moving_is_judged_like_the_verdicts_not_by_a_bare_two_se():
    steps = [1, 2, 3, 4, 5, 6]  # the window is steps 4 to 6
    # mean change 1.0 with s.e. 0.45 (t = 2.2, 4 df): beyond 2 s.e., but p = 0.09 > 0.05
    changes = [0.0, 2.0, 0.0, 2.0, 1.0]
    curves = [[0, 0, 0, 0, 0, c] for c in changes]
    assert still_moving(steps, curves).moving is False
    curves = [[0, 0, 0, 0, 0, c + 0.5] for c in changes]  # mean 1.5: t = 3.4, p = 0.03
    assert still_moving(steps, curves).moving is True
    assert compare("modes_captured", [8.0, 8.0], [math.nan, 1.0]).word == "n/a"
