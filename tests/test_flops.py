"""ganlab.flops: the matrix-product FLOPs of one training step, checked against counts written out by hand
from the layer sizes, and the trainable parameters of each side."""

import hashlib
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, TINY_DCGAN, built, ganlab, make_cfg

from ganlab import flops
from ganlab.errors import GanlabError
from ganlab.flops import flops_for_run_dir, run_config, step_cost
from ganlab.step import one_step
from ganlab.train import run

# A small MLP GAN on the ring (2-D points): G 3 -> 8 -> 2, D 2 -> 6 -> 1, batch 4.
B = 4
SMALL = ["dataset=ring", "model=mlp", "model.latent_dim=3", "model.g.depth=1", "model.g.width=8",
         "model.d.depth=1", "model.d.width=6", f"batch_size={B}", "loss=nsgan", "remedy=none"]
G_LAYERS = [(3, 8), (8, 2)]
D_LAYERS = [(2, 6), (6, 1)]


def linear(b, layers):
    """Forward FLOPs of Linear layers (in, out) on a batch of b: 2*b*in*out each (one multiply-add = 2).
    A backward costs as much again for each gradient it computes: the weights' and the input's."""
    return sum(2 * b * i * o for i, o in layers)


def hand_count(b, g_layers, d_layers, d_batch):
    """(D step, G step) of the plain GAN objective by hand; D scores d_batch inputs per batch (b / m packs)."""
    not_first = lambda layers: layers[1:]  # noqa: E731 - nothing upstream of the first layer needs its input's gradient
    d_step = (linear(b, g_layers)  # G(z), detached
              + 2 * linear(d_batch, d_layers)  # D on the real and on the fake batch
              # their backward: the weights' gradients, and the inputs' but the first layer's
              + 2 * (linear(d_batch, d_layers) + linear(d_batch, not_first(d_layers))))
    g_step = (linear(b, g_layers) + linear(d_batch, d_layers)  # D(G(z))
              + linear(d_batch, d_layers)  # back through D: input gradients only (D's weights held fixed)
              + linear(b, g_layers) + linear(b, not_first(g_layers)))  # G's weights, and inputs but z's
    return d_step, g_step


def params(layers):
    return sum(i * o + o for i, o in layers)


def test_an_mlp_step_is_the_hand_count():
    cost = step_cost(make_cfg(*SMALL))
    d_step, g_step = hand_count(B, G_LAYERS, D_LAYERS, B)
    assert (d_step, g_step) == (992, 1056)  # written out: 320 + 2*144 + 2*(144 + 48); 320 + 144 + 144 + 320 + 128
    assert (cost.d_flops, cost.g_flops, cost.flops) == (d_step, g_step, d_step + g_step)
    assert cost.n_critic == 1 and cost.batch_size == B
    assert (cost.g_params, cost.d_params) == (params(G_LAYERS), params(D_LAYERS)) == (50, 25)
    assert cost.networks == {"G": 50, "D": 25}
    assert cost.gflop == pytest.approx(2048e-9)


def test_the_veegan_setup_counts_what_bench_remedies_reported():
    """VEEGAN's setup (G and D 3x128 ReLU, latent 2, batch 256): 203.6 MFLOP (docs/benchmarks.md)."""
    g = [(2, 128), (128, 128), (128, 128), (128, 2)]
    d = [(2, 128), (128, 128), (128, 128), (128, 1)]
    cost = step_cost(make_cfg("experiment=veegan_ring_gan"))
    assert cost.flops == sum(hand_count(256, g, d, 256)) == 203_554_816


def test_the_count_is_one_step_of_the_training_loop():
    """D phase + G phase as step_cost counts them apart = ganlab.step.one_step under one counter."""
    for overrides in ([], ["loss=wgan_gp"], ["remedy=unrolled", "remedy.unrolled.k=2"], ["remedy=mrgan"]):
        exp = built(*SMALL, *overrides)
        with flops.counter() as counter:
            one_step(exp, B)
        assert step_cost(make_cfg(*SMALL, *overrides)).flops == counter.get_total_flops() > 0, overrides


def test_wgan_gp_counts_its_five_critic_steps():
    five = step_cost(make_cfg(*SMALL, "loss=wgan_gp"))
    one = step_cost(make_cfg(*SMALL, "loss=wgan_gp", "loss.n_critic=1"))
    assert five.n_critic == 5 and one.n_critic == 1
    assert five.d_flops == 5 * one.d_flops and five.g_flops == one.g_flops
    # The gradient penalty's double backward is counted: a critic step costs more than the plain D step.
    assert one.d_flops > hand_count(B, G_LAYERS, D_LAYERS, B)[0]


