"""The run directory's files (docs/FORMATS.md §2) as a reader checks them.

A run directory may come from a killed run, another lltrace version, or a hand edit. Every
reader (budget, diff, export, view) passes what it decoded through these checks: a value of
the wrong type or out of range is dropped with a warning naming the file and the key, so
no consumer meets a string where a number belongs, and nothing is left out without a word.

- `check_meta(meta, warnings)`: meta.json; a run still marked `running` whose process is
  gone (same host, pid dead or reused) becomes status `killed`.
- `check_summary(summary, warnings)`, `check_frames(lines, warnings)`,
  `check_events(lines, warnings)`: summary.json, frames.jsonl, events.jsonl.
- `process_gone(meta)`: True / False, or None when this machine cannot tell.
"""
from __future__ import annotations

import os
import platform
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from lltrace.inputs import printable

KILLED = "killed"
MAX_S = 1e7            # 115 days: beyond it a time in seconds is a corrupt value
MAX_MS = MAX_S * 1e3

Seconds = Annotated[float, msgspec.Meta(ge=-MAX_S, le=MAX_S)]
Ms = Annotated[float, msgspec.Meta(ge=0, le=MAX_MS)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class _Loose(msgspec.Struct, forbid_unknown_fields=False):
    """Unknown keys are fine (newer writers add some); known keys must have their type."""


class _Device(_Loose):
    type: str | None = None
    name: str | None = None
    memory_bytes: Count | None = None
    index: int | None = None


class _End(_Loose):
    reason: str | None = None
    message: str | None = None
    time: str | None = None
    frames: Count | None = None
    events: Count | None = None


class _TimeBase(_Loose):
    time_ns: int | None = None
    perf_counter_ns: int | None = None
    marker: str | None = None


class _Blocks(_Loose):
    blocks: tuple[Count, Count] | None = None


class _Window(_Loose):
    blocks: tuple[Count, Count] | None = None
    file: str | None = None
    partial: bool | None = None


META_TYPES: dict[str, Any] = {
    "lltrace_version": str, "run_id": str, "command": list[str], "preset": str | None,
    "knobs": dict[str, Any] | None, "model": dict[str, Any] | None, "device": _Device | None,
    "attention_backend": str | None,
    "ceilings": dict[str, Annotated[float, msgspec.Meta(gt=0, le=1e6)] | None] | None,
    "flops": dict[str, Annotated[float, msgspec.Meta(ge=0)] | None] | None,
    "started": str | None, "clock_sync": _TimeBase | None, "t0": _TimeBase | None,
    "profile": _Blocks | None, "status": str, "end": _End | None, "regions_level": str | None,
    "num_blocks": Count | None, "prompts": list[str] | None, "switches": dict[str, str] | None,
    "pyspy": dict[str, Any] | None, "profile_windows": list[_Window] | None, "files": list[str] | None,
    "optimizations": dict[str, Any] | None, "pid": Annotated[int, msgspec.Meta(gt=0)] | None,
    "host": str | None,
}

SUMMARY_TYPES: dict[str, Any] = {
    "frames": Count, "blocks": Count, "steady_frames": Count,
    "ms_per_frame": dict[str, Ms | None] | None, "ms_per_block": dict[str, Ms | None] | None,
    "fps": Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None, "first_frame_ms": Ms | None,
    "prompt_switch_ms": list[Ms], "peak_mem_bytes": Count | None, "peak_host_rss_bytes": Count | None,
    "partial": bool, "status": str, "clock": str, "profiled_frames": Count, "cold_frames": Count,
    "warm_first_frame_ms": Ms | None, "cold_start": dict[str, Any] | None,
}


class FrameLine(msgspec.Struct, forbid_unknown_fields=False):
    """One line of frames.jsonl."""
    frame: Count
    block: Count
    ready_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_S)]
    latency_ms: Ms
    block_ms: Ms
    frames_in_block: Annotated[int, msgspec.Meta(ge=1)]
    prompt: Count = 0
    kind: Literal["first", "steady", "switch", "profiled", "cold"] = "steady"
    clock: str = "host"
    compile_ms: Ms = 0.0
    graph_capture_ms: Ms = 0.0


class _SwitchData(_Loose):
    phase: str | None = None
    prompt: Count | None = None
    latency_ms: Ms | None = None
    block: Count | None = None
    requested_s: Seconds | None = None


class _WindowData(_Loose):
    phase: str | None = None
    blocks: tuple[Count, Count] | None = None
    block: Count | None = None
    file: str | None = None


