"""One process per run directory: an advisory lock held while a run trains.

Two runs started into the same directory would otherwise both run and leave it mixed (the config of
one, the checkpoint of the other, two event files). The lock is `flock` on `.ganlab.lock` in the run
directory: the kernel drops it when the process ends, however it ends (kill -9 included), so a stale
lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ganlab.errors import GanlabError

NAME = ".ganlab.lock"


def holder(run_dir: Path) -> int | None:
    """The pid of the process training in `run_dir` now (0 if unknown), or None when it is free."""
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
    """`with RunLock(run_dir):` holds the directory's lock, or raises GanlabError if another holds it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / NAME
        self.fd: int | None = None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GanlabError(in_use_message(self.path.parent, holder(self.path.parent) or 0)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
