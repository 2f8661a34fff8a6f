"""Mode coverage from a classifier's labels: Stacked MNIST's 1,000 triples and plain 10-class data
(docs/images.md). Pure functions of label tensors, with the conventions of modes.py: reverse KL is
KL(p_gen(mode) || uniform) = sum_k p_k log(K p_k), natural log, 0 log 0 = 0.

`modes_captured` is the papers' count: modes with at least one sample. The classifier errs on a
percent or so of the images, so a collapsed generator still scatters a few samples over other
modes and that count flatters it. `modes_above_share` also counts only modes holding at least
`min_share` of the uniform share (default 10 %: with 26,000 samples over 1,000 modes, 3 or more
samples; with 10,000 over 10 classes, 100 or more), which a few misclassified samples do not reach.

That floor is not enough at Fashion-MNIST's 92 % per channel: 22 % of triples are mislabelled, and a
generator of 100 true modes is counted as about 520 by it (655 raw; simulated in
tests/test_confusion.py). Given the classifier's per-channel confusion matrix, `modes_corrected`
and `reverse_kl_corrected` count and weigh the modes of the deconvolved distribution instead, above a floor of
their own (30 % of the uniform share: the smallest mode the leak's noise lets them tell; metrics/confusion.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_SHARE = 0.1  # of the uniform share n / K


def _coverage(modes: Tensor, k: int, min_share: float, axes: int, confusion: Tensor | None,
              per_class: Tensor | None) -> dict:
    n = len(modes)
    if n == 0:
        raise ValueError("no samples")
    counts = torch.bincount(modes.long().cpu(), minlength=k)
    p = counts.double() / n
    out = {
        "modes_captured": int((counts > 0).sum()),
        "modes_above_share": int((counts >= min_share * n / k).sum()),
        "reverse_kl": float(torch.xlogy(p, k * p).sum()),
    }
    if confusion is not None:
        from ganlab.metrics.confusion import corrected_modes

        c = len(confusion)
        out.update(corrected_modes(counts.view((c,) * axes), confusion, per_class))  # its own floor: 30 %
    return out, counts.tolist()


def stacked_mode_metrics(triples: Tensor, min_share: float = MIN_SHARE, confusion: Tensor | None = None,
                         per_class: Tensor | None = None) -> dict:
    """Coverage of the 1,000 modes of Stacked MNIST from (n, 3) channel labels in 0..9.

    `mode_counts[100 a + 10 b + c]` counts the samples labelled (a, b, c). With the classifier's
    (10, 10) per-channel `confusion` (and `per_class`, the test images per class it was measured
    on), also `modes_corrected` and `reverse_kl_corrected` (metrics/confusion.py).
    """
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ValueError(f"triples must be (n, 3), got {tuple(triples.shape)}")
    if len(triples) and (triples.min() < 0 or triples.max() > 9):
        raise ValueError("channel labels must lie in 0..9")
    t = triples.long()
    metrics, counts = _coverage(t[:, 0] * 100 + t[:, 1] * 10 + t[:, 2], 1000, min_share, 3, confusion, per_class)
    return {**metrics, "mode_counts": counts}


def class_metrics(labels: Tensor, n_classes: int = 10, min_share: float = MIN_SHARE, confusion: Tensor | None = None,
                  per_class: Tensor | None = None) -> dict:
    """Coverage of `n_classes` classes from (n,) labels: counts, classes captured, reverse KL; with
    the classifier's (n_classes, n_classes) `confusion`, the corrected ones too."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be (n,), got {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    metrics, counts = _coverage(labels, n_classes, min_share, 1, confusion, per_class)
    return {**metrics, "class_counts": counts}


def classifier_mode_metrics(labels: Tensor, images: Tensor, classifier, stacked: bool, n_classes: int = 10) -> dict:
    """The mode metrics of `images` ((n, C, 28, 28) in [-1, 1]) whose `classifier` labels are `labels` ((n, 3)
    stacked, else (n,)): the raw counts, and with the classifier's confusion the corrected ones, corrected by
    the confusion measured on real images degraded to look like these when it has those matrices
    (`confusion_family`, metrics/matched_confusion.py), with the count's bounds and the matched blur and noise."""
    confusion = {"confusion": getattr(classifier, "confusion", None),
                 "per_class": getattr(classifier, "confusion_samples", None)}
    family, matched = getattr(classifier, "confusion_family", None), {}
    if family is not None:
        from ganlab.metrics.matched_confusion import match_confusion

        found = match_confusion(family, images)
        confusion = {k: found.pop(k) for k in ("confusion", "per_class")}
        matched = found
    if stacked:
        out = stacked_mode_metrics(labels, **confusion)
    else:
        out = class_metrics(labels, n_classes=n_classes, **confusion)
        out["mode_counts"] = out.pop("class_counts")
    if family is not None:  # the bounds, under the matched C
        from ganlab.metrics.confusion import count_bounds

        k = len(confusion["confusion"])
        counts = torch.tensor(out["mode_counts"], dtype=torch.float64).view((k,) * (3 if stacked else 1))
        out.update(count_bounds(counts, confusion["confusion"], confusion["per_class"], out["modes_corrected"]))
    return {**out, **matched}


def classify_channels(classifier, x: Tensor, batch_size: int = 1024) -> Tensor:
    """(n, 3) labels of (n, 3, H, W) images in [-1, 1]: each channel classified as a grey image.

    32x32 images (the models' `pad_to_32` layout) are cropped back to their centre 28x28 first.
    `classifier` needs only `predict(x, batch_size)` on (m, 1, 28, 28).
    """
    n, c, h, w = x.shape
    if c != 3 or h < 28 or w < 28:
        raise ValueError(f"expected (n, 3, H, W) images with H, W >= 28, got {tuple(x.shape)}")
    top, left = (h - 28) // 2, (w - 28) // 2
    grey = x[:, :, top:top + 28, left:left + 28].reshape(n * 3, 1, 28, 28)  # rows: sample 0 R, G, B, sample 1 R...
    return classifier.predict(grey, batch_size).view(n, 3)
