"""The Gaussian-kernel MMD on Inception features (inception_mmd, inception_mmd_multiscale) in the image
evaluator. A small stand-in takes the Inception network's place (same interface: features and logits of
[0, 1] images, an extractor id), so nothing is downloaded and a tiny run costs seconds."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_cfg
from torch import nn

from ganlab.evaluation.saved import evaluate_run
from ganlab.metrics import inception
from ganlab.metrics.classifier import ModeClassifier, save_classifier
from ganlab.metrics.feature_cache import cache_root
from ganlab.train import run

KEYS = ("inception_mmd", "inception_mmd_multiscale")


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
    for key in (*KEYS, "fid"):
        assert again["metrics"][key] == pytest.approx(summary["metrics"][key], rel=1e-6, abs=1e-9), key
    n = summary["protocol"]["samples"]
    assert stand_in[-1].images == 2 * n  # the generated images, and the reference images again (from the
    # cache with its features, the generated ones alone)
