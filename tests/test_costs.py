"""Issue 30 item 5: the cost of a sweep, said in one line before it starts, from the measured speeds of
ganlab/configs/measured_costs.yaml (figures of docs/benchmarks.md); a job measured nowhere has no measured cost."""

import re

import pytest
import torch
from conftest import REPO, TINY, make_cfg
from omegaconf import OmegaConf
from test_sweep_safety import in_process

from ganlab import costs


def resolved(*overrides: str) -> dict:
    return OmegaConf.to_container(make_cfg(*overrides), resolve=True)


def compose(overrides: list[str]) -> dict:
    return resolved(*overrides)


def test_every_figure_is_one_measured_in_the_benchmarks_doc():
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    table = costs.table()
    assert table["source"] == "docs/benchmarks.md" and "2-core CPU" in table["machine"]
    entries = [(name, entry) for setup in table["setups"].values() for name, entry in setup["remedies"].items()]
    assert len(entries) == 16
    for name, entry in entries:
        assert doc.count(entry["quote"]) == 1, name  # still there, once
        figure = re.escape(f"{entry['steps_per_second']:.1f}")
        assert re.search(rf"(^|[ |]){figure}( |$)", entry["quote"]), name


def test_the_default_run_is_the_veegan_setup_on_the_ring():
    """The two measured setups are the same networks, loss and batch: make bench's remedy=none figure stands for
    the bench_remedies rows' setup too."""
    setups = costs.table()["setups"]
    default, veegan = (costs.cost_view(compose([*setups[name]["overrides"], "remedy=none"]))
                       for name in ("default", "veegan_setup_ring"))
    assert default == veegan


def test_the_estimate_is_the_steps_over_the_measured_speed():
    none, unrolled = 213.0, 28.0  # docs/benchmarks.md: make bench's whole run, and unrolled after the G-step change
    rates = {name: e["steps_per_second"] for s in costs.table()["setups"].values() for name, e in s["remedies"].items()}
    assert (rates["none"], rates["unrolled"]) == (none, unrolled)
    jobs = [resolved(f"seed={seed}") for seed in range(4)] + [resolved("remedy=unrolled", f"seed={s}") for s in (0, 1)]
    # 4 x 10,000 / 213.0 + 2 x 10,000 / 28.0 = 187.8 + 714.3 = 902.1 s; at best half that on 2 cores at once
    line = costs.estimate(jobs, at_once=2, cores=2, compose=compose)
    assert line == ("sweep cost: about 15 min of machine time at the speed measured on a 2-core CPU (2 vCPUs, AMD "
                    "EPYC), 1 torch thread a job (docs/benchmarks.md; steps/s: none 213.0, unrolled 28.0), at best "
                    "about 8 min with 2 jobs at once")
    # one job at a time, or more jobs at once than cores: no better than the cores allow
    assert costs.estimate(jobs, at_once=1, cores=2, compose=compose).endswith("unrolled 28.0)")
    assert "at best about 8 min with 2 jobs at once" in costs.estimate(jobs, at_once=6, cores=2, compose=compose)


def test_replicas_count_each_seed_and_the_length_counts():
    # replicas=8: 8 seeds of 5,000 steps = 40,000 / 213.0 = 187.8 s; steps are what the config says
    line = costs.estimate([resolved("replicas=8", "steps=5000")], at_once=1, cores=2, compose=compose)
    assert line.startswith("sweep cost: about 3 min of machine time")
    assert costs.estimate([resolved("steps=100")], at_once=1, cores=2, compose=compose).startswith(
        "sweep cost: under 1 s of machine time")


@pytest.mark.parametrize("overrides, why", [
    (["loss=wgan_gp"], "remedy=none was measured on a setup this job differs from in loss"),
    (["dataset=grid"], "remedy=none was measured on a setup this job differs from in dataset"),
    (["batch_size=64"], "remedy=none was measured on a setup this job differs from in batch_size"),
    (["model.g.width=256"], "remedy=none was measured on a setup this job differs from in model"),
    (["remedy=unrolled", "remedy.unrolled.k=10"], "remedy=unrolled was measured on a setup this job differs from in "
                                                  "remedy"),
    (["cpu_threads=2"], "remedy=none was measured on a setup this job differs from in cpu_threads (it trains on 2, "
                        "the setup was measured on 1)"),
    (["eval.background=false"], "remedy=none was measured on a setup this job differs from in cpu_threads (it "
                                "trains on 2, the setup was measured on 1)"),  # auto: no worker, both cores
    (["remedy=acgan"], "remedy=acgan is not measured"),
    (["remedy=[pacgan,minibatch_std]"], "remedy=pacgan+minibatch_std (a combination) is not measured"),
])
def test_a_job_measured_nowhere_has_no_measured_cost(overrides, why):
    line = costs.estimate([resolved(*overrides)], at_once=1, cores=2, compose=compose)
    assert line.startswith(f"sweep cost: no measured cost for its 1 run: {why}"), line
    assert "about" not in line  # no guess


def test_a_sweep_partly_measured_counts_only_the_measured_jobs_and_says_so():
    jobs = [resolved("seed=0"), resolved("loss=wgan_gp"), resolved("seed=1")]
    line = costs.estimate(jobs, at_once=1, cores=2, compose=compose)
    # 2 x 10,000 / 213.0 = 93.9 s
    assert line.startswith("sweep cost: about 2 min of machine time")
    assert line.endswith("; no measured cost for 1 of 3 jobs, not counted (job 1: remedy=none was measured on a "
                         "setup this job differs from in loss)")


def test_a_job_on_a_gpu_has_no_measured_cost(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    line = costs.estimate([resolved()], at_once=1, cores=2, compose=compose)
    assert line.startswith("sweep cost: no measured cost for its 1 run: device=auto trains on a GPU here")


def test_the_sweep_says_its_cost_in_one_line_before_it_starts(capsys, monkeypatch, tmp_path):
    # cpu_threads=1: debug=tiny evaluates inline, so auto would train on both cores of this machine, not as measured
    code, out, err = in_process(["train", "-m", *TINY, "batch_size=256", "cpu_threads=1", "seed=0,1"], capsys,
                                monkeypatch, tmp_path)
    assert code == 0, err
    lines = (out + err).splitlines()
    said = [i for i, line in enumerate(lines) if "sweep cost:" in line]
    launched = next(i for i, line in enumerate(lines) if "Launching 2 jobs" in line)
    assert len(said) == 1 and said[0] < launched, out
    # debug=tiny: 2 runs of 20 steps at remedy=none's 213.0 steps/s
    assert "sweep cost: under 1 s of machine time" in lines[said[0]] and "none 213.0" in lines[said[0]]
