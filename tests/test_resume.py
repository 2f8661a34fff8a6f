"""Interrupted and resumed runs, end to end in subprocesses: SIGTERM (the run saves and stops) and
kill -9 (resumed from the last periodic checkpoint) must end bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, ganlab, make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ganlab.errors import ConfigError, GanlabError
from ganlab.train import Diverged, run

# Long enough that a signal sent after the first periodic checkpoint lands mid-run; cheap evaluations.
RUN = ["steps=160", "checkpoint.every=40", "eval.every=80", "log.every=20", "eval.samples=300",
       "eval.w_samples=100", "eval.background=false", "batch_size=64"]
SETUPS = {
    "gan": [],
    "wgan_gp": ["loss=wgan_gp"],
    "extra_networks": ["remedy=mrgan"],   # an encoder with its own optimizer
    "unrolled": ["remedy=unrolled", "remedy.unrolled.k=2"],
}


def start(run_dir, *overrides) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ganlab", "train", *RUN, *overrides, f"hydra.run.dir={run_dir}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir, after_ns: int = 0, timeout: float = 120) -> None:
    """Until the run writes a checkpoint (newer than `after_ns`, a modification time)."""
    path, deadline = run_dir / "checkpoint.pt", time.monotonic() + timeout
    while not (path.exists() and path.stat().st_mtime_ns > after_ns):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The uninterrupted run of each setup, trained once, in-process (the same computation as the CLI's)."""
    made = {}

    def reference(setup: str):
        if setup not in made:
            run_dir = tmp_path_factory.mktemp(f"reference_{setup}")
            run(make_cfg(*RUN, *SETUPS[setup]), run_dir)
            made[setup] = outcome(run_dir)
        return made[setup]
    return reference


def outcome(run_dir) -> tuple[np.ndarray, dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return np.load(run_dir / "samples.npz")["x"], summary


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_killed_then_terminated_then_resumed_run_is_bit_identical(tmp_path, references, setup):
    """One chain per setup: kill -9 after the first periodic checkpoint, resume through the CLI,
    SIGTERM after the next checkpoint, resume again (in-process): the end must equal the
    uninterrupted run's, bit for bit."""
    overrides, run_dir = SETUPS[setup], tmp_path / "run"

    first = start(run_dir, *overrides)
    wait_for_checkpoint(first, run_dir)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert killed_at == 40  # the last periodic checkpoint: what kill -9 leaves

    written = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    second = start(run_dir, *overrides, f"resume={run_dir}")  # the CLI continues in the run's directory
    wait_for_checkpoint(second, run_dir, after_ns=written)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 128 + signal.SIGTERM, err
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == stopped_at and 40 < stopped_at < 160
    assert "interrupted by SIGTERM" in summary["error"] and f"resume={run_dir}" in summary["error"]
    assert "SIGTERM" in out + err
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / ".hydra_resume" / "config.yaml").exists()

    run(make_cfg(*RUN, *overrides, f"resume={run_dir}"), run_dir)
    x_ref, s_ref = references(setup)
    x, s = outcome(run_dir)
    assert np.array_equal(x, x_ref)                       # bit-identical final samples
    assert s["metrics"] == s_ref["metrics"]               # and metrics
    assert s["mode_history"] == s_ref["mode_history"]
    assert s["status"] == "completed" and s["resumed_from_step"] == stopped_at
    # TensorBoard: what a segment logged after its checkpoint is purged, so every scalar has each
    # step once, in order (kill -9 leaves points past the checkpoint in the first file).
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("loss/d")] == list(range(20, 161, 20))


def snapshot(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_a_resume_with_a_different_config_is_refused_naming_the_keys(finished):
    before = snapshot(finished)
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's in loss._target_.*resume_force=true"):
        run(make_cfg(*TINY_RUN, "loss=lsgan", f"resume={finished}"), finished)
    assert snapshot(finished) == before  # nothing written
    # Run-length keys may change; resume_force=true overrides the check.
    summary = run(make_cfg(*TINY_RUN, "eval.every=10", "optim.g.lr=5e-4", "resume_force=true",
                           f"resume={finished}"), finished)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 20


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "is truncated or corrupt"),
    (lambda path: path.write_bytes(b"not a checkpoint"), "is truncated or corrupt"),
])
def test_a_corrupt_checkpoint_is_refused_in_one_line_and_nothing_is_touched(finished, damage, message):
    damage(finished / "checkpoint.pt")
    before = snapshot(finished)
    result = ganlab("train", *TINY_RUN, f"resume={finished}", cwd=finished.parent)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ganlab: error:")]
    assert len(errors) == 1 and message in errors[0] and str(finished / "checkpoint.pt") in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(finished) == before


