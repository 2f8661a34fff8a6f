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
Sizing, estimated for three repeats: the toy runs are launch-bound at a few hundred steps/s, so each repeat of the
first group takes well under a minute and of the second a few tens of seconds; the first compilation is the
longest DCGAN part, the Inception's 2,000 images take seconds; then the CUDA tests (3 tests). That puts the whole
at about 5 minutes, so the step counts are those of the single-timing check.

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
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SKIPPED = "skipped: no CUDA"
SWITCHES = {"none": "none", "bf16": "amp", "compile": "compile", "channels_last": "channels_last"}  # bench_images'


class Row:
    def __init__(self, part: str, unit: str = "", against: str = "", note: str = ""):
        self.part, self.unit, self.against, self.note = part, unit, against, note
        self.figure: float | None = None
        self.reference: float | None = None
        self.status = SKIPPED
        self.peak: float | None = None  # MiB

    def cells(self) -> list[str]:
        if self.figure is None:
            return [self.part, self.status, self.against or "", "", "", self.note]
        figure = f"{self.figure:,.1f} {self.unit}"
        ratio = f"{self.figure / self.reference:.3g}x" if self.reference else ""
        against = f"{self.against}: {self.reference:,.1f}" if self.reference else self.against
        peak = f"{self.peak:,.0f} MiB" if self.peak is not None else ""
        return [self.part, figure, against, ratio, peak, self.note]


@contextlib.contextmanager
def measured(row: Row, device: str):
    """Run one part: its peak GPU memory recorded, and an error in it written into its row (the other parts go on)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
        row.status = "ok"
    except Exception as exc:  # noqa: BLE001 - one part's failure is a row of the table, not the end of the check
        text = str(exc).splitlines()[0][:160].replace("|", "/") if str(exc) else ""  # one table cell
        row.status, row.figure = f"failed: {type(exc).__name__}: {text}", None
    finally:
        if cuda:
            torch.cuda.synchronize()
            row.peak = torch.cuda.max_memory_allocated() / 2**20


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
        loop = [f"steps={args.loop_steps}"]
        with measured(rows["bare"], device):
            bench_loop.bare_loop(compose_config([on, "steps=20"]), 20)  # warm-up: first kernels, lazy imports
            rows["bare"].figure, _ = bench_loop.bare_loop(compose_config([on, *loop]), args.loop_steps)
        bare = rows["bare"].figure
        for key, overrides in (("default", loop), ("unrolled", [f"steps={args.unrolled_steps}", "loss=wgan_gp",
                                                               "remedy=unrolled"])):
            with measured(rows[key], device):
                seconds, steps = whole_run(overrides, out, device)
                rows[key].figure, rows[key].reference = steps / seconds, bare
        small = [f"steps={args.replica_steps}", f"eval.every={args.replica_steps}", "eval.samples=200",
                 "eval.w_samples=100", "eval.background=false", f"checkpoint.every={args.replica_steps}"]
        with measured(rows["replicas"], device):
            seconds = sum(whole_run([*small, f"seed={seed}"], out, device)[0] for seed in range(args.sequential))
            sequential = args.sequential * args.replica_steps / seconds
            seconds, steps = whole_run([*small, f"replicas={args.replicas}"], out, device)
            rows["replicas"].figure, rows["replicas"].reference = args.replicas * steps / seconds, sequential
        data, what = stacked_overrides(out)
        for switch in args.switches:
            row = rows[f"dcgan_{switch}"]
            with measured(row, device):
                cfg = compose_config([*bench_images.DEFAULTS, *data, on, f"steps={args.image_steps}", *args.image,
                                      *bench_images.SETTINGS[SWITCHES[switch]]])
                row.note = f"{args.image_steps} timed steps of ganlab's step, batch {cfg.batch_size}" + (
                    f"; {what}" if switch == "none" else "")
                row.figure = bench_images.bare_loop(cfg, args.image_steps, args.image_warmup)
                none = rows["dcgan_none"].figure
                row.reference = none if switch != "none" else None
        with measured(rows["inception"], device):
            model = FIDInceptionV3().to(device).eval().requires_grad_(False)  # random weights: speed only
            images = torch.randint(0, 256, (args.inception_images, 3, 28, 28), dtype=torch.uint8)
            features(model, images[:args.inception_batch], batch_size=args.inception_batch)  # warm-up: cuDNN, kernels
            bench_images._sync(torch.device(device))
            start = time.perf_counter()
            features(model, images, batch_size=args.inception_batch)
            rows["inception"].figure = args.inception_images / (time.perf_counter() - start)
    ok = not any(row.status.startswith("failed") for row in rows.values())
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
                     f"{torch.get_num_threads()} torch threads)")
        ok = check(args, rows)
    header = f"GPU check, {time.strftime('%Y-%m-%d')}, {where}; {time.perf_counter() - start:.0f} s"
    print(table(rows, header))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
