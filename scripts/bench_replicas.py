"""Benchmark: replicas=N (N seeds in one process, one vectorised step) against N sequential runs.

Both train the same config (the default experiment unless overridden) for the same steps, through
`ganlab.train.run` as `ganlab train` does, with one small evaluation at the end, so the figure is
the training loop's. Prints seed-steps per second (N x steps / wall seconds, set-up included) for
each N, the sequential runs' figure and the ratio (CPU target: >= 1.25 at N = 8), on the CPU and,
when CUDA is present, on the GPU. One sequence of max(N) sequential runs gives every N's sequential
figure (the time of its first N runs). Repeats are interleaved in alternating order; medians are
reported, with the machine's load average before and after: a busy machine's figures are not final.

A second table times the step alone, with no loop, evaluation or logging around it: N experiments
stepped one after another (`ganlab.step.one_step`) against one vectorised `Replicas.train_step` over the
same N. It is the ceiling of what vectorising can give on the device: where the step's arithmetic,
not Python, is most of its time (small MLPs on one CPU core), batching the N replicas' matrix
products saves little, whatever the loop around it does.

    python scripts/bench_replicas.py [--steps 400] [--repeats 3] [--sizes 1,8,32] [--devices cpu,cuda] [overrides...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganlab import replicas as replica_group
from ganlab.config import compose_config
from ganlab.gan import build, seed_everything
from ganlab.speed import Speed
from ganlab.step import one_step, take_step
from ganlab.train import run


def config(overrides: list[str], steps: int, device: str, **keys):
    return compose_config([f"steps={steps}", f"eval.every={steps}", "eval.samples=200", "eval.w_samples=100",
                           "eval.background=false", f"checkpoint.every={steps}", f"device={device}", *overrides,
                           *(f"{k}={v}" for k, v in keys.items())])


def timed_replicas(overrides, steps: int, device: str, n: int, out: Path) -> float:
    """Seed-steps per second of one replicas=n run."""
    cfg = config(overrides, steps, device, replicas=n)
    start = time.perf_counter()
    run(cfg, out / f"replicas_{n}_{time.monotonic_ns()}", progress=False)
    return n * steps / (time.perf_counter() - start)


def timed_sequence(overrides, steps: int, device: str, sizes: list[int], out: Path) -> dict[int, float]:
    """Seed-steps per second of max(sizes) runs one after the other, seeds 0, 1, ...: for each n in
    sizes, over the first n runs."""
    elapsed, done = 0.0, {}
    for seed in range(max(sizes)):
        cfg = config(overrides, steps, device, seed=seed)
        start = time.perf_counter()
        run(cfg, out / f"sequential_{seed}_{time.monotonic_ns()}", progress=False)
        elapsed += time.perf_counter() - start
        if seed + 1 in sizes:
            done[seed + 1] = (seed + 1) * steps / elapsed
    return done


def step_ceiling(overrides, device: str, n: int, steps: int, first_vectorised: bool = True) -> tuple[float, float]:
    """Seed-steps per second of the step alone: one vectorised step over n replicas, and n separate
    experiments stepped one after another (each n_critic D steps, then a G step)."""
    cfg = config(overrides, steps, device)
    exps, streams = [], []
    for k in range(n):
        seed_everything(cfg.seed + k)
        exps.append(build(cfg, torch.device(device)))
        streams.append(replica_group.training_stream(torch.device(device)))
    speed = Speed(cfg.speed, torch.device(device))
    group = replica_group.Replicas(exps, streams, cfg.batch_size, torch.device(device), speed)

    def vectorised():
        for _ in range(steps):
            losses = take_step(group, log_now=False).g_loss
        return losses

    def one_by_one():
        for _ in range(steps):
            for exp in exps:
                loss = one_step(exp, cfg.batch_size, speed)
        return loss

    figures = {}
    for fn in (vectorised, one_by_one) if first_vectorised else (one_by_one, vectorised):
        fn()  # warm-up
        start = time.perf_counter()
        fn().sum().item()  # waits for the device
        figures[fn] = n * steps / (time.perf_counter() - start)
    return figures[vectorised], figures[one_by_one]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,8,32", help="comma-separated N")
    parser.add_argument("--ceiling-steps", type=int, default=50, help="steps per timing of the step alone")
    parser.add_argument("--devices", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for `ganlab train`")
    args = parser.parse_args()
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    devices = args.devices.split(",") if args.devices else ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    load_before = os.getloadavg()
    rows, ceilings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            replicas: dict[int, list[float]] = {n: [] for n in sizes}
            sequential: dict[int, list[float]] = {n: [] for n in sizes}
            # Warm-up, untimed: the first run in a process pays for lazy imports and first kernels.
            timed_replicas(args.overrides, 10, device, 2, Path(tmp))
            timed_sequence(args.overrides, 10, device, [1], Path(tmp))
            for repeat in range(args.repeats):
                # Interleaved, in alternating order: drift in the machine's speed hits both alike.
                order = ["sequence", *sizes] if repeat % 2 == 0 else [*sizes[::-1], "sequence"]
                for item in order:
                    if item == "sequence":
                        for n, value in timed_sequence(args.overrides, args.steps, device, sizes, Path(tmp)).items():
                            sequential[n].append(value)
                    else:
                        replicas[item].append(timed_replicas(args.overrides, args.steps, device, item, Path(tmp)))
            rows += [(device, n, replicas[n], sequential[n]) for n in sizes]
            for n in sizes:
                if n > 1:
                    # In alternating order, as above.
                    ceilings.append((device, n, [step_ceiling(args.overrides, device, n, args.ceiling_steps, r % 2 == 0)
                                                 for r in range(args.repeats)]))
    load_after = os.getloadavg()
    print(f"{args.steps} steps per seed, {args.repeats} repeats (median), overrides: {' '.join(args.overrides) or 'none'}; "
          f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} on {os.cpu_count()} cores")
    for device, n, ours, theirs in rows:
        r, s = statistics.median(ours), statistics.median(theirs)
        target = "   (target >= 1.25)" if device == "cpu" and n == 8 else ""
        print(f"{device:4s} N={n:3d}: replicas {r:8.1f} seed-steps/s ({', '.join(f'{v:.1f}' for v in ours)}), "
              f"{n} sequential runs {s:8.1f} ({', '.join(f'{v:.1f}' for v in theirs)}); ratio {r / s:.2f}{target}")
    print("The step alone (no loop, evaluation or logging), seed-steps/s:")
    for device, n, pairs in ceilings:
        v, o = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        print(f"{device:4s} N={n:3d}: one vectorised step {v:8.1f} ({', '.join(f'{p[0]:.1f}' for p in pairs)}), "
              f"{n} experiments one by one {o:8.1f} ({', '.join(f'{p[1]:.1f}' for p in pairs)}); ratio {v / o:.2f}")


if __name__ == "__main__":
    main()
