"""Which deflate implementation reads and writes gzip.

python-isal and zlib-ng (the `fast` extra: `pip install 'lltrace[fast]'`, wheels only) inflate
2-2.5x and deflate 2-6x faster than the standard zlib, with the same format. Each is used
when importable, else the standard library; `LLTRACE_DEFLATE=zlib` (or `isal`, `zlib-ng`)
forces one, e.g. to compare them. Inflating prefers isal (the fastest). Deflating takes
zlib's levels 1-9: levels 1-3 prefer isal (its levels 1-3: ~0.07 s per 100 MB of trace JSON
at level 1, smaller than zlib's level 1), 4-9 prefer zlib-ng (the same levels as zlib, ~1.5x
faster); isal alone maps 4-9 onto its 3. gzip_writer compresses in a thread of its own when
more than one core is usable (the caller keeps its core for parsing and serializing).
"""
from __future__ import annotations

import gzip
import importlib
import io
import os
import queue
import threading
import zlib
from types import ModuleType
from typing import BinaryIO, NamedTuple

LEVELS = (1, 9)          # zlib's scale: 1 fastest ... 9 smallest
DEFAULT_LEVEL = 6        # zlib's and gzip's default (what `lltrace export` always wrote)
_NAMES = ("isal", "zlib-ng", "zlib")


class Backend(NamedTuple):
    name: str                  # "isal" | "zlib-ng" | "zlib"
    zlib: ModuleType           # decompressobj / compressobj / error, as the zlib module has them
    gzip_file: type            # a gzip.GzipFile work-alike (filename, mode, compresslevel, fileobj, mtime)


def _load(name: str) -> Backend | None:
    try:
        if name == "isal":
            return Backend(name, importlib.import_module("isal.isal_zlib"),
                           importlib.import_module("isal.igzip").GzipFile)
        if name == "zlib-ng":
            return Backend(name, importlib.import_module("zlib_ng.zlib_ng"),
                           importlib.import_module("zlib_ng.gzip_ng").GzipFile)
    except ImportError:
        return None
    return Backend("zlib", zlib, gzip.GzipFile)


def backend(prefer: tuple[str, ...]) -> Backend:
    """The first importable of `prefer`, then zlib; LLTRACE_DEFLATE overrides (an unknown or
    missing one falls back to zlib: speed is all that changes)."""
    forced = os.environ.get("LLTRACE_DEFLATE", "").strip().lower()
    if forced in _NAMES:
        prefer = (forced,)
    for name in prefer:
        b = _load(name)
        if b is not None:
            return b
    return _load("zlib")


def inflater() -> Backend:
    return backend(("isal", "zlib-ng"))


def deflater(level: int = DEFAULT_LEVEL) -> Backend:
    return backend(("isal", "zlib-ng") if level <= 3 else ("zlib-ng", "isal"))


def errors() -> tuple[type[BaseException], ...]:
    """zlib.error of every backend that is importable (each has its own class)."""
    out = [zlib.error]
    for name in ("isal", "zlib-ng"):
        b = _load(name)
        if b is not None and b.zlib.error not in out:
            out.append(b.zlib.error)
    return tuple(out)


BUFFER = 1 << 20    # bytes per GzipFile.write (a GzipFile compresses each write() call: one per event is slow)
THREAD_DEPTH = 4    # writes queued for the compression thread at most (each <= BUFFER or one caller's write)


def gzip_writer(fileobj: BinaryIO, level: int = DEFAULT_LEVEL, *,
                thread: bool | None = None) -> tuple[GzipStream, str]:
    """A gzip stream onto `fileobj` (mtime 0, no file name: the same bytes for the same input),
    buffered by BUFFER bytes. Returns (stream, backend name).

    close() ends the gzip member (not `fileobj`) and raises any error of the compression or of
    `fileobj`'s writes; abort(), on the caller's error path, drops what is pending and raises
    nothing. One of them must come before `fileobj` is closed.

    With `thread` (the default when more than one core is usable) the compression and the
    writes to `fileobj` run in a thread of their own: zlib's, zlib-ng's and isal's compress()
    and crc32() release the GIL, so on 2 cores deflate leaves the caller's core (export: ~1.1 s
    of its ~3.3 s for 156 MB at level 6 on a 2-core VM). The GzipFile gets the very same
    write() calls either way (what a BufferedWriter of BUFFER bytes passes on, in order), so
    the compressed bytes are identical too: zlib-ng's and isal's output depends on how the
    input is cut into calls (1 MB buffers against 4 MB ones differ)."""
    b = deflater(level)
    lvl = min(level, 3) if b.name == "isal" else level   # isal's levels are 0-3
    gz = b.gzip_file(filename="", mode="wb", compresslevel=lvl, fileobj=fileobj, mtime=0)
    if thread is None:   # on one core the thread only adds switches (measured: no gain)
        thread = _usable_cores() > 1
    return GzipStream(_ThreadSink(gz) if thread else _Sink(gz), BUFFER), b.name


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))   # taskset / cgroup cpusets
    except AttributeError:                     # not on Linux
        return os.cpu_count() or 1


class GzipStream(io.BufferedWriter):
    """What gzip_writer returns: a BufferedWriter (its C write() for the many small writes)
    whose full buffers go to a _Sink, plus abort() for the error path."""

    def abort(self) -> None:
        self.raw.drop()
        try:
            self.close()
        except Exception:   # noqa: BLE001 - the caller's own error is the one to report
            pass


def _close_quietly(gz) -> None:
    """End a GzipFile that was dropped: now, not in a finalizer writing to a closed file."""
    try:
        gz.close()
    except Exception:   # noqa: BLE001
        pass


class _Sink(io.RawIOBase):
    """Full buffers into the GzipFile, in the caller's thread (what gzip_writer always did)."""

    def __init__(self, gz):
        self.gz = gz
        self.dropped = False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if not self.dropped:
            self.gz.write(b)
        return len(b)

    def drop(self) -> None:
        self.dropped = True

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.dropped:
            _close_quietly(self.gz)
        else:
            self.gz.close()


_END = object()


class _ThreadSink(_Sink):
    """Full buffers into the GzipFile in a thread of its own, through a bounded queue.

    The thread takes from the queue until the end marker whatever happens (after an error it
    drops what it gets), so the caller's put() never blocks for good; the caller gets the
    thread's error, once, at its next write() or at close(). After drop() the thread skips what
    is queued: an abort waits for one chunk's compression at most."""

    def __init__(self, gz):
        super().__init__(gz)
        self.error: BaseException | None = None
        self.reported = False
        self.queue: queue.Queue = queue.Queue(THREAD_DEPTH)
        self.thread = threading.Thread(target=self._run, name="lltrace-gzip", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not _END:
            if self.error is None and not self.dropped:
                try:
                    self.gz.write(chunk)
                except BaseException as exc:   # noqa: BLE001 - handed to the caller's thread
                    self.error = exc
        if self.error is None and not self.dropped:
            try:
                self.gz.close()
            except BaseException as exc:   # noqa: BLE001
                self.error = exc
        else:
            _close_quietly(self.gz)

    def _raise(self) -> None:
        if self.error is not None and not self.dropped and not self.reported:
            self.reported = True
            raise self.error

    def write(self, b) -> int:
        self._raise()
        if not self.dropped and self.error is None:
            self.queue.put(bytes(b))   # a copy: the BufferedWriter reuses its buffer
        return len(b)

    def close(self) -> None:
        if self.closed:
            return
        io.RawIOBase.close(self)
        self.queue.put(_END)
        self.thread.join()
        self._raise()
