"""run(cfg) in-process: determinism, and what the loop guarantees."""

import json

import numpy as np
import pytest
from conftest import TINY, make_cfg

from ganlab.config import options
from ganlab.errors import ConfigError
from ganlab.metrics import TOY_METRICS
from ganlab.train import Diverged, run


def comparable(summary):
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "steps_per_second", "run_dir")}


def test_same_seed_gives_identical_summaries(tmp_path):
    a = run(make_cfg(*TINY, "seed=5"), tmp_path / "a")
    b = run(make_cfg(*TINY, "seed=5"), tmp_path / "b")
    assert comparable(a) == comparable(b)
    assert np.array_equal(np.load(tmp_path / "a/samples.npz")["x"], np.load(tmp_path / "b/samples.npz")["x"])
    c = run(make_cfg(*TINY, "seed=6"), tmp_path / "c")
    assert comparable(c)["metrics"] != comparable(a)["metrics"]


def test_eval_cadence_does_not_change_training(tmp_path):
    a = run(make_cfg(*TINY, "eval.every=5"), tmp_path / "a")
    b = run(make_cfg(*TINY, "eval.every=20", "log.every=20"), tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    assert len(a["mode_history"]["steps"]) == 4 and len(b["mode_history"]["steps"]) == 1


def test_divergence_writes_summary_and_raises(tmp_path):
    with pytest.raises(Diverged):
        run(make_cfg(*TINY, "optim.d.lr=1e30"), tmp_path)
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] == 5
    assert not (tmp_path / "checkpoint.pt").exists()  # no checkpoint of a broken model


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    with pytest.raises(ConfigError, match="device=cuda but CUDA is not available"):
        run(make_cfg(*TINY, "device=cuda"), tmp_path)


def test_cuda_request_is_refused_before_any_work(tmp_path):
    import torch
    from conftest import ganlab

    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    out = ganlab("train", "device=cuda", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().endswith("use device=auto or device=cpu")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_trains_end_to_end(tmp_path, loss):
    summary = run(make_cfg(*TINY, f"loss={loss}", "steps=10", "eval.every=10"), tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 10
    metrics = summary["metrics"]
    assert set(metrics) == set(TOY_METRICS)  # every registered 2-D metric (ganlab/metrics/__init__.py)
    # reverse_kl_hq is undefined (null) when no sample is high quality, as after 10 steps
    assert (metrics["reverse_kl_hq"] is None) == (metrics["high_quality_pct"] == 0)
    assert all(np.isfinite(v) for k, v in metrics.items() if k != "reverse_kl_hq")
    assert metrics["wasserstein1"] > 0 and metrics["wasserstein2"] >= metrics["wasserstein1"]  # W1 <= W2
    assert metrics["mmd"] > 0 and metrics["mmd_multiscale"] > 0
    lipschitz = loss in ("wgan", "wgan_gp")
    assert ("not a Wasserstein estimate" not in summary["protocol"]["critic_gap"]) == lipschitz


def test_a_start_up_failure_leaves_a_failed_summary(tmp_path):
    import json

    with pytest.raises(ConfigError, match="dataset: std must be > 0"):
        run(make_cfg(*TINY, "dataset.std=-1"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "std must be > 0" in summary["error"]


def test_eval_reloads_every_network_and_reproduces_the_final_metrics(tmp_path):
    """`ganlab eval` rebuilds the run from summary.json, loads the checkpoint (the remedy's extra
    network too: ortho_jacobian's learned scale) and draws the final evaluation's samples again."""
    from conftest import ganlab

    summary = run(make_cfg(*TINY, "remedy=ortho_jacobian"), tmp_path / "run")
    result = ganlab("eval", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["step"] == 20 and record["mode_counts"] == summary["mode_counts"]
    assert record["metrics"].keys() == summary["metrics"].keys()
    for key, value in summary["metrics"].items():
        if value is None:  # undefined in both (reverse_kl_hq without a high-quality sample)
            assert record["metrics"][key] is None, key
            continue
        assert record["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert "ortho_scale" in result.stdout and "eval.json" in result.stdout

    more = ganlab("eval", str(tmp_path / "run"), "--samples", "300", cwd=tmp_path)
    assert more.returncode == 0 and json.loads((tmp_path / "run" / "eval.json").read_text())["protocol"]["samples"] == 300

    missing = ganlab("eval", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"ganlab: error: no run directory at {tmp_path / 'nowhere'}"]


def test_reference_rows_leave_the_training_trajectory_unchanged(tmp_path, monkeypatch):
    """The references are measured before the first step from an RNG of their own; without them the
    run trains to the very same samples (drs too: its evaluation calibrates on the untrained G)."""
    from ganlab import train

    for remedy in ("none", "drs"):
        extra = ["remedy.drs.calibration_samples=500", "remedy.drs.burn_in=1000"] if remedy == "drs" else []
        cfg = [*TINY, f"remedy={remedy}", *extra]
        with_refs = run(make_cfg(*cfg), tmp_path / f"{remedy}_with")
        assert set(with_refs["references"]) == {"untrained", "gaussian", "data"}
        monkeypatch.setattr(train, "measure_references", lambda *args: {})
        without = run(make_cfg(*cfg), tmp_path / f"{remedy}_without")
        monkeypatch.undo()
        assert without["references"] == {}
        assert with_refs["metrics"] == without["metrics"]
        a, b = (np.load(tmp_path / f"{remedy}_{k}" / "samples.npz")["x"] for k in ("with", "without"))
        assert np.array_equal(a, b)
