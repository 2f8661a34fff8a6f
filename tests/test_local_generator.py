"""remedy=local_generator (Localized GAN, Qi et al. 2018): the local generator G(x, z), its locality and
orthonormal-tangent penalties against direct computations, its steps, its evaluation sampling, a tiny
run, and its refusals."""

import pytest
import torch
from conftest import TINY, built, changed, make_cfg, snapshot
from torch import nn

from ganlab.config import compose_config
from ganlab.errors import ConfigError
from ganlab.evaluation.toy import evaluate
from ganlab.gan import build
from ganlab.losses import NonSaturatingGAN
from ganlab.remedies.local_generator import (
    LocalGenerator,
    LocalizedGAN,
    origin_error,
    ortho_penalty,
    tangents,
)
from ganlab.step import d_step, g_step
from ganlab.train import run


def _tiny_local_g(data_dim=3, latent_dim=2):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(data_dim, 6), nn.Tanh(), nn.Linear(6, latent_dim))
    decoder = nn.Sequential(nn.Linear(latent_dim, 6), nn.Tanh(), nn.Linear(6, data_dim))
    return LocalGenerator(encoder, decoder, latent_dim, (data_dim,)).double()


def _linear_local_g(encoder_weight, decoder_weight):
    """G(x, z) = W_dec (W_enc x + z): its tangents at every x are the columns of W_dec."""
    out, latent = decoder_weight.shape
    encoder, decoder = nn.Linear(out, latent, bias=False), nn.Linear(latent, out, bias=False)
    encoder.weight.data, decoder.weight.data = encoder_weight, decoder_weight
    return LocalGenerator(encoder, decoder, latent, (out,))


def _direct(G, x, scale):
    """Per anchor, ||G(x, 0) - x||^2 and ||J^T J / c - I||_F^2 with the full J = dG(x, z)/dz at z = 0 by
    torch.autograd.functional.jacobian."""
    zero = torch.zeros(G.latent_dim, dtype=x.dtype)
    origin, ortho = [], []
    for xi in x:
        J = torch.autograd.functional.jacobian(lambda z, xi=xi: G.local(xi[None], z[None])[0], zero)  # (out, N)
        ortho.append((J.T @ J / scale - torch.eye(G.latent_dim, dtype=x.dtype)).pow(2).sum())
        origin.append((G.local(xi[None], zero[None])[0] - xi).pow(2).sum())
    return torch.stack(origin), torch.stack(ortho)


def test_the_penalties_and_the_g_loss_equal_a_direct_computation_with_the_full_jacobian():
    G = _tiny_local_g()
    D = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1), nn.Flatten(0)).double()
    real, z = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    origin, ortho = _direct(G, real, scale=0.5)
    assert torch.allclose(origin_error(G, real), origin, rtol=1e-12)
    assert torch.allclose(ortho_penalty(tangents(G, real, torch.arange(2)), 0.5), ortho, rtol=1e-10)
    assert ortho.min() > 1e-3 and origin.min() > 1e-3  # an untrained G satisfies neither constraint

    # G's loss: the loss's G loss on D(G(x, z)), x the real batch, + mu * locality + eta * orthonormality.
    # directions >= N takes every tangent, so the penalty is the whole one, not a random slice.
    remedy = LocalizedGAN(locality_weight=3.0, ortho_weight=0.7, directions=8, scale=0.5)
    loss = NonSaturatingGAN()
    expected = loss.g_loss(D(G.local(real, z))) + 3.0 * origin.mean() + 0.7 * ortho.mean()
    assert torch.allclose(remedy.g_loss(G, D, loss, real, z), expected, rtol=1e-10)
    plain = LocalizedGAN(locality_weight=0.0, ortho_weight=0.0)
    assert torch.allclose(plain.g_loss(G, D, loss, real, z), loss.g_loss(D(G.local(real, z))), rtol=1e-12)


def test_the_penalties_are_zero_for_a_g_with_orthonormal_tangents_and_locality_by_construction():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))  # square, orthogonal
    G = _linear_local_g(q.T.clone(), q.clone()).double()  # G(x, z) = Q (Q^T x + z) = x + Q z
    x = torch.randn(16, 3, dtype=torch.float64)
    assert origin_error(G, x).max() < 1e-24  # G(x, 0) = x
    assert torch.allclose(G.local(x, torch.zeros(16, 3, dtype=torch.float64)), x, atol=1e-12)
    assert ortho_penalty(tangents(G, x, torch.arange(3)), 1.0).max() < 1e-24

    # Tangents J = W_dec with orthonormal columns (out 5, N 3): the orthonormality term is 0 on every
    # slice of coordinates, and a scaled or collapsed J is penalised (up to the configured scale).
    w, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))
    x = torch.randn(8, 5, dtype=torch.float64)
    for J, scale, zero in ((w, 1.0, True), (2 * w, 1.0, False), (2 * w, 4.0, True)):
        G = _linear_local_g(torch.randn(3, 5, dtype=torch.float64), J.clone()).double()
        for coordinates in (torch.arange(3), torch.tensor([2, 0])):
            value = ortho_penalty(tangents(G, x, coordinates), scale).max()
            assert (value < 1e-24) if zero else (value > 1.0)
    collapsed = torch.zeros(5, 3, dtype=torch.float64)
    collapsed[0, 0] = 1.0  # rank 1: two tangents vanish
    G = _linear_local_g(torch.randn(3, 5, dtype=torch.float64), collapsed).double()
    assert ortho_penalty(tangents(G, x, torch.arange(3)), 1.0).min().item() == pytest.approx(2.0)


