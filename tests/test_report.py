"""`ganlab report`: grouping over seeds, the statistics, the runs that did not complete, the files."""

import csv
import io
import json
import math
import os

import pytest
from conftest import TINY, ganlab, make_cfg

from ganlab.errors import ConfigError
from ganlab.report import (
    BLOB_FLAG,
    BOOKKEEPING_KEYS,
    CONVERGENCE_FILE,
    DEFAULT_METRICS,
    REPORT_FILES,
    build_report,
)
from ganlab.report_output import write_report

LOSS_TARGETS = {"nsgan": "ganlab.losses.NonSaturatingGAN", "wgan_gp": "ganlab.losses.WGANGP"}


DATASETS = {"ring": {"_target_": "ganlab.data.toy.ring", "modes": 8, "std": 0.02},
            "grid": {"_target_": "ganlab.data.toy.grid", "side": 5, "std": 0.05}}


def write_summary(run_dir, seed, status="completed", loss="nsgan", lr=1e-3, metrics=None, n_modes=8,
                  with_config=True, remedy=None, dataset="ring", **extra):
    """A summary.json as ganlab/train.py `run()` writes it, cut down to what the report reads."""
    config = {"seed": seed, "steps": 100, "cpu_threads": 1, "device": "auto",
              "dataset": DATASETS[dataset],
              "loss": {"_target_": LOSS_TARGETS[loss], "n_critic": 1 if loss == "nsgan" else 5},
              "remedy": remedy or {"none": {"_target_": "ganlab.remedies.none.NoRemedy"}},
              "optim": {"g": {"_target_": "torch.optim.Adam", "lr": lr, "betas": [0.5, 0.999]}},
              "eval": {"every": 50, "background": True}, "log": {"every": 10}}
    summary = {"status": status, "step": 100, "seed": seed, "metrics": metrics or {},
               "labels": {"dataset": dataset, "loss": loss, "remedy": "+".join(remedy or ["none"])},
               "wall_seconds": 1.0, "steps_per_second": 100.0, **extra}
    if with_config:
        summary["config"] = config
    if n_modes is not None:
        summary["n_modes"] = n_modes
    run_dir.mkdir(parents=True)
    # json.dumps writes NaN as `NaN`, which json.loads reads back: a report must cope with it.
    (run_dir / "summary.json").write_text(json.dumps(summary))


def metrics(modes, hq=50.0, rkl=0.5, w1=1.0, gap=0.0):
    return {"modes_captured": modes, "high_quality_pct": hq, "reverse_kl": rkl, "critic_gap": gap,
            "wasserstein1": w1, "wasserstein2": w1 * 1.1}


@pytest.fixture
def mixed(tmp_path):
    """nsgan: 3 completed seeds, 1 diverged, 1 failed; wgan_gp: 1 completed seed."""
    root = tmp_path / "sweep"
    write_summary(root / "0_nsgan_s0", 0, metrics=metrics(8, hq=90.0, rkl=0.1))
    write_summary(root / "1_nsgan_s1", 1, metrics=metrics(6, hq=80.0, rkl=0.3))
    write_summary(root / "2_nsgan_s2", 2, metrics=metrics(7, hq=100.0, rkl=None, w1=math.nan))
    # A diverged run keeps its last evaluation's metrics: they must not enter the statistics.
    write_summary(root / "3_nsgan_s3", 3, status="diverged", metrics=metrics(8, hq=0.0, rkl=9.0),
                  diverged_step=40, error="loss/d is nan")
    write_summary(root / "4_nsgan_s4", 4, status="failed", n_modes=None, error="boom: bad | value")
    write_summary(root / "nested/deeper/5_wgan_gp_s0", 0, loss="wgan_gp", metrics=metrics(8, hq=70.0))
    return root


def by_label(report):
    return {g.label: g for g in report.groups}


