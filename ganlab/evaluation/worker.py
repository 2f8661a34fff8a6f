"""The part of an evaluation that needs no device, done in a background process.

Exact W1/W2 (an optimal-transport LP: 0.4-0.6 s at n = 1,000) and the
matplotlib pictures (~0.5 s) would otherwise stall training for seconds at every eval; a worker
process does them on another core while training goes on, and the loop writes their results at its
next log tick, under the step they belong to. This module imports no torch, so the worker starts
quickly. `background=False` does the same work inline (for debugging, and for tests).

The worker never outlives the training process nor speaks out of turn: it ignores Ctrl-C (the
training process handles it, then closes the worker's input), the kernel kills it when the
training process dies (Linux, even by kill -9), and a closed pipe ends it without a traceback.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # The worker ignores Ctrl-C, from its first moment (numpy below takes a while to import): the
    # terminal sends SIGINT to the whole process group, and the training process handles it (it
    # saves, then closes our stdin, which ends this worker cleanly) and may still need our results.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The same for SIGTERM to the whole group (SLURM's preemption, `kill -- -PGID`): the training
    # process stops gracefully and closes our input; if it dies instead, PR_SET_PDEATHSIG ends us.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

import ctypes
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque

from ganlab.evaluation.jobs import EvalResult, complete

# The worker's environment names the training process, whose death the worker must not outlive.
PARENT_ENV = "GANLAB_OFFLOAD_PARENT"


class Offloader:
    """Runs `complete` on submitted jobs, in order, in one worker process (or inline).

    The worker is `python -m ganlab.evaluation.worker`, fed pickled jobs on stdin, answering on stdout. A plain
    subprocess rather than multiprocessing: spawn re-imports the caller's __main__, which breaks
    any script that calls run() without an `if __name__ == "__main__"` guard.
    """

    def __init__(self, background: bool = True):
        self.worker = None
        self.jobs: queue.Queue = queue.Queue()  # to the worker; None closes its input
        self.results: queue.Queue = queue.Queue()
        self.submitted = self.received = 0
        self.failed: BaseException | None = None  # the first error a job or the worker raised
        if background:
            # One BLAS/OpenMP thread: the worker must not spin on the core that trains.
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   PARENT_ENV: str(os.getpid())}
            self.worker = subprocess.Popen([sys.executable, "-m", "ganlab.evaluation.worker"], env=env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           # Only signal.signal runs between fork and exec: it takes no lock
                                           # another thread could hold (the hazard preexec_fn's warning is about).
                                           preexec_fn=_ignore_stop_signals)  # noqa: PLW1509
            # Threads move the bytes: a job (~100 kB) is larger than a pipe's buffer, and writing it
            # from the loop would block training while the worker is busy with the previous one.
            threading.Thread(target=self._write, daemon=True).start()
            threading.Thread(target=self._read, daemon=True).start()

    def _write(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                pickle.dump(job, self.worker.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.worker.stdin.flush()
            self.worker.stdin.close()  # end of input: the worker exits
        except OSError:  # the worker died; _read reports it
            pass

    def _read(self) -> None:
        while True:
            try:
                self.results.put(pickle.load(self.worker.stdout))
            except BaseException as exc:  # noqa: BLE001 - whatever it is, the loop must hear of it
                self.results.put(exc if not isinstance(exc, EOFError) else EOFError("the worker stopped"))
                return

    def submit(self, job) -> None:
        if self.worker is None:
            result = complete(job)  # inline: a failing job raises here, and counts as never submitted
            self.submitted += 1
            self.results.put(result)
        else:
            self.submitted += 1
            self.jobs.put(job)

    def _take(self, block: bool) -> EvalResult:
        result = self.results.get(block=block)
        self.received += 1  # an error too: nothing else will come for that job
        if isinstance(result, BaseException):
            self.failed = self.failed or result
            raise RuntimeError(f"evaluation worker failed: {result}") from result
        return result

    def ready(self) -> list[EvalResult]:
        """Results finished so far, oldest first; never waits."""
        done = []
        while self.received < self.submitted and not self.results.empty():
            done.append(self._take(block=False))
        return done

    def busy(self) -> bool:
        """Whether a submitted job's result has not come back yet (never waits)."""
        return self.received + self.results.qsize() < self.submitted

    def drain(self) -> list[EvalResult]:
        """Wait for every submitted job. After a failure nothing more is waited for: a worker that
        died, or answered with an error, may owe results that will never come."""
        if self.failed is not None:
            return []
        return [self._take(block=True) for _ in range(self.submitted - self.received)]

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.jobs.put(None)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()


