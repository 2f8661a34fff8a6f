"""Every remedy: shapes, one D step and one G step on CPU, and the property that defines it."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, built, changed, ganlab, make_cfg, snapshot
from torch import nn

from ganlab.config import options
from ganlab.errors import ConfigError
from ganlab.gan import build
from ganlab.losses import WGANGP, MinimaxGAN, NonSaturatingGAN
from ganlab.remedies.unrolled import OptimizerReplay, Unrolled
from ganlab.step import d_step, g_step
from ganlab.train import run

# Every remedy the configs offer, but those whose D or sampling differs from the plain GAN's: their own
# files test them (mrgan, veegan: test_remedies_encoders.py; drs, ebgan: test_remedies_sampling.py;
# multiscale and diffaugment, images only: test_multiscale.py, test_diffaugment.py).
OWN_TESTS = ("mrgan", "veegan", "drs", "ebgan", "multiscale", "diffaugment")
REMEDIES = [r for r in options("remedy") if r not in OWN_TESTS]
# Remedies that bring their own logistic objective refuse the WGAN losses (test_refused_combinations);
# those that couple the samples of a batch in D refuse a per-sample gradient penalty.
NO_WGAN = ("label_smoothing", "madgan", "minibatch_disc", "minibatch_std")


@pytest.mark.parametrize("remedy, loss", [(r, loss) for r in REMEDIES for loss in ("nsgan", "wgan_gp")
                                          if not (r in NO_WGAN and loss == "wgan_gp")])
def test_shapes_and_one_d_step_and_one_g_step(remedy, loss):
    exp = built(f"remedy={remedy}", f"loss={loss}", "batch_size=16")
    G, D = exp.G, exp.D
    # Drawn as the loop draws it: conditional remedies keep the batch's classes.
    z, real = torch.randn(16, exp.latent_dim), exp.remedy.real_batch(exp.data, 16)
    packs = 16 // (2 if remedy == "pacgan" else 1)
    assert G(z).shape == (16, 2) and D(G(z)).shape == (packs,)
    assert exp.remedy.d_map(D, real).shape == (16,)  # the heatmap scores single points

    g_before, d_before = snapshot(G), snapshot(D)
    d_loss = d_step(exp, real, z)
    assert torch.isfinite(d_loss) and changed(d_before, D) and not changed(g_before, G)

    d_before = snapshot(D)
    g_loss = g_step(exp, real, torch.randn(16, exp.latent_dim))
    assert torch.isfinite(g_loss) and changed(g_before, G) and not changed(d_before, D)


@pytest.mark.parametrize("remedy", ["unrolled", "pacgan", "minibatch_disc", "instance_noise", "[pacgan,spectral_norm]"])
def test_a_tiny_run_completes(remedy, tmp_path):
    summary = run(make_cfg(*TINY, f"remedy={remedy}", "eval.every=20"), tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 20
    assert summary["labels"]["remedy"] == remedy.strip("[]").replace(",", "+")


# --- unrolled: the gradient flows through k differentiable D updates -------------------------------

def _tiny_gan(dtype=torch.float64):
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    D = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1), nn.Flatten(0)).to(dtype)
    return G, D


def _unrolled_objective(G, D, loss, real, z, k, lr, g_objective="value"):
    """G's objective at D after k plain SGD steps on the D loss, written out by hand: the game's value
    -d_loss(D_k(real), D_k(G(z))) (Metz et al.), or the loss's G loss g_loss(D_k(G(z)))."""
    d_params = [p.detach().clone().requires_grad_(True) for p in D.parameters()]

    def D_at(params, x):
        w1, b1, w2, b2 = params
        return (torch.tanh(x @ w1.T + b1) @ w2.T + b2).flatten()

    fake = G(z)
    params = d_params
    for _ in range(k):
        d_loss = loss.d_loss(D_at(params, real), D_at(params, fake))
        grads = torch.autograd.grad(d_loss, params, create_graph=True)
        params = [p - lr * g for p, g in zip(params, grads)]
    if g_objective == "value":
        return -loss.d_loss(D_at(params, real), D_at(params, fake))
    return loss.g_loss(D_at(params, fake))