# ---- real runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """2 losses x 2 seeds of tiny real runs (seed 1 with another log.every, which is bookkeeping),
    and one run that fails at start-up, in a folder of its own."""
    from ganlab.train import run

    root = tmp_path_factory.mktemp("runs")
    fast = [*TINY, "steps=10", "eval.every=10"]
    for i, (loss, seed) in enumerate([("nsgan", 0), ("nsgan", 1), ("wgan_gp", 0), ("wgan_gp", 1)]):
        labels = {"dataset": "ring", "model": "mlp", "optim": "adam", "loss": loss, "remedy": "none"}
        log_every = "log.every=5" if seed == 0 else "log.every=10"
        run(make_cfg(*fast, f"loss={loss}", f"seed={seed}", log_every), root / "sweep" / f"{i}_{loss}_s{seed}",
            labels)
    with pytest.raises(ConfigError):
        run(make_cfg(*fast, "dataset.std=-1"), root / "bad" / "std", {"loss": "nsgan", "remedy": "none"})
    return root


def test_real_runs_group_over_seeds(real_runs):
    assert "log.every" in BOOKKEEPING_KEYS
    report = build_report(real_runs / "sweep")
    groups = by_label(report)
    assert set(groups) == {"loss=nsgan", "loss=wgan_gp"}
    for loss, group in [("nsgan", groups["loss=nsgan"]), ("wgan_gp", groups["loss=wgan_gp"])]:
        assert group.n_seeds == group.n_completed == 2 and sorted(r.seed for r in group.runs) == [0, 1]
        assert all(r.labels["loss"] == loss for r in group.runs)
        summaries = [json.loads((r.path / "summary.json").read_text()) for r in group.runs]
        values = [s["metrics"]["wasserstein1"] for s in summaries]
        mean = sum(values) / 2
        assert group.stats["wasserstein1"].mean == pytest.approx(mean)
        assert group.stats["wasserstein1"].se == pytest.approx(abs(values[0] - values[1]) / 2)  # n=2
        assert group.n_modes == 8
    assert list(report.metrics) == list(DEFAULT_METRICS)


def test_real_failed_run_is_its_own_group_labelled_by_what_differs(real_runs):
    report = build_report(real_runs)
    assert len(report.groups) == 3
    labels = sorted(g.label for g in report.groups)
    # wgan_gp also changes the learning rates and n_critic: the loss name says that already.
    # dataset.std differs between two nsgan configs, so it is shown for every group.
    assert labels[0].startswith("loss=nsgan dataset.std=-1")
    assert labels[1:] == ["loss=nsgan dataset.std=0.02", "loss=wgan_gp dataset.std=0.02"]
    failed = next(g for g in report.groups if "std=-1" in g.label)
    assert (failed.n_seeds, failed.n_completed, failed.n_failed) == (1, 0, 1)
    assert failed.runs[0].n_modes == 8  # not in its summary: taken from its config (dataset.modes)
    assert failed.all_modes_fraction == 0.0
    assert failed.stats["modes_captured"].mean is None
    assert [r.name for r in report.problems] == ["bad/std"]
    assert "std must be > 0" in report.problems[0].error


# ---- the statistics, by hand ---------------------------------------------------------------


def test_mean_and_standard_error_against_hand_computed_values(mixed):
    report = build_report(mixed, metrics=["modes_captured", "high_quality_pct", "reverse_kl", "wasserstein1"])
    nsgan = by_label(report)["loss=nsgan"]
    modes, hq, rkl, w1 = (nsgan.stats[m] for m in report.metrics)
    # completed seeds: modes 8, 6, 7 -> mean 7, sample std 1, s.e. 1/sqrt(3)
    assert (modes.mean, modes.n) == (7.0, 3) and modes.se == pytest.approx(1 / math.sqrt(3))
    # HQ 90, 80, 100 -> mean 90, std 10, s.e. 10/sqrt(3)
    assert hq.mean == pytest.approx(90.0) and hq.se == pytest.approx(10 / math.sqrt(3))
    # reverse KL is null in one completed run: 0.1, 0.3 -> mean 0.2, std sqrt(0.02), s.e. 0.1; n=2 is shown
    assert rkl.n == 2 and rkl.mean == pytest.approx(0.2) and rkl.se == pytest.approx(0.1)
    # W1 is NaN in one: 1.0, 1.0 -> mean 1, s.e. 0
    assert (w1.n, w1.mean, w1.se) == (2, 1.0, 0.0)
    cell = {m: dict(report.metric_spec(m).rows) for m in report.metrics}  # label -> mean ± s.e.
    assert cell["modes_captured"]["loss=nsgan"] == "7.00 ± 0.58"
    assert cell["high_quality_pct"]["loss=nsgan"] == "90.0 ± 5.8"
    assert cell["reverse_kl"]["loss=nsgan"].endswith("(n=2)") and cell["wasserstein1"]["loss=nsgan"] == "1 ± 0 (n=2)"
    # one completed seed: the value alone, no ±
    wgan = by_label(report)["loss=wgan_gp"]
    assert wgan.stats["modes_captured"].se is None
    assert cell["modes_captured"]["loss=wgan_gp"] == "8"


def test_diverged_and_failed_runs_are_counted_and_listed(mixed):
    report = build_report(mixed)
    nsgan = by_label(report)["loss=nsgan"]
    assert (nsgan.n_seeds, nsgan.n_completed, nsgan.n_diverged, nsgan.n_failed) == (5, 3, 1, 1)
    # the diverged run's last metrics (modes 8, HQ 0) are not in the mean
    assert nsgan.stats["high_quality_pct"].mean == pytest.approx(90.0)
    rows = {row[0]: row for row in report.problem_rows()}
    assert set(rows) == {"3_nsgan_s3", "4_nsgan_s4"}
    assert rows["3_nsgan_s3"][1:] == ["diverged", "100", "diverged at step 40: loss/d is nan"]
    assert rows["4_nsgan_s4"][1:] == ["failed", "100", "boom: bad | value"]
    assert nsgan.runs[-1].n_modes == 8  # the failed run had none: taken from its group


def test_all_modes_fraction_counts_diverged_and_failed_as_not_capturing(mixed):
    report = build_report(mixed)
    nsgan, wgan = by_label(report)["loss=nsgan"], by_label(report)["loss=wgan_gp"]
    # seed 0 captured 8/8; seeds 1 and 2 did not; the diverged run's 8 does not count; 5 runs in all
    assert nsgan.n_all_modes == 1 and nsgan.all_modes_fraction == pytest.approx(0.2)
    assert nsgan.all_modes_text() == "0.20 (1/5)"
    assert wgan.all_modes_fraction == 1.0
    assert "denominator" in report.caption()


def test_one_config_is_labelled_by_dataset_loss_remedy(tmp_path):
    for seed in range(3):
        write_summary(tmp_path / f"s{seed}", seed, metrics=metrics(seed))
    report = build_report(tmp_path)
    assert [g.label for g in report.groups] == ["dataset=ring loss=nsgan remedy=none"]
    assert report.groups[0].n_seeds == 3 and report.groups[0].stats["modes_captured"].mean == 1.0


def test_keys_set_by_the_chosen_option_stay_out_of_the_label(tmp_path):
    # nsgan at lr 1e-3 and 1e-4, wgan_gp at 1e-3: the lr varies within nsgan, so it is shown.
    write_summary(tmp_path / "a", 0, lr=1e-3, metrics=metrics(1))
    write_summary(tmp_path / "b", 0, lr=1e-4, metrics=metrics(2))
    write_summary(tmp_path / "c", 0, loss="wgan_gp", lr=1e-3, metrics=metrics(3))
    labels = [g.label for g in build_report(tmp_path).groups]
    assert labels == ["loss=nsgan optim.g.lr=0.001", "loss=nsgan optim.g.lr=0.0001", "loss=wgan_gp optim.g.lr=0.001"]
    # wgan_gp at 1e-4 only: the lr goes with the loss (n_critic too), the loss name says it all
    (tmp_path / "a" / "summary.json").unlink()
    assert [g.label for g in build_report(tmp_path).groups] == ["loss=nsgan", "loss=wgan_gp"]


def test_combined_remedies_are_labelled_by_their_names(tmp_path):
    def pacgan(m):
        return {"pacgan": {"_target_": "ganlab.remedies.pacgan.PacGAN", "m": m}}

    sn = {"spectral_norm": {"_target_": "ganlab.remedies.spectral_norm.SpectralNorm"}}
    write_summary(tmp_path / "0", 0, metrics=metrics(1))
    write_summary(tmp_path / "1", 0, remedy=pacgan(2), metrics=metrics(2))
    write_summary(tmp_path / "2", 0, remedy=pacgan(3), metrics=metrics(3))
    write_summary(tmp_path / "3", 0, remedy={**pacgan(2), **sn}, metrics=metrics(4))
    write_summary(tmp_path / "4", 1, remedy={**pacgan(2), **sn}, metrics=metrics(6))
    groups = by_label(build_report(tmp_path))
    # the pack size varies between pacgan runs, so it is shown; the stack reads as its labels name
    assert {k: g.n_seeds for k, g in groups.items()} == {
        "remedy=none": 1, "remedy=pacgan remedy.pacgan.m=2": 1, "remedy=pacgan remedy.pacgan.m=3": 1,
        "remedy=pacgan+spectral_norm remedy.pacgan.m=2": 2}
    assert groups["remedy=pacgan+spectral_norm remedy.pacgan.m=2"].stats["modes_captured"].mean == 5.0


def test_bookkeeping_keys_do_not_split_a_group(tmp_path):
    write_summary(tmp_path / "a", 0, metrics=metrics(1))
    write_summary(tmp_path / "b", 1, metrics=metrics(2))
    summary = json.loads((tmp_path / "b/summary.json").read_text())
    summary["config"].update(cpu_threads=4, device="cuda", eval={"every": 50, "background": False})
    (tmp_path / "b/summary.json").write_text(json.dumps(summary))
    assert [g.n_seeds for g in build_report(tmp_path).groups] == [2]
    summary["config"]["steps"] = 200  # an experiment key does split it
    (tmp_path / "b/summary.json").write_text(json.dumps(summary))
    assert [g.label for g in build_report(tmp_path).groups] == ["steps=100", "steps=200"]


def test_summaries_without_config_group_by_their_labels(tmp_path):
    write_summary(tmp_path / "a", 0, with_config=False, n_modes=None, metrics=metrics(8))
    write_summary(tmp_path / "b", 1, with_config=False, n_modes=None, metrics=metrics(6))
    write_summary(tmp_path / "c", 0, loss="wgan_gp", with_config=False, metrics=metrics(8))
    report = build_report(tmp_path)
    groups = by_label(report)
    assert set(groups) == {"loss=nsgan", "loss=wgan_gp"} and groups["loss=nsgan"].n_seeds == 2
    assert groups["loss=nsgan"].all_modes_fraction is None  # n_modes unknown: not guessed
    assert groups["loss=nsgan"].all_modes_text() == "n/a"
    assert groups["loss=wgan_gp"].all_modes_fraction == 1.0


# ---- a seed run twice ----------------------------------------------------------------------


def _written_at(run_dir, seconds):
    """Set when a run's summary.json was written (its modification time)."""
    os.utime(run_dir / "summary.json", (seconds, seconds))