def test_a_checkpoint_of_another_model_and_a_missing_run_are_refused(finished, tmp_path):
    before = snapshot(finished)
    other = ganlab("train", *TINY_RUN, "model.g.width=64", "resume_force=true", f"resume={finished}", cwd=tmp_path)
    assert other.returncode == 2
    errors = [line for line in other.stderr.splitlines() if line.startswith("ganlab: error:")]
    assert len(errors) == 1 and "does not match the run's model" in errors[0] and "Traceback" not in other.stderr
    assert snapshot(finished) == before
    result = ganlab("train", f"resume={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ganlab: error: resume: no run directory or checkpoint at {tmp_path / 'nowhere'}"]


def test_a_failed_checkpoint_write_keeps_the_previous_one(finished, monkeypatch):
    import errno

    from ganlab import checkpoint

    before = (finished / "checkpoint.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(GanlabError, match="cannot write checkpoint .*No space left on device.*previous checkpoint") as failed:
        run(make_cfg(*TINY_RUN, f"resume={finished}"), finished)
    assert failed.value.exit_code == 1  # the CLI prints the message as one line and exits with it: a write error
    assert (finished / "checkpoint.pt").read_bytes() == before
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert not list(finished.glob(".*.tmp"))  # the temporary file is gone too


def test_a_sweep_rerun_with_resume_auto_skips_completed_resumes_interrupted_and_starts_the_rest(tmp_path):
    sweep = ["-m", "seed=0,1,2", "resume=auto", "steps=60", "checkpoint.every=20", "eval.every=60", "log.every=20",
             "eval.samples=200", "eval.w_samples=100", "eval.background=false", "batch_size=32"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "ganlab", "train", *sweep], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt the sweep while its second job is under way (after that job's first checkpoint).
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("outputs/multirun/*/*/1_*/checkpoint.pt")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM  # the whole sweep stops
    (sweep_dir,) = tmp_path.glob("outputs/multirun/*/*")
    jobs = {p.name.split("_")[0]: p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()}
    assert set(jobs) == {"0", "1"}  # the third job never started
    done_before = (jobs["0"] / "summary.json").read_bytes()
    interrupted = json.loads((jobs["1"] / "summary.json").read_text())
    assert interrupted["status"] == "interrupted"

    second = ganlab("train", *sweep, cwd=tmp_path, timeout=300)  # the same command again
    assert second.returncode == 0, second.stderr
    assert list(tmp_path.glob("outputs/multirun/*/*")) == [sweep_dir]  # the same sweep continued
    assert (jobs["0"] / "summary.json").read_bytes() == done_before  # skipped
    resumed = json.loads((jobs["1"] / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == interrupted["step"]
    (third,) = sweep_dir.glob("2_*")
    started = json.loads((third / "summary.json").read_text())
    assert started["status"] == "completed" and "resumed_from_step" not in started


def test_a_restart_from_scratch_logs_each_step_once_in_tensorboard(tmp_path):
    """Issue 28: resume=auto into a directory whose run stopped before its first checkpoint starts afresh;
    TensorBoard then shows that run alone: every scalar once per step (the step-0 reference rows
    included), not the stopped run's points beside the new ones."""
    run_dir = tmp_path / "run"
    run(make_cfg(*TINY_RUN, "steps=10"), run_dir)
    for name in ("checkpoint.pt", "summary.json", "samples.npz"):  # as if killed before its first checkpoint
        (run_dir / name).unlink()
    summary = run(make_cfg(*TINY_RUN, "steps=10", "resume=auto"), run_dir)
    assert summary["status"] == "completed" and "resumed_from_step" not in summary
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    assert any(t.startswith("reference/") for t in tags) and "loss/d" in tags
    for tag in tags:
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)


def test_a_diverging_run_keeps_its_last_good_checkpoint(finished):
    good = (finished / "checkpoint.pt").read_bytes()
    # From the good state at step 20, an absurd D learning rate makes the losses non-finite.
    with pytest.raises(Diverged):
        run(make_cfg(*TINY_RUN, "optim.d.lr=1e30", "resume_force=true", f"resume={finished}"), finished)
    assert (finished / "checkpoint.pt").read_bytes() == good
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["status"] == "diverged" and 20 < summary["diverged_step"] <= 40


def test_an_output_directory_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    result = ganlab("train", *TINY_RUN, f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert result.returncode == 1  # a write error, found before the run: the status of every one (docs/cli.md)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ganlab: error:")]
    assert len(errors) == 1 and f"cannot write to the output directory {blocker / 'run'}" in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert blocker.read_text() == "keep me"


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume_dir_and_with_resume_auto(tmp_path, capsys,
                                                                                               monkeypatch):
    """Issue 28: kill -9 before the first checkpoint leaves the .hydra/ record, train.log and the events, and no
    checkpoint. `resume=DIR` starts the run again there from step 0 with the config its record holds, and so
    does the original command plus resume=auto, each saying so in one log line; both end as the run did."""
    from test_sweep_safety import in_process

    command = ["train", "debug=tiny", "steps=5", "loss=hinge", "seed=3", "hydra.run.dir=run"]
    code, _, err = in_process(command, capsys, monkeypatch, tmp_path)
    assert code == 0, err
    run_dir = tmp_path / "run"
    uninterrupted = json.loads((run_dir / "summary.json").read_text())
    record = (run_dir / ".hydra" / "config.yaml").read_bytes()
    for again in (["train", f"resume={run_dir}"], [*command, "resume=auto"]):
        for name in ("checkpoint.pt", "summary.json", "samples.npz"):  # what kill -9 before the first checkpoint leaves
            (run_dir / name).unlink()
        code, out, err = in_process(again, capsys, monkeypatch, tmp_path)
        assert code == 0, (again, err)
        said = [line for line in (out + err).splitlines() if "starting it again from step 0" in line]
        assert len(said) == 1 and str(run_dir) in said[0], (again, out + err)
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["status"] == "completed" and s["step"] == 5 and "resumed_from_step" not in s
        assert s["seed"] == 3 and s["config"]["loss"]["_target_"].endswith("Hinge")
        assert s["metrics"] == uninterrupted["metrics"] and s["mode_history"] == uninterrupted["mode_history"]
        if again[1].startswith("resume="):  # the record it restarted with stays; this command's goes beside it
            assert (run_dir / ".hydra" / "config.yaml").read_bytes() == record
            assert (run_dir / ".hydra_resume" / "overrides.yaml").exists()
    assert (run_dir / "train.log").read_text().count("starting it again from step 0") == 2
    # Started again with another config than its record's: refused in one line, nothing touched.
    for name in ("checkpoint.pt", "summary.json", "samples.npz"):
        (run_dir / name).unlink()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = in_process([*command, "seed=4", "resume=auto"], capsys, monkeypatch, tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "stopped before its first checkpoint, started with another config" in err and "differs in seed" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_the_first_checkpoint_is_written_when_due_while_the_evaluation_worker_is_busy(tmp_path, monkeypatch):
    """Issue 28: the first periodic checkpoint falls on its step even when the worker has a job in hand (a
    run had none at step ~1,500): until it is written, a kill loses the whole run. Later ones may wait for
    an idle worker, at most `checkpoint.every` steps."""
    from ganlab import checkpoint
    from ganlab.evaluation.worker import SharedOffloader

    monkeypatch.setattr(SharedOffloader, "busy", lambda self: True)  # a worker that never catches up
    saved, real_save = [], checkpoint.save

    def save(path, exp, step, *args, **kwargs):
        saved.append(step)
        return real_save(path, exp, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save)
    run(make_cfg("debug=tiny", "steps=20", "checkpoint.every=4"), tmp_path / "run")
    assert saved[0] == 4, saved
    assert saved == [4, 12, 20], saved  # then owed from 8 and written 4 steps late; the final one


def test_a_restarts_events_file_sorts_after_the_earlier_ones_even_in_the_same_second(tmp_path):
    """TensorBoard reads a run's events files in name order; a file of this second whose counter is 9 sorts after one
    whose counter is 10 (text). The tracker waits for the next second before its file, so a restart's file is last."""
    import time

    from ganlab.tracking import Tracker

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.1.9").write_bytes(b"")
    tracker = Tracker(tmp_path, 10, {}, (), progress=False, purge_step=0)
    tracker.writer.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert names[0] == f"events.out.tfevents.{now}.host.1.9" and int(names[1].split(".")[3]) > now
    future = tmp_path / f"events.out.tfevents.{now + 3600}.host.1.0"  # a clock an hour ahead: not waited for
    future.write_bytes(b"")
    start = time.monotonic()
    Tracker(tmp_path, 10, {}, (), progress=False).writer.close()
    assert time.monotonic() - start < 5
