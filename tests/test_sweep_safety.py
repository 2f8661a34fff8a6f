"""Resume as printed, resume=auto that never reports another config's run as done, one process per
run directory, and sweeps that end with a line saying where they are and what to run next."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, ganlab, run_dirs

from ganlab.cli import main
from ganlab.runlock import RunLock, holder


def in_process(args: list[str], capsys, monkeypatch, cwd: Path) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    # An earlier in-process job's logging config writes to that test's (closed) capture stream.
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_the_printed_resume_hint_works_as_printed(tmp_path):
    """The card's example, interrupted: the hint it prints, run as printed, finishes the run with
    the config it started with (no override retyped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "60"}  # narrow: nothing may wrap the command
    args = ["train", "loss=wgan_gp", "remedy=unrolled", "remedy.unrolled.k=2", "seed=5", *TINY, "steps=400",
            "checkpoint.every=20", "hydra.run.dir=outputs/card"]
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint, deadline = tmp_path / "outputs/card/checkpoint.pt", time.monotonic() + 240
    while not checkpoint.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    hint = [line for line in (out + err).splitlines() if "continue with `ganlab train resume=" in line]
    assert hint, out + err
    command = hint[0].split("continue with `", 1)[1].split("`", 1)[0]
    assert command == f"ganlab train resume={tmp_path / 'outputs/card'}"
    resumed = ganlab(*command.split()[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    done = summary(tmp_path / "outputs/card")
    assert done["status"] == "completed" and done["step"] == 400 and done["resumed_from_step"] > 0
    assert done["config"]["loss"]["_target_"].endswith("WGANGP") and done["seed"] == 5
    assert "unrolled" in done["config"]["remedy"]


@pytest.fixture
def stopped_run(tmp_path):
    """A CLI run of 20 steps (its .hydra record says how it was started)."""
    out = ganlab("train", *TINY, "loss=hinge", "optim.d.lr=0.0004", "hydra.run.dir=outputs/r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path / "outputs/r"


def test_a_resume_changes_run_length_keys_only(stopped_run, capsys, monkeypatch):
    cwd, before = stopped_run.parent.parent, summary(stopped_run)
    code, _, err = in_process(["train", f"resume={stopped_run}", "loss=nsgan"], capsys, monkeypatch, cwd)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("ganlab: error: resume: the config differs from the checkpoint's in "
                                         "loss._target_"), err
    assert "resume_force=true" in last and "Traceback" not in err
    assert summary(stopped_run) == before  # nothing touched
    # Repeating the run's own settings is not a change; a longer run is.
    code, _, err = in_process(["train", f"resume={stopped_run}", "optim.d.lr=0.0004", "steps=30"],
                              capsys, monkeypatch, cwd)
    assert code == 0, err
    after = summary(stopped_run)
    assert (after["status"], after["step"], after["resumed_from_step"]) == ("completed", 30, 20)
    assert after["config"]["loss"]["_target_"].endswith("Hinge") and after["config"]["optim"]["d"]["lr"] == 0.0004


def sweep(*extra: str) -> list[str]:
    return ["train", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=outputs/sw", "resume=auto", *extra]


def test_resume_auto_never_reports_another_configs_run_as_done(tmp_path, capsys, monkeypatch):
    code, out, err = in_process(sweep(), capsys, monkeypatch, tmp_path)
    assert code == 0, err
    done = {d.name: summary(d) for d in run_dirs(tmp_path / "outputs/sw")}
    # The sweep's closing line names its directory and the report to run.
    assert f"2 completed; compare them with `ganlab report {tmp_path / 'outputs/sw'}`" in out
    # A changed learning rate: refused before any job, nothing touched.
    code, _, err = in_process(sweep("optim.d.lr=0.001"), capsys, monkeypatch, tmp_path)
    assert code == 2 and "differs from every job of this command in optim.d.lr" in err, err
    assert {d.name: summary(d) for d in run_dirs(tmp_path / "outputs/sw")} == done
    # The same sweep again: skipped, nothing retrained.
    code, out, err = in_process(sweep(), capsys, monkeypatch, tmp_path)
    assert code == 0 and {d.name: summary(d) for d in run_dirs(tmp_path / "outputs/sw")} == done
    # Another sweep kept inside this one's directory (its own multirun.yaml) is not one of its runs.
    code, _, err = in_process(["train", "-m", *TINY, "seed=0", "optim.d.lr=0.001", "hydra.sweep.dir=outputs/sw/other",
                               "resume=auto"], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    code, out, err = in_process(sweep(), capsys, monkeypatch, tmp_path)
    assert code == 0, err
    # More steps: the completed runs train on from their final checkpoints.
    code, out, err = in_process(sweep("steps=30"), capsys, monkeypatch, tmp_path)
    assert code == 0, err
    for d in run_dirs(tmp_path / "outputs/sw"):
        s = summary(d)
        expected = ("completed", 20, None) if "other" in d.parts else ("completed", 30, 20)  # the nested sweep's run stays
        assert (s["status"], s["step"], s.get("resumed_from_step")) == expected


def test_a_config_key_added_later_matches_runs_made_before_it_at_its_old_behaviour():
    """A stacked run from before dataset.classes existed is a classes=mode run, and no other."""
    from ganlab.checkpoint import differing_keys

    old = {"dataset": {"_target_": "ganlab.data.images.stacked_fashion_mnist", "n": 128000}, "seed": 0}
    new = {"dataset": {**old["dataset"], "classes": "mode"}, "seed": 0}
    assert differing_keys(old, new) == []
    assert differing_keys(old, {**new, "dataset": {**new["dataset"], "classes": "first"}}) == ["dataset.classes"]
    assert differing_keys(old, {**new, "seed": 1}) == ["seed"]


def test_a_run_directory_in_use_is_refused(tmp_path, capsys, monkeypatch):
    busy = tmp_path / "outputs/busy"
    busy.mkdir(parents=True)
    with RunLock(busy):
        assert holder(busy) == os.getpid()
        code, _, err = in_process(["train", *TINY, "hydra.run.dir=outputs/busy"], capsys, monkeypatch, tmp_path)
        assert code == 2 and err.strip() == (f"ganlab: error: run directory outputs/busy is in use by process "
                                             f"{os.getpid()} (a run is training there); wait for it to end, or "
                                             "choose another directory"), err
        with pytest.raises(Exception, match="is in use"):
            RunLock(busy).__enter__()
    assert holder(busy) is None  # released with the process (or the context): never stale
    assert not (busy / ".hydra").exists()


def test_two_runs_started_into_one_directory(tmp_path):
    """The second, started while the first trains, is refused; the first completes untouched."""
    first = subprocess.Popen([sys.executable, "-m", "ganlab", "train", *TINY, "steps=300",
                              "hydra.run.dir=outputs/same"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock, deadline = tmp_path / "outputs/same/.ganlab.lock", time.monotonic() + 120
    while holder(lock.parent) is None:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = ganlab("train", *TINY, "seed=1", "hydra.run.dir=outputs/same", cwd=tmp_path)
    assert second.returncode == 2 and "is in use by process" in second.stderr, second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    s = summary(tmp_path / "outputs/same")
    assert (s["status"], s["seed"], s["step"]) == ("completed", 0, 300)
    assert len(list((tmp_path / "outputs/same").glob("events.out.tfevents.*"))) == 1


def test_a_job_that_crashes_does_not_stop_the_sweep(tmp_path, capsys, monkeypatch):
    """A bug or resource error in one job (not a GanlabError): one line for it, the traceback in its
    train.log, the other jobs run, and the sweep ends with its summary line and exit status 1."""
    from ganlab import train

    real_start = train.start

    def crash_seed_0(cfg, *args, **kwargs):
        if cfg.seed == 0:
            raise RuntimeError("simulated crash")
        return real_start(cfg, *args, **kwargs)

    monkeypatch.setattr(train, "start", crash_seed_0)
    code, out, err = in_process(["train", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=outputs/crash"],
                                capsys, monkeypatch, tmp_path)
    assert code == 1
    assert "Traceback" not in out + err and "HYDRA_FULL_ERROR" not in out + err
    assert "1 completed" in err and "compare them with `ganlab report" in err
    crashed = next((tmp_path / "outputs/crash").glob("0_*"))
    assert "RuntimeError: simulated crash" in (crashed / "train.log").read_text()


def test_a_sweep_with_resume_path_and_a_merge_error_are_refused_before_any_job(tmp_path, capsys, monkeypatch):
    code, _, err = in_process(["train", "-m", "seed=0,1", "resume=garbage"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "resume=PATH continues one run" in err and len(err.strip().splitlines()) == 1
    code, _, err = in_process(["train", "-m", "steps=abc", "seed=0,1", "steps=3"], capsys, monkeypatch, tmp_path)
    assert code == 2 and err.strip() == "ganlab: error: bad value for 'steps': steps='abc' is not an integer"
    assert not (tmp_path / "outputs").exists()
