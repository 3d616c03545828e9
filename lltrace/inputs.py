"""Guards for what a user points lltrace at: a path is read only if it is a regular file or a
directory (a FIFO, a device or a socket would block a read forever, or never end), a path
that cannot be looked at is a one-line error, and text from a file is made printable (a lone
UTF-16 surrogate such as `"\\ud800"` is valid JSON but cannot be encoded for a terminal).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from lltrace.errors import LltraceError

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str | None:
    return next((what for test, what in _SPECIAL if test(mode)), None)


def _refuse(path: Path | str, what: str) -> LltraceError:
    return LltraceError(f"{path} is {what}, not a file", "lltrace reads regular files and run directories")


def os_error(path: Path | str, exc: OSError) -> LltraceError:
    """`cannot read PATH: Permission denied` (one line)."""
    return LltraceError(f"cannot read {path}: {exc.strerror or exc}")


def check_path(path: Path | str) -> os.stat_result | None:
    """The path's stat, None if it does not exist; LltraceError if it is not a regular file or
    a directory, or cannot be looked at (a directory above it is unreadable)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise os_error(path, exc) from None
    what = _kind(st.st_mode)
    if what is not None:
        raise _refuse(path, what)
    return st


def what_is(path: Path | str) -> str | None:
    """"a FIFO (named pipe)", "a directory", ... for what is not a regular file; None for a
    regular file or a path that cannot be looked at."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "a dangling link" if os.path.islink(path) else None
    if stat.S_ISREG(mode):
        return None
    return "a directory" if stat.S_ISDIR(mode) else _kind(mode) or "not a regular file"


def is_regular_file(path: Path | str) -> bool:
    """Path.is_file() that is False (not an exception) when the path cannot be looked at."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: Path | str) -> BinaryIO:
    """Open a regular file for reading (binary) without blocking: a FIFO is opened non-blocking,
    seen for what it is and refused, so there is no window between the check and the open."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise os_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise LltraceError(f"{path} is a directory, not a file")
        what = _kind(st.st_mode)
        if what is not None:
            raise _refuse(path, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _clean_str(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:  # lone surrogates (from "\\ud800" escapes or surrogateescape): U+FFFD
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


def printable(obj: Any) -> Any:
    """`obj` (decoded JSON) with every string, keys too, encodable as UTF-8. Containers are
    cleaned in place, without recursion: decoded JSON can nest as deep as the decoder allows."""
    if isinstance(obj, str):
        return _clean_str(obj)
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k in list(item):
                v = item[k]
                if isinstance(v, str):
                    v = _clean_str(v)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
                if isinstance(k, str) and _clean_str(k) is not k:
                    del item[k]
                    k = _clean_str(k)
                item[k] = v
        elif isinstance(item, list):
            for i, v in enumerate(item):
                if isinstance(v, str):
                    item[i] = _clean_str(v)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
    return obj
