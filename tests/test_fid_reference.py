"""FID's Inception path checked without its weights: ganlab's FIDInceptionV3 against torch-fidelity's
FeatureExtractorInceptionV3, an independent port of the same TensorFlow graph (inception-2015-12-05: pools
without the padding in Mixed_5b-7b, a max pool in Mixed_7c, unbiased logits), both given the same random
weights and the same images. Then FID, KID and precision/recall computed by ganlab against torch-fidelity's
formulas.

torch-fidelity (installed by the Makefile's setup, pinned to TORCH_FIDELITY below) declares torchvision, whose wheels do not run
with the CPU torch here, so it is installed with --no-deps; its package __init__ imports torchvision (datasets,
the VGG and CLIP extractors), so `load_torch_fidelity` loads only the modules this test needs, from the
installed files, under an empty package, with `torch_fidelity.utils` (its data-loading helpers, which need
torchvision) replaced by a stub; none of the functions used here calls into it. Without torch-fidelity the
tests skip.

Conventions: both networks are the same; their preprocessing is not. ganlab follows pytorch-fid (uint8 / 255,
PyTorch's bilinear resize with half-pixel centres, 2x - 1); torch-fidelity follows TensorFlow 1 (its own
bilinear resize without half-pixel centres, (x - 128) / 128). Hence: at 299 x 299 (no resize) ganlab gets the
images as u / 256, whose 2x - 1 is torch-fidelity's (u - 128) / 128 exactly; smaller images go through each
one's own resize, with torch-fidelity's TF-style step swapped for an independent pytorch-fid-style one (Pillow's
bilinear filter, which upsamples with half-pixel centres), and the difference the TF-style step makes is
measured beside it.
"""

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.metrics import inception
from ganlab.metrics.frechet import feature_statistics, frechet_distance
from ganlab.metrics.inception import FIDInceptionV3, features, preprocess
from ganlab.metrics.kid import kernel_inception_distance
from ganlab.metrics.prdc import prdc

TORCH_FIDELITY = "0.4.0"  # the version the Makefile installs; the one these tests were written against
MODULES = ("feature_extractor_inceptionv3", "metric_fid", "metric_kid", "metric_prc", "version")
# Max |difference| of two feature sets, relative to the largest feature. The two networks give bit-identical
# features here (the same float32 operations in the same order); a different BLAS or thread count may move
# the last bits. Each variant of the graph this must tell apart moves them by 0.05 or more (tested below).
FEATURE_RTOL = 1e-5


def load_torch_fidelity() -> types.SimpleNamespace:
    """The modules MODULES of the installed torch-fidelity, loaded without its package __init__ (which needs
    torchvision): an empty `torch_fidelity` package over the installed folder, `torch_fidelity.utils` a stub
    whose every name raises. sys.modules is left as it was found."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or spec.origin is None:
        pytest.skip("torch-fidelity is not installed (make setup installs it: pip install --no-deps "
                    f"torch-fidelity=={TORCH_FIDELITY})")
    folder = Path(spec.origin).parent
    before = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "torch_fidelity"}
    package = types.ModuleType("torch_fidelity")
    package.__path__, package.__file__ = [str(folder)], str(folder / "__init__.py")
    stub = types.ModuleType("torch_fidelity.utils")

    def absent(name):
        def call(*args, **kwargs):
            raise NotImplementedError(f"torch_fidelity.utils.{name} needs torchvision: not loaded by this test")
        return call

    stub.__getattr__ = absent
    try:
        for name in list(before):
            del sys.modules[name]
        sys.modules["torch_fidelity"], sys.modules["torch_fidelity.utils"] = package, stub
        loaded = {name: importlib.import_module(f"torch_fidelity.{name}") for name in MODULES}
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "torch_fidelity"]:
            del sys.modules[name]
        sys.modules.update(before)
    return types.SimpleNamespace(**loaded)


@pytest.fixture(scope="module")
def tf():
    return load_torch_fidelity()


def randomize(model: FIDInceptionV3, seed: int) -> FIDInceptionV3:
    """Every parameter and buffer drawn from a seeded generator, scaled so the activations stay O(1) through the
    network: He-normal convolutions, BatchNorm scale, shift, running mean and variance all random (the default
    init leaves BN the identity, and its features are ~1e-8: too small to compare anything on)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (2 / module.weight[0].numel()) ** 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                module.bias.copy_(0.2 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
        model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=g) / 2048 ** 0.5)
        model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=g))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def networks(tf, tmp_path_factory):
    """(ganlab's network, torch-fidelity's) with the same random weights: ganlab's state dict saved to a file
    and read by torch-fidelity's own constructor (torch.load, then a strict load_state_dict)."""
    ours = randomize(FIDInceptionV3(), seed=0)
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.pth"
    torch.save(ours.state_dict(), path)
    theirs = tf.feature_extractor_inceptionv3.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path))
    return ours, theirs