@pytest.mark.parametrize("g_objective", ["value", "loss"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_unrolled_gradient_matches_finite_differences_and_differs_from_k0(optimizer, g_objective):
    G, D = _tiny_gan()
    loss = NonSaturatingGAN()
    torch.manual_seed(1)
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    d_opt = (torch.optim.SGD(D.parameters(), lr=0.5) if optimizer == "sgd"
             else torch.optim.Adam(D.parameters(), lr=0.05, betas=(0.5, 0.999)))
    # One real D step first, so Adam's replay starts from a non-trivial state (moments, step count).
    d_opt.zero_grad()
    loss.d_loss(D(real), D(G(z).detach())).backward()
    d_opt.step()

    def g_grad(k):
        remedy = Unrolled(k=k, g_objective=g_objective)
        remedy.prepare(None, d_opt, 100)
        G.zero_grad()
        remedy.g_loss(G, D, loss, real, z).backward()
        return torch.cat([p.grad.flatten() for p in G.parameters()])

    unrolled, plain = g_grad(5), g_grad(0)
    assert not torch.allclose(unrolled, plain, rtol=1e-3), "unrolling must change G's gradient"

    # Central finite differences of the same objective, G's parameters perturbed one at a time.
    remedy = Unrolled(k=5, g_objective=g_objective)
    remedy.prepare(None, d_opt, 100)
    flat = torch.nn.utils.parameters_to_vector(G.parameters()).detach()
    h, numeric = 1e-6, torch.zeros_like(flat)
    for i in range(flat.numel()):
        values = []
        for sign in (1, -1):
            shifted = flat.clone()
            shifted[i] += sign * h
            torch.nn.utils.vector_to_parameters(shifted, G.parameters())
            values.append(remedy.g_loss(G, D, loss, real, z).item())
        numeric[i] = (values[0] - values[1]) / (2 * h)
    torch.nn.utils.vector_to_parameters(flat, G.parameters())
    assert torch.allclose(unrolled, numeric, rtol=1e-5, atol=1e-8)

    if optimizer == "sgd":  # and an explicit second-order computation, written out by hand
        G.zero_grad()
        _unrolled_objective(G, D, loss, real, z, k=5, lr=0.5, g_objective=g_objective).backward()
        explicit = torch.cat([p.grad.flatten() for p in G.parameters()])
        assert torch.allclose(unrolled, explicit, rtol=1e-10, atol=1e-12)


def test_unrolled_value_objective_is_the_minimax_step_at_k0_and_counts_the_real_term():
    """Metz et al.'s f_K: at k = 0 the G step of the minimax game (log(1 - D(G(z)))), whatever G loss
    the loss picks; at k > 0 the real-data term moves G too (through the unrolled D), so the gradient
    differs from the fakes-only objective by exactly that term's gradient."""
    G, D = _tiny_gan()
    loss = NonSaturatingGAN()
    torch.manual_seed(2)
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    d_opt = torch.optim.SGD(D.parameters(), lr=0.5)

    def grad_of(objective):
        G.zero_grad()
        objective.backward(retain_graph=True)
        return torch.cat([p.grad.flatten() for p in G.parameters()])

    remedy = Unrolled(k=0)
    remedy.prepare(None, d_opt, 100)
    minimax = grad_of(MinimaxGAN().g_loss(D(G(z))))
    assert torch.allclose(grad_of(remedy.g_loss(G, D, loss, real, z)), minimax, rtol=1e-12)
    assert not torch.allclose(minimax, grad_of(loss.g_loss(D(G(z)))), rtol=1e-3)  # not the non-saturating step

    value = _unrolled_objective(G, D, MinimaxGAN(), real, z, k=3, lr=0.5)
    fakes_only = _unrolled_objective(G, D, MinimaxGAN(), real, z, k=3, lr=0.5, g_objective="loss")
    remedy = Unrolled(k=3)
    remedy.prepare(None, d_opt, 100)
    ours = grad_of(remedy.g_loss(G, D, loss, real, z))
    assert torch.allclose(ours, grad_of(value), rtol=1e-10, atol=1e-12)
    real_term = grad_of(value - fakes_only)  # E log D_k(real): no gradient only if D_k ignored G
    assert real_term.abs().max() > 1e-4 and torch.allclose(ours, grad_of(fakes_only) + real_term, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss_name", ["lsgan", "hinge"])
def test_unrolled_value_objective_refuses_a_loss_that_is_not_zero_sum(loss_name):
    with pytest.raises(ConfigError, match="g_objective=value is the zero-sum game's value"):
        built("remedy=unrolled", f"loss={loss_name}")
    built("remedy=unrolled", f"loss={loss_name}", "remedy.unrolled.g_objective=loss")  # the fakes-only form builds


def test_unrolled_leaves_d_and_its_optimizer_untouched():
    exp = built("remedy=unrolled", "batch_size=16")
    exp.d_opt.zero_grad()
    exp.remedy.d_loss(exp.G, exp.D, exp.loss, exp.data.sample(16), torch.randn(16, 2)).backward()
    exp.d_opt.step()
    state = {k: v.clone() for k, v in exp.d_opt.state[next(exp.D.parameters())].items()}
    before = snapshot(exp.D)
    exp.remedy.g_loss(exp.G, exp.D, exp.loss, exp.data.sample(16), torch.randn(16, 2)).backward()
    assert not changed(before, exp.D)
    after = exp.d_opt.state[next(exp.D.parameters())]
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_unrolled_surrogate_gradient_is_not_the_unrolled_one():
    from ganlab.remedies.unrolled_surrogate import UnrolledSurrogate

    G, D = _tiny_gan()
    loss = NonSaturatingGAN()
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    d_opt = torch.optim.SGD(D.parameters(), lr=0.5)
    grads = []
    for remedy in (Unrolled(k=5), UnrolledSurrogate(k=5)):
        remedy.prepare(None, d_opt, 100)
        G.zero_grad()
        remedy.g_loss(G, D, loss, real, z).backward()
        grads.append(torch.cat([p.grad.flatten() for p in G.parameters()]))
    assert not torch.allclose(*grads, rtol=1e-3)


# --- the other remedies' defining properties ---------------------------------------------------------

@pytest.mark.parametrize("m", [2, 3, 4])
def test_pacgan_d_sees_m_concatenated_samples(m):
    exp = built("remedy=pacgan", f"remedy.pacgan.m={m}", "batch_size=24")
    first = next(mod for mod in exp.D.modules() if isinstance(mod, nn.Linear))
    assert first.in_features == 2 * m
    x = torch.randn(24, 2)
    assert exp.D(x).shape == (24 // m,)
    # pack j is samples j*m .. j*m+m-1, side by side
    assert torch.equal(exp.D.transform(x)[1], x[m:2 * m].flatten())


def test_spectral_norm_makes_every_d_layer_about_1_lipschitz():
    # Enough power iterations per step for the estimate of sigma to converge (the default, 1 per
    # step, tracks a moving weight with a lag).
    exp = built("remedy=spectral_norm", "remedy.spectral_norm.power_iterations=10", "batch_size=64")
    for _ in range(50):
        exp.d_opt.zero_grad()
        exp.remedy.d_loss(exp.G, exp.D, exp.loss, exp.data.sample(64), torch.randn(64, 2)).backward()
        exp.d_opt.step()
    layers = [m for m in exp.D.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 4 and all(hasattr(m, "parametrizations") for m in layers)
    exp.D.eval()
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        assert abs(sigma - 1) < 0.02, sigma
    # Whatever the raw weight's scale, the layer's weight is normalized.
    with torch.no_grad():
        layers[1].parametrizations.weight.original.mul_(5)
        exp.D.train()
        exp.D(torch.randn(8, 2))  # one forward: the power iterations run
    exp.D.eval()
    raw = torch.linalg.matrix_norm(layers[1].parametrizations.weight.original.detach(), ord=2).item()
    assert raw > 4 and abs(torch.linalg.matrix_norm(layers[1].weight.detach(), ord=2).item() - 1) < 0.02


def test_label_smoothing_sets_the_real_target():
    exp = built("remedy=label_smoothing", "remedy.label_smoothing.real_target=0.8")
    d_real, d_fake = torch.randn(32), torch.randn(32)
    expected = (F.binary_cross_entropy_with_logits(d_real, torch.full((32,), 0.8))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros(32)))
    assert torch.allclose(exp.loss.d_loss(d_real, d_fake), expected)
    plain = built()
    assert torch.allclose(plain.loss.d_loss(d_real, d_fake),
                          F.binary_cross_entropy_with_logits(d_real, torch.ones(32))
                          + F.binary_cross_entropy_with_logits(d_fake, torch.zeros(32)))
    lsgan = built("remedy=label_smoothing", "loss=lsgan")
    assert torch.allclose(lsgan.loss.d_loss(torch.full((4,), 0.9), torch.zeros(4)), torch.tensor(0.0))


def test_instance_noise_is_annealed_to_zero():
    exp = built("remedy=instance_noise", "remedy.instance_noise.std=0.5", "steps=100")
    noise = exp.remedy
    assert noise.std_at(0) == 0.5 and noise.std_at(50) == pytest.approx(0.25) and noise.std_at(100) == 0.0
    x = torch.zeros(20000, 2)
    noise.begin_step(50)
    assert exp.D.transform(x).std().item() == pytest.approx(0.25, rel=0.03)
    noise.begin_step(100)
    assert torch.equal(exp.D.transform(x), x)
    noise.begin_step(1)
    exp.D.eval()  # evaluation sees clean inputs
    assert torch.equal(exp.D.transform(x), x)


def test_minibatch_layers_see_the_spread_of_the_batch():
    from ganlab.remedies.minibatch_disc import MinibatchDiscrimination
    from ganlab.remedies.minibatch_std import MinibatchStdDev

    same = torch.ones(8, 6)
    spread = torch.randn(8, 6) * 3
    mbd = MinibatchDiscrimination(6, kernels=3, kernel_dim=2, eval_chunk=4)
    assert torch.allclose(mbd(same)[:, 6:], torch.full((8, 3), 7.0))  # exp(0) from each of the 7 others
    assert (mbd(spread)[:, 6:] < 7).all()
    mbd.eval()  # evaluation in chunks of eval_chunk: each chunk is a batch of its own
    assert torch.allclose(mbd(same)[:, 6:], torch.full((8, 3), 3.0))
    std = MinibatchStdDev(group_size=4)
    assert std(same)[:, 6].abs().max() < 1e-3 and (std(spread)[:, 6] > 1).all()
    assert std(torch.randn(10, 6)).shape == (10, 7)  # group shrinks to 2, which divides 10


def test_feature_matching_g_loss_is_zero_only_when_feature_means_match():
    exp = built("remedy=feature_matching")
    real, z = exp.data.sample(32), torch.randn(32, 2)
    # A G that returns the real batch, in another order: same feature mean, loss 0.
    assert exp.remedy.g_loss(lambda _: real.flip(0), exp.D, exp.loss, real, z).item() == pytest.approx(0, abs=1e-10)
    shifted = exp.remedy.g_loss(lambda _: real + 1.0, exp.D, exp.loss, real, z)
    assert shifted.item() > 1e-4
    got = exp.remedy.g_loss(exp.G, exp.D, exp.loss, real, z)
    got.backward()
    assert all(p.grad is not None for p in exp.G.parameters())  # G is trained through D's features


@pytest.mark.parametrize("overrides, message", [
    (["remedy=label_smoothing", "loss=wgan_gp"], "label_smoothing needs a loss with a target for real samples"),
    (["remedy=[unrolled,feature_matching]"], "unrolled and feature_matching both replace the G step"),
    (["remedy=[minibatch_disc,minibatch_std]"], "both replace D's last layer"),
    (["remedy=pacgan", "remedy.pacgan.m=3", "batch_size=256"], "remedy.pacgan.m=3 must divide batch_size=256"),
    (["remedy=unrolled", "loss=wgan"], "weight clipping"),
    (["remedy=unrolled", "optim.d._target_=torch.optim.Adagrad", "~optim.d.betas"], "Adagrad is not supported"),
    (["remedy=madgan", "loss=wgan_gp"], "madgan replaces the objective"),
    (["remedy=[madgan,unrolled]"], "madgan and unrolled both replace the G step"),
    (["remedy=[pacgan,madgan]"], "it cannot be packed"),
    (["remedy=[madgan,minibatch_std]"], "both replace D's last layer"),
    (["remedy=madgan", "remedy.madgan.k=1"], "must be >= 2 generators"),
    (["remedy=ortho_jacobian", "remedy.ortho_jacobian.scale=0"], "scale > 0"),
])
def test_refused_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(*overrides), torch.device("cpu"))


def test_cli_refuses_a_bad_combination_in_one_line(tmp_path):
    result = ganlab("train", "remedy=label_smoothing", "loss=wgan", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        ("ganlab: error: label_smoothing needs a loss with a target for real samples (gan, nsgan, lsgan, dragan); "
         "WGAN has none")]
    assert not (tmp_path / "outputs").exists()


def test_combined_remedies_stack_their_builds():
    exp = built("remedy=[pacgan,minibatch_std,spectral_norm,instance_noise]", "batch_size=16")
    from ganlab.remedies.instance_noise import NoisyInput
    from ganlab.remedies.pacgan import PackedDiscriminator

    assert isinstance(exp.D, NoisyInput) and isinstance(exp.D.inner, PackedDiscriminator)
    linears = [m for m in exp.D.modules() if isinstance(m, nn.Linear)]
    assert all(hasattr(m, "parametrizations") for m in linears)  # the minibatch head's layer too
    assert linears[0].in_features == 4 and linears[-1].in_features == 129
    assert exp.D(torch.randn(16, 2)).shape == (8,)


def test_gradient_penalty_losses_work_through_unrolling():
    exp = built("remedy=unrolled", "loss=wgan_gp", "batch_size=16")
    assert isinstance(exp.loss, WGANGP)
    g = exp.remedy.g_loss(exp.G, exp.D, exp.loss, exp.data.sample(16), torch.randn(16, 2))
    g.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in exp.G.parameters())


def test_pairwise_l1_gradients_match_the_broadcast_formula_twice():
    from ganlab.remedies.minibatch_disc import PairwiseL1

    torch.manual_seed(0)
    M = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(PairwiseL1.apply, (M,))
    assert torch.autograd.gradgradcheck(PairwiseL1.apply, (M,))
    fast = torch.autograd.grad((PairwiseL1.apply(M) * w).sum(), M)[0]
    plain = torch.autograd.grad(((M.unsqueeze(2) - M.unsqueeze(1)).abs().sum(3) * w).sum(), M)[0]
    assert torch.allclose(fast, plain)


def test_fused_closeness_matches_the_plain_formula_and_differentiates_twice():
    from ganlab.remedies.minibatch_disc import Closeness

    torch.manual_seed(0)
    M = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    plain = torch.exp(-(M.unsqueeze(2) - M.unsqueeze(1)).abs().sum(3)).sum(2) - 1
    assert torch.allclose(Closeness.apply(M)[0], plain)
    assert torch.autograd.gradcheck(lambda m: Closeness.apply(m)[0], (M,))
    assert torch.autograd.gradgradcheck(lambda m: Closeness.apply(m)[0], (M,))  # penalties, unrolled steps


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.5, 0.9), weight_decay=0.01),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, weight_decay=0.01),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
], ids=["adam", "adam-decoupled", "adamw", "rmsprop", "sgd-momentum"])
def test_every_replayed_optimizer_matches_torch_over_steps(make_opt):
    _, D = _tiny_gan()
    opt = make_opt(D.parameters())
    x = torch.randn(8, 2, dtype=torch.float64)
    named = dict(D.named_parameters())
    replay = OptimizerReplay(opt)
    for _ in range(3):  # from a fresh state, then from the optimizer's own state
        state = replay.start(named)
        opt.zero_grad()
        D(x).pow(2).mean().backward()
        replayed, _ = replay.step({n: p.detach() for n, p in named.items()},
                                  {n: p.grad for n, p in named.items()}, state)
        opt.step()
        for name, p in named.items():
            assert torch.allclose(replayed[name], p.detach(), rtol=1e-12, atol=1e-14), name


