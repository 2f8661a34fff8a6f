"""The evaluation worker: same results as inline, errors surface, no deadlock, no main guard needed."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ganlab.offload import EvalJob, Offloader


def job(step, w_samples=50):
    rng = np.random.default_rng(step)
    centers = np.array([[2.0, 0.0], [-2.0, 0.0]])
    return EvalJob(step=step, fake=rng.normal(size=(60, 2)), real=rng.normal(size=(60, 2)),
                   d_grid=rng.normal(size=(10, 10)), centers=centers, limits=(-3.0, 3.0),
                   metrics={"modes_captured": 1, "high_quality_pct": 50.0}, history_steps=[step],
                   history_counts=[[30, 30]], w_samples=w_samples)


def test_background_matches_inline_and_keeps_order():
    inline, background = Offloader(background=False), Offloader(background=True)
    try:
        for step in (10, 20, 30):
            inline.submit(job(step))
            background.submit(job(step))
        a, b = inline.drain(), background.drain()
    finally:
        inline.close(), background.close()
    assert [r.step for r in b] == [10, 20, 30]
    assert [r.scalars for r in a] == [r.scalars for r in b]
    for result in b:
        assert set(result.images) == {"samples", "discriminator", "mode_histogram"}
        assert all(png.startswith(b"\x89PNG") for png in result.images.values())


def test_a_failing_job_raises_in_the_caller():
    offloader = Offloader(background=True)
    try:
        bad = job(1)
        bad.centers = None  # the pictures cannot be drawn
        offloader.submit(bad)
        with pytest.raises(RuntimeError, match="evaluation worker failed"):
            offloader.drain()
    finally:
        offloader.close()


def test_run_from_a_script_without_a_main_guard(tmp_path):
    """A worker started by multiprocessing's spawn would re-run such a script; ours does not."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from hydra import compose, initialize_config_dir
        from ganlab.config import CONFIG_DIR
        from ganlab.train import run
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["steps=10", "eval.every=5", "eval.samples=100",
                                              "eval.w_samples=50", "eval.background=true"])
        print("status", run(cfg, {str(tmp_path / 'run')!r})["status"])
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("status completed") == 1
