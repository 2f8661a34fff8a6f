"""The one-line contract for bad input, over many overrides: each ends with exactly one
`ganlab: error:` line that names the key, exit status 2, no traceback, and nothing written.

Most cases run the CLI in this process (`cli.main`), which is what a subprocess would run after
Python's start-up; a few run it as a user does, to show the two agree.
"""

import random

import pytest
from conftest import TINY, ganlab, make_cfg

from ganlab.cli import main
from ganlab.config import _RANGES

# Every integer key gets each kind of bad value (a word, a non-finite float, a huge integer, a fraction,
# a list, an empty string); the float keys below get theirs.
NUMBERS_BAD = ["abc", "nan", "1e400", "99999999999999999999", "1.5", "[1,2]", "''"]
FLOAT_KEYS = ["optim.d.lr", "optim.g.lr", "dataset.std", "dataset.radius", "optim.g.betas"]


def cases() -> list[tuple[str, str]]:
    """(override, the key the error line must name)."""
    out = []
    for key, (low, high) in _RANGES.items():
        for value in NUMBERS_BAD:
            out.append((f"{key}={value}", key))
        out.append((f"{key}={low - 1}", key))
        if high is not None:
            out.append((f"{key}={high + 1}", key))
    for key in FLOAT_KEYS:
        for value in ("nan", "inf", "-inf", "1e400", "1e39", "abc", "[]", "[0.5]"):
            out.append((f"{key}={value}", key))
    out += [
        ("seed=${oops}", "seed"), ("steps=${steps}", "steps"), ("remedy=[]", "remedy"),
        ("remedy=[pacgan,pacgan]", "pacgan"), ("hydra.run.dir=", "hydra.run.dir"),
        ("remedy.none.x=1", "remedy.none"), ("remedy=nope", "remedy=nope"), ("lossx=gan", "lossx"),
        ("seed=é", "seed=é"), ("seed=[1", "seed=[1"), ("=1", "=1"), ("seed==1", "seed"),
        ("eval.every=", "eval.every"), ("device=tpu", "device"), ("metrics.inception=maybe", "metrics.inception"),
        ("batch_size=100000000", "batch_size"), ("eval.samples=1000000000", "eval.samples"),
    ]
    return out


def mutations() -> list[str]:
    """Random one-character insertions into good overrides (the same every run): each is either a
    valid override or refused in one line; never a traceback."""
    rng = random.Random(0)
    good = ["steps=100", "seed=3", "optim.d.lr=0.001", "eval.every=50", "loss=wgan_gp", "batch_size=64",
            "remedy=[pacgan,spectral_norm]"]
    alphabet = "[]{}(),='\"$\\é ~+@#:;!"
    out = []
    for _ in range(30):
        text = rng.choice(good)
        i = rng.randrange(len(text) + 1)
        out.append(text[:i] + rng.choice(alphabet) + text[i:])
    return out


