"""Resume as printed, resume=auto that never reports another config's run as done, one process per
run directory, and sweeps that end with a line saying where they are and what to run next."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, ganlab, run_dirs

from ganlab.cli import main
from ganlab.errors import GanlabError
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
        with pytest.raises(GanlabError, match="^" + re.escape(f"run directory {busy} is in use by process {os.getpid()} "
                                                              "(a run is training there); wait for it to end, or "
                                                              "choose another directory") + "$"):
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


def test_an_interrupted_sweep_is_continued_in_place_by_its_own_command_plus_resume_auto(tmp_path, capsys,
                                                                                      monkeypatch):
    """Issue 28: SIGTERM in the second job of `ganlab train -m ... seed=0,1,2` prints ONE command, the same
    one plus resume=auto; that command finds the sweep by its jobs' configs (its override list now has
    resume=auto too), continues it in place (job 0 skipped, job 1 resumed, job 2 started), and every
    summary ends as an uninterrupted sweep's."""
    import shlex

    from ganlab import train

    command = ["train", "-m", *TINY, "steps=10", "seed=0,1,2"]
    reference = tmp_path / "reference"
    reference.mkdir()
    code, _, err = in_process(command, capsys, monkeypatch, reference)
    assert code == 0, err
    expected = {s["seed"]: s for s in map(summary, run_dirs(reference / "outputs/multirun"))}
    assert sorted(expected) == [0, 1, 2]

    real_step, calls = train.take_step, []

    def sigterm_in_the_second_job(*args, **kwargs):
        calls.append(1)
        if len(calls) == 15:  # step 5 of job 1 (job 0 took 10): as a scheduler's SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(train, "take_step", sigterm_in_the_second_job)
    code, out, err = in_process(command, capsys, monkeypatch, work)
    monkeypatch.setattr(train, "take_step", real_step)
    assert code == 128 + signal.SIGTERM, err
    hints = [line for line in (out + err).splitlines() if "continue" in line and "ganlab train" in line]
    assert len(hints) == 1, out + err
    continued = hints[0].split("`")[1]
    assert continued == "ganlab train -m debug=tiny steps=10 seed=0,1,2 resume=auto", hints[0]
    (sweep_dir,) = work.glob("outputs/multirun/*/*")
    jobs = {p.name.split("_")[0]: p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()}
    assert set(jobs) == {"0", "1"}
    done_before = (jobs["0"] / "summary.json").read_bytes()
    interrupted = summary(jobs["1"])
    assert interrupted["status"] == "interrupted" and 0 < interrupted["step"] < 10

    code, out, err = in_process(shlex.split(continued)[1:], capsys, monkeypatch, work)  # as printed
    assert code == 0, err
    assert list(work.glob("outputs/multirun/*/*")) == [sweep_dir]  # no new sweep: this one, continued
    assert (jobs["0"] / "summary.json").read_bytes() == done_before  # skipped
    assert summary(jobs["1"])["resumed_from_step"] == interrupted["step"]
    done = [summary(d) for d in run_dirs(sweep_dir)]
    assert sorted(s["seed"] for s in done) == [0, 1, 2]
    for s in done:
        ref = expected[s["seed"]]
        assert s["status"] == "completed" and s["step"] == 10
        assert (s["metrics"], s["mode_history"], s["history"]) == (ref["metrics"], ref["mode_history"], ref["history"])


