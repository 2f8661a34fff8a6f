"""Benchmark: torch threads for one run, and joblib jobs x threads for a sweep, on this machine.

Part 1, one process: the training step (ganlab.train's one_step on the built experiment)
with 1 and with 2 torch threads, in interleaved repeats, for the 2-D default (NS-GAN on the ring,
the default MLPs and batch) and for DCGAN (experiment=stacked_setup: the Stacked Fashion-MNIST
networks, batch 64). Prints the median steps per second of each and the ratio 2 threads / 1.

Part 2, sweeps: a multirun of R seeds through `ganlab train -m hydra/launcher=joblib`, once per
jobs x threads setting (hydra.launcher.n_jobs x cpu_threads), in interleaved repeats, each at the
default eval cadence with its evaluation worker. Prints the median wall time of the whole sweep,
runs per minute and the speed against the fastest setting. The load average is printed with each
part: the figures mean something on an otherwise idle machine only.

    python scripts/bench_threads.py [--part steps,sweep] [--models toy,dcgan] [--steps 300]
        [--grid 1x1,1x2,2x1,2x2] [--runs 4] [--sweep-steps 2000] [--repeats 3]
        [--toy OVERRIDES] [--dcgan OVERRIDES] [--sweep OVERRIDES]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganlab.config import compose_config
from ganlab.gan import build, seed_everything
from ganlab.step import one_step

MODELS = {"toy": [], "dcgan": ["experiment=stacked_setup"]}
GANLAB = [sys.executable, "-m", "ganlab.cli"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def steps_per_second(cfg, threads: int, steps: int) -> float:
    """The training steps alone, on the CPU with `threads` torch threads, after a few warm-up steps."""
    torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    exp = build(cfg, torch.device("cpu"))
    n = cfg.batch_size

    def step():
        return one_step(exp, n)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return steps / (time.perf_counter() - start)


def bench_steps(models: dict[str, list[str]], steps: int, repeats: int) -> None:
    print(f"== one run: steps/s of the training step by torch threads, {steps} steps, {repeats} interleaved repeats")
    for name, overrides in models.items():
        cfg = compose_config(overrides)
        times: dict[int, list[float]] = {1: [], 2: []}
        for i in range(repeats):
            for threads in (1, 2) if i % 2 == 0 else (2, 1):  # alternating order: drift hits both alike
                times[threads].append(steps_per_second(cfg, threads, steps))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"{name:6s} 1 thread {one:7.1f} steps/s ({', '.join(f'{t:.1f}' for t in times[1])})  "
              f"2 threads {two:7.1f} ({', '.join(f'{t:.1f}' for t in times[2])})  ratio 2/1 {two / one:.2f}")
    print(load())


def sweep_seconds(jobs: int, threads: int, runs: int, steps: int, overrides: list[str], out: Path) -> float:
    """The wall time of one multirun of `runs` seeds, `jobs` at a time, `threads` torch threads each."""
    command = [*GANLAB, "train", "-m", f"seed={','.join(map(str, range(runs)))}", f"steps={steps}",
               "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"cpu_threads={threads}",
               f"hydra.sweep.dir={out}", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_threads: the sweep failed (exit {done.returncode}): {shlex.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def bench_sweeps(grid: list[tuple[int, int]], runs: int, steps: int, repeats: int, overrides: list[str]) -> None:
    print(f"== sweeps: {runs} runs of {steps} steps ({' '.join(overrides) or 'the default experiment'}), "
          f"joblib jobs x torch threads, {repeats} interleaved repeats")
    seconds: dict[tuple[int, int], list[float]] = {setting: [] for setting in grid}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for k, (jobs, threads) in enumerate(grid if i % 2 == 0 else grid[::-1]):
                out = Path(tmp) / f"r{i}_{k}"
                seconds[(jobs, threads)].append(sweep_seconds(jobs, threads, runs, steps, overrides, out))
    best = min(statistics.median(s) for s in seconds.values())
    for (jobs, threads), s in seconds.items():
        median = statistics.median(s)
        print(f"jobs {jobs} x threads {threads}: {median:7.1f} s ({', '.join(f'{t:.1f}' for t in s)})  "
              f"{60 * runs / median:6.2f} runs/min  speed {best / median:.2f} of the fastest")
    print(load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="steps,sweep", help="steps, sweep, or both")
    parser.add_argument("--models", default="toy,dcgan", help="part 1's networks: toy, dcgan")
    parser.add_argument("--steps", type=int, default=300, help="part 1: timed steps per measurement")
    parser.add_argument("--grid", default="1x1,1x2,2x1,2x2", help="part 2: jobs x threads settings")
    parser.add_argument("--runs", type=int, default=4, help="part 2: runs (seeds) per sweep")
    parser.add_argument("--sweep-steps", type=int, default=2000, help="part 2: steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--toy", default="", help="extra overrides of part 1's 2-D model")
    parser.add_argument("--dcgan", default="", help="extra overrides of part 1's DCGAN (e.g. dataset.root=...)")
    parser.add_argument("--sweep", default="", help="overrides of every sweep run (default: the default experiment)")
    args = parser.parse_args()
    parts = set(args.part.split(","))
    if not parts <= {"steps", "sweep"}:
        parser.error(f"--part: choose from steps, sweep (got {args.part})")
    if "steps" in parts:
        extra = {"toy": args.toy, "dcgan": args.dcgan}
        unknown = [m for m in args.models.split(",") if m not in MODELS]
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
        bench_steps({m: [*MODELS[m], *shlex.split(extra[m])] for m in args.models.split(",")}, args.steps, args.repeats)
    if "sweep" in parts:
        try:
            grid = [tuple(int(v) for v in setting.split("x")) for setting in args.grid.split(",")]
        except ValueError:
            parser.error(f"--grid: settings look like 2x1 (jobs x threads), got {args.grid}")
        bench_sweeps(grid, args.runs, args.sweep_steps, args.repeats, shlex.split(args.sweep))


if __name__ == "__main__":
    main()
