"""Image GANs end to end: every loss x remedy steps on a tiny image batch (or is refused exactly as on
2-D data), a tiny stacked run evaluates and draws its pictures, and the speed switches run."""

import json

import pytest
import torch
from conftest import TINY_DCGAN, built, changed, make_cfg, snapshot

from ganlab.config import options
from ganlab.errors import ConfigError
from ganlab.metrics.classifier import ModeClassifier, save_classifier
from ganlab.step import d_step, g_step
from ganlab.train import run

# Every loss and every remedy the configs offer: a new one is tested here without being listed.
LOSSES = options("loss")
REMEDIES = options("remedy")



def _build_or_refusal(*overrides):
    """(the experiment, None), or (None, the one-line reason) when the combination is refused."""
    try:
        return built(*overrides), None
    except ConfigError as exc:
        return None, str(exc)


def _remedy_overrides(remedy):
    extra = {"pacgan": ["remedy.pacgan.m=2"],
             "ortho_jacobian": ["model.g.batch_norm=false"],  # forward-mode products need per-sample G layers
             "local_generator": ["model.g.batch_norm=false"]}
    return [f"remedy={remedy}", *extra.get(remedy, [])]


@pytest.mark.parametrize("loss", LOSSES)
def test_every_remedy_steps_on_images_or_is_refused_as_on_2d(loss, image_root):
    """One D step and one G step of each remedy with this loss on 3x28x28 images. A combination may be
    refused only when it is refused on 2-D data too (an objective that does not fit), or when the
    remedy is defined on vectors only (veegan's (z, x) pairs): the refusal is one line."""
    data = ["dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100"]
    refused = {}
    for remedy in REMEDIES:
        overrides = [*data, *TINY_DCGAN, f"loss={loss}", *_remedy_overrides(remedy)]
        exp, why = _build_or_refusal(*overrides)
        if why is not None:
            assert "\n" not in why
            refused[remedy] = why
            continue
        G, D = exp.G, exp.D
        real, z = exp.remedy.real_batch(exp.data, 8), torch.randn(8, exp.latent_dim)  # as the loop draws it
        assert G(z).shape == (8, 3, 28, 28)
        g_before, d_before = snapshot(G), snapshot(D)
        d_loss = d_step(exp, real, z)  # the loop's own phases
        assert torch.isfinite(d_loss), remedy
        assert changed(d_before, D) and not changed(g_before, G), remedy
        g_loss = g_step(exp, real, torch.randn(8, exp.latent_dim))
        assert torch.isfinite(g_loss) and changed(g_before, G), remedy
    # Each refusal on images must be one on 2-D data too (veegan aside): built there, it would mean the
    # image models broke a combination that works.
    built_on_2d = {r for r in refused if r != "veegan"
                   and _build_or_refusal(f"loss={loss}", *_remedy_overrides(r), "batch_size=8")[1] is None}
    assert "veegan" in refused and not built_on_2d, refused
    veegan_on_2d = _build_or_refusal(f"loss={loss}", "remedy=veegan", "batch_size=8")[1]
    assert refused["veegan"] == veegan_on_2d if veegan_on_2d else "(images) is not supported" in refused["veegan"]


@pytest.fixture
def classifier_cache(tmp_path, monkeypatch):
    """An (untrained) mode classifier in a private cache: the metrics run; their values are not the point here."""
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_classifier(ModeClassifier(), "fashion_mnist", 0.5, {"epochs": 0})
    return tmp_path / "cache"


# 6 steps, the cheapest image evaluation (ganlab/configs/debug/tiny_images.yaml); the batch is TINY_DCGAN's.
IMAGE_TINY = ["debug=tiny_images"]


