"""Conditional GAN with a projection discriminator (Miyato & Koyama, "cGANs with Projection
Discriminator", ICLR 2018): G(z, y) makes a sample of class y, and D scores a sample at its class,

    D(x, y) = psi(phi(x)) + embed(y) . phi(x),

phi the model D's features, psi its head, embed a learned vector per class (the paper's eq. 3: the
inner product with a class embedding, instead of concatenating y to the input or the features).
On the 2-D mixtures the class is the mode, so a G that follows its labels covers every mode: the
remedy shows what labels buy, not what an unsupervised G can do (the issue's "ways to raise diversity").

Called with x alone (heatmaps, the critic gap), D gives the score at the class that suits x best,
max_y D(x, y). The shared conditional machinery (labels, G(z, y), sampling) is remedies/conditional.py.
"""

from __future__ import annotations

from torch import Tensor, nn

from ganlab.remedies.base import require_feature_split
from ganlab.remedies.conditional import AtClasses, Conditional, scores_at


class ProjectionDiscriminator(nn.Module):
    def __init__(self, inner: nn.Module, n_classes: int):
        super().__init__()
        core = require_feature_split(inner, "cgan_projection")
        self.inner = inner
        self.embed = nn.Embedding(n_classes, core.feature_dim)
        # The paper's code initialises the embedding Xavier-uniform; the projection starts small.
        nn.init.xavier_uniform_(self.embed.weight)

    @property
    def in_shape(self):
        return self.inner.in_shape

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x).flatten(1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        phi = self.features(x)
        unconditional = self.inner.head(phi).reshape(-1)
        if y is None:  # the best class's score: what D says of x whatever its label
            return unconditional + (phi @ self.embed.weight.T).amax(dim=1)
        return unconditional + (self.embed(y) * phi).sum(dim=1)


class ProjectionCGAN(Conditional):
    key = "cgan_projection"

    def conditional_d(self, D, make):
        return ProjectionDiscriminator(D, self.n_classes)

    def d_loss(self, G, D, loss, real, z):
        classes = self.classes_for(real)
        fake = self.fakes(G, z, classes).detach()  # D's step must not push gradients into G
        value = loss.d_loss(scores_at(D, real, classes), scores_at(D, fake, classes))
        penalty = loss.penalty(AtClasses(D, classes), real, fake)  # same-class rows: see conditional.py
        return value if penalty is None else value + penalty

    def g_loss(self, G, D, loss, real, z):
        classes = self.classes_for(real)
        return loss.g_loss(scores_at(D, self.fakes(G, z, classes), classes))
