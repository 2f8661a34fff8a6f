"""MAD-GAN's defaults as the authors' synthetic-data code (vivkul/MAD-GAN_synthetic, madgan.py): every
generator gets the same codes and the whole batch, they share all layers but the last, D's loss is one
cross-entropy over the B reals and k*B fakes; the similarity variant compares D's features."""

import pytest
import torch
import torch.nn.functional as F
from conftest import built, changed, snapshot
from torch import nn

from ganlab.errors import ConfigError
from ganlab.models import dcgan, mlp, resnet
from ganlab.remedies.madgan import MADGAN, generator_stages

# A tiny fixed D (one hidden layer of 3 units) and small generators, so the sums by hand stay small.
TINY_NETS = ["model.d.depth=1", "model.d.width=3", "model.g.depth=2", "model.g.width=8"]


def _madgan(*overrides, k=3, batch=4):
    return built("remedy=madgan", f"remedy.madgan.k={k}", f"batch_size={batch}", *TINY_NETS, *overrides)


def _log_softmax_by_hand(logits):
    return logits - logits.exp().sum(dim=1, keepdim=True).log()


def test_the_defaults_are_the_authors():
    remedy = _madgan().remedy
    assert (remedy.share, remedy.batch, remedy.diversity_weight) == ("all_but_last", "full", 0.0)


def test_d_loss_is_one_cross_entropy_over_b_reals_and_k_b_fakes_each_labelled_with_its_generator():
    exp = _madgan()
    G, D, k, B = exp.G, exp.D, 3, 4
    real, z = exp.data.sample(B), torch.randn(B, exp.latent_dim)
    got = exp.remedy.d_loss(G, D, exp.loss, real, z)
    # By hand: G_i(z) = own last layer i after the shared trunk, on all B codes; D's logits from its layers.
    with torch.no_grad():
        fakes = [G.generators[i](G.shared(z)) for i in range(k)]
    x = torch.cat([real, *fakes])                                # B reals, then B fakes of each generator
    labels = [k] * B + [i for i in range(k) for _ in range(B)]   # real is class k, generator i's samples class i
    core = D.inner
    logp = _log_softmax_by_hand(core.head(core.body(x)))
    expected = -sum(logp[row, label] for row, label in enumerate(labels)) / ((k + 1) * B)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("batch, real_prior", [("full", 1 / 4), ("split", 1 / 2)])
def test_the_real_class_prior_is_1_over_k_plus_1_with_the_full_batch_and_one_half_split(batch, real_prior):
    """A D that ignores its input (head weights 0) says softmax(bias) for every sample; D's loss is
    then least where softmax(bias) is the class frequencies of the loss: there its gradient is 0."""
    exp = _madgan(f"remedy.madgan.batch={batch}", "remedy.madgan.share=none", k=3, batch=6)
    head = exp.D.inner.head
    priors = torch.tensor([(1 - real_prior) / 3] * 3 + [real_prior])
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(priors.log())
    real, z = exp.data.sample(6), torch.randn(6, exp.latent_dim)
    (grad,) = torch.autograd.grad(exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z), head.bias)
    assert grad.abs().max() < 1e-6
    with torch.no_grad():  # and the other layout's prior is not D's optimum
        other = 1 / 2 if real_prior != 1 / 2 else 1 / 4
        head.bias.copy_(torch.tensor([(1 - other) / 3] * 3 + [other]).log())
    (grad,) = torch.autograd.grad(exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z), head.bias)
    assert grad.abs().max() > 0.05


@pytest.mark.parametrize("share", ["none", "all_but_first", "all_but_last"])
def test_every_generator_receives_the_same_codes_in_the_d_and_the_g_step(share):
    exp = _madgan(f"remedy.madgan.share={share}")
    G, B = exp.G, 4
    seen = {i: [] for i in range(3)}
    for i, part in enumerate(G.generators):
        part.register_forward_pre_hook(lambda module, args, i=i: seen[i].append(args[0].detach().clone()))
    z = torch.randn(B, exp.latent_dim)
    exp.remedy.d_loss(G, exp.D, exp.loss, exp.data.sample(B), z)
    exp.remedy.g_loss(G, exp.D, exp.loss, None, z)
    # Each generator's own part saw, in each step, the whole batch: z itself, or the shared trunk's output of z.
    with torch.no_grad():
        first_input = G.shared(z) if share == "all_but_last" else z
    for i in range(3):
        assert len(seen[i]) == 2 and all(torch.allclose(x, first_input) for x in seen[i]), i
    # The samples of one code differ between generators (they are k different functions of the same z).
    blocks = G.full(z).detach().split(B)
    assert not torch.allclose(blocks[0], blocks[1])


