"""Extending ganlab: a new remedy or dataset is one Python file (a Remedy subclass; a class with what its
evaluator reads, ganlab.data.protocol) and one YAML naming it, in a config folder of one's own. `ganlab train --config-dir DIR` (Hydra's option; ganlab composes its
start-up checks with the same folder) adds DIR's options to the package's, so the new remedy trains,
is listed, and nothing in the package or in any list had to change."""

import filecmp
import json
import logging
import shutil
import textwrap

import pytest
from conftest import TINY, run_dirs

from ganlab.cli import main
from ganlab.config import CONFIG_DIR, GROUPS, options

REMEDY_MODULE = "ganlab_throwaway_remedy"
REMEDY_PY = '''
"""A throw-away remedy: G's loss plus weight * E||G(z)||^2, and an evaluation metric counting G steps."""

from ganlab.remedies.base import Remedy


class Shrink(Remedy):
    def __init__(self, weight: float = 0.01):
        self.weight = weight
        self.g_steps = 0

    def g_loss(self, G, D, loss, real, z):
        self.g_steps += 1
        fake = G(z)
        return loss.g_loss(D(fake)) + self.weight * fake.pow(2).sum(1).mean()

    def eval_metrics(self, G, D, data, z, fake, real):
        return {"shrink_g_steps": float(self.g_steps)}
'''
REMEDY_YAML = f'''# @package remedy.shrink
# A throw-away remedy (tests/test_extending.py): G's loss plus weight * E||G(z)||^2.
_target_: {REMEDY_MODULE}.Shrink
weight: 0.05
'''


DATA_MODULE = "ganlab_throwaway_data"
DATA_PY = '''
"""Throw-away datasets of one's own, one per evaluator kind (README, How to add a dataset)."""

import torch


class Line:
    """2-D: `modes` Gaussians on the x axis, `spacing` apart (ganlab.data.protocol.ToyData)."""

    evaluator = "toy"

    def __init__(self, modes: int = 3, spacing: float = 2.0, std: float = 0.05, device="cpu"):
        self.device, self.shape, self.n_modes, self.std = torch.device(device), (2,), modes, std
        xs = spacing * (torch.arange(modes, dtype=torch.float32) - (modes - 1) / 2)
        self.centers = torch.stack([xs, torch.zeros(modes)], dim=1).to(self.device)

    def sample(self, n, generator=None):
        idx = torch.randint(0, self.n_modes, (n,), device=self.device, generator=generator)
        return self.centers[idx] + self.std * torch.randn(n, 2, device=self.device, generator=generator)

    def gaussian_fit(self, n, generator=None):
        spread = (self.centers.var(dim=0, unbiased=False) + self.std**2).sqrt()
        return self.centers.mean(dim=0) + spread * torch.randn(n, 2, device=self.device, generator=generator)

    def plot_limits(self):
        extent = float(self.centers.abs().max()) + 6 * self.std
        return -extent, extent


class Unplottable(Line):
    plot_limits = None  # forgot the pictures' axes


class Bars:
    """Images: one bright horizontal bar of `modes` possible rows on a dark 1x28x28 field, a little noise
    (ganlab.data.protocol.ImageData; no mode classifier knows bars, so no modes are counted)."""

    evaluator = "image"
    name, split, root, stacked, mode_classifier, natural_images = "bars", "train", None, False, None, False

    def __init__(self, modes: int = 4, device="cpu"):
        self.device, self.shape, self.n_modes = torch.device(device), (1, 28, 28), modes

    def sample(self, n, generator=None):
        rows = torch.randint(0, self.n_modes, (n,), device=self.device, generator=generator) * (28 // self.n_modes)
        on = (torch.arange(28, device=self.device)[None, :] - rows[:, None]).abs() < 3  # (n, 28): the bar's rows
        images = torch.where(on[:, None, :, None], 1.0, -1.0).expand(n, 1, 28, 28)
        return (images + 0.1 * torch.randn(n, 1, 28, 28, device=self.device, generator=generator)).clamp(-1, 1)

    def sample_unique(self, n, generator=None):
        return self.sample(n, generator)

    def held_out_sample(self, n, generator=None):
        return self.sample(n, generator), self.split

    def identity(self):
        return {"dataset": self.name, "modes": self.n_modes}
'''
DATA_YAMLS = {
    "line": f"# Three Gaussians on a line (tests/test_extending.py).\n_target_: {DATA_MODULE}.Line\nmodes: 3\n",
    "unplottable": f"# A 2-D dataset without plot_limits.\n_target_: {DATA_MODULE}.Unplottable\n",
    "bars": f"# Horizontal bars, 1x28x28 (tests/test_extending.py).\n_target_: {DATA_MODULE}.Bars\nmodes: 4\n",
}


@pytest.fixture
def extra_configs(tmp_path, monkeypatch):
    """A copy of the package's configs with one more remedy and three more datasets, and their modules
    on sys.path."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{REMEDY_MODULE}.py").write_text(textwrap.dedent(REMEDY_PY))
    (code / f"{DATA_MODULE}.py").write_text(textwrap.dedent(DATA_PY))
    monkeypatch.syspath_prepend(str(code))
    configs = tmp_path / "my_configs"
    shutil.copytree(CONFIG_DIR, configs, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (configs / "remedy" / "shrink.yaml").write_text(REMEDY_YAML)
    for name, text in DATA_YAMLS.items():
        (configs / "dataset" / f"{name}.yaml").write_text(text)
    return configs


def in_process(tmp_path, monkeypatch):
    """`main` run in tmp_path, without an earlier in-process job's logging handlers (closed streams)."""
    monkeypatch.chdir(tmp_path)
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)


