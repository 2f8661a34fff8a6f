"""Will the run fit in memory? An estimate made at start-up, before any run directory is written.

`batch_size=100000000` or `eval.samples=1000000000` would otherwise be accepted and fail minutes
later (or at the first evaluation) with an allocator traceback. The estimate runs one D step and one
G forward on a few samples with hooks that add up every layer's output: what autograd keeps for the
backward pass, per sample. It is an estimate (within a small factor), which is enough to refuse
sizes that are orders of magnitude beyond the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ganlab.errors import ConfigError

PROBE = 12  # samples in the probe batch: a multiple of every pack size and generator count we ship


@dataclass
class Estimate:
    train_bytes: int   # one training step at batch_size
    eval_bytes: int    # one evaluation's largest forward pass
    available: int     # free memory on the device the run will use


def _output_bytes(modules: list[nn.Module], call, peak: bool = False) -> int:
    """Bytes of every leaf module's outputs while `call()` runs: their sum (what autograd keeps for
    the backward pass), or with `peak` twice the largest (without autograd, a layer's input and
    output are all that is alive at once)."""
    total = largest = 0

    def hook(module, inputs, output):
        nonlocal total, largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
                largest = max(largest, t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for net in modules for m in net.modules()
               if not list(m.children())]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return 2 * largest if peak else total


def available_bytes(device: torch.device) -> int:
    """Free memory now: the GPU's for CUDA, MemAvailable (Linux) or the physical total elsewhere."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate(exp, cfg, device: torch.device) -> Estimate | None:
    """Per-sample memory of one D step (G forward, D on real and fake) times the batch, and of G's
    forward times the evaluation's batch. None when the probe cannot run (a remedy that needs more
    samples than the probe has): then nothing is refused."""
    G, D, remedy = exp.G, exp.D, exp.remedy
    real = torch.randn(PROBE, *exp.data.shape)  # not data.sample: image datasets load their files lazily
    z = torch.randn(PROBE, exp.latent_dim)
    try:
        train = _output_bytes([G, D], lambda: remedy.d_loss(G, D, exp.loss, real, z))
        with torch.no_grad():
            generate = _output_bytes([G], lambda: G(z), peak=True)
    except Exception:  # noqa: BLE001 - an estimate only: the run itself will say what is wrong
        return None
    finally:
        for net in (G, D):
            net.zero_grad(set_to_none=True)
    # A 2-D evaluation generates all eval.samples at once; an image evaluation in eval.batch chunks.
    eval_n = cfg.eval.samples if len(exp.data.shape) == 1 else min(cfg.eval.batch, cfg.eval.samples)
    return Estimate(train_bytes=train * cfg.batch_size // PROBE, eval_bytes=generate * eval_n // PROBE,
                    available=available_bytes(device))


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_fits(exp, cfg, device: torch.device) -> None:
    """Refuse, in one line naming the key, sizes whose estimate exceeds the free memory."""
    est = estimate(exp, cfg, device)
    if est is None:
        return
    where = "GPU memory" if device.type == "cuda" else "memory"
    if est.train_bytes > est.available:
        raise ConfigError(f"batch_size={cfg.batch_size} needs about {_gb(est.train_bytes)} of {where} per training "
                          f"step, and {_gb(est.available)} is free; lower batch_size")
    if est.eval_bytes > est.available:
        key = "eval.samples" if len(exp.data.shape) == 1 else "eval.batch"
        raise ConfigError(f"{key}={cfg.eval.samples if key == 'eval.samples' else cfg.eval.batch} needs about "
                          f"{_gb(est.eval_bytes)} of {where} per evaluation, and {_gb(est.available)} is free; "
                          f"lower {key}")
