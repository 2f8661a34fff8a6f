"""Each schema key's role (ganlab/config.py Role) is declared once; the resume checks, resume=auto, the
report's grouping and the replicas' records derive their key lists from it."""

from dataclasses import dataclass, field

import pytest

from ganlab import checkpoint, report, train
from ganlab.config import (
    REPLICATE_ROLES,
    RESUMABLE_ROLES,
    Role,
    TrainConfig,
    bounded,
    key,
    key_roles,
    keys_with,
    role_of,
)


def test_every_schema_key_has_a_role():
    roles = key_roles()
    assert roles["seed"] is Role.seed and roles["steps"] is Role.length and roles["remedy"] is Role.experiment
    assert roles["eval.every"] is Role.schedule and roles["log.every"] is Role.cadence
    assert roles["cpu_threads"] is Role.execution and roles["device"] is Role.device
    assert roles["resume"] is Role.command and roles["speed.amp"] is Role.experiment
    # every leaf of the schema is there: sections are walked, nothing is silently left out
    assert {"metrics.fid.weights", "metrics.kid_subsets", "eval.background", "checkpoint.every"} <= set(roles)


def test_a_new_key_without_a_role_fails():
    @dataclass
    class Section:
        every: int = bounded(5, 1, role=Role.cadence)
        forgotten: int = 3  # a key added without saying what it is

    @dataclass
    class Schema(TrainConfig):
        extra: Section = field(default_factory=Section)

    with pytest.raises(TypeError, match=r"schema key extra\.forgotten has no role"):
        key_roles(Schema)

    @dataclass
    class Fine(TrainConfig):
        extra: int = key(1, Role.execution)

    assert key_roles(Fine)["extra"] is Role.execution


def test_the_key_lists_come_from_the_roles():
    assert checkpoint.RESUMABLE_KEYS == keys_with(*RESUMABLE_ROLES)
    assert train.AUTO_RESUME_IGNORED == report.BOOKKEEPING_KEYS == keys_with(*REPLICATE_ROLES)
    assert report.SEED_KEY == "seed"
    # what made the old hand lists disagree: cpu_threads was bookkeeping for the report but a config change
    # for a resume; now both treat it as how the work is spread
    assert "cpu_threads" in report.BOOKKEEPING_KEYS and "cpu_threads" in checkpoint.RESUMABLE_KEYS
    # the device pools in the report but a resume stays on it (its RNG streams live there)
    assert "device" in report.BOOKKEEPING_KEYS and "device" not in checkpoint.RESUMABLE_KEYS
    # steps and eval.every: a resume may change them, the report keeps them apart
    assert {"steps", "eval.every"} <= set(checkpoint.RESUMABLE_KEYS)
    assert not {"steps", "eval.every", "seed"} & set(report.BOOKKEEPING_KEYS)


def test_resume_check_follows_the_roles():
    saved = {"seed": 0, "steps": 100, "cpu_threads": 1, "device": "cpu", "eval": {"every": 50, "samples": 10},
             "remedy": {"pacgan": {"pack": 2}}}
    changed = {**saved, "steps": 200, "cpu_threads": 2, "eval": {"every": 25, "samples": 10}}
    assert checkpoint.differing_keys(saved, changed) == []
    assert checkpoint.differing_keys(saved, {**saved, "device": "cuda"}) == ["device"]
    assert checkpoint.differing_keys(saved, {**saved, "remedy": {"pacgan": {"pack": 3}}}) == ["remedy.pacgan.pack"]


def test_a_run_from_before_fused_adam_resumes_only_on_torchs_default_adam():
    """optim.*.fused came with fused Adam as the default (config.ADDED_KEYS): a checkpoint whose config has no
    such key trained on torch's default Adam, so it matches fused=null, and the new default is named as a change."""
    from ganlab.config import compose_config
    from omegaconf import OmegaConf

    current = OmegaConf.to_container(compose_config([]), resolve=True)
    saved = {**current, "optim": {**current["optim"], "g": {k: v for k, v in current["optim"]["g"].items() if k != "fused"},
                                  "d": {k: v for k, v in current["optim"]["d"].items() if k != "fused"}}}
    assert checkpoint.differing_keys(saved, current) == ["optim.d.fused", "optim.g.fused"]
    unfused = OmegaConf.to_container(compose_config(["optim.g.fused=null", "optim.d.fused=null"]), resolve=True)
    assert checkpoint.differing_keys(saved, unfused) == []
    # the refusal says what to repeat
    assert checkpoint.shown_differences(saved, current, ["optim.d.fused", "optim.g.fused"]) == \
        "optim.d.fused (null in the checkpoint, true now), optim.g.fused (null in the checkpoint, true now)"


def test_role_of_dotted_keys():
    assert role_of("remedy.unrolled.k") is Role.experiment  # a group's options share its role
    assert role_of("eval.every") is Role.schedule
    assert role_of("a.key.no.schema.has") is Role.experiment  # unknown (older or newer ganlab): never pooled


def test_the_docs_table_gives_every_key_its_role():
    """docs/remedies.md's table of the top-level keys: every schema key (groups aside), with its role."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "remedies.md").read_text()
    table = text[text.index("| key | default | role | meaning |"):]
    table = table[:table.index("\n\n")].splitlines()[2:]
    listed = {}
    for row in table:
        cells = row.split(" | ")
        for k in re.findall(r"`([^`]+)`", cells[0]):
            listed[k] = cells[2]
    groups = {"dataset", "model", "optim", "loss", "remedy"}
    assert {k: r.value for k, r in key_roles().items() if k not in groups} == listed
