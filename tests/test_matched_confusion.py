"""The confusion matched to the samples' look (ganlab.metrics.matched_confusion): the test split's halves, the
spectral signature, the family's record, and on a known-mode set of synthetic digits whose classifier errs
more under blur and noise, the corrected count with the matched confusion against the one with the clean C."""

import pytest
import torch
from test_results_scripts import _validate_stacked  # the script loaded as a module

from ganlab.data.degrade import degrade, gaussian_blur
from ganlab.metrics.matched_confusion import ConfusionFamily, measure_family, signature, split_test


def test_the_test_split_halves_are_fixed_disjoint_and_hold_every_class():
    labels = torch.arange(10).repeat_interleave(torch.arange(2, 12))  # 2..11 images a class
    scored, confusion = split_test(labels)
    assert len(set(scored.tolist()) & set(confusion.tolist())) == 0
    assert sorted(scored.tolist() + confusion.tolist()) == list(range(len(labels)))
    for c in range(10):  # each class halved: the confusion half takes the odd one
        n = c + 2
        assert int((labels[scored] == c).sum()) == n // 2 and int((labels[confusion] == c).sum()) == n - n // 2
    again = split_test(labels)
    assert torch.equal(again[0], scored) and torch.equal(again[1], confusion)  # the same halves on every call


def _smooth_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return gaussian_blur(torch.randn(n, 1, 28, 28, generator=g), 0.6).mul(0.5).clamp(-1, 1)


def test_the_signature_sees_blur_and_noise_but_not_contrast():
    x = _smooth_images(200)
    base = signature(x)
    assert base.shape == (7,) and float(base.sum()) == pytest.approx(0.0, abs=1e-9)  # centred
    blurred = signature(gaussian_blur(x, 1.0))
    noised = signature((x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1))
    # blur moves power from the high bands to the low ones, noise into the high ones
    assert blurred[-1] < base[-1] - 1 and blurred[0] > base[0]
    assert noised[-1] > base[-1] + 0.5 and noised[0] < base[0]
    assert torch.allclose(signature(0.7 * x), base, atol=1e-6)  # a uniform contrast change is not a look
    # channels are images: a stacked (n, 3, H, W) batch reads as its 3n grey images; 32 x 32 is cropped to 28
    stacked = x[:198].reshape(66, 3, 28, 28)
    assert torch.allclose(signature(stacked), signature(x[:198]), atol=1e-9)
    assert torch.allclose(signature(torch.nn.functional.pad(x, (2, 2, 2, 2))), base, atol=1e-9)


