"""The benchmark scripts still run against the current config layout (they are not imported by the
package, so nothing else would notice a break). Tiny step counts: these check that they work and
print their figures, not the figures themselves."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)


def test_bench_loop_prints_its_ratios():
    out = script("scripts/bench_loop.py", "--steps", "20", "--repeats", "1", "eval.every=10", "eval.samples=200",
                 "eval.w_samples=100")
    assert out.returncode == 0, out.stderr
    # the three anchors: the loop a user writes at torch's default threads (the target's) and at one thread, the
    # loop with ganlab's threads and optimizers; then ganlab's run
    for figure in ("wall-clock", "CPU-time"):
        assert re.search(rf"{figure} steps/s:\n  bare PyTorch loop, torch's default \d+ thread\(s\) +\d+\.\d \(.*\)\n"
                         rf"  bare PyTorch loop, 1 thread +\d+\.\d \(.*\)\n"
                         rf"  bare loop, \d+ thread\(s\), ganlab's optimizers +\d+\.\d \(.*\)\n  ganlab whole run +\d+\.\d \(.*\)\n"
                         rf"  ratio ganlab/bare: \d+\.\d{{3}} against the default-threads loop.*, \d+\.\d{{3}} against one "
                         rf"thread, \d+\.\d{{3}} against the loop with ganlab's threads and optimizers", out.stdout), out.stdout
    assert re.search(r"ganlab on cpu_threads=auto \(\d+ thread\(s\)\)", out.stdout)
    assert re.search(r"ganlab's own figure .* \d+\.\d .*ratio \d\.\d{3}", out.stdout)
    assert re.search(r"load average at the end \d+\.\d\d", out.stdout)


def test_bench_loops_anchor_uses_torchs_default_optimizer_not_ganlabs_fused_one(monkeypatch):
    """The anchor is the loop a user writes: the config's Adam settings, torch's default implementation."""
    import torch
    from conftest import make_cfg

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from bench_loop import plain_optimizer

    cfg = make_cfg()
    opt = plain_optimizer(cfg.optim.g, [torch.zeros(3, requires_grad=True)])
    assert type(opt) is torch.optim.Adam and opt.defaults["fused"] is None
    assert opt.defaults["lr"] == cfg.optim.g.lr and list(opt.defaults["betas"]) == list(cfg.optim.g.betas)
    rms = plain_optimizer(make_cfg("optim=rmsprop").optim.d, [torch.zeros(3, requires_grad=True)])
    assert type(rms) is torch.optim.RMSprop


def test_bench_remedies_prints_a_row_per_remedy():
    names = ("none", "pacgan", "unrolled", "drs")
    out = script("scripts/bench_remedies.py", "--steps", "5", "--repeats", "1", "--remedies", ",".join(names))
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()
            if line.split() and line.split()[0] in names}
    assert set(rows) == set(names) and rows["none"][1] == "1.00"
    assert all(float(row[2]) > 0 for row in rows.values())  # the evaluation time column
    # The pass count in matrix-product FLOPs: drs trains as the plain GAN, a pack of 2 halves D's batch
    # (its first layer takes twice the inputs), unrolling k = 5 D steps inside the G step costs several times more.
    flops = {name: float(row[4]) for name, row in rows.items()}
    assert flops["drs"] == flops["none"] and flops["pacgan"] < flops["none"] and flops["unrolled"] > 5 * flops["none"]


def test_bench_replicas_prints_seed_steps_per_second_and_the_load():
    out = script("scripts/bench_replicas.py", "--steps", "5", "--repeats", "1", "--sizes", "1,2", "--devices", "cpu",
                 "--ceiling-steps", "3", "batch_size=32")
    assert out.returncode == 0, out.stderr
    runs, ceiling = out.stdout.split("The step alone")
    rows = [line for line in runs.splitlines() if line.startswith("cpu ")]
    assert [row.split(":")[0] for row in rows] == ["cpu  N=  1", "cpu  N=  2"]
    assert all(re.search(r"replicas +\d+\.\d seed-steps/s .* sequential runs +\d+\.\d .*ratio \d+\.\d\d", r) for r in rows)
    assert re.search(r"load average \(1, 5, 15 min\) before [\d.]+ [\d.]+ [\d.]+, after", out.stdout)
    assert re.search(r"cpu  N=  2: one vectorised step +\d+\.\d .* 2 experiments one by one +\d+\.\d .*ratio \d+\.\d\d",
                     ceiling)


@pytest.mark.slow
def test_bench_images_prints_a_row_per_setting(tmp_path):
    import os

    import torch
    from test_image_data import fake_mnist

    from ganlab.metrics.classifier import ModeClassifier, save_classifier

    fake_mnist(tmp_path / "data", "fashion_mnist", n_train=40, n_test=10)
    os.environ["GANLAB_CACHE"] = str(tmp_path / "cache")
    try:
        torch.manual_seed(0)
        save_classifier(ModeClassifier(), "fashion_mnist", 0.5, {"epochs": 0})
        out = script("scripts/bench_images.py", "--steps", "3", "--warmup", "1", "--settings", "amp",
                     "--eval-samples", "64", f"dataset.root={tmp_path / 'data'}", "dataset.n=100", "model.g.width=4",
                     "model.d.width=4", "batch_size=8", "eval.batch=32", "eval.grid=4", "cpu_threads=1")
    finally:
        del os.environ["GANLAB_CACHE"]
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    assert [r.split("|")[1].strip() for r in rows] == ["amp"]  # a switch on: the autocast path runs in both loops
    assert all(float(r.split("|")[4]) > 0 for r in rows)  # the ratio column
    assert re.search(r"one evaluation of 64 samples .*: \d+\.\d s", out.stdout)


def test_profile_run_prints_each_part_and_the_whole():
    out = script("scripts/profile_run.py", "--steps", "20", "eval.every=10", "eval.samples=200", "eval.w_samples=100",
                 "checkpoint.every=10")
    assert out.returncode == 0, out.stderr
    seconds = {line[:40].strip(): float(line[40:].split()[0]) for line in out.stdout.splitlines()
               if re.match(r".{40} +\d+\.\d\d +\d+\.\d%", line)}
    assert {"start-up: build, reference rows", "training steps (D and G phases)", "checkpoints (incl. the final one)",
            "whole run (wall clock, profiled)"} <= set(seconds)
    assert 0 < seconds["training steps (D and G phases)"] < seconds["whole run (wall clock, profiled)"]


def test_bench_threads_prints_both_tables(image_root):
    """Both parts on tiny settings: the 2-D and DCGAN step rows (DCGAN on the tests' small IDX files)
    and a sweep row per jobs x threads setting."""
    out = script("scripts/bench_threads.py", "--steps", "3", "--repeats", "1", "--grid", "1x1,2x1", "--runs", "2",
                 "--sweep-steps", "4", "--dcgan", f"dataset.root={image_root} dataset.n=200",
                 "--sweep", "eval.every=2 eval.samples=100 eval.w_samples=50 eval.background=false")
    assert out.returncode == 0, out.stderr
    for model in ("toy", "dcgan"):
        assert re.search(rf"^{model} +1 thread +\d+\.\d steps/s .* 2 threads +\d+\.\d .* ratio 2/1 \d+\.\d\d$",
                         out.stdout, re.MULTILINE), out.stdout
    for setting in ("jobs 1 x threads 1", "jobs 2 x threads 1"):
        assert re.search(rf"^{setting}: +\d+\.\d s .* runs/min +speed \d\.\d\d of the fastest$", out.stdout,
                         re.MULTILINE), out.stdout
    assert out.stdout.count("load average") == 2


def test_bench_threads_refuses_a_bad_grid():
    out = script("scripts/bench_threads.py", "--part", "sweep", "--grid", "two")
    assert out.returncode == 2 and "--grid: settings look like 2x1" in out.stderr


def gpu_check_rows(stdout: str) -> dict[str, list[str]]:
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| part |")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this checks the run without CUDA")
def test_gpu_check_without_cuda_prints_its_table_with_every_cuda_row_skipped():
    out = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    rows = gpu_check_rows(out.stdout)
    assert len(rows) == 10 and all(cells[0] == "skipped: no CUDA" for cells in rows.values()), out.stdout
    assert {"default run (`ganlab train`)", "`loss=wgan_gp remedy=unrolled`", "`replicas=64`",
            "DCGAN on Stacked, bf16", "DCGAN on Stacked, compile", "DCGAN on Stacked, channels_last",
            "FID Inception forward", "CUDA tests (`pytest -m cuda`)"} <= set(rows)
    assert not re.search(r"\d+(\.\d+)? (steps|seed-steps|img|images)/s", out.stdout)  # no figure without a GPU
    assert out.stdout.count("| part |") == 1  # one table


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_runs_every_part():
    """`--device cpu` runs the GPU check's parts on the CPU, tiny: each row gets its figure, the median of its
    interleaved repeats shown with them (the code path a GPU takes, but for the device), the header says it is no
    GPU figure, and the CUDA tests are left out."""
    # one torch thread: two spin against the other xdist worker (up to 20x slower on these 2 cores)
    out = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--repeats", "2",
                          "--loop-steps", "10", "--unrolled-steps", "2", "--replicas", "2", "--replica-steps", "2",
                          "--sequential", "1", "--image-steps", "1", "--image-warmup", "1",
                          "--switches", "none,bf16,channels_last", "--inception-images", "2", "--inception-batch", "2",
                          "model.g.width=4", "model.d.width=4", "batch_size=8"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DRY RUN on cpu, not a GPU figure" in out.stdout and "medians of 2 interleaved repeats" in out.stdout
    rows = gpu_check_rows(out.stdout)
    assert rows.pop("CUDA tests (`pytest -m cuda`)")[0] == "skipped: --device cpu"
    assert len(rows) == 8
    figure = r"[\d,]+\.\d"
    for part, cells in rows.items():  # "median (first; second)"; of two repeats the median is their mean
        assert re.fullmatch(rf"{figure} \({figure}; {figure}\) (steps|seed-steps|img|images)/s", cells[0]), (part, cells)
        median, first, second = (float(number.replace(",", "")) for number in re.findall(figure, cells[0]))
        assert median == pytest.approx((first + second) / 2, abs=0.1), (part, cells)
    assert re.fullmatch(r"\d\S*x", rows["DCGAN on Stacked, bf16"][2])
    assert re.fullmatch(rf"1 sequential one-seed run: {figure} \({figure}; {figure}\)", rows["`replicas=2`"][1])
    assert "run directory:" not in out.stdout  # the runs' own output is kept out of the one table
