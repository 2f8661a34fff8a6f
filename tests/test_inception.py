"""The FID Inception-v3 (layout, forward, weights lookup), its preprocessing, the Inception Score, the sliced
Wasserstein distance and the cache of real-data statistics. Nothing is downloaded: the weights tests use
random weights saved to temporary files, and $GANLAB_CACHE points into tmp_path."""

import logging
import os
import shutil

import numpy as np
import pytest
import scipy.stats
import torch

from ganlab.errors import GanlabError
from ganlab.metrics import feature_cache, inception
from ganlab.metrics.feature_cache import (
    cached_statistics,
    fid_from_features,
    statistics_path,
)
from ganlab.metrics.frechet import feature_statistics, frechet_distance
from ganlab.metrics.inception import (
    FIDInceptionV3,
    features,
    load_fid_inception,
    preprocess,
    quantize,
)
from ganlab.metrics.inception_score import inception_score
from ganlab.metrics.sliced import random_directions, sliced_wasserstein

# ------------------------------------------------------------------------------------ reference layout
# torchvision's Inception3 (torchvision/models/inception.py), written out here as (name, in, out, kh, kw)
# for every BasicConv2d, independently of ganlab's module. pytorch-fid's FID blocks keep these shapes.


def block_a(cin, pool):
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)]


def block_b(cin):
    return [("branch3x3", cin, 384, 3, 3), ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3)]


def block_c(cin, c7):
    return [("branch1x1", cin, 192, 1, 1), ("branch7x7_1", cin, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", cin, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", cin, 192, 1, 1)]


def block_d(cin):
    return [("branch3x3_1", cin, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", cin, 192, 1, 1),
            ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)]


def block_e(cin):
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)]


def reference_convs(aux: bool = False):
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    blocks = [("Mixed_5b", block_a(192, 32)), ("Mixed_5c", block_a(256, 64)), ("Mixed_5d", block_a(288, 64)),
              ("Mixed_6a", block_b(288)), ("Mixed_6b", block_c(768, 128)), ("Mixed_6c", block_c(768, 160)),
              ("Mixed_6d", block_c(768, 160)), ("Mixed_6e", block_c(768, 192)), ("Mixed_7a", block_d(768)),
              ("Mixed_7b", block_e(1280)), ("Mixed_7c", block_e(2048))]
    if aux:  # torchvision's InceptionAux: conv0 768->128 1x1, conv1 128->768 5x5 (+ its own fc)
        blocks.append(("AuxLogits", [("conv0", 768, 128, 1, 1), ("conv1", 128, 768, 5, 5)]))
    convs += [(f"{block}.{name}", *shape) for block, layers in blocks for name, *shape in layers]
    return convs


def reference_state_shapes(classes: int = 1008) -> dict[str, tuple]:
    shapes = {}
    for name, cin, cout, kh, kw in reference_convs():
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{buffer}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (classes, 2048), (classes,)
    return shapes


def reference_parameter_count(classes: int, aux: bool) -> int:
    convs = sum(cin * cout * kh * kw + 2 * cout for _, cin, cout, kh, kw in reference_convs(aux))  # BN: gamma, beta
    return convs + 2049 * classes + (769 * classes if aux else 0)  # main fc (+ aux fc 768 -> classes)


# pytorch-fid's network: torchvision's inception_v3(num_classes=1008, aux_logits=False) with patched blocks.
FID_INCEPTION_PARAMETERS = 23_850_960

