"""The GPU check (issue 30; docs/benchmarks.md, "GPU check"): ganlab's CUDA path measured on this machine's GPU,
in one table, its step counts sized to take under 8 minutes on one GPU (an estimate: it has not yet run on one);
run by scripts/gpu_check.sh.

Rows: the bare PyTorch loop of scripts/bench_loop.py (NS-GAN, the default networks, torch's default thread count)
on the GPU; ganlab's default run and `loss=wgan_gp remedy=unrolled` in steps/s against it; `replicas=64` in
seed-steps/s against sequential runs of one seed each (target: at least 20x); the DCGAN training step on Stacked
Fashion-MNIST (scripts/bench_images.py's bare loop, ganlab's own step) with each speed switch (bf16, compile,
channels_last) against none; the FID Inception's forward pass in images/s (random weights: a speed figure, not an
FID); the peak GPU memory of each part (the highest of its repeats); and the CUDA tests (`pytest -m cuda`).

Every figure is the median of `--repeats` (3) interleaved repeats, shown with the repeats themselves: "median
(a; b; c)". The compared rows form groups (the bare loop, the default run and the unrolled run; the replicas run and
the sequential runs; the DCGAN speed switches; the Inception forward), and each repeat times every part of a group
once, in an order rotated from one repeat to the next, so that drift in the machine's speed hits the parts alike.
A ratio is median over median. The warm-ups (the bare loop's, the Inception's) run once, before the repeats; each
DCGAN timing has its own untimed warm-up steps (`--image-warmup`: fresh networks each time, compilation included).
Sizing, an estimate (never timed on a GPU): with the toy steps launch-bound at a few hundred a second, a repeat
of the first group takes about 20 s, of the second about 15 s, of the DCGAN switches about 10 s, of the Inception
a second or two; with the first compilation (about a minute), the start-up and the CUDA tests (3 tests, a minute or
two), three repeats come to about 5 to 6 minutes, under the 8, so the step counts stay those of the single timings.

On a machine without CUDA it builds nothing: every CUDA row says "skipped: no CUDA", and it exits 0. On a GPU it
exits 1 when a part failed (its row says why; a part that failed is not tried again in later repeats) or a CUDA
test failed. `--device cpu` runs the same parts on the CPU (without the CUDA tests), with the header saying so: a
dry run of the script itself (tests/test_scripts.py), not a GPU figure.

    scripts/gpu_check.sh [--repeats 3] [--loop-steps 2000] [--unrolled-steps 200] [--replica-steps 300]
                         [--image-steps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SKIPPED = "skipped: no CUDA"
SWITCHES = {"none": "none", "bf16": "amp", "compile": "compile", "channels_last": "channels_last"}  # bench_images'


def spread(figures: list[float]) -> str:
    """The median and, in brackets, every repeat in the order they ran (semicolons: the figures carry commas)."""
    return f"{statistics.median(figures):,.1f} ({'; '.join(f'{figure:,.1f}' for figure in figures)})"


class Row:
    def __init__(self, part: str, unit: str = "", against: str = "", note: str = ""):
        self.part, self.unit, self.against, self.note = part, unit, against, note
        self.figures: list[float] = []  # one a repeat
        self.reference: list[float] = []  # the figures this row is against, one a repeat
        self.status = SKIPPED
        self.peak: float | None = None  # MiB, the highest of the repeats

    def failed(self) -> bool:
        return self.status.startswith("failed")

    def cells(self) -> list[str]:
        if not self.figures or self.failed():
            return [self.part, self.status, self.against, "", "", self.note]
        ratio = (f"{statistics.median(self.figures) / statistics.median(self.reference):.3g}x" if self.reference
                 else "")
        against = f"{self.against}: {spread(self.reference)}" if self.reference else self.against
        peak = f"{self.peak:,.0f} MiB" if self.peak is not None else ""
        return [self.part, f"{spread(self.figures)} {self.unit}", against, ratio, peak, self.note]


@contextlib.contextmanager
def measured(row: Row, device: str):
    """One go at a part (a timing, a warm-up): its peak GPU memory recorded, and an error in it written into its
    row (the other parts go on)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
        row.status = "ok"
    except Exception as exc:  # noqa: BLE001 - one part's failure is a row of the table, not the end of the check
        text = str(exc).splitlines()[0][:160].replace("|", "/") if str(exc) else ""  # one table cell
        row.status = f"failed: {type(exc).__name__}: {text}"
    finally:
        if cuda:
            torch.cuda.synchronize()
            row.peak = max(row.peak or 0.0, torch.cuda.max_memory_allocated() / 2**20)


def interleaved(repeats: int, parts: list[tuple[Row, list[float], Callable[[], float]]], device: str) -> None:
    """Time a compared group's parts (row, the list its figure goes to, the timing) once a repeat, each repeat in
    another order (rotated): drift in the machine's speed (clocks, heat, other load) hits every part alike."""
    for i in range(repeats):
        for row, figures, timing in parts[i % len(parts):] + parts[:i % len(parts)]:
            if not row.failed():  # its row already says why; a retry would only cost time
                with measured(row, device):
                    figures.append(timing())


