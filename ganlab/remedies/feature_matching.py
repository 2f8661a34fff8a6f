"""Feature matching (Salimans et al. 2016, §3.1): G no longer tries to fool D; it matches the mean
of D's intermediate features on real data, ||E f(x) - E f(G(z))||^2, with f D's last hidden layer.
D trains as usual."""

from __future__ import annotations

from ganlab.remedies.base import Remedy, require_feature_split


class FeatureMatching(Remedy):
    def build(self, G, D, make):
        require_feature_split(D, "feature_matching")
        return G, D

    def g_loss(self, G, D, loss, real, z):
        target = D.features(real).mean(dim=0).detach()  # D's features are a fixed target for G
        return (D.features(G(z)).mean(dim=0) - target).pow(2).sum()
