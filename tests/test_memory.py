"""Sizes that cannot fit (issue 28, item 7): every allocation that grows with a setting is estimated at
start-up, on the meta device, and refused in one line with the estimate and the memory free, before the
pre-run build allocates it and before any directory is made; a sweep of no job, or of more than
sweep.MAX_JOBS, is refused before a job is composed, and a long pre-run check shows its progress.

Nothing here allocates the sizes it names: each is refused before any tensor of that size exists."""

import logging
import re
import time

import pytest
import torch
from conftest import TINY, make_cfg
from test_bad_input import assert_one_line, run_in_process

import ganlab.memory as memory
import ganlab.replicas
import ganlab.sweep
from ganlab.cli import main
from ganlab.config import options
from ganlab.errors import ConfigError

ESTIMATE = re.compile(r"needs? about [\d.]+ GB of memory|about [\d.]+ GB of memory")
FREE = re.compile(r"and [\d.]+ (GB|MB) is free")


def train(args, capsys, monkeypatch, tmp_path):
    # An earlier in-process job's logging config writes to that test's (closed) capture stream.
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)
    return run_in_process(args, capsys, monkeypatch, tmp_path)


@pytest.mark.parametrize("override, says", [
    # 12.8 billion parameters in G's first layer: 51 GB of weights, before the pre-run build made them
    ("model.latent_dim=100000000", "model.latent_dim=100000000 makes networks of 12.8 billion parameters"),
    ("model.g.width=1000000", "model.g.width=1000000 makes networks of"),
    # 200 samples x 10^8 modes of distances at the first evaluation (and 2.4 GB of centres at the build)
    ("dataset.modes=100000000", "dataset.modes=100000000 makes 100,000,000 modes"),
    ("dataset=grid dataset.side=100000", "dataset.side=100000 makes 10,000,000,000 modes"),
    ("eval.samples=100000 eval.w_samples=100000", "eval.w_samples=100000: the exact W1/W2 between 100,000 points"),
])
def test_a_size_that_cannot_fit_is_refused_before_anything_is_built(override, says, capsys, monkeypatch, tmp_path):
    code, out, err = train([*override.split(), *TINY], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, override, says, tmp_path)  # and no outputs/ directory
    assert ESTIMATE.search(err) and FREE.search(err), err
    assert f"lower {says.split('=')[0]}" in err, err


@pytest.fixture
def nothing_built(monkeypatch):
    """Any build of the networks (the meta-device estimate's or the pre-run one) fails the test."""
    import ganlab.gan

    def build(*args, **kwargs):
        raise AssertionError("the networks were built: the value was not refused before")

    monkeypatch.setattr(ganlab.gan, "build", build)


@pytest.mark.parametrize("overrides, says", [
    # model.g.depth=100000 spent 110 s building its layers on the meta device for the estimate; 10^9 never ended,
    # its memory growing 11 MB/s (what made `make fuzz` reach 22 GB)
    (["model.g.depth=100000"], "model.g.depth=100000 is out of range: it must be an integer in [1, 64]"),
    (["model.d.depth=65"], "model.d.depth=65 is out of range: it must be an integer in [1, 64]"),
    (["remedy=veegan", "model.encoder.depth=1000000000"], "model.encoder.depth=1000000000 is out of range"),
    # sizes past int64 in a tensor: a traceback from the pre-run build
    (["model.g.width=1099511627776"], "model.g.width=1099511627776 is out of range: it must be an integer in "
                                      "[1, 1000000]"),
    (["model=dcgan", "dataset=stacked_mnist", "model.d.width=4611686018427387904"],
     "model.d.width=4611686018427387904 is out of range"),
    (["model.latent_dim=4611686018427387904"], "model.latent_dim=4611686018427387904 is out of range"),
    (["dataset.modes=4611686018427387904"], "dataset.modes=4611686018427387904 is out of range"),
    (["dataset=grid", "dataset.side=4294967296"], "dataset.side=4294967296 is out of range"),
    (["remedy=madgan", "remedy.madgan.k=100000"], "remedy.madgan.k=100000 is out of range"),
    # D's forward repeats them per layer: 1,000 took 21 s in the estimate, 10^9 would take months
    (["remedy=spectral_norm", "remedy.spectral_norm.power_iterations=1000000000"],
     "remedy.spectral_norm.power_iterations=1000000000 is out of range: it must be an integer in [1, 10]"),
])
def test_a_size_beyond_its_cap_is_refused_before_anything_is_built(overrides, says, capsys, monkeypatch, tmp_path,
                                                                  nothing_built):
    code, out, err = train([*overrides, *TINY], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, overrides, says, tmp_path)


def test_at_the_caps_the_estimate_is_made():
    """The caps refuse nothing a real run uses, and every network at its cap is estimated (not refused)."""
    from ganlab.config import MAX_DEPTH

    s = memory.sizes(make_cfg(*TINY, "remedy=veegan", *(f"model.{n}.depth={MAX_DEPTH}" for n in ("g", "d", "encoder"))))
    assert s is not None and s.train_per_sample  # estimated: G, D and the encoder, each of MAX_DEPTH hidden layers
    assert s.parameters > 3 * (MAX_DEPTH - 1) * 128 * 128