@pytest.mark.parametrize("loss_cls", ["WGANGP", "DRAGAN"])
def test_gradient_penalty_of_a_packed_d_is_over_whole_packs(loss_cls):
    """For a linear critic w . (packed x) the input gradient is w, whatever the point: the penalty
    must be (||w|| - 1)^2 over the pack's 2m inputs, not over each sample's slice of w."""
    from ganlab import losses
    from ganlab.remedies.pacgan import PackedDiscriminator

    m = 4
    inner = nn.Sequential(nn.Linear(2 * m, 1), nn.Flatten(0))
    D = PackedDiscriminator(inner, m)
    loss = getattr(losses, loss_cls)(penalty_weight=1.0)
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    w = inner[0].weight.detach()
    assert torch.allclose(loss.penalty(D, real, fake), (w.norm() - 1) ** 2, atol=1e-6)


def test_minibatch_std_feature_survives_batches_the_group_does_not_divide():
    from ganlab.remedies.minibatch_std import MinibatchStdDev

    torch.manual_seed(0)
    f = torch.randn(7, 6) * 3  # 7 = 4 + 3: no group size in [2, 4] divides it
    spread = MinibatchStdDev(group_size=4)(f)[:, 6]
    assert spread.shape == (7,) and (spread > 1).all()


def test_unrolled_leaves_spectral_norm_state_untouched():
    exp = built("remedy=[unrolled,spectral_norm]", "batch_size=16")
    before = {n: b.clone() for n, b in exp.D.named_buffers()}
    assert before  # spectral norm's power-iteration vectors
    exp.remedy.g_loss(exp.G, exp.D, exp.loss, exp.data.sample(16), torch.randn(16, 2)).backward()
    assert all(torch.equal(before[n], b) for n, b in exp.D.named_buffers())


