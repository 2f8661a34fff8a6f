"""The mode classifier's cache is keyed by what it was trained on (issue 28, item 4): only a classifier
trained on the full standard split (the official files, checked by the SHA-256 of their decompressed
bytes) is stored in and used from the global cache; a user's small or non-standard `dataset.root` is
refused in one line instead of training the classifier that scores every later run. The cache lives in
tmp_path ($GANLAB_CACHE); the "standard" split is simulated by pointing the known hashes at small files
the tests write, and training is one epoch on them (seconds)."""

import gzip
import hashlib
import os
from pathlib import Path

import pytest
import torch
from test_image_data import IDX_NAMES, fake_mnist

from ganlab.cli import main as cli_main
from ganlab.data import files
from ganlab.errors import GanlabError
from ganlab.metrics import classifier as clf
from ganlab.metrics import classifier_training as training

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(clf.DEFAULT_EPOCHS, "fashion_mnist", 1)  # seconds on the small files
    monkeypatch.setattr(training, "BATCH_SIZE", 16)
    return tmp_path / "cache"


def _small_root(tmp_path, name="small", n_train=100, n_test=20):
    root = tmp_path / name
    fake_mnist(root, "fashion_mnist", n_train=n_train, n_test=n_test)
    return root


def _decompressed_sha256(root, dataset="fashion_mnist"):
    return {gz[:-3]: hashlib.sha256(gzip.decompress((root / dataset / gz).read_bytes())).hexdigest()
            for names in IDX_NAMES.values() for gz in names}


def _as_standard(monkeypatch, root, dataset="fashion_mnist"):
    """Simulate the official split: the known hashes become those of the files under `root`."""
    known = {**getattr(files, "IDX_SHA256", {}), dataset: _decompressed_sha256(root, dataset)}
    monkeypatch.setattr(files, "IDX_SHA256", known, raising=False)


def _one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def test_a_small_data_root_is_refused_and_nothing_is_cached(cache, tmp_path, caplog):
    """The issue's case: 100 images of the user's and no cached classifier. Before, the classifier was
    trained on them and cached for every later Fashion-MNIST run."""
    root = _small_root(tmp_path)
    path = clf.classifier_path("fashion_mnist")
    with caplog.at_level("WARNING"), pytest.raises(GanlabError) as caught:
        training.ensure_classifier("fashion_mnist", str(root))
    message = _one_line(caught)
    assert "100 train / 20 test images" in message and "not the standard" in message, message
    assert "`ganlab classifier dataset=fashion_mnist`" in message and str(path) in message, message
    assert not path.exists() and not list(cache.rglob("*.pt"))
    assert "training one now" not in caplog.text  # refused before any training is announced


