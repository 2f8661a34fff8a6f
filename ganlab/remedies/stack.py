"""Several remedies as one: `remedy=[pacgan,spectral_norm]`.

Each selected remedy config lands under its own key (`remedy.pacgan`, `remedy.spectral_norm`), so
`cfg.remedy` maps names to remedy objects. A stack chains the hooks every remedy may add to (check,
adapt_loss, build, extra_networks, prepare, begin_step, before_eval, eval_metrics) and delegates
each step hook to the one remedy that replaces it; two remedies replacing the same step hook are
refused at start-up, and each remedy may refuse its partners (`check_partners`).
"""

from __future__ import annotations

from ganlab.errors import ConfigError
from ganlab.remedies.base import EXCLUSIVE_HOOKS, Remedy

_HOOK_MEANING = {"real_batch": "how real batches are drawn", "d_loss": "the D step", "g_loss": "the G step", "sample": "how samples are drawn",
                 "d_map": "how D scores single points", "sample_sources": "which generator made a sample"}


class RemedyStack(Remedy):
    def __init__(self, remedies: dict[str, Remedy]):
        self.remedies = dict(remedies)
        self._owner: dict[str, Remedy] = {}
        for hook in EXCLUSIVE_HOOKS:
            owners = [name for name, r in self.remedies.items() if r.overrides(hook)]
            if len(owners) > 1:
                raise ConfigError(f"remedy={list(self.remedies)}: {' and '.join(owners)} both replace "
                                  f"{_HOOK_MEANING[hook]}, so they cannot be combined; drop one")
            if owners:
                self._owner[hook] = self.remedies[owners[0]]
        for name, remedy in self.remedies.items():
            remedy.check_partners({n: r for n, r in self.remedies.items() if n != name})
        self.g_loss_needs_d_gradients = any(r.g_loss_needs_d_gradients for r in self.remedies.values())
        self.uses = tuple(dict.fromkeys(u for r in self.remedies.values() for u in r.uses))
        # Bind each step hook once, so that a step costs one call, not a lookup per remedy.
        for hook, remedy in self._owner.items():
            setattr(self, hook, getattr(remedy, hook))

    @property
    def name(self) -> str:
        return "+".join(self.remedies)

    def check(self, loss, batch_size):
        for remedy in self.remedies.values():
            remedy.check(loss, batch_size)

    def adapt_loss(self, loss):
        for remedy in self.remedies.values():
            loss = remedy.adapt_loss(loss)
        return loss

    def build(self, G, D, make):
        for remedy in sorted(self.remedies.values(), key=lambda r: r.build_order):
            G, D = remedy.build(G, D, make)
        return G, D

    def extra_networks(self):
        # Prefixed by the remedy's name: two remedies may both call their network "encoder".
        return {f"{name}.{key}": value for name, remedy in self.remedies.items()
                for key, value in remedy.extra_networks().items()}

    def prepare(self, g_opt, d_opt, steps):
        for remedy in self.remedies.values():
            remedy.prepare(g_opt, d_opt, steps)

    def begin_step(self, step):
        for remedy in self.remedies.values():
            remedy.begin_step(step)

    def before_eval(self, G, D, data, generator):
        for remedy in self.remedies.values():
            remedy.before_eval(G, D, data, generator)

    def eval_metrics(self, G, D, data, z, fake, real):
        return {key: value for remedy in self.remedies.values()
                for key, value in remedy.eval_metrics(G, D, data, z, fake, real).items()}


def combine(remedies: dict[str, Remedy]) -> Remedy:
    """One remedy object for the loop: the remedy itself when only one is chosen."""
    if not remedies:
        raise ConfigError("remedy: choose at least one remedy (remedy=none for the plain GAN)")
    if len(remedies) == 1:
        return next(iter(remedies.values()))
    return RemedyStack(remedies)
