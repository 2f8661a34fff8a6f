"""remedy=multiscale (pix2pixHD's multi-scale Ds): the pyramid each D sees, the objectives as sums over
scales, which networks each phase moves, the refusals, and a tiny image run that resumes bit-identically."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_DCGAN, built, changed, ganlab, make_cfg, snapshot

from ganlab.errors import ConfigError
from ganlab.gan import build
from ganlab.metrics.classifier import ModeClassifier, save_classifier
from ganlab.remedies.base import discriminator_loss
from ganlab.remedies.multiscale import MultiScaleDiscriminator
from ganlab.step import d_step, g_step
from ganlab.train import run


def stacked(root, *overrides):
    """A multiscale experiment on tiny Stacked Fashion-MNIST (3 x 28 x 28) with the tiny DCGAN."""
    return built("dataset=stacked_fashion_mnist", f"dataset.root={root}", "dataset.n=100", *TINY_DCGAN,
                 "remedy=multiscale", *overrides)


@pytest.mark.parametrize("pad, sides", [("false", (28, 14, 7)), ("true", (32, 16, 8))])
def test_each_d_sees_the_image_average_pooled_once_more(image_root, pad, sides):
    exp = stacked(image_root, f"dataset.pad_to_32={pad}")
    D = exp.D
    assert isinstance(D, MultiScaleDiscriminator) and len(D.discriminators) == 3  # the paper's 3 Ds
    x = exp.data.sample(8)
    levels = D.pyramid(x)
    assert [tuple(level.shape) for level in levels] == [(8, 3, s, s) for s in sides]
    assert [d.in_shape for d in D.discriminators] == [(3, s, s) for s in sides]  # each built for its size
    # 3x3 windows, stride 2, padding 1 left out of the mean: a corner averages 2x2 pixels, the rest 3x3.
    fine, coarse = levels[0], levels[1]
    assert torch.allclose(coarse[..., 0, 0], fine[..., :2, :2].mean(dim=(-2, -1)))
    assert torch.allclose(coarse[..., 1, 1], fine[..., 1:4, 1:4].mean(dim=(-2, -1)))
    assert torch.allclose(levels[2], F.avg_pool2d(coarse, 3, 2, 1, count_include_pad=False))
    # As a plain D (critic gap): the mean of the scales' scores.
    scores = torch.stack([d(level) for d, level in zip(D.discriminators, levels)])
    assert D(x).shape == (8,) and torch.allclose(D(x), scores.mean(dim=0))


@pytest.mark.parametrize("loss", ["nsgan", "wgan_gp", "loss_sensitive"])
def test_the_objectives_are_sums_over_scales_of_the_losss_own(image_root, loss):
    """D: the sum of discriminator_loss (the loss's D objective and its penalty) of each D on its own pooled
    real and fake batches; G: the sum of the loss's G objective. Written out by hand, with the pooling
    of F.avg_pool2d, and the same random draws for WGAN-GP's interpolation points."""
    exp = stacked(image_root, f"loss={loss}")
    real, z = exp.data.sample(8), torch.randn(8, exp.latent_dim)
    ds = exp.D.discriminators

    def pyramid(x):
        levels = [x]
        for _ in range(len(ds) - 1):
            levels.append(F.avg_pool2d(levels[-1], 3, stride=2, padding=1, count_include_pad=False))
        return levels

    torch.manual_seed(5)
    value = exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z)
    torch.manual_seed(5)
    fake = exp.G(z).detach()
    by_hand = sum(discriminator_loss(d, exp.loss, r, f) for d, r, f in zip(ds, pyramid(real), pyramid(fake)))
    assert torch.allclose(value, by_hand, rtol=1e-6, atol=1e-7)
    one_scale = discriminator_loss(ds[0], exp.loss, real, fake)
    assert not torch.allclose(value, one_scale)  # the coarser Ds count

    g_value = exp.remedy.g_loss(exp.G, exp.D, exp.loss, real, z)
    g_by_hand = sum(exp.loss.g_loss(d(level)) for d, level in zip(ds, pyramid(exp.G(z))))
    assert torch.allclose(g_value, g_by_hand, rtol=1e-6, atol=1e-7)


