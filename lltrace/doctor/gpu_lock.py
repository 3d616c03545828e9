"""A cross-process lock between the doctor's isolated stage processes (isolate.py) sharing one GPU.

The processes run at once (building the pipeline and tracing with dynamo are CPU work), but a
section that is timed on the GPU (the profiled eager call of savings.py) must not overlap any
other process's GPU work: kernels of another CUDA context time-slice the same GPU and show up
as gaps in the profiled call, skewing what graphs would save. So it is a readers-writer lock:
GPU work (building, each streamed block) holds it shared, a timed section exclusive; CPU work
inside GPU work (dynamo tracing a stage for the compile check) lets it go meanwhile (cpu_work).

fcntl.flock on a file whose path the parent passes in LLTRACE_DOCTOR_GPU_LOCK (a lock held
by a process that dies is released by the kernel: a crashed child never blocks the others).
flock grants new shared locks while an exclusive one waits, so a timed section could starve
while the other processes stream block after block; a second file (`<path>.gate`) gives the
writer priority: a reader takes the gate only to get its shared lock, a writer holds it until
it is done. Without the variable (the doctor in one process) every section is a no-op.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Iterator

ENV = "LLTRACE_DOCTOR_GPU_LOCK"


class _GpuLock:
    def __init__(self, path: str):
        import fcntl

        self._fcntl = fcntl
        self._main = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._gate = os.open(path + ".gate", os.O_RDWR | os.O_CREAT, 0o600)
        self._mode: str | None = None   # what this process holds of the main lock: None, "sh", "ex"

    def _flock(self, fd: int, op: int) -> None:
        self._fcntl.flock(fd, op)

    def _take_shared(self) -> None:
        f = self._fcntl
        self._flock(self._gate, f.LOCK_EX)   # waits while a timed section waits or runs
        try:
            self._flock(self._main, f.LOCK_SH)
        finally:
            self._flock(self._gate, f.LOCK_UN)
        self._mode = "sh"

    def _let_go(self) -> None:
        self._flock(self._main, self._fcntl.LOCK_UN)
        self._mode = None

    @contextmanager
    def shared(self) -> Iterator[None]:
        take = self._mode is None   # nested in our own shared or exclusive section: held already
        if take:
            self._take_shared()
        try:
            yield
        finally:
            if take:
                self._let_go()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._mode == "ex":
            yield
            return
        f = self._fcntl
        before = self._mode
        # Our own shared lock goes first: holding it while waiting for the gate would deadlock
        # with a writer that holds the gate and waits for our shared lock to go.
        if before == "sh":
            self._let_go()
        self._flock(self._gate, f.LOCK_EX)
        try:
            self._flock(self._main, f.LOCK_EX)
            self._mode = "ex"
            try:
                yield
            finally:
                # back to what the caller held (a shared section around this one)
                self._flock(self._main, f.LOCK_SH if before == "sh" else f.LOCK_UN)
                self._mode = before
        finally:
            self._flock(self._gate, f.LOCK_UN)

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Let a shared section go for a while (CPU work inside GPU work); taken again after."""
        held = self._mode == "sh"
        if held:
            self._let_go()
        try:
            yield
        finally:
            if held and self._mode is None:
                self._take_shared()


_LOCK: _GpuLock | None = None


def _lock() -> _GpuLock | None:
    global _LOCK
    path = os.environ.get(ENV)
    if not path:
        return None
    if _LOCK is None:
        _LOCK = _GpuLock(path)
    return _LOCK


def gpu_work() -> AbstractContextManager[None]:
    """Untimed GPU work (building, streaming a block): other processes may do theirs at the same time."""
    lock = _lock()
    return lock.shared() if lock else nullcontext()


def cpu_work() -> AbstractContextManager[None]:
    """CPU-bound work inside gpu_work (dynamo tracing a stage: seconds): the shared lock goes
    for its length, so another process's timed section need not wait for it. GPU work inside
    it takes the lock again (gpu_work); compile.CompileProbe wraps each graph it runs so."""
    lock = _lock()
    return lock.suspended() if lock else nullcontext()


def timed_gpu() -> AbstractContextManager[None]:
    """A section timed on the GPU: no other process's GPU work runs during it."""
    lock = _lock()
    return lock.exclusive() if lock else nullcontext()
