"""Confusion-corrected mode counts (ganlab.metrics.confusion, and through stacked_mode_metrics /
class_metrics): exact small cases by hand, then Stacked-Fashion-MNIST-like labels simulated through a
known confusion matrix at 92 % per channel."""

import math

import pytest
import torch
from conftest import TINY_DCGAN, make_cfg
from test_image_training import IMAGE_TINY, classifier_cache  # noqa: F401 - a fixture

from ganlab.metrics.classes import class_metrics, stacked_mode_metrics
from ganlab.metrics.confusion import confusion_matrix, corrected_modes, deconvolve
from ganlab.train import run

# --- exact cases ---------------------------------------------------------------------------------------

TOY = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)  # 2 classes: det 0.7


def test_confusion_matrix_by_hand():
    true = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    c, per_class = confusion_matrix(true, pred, k=3)
    assert per_class.tolist() == [4, 2, 2]
    assert c.tolist() == [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="no held-out samples of class 2"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), k=3)


def test_identity_confusion_gives_back_the_histogram():
    g = torch.Generator().manual_seed(0)
    triples = torch.randint(0, 4, (500, 3), generator=g) * torch.tensor([1, 2, 3])  # 64 triples, some unused
    counts = torch.tensor(stacked_mode_metrics(triples)["mode_counts"], dtype=torch.float64).view(10, 10, 10)
    p = deconvolve(counts, torch.eye(10, dtype=torch.float64))
    assert torch.allclose(p, counts / 500, atol=1e-15)
    # Exact C, no leak: the corrected metrics are the raw ones with the share floor.
    m = stacked_mode_metrics(triples, confusion=torch.eye(10))
    assert m["modes_corrected"] == m["modes_above_share"] and m["reverse_kl_corrected"] == pytest.approx(m["reverse_kl"])


def test_two_class_toy_is_inverted_by_hand():
    # True (0.5, 0.5) is observed as C^T p = (0.9 * 0.5 + 0.2 * 0.5, 0.1 * 0.5 + 0.8 * 0.5) = (0.55, 0.45).
    p = deconvolve(torch.tensor([55.0, 45.0]), TOY)
    assert p.tolist() == pytest.approx([0.5, 0.5], abs=1e-9)
    # Observed (0.62, 0.38): solve 0.9 a + 0.2 (1 - a) = 0.62, a = 0.42 / 0.7 = 0.6.
    assert deconvolve(torch.tensor([62.0, 38.0]), TOY).tolist() == pytest.approx([0.6, 0.4], abs=1e-9)
    # Observed (1, 0) inverts to a = 0.8 / 0.7 > 1: the maximum likelihood on the simplex is (1, 0).
    assert deconvolve(torch.tensor([100.0, 0.0]), TOY).tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    # Three independent channels: the observed histogram (0.55, 0.45)^{x3} comes from (0.5, 0.5)^{x3}.
    q = torch.tensor([0.55, 0.45], dtype=torch.float64)
    p3 = deconvolve(torch.einsum("i,j,k->ijk", q, q, q) * 8000, TOY)
    assert torch.allclose(p3, torch.full((2, 2, 2), 0.125, dtype=torch.float64), atol=1e-9)


def test_one_class_seen_through_the_toy_is_one_mode():
    # 1000 samples of class 0 labelled (900, 100): the 100 are C's leak, not a class.
    m = corrected_modes(torch.tensor([900.0, 100.0]), TOY)
    assert m["modes_corrected"] == 1 and m["reverse_kl_corrected"] == pytest.approx(math.log(2))
    raw = class_metrics(torch.tensor([0] * 900 + [1] * 100), n_classes=2)
    assert raw["modes_captured"] == 2 and raw["modes_above_share"] == 2
    # (800, 200): 0.9 a + 0.2 (1 - a) = 0.8, a = 6/7; class 1 holds 143 samples, under the floor (30 % of the
    # uniform share 500: 150), so one mode still.
    assert corrected_modes(torch.tensor([800.0, 200.0]), TOY)["modes_corrected"] == 1
    # (700, 300): 0.7 a = 0.5, a = 5/7; class 1 holds 286 samples, 229 labelled 1, above the floor (150) and
    # 3 sd of the leak (3 sqrt(0.1 * 714) = 25).
    two = corrected_modes(torch.tensor([700.0, 300.0]), TOY)
    assert two["modes_corrected"] == 2
    assert two["reverse_kl_corrected"] == pytest.approx(5 / 7 * math.log(10 / 7) + 2 / 7 * math.log(4 / 7))


