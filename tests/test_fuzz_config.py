"""Fuzzing sizes and rates (issue 28, item 9): random values for the config's sizes and rates (steps, batch size,
widths, depths, latent size, learning rates from tiny to huge, negative, nan and inf, evaluation sample counts,
replicas, ...), typed as a user types them, through `ganlab train` in this process.

Each command either passes every pre-run check with the values as typed (and then the config keeps the contract
docs/cli.md states: integers in their ranges, numbers finite and within float32, ...) or ends with one
`ganlab: error:` line naming a key it was given, exit status 2, no traceback and nothing written. A second
property trains the accepted small configs for real: a run that starts completes (or diverges), or is refused
in one line; it never crashes.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf
from test_fuzz_files import examples, scratch

import ganlab.train
from ganlab.cli import main
from ganlab.config import _RANGES, FLOAT32_MAX, FLOAT32_TINY, MIN_LR, OPTION_RANGES

# The integer keys with a range (config._RANGES), and the group options' own sizes.
GROUP_INTS = ["model.g.width", "model.d.width", "model.g.depth", "model.d.depth", "model.encoder.width",
              "dataset.modes", "loss.n_critic"]
INT_KEYS = sorted(_RANGES) + GROUP_INTS
FLOAT_KEYS = ["optim.g.lr", "optim.d.lr", "dataset.std", "dataset.radius"]
KEYS = INT_KEYS + FLOAT_KEYS + ["optim.g.betas", "optim.d.betas"]


def written_float(x: float) -> str:
    """A float as a user types it: 1e-50, 0.001, nan, inf, -inf."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


integers = st.one_of(st.integers(-3, 12), st.integers(-2**70, 2**70), st.sampled_from(
    [0, 1, 2, 1023, 1024, 1025, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 10**9, 10**9 + 1, 10**12, 10**20]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(min_value=-1e-30, max_value=1e-30), st.sampled_from(
                       [0.0, -0.0, 5e-324, 1e-50, 1e-45, 1.17e-38, 1.2e-38, 1e-8, 1e-3, 0.5, 1.0, 3.4e38, 3.5e38,
                        1e39, 1e300, -1e-3]))
values = st.one_of(
    integers.map(str), floats.map(written_float),
    st.sampled_from(["abc", "''", "null", "true", "[]", "[1,2]", "[0.5,0.999]", "[0.5]", "[nan,0.9]", "1e3", "2.5",
                     "0x10", "1_000", "-0", "+5", "[0.5,1e39]", "{}"]),
)
overrides = st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3, unique_by=lambda kv: kv[0])


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    # An earlier in-process run's logging config writes to a closed capture stream.
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused_in_one_line(code: int, out: str, err: str, named: list[str]) -> str:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("ganlab: error: "), err
    assert "Traceback" not in out + err, out + err
    assert any(names(key, lines[0]) for key in named), (named, lines[0])  # the line names what to fix
    return lines[0]


def names(key: str, line: str) -> bool:
    """Whether `line` names `key`: spelled out (model.g.width), or as its parent and its own name
    ("model.g: depth and width must be >= 1, got ... width=0")."""
    parent, _, leaf = key.rpartition(".")
    return key in line or (bool(parent) and parent in line and leaf in line)


