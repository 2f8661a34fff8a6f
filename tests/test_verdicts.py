"""The statistics behind the report's claims: permutation tests, bootstrap intervals, Benjamini-Hochberg,
the 2-s.e. rule, still moving."""

import math

import numpy as np
import pytest
from scipy import stats

from ganlab.verdicts import (
    compare,
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


def test_ring_kl_all_remedy_seeds_below_all_gan_seeds_is_significant():
    """Issue 25's case: on the ring all five remedy KLs sit below all five GAN KLs; Welch's test (heavy
    tail, one GAN seed at log 8) says p = 0.09, the exact permutation test 2/252 (the observed split and
    its mirror are the two most extreme of C(10, 5) = 252)."""
    gan = [2.079, 0.564, 0.524, 0.166, 0.456]
    remedy = [0.0078, 0.0060, 0.0090, 0.0100, 0.0050]
    verdict = compare("reverse_kl", remedy, gan)
    assert verdict.p == pytest.approx(2 / 252)
    assert verdict.welch == pytest.approx(stats.ttest_ind(remedy, gan, equal_var=False).pvalue) and verdict.welch > 0.05
    assert verdict.word == "better" and verdict.text() == "better (p=0.008)"
    assert verdict.diff == pytest.approx(np.mean(remedy) - np.mean(gan))
    assert verdict.low < verdict.diff < verdict.high < 0  # the whole interval on the better side


def test_permutation_p_matches_scipys_exact_permutation_test():
    from ganlab.verdicts import permutation_p

    a, b = [1.0, 2.5, 3.0, 7.0], [2.0, 9.0, 14.0, 3.0, 11.0, 20.0]
    # two-sided as |difference of means| >= the observed one (scipy's "two-sided" doubles the smaller tail instead)
    exact = stats.permutation_test((a, b), lambda x, y: abs(np.mean(x) - np.mean(y)), permutation_type="independent",
                                   alternative="greater", n_resamples=10**6).pvalue
    assert permutation_p(a, b) == pytest.approx(exact)
    # ties: splits as extreme as the observed one count, to rounding (0.1 + 0.2 is not 0.3 in floating point)
    assert permutation_p([0.1 + 0.2, 0.3], [0.3, 0.3]) == 1.0


def test_random_splits_agree_with_all_splits(monkeypatch):
    from ganlab import verdicts

    a, b = [3.1, 2.2, 4.0, 3.7, 2.9, 3.3], [2.0, 1.1, 2.6, 3.4, 1.9, 2.2, 2.8]
    exact = verdicts.permutation_p(a, b)  # C(13, 6) = 1,716 splits: enumerated
    monkeypatch.setattr(verdicts, "MAX_EXACT_SPLITS", 100)
    sampled = verdicts.permutation_p(a, b)
    assert sampled != exact and sampled == pytest.approx(exact, abs=0.003)  # 100,000 random splits: s.e. 0.0005
    assert verdicts.permutation_p(a, b) == sampled  # a fixed seed: the same p every time


def test_zero_variance_arms():
    same = compare("modes_captured", [8, 8, 8, 8, 8], [8, 8, 8, 8, 8])
    assert same.word == "not significant" and same.p == 1.0
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    assert same.text() == "not significant (p=1.000)" and "no difference" not in same.text()
    apart = compare("modes_captured", [8, 8, 8, 8, 8], [7, 7, 7, 7, 7])
    assert apart.word == "better" and apart.p == pytest.approx(2 / 252)
    assert (apart.low, apart.high) == (1.0, 1.0)
    # three seeds a side: the smallest p an exact test can give is 2/20 = 0.1, so nothing is significant
    assert compare("modes_captured", [8, 8, 8], [1, 1, 1]).p == pytest.approx(0.1)


def test_benjamini_hochberg_by_hand():
    from ganlab.verdicts import bh_adjust

    # sorted p 0.005, 0.01, 0.03, 0.04 (m = 4): m p / rank = 0.02, 0.02, 0.04, 0.04; then the running minimum
    # from the top
    assert bh_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # a large p early in rank order cannot get a q above a later one: 0.012, 0.05, 0.9 -> 0.036, 0.075, 0.9
    assert bh_adjust([0.9, 0.012, 0.05]) == pytest.approx([0.9, 0.036, 0.075])
    assert bh_adjust([]) == []
    # the running minimum from the top: m p / rank = 0.03, 0.0165, 0.2 -> the first takes the second's 0.0165
    assert bh_adjust([0.01, 0.011, 0.2]) == pytest.approx([0.0165, 0.0165, 0.2])


def test_adjust_judges_the_word_on_q_over_the_whole_family():
    from ganlab.verdicts import adjust

    strong = compare("modes_captured", [8, 8, 8, 8, 8], [1, 2, 3, 4, 5])   # p = 2/252
    weak = compare("reverse_kl", [0.1, 0.2, 0.15, 0.25, 0.12], [0.2, 0.35, 0.4, 0.3, 0.5])
    assert weak.word == "better" and 0.02 < weak.p < 0.05   # significant alone
    short = compare("modes_captured", [8], [1, 2])
    out = adjust([("modes_captured", strong, 8, 3), ("reverse_kl", weak, 0.164, 0.35), None,
                  ("modes_captured", short, 8, 1.5)])
    assert out[2] is None and out[3] is short  # not tested: passed through, not counted
    assert out[0].family == out[1].family == 2
    assert out[1].q == pytest.approx(weak.p)    # the larger p of two: q = 2 p / 2
    assert out[0].q == pytest.approx(min(2 * strong.p, weak.p))
    assert out[0].word == "better"
    # among 20 comparisons the weak one no longer survives
    many = adjust([("reverse_kl", weak, 0.164, 0.35)] + [("modes_captured", compare("modes_captured", [1, 2, 3], [1, 2, 3]), 2, 2)] * 19)
    assert many[0].word == "not significant" and many[0].q == pytest.approx(min(1.0, 20 * weak.p))
    assert many[0].text() == f"not significant (q={many[0].q:.3f})"


def test_direction_follows_each_metrics_better_side():
    more, fewer = [8.0, 8.0, 7.0, 8.0, 8.0], [1.0, 0.0, 2.0, 1.0, 0.0]
    assert compare("modes_captured", more, fewer).word == "better"
    assert compare("modes_captured", fewer, more).word == "worse"
    low, high = [0.1, 0.2, 0.1, 0.15], [2.0, 1.9, 2.1, 2.2]
    assert compare("reverse_kl", low, high).word == "better"  # lower is better
    assert compare("wasserstein1", high, low).word == "worse"
    assert compare("critic_gap", high, low).word == "higher"  # no better side


def test_degenerate_and_missing_cases():
    short = compare("modes_captured", [8], [1, 2, 3])
    assert short.word == "n/a" and short.p is None and "fewer than 2 seeds" in short.text()
    # undefined values (reverse_kl_hq without a high-quality sample) are left out, not counted as 0
    assert compare("reverse_kl_hq", [None, math.nan, 0.1], [1.0, 1.1]).word == "n/a"
    assert compare("modes_captured", [8.0, 8.0], [math.nan, 1.0]).word == "n/a"


def test_welch_p_by_hand_and_the_word_it_does_not_decide():
    """Welch by hand: a has mean 5/2 and sample variance 5/3, b mean 59/6 and sample variance (811 - 59^2/6) / 5
    = 277/6; the squared standard errors are (5/3)/4 = 5/12 and (277/6)/6 = 277/36, summing to 292/36 = 73/9, so
    t = (5/2 - 59/6) / sqrt(73/9) = (-22/3) / (sqrt(73)/3) = -22/sqrt(73) = -2.575 and Welch-Satterthwaite's
    df = (73/9)^2 / ((5/12)^2/3 + (277/36)^2/5) = (5329/81) / (77104/6480) = 426320/77104 = 5.529; the two-sided p
    is the regularized incomplete beta I_{df/(df+t^2)}(df/2, 1/2) = 0.0453. (The pooled test: variance
    (5 + 1385/6) / 8 = 1415/48, t = -(22/3) / sqrt(1415/48 x 5/12) = -176/sqrt(7075) = -2.092 on 8 df, p = 0.0698.)

    The verdict's word is the permutation test's: |diff| >= 22/3 where a's 4 values sum to at most 10 (10 of the
    C(10, 4) = 210 splits: {1,2,2,3} x2, {1,2,2,4}, {1,2,3,3} x2, {1,2,3,4} x4, {2,2,3,3}) or at least 46
    ({20,14,11,x} x7, {20,14,9,x>=3} x3): p = 20/210 = 0.095, not significant, where Welch's 0.0453 would say worse."""
    from scipy import special

    from ganlab.verdicts import decide

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 9.0, 14.0, 3.0, 11.0, 20.0]
    t, df = -22 / math.sqrt(73), 426_320 / 77_104
    assert (t, df) == (pytest.approx(-2.575, abs=5e-4), pytest.approx(5.529, abs=5e-4))
    p = float(special.betainc(df / 2, 0.5, df / (df + t * t)))
    assert p == pytest.approx(0.0453, abs=5e-5)
    assert welch_p(a, b) == pytest.approx(p, rel=1e-9)
    assert welch_p(b, a) == pytest.approx(p, rel=1e-9)  # two-sided
    pooled_t = -176 / math.sqrt(7075)
    assert float(special.betainc(4, 0.5, 8 / (8 + pooled_t ** 2))) == pytest.approx(0.0698, abs=5e-5)
    verdict = compare("modes_captured", a, b)
    assert verdict.welch == pytest.approx(p, rel=1e-9) and verdict.p == pytest.approx(20 / 210, rel=1e-12)
    assert verdict.word == "not significant" and verdict.text() == "not significant (p=0.095)"
    assert verdict.diff == pytest.approx(-22 / 3, rel=1e-12)
    assert decide("modes_captured", 5 / 2, 59 / 6, verdict.welch) == "worse"
    # From a table's means and standard errors: t = 3 / sqrt(1.4^2 + 1.3^2) = 3 / sqrt(3.65) = 1.570, df = 3.65^2 /
    # ((1.4^4 + 1.3^4) / 4) = 13.3225 / 1.6744 = 7.957, p = 0.1552.
    assert welch_p_from_stats(11.6, 1.4, 5, 8.6, 1.3, 5) == pytest.approx(0.1552, abs=5e-5)