class EventLine(msgspec.Struct, forbid_unknown_fields=False):
    """One line of events.jsonl (`data` checked further for the kinds readers compute with)."""
    kind: str
    t_s: Seconds | None = None
    time_ns: int | None = None
    message: str = ""
    data: dict[str, Any] | None = None


_DATA_TYPES = {"prompt_switch": _SwitchData, "profile_window": _WindowData}


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160]


def _check_keys(d: dict[str, Any], types: dict[str, Any], name: str, warnings: list[str]) -> dict[str, Any]:
    bad: list[str] = []
    first = ""
    for key, typ in types.items():
        if key not in d:
            continue
        try:
            msgspec.convert(d[key], typ)
        except msgspec.ValidationError as exc:
            bad.append(key)
            first = first or f"{key}: {_short(exc)}"
            del d[key]
    if bad:
        warnings.append(f"{name}: {len(bad)} key(s) do not follow FORMATS.md §2 and were ignored "
                        f"({', '.join(bad)}; {first})")
    return d


def _whole(obj: Any, name: str, warnings: list[str]) -> dict[str, Any] | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        warnings.append(f"{name} is a JSON {_json_kind(obj)}, not an object: ignored")
        return None
    return printable(obj)


def _json_kind(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(obj), "value")


def check_meta(meta: Any, warnings: list[str], name: str = "meta.json") -> dict[str, Any] | None:
    """meta.json as decoded -> a dict whose known keys have their types (others dropped, with
    a warning), or None; a `running` run whose process is gone gets status `killed`."""
    meta = _whole(meta, name, warnings)
    if meta is None:
        return None
    meta = _check_keys(meta, META_TYPES, name, warnings)
    if meta.get("status") == "running" and not meta.get("end") and process_gone(meta):
        meta["status"] = KILLED
        warnings.append(f"killed (no end record): the run's process (pid {meta['pid']}) is gone and "
                        f"{name} still says running (SIGKILL, out of memory, or a crash)")
    return meta


def check_summary(summary: Any, warnings: list[str], name: str = "summary.json") -> dict[str, Any] | None:
    summary = _whole(summary, name, warnings)
    return None if summary is None else _check_keys(summary, SUMMARY_TYPES, name, warnings)


def _check_lines(lines: list[Any], check, name: str, warnings: list[str]) -> list[dict[str, Any]]:
    out, bad, first = [], 0, ""
    for i, line in enumerate(lines, 1):
        line = printable(line)   # msgspec cannot even look at a lone surrogate
        try:
            check(line)
        except msgspec.ValidationError as exc:
            bad += 1
            first = first or f"record {i}: {_short(exc)}"
            continue
        out.append(line)
    if bad:
        warnings.append(f"{name}: {bad} of {len(lines)} record(s) do not follow FORMATS.md §2 and were skipped "
                        f"({first})")
    return out


def check_frames(lines: list[Any], warnings: list[str], name: str = "frames.jsonl") -> list[dict[str, Any]]:
    """frames.jsonl records (decoded dicts) whose fields have their types and ranges."""
    return _check_lines(lines, lambda d: msgspec.convert(d, FrameLine), name, warnings)


def check_events(lines: list[Any], warnings: list[str], name: str = "events.jsonl") -> list[dict[str, Any]]:
    def check(d):
        e = msgspec.convert(d, EventLine)
        typ = _DATA_TYPES.get(e.kind)
        if typ is not None and e.data is not None:
            msgspec.convert(e.data, typ)
    return _check_lines(lines, check, name, warnings)


# -- is a run that says "running" still alive? ---------------------------------------------------

def _start_time(pid: int) -> float | None:
    """Unix time the process started (Linux /proc), or None; "Z" (zombie) counts as gone: inf."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    if rest[0] in (b"Z", b"X"):
        return float("inf")
    return btime + int(rest[19]) / os.sysconf("SC_CLK_TCK")


def process_gone(meta: dict[str, Any]) -> bool | None:
    """Whether the process that wrote this meta.json has ended: its pid is dead, a zombie, or
    now another process (one started after the run did). None: no pid, or another host."""
    pid, host = meta.get("pid"), meta.get("host")
    if not isinstance(pid, int) or pid <= 0 or host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, another user's
        pass
    except OSError:
        return None
    started = meta.get("started")
    start = _start_time(pid)
    if start is None:
        return False
    if start == float("inf"):
        return True
    try:
        run_started = datetime.fromisoformat(started).timestamp() if isinstance(started, str) else None
    except ValueError:
        run_started = None
    return run_started is not None and start > run_started + 1.0   # the pid was reused