def test_pacgan_packs_of_two_by_hand():
    """m = 2: D takes packs of 2 points (4 inputs), B / 2 of them per batch."""
    packed = [(2 * 2, 6), (6, 1)]
    none = step_cost(make_cfg(*SMALL))
    pac2 = step_cost(make_cfg(*SMALL, "remedy=pacgan", "remedy.pacgan.m=2"))
    assert (pac2.d_flops, pac2.g_flops) == hand_count(B, G_LAYERS, packed, B // 2) == (848, 1008)
    assert pac2.flops < none.flops
    assert pac2.d_params == params(packed) == none.d_params + 2 * 6 and pac2.g_params == none.g_params


def test_a_remedys_extra_networks_count_on_their_side():
    cost = step_cost(make_cfg(*SMALL, "remedy=mrgan"))  # MRGAN's encoder x -> z trains with G
    assert set(cost.networks) == {"G", "D", "encoder"}
    assert cost.g_params == cost.networks["G"] + cost.networks["encoder"] and cost.d_params == cost.networks["D"]


def test_multiscale_counts_every_d(image_root):
    overrides = ["dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100", *TINY_DCGAN]
    single = step_cost(make_cfg(*overrides))
    multi = step_cost(make_cfg(*overrides, "remedy=multiscale"))
    exp = built(*overrides, "remedy=multiscale")
    per_d = [sum(p.numel() for p in d.parameters()) for d in exp.D.discriminators]
    assert len(per_d) == 3 and per_d[0] == single.d_params  # the full-size D is the plain one
    assert multi.d_params == multi.networks["D"] == sum(per_d) and multi.g_params == single.g_params
    assert multi.flops > single.flops


def test_callers_random_streams_are_left_alone():
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    flops._CACHE.clear()
    step_cost(make_cfg(*SMALL, "remedy=mrgan"))
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def _files(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_run_directory_gives_its_configs_count(tmp_path):
    """A CLI run's .hydra/config.yaml, read back, gives the count of the config it was composed from; the
    run directory is not changed."""
    overrides = [*TINY, "remedy=pacgan", "remedy.pacgan.m=2", "model.g.width=16", "model.d.width=16", "steps=2"]
    done = ganlab("train", *overrides, "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    before = _files(run_dir)
    flops._CACHE.clear()
    from_dir = flops_for_run_dir(run_dir)
    flops._CACHE.clear()
    composed = step_cost(make_cfg(*overrides))
    assert from_dir == composed and from_dir.flops > 0
    assert _files(run_dir) == before


def test_a_run_without_hydras_record_reads_its_summary(tmp_path):
    """A run started from Python (or a replica of replicas=N) has no .hydra/: its summary.json's config."""
    cfg = make_cfg(*SMALL, *TINY, "steps=2", f"batch_size={B}")
    run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / ".hydra").exists()
    assert run_config(tmp_path / "run").batch_size == B
    flops._CACHE.clear()
    assert flops_for_run_dir(tmp_path / "run").flops == sum(hand_count(B, G_LAYERS, D_LAYERS, B))


def test_the_stacked_control_widths_are_the_closest_in_parameters(image_root):
    """scripts/reproduce_stacked.sh's capacity controls: multiscale with three Ds of width W whose total is
    the closest to the one D of width 8, and one D of the width closest to multiscale's three. Parameters
    grow with the width, so the closest beats its two neighbours."""
    text = (REPO / "scripts" / "reproduce_stacked.sh").read_text()
    w_multi = int(re.search(r"MULTISCALE_D_WIDTH:-(\d+)", text).group(1))
    w_single = int(re.search(r"SINGLE_D_WIDTH:-(\d+)", text).group(1))
    base = ["experiment=stacked_setup", f"dataset.root={image_root}", "dataset.n=100"]

    def d_params(*overrides):
        return step_cost(make_cfg(*base, *overrides)).d_params

    one_d, three_ds = d_params("remedy=none"), d_params("remedy=multiscale")
    assert (one_d, three_ds) == (3273, 8411)  # the counts the script's comment states

    def gap(target, remedy, width):
        return abs(d_params(f"remedy={remedy}", f"model.d.width={width}") - target)

    for w in (w_multi - 1, w_multi + 1):
        assert gap(one_d, "multiscale", w_multi) < gap(one_d, "multiscale", w)
    for w in (w_single - 1, w_single + 1):
        assert gap(three_ds, "none", w_single) < gap(three_ds, "none", w)


def test_a_partial_config_is_a_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text('{"config": {"seed": 0, "batch_size": 4}}')
    with pytest.raises(GanlabError, match="has no dataset, model, optim, loss, remedy, steps"):
        flops_for_run_dir(tmp_path / "run")
    with pytest.raises(GanlabError, match="no .hydra/config.yaml and no config in summary.json"):
        flops_for_run_dir(tmp_path)