def test_within_two_standard_errors_of_the_difference():
    assert within(10.0, 1.0, 12.0, 1.0)            # 2 <= 2 * 1.41
    assert not within(10.0, 0.5, 12.0, 0.5)        # 2 > 2 * 0.71
    assert within(3.0, None, 3.0, None) and not within(3.0, None, 3.1, None)


def test_still_moving_fits_a_slope_over_the_whole_window():
    steps = list(range(500, 10001, 500))  # 20 evaluations: the window is 8,000 to 10,000 (5 evaluations)
    # settled: each seed wanders, no trend
    flat = [[5.0] * 15 + [5.0 + d for d in noise] for noise in
            ([0.1, -0.1, 0.2, -0.2, 0.0], [-0.1, 0.1, 0.0, 0.1, -0.1], [0.2, 0.0, -0.2, 0.1, -0.1],
             [0.0, 0.1, -0.1, -0.1, 0.1], [-0.2, 0.2, 0.1, -0.1, 0.0])]
    settled = still_moving(steps, flat)
    assert settled.moving is False and settled.since_step == 8000
    rising = [[float(i) + 0.1 * s for i in range(20)] for s in range(5)]
    moving = still_moving(steps, rising)
    assert moving.moving is True and moving.change == pytest.approx(4.0)  # 1 per 500 steps over 2,000 steps
    assert still_moving(steps, rising[:1]).moving is None  # one seed: no s.e., cannot tell
    assert still_moving([500], [[1.0]]).moving is None


