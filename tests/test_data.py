import math

import torch

from ganlab.data.toy import grid, ring


def test_ring_has_8_distinct_centres_on_the_circle():
    data = ring()
    c = data.centers
    assert c.shape == (8, 2)
    assert torch.allclose(c.norm(dim=1), torch.full((8,), 2.0))
    pairwise = torch.cdist(c, c) + torch.eye(8) * 10
    assert pairwise.min() > 1.5  # neighbours are 2 * 2 * sin(pi/8) = 1.53 apart: no repeated centre
    angles = torch.atan2(c[:, 1], c[:, 0]) % (2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8) * 2 * math.pi / 8, atol=1e-6)


def test_grid_centres():
    c = grid().centers
    assert c.shape == (25, 2)
    assert sorted(set(c[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(p) for p in c.tolist()}) == 25


def test_geometry_is_configurable_and_samples_have_the_right_spread():
    data = ring(modes=5, radius=3.0, std=0.1)
    torch.manual_seed(0)
    x = data.sample(5000)
    assert x.shape == (5000, 2) and data.n_modes == 5
    nearest = torch.cdist(x, data.centers).min(dim=1).values
    # |N(0, s^2 I_2)| has mean s * sqrt(pi / 2)
    assert abs(nearest.mean().item() - 0.1 * math.sqrt(math.pi / 2)) < 0.005


def test_sampling_with_a_generator_is_reproducible():
    data = grid()
    a = data.sample(10, generator=torch.Generator().manual_seed(3))
    b = data.sample(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
