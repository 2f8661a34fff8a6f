"""The stabilisers beside the remedies (issue 29, item 7): G's moving average (`ema.decay`, ganlab/ema.py),
the R1/R2 penalties of the logistic losses (`loss.r1_gamma`, `loss.r2_gamma`, ganlab/losses.py) and the
learning-rate schedule (`optim.schedule`, `optim.warmup`, ganlab/schedule.py): each against its closed
form, refused in one line where it does not apply, and resumed bit-identically."""

import copy
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from conftest import TINY, built, make_cfg
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ganlab import checkpoint, losses, schedule
from ganlab.config import compose_checked
from ganlab.errors import ConfigError
from ganlab.evaluation import eval_seed, make_evaluator
from ganlab.gan import build, load_checkpoint, seed_everything
from ganlab.step import PlainUpdate, take_step
from ganlab.train import run

CPU = torch.device("cpu")


# --- G's moving average ------------------------------------------------------------------------------

def test_the_average_is_the_decay_weighted_mean_of_gs_parameters_after_k_steps():
    """avg_k = d^k p_0 + sum_i (1 - d) d^(k - i) p_i over the parameters p_i after G step i (p_0: G as built),
    computed by hand in float64 from snapshots; buffers (G's batch norm statistics) are G's own; and the
    average changes nothing of the training: G follows the run without it bit for bit."""
    decay, k = 0.8, 6
    overrides = ["model.g.batch_norm=true", "batch_size=32"]
    exp = built(*overrides, "ema.decay=0.8")
    assert exp.ema is not None and exp.ema.decay == decay
    snapshots = [[p.detach().double().clone() for p in exp.G.parameters()]]
    update = PlainUpdate(exp, 32)
    for _ in range(k):
        take_step(update, log_now=False)
        snapshots.append([p.detach().double().clone() for p in exp.G.parameters()])
    for n, averaged in enumerate(exp.ema.G.parameters()):
        by_hand = decay ** k * snapshots[0][n] + sum((1 - decay) * decay ** (k - i) * snapshots[i][n]
                                                     for i in range(1, k + 1))
        assert not averaged.requires_grad
        torch.testing.assert_close(averaged.double(), by_hand, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(averaged.double(), snapshots[-1][n])  # an average, not G
    buffers = dict(exp.G.named_buffers())
    assert buffers and all(torch.equal(b, buffers[name]) for name, b in exp.ema.G.named_buffers())

    plain = built(*overrides)  # the same seed, no average: the same G after k steps
    assert plain.ema is None
    update = PlainUpdate(plain, 32)
    for _ in range(k):
        take_step(update, log_now=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.G.parameters(), exp.G.parameters()))


