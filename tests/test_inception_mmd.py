"""The metrics on Inception features besides FID in the image evaluator: the Gaussian-kernel MMD (inception_mmd,
inception_mmd_multiscale), KID and precision/recall, density/coverage (inception_kid, ..., inception_coverage). A
small stand-in takes the Inception network's place in tiny runs (same interface: features and logits of [0, 1]
images, an extractor id), so nothing is downloaded and a tiny run costs seconds; the FID network itself, with
random weights from a file named by metrics.fid.weights (as tests/test_inception.py), scores samples files."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_cfg
from torch import nn

from ganlab.evaluation.saved import evaluate_run, evaluate_samples_file
from ganlab.metrics import feature_cache, inception
from ganlab.metrics.classifier import ModeClassifier, save_classifier
from ganlab.metrics.feature_cache import cache_root
from ganlab.metrics.kid import kernel_inception_distance
from ganlab.metrics.prdc import prdc
from ganlab.train import run

KEYS = ("inception_mmd", "inception_mmd_multiscale")
FEATURE_KEYS = ("inception_kid", "inception_kid_std", "inception_precision", "inception_recall", "inception_density",
                "inception_coverage")


class StandInInception(nn.Module):
    """[0, 1] images -> 16 features (a fixed random projection of the 7x7-pooled image) and 10 logits."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        # Parameters (frozen), as the real network's: features() finds the device through them.
        self.projection = nn.Parameter(torch.randn(3 * 7 * 7, 16, generator=generator), requires_grad=False)
        self.classes = nn.Parameter(torch.randn(16, 10, generator=generator), requires_grad=False)
        self.images = 0  # how many images it has seen

    def extractor_id(self):
        return "stand-in-inception:test"

    def forward(self, x):
        self.images += len(x)
        x = F.adaptive_avg_pool2d(x.float().expand(-1, 3, -1, -1), 7).flatten(1)
        feats = torch.tanh(x @ self.projection)
        return feats, feats @ self.classes



@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A private cache with an untrained mode classifier, and the stand-in wherever Inception is loaded."""
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_classifier(ModeClassifier(), "fashion_mnist", 0.5, {"epochs": 0})
    made = []

    def load(weights=None, device="cpu"):
        made.append(StandInInception().to(device))
        return made[-1]

    monkeypatch.setattr(inception, "load_fid_inception", load)
    return made


def tiny_run(root, run_dir):
    cfg = make_cfg("debug=tiny_images", "model=dcgan", "model.g.width=4", "model.d.width=4", "batch_size=8",
                   "dataset=fashion_mnist", f"dataset.root={root}", "metrics.inception=true")
    return run(cfg, run_dir)


@pytest.fixture
def same_images_root(tmp_path):
    """Fashion-MNIST files whose test split holds the train split's images (image i the constant i + 1 in both):
    the `data` reference row, drawn from the test split, is then a second sample of the reference's images."""
    from test_image_data import fake_mnist

    fake_mnist(tmp_path / "data", "fashion_mnist", n_train=40, n_test=40)
    return tmp_path / "data"


def test_inception_mmd_is_reported_and_near_zero_for_a_second_real_sample(same_images_root, stand_in, tmp_path):
    summary = tiny_run(same_images_root, tmp_path / "run")
    assert summary["status"] == "completed"
    fake, real = summary["metrics"], summary["references"]["data"]  # a second real sample: the ceiling
    for key in KEYS:
        assert np.isfinite(fake[key]) and np.isfinite(real[key]), key
        # Two samples of the same images sit near 0 (the unbiased estimate may dip below it); six steps
        # of G's mid-grey blur are far from the near-black images.
        assert fake[key] > 0 and abs(real[key]) < 0.05 * fake[key], (key, real[key], fake[key])
    assert "fid" in fake and "inception_score" in fake
    assert all(np.isfinite(fake[key]) and np.isfinite(real[key]) for key in FEATURE_KEYS)
    # Every image of the second real sample is one of the reference's: at distance 0 from a reference point.
    assert real["inception_precision"] == 1.0
    assert summary["protocol"]["inception_mmd"].startswith("on the Inception pool3 features: unbiased MMD²")


