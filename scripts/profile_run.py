"""Where a run's time goes: the default experiment (or any overrides) under cProfile, broken down into
start-up, the training steps, the log ticks, the evaluations, the checkpoints and the end (the last
evaluation's worker results, samples, summary). For issue 17's "measure where the time goes": the
breakdown goes into docs/benchmarks.md, measured on an otherwise idle machine.

    python scripts/profile_run.py [--steps N] [override ...]

Times are this process's wall-clock time inside each part (cProfile's cumulative time; indented parts
are inside the part above, and the final checkpoint is in both its rows); the background
worker's own CPU time (W1/W2, pictures) is not in them, only the waits for it. Profiling slows Python-heavy
code, so compare the parts with each other, not the total with `make bench`'s figures.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

from ganlab.config import compose_config
from ganlab.train import run

# (label, module file suffix, function name): the parts of a run, in the loop's order.
PARTS = [
    ("start-up: build, reference rows", "ganlab/train.py", "start"),
    ("training steps (D and G phases)", "ganlab/step.py", "d_step"),
    ("", "ganlab/step.py", "g_step"),
    ("log ticks", "ganlab/train.py", "log_tick"),
    ("  worker results written", "ganlab/train.py", "write_offloaded"),
    ("evaluations in the loop", "ganlab/train.py", "evaluate"),
    ("checkpoints (incl. the final one)", "ganlab/train.py", "save_state"),
    ("  waits for the worker (drain)", "ganlab/evaluation/worker.py", "drain"),
    ("end: samples, final checkpoint, summary", "ganlab/train.py", "finish"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(row[3] for (path, _line, func), row in stats.stats.items()
               if func == name and path.replace(os.sep, "/").endswith(suffix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose_config([*args.overrides, f"steps={args.steps}"])
    load = os.getloadavg()
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        profiler.enable()
        run(cfg, run_dir, progress=False)
        profiler.disable()
        total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    print(f"{args.steps} steps, overrides {args.overrides or 'none'}; load average before: "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"{'part':<40} {'seconds':>9} {'share':>7}")
    steps = 0.0
    for label, suffix, name in PARTS:
        seconds = cumulative(stats, suffix, name)
        if name in ("d_step", "g_step"):
            steps += seconds
            if name == "d_step":
                continue
            seconds, label = steps, "training steps (D and G phases)"
        print(f"{label:<40} {seconds:>9.2f} {seconds / total:>6.1%}")
    print(f"{'whole run (wall clock, profiled)':<40} {total:>9.2f} {1:>6.1%}")


if __name__ == "__main__":
    main()
