import os

# One BLAS thread per test process, set before numpy loads OpenBLAS (the Makefile's `test` sets it too): with two
# xdist workers on 2 cores, OpenBLAS's own threads spin against the other worker's, and a 512 x 512 eigh took 1.85 s
# instead of 0.05 s (measured here, loaded machine); every FID, W2 and covariance in the suite pays that.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest
from hypothesis import settings

from ganlab.config import compose_config

REPO = Path(__file__).resolve().parents[1]
# The tests' mode classifiers are their own (a private $GANLAB_CACHE each): the one shipped with ganlab stays out
# of them, subprocesses included, unless a test asks for it (tests/test_shipped_classifier.py).
os.environ["GANLAB_SHIPPED_CLASSIFIERS"] = "0"

# Hypothesis (tests/test_fuzz_*.py). "default": few examples, the same ones every run (derandomize), so `make test`
# stays quick and deterministic; "fuzz" (`make fuzz`, HYPOTHESIS_PROFILE=fuzz): many fresh random ones. Each property
# scales its own count from these (test_fuzz_files.examples). No example database is written into the checkout.
settings.register_profile("default", max_examples=20, derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("fuzz", max_examples=2000, derandomize=False, database=None, deadline=None,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a second torch thread per worker would only oversubscribe
    # the cores. The runs a test starts, in this process or as a command, hold that one core too:
    # cpu_threads=auto reads it (ganlab/threads.py). On both cores, beside two other busy processes, the toy
    # results doc's test took 349 s (CI's runs of it: 30-39 s); with this, 84 s for it and tests/test_threads.py.
    import torch

    torch.set_num_threads(1)
    os.environ["GANLAB_JOB_CORES"] = "1"
# Tiny runs: a few steps, the cheapest evaluation, W1/W2 and pictures inline (no worker start-up):
# ganlab/configs/debug/tiny.yaml.
TINY = ["debug=tiny"]
# Image tests: a DCGAN of 4 base channels, batch 8: the smallest image GAN that exercises every layer type.
# D with layer norm: every loss combines with it (DCGAN's default batch-norm D refuses gradient penalties,
# test_image_training.py::test_dcgan_d_has_batch_norm_and_refuses_penalties).
TINY_DCGAN = ["model=dcgan", "model.g.width=4", "model.d.width=4", "model.d.norm=layer", "model.encoder.width=4",
              "batch_size=8"]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """Tiny Fashion-MNIST files in the IDX format (tests/test_image_data.py), so no test needs real data."""
    from test_image_data import fake_mnist

    root = tmp_path_factory.mktemp("data")
    fake_mnist(root, "fashion_mnist", n_train=40, n_test=10)
    return root


def make_cfg(*overrides: str):
    return compose_config(list(overrides))


# Remedy tests: parameters before a step, whether a step changed them, an experiment built from overrides.
def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    import torch

    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def built(*overrides):
    """The experiment of `overrides` on the CPU, seeded, at its first step (schedules started)."""
    import torch

    from ganlab.gan import build, seed_everything

    seed_everything(0)
    exp = build(make_cfg(*overrides), torch.device("cpu"))
    exp.remedy.begin_step(1)
    return exp


def ganlab(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed CLI in a subprocess, the way a user does."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ganlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ganlab_on_terminal(*args: str, cwd: Path, columns: int = 160, timeout: int = 300) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout/stderr; return (exit status, screen text)."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", *args], cwd=cwd, env=env,
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


@pytest.fixture
def tiny():
    return list(TINY)


# Resume and fault tests: a 40-step run with a checkpoint every 20 steps (ganlab/configs/debug/tiny_resume.yaml),
# and one stopped at step 20.
TINY_RUN = ["debug=tiny_resume"]


@pytest.fixture
def finished(tmp_path):
    """A run that stopped at step 20 of 40 (as if killed after its first periodic checkpoint)."""
    from ganlab.train import run

    run_dir = tmp_path / "run"
    run(make_cfg(*TINY_RUN, "steps=20"), run_dir)
    return run_dir


def pytest_configure(config):
    # Registered here, beside the suite (pyproject.toml registers `slow`): scripts/gpu_check.sh runs `pytest -m cuda`.
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one); scripts/gpu_check.sh runs them")


def pytest_collection_modifyitems(config, items):
    """The slow tests first: `make test`'s two workers take tests in this order, and a 3-minute test
    drawn last leaves one worker idle while the other finishes it (longest first balances them)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