def test_optional_keys_are_type_checked():
    with pytest.raises(ConfigError, match="anneal_steps='abc': expected an integer"):
        from ganlab.config import validate

        validate(make_cfg("remedy=instance_noise", "remedy.instance_noise.anneal_steps=abc"))


def test_madgan_d_has_k_plus_1_outputs_and_samples_come_from_every_generator():
    from ganlab.remedies.madgan import MultiGenerator, class_logits

    # share=none: G.generators[i] is then the whole G_i (the default, all_but_last, shares a trunk).
    exp = built("remedy=madgan", "remedy.madgan.k=3", "remedy.madgan.share=none", "batch_size=12")
    G, D = exp.G, exp.D
    assert isinstance(G, MultiGenerator) and G.k == 3
    x = exp.data.sample(12)
    assert class_logits(D, x).shape == (12, 4)
    # D called as a plain D: the logit of "real" against all generators together.
    logits = class_logits(D, x)
    assert torch.allclose(D(x), logits[:, 3] - torch.logsumexp(logits[:, :3], dim=1))
    # Equal shares, chunk i made by generator i, the generators distinct.
    G.eval()
    z = torch.randn(10, exp.latent_dim)
    assert G.sizes(10) == [4, 3, 3] and G.source(10).tolist() == [0] * 4 + [1] * 3 + [2] * 3
    out = G(z)
    for i, (start, stop) in enumerate([(0, 4), (4, 7), (7, 10)]):
        assert torch.allclose(out[start:stop], G.generators[i](z[start:stop]))
    each = G.each(z)
    assert not torch.allclose(each[0], each[1])
    # D's loss itself: test_madgan_d_loss_is_the_cross_entropy_to_each_samples_source.