def test_too_many_layers_in_all_are_refused_while_the_estimate_builds_them(capsys, monkeypatch, tmp_path):
    """Each setting within its cap, but 100 full generators of 64 layers: the estimate stops building on the meta
    device past memory.MAX_LAYERS layers (so it takes seconds for any config) and names what multiplies them."""
    from torch import nn

    import ganlab.train

    made = []
    monkeypatch.setattr(nn.Linear, "reset_parameters", lambda self: made.append(self))  # counted, not initialised
    monkeypatch.setattr(ganlab.train, "run", lambda *args, **kwargs: pytest.fail("the run started"))
    args = ["remedy=madgan", "remedy.madgan.share=none", "remedy.madgan.k=100", "model.g.depth=64"]
    code, out, err = train([*args, *TINY], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, args, "model.g.depth=64, model.d.depth=3, model.encoder.depth=3, "
                    "remedy.madgan.k=100: the networks would have more than 2,048 layers", tmp_path)
    assert "lower the depths or remedy.madgan.k" in err, err
    assert len(made) <= memory.MAX_LAYERS + 1, len(made)  # not the 6,500 layers asked for


def test_a_size_past_64_bits_in_any_setting_is_one_line(capsys, monkeypatch, tmp_path):
    """A setting without a cap of its own (minibatch discrimination's kernels) that makes a tensor's size overflow
    int64 on the meta device: one line naming it, not the pre-run build's traceback."""
    args = ["remedy=minibatch_disc", "remedy.minibatch_disc.kernels=4611686018427387904"]
    code, out, err = train([*args, *TINY], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, args, "remedy.minibatch_disc.kernels=4611686018427387904 makes tensors whose "
                    "sizes overflow 64-bit integers; lower remedy.minibatch_disc.kernels", tmp_path)


def test_the_estimate_counts_the_moving_average_of_g(monkeypatch):
    """ema.decay keeps a deep copy of G (ganlab/ema.py): one more copy of G's weights in the estimate, in the
    weights' line when that is what does not fit."""
    from conftest import built

    plain, averaged = memory.sizes(make_cfg(*TINY)), memory.sizes(make_cfg(*TINY, "ema.decay=0.999"))
    G = built(*TINY).G
    g_bytes = sum(t.numel() * t.element_size() for t in (*G.parameters(), *G.buffers()))
    assert plain.average_bytes == 0 and averaged.average_bytes == g_bytes > 0
    assert averaged.weight_bytes == plain.weight_bytes  # G, D and the extras: the average is counted apart
    # Memory for the trained copies and half of the average: refused with the average, and only with it.
    available = memory.TRAIN_COPIES * plain.weight_bytes + g_bytes // 2
    monkeypatch.setattr(memory, "available_bytes", lambda device: available)
    with pytest.raises(ConfigError, match="to train \\(weights, gradients, optimizer moments, the moving average of "
                                          "G\\)"):
        memory.check_fits(make_cfg(*TINY, "ema.decay=0.999"), torch.device("cpu"))
    try:
        memory.check_fits(make_cfg(*TINY), torch.device("cpu"))
    except ConfigError as exc:  # the batch may not fit in so little; the weights do
        assert "makes networks of" not in str(exc), exc


def test_replicas_beyond_memory_are_refused_before_the_run_starts(capsys, monkeypatch, tmp_path):
    """replicas=100000 was accepted, then spent minutes copying configs with an empty train.log."""
    def started(*args, **kwargs):
        raise AssertionError("the run started: replicas=100000 was not refused at start-up")

    monkeypatch.setattr(ganlab.replicas, "replica_configs", started)
    code, out, err = train(["replicas=100000", *TINY], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, "replicas=100000", "replicas=100000 trains 100,000 copies", tmp_path)
    assert ESTIMATE.search(err) and FREE.search(err) and re.search(r"lower replicas \(about [\d,]+ fit\)", err), err


