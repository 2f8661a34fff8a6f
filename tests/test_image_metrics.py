"""Feature-space metrics for images (FID's Fréchet distance, KID, precision/recall,
density/coverage) against reference computations and hand-computed cases."""

import numpy as np
import pytest
import scipy.linalg

from ganlab.metrics.frechet import feature_statistics, frechet_distance
from ganlab.metrics.kid import kernel_inception_distance, mmd2_unbiased
from ganlab.metrics.prdc import density_coverage, knn_radii, precision_recall


def scipy_frechet(mu1, s1, mu2, s2):
    """The reference formula as FID's public code writes it, with scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    b = rng.normal(loc=0.3, size=(400, 32)) @ rng.normal(size=(32, 32))
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    ours, reference = frechet_distance(*stats_a, *stats_b), scipy_frechet(*stats_a, *stats_b)
    assert ours == pytest.approx(reference, rel=1e-6)
    assert abs(frechet_distance(*stats_a, *stats_a)) < 1e-9 * np.trace(stats_a[1])


def test_frechet_distance_of_one_dimensional_gaussians_is_closed_form():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == \
        pytest.approx(9.0 + 1.0)


def test_kid_is_the_unbiased_mmd2_with_the_cubic_kernel():
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    # By hand, k(a, b) = (a b + 1)^3: within x (off-diagonal) 1, within y 27, across (1 + 1 + 8 + 27) / 4.
    assert mmd2_unbiased(x, y) == pytest.approx(1 + 27 - 2 * 37 / 4)
    rng = np.random.default_rng(1)
    same = kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subsets=20, subset_size=100)
    shifted = kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(1.0, size=(300, 8)), subsets=20,
                                        subset_size=100)
    assert abs(same[0]) < 0.05 < shifted[0]  # unbiased: about 0 for one distribution


def test_precision_recall_density_coverage_on_a_hand_computed_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    assert knn_radii(real, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    # Fake 0.5 lies in the balls of reals 0 and 1; fake 10 in none. The fakes' balls (radius 9.5) hold every real.
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    assert density_coverage(real, fake, k=1) == {"density": 1.0, "coverage": 0.5}