@pytest.fixture(scope="module")
def large(networks):
    """4 images of 299 x 299 (no resize) through both networks: (images, ganlab's features and logits,
    torch-fidelity's)."""
    ours, theirs = networks
    u = images(4, 299, seed=1)
    got, logits = features(ours, u.double() / 256, return_logits=True)  # 2 (u / 256) - 1 = (u - 128) / 128
    return u, got, logits, *theirs_features(theirs, u)


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images, n x 3 x size x size, that differ from each other (a random level and contrast per image and
    channel, and smooth structure, plus noise): random noise alone gives nearly the same features for all."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic")
    level, contrast = torch.rand(n, 3, 1, 1, generator=g), 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    x = level + contrast * (coarse - 0.5) + 0.1 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def theirs_features(model, u: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        feats, logits = model(u)
    return feats.double().numpy(), logits.double().numpy()


def pil_resize_like_pytorch_fid(x: torch.Tensor, size, align_corners) -> torch.Tensor:
    """Stands in for torch-fidelity's TF-style resize: Pillow's bilinear filter on each float32 channel (upsampling:
    half-pixel centres, edge pixels repeated, as PyTorch's align_corners=False), then scaled by 256 / 255 so that
    torch-fidelity's next step, (x - 128) / 128, gives pytorch-fid's 2 (x / 255) - 1."""
    assert align_corners is False and x.shape[-1] < size[1]  # Pillow's filter widens (antialiases) when shrinking
    out = [np.asarray(Image.fromarray(channel).resize(size[::-1], Image.Resampling.BILINEAR))
           for channel in x.numpy().astype(np.float32).reshape(-1, *x.shape[-2:])]
    return torch.from_numpy(np.stack(out)).reshape(*x.shape[:2], *size) * (256 / 255)


# -------------------------------------------------------------------------------------------- the network


def test_the_installed_version_is_the_pinned_one(tf):
    assert tf.version.__version__ == TORCH_FIDELITY


def test_features_and_logits_agree_with_torch_fidelity_on_the_same_random_weights(networks, large, monkeypatch):
    ours, theirs = networks
    # The weights: torch-fidelity's module names are ganlab's (torchvision's), so the mapping is the identity, and
    # its strict load took every tensor of ours.
    assert theirs.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(value, ours.state_dict()[key]) for key, value in theirs.state_dict().items())

    u, got, logits, expected, expected_logits = large
    assert np.abs(expected).max() > 1 and expected.std(axis=0).mean() > 0.1  # features worth comparing
    assert rel_diff(got, expected) < FEATURE_RTOL and rel_diff(logits, expected_logits) < FEATURE_RTOL

    # The tolerance tells the FID graph from its near variants: torchvision's average pool in Mixed_7c, or average
    # pools that count the zero padding, move the features by 5-25 % of their scale (one image is enough).
    one = u[:1].double() / 256
    monkeypatch.setattr(ours.Mixed_7c, "max_pool", False)
    assert rel_diff(features(ours, one), expected[:1]) > 1e3 * FEATURE_RTOL
    monkeypatch.setattr(ours.Mixed_7c, "max_pool", True)
    monkeypatch.setattr(inception, "_avg_pool", lambda x: torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1))
    assert rel_diff(features(ours, one), expected[:1]) > 1e3 * FEATURE_RTOL