def leaky(x: float, n0: float = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes, exact but for class 0, 30 % of which is labelled 1; n0 samples of class 0 and x of class 1
    are observed as (0.7 n0, 0.3 n0 + x, 0, ...), whose inverse is exact: (n0, x, 0, ...)."""
    c = torch.eye(10, dtype=torch.float64)
    c[0, :2] = torch.tensor([0.7, 0.3])
    counts = torch.zeros(10, dtype=torch.float64)
    counts[:2] = torch.tensor([0.7 * n0, 0.3 * n0 + x])
    return counts, c


def test_a_class_must_stand_three_sd_above_the_leak_into_it():
    # 1,000 samples of class 0: the floor is 30 % of the uniform share, 0.3 (1000 + x) / 10, about 31; the leak
    # into class 1 is 300 samples, Poisson sd 17.3, so a class 1 of x samples (all labelled 1) needs x >= 52.0.
    assert corrected_modes(*leaky(25, n0=1000))["modes_corrected"] == 1  # under the floor (30.75)
    assert corrected_modes(*leaky(40, n0=1000))["modes_corrected"] == 1  # above the floor (31.2), within the noise
    assert corrected_modes(*leaky(60, n0=1000))["modes_corrected"] == 2
    # C measured on only 100 images per class: its entry 0.3 has posterior variance 31 * 71 / (102^2 * 103)
    # = 0.0020539, sd 0.045 times 10,000 samples: the leak's sd is sqrt(3000 + 1e8 * 0.0020539) = 456.5, so
    # 1000 samples of class 1 (< 3 * 456.5) could be C's error, and 1500 cannot.
    counts, c = leaky(1000)
    assert corrected_modes(counts, c)["modes_corrected"] == 2
    assert corrected_modes(counts, c, per_class=torch.full((10,), 100))["modes_corrected"] == 1
    counts, c = leaky(1500)
    assert corrected_modes(counts, c, per_class=torch.full((10,), 100))["modes_corrected"] == 2


def test_the_high_end_counts_a_cell_its_leak_noise_cannot_rule_out():
    from ganlab.metrics.confusion import plausible_modes

    # 1,000 samples of class 0 (30 % labelled 1), none of class 1: observed (700, 300), ML mass of class 1 is 0.
    # Floor 0.3 * 1000 / 10 = 30; class 1's standard error sqrt(300) / 1 = 17.3: 0 + 2 x 17.3 >= 30 (plausible),
    # 0 + 1 x 17.3 < 30 (not); an empty, unlabelled class never is.
    counts, c = leaky(0, n0=1000)
    assert plausible_modes(counts, c) == 2 and plausible_modes(counts, c, z=1.0) == 1
    # 20 of class 1: n p = 20 < 30.6, but 20 + 1 x sqrt(320) = 37.9 >= 30.6
    counts, c = leaky(20, n0=1000)
    assert plausible_modes(counts, c, z=0.0) == 1 and plausible_modes(counts, c, z=1.0) == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="rows of non-negative numbers summing to 1"):
        deconvolve(torch.ones(2), torch.tensor([[0.5, 0.4], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="histogram"):
        deconvolve(torch.ones(3), TOY)
    with pytest.raises(ValueError, match="histogram"):
        deconvolve(torch.zeros(2), TOY)


# --- simulated Stacked Fashion-MNIST ----------------------------------------------------------------------

# Per-class accuracy of a 92 % Fashion-MNIST CNN (the shirt the worst), errors on the look-alike classes:
# T-shirt/shirt/pullover/coat/dress, sandal/sneaker/ankle boot.
ACCURACY = [0.87, 0.98, 0.88, 0.92, 0.88, 0.98, 0.76, 0.97, 0.98, 0.97]
CONFUSED_AS = {0: {6: .6, 3: .2, 2: .2}, 1: {3: .7, 0: .3}, 2: {4: .5, 6: .4, 0: .1}, 3: {4: .4, 0: .3, 6: .3},
               4: {2: .5, 6: .4, 3: .1}, 5: {7: .6, 9: .4}, 6: {0: .4, 2: .3, 4: .3}, 7: {5: .5, 9: .5},
               8: {6: .5, 0: .5}, 9: {7: .6, 5: .4}}
N = 26_000


def fashion_confusion() -> torch.Tensor:
    c = torch.zeros(10, 10, dtype=torch.float64)
    for i, acc in enumerate(ACCURACY):
        c[i, i] = acc
        for j, share in CONFUSED_AS[i].items():
            c[i, j] = (1 - acc) * share
    return c


def test_the_simulated_classifier_is_92_percent_accurate():
    c = fashion_confusion()
    assert torch.allclose(c.sum(1), torch.ones(10, dtype=torch.float64))
    assert c.diagonal().mean() == pytest.approx(0.919) and c.diagonal().mean() ** 3 == pytest.approx(0.776, abs=1e-3)


def simulate(n_modes: int, seed: int):
    """N stacked label triples of a generator spread evenly over `n_modes` fixed true triples, each
    channel labelled through the confusion matrix; and that matrix as measured on a simulated test
    split of 1,000 images per class (what `train_classifier` stores)."""
    c = fashion_confusion()
    g = torch.Generator().manual_seed(seed)
    modes = torch.randperm(1000, generator=g)[:n_modes]
    true = modes[torch.randint(0, n_modes, (N,), generator=g)]
    digits = torch.stack([true // 100, true // 10 % 10, true % 10], 1)
    labels = torch.multinomial(c[digits.reshape(-1)], 1, generator=g).view(N, 3)
    test = torch.arange(10).repeat_interleave(1000)
    measured, per_class = confusion_matrix(test, torch.multinomial(c[test], 1, generator=g).squeeze(1))
    return labels, measured, per_class


@pytest.mark.parametrize("n_modes", [100, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_corrected_count_finds_the_true_modes_where_the_raw_count_cannot(n_modes, seed):
    """Measured here (seeds 0 / 1, with C as measured on the simulated test split): 100 true triples,
    raw 655 / 654 (above the share floor 524 / 518), corrected 101 / 102, KL 2.304 / 2.303 (raw 1.52 /
    1.56, log 10 = 2.303); 300 true triples, raw 900 / 890 (749 / 759), corrected 303 / 306, KL
    1.209 / 1.205 (raw 0.72 / 0.72, log(10/3) = 1.204). Over seeds 0-19: 100-105 and 300-306."""
    labels, measured, per_class = simulate(n_modes, seed)
    m = stacked_mode_metrics(labels, confusion=measured, per_class=per_class)
    assert m["modes_captured"] > 2 * n_modes and m["modes_above_share"] > 1.5 * n_modes  # the issue
    assert 0.9 * n_modes <= m["modes_corrected"] <= 1.1 * n_modes
    assert m["reverse_kl_corrected"] == pytest.approx(math.log(1000 / n_modes), abs=0.05)
    assert m["reverse_kl"] < math.log(1000 / n_modes) - 0.4


def test_corrected_count_of_real_like_data_and_of_a_collapsed_generator():
    """Every triple equally likely (the real data's ceiling): 1000 raw, 965 corrected here, KL 0.068
    (the least sampled triples cannot be told from leak at 26 samples each); one true triple: raw
    51, corrected 1."""
    labels, measured, per_class = simulate(1000, 0)
    m = stacked_mode_metrics(labels, confusion=measured, per_class=per_class)
    assert m["modes_captured"] == 1000 and m["modes_corrected"] >= 950 and m["reverse_kl_corrected"] < 0.1
    labels, measured, per_class = simulate(1, 0)
    m = stacked_mode_metrics(labels, confusion=measured, per_class=per_class)
    assert m["modes_captured"] > 20 and m["modes_corrected"] == 1
    assert m["reverse_kl_corrected"] == pytest.approx(math.log(1000))


def test_a_confusion_no_mode_survives_is_counted_as_one_mode():
    # Every class labelled 0: nothing can be told apart, and the samples still come from some mode.
    c = torch.zeros(3, 3, dtype=torch.float64)
    c[:, 0] = 1
    m = corrected_modes(torch.tensor([30.0, 0.0, 0.0]), c)
    assert m["modes_corrected"] == 1 and m["reverse_kl_corrected"] == pytest.approx(math.log(3))


# --- in a run --------------------------------------------------------------------------------------------

def _stacked_run(image_root, tmp_path):
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}",
                   "dataset.n=100")
    return run(cfg, tmp_path / "run")


def test_a_stacked_run_reports_the_corrected_counts_and_the_ceiling(image_root, classifier_cache, tmp_path):
    """The cached classifier predates the matrix: it is measured on the (10-image) test split and stored."""
    summary = _stacked_run(image_root, tmp_path)
    m, protocol = summary["metrics"], summary["protocol"]
    assert 1 <= m["modes_corrected"] <= m["modes_captured"] and 0 <= m["reverse_kl_corrected"] <= math.log(1000) + 1e-9
    ref = protocol["reference_modes"]  # the reference sample: real, the same 64 images, the same classifier
    assert m["modes_captured_real"] == ref["modes_captured"] and m["modes_corrected_real"] == ref["modes_corrected"]
    assert {"modes_corrected", "reverse_kl_corrected"} <= set(summary["references"]["data"])
    assert protocol["corrected_modes"].startswith("modes_corrected, reverse_kl_corrected: the observed triple "
                                                  "histogram deconvolved with the classifier's confusion matrix")
    assert "(10 fashion_mnist images), blurred and noised as the samples look" in protocol["corrected_modes"]
    assert 0 <= m["matched_blur"] <= 1.7 and 0 <= m["matched_noise"] <= 0.5
    assert "(C ⊗ C ⊗ C)ᵀ p" in protocol["corrected_modes"] and "modes_captured_real" in protocol["mode_metrics"]
    saved = torch.load(classifier_cache / "classifiers" / "fashion_mnist.pt", weights_only=True)
    assert saved["confusion_family"]["samples"][0].tolist() == [1] * 10  # stored for the next run


def test_without_a_confusion_matrix_the_corrected_counts_are_left_out(image_root, classifier_cache, tmp_path,
                                                                     monkeypatch):
    import ganlab.data.images
    from ganlab.errors import GanlabError

    def no_test_split(name, split, root=None):
        raise GanlabError(f"no {name} {split} split here")

    monkeypatch.setattr(ganlab.data.images, "load_split", no_test_split)
    summary = _stacked_run(image_root, tmp_path)
    assert summary["status"] == "completed"
    assert not {"modes_corrected", "reverse_kl_corrected", "modes_corrected_real"} & set(summary["metrics"])
    assert summary["metrics"]["modes_captured_real"] == summary["protocol"]["reference_modes"]["modes_captured"]
    assert summary["protocol"]["corrected_modes"].startswith("not measured: the classifier was cached before")
