"""`ganlab sample RUN_DIR --n N --out FILE|DIR`: samples drawn from a run's checkpoint, rebuilt as `ganlab eval RUN_DIR`
rebuilds it (the remedy's own sampler included), written as a .npz/.npy or a folder of PNG files; what it writes,
`ganlab eval --samples` reads back."""

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, TINY_DCGAN, make_cfg
from test_image_training import IMAGE_TINY, classifier_cache  # noqa: F401 - a fixture

from ganlab.cli import main
from ganlab.evaluation import eval_seed
from ganlab.train import run


# The shortest image run: 2 steps, one evaluation, a latent of 8 (dG/dz's products are one per latent dimension).
SHORT_IMAGE_RUN = ["steps=2", "eval.every=2", "model.latent_dim=8"]


def _ganlab(capsys, *args):
    """`ganlab ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        main([*map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: "), err
    return lines[0]


@pytest.mark.parametrize("remedy", ["none", "drs"])
def test_the_samples_are_those_the_runs_evaluation_draws(tmp_path, capsys, remedy):
    """Seeded as the final evaluation's RNG, `ganlab sample` draws exactly the samples that evaluation scored
    (samples.npz): the same networks, modes and sampler (DRS: D's calibration and its rejection)."""
    summary = run(make_cfg(*TINY, f"remedy={remedy}"), tmp_path / "run")
    seed = eval_seed(summary["seed"], summary["step"])
    code, out, err = _ganlab(capsys, "sample", tmp_path / "run", "--n", 200, "--out", tmp_path / "a.npz",
                             "--seed", seed)
    assert code == 0, err
    drawn = np.load(tmp_path / "a.npz")
    assert drawn.files == ["points"] and drawn["points"].dtype == np.float32
    assert np.array_equal(drawn["points"], np.load(tmp_path / "run" / "samples.npz")["x"])
    assert f"200 samples (points (200, 2)) of step 20 from G, seed {seed}; wrote {tmp_path / 'a.npz'}" in out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 10-step run on the ring, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    run(make_cfg(*TINY, "steps=10"), run_dir)
    return run_dir


def test_the_seed_decides_the_samples_and_an_existing_file_needs_force(toy_run, tmp_path, capsys):
    first, second, other = (tmp_path / f"{name}.npy" for name in ("first", "second", "other"))
    for path, seed in ((first, 0), (second, 0), (other, 1)):
        code, _, err = _ganlab(capsys, "sample", toy_run, "--n", 50, "--out", path, "--seed", seed)
        assert code == 0, err
    assert np.load(first).shape == (50, 2)  # a .npy: the bare array
    assert np.array_equal(np.load(first), np.load(second)) and not np.array_equal(np.load(first), np.load(other))

    before = first.read_bytes()
    code, _, err = _ganlab(capsys, "sample", toy_run, "--n", 10, "--out", first)
    assert f"--out {first} exists; add --force to replace it" in _one_error_line(code, err)
    assert first.read_bytes() == before  # untouched
    code, _, err = _ganlab(capsys, "sample", toy_run, "--n", 10, "--out", first, "--force")
    assert code == 0, err
    assert np.load(first).shape == (10, 2)


@pytest.mark.parametrize("args, message", [
    (["{run}", "--n", "0", "--out", "{tmp}/a.npz"], "--n must be >= 1, got 0"),
    (["{run}", "--n", "5", "--out", "{tmp}/folder"], "points go to a .npz or .npy file (PNG folders are for images)"),
    (["{tmp}/nowhere", "--n", "5", "--out", "{tmp}/a.npz"], "no run directory at {tmp}/nowhere"),
    (["{tmp}", "--n", "5", "--out", "{tmp}/a.npz"], "cannot read the run's config from {tmp}/summary.json"),
    (["{run}", "--out", "{tmp}/a.npz"], "the following arguments are required: --n"),
    (["{run}", "--n", "5", "--out", "{run}/summary.json/a.npz"],
     "--out {run}/summary.json/a.npz: {run}/summary.json is a file, not a folder; choose another path"),
    (["{run}", "--n", "5", "--out", "{tmp}/a.npz", "--device", "cuda:99"], "--device cuda:99 but "),
])
def test_a_bad_sample_command_is_one_line_and_writes_nothing(toy_run, tmp_path, capsys, args, message):
    before = sorted(p.name for p in toy_run.iterdir())
    code, _, err = _ganlab(capsys, "sample", *(a.format(run=toy_run, tmp=tmp_path) for a in args))
    assert message.format(tmp=tmp_path, run=toy_run) in _one_error_line(code, err)
    assert not list(tmp_path.iterdir()) and sorted(p.name for p in toy_run.iterdir()) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here (Linux)")
def test_an_output_that_cannot_be_made_is_one_line(toy_run, tmp_path, capsys):
    """A folder the system will not create (/proc takes none, whoever asks) is one line naming it, exit status 1 (a
    failed write), not an OSError's traceback."""
    code, _, err = _ganlab(capsys, "sample", toy_run, "--n", 5, "--out", "/proc/ganlab/a.npz")
    assert code == 1 and err.strip() == ("ganlab: error: cannot write --out /proc/ganlab/a.npz: No such file or "
                                         "directory; choose another path"), err


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """A finished 10-step run on the ring with G's moving average (ema.decay=0.5)."""
    run_dir = tmp_path_factory.mktemp("averaged") / "run"
    run(make_cfg(*TINY, "steps=10", "ema.decay=0.5"), run_dir)
    return run_dir


def test_a_run_with_an_average_is_sampled_from_the_average_unless_raw(averaged_run, tmp_path, capsys):
    """The checkpoint's G_ema by default (the toy evaluation's draw: G on the seeded codes), the trained G with
    --raw; the line says which."""
    import torch

    from ganlab.evaluation.saved import load_run, run_config

    outs = {which: tmp_path / f"{which}.npy" for which in ("default", "raw")}
    code, out, err = _ganlab(capsys, "sample", averaged_run, "--n", 50, "--out", outs["default"], "--seed", 4)
    assert code == 0, err
    assert f"50 samples (points (50, 2)) of step 10 from G's moving average (ema.decay=0.5; --raw: the trained G), " \
           f"seed 4; wrote {outs['default']}" in out
    code, out, err = _ganlab(capsys, "sample", averaged_run, "--n", 50, "--out", outs["raw"], "--seed", 4, "--raw")
    assert code == 0, err
    assert f"of step 10 from G, seed 4; wrote {outs['raw']}" in out

    cfg, device = run_config(averaged_run, "cpu")
    exp, _, average = load_run(averaged_run, cfg, device)
    z = torch.randn(50, exp.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for which, G in (("default", average.eval()), ("raw", exp.G.eval())):
            assert np.array_equal(np.load(outs[which]), G(z).numpy()), which
    assert not np.array_equal(np.load(outs["default"]), np.load(outs["raw"]))


def test_images_go_to_png_files_that_eval_reads_back(image_root, classifier_cache, tmp_path, capsys):
    """An image run's samples as a folder of PNG files and as a .npz of uint8: the same images (a PNG holds the
    uint8 levels exactly), which `ganlab eval --samples DIR` scores like the run's own."""
    from ganlab.data.pngs import png_files, read_png_folder

    data = ["dataset=fashion_mnist", f"dataset.root={image_root}"]
    run(make_cfg(*IMAGE_TINY, *TINY_DCGAN, *data, *SHORT_IMAGE_RUN), tmp_path / "run")
    pngs, npz = tmp_path / "pngs", tmp_path / "images.npz"
    for out in (pngs, npz):
        code, _, err = _ganlab(capsys, "sample", tmp_path / "run", "--n", 12, "--out", out, "--seed", 3)
        assert code == 0, err
    files = png_files(pngs)
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(12)]
    images = np.load(npz)["images"]
    assert images.dtype == np.uint8 and images.shape == (12, 1, 28, 28)
    assert np.array_equal(read_png_folder(pngs, (1, 28, 28)), images)

    # --force replaces the folder's PNG files (12 -> 7), and leaves its other files alone
    (pngs / "notes.txt").write_text("mine")
    code, _, err = _ganlab(capsys, "sample", tmp_path / "run", "--n", 7, "--out", pngs)
    assert "exists and is not empty; add --force" in _one_error_line(code, err)
    code, _, err = _ganlab(capsys, "sample", tmp_path / "run", "--n", 7, "--out", pngs, "--force")
    assert code == 0, err
    assert len(png_files(pngs)) == 7 and (pngs / "notes.txt").read_text() == "mine"

    code, out, err = _ganlab(capsys, "eval", "--samples", pngs, *data)
    assert code == 0, err
    assert f"7 samples of {pngs} against fashion_mnist" in out

    # The run evaluated again from 5 samples: density/coverage's 5 nearest neighbours need 6 (a traceback from
    # inside the PRDC otherwise), refused before anything is drawn
    code, _, err = _ganlab(capsys, "eval", tmp_path / "run", "--samples", 5)
    assert "--samples must be >= 6 for an image run, got 5" in _one_error_line(code, err)
    assert not (tmp_path / "run" / "eval.json").exists()
