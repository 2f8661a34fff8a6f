"""Keep freed memory in the process instead of handing it back to the kernel after every large tensor.

glibc's malloc serves a block over its mmap threshold (128 KiB, rising to at most 32 MiB as it adapts) with a
fresh mmap and unmaps it when freed, so the next tensor of that size is zero-filled page by page again. An image
evaluation allocates 150 MB activations per classifier layer and chunk (1,500 grey images of 32 x 28 x 28 floats),
thousands of times: measured here, classifying 19,500 grey images in chunks of 500 took 11.1 s of user and
10.9 s of system time (page faults), and 10.1 s user and 0.4 s system with the thresholds below (wall 22.3 s
against 10.6 s, one thread, the machine shared with two other runs). A training step's tensors are far smaller.

The cost: a process keeps its peak heap after the peak (what the next evaluation needs anyway) instead of
shrinking between evaluations; and the tests' tiny 2-D runs (tests/test_resume.py, 2 x 2 interleaved) took 79-82 s
with it set in every ganlab process against 75 s without. So only a process that builds an image evaluator sets
it. GANLAB_KEEP_FREED_MEMORY=0 leaves malloc as it is. Only glibc has mallopt's thresholds; elsewhere (macOS,
musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free heap top above this is returned to the kernel
M_MMAP_THRESHOLD = -3  # blocks above this get their own mmap (and munmap when freed)
KEEP_BELOW = 1 << 30   # 1 GiB: every tensor an evaluation or a step makes comes from the heap
DOCUMENTED_MAX = 32 << 20  # mallopt(3)'s limit on 64-bit; glibc 2.36 takes 1 GiB, an older one may refuse it
TRIM_ABOVE = (1 << 31) - 1  # mallopt takes an int: keep up to 2 GiB of free heap top
ENV = "GANLAB_KEEP_FREED_MEMORY"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process, once; whether they are set. Called by every image
    evaluator (a run's, `ganlab eval`'s, the scripts'), before its first evaluation: blocks allocated before keep
    their mmap. A process that serves several jobs (a Ray worker) keeps the setting."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no such symbol in some builds)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing. The mmap threshold is what matters;
    # the trim threshold only keeps the freed heap top from being handed back.
    _applied = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) or bool(mallopt(M_MMAP_THRESHOLD, DOCUMENTED_MAX))
    if _applied:
        mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE)
    else:
        log.debug("mallopt refused the thresholds: malloc stays as it is")
    return _applied