@pytest.fixture
def rerun(tmp_path):
    """`ganlab train -m seed=0,1,2` killed by SIGTERM, then the same command again: a second sweep
    folder that trained all three seeds again. Seed 0 had completed in the first sweep too."""
    first, second = tmp_path / "multirun/day/10-00-00", tmp_path / "multirun/day/11-00-00"
    write_summary(first / "0", 0, metrics=metrics(2))
    write_summary(first / "1", 1, status="interrupted", step=40, metrics=metrics(1), error="SIGTERM")
    write_summary(first / "2", 2, status="interrupted", step=70, metrics=metrics(1), error="SIGTERM")
    for seed, modes in enumerate([5, 6, 7]):
        write_summary(second / str(seed), seed, metrics=metrics(modes))
    for seed in range(3):  # the second sweep ran later
        _written_at(first / str(seed), 1_000_000)
        _written_at(second / str(seed), 2_000_000)
    return tmp_path / "multirun", first, second


def _duplicate_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "more than once" in r.getMessage()]


def test_a_seed_trained_again_counts_once(rerun, caplog):
    root, first, second = rerun
    report = build_report(root)
    (group,) = report.groups
    # one run per seed, each the second sweep's (completed; seed 0 completed in both: the later one)
    assert sorted(r.seed for r in group.runs) == [0, 1, 2]
    assert all(r.path.parent == second for r in group.runs)
    assert (group.n_seeds, group.n_completed, group.n_failed) == (3, 3, 0)
    modes = group.stats["modes_captured"]
    assert (modes.mean, modes.n) == (6.0, 3) and modes.se == pytest.approx(1 / math.sqrt(3))  # 5, 6, 7
    assert report.problems == []  # the left-out interrupted runs are not listed as counted
    assert [r.path for r in report.runs] == [second / "0", second / "1", second / "2"]
    assert [(kept.path, [d.path for d in dropped]) for kept, dropped in report.duplicates] == [
        (second / str(s), [first / str(s)]) for s in range(3)]
    # a warning per seed names both run directories and the one counted
    warnings = _duplicate_warnings(caplog)
    assert len(warnings) == 3
    for seed, text in enumerate(warnings):
        assert f"seed {seed} " in text and str(first / str(seed)) in text and str(second / str(seed)) in text
        assert text.index(str(second / str(seed))) < text.index("left out") < text.index(str(first / str(seed)))
    assert "(interrupted, step 40)" in warnings[1]
    # the seeds column says 3 everywhere: the terminal table, report.md and report.csv
    (row,) = report.overview_spec().rows
    assert row[1:4] == ["3", "0", "0"]
    md = report.markdown()
    assert "| dataset=ring loss=nsgan remedy=none | 3 | 0 | 0 |" in md
    assert str(first / "1") in md.split("## Notes")[1]  # what was left out, in report.md's notes
    (csv_row,) = csv.DictReader(io.StringIO(report.csv()))
    assert (csv_row["n_seeds"], csv_row["n_completed"], csv_row["modes_captured_n"]) == ("3", "3", "3")


