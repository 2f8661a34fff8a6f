"""Sweeps through Hydra's launcher plugins, for real: joblib (local processes) and submitit_local,
then `ganlab report` over the sweep; and how the launching process decides the exit status."""

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import TINY, ganlab, ganlab_on_terminal, run_dirs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ganlab.cli import main
from ganlab.launch import replace_overrides, runs_in_parallel
from ganlab.config import CONFIG_DIR, CONFIG_NAME
from ganlab.errors import ConfigError
from ganlab.preflight import sweep_exit_code

SEEDS = ["0_ring_nsgan_none_s0", "1_ring_nsgan_none_s1"]


def completed_sweep(tmp_path: Path) -> Path:
    """The one sweep directory under tmp_path, after checking both of its runs completed."""
    dirs = run_dirs(tmp_path / "outputs" / "multirun")
    assert [d.name for d in dirs] == SEEDS
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())
        assert (summary["status"], summary["step"]) == ("completed", 20), d
    (sweep,) = {d.parent for d in dirs}
    return sweep


def check_report(sweep: Path, capsys) -> None:
    """`ganlab report SWEEP` (in this process: a subprocess would add seconds of imports)."""
    try:
        main(["report", str(sweep)])
    except SystemExit as exc:
        assert exc.code in (None, 0), capsys.readouterr()
    with open(sweep / "report.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if not row["configuration"].startswith("reference: ")]
    assert len(rows) == 1 and "nsgan" in ",".join(rows[0].values())  # one configuration, two seeds
    assert "nsgan" in (sweep / "report.md").read_text()


def writer_pid(run_dir: Path) -> str:
    (events,) = run_dir.glob("events.out.tfevents.*")
    return events.name.split(".")[-2]  # events.out.tfevents.TIME.HOST.PID.N


def assert_each_job_trained_on_its_share(sweep: Path, at_once: int) -> None:
    """cpu_threads=auto (the default) in jobs side by side: each on its share of the cores (ganlab/threads.py); debug=tiny
    evaluates inline, so no core of the share goes to a worker."""
    from ganlab.threads import usable_cores

    recorded = [json.loads((d / "summary.json").read_text())["cpu_threads"] for d in run_dirs(sweep)]
    assert recorded == [max(1, usable_cores() // at_once)] * len(recorded)


@pytest.mark.slow
def test_joblib_sweep_runs_in_parallel_processes(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = ganlab("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "seed=0,1",
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Joblib.Parallel(n_jobs=2" in out.stdout
    sweep = completed_sweep(tmp_path)
    # two worker processes, neither of them the launching one
    assert len({writer_pid(d) for d in run_dirs(sweep)}) == 2
    assert_each_job_trained_on_its_share(sweep, at_once=2)
    # each job's console lines carry its run directory's name
    for name in SEEDS:
        assert f"[{name}] run directory:" in out.stdout
    check_report(sweep, capsys)


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("submitit")
    out = ganlab("train", "-m", "hydra/launcher=local", *TINY, "seed=0,1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Submitit 'local' sweep output dir" in out.stdout
    sweep = completed_sweep(tmp_path)
    # submitit's pickles and the jobs' own stdout live in the sweep directory
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    assert "completed at step 20" in "".join(log.read_text() for log in logs)
    assert_each_job_trained_on_its_share(sweep, at_once=2)
    check_report(sweep, capsys)


@pytest.mark.slow
def test_joblib_divergence_sets_the_exit_status_and_parallel_jobs_show_no_bar(tmp_path):
    """A diverged job in a worker process still gives exit status 3; on a terminal shared by
    parallel jobs there is no progress bar, and the log lines say which job they come from."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    args = ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "steps=100",
            "log.every=50", "eval.every=50", "optim.d.lr=1e-4,1e30"]
    code, screen = ganlab_on_terminal(*args, cwd=tmp_path, columns=200)
    assert code == 3
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # no colours
    assert "Traceback" not in screen
    assert not re.search(r"\b\d+/100\b", screen), screen  # a bar would show "50/100"
    assert "[0_ring_nsgan_none_s0]" in screen and "[1_ring_nsgan_none_s0] run diverged at step 50" in screen
    assert "1 completed; 1 diverged (1_ring_nsgan_none_s0)" in screen
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs(tmp_path / "outputs")]
    assert sorted((s["status"], s["step"]) for s in summaries) == [("completed", 100), ("diverged", 50)]


def write_summary(sweep: Path, name: str, **summary) -> None:
    (sweep / name).mkdir(parents=True)
    (sweep / name / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("statuses, n_jobs, code", [
    ([{"status": "completed"}, {"status": "completed"}], 2, 0),
    ([{"status": "completed"}, {"status": "diverged"}], 2, 3),
    ([{"status": "failed"}, {"status": "completed"}], 2, 1),
    ([{"status": "failed", "exit_code": 2}, {"status": "diverged"}], 2, 3),
    ([{"status": "failed", "exit_code": 2}, {"status": "completed"}], 2, 2),
    ([{"status": "completed"}], 2, 1),  # a job that left no summary.json
])
def test_sweep_exit_code_from_the_summaries(tmp_path, capsys, statuses, n_jobs, code):
    for i, summary in enumerate(statuses):
        write_summary(tmp_path, f"{i}_job", **summary)
    assert sweep_exit_code(tmp_path, n_jobs) == code
    assert (capsys.readouterr().err != "") == (code != 0)  # one line when not all completed


def test_an_unreadable_summary_counts_as_a_failure(tmp_path):
    (tmp_path / "0_job").mkdir()
    (tmp_path / "0_job" / "summary.json").write_text("{not json")
    assert sweep_exit_code(tmp_path, 1) == 1


def hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True).hydra


def test_which_jobs_count_as_parallel():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    multirun = "hydra.mode=MULTIRUN"
    assert not runs_in_parallel(hydra_cfg())
    assert not runs_in_parallel(hydra_cfg(multirun))  # the basic launcher: one job after the other
    assert not runs_in_parallel(hydra_cfg("hydra/launcher=joblib"))  # a single run
    assert runs_in_parallel(hydra_cfg(multirun, "hydra/launcher=joblib"))
    assert not runs_in_parallel(hydra_cfg(multirun, "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"))
    assert runs_in_parallel(hydra_cfg(multirun, "hydra/launcher=local"))


def test_slurm_and_local_presets():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    slurm = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_task=1")
    launcher = OmegaConf.to_container(slurm.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_task"]) == ("gpu", 1)
    assert (launcher["cpus_per_task"], launcher["timeout_min"], launcher["mem_gb"]) == (2, 60, 8)
    assert launcher["array_parallelism"] == 64
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    local = OmegaConf.to_container(hydra_cfg("hydra/launcher=local").launcher, resolve=False)
    assert local["_target_"].endswith("submitit_launcher.LocalLauncher")
    assert local["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_added_overrides_join_the_overrides_hydra_parses():
    from hydra._internal.utils import get_args_parser

    extra = "++hydra.callbacks.x._target_=y"
    for args in (["-m", "seed=0,1"], ["seed=0,1", "-m", "-cd", "conf"], ["-m"], ["-m", "-cd", "conf"],
                 ["--cfg", "job", "seed=1"], ["seed=1", "--cfg", "job"]):
        overrides = get_args_parser().parse_args(args).overrides
        again = get_args_parser().parse_args(replace_overrides(args, overrides, ["a=1", *overrides, extra]))
        assert again.overrides == ["a=1", *overrides, extra]
        assert again.multirun == ("-m" in args) and again.cfg == ("job" if "--cfg" in args else None)


def test_a_parallel_sweep_with_more_threads_than_cores_is_warned_about():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from ganlab.preflight import oversubscription_warning as warning

    joblib = hydra_cfg("hydra/launcher=joblib").launcher  # n_jobs=-1: one job per core
    assert warning(joblib, jobs=4, cpu_threads=[1], cores=2) is None
    assert "2 jobs at once x 2 torch threads = 4 threads on 2 cores" in warning(joblib, 4, [2], 2)
    assert "x 2 torch threads" in warning(joblib, 4, [0], 2)  # 0: torch's default, every core
    assert "x 2 torch threads" in warning(joblib, 4, [1, 0], 2)  # one job of a sweep over cpu_threads is enough
    assert warning(joblib, jobs=1, cpu_threads=[2], cores=2) is None  # one job: nothing shares
    two_at_once = hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").launcher
    assert warning(two_at_once, 8, [2], 4) is None and warning(two_at_once, 8, [3], 4)
    assert "3 jobs at once" in warning(hydra_cfg("hydra/launcher=local").launcher, 3, [1], 2)
    assert warning(hydra_cfg().launcher, 8, [2], 2) is None  # the basic launcher: one after another
    assert warning(hydra_cfg("hydra/launcher=slurm").launcher, 8, [2], 2) is None


def test_the_sweep_command_warns_before_it_starts(tmp_path, monkeypatch, capfd):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from hydra.core.plugins import Plugins

    from ganlab import cli, sweep, threads

    # Hydra loads its plugins' modules itself: the launcher class is the one its registry holds.
    joblib = Plugins.instance().class_name_to_class["hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"]
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    launched = []  # only what happens before the jobs start: the launcher is handed the checked jobs
    monkeypatch.setattr(joblib, "launch", lambda self, jobs, initial_job_idx: launched.append(len(jobs)) or [])
    monkeypatch.setattr(sweep, "sweep_exit_code", lambda directory, n_runs: 0)  # the name sweep.py calls
    monkeypatch.chdir(tmp_path)
    cli.train(["-m", "hydra/launcher=joblib", "cpu_threads=2", "seed=0,1", *TINY])
    printed = "".join(capfd.readouterr())
    assert "2 jobs at once x 2 torch threads = 4 threads on 2 cores" in printed and launched == [2]
    cli.train(["-m", "hydra/launcher=joblib", "cpu_threads=1", "seed=0,1", *TINY])
    assert "threads on" not in "".join(capfd.readouterr()) and launched == [2, 2]
    # An unknown launcher: one line with the launchers there are, no traceback.
    with pytest.raises(ConfigError, match=r"^Could not find 'hydra/launcher/nonexistent'; choose one of: .*joblib"):
        cli.train(["-m", "hydra/launcher=nonexistent", "seed=0,1", *TINY])


@pytest.mark.parametrize("multirun", [True, False])
def test_each_job_is_composed_once_by_hydra_and_checked_on_that_config(tmp_path, monkeypatch, multirun):
    """The command line goes to Hydra once: Hydra composes the command's config once and, in a sweep,
    each job's once (ganlab's sweeper); the pre-flight checks and the jobs read those configs, and ganlab
    composes nothing beside them."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl  # Hydra's composition, counted

    import ganlab.config

    counts = {"command": 0, "job": 0, "ganlab": 0}
    inside_job = []
    load, load_job, compose = ConfigLoaderImpl.load_configuration, ConfigLoaderImpl.load_sweep_config, ganlab.config.compose_config

    def load_counted(self, *args, **kwargs):
        # Hydra's own probe of `hydra.mode` (get_mode: validate_sweep_overrides=False) composes no job
        if not inside_job and kwargs.get("validate_sweep_overrides", True):
            counts["command"] += 1
        return load(self, *args, **kwargs)

    def load_job_counted(self, *args, **kwargs):
        counts["setup" if inside_cost else "job"] += 1
        inside_job.append(1)
        try:
            return load_job(self, *args, **kwargs)
        finally:
            inside_job.pop()

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", load_counted)
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", load_job_counted)
    monkeypatch.setattr(ganlab.config, "compose_config", lambda *a, **k: counts.__setitem__("ganlab", 1) or compose(*a, **k))
    # The sweep's cost line composes the measured setups it compares the jobs with (ganlab/costs.py), once each:
    # counted apart from the jobs.
    import ganlab.sweep

    inside_cost, cost = [], ganlab.sweep.sweep_cost

    def cost_counted(*args, **kwargs):
        inside_cost.append(1)
        try:
            return cost(*args, **kwargs)
        finally:
            inside_cost.pop()

    monkeypatch.setattr(ganlab.sweep, "sweep_cost", cost_counted)
    monkeypatch.chdir(tmp_path)
    args = ["-m", "seed=0,1,2", "hydra.sweep.dir=sw"] if multirun else ["seed=1", "hydra.run.dir=one"]
    counts["setup"] = 0
    main(["train", *args, *TINY])  # exits only on failure
    assert counts == {"command": 1, "job": 3 if multirun else 0, "ganlab": 0, "setup": 1 if multirun else 0}
    assert len(run_dirs(tmp_path / ("sw" if multirun else "one"))) == (3 if multirun else 1)


def test_a_sweep_through_another_sweeper_ends_with_the_closing_line_and_the_failure(tmp_path, capsys, monkeypatch):
    """hydra/sweeper=basic (or a sampler): every value of the sweep is checked before its first job
    (tests/test_optuna.py), so a bad one is refused in one line with nothing run. A job that fails its own
    checks all the same (here: with that check left out) leaves no summary.json, and the sweep still ends
    with ganlab's closing line and a failing status."""
    from ganlab import cli, sweep

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^seed=-1 is out of range"):
        cli.train(["-m", "hydra/sweeper=basic", "seed=0,-1", "hydra.sweep.dir=sw", *TINY])
    assert not (tmp_path / "sw").exists()
    monkeypatch.setattr(sweep, "check_other_sweep", lambda config: None)
    with pytest.raises(SystemExit) as exited:
        main(["train", "-m", "hydra/sweeper=basic", "seed=0,-1", "hydra.sweep.dir=sw", *TINY])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert f"ganlab: sweep {tmp_path / 'sw'}: 1 completed; 1 without summary.json (1 job(s))" in err
    assert len(run_dirs(tmp_path / "sw")) == 1
    main(["train", "-m", "hydra/sweeper=basic", "seed=0,1", "hydra.sweep.dir=sw2", *TINY])  # all completed: exit 0
    assert "2 completed" in capsys.readouterr().out
