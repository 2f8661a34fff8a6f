"""Benchmark: ganlab's whole run against a bare PyTorch loop with identical networks.

Both train the default experiment (NS-GAN on the ring, the default MLPs, batch and optimizer settings;
10,000 steps) in this one process. ganlab's figure is the whole `run()` by the wall clock: start-up (build,
reference rows), every evaluation, log tick, picture and checkpoint at the default cadence, the final
wait for the worker, samples and summary, on the run's own threads (cpu_threads=auto unless given: the
cores less one for the evaluation worker, ganlab/threads.py). The
bare loop's is its steps alone, timed three times: with the config's optimizers as a user writes them
(torch.optim.Adam(params, lr, betas): torch's default implementation) at torch's default thread count (what a
user's loop gets: the target's anchor) and at one thread (what each job of a sweep of one job per core trains
on); and with ganlab's own optimizers (fused Adam) on ganlab's thread count, the same arithmetic as ganlab's
run, which shows what ganlab's bookkeeping costs apart from what its optimizer kernel gains. Prints
steps per second for each, the ratio (target: >= 0.95 of the default-threads loop), the same by this
process's CPU time (the evaluation worker's is another process's), the figure the run records itself
(from its first step to the worker's close), and the load average (an idle machine is the condition of
the target).

    python scripts/bench_loop.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ganlab import threads
from ganlab.config import compose_config, resolve_device
from ganlab.gan import build, seed_everything
from ganlab.train import run


# torch's own thread count, read before anything here sets another: what a plainly written loop trains on
DEFAULT_THREADS = torch.get_num_threads()


def plain_optimizer(node, params) -> torch.optim.Optimizer:
    """The config's optimizer as a user writes it: its class, learning rate and betas, torch's default
    implementation (ganlab's configs ask for the fused kernel: `fused: true`)."""
    return instantiate(OmegaConf.merge(node, {"fused": None}) if "fused" in node else node)(params)


def bare_loop(cfg, steps: int, threads: int, ganlab_optimizers: bool = False) -> tuple[float, float]:
    """The same step written plainly: no hooks, no logging, no evaluation, on `threads` intra-op threads,
    with the config's optimizers as a user writes them (torch's default implementation), or ganlab's own
    (`ganlab_optimizers`: fused Adam, the same arithmetic as ganlab's run). Returns steps per wall-clock second
    and per CPU second of this process."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    torch.set_num_threads(threads)
    exp = build(cfg, device)
    G, D, data = exp.G, exp.D, exp.data
    g_opt, d_opt = ((exp.g_opt, exp.d_opt) if ganlab_optimizers
                    else (plain_optimizer(cfg.optim.g, G.parameters()), plain_optimizer(cfg.optim.d, D.parameters())))
    n, zdim = cfg.batch_size, exp.latent_dim
    start, cpu_start = time.perf_counter(), time.process_time()
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
    g_loss.item()  # wait for the device before stopping the clock
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu_start)


def ganlab_loop(cfg, steps: int) -> tuple[float, float, float]:
    """The whole run, as `ganlab train` does it: steps per second of the whole run() by the wall clock
    and by this process's CPU time, and the run's own figure (summary.json's: from its first step to
    the worker's close, so without start-up and the final samples and checkpoint)."""
    with tempfile.TemporaryDirectory() as run_dir:
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = run(cfg, run_dir)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return steps / wall, steps / cpu, summary["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="default: the config's steps (the default run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for `ganlab train`")
    args = parser.parse_args()
    cfg = compose_config([*([f"steps={args.steps}"] if args.steps else []), *args.overrides])
    args.steps = cfg.steps
    if cfg.loss._target_ != "ganlab.losses.NonSaturatingGAN" or list(cfg.remedy) != ["none"]:
        parser.error("the bare loop is NS-GAN without a remedy; keep loss and remedy at their defaults")
    # name -> (threads, ganlab's optimizers): the loop a user writes, at torch's default threads (the target's
    # anchor) and at one; and at ganlab's thread count with ganlab's optimizers, the same arithmetic as ganlab's
    # run, so that the cost of ganlab's bookkeeping shows apart from what its optimizer kernel gains.
    ours = threads.count(cfg.cpu_threads, worker=cfg.eval.background)
    anchors = {f"bare PyTorch loop, torch's default {DEFAULT_THREADS} thread(s)": (DEFAULT_THREADS, False),
               "bare PyTorch loop, 1 thread": (1, False),
               f"bare loop, {ours} thread(s), ganlab's optimizers": (ours, True)}
    names = [*anchors, "ganlab whole run"]
    figures: dict[str, list] = {name: [] for name in names}
    for i in range(args.repeats):
        # Interleaved, each repeat in another order (rotated): drift in the machine's speed and whatever the
        # previous loop leaves behind (allocator state, caches, threads) hit every loop alike.
        for name in names[i % len(names):] + names[:i % len(names)]:
            figures[name].append(ganlab_loop(cfg, args.steps) if name == names[-1]
                                 else bare_loop(cfg, args.steps, *anchors[name]))
    load = os.getloadavg()
    print(f"device {resolve_device(cfg.device)}, {args.steps} steps, eval every {cfg.eval.every}, "
          f"log every {cfg.log.every}, ganlab on cpu_threads={cfg.cpu_threads} ({ours} "
          f"thread(s)), {args.repeats} interleaved repeats (median); load average at the end "
          f"{load[0]:.2f} (1 min) {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs")
    anchor = names[0]
    for i, clock in enumerate(("wall-clock", "CPU-time")):
        medians = {name: statistics.median(r[i] for r in figures[name]) for name in names}
        print(f"{clock} steps/s:")
        for name in names:
            print(f"  {name:<45} {medians[name]:7.1f} ({', '.join(f'{r[i]:.1f}' for r in figures[name])})")
        run = medians[names[-1]]
        print(f"  ratio ganlab/bare: {run / medians[anchor]:.3f} against the default-threads loop"
              + ("   (target >= 0.95)" if i == 0 else "") + f", {run / medians[names[1]]:.3f} against one thread, "
              f"{run / medians[names[2]]:.3f} against the loop with ganlab's threads and optimizers")
    loop_only = statistics.median(r[2] for r in figures[names[-1]])
    print(f"ganlab's own figure (summary.json's steps_per_second: no start-up, no final samples and checkpoint): "
          f"{loop_only:.1f} ({', '.join(f'{r[2]:.1f}' for r in figures[names[-1]])}); ratio "
          f"{loop_only / statistics.median(r[0] for r in figures[anchor]):.3f} against the default-threads loop")


if __name__ == "__main__":
    main()