def test_split_batch_gives_each_generator_its_own_chunk_of_the_codes():
    exp = _madgan("remedy.madgan.share=none", "remedy.madgan.batch=split", batch=6)
    seen = []
    for part in exp.G.generators:
        part.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    z = torch.randn(6, exp.latent_dim)
    exp.remedy.d_loss(exp.G, exp.D, exp.loss, exp.data.sample(6), z)
    assert [x.tolist() for x in seen] == [c.tolist() for c in z.tensor_split(3)]


def test_all_but_last_shares_the_trunk_and_every_generator_trains_it():
    exp = _madgan()
    G, k, B = exp.G, 3, 4
    # The parameters: one trunk, and k last layers (hidden width 8 -> a 2-D point).
    names = [name for name, _ in G.named_parameters()]
    assert {n.split(".")[0] for n in names} == {"shared", "generators"}
    assert all(isinstance(g, nn.Linear) and (g.in_features, g.out_features) == (8, 2) for g in G.generators)
    one = mlp.Generator(exp.latent_dim, (2,), depth=2, width=8)
    last = sum(p.numel() for p in one.net[-1].parameters())
    assert sum(p.numel() for p in G.parameters()) == sum(p.numel() for p in one.parameters()) + (k - 1) * last
    # G's loss is a sum over the generators' blocks; each block's gradient reaches the trunk.
    z = torch.randn(B, exp.latent_dim)
    trunk = G.shared[0].weight
    (total,) = torch.autograd.grad(exp.remedy.g_loss(G, exp.D, exp.loss, None, z), trunk)
    from ganlab.remedies.madgan import class_logits

    logits = class_logits(exp.D, G.full(z))
    per_generator = []
    for i in range(k):
        term = -F.log_softmax(logits[i * B:(i + 1) * B], dim=1)[:, k].sum() / (k * B)
        (grad,) = torch.autograd.grad(term, trunk, retain_graph=True)
        assert grad.abs().sum() > 0, i
        per_generator.append(grad)
    assert torch.allclose(total, sum(per_generator), atol=1e-7)


@pytest.mark.parametrize("make", [
    lambda: mlp.Generator(4, (2,), depth=2, width=8, batch_norm=True),
    lambda: dcgan.Generator(4, (3, 28, 28), width=4),
    lambda: resnet.Generator(4, (3, 32, 32), width=8),
], ids=["mlp", "dcgan", "resnet"])
def test_the_stages_of_each_model_are_its_forward_and_end_with_its_last_layer(make):
    torch.manual_seed(0)
    g = make().eval()
    stages = generator_stages(g)
    z = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.allclose(nn.Sequential(*stages)(z).view(5, *g.out_shape), g(z), atol=1e-6)
    weighted = [m for m in stages[-1].modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d))]
    assert len(weighted) == 1  # the one layer each generator keeps as its own
    assert isinstance(stages[0], nn.Linear) and stages[0].in_features == 4  # the layer that reads z


def test_shared_layers_on_a_dcgan_and_an_unknown_generator_refused():
    from ganlab.remedies.base import NetworkFactory

    shape = (3, 28, 28)
    make = NetworkFactory(lambda latent_dim, out_shape: dcgan.Generator(latent_dim, out_shape, width=4),
                          lambda in_shape: dcgan.Discriminator(in_shape, width=4), None, 4, shape)
    G, D = MADGAN(k=2).build(make.G(), make.D(), make)
    # Each generator owns its last transposed conv (with the tanh); the projection and the rest are shared.
    assert all(isinstance(g[0], nn.ConvTranspose2d) for g in G.generators)
    assert isinstance(G.shared[0], nn.Linear) and G(torch.randn(4, 4)).shape == (4, *shape)
    assert G.full(torch.randn(4, 4)).shape == (8, *shape)

    class Unknown(nn.Module):
        def forward(self, z):
            return z

    make = NetworkFactory(lambda **kw: Unknown(), None, None, 2, (2,))
    with pytest.raises(ConfigError, match="not Unknown's; set remedy.madgan.share=none"):
        MADGAN(k=2).build(Unknown(), None, make)