# A representative (key, shape) sample of the pt_inception file, covering every block type.
EXPECTED_ENTRIES = [
    ("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)), ("Conv2d_1a_3x3.bn.running_mean", (32,)),
    ("Conv2d_2b_3x3.conv.weight", (64, 32, 3, 3)), ("Conv2d_4a_3x3.conv.weight", (192, 80, 3, 3)),
    ("Mixed_5b.branch1x1.conv.weight", (64, 192, 1, 1)), ("Mixed_5b.branch5x5_1.conv.weight", (48, 192, 1, 1)),
    ("Mixed_5b.branch5x5_2.conv.weight", (64, 48, 5, 5)), ("Mixed_5b.branch_pool.conv.weight", (32, 192, 1, 1)),
    ("Mixed_5d.branch_pool.bn.running_var", (64,)),
    ("Mixed_6a.branch3x3.conv.weight", (384, 288, 3, 3)), ("Mixed_6a.branch3x3dbl_3.conv.weight", (96, 96, 3, 3)),
    ("Mixed_6b.branch7x7_2.conv.weight", (128, 128, 1, 7)), ("Mixed_6b.branch7x7_3.conv.weight", (192, 128, 7, 1)),
    ("Mixed_6b.branch7x7dbl_5.conv.weight", (192, 128, 1, 7)),
    ("Mixed_6e.branch7x7dbl_2.conv.weight", (192, 192, 7, 1)),
    ("Mixed_7a.branch3x3_2.conv.weight", (320, 192, 3, 3)), ("Mixed_7a.branch7x7x3_4.conv.weight", (192, 192, 3, 3)),
    ("Mixed_7b.branch1x1.conv.weight", (320, 1280, 1, 1)), ("Mixed_7b.branch3x3_2a.conv.weight", (384, 384, 1, 3)),
    ("Mixed_7b.branch3x3dbl_2.conv.weight", (384, 448, 3, 3)), ("Mixed_7b.branch_pool.conv.weight", (192, 1280, 1, 1)),
    ("Mixed_7c.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)), ("Mixed_7c.branch_pool.conv.weight", (192, 2048, 1, 1)),
    ("Mixed_7c.branch3x3dbl_3b.bn.num_batches_tracked", ()),
    ("fc.weight", (1008, 2048)), ("fc.bias", (1008,)),
]


def test_reference_parameter_count_matches_torchvisions_published_count():
    # torchvision publishes 27,161,264 parameters for inception_v3 (1000 classes, with the aux head).
    assert reference_parameter_count(1000, aux=True) == 27_161_264
    assert reference_parameter_count(1008, aux=False) == FID_INCEPTION_PARAMETERS


def test_state_dict_keys_and_shapes_match_the_pt_inception_layout():
    model = FIDInceptionV3()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in EXPECTED_ENTRIES:
        assert shapes[key] == shape, key
    assert shapes == reference_state_shapes()  # every key, nothing more (no AuxLogits)
    assert len(shapes) == 94 * 6 + 2
    assert sum(p.numel() for p in model.parameters()) == FID_INCEPTION_PARAMETERS
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not model.Mixed_7b.max_pool and model.Mixed_7c.max_pool  # only Mixed_7c pools by max


def test_average_pools_leave_the_padding_out():
    ones = torch.ones(1, 1, 4, 4)
    assert torch.equal(inception._avg_pool(ones), ones)  # count_include_pad=True would give 4/9 at corners


# -------------------------------------------------------------------------------------- random weights


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A fresh network's state dict saved as a pt file: (path, its SHA-256, the state dict)."""
    torch.manual_seed(0)
    state = FIDInceptionV3().state_dict()
    path = tmp_path_factory.mktemp("weights") / "random_inception.pth"
    torch.save(state, path)
    return path, inception.sha256_file(path), state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception, "WEIGHTS_URL", "http://127.0.0.1:9/" + inception.WEIGHTS_FILE)
    monkeypatch.setattr(inception, "DOWNLOAD_TIMEOUT_S", 5.0)
    return tmp_path / "cache"


@pytest.fixture
def small_input(monkeypatch):
    """Resize to 75 x 75 (Inception-v3's smallest input) instead of 299: the same network and code
    path at 1/16 of the cost, for the tests that run forwards (test_preprocess checks the 299)."""
    monkeypatch.setattr(inception, "INPUT_SIZE", 75)


def test_forward_gives_pool3_features_and_1008_logits(small_input):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats, logits = model(images)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.allclose(logits, feats @ model.fc.weight.T)  # unbiased logits, as Salimans' IS code
    batched = features(model, images, batch_size=2)
    one_by_one, lg = features(model, images, batch_size=1, return_logits=True)
    assert batched.dtype == np.float64 and batched.shape == (2, 2048) and lg.shape == (2, 1008)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batched, feats.double().numpy(), rtol=1e-5, atol=1e-7)
    uint8 = (images * 255).round().to(torch.uint8)
    np.testing.assert_allclose(features(model, uint8.numpy()), features(model, uint8.float() / 255), rtol=1e-6)
    gray = features(model, images[:, :1])
    np.testing.assert_allclose(gray, features(model, images[:, :1].repeat(1, 3, 1, 1)), rtol=1e-6)
    with pytest.raises(ValueError, match="quantize"):
        features(model, images * 2 - 1)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_and_of_a_shifted_set_is_not(small_input):
    """FID(x, x) through the whole pipeline (quantize, resize, the network with random weights, float64
    statistics): 0 up to rounding; a brighter copy of the same images scores clearly above it."""
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    images = torch.rand(4, 3, 28, 28) * 2 - 1  # generator-style output in [-1, 1]
    real = features(model, inception.quantize(images))
    mu, sigma = feature_statistics(real)
    same = fid_from_features(real, mu, sigma)
    shifted = fid_from_features(features(model, inception.quantize((images + 0.5).clamp(-1, 1))), mu, sigma)
    # Random weights give tiny features (trace of sigma ~1e-15), so compare with the scale they set.
    assert shifted > 0.1 * float(np.trace(sigma)) and abs(same) < 1e-6 * shifted


