"""Shell completion of `ganlab` (ganlab/completion.py): the scripts `ganlab train -sc install=bash|zsh` prints
complete the `ganlab` command (not Hydra's `ganlab-train`), and Hydra's completion query answers for the words
after `train`: its groups, options and keys."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ganlab.cli import COMMANDS, main
from ganlab.config import options


def query(capsys, monkeypatch, line: str, point: int | None = None, shell: str = "bash",
          argv: tuple[str, ...] = ("train",)) -> list[str]:
    """What `ganlab train -sc query=SHELL` prints for COMP_LINE=line, as the scripts call it, in this process."""
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line) if point is None else point))
    capsys.readouterr()
    try:
        main([*argv, "-sc", f"query={shell}"])
    except SystemExit as exc:  # exits only on a failure
        raise AssertionError(f"exit status {exc.code}: {capsys.readouterr()}") from None
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and len(out.out.splitlines()) <= 1, out
    return out.out.split()


def test_the_query_offers_groups_options_and_keys_after_train(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert query(capsys, monkeypatch, "ganlab train los") == ["loss.", "loss="]
    assert query(capsys, monkeypatch, "ganlab train loss=") == [f"loss={o}" for o in options("loss")]
    assert query(capsys, monkeypatch, "ganlab train loss=ns") == ["loss=nsgan"]
    assert "optim.d.lr=" in query(capsys, monkeypatch, "ganlab train loss=wgan optim.d.")
    assert query(capsys, monkeypatch, "ganlab train -m seed=0,1 remedy=pac") == ["remedy=pacgan"]
    everything = query(capsys, monkeypatch, "ganlab train ")
    assert {"dataset=", "loss=", "remedy=", "seed=", "objective=", "optim."} <= set(everything)
    # the cursor inside the line: the word before it
    assert query(capsys, monkeypatch, "ganlab train los seed=1", point=len("ganlab train los")) == ["loss.", "loss="]
    # zsh asks the same; `python -m ganlab` and a path to the command read the same
    assert query(capsys, monkeypatch, "ganlab train loss=ns", shell="zsh") == ["loss=nsgan"]
    assert query(capsys, monkeypatch, "python -m ganlab train loss=ns") == ["loss=nsgan"]
    assert query(capsys, monkeypatch, ".venv/bin/ganlab train loss=ns") == ["loss=nsgan"]


def test_the_query_knows_the_commands_and_a_config_dir_and_never_fails_aloud(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine" / "loss").mkdir(parents=True)
    (tmp_path / "mine" / "loss" / "my_loss.yaml").write_text("_target_: ganlab.losses.NonSaturatingGAN\n")
    assert query(capsys, monkeypatch, "ganlab train --config-dir mine loss=my") == ["loss=my_loss"]
    assert query(capsys, monkeypatch, "ganlab tr") == ["train"]
    assert query(capsys, monkeypatch, "ganlab ") == [*COMMANDS, "--help", "--version"]
    # `ganlab -sc query=bash` (what Hydra's own script asked) answers the same
    assert query(capsys, monkeypatch, "ganlab train loss=ns", argv=()) == ["loss=nsgan"]
    # a line Hydra cannot compose or parse, another command: no candidate (the shell falls back to file
    # names), no traceback, exit status 0
    assert query(capsys, monkeypatch, "ganlab train loss=nope optim.d") == []
    assert query(capsys, monkeypatch, "ganlab train 'seed=[1' los") == []
    assert query(capsys, monkeypatch, "ganlab eval outp") == []


def install(shell: str, capsys) -> str:
    main(["train", "-sc", f"install={shell}"])
    return capsys.readouterr().out


def test_install_registers_ganlab_and_asks_its_train_command(capsys):
    bash = install("bash", capsys)
    assert bash.rstrip().endswith("complete -o default -F _ganlab_complete ganlab")
    assert "train -sc query=bash" in bash and "ganlab-train" not in bash
    zsh = install("zsh", capsys)
    assert zsh.rstrip().endswith("compdef _ganlab ganlab") and "train -sc query=zsh" in zsh
    main(["train", "-sc", "uninstall=bash"])
    assert capsys.readouterr().out.startswith("complete -r ganlab")
    with pytest.raises(SystemExit) as exited:
        main(["train", "-sc", "install=fish"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("ganlab: error: -sc install=fish: write -sc install=SHELL") and "bash, zsh" in err


def test_hydras_help_names_ganlab_train_and_its_own_completion(capsys):
    """`ganlab train --hydra-help`: the flags under the name users type (`ganlab train`), the completion lines that
    work (bash, zsh), none of Hydra's for a `ganlab-train` that does not exist or for fish, which ganlab lacks."""
    with pytest.raises(SystemExit) as exited:  # Hydra's help ends the command, with status 0
        main(["train", "--hydra-help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    # a run's overrides on the line change nothing of Hydra's help (it was "unknown key 'loss'; the top-level keys
    # are: dataset, model, optim, loss, ...": Hydra composes its help without train.yaml)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--hydra-help", "loss=wgan", "seed=3"])
    assert exited.value.code == 0 and capsys.readouterr().out == out
    assert "ganlab-train" not in out and "fish" not in out.lower()
    assert 'eval "$(ganlab train -sc install=bash)"' in out and "install=zsh" in out
    assert "--multirun,-m" in out and "--config-dir,-cd" in out and "\nhydra/launcher: " in out
    shown = [line for line in out.splitlines() if '"$(' in line]
    assert len(shown) == 2
    for line in shown:  # each command it shows is one ganlab takes
        words = line.split('"$(')[1].split(')"')[0].split()
        assert words[:3] == ["ganlab", "train", "-sc"]
        main(words[1:])
        assert capsys.readouterr().out


def in_shell(shell: str, script: str, program: str, tmp_path: Path) -> str:
    """Run `program` in `shell` after the installed script, with the venv's `ganlab` first on PATH."""
    (tmp_path / "completion").write_text(script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([shell, "-c", f"source ./completion\n{program}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out
    return out.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_ganlab_train(capsys, tmp_path):
    """The bash script itself, as bash calls it on <Tab>: COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT in,
    COMPREPLY out (one `ganlab` query per line after `train`)."""
    program = """t() {
    COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< "$1"
    [[ "$1" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    _ganlab_complete; echo "$1 -> ${COMPREPLY[*]}"
}
t "ganlab tr"; t "ganlab train los"; t "ganlab train loss=ns"
complete -p ganlab"""
    assert in_shell("bash", install("bash", capsys), program, tmp_path).splitlines() == [
        "ganlab tr -> train", "ganlab train los -> loss. loss=", "ganlab train loss=ns -> loss=nsgan",
        "complete -o default -F _ganlab_complete ganlab"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_completes_ganlab_train(capsys, tmp_path):
    """The zsh script's function with zsh's completion state (words, CURRENT, PREFIX) set, and compadd and
    compdef standing in for the completion system's: what it offers, and whether a space follows."""
    program = """t() { words=(${=1}); [[ "$1" == *" " ]] && words+=(""); CURRENT=${#words}; PREFIX=${words[CURRENT]}
    _ganlab; }
t "ganlab tr"; t "ganlab train los"; t "ganlab train loss=ns"; t "ganlab eval x" """
    stubs = """compdef() { print -r -- "compdef $*"; }
compadd() { print -r -- "compadd $*"; }
_files() { print -r -- "_files"; }
"""
    lines = in_shell("zsh", stubs + install("zsh", capsys), program, tmp_path).splitlines()
    assert lines == ["compdef _ganlab ganlab", f"compadd -- {' '.join([*COMMANDS, '--help', '--version'])}",
                     "compadd -S  -- loss. loss=", "compadd --",          # key. and key= go on: no space
                     "compadd -S  --", "compadd -- loss=nsgan", "_files"]
