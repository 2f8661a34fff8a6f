"""The mode classifier (ganlab.metrics.classifier, classifier_training) and the label-based mode metrics (ganlab.metrics.classes)."""

import math
import os
from pathlib import Path

import pytest
import torch

from ganlab.cli import classifier as classifier_command
from ganlab.cli import main as cli_main
from ganlab.errors import GanlabError
from ganlab.metrics import classifier as clf
from ganlab.metrics import classifier_training as training
from ganlab.metrics.classes import (
    class_metrics,
    classify_channels,
    stacked_mode_metrics,
)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# --- metrics on hand-computed cases -----------------------------------------------------------------

def test_stacked_one_triple_is_one_mode_with_kl_log_1000():
    m = stacked_mode_metrics(torch.tensor([[1, 2, 3]] * 50))
    assert m["modes_captured"] == 1 and m["modes_above_share"] == 1
    assert m["reverse_kl"] == pytest.approx(math.log(1000))
    assert len(m["mode_counts"]) == 1000 and m["mode_counts"][123] == 50 and sum(m["mode_counts"]) == 50


def test_stacked_uniform_over_all_triples_has_kl_0():
    triples = torch.cartesian_prod(*[torch.arange(10)] * 3)  # (1000, 3), every triple once
    m = stacked_mode_metrics(triples.repeat(2, 1))
    assert m["modes_captured"] == 1000 and m["modes_above_share"] == 1000
    assert m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["mode_counts"] == [2] * 1000
    assert m["mode_counts"][100 * 4 + 10 * 0 + 7] == 2  # index 100a + 10b + c


def test_stacked_half_half():
    triples = torch.tensor([[0, 0, 0]] * 3 + [[9, 9, 9]] * 3)
    m = stacked_mode_metrics(triples)
    assert m["modes_captured"] == 2
    assert m["reverse_kl"] == pytest.approx(math.log(500))  # 2 * 0.5 * log(1000 * 0.5)
    assert m["mode_counts"][0] == 3 and m["mode_counts"][999] == 3