def test_small_images_through_each_resize_path_and_the_fid_of_their_features(networks, large, tf, monkeypatch):
    """32 x 32 uint8 images: ganlab's own path (pytorch-fid's resize and scaling) against torch-fidelity's network
    behind an independent pytorch-fid-style resize (Pillow's), and the FID of these against the 299 x 299 set by
    ganlab's Fréchet code and by torch-fidelity's (TTUR's eigenvalue formula)."""
    ours, theirs = networks
    _, got_large, _, expected_large, _ = large
    small = images(4, 32, seed=2)
    got_small = features(ours, small)  # uint8 in: ganlab's whole input path
    with torch.no_grad():
        tf_style = theirs(small[:1])[0].double().numpy()  # torch-fidelity's own TF-1 resize and scaling
    monkeypatch.setattr(tf.feature_extractor_inceptionv3, "interpolate_bilinear_2d_like_tensorflow1x",
                        pil_resize_like_pytorch_fid)
    expected_small, _ = theirs_features(theirs, small)
    assert rel_diff(got_small, expected_small) < FEATURE_RTOL
    # The conventions differ: TF-1's resize (no half-pixel centres) and its scaling move the features by ~1 %,
    # far outside the tolerance, so the agreement above is the pytorch-fid path's and not an accident.
    assert rel_diff(tf_style, expected_small[:1]) > 100 * FEATURE_RTOL

    # FID on the first 256 of the 2,048 features: the formula is the same at any dimension, and the 2,048 x 2,048
    # eigendecompositions cost 15 s on one core (measured at 2,048 too: 8e-8 apart). 4 samples a side: covariances
    # of rank 3, so both formulas also meet the rounding of the null directions, which they treat differently
    # (clipped square roots here, the real part of complex ones there).
    d = 256
    ours_fid = frechet_distance(*feature_statistics(got_small[:, :d]), *feature_statistics(got_large[:, :d]))
    stats = [tf.metric_fid.fid_features_to_statistics(torch.from_numpy(f[:, :d])) for f in (expected_small,
                                                                                          expected_large)]
    theirs_fid = tf.metric_fid.fid_statistics_to_metric(*stats, verbose=False)[tf.metric_fid.KEY_METRIC_FID]
    assert ours_fid > 0.1 * np.trace(stats[1]["sigma"])  # the two sets differ
    assert ours_fid == pytest.approx(theirs_fid, rel=1e-6)


# ------------------------------------------------------------------------------------- KID, precision, recall


def test_kid_and_precision_recall_agree_with_torch_fidelity():
    """On random features of Inception's width: KID with every sample in each subset (then the subsets are
    permutations of the sets and the unbiased MMD² is the same whatever each library draws), and precision and
    recall at k = 3 (torch-fidelity: generated set first)."""
    tf = load_torch_fidelity()
    rng = np.random.default_rng(0)
    real = rng.normal(size=(100, 2048))
    fake = 0.8 * rng.normal(size=(100, 2048)) + 0.1
    ours = kernel_inception_distance(fake, real, subsets=2, subset_size=100)
    theirs = tf.metric_kid.kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=2,
                                                 kid_subset_size=100, verbose=False)
    assert ours[0] > 0 and ours[0] == pytest.approx(theirs[tf.metric_kid.KEY_METRIC_KID_MEAN], rel=1e-9)
    assert ours[1] == pytest.approx(theirs[tf.metric_kid.KEY_METRIC_KID_STD], abs=1e-9 * ours[0])  # 0: equal subsets

    # Precision and recall are trivial (0 or 1) on so few points at 2,048 dimensions: 8 dimensions here.
    real, fake = rng.normal(size=(200, 8)), 0.7 * rng.normal(size=(150, 8)) + 0.3
    ours = prdc(real, fake, k_pr=3, k_dc=5)
    theirs = tf.metric_prc.prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), verbose=False)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1  # not a trivial case
    # torch-fidelity averages in float32: equal up to its rounding, far below one point (1/150, 1/200).
    assert ours["precision"] == pytest.approx(theirs[tf.metric_prc.KEY_METRIC_PRECISION], abs=1e-6)
    assert ours["recall"] == pytest.approx(theirs[tf.metric_prc.KEY_METRIC_RECALL], abs=1e-6)


def test_preprocess_is_pytorch_fids_resize_against_pillow():
    """ganlab's resize alone (no network): Pillow's bilinear upsampling of the same [0, 1] levels, to float rounding."""
    small = images(2, 28, seed=3)
    ours = preprocess(small)  # uint8 / 255, resize to 299, 2x - 1
    reference = pil_resize_like_pytorch_fid(small.float(), (299, 299), False) / 128 - 1  # 2 (u / 255) - 1
    assert ours.shape == (2, 3, 299, 299)
    assert float((ours - reference).abs().max()) < 1e-5
