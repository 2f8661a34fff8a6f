"""AC-GAN (Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier GANs",
ICML 2017): G(z, c) makes a sample of class c; D has, besides its real/fake score, a classifier
head that predicts the class of real and fake samples alike. With L_S the loss's adversarial
objective and L_C the log-likelihood of the right class (the paper's eq. 2-3),

    D maximises L_S + L_C,   G maximises L_C - L_S,

that is, both lower the cross-entropy of the class on the samples they see: D on real and fake, G
on its fakes. `class_weight` scales L_C (the paper: 1). AC-GAN's known failure is collapse *within*
a class: the classifier term rewards samples that are easy to classify, not varied ones (the
paper's own MS-SSIM study found classes whose samples are less varied than the data's).

D called with x alone gives the adversarial score (heatmaps, the critic gap). The shared conditional
machinery (labels, G(z, c), sampling) is remedies/conditional.py.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.remedies.base import require_feature_split, unwrap
from ganlab.remedies.conditional import Conditional


class AuxiliaryClassifierD(nn.Module):
    def __init__(self, inner: nn.Module, n_classes: int):
        super().__init__()
        core = require_feature_split(inner, "acgan")
        self.inner = inner
        self.classifier = nn.Linear(core.feature_dim, n_classes)

    @property
    def in_shape(self):
        return self.inner.in_shape

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x).flatten(1)

    def scores_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The real/fake scores and the class logits, in one pass of D's trunk."""
        phi = self.features(x)
        return self.inner.head(phi).reshape(-1), self.classifier(phi)

    def forward(self, x: Tensor) -> Tensor:
        return self.scores_and_logits(x)[0]


def scores_and_logits(D: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    core, x = unwrap(D, x)  # under instance noise: noise first
    return core.scores_and_logits(x)


class ACGAN(Conditional):
    key = "acgan"

    def __init__(self, class_weight: float = 1.0):
        super().__init__()
        if not class_weight >= 0:
            raise ConfigError(f"remedy.acgan.class_weight must be >= 0, got {class_weight}")
        self.class_weight = class_weight

    def conditional_d(self, D, make):
        return AuxiliaryClassifierD(D, self.n_classes)

    def d_loss(self, G, D, loss, real, z):
        classes = self.classes_for(real)
        fake = self.fakes(G, z, classes).detach()
        s_real, l_real = scores_and_logits(D, real)
        s_fake, l_fake = scores_and_logits(D, fake)
        value = loss.d_loss(s_real, s_fake) + self.class_weight * (
            F.cross_entropy(l_real, classes) + F.cross_entropy(l_fake, classes))
        penalty = loss.penalty(D, real, fake)  # on the adversarial score
        return value if penalty is None else value + penalty

    def g_loss(self, G, D, loss, real, z):
        classes = self.classes_for(real)
        s_fake, l_fake = scores_and_logits(D, self.fakes(G, z, classes))
        return loss.g_loss(s_fake) + self.class_weight * F.cross_entropy(l_fake, classes)

    def eval_metrics(self, G, D, data, z, fake, real):
        """Besides the class fidelity (2-D): how often D's classifier names the class of real samples
        (aux_accuracy_real_pct): whether the auxiliary task is learnt at all."""
        metrics = super().eval_metrics(G, D, data, z, fake, real)
        n = min(len(real), 1000)
        _, logits = scores_and_logits(D, real[:n])
        if hasattr(data, "centers"):  # the true classes of 2-D points: their nearest mode
            truth = (real[:n].flatten(1).float()[:, None] - data.centers.float()).norm(dim=2).argmin(dim=1)
            metrics["aux_accuracy_real_pct"] = 100.0 * float((logits.argmax(dim=1) == truth).float().mean())
        return metrics