@pytest.mark.parametrize("share, own", [("all_but_first", (2, 128)), ("all_but_last", (128, 2))])
def test_madgan_shared_weights_share_all_but_one_layer(share, own):
    exp = built("remedy=madgan", f"remedy.madgan.share={share}", "batch_size=16")
    G = exp.G
    assert G.shared is not None and len(G.generators) == 4
    # Each generator owns one linear layer (in_features, out_features); the rest is shared.
    assert all(isinstance(g, nn.Linear) and (g.in_features, g.out_features) == own for g in G.generators)
    unshared = built("remedy=madgan", "remedy.madgan.share=none", "batch_size=16").G
    n_params = sum(p.numel() for p in G.parameters())
    assert n_params < sum(p.numel() for p in unshared.parameters()) / 2
    G.eval()
    z = torch.randn(8, 2)
    out, each = G(z), G.each(z)
    assert out.shape == (8, 2) and torch.allclose(out[:2], each[0][:2]) and torch.allclose(out[6:], each[3][6:])
    assert not torch.allclose(each[0], each[1])
    G.train()
    g = exp.remedy.g_loss(G, exp.D, exp.loss, exp.data.sample(16), torch.randn(16, 2))
    g.backward()
    assert all(p.grad is not None for p in G.parameters())


def test_madgan_generator_losses_are_separate_and_the_diversity_term_pushes_generators_apart():
    # The split layout (chunk i of z through G_i), the default before the authors' full batch; share=none so
    # that G.generators[0] is the whole G_0. The full-batch default: tests/test_madgan.py.
    exp = built("remedy=madgan", "remedy.madgan.k=2", "remedy.madgan.share=none", "remedy.madgan.batch=split",
                "batch_size=8")
    G, D = exp.G, exp.D
    z = torch.randn(8, 2)
    loss = exp.remedy.g_loss(G, D, exp.loss, None, z)
    (grad_first,) = torch.autograd.grad(loss, G.generators[0].net[0].weight, retain_graph=True)
    # Generator 0's gradient comes from its own samples (the first chunk) only.
    from ganlab.remedies.madgan import class_logits

    own = -F.log_softmax(class_logits(D, G.generators[0](z[:4])), dim=1)[:, 2].sum() / 8
    (expected,) = torch.autograd.grad(own, G.generators[0].net[0].weight)
    assert torch.allclose(grad_first, expected, atol=1e-6)
    # The diversity term is the mean cosine similarity of D's features of the generators' samples of one code
    # (as the paper's variant; it compared the raw samples before).
    remedy = exp.remedy
    a, b = G.each(z)
    expected = F.cosine_similarity(D.inner.features(a), D.inner.features(b), dim=1).mean()
    assert torch.allclose(remedy.similarity(G, D, z), expected)


