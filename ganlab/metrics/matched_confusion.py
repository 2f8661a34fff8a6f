"""The mode classifier's confusion on images like the ones being scored (issue 26, docs/images.md).

The corrected mode counts (metrics/confusion.py) undo the classifier's confusion C. Measured on clean test
images, C is right for clean images only: generated images are blurrier and noisier, the classifier confuses
them more, and with the plain classifier the count read through the clean C was off by up to 4x too high
(blurred) and as low as 0.06x (noised) on degraded real images with known modes (issue 26's table). So C is
measured on real images degraded as generated ones are (docs/results/stacked_validation.md measures the
result), and
each evaluation picks the degradation that looks like its samples:

- `ConfusionFamily`: C measured on the confusion half of the test split (`split_test`) under a grid of
  Gaussian blurs (sigma, pixels) x Gaussian noise (std, pixels in [-1, 1]); measured once per classifier and
  stored in its file beside the weights.
- `signature`: what "looks like" means: the images' radial power spectrum, mean log power in 7 frequency
  bands, centred (so a uniform change of contrast does not count). Blur takes power from the high bands,
  noise adds it there; both are what moves the classifier's confusion (measured in the validation).
- `ConfusionFamily.match`: the member whose signature is nearest (Euclidean) to the samples'.

The validation sets are drawn from the other half of the test split, so no image is both scored and used to
measure the C that corrects it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from ganlab.data.degrade import gaussian_blur

SIGMAS = (0.0, 0.5, 0.7, 1.0, 1.3, 1.7)   # px; a 3x3 binomial blur is sigma 0.71, applied twice 1.0
NOISES = (0.0, 0.1, 0.2, 0.35, 0.5)       # std in [-1, 1] pixel units, clipped
BANDS = ((1, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13), (13, 20))  # radial frequency, cycles per image
SPLIT_SEED = 2026     # the test split's fixed halves
NOISE_SEED = 7        # the noise drawn on the confusion half
SIGNATURE_IMAGES = 30_000  # grey images a signature reads at most (plenty: its spread is ~1e-3 at 5,000)


def split_test(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the test split's two fixed halves, each class halved (stratified, so both hold every class
    that has two images or more): (scored, confusion). Reference rows and the validation's known-mode sets come
    from the first; the confusion matrices are measured on the second."""
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(labels), generator=generator)
    scored, confusion = [], []
    for c in labels.unique().tolist():
        idx = perm[labels[perm] == c]  # this class's images, in the fixed shuffled order
        scored.append(idx[: len(idx) // 2])
        confusion.append(idx[len(idx) // 2:])
    return torch.cat(scored).sort().values, torch.cat(confusion).sort().values


def _radius(size: int) -> Tensor:
    f = torch.fft.fftfreq(size).abs() * size
    return torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def signature(images: Tensor) -> Tensor:
    """(7,) float64: the centred log mean power in each of BANDS of grey images (n, 1, H, W) or of every channel
    of (n, C, H, W) (each channel one image, as the mode classifier reads them)."""
    x = images.detach().reshape(-1, *images.shape[-2:])[:SIGNATURE_IMAGES].float().cpu()
    if x.shape[-1] == 32:  # the models' pad_to_32 layout: the classifier reads the centre 28 x 28
        x = x[..., 2:30, 2:30]
    x = x - x.mean(dim=(-2, -1), keepdim=True)  # the mean level is not texture
    power = (torch.fft.fft2(x).abs() ** 2).mean(0).double()
    radius = _radius(x.shape[-1])
    bands = torch.stack([power[(radius >= a) & (radius < b)].mean() for a, b in BANDS]).clamp_min(1e-30).log()
    return bands - bands.mean()


def degrade_images(x: Tensor, sigma: float, noise: float, generator: torch.Generator) -> Tensor:
    """x (n, 1, H, W) in [-1, 1] blurred by `sigma` px, then noised with std `noise` (clipped)."""
    if sigma:
        x = gaussian_blur(x, sigma)
    if noise:
        x = (x + noise * torch.randn(x.shape, generator=generator).to(x.device)).clamp(-1.0, 1.0)
    return x


@dataclass
class ConfusionFamily:
    """C measured under each degradation of a grid: member i is blur `sigma[i]` and noise `noise[i]`, with
    signature `signatures[i]`, confusion `confusions[i]` (10, 10), rows summing to 1, and `samples[i]` (10,),
    the images per class it was measured on."""

    sigma: Tensor        # (m,) float64
    noise: Tensor        # (m,) float64
    signatures: Tensor   # (m, 7) float64
    confusions: Tensor   # (m, k, k) float64
    samples: Tensor      # (m, k) int64

    def match(self, images: Tensor) -> int:
        """The member whose degraded real images look most like `images` (nearest signature)."""
        return int((self.signatures - signature(images)).pow(2).sum(1).argmin())

    def clean(self) -> int:
        return int(((self.sigma == 0) & (self.noise == 0)).nonzero()[0])

    def describe(self, i: int) -> str:
        return f"blur sigma {float(self.sigma[i]):g} px, noise std {float(self.noise[i]):g}"

    def to_record(self) -> dict:
        return {"sigma": self.sigma, "noise": self.noise, "signatures": self.signatures,
                "confusions": self.confusions, "samples": self.samples}

    @classmethod
    def from_record(cls, record) -> ConfusionFamily | None:
        """The family stored in a classifier file; None when it is not one (the caller says the file is malformed)."""
        try:
            fam = cls(**{k: record[k] for k in ("sigma", "noise", "signatures", "confusions", "samples")})
        except (TypeError, KeyError):
            return None
        tensors = all(isinstance(t, Tensor) for t in (fam.sigma, fam.noise, fam.signatures, fam.confusions, fam.samples))
        if not tensors or fam.sigma.ndim != 1 or not len(fam.sigma):
            return None
        m = len(fam.sigma)
        c = fam.confusions.double()
        ok = (fam.noise.shape == (m,) and fam.signatures.shape == (m, len(BANDS)) and c.ndim == 3
              and c.shape[0] == m and c.shape[1] == c.shape[2] and fam.samples.shape == c.shape[:2]
              and bool((c >= 0).all()) and bool((fam.samples > 0).all()) and bool(fam.signatures.isfinite().all())
              and torch.allclose(c.sum(2), torch.ones(c.shape[:2], dtype=torch.float64))
              and bool(((fam.sigma == 0) & (fam.noise == 0)).any()))
        if not ok:
            return None
        return cls(fam.sigma.double(), fam.noise.double(), fam.signatures.double(), c, fam.samples.long())


@torch.no_grad()
def measure_family(classifier, images: Tensor, labels: Tensor, sigmas=SIGMAS, noises=NOISES) -> ConfusionFamily:
    """C of `classifier` (anything with `predict`) on grey images (n, 1, 28, 28) in [-1, 1] with `labels`, under
    every (sigma, noise) of the grid; the noise from a fixed seed, so the family is reproducible."""
    from ganlab.metrics.confusion import confusion_matrix

    generator = torch.Generator().manual_seed(NOISE_SEED)
    rows = {"sigma": [], "noise": [], "signatures": [], "confusions": [], "samples": []}
    for sigma, noise in itertools.product(sigmas, noises):
        x = degrade_images(images, sigma, noise, generator)
        c, per_class = confusion_matrix(labels, classifier.predict(x))
        # the grid's numbers in float64 from the start: float32 would store 1.7 as 1.7000000476837158
        for key, value in zip(rows, (torch.tensor(sigma, dtype=torch.float64), torch.tensor(noise, dtype=torch.float64),
                                     signature(x), c, per_class)):
            rows[key].append(value)
    return ConfusionFamily(*(torch.stack(rows[k]).to(torch.float64 if k != "samples" else torch.int64)
                             for k in rows))


def match_confusion(family: ConfusionFamily, images: Tensor) -> dict:
    """The confusion an evaluation corrects `images`' counts with: {"confusion", "per_class"} of the nearest
    member, and {"matched_blur", "matched_noise"}, the metrics that name it."""
    i = family.match(images)
    return {"confusion": family.confusions[i], "per_class": family.samples[i],
            # rounded: a family measured before the grid was kept in float64 holds 1.7 as 1.7000000476837158
            "matched_blur": round(float(family.sigma[i]), 6), "matched_noise": round(float(family.noise[i]), 6)}
