"""`ganlab eval --samples FILE dataset=NAME`: samples made elsewhere, scored by the evaluator a run uses; and
the image references that need no G (the ceiling from the test split, real images blurred and noised)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_image_data import IDX_NAMES, write_idx

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
    code, _, err = _eval(capsys, "--samples", tmp_path / "one.npz", "dataset=ring", "--out", tmp_path / "o.json")
    assert code == 0, err
    one = json.loads((tmp_path / "o.json").read_text())["metrics"]
    assert one["modes_captured"] == 1 and one["reverse_kl"] == pytest.approx(math.log(8))
    assert one["wasserstein1"] > m["wasserstein1"]


@pytest.mark.parametrize("args, message", [
    (["--samples", "{tmp}/none.npz", "dataset=ring"], "no samples file at {tmp}/none.npz; write one with "
                                                      "numpy.savez(PATH, points=array of shape (n, 2))"),
    (["--samples", "{tmp}/points.npz"], "needs the dataset the samples imitate: dataset=NAME (cifar10,"),
    (["--samples", "{tmp}/points.npz", "dataset=ring", "loss=wgan"], "'loss=wgan': ganlab eval --samples FILE takes"),
    (["{tmp}", "--samples", "{tmp}/points.npz", "dataset=ring"], "scores a file; leave out the run directory"),
    (["--samples", "{tmp}/points.npz", "dataset=grid", "--device", "cuda:99"], "--device cuda:99: this machine has "),
    (["--samples", "{tmp}/points.npz", "dataset=grid", "--device", "meta"], "--device meta: not a device ganlab"),
    (["--samples", "{tmp}/points.npz", "dataset=fashion_mnist", "dataset.root={images}"],
     "holds points, no array named images or x"),
    (["--samples", "{tmp}/wide.npz", "dataset=ring"], "samples of shape (n, 2) for ring, got (5, 3)"),
    (["--samples", "{tmp}/nan.npz", "dataset=ring"], "1 values are NaN or infinite"),
    (["--samples", "{tmp}/text.npz", "dataset=ring"], "cannot read {tmp}/text.npz as a .npz or .npy file (neither)"),
    (["--samples", "{tmp}/one.npz", "dataset=ring"], "holds 1 sample(s); the metrics compare sets: give >= 2"),
    ([], "needs a run directory (ganlab eval RUN_DIR), or a samples file and its dataset"),
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
                          "eval.samples=2000", "metrics.prdc_samples=500"])
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
