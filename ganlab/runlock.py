"""One process per run directory: an advisory lock held while a run trains.

Two runs started into the same directory would otherwise both run and leave it mixed (the config of
one, the checkpoint of the other, two event files). The lock is `flock` on `.ganlab.lock` in the run
directory: the kernel drops it when the process ends, however it ends (kill -9 included), so a stale
lock never blocks a resume.

A command claims its run directory (`claim`) before anything is written into it: before Hydra writes
`.hydra/` and opens `train.log` (ganlab.launch.Claim, a Hydra callback; ganlab's sweeper for each job).
A second command into the same directory, even one started at the same instant, is then refused before
it has touched anything of the first's. The run itself takes the same lock again (`RunLock`), which is
the claim it already holds.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ganlab.errors import GanlabError

NAME = ".ganlab.lock"
# Traces of an earlier start of a run, which a directory may hold when it is claimed: it was started there
# before. Hydra's record counts only before Hydra writes this command's (a claim comes first; a lock taken
# by the run itself may come after it).
TRACES = ("summary.json", "events.out.tfevents.*")
CLAIM_TRACES = (".hydra/config.yaml", *TRACES)


class Held:
    """A directory's lock held by this process: its descriptor, and whether the directory already held
    an earlier start's traces (CLAIM_TRACES, TRACES) when it was taken."""

    def __init__(self, fd: int, started_before: bool):
        self.fd, self.started_before = fd, started_before

    def drop(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# The directories this process claimed (`claim`), by their resolved path, until `release`.
_claimed: dict[Path, Held] = {}


def _key(run_dir: Path) -> Path:
    return Path(run_dir).resolve()


def _take(run_dir: Path, traces: tuple[str, ...] = TRACES) -> Held:
    """The lock of `run_dir`, or GanlabError naming the process that holds it."""
    run_dir = Path(run_dir)
    traces = any(next(run_dir.glob(pattern), None) is not None for pattern in traces)
    fd = os.open(run_dir / NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise GanlabError(in_use_message(run_dir, holder(run_dir) or 0)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return Held(fd, traces)


def claim(run_dir: Path) -> None:
    """Take `run_dir` (made if missing) for this process before anything is written into it, and hold it
    until `release` (or the process's end); GanlabError if another process holds it. Claimed twice, it
    is held once."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if _key(run_dir) not in _claimed:
        _claimed[_key(run_dir)] = _take(run_dir, CLAIM_TRACES)


def release(run_dir: Path | None = None) -> None:
    """Give up the claim of `run_dir` (of every claimed directory when None)."""
    for key in [_key(run_dir)] if run_dir is not None else list(_claimed):
        held = _claimed.pop(key, None)
        if held is not None:
            held.drop()


def holder(run_dir: Path) -> int | None:
    """The pid of the process training in `run_dir` now (0 if unknown), or None when it is free or
    claimed by this process (for the run it is about to start)."""
    if _key(run_dir) in _claimed:
        return None
    path = Path(run_dir) / NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        try:
            return int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_use_message(run_dir: Path, pid: int) -> str:
    by = f"process {pid}" if pid else "another process"
    return (f"run directory {run_dir} is in use by {by} (a run is training there); wait for it to end, "
            "or choose another directory")


class RunLock:
    """`with RunLock(run_dir):` holds the directory's lock, or raises GanlabError if another holds it. A
    directory this process claimed (`claim`: the command did, before Hydra wrote into it) is held by that
    claim, which stays. `started_before`: whether the directory held an earlier start's traces when it was
    claimed, or else locked."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / NAME
        self.held: Held | None = None
        self.started_before = False

    def __enter__(self):
        claimed = _claimed.get(_key(self.run_dir))
        if claimed is not None:
            self.started_before = claimed.started_before
        else:
            self.held = _take(self.run_dir)
            self.started_before = self.held.started_before
        return self

    def __exit__(self, *exc) -> bool:
        if self.held is not None:
            self.held.drop()
            self.held = None
        return False
