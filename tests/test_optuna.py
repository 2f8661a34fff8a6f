"""objective=METRIC: what a run returns to a sweeper that optimises (ganlab/objective.py), and sweeps through
other sweepers than ganlab's (Hydra's basic one, Optuna's): their syntax and every value they can give a key
checked before the first job (ganlab/sweep.py `check_other_sweep`), and a real 4-trial Optuna search."""

import json
import logging
import math

import pytest
import yaml
from conftest import TINY, ganlab, run_dirs

from omegaconf import OmegaConf

from ganlab import objective
from ganlab.cli import main
from ganlab.errors import ConfigError, GanlabError


def train(args: list[str], capsys, monkeypatch, cwd) -> tuple[int, str, str]:
    """`ganlab train ARGS` in this process: (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    root = logging.getLogger()  # an earlier in-process job's handlers write to a closed capture stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    try:
        main(["train", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(code: int, err: str, says: str, cwd) -> None:
    """Exit status 2, one `ganlab: error:` line that says `says`, and nothing written."""
    lines = [line for line in err.splitlines() if not line.startswith("[")]  # Hydra's logged warnings aside
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: ") and says in lines[0], err
    assert "Traceback" not in err
    assert not (cwd / "outputs").exists() and not (cwd / "sw").exists()


def summary(metrics: dict, status: str = "completed") -> dict:
    return {"status": status, "metrics": metrics}


def test_a_run_returns_its_metric_at_the_end_and_a_failed_one_the_worst_value():
    assert objective.direction("modes_captured") == "maximize" and objective.direction("reverse_kl") == "minimize"
    assert objective.worst("modes_captured") == -math.inf and objective.worst("reverse_kl") == math.inf
    assert objective.value("reverse_kl", summary({"reverse_kl": 0.25})) == 0.25
    assert objective.value("modes_captured", summary({"modes_captured": 7})) == 7.0
    # diverged, failed, the metric missing or null (JSON's NaN), and replicas=N: their mean, or the worst
    assert objective.value("reverse_kl", summary({"reverse_kl": 0.25}, "diverged")) == math.inf
    assert objective.value("reverse_kl", summary({}, "failed")) == math.inf
    assert objective.value("reverse_kl_hq", summary({"reverse_kl_hq": None})) == math.inf
    assert objective.value("modes_captured", summary({"modes_captured": math.nan})) == -math.inf
    assert objective.value("reverse_kl", {"replicas": [summary({"reverse_kl": 0.5}), summary({"reverse_kl": 1.5})]}) == 1.0
    assert objective.value("reverse_kl", {"replicas": [summary({"reverse_kl": 0.5}), summary({}, "diverged")]}) == math.inf
    objective.check(None)
    with pytest.raises(ConfigError, match=r"^objective=critic_gap has no better side"):
        objective.check("critic_gap")


@pytest.mark.parametrize("value, says", [
    ("nope", "objective=nope: not a registered metric; choose one of modes_captured, high_quality_pct"),
    ("critic_gap", "objective=critic_gap has no better side (higher or lower) to optimise"),
    ("fid", "objective=fid: this run's evaluation does not report fid; choose one of modes_captured"),
])
def test_an_objective_that_is_no_metric_of_the_run_is_refused_before_training(value, says, capsys, monkeypatch,
                                                                                tmp_path):
    code, _, err = train([f"objective={value}", *TINY], capsys, monkeypatch, tmp_path)
    refused(code, err, says, tmp_path)


@pytest.mark.parametrize("target, worst", [("modes_captured", -math.inf), ("reverse_kl", math.inf)])
def test_a_job_that_diverges_or_fails_returns_the_worst_value(target, worst, capsys, monkeypatch, tmp_path):
    """The job function's returns, as a sweeper receives them: the metric of a completed run, and for a diverged
    run and a crashed one the worst value (not None, not an exception)."""
    from ganlab import sweep, train as training

    def fake_run(cfg, run_dir, labels=None, progress=None):
        if cfg.seed == 1:
            raise training.Diverged("run diverged at step 5")
        if cfg.seed == 2:
            raise RuntimeError("a bug")
        return summary({target: 3.0})

    returns = []
    run_here = sweep.run_here
    monkeypatch.setattr(training, "run", fake_run)
    monkeypatch.setattr(sweep, "run_here", lambda *a: returns.extend(r.return_value for r in run_here(*a)) or [])
    code, _, _ = train(["-m", "seed=0,1,2", f"objective={target}", "hydra.sweep.dir=sw", *TINY], capsys, monkeypatch,
                       tmp_path)
    assert returns == [3.0, worst, worst]
    assert code == 1  # the closing line's status: two jobs left no summary.json (the fake run writes none)


def test_without_an_objective_a_job_returns_its_summary_as_before(capsys, monkeypatch, tmp_path):
    from ganlab import sweep

    returns = []
    run_here = sweep.run_here
    monkeypatch.setattr(sweep, "run_here", lambda *a: returns.extend(r.return_value for r in run_here(*a)) or [])
    code, _, err = train(["-m", "seed=0", "hydra.sweep.dir=sw", *TINY], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    (returned,) = returns
    assert returned["status"] == "completed" and returned["step"] == 20


@pytest.fixture
def composed(monkeypatch):
    """The job configs the check before another sweeper's first job composes (their values), and no job run:
    the check stops there."""
    from ganlab import sweep

    seen = []

    def check_jobs(configs, dir_key, progress=None):
        seen.extend(configs)
        raise GanlabError("checked")

    monkeypatch.setattr(sweep, "check_jobs", check_jobs)
    return seen


BASIC_SAMPLES_NOT = ("Hydra's basic sweeper runs lists, ranges and choices; a sampled sweep (interval) needs a "
                     "sweeper that samples, e.g. hydra/sweeper=optuna")


@pytest.mark.parametrize("sweeper", ["basic", "optuna"])
@pytest.mark.parametrize("sweep, key, values, refusals", [
    ("seed=0,3", "seed", [0, 3], {}),
    ("seed=choice(4,5,6)", "seed", [4, 5, 6], {}),
    # a range's ends, never listed; the basic sweeper would run every value, which is too many
    ("seed=range(0,1000000000)", "seed", [0, 999999999], {"basic": "this sweep has over 10,000 jobs"}),
    ("seed=shuffle(range(7,9))", "seed", [7, 8], {}),
    ("loss=glob(*gan)", "hydra.runtime.choices.loss", ["dragan", "gan", "lsgan", "nsgan", "wgan"],  # each option
     {"optuna": "Optuna samples lists, choice(...), range(...) and interval(...), not glob(...)"}),
    ("optim.d.lr=interval(1e-4,1e-3)", "optim.d.lr", [1e-4, 1e-3], {"basic": BASIC_SAMPLES_NOT}),  # its bounds
    ("optim.d.lr=tag(log,interval(1e-5,1e-3))", "optim.d.lr", [1e-5, 1e-3], {"basic": BASIC_SAMPLES_NOT}),
])
def test_another_sweeper_s_values_are_composed_and_checked_before_its_first_job(sweeper, sweep, key, values, refusals,
                                                                                 composed, capsys, monkeypatch,
                                                                                 tmp_path):
    if sweeper == "optuna":
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    code, _, err = train(["-m", f"hydra/sweeper={sweeper}", sweep, "objective=reverse_kl", *TINY], capsys,
                         monkeypatch, tmp_path)
    if sweeper in refusals:
        refused(code, err, refusals[sweeper], tmp_path)
        assert not composed
        return
    assert code == 2 and "ganlab: error: checked" in err, err  # the fixture's stop, after composing
    assert [OmegaConf.select(cfg, key) for cfg in composed] == values


def test_a_bad_bound_or_choice_is_refused_before_the_first_job(capsys, monkeypatch, tmp_path):
    code, _, err = train(["-m", "hydra/sweeper=basic", "seed=0,1", "loss=nsgan,nope", *TINY], capsys, monkeypatch,
                         tmp_path)
    refused(code, err, "unknown option loss=nope", tmp_path)
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    code, _, err = train(["-m", "hydra/sweeper=optuna", "optim.d.lr=interval(-1e-4,1e-3)", "objective=reverse_kl",
                          *TINY], capsys, monkeypatch, tmp_path)
    refused(code, err, "optim.d.lr=-0.0001 is out of range: it must be a number > 0", tmp_path)


@pytest.mark.parametrize("args, says", [
    ([], "hydra/sweeper=optuna optimises the number each run returns: add objective=METRIC, one of modes_captured"),
    (["objective=modes_captured", "hydra.sweeper.direction=minimize"],
     "hydra.sweeper.direction=minimize, but objective=modes_captured is better higher"),
    (["objective=reverse_kl,modes_captured"], "the objective is what the search optimises; give one metric"),
])
def test_an_optuna_search_without_a_coherent_objective_is_refused(args, says, capsys, monkeypatch, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    code, _, err = train(["-m", "hydra/sweeper=optuna", "optim.d.lr=interval(1e-4,1e-3)", *args, *TINY], capsys,
                         monkeypatch, tmp_path)
    refused(code, err, says, tmp_path)


@pytest.mark.parametrize("target, direction", [("modes_captured", "maximize"), ("wasserstein1", "minimize")])
def test_optuna_s_direction_follows_the_objective(target, direction, capsys, monkeypatch, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    from hydra.core.plugins import Plugins

    # Hydra loads its plugins' modules itself: the sweeper class is the one its registry holds.
    optuna_sweeper = Plugins.instance().class_name_to_class[
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"]
    directions = []
    monkeypatch.setattr(optuna_sweeper, "sweep", lambda self, arguments: directions.append(self.sweeper.direction))
    code, _, err = train(["-m", "hydra/sweeper=optuna", "optim.d.lr=interval(1e-4,1e-3)", f"objective={target}",
                          "hydra.sweep.dir=sw", *TINY], capsys, monkeypatch, tmp_path)
    assert directions == [direction], err


@pytest.mark.slow
def test_a_four_trial_optuna_search_names_its_best_trial(tmp_path):
    """The search the docs show, for real (subprocess, 4 tiny runs): each trial returns its reverse_kl at
    the end, Optuna minimises it, and optimization_results.yaml names the best trial's lr and value."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    out = ganlab("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4",
                 "optim.d.lr=interval(1e-4,1e-3)", "objective=reverse_kl", "hydra.sweep.dir=search", *TINY,
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Directions: ['minimize']" in out.stdout and "Traceback" not in out.stdout + out.stderr
    trials = run_dirs(tmp_path / "search")
    assert len(trials) == 4
    summaries = [json.loads((d / "summary.json").read_text()) for d in trials]
    lrs = [s["config"]["optim"]["d"]["lr"] for s in summaries]
    assert all(1e-4 <= lr <= 1e-3 for lr in lrs) and len(set(lrs)) == 4  # sampled, one lr per trial
    results = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    best = min(summaries, key=lambda s: s["metrics"]["reverse_kl"])
    assert results["best_value"] == pytest.approx(best["metrics"]["reverse_kl"])
    assert results["best_params"] == {"optim.d.lr": pytest.approx(best["config"]["optim"]["d"]["lr"])}
    assert f"ganlab: sweep {tmp_path / 'search'}: 4 completed" in out.stdout
