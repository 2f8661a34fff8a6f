"""Issue 30 item 4: cpu_threads=auto trains a run on the cores it holds less one for its evaluation worker, and each
job of a local parallel sweep on its share, one fixed count for the whole run (ganlab/threads.py)."""

import json

import pytest
import torch
from conftest import TINY, make_cfg
from test_launchers import hydra_cfg

from ganlab import threads
from ganlab.config import compose_config, validate
from ganlab.errors import ConfigError


@pytest.fixture(autouse=True)
def no_thread_settings(monkeypatch):
    """Neither the sweep's share nor OMP_NUM_THREADS from the environment the tests run in; torch's threads as
    they were afterwards."""
    monkeypatch.delenv(threads.JOB_CORES_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["auto", 0, 1, 7])
def test_auto_zero_and_a_count_are_accepted(value):
    threads.check(value)
    validate(compose_config([f"cpu_threads={value}"]))


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "true", "null"])
def test_anything_else_is_refused_in_one_line_naming_the_choices(value):
    with pytest.raises(ConfigError, match=r"^cpu_threads=.*: choose auto \(the cores the job holds\), 0 \(torch's "
                                          r"default\) or a number of threads >= 1$"):
        validate(compose_config([f"cpu_threads={value}"]))  # as a run's config is checked


def test_auto_is_the_cores_the_job_holds_less_one_for_its_worker(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.count("auto") == 3  # a single run: every usable core but the evaluation worker's
    assert threads.count("auto", worker=False) == 4  # eval.background=false: no worker
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
    assert threads.count("auto") == 1  # never none
    monkeypatch.setenv(threads.JOB_CORES_ENV, "2")
    assert threads.count("auto") == 1 and threads.count("auto", worker=False) == 2  # a sweep's job: its share
    assert threads.count("auto", cores=3) == 2  # told the job's cores (the cost estimate)
    assert threads.of_job({"cpu_threads": "auto", "eval": {"background": False}}, cores=2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads.count("auto") == 5  # the user's (or Ray's) word, as it is
    assert threads.count(3) == 3 and threads.count(0, cores=4) == 4  # 0: torch's default, a thread per core


def test_a_sweep_shares_the_cores_only_among_jobs_side_by_side_here():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    assert threads.local_share(hydra_cfg("hydra/launcher=joblib").launcher, at_once=2, cores=2) == 1
    assert threads.local_share(hydra_cfg("hydra/launcher=joblib").launcher, at_once=3, cores=8) == 2
    assert threads.local_share(hydra_cfg("hydra/launcher=local").launcher, at_once=4, cores=2) == 1  # never 0
    assert threads.local_share(hydra_cfg().launcher, at_once=1, cores=2) is None  # basic: one after another
    assert threads.local_share(hydra_cfg("hydra/launcher=slurm").launcher, at_once=8, cores=2) is None  # elsewhere


def test_the_share_is_set_for_the_jobs_and_put_back(monkeypatch):
    with threads.job_cores_set(1):
        assert threads.job_cores() == 1
    assert threads.JOB_CORES_ENV not in threads.os.environ
    monkeypatch.setenv(threads.JOB_CORES_ENV, "3")
    with threads.job_cores_set(None):
        assert threads.os.environ[threads.JOB_CORES_ENV] == "3"
    with pytest.raises(RuntimeError), threads.job_cores_set(1):
        raise RuntimeError
    assert threads.os.environ[threads.JOB_CORES_ENV] == "3"


@pytest.mark.parametrize("background", [True, False])
def test_a_run_trains_on_one_count_from_its_first_step_to_its_last_and_records_it(tmp_path, monkeypatch, background):
    from ganlab.train import run

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    recorded = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: recorded.append(n) or real(n))
    # eval.every=5 of 40 steps: the worker has a job for much of the run
    summary = run(make_cfg(*TINY, "steps=40", "eval.every=5", "log.every=5", f"eval.background={background}"),
                  tmp_path)
    expected = 2 if background else 3
    assert recorded == [expected] and summary["cpu_threads"] == expected
    assert json.loads((tmp_path / "summary.json").read_text())["cpu_threads"] == expected


def test_a_run_records_the_threads_it_was_given(tmp_path):
    from ganlab.train import run

    assert run(make_cfg(*TINY, "cpu_threads=1"), tmp_path)["cpu_threads"] == 1
