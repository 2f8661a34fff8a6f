"""PacGAN (Lin et al. 2018): D judges m samples at once, concatenated, for real and fake alike.

A packed D sees m independent samples side by side, so a G whose samples all look alike is easy to
spot. D is rebuilt from the model config with an m-times wider input (channels for images).
"""

from __future__ import annotations

from torch import Tensor

from ganlab.errors import ConfigError
from ganlab.remedies.base import InputTransform, Remedy


class PackedDiscriminator(InputTransform):
    def __init__(self, inner, m: int):
        super().__init__(inner)
        self.m = m

    @property
    def samples_per_score(self) -> int:  # gradient penalties take norms over whole packs
        return self.m * super().samples_per_score

    def transform(self, x: Tensor) -> Tensor:
        # Consecutive samples form a pack. Training batches are checked to divide by m; an
        # evaluation batch of any size drops its last n mod m samples.
        n = x.shape[0] - x.shape[0] % self.m
        return x[:n].reshape(n // self.m, self.m * x.shape[1], *x.shape[2:])


class PacGAN(Remedy):
    build_order = 10  # D's input changes first; head changes and rewraps apply to the packed D

    def __init__(self, m: int = 2):
        if m < 2:
            raise ConfigError(f"pack size m must be >= 2 (the paper uses 2, 3, 4), got {m}")
        self.m = m

    def check(self, loss, batch_size):
        if batch_size % self.m:
            # The multiple below, unless that is 0 (m > batch_size): then m itself, one pack.
            fit = batch_size - batch_size % self.m or self.m
            raise ConfigError(f"remedy.pacgan.m={self.m} must divide batch_size={batch_size} "
                              f"(D sees batch_size/m packs); e.g. batch_size={fit}")

    def build(self, G, D, make):
        shape = _in_shape(D)
        return G, PackedDiscriminator(make.D((shape[0] * self.m, *shape[1:])), self.m)

    def d_map(self, D, points):
        # D's score of a pack of m copies of the point: what D says to a perfectly collapsed G there.
        return D(points.repeat_interleave(self.m, dim=0))


def _in_shape(D) -> tuple[int, ...]:
    shape = getattr(D, "in_shape", None)
    if shape is None:
        raise ConfigError(f"remedy pacgan needs the discriminator's `in_shape`; {type(D).__name__} has none")
    return shape