def test_the_classifier_command_refuses_a_small_data_root(cache, tmp_path, capsys):
    root = _small_root(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli_main(["classifier", "dataset=fashion_mnist", f"dataset.root={root}", "epochs=1", "device=cpu"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert "100 train / 20 test images" in err and "not the standard" in err, err
    assert not list(cache.rglob("*.pt"))


def test_a_classifier_trained_on_the_standard_split_is_cached_and_reused(cache, tmp_path, monkeypatch, caplog):
    root = _small_root(tmp_path, "standard")
    _as_standard(monkeypatch, root)
    with caplog.at_level("WARNING"):
        model, info = training.ensure_classifier("fashion_mnist", str(root))
    path = clf.classifier_path("fashion_mnist")
    assert "training one now" in caplog.text and path.is_file()
    saved = torch.load(path, weights_only=True)
    data = saved["data"]  # what it was trained on, next to its settings
    assert data["standard"] is True and data["root"] == str(root)
    assert data["train"]["images"] == 100 and data["test"]["images"] == 20
    expected = _decompressed_sha256(root)
    assert data["train"]["sha256"] == {k: expected[k] for k in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}
    assert data["test"]["sha256"] == {k: expected[k] for k in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    assert saved["settings"]["epochs"] == 1 and saved["settings"]["seed"] == 0 and saved["settings"]["augment"]
    assert saved["confusion_data"] == data["test"]  # the matrices: measured on that test split

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train_and_save", no_training)
    monkeypatch.setattr(training, "set_confusion", no_training)
    caplog.clear()
    with caplog.at_level("WARNING"):
        again, info_again = training.ensure_classifier("fashion_mnist", str(root))
    assert info_again["hash"] == info["hash"] and info_again["data"] == "standard"
    assert torch.equal(again.confusion, model.confusion)
    assert not caplog.text  # no note: it is the standard one
    # A run on a small root of the user's is scored by the standard classifier, and leaves the file as it was.
    small = _small_root(tmp_path, "small", n_train=30, n_test=10)
    before = path.read_bytes()
    assert training.ensure_classifier("fashion_mnist", str(small))[1]["hash"] == info["hash"]
    assert path.read_bytes() == before


def _record(root, dataset="fashion_mnist"):
    from ganlab.data.images import load_split

    return clf.data_record(dataset, root, load_split(dataset, "train", root), load_split(dataset, "test", root))


def test_a_cached_classifier_trained_on_other_data_is_not_used(cache, tmp_path, monkeypatch):
    """A file whose record says it was trained on other data (written by hand, or by another tool) is
    refused for the standard metrics, in one line with the fix; it is not trained over silently."""
    root = _small_root(tmp_path)
    torch.manual_seed(0)
    cached = clf.save_classifier(clf.ModeClassifier().eval(), "fashion_mnist", 0.95, {"epochs": 1})
    saved = torch.load(cached, weights_only=True)
    hashes = _decompressed_sha256(root)
    saved["data"] = {split: {"images": n, "sha256": {k: v for k, v in hashes.items() if k.startswith(prefix)}}
                     for split, n, prefix in (("train", 100, "train"), ("test", 20, "t10k"))}
    saved["data"].update(root=str(root), standard=True)  # the flag is not trusted: the hashes are checked
    torch.save(saved, cached)
    for load in (lambda: clf.load_classifier("fashion_mnist"),
                 lambda: training.ensure_classifier("fashion_mnist", None)):
        with pytest.raises(GanlabError) as caught:
            load()
        message = _one_line(caught)
        assert str(cached) in message and "100 train / 20 test images" in message, message
        assert "not the standard" in message and "ganlab classifier dataset=fashion_mnist force=true" in message


def test_the_global_cache_refuses_a_classifier_of_other_data(cache, tmp_path):
    root = _small_root(tmp_path)
    with pytest.raises(GanlabError, match="not the standard") as caught:
        clf.save_classifier(clf.ModeClassifier(), "fashion_mnist", 0.33, {"epochs": 1}, data=_record(str(root)))
    _one_line(caught)
    assert not clf.classifier_path("fashion_mnist").exists()


def _legacy(tmp_path, accuracy, samples_per_class=None):
    """A file as written before the data was recorded: no `data` and no `confusion_data`, and (if
    `samples_per_class`) the confusion family measured on a test split of 10 x 2 x that many images."""
    from ganlab.metrics.matched_confusion import ConfusionFamily

    torch.manual_seed(0)
    model = clf.ModeClassifier().eval()
    path = clf.save_classifier(model, "fashion_mnist", accuracy, {"epochs": 15, "seed": 0})
    saved = torch.load(path, weights_only=True)
    saved.pop("data", None), saved.pop("confusion_data", None)
    if samples_per_class is not None:
        family = ConfusionFamily(sigma=torch.zeros(1, dtype=torch.float64), noise=torch.zeros(1, dtype=torch.float64),
                                 signatures=torch.zeros(1, 7, dtype=torch.float64),
                                 confusions=torch.eye(10, dtype=torch.float64)[None],
                                 samples=torch.full((1, 10), samples_per_class))
        saved["confusion_family"] = family.to_record()
    torch.save(saved, path)
    return path


def test_an_old_file_of_the_issue_is_refused(cache, tmp_path):
    """Trained by an older ganlab on 100 images: 33 % accuracy, confusion matrices from a 20-image test split."""
    path = _legacy(tmp_path, 0.33, samples_per_class=1)
    with pytest.raises(GanlabError) as caught:
        clf.load_classifier("fashion_mnist")
    message = _one_line(caught)
    assert str(path) in message and "about 20 test images" in message and "not the standard" in message, message
    assert "ganlab classifier dataset=fashion_mnist force=true" in message


def test_an_old_file_at_target_on_the_standard_test_split_is_used(cache, tmp_path, caplog):
    """Like the classifier cached here before the record (92.7 %, matrices from 500 images a class)."""
    _legacy(tmp_path, 0.927, samples_per_class=500)
    with caplog.at_level("WARNING"):
        model, info = clf.load_classifier("fashion_mnist")
    assert info["data"] == "standard (recorded before the training data was)" and not caplog.text
    assert model.confusion is not None  # its matrices: from the standard test split's confusion half
    assert "unrecorded" not in clf.describe(info)


def test_an_old_file_below_target_without_evidence_is_used_with_a_warning(cache, tmp_path, caplog):
    _legacy(tmp_path, 0.5)
    with caplog.at_level("WARNING"):
        _, info = clf.load_classifier("fashion_mnist")
    assert info["data"] == "unknown"
    line = caplog.records[-1].getMessage()
    assert "does not record what it was trained on" in line and "ganlab classifier dataset=fashion_mnist force=true" \
        in line and "\n" not in line
    assert "training data unrecorded" in clf.describe(info)


def test_confusion_matrices_from_a_small_test_split_are_not_used_for_the_standard_data(cache, tmp_path, monkeypatch):
    """A standard classifier cached without matrices, first used by a run on a small root: they are measured
    there, and stored with a record of that split; a later run on the standard data measures its own."""
    standard = _small_root(tmp_path, "standard")
    _as_standard(monkeypatch, standard)
    training.ensure_classifier("fashion_mnist", str(standard))
    path = clf.classifier_path("fashion_mnist")
    saved = torch.load(path, weights_only=True)
    saved["confusion_family"] = saved["confusion_data"] = None  # as if cached before the matrices were
    torch.save(saved, path)

    small = _small_root(tmp_path, "small", n_train=30, n_test=10)
    measured, _ = training.ensure_classifier("fashion_mnist", str(small))
    assert measured.confusion_samples.tolist() == [1] * 10
    stored = torch.load(path, weights_only=True)
    assert stored["confusion_data"]["images"] == 10 and stored["confusion_family"]["samples"][0].tolist() == [1] * 10
    assert clf.load_classifier("fashion_mnist")[0].confusion is None  # not for the standard metrics

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(training, "set_confusion", no_measuring)
    again, _ = training.ensure_classifier("fashion_mnist", str(small))  # the same small split: reused
    assert torch.equal(again.confusion, measured.confusion)
    monkeypatch.setattr(training, "set_confusion", clf.set_confusion)
    model, _ = training.ensure_classifier("fashion_mnist", str(standard))  # measured again, on the standard split
    assert model.confusion_samples.tolist() == [1] * 10 and model.confusion_data["images"] == 20
    assert torch.load(path, weights_only=True)["confusion_data"]["images"] == 20
    assert clf.load_classifier("fashion_mnist")[0].confusion is not None


@pytest.mark.slow
def test_debians_fashion_mnist_is_the_standard_split(tmp_path):
    """Debian's re-compressed files: other .gz bytes, the same decompressed ones as the upstream release."""
    from ganlab.data.images import load_split

    if not all((DEBIAN_FASHION / gz).is_file() for names in IDX_NAMES.values() for gz in names):
        if os.environ.get("GANLAB_REQUIRE_DEBIAN_FASHION") == "1":
            pytest.fail(f"GANLAB_REQUIRE_DEBIAN_FASHION=1 but {DEBIAN_FASHION} lacks the Fashion-MNIST files")
        pytest.skip(f"Debian's Fashion-MNIST is not installed at {DEBIAN_FASHION}")
    root = str(tmp_path)  # empty: the files come from the Debian copy, nothing is downloaded
    record = clf.data_record("fashion_mnist", root, load_split("fashion_mnist", "train", root),
                             load_split("fashion_mnist", "test", root))
    assert record["standard"] and record["train"]["images"] == 60_000 and record["test"]["images"] == 10_000