def run_in_process(args: list[str], capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        main(["train", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line(code, out, err, override, key, tmp_path):
    lines = err.strip().splitlines()
    assert code == 2, (override, code, err)
    assert len(lines) == 1 and lines[0].startswith("ganlab: error: "), (override, err)
    if key is not None:
        assert key in lines[0], (override, lines[0])
    assert "Traceback" not in out + err and "Exception" not in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override, key", cases())
def test_bad_override_one_line(override, key, capsys, monkeypatch, tmp_path):
    code, out, err = run_in_process([override], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, override, key, tmp_path)


@pytest.mark.parametrize("override", mutations())
def test_a_mutated_override_is_valid_or_one_line(override, capsys, monkeypatch, tmp_path):
    # --cfg job: composes and checks, trains nothing (a mutation may be a valid override).
    code, out, err = run_in_process([override, "--cfg", "job"], capsys, monkeypatch, tmp_path)
    if code == 0:
        assert "seed:" in out and not err.strip(), (override, err)
    else:
        assert_one_line(code, out, err, override, None, tmp_path)


@pytest.mark.parametrize("override", ["optim.d.betas=[0.5]", "seed=${oops}", "optim.d.lr=1e39",
                                      "batch_size=100000000"])
def test_the_installed_cli_agrees(override, tmp_path):
    out = ganlab("train", override, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("ganlab: error: ") and "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override, line", [
    ("optim.d.lr=abc", "ganlab: error: optim.d.lr='abc': expected a number > 0"),
    ("seed=é", "ganlab: error: cannot read the override 'seed=é': 'é' is not allowed in an unquoted value"),
    ("remedy.none.x=1", "ganlab: error: unknown key 'remedy.none.x'; 'remedy.none' takes no options"),
    ("hydra.run.dir=", "ganlab: error: hydra.run.dir is empty; give a directory"),
    ("remedy=[]", "ganlab: error: remedy=[] chooses no remedy; use remedy=none for the plain GAN"),
    ("steps=99999999999999999999", "ganlab: error: steps=99999999999999999999 is out of range"),
    ("optim.d.lr=1e400", "ganlab: error: optim.d.lr=inf: expected a finite number"),
    ("eval.samples=1000000000", "ganlab: error: eval.samples=1000000000 needs about"),
    # issue 28: the value as typed (not OmegaConf's float '1000.0'), and the integer to write instead
    ("steps=1e3", "ganlab: error: bad value for 'steps': steps=1e3 is not an integer; write steps=1000"),
    ("steps=2.5", "ganlab: error: bad value for 'steps': steps=2.5 is not an integer"),
    # issue 28: a nested group's unknown option lists that group's options (optim/paper's), not optim's
    ("optim=paper/nope", "ganlab: error: unknown option optim=paper/nope; choose one of: paper/dragan, paper/hinge, "
                         "paper/loss_sensitive, paper/lsgan, paper/wgan, paper/wgan_gp"),
    # issue 29: --help lists optim/paper; it is not in the defaults, so it is added with +, as the line says
    ("optim/paper=wgan", "ganlab: error: optim/paper is not in the default config, so it is added, not overridden: "
                         "+optim/paper=wgan (dragan, hinge, loss_sensitive, lsgan, wgan, wgan_gp)"),
])
def test_the_lines_say_what_is_wrong(override, line, capsys, monkeypatch, tmp_path):
    code, out, err = run_in_process([override], capsys, monkeypatch, tmp_path)
    assert code == 2 and err.strip().startswith(line), err


@pytest.mark.parametrize("multirun", [[], ["-m", "seed=0,1"]])
def test_an_unknown_option_of_a_hydra_group_is_one_line(multirun, capsys, monkeypatch, tmp_path):
    """hydra/launcher=... and the other hydra/ groups are Hydra's to compose; its several-line
    error (an IOError, once reported as "cannot write") becomes one line with the options."""
    code, out, err = run_in_process([*multirun, "hydra/launcher=nonexistent"], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, "hydra/launcher=nonexistent", "Could not find 'hydra/launcher/nonexistent'",
                    tmp_path)
    assert "choose one of: basic" in err and "cannot write" not in err


# ---- values that would be passed over, or would make a run silently do nothing (issue 28) ----------
# `--cfg job` composes and validates, and trains nothing: without the check, these "pass" (exit 0)
# in a second instead of starting a run.


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_data_root_that_is_missing_or_a_file_is_refused(make, capsys, monkeypatch, tmp_path):
    """Not passed over for another copy of the data (Debian's /usr/share/datasets/fashion-mnist) or
    the default folder: one line naming the path and the fix, before any lookup."""
    root = tmp_path / "typo"
    if make == "file":
        root.write_text("not a folder")
    code, out, err = run_in_process(["dataset=fashion_mnist", f"dataset.root={root}", "--cfg", "job"],
                                    capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, f"dataset.root={root}", f"dataset.root={root}", tmp_path)
    says = "does not exist" if make == "missing" else "is a file, not a directory"
    assert says in err and "give the folder that holds the data" in err and "leave dataset.root out" in err, err


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_ganlab_data_that_is_missing_or_a_file_is_refused(make, capsys, monkeypatch, tmp_path):
    """$GANLAB_DATA, the root when dataset.root is unset, was passed over for Debian's copy of the data without a
    word: refused as a dataset.root is, for a dataset that reads files; a ring run reads none and is not refused."""
    root = tmp_path / "typo"
    if make == "file":
        root.write_text("not a folder")
    monkeypatch.setenv("GANLAB_DATA", str(root))
    code, out, err = run_in_process(["dataset=fashion_mnist", "--cfg", "job"], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, "$GANLAB_DATA", f"$GANLAB_DATA={root}", tmp_path)
    says = "does not exist" if make == "missing" else "is a file, not a directory"
    assert says in err and "set it to the folder that holds the data" in err and "or unset it" in err, err
    code, out, err = run_in_process(["--cfg", "job"], capsys, monkeypatch, tmp_path)  # the ring
    assert code == 0 and not err.strip(), err


def test_the_classifier_command_refuses_a_missing_ganlab_data(capsys, monkeypatch, tmp_path):
    import ganlab.metrics.classifier_training as training

    def trained(*args, **kwargs):
        raise AssertionError("a classifier was trained with a $GANLAB_DATA that does not exist")

    monkeypatch.setattr(training, "train_and_save", trained)
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANLAB_DATA", str(tmp_path / "typo"))
    with pytest.raises(SystemExit) as exited:
        main(["classifier", "dataset=fashion_mnist", "force=true"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"ganlab: error: $GANLAB_DATA={tmp_path / 'typo'} does not exist"), err


def test_the_classifier_command_refuses_a_missing_data_root(capsys, monkeypatch, tmp_path):
    import ganlab.metrics.classifier_training as training

    def trained(*args, **kwargs):
        raise AssertionError("a classifier was trained with a dataset.root that does not exist")

    monkeypatch.setattr(training, "train_and_save", trained)
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exited:
        main(["classifier", "dataset=fashion_mnist", f"dataset.root={tmp_path / 'typo'}", "force=true"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"ganlab: error: dataset.root={tmp_path / 'typo'} does not exist"), err


@pytest.mark.parametrize("overrides, says", [
    (["optim.g.lr=1e-50", "optim.d.lr=1e-50"], "optim.g.lr=1e-50 is below float32's smallest normal number"),
    (["optim.g.lr=1e-40"], "optim.g.lr=1e-40 is below float32's smallest normal number"),
    (["remedy=instance_noise", "remedy.instance_noise.std=1e-50"],
     "remedy.instance_noise.std=1e-50 is below float32's smallest normal number"),
    (["loss=dragan", "loss.perturb=1e-45"], "loss.perturb=1e-45 is below float32's smallest normal number"),
    # normal in float32, but each step's change (about the rate) is far below float32's resolution of the weights
    (["optim.g.lr=1e-30"], "optim.g.lr=1e-30 is below 1e-12"),
    (["optim=rmsprop", "optim.d.lr=1e-20"], "optim.d.lr=1e-20 is below 1e-12"),
    (["optim.d.lr=9.9e-13"], "optim.d.lr=9.9e-13 is below 1e-12"),
])
def test_a_positive_value_that_is_zero_in_float32_is_refused(overrides, says, capsys, monkeypatch, tmp_path):
    """lr=1e-50 is 0 in float32: the run would "complete" with weights that never moved."""
    code, out, err = run_in_process([*overrides, "--cfg", "job"], capsys, monkeypatch, tmp_path)
    assert_one_line(code, out, err, overrides, says, tmp_path)
    if "lr" in says:
        assert "the weights would never move" in err, err


def test_a_learning_rate_just_above_the_bound_still_moves_the_weights(monkeypatch, tmp_path):
    """The bound refuses no run that learns: at 1.5 x MIN_LR a 20-step debug=tiny run still changes weights of G
    and D (those near 0, where float32 resolves a change of about the rate), and by about the rate a step."""
    import torch

    import ganlab.train
    from ganlab.config import MIN_LR

    made = []

    def recording(cfg, device):
        exp = build(cfg, device)
        made.append((exp, {net: [p.detach().clone() for p in getattr(exp, net).parameters()] for net in "GD"}))
        return exp

    build = ganlab.train.build
    monkeypatch.setattr(ganlab.train, "build", recording)
    lr = 1.5 * MIN_LR
    ganlab.train.run(make_cfg(*TINY, f"optim.g.lr={lr}", f"optim.d.lr={lr}"), tmp_path / "run")
    (exp, before), = made
    for net in "GD":
        after = [p.detach() for p in getattr(exp, net).parameters()]
        moved = sum(int((a != b).sum()) for a, b in zip(after, before[net]))
        largest = max(float((a - b).abs().max()) for a, b in zip(after, before[net]))
        assert moved > 0, f"no weight of {net} moved at lr={lr}"
        assert largest <= 20 * 2 * lr, (net, largest)  # 20 steps of Adam's ~lr, a rounding up to 2x each
        assert all(torch.isfinite(a).all() for a in after)


@pytest.mark.parametrize("m, batch, suggested", [(3, 32, 30), (100, 32, 100)])
def test_a_pack_size_that_does_not_divide_the_batch_suggests_one_it_divides(m, batch, suggested):
    """m larger than the batch suggested batch_size=0, which is refused in turn (found by the fuzz tests)."""
    import torch

    from ganlab.errors import ConfigError
    from ganlab.gan import build

    with pytest.raises(ConfigError, match=rf"must divide batch_size={batch} .*; e\.g\. batch_size={suggested}$"):
        build(make_cfg("remedy=pacgan", f"remedy.pacgan.m={m}", f"batch_size={batch}"), torch.device("cpu"))


def test_a_smoothed_real_target_that_is_1_in_float32_is_refused():
    from ganlab.errors import ConfigError
    from ganlab.remedies.label_smoothing import LabelSmoothing

    with pytest.raises(ConfigError, match=r"real_target=0\.99999999 is 1 in float32.*nothing would be smoothed"):
        LabelSmoothing(real_target=0.99999999)
    LabelSmoothing(real_target=0.9999999)  # 1 - 1e-7: float32 holds it
    LabelSmoothing(real_target=1.0)        # no smoothing, said so


def test_optim_paper_is_added_with_a_plus(capsys, monkeypatch, tmp_path):
    """The form the error line gives works: WGAN's optimizer settings under another loss."""
    code, out, err = run_in_process(["+optim/paper=wgan", "--cfg", "job"], capsys, monkeypatch, tmp_path)
    assert code == 0 and not err.strip()
    assert "lr: 5.0e-05" in out and "loss:" in out