def test_madgan_logs_the_modes_each_generator_captures_and_owns():
    from ganlab.data.toy import ring

    exp = built("remedy=madgan", "remedy.madgan.k=2", "batch_size=8")
    data = ring(device="cpu")

    class Fixed(nn.Module):  # generator i puts every sample on mode i (or, for i=1, modes 1 and 2)
        def __init__(self, points):
            super().__init__()
            self.points = points

        def forward(self, z):
            return self.points[torch.arange(len(z)) % len(self.points)]

    from ganlab.remedies.madgan import MultiGenerator

    G = MultiGenerator([Fixed(data.centers[[0]]), Fixed(data.centers[[1, 2]])])
    metrics = exp.remedy.eval_metrics(G, exp.D, data, torch.zeros(8, 2), None, None)
    assert metrics == {"madgan_g0_modes": 1, "madgan_g0_owned": 1, "madgan_g1_modes": 2, "madgan_g1_owned": 2}


def test_ortho_jacobian_penalty_is_zero_for_a_linear_g_with_orthonormal_columns():
    from ganlab.remedies.ortho_jacobian import OrthoJacobian

    q, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))  # out 5, latent 3, orthonormal columns
    z = torch.randn(16, 3, dtype=torch.float64)
    remedy = OrthoJacobian(directions=3, learn_scale=False)
    remedy.scale.double()
    assert remedy.penalty(lambda z: z @ q.T, z) < 1e-12
    # Up to the scale: 2q is orthonormal up to c = 4, learned or given.
    assert remedy.penalty(lambda z: 2 * z @ q.T, z) > 1.0
    scaled = OrthoJacobian(directions=3, learn_scale=False, scale=4.0)
    scaled.scale.double()
    assert scaled.penalty(lambda z: 2 * z @ q.T, z) < 1e-12
    # With fewer directions than latent dims it is a random slice: still 0 for orthonormal J.
    assert OrthoJacobian(directions=2, learn_scale=False).penalty(lambda z: z @ q.T.float(), z.float()) < 1e-10
    # A collapsing G (rank-1 J) is penalised.
    collapse = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    assert remedy.penalty(lambda z: z @ collapse.T, z) >= 2.0 - 1e-9  # two unit diagonal entries missing


