"""Image models (models/dcgan.py, models/resnet.py): shapes, the D interface remedies rely on,
per-sample independence of D, double backward, spectral norm, bad sizes, and the model configs.

Networks are built from the composed `model` nodes with explicit shapes (no image dataset needed)
and tiny widths, so the whole file runs in seconds on a CPU."""

import hydra
import pytest
import torch
from conftest import make_cfg
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlab.config import validate
from ganlab.errors import ConfigError
from ganlab.models import dcgan, resnet
from ganlab.remedies.base import NetworkFactory
from ganlab.remedies.ebgan import EBGAN
from ganlab.remedies.feature_matching import FeatureMatching
from ganlab.remedies.minibatch_disc import MinibatchDisc
from ganlab.remedies.minibatch_std import MinibatchStd
from ganlab.remedies.mrgan import MRGAN
from ganlab.remedies.pacgan import PacGAN
from ganlab.remedies.spectral_norm import SpectralNorm

N, Z = 4, 8
# (module, image shape): dcgan at both sizes and channel counts, resnet at 32x32 only.
CASES = [(dcgan, (c, s, s)) for s in (28, 32) for c in (1, 3)] + [(resnet, (1, 32, 32)), (resnet, (3, 32, 32))]
IDS = [f"{m.__name__.rsplit('.', 1)[1]}-{'x'.join(map(str, shape))}" for m, shape in CASES]


def nets(module, shape, norm=None):
    kw = {} if norm is None else {"norm": norm}
    torch.manual_seed(0)
    return (module.Generator(Z, shape, width=8), module.Discriminator(shape, width=8, **kw),
            module.Encoder(shape, out_dim=5, width=8))


@pytest.mark.parametrize("module, shape", CASES, ids=IDS)
def test_shapes_range_and_feature_split(module, shape):
    G, D, E = nets(module, shape)
    x = G(torch.randn(N, Z) * 10)  # large codes: tanh must still bound the output
    assert x.shape == (N, *shape) and x.abs().max() <= 1
    assert D(x).shape == (N,) and E(x).shape == (N, 5) and D.in_shape == shape
    f = D.features(x)
    assert f.shape == (N, D.feature_dim) and isinstance(D.head, nn.Linear) and D.head.in_features == D.feature_dim
    assert torch.allclose(D(x), D.head(f).squeeze(1))


@pytest.mark.parametrize("module, shape", [(dcgan, (6, 28, 28)), (dcgan, (9, 32, 32)), (resnet, (6, 32, 32))],
                         ids=["dcgan-28-pack2", "dcgan-32-pack3", "resnet-32-pack2"])
def test_packed_channels(module, shape):
    D = module.Discriminator(shape, width=8)
    assert D(torch.randn(N, *shape)).shape == (N,)


@pytest.mark.parametrize("module, shape, norm", [(dcgan, (3, 28, 28), "none"), (dcgan, (3, 28, 28), "layer"),
                                                 (dcgan, (3, 32, 32), "layer"), (resnet, (3, 32, 32), None)],
                         ids=["dcgan-28", "dcgan-28-layer", "dcgan-32-layer", "resnet-32"])
def test_d_scores_each_sample_alone_and_supports_double_backward(module, shape, norm):
    D = module.Discriminator(shape, width=8, **({} if norm is None else {"norm": norm})).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    x = torch.randn(N, *shape)
    other = torch.cat([x[:1], torch.randn(N - 1, *shape)])  # the same first sample, other batch-mates
    assert torch.allclose(D(x)[0], D(other)[0], atol=1e-6)

    # WGAN-GP: the penalty's gradient is itself differentiated.
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]  # the head's bias has none: it drops out of dD/dx
    assert len(grads) >= len(list(D.parameters())) - 1 and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("module, shape", CASES, ids=IDS)
