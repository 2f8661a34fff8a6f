"""The Fashion-MNIST mode classifier shipped with ganlab (ganlab/metrics/shipped/, issue 29): used when the cache
holds none, so a first Stacked run starts at once; a cached one replaces it; its file is checked by its SHA-256.
(conftest.py keeps it out of every other test: GANLAB_SHIPPED_CLASSIFIERS=0.)"""

import pytest
import torch

from ganlab.cli import main
from ganlab.errors import GanlabError
from ganlab.metrics import classifier, classifier_training
from ganlab.metrics.classifier import ModeClassifier, load_classifier, save_classifier

SHIPPED = classifier.SHIPPED_DIR / "fashion_mnist.pt"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(classifier.SHIPPED_ENV, "1")
    return tmp_path / "cache"


def test_the_shipped_classifier_is_loaded_when_the_cache_has_none(empty_cache):
    model, info = load_classifier("fashion_mnist")
    assert info["shipped"] and info["path"] == str(SHIPPED)
    # The default (augmented) recipe's classifier, recorded as trained on the standard split, with the confusion
    # matrices of the standard test split that the corrected counts need.
    assert info["hash"].startswith("c39c3a77") and info["accuracy"] == pytest.approx(0.927)
    assert info["augmented"] and info["data"] == "standard" and not info["below_target"]
    assert model.confusion is not None and model.confusion_family is not None
    assert classifier.is_standard("fashion_mnist", model.trained_on)
    assert not (empty_cache / "classifiers").exists()  # nothing written into the cache


def test_a_first_stacked_run_trains_nothing(empty_cache, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained a classifier although ganlab ships one")

    monkeypatch.setattr(classifier_training, "train_and_save", no_training)
    model, info = classifier_training.ensure_classifier("fashion_mnist", None)
    assert info["shipped"] and model.confusion is not None
    assert SHIPPED.read_bytes() and not (empty_cache / "classifiers").exists()


def test_a_cached_classifier_replaces_the_shipped_one(empty_cache):
    torch.manual_seed(0)
    own = ModeClassifier()
    save_classifier(own, "fashion_mnist", 0.5, {"epochs": 0})
    _, info = load_classifier("fashion_mnist")
    assert not info["shipped"] and info["path"] == str(classifier.classifier_path("fashion_mnist"))
    assert info["hash"] == classifier.state_hash(own.state_dict()) and info["accuracy"] == 0.5


def test_a_changed_shipped_file_is_refused_in_one_line(empty_cache, tmp_path, monkeypatch):
    copy = tmp_path / "shipped"
    copy.mkdir()
    data = bytearray(SHIPPED.read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "fashion_mnist.pt").write_bytes(bytes(data))
    monkeypatch.setattr(classifier, "SHIPPED_DIR", copy)
    with pytest.raises(GanlabError, match=r"shipped with ganlab .* fails its SHA-256 check .*reinstall ganlab") as err:
        load_classifier("fashion_mnist")
    assert "\n" not in str(err.value)


def test_without_the_shipped_classifier_the_cache_alone_counts(empty_cache, monkeypatch):
    monkeypatch.setenv(classifier.SHIPPED_ENV, "0")
    with pytest.raises(GanlabError, match="no mode classifier for fashion_mnist at .*ganlab classifier"):
        load_classifier("fashion_mnist")


def test_ganlab_classifier_names_the_shipped_one_and_trains_only_with_force(empty_cache, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(classifier_training, "train_and_save", lambda *a, **k: calls.append(a))
    main(["classifier", "dataset=fashion_mnist"])
    out = capsys.readouterr().out
    assert "sha256:c39c3a77" in out and "shipped with ganlab" in out and "force=true trains one of your own" in out
    assert calls == []


def test_the_shipped_classifier_labels_real_test_images(empty_cache):
    """Its recorded accuracy holds on Debian's Fashion-MNIST test images (the first 2,000), when installed."""
    from ganlab.data.images import load_split

    try:
        x, y = load_split("fashion_mnist", "test", None)
    except GanlabError:
        pytest.skip("Fashion-MNIST's test split is not installed (apt install dataset-fashion-mnist)")
    model, _ = load_classifier("fashion_mnist")
    images = classifier.to_model_input(x[:2000], torch.device("cpu"))
    accuracy = (model.predict(images) == y[:2000]).float().mean().item()
    assert accuracy >= 0.90


def test_the_package_data_holds_the_shipped_file():
    """pyproject.toml's package data names the folder, and every shipped file has its SHA-256 recorded."""
    import tomllib

    from conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "shipped/*.pt" in data["ganlab.metrics"]
    assert {p.stem for p in classifier.SHIPPED_DIR.glob("*.pt")} == {d for d, h in classifier.SHIPPED_SHA256.items() if h}


def test_classifier_help_is_written_for_users(capsys):
    """Every key it takes is explained, with examples, and no source file is named in place of an explanation."""
    from ganlab.cli import _CLASSIFIER_KEYS

    with pytest.raises(SystemExit) as exit_:
        main(["classifier", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    help_text = out.split("\n\n", 1)[1]  # after the usage line
    for key in _CLASSIFIER_KEYS:
        assert f"{key}=" in help_text, key
    assert ".py" not in help_text  # e.g. "(ganlab/metrics/classifier_training.py)" as the explanation
    assert "ships one for Fashion-MNIST" in help_text and "ganlab classifier dataset=mnist" in help_text