def test_a_d_step_moves_every_scales_d_and_not_g_and_a_g_step_g_and_not_d(image_root):
    exp = stacked(image_root)
    G, ds = exp.G, exp.D.discriminators
    real = exp.data.sample(8)
    g_before, d_before = snapshot(G), [snapshot(d) for d in ds]
    d_step(exp, real, torch.randn(8, exp.latent_dim))
    assert all(changed(before, d) for before, d in zip(d_before, ds)) and not changed(g_before, G)
    d_before = [snapshot(d) for d in ds]
    g_step(exp, real, torch.randn(8, exp.latent_dim))
    assert changed(g_before, G) and not any(changed(before, d) for before, d in zip(d_before, ds))
    # One optimizer over the wrapper holds every scale's parameters (so do checkpoints: the wrapper is D).
    assert {id(p) for g in exp.d_opt.param_groups for p in g["params"]} == {id(p) for p in exp.D.parameters()}


def test_vector_data_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^multiscale needs images \(C, H, W\).*shape \(2,\)") as info:
        build(make_cfg("remedy=multiscale"), torch.device("cpu"))
    assert "\n" not in str(info.value)
    result = ganlab("train", "remedy=multiscale", cwd=tmp_path)  # at start-up, before any run directory
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "ganlab: error: multiscale needs images" in result.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("overrides, message", [
    (["remedy.multiscale.scales=4"], r"remedy.multiscale.scales=4: scale 3 gives 4x4 images.*scales<=3"),
    (["dataset.pad_to_32=true", "remedy.multiscale.scales=4"], r"scale 3 gives 4x4 images.*scales<=3"),
    (["remedy.multiscale.scales=0"], "must be >= 1"),
    (["remedy=[multiscale,pacgan]"], "pacgan packs several images into one D input"),
    (["remedy=[multiscale,minibatch_std]"], "minibatch_std needs a discriminator with `features`"),
    (["remedy=[multiscale,unrolled]"], "multiscale and unrolled both replace the G step"),
    (["remedy=[multiscale,madgan]"], "both replace the D step"),
])
def test_refusals_are_one_line(image_root, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        stacked(image_root, *overrides)
    assert "\n" not in str(info.value)


def test_a_d_that_takes_one_size_only_is_refused_naming_the_key(image_root):
    with pytest.raises(ConfigError, match=r"remedy.multiscale.scales=3: scale 1 gives 16x16 images.*resnet is "
                                          r"for 32x32.*scales<=1") as info:
        built("dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100", "dataset.pad_to_32=true",
              "model=resnet", "model.g.width=4", "model.d.width=4", "batch_size=8", "remedy=multiscale")
    assert "\n" not in str(info.value)


def test_it_combines_with_spectral_norm_instance_noise_and_label_smoothing(image_root):
    exp = stacked(image_root, "remedy=[multiscale,spectral_norm,instance_noise,label_smoothing]")
    from ganlab.remedies.instance_noise import NoisyInput

    assert isinstance(exp.D, NoisyInput) and isinstance(exp.D.inner, MultiScaleDiscriminator)
    convs = [m for m in exp.D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(hasattr(m, "parametrizations") for m in convs)  # 2 per D, every scale
    before = [snapshot(d) for d in exp.D.inner.discriminators]
    assert torch.isfinite(d_step(exp, exp.data.sample(8), torch.randn(8, exp.latent_dim)))
    assert all(changed(b, d) for b, d in zip(before, exp.D.inner.discriminators))


@pytest.fixture
def classifier_cache(tmp_path, monkeypatch):
    """An untrained mode classifier in a private cache, as tests/test_image_training.py does."""
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_classifier(ModeClassifier(), "fashion_mnist", 0.5, {"epochs": 0})


def test_a_tiny_image_run_completes_and_resumes_bit_identically(image_root, classifier_cache, tmp_path):
    cfg = ["debug=tiny_images", *TINY_DCGAN, "dataset=fashion_mnist", f"dataset.root={image_root}",
           "remedy=multiscale", "checkpoint.every=3"]
    whole = run(make_cfg(*cfg), tmp_path / "whole")
    assert whole["status"] == "completed" and whole["step"] == 6 and whole["labels"]["remedy"] == "multiscale"
    assert np.isfinite(whole["metrics"]["critic_gap"]) and 1 <= whole["metrics"]["modes_captured"] <= 10

    run(make_cfg(*cfg, "steps=3"), tmp_path / "part")
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and {f"discriminators.{k}.head.weight" for k in range(3)} <= set(state["D"])
    resumed = run(make_cfg(*cfg, f"resume={tmp_path / 'part'}"), tmp_path / "part")
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 3
    for name in ("whole", "part"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["step"] == 6
    x_whole, x_resumed = (np.load(tmp_path / name / "samples.npz")["x"] for name in ("whole", "part"))
    assert np.array_equal(x_whole, x_resumed)
    timeless = ({k: v for k, v in s["metrics"].items() if k != "eval_seconds"} for s in (whole, resumed))
    assert next(timeless) == next(timeless)  # every metric but the wall time, bit for bit