def test_spectral_norm_on_every_layer_still_runs(module, shape):
    G, D, _ = nets(module, shape)
    layers = [m for m in D.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers:
        spectral_norm(m)
    D(G(torch.randn(N, Z))).sum().backward()
    assert all(hasattr(m, "parametrizations") for m in layers)


@pytest.mark.parametrize("build, message", [
    (lambda: dcgan.Generator(Z, (1, 64, 64)), "28x28 and 32x32"),
    (lambda: dcgan.Discriminator((3, 28, 32)), "28x28 and 32x32"),
    (lambda: dcgan.Encoder((1, 16, 16), 4), "28x28 and 32x32"),
    (lambda: dcgan.Discriminator((2,)), "use model=mlp"),
    (lambda: dcgan.Generator(Z, (1, 28, 28), width=0), "width must be >= 1"),
    (lambda: resnet.Generator(Z, (1, 28, 28)), "pad_to_32"),
    (lambda: resnet.Discriminator((3, 28, 28)), "32x32"),
    (lambda: resnet.Encoder((2,), 4), "32x32"),
])
def test_bad_sizes_are_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


MODELS = ["dcgan", "dcgan_d_half", "dcgan_d_quarter", "resnet"]


def from_cfg(model, shape, *overrides):
    """G, D, encoder of the `model` config at tiny widths, for `shape` images, and the latent dim."""
    cfg = make_cfg(f"model={model}", *overrides)
    tiny = {"width": 8} if model == "resnet" else {}
    m = cfg.model
    return (hydra.utils.instantiate(m.g, latent_dim=m.latent_dim, out_shape=shape, **tiny),
            hydra.utils.instantiate(m.d, in_shape=shape, **tiny),
            hydra.utils.instantiate(m.encoder, in_shape=shape, out_dim=3, **tiny), m.latent_dim)


@pytest.mark.parametrize("model", MODELS)
def test_configs_compose_validate_and_instantiate(model):
    validate(make_cfg(f"model={model}"))  # every key matches its constructor's annotations
    shape = (3, 32, 32) if model == "resnet" else (1, 28, 28)
    G, D, E, latent = from_cfg(model, shape)
    x = G(torch.randn(2, latent))
    assert x.shape == (2, *shape) and D(x).shape == (2,) and E(x).shape == (2, 3)


def test_small_discriminators_are_half_and_quarter_of_g_width():
    models = {m: make_cfg(f"model={m}").model for m in MODELS[:3]}
    widths = {m: (node.g.width, node.d.width) for m, node in models.items()}
    assert widths == {"dcgan": (64, 64), "dcgan_d_half": (64, 32), "dcgan_d_quarter": (64, 16)}


@pytest.mark.parametrize("override, message", [("model.d.norm=group", "choose one of none, layer, batch"),
                                               ("model.g.batch_norm=3", "true or false"),
                                               ("+model.d.depth=3", "unknown key")])
def test_bad_model_keys_fail_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg("model=dcgan", override))


@pytest.mark.parametrize("module, shape", [(dcgan, (3, 28, 28)), (resnet, (3, 32, 32))], ids=["dcgan", "resnet"])
def test_remedies_build_on_image_models(module, shape):
    """The remedies that rebuild or reach into D work with conv nets: one G and D backward each."""
    make = NetworkFactory(lambda **kw: module.Generator(width=8, **kw), lambda **kw: module.Discriminator(width=8, **kw),
                          lambda **kw: module.Encoder(width=8, **kw), Z, shape)
    for remedy in (PacGAN(m=2), MinibatchStd(), MinibatchDisc(kernels=4, kernel_dim=3), FeatureMatching(),
                   SpectralNorm(), EBGAN(code_dim=4), MRGAN()):
        G, D = remedy.build(make.G(), make.D(), make)
        z = torch.randn(N, Z)
        scores = D(G(z))
        assert scores.shape == (N // getattr(D, "samples_per_score", 1),)
        scores.sum().backward()
        for name, (net, _) in remedy.extra_networks().items():  # MRGAN's encoder: image -> latent code
            assert net(G(z)).shape == (N, Z), name