def test_state_dict_round_trips_strictly_and_loads_without_num_batches_tracked(weights_file, tmp_path):
    path, _, state = weights_file
    model = FIDInceptionV3()
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    # As a module's state_dict (metadata says BatchNorm version 2) minus the counters: plain strict loading
    # fails on the missing keys; ours fills them.
    stripped = model.state_dict()
    for key in [k for k in stripped if k.endswith("num_batches_tracked")]:
        del stripped[key]
    old = tmp_path / "without_counters.pth"
    torch.save(stripped, old)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        FIDInceptionV3().load_state_dict(torch.load(old, weights_only=True), strict=True)
    loaded = load_fid_inception(old)
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


# ------------------------------------------------------------------------------------------ weights lookup


def test_explicit_path_is_used_and_its_hash_is_the_extractor_id(weights_file, cache, caplog):
    path, digest, state = weights_file
    with caplog.at_level(logging.WARNING):
        model = load_fid_inception(str(path))
    assert "not comparable" in caplog.text  # random weights are not pytorch-fid's file
    assert model.weights_sha256 == digest and model.extractor_id().endswith(digest)
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert not cache.exists()  # neither the cache nor the network was touched
    with pytest.raises(GanlabError, match="metrics.fid.weights"):
        load_fid_inception(str(path) + ".missing")


def test_cache_path_is_used_and_checked(weights_file, cache, monkeypatch):
    path, digest, state = weights_file
    target = inception.weights_cache_path()
    assert target == cache / "weights" / inception.WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    shutil.copy(path, target)
    with pytest.raises(GanlabError, match="SHA-256") as info:  # not the known file: refused, never downloaded over
        load_fid_inception(None)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", digest)
    model = load_fid_inception(None)
    assert model.weights_sha256 == digest and torch.equal(model.fc.bias, state["fc.bias"])


def test_download_verifies_the_hash_and_lands_atomically(weights_file, cache, monkeypatch):
    path, digest, _ = weights_file
    monkeypatch.setattr(inception, "WEIGHTS_URL", path.as_uri())
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(GanlabError, match="not cached"):
        load_fid_inception(None)
    assert os.listdir(cache / "weights") == []  # no partial file, no wrong file

    monkeypatch.setattr(inception, "WEIGHTS_SHA256", digest)
    model = load_fid_inception(None)
    assert os.listdir(cache / "weights") == [inception.WEIGHTS_FILE]
    assert inception.sha256_file(inception.weights_cache_path()) == digest == model.weights_sha256


def test_offline_error_is_one_line_naming_the_file_the_path_and_the_url(cache):
    with pytest.raises(GanlabError) as info:
        load_fid_inception(None)
    message = str(info.value)
    assert "\n" not in message
    for part in (inception.WEIGHTS_FILE, str(inception.weights_cache_path()), inception.WEIGHTS_URL):
        assert part in message
    assert os.listdir(cache / "weights") == []


def test_published_hash_agrees_with_the_file_name():
    # torch.hub's convention: the name ends with the first 8 hex digits of the file's SHA-256.
    assert inception.WEIGHTS_FILE.endswith(f"-{inception.WEIGHTS_SHA256[:8]}.pth")
    assert inception.WEIGHTS_URL.endswith("/fid_weights/" + inception.WEIGHTS_FILE)


# ----------------------------------------------------------------------------------------- preprocessing


def test_quantize_rounds_to_uint8_levels():
    x = torch.tensor([-1.0, 0.0, 1.0, -2.0, 2.0, 0.5, 0.999])
    assert (quantize(x) * 255).tolist() == [0.0, 128.0, 255.0, 0.0, 255.0, 191.0, 255.0]


def test_preprocess_resizes_to_299_and_scales_to_minus_one_one():
    level = quantize(torch.zeros(1, 1, 8, 8))  # 128 / 255
    out = preprocess(level)
    assert out.shape == (1, 3, 299, 299)
    assert torch.allclose(out, torch.full_like(out, 2 * 128 / 255 - 1), atol=1e-6)
    assert torch.allclose(preprocess(torch.full((1, 3, 40, 40), 128, dtype=torch.uint8)), out, atol=1e-6)


# ------------------------------------------------------------------------------------------ Inception Score