class _Dispatched(TorchDispatchMode):
    """The names of the aten ops run inside the block: what the device is asked to do, kernel by kernel."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("overrides, ops", [
    ([], ["_foreach_lerp_"]),  # the MLP: 8 parameters, no buffers
    (["model.g.batch_norm=true"], ["_foreach_lerp_", "_foreach_copy_"]),  # 14 parameters, and BN's statistics
])
def test_one_update_of_the_average_is_one_foreach_op_per_kind_of_tensor(overrides, ops):
    """A step of the average asks for one kernel over all of G's parameters (and one copy of all its buffers), not
    one per tensor: on CUDA each op is a launch, every training step (ganlab/ema.py)."""
    exp = built(*overrides, "ema.decay=0.9")
    assert len(list(exp.G.parameters())) >= 8
    with _Dispatched() as seen:
        exp.ema.update()
    assert seen.ops == ops


def test_the_average_is_off_by_default_and_at_zero():
    assert built().ema is None and built("ema.decay=0").ema is None


def test_replicas_average_each_replica_as_its_own_run_does():
    """replicas=2 with ema and a schedule: replica 1's average (copied out by sync) is the separate run's."""
    from test_replicas import replica_group

    overrides = ["ema.decay=0.9", "optim.schedule=linear", "optim.warmup=2", "steps=20"]
    group, cfg = replica_group(*overrides, batch=32), make_cfg(*overrides, "batch_size=32")
    rates = schedule.Schedule.of(cfg, group.optimizers())
    seed_everything(1)
    alone = build(cfg, CPU)
    alone.remedy.begin_step(1)
    alone_update = PlainUpdate(alone, 32)
    alone_rates = schedule.Schedule.of(cfg, alone_update.optimizers())
    for step in range(1, 5):
        rates.set(step)
        take_step(group, log_now=False)
        alone_rates.set(step)
        take_step(alone_update, log_now=False)
    group.sync(1)
    for mine, theirs in zip(group.exps[1].ema.G.parameters(), alone.ema.G.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert group.g_opt.param_groups[0]["lr"] == alone.g_opt.param_groups[0]["lr"] == 1e-3 * 17 / 18


# --- R1 and R2 ---------------------------------------------------------------------------------------

class Quadratic(nn.Module):
    """D(x) = x^T A x / 2 + w . x, A symmetric: grad_x D = A x + w, known in closed form at every point."""

    def __init__(self, A, w, samples_per_score: int = 1):
        super().__init__()
        self.A, self.w = nn.Parameter(torch.tensor(A)), nn.Parameter(torch.tensor(w))
        self.samples_per_score = samples_per_score  # > 1: a packed D, scoring consecutive samples as one input

    def forward(self, x):
        x = x.reshape(x.shape[0] // self.samples_per_score, -1)
        return 0.5 * ((x @ self.A) * x).sum(dim=1) + x @ self.w


def test_r1_and_r2_equal_their_closed_forms_on_a_linear_d():
    """D(x) = w . x: ||grad|| = ||w|| everywhere, so R1 = r1_gamma / 2 ||w||^2 and R2 likewise; their
    gradient w.r.t. w is (r1_gamma + r2_gamma) w."""
    D = Quadratic([[0.0, 0.0], [0.0, 0.0]], [3.0, 4.0])  # ||w||^2 = 25
    real, fake = torch.randn(16, 2), torch.randn(16, 2) + 5
    for r1, r2 in ((10.0, 0.0), (0.0, 4.0), (10.0, 4.0)):
        D.zero_grad()
        penalty = losses.NonSaturatingGAN(r1_gamma=r1, r2_gamma=r2).penalty(D, real, fake)
        assert penalty.item() == pytest.approx((r1 + r2) / 2 * 25.0, rel=1e-6)
        penalty.backward()  # differentiable w.r.t. D's parameters
        torch.testing.assert_close(D.w.grad, (r1 + r2) * torch.tensor([3.0, 4.0]))


def test_r1_is_taken_at_the_real_points_and_r2_at_the_fakes():
    A, w = [[2.0, 0.5], [0.5, 1.0]], [1.0, -1.0]
    D = Quadratic(A, w)
    real, fake = torch.randn(8, 2), 3 * torch.randn(8, 2)
    A_, w_ = torch.tensor(A), torch.tensor(w)

    def mean_squared_gradient(x):  # E ||A x + w||^2 by hand
        return float(((x @ A_ + w_) ** 2).sum(dim=1).mean())

    r1 = losses.MinimaxGAN(r1_gamma=10.0).penalty(D, real, fake)
    r2 = losses.MinimaxGAN(r2_gamma=2.0).penalty(D, real, fake)
    assert r1.item() == pytest.approx(5.0 * mean_squared_gradient(real), rel=1e-5)
    assert r2.item() == pytest.approx(1.0 * mean_squared_gradient(fake), rel=1e-5)
    both = losses.MinimaxGAN(r1_gamma=10.0, r2_gamma=2.0).penalty(D, real, fake)
    assert both.item() == pytest.approx(r1.item() + r2.item(), rel=1e-6)


def test_r1_of_a_packed_d_is_over_each_packs_whole_input():
    D = Quadratic([[0.0] * 4] * 4, [1.0, 2.0, 2.0, 4.0], samples_per_score=2)  # one score per 2 samples of 2-D
    penalty = losses.NonSaturatingGAN(r1_gamma=2.0).penalty(D, torch.randn(8, 2), torch.randn(8, 2))
    assert penalty.item() == pytest.approx(25.0, rel=1e-6)  # gamma / 2 * ||w||^2 over the pack, not per sample


def test_r1_and_r2_are_off_by_default_and_then_cost_nothing():
    for loss in (losses.MinimaxGAN(), losses.NonSaturatingGAN(), built().loss):
        assert loss.penalty(None, None, None) is None and not losses.has_penalty(loss)
    assert losses.has_penalty(built("loss.r1_gamma=10").loss) and losses.has_penalty(built("loss.r2_gamma=1").loss)


def test_r1_adds_to_d_s_step_and_moves_d():
    """One D step's loss with R1 is the plain one plus r1_gamma / 2 E ||grad_x D(x)||^2 at the real batch."""
    exp, plain = built("loss.r1_gamma=10", "batch_size=16"), built("batch_size=16")
    real, fake = exp.data.sample(16), exp.G(torch.randn(16, exp.latent_dim)).detach()
    from ganlab.remedies.base import discriminator_loss

    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exp.D(x).sum(), x)
    with_r1, without = discriminator_loss(exp.D, exp.loss, real, fake), discriminator_loss(exp.D, plain.loss, real, fake)
    assert with_r1.item() == pytest.approx(without.item() + 5.0 * float(grad.pow(2).sum(1).mean()), rel=1e-5)