def test_old_options_stay_reachable_and_are_checked():
    with pytest.raises(ConfigError, match="batch_size=2 is smaller than remedy.madgan.k=3"):
        _madgan("remedy.madgan.batch=split", batch=2)
    assert _madgan(batch=2).remedy.batch == "full"  # every generator gets the whole batch: any size works
    with pytest.raises(ConfigError, match="remedy.madgan.batch='halves': choose one of full, split"):
        MADGAN(batch="halves")


def test_the_similarity_term_compares_d_features_not_coordinates():
    exp = _madgan("remedy.madgan.diversity_weight=0.5", "model.d.width=16", k=2)
    remedy, D = exp.remedy, exp.D
    apart = torch.tensor([[2.0, 2.0], [4.0, 4.0]])  # generator 0 made (2, 2), generator 1 (4, 4), of one code
    same = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    assert F.cosine_similarity(apart[:1], apart[1:]).item() == pytest.approx(1.0)  # raw coordinates: identical
    assert remedy.diversity(D, same).item() == pytest.approx(1.0)
    assert remedy.diversity(D, apart).item() < 1 - 1e-3
    assert torch.isfinite(remedy.diversity(D, torch.tensor([[0.0, 0.0], [1.0, 0.0]])))  # the centre has features
    before = remedy.diversity(D, apart).item()
    with torch.no_grad():
        D.inner.body[1].weight.add_(0.5)  # another D, another term
    assert remedy.diversity(D, apart).item() != pytest.approx(before, abs=1e-4)
    # In G's loss: the adversarial term plus the weight times the similarity of G's full batch.
    z = torch.randn(4, exp.latent_dim)
    plain = MADGAN(k=2).g_loss(exp.G, D, exp.loss, None, z)
    got = remedy.g_loss(exp.G, D, exp.loss, None, z)
    assert torch.allclose(got, plain + 0.5 * remedy.diversity(D, exp.G.full(z)), atol=1e-6)


def test_one_d_step_and_one_g_step_change_what_they_should():
    exp = _madgan("remedy.madgan.diversity_weight=0.1")
    G, D, k = exp.G, exp.D, 3
    real, z = exp.data.sample(4), torch.randn(4, exp.latent_dim)
    g0, d0 = snapshot(G), snapshot(D)
    exp.d_opt.zero_grad()
    exp.remedy.d_loss(G, D, exp.loss, real, z).backward()
    exp.d_opt.step()
    assert changed(d0, D) and not changed(g0, G)
    assert all(p.grad is None for p in G.parameters())  # D's step reaches no G parameter

    d1, trunk, own = snapshot(D), snapshot(G.shared), [snapshot(g) for g in G.generators]
    exp.g_opt.zero_grad()
    exp.remedy.g_loss(G, D, exp.loss, real, torch.randn(4, exp.latent_dim)).backward()
    exp.g_opt.step()
    assert not changed(d1, D) and changed(trunk, G.shared)
    assert all(changed(own[i], G.generators[i]) for i in range(k))  # every generator's last layer moved


def test_sampling_for_evaluation_still_takes_equal_shares_from_every_generator():
    exp = _madgan()
    G = exp.G.eval()
    z = torch.randn(9, exp.latent_dim)
    out = G(z)
    assert out.shape == (9, 2) and G.sizes(9) == [3, 3, 3]
    assert exp.remedy.sample_sources(G, z).tolist() == [0] * 3 + [1] * 3 + [2] * 3
    with torch.no_grad():
        for i, chunk in enumerate(z.tensor_split(3)):  # chunk i through G_i
            assert torch.allclose(out[3 * i:3 * i + 3], G.generators[i](G.shared(chunk)))
