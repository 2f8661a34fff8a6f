"""Per-remedy cost: training steps per second of every remedy, relative to remedy=none, measured in
one process, one remedy after the other (interleaved over repeats, medians reported).

    python scripts/bench_remedies.py [--steps 400] [--repeats 3] [--dataset ring] [extra overrides...]

The runs use the VEEGAN-row setup (ganlab/configs/experiment/veegan_setup.yaml) and a single tiny
evaluation at the end, so the figure is the training loop's speed. A second column times one
evaluation at the protocol's 2,500 samples (on freshly built networks), where remedies that act
when samples are drawn (drs) spend their time.

The pass count: the matrix-product FLOPs of one training step (D phase and G phase), counted by torch's
FlopCounterMode (ganlab.flops.step_cost: its docstring says what is counted), their multiple of
remedy=none's, the time of one step alone (no evaluation or start-up in it) and the GFLOP/s that gives.
Matrix products are most of a step at these sizes, so a remedy running at its inherent cost keeps none's
GFLOP/s; elementwise work and cdist (minibatch_disc's n^2 L1 term) are not counted."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganlab import threads
from ganlab.config import compose_config, options
from ganlab.evaluation.toy import evaluate
from ganlab.gan import build
from ganlab.flops import step_flops
from ganlab.step import one_step
from ganlab.train import run


def steps_per_second(remedy: str, steps: int, dataset: str, extra: list[str], out: Path) -> float:
    overrides = ["experiment=veegan_setup", f"dataset={dataset}", f"remedy={remedy}", f"steps={steps}",
                 f"eval.every={steps}", "eval.samples=200", "eval.w_samples=100", "eval.background=false",
                 f"log.every={steps}", *extra]
    cfg = compose_config(overrides)
    return run(cfg, out / f"{remedy}_{len(list(out.iterdir()))}")["steps_per_second"]


def evaluation_seconds(remedy: str, dataset: str, extra: list[str], samples: int = 2500) -> float:
    """Wall time of one evaluation of `samples` samples (metrics on the device; not W1/W2 or pictures)."""
    cfg = compose_config(["experiment=veegan_setup", f"dataset={dataset}", f"remedy={remedy}", *extra])
    exp = build(cfg, torch.device("cpu"))
    rng = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    evaluate(exp.G, exp.D, exp.remedy, exp.data, exp.latent_dim, samples, rng, exp.data.plot_limits())
    return time.perf_counter() - start


def step_cost(remedy: str, dataset: str, extra: list[str], steps: int = 30) -> tuple[int, float]:
    """Matrix-product FLOPs of one training step (n_critic D steps and a G step) of the built experiment,
    and the seconds such a step takes alone (median of three timings of `steps` steps, after warm-up:
    no evaluation, logging or run start-up in it)."""
    cfg = compose_config(["experiment=veegan_setup", f"dataset={dataset}", f"remedy={remedy}", *extra])
    flops = step_flops(cfg)  # on networks of its own, built apart from the timed ones
    threads.apply(cfg.cpu_threads)  # auto: every core of this machine (ganlab/threads.py)
    exp = build(cfg, torch.device("cpu"))
    exp.remedy.begin_step(1)
    n = cfg.batch_size

    def step():
        return one_step(exp, n)

    for _ in range(4):
        step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        loss.item()
        times.append((time.perf_counter() - start) / steps)
    return flops, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", default="ring")
    ap.add_argument("--remedies", default=None, help="comma-separated; default: every remedy (remedy=none first)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    # Every option of the remedy group, found in the configs (none first: the others are relative to it).
    remedies = args.remedies.split(",") if args.remedies else sorted(options("remedy"), key=lambda r: r != "none")
    measured: dict[str, list[float]] = {r: [] for r in remedies}
    eval_time: dict[str, list[float]] = {r: [] for r in remedies}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = remedies if repeat % 2 == 0 else remedies[::-1]  # interleaved: drift hits all alike
            for remedy in order:
                measured[remedy].append(steps_per_second(remedy, args.steps, args.dataset, args.overrides, Path(tmp)))
                eval_time[remedy].append(evaluation_seconds(remedy, args.dataset, args.overrides))
    base = statistics.median(measured["none"]) if "none" in measured else None
    cost = {r: step_cost(r, args.dataset, args.overrides) for r in remedies}
    print(f"\n{args.steps} steps x {args.repeats} repeats, dataset={args.dataset}, veegan_setup; medians; "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"{'remedy':<22}{'steps/s':>10}{'vs none':>10}{'eval s (2,500)':>16}{'MFLOP/step':>12}"
          f"{'FLOPs x none':>14}{'step ms':>9}{'GFLOP/s':>9}")
    for remedy in remedies:
        speed = statistics.median(measured[remedy])
        flops, seconds = cost[remedy]
        ratio = flops / cost["none"][0] if "none" in cost else float("nan")
        print(f"{remedy:<22}{speed:>10.1f}{(speed / base if base else float('nan')):>10.2f}"
              f"{statistics.median(eval_time[remedy]):>16.3f}{flops / 1e6:>12.1f}{ratio:>14.2f}"
              f"{seconds * 1e3:>9.2f}{flops / seconds / 1e9:>9.2f}")

if __name__ == "__main__":
    main()