@pytest.mark.parametrize("overrides, says", [
    (["loss=wgan_gp", "loss.r1_gamma=10"], "unknown key 'loss.r1_gamma'"),
    (["loss=hinge", "+loss.r1_gamma=10"], "unknown key for ganlab.losses.Hinge"),
    (["loss=dragan", "+loss.r1_gamma=10"], "unknown key for ganlab.losses.DRAGAN"),
])
def test_r1_is_refused_by_the_losses_that_do_not_take_it(overrides, says):
    with pytest.raises(ConfigError, match=says) as refused:
        compose_checked(overrides)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("overrides, says", [
    (["loss.r1_gamma=10", "remedy=minibatch_std"], "per-sample gradient penalty, and D couples the samples"),
    (["loss.r2_gamma=1", "remedy=minibatch_disc"], "per-sample gradient penalty, and D couples the samples"),
    (["loss.r1_gamma=10", "remedy=veegan"], "R1/R2 .* is not part of it"),
    (["loss.r1_gamma=10", "remedy=ebgan"], "would silently drop the loss's R1/R2"),
    (["loss.r1_gamma=-1"], "r1_gamma must be a finite number >= 0"),
])
def test_r1_is_refused_in_one_line_where_it_does_not_apply(overrides, says):
    with pytest.raises(ConfigError, match=says) as refused:
        built(*overrides, "batch_size=16")
    assert "\n" not in str(refused.value)


# --- the learning-rate schedule ----------------------------------------------------------------------

@pytest.mark.parametrize("name, t, expected", [
    ("none", 0, 0.0), ("none", 5, 0.5), ("none", 10, 1.0), ("none", 99, 1.0),       # warm-up from 0, then flat
    ("linear", 3, 0.3), ("linear", 10, 1.0), ("linear", 55, 0.5), ("linear", 99, 1 / 90),
    ("cosine", 10, 1.0), ("cosine", 55, 0.5), ("cosine", 32.5, 0.5 * (1 + math.cos(math.pi / 4))),
    ("cosine", 99, 0.5 * (1 + math.cos(math.pi * 89 / 90))),
])
def test_the_rate_factor_at_chosen_steps_is_the_closed_form(name, t, expected):
    assert schedule.factor(t, 100, name, 10) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_no_warmup_and_no_schedule_leave_the_rates_alone():
    assert [schedule.factor(t, 50, "none", 0) for t in (0, 1, 49)] == [1.0, 1.0, 1.0]
    assert schedule.factor(0, 50, "linear", 0) == 1.0 and schedule.factor(0, 50, "cosine", 0) == 1.0


def test_the_schedule_sets_every_optimizer_of_both_sides_from_the_configs_rates():
    cfg = make_cfg("remedy=mrgan", "optim.schedule=cosine", "optim.warmup=4", "steps=20")  # mrgan: an encoder's optimizer
    exp = built("remedy=mrgan", "optim.schedule=cosine", "optim.warmup=4", "steps=20")
    update = PlainUpdate(exp, 32)
    assert len(update.optimizers()) == 3
    rates = schedule.Schedule.of(cfg, update.optimizers())
    for step in (1, 3, 5, 13, 20):
        rates.set(step)
        f = schedule.factor(step - 1, 20, "cosine", 4)
        assert exp.g_opt.param_groups[0]["lr"] == 1e-3 * f and exp.d_opt.param_groups[0]["lr"] == 1e-4 * f
        assert exp.extra_opts["encoder"].param_groups[0]["lr"] == 1e-3 * f  # the g side's rate


@pytest.mark.parametrize("overrides, says", [
    (["optim.schedule=step"], "optim.schedule='step': choose one of none, linear, cosine"),
    (["optim.warmup=-3"], "optim.warmup=-3: expected an integer >= 0"),
    (["steps=50", "optim.warmup=50"], "optim.warmup=50 must be below steps=50"),
    (["ema.decay=1"], r"ema.decay=1.0: expected a number in \[0, 1\)"),
])
def test_bad_schedule_and_average_settings_are_refused_in_one_line(overrides, says):
    with pytest.raises(ConfigError, match=says) as refused:
        compose_checked(overrides)
    assert "\n" not in str(refused.value)


# --- in a run: logged, checkpointed, resumed bit-identically -----------------------------------------

STABILISED = ["ema.decay=0.9", "optim.schedule=cosine", "optim.warmup=5", "loss.r1_gamma=10", "loss.r2_gamma=1",
              "checkpoint.every=10"]