def test_cli_warns_on_stderr_about_a_seed_trained_again(rerun):
    root, first, second = rerun
    out = ganlab("report", str(root), "--metrics", "modes_captured", cwd=root)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "more than once" in line]
    assert len(warnings) == 3 and all(str(first) in w and str(second) in w for w in warnings), out.stderr
    assert all(w.startswith("ganlab: warning: dataset=ring ") for w in warnings), out.stderr  # as every warning
    assert "more than once" not in out.stdout
    assert "6.00 ± 0.58" in out.stdout  # 5, 6, 7


@pytest.mark.parametrize("a, b, used", [
    # neither completed: the one that trained more steps, although the other was written later
    (dict(status="interrupted", step=80, at=1), dict(status="failed", step=40, at=2), "a"),
    # a completed run over one that did not, whatever their steps and times
    (dict(status="interrupted", step=90, at=2), dict(status="completed", step=50, at=1), "b"),
    # a diverged run (a result of the seed) over an interrupted one that ran longer
    (dict(status="interrupted", step=90, at=2), dict(status="diverged", step=30, at=1), "b"),
    # both completed at the same step: the later-written, whichever folder sorts first
    (dict(status="completed", step=100, at=2), dict(status="completed", step=100, at=1), "a"),
    # and on equal times, the later folder
    (dict(status="completed", step=100, at=1), dict(status="completed", step=100, at=1), "b"),
])
def test_which_of_two_runs_of_a_seed_counts(tmp_path, caplog, a, b, used):
    for name, spec in (("a", a), ("b", b)):
        write_summary(tmp_path / name / "0", 0, status=spec["status"], step=spec["step"],
                      metrics=metrics(3 if name == "a" else 4))
        _written_at(tmp_path / name / "0", 1_000_000 * spec["at"])
    # b ran with more threads on another device: bookkeeping keys, the same experiment
    summary = json.loads((tmp_path / "b/0/summary.json").read_text())
    summary["config"].update(cpu_threads=4, device="cuda")
    (tmp_path / "b/0/summary.json").write_text(json.dumps(summary))
    _written_at(tmp_path / "b" / "0", 1_000_000 * b["at"])
    report = build_report(tmp_path)
    (group,) = report.groups
    (run,) = group.runs
    assert run.path == tmp_path / used / "0" and group.n_seeds == 1
    (text,) = _duplicate_warnings(caplog)
    other = "b" if used == "a" else "a"
    assert text.index(str(tmp_path / used / "0")) < text.index("left out") < text.index(str(tmp_path / other / "0"))


def test_the_same_seed_of_another_config_is_kept(tmp_path, caplog):
    write_summary(tmp_path / "sweep1/0", 0, lr=1e-3, metrics=metrics(3))
    write_summary(tmp_path / "sweep2/0", 0, lr=1e-4, metrics=metrics(5))
    write_summary(tmp_path / "sweep2/1", 0, loss="wgan_gp", metrics=metrics(7))
    groups = by_label(build_report(tmp_path))
    assert {k: (g.n_seeds, g.stats["modes_captured"].mean) for k, g in groups.items()} == {
        "loss=nsgan optim.g.lr=0.001": (1, 3.0), "loss=nsgan optim.g.lr=0.0001": (1, 5.0),
        "loss=wgan_gp optim.g.lr=0.001": (1, 7.0)}
    # --by pools configs that share seeds on purpose: each run counts, none is a duplicate
    pooled = by_label(build_report(tmp_path, by=["loss"]))
    assert pooled["loss=nsgan"].n_seeds == 2 and pooled["loss=nsgan"].stats["modes_captured"].mean == 4.0
    assert _duplicate_warnings(caplog) == []
    # ... but a run of the same config and seed is still one run with --by
    write_summary(tmp_path / "sweep3/0", 0, lr=1e-3, metrics=metrics(1))
    _written_at(tmp_path / "sweep3/0", 1)  # the older one: sweep1's run counts
    pooled = by_label(build_report(tmp_path, by=["loss"]))
    assert pooled["loss=nsgan"].n_seeds == 2 and pooled["loss=nsgan"].stats["modes_captured"].mean == 4.0
    assert len(_duplicate_warnings(caplog)) == 1


def test_other_seeds_of_the_same_config_in_another_sweep_are_kept(tmp_path, caplog):
    write_summary(tmp_path / "sweep1/0", 0, metrics=metrics(3))
    write_summary(tmp_path / "sweep1/1", 1, metrics=metrics(4))
    write_summary(tmp_path / "sweep2/0", 2, metrics=metrics(5))
    write_summary(tmp_path / "sweep2/1", 3, metrics=metrics(8))
    report = build_report(tmp_path)
    (group,) = report.groups
    assert group.n_seeds == 4 and sorted(r.seed for r in group.runs) == [0, 1, 2, 3]
    assert group.stats["modes_captured"].mean == 5.0
    assert report.overview_spec().rows[0][1] == "4" and report.duplicates == []
    assert _duplicate_warnings(caplog) == []


