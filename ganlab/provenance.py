"""Provenance: which code made a run, on which machine, from which command line.

`gather()` is what summary.json's `provenance` holds (and, for each resume of the run, an entry of
`resumed_provenance`), what TensorBoard's text tab and eval.json show: ganlab's version (pyproject.toml's,
one source), the git commit and whether the tree was dirty, torch, Python, CUDA, the host and the command
line. It is gathered once per run, at its start. The git query is two short subprocesses (`rev-parse`,
`status --porcelain`), at most once per process; anything but a git checkout holding this very package (an
installed wheel, no git binary, a timeout) gives null, silently. `ganlab --version` prints `version_line()`.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import socket
import subprocess
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
FIELDS = ("ganlab", "git_commit", "git_dirty", "torch", "python", "cuda", "host", "command")
GIT_TIMEOUT_S = 2.0
# The command line as the user typed it (cli.main sets it): `ganlab train` hands Hydra a rewritten sys.argv,
# and a sweep's jobs may run in other processes (joblib, submitit), which inherit the environment.
COMMAND_ENV = "GANLAB_COMMAND_LINE"


@functools.lru_cache(maxsize=1)
def version() -> str | None:
    """pyproject.toml's version: read from the file in a source checkout (an editable install's metadata
    is as old as its last `pip install`), else from the installed package's metadata (built from it)."""
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    try:
        import tomllib  # Python 3.11+; on 3.10 the metadata alone

        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "ganlab" and isinstance(project.get("version"), str):
            return project["version"]
    except (ImportError, OSError, ValueError):
        pass
    try:
        return metadata.version("ganlab")
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """git's output in the package's directory; None when git is missing, fails or is slow."""
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT_S,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # status takes no index lock
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(the commit, whether tracked or untracked files differ from it) of the checkout this package is
    in; (None, None) outside one. A wheel installed in a virtualenv inside some repository is not in a
    checkout of ganlab: the repository's top level must hold this package as its `ganlab/`."""
    head = _git("rev-parse", "--show-toplevel", "HEAD")
    lines = head.splitlines() if head else []
    if len(lines) != 2 or Path(lines[0]).resolve() / "ganlab" != PACKAGE_DIR:
        return None, None
    status = _git("status", "--porcelain")
    return lines[1].strip(), None if status is None else bool(status.strip())


def command_line() -> str | None:
    """The command as typed (`ganlab train loss=wgan_gp`); from Python, the interpreter's own arguments."""
    return os.environ.get(COMMAND_ENV) or (shlex.join(sys.argv) if sys.argv and sys.argv[0] else None)


@contextmanager
def command(words: list[str]):
    """`words` is the command line of what runs inside (cli.main); as it was afterwards (in-process callers)."""
    before = os.environ.get(COMMAND_ENV)
    os.environ[COMMAND_ENV] = shlex.join(words)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(COMMAND_ENV, None)
        else:
            os.environ[COMMAND_ENV] = before


def gather() -> dict:
    """This process's provenance: every key of FIELDS, null where unknown (CUDA: torch's build, null on CPU)."""
    import torch

    commit, dirty = git_state()
    return {"ganlab": version(), "git_commit": commit, "git_dirty": dirty, "torch": str(torch.__version__),
            "python": platform.python_version(), "cuda": torch.version.cuda, "host": socket.gethostname(),
            "command": command_line()}


def on_resume(saved: dict, current: dict, step: int) -> tuple[dict | None, list[dict]]:
    """(provenance, resumed_provenance) of a run resumed at `step`, its checkpoint's loop state `saved`: the
    original run's stays (None from a checkpoint older than provenance), this segment's is added."""
    return saved.get("provenance"), [*(saved.get("resumed_provenance") or []), {**current, "resumed_at_step": step}]


def code_label(entry: dict | None, dirty: bool = False) -> str:
    """"0.1.0 (commit abc1234)": the code an entry names; `dirty` adds whether the tree was."""
    if not isinstance(entry, dict):
        return "no provenance recorded (an older ganlab)"
    text = str(entry.get("ganlab") or "version unknown")
    if entry.get("git_commit"):
        text += f" (commit {str(entry['git_commit'])[:7]}{', dirty' if dirty and entry.get('git_dirty') else ''})"
    return text


def version_line() -> str:
    """`ganlab --version`: e.g. "ganlab 0.1.0 (commit abc1234, dirty)"; no torch imported."""
    commit, dirty = git_state()
    return "ganlab " + code_label({"ganlab": version(), "git_commit": commit, "git_dirty": dirty}, dirty=True)


def markdown(entry: dict) -> str:
    """One entry as a Markdown table, for TensorBoard's text tab."""
    def shown(value) -> str:  # as summary.json writes it: null, true, false
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return text.replace("|", "\\|")  # a `|` in a command line would end the cell

    keys = (*FIELDS, *(k for k in entry if k not in FIELDS))
    return "\n".join(["| field | value |", "|---|---|", *(f"| {k} | {shown(entry.get(k))} |" for k in keys)])