def whole_run(overrides: list[str], out: Path, device: str) -> tuple[float, int]:
    """ganlab's `run` as `ganlab train` does it, timed by the wall clock: (seconds, steps)."""
    from ganlab.config import compose_config
    from ganlab.train import run

    cfg = compose_config([f"device={device}", *overrides])
    said = io.StringIO()  # the run's own lines and metric tables: the check prints one table, its own
    start = time.perf_counter()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        run(cfg, out / f"run_{time.monotonic_ns()}", progress=False)
    return time.perf_counter() - start, cfg.steps


def stacked_overrides(tmp: Path) -> tuple[list[str], str]:
    """Stacked Fashion-MNIST when its files are here (no download is tried); else random images of its shape
    (3 x 28 x 28), which the training step cannot tell apart."""
    from ganlab.data.files import REGISTRY, data_root

    name = "train-images-idx3-ubyte.gz"
    places = [data_root(None) / "fashion_mnist", *map(Path, REGISTRY["fashion_mnist"].system_dirs)]
    if any((place / name).is_file() for place in places):
        return ["dataset=stacked_fashion_mnist"], "Stacked Fashion-MNIST"
    import numpy as np

    path = tmp / "stacked_shape.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 256, (4096, 3, 28, 28), dtype=np.uint8))
    return ["dataset=images_npz", f"dataset.file={path}"], "random images of Stacked's shape (no Fashion-MNIST here)"


def cuda_tests() -> tuple[str, bool]:
    """`pytest -m cuda` over the suite: its summary and whether it passed."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    summary = lines[-1].strip("= ").replace("|", "/") if lines else f"no summary (exit status {result.returncode})"
    return summary, result.returncode == 0


def check(args, rows: dict[str, Row]) -> bool:
    """Every part on args.device; True when all ran and (on CUDA) the CUDA tests passed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_images
    import bench_loop

    from ganlab.config import compose_config
    from ganlab.metrics.inception import FIDInceptionV3, features

    device, cuda = args.device, args.device.startswith("cuda")
    on = f"device={device}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def steps_per_second(overrides: list[str], seeds: int = 1) -> float:
            seconds, steps = whole_run(overrides, out, device)
            return seeds * steps / seconds

        loop = [f"steps={args.loop_steps}"]
        threads = bench_loop.DEFAULT_THREADS  # torch's own count: the loop a user writes
        with measured(rows["bare"], device):  # warm-up: first kernels, lazy imports
            bench_loop.bare_loop(compose_config([on, "steps=20"]), 20, threads)
        interleaved(args.repeats, [
            (rows["bare"], rows["bare"].figures,
             lambda: bench_loop.bare_loop(compose_config([on, *loop]), args.loop_steps, threads)[0]),
            (rows["default"], rows["default"].figures, lambda: steps_per_second(loop)),
            (rows["unrolled"], rows["unrolled"].figures,
             lambda: steps_per_second([f"steps={args.unrolled_steps}", "loss=wgan_gp", "remedy=unrolled"])),
        ], device)
        if not rows["bare"].failed():
            rows["default"].reference = rows["unrolled"].reference = rows["bare"].figures

        small = [f"steps={args.replica_steps}", f"eval.every={args.replica_steps}", "eval.samples=200",
                 "eval.w_samples=100", "eval.background=false", f"checkpoint.every={args.replica_steps}"]
        replicas = rows["replicas"]  # the sequential runs' failure is its failure too: they are its reference
        interleaved(args.repeats, [
            (replicas, replicas.figures,
             lambda: steps_per_second([*small, f"replicas={args.replicas}"], seeds=args.replicas)),
            (replicas, replicas.reference, lambda: args.sequential * args.replica_steps / sum(
                whole_run([*small, f"seed={seed}"], out, device)[0] for seed in range(args.sequential))),
        ], device)

        data, what = stacked_overrides(out)
        dcgan = []
        for switch in args.switches:
            row = rows[f"dcgan_{switch}"]
            with measured(row, device):  # a bad override fails this row (and leaves it out of the repeats)
                cfg = compose_config([*bench_images.DEFAULTS, *data, on, f"steps={args.image_steps}", *args.image,
                                      *bench_images.SETTINGS[SWITCHES[switch]]])
                row.note = f"{args.image_steps} timed steps of ganlab's step, batch {cfg.batch_size}" + (
                    f"; {what}" if switch == "none" else "")
                # warm-up steps in every call, untimed: each call builds fresh networks (and compiles them)
                dcgan.append((row, row.figures,
                              functools.partial(bench_images.bare_loop, cfg, args.image_steps, args.image_warmup)))
        interleaved(args.repeats, dcgan, device)
        if not rows["dcgan_none"].failed():
            for switch in args.switches:
                if switch != "none":
                    rows[f"dcgan_{switch}"].reference = rows["dcgan_none"].figures

        inception = rows["inception"]
        images = torch.randint(0, 256, (args.inception_images, 3, 28, 28), dtype=torch.uint8)
        with measured(inception, device):  # warm-up: cuDNN, kernels
            model = FIDInceptionV3().to(device).eval().requires_grad_(False)  # random weights: speed only
            features(model, images[:args.inception_batch], batch_size=args.inception_batch)

        def inception_forward() -> float:
            bench_images._sync(torch.device(device))
            start = time.perf_counter()
            features(model, images, batch_size=args.inception_batch)  # returns on the CPU: the device is done
            return args.inception_images / (time.perf_counter() - start)

        interleaved(args.repeats, [(inception, inception.figures, inception_forward)], device)
    ok = not any(row.failed() for row in rows.values())
    if not cuda:
        rows["tests"].status = f"skipped: --device {device}"
        return ok
    summary, passed = cuda_tests()
    rows["tests"].status = summary if passed else f"failed: {summary}"
    return ok and passed


