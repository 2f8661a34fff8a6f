"""hydra/launcher=ray (ganlab/ray_launcher.py): a sweep on a Ray cluster of 2 CPUs on 127.0.0.1 that the test starts
and stops, joined the way a remote one is (ray://HOST:PORT), then `ganlab report` and resume=auto on it; what a job
leaves behind in a worker process that takes several; and the one-line refusals. The Ray tests skip where Ray and
Hydra's Ray launcher plugin are not installed (pip install -e ".[ray]")."""

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY, ganlab, run_dirs

from ganlab.cli import main

SKIP_REASON = 'Ray and Hydra\'s Ray launcher plugin are not installed: pip install -e ".[ray]"'
SEEDS = ["0_ring_nsgan_none_s0", "1_ring_nsgan_none_s1"]


def needs_ray():
    pytest.importorskip("ray", reason=SKIP_REASON)
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason=SKIP_REASON)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def events_pid(run_dir: Path) -> int:
    (events,) = run_dir.glob("events.out.tfevents.*")
    return int(events.name.split(".")[-2])  # events.out.tfevents.TIME.HOST.PID.N


@pytest.mark.slow
def test_a_ray_sweep_completes_reports_and_resumes(tmp_path, capsys):
    """`ganlab train -m hydra/launcher=ray seed=0,1 debug=tiny` on the command's own local instance (2 CPUs);
    `ganlab report` reads its 2 seeds; the same sweep plus resume=auto, after job 1's run was lost: job 0 skipped
    (untouched), job 1 trained again, in place. (Joining a head by Ray Client, ray://, failed twice in CI under
    load: "Starting Ray client server failed"; the address handling is tested without a cluster below.)"""
    needs_ray()
    command = ["train", "-m", "hydra/launcher=ray", "seed=0,1", *TINY, "hydra.launcher.ray.init.num_cpus=2"]
    out = ganlab(*command, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Ray: starting a local instance on 127.0.0.1 with 2 CPUs" in out.stdout
    dirs = run_dirs(tmp_path / "outputs" / "multirun")
    assert [d.name for d in dirs] == SEEDS
    assert [(summary(d)["status"], summary(d)["step"]) for d in dirs] == [("completed", 20)] * 2
    (sweep,) = {d.parent for d in dirs}
    # each job in a Ray worker process of its own (remote.max_calls=1), neither of them the command's
    assert len({events_pid(d) for d in dirs}) == 2
    for name in SEEDS:  # the jobs' console lines, forwarded by Ray, named by job
        assert f"[{name}] run directory:" in out.stdout
    # the closing line is the command's last, after the jobs' lines
    closing = f"ganlab: sweep {sweep.absolute()}: 2 completed; compare them with `ganlab report {sweep.absolute()}`"
    assert out.stdout.rstrip().splitlines()[-1] == closing
    # the run records the command as typed, though it ran in a worker process with Ray's own argv
    assert summary(dirs[0])["provenance"]["command"].startswith("ganlab train -m hydra/launcher=ray seed=0,1")

    try:
        main(["report", str(sweep)])
    except SystemExit as exc:
        assert exc.code in (None, 0), capsys.readouterr()
    with open(sweep / "report.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["configuration"].startswith("reference: ")]
    assert [(r["n_seeds"], r["n_completed"]) for r in rows] == [("2", "2")]

    # what training writes (its train.log and lock are the command's: a skipped run says so in its train.log)
    kept = {p.name: p.stat().st_mtime_ns for p in dirs[0].iterdir() if p.name not in ("train.log", ".ganlab.lock")}
    assert {"checkpoint.pt", "summary.json"} <= set(kept)
    shutil.rmtree(dirs[1])  # as if the sweep had been stopped before job 1 started
    # the same sweep on the preset's own local instance (started and stopped by the command), 2 CPUs of it; Ray's
    # session files in a folder of the test's (short: Ray's socket paths live under it)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    local = [*command[:-1], "hydra.launcher.ray.init.num_cpus=2", f"+hydra.launcher.ray.init._temp_dir={temp}"]
    try:
        again = ganlab(*local, "resume=auto", cwd=tmp_path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Ray: starting a local instance on 127.0.0.1 with 2 CPUs" in again.stdout
    assert f"{dirs[0]}: already completed (step 20); skipped" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in dirs[0].iterdir() if p.name in kept} == kept  # not trained again
    assert [(summary(d)["status"], summary(d)["step"]) for d in dirs] == [("completed", 20)] * 2
    assert run_dirs(tmp_path / "outputs" / "multirun") == dirs  # in place: no second sweep directory
    assert again.stdout.rstrip().splitlines()[-1] == closing


@pytest.mark.slow
def test_sigterm_stops_the_ray_jobs_at_their_checkpoints_and_says_how_to_continue(tmp_path):
    """SIGTERM to the command (a scheduler's, `kill PID`) while its jobs train in Ray workers: each job gets SIGINT,
    ends its step and saves its checkpoint; the command's last line gives the sweep's own command plus resume=auto,
    and its exit status is 143. On the command's own local instance (the default): joining the module's head by Ray
    Client timed out once in CI with the other xdist worker's head beside it (the sweep test covers ray://)."""
    needs_ray()
    command = [sys.executable, "-m", "ganlab", "train", "-m", "hydra/launcher=ray", "seed=0,1", *TINY, "steps=1000000",
               "eval.every=50", "checkpoint.every=1000000", "log.every=50", "hydra.launcher.ray.init.num_cpus=2"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 240
        # both runs in their training loop (past their first evaluation), with no checkpoint yet
        while sum(" step 50 of " in log.read_text() for log in (tmp_path / "outputs").rglob("train.log")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, out[-3000:] + err[-3000:]
    dirs = sorted(p.parent for p in (tmp_path / "outputs").rglob("checkpoint.pt"))
    assert [d.name for d in dirs] == SEEDS
    for d in dirs:
        s = summary(d)
        assert s["status"] == "interrupted" and 0 < s["step"] < 1000000, s
    last = out.rstrip().splitlines()[-1]
    assert "interrupted by SIGTERM" in last, last
    assert ("continue the whole sweep with `ganlab train -m hydra/launcher=ray seed=0,1 debug=tiny steps=1000000 "
            "eval.every=50 checkpoint.every=1000000 log.every=50 "
            "hydra.launcher.ray.init.num_cpus=2 resume=auto`") in last
    assert "Traceback" not in out + err


def test_a_job_leaves_its_worker_process_as_it_found_it(tmp_path, monkeypatch):
    """A Ray worker may take several jobs (remote.max_calls=0): what a job changes of its process (torch's threads,
    logging handlers, the environment, sys.argv, a run directory's lock) is put back after it; inside, it sees the
    launching command's argv and GANLAB_* environment. A job that exits (a signal: sys.exit(130)) returns."""
    needs_ray()
    import torch
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    from ganlab import runlock
    from ganlab.config import CONFIG_DIR, CONFIG_NAME
    from ganlab.ray_launcher import run_job

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["worker.py", "--ray-flags"])
    before = Singleton.get_state()  # Hydra's globals, which the job runner sets: this process's again afterwards
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=[*TINY, f"hydra.sweep.dir={tmp_path}/sweep", "hydra.mode=MULTIRUN",
                                              "hydra.job.num=0", "hydra.job.id=0"], return_hydra_config=True)
        state = Singleton.get_state()
    seen = []

    def job(config):
        seen.append((list(sys.argv), os.environ.get("GANLAB_COMMAND_LINE"), torch.get_num_threads()))
        torch.set_num_threads(torch.get_num_threads() + 1)
        os.environ["GANLAB_LEFT_BEHIND"] = "1"
        logging.getLogger().addHandler(logging.StreamHandler())
        runlock.claim(tmp_path / "claimed")
        if config.get("seed") == 1:
            sys.exit(130)
        return "done"

    threads, handlers = torch.get_num_threads(), list(logging.getLogger().handlers)
    context = HydraContext(config_loader=None, callbacks=Callbacks())
    argv = ["ganlab-train", "-m", "hydra/launcher=ray", "seed=0,1"]
    try:
        first = run_job(context, cfg, job, state, argv, {"GANLAB_COMMAND_LINE": "ganlab train -m seed=0,1"})
        cfg.seed = 1
        second = run_job(context, cfg, job, state, argv, {"GANLAB_COMMAND_LINE": "ganlab train -m seed=0,1"})
    finally:
        Singleton.set_state(before)
    assert first.status == JobStatus.COMPLETED and first.return_value == "done"
    assert second.status == JobStatus.FAILED and isinstance(second._return_value, SystemExit)
    assert second._return_value.code == 130
    # both jobs saw the command's argv and environment, and the second the first's threads undone
    assert seen == [(argv, "ganlab train -m seed=0,1", threads)] * 2
    assert torch.get_num_threads() == threads
    assert sys.argv == ["worker.py", "--ray-flags"]
    assert "GANLAB_LEFT_BEHIND" not in os.environ and "GANLAB_COMMAND_LINE" not in os.environ
    assert logging.getLogger().handlers == handlers
    assert runlock.holder(tmp_path / "claimed") is None and not runlock._claimed


def test_without_ray_the_launcher_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    """hydra/launcher=ray where Ray is not installed: one line naming the extra, before any job is composed."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", "-m", "hydra/launcher=ray", "seed=0,1", *TINY])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.strip().splitlines() == ['ganlab: error: hydra/launcher=ray needs Ray and Hydra\'s Ray launcher plugin, '
                                        'which are not installed here: pip install -e ".[ray]"']
    assert not (tmp_path / "outputs").exists()


def test_init_arguments_for_a_local_instance_and_a_cluster(monkeypatch):
    from ganlab.ray_launcher import init_kwargs, thread_warning

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    preset = {"address": None, "num_cpus": None, "num_gpus": None, "object_store_memory": 78643200,
              "include_dashboard": False}
    # a new local instance on 127.0.0.1, never a cluster that `ray start` left on this machine
    assert init_kwargs(preset) == {"address": "local", "object_store_memory": 78643200, "include_dashboard": False,
                                   "_node_ip_address": "127.0.0.1"}
    assert init_kwargs({**preset, "num_cpus": 2})["num_cpus"] == 2
    # a cluster: without the local instance's arguments, which Ray refuses there
    assert init_kwargs({**preset, "address": "ray://head:10001", "num_cpus": 2}) == {"address": "ray://head:10001"}
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")  # Ray's own variable: a cluster too
    assert init_kwargs(preset) == {}
    from omegaconf import OmegaConf

    jobs = [OmegaConf.create({"cpu_threads": 1}), OmegaConf.create({"cpu_threads": 2})]
    assert "hydra.launcher.ray.remote.num_cpus=2" in thread_warning({"num_cpus": 1}, jobs)
    assert thread_warning({"num_cpus": 2}, jobs) is None
    assert thread_warning({"num_cpus": 1}, jobs[:1]) is None
