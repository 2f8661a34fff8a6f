"""Benchmark: image GAN training speed under each speed switch, ganlab's loop against a bare PyTorch
loop with the same networks and the same switch, in one process.

For every setting (none, cudnn_benchmark, channels_last, amp=bf16, compile, all of them) it prints
images per second (generated + real images through G and D steps: batch x steps / seconds, the D and
G step of one iteration counted once), for ganlab's `run` and for the bare loop, and their ratio.
ganlab's figure includes its hooks, log ticks, start-up and final checkpoint (not its one small
evaluation, whose time is subtracted); the bare loop does only the steps, after a warm-up. Then it times one evaluation at the protocol's sample count (26,000 for Stacked MNIST).

    python scripts/bench_images.py [--steps 200] [--settings none,amp,...] [--eval-samples 26000] [overrides...]

Defaults: DCGAN on Stacked Fashion-MNIST, NS-GAN, batch 64, on CUDA when present. The mode
classifier must be trained first (`ganlab classifier dataset=fashion_mnist`).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ganlab.config import compose_config, resolve_device
from ganlab.evaluation import make_evaluator
from ganlab.gan import build, seed_everything
from ganlab.speed import Speed
from ganlab.step import one_step
from ganlab.train import run

SETTINGS = {
    "none": ["speed.cudnn_benchmark=false"],
    "cudnn_benchmark": ["speed.cudnn_benchmark=true"],
    "channels_last": ["speed.cudnn_benchmark=false", "speed.channels_last=true"],
    "amp": ["speed.cudnn_benchmark=false", "speed.amp=bf16"],
    "compile": ["speed.cudnn_benchmark=false", "speed.compile=true"],
    "all": ["speed.cudnn_benchmark=true", "speed.channels_last=true", "speed.amp=bf16", "speed.compile=true"],
}
DEFAULTS = ["dataset=stacked_fashion_mnist", "model=dcgan", "loss=nsgan", "remedy=none", "batch_size=64",
            "cpu_threads=0", "metrics.inception=false"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg, steps: int, warmup: int) -> float:
    """The same step written plainly, with the same switches; images per second."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    exp = build(cfg, device)
    speed = Speed(cfg.speed, device)
    speed.prepare(exp.G, exp.D)
    n = cfg.batch_size

    def step():  # the training loop's own phases (ganlab.train), under the speed switches
        one_step(exp, n, speed)

    for _ in range(warmup):  # compilation and cuDNN's algorithm search happen here, as in ganlab's first steps
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return n * steps / (time.perf_counter() - start)


def ganlab_loop(cfg) -> float:
    """`run` as `ganlab train` does it (hooks, log ticks, checkpoint), images per second; the one small
    evaluation at the end is taken out by its own measured time (evaluation is timed separately)."""
    with tempfile.TemporaryDirectory() as run_dir:
        summary = run(cfg, run_dir, progress=False)
    seconds = summary["step"] / summary["steps_per_second"] - summary["metrics"]["eval_seconds"]
    return cfg.batch_size * summary["step"] / seconds


def evaluation_seconds(cfg, samples: int) -> float:
    device = resolve_device(cfg.device)
    exp = build(cfg, device)
    evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, device, cfg.metrics)
    rng = torch.Generator(device).manual_seed(0)
    evaluator.evaluate(exp.G, exp.D, exp.remedy, rng, n=samples)  # the first one also computes the real reference
    _sync(device)
    start = time.perf_counter()
    evaluator.evaluate(exp.G, exp.D, exp.remedy, rng, n=samples)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="bare-loop steps before the clock starts")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--eval-samples", type=int, default=26000, help="0: skip the evaluation timing")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for `ganlab train`")
    args = ap.parse_args()
    rows = []
    for name in args.settings.split(","):
        if name not in SETTINGS:
            ap.error(f"unknown setting {name}; choose from {', '.join(SETTINGS)}")
        overrides = [*DEFAULTS, f"steps={args.steps}", f"eval.every={args.steps}", f"log.every={max(args.steps // 4, 1)}",
                     "eval.samples=256", "eval.w_samples=256", "eval.background=false", "metrics.prdc_samples=256",
                     "metrics.kid_subsets=10", "metrics.kid_subset_size=100", *SETTINGS[name], *args.overrides]
        cfg = compose_config(overrides)
        bare = bare_loop(cfg, args.steps, args.warmup)
        ours = ganlab_loop(cfg)
        rows.append((name, ours, bare))
        print(f"{name:>16}: ganlab {ours:9.1f} img/s   bare {bare:9.1f} img/s   ratio {ours / bare:.3f}", flush=True)
    device = resolve_device(cfg.device)
    print(f"\ndevice {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
          f"{cfg.model.g._target_.rsplit('.', 2)[-2]} on {cfg.dataset._target_.rsplit('.', 1)[-1]}, batch {cfg.batch_size}, "
          f"{args.steps} steps; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| setting | ganlab img/s | bare img/s | ratio |\n|---|---|---|---|")
    for name, ours, bare in rows:
        print(f"| {name} | {ours:.1f} | {bare:.1f} | {ours / bare:.3f} |")
    if args.eval_samples:
        # The evaluation at the protocol's settings (the loops above used a tiny one).
        cfg = compose_config([*DEFAULTS, *args.overrides])
        seconds = evaluation_seconds(cfg, args.eval_samples)
        print(f"\none evaluation of {args.eval_samples} samples (classifier labels and features, domain FID, KID on "
              f"{cfg.metrics.kid_subsets} subsets, PRDC on {cfg.metrics.prdc_samples}, SWD; the real reference "
              f"already computed): {seconds:.1f} s")


if __name__ == "__main__":
    main()