def test_still_moving_is_not_decided_by_the_two_end_points():
    steps = list(range(1, 22))  # 21 evaluations: the window is the last 5 (steps 17 to 21)
    # every seed rises through the window, then its last evaluation falls back to the window's first value:
    # end points alone see no change, the least-squares slope over the five evaluations does
    shifts = (0.0, 0.3, 0.5, 0.8)
    rising = [[0.0] * 16 + [0.0, 1.0, 2.0, 3.0 + s, 0.0] for s in shifts]
    result = still_moving(steps, rising)
    # slope = sum((x - 19) y) / 10 = (2 + s) / 10 per step; times the window's 4 steps
    assert result.change == pytest.approx(np.mean([(2 + s) / 10 * 4 for s in shifts]))
    assert result.moving is True
    # one early high value, then flat: the end points say -(3 + s), the slope -0.8 (3 + s)
    flat = [[0.0] * 16 + [3.0 + s, 0.0, 0.0, 0.0, 0.0] for s in shifts]
    assert still_moving(steps, flat).change == pytest.approx(np.mean([-0.8 * (3 + s) for s in shifts]))


def test_still_moving_standard_error_over_seeds_by_hand():
    """Slopes whose implied changes over the window are [0, 2, 0, 2, 1]: mean 1, s.e. sqrt(1/5) = 0.447
    (ddof = 1; ddof = 0 would give 0.4); t = 2.24 with 4 df: p = 0.089, not moving. Shifted by 0.5: mean 1.5,
    t = 3.35, p = 0.028, moving."""
    steps = list(range(1, 12))  # 11 evaluations: the window is steps 9, 10, 11, three points on a line per seed
    changes = [0.0, 2.0, 0.0, 2.0, 1.0]
    curves = [[0] * 8 + [0, c / 2, c] for c in changes]
    result = still_moving(steps, curves)
    assert result.change == pytest.approx(1.0) and result.se == pytest.approx(math.sqrt(1 / 5))
    assert result.moving is False
    curves = [[0] * 8 + [0, c / 2 + 0.25, c + 0.5] for c in changes]
    assert still_moving(steps, curves).moving is True
    curves = [[0] * 8 + [0, c / 2 - 0.3, c - 0.6] for c in changes]  # mean 0.4: t = 0.89, p = 0.42
    assert still_moving(steps, curves).moving is False