def test_eval_samples_beyond_memory_are_refused_in_one_line(tmp_path, capsys):
    from ganlab.train import run

    run_dir = tmp_path / "run"
    run(make_cfg(*TINY), run_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(run_dir), "--samples", "10000000000"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ganlab: error: --samples 10000000000 needs about ") and "lower --samples" in err, err
    assert FREE.search(err) and "Traceback" not in err
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize("sweep, says", [
    ("seed=range(0,100000)", "this sweep has over 10,000 jobs (over 10,000 values of seed)"),
    ("seed=range(0,1000000000000)", "this sweep has over 10,000 jobs"),  # counted, never listed
    ("seed=range(0,5001) loss=gan,nsgan,wgan", "this sweep has 15,003 jobs (5,001 values of seed x 3 values of loss)"),
    ("seed=range(0,0)", "seed=range(0,0) sweeps over no value, so the sweep would run no job"),
])
def test_a_sweep_of_no_job_or_too_many_is_refused_before_any_is_composed(sweep, says, capsys, monkeypatch,
                                                                         tmp_path):
    """range(0,100000) composed and built all 100,000 jobs with no output; range(0,0) launched 0 jobs, exit 0,
    into an empty sweep directory."""
    def composed(*args, **kwargs):
        raise AssertionError("jobs were composed before the sweep's size was checked")

    monkeypatch.setattr(ganlab.sweep, "compose_jobs", composed)
    start = time.monotonic()
    code, out, err = train(["-m", *sweep.split(), *TINY], capsys, monkeypatch, tmp_path)
    assert time.monotonic() - start < 30
    assert_one_line(code, out, err, sweep, says, tmp_path)  # exit status 2, and no sweep directory
    assert "Launching" not in out


def test_a_long_pre_run_check_shows_its_progress(capsys, monkeypatch, tmp_path):
    """Lines beside Hydra's on stdout (no terminal here), so that stderr keeps a refusal's one line."""
    monkeypatch.setattr(ganlab.sweep, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(ganlab.sweep, "PROGRESS_EVERY", 0.0)
    (tmp_path / "a_file").write_text("in the way")  # refused after every job is checked: nothing runs
    code, out, err = train(["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path / 'a_file' / 'sweep'}"],
                           capsys, monkeypatch, tmp_path)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "cannot write to the output directory" in err, err
    for phase in ("composed", "validated", "checked"):
        assert f"pre-run check: 1 of 2 jobs {phase}" in out and f"pre-run check: 2 of 2 jobs {phase}" in out, out


def test_the_progress_waits_a_second_and_then_writes_a_line_every_few_seconds(monkeypatch, caplog):
    from types import SimpleNamespace

    clock = iter([0.0, 0.5, 1.2, 2.0, 6.3, 7.0])
    monkeypatch.setattr(ganlab.sweep, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(ganlab.sweep.sys.stderr, "isatty", lambda: False, raising=False)
    progress = ganlab.sweep.CheckProgress(5)  # starts at 0.0
    with caplog.at_level(logging.INFO, logger="hydra.ganlab"):
        for _ in range(5):
            progress("composed")  # at 0.5, 1.2, 2.0, 6.3, 7.0
    assert [r.getMessage() for r in caplog.records] == [
        "pre-run check: 2 of 5 jobs composed (1 s)",   # the first after a second
        "pre-run check: 4 of 5 jobs composed (6 s)",   # then every PROGRESS_EVERY seconds
        "pre-run check: 5 of 5 jobs composed (7 s)"]   # and the phase's end


# ---- no false refusals: what the package ships fits in a few GB ----------------------------------------------

IMAGES = [[f"model={name}", "dataset=fashion_mnist", "dataset.pad_to_32=true"] for name in options("model")]
TOY = [[f"experiment={name}"] for name in options("experiment") if name != "stacked_setup"] + [
    ["dataset=grid"], ["remedy=[pacgan,spectral_norm]"], ["loss=wgan_gp"]]
# replicas=8 as docs/sweeps-and-resume.md runs it (2-D runs: the images' vectorised steps are not shipped)
SHIPPED = [[*o, "replicas=8"] for o in TOY] + TOY + IMAGES + [["experiment=stacked_setup", "dataset.n=100"]]


@pytest.mark.parametrize("overrides", SHIPPED, ids=" ".join)
def test_the_shipped_configs_fit_in_4_gb(overrides, image_root, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * 10**9)
    data = [f"dataset.root={image_root}"] if overrides in IMAGES or "experiment=stacked_setup" in overrides else []
    cfg = make_cfg(*overrides, *data)
    assert memory.sizes(cfg) is not None, overrides  # the estimate ran (on the meta device)
    memory.check_fits(cfg, memory.torch.device("cpu"))


def test_the_estimate_counts_what_grows_with_each_setting(monkeypatch):
    """Each setting moves its own part: the weights with the latent size, the evaluation with the modes."""
    base = memory.sizes(make_cfg(*TINY))
    wide = memory.sizes(make_cfg(*TINY, "model.latent_dim=1000"))
    assert wide.parameters - base.parameters == (1000 - 2) * 128  # G's first layer: one row of 128 per input
    assert wide.weight_bytes - base.weight_bytes == 4 * (1000 - 2) * 128
    modes = memory.sizes(make_cfg(*TINY, "dataset.modes=1000"))
    assert (base.n_modes, modes.n_modes) == (8, 1000) and modes.parameters == base.parameters
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10**9)
    memory.check_fits(make_cfg(*TINY, "dataset.modes=100000"), memory.torch.device("cpu"))  # 160 MB: fits
    with pytest.raises(ConfigError, match=r"dataset.modes=1000000 makes 1,000,000 modes"):
        memory.check_fits(make_cfg(*TINY, "dataset.modes=1000000"), memory.torch.device("cpu"))  # 1.7 GB