def test_class_metrics_counts_kl_and_share():
    m = class_metrics(torch.tensor([0] * 5 + [1] * 5))
    assert m["class_counts"] == [5, 5] + [0] * 8
    assert m["modes_captured"] == 2 and m["reverse_kl"] == pytest.approx(math.log(5))
    uniform = class_metrics(torch.arange(10).repeat(3))
    assert uniform["modes_captured"] == 10 and uniform["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    # 1,000 samples over 10 classes: the share threshold is 10 % of 100 = 10 samples.
    stray = class_metrics(torch.tensor([0] * 991 + [1] * 9))
    assert stray["modes_captured"] == 2 and stray["modes_above_share"] == 1
    kept = class_metrics(torch.tensor([0] * 990 + [1] * 10))
    assert kept["modes_above_share"] == 2
    assert class_metrics(torch.tensor([0, 1, 2]), n_classes=3)["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_reject_bad_labels():
    with pytest.raises(ValueError):
        stacked_mode_metrics(torch.tensor([[0, 1, 10]]))
    with pytest.raises(ValueError):
        stacked_mode_metrics(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        class_metrics(torch.tensor([0, 10]))


class MeanBucket:
    """A stub classifier: the label is the image's mean pixel in [-1, 1] cut into 10 buckets."""

    def predict(self, x, batch_size):
        assert x.shape[1:] == (1, 28, 28) and batch_size == 7
        return ((x.mean(dim=(1, 2, 3)) + 1) / 2 * 10).clamp(0, 9).long()


def _label_value(label):
    return (label + 0.5) / 10 * 2 - 1  # the centre of the label's bucket


@pytest.mark.parametrize("side", [28, 32])
def test_classify_channels_keeps_the_channel_order(side):
    labels = torch.tensor([[1, 2, 3], [9, 0, 5], [4, 4, 7]])
    x = torch.full((3, 3, side, side), 1.0)  # a 32x32 border of +1 would shift every bucket if not cropped
    off = (side - 28) // 2
    x[:, :, off:off + 28, off:off + 28] = _label_value(labels.double()).float()[:, :, None, None]
    assert torch.equal(classify_channels(MeanBucket(), x, batch_size=7), labels)


# --- the network and its cache ---------------------------------------------------------------------

def test_network_shapes_and_batched_predict():
    torch.manual_seed(0)
    model = clf.ModeClassifier()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert model(x).shape == (5, 10) and model.penultimate(x).shape == (5, 128)
    model.train()
    labels = model.predict(x, batch_size=2)
    assert model.training  # predict leaves the mode as it found it
    model.eval()
    assert torch.equal(labels, model(x).argmax(1))
    assert torch.allclose(model.features(x, batch_size=3), model.penultimate(x), atol=1e-6)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _saved(dataset="fashion_mnist", accuracy=0.912):
    torch.manual_seed(1)
    model = clf.ModeClassifier().eval()
    path = clf.save_classifier(model, dataset, accuracy, {"epochs": 1, "seed": 0})
    return model, path


def test_cache_round_trip(cache):
    model, path = _saved()
    assert path == cache / "classifiers" / "fashion_mnist.pt"
    assert not list(path.parent.glob(".*.tmp"))
    loaded, info = clf.load_classifier("fashion_mnist")
    assert info == {"dataset": "fashion_mnist", "accuracy": 0.912, "hash": clf.state_hash(model.state_dict()),
                    "path": str(path), "below_target": False, "augmented": False, "shipped": False,
                    "data": "standard (recorded before the training data was)"}  # no record, at target
    assert not loaded.training
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.equal(loaded(x), model(x))
    assert clf.describe(info) == f"fashion_mnist CNN sha256:{info['hash'][:8]} (test acc 91.2%)"
    saved = torch.load(path, weights_only=True)
    assert saved["settings"]["epochs"] == 1 and saved["architecture"] == clf.ARCHITECTURE


def test_below_target_is_stored_and_described(cache):
    _saved("mnist", accuracy=0.97)
    _, info = clf.load_classifier("mnist")
    assert info["below_target"] and "below the 98.5% target" in clf.describe(info)


def _one_line_error(match, dataset="fashion_mnist"):
    with pytest.raises(GanlabError, match=match) as caught:
        clf.load_classifier(dataset)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_classifier_names_the_command(cache):
    message = _one_line_error("no mode classifier for mnist", "mnist")
    assert "`ganlab classifier dataset=mnist`" in message and str(cache / "classifiers" / "mnist.pt") in message


def test_truncated_classifier_is_an_error(cache):
    _, path = _saved()
    path.write_bytes(path.read_bytes()[:1000])
    message = _one_line_error("truncated or corrupt")
    assert str(path) in message and "ganlab classifier dataset=fashion_mnist" in message


def test_tampered_weights_fail_the_hash_check(cache):
    _, path = _saved()
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["head.1.bias"][3] += 1.0  # the recorded hash is kept
    torch.save(saved, path)
    message = _one_line_error("fails its SHA-256 check")
    assert str(path) in message and "ganlab classifier dataset=fashion_mnist" in message


def test_unknown_dataset_is_an_error(cache):
    with pytest.raises(GanlabError, match="choose one of mnist, fashion_mnist"):
        clf.load_classifier("cifar10")


# --- `ganlab classifier` ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["dataset=cifar10"], "dataset=cifar10: choose one of mnist, fashion_mnist"),
    ([], "dataset= is required"),
    (["dataset=mnist", "epochs=0"], "epochs=0: must be >= 1"),
    (["dataset=mnist", "lr=0.1"], "'lr=0.1': expected key=value with key one of"),
    (["dataset=mnist", "force=maybe"], "force=maybe: expected true or false"),
    (["dataset=mnist", "device=tpu"], "device=tpu: not a device ganlab trains on; choose auto, cpu, cuda, cuda:N"),
])
def test_main_rejects_bad_arguments(argv, says, cache, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["classifier", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_main_reports_a_cached_classifier(cache, capsys):
    _saved()
    classifier_command(["dataset=fashion_mnist"])
    out = capsys.readouterr().out  # the cached one was trained without augmentation, the default recipe's
    assert "fashion_mnist CNN sha256:" in out and "(not augment=true, which is the default); force=true" in out
    classifier_command(["dataset=fashion_mnist", "augment=false"])  # what it is: nothing to add
    assert "(not augment" not in capsys.readouterr().out
    classifier_command(["dataset=fashion_mnist", "augment=true"])
    out = capsys.readouterr().out
    assert "(not augment=true, which was asked for); force=true retrains it" in out


def test_main_reports_a_corrupt_classifier_in_one_line(cache, capsys):
    _, path = _saved()
    path.write_bytes(b"junk")
    with pytest.raises(SystemExit) as exited:
        cli_main(["classifier", "dataset=fashion_mnist"])
    assert exited.value.code == 2 and "truncated or corrupt" in capsys.readouterr().err


def _synthetic_split(name, split, root=None):
    """Ten easy classes: a bright 7x7 square at one of ten places, with noise; the test split's labels
    are off by one, so a classifier that learnt the squares scores 0 % there (below any target)."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 384 if split == "train" else 200
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        r, c = 3 + 14 * (label // 5), 2 + 5 * (label % 5)
        images[i, 0, r:r + 7, c:c + 7] = 255
    return images, labels if split == "train" else (labels + 1) % 10


def _use_synthetic(monkeypatch):
    """_synthetic_split as every split's data, simulated as the standard split (the known SHA-256s of the official
    files become its own: the cache takes classifiers of the standard split alone, tests/test_classifier_cache.py)."""
    import ganlab.data.images
    from ganlab.data import files

    monkeypatch.setattr(ganlab.data.images, "load_split", _synthetic_split)
    hashes = {k: v for split in ("train", "test")
              for k, v in clf.split_record("mnist", split, *_synthetic_split("mnist", split))["sha256"].items()}
    for name in ("mnist", "fashion_mnist"):
        monkeypatch.setitem(files.IDX_SHA256, name, hashes)


def test_training_is_deterministic_and_main_stores_with_a_warning(cache, monkeypatch, capsys):
    _use_synthetic(monkeypatch)
    a, acc_a = training.train_classifier("mnist", None, epochs=1, seed=3, device="cpu", batch_size=32, progress=False)
    b, acc_b = training.train_classifier("mnist", None, epochs=1, seed=3, device="cpu", batch_size=32, progress=False)
    assert acc_a == acc_b and clf.state_hash(a.state_dict()) == clf.state_hash(b.state_dict())
    c, _ = training.train_classifier("mnist", None, epochs=1, seed=4, device="cpu", batch_size=32, progress=False)
    assert clf.state_hash(c.state_dict()) != clf.state_hash(a.state_dict())

    monkeypatch.setattr(training, "BATCH_SIZE", 32)
    classifier_command(["dataset=mnist", "epochs=1", "device=cpu"])
    captured = capsys.readouterr()
    assert "wrote " + str(cache / "classifiers" / "mnist.pt") in captured.out
    assert "warning: below the protocol's target of 98.5%" in captured.err
    saved = torch.load(cache / "classifiers" / "mnist.pt", weights_only=True)
    assert saved["below_target"] and saved["settings"]["epochs"] == 1


def test_augmentation_degrades_three_quarters_of_a_batch_reproducibly():
    from ganlab.data.degrade import augment, gaussian_blur

    x = torch.rand(64, 1, 28, 28) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(0))) and not torch.equal(a, augment(
        x, torch.Generator().manual_seed(1)))
    unchanged = (a == x).flatten(1).all(dim=1)
    assert int(unchanged.sum()) == 16  # the clean quarter, exactly
    assert a.min() >= -1 and a.max() <= 1
    flat = torch.full((2, 1, 28, 28), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.2), flat)  # a blur keeps a flat image (weights sum to 1)
    edge = torch.zeros(1, 1, 28, 28)
    edge[..., 14:] = 1
    blurred = gaussian_blur(edge, 1.0)
    assert 0 < float(blurred[0, 0, 0, 13]) < 0.5 < float(blurred[0, 0, 0, 14]) < 1  # the step is smoothed


def test_an_augmented_classifier_is_recorded_as_such(cache, monkeypatch, capsys):
    _use_synthetic(monkeypatch)
    monkeypatch.setattr(training, "BATCH_SIZE", 32)
    plain, _ = training.train_classifier("mnist", None, epochs=1, seed=3, device="cpu", batch_size=32, progress=False)
    augmented, _ = training.train_classifier("mnist", None, epochs=1, seed=3, device="cpu", batch_size=32,
                                             progress=False, augment=True)
    assert clf.state_hash(plain.state_dict()) != clf.state_hash(augmented.state_dict())  # it trained on other images
    classifier_command(["dataset=mnist", "epochs=1", "device=cpu", "augment=true"])
    saved = torch.load(cache / "classifiers" / "mnist.pt", weights_only=True)
    assert saved["settings"]["augment"].startswith("each batch in four random quarters")
    _, info = clf.load_classifier("mnist")
    assert info["augmented"] and "trained on blurred and noised images too" in clf.describe(info)
    assert "trained on blurred and noised images too" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli_main(["classifier", "dataset=mnist", "augment=maybe"])
    assert exited.value.code == 2 and "augment=maybe: expected true or false" in capsys.readouterr().err


# --- the confusion matrix, stored with the classifier -------------------------------------------------

def test_a_trained_classifier_stores_its_confusion_on_the_test_split(cache, monkeypatch):
    from ganlab.metrics.matched_confusion import NOISES, SIGMAS, split_test

    _use_synthetic(monkeypatch)
    model, acc = training.train_classifier("mnist", None, epochs=1, seed=3, device="cpu", batch_size=32, progress=False)
    c, per_class = model.confusion, model.confusion_samples
    assert c.shape == (10, 10) and c.dtype == torch.float64 and (c >= 0).all()
    assert torch.allclose(c.sum(1), torch.ones(10, dtype=torch.float64))
    assert per_class.tolist() == [10] * 10  # the confusion half of the synthetic test split: 200 images, 20 a class
    # Its rows are the predictions on that half counted by true label: recount them by hand.
    x, y = _synthetic_split("mnist", "test")
    _, half = split_test(y)
    pred = model.predict(x[half].float() / 127.5 - 1)
    assert c[3, 5] == ((y[half] == 3) & (pred == 5)).sum() / 10
    # The test labels are the squares' shifted by one: a net that learnt the squares says i - 1 for class i.
    assert c[torch.arange(10), (torch.arange(10) - 1) % 10].mean() > 0.5
    family = model.confusion_family  # and under every blur x noise of the grid, the clean one first
    assert len(family.sigma) == len(SIGMAS) * len(NOISES) and torch.equal(family.confusions[family.clean()], c)

    path = clf.save_classifier(model, "mnist", acc, {"epochs": 1})
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["confusion_family"]["confusions"], family.confusions)
    assert saved["confusion_split"] == clf.CONFUSION_SPLIT and saved["hash"] == clf.state_hash(model.state_dict())
    loaded, _ = clf.load_classifier("mnist")
    assert torch.equal(loaded.confusion, c) and torch.equal(loaded.confusion_samples, per_class)
    assert torch.equal(loaded.confusion_family.signatures, family.signatures)


def _old_file(path, clean_matrix=False):
    """The file as written before the confusion matrices were recorded: no such keys at all, or (`clean_matrix`)
    the clean test-split matrix alone, as written before issue 26."""
    saved = torch.load(path, weights_only=True)
    for key in ("confusion_family", "confusion_split"):
        del saved[key]
    if clean_matrix:
        saved["confusion"], saved["confusion_samples"] = torch.eye(10, dtype=torch.float64), torch.full((10,), 7)
    torch.save(saved, path)
    return saved


@pytest.mark.parametrize("clean_matrix", [False, True])
def test_an_old_classifier_gets_its_confusion_measured_and_stored_on_first_use(cache, monkeypatch, clean_matrix):
    from ganlab.metrics.matched_confusion import split_test

    model, path = _saved()
    old = _old_file(path, clean_matrix)
    loaded, info = clf.load_classifier("fashion_mnist")  # old files still load, without matrices
    assert loaded.confusion is None and loaded.confusion_family is None and info["hash"] == old["hash"]

    _use_synthetic(monkeypatch)
    ensured, _ = training.ensure_classifier("fashion_mnist", None)
    x, y = _synthetic_split("fashion_mnist", "test")
    _, half = split_test(y)
    pred = model.predict(x[half].float() / 127.5 - 1)
    expected = torch.zeros(10, 10, dtype=torch.float64).index_put_(
        (y[half], pred), torch.ones(len(half), dtype=torch.float64), accumulate=True) / 10
    assert torch.equal(ensured.confusion, expected)
    stored = torch.load(path, weights_only=True)  # stored: later runs use the very same matrices
    assert torch.equal(stored["confusion_family"]["confusions"][0], expected)
    assert stored["confusion_family"]["samples"][0].tolist() == [10] * 10 and "confusion" not in stored
    assert stored["hash"] == old["hash"] and stored["accuracy"] == old["accuracy"]
    assert torch.equal(clf.load_classifier("fashion_mnist")[0].confusion, expected)


def test_an_old_classifier_without_its_test_split_loads_without_confusion(cache, monkeypatch, caplog):
    import ganlab.data.images

    def offline(name, split, root=None):
        raise GanlabError(f"{name} {split} files are missing and the mirrors cannot be reached")

    _, path = _saved()
    _old_file(path)
    before = path.read_bytes()
    monkeypatch.setattr(ganlab.data.images, "load_split", offline)
    with caplog.at_level("WARNING"):
        model, _ = training.ensure_classifier("fashion_mnist", None)
    assert model.confusion is None and path.read_bytes() == before
    plain, line = [r.getMessage() for r in caplog.records]
    # this one was trained on clean images alone (the _saved fixture): one line says so, and how to retrain
    assert "was trained on clean images alone" in plain and "`ganlab classifier dataset=fashion_mnist force=true`" in plain
    assert "\n" not in plain
    assert "has no confusion matrices" in line and "mirrors cannot be reached" in line
    assert "the confusion-corrected mode counts are left out" in line and "\n" not in line


def test_no_training_is_announced_before_the_data_is_read(cache, monkeypatch, caplog):
    """Issue 28: a data error (missing or corrupt files) must not be preceded by "training one now
    (about 8 minutes)": the announcement comes once the data has been read."""
    import ganlab.data.images

    def unreadable(name, split, root=None):
        raise GanlabError(f"{name} {split} files are corrupt")

    monkeypatch.setattr(ganlab.data.images, "load_split", unreadable)
    with caplog.at_level("INFO"), pytest.raises(GanlabError, match="mnist train files are corrupt"):
        training.ensure_classifier("mnist", None)
    assert not any("training one now" in r.getMessage() for r in caplog.records), caplog.text
    assert not clf.classifier_path("mnist").exists()

    # With the data read, it is announced before the training starts (and the log goes on with the epochs).
    _use_synthetic(monkeypatch)
    monkeypatch.setattr(training, "DEFAULT_EPOCHS", {"mnist": 1})
    monkeypatch.setattr(training, "set_confusion", lambda *args: True)  # the matrices take seconds: not the point here
    monkeypatch.setattr(training, "add_confusion", lambda *args: True)
    caplog.clear()
    with caplog.at_level("INFO"):
        training.ensure_classifier("mnist", None)
    messages = [r.getMessage() for r in caplog.records]
    announced = next(i for i, m in enumerate(messages) if "training one now" in m)
    assert announced < next(i for i, m in enumerate(messages) if m.startswith("epoch 1/1"))


def test_a_malformed_confusion_matrix_is_a_one_line_error(cache):
    _, path = _saved()
    saved = torch.load(path, weights_only=True)
    saved["confusion_family"] = {"sigma": torch.zeros(1), "noise": torch.zeros(1), "signatures": torch.zeros(1, 7),
                                 "confusions": torch.full((1, 10, 10), 0.2, dtype=torch.float64),
                                 "samples": torch.ones(1, 10, dtype=torch.long)}
    torch.save(saved, path)
    message = _one_line_error("malformed confusion matrix")
    assert str(path) in message and "ganlab classifier dataset=fashion_mnist" in message


# --- real data -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fashion_mnist_a_third_of_an_epoch_reaches_85_percent(tmp_path):
    """The first 20,000 training images once (313 steps of 64) on Debian's Fashion-MNIST, scored on the whole 10k
    test set: 87.2 % measured here (15,000 images: 87.0 %; the whole epoch, which this test trained until
    2026-12-07: 89.3 %, but took 100 s of the suite's 10 minutes, 385 s beside other work)."""
    if not all((DEBIAN_FASHION / f).is_file() for f in FASHION_FILES):
        if os.environ.get("GANLAB_REQUIRE_DEBIAN_FASHION") == "1":
            pytest.fail(f"GANLAB_REQUIRE_DEBIAN_FASHION=1 but {DEBIAN_FASHION} lacks the Fashion-MNIST files")
        pytest.skip(f"Debian's Fashion-MNIST is not installed at {DEBIAN_FASHION} (apt install dataset-fashion-mnist)")
    # One torch thread (conftest's, under xdist): a second would fight the other worker for its core, which
    # made this test 5x slower (195 s) in `make test`.
    # An empty data root: the files come from the Debian copy, nothing is downloaded.
    model, acc = training.train_classifier("fashion_mnist", str(tmp_path), epochs=1, seed=0, device="cpu",
                                           batch_size=64, progress=False, confusion_grid=((0.0,), (0.0,)), limit=20_000)
    assert acc >= 0.85
    # Its confusion matrix on the test split's confusion half (500 a class): rows sum to 1, the diagonal is
    # about the accuracy on the whole split.
    c = model.confusion
    assert model.confusion_samples.tolist() == [500] * 10
    assert torch.allclose(c.sum(1), torch.ones(10, dtype=torch.float64))
    assert float(c.diagonal().mean()) == pytest.approx(acc, abs=0.01)
    assert int(c.diagonal().argmin()) == 6  # the shirt, the class every Fashion-MNIST classifier confuses most