def _outcome(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return np.load(run_dir / "samples.npz")["x"], summary, state


def test_a_run_interrupted_mid_schedule_resumes_bit_identically_with_its_average(tmp_path, monkeypatch):
    """20 steps with G's average, a cosine schedule after 5 warm-up steps and R1 + R2; SIGTERM after step 7
    (a checkpoint mid-schedule, between evaluations), then resumed: samples, metrics, the average's metrics,
    the history, G, its average, D and the optimizers' rates end as in the uninterrupted run, bit for bit."""
    from ganlab import train

    cfg = make_cfg(*TINY, *STABILISED, "eval.every=20")  # composed once: a composition costs more than 20 steps
    reference = tmp_path / "reference"
    run(copy.deepcopy(cfg), reference)
    x_ref, s_ref, ref = _outcome(reference)

    real, calls = train.take_step, []

    def sigterm_at_step_7(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(train, "take_step", sigterm_at_step_7)
    interrupted = tmp_path / "run"
    with pytest.raises(train.Interrupted):
        run(copy.deepcopy(cfg), interrupted)
    monkeypatch.setattr(train, "take_step", real)
    assert torch.load(interrupted / "checkpoint.pt", weights_only=True)["step"] == 7
    resumed = copy.deepcopy(cfg)
    resumed.resume = str(interrupted)
    run(resumed, interrupted)
    x, s, state = _outcome(interrupted)

    assert s["resumed_from_step"] == 7 and s["status"] == "completed"
    assert np.array_equal(x, x_ref)
    assert s["metrics"] == s_ref["metrics"] and s["metrics_ema"] == s_ref["metrics_ema"]
    assert s["history"] == s_ref["history"] and "ema/modes_captured" in s["history"]["metrics"]
    for key in ("G", "G_ema", "D"):
        assert state[key].keys() == ref[key].keys()
        assert all(torch.equal(state[key][name], ref[key][name]) for name in ref[key])
    f = schedule.factor(19, 20, "cosine", 5)  # the last step's rates, both sides
    assert state["g_opt"]["param_groups"][0]["lr"] == ref["g_opt"]["param_groups"][0]["lr"] == 1e-3 * f
    assert state["d_opt"]["param_groups"][0]["lr"] == 1e-4 * f


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """A finished TINY run with G's moving average (ema.decay=0.5): its config, directory and summary."""
    cfg = make_cfg(*TINY, "ema.decay=0.5")
    run_dir = tmp_path_factory.mktemp("averaged") / "run"
    return cfg, run_dir, run(copy.deepcopy(cfg), run_dir)


def test_the_average_is_evaluated_beside_g_on_the_same_codes(averaged_run):
    """summary.json's metrics_ema are the evaluation of the checkpoint's averaged G at the last step (the
    evaluation's own seed), with the same metrics as G's own in-process ones; TensorBoard has them as ema/, and
    the average's samples picture as ema/samples beside G's samples."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, tmp_path, summary = averaged_run
    assert set(summary["metrics_ema"]) <= set(summary["metrics"]) and "modes_captured" in summary["metrics_ema"]
    exp = build(cfg, CPU)
    step = load_checkpoint(tmp_path / checkpoint.NAME, exp)
    evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, False, CPU, cfg.metrics)
    rng = torch.Generator(CPU).manual_seed(eval_seed(cfg.seed, step))
    again = evaluator.evaluate(exp.ema.G, exp.D, exp.remedy, rng)
    assert again.metrics["modes_captured"] == summary["metrics_ema"]["modes_captured"]
    assert again.metrics["jacobian_sigma_min"] == pytest.approx(summary["metrics_ema"]["jacobian_sigma_min"], rel=1e-6)
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in events.Scalars("ema/modes_captured")] == [10, 20]
    pictures = {tag: events.Images(tag) for tag in ("samples", "ema/samples")}
    assert [e.step for e in pictures["ema/samples"]] == [e.step for e in pictures["samples"]] == [10, 20]
    assert pictures["ema/samples"][-1].encoded_image_string != pictures["samples"][-1].encoded_image_string


def test_ganlab_eval_measures_the_average_beside_g(averaged_run, capsys):
    """`ganlab eval RUN` of a run with an average: eval.json's metrics_ema are the average's, on the same codes as
    training's last evaluation (its in-process metrics equal summary.json's metrics_ema), with W1/W2 as G's; the
    output lists them under ema/, after G's."""
    from test_sample import _ganlab

    _, run_dir, summary = averaged_run
    code, out, err = _ganlab(capsys, "eval", run_dir)
    assert code == 0, err
    record = json.loads((run_dir / "eval.json").read_text())
    assert set(record["metrics_ema"]) == set(record["metrics"]) and "wasserstein1" in record["metrics_ema"]
    assert {k: record["metrics_ema"][k] for k in summary["metrics_ema"]} == pytest.approx(summary["metrics_ema"],
                                                                                        nan_ok=True)
    assert record["metrics_ema"] != record["metrics"]  # the average, not G again
    lines = out.splitlines()
    assert lines[-1] == f"step 20, G and G's moving average (ema/); wrote {run_dir / 'eval.json'}"
    names = [line.split()[0] for line in lines[:-1]]
    assert names == [*record["metrics"], *(f"ema/{k}" for k in record["metrics_ema"])]
