"""Fuzzing races and interrupted runs (issue 28, item 9), in processes of their own.

- Claims: 2 to 4 processes claim one run directory (ganlab/runlock.py) at the same instant, each after a random
  delay of its own, into a directory that is missing, empty, holds an earlier run's traces or a stale lock file:
  exactly one holds it; every other is refused in one line naming the holder; the directory's files stay as
  they were; however the holder ends (it lets go, or it is killed), the directory is free again.
- Interrupted runs (slow): a short run stopped at a random moment by kill -9, SIGTERM or Ctrl-C, then continued
  with resume=auto, ends with the summary and final samples of the run that was never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_caches import scratch
from test_fuzz_files import examples
from test_kill import group_alive
from test_resume import outcome

from ganlab.runlock import NAME, RunLock, holder, in_use_message
from ganlab.train import run

CLAIMER = r"""
import os, sys, time
from pathlib import Path

from ganlab import runlock
from ganlab.errors import GanlabError

directory, me, delay, ending = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
signals = directory.parent
(signals / f"ready_{me}").touch()
while not (signals / "go").exists():
    time.sleep(0.0002)
time.sleep(delay)
try:
    runlock.claim(directory)
except GanlabError as exc:
    print("refused", exc, flush=True)
    sys.exit(0)
print("won", os.getpid(), flush=True)
while not (signals / "end").exists():
    time.sleep(0.001)
if ending == "release":
    runlock.release(directory)
    print("released", flush=True)
    sys.exit(0)
time.sleep(60)  # "killed": the test kills it here, holding the lock
"""

BEFORE = {
    "missing": {},
    "empty": {".": None},
    "an earlier run": {"summary.json": b'{"status": "completed"}', "events.out.tfevents.1.host": b"\x00" * 16,
                       ".hydra/config.yaml": b"seed: 0\n", "checkpoint.pt": b"not really a checkpoint"},
    "a stale lock": {NAME: b"999999\n", "train.log": b"an old log\n"},
    "a garbled lock": {NAME: b"\xff\xfe not a pid", "summary.json": b"{}"},
}


def lay_out(directory: Path, files: dict) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is not None:
            path.write_bytes(content)


def contents(directory: Path) -> dict[str, bytes]:
    """Every file but the lock itself, which a claim rewrites with its pid."""
    if not directory.is_dir():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != NAME}


@examples(5, 300)
@given(before=st.sampled_from(sorted(BEFORE)), delays=st.lists(st.integers(0, 3000), min_size=2, max_size=4),
       ending=st.sampled_from(["release", "killed"]))
def test_simultaneous_claims_of_one_directory_leave_one_holder(tmp_path_factory, before, delays, ending):
    with scratch(tmp_path_factory) as base:
        directory = base / "run"
        lay_out(directory, BEFORE[before])
        kept = contents(directory)
        claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(directory), str(i), str(us / 1e6), ending],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for i, us in enumerate(delays)]
        try:
            deadline = time.monotonic() + 60
            while not all((base / f"ready_{i}").exists() for i in range(len(claimers))):
                assert all(p.poll() is None for p in claimers), [p.communicate() for p in claimers]
                assert time.monotonic() < deadline
                time.sleep(0.005)
            (base / "go").touch()
            said = {}
            for i, p in enumerate(claimers):  # the refused end at once; the holder waits for "end"
                line = p.stdout.readline().strip()
                said[i] = line
            winners = [i for i, line in said.items() if line.startswith("won ")]
            assert len(winners) == 1, said
            pid = claimers[winners[0]].pid
            assert said[winners[0]] == f"won {pid}"
            assert holder(directory) == pid  # seen from outside while it holds the directory
            for i, line in said.items():
                if i != winners[0]:
                    assert line in (f"refused {in_use_message(directory, pid)}",
                                    f"refused {in_use_message(directory, 0)}"), line  # pid not yet written
                    assert claimers[i].wait(timeout=30) == 0
            with pytest.raises(Exception, match="is in use"):
                RunLock(directory).__enter__()
            (base / "end").touch()
            if ending == "killed":
                claimers[winners[0]].kill()
            out, err = claimers[winners[0]].communicate(timeout=30)
            assert "Traceback" not in err, err
            assert claimers[winners[0]].returncode == (0 if ending == "release" else -signal.SIGKILL)
        finally:
            for p in claimers:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        assert holder(directory) is None  # never a stale lock, however the holder ended
        with RunLock(directory):
            assert holder(directory) == os.getpid()  # held by this process now
        assert contents(directory) == kept  # nothing the directory held was touched


# --- a run stopped at a random moment, then resume=auto ------------------------------------------------

# 40 steps, a checkpoint every 5 (so a kill -9 loses at most 5), evaluations at 20 and 40, inline.
RUN = ["debug=tiny_resume", "checkpoint.every=5", "log.every=5"]
SIGNALS = {"kill -9": signal.SIGKILL, "sigterm": signal.SIGTERM, "ctrl-c": signal.SIGINT}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run(make_cfg(*RUN), run_dir)
    return outcome(run_dir)


def checkpointed_step(run_dir: Path) -> int:
    try:
        return int(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - not there yet
        return -1


@pytest.mark.slow
@examples(2, 20)
@given(after_step=st.sampled_from([-1, 0, 5, 10, 20, 30]), delay_ms=st.integers(0, 400), how=st.sampled_from(sorted(SIGNALS)))
def test_a_run_stopped_at_a_random_moment_and_resumed_equals_the_uninterrupted_one(tmp_path_factory, uninterrupted,
                                                                                    after_step, delay_ms, how):
    """`after_step`: the signal goes `delay_ms` after the checkpoint of that step is on disk (-1: after the start)."""
    with scratch(tmp_path_factory) as base:
        run_dir = base / "run"
        proc = subprocess.Popen([sys.executable, "-m", "ganlab", "train", *RUN, f"hydra.run.dir={run_dir}"],
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while after_step >= 0 and checkpointed_step(run_dir) < after_step and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint was written"
                time.sleep(0.02)
            time.sleep(delay_ms / 1000)
            if how == "ctrl-c":
                os.killpg(proc.pid, SIGNALS[how])  # a terminal's Ctrl-C reaches the whole process group
            else:
                proc.send_signal(SIGNALS[how])
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        assert "Traceback" not in out + err and "Exception" not in out + err, out + err
        deadline = time.monotonic() + 10
        while group_alive(proc.pid):  # nothing of the run outlives it
            assert time.monotonic() < deadline, "a process of the run outlived it"
            time.sleep(0.05)

        summary = run(make_cfg(*RUN, "resume=auto"), run_dir)  # what the stopped run's message says to run
        assert (summary["status"], summary["step"]) == ("completed", 40)
        x, done = outcome(run_dir)
        x_ref, ref = uninterrupted
        assert np.array_equal(x, x_ref)  # bit-identical final samples
        for key in ("metrics", "mode_history", "history", "references"):
            assert done[key] == ref[key], key
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
