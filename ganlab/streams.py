"""Which file a failed write was writing: every write error's one line names it (issue 28).

A write that fails inside a library (Hydra writing `.hydra/config.yaml` onto a full disk, rich printing
the final table to `>/dev/full`) raises an OSError that names no file: `exc.filename` is set only
when a file cannot be opened. `written_file` finds the file all the same: standard output, whose
failures `watched_stdout` records while a command runs, or the file object open for writing in the
innermost frame of the traceback that holds one; `write_error` makes that the WriteError line. The stdlib
and ganlab's errors only: `ganlab --help` loads no torch.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator

STDOUT = "standard output"
# The errors of a write that found no room: a full disk, a quota, a file-size limit, a read-only mount.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WatchedStdout:
    """sys.stdout as it was, except that a write or flush that fails is remembered (`errors`) before the
    error goes on: print(), rich and logging all write through sys.stdout, and none of them says where
    an OSError came from. Everything else is the stream's own."""

    def __init__(self, stream):
        self._stream = stream
        self.errors: list[OSError] = []

    def _watch(self, method: str, *args):
        try:
            return getattr(self._stream, method)(*args)
        except OSError as exc:
            self.errors.append(exc)
            raise

    def write(self, text):
        return self._watch("write", text)

    def writelines(self, lines):
        return self._watch("writelines", lines)

    def flush(self):
        return self._watch("flush")

    def __getattr__(self, name):
        return getattr(self._stream, name)


_watcher: WatchedStdout | None = None


@contextlib.contextmanager
def watched_stdout() -> Iterator[WatchedStdout]:
    """While a command runs, sys.stdout records its failed writes (`on_stdout`). Afterwards, if one
    failed, the stream's descriptor goes to /dev/null: what it still holds is flushed there, not
    into a second error as the interpreter exits (Python's docs, "Note on SIGPIPE")."""
    global _watcher
    original, previous = sys.stdout, _watcher
    _watcher = sys.stdout = WatchedStdout(original)
    try:
        yield _watcher
    finally:
        failed = bool(_watcher.errors)
        if sys.stdout is _watcher:
            sys.stdout = original
        _watcher = previous
        if failed:
            silence(original)


def silence(stream) -> None:
    """Point `stream`'s file descriptor at /dev/null (a stream without one, a test's capture, is left)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def on_stdout(exc: BaseException) -> bool:
    """Whether `exc` (or the error it was raised from) is a failed write to standard output."""
    if _watcher is None:
        return False
    return any(any(e is failed for failed in _watcher.errors) for e in _chain(exc))


def _writing(value) -> bool:
    if not isinstance(value, io.IOBase) or not isinstance(getattr(value, "name", None), str):
        return False
    return any(c in str(getattr(value, "mode", "")) for c in "wax+")


def written_file(exc: BaseException) -> str | None:
    """The file the failed write `exc` was writing ("standard output" for stdout), or None if unknown.
    From the error itself when it names one; else from the traceback: the file object open for writing
    in the innermost frame that holds one (`with open(path, "w") as file: file.write(...)`)."""
    if on_stdout(exc):
        return STDOUT
    for seen in _chain(exc):
        if isinstance(seen, OSError) and isinstance(seen.filename, (str, os.PathLike)):
            return os.fspath(seen.filename)
    for seen in _chain(exc):
        frames = []
        tb = seen.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            for value in list(frame.f_locals.values()):
                if _writing(value):
                    return STDOUT if value.name == "<stdout>" else value.name
    return None


def write_error(exc: BaseException, hint: str = ""):
    """The WriteError line for the failed write `exc`, naming its file (`hint` after a cause that has no
    fix of its own, such as choosing another directory), or None when the file is unknown."""
    from ganlab.atomic import FIXES, describe
    from ganlab.errors import WriteError

    where = written_file(exc)
    if where is None:
        return None
    if where == STDOUT:
        return WriteError(f"cannot write to {STDOUT}: {getattr(exc, 'strerror', None) or exc}")
    known = any(isinstance(e, OSError) and e.errno in FIXES for e in _chain(exc))
    return WriteError(f"cannot write {where}: {describe(exc)}{'' if known else hint}")