def test_ortho_jacobian_trains_its_scale_with_g_and_checkpoints_it(tmp_path):
    from ganlab.gan import load_checkpoint

    exp = built("remedy=ortho_jacobian", "batch_size=16")
    assert list(exp.extras) == ["scale"] and exp.extra_sides == {"scale": "g"}
    assert len(exp.optimizers("g")) == 2 and len(exp.optimizers("d")) == 1
    before = exp.remedy.scale().item()
    for opt in exp.optimizers("g"):
        opt.zero_grad()
    exp.remedy.g_loss(exp.G, exp.D, exp.loss, None, torch.randn(16, 2)).backward()
    for opt in exp.optimizers("g"):
        opt.step()
    assert exp.remedy.scale().item() != before
    fixed = built("remedy=ortho_jacobian", "remedy.ortho_jacobian.learn_scale=false")
    assert fixed.extras == {}

    summary = run(make_cfg(*TINY, "remedy=ortho_jacobian"), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(state["extras"]) == {"scale"} and set(state["extra_opts"]) == {"scale"}
    fresh = built("remedy=ortho_jacobian", *TINY)
    load_checkpoint(tmp_path / "checkpoint.pt", fresh)
    assert fresh.remedy.scale().item() == pytest.approx(summary["metrics"]["ortho_scale"])
    assert fresh.remedy.scale().item() != 1.0


def test_a_tiny_madgan_run_logs_per_generator_coverage_and_a_picture_by_generator(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(make_cfg(*TINY, "remedy=madgan"), tmp_path)
    assert summary["status"] == "completed"
    owned = [summary["metrics"][f"madgan_g{i}_owned"] for i in range(4)]
    assert sum(owned) == summary["metrics"]["modes_captured"]  # every captured mode has one owner
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert "samples_by_generator" in events.Tags()["images"]
    assert "metrics/madgan_g3_modes" in events.Tags()["scalars"]


def test_madgan_d_loss_is_the_cross_entropy_to_each_samples_source():
    from ganlab.remedies.madgan import class_logits

    # The split layout, still reachable as batch=split (share=none: G.generators[i] is the whole G_i); the
    # full-batch default, the authors', is tests/test_madgan.py's.
    exp = built("remedy=madgan", "remedy.madgan.k=2", "remedy.madgan.share=none", "remedy.madgan.batch=split",
                "batch_size=6")
    G, D = exp.G, exp.D
    real, z = exp.data.sample(6), torch.randn(6, 2)
    got = exp.remedy.d_loss(G, D, exp.loss, real, z)
    with torch.no_grad():
        fake = torch.cat([G.generators[0](z[:3]), G.generators[1](z[3:])])
    # By hand: -log softmax at the true class; real -> class 2, generator i's samples -> class i.
    real_term = -F.log_softmax(class_logits(D, real), dim=1)[:, 2].mean()
    fake_logp = F.log_softmax(class_logits(D, fake), dim=1)
    fake_term = -torch.cat([fake_logp[:3, 0], fake_logp[3:, 1]]).mean()
    assert torch.allclose(got, real_term + fake_term, atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["remedy=[madgan,label_smoothing]"], "label_smoothing's change of the loss would have no effect"),
    (["remedy=[madgan,drs]"], "drs redraws the samples"),
    (["remedy=[mrgan,spectral_norm]", "remedy.mrgan.manifold_diffusion=true"], "would not reach the second"),
    (["remedy=ortho_jacobian", "model.g.batch_norm=true"], "batch norm in G"),
    (["remedy=ortho_jacobian", "model.latent_dim=3"], "use model.latent_dim <= 2"),
])
def test_refused_combinations_of_the_remedies_that_add_networks(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(*overrides), torch.device("cpu"))


