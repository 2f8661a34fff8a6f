"""`ganlab eval --samples FILE dataset=NAME`: samples made elsewhere, scored by the evaluator a run uses; and
the image references that need no G (the ceiling from the test split, real images blurred and noised)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_image_data import IDX_NAMES, write_idx
from test_image_training import classifier_cache  # noqa: F401 - a fixture

from ganlab.cli import main
from ganlab.data.degrade import degrade


def _eval(capsys, *args):
    """`ganlab eval ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        main(["eval", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_points_at_the_ring_centres_capture_every_mode(tmp_path, capsys):
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], 1)  # configs/dataset/ring.yaml: radius 2
    one_mode = centres[:1].repeat(400, 1)
    np.savez(tmp_path / "all.npz", points=centres.repeat(50, 1).numpy())
    np.savez(tmp_path / "one.npz", points=one_mode.numpy())
    code, out, err = _eval(capsys, "--samples", tmp_path / "all.npz", "dataset=ring")
    assert code == 0, err
    record = json.loads((tmp_path / "all.eval.json").read_text())
    assert record["samples"] == 400 and record["dataset"] == "ring"
    m = record["metrics"]
    assert m["modes_captured"] == 8 and m["high_quality_pct"] == 100 and m["reverse_kl"] == pytest.approx(0, abs=1e-12)
    assert "critic_gap" not in m and "critic_gap" not in record["protocol"]  # no D made these samples
    assert m["wasserstein1"] > 0 and f"wrote {tmp_path / 'all.eval.json'}" in out
    # --out FILE.json in a folder not made yet: made, as --out DIR and `ganlab sample --out` make theirs
    code, _, err = _eval(capsys, "--samples", tmp_path / "one.npz", "dataset=ring", "--out", tmp_path / "new" / "o.json")
    assert code == 0, err
    one = json.loads((tmp_path / "new" / "o.json").read_text())["metrics"]
    assert one["modes_captured"] == 1 and one["reverse_kl"] == pytest.approx(math.log(8))
    assert one["wasserstein1"] > m["wasserstein1"]


@pytest.mark.parametrize("args, message", [
    (["--samples", "{tmp}/none.npz", "dataset=ring"], "no samples file at {tmp}/none.npz; write one with "
                                                      "numpy.savez(PATH, points=array of shape (n, 2))"),
    (["--samples", "{tmp}/points.npz"], "needs the dataset the samples imitate: dataset=NAME (cifar10,"),
    (["--samples", "{tmp}/points.npz", "dataset=ring", "loss=wgan"], "'loss=wgan': ganlab eval --samples FILE takes"),
    (["{tmp}", "--samples", "{tmp}/points.npz", "dataset=ring"], "scores a file; leave out the run directory"),
    (["--samples", "{tmp}/points.npz", "dataset=grid", "--device", "cuda:99"], "--device cuda:99 but "),
    (["--samples", "{tmp}/points.npz", "dataset=grid", "--device", "meta"], "--device meta: not a device ganlab"),
    (["--samples", "{tmp}/points.npz", "dataset=fashion_mnist", "dataset.root={images}"],
     "holds points, no array named images or x"),
    (["--samples", "{tmp}/wide.npz", "dataset=ring"], "samples of shape (n, 2) for ring, got (5, 3)"),
    (["--samples", "{tmp}/nan.npz", "dataset=ring"], "1 values are NaN or infinite"),
    (["--samples", "{tmp}/text.npz", "dataset=ring"], "cannot read {tmp}/text.npz as a .npz or .npy file (neither)"),
    (["--samples", "{tmp}/one.npz", "dataset=ring"], "holds 1 sample(s); the metrics compare sets: give >= 2"),
    ([], "needs a run directory (ganlab eval RUN_DIR), or a samples file and its dataset"),
    # outputs whose way a file blocks: refused before the work, not an OSError's traceback after it
    (["--samples", "{tmp}/points.npz", "dataset=ring", "--out", "{tmp}/text.npz/record"],
     "--out {tmp}/text.npz/record: {tmp}/text.npz is a file, not a folder; choose another path"),
    (["--samples", "{tmp}/points.npz", "dataset=ring", "--tensorboard", "{tmp}/text.npz"],
     "--tensorboard {tmp}/text.npz is a file; give a folder for the TensorBoard events"),
    (["--samples", "{tmp}/points.npz", "dataset=ring", "--tensorboard", "{tmp}/text.npz/tb"],
     "--tensorboard {tmp}/text.npz/tb: {tmp}/text.npz is a file, not a folder"),
])
def test_a_bad_samples_file_or_argument_is_one_line(tmp_path, capsys, image_root, args, message):
    np.savez(tmp_path / "points.npz", points=np.zeros((5, 2), np.float32))
    np.savez(tmp_path / "wide.npz", points=np.zeros((5, 3), np.float32))
    np.savez(tmp_path / "nan.npz", points=np.array([[0.0, np.nan], [0, 0]]))
    np.savez(tmp_path / "one.npz", points=np.zeros((1, 2)))
    (tmp_path / "text.npz").write_text("not numpy\n")
    code, out, err = _eval(capsys, *(a.format(tmp=tmp_path, images=image_root) for a in args))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: "), err
    assert message.format(tmp=tmp_path) in lines[0]
    assert not list(tmp_path.glob("*.json"))  # nothing written


# ---- images: a classifier that is exact on these synthetic digits --------------------------------------

class _BlockTemplates(torch.nn.Module):
    """A mode classifier that labels a digit by the 4 x 4 block template it matches best: its features are
    the 16 block means, so blur (inside 7 x 7 blocks) and noise (averaged over 49 pixels) leave it exact."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = blocks.reshape(10, 16)
        self.confusion, self.confusion_samples = torch.eye(10, dtype=torch.float64), torch.full((10,), 100)

    def penultimate(self, x):
        return F.avg_pool2d(x, 7).reshape(len(x), 16)

    def head(self, hidden):
        return hidden @ self.blocks.T


@pytest.fixture
def digits(tmp_path, monkeypatch):
    """Fashion-MNIST-format files of block-template digits (train and test), and the exact classifier in place of
    the cached CNN. Returns (root, blocks)."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 2, (10, 4, 4), generator=g).float() * 2 - 1
    assert len({tuple(b.flatten().tolist()) for b in blocks}) == 10
    templates = blocks.repeat_interleave(7, 1).repeat_interleave(7, 2)  # (10, 28, 28)
    root = tmp_path / "data"
    (root / "fashion_mnist").mkdir(parents=True)
    for split, n in (("train", 300), ("test", 100)):
        labels = torch.arange(n) % 10
        images = ((templates[labels] + 0.2 * torch.randn(n, 28, 28, generator=g)).clamp(-1, 1) * 127.5 + 127.5).round()
        write_idx(root / "fashion_mnist" / IDX_NAMES[split][0], images.to(torch.uint8).numpy())
        write_idx(root / "fashion_mnist" / IDX_NAMES[split][1], labels.to(torch.uint8).numpy())
    info = {"dataset": "fashion_mnist", "hash": "0" * 64, "accuracy": 1.0}
    monkeypatch.setattr("ganlab.metrics.classifier_training.ensure_classifier",
                        lambda dataset, root, device="cpu": (_BlockTemplates(blocks), info))
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    return root, templates


def _known_modes(templates, modes, n, generator):
    """n stacked samples (n, 3, 28, 28) in [-1, 1] of `modes` random triples, uniform, each digit its template with
    pixel noise; and the triples."""
    chosen = torch.randperm(1000, generator=generator)[:modes]
    triples = chosen[torch.randint(0, modes, (n,), generator=generator)]
    digits = torch.stack([triples // 100, triples // 10 % 10, triples % 10], 1)
    return (templates[digits] + 0.2 * torch.randn(n, 3, 28, 28, generator=generator)).clamp(-1, 1)


@pytest.mark.parametrize("how", ["clean", "blur2", "noise"])
def test_a_known_mode_set_is_counted_right_through_the_command(digits, tmp_path, capsys, how):
    root, templates = digits
    g = torch.Generator().manual_seed(1)
    x = degrade(_known_modes(templates, 100, 3000, g), how, g)
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8).numpy()  # ganlab's own samples.npz layout: `x`, uint8
    np.savez(tmp_path / "gen.npz", x=as_uint8)
    code, _, err = _eval(capsys, "--samples", tmp_path / "gen.npz", "dataset=stacked_fashion_mnist",
                         f"dataset.root={root}", "dataset.n=1000", "metrics.prdc_samples=500")
    assert code == 0, err
    m = json.loads((tmp_path / "gen.eval.json").read_text())["metrics"]
    assert m["modes_captured"] == m["modes_corrected"] == 100, how
    assert m["reverse_kl"] == pytest.approx(math.log(10), abs=0.03)
    # the ceiling: test-split triples, all 1,000 modes (3,000 samples see nearly every one)
    assert 900 <= m["modes_captured_real"] <= 1000


def test_the_image_references_come_from_the_test_split_clean_blurred_and_noised(digits):
    from ganlab.config import compose_config
    from ganlab.evaluation import make_evaluator
    from ganlab.gan import build_data

    root, _ = digits
    cfg = compose_config(["dataset=stacked_fashion_mnist", f"dataset.root={root}", "dataset.n=1000",
                          "eval.samples=2000", "metrics.prdc_samples=500", "metrics.kid_subsets=4"])
    data = build_data(cfg, torch.device("cpu"))
    held, split = data.held_out_sample(5, torch.Generator().manual_seed(0))
    assert split == "test" and held.shape == (5, 3, 28, 28)
    evaluator = make_evaluator(data, 8, cfg.eval, False, torch.device("cpu"), cfg.metrics)
    rows = evaluator.data_references(torch.Generator().manual_seed(0))
    assert set(rows) == {"data", "real_blurred", "real_noised"}
    for name, row in rows.items():  # the exact classifier: every degraded real image keeps its modes
        assert row["modes_captured"] >= 850, name
    # blur and noise move the features away from the real reference sample; clean test images stay nearest
    assert rows["data"]["domain_fid"] < rows["real_blurred"]["domain_fid"]
    assert rows["data"]["domain_fid"] < rows["real_noised"]["domain_fid"]
    protocol = evaluator.protocol()
    assert protocol["ceiling_split"] == "test" and "real_blurred" in protocol["references"]


def test_the_held_out_sample_is_drawn_from_the_test_split(tmp_path):
    from test_image_data import fake_mnist

    from ganlab.data.images import fashion_mnist, ImageDataset

    fake_mnist(tmp_path, "fashion_mnist", n_train=40, n_test=10)  # image i is the constant i + 1
    g = torch.Generator().manual_seed(0)
    for data in (fashion_mnist(str(tmp_path)), ImageDataset("fashion_mnist", root=str(tmp_path), stack_n=50)):
        x, split = data.held_out_sample(200, g)
        levels = ((x + 1) * 127.5).round()
        assert split == "test" and levels.min() >= 1 and levels.max() <= 10  # never a training image (11..40)
        assert levels.amax(dim=(-2, -1)).unique().numel() == 10  # every test image is drawn
        if data.stacked:  # three independent digits, not one image copied to each channel
            assert (levels[:, 0] != levels[:, 1]).any()


# ---- samples of one's own GAN beside ganlab's runs in the report (issue 29, item 4) -----------------------------

def _report(capsys, root):
    """`ganlab report ROOT` in this process: its stdout, and report.csv's rows by configuration."""
    import csv

    try:
        main(["report", str(root)])
    except SystemExit as exc:
        assert exc.code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    with open(root / "report.csv", newline="") as handle:
        return out, {row["configuration"]: row for row in csv.DictReader(handle)}


def _same_row_shape(rows, run_label, samples_label, metrics):
    """The samples' row has every column the run's row has: a mean for each metric, the counts, n_modes."""
    mine, theirs = rows[samples_label], rows[run_label]
    assert mine["n_seeds"] == mine["n_completed"] == "1" and mine["n_modes"] == theirs["n_modes"]
    for m in metrics:  # (a 20-step run may have no value: no high-quality sample, no reverse_kl_hq)
        assert f"{m}_mean" in theirs and mine[f"{m}_mean"] != "", m
    assert mine["baseline"] == run_label  # compared with the run of the same dataset (n/a with one seed)


def test_points_from_ones_own_gan_get_the_report_rows_of_a_run_on_the_grid(tmp_path, capsys):
    """Done when (issue 29): a .npz of points from one's own GAN, scored against dataset=grid in one command, is
    a row of `ganlab report` beside ganlab's own run on the grid, with every metric and the reference rows."""
    from conftest import TINY, make_cfg

    from ganlab.train import run

    runs = tmp_path / "runs"
    run(make_cfg(*TINY, "dataset=grid"), runs / "grid_run")
    ticks = np.arange(5) * 2.0 - 4  # configs/dataset/grid.yaml: 5 x 5, spacing 2, std 0.05
    centres = np.array([(x, y) for x in ticks for y in ticks])
    rng = np.random.default_rng(0)
    chosen = rng.integers(0, 20, 400)  # "my GAN" covers 20 of the 25 modes
    np.savez(tmp_path / "mygan.npz", points=(centres[chosen] + 0.05 * rng.standard_normal((400, 2))).astype(np.float32))

    code, out, err = _eval(capsys, "--samples", tmp_path / "mygan.npz", "dataset=grid", "--out", runs / "mygan")
    assert code == 0, err
    assert f"wrote {runs / 'mygan' / 'summary.json'}" in out
    summary = json.loads((runs / "mygan" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_modes"] == 25 and summary["labels"]["samples"] == "mygan"
    assert summary["metrics"]["modes_captured"] == 20 and summary["metrics"]["high_quality_pct"] > 95
    assert summary["samples_file"] == str(tmp_path / "mygan.npz") and summary["samples"] == 400
    # the reference rows that need no G, measured as the run measures them (no untrained G: there is no G)
    assert set(summary["references"]) == {"gaussian", "data"}
    assert summary["references"]["data"]["modes_captured"] == 25
    assert summary["references"]["gaussian"]["wasserstein1"] > summary["references"]["data"]["wasserstein1"]

    out, rows = _report(capsys, runs)
    samples_label = "dataset=grid samples=mygan"
    run_label = next(label for label in rows if label.startswith("dataset=grid loss="))  # run(): loss=nonsaturatinggan
    assert set(rows) >= {run_label, samples_label, "reference: Gaussian fit", "reference: real data"}, set(rows)
    _same_row_shape(rows, run_label, samples_label,
                    ["modes_captured", "high_quality_pct", "reverse_kl", "reverse_kl_hq", "wasserstein1"])
    assert float(rows[samples_label]["modes_captured_mean"]) == 20
    assert out.count(samples_label) == 1 + 5  # the overview and each metric's table


def test_a_folder_of_images_gets_the_report_rows_of_a_run_on_fashion_mnist(image_root, classifier_cache, tmp_path,
                                                                           capsys):
    """Done when (issue 29): a folder of PNG images from one's own GAN, scored against dataset=fashion_mnist in
    one command, is a row of `ganlab report` beside ganlab's own run, with the image metrics and reference rows."""
    from conftest import TINY_DCGAN, make_cfg
    from PIL import Image
    from test_image_training import IMAGE_TINY

    from ganlab.train import run

    data = ["dataset=fashion_mnist", f"dataset.root={image_root}"]
    runs = tmp_path / "runs"
    run(make_cfg(*IMAGE_TINY, *TINY_DCGAN, *data, "steps=2", "eval.every=2", "model.latent_dim=8"), runs / "run")
    folder = tmp_path / "my_pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # greyscale 28 x 28, as the data
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"img{i:03d}.png")

    code, out, err = _eval(capsys, "--samples", folder, *data, "--out", runs / "pngs", "--tensorboard", tmp_path / "tb")
    assert code == 0, err
    summary = json.loads((runs / "pngs" / "summary.json").read_text())
    assert summary["samples"] == 24 and summary["n_modes"] == 10 and sum(summary["mode_counts"]) == 24
    for key in ("modes_captured", "reverse_kl", "domain_fid", "kid", "precision", "recall", "coverage", "swd"):
        assert summary["metrics"][key] == summary["metrics"][key], key  # present, not NaN
    assert "critic_gap" not in summary["metrics"]  # no D made these
    assert set(summary["references"]) == {"data", "real_blurred", "real_noised"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert {"metrics/domain_fid", "reference/data/domain_fid"} <= set(events.Tags()["scalars"])
    assert "samples" in events.Tags()["images"]

    out, rows = _report(capsys, runs)
    samples_label = "dataset=fashion_mnist samples=my_pngs"  # the folder's name (--name sets another)
    run_label = next(label for label in rows if label.startswith("dataset=fashion_mnist loss="))
    assert set(rows) >= {run_label, samples_label, "reference: real data", "reference: real data, blurred"}
    _same_row_shape(rows, run_label, samples_label, ["domain_fid"])


def test_the_record_names_each_seed_so_several_files_make_one_row(tmp_path, capsys):
    """--name and seed=N: one generator's seeds, each file scored against its own real draws, are one row."""
    rng = np.random.default_rng(1)
    for seed in (0, 1, 2):
        np.savez(tmp_path / f"gen_s{seed}.npz", points=rng.standard_normal((50, 2)).astype(np.float32))
        code, _, err = _eval(capsys, "--samples", tmp_path / f"gen_s{seed}.npz", "dataset=ring", f"seed={seed}",
                             "--name", "mygan", "--out", tmp_path / "runs" / f"s{seed}")
        assert code == 0, err
    _, rows = _report(capsys, tmp_path / "runs")
    assert rows["dataset=ring samples=mygan"]["n_seeds"] == "3"


def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "{d} holds no PNG files (it is empty)"),
    (lambda d: (d / "a.jpg").write_bytes(b"x"),
     "{d} holds no PNG files (it holds 1 other file(s) (.jpg); convert them"),
    (lambda d: (d / "a.png").write_bytes(b"\x89PNG not really"), "{d}/a.png: not a readable PNG file"),
    (lambda d: _png(d / "a.png", np.zeros((32, 32), np.uint8)),
     "{d}/a.png is 32x32 pixels; the dataset's images are 28x28"),
    (lambda d: _png(d / "a.png", np.arange(28 * 28 * 3, dtype=np.uint8).reshape(28, 28, 3)),
     "{d}/a.png: RGB (3 channel(s)); the dataset's images have 1 channel(s)"),
    (lambda d: _png(d / "a.png", np.zeros((28, 28), np.uint16)), "{d}/a.png: a PNG of mode I;16"),
    (lambda d: _png(d / "a.png", np.zeros((28, 28, 4), np.uint8)), "{d}/a.png: transparent pixels"),
    (lambda d: [_png(d / f"{i}.png", np.zeros((28, 28), np.uint8)) for i in range(3)],
     "{d} holds 3 images; the image metrics' nearest neighbours (density and coverage: 5) need >= 6"),
])
def test_a_bad_folder_of_images_is_one_line(tmp_path, capsys, image_root, make, message):
    folder = tmp_path / "pngs"
    folder.mkdir()
    make(folder)
    code, _, err = _eval(capsys, "--samples", folder, "dataset=fashion_mnist", f"dataset.root={image_root}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: "), err
    assert message.format(d=folder) in lines[0]
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("array, message", [
    (np.zeros((8, 1, 28, 28), np.int64) + 200, "images in [-1, 1] as floats (or 0..255 as uint8), got values from 200"),
    (np.zeros((8, 28, 28), np.uint8), "samples of shape (n, 1, 28, 28) for fashion_mnist, got (8, 28, 28)"),
    (np.zeros((0, 1, 28, 28), np.uint8), "holds 0 sample(s)"),
    (np.array(["a"] * 8).reshape(8, 1, 1, 1).repeat(28, 2).repeat(28, 3), "samples of numbers, got dtype <U1"),
])
def test_a_bad_npy_of_images_is_one_line(tmp_path, capsys, image_root, array, message):
    np.save(tmp_path / "x.npy", array)
    code, _, err = _eval(capsys, "--samples", tmp_path / "x.npy", "dataset=fashion_mnist", f"dataset.root={image_root}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_a_folder_is_refused_for_points_and_a_runs_folder_as_out(tmp_path, capsys):
    (tmp_path / "pngs").mkdir()
    code, _, err = _eval(capsys, "--samples", tmp_path / "pngs", "dataset=ring")
    assert code == 2 and f"{tmp_path / 'pngs'} is a folder; ring's points come in a .npz or .npy file" in err
    np.save(tmp_path / "p.npy", np.zeros((5, 2), np.float32))  # a bare .npy of points is read as it is
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "completed", "config": {"seed": 0}}))
    code, _, err = _eval(capsys, "--samples", tmp_path / "p.npy", "dataset=ring", "--out", tmp_path / "run")
    assert code == 2 and "holds a run's summary.json; give another folder" in err
    code, _, err = _eval(capsys, "--samples", tmp_path / "p.npy", "dataset=ring")
    assert code == 0, err
    assert json.loads((tmp_path / "p.eval.json").read_text())["samples"] == 5