@pytest.mark.parametrize("loss", ["nsgan", "wgan_gp"])
def test_one_d_step_changes_only_d_and_one_g_step_only_g(loss):
    exp = built("remedy=local_generator", f"loss={loss}", "batch_size=16")
    G, D = exp.G, exp.D
    assert isinstance(G, LocalGenerator)
    real, z = exp.data.sample(16), torch.randn(16, exp.latent_dim)
    g_before, d_before = snapshot(G), snapshot(D)
    assert torch.isfinite(d_step(exp, real, z))
    assert changed(d_before, D) and not changed(g_before, G)
    d_before, enc_before = snapshot(D), snapshot(G.encoder)
    assert torch.isfinite(g_step(exp, real, torch.randn(16, exp.latent_dim)))
    assert changed(g_before, G) and changed(enc_before, G.encoder) and not changed(d_before, D)


def test_a_plain_g_call_uses_the_anchors_of_the_last_evaluation_which_are_not_checkpointed():
    exp = built("remedy=local_generator")
    G, z = exp.G, torch.randn(300, 2)
    # Freshly built: one anchor, the origin of data space.
    assert torch.equal(G(z), G.local(torch.zeros(300, 2), z))
    exp.remedy.before_eval(G, exp.D, exp.data, torch.Generator().manual_seed(0))
    anchors = G.anchors
    assert anchors.shape == (256, 2)
    rows = torch.arange(300) % 256  # row i at anchor i mod 256
    assert torch.allclose(G(z), G.local(anchors[rows], z))
    assert "anchors" not in G.state_dict()


def test_evaluation_samples_are_reproducible_and_leave_the_global_rng_alone():
    exp = built("remedy=local_generator")
    z = torch.randn(500, 2)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        exp.remedy.before_eval(exp.G, exp.D, exp.data, generator)
        return exp.remedy.sample(exp.G, exp.D, z, generator)

    state = torch.get_rng_state()
    first, again, other = draw(0), draw(0), draw(1)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, again) and not torch.equal(first, other)
    # Each sample is G(x, z) at a fresh data anchor drawn after the anchor bank, from the same RNG.
    generator = torch.Generator().manual_seed(0)
    exp.data.sample(256, generator=generator)
    assert torch.equal(first, exp.G.local(exp.data.sample(500, generator=generator), z))

    # The whole 2-D evaluation: the same metrics for the same RNG, the global RNG untouched, the local
    # tangents measured.
    def evaluation():
        return evaluate(exp.G, exp.D, exp.remedy, exp.data, 2, 400, torch.Generator().manual_seed(3),
                        exp.data.plot_limits()).metrics

    state = torch.get_rng_state()
    a, b = evaluation(), evaluation()
    assert torch.equal(state, torch.get_rng_state())
    assert a["mode_counts"] == b["mode_counts"] and a["local_tangent_sigma_min"] == b["local_tangent_sigma_min"]
    assert a["local_tangent_sigma_min"] > 0 and a["local_ortho_penalty"] > 0 and a["local_origin_error"] > 0


def test_a_tiny_run_completes_and_logs_the_local_metrics(tmp_path):
    summary = run(make_cfg(*TINY, "remedy=local_generator", "eval.every=20"), tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 20
    assert summary["labels"]["remedy"] == "local_generator"
    for key in ("local_tangent_sigma_min", "local_ortho_penalty", "local_origin_error", "jacobian_sigma_min"):
        assert summary["metrics"][key] == summary["metrics"][key], key  # present and not NaN


def test_it_combines_with_remedies_that_change_d():
    exp = built("remedy=[local_generator,pacgan,spectral_norm]", "batch_size=16")
    real, z = exp.data.sample(16), torch.randn(16, 2)
    d_before = snapshot(exp.D)
    assert torch.isfinite(d_step(exp, real, z)) and changed(d_before, exp.D)
    assert torch.isfinite(g_step(exp, real, z))


@pytest.mark.parametrize("overrides, message", [
    (["model.latent_dim=3"], "use model.latent_dim <= 2"),
    (["model.g.batch_norm=true"], "batch norm in G"),
    (["model=pacgan_mlp"], "set model.g.batch_norm=false"),  # PacGAN's MLP has batch norm in G
    (["remedy.local_generator.locality_weight=-1"], "locality_weight and ortho_weight must be >= 0"),
    (["remedy.local_generator.ortho_weight=-1"], "locality_weight and ortho_weight must be >= 0"),
    (["remedy.local_generator.scale=0"], "scale > 0"),
    (["remedy.local_generator.directions=0"], "directions must be >= 1"),
    (["remedy=[local_generator,drs]"], "both replace how samples are drawn"),
    (["remedy=[local_generator,unrolled]"], "both replace the G step"),
])
def test_refusals_are_one_line(overrides, message):
    if not any(o.startswith("remedy=") for o in overrides):
        overrides = ["remedy=local_generator", *overrides]
    with pytest.raises(ConfigError, match=message) as refused:
        build(compose_config(overrides), torch.device("cpu"))
    assert "\n" not in str(refused.value)