# ---- options -------------------------------------------------------------------------------


def test_by_groups_by_the_named_keys_only(tmp_path):
    write_summary(tmp_path / "a", 0, lr=1e-3, metrics=metrics(1))
    write_summary(tmp_path / "b", 1, lr=1e-4, metrics=metrics(3))
    write_summary(tmp_path / "c", 0, loss="wgan_gp", lr=1e-3, metrics=metrics(8))
    report = build_report(tmp_path, by=["loss"])
    groups = by_label(report)
    assert set(groups) == {"loss=nsgan", "loss=wgan_gp"}
    assert groups["loss=nsgan"].n_seeds == 2 and groups["loss=nsgan"].stats["modes_captured"].mean == 2.0
    assert "pooled" in report.caption()
    assert set(by_label(build_report(tmp_path, by=["loss._target_"]))) == {"loss=nsgan", "loss=wgan_gp"}
    lr = by_label(build_report(tmp_path, by=["optim.g.lr"]))
    assert {k: g.n_seeds for k, g in lr.items()} == {"optim.g.lr=0.001": 2, "optim.g.lr=0.0001": 1}
    both = build_report(tmp_path, by=["loss", "optim.g.lr"])
    assert len(both.groups) == 3 and both.groups[0].items == [("loss", "nsgan"), ("optim.g.lr", "0.001")]
    with pytest.raises(ConfigError, match=r"unknown key 'lr' for --by; choose from: .*optim\.g\.lr"):
        build_report(tmp_path, by=["lr"])
    with pytest.raises(ConfigError, match="averages over seeds"):
        build_report(tmp_path, by=["seed"])


def test_metrics_selects_the_columns(mixed):
    report = build_report(mixed, metrics=["critic_gap", "wasserstein2"])
    # one table per shown metric; no remedy other than none among these runs: no verdict columns
    assert [spec.title for spec in report.specs()[1:3]] == ["critic_gap", "wasserstein2"]
    assert report.metric_spec("critic_gap").columns == ["configuration", "mean ± s.e."]
    assert {"critic_gap", "wasserstein2"} <= set(report.groups[0].stats)  # + the blob flag's, not shown
    header = report.csv().splitlines()[0].split(",")
    assert "critic_gap_mean" in header and "wasserstein2_se" in header and "reverse_kl_mean" not in header
    with pytest.raises(ConfigError, match="unknown metric 'fid' for --metrics; choose from: modes_captured"):
        build_report(mixed, metrics=["modes_captured", "fid"])


def test_missing_or_empty_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no summary.json found"):
        build_report(tmp_path)


# ---- files ---------------------------------------------------------------------------------