def test_a_cache_file_without_features_is_not_trusted_for_the_mmd(image_root, stand_in, tmp_path):
    """Statistics cached without the features (written before they were kept, or for n > 50,000) still give
    FID; the MMD's reference features are computed again from the reference images, with the same values."""
    summary = tiny_run(image_root, tmp_path / "run")
    files = [p for p in (cache_root() / "stats").glob("*.npz")]
    stripped = 0
    for path in files:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        if "stand-in-inception" in str(arrays["key"]):
            np.savez(path, **{k: v for k, v in arrays.items() if k != "features"})  # the old format
            stripped += 1
    assert stripped == 1

    again = evaluate_run(tmp_path / "run")  # the final evaluation's samples drawn again, a fresh evaluator
    for key in (*KEYS, *FEATURE_KEYS, "fid"):
        assert again["metrics"][key] == pytest.approx(summary["metrics"][key], rel=1e-6, abs=1e-9), key
    n = summary["protocol"]["samples"]
    assert stand_in[-1].images == 2 * n  # the generated images, and the reference images again (from the
    # cache with its features, the generated ones alone)


def test_kid_and_prdc_are_computed_on_the_features_fid_reads(tmp_path, monkeypatch):
    """The FID network with random weights (He-scaled, so the features are O(1)) on images of one's own: the
    reported inception_kid and precision/recall/density/coverage are those of the real features the statistics
    cache holds and the samples' features, and the images go through the network once (the reference sample, then
    the samples: no second pass for these metrics)."""
    from test_fid_reference import images, randomize

    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception, "INPUT_SIZE", 75)  # Inception-v3's smallest input: 1/16 of the 299's cost
    weights = tmp_path / "random_inception.pth"
    torch.save(randomize(inception.FIDInceptionV3(), seed=0).state_dict(), weights)
    real = images(40, 16, seed=0).numpy()
    np.savez(tmp_path / "real.npz", images=real)
    np.savez(tmp_path / "dark.npz", images=real // 3)  # the same scenes, darker: far from the real set
    np.savez(tmp_path / "same.npz", images=real[::-1].copy())  # the real images themselves, in another order
    passes, features = [], inception.features

    def counting(model, batch, *args, **kwargs):
        passes.append(len(batch))
        return features(model, batch, *args, **kwargs)

    monkeypatch.setattr(inception, "features", counting)
    # FID itself is not what is tested here, and its two 2,048 x 2,048 eigendecompositions cost 10-25 s per
    # evaluation in a test worker (tests/test_fid_reference.py checks it): a constant stands in for it.
    monkeypatch.setattr(feature_cache, "fid_from_features", lambda *args, **kwargs: 0.0)
    args = ["dataset=images_npz", f"dataset.file={tmp_path / 'real.npz'}", "metrics.inception=true",
            f"metrics.fid.weights={weights}", "metrics.kid_subsets=3", "metrics.kid_subset_size=40"]
    dark = evaluate_samples_file(tmp_path / "dark.npz", args)
    assert passes == [40, 40]
    same = evaluate_samples_file(tmp_path / "same.npz", args)["metrics"]
    assert passes == [40, 40, 40]  # the reference's features come from the cache

    [stats] = (cache_root() / "stats").glob("*.npz")
    with np.load(stats) as cached:
        assert "pytorch-fid-inception-v3" in str(cached["key"])
        reference = cached["features"]  # float32, as the evaluator reads them
    model = inception.load_fid_inception(weights)
    fake = features(model, real // 3)  # uint8 / 255: the levels quantize() gives back
    assert reference.shape == (40, 2048) and np.abs(reference).max() > 1
    got = dark["metrics"]
    kid, kid_std = kernel_inception_distance(fake, reference, subsets=3, subset_size=40)
    assert got["inception_kid"] == pytest.approx(kid, rel=1e-6) and got["inception_kid_std"] == pytest.approx(
        kid_std, rel=1e-6)
    for key, value in prdc(reference, fake, k_pr=3, k_dc=5).items():
        assert got[f"inception_{key}"] == pytest.approx(value, abs=1e-12), key
    assert got["inception_kid"] > 0 and got["inception_precision"] < 1 and got["inception_coverage"] < 1
    assert same["inception_precision"] == same["inception_recall"] == same["inception_coverage"] == 1.0
    # KID of a set against itself, every sample in each subset: 2 (mean off-diagonal k - mean diagonal k) / m, which
    # is <= 0 for a positive semi-definite kernel (|k(x, y)| <= (k(x, x) + k(y, y)) / 2).
    assert same["inception_kid"] <= 1e-9 * got["inception_kid"]
    assert dark["protocol"]["inception_kid"].startswith("on the Inception pool3 features FID reads")
    assert "first 40 samples per side" in dark["protocol"]["inception_prdc"]