class _Templates:
    """Labels a grey image by the smooth class template it correlates with most (after removing its mean).
    The templates share a common part, so the classes are close: it errs, and more on blurred or noised images."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        smooth = lambda x: gaussian_blur(x.unsqueeze(1), 1.5)[:, 0]  # noqa: E731
        common = smooth(torch.randn(1, 28, 28, generator=g)) * 1.5
        self.templates = common + smooth(torch.randn(10, 28, 28, generator=g)) * 0.45
        self.confusion = self.confusion_samples = self.confusion_family = None

    def images(self, labels, seed):
        g = torch.Generator().manual_seed(seed)
        noise = gaussian_blur(torch.randn(len(labels), 1, 28, 28, generator=g), 1.5)[:, 0] * 0.3
        return ((self.templates[labels] + noise).clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8)

    def predict(self, x, batch_size=1024):
        x = x.reshape(len(x), -1)
        return ((x - x.mean(1, keepdim=True)) @ self.templates.reshape(10, -1).T).argmax(1)


def test_the_family_is_measured_stored_and_matched_to_the_look_of_the_samples():
    clf = _Templates()
    labels = torch.arange(10).repeat(100)
    x = clf.images(labels, 1).unsqueeze(1).float().div(127.5).sub(1)
    family = measure_family(clf, x, labels, sigmas=(0.0, 1.0), noises=(0.0, 0.5))
    assert family.sigma.tolist() == [0, 0, 1, 1] and family.noise.tolist() == [0, 0.5, 0, 0.5]
    assert family.samples.tolist() == [[100] * 10] * 4 and family.clean() == 0
    accuracy = family.confusions.diagonal(dim1=1, dim2=2).mean(1)
    assert accuracy[0] > accuracy[2] and accuracy[0] > accuracy[1]  # it errs more on blurred and on noised images
    assert accuracy[0] < 0.95  # and errs on clean ones too
    # the same images degraded as the grid's members: each matches its own member
    g = torch.Generator().manual_seed(5)
    assert family.match(x) == 0 and family.match(gaussian_blur(x, 1.0)) == 2
    assert family.match((x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)) == 1
    # the record a classifier file holds gives the family back; a damaged one is refused (None)
    again = ConfusionFamily.from_record(family.to_record())
    assert all(torch.equal(getattr(again, k), getattr(family, k)) for k in ("sigma", "noise", "confusions", "samples"))
    bad = family.to_record()
    bad["confusions"] = bad["confusions"] * 2  # rows no longer sum to 1
    assert ConfusionFamily.from_record(bad) is None and ConfusionFamily.from_record({"sigma": 1}) is None
    scalar = {**family.to_record(), "sigma": torch.tensor(0.0)}  # a 0-d tensor: refused, not a TypeError
    nan = {**family.to_record(), "signatures": family.signatures.clone().fill_(float("nan"))}
    assert ConfusionFamily.from_record(scalar) is None and ConfusionFamily.from_record(nan) is None


def test_the_bounds_hold_the_headline_count():
    from ganlab.metrics.confusion import count_bounds

    counts = torch.zeros(10, dtype=torch.float64)
    counts[:3] = 1000.0  # three classes, no confusion: every rule keeps exactly those three
    eye = torch.eye(10, dtype=torch.float64)
    assert count_bounds(counts, eye, None, corrected=3) == {"modes_corrected_low": 3, "modes_corrected_high": 3}
    # a headline outside the two rules' counts widens the bounds to it, either side
    assert count_bounds(counts, eye, None, corrected=5)["modes_corrected_high"] == 5
    assert count_bounds(counts, eye, None, corrected=2)["modes_corrected_low"] == 2


def test_a_known_mode_set_is_counted_right_with_the_matched_confusion_where_the_clean_one_is_off():
    """100 true modes of synthetic stacked digits, built and scored as the validation script does: clean, blurred
    twice and noised, by a classifier right on 71 % of clean images (62-53 % under the grid's blurs and noises).
    The clean C miscounts the degraded sets (measured: 184 and 213); the matched one is within 25 % of the truth
    on each (measured: 115, 113, 124) and its bounds hold the truth (73-339, 99-332, 82-441): this classifier errs far more than the real one (92.7 %), and the count's
    rule was set on the real one (docs/results/stacked_validation.md)."""
    validate = _validate_stacked()
    clf = _Templates()
    labels = torch.arange(10).repeat(400)
    images = clf.images(labels, 2)
    scored, half = split_test(labels)
    family = measure_family(clf, images[half].unsqueeze(1).float().div(127.5).sub(1), labels[half])
    clf.confusion_family = family
    clf.confusion, clf.confusion_samples = family.confusions[family.clean()], family.samples[family.clean()]
    rows = {d: validate.measure(validate.Case(100, "uniform", d), clf, images[scored], labels[scored], 20_000, 1)
            for d in ("clean", "blur2", "noise")}
    assert rows["clean"]["matched"] == "blur sigma 0 px, noise std 0"
    assert rows["blur2"]["matched"] == "blur sigma 1 px, noise std 0"
    assert rows["noise"]["matched"] == "blur sigma 0 px, noise std 0.5"
    for d, row in rows.items():
        assert row["true_above_floor"] == 100 and row["modes_captured"] > 200, d  # the raw count is far off
        assert int(row["histogram"].sum()) == 20_000 and int((row["histogram"] > 0).sum()) == row["modes_captured"]
        assert abs(row["modes_corrected"] - 100) <= 25, (d, row["modes_corrected"])
        assert row["modes_corrected_low"] <= 100 <= row["modes_corrected_high"], d  # the interval holds the truth
    for d in ("blur2", "noise"):
        assert rows[d]["modes_corrected_clean"] > 150, (d, rows[d]["modes_corrected_clean"])
    assert validate.verdict(list(rows.values())).startswith("The corrected count is within 10 % of the truth on ")


def test_degradations_outside_the_family_change_the_images_as_named():
    x = _smooth_images(8)
    down = degrade(x, "downup")
    assert down.shape == x.shape and not torch.equal(down, x) and down.std() < x.std()
    assert torch.allclose(degrade(x, "contrast"), 0.7 * x)
