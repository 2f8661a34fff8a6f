"""The dataset contract (ganlab/data/protocol.py): what each evaluator reads is declared once, checked
when the dataset is built, and the evaluators branch on what a dataset offers, never on its name."""

import ast
from pathlib import Path

import pytest
import torch

from ganlab.data import protocol
from ganlab.data.images import fashion_mnist, stacked_fashion_mnist
from ganlab.data.protocol import ImageData, LabelledData, ToyData, check, declared, missing
from ganlab.data.toy import grid, ring
from ganlab.errors import ConfigError
from ganlab.evaluation import make_evaluator

PACKAGE = Path(protocol.__file__).resolve().parents[1]


def test_the_built_in_datasets_offer_their_evaluators_protocol_and_labels(image_root):
    for data in (ring(), grid()):
        assert data.evaluator == "toy" and missing(data, ToyData) == [] and missing(data, LabelledData) == []
        check(data)
    for data in (fashion_mnist(root=str(image_root)), stacked_fashion_mnist(root=str(image_root), n=50)):
        assert data.evaluator == "image" and missing(data, ImageData) == [] and missing(data, LabelledData) == []
        check(data)
    # what the image evaluator reads to decide its metrics, declared by the data, not by its name
    assert fashion_mnist(root=str(image_root)).mode_classifier == "fashion_mnist"


def test_declared_lists_attributes_and_methods_bases_first():
    toy = declared(ToyData)
    assert list(toy)[:5] == ["evaluator", "device", "shape", "n_modes", "sample"]
    assert toy["sample"] and toy["plot_limits"] and not toy["centers"] and not toy["std"]
    assert {"sample_unique", "held_out_sample", "identity", "mode_classifier", "natural_images"} <= set(declared(ImageData))


class Points:
    """A 2-D dataset of one's own that forgot the pictures' axes and has `gaussian_fit` as a number."""

    evaluator = "toy"
    device, shape, n_modes = torch.device("cpu"), (2,), 1
    centers, std = torch.zeros(1, 2), 0.1
    gaussian_fit = 3.0

    def sample(self, n, generator=None):
        return torch.zeros(n, 2)


def test_a_missing_member_is_one_config_error_naming_it():
    assert missing(Points(), ToyData) == ["gaussian_fit", "plot_limits"]  # a method must be callable
    with pytest.raises(ConfigError) as raised:
        check(Points())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("dataset: Points lacks `gaussian_fit`, which the 'toy' evaluator reads; a toy dataset "
                              "offers evaluator, device, shape, n_modes, sample, centers, std, gaussian_fit, plot_limits")


def test_an_unknown_mode_classifier_is_one_config_error_at_build(image_root):
    data = fashion_mnist(root=str(image_root))
    data.mode_classifier = "svhn"
    with pytest.raises(ConfigError, match=r"^dataset: ImageDataset.mode_classifier='svhn': there is no such mode "
                                          r"classifier; use one of mnist, fashion_mnist, or None"):
        check(data)


def test_a_dataset_that_names_no_evaluator_is_one_config_error():
    class Unnamed:
        pass

    for check_it in (check, lambda data: make_evaluator(data, 2, None, False, "cpu")):
        with pytest.raises(ConfigError, match=r"^dataset: Unnamed has evaluator=None; give its class an `evaluator` "
                                              r"attribute, 'toy' or 'image'"):
            check_it(Unnamed())


def test_a_missing_member_fails_the_build_before_any_network(monkeypatch):
    from conftest import make_cfg

    from ganlab.gan import build

    monkeypatch.setattr("ganlab.data.toy.GaussianMixture.plot_limits", None)
    with pytest.raises(ConfigError, match="dataset: GaussianMixture lacks `plot_limits`"):
        build(make_cfg(), torch.device("cpu"))


def dataset_names() -> set[str]:
    return {p.stem for p in (PACKAGE / "configs" / "dataset").glob("*.yaml")} | {"cifar10", "mnist", "fashion_mnist"}


def test_no_evaluator_branches_on_a_dataset_name():
    """The evaluators read what a dataset offers (protocol.ImageData): no string literal that names a
    dataset in their code (docstrings and messages aside, which are not compared against)."""
    names = dataset_names()
    for path in sorted((PACKAGE / "evaluation").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                literals = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                assert not set(literals) & names, f"{path.name}:{node.lineno} compares with a dataset name"