def test_a_remedy_in_an_extra_config_dir_is_listed_and_trains(extra_configs, tmp_path, monkeypatch, capsys):
    # listed: the package's remedies and the new one; the package itself offers it nowhere
    assert "shrink" not in options("remedy")
    assert options("remedy", config_dir=extra_configs) == sorted([*options("remedy"), "shrink"])
    for group in (*GROUPS, "experiment", "debug"):
        if group not in ("remedy", "dataset"):
            assert options(group, config_dir=extra_configs) == options(group), group

    # trains: `ganlab train --config-dir DIR remedy=shrink`, in-process, a tiny run
    in_process(tmp_path, monkeypatch)
    main(["train", "--config-dir", str(extra_configs), "remedy=shrink", *TINY])
    (run_dir,) = run_dirs(tmp_path / "outputs")
    assert run_dir.name.endswith("_ring_nsgan_shrink_s0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["labels"]["remedy"] == "shrink"
    assert summary["config"]["remedy"] == {"shrink": {"_target_": f"{REMEDY_MODULE}.Shrink", "weight": 0.05}}
    assert summary["metrics"]["shrink_g_steps"] == summary["step"]  # its hook ran at every G step

    # its options are checked against its signature, as a built-in remedy's are
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config-dir", str(extra_configs), "remedy=shrink", "remedy.shrink.weight=abc", *TINY])
    assert exited.value.code == 2
    assert "remedy.shrink.weight='abc': expected a number" in capsys.readouterr().err

    # nothing else had to change: the copy differs from the package's configs by the new YAMLs
    assert differences(filecmp.dircmp(CONFIG_DIR, extra_configs, ignore=["__pycache__", "__init__.py"])) == [
        *(f"only in the copy: dataset/{name}.yaml" for name in sorted(DATA_YAMLS)), "only in the copy: remedy/shrink.yaml"]


def test_a_2d_dataset_in_an_extra_config_dir_is_listed_measured_and_checked(extra_configs, tmp_path, monkeypatch,
                                                                            capsys):
    assert options("dataset", config_dir=extra_configs) == sorted([*options("dataset"), *DATA_YAMLS])
    in_process(tmp_path, monkeypatch)
    main(["train", "--config-dir", str(extra_configs), "dataset=line", *TINY])
    (run_dir,) = run_dirs(tmp_path / "outputs")
    assert run_dir.name.endswith("_line_nsgan_none_s0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_modes"] == 3
    # the 2-D protocol measured it against its own centres, with the reference rows beside it
    assert 0 <= summary["metrics"]["modes_captured"] <= 3 and len(summary["mode_counts"]) == 3
    assert summary["references"]["data"]["modes_captured"] == 3  # its own samples cover its modes
    assert summary["references"]["gaussian"]["wasserstein1"] > summary["references"]["data"]["wasserstein1"]
    assert (run_dir / "samples.npz").is_file()

    # a member the toy evaluator reads, missing: one line at start-up, before anything is written
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config-dir", str(extra_configs), "dataset=unplottable", *TINY])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganlab: error: dataset: Unplottable lacks `plot_limits`, which the 'toy' evaluator reads")
    assert "\n" not in err and len(run_dirs(tmp_path / "outputs")) == 1


def test_an_image_dataset_in_an_extra_config_dir_trains_and_is_measured(extra_configs, tmp_path, monkeypatch):
    from conftest import TINY_DCGAN

    in_process(tmp_path, monkeypatch)
    main(["train", "--config-dir", str(extra_configs), "dataset=bars", "debug=tiny_images", *TINY_DCGAN])
    (run_dir,) = run_dirs(tmp_path / "outputs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_modes"] == 4
    # the image protocol, by what Bars offers: no mode classifier, so pixels' sliced W1 and the D gap, no counts
    metrics = summary["metrics"]
    assert metrics["swd_pixels"] > 0 and "critic_gap" in metrics and "modes_captured" not in metrics
    assert summary["references"]["data"]["swd_pixels"] < summary["references"]["untrained"]["swd_pixels"]


def differences(compared: filecmp.dircmp, where: str = "") -> list[str]:
    found = [f"only in the package: {where}{n}" for n in compared.left_only]
    found += [f"only in the copy: {where}{n}" for n in compared.right_only]
    found += [f"differs: {where}{n}" for n in compared.diff_files]
    for name, sub in sorted(compared.subdirs.items()):
        found += differences(sub, f"{where}{name}/")
    return found


def test_without_the_config_dir_the_remedy_is_an_unknown_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "remedy=shrink", *TINY])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganlab: error: unknown option remedy=shrink; choose one of: acgan, cgan_projection, diffaugment, drs,")


def test_a_config_dir_that_does_not_exist_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config-dir", str(tmp_path / "nowhere"), *TINY])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == f"ganlab: error: --config-dir {tmp_path / 'nowhere'}: no such directory"