def table(rows: dict[str, Row], header: str) -> str:
    lines = [header, "", "| part | figure | against | ratio | peak GPU memory | note |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows.values()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every figure (the median shown)")
    ap.add_argument("--loop-steps", type=int, default=2000, help="steps of the bare loop and of the default run")
    ap.add_argument("--unrolled-steps", type=int, default=200, help="steps of the loss=wgan_gp remedy=unrolled run")
    ap.add_argument("--replicas", type=int, default=64, help="seeds of the replicas run (the check's: 64)")
    ap.add_argument("--replica-steps", type=int, default=300, help="steps of the replicas run and each sequential run")
    ap.add_argument("--sequential", type=int, default=2, help="sequential one-seed runs timed against the replicas run")
    ap.add_argument("--image-steps", type=int, default=200, help="timed DCGAN steps per speed switch")
    ap.add_argument("--image-warmup", type=int, default=10, help="DCGAN steps before the clock (compilation included)")
    ap.add_argument("--switches", type=lambda text: text.split(","), default=list(SWITCHES),
                    help=f"the speed switches to time (default: {','.join(SWITCHES)}; none is the reference)")
    ap.add_argument("--inception-images", type=int, default=2000)
    ap.add_argument("--inception-batch", type=int, default=200)
    ap.add_argument("--device", default="cuda", help="cuda (default; skipped without CUDA), cuda:N, or cpu: a dry run "
                                                     "of the script itself")
    ap.add_argument("image", nargs="*", help="overrides of the DCGAN rows' config (model.g.width=16 ...)")
    args = ap.parse_args()
    unknown = [s for s in args.switches if s not in SWITCHES]
    if unknown or "none" not in args.switches:
        ap.error(f"--switches: choose among {', '.join(SWITCHES)}, none included")
    if args.repeats < 1:
        ap.error("--repeats: at least 1")
    rows = {
        "bare": Row("bare PyTorch loop (scripts/bench_loop.py: NS-GAN, default networks)", "steps/s",
                    note=f"{args.loop_steps:,} steps, the steps alone"),
        "default": Row("default run (`ganlab train`)", "steps/s", "bare loop",
                       f"{args.loop_steps:,} steps, the whole run at the default cadence"),
        "unrolled": Row("`loss=wgan_gp remedy=unrolled`", "steps/s", "bare loop",
                        f"{args.unrolled_steps:,} steps, the whole run"),
        "replicas": Row(f"`replicas={args.replicas}`", "seed-steps/s",
                        f"{args.sequential} sequential one-seed run{'s' if args.sequential != 1 else ''}",
                        f"target >= 20x; {args.replica_steps:,} steps, whole runs with one small evaluation"),
        **{f"dcgan_{switch}": Row(f"DCGAN on Stacked, {switch}", "img/s", "" if switch == "none" else "none",
                                  f"{args.image_steps} timed steps of ganlab's step")
           for switch in args.switches},
        "inception": Row("FID Inception forward", "images/s",
                         note=f"{args.inception_images:,} images of 28 x 28 (resized to 299), batch "
                              f"{args.inception_batch}; random weights: a speed figure only"),
        "tests": Row("CUDA tests (`pytest -m cuda`)"),
    }
    start = time.perf_counter()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        where, ok = f"no CUDA (torch {torch.__version__}, {os.cpu_count()} CPUs): every CUDA row skipped", True
    else:
        if args.device.startswith("cuda"):
            index = torch.device(args.device).index or 0
            props = torch.cuda.get_device_properties(index)
            where = (f"{torch.cuda.get_device_name(index)} ({props.total_memory / 2**30:.0f} GiB), CUDA "
                     f"{torch.version.cuda}, torch {torch.__version__}, {os.cpu_count()} CPUs")
        else:
            where = (f"DRY RUN on {args.device}, not a GPU figure (torch {torch.__version__}, {os.cpu_count()} CPUs, "
                     f"{torch.get_num_threads()} torch thread(s))")
        where += f"; figures: medians of {args.repeats} interleaved repeats (the repeats in brackets)"
        ok = check(args, rows)
    header = f"GPU check, {time.strftime('%Y-%m-%d')}, {where}; {time.perf_counter() - start:.0f} s"
    print(table(rows, header))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
