"""No remedy: every hook keeps the plain GAN step of the chosen loss."""

from ganlab.remedies.base import Remedy


class NoRemedy(Remedy):
    pass