def test_a_tiny_stacked_run_reports_modes_features_and_pictures(image_root, classifier_cache, tmp_path):
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}",
                   "dataset.n=100")
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["n_modes"] == 1000
    m = summary["metrics"]
    assert 1 <= m["modes_captured"] <= 64 and 0 <= m["reverse_kl"] <= torch.log(torch.tensor(1000.0)).item() + 1e-9
    for key in ("domain_fid", "kid", "precision", "recall", "density", "coverage", "swd", "critic_gap", "eval_seconds"):
        assert key in m and m[key] == m[key], key  # present and not NaN
    assert len(summary["mode_counts"]) == 1000 and sum(summary["mode_counts"]) == 64
    assert "fashion_mnist CNN sha256:" in summary["protocol"]["classifier"]
    assert "NOT Inception" in summary["protocol"]["domain_features"]
    assert 1 <= summary["protocol"]["reference_modes"]["modes_captured"] <= 64  # the real data under the same protocol
    # the ceiling from the test split, and real images degraded as generated ones are, beside the untrained G
    assert summary["protocol"]["ceiling_split"] == "test"
    assert set(summary["references"]) == {"untrained", "data", "real_blurred", "real_noised"}
    assert summary["references"]["real_blurred"]["domain_fid"] != summary["references"]["data"]["domain_fid"]
    assert summary["mode_history"]["steps"] == [3, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload()
    assert {"samples", "mode_occupancy", "mode_histogram"} <= set(events.Tags()["images"])
    assert "metrics/modes_captured" in events.Tags()["scalars"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["metrics"]["modes_captured"] == m["modes_captured"]


@pytest.mark.slow
def test_stacked_results_doc_has_reference_rows_verdicts_and_length(image_root, classifier_cache, tmp_path):
    """scripts/stacked_results.py on a tiny sweep: the untrained G and real data rows, verdicts against
    remedy=none (permutation test, BH over the table), the labelled rows in a table of their own, the compute
    and the training length against the paper's."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    root = tmp_path / "sweep"
    for i, (remedy, seed) in enumerate([("none", 0), ("none", 1), ("pacgan", 0), ("pacgan", 1)]):
        cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}",
                       "dataset.n=100", f"remedy={remedy}", f"seed={seed}")
        summary = run(cfg, root / f"{i}_{remedy}_s{seed}")
        assert set(summary["references"]) == {"untrained", "data", "real_blurred", "real_noised"}
        assert {"modes_captured", "reverse_kl", "domain_fid"} <= set(summary["references"]["data"])
    for seed in (0, 1):  # a conditional row, labelled by the first digit: the within-class section
        cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}",
                       "dataset.n=100", "dataset.classes=first", "remedy=acgan", f"seed={seed}")
        run(cfg, root / f"{seed}_acgan_s{seed}", labels={"remedy": "acgan"})
    # Three sweeps' records (the second added a remedy, the third the conditional rows): each one's wall time shown.
    (root / ".complete").write_text("120 2000 2\n60 2000 2 none,pacgan,unrolled,multiscale\n"
                                    "30 2000 2 acgan classes=first\n")
    doc = tmp_path / "stacked.md"
    validation = tmp_path / "validation.md"  # the counts' validation table (make validate-stacked), put in the doc
    validation.write_text("## Validation of the mode counts on real images with known modes\n\n| true modes |\n|---:|\n| 100 |\n")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "stacked_results.py"), str(root), "--out", str(doc),
                          "--validation", str(validation)], check=False,
                         capture_output=True, text=True, env={**os.environ, "GANLAB_CACHE": str(classifier_cache)})
    assert out.returncode == 0, out.stderr
    text = doc.read_text()
    references = [line for line in text.splitlines() if line.startswith("| reference: ")]
    for label in ("untrained G", "real data", "real data, blurred", "real data, noised"):  # measured under each
        # dataset config (the conditional runs' labels differ); rows of equal values are one row naming both
        mine = [line for line in references if line.startswith(f"| reference: {label} (")]
        assert {c for line in mine for c in ("mode", "first") if f"classes={c}" in line} == {"mode", "first"}, mine
        assert all(" | 2 runs | " in line for line in mine)
    # the real images are the same under either labelling: one row, not a repeat
    real = [line for line in references if line.startswith("| reference: real data (")]
    assert len(real) == 1 and "; the same in the runs of dataset=stacked_fashion_mnist, classes=" in real[0]
    kinds_cells = [(line.split(" (")[0], line.split(" | ", 1)[1]) for line in references]
    assert len(kinds_cells) == len(set(kinds_cells))  # no two rows of one kind with equal values
    assert "| pacgan vs none | against the DCGAN baseline | modes |" in text
    # The corrected count's interval beside it: the means of the runs' own bounds, low - high
    header = next(line for line in text.splitlines() if line.startswith("| row | seeds | modes (of 1000)"))
    column = header.split(" | ").index("corrected: low - high")
    none_row = next(line for line in text.splitlines() if line.startswith("| none | "))
    ends = [[json.loads((root / f"{i}_none_s{i}" / "summary.json").read_text())["metrics"].get(k)
             for i in (0, 1)] for k in ("modes_corrected_low", "modes_corrected_high")]
    expected = "–" if None in ends[0] + ends[1] else " - ".join(f"{sum(v) / 2:.0f}" for v in ends)
    assert none_row.split(" | ")[column] == expected
    # 2 seeds a side: the exact test's smallest p is 2/6; the doc says why nothing can be significant
    assert "2/C(4, 2) = 0.333" in text and "No verdict here can be significant at this seed count." in text
    assert "| better |" not in text
    # The conditional row uses class labels: its own table, never compared with the unconditional rows
    labelled = text.split("## Rows that use class labels")[1].split("\n## ")[0]
    assert "| acgan | 2 |" in labelled and "| acgan vs" not in text
    assert "GFLOP/step" in text and "Welch" not in text
    assert "% of the paper's training" in text and "higher" not in text.split("## The papers")[0]
    hours = sum(json.loads(f.read_text())["wall_seconds"] for f in root.glob("*/summary.json")) / 3600
    assert f"Machine time: **{hours:.2f} h** of run time (the sum of the 6 runs' own `wall_seconds`" in text
    assert "as `.complete` recorded them: sweep 2.0 min; none,pacgan,unrolled,multiscale 1.0 min; acgan classes=first 0.5 min" in text
    assert "Part of the reproduction" not in text
    partial = subprocess.run([sys.executable, str(REPO / "scripts" / "stacked_results.py"), str(root), "--out",
                              str(tmp_path / "partial.md"), "--pending", "the controls"], check=False,
                             capture_output=True, text=True, env={**os.environ, "GANLAB_CACHE": str(classifier_cache)})
    assert partial.returncode == 0, partial.stderr
    assert "> **Part of the reproduction.** Not in these tables yet: the controls." in (tmp_path / "partial.md").read_text()
    assert "## Validation of the mode counts on real images with known modes\n\n| true modes |" in text
    within = text.split("## Within-class collapse")[1].split("\n## ")[0]
    rows = [line for line in within.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:3] for row in rows] == [["| none", "– (unconditional)", "2"],
                                                      ["| pacgan", "– (unconditional)", "2"],
                                                      ["| acgan", "first digit", "2"]]
    summary = json.loads((root / "0_acgan_s0" / "summary.json").read_text())
    per_class = [sum(c > 0 for c in summary["mode_counts"][100 * k:100 * k + 100]) for k in range(10)]
    assert sum(per_class) == summary["metrics"]["modes_captured"]  # the classes partition the 1,000 modes


def test_mnist_like_run_has_a_class_histogram(image_root, classifier_cache, tmp_path):
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=fashion_mnist", f"dataset.root={image_root}")
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["n_modes"] == 10
    assert len(summary["mode_counts"]) == 10 and 1 <= summary["metrics"]["modes_captured"] <= 10
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload()
    assert {"samples", "class_histogram"} <= set(events.Tags()["images"])


def test_a_missing_classifier_is_trained_on_first_use_and_cached(image_root, tmp_path, monkeypatch, caplog):
    """Only on the standard split (issue 28): the tiny files are refused in one line and nothing is cached;
    simulated as the standard split (the known SHA-256s made theirs), they train it, and the next run reuses it."""
    import gzip
    import hashlib

    import ganlab.metrics.classifier as clf
    import ganlab.metrics.classifier_training as training
    from ganlab.data import files
    from ganlab.errors import GanlabError

    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setitem(clf.DEFAULT_EPOCHS, "fashion_mnist", 1)  # the tiny files: one epoch is the point
    monkeypatch.setattr(training, "BATCH_SIZE", 8)
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=fashion_mnist", f"dataset.root={image_root}")
    cached = tmp_path / "empty" / "classifiers" / "fashion_mnist.pt"
    with pytest.raises(GanlabError, match="40 train / 10 test images, not the standard fashion_mnist split") as caught:
        run(cfg, tmp_path / "refused")
    assert "\n" not in str(caught.value) and "`ganlab classifier dataset=fashion_mnist`" in str(caught.value)
    assert not cached.exists()

    monkeypatch.setitem(files.IDX_SHA256, "fashion_mnist", {
        p.name.removesuffix(".gz"): hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
        for p in (image_root / "fashion_mnist").glob("*.gz")})
    with caplog.at_level("WARNING"):
        summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and cached.is_file()
    assert f"training one now, once (about {clf.MINUTES['fashion_mnist']} minutes on 2 CPU cores); it is cached at {cached}" in caplog.text
    saved = torch.load(cached, weights_only=True)
    assert saved["settings"]["epochs"] == 1 and saved["dataset"] == "fashion_mnist"
    assert summary["protocol"]["classifier"].startswith("fashion_mnist CNN sha256:" + saved["hash"][:8])
    caplog.clear()
    with caplog.at_level("WARNING"):
        run(cfg, tmp_path / "again")  # the second run reuses it
    assert "training one now" not in caplog.text


@pytest.mark.parametrize("switch", [["speed.channels_last=true"], ["speed.amp=bf16"]])
def test_speed_switches_train_on_the_cpu(switch, image_root, classifier_cache, tmp_path):
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=fashion_mnist", f"dataset.root={image_root}", *switch)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["metrics"]["critic_gap"] == summary["metrics"]["critic_gap"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast and torch.compile on the GPU)")
def test_speed_switches_on_cuda(image_root, classifier_cache, tmp_path):
    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=fashion_mnist", f"dataset.root={image_root}", "device=cuda",
                   "speed.amp=bf16", "speed.channels_last=true", "speed.compile=true")
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["device"].startswith("cuda")


def test_ganlab_eval_takes_any_sample_count_and_metric_settings(image_root, classifier_cache, tmp_path):
    from ganlab.errors import GanlabError
    from ganlab.evaluation.saved import evaluate_run

    cfg = make_cfg(*IMAGE_TINY, *TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}",
                   "dataset.n=100")
    summary = run(cfg, tmp_path / "run")
    again = evaluate_run(tmp_path / "run")  # the final evaluation's samples, drawn again
    assert again["metrics"]["modes_captured"] == summary["metrics"]["modes_captured"]
    assert again["metrics"]["domain_fid"] == pytest.approx(summary["metrics"]["domain_fid"], rel=1e-9)
    more = evaluate_run(tmp_path / "run", samples=96, overrides=["metrics.prdc_samples=48", "metrics.inception=false"])
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["protocol"]["samples"] == 96 and "first 48 samples" in record["protocol"]["prdc"]
    assert sum(more["mode_counts"]) == 96 and "classifier" in record["protocol"]
    with pytest.raises(GanlabError, match="metrics"):
        evaluate_run(tmp_path / "run", overrides=["steps=5"])


def test_dcgan_d_has_batch_norm_and_refuses_penalties(image_root):
    """DCGAN's D (and PacGAN's Stacked-MNIST D): batch norm after every conv but the first; it trains with
    the logistic losses and is refused with a gradient penalty, in one line naming the fix."""
    data = ["dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100"]
    small = ["model=dcgan", "model.g.width=4", "model.d.width=4", "batch_size=8"]
    exp = built(*data, *small)
    convs = [m for m in exp.D.body if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in exp.D.body if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(convs) - 1 >= 1
    assert not isinstance(exp.D.body[1], torch.nn.BatchNorm2d)  # none on the input layer
    before = snapshot(exp.D)
    exp.d_opt.zero_grad()
    exp.remedy.d_loss(exp.G, exp.D, exp.loss, exp.data.sample(8), torch.randn(8, exp.latent_dim)).backward()
    exp.d_opt.step()
    assert changed(before, exp.D)
    for loss in ("wgan_gp", "dragan"):
        refusal = _build_or_refusal(*data, *small, f"loss={loss}")[1]
        assert refusal is not None and "batch norm (model.d.norm=batch); use model.d.norm=layer or none" in refusal
    assert _build_or_refusal(*data, *small, "loss=wgan_gp", "model.d.norm=layer")[1] is None
