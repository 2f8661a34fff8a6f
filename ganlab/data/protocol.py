"""What a dataset must offer: one protocol per evaluator kind, checked when the dataset is built.

Training asks every dataset for `TrainingData`; its `evaluator` attribute names the protocol that
measures it, which asks for more: `ToyData` (the 2-D mixtures of toy.py) or `ImageData` (images.py).
Conditional remedies ask for `LabelledData` as well (ganlab/remedies/conditional.py checks it).
A dataset of one's own (README, "How to add ... a dataset") is any class with these members: `check`
names the first one missing in one line, at build time, before anything trains.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch
from torch import Tensor

from ganlab.errors import ConfigError


class TrainingData(Protocol):
    """What the loop, the model builder and `ganlab eval --samples` read."""

    evaluator: str       # "toy" or "image": the protocol that measures it (ganlab.evaluation.make_evaluator)
    device: torch.device  # where sample() puts its tensors (the dataset is built with device=)
    shape: tuple          # one sample's shape: (2,) for 2-D points, (C, H, W) for images
    n_modes: int | None   # the modes the evaluator counts (None: none known, e.g. dataset=points without labels)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples (n, *shape) on `device`, float32; images in [-1, 1]."""


class ToyData(TrainingData, Protocol):
    """Points (2-D, or any dimension d) whose modes are known: mode coverage is measured against `centers` and
    `std`; a dataset may add `weights` ((n_modes,), the modes' shares), which the reverse KL is then taken against.
    D's map over the plane is drawn for 2-D data only."""

    centers: Tensor | None  # (n_modes, d) on `device`; None: no known modes, so no mode metrics (W1/W2, MMD only)
    std: float | Tensor   # each mode's standard deviation (a number, or (n_modes,)): the high-quality radius is 3 std

    def gaussian_fit(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of the Gaussian with the data's mean and covariance (the `gaussian` reference row)."""

    def plot_limits(self) -> tuple[float, float]:
        """The pictures' fixed axes (and the D heatmap's extent), the same for x and y."""


class ImageData(TrainingData, Protocol):
    """Images, measured by feature statistics and, where a mode classifier exists, by counted modes."""

    name: str             # in the reference rows' description and the feature cache's key
    split: str            # "train" or "test": the split sample() draws from
    root: str | None      # where the data files are (None: $GANLAB_DATA or ~/.cache/ganlab/data)
    stacked: bool         # each channel holds one base image, labelled on its own (Stacked MNIST)
    mode_classifier: str | None  # the mode classifier of its base images ("mnist", "fashion_mnist"), or None
    natural_images: bool  # photographs: metrics.inception=auto turns on Inception FID/IS when the weights are here

    def sample_unique(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images drawn without replacement (the real reference sample of FID's protocol)."""

    def held_out_sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        """n images the mode classifier did not train on nor measured its confusion on, and the split they came
        from (the ceiling rows)."""

    def identity(self) -> dict:
        """Everything that decides which images sample_unique draws: the reference statistics' cache key."""


class LabelledData(Protocol):
    """Data with a class per sample, for conditional remedies (ACGAN, cGAN)."""

    n_classes: int

    def sample_with_classes(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n samples and one class index each in [0, n_classes)."""


EVALUATED_BY: dict[str, type] = {"toy": ToyData, "image": ImageData}


def declared(protocol: type) -> dict[str, bool]:
    """{member: is a method} for what `protocol` declares, its bases' first, in the order written."""
    found: dict[str, bool] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        found.update({name: False for name in inspect.get_annotations(cls)})
        found.update({name: True for name, value in vars(cls).items() if not name.startswith("_") and callable(value)})
    return found


def missing(data: object, protocol: type) -> list[str]:
    """The members of `protocol` that `data` lacks (a method must be callable)."""
    return [name for name, method in declared(protocol).items()
            if not hasattr(data, name) or (method and not callable(getattr(data, name)))]


def check(data: object, what: str = "dataset") -> None:
    """One line naming the first member the dataset lacks for its evaluator, or nothing."""
    kind = getattr(data, "evaluator", None)
    cls = type(data).__name__
    if kind not in EVALUATED_BY:
        raise ConfigError(f"{what}: {cls} has evaluator={kind!r}; give its class an `evaluator` attribute, "
                          f"{' or '.join(repr(k) for k in EVALUATED_BY)} (README: How to add a dataset)")
    protocol = EVALUATED_BY[kind]
    lacking = missing(data, protocol)
    if lacking:
        raise ConfigError(f"{what}: {cls} lacks `{lacking[0]}`, which the {kind!r} evaluator reads; "
                          f"a {kind} dataset offers {', '.join(declared(protocol))} (README: How to add a dataset)")
    if kind == "image" and data.mode_classifier is not None:  # else the run would fail only once it started
        from ganlab.metrics.classifier import TARGETS

        if data.mode_classifier not in TARGETS:
            raise ConfigError(f"{what}: {cls}.mode_classifier={data.mode_classifier!r}: there is no such mode "
                              f"classifier; use one of {', '.join(TARGETS)}, or None (no mode counts)")
