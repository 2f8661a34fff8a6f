"""Extending ganlab: a new remedy is one Python file (a Remedy subclass) and one YAML naming it, in a
config folder of one's own. `ganlab train --config-dir DIR` (Hydra's option; ganlab composes its
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


@pytest.fixture
def extra_configs(tmp_path, monkeypatch):
    """A copy of the package's configs with one more remedy, and that remedy's module on sys.path."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{REMEDY_MODULE}.py").write_text(textwrap.dedent(REMEDY_PY))
    monkeypatch.syspath_prepend(str(code))
    configs = tmp_path / "my_configs"
    shutil.copytree(CONFIG_DIR, configs, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (configs / "remedy" / "shrink.yaml").write_text(REMEDY_YAML)
    return configs


def test_a_remedy_in_an_extra_config_dir_is_listed_and_trains(extra_configs, tmp_path, monkeypatch, capsys):
    # listed: the package's remedies and the new one; the package itself offers it nowhere
    assert "shrink" not in options("remedy")
    assert options("remedy", config_dir=extra_configs) == sorted([*options("remedy"), "shrink"])
    for group in (*GROUPS, "experiment", "debug"):
        if group != "remedy":
            assert options(group, config_dir=extra_configs) == options(group), group

    # trains: `ganlab train --config-dir DIR remedy=shrink`, in-process, a tiny run
    monkeypatch.chdir(tmp_path)
    for handler in logging.getLogger().handlers[:]:  # an earlier in-process job's handlers write to closed streams
        logging.getLogger().removeHandler(handler)
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

    # nothing else had to change: the copy differs from the package's configs by the one YAML
    assert differences(filecmp.dircmp(CONFIG_DIR, extra_configs, ignore=["__pycache__", "__init__.py"])) == [
        "only in the copy: remedy/shrink.yaml"]


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
    assert err.startswith("ganlab: error: unknown option remedy=shrink; choose one of: acgan, cgan_projection, drs,")


def test_a_config_dir_that_does_not_exist_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config-dir", str(tmp_path / "nowhere"), *TINY])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == f"ganlab: error: --config-dir {tmp_path / 'nowhere'}: no such directory"
