"""Atomic file writes: a reader (or a resume after a crash) sees the old file or the whole new one.

Every writer of a file that must never be half-written (checkpoints, summary.json, eval.json) goes
through `write_atomic`: a temporary file in the same directory, fsync, rename over the target,
fsync of the directory. Any failure (a full disk, a file-size limit, a read-only directory, torch's
own "unexpected pos" error on a short write) removes the temporary file, leaves the old target
untouched, and raises one WriteError line (exit status 1) naming the file and the cause.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ganlab.errors import WriteError

# What the user can do about a failed write, by its errno.
FIXES = {
    errno.ENOSPC: "free some space on its disk",
    errno.EDQUOT: "free some space: the disk quota is used up",
    errno.EFBIG: "raise the file-size limit, `ulimit -f`",
    errno.EACCES: "make its directory writable",
    errno.EPERM: "make its directory writable",
    errno.EROFS: "use a writable disk",
}


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], what: str | None = None) -> None:
    """Call `write(f)` on a temporary file beside `path`, then rename it onto `path`.

    `what` names the file in the error message ("checkpoint"); by default its name is used.
    """
    path = Path(path)
    # The pid keeps two processes writing the same file (two `ganlab eval`s) out of each other's way.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a directory that turned read-only: nothing more can be done
            pass
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a failed write
            raise
        label = f"{what} {path}" if what else str(path)
        raise WriteError(f"cannot write {label}: {describe(exc)}; the previous {what or path.name}, "
                         "if any, is intact") from None
    fsync_dir(path.parent)


def describe(exc: BaseException) -> str:
    """The cause of a failed write in a few words. torch.save reports a short write as a
    RuntimeError ("unexpected pos 704 vs 598") whose context holds the real OSError: use that."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            fix = FIXES.get(seen.errno)
            return f"{seen.strerror} ({fix})" if fix else seen.strerror
        seen = seen.__cause__ or seen.__context__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory). Some
    file systems cannot fsync a directory; the rename is then as durable as they make it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