def test_markdown_csv_and_figure_are_written(mixed):
    report = build_report(mixed)
    written = write_report(report)
    assert [p.name for p in written] == list(REPORT_FILES) and all(p.parent == mixed for p in written)
    assert not [p for p in mixed.iterdir() if p.name.endswith(".tmp")]
    md = (mixed / "report.md").read_text()
    assert "| loss=nsgan | 5 | 1 | 1 | 0.20 (1/5) |" in md and "| loss=nsgan | 7.00 ± 0.58 |" in md
    assert "## Protocol" in md and "s.e. = sample std with ddof=1" in " ".join(md.split())
    assert "## runs that did not complete" in md and "| 3_nsgan_s3 | diverged | 100 |" in md
    assert "boom: bad \\| value" in md  # a | inside a cell does not break the table
    with open(mixed / "report.csv", newline="") as f:
        rows = {row["configuration"]: row for row in csv.DictReader(f)}
    nsgan = rows["loss=nsgan"]
    assert nsgan["loss"] == "nsgan"
    assert (nsgan["n_seeds"], nsgan["n_completed"], nsgan["n_diverged"], nsgan["n_failed"]) == ("5", "3", "1", "1")
    assert float(nsgan["all_modes_fraction"]) == pytest.approx(0.2)
    assert float(nsgan["modes_captured_mean"]) == 7.0
    assert float(nsgan["modes_captured_se"]) == pytest.approx(1 / math.sqrt(3))
    assert rows["loss=wgan_gp"]["modes_captured_se"] == ""  # one seed: no s.e.
    png = (mixed / "report_modes.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


# ---- the command line ----------------------------------------------------------------------


def test_cli_prints_the_tables_and_writes_the_files(mixed):
    out = ganlab("report", str(mixed), "--metrics", "modes_captured,reverse_kl", cwd=mixed)
    assert out.returncode == 0, out.stderr
    assert "loss=nsgan" in out.stdout and "7.00 ± 0.58" in out.stdout
    assert "runs that did not complete" in out.stdout and "4_nsgan_s4" in out.stdout
    assert "wasserstein1" not in out.stdout.split("runs that did not complete")[0]
    assert all((mixed / name).exists() for name in REPORT_FILES)


@pytest.mark.parametrize("args, message", [
    (["SWEEP", "--metrics", "modes,reverse_kl"], "unknown metric 'modes' for --metrics; choose from: "),
    (["SWEEP", "--by", "optim.lr"], "unknown key 'optim.lr' for --by; choose from: "),
    (["EMPTY"], "no runs under "),
    (["MISSING"], "does not exist"),
])
def test_cli_errors_are_one_line_with_exit_status_2(mixed, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"SWEEP": str(mixed), "EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "missing")}
    out = ganlab("report", *(paths.get(a, a) for a in args), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganlab: error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr and not (mixed / "report.md").exists()


def test_cli_help(tmp_path):
    out = ganlab("report", "--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage: ganlab report")
    assert "--metrics" in out.stdout and "--by" in out.stdout
    assert "report" in ganlab("--help", cwd=tmp_path).stdout


# ---- reference rows, verdicts, flags, convergence --------------------------------------------------

PACGAN = {"pacgan": {"_target_": "ganlab.remedies.pacgan.PacGAN", "m": 2}}


def references(gauss_modes=18.0, gauss_kl=0.05, seed=0):
    """summary.json `references`, as a 2-D run writes them (numbers of the grid's protocol)."""
    return {"untrained": {"modes_captured": 0, "high_quality_pct": 0.0, "reverse_kl": 2.5 + 0.01 * seed},
            "gaussian": {"modes_captured": gauss_modes + seed % 2, "high_quality_pct": 1.5, "reverse_kl": gauss_kl},
            "data": {"modes_captured": 25, "high_quality_pct": 98.9, "reverse_kl": 0.004}}


def history(values, metric="modes_captured"):
    return {"steps": [100 * (i + 1) for i in range(len(values))], "metrics": {metric: values}}


@pytest.fixture
def ring_and_grid(tmp_path):
    """none and pacgan on the ring and on the grid, 5 seeds each."""
    root = tmp_path / "ring_and_grid"
    for dataset, none_modes, pacgan_modes in (("ring", [1, 0, 2, 1, 0], [8, 8, 7, 8, 8]),
                                              ("grid", [3, 5, 4, 6, 2], [18, 19, 17, 18, 19])):
        for seed in range(5):
            write_summary(root / f"{dataset}_none_s{seed}", seed, dataset=dataset, references=references(seed=seed),
                          metrics=metrics(none_modes[seed], rkl=1.5 + 0.1 * seed),
                          history=history([0, none_modes[seed], none_modes[seed]]))
            write_summary(root / f"{dataset}_pacgan_s{seed}", seed, dataset=dataset, remedy=PACGAN,
                          references=references(seed=seed), metrics=metrics(pacgan_modes[seed], rkl=0.05 + 0.001 * seed),
                          history=history([2, 10 + seed, 12 + 2 * seed, pacgan_modes[seed]]))
    return root


def test_ring_and_grid_rows_get_verdicts_against_their_own_baseline(ring_and_grid):
    report = build_report(ring_and_grid)
    assert report.baseline == ("remedy", "none")
    rows = {g.label: g for g in report.groups}
    for dataset in ("ring", "grid"):
        pac, none = rows[f"dataset={dataset} remedy=pacgan"], rows[f"dataset={dataset} remedy=none"]
        assert pac.baseline is none and none.baseline is none
        assert pac.verdicts["modes_captured"].word == "better" and pac.verdicts["reverse_kl"].word == "better"
        assert none.verdict_text("modes_captured") == "baseline"
    # 5 against 5 seeds all apart: p = 2/252 on each metric; 2 datasets x 4 metrics (modes, HQ, KL, W1) = 8 comparisons in the family
    assert pac.verdicts["modes_captured"].p == pytest.approx(2 / 252) and report.family_size == 8
    md = report.markdown()
    assert "## modes_captured: vs remedy=none, permutation p, Benjamini-Hochberg q over 8 comparisons" in md
    assert "| dataset=ring remedy=pacgan | 7.80 ± 0.20 | [6.2, 7.6] | 0.008 | 0.016 | better |" in md
    assert "exact permutation test" in md and "no difference" not in md


def test_reference_rows_are_labelled_and_pooled_per_dataset(ring_and_grid):
    report = build_report(ring_and_grid)
    labels = [r.label for r in report.reference_rows]
    assert labels == [f"reference: {what} (dataset={ds})" for ds in ("grid", "ring")
                      for what in ("untrained G", "Gaussian fit", "real data")]
    gauss = report.reference_rows[1]
    # one run per seed: both groups' runs of a seed drew the same reference samples
    assert gauss.n == 5 and gauss.stats["modes_captured"].mean == pytest.approx(18.4)
    md = report.markdown()
    for label in labels:
        assert f"| {label} | " in md
    rows = list(csv.DictReader(io.StringIO(report.csv())))
    assert rows[-1]["configuration"] == "reference: real data (dataset=ring)" and rows[-1]["modes_captured_mean"] == "25.0"


def test_blob_flag_needs_both_modes_and_kl_within_two_standard_errors(tmp_path):
    for seed in range(4):
        write_summary(tmp_path / f"none_s{seed}", seed, dataset="grid", references=references(gauss_kl=0.05),
                      metrics=metrics(17 + seed % 3, hq=1.4 + 0.1 * (seed % 3), rkl=0.04 + 0.01 * (seed % 3)))
        write_summary(tmp_path / f"pacgan_s{seed}", seed, dataset="grid", remedy=PACGAN,
                      references=references(gauss_kl=0.05), metrics=metrics(24 + seed % 2, rkl=0.02))
    rows = {g.label: g for g in build_report(tmp_path).groups}
    assert BLOB_FLAG in rows["remedy=none"].flags and BLOB_FLAG not in rows["remedy=pacgan"].flags
    assert BLOB_FLAG in build_report(tmp_path).markdown()
    # computed whatever metrics are shown
    assert BLOB_FLAG in {g.label: g for g in build_report(tmp_path, metrics=["critic_gap"]).groups}["remedy=none"].flags


def test_sharp_samples_on_the_blobs_number_of_modes_are_not_a_blob(tmp_path):
    for seed in range(4):  # the blob's modes and KL, but 90 % of the samples high quality
        write_summary(tmp_path / f"s{seed}", seed, dataset="grid", references=references(gauss_kl=0.05),
                      metrics=metrics(17 + seed % 3, hq=90.0 + seed, rkl=0.04 + 0.01 * (seed % 3)))
    assert BLOB_FLAG not in build_report(tmp_path).groups[0].flags


def test_still_moving_rows_are_flagged_and_drawn(ring_and_grid):
    report = build_report(ring_and_grid)
    rows = {g.label: g for g in report.groups}
    # pacgan's modes rose in every seed over the last evaluations; none's stayed where they were
    assert "still moving: modes_captured" in rows["dataset=ring remedy=pacgan"].flags
    assert not any(f.startswith("still moving") for f in rows["dataset=ring remedy=none"].flags)
    written = write_report(report)
    assert ring_and_grid / CONVERGENCE_FILE in written
    png = (ring_and_grid / CONVERGENCE_FILE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20000


def test_explicit_baseline_and_its_errors(ring_and_grid, mixed):
    report = build_report(ring_and_grid, baseline="remedy=pacgan")
    rows = {g.label: g for g in report.groups}
    assert rows["dataset=ring remedy=none"].verdicts["modes_captured"].word == "worse"
    with pytest.raises(ConfigError, match="--baseline remedy=madgan: no group has it; the groups are: "):
        build_report(ring_and_grid, baseline="remedy=madgan")
    with pytest.raises(ConfigError, match="give KEY=VALUE"):
        build_report(ring_and_grid, baseline="remedy")
    # a sweep over losses: compared with the nsgan group on request; one wgan_gp seed gives n/a
    by_loss = {g.label: g for g in build_report(mixed, baseline="loss=nsgan").groups}
    assert by_loss["loss=wgan_gp"].verdict_text("modes_captured") == "n/a (fewer than 2 seeds)"
    assert build_report(mixed).has_verdicts is False  # every group is remedy=none: nothing to compare
    out = ganlab("report", str(ring_and_grid), "--baseline", "remedy=madgan", cwd=ring_and_grid)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_a_verdict_never_crosses_datasets(tmp_path):
    for seed in range(3):
        write_summary(tmp_path / f"ring_none_s{seed}", seed, dataset="ring", metrics=metrics(1 + seed))
        write_summary(tmp_path / f"grid_pacgan_s{seed}", seed, dataset="grid", remedy=PACGAN, metrics=metrics(20 + seed))
    rows = {g.label: g for g in build_report(tmp_path).groups}
    grid = rows["dataset=grid remedy=pacgan"]
    assert grid.baseline is None and grid.verdict_text("modes_captured") == "n/a (no baseline on this dataset)"


def test_sweep_of_remedies_reports_references_and_verdicts(tmp_path):
    """Done-when of issue 12: a fresh `ganlab train -m remedy=none,pacgan seed=0,1` then `ganlab report`."""
    sweep = tmp_path / "sweep"
    out = ganlab("train", "-m", "remedy=none,pacgan", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for summary_path in sweep.rglob("summary.json"):
        refs = json.loads(summary_path.read_text())["references"]
        assert set(refs) == {"untrained", "gaussian", "data"}
        assert refs["data"]["modes_captured"] == 8 and refs["untrained"]["critic_gap"] is not None
        assert {"modes_captured", "high_quality_pct", "reverse_kl", "reverse_kl_hq", "wasserstein1"} <= set(refs["gaussian"])
    report = ganlab("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = " ".join(report.stdout.split())
    for label in ("reference: untrained G", "reference: Gaussian fit", "reference: real data"):
        assert label in text
    assert "vs remedy=none, permutation p, Benjamini-Hochberg q over" in text and "baseline" in text
    # 2 seeds a side: the smallest exact permutation p is 2/C(4, 2) = 0.333, so nothing can be significant
    assert "not significant" in text and "better" not in text
    assert (sweep / CONVERGENCE_FILE).exists()


CONDITIONAL = {"acgan": {"_target_": "ganlab.remedies.acgan.ACGAN", "class_weight": 1.0}}
LOCAL = {"local_generator": {"_target_": "ganlab.remedies.local_generator.LocalizedGAN", "scale": 0.0004}}


@pytest.fixture
def with_labels_and_anchors(tmp_path):
    """none, pacgan, acgan (class labels) and local_generator (real anchors) on the ring, 5 seeds each."""
    root = tmp_path / "uses"
    for seed in range(5):
        write_summary(root / f"none_s{seed}", seed, references=references(seed=seed),
                      metrics=metrics(3 + seed % 3, rkl=1.0 + 0.1 * seed), history=history([1, 2, 3 + seed % 3]))
        write_summary(root / f"pacgan_s{seed}", seed, remedy=PACGAN, references=references(seed=seed),
                      metrics=metrics(7 + seed % 2, rkl=0.05 + 0.01 * seed))
        write_summary(root / f"acgan_s{seed}", seed, remedy=CONDITIONAL, references=references(seed=seed),
                      metrics={**metrics(8, rkl=0.0017), "class_fidelity_pct": 90.0 + seed})
        write_summary(root / f"local_s{seed}", seed, remedy=LOCAL, references=references(seed=seed),
                      metrics={**metrics(8, rkl=0.0016), "local_origin_error": 0.07 + 0.01 * seed})
    return root


def test_rows_that_use_labels_or_anchors_get_their_own_tables_and_no_verdicts(with_labels_and_anchors):
    from ganlab.remedies.acgan import ACGAN
    from ganlab.remedies.cgan_projection import ProjectionCGAN
    from ganlab.remedies.local_generator import LocalizedGAN
    from ganlab.remedies.pacgan import PacGAN

    assert ACGAN.uses == ProjectionCGAN.uses == ("class labels",) and LocalizedGAN.uses == ("real anchors at sampling",)
    assert PacGAN.uses == ()
    report = build_report(with_labels_and_anchors)
    rows = by_label(report)
    acgan, local, pac = rows["remedy=acgan"], rows["remedy=local_generator"], rows["remedy=pacgan"]
    assert acgan.uses == ("class labels",) and local.uses == ("real anchors at sampling",)
    assert acgan.baseline is None and local.baseline is None and pac.baseline is rows["remedy=none"]
    assert acgan.verdict_text("modes_captured") == "n/a (uses class labels: not compared with remedy=none)"
    assert report.family_size == 4  # pacgan's 4 metrics only
    assert report.compared_groups == [rows["remedy=none"], pac]
    md = report.markdown()
    main_tables = md.split("## rows that use")[0]
    assert "remedy=acgan" not in main_tables.split("## modes_captured")[1]
    assert "## rows that use class labels (not compared with remedy=none)" in md
    assert "## rows that use real anchors at sampling (not compared with remedy=none)" in md
    # their own metrics (class fidelity, distance to the anchors) in their tables
    uses_tables = {spec.title: spec for spec in report.uses_specs()}
    assert any("class_fidelity_pct" in spec.columns for title, spec in uses_tables.items() if "class labels" in title)
    assert any("local_origin_error" in spec.columns for title, spec in uses_tables.items() if "anchors" in title)
    csv_rows = {row["configuration"]: row for row in csv.DictReader(io.StringIO(report.csv()))}
    assert csv_rows["remedy=acgan"]["uses"] == "class labels" and csv_rows["remedy=acgan"]["modes_captured_p"] == ""


def test_the_terminal_report_reads_at_100_columns(with_labels_and_anchors):
    """Every table fits 100 columns and no cell is cut: numbers and verdicts whole on one line, labels and
    flags wrapped at spaces only."""
    from rich.console import Console

    # the hard cases: a dataset with no baseline (its verdict is a sentence), a one-seed row, long labels,
    # small values with long intervals
    root = with_labels_and_anchors
    minibatch = {"minibatch_disc": {"_target_": "ganlab.remedies.minibatch_disc.MinibatchDiscrimination"}}
    for seed in range(5):
        write_summary(root / f"grid_mbd_s{seed}", seed, dataset="grid", remedy=minibatch, n_modes=25,
                      metrics={**metrics(20 + seed), "reverse_kl_hq": 0.00013 * (seed + 2) ** 2})
        write_summary(root / f"none_kl_s{seed}", seed, lr=3e-4, metrics={**metrics(8, rkl=0.0332 - 0.004 * seed),
                                                                        "reverse_kl_hq": 0.0011 * (seed + 2)})
    write_summary(root / "pac3_s0", 0, remedy={"pacgan": {"_target_": "ganlab.remedies.pacgan.PacGAN", "m": 3}},
                  metrics={**metrics(8, rkl=0.00123), "reverse_kl_hq": 0.000451})
    report = build_report(root)
    assert any(g.n_seeds == 1 for g in report.groups) and any(g.baseline is None and not g.uses for g in report.groups)
    console = Console(width=100, record=True, file=io.StringIO())
    for table in report.tables():
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    words = set(text.split())
    for spec in report.specs():
        for row in spec.rows + spec.references:
            for i, cell in enumerate(row):
                if i in spec.wrap:
                    assert set(cell.split()) <= words, cell
                else:
                    assert cell in text, cell
    assert "not significant" in text or "better" in text
    assert ["n/a (no baseline on this dataset)"] in [row[-1:] for row in report.metric_spec("reverse_kl").rows]
    assert "remedy=minibatch_disc" in text  # a label's word is never broken


def test_cli_prints_the_protocol_only_when_asked(ring_and_grid):
    plain = ganlab("report", str(ring_and_grid), cwd=ring_and_grid)
    assert plain.returncode == 0 and "exact permutation test" not in plain.stdout
    assert "report.md's Protocol, or --protocol" in plain.stdout
    full = ganlab("report", str(ring_and_grid), "--protocol", cwd=ring_and_grid)
    assert full.returncode == 0 and "exact permutation test" in " ".join(full.stdout.split())


def drawn(monkeypatch, make, report):
    """The matplotlib figure that `make(report)` turns into PNG bytes, laid out as in the PNG."""
    from ganlab import report_output

    figures = []
    monkeypatch.setattr(report_output, "_png", lambda fig: figures.append(fig) or b"")
    make(report)
    (fig,) = figures
    fig.savefig(io.BytesIO(), format="png")  # the layout is made when the figure is drawn
    return fig


def test_figure_titles_fit_and_seeds_at_one_value_are_drawn_apart(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from ganlab.report_output import convergence_figure, modes_figure

    # One configuration: the narrowest figures (5 and 3.4 inches), whose long titles were cut off.
    for seed, modes in enumerate([7, 7, 7, 7, 7, 5]):  # five seeds at one value: common for mode counts
        write_summary(tmp_path / f"s{seed}", seed, metrics=metrics(modes), history=history([0, modes, modes]))
    report = build_report(tmp_path)
    modes_fig = drawn(monkeypatch, modes_figure, report)
    (ax,) = modes_fig.axes
    (points,) = [c for c in ax.collections if c.get_label() == "one seed"]
    offsets = points.get_offsets()
    assert sorted(y for _, y in offsets) == [5, 7, 7, 7, 7, 7]
    sevens = sorted(ax.transData.transform([(x, y) for x, y in offsets if y == 7])[:, 0])
    diameter = math.sqrt(points.get_sizes()[0]) * modes_fig.dpi / 72  # scatter sizes are points squared
    assert min(b - a for a, b in zip(sevens, sevens[1:])) > diameter  # side by side, each marker whole
    for fig, start in ((modes_fig, "Mode coverage"), (drawn(monkeypatch, convergence_figure, report), "Convergence")):
        (title,) = [t for t in fig.findobj(Text) if t.get_text().startswith(start)]
        box, frame = title.get_window_extent(), fig.bbox
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, start
        assert "\n" in title.get_text()  # it fits by taking more lines
        plt.close(fig)
