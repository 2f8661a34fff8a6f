"""The evaluation worker: same results as inline, errors surface, no deadlock, no main guard needed."""

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ganlab.evaluation.jobs import EvalJob
from ganlab.evaluation.worker import Offloader


def job(step, w_samples=50):
    rng = np.random.default_rng(step)
    centers = np.array([[2.0, 0.0], [-2.0, 0.0]])
    return EvalJob(step=step, fake=rng.normal(size=(60, 2)), real=rng.normal(size=(60, 2)),
                   d_grid=rng.normal(size=(10, 10)), centers=centers, limits=(-3.0, 3.0),
                   metrics={"modes_captured": 1, "high_quality_pct": 50.0}, history_steps=[step],
                   history_counts=[[30, 30]], w_samples=w_samples, mmd_sigma=1.0)


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


def test_the_last_job_splits_its_work_and_gives_the_same_results():
    """The run's last job solves W1 and W2 in two threads while it draws: the same numbers and
    pictures as one after the other."""
    from dataclasses import replace

    from ganlab.metrics.wasserstein import empirical_wasserstein

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 2)), rng.normal(0.3, 1.2, size=(300, 2))
    assert empirical_wasserstein(x, y, parallel=True) == empirical_wasserstein(x, y)
    plain = job(40)
    serial, split = plain.complete(), replace(plain, last=True).complete()
    assert split.scalars == serial.scalars and set(split.images) == set(serial.images)
    assert split.images["samples"] == serial.images["samples"]


def test_only_the_runs_last_evaluation_is_marked_last(tmp_path, monkeypatch):
    from conftest import TINY, make_cfg

    from ganlab.evaluation.toy import ToyEvaluator
    from ganlab.train import run

    marked = []
    original = ToyEvaluator.job
    monkeypatch.setattr(ToyEvaluator, "job", lambda self, step, ev, last=False: marked.append((step, last))
                        or original(self, step, ev, last))
    run(make_cfg(*TINY, "steps=30", "eval.every=10"), tmp_path / "run")
    assert marked == [(10, False), (20, False), (30, True)]


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


@pytest.mark.parametrize("background", [False, True])
def test_after_a_failed_job_nothing_waits_for_results_that_will_not_come(background):
    """A job that raises (inline: in submit; in the worker: in drain) leaves no result owed: a later
    drain (the one a failed run's finish makes) returns at once instead of waiting forever."""
    offloader = Offloader(background=background)
    try:
        bad = job(1)
        bad.centers = None
        # inline: the job's own error, raised by submit; background: the worker's, naming it, raised by drain
        error = RuntimeError if background else TypeError
        prefix = "evaluation worker failed: TypeError: " if background else ""
        with pytest.raises(error, match="^" + re.escape(prefix + "object of type 'NoneType' has no len()") + "$"):
            offloader.submit(bad)
            assert background  # inline, submit raised
            offloader.drain()
        assert offloader.drain() == []
        assert not offloader.busy()
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


def test_the_worker_ignores_sigint_and_keeps_serving(capfd):
    """Ctrl-C reaches the whole process group; the training process handles it and still needs
    the worker (its last checkpoint drains the pending results)."""
    import os
    import signal
    import time

    offloader = Offloader(background=True)
    try:
        offloader.submit(job(10))
        assert [r.step for r in offloader.drain()] == [10]  # the worker is serving
        for _ in range(3):
            os.kill(offloader.worker.pid, signal.SIGINT)
        time.sleep(0.3)
        assert offloader.worker.poll() is None
        offloader.submit(job(20))
        assert [r.step for r in offloader.drain()] == [20]
    finally:
        offloader.close()
    assert offloader.worker.returncode == 0  # closing its input ended it normally
    err = capfd.readouterr().err  # the worker writes to this process's stderr (fd 2)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


SLOW_JOB = """
import time
class SlowJob:
    def complete(self):
        time.sleep(120)
"""

