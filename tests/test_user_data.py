"""The user's own data (README, "Your own data"): `dataset=mixture` (centres, stds and weights in the config or a
YAML file, any dimension), `dataset=points` (a file of points, optional mode labels), `dataset=images_npz` and
`dataset=image_folder` (images, optional labels): each composes, trains, and is measured by its protocol; a bad
value or file is one line. And README's "How to add a dataset" names the contract ganlab/data/protocol.py checks."""

import json
import logging
import math
import re

import numpy as np
import pytest
from test_sample import _ganlab  # `ganlab ARGS` in this process
import torch
from conftest import REPO, TINY, TINY_DCGAN, make_cfg
from test_image_training import classifier_cache  # noqa: F401 - a fixture

from ganlab.gan import build_data
from ganlab.metrics.modes import mode_coverage

CPU = torch.device("cpu")




def _train(tmp_path, monkeypatch, capsys, *overrides) -> dict:
    """`ganlab train OVERRIDES` in tmp_path, in this process; its summary."""
    monkeypatch.chdir(tmp_path)
    for handler in logging.getLogger().handlers[:]:  # an earlier in-process job's handlers (closed streams)
        logging.getLogger().removeHandler(handler)
    code, _, err = _ganlab(capsys, "train", *overrides, "hydra.run.dir=run")
    assert code == 0, err
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def _one_line(code, err) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: "), err
    return lines[0]


# ---- dataset=mixture ------------------------------------------------------------------------------------------

MIX_FILE = """# four modes in 3-D: two narrow and rare, two wide and common
centers: [[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 4]]
std: [0.1, 0.1, 0.3, 0.3]
weights: [1, 1, 3, 3]
"""


def test_a_mixture_defined_in_a_yaml_file_composes_trains_and_is_measured(tmp_path, monkeypatch, capsys):
    """A tiny dataset of one's own, defined in this test (a YAML file): composed with dataset=mixture, trained with
    debug=tiny, measured by the 2-D protocol in 3-D, with its reference rows; the pictures show two coordinates and
    there is no D map (D's map is of the plane)."""
    (tmp_path / "modes.yaml").write_text(MIX_FILE)
    summary = _train(tmp_path, monkeypatch, capsys, "dataset=mixture", "dataset.file=modes.yaml", *TINY)
    assert summary["status"] == "completed" and summary["n_modes"] == 4 and summary["labels"]["dataset"] == "mixture"
    m = summary["metrics"]
    for key in ("modes_captured", "high_quality_pct", "reverse_kl", "wasserstein1", "wasserstein2", "mmd"):
        assert key in m, key
    assert len(summary["mode_counts"]) == 4
    data = summary["references"]["data"]  # the mixture's own samples: every mode, KL against its weights near 0
    assert data["modes_captured"] == 4 and data["reverse_kl"] < 0.05 and data["high_quality_pct"] > 90
    assert summary["references"]["gaussian"]["wasserstein1"] > data["wasserstein1"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload().Tags()["images"]
    assert "samples" in images and "discriminator" not in images


def test_the_mixture_samples_its_weights_and_stds_and_the_metrics_measure_against_them():
    cfg = make_cfg("dataset=mixture", "dataset.centers=[[0,0],[10,0],[0,10]]", "dataset.std=[0.1,0.5,1.0]",
                   "dataset.weights=[2,1,1]")
    data = build_data(cfg, CPU)
    x, k = data.sample_with_classes(20_000, torch.Generator().manual_seed(0))
    shares = torch.bincount(k, minlength=3).double() / len(k)
    assert torch.allclose(shares, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), atol=0.02)
    spread = torch.stack([(x[k == j] - data.centers[j]).std() for j in range(3)])
    assert torch.allclose(spread, torch.tensor([0.1, 0.5, 1.0]), rtol=0.05)
    m = mode_coverage(x, data.centers, data.std, weights=data.weights)
    # each mode's own std decides high quality: 3 std in 2-D holds 1 - exp(-4.5) of a Gaussian's samples
    assert m["modes_captured"] == 3 and m["high_quality_pct"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.5)
    assert m["reverse_kl"] < 0.002  # against the weights; against the uniform distribution it would be
    assert mode_coverage(x, data.centers, data.std)["reverse_kl"] == pytest.approx(
        math.log(3) + 0.5 * math.log(0.5) + 0.5 * math.log(0.25), abs=0.01)
    mean, cov = data.moments()  # the exact moments the Gaussian-fit reference samples
    assert torch.allclose(mean.float(), x.mean(0), atol=0.15)
    assert torch.allclose(cov.float(), torch.cov(x.T), rtol=0.05, atol=0.3)
    # the built-in mixtures are what they were: one std, equal weights
    ring = build_data(make_cfg(), CPU)
    assert isinstance(ring.std, float) and ring.weights is None


