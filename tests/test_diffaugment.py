"""remedy=diffaugment (Zhao et al. 2020): each operation against what it must do to a known image,
shapes kept, gradients through to the input, independent draws per sample and per call (the authors'
protocol: real and fake batches are augmented apart), none in evaluation, refused on 2-D points."""

import pytest
import torch
from conftest import TINY_DCGAN, built, make_cfg

from ganlab.errors import ConfigError
from ganlab.remedies.diffaugment import (
    Augmented,
    DiffAugment,
    augment,
    color,
    cut_out,
    random_cutout,
    random_translation,
    translate,
)
from ganlab.step import d_step, g_step

POLICIES = [("color",), ("translation",), ("cutout",), ("color", "translation", "cutout")]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", [(5, 3, 28, 28), (4, 1, 32, 32)])
def test_every_policy_keeps_the_shape_and_passes_gradients_to_the_input(policy, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    y = augment(x, policy)
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # most pixels reach the output (cutout hides a quarter)


def test_a_ratio_of_zero_is_the_identity():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    assert torch.equal(random_translation(x, 0.0), x)
    assert torch.equal(random_cutout(x, 0.0), x)


def test_translation_moves_whole_pixels_and_shifts_zeros_in():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5) + 1
    y = translate(x, torch.tensor([1, -2]), torch.tensor([-1, 0]))
    expected = torch.zeros_like(x)
    expected[0, :, 1:, :4] = x[0, :, :3, 1:]   # image 0: one row down, one column left
    expected[1, :, :2, :] = x[1, :, 2:, :]     # image 1: two rows up
    assert torch.equal(y, expected)


def test_random_translation_stays_within_an_eighth_of_the_size():
    """A 16x16 image of ones shifted by at most 2 = 16/8 pixels each way keeps (16 - |dh|)(16 - |dw|) ones."""
    torch.manual_seed(0)
    kept = random_translation(torch.ones(2000, 1, 16, 16), 0.125).sum(dim=(1, 2, 3))
    possible = {(16 - abs(a)) * (16 - abs(b)) for a in range(-2, 3) for b in range(-2, 3)}
    assert set(kept.tolist()) == {float(v) for v in possible}  # every shift in [-2, 2]^2 drawn, no other


def test_cutout_zeroes_one_half_size_square_per_image():
    x = torch.ones(1, 2, 6, 8)
    y = cut_out(x, torch.tensor([1]), torch.tensor([-2]), 3, 4)  # rows 1-3, columns -2..1: cut at the edge
    hole = torch.zeros(6, 8, dtype=torch.bool)
    hole[1:4, 0:2] = True
    assert torch.equal(y[0, 0] == 0, hole) and torch.equal(y[0, 1] == 0, hole)
    torch.manual_seed(0)
    holes = (random_cutout(torch.ones(500, 1, 16, 16), 0.5) == 0).sum(dim=(1, 2, 3))
    assert holes.max() == 64 and holes.min() == 16  # an 8x8 square, up to three quarters of it off the image


def test_color_shifts_each_images_mean_by_at_most_one_half():
    """Saturation keeps each pixel's mean over channels and contrast the image's mean, so the image's mean
    moves by the brightness draw alone, uniform in [-0.5, 0.5]; one channel has no saturation to change."""
    torch.manual_seed(0)
    x = torch.rand(3000, 3, 8, 8) * 2 - 1
    shift = color(x).mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert shift.abs().max() <= 0.5 + 1e-5 and shift.min() < -0.45 and shift.max() > 0.45
    gray = torch.rand(1, 1, 8, 8).expand(500, 1, 8, 8)
    out = color(gray)  # brightness b and contrast c only: (x + b - m) c + m, m = mean(x) + b
    centred = out - out.mean(dim=(1, 2, 3), keepdim=True)
    scale = centred.flatten(1).norm(dim=1) / (gray - gray.mean()).flatten(1).norm(dim=1)
    assert scale.min() >= 0.5 - 1e-5 and scale.max() <= 1.5 + 1e-5


def test_each_sample_and_each_call_draw_their_own_augmentation_and_evaluation_draws_none():
    """As the authors' run_D: one draw per sample, and D's calls on the real and the fake batch are augmented
    apart (independent draws), never with one shared set of parameters."""
    torch.manual_seed(0)
    D = Augmented(torch.nn.Identity(), ("color", "translation", "cutout"), 0.125, 0.5)
    x = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)  # one image, eight times
    first, second = D.transform(x), D.transform(x)
    assert not torch.equal(first, second)
    assert all(not torch.equal(first[0], first[i]) for i in range(1, 8))
    D.eval()
    assert torch.equal(D(x), x)


def test_diffaugment_is_refused_on_2d_points_and_with_an_unknown_operation():
    with pytest.raises(ConfigError, match=r"^remedy diffaugment augments images .*shape \(2,\)") as refused:
        built("remedy=diffaugment")
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"remedy.diffaugment.policy='color,flip': a comma-separated list"):
        DiffAugment(policy="color,flip")


def test_a_diffaugment_d_step_and_g_step_on_images(image_root):
    """The wrapped D augments in training: D's loss differs from the unaugmented D's on the same batch, both
    steps move their network, and G's gradient passes through the augmentation."""
    exp = built("dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100", *TINY_DCGAN,
                "remedy=diffaugment", "loss.r1_gamma=10")
    assert isinstance(exp.D, Augmented) and exp.D.policy == ("color", "translation", "cutout")
    real, z = exp.remedy.real_batch(exp.data, 8), torch.randn(8, exp.latent_dim)
    with torch.no_grad():
        assert not torch.equal(exp.D(real), exp.D.inner(real))
    d_before = [p.detach().clone() for p in exp.D.parameters()]
    assert torch.isfinite(d_step(exp, real, z))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, exp.D.parameters()))
    g_before = [p.detach().clone() for p in exp.G.parameters()]
    assert torch.isfinite(g_step(exp, real, z))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, exp.G.parameters()))
    assert make_cfg("remedy=diffaugment").remedy.diffaugment.policy == "color,translation,cutout"