PARENT = """
import sys, time
from slow_job import SlowJob
from ganlab.evaluation.worker import Offloader
offloader = Offloader(background=True)
offloader.submit(SlowJob())
print(offloader.worker.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_worker_dies_with_a_killed_parent_silently(tmp_path):
    """kill -9 of the training process while the worker is busy with a long job (two minutes):
    the kernel ends the worker at once (it would otherwise finish the job, then hit a broken pipe)."""
    import os
    import signal
    import time

    (tmp_path / "slow_job.py").write_text(SLOW_JOB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1.0)  # the worker unpickles the job and sleeps in it
        assert _alive(worker)
        parent.kill()
        # The worker shares the parent's stderr pipe: its end closes only when the worker is gone.
        _, err = parent.communicate(timeout=20)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
        assert "Traceback" not in err and "Error" not in err, err
    finally:
        parent.kill()
        if worker is not None and _alive(worker):  # a failed test leaves no two-minute sleeper
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_answers_nobody_reads_exits_silently():
    """The training process stopped reading (it died): the worker's write fails with a broken pipe,
    and it exits without a traceback, and without Python's 'Exception ignored' at shutdown."""
    import pickle

    worker = subprocess.Popen([sys.executable, "-m", "ganlab.evaluation.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker.stdout.close()  # nobody reads the answers
    pickle.dump(job(10), worker.stdin)
    worker.stdin.close()
    err = worker.stderr.read().decode()
    assert worker.wait(timeout=60) == 0
    assert err == ""


def test_a_periodic_checkpoint_waits_for_an_idle_worker_at_most_its_interval():
    """The checkpoint owed at a multiple of checkpoint.every is written at the first step at which the
    worker has no job in hand (it would otherwise stall on the same step's W1/W2 and pictures), and
    at most checkpoint.every steps late."""
    from types import SimpleNamespace

    from ganlab.train import CheckpointPolicy

    busy = {"now": False}
    due = CheckpointPolicy(10, SimpleNamespace(busy=lambda: busy["now"])).due
    assert [s for s in range(1, 31) if due(s)] == [10, 20, 30]  # an idle (or inline) worker: the multiples
    busy["now"] = True
    assert not due(40) and not due(41)
    busy["now"] = False
    assert due(42) and not due(43)  # written once the worker is idle, and owed no longer
    busy["now"] = True
    assert not any(due(s) for s in range(50, 60)) and due(60)  # never more than checkpoint.every late


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_the_worker_ignores_ctrl_c_and_sigterm_from_its_first_instruction():
    """Ignored before exec, not only once its module runs: a Ctrl-C to the process group while `-m`
    still imports the ganlab.evaluation package must not print a KeyboardInterrupt traceback (seen in
    test_kill before this was so)."""
    offloader = Offloader(background=True)
    try:
        status = Path(f"/proc/{offloader.worker.pid}/status").read_text()  # read at once: still starting up
        ignored = int(status.split("SigIgn:")[1].split()[0], 16)
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))
    finally:
        offloader.close()


def test_the_reference_rows_offline_part_comes_from_the_worker_unchanged(tmp_path):
    """A fresh run hands its reference rows' W1/W2 and MMD to the worker (they were most of the start-up);
    summary.json, the checkpoint and TensorBoard hold the same numbers as when they are computed inline,
    and a run that diverges before its first checkpoint still gets them."""
    from conftest import TINY, make_cfg
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ganlab import checkpoint
    from ganlab.tracking import finite_or_none
    from ganlab.train import Diverged, run

    inline = run(make_cfg(*TINY), tmp_path / "inline")
    background = run(make_cfg(*TINY, "eval.background=true"), tmp_path / "background")
    assert background["references"] == inline["references"]
    for row in ("untrained", "gaussian", "data"):
        assert {"wasserstein1", "wasserstein2", "mmd", "modes_captured"} <= set(background["references"][row])
    state = checkpoint.read(tmp_path / "background" / checkpoint.NAME)["loop"]
    assert finite_or_none(state["references"]) == inline["references"]  # summary.json has null for NaN
    events = EventAccumulator(str(tmp_path / "background"), size_guidance={"scalars": 0}).Reload()
    w1 = events.Scalars("reference/gaussian/wasserstein1")
    assert [(e.step, e.value) for e in w1] == [(0, pytest.approx(inline["references"]["gaussian"]["wasserstein1"]))]

    with pytest.raises(Diverged):
        run(make_cfg(*TINY, "eval.background=true", "optim.d.lr=1e30"), tmp_path / "diverged")
    diverged = json.loads((tmp_path / "diverged" / "summary.json").read_text())
    assert diverged["references"]["data"]["wasserstein1"] == inline["references"]["data"]["wasserstein1"]
