"""Benchmark: ganlab's training loop against a bare PyTorch loop with identical networks.

Both train the default experiment (NS-GAN on the ring, the default MLPs, batch and optimizers) for
the same number of steps, in this one process. ganlab runs at its default eval and log cadence, so
its figure includes evaluation, logging and pictures; the bare loop does only the steps.
Prints steps per second for each and the ratio (target: >= 0.95).

    python scripts/bench_loop.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from ganlab.config import CONFIG_DIR, CONFIG_NAME, resolve_device
from ganlab.train import build, run, seed_everything


def bare_loop(cfg, steps: int) -> float:
    """The same step written plainly: no hooks, no logging, no evaluation. Returns steps/s."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.cpu_threads)
    exp = build(cfg, device)
    G, D, data, g_opt, d_opt = exp.G, exp.D, exp.data, exp.g_opt, exp.d_opt
    n, zdim = cfg.batch_size, exp.latent_dim
    start = time.perf_counter()
    for _ in range(steps):
        real = data.sample(n)
        fake = G(torch.randn(n, zdim, device=device)).detach()
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        g_loss = F.softplus(-D(G(torch.randn(n, zdim, device=device)))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
    float(g_loss)  # wait for the device before stopping the clock
    return steps / (time.perf_counter() - start)


def ganlab_loop(cfg, steps: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        summary = run(cfg, run_dir)
    return summary["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for `ganlab train`")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=[f"steps={args.steps}", *args.overrides])
    if cfg.loss._target_ != "ganlab.losses.NonSaturatingGAN" or cfg.remedy._target_ != "ganlab.remedies.none.NoRemedy":
        parser.error("the bare loop is NS-GAN without a remedy; keep loss and remedy at their defaults")
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine speed hits both alike
        bare.append(bare_loop(cfg, args.steps))
        ours.append(ganlab_loop(cfg, args.steps))
    b, g = statistics.median(bare), statistics.median(ours)
    print(f"device {resolve_device(cfg.device)}, {args.steps} steps, eval every {cfg.eval.every}, "
          f"log every {cfg.log.every}, {args.repeats} repeats (median)")
    print(f"bare PyTorch loop : {b:8.1f} steps/s   runs: {', '.join(f'{x:.1f}' for x in bare)}")
    print(f"ganlab loop       : {g:8.1f} steps/s   runs: {', '.join(f'{x:.1f}' for x in ours)}")
    print(f"ratio ganlab/bare : {g / b:8.3f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
