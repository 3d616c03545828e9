"""Which deflate implementation reads and writes gzip.

python-isal and zlib-ng (the `fast` extra: `pip install 'lltrace[fast]'`, wheels only) inflate
2-2.5x and deflate 2-6x faster than the standard zlib, with the same format. Each is used
when importable, else the standard library; `LLTRACE_DEFLATE=zlib` (or `isal`, `zlib-ng`)
forces one, e.g. to compare them. Inflating prefers isal (the fastest). Deflating takes
zlib's levels 1-9: levels 1-3 prefer isal (its levels 1-3: ~0.07 s per 100 MB of trace JSON
at level 1, smaller than zlib's level 1), 4-9 prefer zlib-ng (the same levels as zlib, ~1.5x
faster); isal alone maps 4-9 onto its 3.
"""
from __future__ import annotations

import gzip
import importlib
import os
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


def gzip_writer(fileobj: BinaryIO, level: int = DEFAULT_LEVEL) -> tuple[BinaryIO, str]:
    """A gzip stream onto `fileobj` (mtime 0, no file name: the same bytes for the same input),
    buffered by 1 MB (a GzipFile compresses each write() call: one per event is slow).
    Closing it ends the gzip member, not `fileobj`. Returns (stream, backend name)."""
    import io

    b = deflater(level)
    lvl = min(level, 3) if b.name == "isal" else level   # isal's levels are 0-3
    gz = b.gzip_file(filename="", mode="wb", compresslevel=lvl, fileobj=fileobj, mtime=0)
    return io.BufferedWriter(gz, 1 << 20), b.name