def test_a_regularized_mrgan_combines_with_a_d_change():
    exp = built("remedy=[mrgan,spectral_norm]")  # only the manifold-diffusion variant refuses it
    assert any(hasattr(m, "parametrizations") for m in exp.D.modules())


@pytest.mark.parametrize("loss", ["wgan_gp", "dragan"])
@pytest.mark.parametrize("coupling, says", [("remedy=minibatch_std", "drop remedy=minibatch_std"),
                                            ("remedy=minibatch_disc", "drop remedy=minibatch_disc")])
def test_a_gradient_penalty_with_a_batch_coupled_d_is_refused(loss, coupling, says):
    with pytest.raises(ConfigError, match=f"per-sample gradient penalty, and D couples the samples of a batch.*{says}"):
        built(f"loss={loss}", coupling, "batch_size=16")
    built("loss=nsgan", coupling, "batch_size=16")  # no penalty: the minibatch layer is fine


def test_a_batch_coupled_d_mixes_samples_in_the_penalty_gradient():
    """Why the refusal: with a minibatch layer, the gradient of the summed scores at sample 0
    depends on sample 1; with the plain D it does not."""
    for remedy, coupled in (("none", False), ("minibatch_std", True)):
        exp = built(f"remedy={remedy}", "batch_size=16")
        x = exp.data.sample(8).requires_grad_(True)
        (g,) = torch.autograd.grad(exp.D(x).sum(), x, create_graph=True)
        (cross,) = torch.autograd.grad(g[0].sum(), x)
        assert (cross[1:].abs().max() > 1e-6) == coupled, remedy
