"""Shell completion of the `ganlab` command (bash and zsh): `ganlab train -sc install=bash|zsh` prints the
script to eval, which completes the command names and, after `ganlab train`, Hydra's groups, options and
config keys by asking `ganlab train -sc query=bash|zsh` with the line typed so far (COMP_LINE, COMP_POINT).

Hydra's own scripts would not do: they register the program Hydra is told it runs (`ganlab-train`, which
does not exist) and ask `ganlab -sc query=bash`, and Hydra's query reads `train` as an override. Here the
query strips the line up to `train` and hands the rest to Hydra's completion, whose candidates it prints on
one line. A query never fails aloud: whatever goes wrong (a line Hydra cannot parse, a config that does not
compose) prints no candidate, so the shell falls back to file names.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys

from ganlab.errors import UsageError

SHELLS = ("bash", "zsh")

BASH = r"""# ganlab's completion for bash: eval "$(ganlab train -sc install=bash)" (e.g. in ~/.bashrc)
_ganlab_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local line=${COMP_LINE:0:COMP_POINT}
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
    elif [[ ${COMP_WORDS[1]} == train ]]; then
        local IFS=$' \t\n'
        COMPREPLY=($(compgen -W "$(COMP_LINE="$line" COMP_POINT=${#line} "${COMP_WORDS[0]}" train -sc query=bash 2>/dev/null)" -- "$cur"))
        # key= , group/ and key. go on; a whole value ends the word
        if [[ ${#COMPREPLY[@]} -gt 0 && ${COMPREPLY[*]} =~ [=/.]( |$) ]]; then
            compopt -o nospace 2>/dev/null
        fi
    fi
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o default -F _ganlab_complete ganlab
"""

ZSH = r"""# ganlab's completion for zsh: eval "$(ganlab train -sc install=zsh)" (e.g. in ~/.zshrc, after compinit)
_ganlab() {
    if (( CURRENT == 2 )); then
        compadd -- @COMMANDS@
    elif [[ ${words[2]} == train ]]; then
        local line="${(j: :)${(@)words[1,CURRENT-1]}} ${PREFIX}"
        local -a choices
        choices=(${=$(COMP_LINE="$line" COMP_POINT=${#line} ${words[1]} train -sc query=zsh 2>/dev/null)})
        # key= , group/ and key. go on (no space after them); a whole value ends the word
        compadd -S '' -- ${(M)choices:#*[=/.]}
        compadd -- ${choices:#*[=/.]}
    else
        _files
    fi
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit; }
compdef _ganlab ganlab
"""

UNINSTALL = {"bash": "complete -r ganlab 2>/dev/null; unset -f _ganlab_complete",
             "zsh": "compdef -d ganlab; unfunction _ganlab 2>/dev/null"}


def script(shell: str, commands) -> str:
    return {"bash": BASH, "zsh": ZSH}[shell].replace("@COMMANDS@", " ".join([*commands, "--help", "--version"]))


def request(words: list[str]) -> tuple[str, str]:
    """`-sc install=bash`'s words as (install|uninstall|query, shell); UsageError in one line otherwise."""
    asked = [w.partition("=") for w in words]
    if len(asked) != 1 or asked[0][0] not in ("install", "uninstall", "query") or asked[0][2] not in SHELLS:
        raise UsageError(f"-sc {' '.join(words)}: write -sc install=SHELL, -sc uninstall=SHELL or -sc query=SHELL "
                         f"(COMP_LINE set), with SHELL one of {', '.join(SHELLS)}")
    return asked[0][0], asked[0][2]


def train_words(line: str) -> str | None:
    """What follows `train` in a completion line (`ganlab train los` -> ` los`; `python -m ganlab train` too),
    its leading space kept (a trailing space: a new word). None when the cursor is not past `train`."""
    for i, word in enumerate(re.finditer(r"\S+", line)):
        if i > 0 and word.group() == "train":
            rest = line[word.end():]
            return rest if rest else None  # the cursor still on `train`: the command's name is being completed
    return None


def complete(words: list[str], commands) -> None:
    """`ganlab train -sc ...` (and `ganlab -sc ...`): print the script, its undoing, or the query's answer."""
    action, shell = request(words)
    if action == "install":
        print(script(shell, commands), end="")
    elif action == "uninstall":
        print(UNINSTALL[shell])
    else:
        print(" ".join(query(os.environ.get("COMP_LINE", ""), os.environ.get("COMP_POINT"), shell, commands)))


def query(line: str, point: str | None, shell: str, commands) -> list[str]:
    """The candidates for the word at the cursor of `line` (cut at `point`): a command's name after `ganlab`,
    Hydra's groups, options and keys after `ganlab train`; none for anything else, or when anything fails."""
    with contextlib.suppress(ValueError, TypeError):
        line = line[:int(point)]
    words = line.split()
    if len(words) <= 1 or (len(words) == 2 and not line[-1:].isspace()):  # the command's name
        typed = words[1] if len(words) == 2 else ""
        return [c for c in [*commands, "--help", "--version"] if c.startswith(typed)]
    rest = train_words(line)
    if rest is None:
        return []
    try:
        return hydra_query(rest, shell)
    except BaseException:  # noqa: BLE001 - a completion prints candidates or nothing, never a traceback
        return []


def hydra_query(rest: str, shell: str) -> list[str]:
    """Hydra's completion of `ganlab-train` + `rest` (the package's configs, and a --config-dir on the line)."""
    from ganlab.hydra_private import parse_hydra_args
    from ganlab.launch import logging_restored, train_job

    config_dir = parse_hydra_args(rest.split()).config_dir
    argv, typed = sys.argv, os.environ.get("COMP_LINE")
    sys.argv = ["ganlab-train", *(["--config-dir", config_dir] if config_dir else []), "-sc", f"query={shell}"]
    os.environ["COMP_LINE"] = "ganlab-train" + rest  # Hydra's query strips the program's name, then reads the rest
    answer = io.StringIO()
    try:
        with logging_restored(), contextlib.redirect_stdout(answer), contextlib.redirect_stderr(io.StringIO()):
            train_job()
    finally:
        sys.argv = argv
        if typed is None:
            os.environ.pop("COMP_LINE", None)
        else:
            os.environ["COMP_LINE"] = typed
    return answer.getvalue().split()