@pytest.mark.parametrize("overrides, message", [
    (["dataset.centers=[[0,0],[1]]"], "dataset: centers: expected a list of points, each a list of numbers"),
    (["dataset.std=[0.1,0.2]"], "dataset: std: one number, or one per mode (3), got 2"),
    (["dataset.std=0"], "dataset: std must be > 0, got 0.0"),
    (["dataset.weights=[1,0,1]"], "dataset: weights must be > 0 (a mode of weight 0 is no mode), got [1.0, 0.0, 1.0]"),
    (["dataset.weights=[1,1]"], "dataset: weights: one per mode (3), got 2"),
    (["dataset.centers=null"], "dataset: mixture needs centers: dataset.centers=[[x,y],...] or dataset.file=PATH.yaml"),
    (["dataset.file={tmp}/none.yaml"], "dataset: file={tmp}/none.yaml: cannot read it"),
    (["dataset.file={tmp}/bad.yaml"], "dataset: file={tmp}/bad.yaml: expected a YAML mapping with centers"),
    (["dataset.file={tmp}/extra.yaml"], "dataset: file={tmp}/extra.yaml: unknown key 'stds'; a mixture file gives"),
])
def test_a_bad_mixture_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, overrides, message):
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "extra.yaml").write_text("centers: [[0, 0]]\nstds: 1\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = _ganlab(capsys, "train", "dataset=mixture", *(o.format(tmp=tmp_path) for o in overrides), *TINY)
    assert message.format(tmp=tmp_path) in _one_line(code, err)
    assert not (tmp_path / "outputs").exists()


# ---- dataset=points --------------------------------------------------------------------------------------------

def _save(path, array):
    """A bare array (.npy format) under any name (np.save would append .npy)."""
    with open(path, "wb") as handle:
        np.save(handle, array)


def _labelled_points(path, n=600, seed=0):
    """Three modes in 4-D, shares 1/2, 1/4, 1/4, spread 0.2; labels 10, 20, 30 (any integers)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0]], np.float64)
    labels = rng.choice(3, n, p=[0.5, 0.25, 0.25])
    points = centres[labels] + 0.2 * rng.standard_normal((n, 4))
    np.savez(path, points=points.astype(np.float32), labels=(labels + 1) * 10)
    return centres


def test_points_with_labels_give_their_modes_and_train(tmp_path, monkeypatch, capsys):
    centres = _labelled_points(tmp_path / "mine.npz")
    data = build_data(make_cfg("dataset=points", f"dataset.file={tmp_path / 'mine.npz'}"), CPU)
    assert data.shape == (4,) and data.n_modes == 3 and data.n_classes == 3
    assert np.allclose(data.centers.numpy(), centres, atol=0.05)  # each class's mean
    assert data.std == pytest.approx(0.2, rel=0.05)  # the RMS per coordinate around them
    assert torch.allclose(data.weights, torch.tensor([0.5, 0.25, 0.25]), atol=0.05)  # the classes' shares
    x, y = data.sample_with_classes(50, torch.Generator().manual_seed(0))
    assert torch.equal(((x[:, None] - data.centers) ** 2).sum(-1).argmin(1), y)

    summary = _train(tmp_path, monkeypatch, capsys, "dataset=points", "dataset.file=mine.npz", *TINY)
    assert summary["status"] == "completed" and summary["n_modes"] == 3
    assert summary["references"]["data"]["modes_captured"] == 3 and "wasserstein1" in summary["metrics"]


def test_points_without_modes_are_measured_by_distances_alone(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cloud.npy", rng.standard_normal((300, 3)).astype(np.float32))
    np.save(tmp_path / "gen.npy", rng.standard_normal((200, 3)).astype(np.float32) + 1)
    data = build_data(make_cfg("dataset=points", f"dataset.file={tmp_path / 'cloud.npy'}"), CPU)
    assert data.centers is None and data.n_modes is None and not hasattr(data, "n_classes")
    code, _, err = _ganlab(capsys, "eval", "--samples", tmp_path / "gen.npy", "dataset=points",
                           f"dataset.file={tmp_path / 'cloud.npy'}", "--out", tmp_path / "record")
    assert code == 0, err
    summary = json.loads((tmp_path / "record" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"wasserstein1", "wasserstein2", "mmd", "mmd_multiscale"}
    assert summary["metrics"]["wasserstein1"] > summary["references"]["data"]["wasserstein1"]
    # centres given: each point's mode is its nearest centre, and the mode metrics come back
    given = build_data(make_cfg("dataset=points", f"dataset.file={tmp_path / 'cloud.npy'}",
                                "dataset.centers=[[-1,0,0],[1,0,0]]"), CPU)
    assert given.n_modes == 2 and given.std > 0


@pytest.mark.parametrize("write, overrides, message", [
    (None, [], "dataset: file is required: the path of an .npz (points, labels) or .npy file of points"),
    (None, ["dataset.file={tmp}/none.npz"], "dataset: file={tmp}/none.npz: no such file"),
    (lambda p: _save(p, np.zeros(5, np.float32)), [], "points of shape (5,); give (n, d) with n >= 2"),
    (lambda p: _save(p, np.array([[0, np.nan], [1, 1]])), [], "1 values are NaN or infinite"),
    (lambda p: np.savez(p, x=np.zeros((4, 2)), labels=np.zeros(3, int)), [], "labels of shape (3,); give one integer"),
    (lambda p: np.savez(p, x=np.zeros((4, 2)), labels=np.zeros(4)), [], "labels of dtype float64; give integers"),
    (lambda p: np.savez(p, x=np.zeros((4, 2))), ["dataset.std=0.1"], "std: these points have no modes"),
    (lambda p: np.savez(p, x=np.zeros((4, 2))), ["dataset.centers=[[0,0,0]]"], "centers: points of 3 coordinates"),
    # a centre no point is nearest to: its share of the data is 0, and every reverse KL would be NaN
    (lambda p: np.savez(p, x=np.array([[0.0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1]])), ["dataset.centers=[[0,0],[9,9]]"],
     "centers: no point of {tmp}/p.npz is nearest to centre 1 ([9.0, 9.0]); give one centre per mode the points have"),
    (lambda p: (p.parent / "p.npz").write_text("no"), [], "cannot read {tmp}/p.npz as a .npz or .npy file"),
])
def test_a_bad_points_file_is_one_line(tmp_path, monkeypatch, capsys, write, overrides, message):
    path = tmp_path / "p.npz"
    if write is not None:
        write(path)
        overrides = [f"dataset.file={path}", *overrides]
    monkeypatch.chdir(tmp_path)
    code, _, err = _ganlab(capsys, "train", "dataset=points", *(o.format(tmp=tmp_path) for o in overrides), *TINY)
    assert message.format(tmp=tmp_path) in _one_line(code, err)
    assert not (tmp_path / "outputs").exists()


# ---- dataset=images_npz, dataset=image_folder ------------------------------------------------------------------

def _bars(n, rng):
    """(n, 1, 28, 28) uint8: a bright horizontal bar in one of 4 rows, on dark; and its row (the label)."""
    labels = rng.integers(0, 4, n)
    images = np.zeros((n, 1, 28, 28), np.uint8)
    for i, row in enumerate(labels):
        images[i, 0, 7 * row:7 * row + 5] = 255
    return images, labels


def test_images_of_ones_own_train_and_are_measured_by_pixels(tmp_path, monkeypatch, capsys):
    images, labels = _bars(64, np.random.default_rng(0))
    np.savez(tmp_path / "bars.npz", images=images, labels=labels)
    data = build_data(make_cfg("dataset=images_npz", f"dataset.file={tmp_path / 'bars.npz'}"), CPU)
    assert data.shape == (1, 28, 28) and data.n_modes == 4 and data.n_classes == 4 and data.mode_classifier is None
    x, y = data.sample_with_classes(16, torch.Generator().manual_seed(0))
    assert x.min() == -1 and x.max() == 1 and torch.equal((x[:, 0, :, 0] > 0).float().argmax(1) // 7, y)
    summary = _train(tmp_path, monkeypatch, capsys, "dataset=images_npz", "dataset.file=bars.npz",
                     "debug=tiny_images", *TINY_DCGAN, "steps=2", "eval.every=2", "model.latent_dim=8")
    assert summary["status"] == "completed" and summary["n_modes"] == 4
    assert summary["metrics"]["swd_pixels"] > 0 and "modes_captured" not in summary["metrics"]  # no classifier
    assert summary["references"]["data"]["swd_pixels"] < summary["references"]["untrained"]["swd_pixels"]


def test_a_folder_of_pngs_with_class_subfolders_is_a_labelled_dataset(tmp_path):
    from ganlab.data.pngs import write_png_folder

    images, labels = _bars(20, np.random.default_rng(1))
    for row in range(4):
        write_png_folder(images[labels == row], tmp_path / "bars" / f"row{row}")
    data = build_data(make_cfg("dataset=image_folder", f"dataset.folder={tmp_path / 'bars'}"), CPU)
    assert data.shape == (1, 28, 28) and data.n_classes == 4 and len(data) == 20
    x, y = data.sample_with_classes(40, torch.Generator().manual_seed(0))
    assert torch.equal((x[:, 0, :, 0] > 0).float().argmax(1) // 7, y)  # each subfolder is its class
    assert data.identity()["sha256"] == build_data(
        make_cfg("dataset=image_folder", f"dataset.folder={tmp_path / 'bars'}"), CPU).identity()["sha256"]


def test_images_with_a_mode_classifier_get_the_mode_counts(image_root, classifier_cache, tmp_path, capsys):
    """mode_classifier=fashion_mnist: ganlab's classifier counts the modes of one's own 28 x 28 images, and their
    features give the domain FID, KID and PRDC, as for the built-in data."""
    images, _ = _bars(40, np.random.default_rng(2))
    np.save(tmp_path / "bars.npy", images)
    data = ["dataset=images_npz", f"dataset.file={tmp_path / 'bars.npy'}", "dataset.mode_classifier=fashion_mnist",
            f"dataset.root={image_root}", "metrics.kid_subset_size=10", "metrics.prdc_samples=10"]
    code, _, err = _ganlab(capsys, "eval", "--samples", tmp_path / "bars.npy", *data)
    assert code == 0, err
    m = json.loads((tmp_path / "bars.eval.json").read_text())["metrics"]
    assert 1 <= m["modes_captured"] <= 10 and "domain_fid" in m and "kid" in m and "coverage" in m
    code, _, err = _ganlab(capsys, "eval", "--samples", tmp_path / "bars.npy", "dataset=images_npz",
                           f"dataset.file={tmp_path / 'bars.npy'}", "dataset.mode_classifier=svhn")
    assert "mode_classifier='svhn': there is no such mode classifier" in _one_line(code, err)


def test_an_image_evaluation_of_fewer_than_6_samples_is_refused_before_the_run(image_root, classifier_cache, tmp_path,
                                                                              monkeypatch, capsys):
    """eval.samples=5 with a mode classifier: density/coverage's 5 nearest neighbours need 6 samples; refused in one
    line before anything is written (it failed the run at its first evaluation, a ValueError from the PRDC)."""
    images, _ = _bars(40, np.random.default_rng(3))
    np.save(tmp_path / "bars.npy", images)
    monkeypatch.chdir(tmp_path)
    code, _, err = _ganlab(capsys, "train", "dataset=images_npz", "dataset.file=bars.npy",
                           "dataset.mode_classifier=fashion_mnist", f"dataset.root={image_root}", "debug=tiny_images",
                           *TINY_DCGAN, "eval.samples=5", "eval.w_samples=5", "hydra.run.dir=run")
    assert "eval.samples=5: an image evaluation takes >= 6 samples" in _one_line(code, err)
    assert not (tmp_path / "run").exists()


def _two_sizes(folder):
    """a.png 28 x 28 and b.png 32 x 32: the first file sets the folder's size."""
    from PIL import Image

    folder.mkdir()
    for name, side in (("a.png", 28), ("b.png", 32)):
        Image.fromarray(np.zeros((side, side), np.uint8)).save(folder / name)


@pytest.mark.parametrize("make, overrides, message", [
    (lambda d: None, [], "dataset: folder is required: the path of a folder of PNG files"),
    # the folder is the dataset: its own advice, not the samples' ("resize the samples or choose the dataset")
    (lambda d: _two_sizes(d / "mixed"), ["dataset.folder={tmp}/mixed"],
     "{tmp}/mixed/b.png is 32x32 pixels; the dataset's images are 28x28: give the folder images of one size (its "
     "first, a.png, is 28x28)"),
    (lambda d: (d / "empty").mkdir(), ["dataset.folder={tmp}/empty"], "{tmp}/empty holds no PNG files, nor subfolders"),
    (lambda d: np.save(d / "f.npy", np.zeros((4, 1, 28, 28), np.int32)), ["~dataset.folder", "dataset=images_npz",
                                                                            "dataset.file={tmp}/f.npy"],
     "images of dtype int32; give uint8 (0..255) or floats in [-1, 1]"),
    (lambda d: np.save(d / "f.npy", np.full((4, 1, 28, 28), 2.0)), ["~dataset.folder", "dataset=images_npz",
                                                                     "dataset.file={tmp}/f.npy"],
     "float images in [-1, 1], got values from 2 to 2"),
    (lambda d: np.save(d / "f.npy", np.zeros((4, 3, 8, 8), np.uint8)), ["~dataset.folder", "dataset=images_npz",
                                                                         "dataset.file={tmp}/f.npy",
                                                                         "dataset.mode_classifier=mnist"],
     "mode_classifier=mnist: it labels 1x28x28 (or 1x32x32) images; these are 3x8x8"),
])
def test_bad_images_of_ones_own_are_one_line(tmp_path, monkeypatch, capsys, make, overrides, message):
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = [o.format(tmp=tmp_path) for o in overrides]
    dataset = next((a for a in args if a.startswith("dataset=")), "dataset=image_folder")
    args = [a for a in args if not a.startswith(("dataset=", "~"))]
    code, _, err = _ganlab(capsys, "train", dataset, *args, *TINY)
    assert message.format(tmp=tmp_path) in _one_line(code, err)


# ---- README's contract ---------------------------------------------------------------------------------------

def test_the_readme_names_every_member_the_dataset_protocol_checks():
    """README's "How to add a dataset" lists what ganlab/data/protocol.py declares for each evaluator kind, and
    conditional remedies' members: the contract a dataset of one's own is checked against at build time."""
    from ganlab.data.protocol import ImageData, LabelledData, ToyData, TrainingData, declared

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("- **Dataset**"):readme.index("- **Metric**")]
    named = set(re.findall(r"`([a-z_]+)(?:\(|`)", section))
    for protocol in (TrainingData, ToyData, ImageData, LabelledData):
        missing = set(declared(protocol)) - named
        assert not missing, f"README's dataset contract does not name {sorted(missing)} ({protocol.__name__})"
    # and every option README's table offers is a dataset config
    for option in ("mixture", "points", "images_npz", "image_folder"):
        assert (REPO / "ganlab" / "configs" / "dataset" / f"{option}.yaml").is_file(), option
