"""Streaming reader for Chrome/Kineto trace JSON, plain or gzip, whole or cut off.

The file is never materialised: decompressed chunks are split into batches of complete
events inside `traceEvents`, and each batch is decoded by a typed msgspec decoder that
builds only the fields we need (ph, cat, name, ts, dur, pid, tid, id, a few args) and
skips the rest in C. Other top-level keys (deviceProperties, baseTimeNanoseconds,
traceName, displayTimeUnit, ...) are read with the standard json module, and a bare JSON
array of events is accepted too.

A cut-off or damaged file keeps every complete event before the damage; the result says
where it stopped. Errors that leave nothing to show raise LltraceError (one line).

`read_events(..., raw=True)` is the same reader for tools that copy events (lltrace export):
each event reaches the sink whole, as its own JSON bytes. `read_events(..., copy=c)` decodes
for the sink and hands `c` the same events as bytes in one pass (see `Copy`).
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from lltrace.errors import LltraceError
from lltrace.inputs import open_regular, printable
from lltrace.trace import deflate
from lltrace.trace.events import EventCollector, RawEvent, lenient_event

Progress = Callable[[int, int], None]   # (bytes read from the file, file size)

CHUNK = 4 << 20          # decompressed bytes per decoded batch
RAW_READ = 1 << 20       # bytes read from the file at a time
MAX_EVENT = 256 << 20    # a single "event" larger than this means the file is not a trace
MAX_HEADER_VALUE = 64 << 20

_WS = re.compile(rb"[ \t\r\n]*")
_SEP = re.compile(rb"[ \t\r\n,]*")
_AFTER_EVENT = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*\{")
_STR_SEP = re.compile(r"[ \t\r\n,]*")
# Strings (maybe cut off at the end) and brackets: to step over a value too deep to decode.
_SCAN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)|[\[\]{}]', re.DOTALL)
_NUMBER = re.compile(r"-?[0-9.eE+\-]+")
_JSON = json.JSONDecoder()


class Copy(Protocol):
    """Receives the events as the file has them, alongside the sink (one parse for both)."""

    def start(self, top: dict[str, Any]) -> None:
        """The events array begins; `top` holds the keys read before it."""

    def chunk(self, data: memoryview, n: int) -> None:
        """`n` complete events, verbatim and comma-separated, exactly those of the sink's last batch."""

    def add(self, items: list) -> None:
        """Events of the event-by-event path: msgspec.Raw, or RawEvent (see _raw_item)."""


