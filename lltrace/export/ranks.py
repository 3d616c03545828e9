"""`lltrace export` of a multi-rank run: every rank's trace in one Chrome trace, one process
per rank (pid per rank, named "rank r"), with rank 0's lltrace tracks (frames, run events).

Each rank's trace has its own pids (the host process, one per GPU) and its own correlation
ids. Merged: all of a rank's events go to that rank's pid; a device's streams become threads
of it (tid moved above any host thread id, named "<device> <stream>"), flow ids get the rank
in their high bits so that rank 1's launch → kernel arrows never join rank 0's, and ts moves
onto rank 0's clock (baseTimeNanoseconds). The events are decoded to be rewritten (no raw
copy as for one trace): memory grows with the traces, fine for a profiled window.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from lltrace.errors import LltraceError
from lltrace.trace.ranks import base_offset_us

HOST_CATS = frozenset({"cpu_op", "operator", "user_annotation", "python_function", "cuda_runtime",
                       "cuda_driver", "runtime"})
_DEVICE_TID = 1 << 40   # above any OS thread id
_RANK_FLOW = 1 << 44    # flow ids of rank r: id + r * this
_PROCESS_META = frozenset({"process_name", "process_labels", "process_sort_index"})


def read_trace_json(path: Path) -> dict[str, Any]:
    """A whole Chrome trace (.json / .json.gz) as a dict."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            data = json.loads(raw)   # NaN / Infinity, which Python's json reads
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise LltraceError(f"cannot read {path.name}: {exc}") from None
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise LltraceError(f"{path.name}: not a Chrome trace (no traceEvents)")
    return data


def rank_events(data: dict[str, Any], rank: int, pid: int, shift_us: float,
                window: tuple[float, float] | None = None) -> Iterator[dict[str, Any]]:
    """`data`'s events moved into process `pid` (see the module docstring); with `window`
    (µs on rank 0's clock), only the events that overlap it, and all metadata."""
    events = [e for e in data["traceEvents"] if isinstance(e, dict)]
    host = {e.get("pid") for e in events if e.get("cat") in HOST_CATS}
    pnames = {e.get("pid"): (e.get("args") or {}).get("name") for e in events
              if e.get("ph") == "M" and e.get("name") == "process_name" and isinstance(e.get("args"), dict)}

    def tid_of(e: dict[str, Any]) -> Any:
        p, t = e.get("pid"), e.get("tid")
        if p in host or not isinstance(t, int) or isinstance(t, bool):
            return t
        dev = p if isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1 << 16 else 0xFFFF
        return _DEVICE_TID + (dev << 24) + (t & 0xFFFFFF)

    yield {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"rank {rank}"}}
    yield {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": rank}}
    for e in events:
        ph = e.get("ph")
        if ph == "M":
            if e.get("name") in _PROCESS_META:
                continue
            out = dict(e, pid=pid, tid=tid_of(e))
            if e.get("name") == "thread_name" and e.get("pid") not in host and isinstance(e.get("args"), dict):
                device = pnames.get(e.get("pid")) or f"device {e.get('pid')}"
                out["args"] = dict(e["args"], name=f"{device} {e['args'].get('name', e.get('tid'))}")
            yield out
            continue
        ts = e.get("ts")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            ts = ts + shift_us
            if window is not None:
                dur = e.get("dur") if isinstance(e.get("dur"), (int, float)) else 0
                if ts + dur < window[0] or ts > window[1]:
                    continue
        out = dict(e, pid=pid, tid=tid_of(e))
        if ts is not None:
            out["ts"] = ts
        if rank and "id" in e and ph in ("s", "t", "f"):
            i = e["id"]
            out["id"] = i + rank * _RANK_FLOW if isinstance(i, int) and not isinstance(i, bool) else f"r{rank}:{i}"
        yield out


def merged_events(run_dir: Path, files: dict[int, list[str]], first_pid: int, base_ns: float | None,
                  window: tuple[float, float] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every rank's events (pid first_pid + r) and the `lltraceRanks` trailer."""
    out: list[dict[str, Any]] = []
    pids = {}
    for r, names in files.items():
        pid = pids[str(r)] = first_pid + r
        for i, name in enumerate(names):
            data = read_trace_json(run_dir / name)
            shift = base_offset_us(data, base_ns)
            evs = rank_events(data, r, pid, shift, window)
            out.extend(evs if i == 0 else (e for e in evs if e.get("ph") != "M" or e.get("pid") != pid
                                            or e.get("name") not in _PROCESS_META))
    return out, {"world_size": len(files), "pids": pids}