class SharedOffloader:
    """One evaluation worker for the runs of one loop (replicas=N trains N; N workers would each load
    torch): run k's `view(k)` is its offloader, submitting its jobs and getting back its own results. The
    worker answers in submission order, so each answer goes to the run next in line."""

    def __init__(self, background: bool, n: int):
        self.inner = Offloader(background=background)
        self.owners: deque[int] = deque()
        self.inbox: dict[int, list] = {k: [] for k in range(n)}
        self.open = n

    def view(self, k: int) -> OffloaderView:
        return OffloaderView(self, k)

    def busy(self) -> bool:
        """Whether any run's job is still in the worker's hands (never waits)."""
        return self.inner.busy()

    def close(self) -> None:
        self.inner.close()

    def _deliver(self, results: list) -> None:
        for result in results:
            self.inbox[self.owners.popleft()].append(result)


class OffloaderView:
    """Run k's offloader (as an `Offloader` to it): its own jobs in, its own results out."""

    def __init__(self, shared: SharedOffloader, k: int):
        self.shared, self.k = shared, k

    @property
    def failed(self) -> BaseException | None:
        return self.shared.inner.failed

    def submit(self, job) -> None:
        self.shared.inner.submit(job)  # first: an inline job that raises is not owed to anyone
        self.shared.owners.append(self.k)

    def _take(self) -> list:
        mine, self.shared.inbox[self.k] = self.shared.inbox[self.k], []
        return mine

    def ready(self) -> list:
        self.shared._deliver(self.shared.inner.ready())
        return self._take()

    def drain(self) -> list:
        self.shared._deliver(self.shared.inner.drain())  # the other replicas' too: they keep them for later
        return self._take()

    def close(self) -> None:
        self.shared.open -= 1
        if self.shared.open == 0:  # the last run to finish stops the worker
            self.shared.inner.close()


def _ignore_stop_signals() -> None:
    """In the worker, between fork and exec: ignore Ctrl-C and SIGTERM sent to the whole process group
    (the training process handles them and closes our input). An ignored disposition survives exec and
    Python keeps it, so the worker cannot be interrupted while `-m` imports the ganlab.evaluation
    package, before the worker's own module (which ignores them too) even runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _serve() -> None:
    """The worker: complete each job read from stdin, write the result (or the error) to stdout.
    It ends quietly when the training process closes its stdin, goes away, or stops reading."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    _die_with(parent)
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the answer stream
    os.nice(5)  # pictures can wait; training should not
    while True:
        try:
            job = pickle.load(jobs)
        except EOFError:  # the training process closed our input: done. os._exit: every answer is
            sys.stderr.flush()  # flushed, and tearing down matplotlib, scipy and POT took 0.7-0.8 s the run waited for
            os._exit(0)
        except pickle.UnpicklingError:
            if _orphaned(parent):  # a job cut short by the training process's death
                os._exit(0)
            raise
        try:
            answer = complete(job)
        except Exception as exc:  # noqa: BLE001 - sent back and raised in the training process
            answer = RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
        except (BrokenPipeError, ConnectionResetError):
            # Nobody reads our answers any more (the training process died). os._exit: a normal
            # exit would flush stdout again and print "Exception ignored ... BrokenPipeError".
            os._exit(0)


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when the training process dies (kill -9 included), and
    exit at once if it is already gone. Linux only (prctl); elsewhere the worker ends at its next
    read or write on the closed pipes."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl in this libc: the pipes still end the worker
            pass
        # PR_SET_PDEATHSIG fires when the thread that started us exits: run() starts the Offloader
        # and closes it in the same thread, so that is the training's end too.
    if _orphaned(parent):  # the parent died before prctl took effect: no signal will come
        os._exit(0)


def _orphaned(parent: int) -> bool:
    """Whether the training process that started this worker is gone (we were re-parented)."""
    return bool(parent) and os.getppid() != parent


if __name__ == "__main__":
    # Serve from the imported module, not from __main__: the jobs' classes pickle by their module's name.
    from ganlab.evaluation.worker import _serve as serve

    serve()