def test_inception_score_on_hand_computed_cases():
    assert inception_score(np.zeros((50, 1008))) == pytest.approx((1.0, 0.0))
    k = 4  # each split of 4 holds one confident sample per class: IS = k exactly
    logits = np.zeros((40, 1008))
    logits[np.arange(40), np.arange(40) % k] = 100.0
    mean, std = inception_score(logits)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # p = (3/4, 1/4) and (1/4, 3/4): p(y) uniform, KL = 3/4 log 3 - log 2 for both, IS = 3^(3/4) / 2.
    two = np.log([[3.0, 1.0], [1.0, 3.0]])
    assert inception_score(two, splits=1) == pytest.approx((3 ** 0.75 / 2, 0.0))
    with pytest.raises(ValueError):
        inception_score(np.zeros((5, 10)), splits=10)


# ------------------------------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_is_zero_on_identical_sets_and_the_shift_in_one_dimension():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    assert sliced_wasserstein(x, x) == {"sw1": 0.0, "sw2": 0.0}
    line = rng.uniform(size=(100, 1))
    shifted = sliced_wasserstein(line, line - 0.7, projections=7)
    assert shifted["sw1"] == pytest.approx(0.7) and shifted["sw2"] == pytest.approx(0.7)


def test_sliced_wasserstein_of_unequal_sets_is_the_exact_quantile_integral():
    # x = {0, 1}, y = {0, 0.5, 1}: the quantile functions differ by 0.5 on (1/3, 2/3): W1 = 1/6, W2^2 = 1/12.
    result = sliced_wasserstein(np.array([[0.0], [1.0]]), np.array([[0.0], [0.5], [1.0]]), projections=3)
    assert result["sw1"] == pytest.approx(1 / 6) and result["sw2"] == pytest.approx(12 ** -0.5)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(70, 1)), rng.exponential(size=(45, 1))
    assert sliced_wasserstein(a, b, projections=1)["sw1"] == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0],
                                                                                                           b[:, 0]))


def test_sliced_wasserstein_of_a_translation_is_the_mean_projected_shift_and_symmetric():
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(200, 5)), np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    u = random_directions(5, 64, seed=3).numpy()
    assert sliced_wasserstein(x, x + t, projections=64, seed=3)["sw1"] == pytest.approx(np.abs(t @ u).mean())
    y = rng.normal(0.5, size=(150, 5))
    forward, backward = sliced_wasserstein(x, y, seed=4), sliced_wasserstein(y, x, seed=4)
    assert forward == pytest.approx(backward)
    assert sliced_wasserstein(torch.from_numpy(x), torch.from_numpy(y), seed=4) == pytest.approx(forward)
    assert sliced_wasserstein(x, y, seed=5) != forward  # another draw of directions


# ------------------------------------------------------------------------------------------- feature cache


def test_cached_statistics_reuse_recompute_and_distrust(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    real = rng.normal(size=(64, 4))
    calls = []

    def compute():
        calls.append(1)
        return real

    key = {"dataset": "cifar10", "split": "train", "extractor": "fid:sha256=abc", "n": 64}
    mu, sigma, feats = cached_statistics(key, compute)
    assert len(calls) == 1 and statistics_path(key).parent == tmp_path / "stats"
    np.testing.assert_allclose(mu, real.mean(0))
    assert feats.dtype == np.float32 and feats.shape == (64, 4)
    again = cached_statistics(dict(reversed(list(key.items()))), compute)  # same key, other order
    assert len(calls) == 1 and np.array_equal(again[0], mu) and np.array_equal(again[1], sigma)

    cached_statistics({**key, "n": 65}, compute)  # another key: recomputed
    assert len(calls) == 2

    statistics_path(key).write_bytes(b"not an npz")  # corrupt: recomputed and rewritten
    cached_statistics(key, compute)
    cached_statistics(key, compute)
    assert len(calls) == 3

    shutil.copy(statistics_path({**key, "n": 65}), statistics_path(key))  # a file holding another key
    cached_statistics(key, compute)
    assert len(calls) == 4
    assert not [p for p in (tmp_path / "stats").iterdir() if p.suffix != ".npz"]  # no temporary files left

    monkeypatch.setattr(feature_cache, "MAX_CACHED_FEATURES", 10)
    assert cached_statistics({**key, "n": 1}, compute)[2] is None  # too many to keep


def test_fid_from_features_warns_once_below_2048_samples(caplog, monkeypatch):
    monkeypatch.setattr(feature_cache, "_warned", set())
    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(100, 3)), rng.normal(0.2, size=(300, 3))
    mu, sigma = feature_statistics(real)
    with caplog.at_level(logging.WARNING):
        value = fid_from_features(fake, mu, sigma)
        fid_from_features(fake, mu, sigma)  # the same n again: no second warning
        fid_from_features(rng.normal(size=(2048, 3)), mu, sigma)  # enough samples: none
    assert value == pytest.approx(frechet_distance(*feature_statistics(fake), mu, sigma))
    assert len(caplog.records) == 1 and "2048" in caplog.text and "\n" not in caplog.records[0].getMessage()