class _Stop(Exception):
    """The stream cannot go on; `reason` says why (kept events stay valid)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Bytes:
    """The decompressed bytes of a file, chunk by chunk.

    gzip is read with zlib's streaming API directly (hand-written because gzip.GzipFile raises
    on a truncated stream and drops the data it had already decompressed), through python-isal
    or zlib-ng when installed (lltrace.trace.deflate); several gzip members in a row are read
    one after the other. Each chunk inflates to at most RAW_READ bytes (`max_length`, the rest
    of the input waits in `unconsumed_tail`): one compressed MB holds ~15 MB of JSON, and
    batches that size would grow the memory the decoded events take.
    """

    def __init__(self, path: Path, progress: Progress | None, start: int = 0, limit: int | None = None):
        self.f = open_regular(path)   # a FIFO or a device is refused, not read forever
        self.size = os.fstat(self.f.fileno()).st_size
        self.progress = progress
        self.gz = self.f.read(2) == b"\x1f\x8b"
        if (start or limit is not None) and self.gz:
            raise ValueError("a part of a gzip stream cannot be read on its own")
        self.f.seek(start)
        self.offset = start     # of the next plain read
        self.limit = limit      # a part of a plain file ends here (see _split_read)
        self.at_limit = False
        self.zlib = deflate.inflater().zlib if self.gz else None
        self.z = self.zlib.decompressobj(31) if self.gz else None
        self.zlib_errors = deflate.errors() if self.gz else ()
        self.pending = b""                # compressed bytes read but not inflated yet
        self.eof = False
        self.error: str | None = None     # set when the stream itself ended abnormally
        self.produced = 0

    def close(self) -> None:
        self.f.close()

    def read(self) -> bytes:
        """Next decompressed chunk; b"" once the stream is over."""
        while not self.eof:
            if self.gz and self.pending:
                out = self._inflate(self.pending)
            else:
                want = RAW_READ if self.limit is None else min(RAW_READ, self.limit - self.offset)
                raw = self.f.read(want) if want > 0 else b""
                self.offset += len(raw)
                if self.progress is not None:
                    self.progress(self.f.tell(), self.size)
                if not self.gz:
                    if not raw:
                        self.eof = True
                        self.at_limit = self.limit is not None and self.offset >= self.limit
                        return b""
                    self.produced += len(raw)
                    return raw
                out = self._inflate(raw)
            if out:
                self.produced += len(out)
                return out
        return b""

    def _inflate(self, raw: bytes) -> bytes:
        z = self.z
        self.pending = b""
        if not raw:
            self.eof = True
            if not z.eof:
                self.error = "the gzip stream ends early (the file was cut off)"
                try:
                    return z.flush()
                except self.zlib_errors:
                    return b""
            return b""
        if z.eof:           # trailing bytes after the last member
            return b""
        try:
            out = z.decompress(raw, RAW_READ)
        except self.zlib_errors as exc:
            self.eof = True
            self.error = f"the gzip data is corrupt near byte {self.f.tell()} of the file ({exc})"
            return b""
        if not z.eof:
            self.pending = z.unconsumed_tail
        elif z.unused_data.startswith(b"\x1f\x8b"):   # another member follows (else: padding, ignored)
            self.pending = z.unused_data
            self.z = self.zlib.decompressobj(31)
        return out


@dataclass
class ReadResult:
    top: dict[str, Any] = field(default_factory=dict)
    found_events: bool = False      # a traceEvents array (or a bare array) was found
    partial: bool = False
    stop_reason: str | None = None
    stopped_at_byte: int | None = None   # offset in the decompressed JSON
    warnings: list[str] = field(default_factory=list)
    gzip: bool = False
    skipped: int = 0                # array elements stepped over undecoded (each named in warnings)


class _Parser:
    def __init__(self, src: _Bytes, sink: EventCollector, copy: Copy | None = None):
        self.src = src
        self.sink = sink
        self.copy = copy
        self.buf = bytearray()   # appended and cut from the front in place: one huge event costs O(size)
        self.pos = 0          # parse position in buf
        self.base = 0         # absolute offset of buf[0]
        self.decoder = msgspec.json.Decoder(list[RawEvent])
        self.result = ReadResult(gzip=src.gz)
        self.skipped: dict[str, int] = {}   # why -> array elements stepped over undecoded
        self.landed = False   # a part's events stopped where its limit is, between two events

    # -- buffer --
    def _more(self) -> bool:
        chunk = self.src.read()
        if not chunk:
            return False
        drop = max(self.pos - 1, 0)   # keep the byte before pos: a batch's "[" goes there
        self.base += drop
        del self.buf[:drop]
        self.buf += chunk
        self.pos -= drop
        return True

    def _fill(self, n: int) -> None:
        while len(self.buf) - self.pos < n and self._more():
            pass

    def _skip(self, pattern=_WS) -> int | None:
        """Skip whitespace (and commas with _SEP); next byte, or None at the end of input."""
        while True:
            self.pos = pattern.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return None

    def _abs(self, i: int | None = None) -> int:
        return self.base + (self.pos if i is None else i)

    # -- top level --
    def run(self) -> ReadResult:
        try:
            return self._run()
        finally:
            self.result.skipped = sum(self.skipped.values())
            self.result.warnings.extend(f"{n} array element(s) {why} were skipped" for why, n in self.skipped.items())

    def _run(self) -> ReadResult:
        first = self._skip()
        if first is None:
            raise LltraceError(self._empty_message())
        if self.buf.startswith(b"\xef\xbb\xbf", self.pos):   # UTF-8 byte order mark
            self.pos += 3
            first = self._skip()
        if first == ord("["):
            self.pos += 1
            self.result.found_events = True
            if self.copy is not None:
                self.copy.start(self.result.top)
            self._events()
            return self.result
        if first != ord("{"):
            raise LltraceError("not a Chrome/Kineto trace: the file is not a JSON object or array"
                               + (" (is it a gzip file with another name?)" if not self.src.gz else ""))
        self.pos += 1
        try:
            where = self._members()
        except _Stop as stop:
            raise LltraceError(f"not a readable trace: {stop.reason}") from None
        if where != "events":
            raise LltraceError("not a Chrome/Kineto trace: the JSON object has no traceEvents")
        self.result.found_events = True
        if self.copy is not None:
            self.copy.start(dict(self.result.top))
        self._tail()
        return self.result

    def _tail(self) -> None:
        """The events, then the top-level keys after them."""
        if self._events():
            try:
                if self._members() == "events":
                    self.result.warnings.append("a second traceEvents key was ignored")
            except _Stop as stop:
                self.result.warnings.append(f"the keys after traceEvents are unreadable ({stop.reason})")

    def _empty_message(self) -> str:
        if self.src.error:
            return f"no trace data could be read: {self.src.error}"
        return "the file is empty"

    def _members(self) -> str:
        """Read `"key": value` pairs of the top-level object until traceEvents or the end."""
        while True:
            c = self._skip(_SEP)
            if c is None:
                raise _Stop(self.src.error or "the JSON object is cut off")
            if c == ord("}"):
                self.pos += 1
                return "end"
            key = self._value()
            if not isinstance(key, str):
                raise _Stop(f"expected a key at byte {self._abs()}")
            if self._skip() != ord(":"):
                raise _Stop(f"expected ':' after {key!r} at byte {self._abs()}")
            self.pos += 1
            c = self._skip()
            if key == "traceEvents":
                if c != ord("["):
                    raise _Stop("traceEvents is not an array")
                self.pos += 1
                return "events"
            self.result.top[key] = self._value()

    def _value(self) -> Any:
        """Decode one small JSON value at pos (header/trailer keys) with the json module."""
        window = 1 << 16
        while True:
            if self._skip() is None:
                raise _Stop(self.src.error or "the file ends inside the JSON header")
            text = self.buf[self.pos:self.pos + window].decode("utf-8", "surrogateescape")
            found, value, end, err_at, why = False, None, 0, 0, None
            try:
                value, end = _JSON.raw_decode(text)
                found = True
            except json.JSONDecodeError as exc:
                err_at = exc.pos
            except (RecursionError, ValueError) as exc:   # too deep, or an integer of > 4300 digits
                end = _value_end(text, 0)
                if end is not None:   # step over it; the key reads as null
                    found = True
                    why = "nested too deeply to decode" if isinstance(exc, RecursionError) else \
                        "holding an integer too long to read"
            # a number that ends the window may go on in bytes not read yet
            if not found or end == len(text):
                if self.pos + window < len(self.buf):
                    window *= 4
                    continue
                if window <= MAX_HEADER_VALUE and self._more():
                    continue
                if not found:
                    raise _Stop(f"invalid JSON at byte {self._abs() + err_at}")
            if why:
                self.result.warnings.append(f"a header value {why} (at byte {self._abs()}) was ignored")
            self.pos += len(text[:end].encode("utf-8", "surrogateescape"))
            return printable(value)

    # -- traceEvents --
    def _stop(self, reason: str, at: int | None = None) -> bool:
        r = self.result
        r.partial = True
        r.stop_reason = reason
        r.stopped_at_byte = self._abs(at)
        return False

    def _last_cut(self, start: int) -> int | None:
        """Index of the `}` closing the last event that looks complete (followed by `, {`).

        Hand-written batch splitter: a `}` inside a string or a nested object can fool it,
        and then the batch fails to decode and is retried event by event.
        """
        buf, end = self.buf, len(self.buf)
        for _ in range(64):
            p = buf.rfind(b"}", start, end)
            if p < 0:
                return None
            if _AFTER_EVENT.match(buf, p + 1):
                return p
            end = p
        return None

    def _events(self) -> bool:
        """Decode the events array; True when its closing `]` was reached."""
        target = CHUNK
        while True:
            self._fill(target)
            c = self._skip(_SEP)
            if c is None:
                if self.src.at_limit:    # a part of the file, read to its end (_split_read)
                    self.landed = True
                    return False
                return self._stop(self.src.error or "the file ends inside traceEvents (the closing ] is missing)")
            if c == ord("]"):
                self.pos += 1
                return True
            start, eof = self.pos, self.src.eof
            cut = self._last_cut(start)
            if cut is not None:
                try:
                    batch = self._decode(start, cut + 1)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):   # a bad split, odd types, damage
                    pass
                else:
                    self.sink.add(batch)
                    if self.copy is not None:
                        with memoryview(self.buf) as view, view[start:cut + 1] as piece:
                            self.copy.chunk(piece, len(batch))
                    self.pos = cut + 1
                    target = CHUNK
                    continue
            if eof:
                used, status = self._slow(self.buf[start:])
            elif cut is not None:
                used, status = self._slow(self.buf[start:cut + 1])
            else:
                if target >= MAX_EVENT:
                    return self._stop(f"no end of event within {MAX_EVENT >> 20} MB: not a trace")
                target *= 2   # one event is longer than the batch: read more
                continue
            self.pos = start + used
            if status == "end":
                self.pos += 1
                return True
            if status == "ok":
                continue
            if status == "bad":
                return self._stop(f"invalid JSON in traceEvents at byte {self._abs()}")
            if eof:   # status "more": cut off mid-event
                return self._stop(self.src.error or f"the file ends in the middle of an event at byte {self._abs()}")
            if used == 0:
                if target >= MAX_EVENT:
                    return self._stop(f"no end of event within {MAX_EVENT >> 20} MB: not a trace")
                target *= 2

    def _decode(self, start: int, end: int) -> list:
        """Decode the events buf[start:end] as one array, without copying them: the bytes on
        either side are "[" and "]" for the time of the decode (a RawEvent holds no reference
        to its input)."""
        buf = self.buf
        if start == 0 or end >= len(buf):
            return self.decoder.decode(b"[" + buf[start:end] + b"]")
        before, after = buf[start - 1], buf[end]
        buf[start - 1], buf[end] = 0x5B, 0x5D   # "[", "]"
        try:
            with memoryview(buf) as view, view[start - 1:end + 1] as batch:
                return self.decoder.decode(batch)
        finally:
            buf[start - 1], buf[end] = before, after

    def _slow(self, piece: bytes) -> tuple[int, str]:
        """Decode events one by one (the json module, loose types).

        Returns (bytes used, status): "ok" (all used), "end" (at the closing `]`), "more"
        (the next event does not end inside `piece`) or "bad" (invalid JSON).
        """
        text = piece.decode("utf-8", "surrogateescape")
        n, i, batch, copied = len(text), 0, [], []

        def used(k: int) -> int:
            return len(text[:k].encode("utf-8", "surrogateescape"))

        try:
            while True:
                i = _STR_SEP.match(text, i).end()
                if i >= n:
                    return len(piece), "ok"
                if text[i] == "]":
                    return used(i), "end"
                try:
                    obj, j = _JSON.raw_decode(text, i)
                except json.JSONDecodeError as exc:
                    cut_off = exc.pos >= n - 1 or exc.msg.startswith("Unterminated string")
                    return used(i), "more" if cut_off else "bad"
                except (RecursionError, ValueError) as exc:   # too deep, or an integer of > 4300 digits
                    j = _value_end(text, i)
                    if j is None:
                        return used(i), "more"
                    why = ("nested too deeply to decode" if isinstance(exc, RecursionError)
                           else "holding an integer too long to read")
                    self.skipped[why] = self.skipped.get(why, 0) + 1
                    self.sink.count_invalid()
                    i = j
                    continue
                event = self._convert(obj)
                if event is None:
                    self.sink.count_invalid()
                else:
                    batch.append(event)
                if self.copy is not None and (item := _raw_item(obj)) is not None:
                    copied.append(item)
                i = j
        finally:
            self.sink.add(batch)
            if copied:
                self.copy.add(copied)

    def _convert(self, obj):
        """One event decoded by the json module -> what the sink takes (None: invalid)."""
        return lenient_event(obj)


def _value_end(text: str, i: int) -> int | None:
    """End of the JSON value at text[i] found without decoding it (no recursion: for values
    nested deeper than the decoder can go); None when it does not end inside `text`."""
    if text[i] not in "[{":
        m = _NUMBER.match(text, i)
        return m.end() if m and m.end() < len(text) else None
    depth = 0
    for m in _SCAN.finditer(text, i):
        tok = m.group()
        if tok[0] == '"':
            if len(tok) < 2 or not tok.endswith('"') or m.end() == len(text) and tok.endswith('\\"'):
                return None   # a string cut off by the end of the piece
            continue
        depth += 1 if tok in "[{" else -1
        if depth == 0:
            return m.end()
    return None


def open_bytes(path: Path, progress: Progress | None = None) -> _Bytes:
    """The (gunzipped) byte stream of a trace file; an unreadable file is a one-line LltraceError."""
    try:
        return _Bytes(path, progress)
    except OSError as exc:
        raise LltraceError(f"cannot read {path}: {exc.strerror or exc}") from None


class _RawParser(_Parser):
    """Hands the sink raw event bytes (msgspec.Raw) on both paths."""

    def __init__(self, src: _Bytes, sink):
        super().__init__(src, sink)
        self.decoder = msgspec.json.Decoder(list[msgspec.Raw])

    def _decode(self, start: int, end: int) -> list:
        # msgspec.Raw points into the buffer it was decoded from: give it bytes of its own
        return self.decoder.decode(b"[" + self.buf[start:end] + b"]")

    def _convert(self, obj):
        return _raw_item(obj)


def _raw_item(obj):
    """An event of the event-by-event path, for copying: re-encoded whole, or (values JSON
    cannot hold: NaN / Infinity, bytes that are not UTF-8) a RawEvent with the core fields only."""
    if not isinstance(obj, dict):
        return None
    try:
        return msgspec.Raw(json.dumps(obj, allow_nan=False).encode("utf-8", "surrogateescape"))
    except (ValueError, UnicodeEncodeError):
        return lenient_event(obj)


# -- a big plain file is read in parts at the same time, one process per core --

# bytes per part at least. On the 2-core CI-class machine, quiet (BENCHMARKS.md #18): 2 parts
# made a 156 MB budget slower (1.44 against 1.22 s: the fork, the merge and a second decode
# buffer) and a 1.5 GB one faster (8.4 against 10.1 s), so only files of 512 MB and more split.
SPLIT_MIN = 256 << 20
MAX_PARTS = 8
PARTS_ENV = "LLTRACE_READ_PARTS"   # at most this many parts (1: one process, as before)


def _part_count(size: int) -> int:
    """How many processes read a plain file of `size` bytes: one per core the process may use
    (the typed decode and the collector hold the GIL, so threads would take turns), none
    where fork is not the safe default (macOS, Windows) or inside a worker (diff's side B)."""
    if not sys.platform.startswith("linux") or size < 2 * SPLIT_MIN:
        return 1
    import multiprocessing
    if multiprocessing.parent_process() is not None:
        return 1
    most = MAX_PARTS
    env = os.environ.get(PARTS_ENV, "").strip()
    if env.isdigit():
        most = max(1, int(env))
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, 1 + _idle_cores(cores), most, size // SPLIT_MIN))


def _idle_cores(cores: int) -> int:
    """Cores no other process is running on now (/proc/loadavg's running count, this one
    included): a part on a busy core only adds a fork and a merge (e.g. diff, whose side B
    is read in a worker meanwhile)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return cores - 1
    return max(0, cores - running)


def _split_points(path: Path, size: int, n: int) -> tuple[bool, list[int]]:
    """(the top level is a bare array, offsets right after an event's closing `}` near
    size * k / n). A `}` inside a string can look like one: the part before it then does not
    end cleanly there, and the rest is read in one piece (_split_read)."""
    with open_regular(path) as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        points = []
        for k in range(1, n):
            f.seek(size * k // n)
            window = f.read(1 << 20)
            i = 0
            while (p := window.find(b"}", i)) >= 0:
                if _AFTER_EVENT.match(window, p + 1):
                    at = size * k // n + p + 1
                    if not points or at > points[-1]:
                        points.append(at)
                    break
                i = p + 1
    return head.startswith(b"["), points


def _read_part(path: Path, start: int, limit: int | None, bare: bool, sink: EventCollector | None = None):
    """The events of path[start:limit] (start: just after an event), into `sink` or a new
    collector: (collector, result, skipped, landed). The last part (limit None) reads the keys
    after the events too."""
    sink = EventCollector() if sink is None else sink
    src = _Bytes(path, None, start, limit)
    try:
        p = _Parser(src, sink)
        p.base = start
        p.result.found_events = True
        if limit is None and not bare:
            p._tail()
        else:
            p._events()
    finally:
        src.close()
    return sink, p.result, p.skipped, p.landed


def _fork_part(args: tuple) -> tuple[int, int]:
    """_read_part(*args) in a forked child; (pid, the pipe its pickled answer comes on)."""
    import pickle
    import warnings
    r, w = os.pipe()
    with warnings.catch_warnings():   # 3.12+ warns on fork with threads: the child runs only this
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:   # the child: answer, then leave without running the parent's exit handlers
        code = 1
        try:
            os.close(r)
            try:
                out = ("ok", _read_part(*args))
            except Exception as exc:  # noqa: BLE001 - any failure: the parent reads that part itself
                out = ("error", f"{type(exc).__name__}: {exc}")
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _answer(pid: int, fd: int):
    import pickle
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        return pickle.loads(data) if data else ("error", "the worker died")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:   # a truncated answer
        return ("error", str(exc))


def _split_read(path: Path, sink: EventCollector, progress: Progress | None, n: int) -> ReadResult | None:
    """Read a plain file in n parts at the same time (this process the first, forked children
    the others) and merge them into `sink` in file order: the same columns, names, ids, stats
    and warnings as one pass (EventCollector.merge). A part that does not end cleanly at the
    next one's start (a false split point, damage, an error) is read again here, with all
    that follows it, in one piece; None when even the first part did not (read it all again).
    Hand-written: no library splits a JSON array at event boundaries."""
    size = os.stat(path).st_size
    bare, points = _split_points(path, size, n)
    if not points:
        return None
    starts = [0, *points]
    children = []
    try:
        for i, start in enumerate(points):
            limit = points[i + 1] if i + 1 < len(points) else None
            try:
                children.append(_fork_part((path, start, limit, bare)))
            except OSError:   # no process to be had (EAGAIN, ENOMEM): read it in one piece
                return None
        step = None
        if progress is not None:
            parts = len(starts)
            step = (lambda done, total: progress(min(done * parts, total), total))
        first = EventCollector()
        src = _Bytes(path, step, 0, points[0])
        try:
            p0 = _Parser(src, first)
            try:
                p0._run()
            except LltraceError:
                return None
        finally:
            src.close()
        if not p0.landed:
            return None
        sink.merge(first)
        result, skipped = p0.result, dict(p0.skipped)
        for i, start in enumerate(points):
            pid, fd = children[i]
            children[i] = None
            status, got = _answer(pid, fd)
            last = i + 1 == len(points)
            ok = status == "ok" and (last or got[3]) and sink.mergeable(got[0])
            if ok:
                sink.merge(got[0])
            else:   # read the rest here, from the last start known to be an event boundary
                got = _read_part(path, start, None, bare, sink)
                last = True
            _part, r, sk, _landed = got
            result.warnings.extend(r.warnings)
            for why, k in sk.items():
                skipped[why] = skipped.get(why, 0) + k
            if last:
                result.top.update(r.top)
                result.partial, result.stop_reason, result.stopped_at_byte = r.partial, r.stop_reason, r.stopped_at_byte
                break
        result.skipped = sum(skipped.values())
        result.warnings.extend(f"{k} array element(s) {why} were skipped" for why, k in skipped.items())
        return result
    finally:
        for child in children:
            if child is not None:
                pid, fd = child
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(fd)
                os.waitpid(pid, 0)


def read_events(path: Path, sink: EventCollector, progress: Progress | None = None, *,
                raw: bool = False, copy: Copy | None = None) -> ReadResult:
    """Stream `path` into `sink`; raises LltraceError when it is not a trace at all.

    `raw=True`: the sink's `add(batch)` gets msgspec.Raw items (each event's JSON bytes, every
    field kept) and, for an event JSON cannot re-encode, a RawEvent (see _RawParser).
    `copy`: the sink gets decoded events as usual and `copy` the same events as bytes (Copy)."""
    if raw and copy is not None:
        raise ValueError("raw=True and copy are exclusive")
    src = open_bytes(path, progress)
    try:
        parts = 1 if raw or copy is not None or src.gz else _part_count(src.size)
        result = None
        if parts > 1:
            src.close()
            result = _split_read(path, sink, progress, parts)
            if result is None:   # read it in one piece after all
                src = open_bytes(path, progress)
        if result is None:
            result = _RawParser(src, sink).run() if raw else _Parser(src, sink, copy).run()
    except MemoryError:
        raise LltraceError(f"{path}: out of memory while reading the trace") from None
    except OSError as exc:
        raise LltraceError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        src.close()
    if src.error and not result.partial:
        # the JSON closed cleanly but the gzip stream did not end well (e.g. bad trailer)
        result.warnings.append(src.error)
    return result