def test_resume_auto_finds_the_sweep_by_its_jobs_configs_not_their_spelling(tmp_path, capsys, monkeypatch):
    """The same jobs written another way (a range for the list, a default spelled out, keys in another
    order) are the same sweep; another value of a key is not."""
    from ganlab.launch import previous_sweep

    code, _, err = in_process(["train", "-m", *TINY, "steps=3", "seed=0,1"], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    (sweep_dir,) = tmp_path.glob("outputs/multirun/*/*")
    sweep_dir = sweep_dir.relative_to(tmp_path)  # under outputs/multirun of the working directory
    assert previous_sweep([*TINY, "steps=3", "seed=0,1", "resume=auto"]) == sweep_dir
    assert previous_sweep(["seed=range(0,2)", "loss=nsgan", "steps=3", *TINY, "resume=auto"]) == sweep_dir
    assert previous_sweep([*TINY, "steps=3", "seed=0,1", "log.every=1", "resume=auto"]) == sweep_dir  # cadence
    assert previous_sweep([*TINY, "steps=3", "seed=0,1", "loss=hinge", "resume=auto"]) is None
    assert previous_sweep([*TINY, "steps=3", "seed=0,1,2", "resume=auto"]) is None
    assert previous_sweep([*TINY, "steps=3", "seed=1,0", "resume=auto"]) is None  # job 0 would be another run


RACER = r"""
import os, sys, time
from pathlib import Path

import ganlab.cli, ganlab.gan, ganlab.preflight, ganlab.train  # loaded before the start: both start at once

root, me, trials, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
for i in range(trials):
    (root / f"ready_{i}_{me}").touch()
    while not (root / f"go_{i}").exists():
        time.sleep(0.0002)
    with open(root / f"out_{i}_{me}", "w") as f:
        kept = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            ganlab.cli.main(["train", "debug=tiny", "steps=5", f"seed={seed}", f"hydra.run.dir={root / f'trial_{i}'}"])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(kept[0], 1)
            os.dup2(kept[1], 2)
    (root / f"code_{i}_{me}").write_text(str(code))
"""


def test_two_runs_started_at_the_same_instant_into_one_directory_leave_the_winners_record_whole(tmp_path):
    """Issue 28: two `ganlab train` into one hydra.run.dir at the same instant (seeds 0 and 1), 5 times: one
    trains, the other is refused in one line having changed nothing of the winner's: its .hydra/ record,
    summary and checkpoint all say the winner's seed and its train.log holds no word of the loser. Each
    racer starts once and runs every trial (a barrier file per trial), so the trials cost no start-up."""
    import yaml

    trials = 5
    racers = {me: subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), me, str(trials), seed],
                                   env={**os.environ, "COLUMNS": "300"}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
              for me, seed in (("a", "0"), ("b", "1"))}
    try:
        for i in range(trials):
            deadline = time.monotonic() + 240
            while not all((tmp_path / f"ready_{i}_{me}").exists() for me in racers):
                assert all(p.poll() is None for p in racers.values()), [p.communicate() for p in racers.values()]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            (tmp_path / f"go_{i}").touch()
        for p in racers.values():
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
    finally:  # a racer left waiting for its start (a failed trial) must not outlive the test
        for p in racers.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i in range(trials):
        codes = {me: int((tmp_path / f"code_{i}_{me}").read_text()) for me in racers}
        assert sorted(codes.values()) == [0, 2], (i, codes)
        winner, loser = sorted(racers, key=lambda me: codes[me])
        seed = {"a": 0, "b": 1}[winner]
        said = (tmp_path / f"out_{i}_{loser}").read_text()
        errors = [line for line in said.splitlines() if line.startswith("ganlab: error:")]
        assert len(errors) == 1 and "Traceback" not in said, (i, said)
        # "another process": the winner holds the lock but has not written its pid yet (runlock.in_use_message)
        assert re.search(r"is in use by (process \d+|another process) |already holds a run", errors[0]), (i, errors)
        run_dir = tmp_path / f"trial_{i}"
        assert yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())["seed"] == seed, i
        assert f"seed={seed}" in yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text()), i
        s = summary(run_dir)
        assert (s["status"], s["seed"]) == ("completed", seed), i
        state = torch_load(run_dir / "checkpoint.pt")
        assert json.loads(state["config"])["seed"] == seed, i
        log = (run_dir / "train.log").read_text()
        assert "error" not in log.lower() and "in use" not in log, (i, log)
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, i


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("meanwhile, refusal", [
    ("starts", "is in use by process"),       # the other run holds the directory when this one claims it
    ("finishes", "already holds a run"),      # ... or has started and ended there already
])
def test_a_run_that_starts_into_the_directory_after_the_checks_is_refused_before_writing(meanwhile, refusal, tmp_path,
                                                                                         capsys, monkeypatch):
    """The window the simultaneous start falls into, made certain: another run takes the directory after
    this command's pre-flight checks found it free. The claim (or the check made again once it is held)
    refuses this command in one line before Hydra writes anything there."""
    from ganlab import preflight

    run_dir, checked = tmp_path / "outputs/same", preflight.check_run_dir_free
    other = RunLock(run_dir)

    def then_another_run(directory, key, resuming):
        checked(directory, key, resuming)
        directory.mkdir(parents=True, exist_ok=True)
        if meanwhile == "starts":
            other.__enter__()
        else:
            (directory / ".hydra").mkdir()
            (directory / ".hydra/config.yaml").write_text("seed: 0\n")
            (directory / "summary.json").write_text('{"status": "completed", "seed": 0}')

    monkeypatch.setattr(preflight, "check_run_dir_free", then_another_run)
    try:
        code, out, err = in_process(["train", *TINY, "steps=5", "seed=1", "hydra.run.dir=outputs/same"], capsys,
                                    monkeypatch, tmp_path)
    finally:
        other.__exit__()
    assert code == 2 and len(err.strip().splitlines()) == 1 and refusal in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == (
        [".ganlab.lock"] if meanwhile == "starts" else [".ganlab.lock", ".hydra", "summary.json"])
    if meanwhile == "finishes":
        assert (run_dir / ".hydra/config.yaml").read_text() == "seed: 0\n"
    assert holder(run_dir) is None  # the refused command holds nothing