def number(text: str):
    """The number a plain numeric text is (Python's reading), or None."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def assert_keeps_the_contract(cfg: DictConfig, given: dict[str, str]) -> None:
    """What an accepted config must hold (docs/cli.md's contract), checked without ganlab's validation code."""
    absent = object()
    for key, (low, high) in [*_RANGES.items(), *OPTION_RANGES.items()]:
        value = OmegaConf.select(cfg, key, default=absent)
        if value is absent and key in OPTION_RANGES:  # a key only some options have
            continue
        assert type(value) is int and value >= low and (high is None or value <= high), (key, value)
    assert cfg.eval.w_samples <= cfg.eval.samples

    def walk(node, path):
        if isinstance(node, (DictConfig, ListConfig)):
            items = node.items() if isinstance(node, DictConfig) else enumerate(node)
            for k, v in items:
                walk(v, f"{path}.{k}")
        elif isinstance(node, float):
            assert math.isfinite(node) and abs(node) <= FLOAT32_MAX, (path, node)
            assert not 0 < abs(node) < FLOAT32_TINY, (path, node)  # 0 in the networks' float32
    walk(cfg, "")
    for net in ("g", "d"):
        assert cfg.optim[net].lr >= MIN_LR  # a smaller rate moves no weight in float32
        betas = cfg.optim[net].get("betas")
        assert betas is None and "betas" not in cfg.optim[net] or len(betas) == 2 and all(0 <= b < 1 for b in betas)
    for key, text in given.items():  # the value as typed, never another one silently
        expected = number(text)
        if expected is not None:
            got = OmegaConf.select(cfg, key)
            assert got == expected and type(got) is type(expected) or (type(got) is float and got == expected), \
                (key, text, got)


@pytest.fixture
def no_training(monkeypatch):
    """The run itself replaced: the pre-run checks are what is fuzzed here. Records the configs that got through."""
    started = []
    monkeypatch.setattr(ganlab.train, "run", lambda cfg, *args, **kwargs: started.append(cfg) or {})
    return started


# 1,000 under `make fuzz`, its count before it was cut to 150: the worker's memory "grew with each command" to 22 GB,
# but no example leaks (RSS measured per example: flat). One example did it: a lone large depth (model.g.depth=2**32)
# built its layers on the meta device for the memory estimate for hours, at 11 MB/s; config.MAX_DEPTH refuses it at
# once. 1,000 examples: 14 to 26 min with the small runs beside them (-n 2, a shared 2-core machine), 355 to 398 MB.
@examples(10, 1000, fixtures=True)
@given(overrides)
@example([("optim.d.lr", "1e-50")])
@example([("optim.d.lr", "1e-30")])  # normal in float32, but below config.MIN_LR: the weights would never move
@example([("batch_size", "100000000")])
@example([("eval.samples", "5")])
@example([("model.g.width", "0")])
@example([("model.g.depth", "4294967296")])  # refused at once (config.MAX_DEPTH), not built for hours
@example([("model.latent_dim", "4611686018427387904")])  # past int64 in G's first layer: was a traceback
@example([("optim.g.betas", "null")])  # reached Adam as None: a line naming optim.g, not its betas
@example([("optim.d.betas", "[1,2]")])  # torch's "Invalid beta parameter at index 0", naming no betas
def test_sizes_and_rates_pass_the_checks_as_typed_or_are_refused_in_one_line(tmp_path_factory, capsys, no_training,
                                                                               pairs):
    given = dict(pairs)
    with scratch(tmp_path_factory) as base:
        run_dir = base / "run"
        no_training.clear()
        code, out, err = run_cli(["train", "debug=tiny", *(f"{k}={v}" for k, v in pairs),
                                  f"hydra.run.dir={run_dir}"], capsys)
        if code == 0:
            assert len(no_training) == 1, err
            assert_keeps_the_contract(no_training[0], given)
            event("accepted")
        else:
            event("refused")
            assert_refused_in_one_line(code, out, err, list(given))
            assert not run_dir.exists() and no_training == []  # nothing written, nothing started


# --- accepted small configs train ------------------------------------------------------------------

REMEDIES = ["none", "none", "pacgan", "minibatch_std", "minibatch_disc", "madgan", "spectral_norm",
            "label_smoothing", "instance_noise", "feature_matching", "drs"]
LOSSES = ["nsgan", "nsgan", "gan", "wgan_gp", "hinge", "lsgan", "wgan"]


@st.composite
def small_runs(draw):
    """A run of a few steps at the edges of its sizes: batches of 1, widths of 1, 2 evaluation samples, ..."""
    samples = draw(st.integers(2, 12))
    words = {
        "dataset": draw(st.sampled_from(["ring", "grid"])),
        "loss": draw(st.sampled_from(LOSSES)),
        "remedy": draw(st.sampled_from(REMEDIES)),
        "steps": draw(st.integers(1, 3)),
        "batch_size": draw(st.integers(1, 6)),
        "model.latent_dim": draw(st.integers(1, 3)),
        "model.g.width": draw(st.integers(1, 4)),
        "model.d.width": draw(st.integers(1, 4)),
        "model.g.depth": draw(st.integers(1, 3)),
        "model.d.depth": draw(st.integers(1, 3)),
        "eval.samples": samples,
        "eval.w_samples": draw(st.integers(2, samples)),
        "eval.every": draw(st.integers(1, 3)),
        "log.every": draw(st.integers(1, 3)),
        "checkpoint.every": draw(st.integers(1, 3)),
        "replicas": draw(st.sampled_from([1, 1, 1, 2])),
    }
    if words["remedy"] == "pacgan":
        words["remedy.pacgan.m"] = draw(st.integers(1, 4))
    if words["remedy"] == "minibatch_std":
        words["remedy.minibatch_std.group_size"] = draw(st.integers(1, 5))
    if words["remedy"] == "madgan":
        words["remedy.madgan.k"] = draw(st.integers(1, 3))
    if words["dataset"] == "ring":
        words["dataset.modes"] = draw(st.integers(1, 4))
    else:
        words["dataset.side"] = draw(st.integers(1, 3))
    return words


@examples(3, 150, fixtures=True)
@given(small_runs())
def test_an_accepted_small_run_trains_to_its_end(tmp_path_factory, capsys, words):
    with scratch(tmp_path_factory) as base:
        run_dir = base / "run"
        args = ["train", "debug=tiny", "eval.background=false", *(f"{k}={v}" for k, v in words.items()),
                f"hydra.run.dir={run_dir}"]
        code, out, err = run_cli(args, capsys)
        assert "Traceback" not in out + err, out + err
        summaries = sorted(run_dir.rglob("summary.json")) if run_dir.exists() else []
        if code == 2 and not summaries:  # refused before the run: one line, nothing written
            assert_refused_in_one_line(code, out, err, [k for k in words] + [f"{k}={v}" for k, v in words.items()])
            assert not run_dir.exists()
            event("refused")
            return
        event(f"exit status {code}")
        assert code in (0, 3), (code, err[-2000:])  # completed, or diverged: the run's own outcome
        assert len(summaries) == words["replicas"], summaries
        for path in summaries:
            summary = json.loads(path.read_text())
            assert summary["status"] in ("completed", "diverged"), summary.get("error")
            if summary["status"] == "completed":
                assert summary["step"] == words["steps"]
