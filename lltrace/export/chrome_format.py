"""A validator for the Chrome Trace Event Format, written from its specification
("Trace Event Format", Google, the document chrome://tracing and Perfetto's JSON importer
follow). Perfetto's own trace processor downloads a binary on first use and fails offline,
so exported traces are checked with this instead (hand-written: no library validates the
JSON format).

Checked per event: `ph` is a known phase; `name` a string (may be omitted on E events);
`ts` a finite number of µs >= 0 (optional on M events only); `pid` / `tid` present (int, or
a string as Kineto writes for its "Spans"/"Traces" rows); `dur` (X) and `tdur`/`tts` finite
>= 0; `args` an object; M events are one of the five metadata names with the argument the
spec gives them (`name`, `labels`, `sort_index`); C events carry numeric args; instants have
scope `s` in g/p/t; async (b/n/e, S/T/p/F), flow (s/t/f), object (N/O/D) and context events
carry an `id` (or `id2`); E events close an open B on their thread. Optionally, slices
(X and B/E) on one thread must nest without partial overlap, which Perfetto needs to draw
them (reported apart, as `nesting`).
"""
from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASES = {
    "B": "duration begin", "E": "duration end", "X": "complete",
    "i": "instant", "I": "instant (deprecated)",
    "C": "counter",
    "b": "async nestable begin", "n": "async nestable instant", "e": "async nestable end",
    "S": "async begin (legacy)", "T": "async step into (legacy)", "p": "async step past (legacy)",
    "F": "async end (legacy)",
    "s": "flow start", "t": "flow step", "f": "flow end",
    "P": "sample",
    "N": "object created", "O": "object snapshot", "D": "object destroyed",
    "M": "metadata",
    "V": "global memory dump", "v": "process memory dump",
    "R": "mark",
    "c": "clock sync",
    "(": "context enter", ")": "context leave",
    "=": "linked id",
}
NEEDS_ID = set("bneSTpFstfNOD()")
METADATA = {"process_name": ("name", str), "process_labels": ("labels", str), "process_sort_index": ("sort_index", int),
            "thread_name": ("name", str), "thread_sort_index": ("sort_index", int)}
SCOPES = {"g", "p", "t"}
MAX_LISTED = 50


@dataclass
class Report:
    events: int = 0
    phases: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    nesting: list[str] = field(default_factory=list)
    nesting_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def error(self, i: int, msg: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append(f"event {i}: {msg}")

    def summary(self) -> str:
        s = f"{self.events} events, {self.error_count} format errors, {self.nesting_count} nesting problems"
        return s + ("" if not self.errors else f"; first: {self.errors[0]}")


MAX_TIME_US = float(2**53)   # beyond it a double holds no whole µs: a corrupt time, not a time


def _number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or isinstance(v, float) and math.isfinite(v)   # isfinite(10**400) overflows


def _time(v: Any) -> bool:
    return _number(v) and abs(v) <= MAX_TIME_US


def _ident(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)


def _check_event(i: int, e: Any, rep: Report) -> None:
    if not isinstance(e, dict):
        rep.error(i, f"not an object ({type(e).__name__})")
        return
    ph = e.get("ph")
    if not isinstance(ph, str) or ph not in PHASES:
        rep.error(i, f"unknown ph {ph!r}")
        return
    rep.phases[ph] += 1
    name = e.get("name")
    if name is None and ph != "E":
        rep.error(i, f"ph {ph!r} without a name")
    elif name is not None and not isinstance(name, str):
        rep.error(i, f"name is not a string ({type(name).__name__})")
    if "cat" in e and not isinstance(e["cat"], str):
        rep.error(i, "cat is not a string")
    if "ts" in e or ph != "M":
        ts = e.get("ts")
        if not _time(ts):
            rep.error(i, f"ph {ph!r}: ts missing or not a finite number within ±2^53 µs ({ts!r})")
        elif ts < 0:
            rep.error(i, f"negative ts {ts}")
    for key in ("pid", "tid"):
        if key not in e:
            rep.error(i, f"ph {ph!r}: no {key}")
        elif not _ident(e[key]):
            rep.error(i, f"{key} is neither an integer nor a string ({e[key]!r})")
    for key in ("tts", "tdur"):
        if key in e and not (_time(e[key]) and e[key] >= 0):
            rep.error(i, f"{key} is not a finite number >= 0")
    args = e.get("args")
    if args is not None and not isinstance(args, dict):
        rep.error(i, "args is not an object")
        args = None
    if ph == "X":
        if not (_time(e.get("dur")) and e["dur"] >= 0):
            rep.error(i, f"complete event without a finite dur in [0, 2^53] µs ({e.get('dur')!r})")
    elif ph in ("i", "I"):
        if "s" in e and not (isinstance(e["s"], str) and e["s"] in SCOPES):
            rep.error(i, f"instant scope s={e['s']!r} is not one of g, p, t")
    elif ph == "C":
        if not args:
            rep.error(i, "counter event without args")
        elif not all(_number(v) for v in args.values()):
            rep.error(i, "counter args must all be numbers")
    elif ph == "M":
        spec = METADATA.get(name) if isinstance(name, str) else None   # a hostile trace may name an event with a list
        if spec is None:
            rep.error(i, f"unknown metadata event {name!r}")
        else:
            key, typ = spec
            v = (args or {}).get(key)
            ok = isinstance(v, str) if typ is str else (isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                rep.error(i, f"{name} needs args.{key} ({typ.__name__}), got {v!r}")
    elif ph == "O":
        if "snapshot" not in (args or {}):
            rep.error(i, "object snapshot without args.snapshot")
    elif ph == "c":
        if "sync_id" not in (args or {}):
            rep.error(i, "clock sync event without args.sync_id")
    if ph in NEEDS_ID and "id" not in e and "id2" not in e:
        rep.error(i, f"ph {ph!r} ({PHASES[ph]}) needs an id")
    if ph in "bne" and "cat" not in e:
        rep.error(i, f"async event ph {ph!r} needs a cat (it is part of the id)")
    if "id" in e and not _ident(e["id"]):
        rep.error(i, f"id is neither an integer nor a string ({e['id']!r})")


def _ns(us: float) -> int:
    """Nesting is compared in integer ns, as Perfetto's importer stores times: µs doubles near
    4.6e12 (Kineto's clock) carry only ~1 ns, so ts + dur in floating point can overshoot a
    parent's end by one ulp."""
    return int(round(us * 1e3))


def _slices(events: list[Any], rep: Report, check_nesting: bool, only_pid: Any = None) -> None:
    """B/E pairing, and (optionally) that slices on one thread nest."""
    per_thread: dict[tuple, list[tuple[float, float, int]]] = {}
    open_b: dict[tuple, list[tuple[float, int]]] = {}
    for i, e in enumerate(events):
        if not isinstance(e, dict) or not _time(e.get("ts")) or not (_ident(e.get("pid")) and _ident(e.get("tid"))):
            continue   # reported by _check_event already
        ph = e.get("ph")
        key = (e.get("pid"), e.get("tid"))
        if ph == "B":
            open_b.setdefault(key, []).append((e["ts"], i))
        elif ph == "E":
            stack = open_b.get(key)
            if not stack:
                rep.error(i, "E event without an open B on its thread")
                continue
            start, j = stack.pop()
            if e["ts"] < start:
                rep.error(i, "E event before its B")
            per_thread.setdefault(key, []).append((_ns(start), _ns(e["ts"]), j))
        elif ph == "X" and _time(e.get("dur")):
            s = _ns(e["ts"])
            per_thread.setdefault(key, []).append((s, s + _ns(e["dur"]), i))
    if not check_nesting:
        return
    for key, items in per_thread.items():
        if only_pid is not None and key[0] != only_pid:
            continue
        items.sort(key=lambda t: (t[0], -(t[1] - t[0])))
        stack: list[tuple[float, float, int]] = []
        for s, end, i in items:
            while stack and stack[-1][1] <= s:
                stack.pop()
            if stack and end > stack[-1][1]:
                rep.nesting_count += 1
                if len(rep.nesting) < MAX_LISTED:
                    rep.nesting.append(f"event {i} on pid {key[0]!r} tid {key[1]!r} [{s / 1e3}, {end / 1e3}] µs "
                                       f"overlaps the end of event {stack[-1][2]} "
                                       f"[{stack[-1][0] / 1e3}, {stack[-1][1] / 1e3}]")
                continue
            stack.append((s, end, i))


def validate(data: Any, check_nesting: bool = True, nesting_pid: Any = None) -> Report:
    """Validate a parsed trace: the JSON Object Format ({"traceEvents": [...], ...}) or the
    JSON Array Format ([...]). `nesting_pid` limits the nesting check to one process."""
    rep = Report()
    if isinstance(data, dict):
        events = data.get("traceEvents")
        if not isinstance(events, list):
            rep.error(-1, "top level: no traceEvents array")
            return rep
        unit = data.get("displayTimeUnit")
        if unit is not None and unit not in ("ms", "ns"):
            rep.error(-1, f"top level: displayTimeUnit {unit!r} is not ms or ns")
        if "systemTraceEvents" in data and not isinstance(data["systemTraceEvents"], str):
            rep.error(-1, "top level: systemTraceEvents is not a string")
    elif isinstance(data, list):
        events = data
    else:
        rep.error(-1, "top level is neither an object nor an array")
        return rep
    rep.events = len(events)
    for i, e in enumerate(events):
        _check_event(i, e, rep)
    _slices(events, rep, check_nesting, nesting_pid)
    return rep


def load(path: str | Path) -> Any:
    """Parse a .json or .json.gz trace strictly (NaN / Infinity are not JSON)."""
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)

    def bad_constant(name: str):
        raise ValueError(f"{name} is not valid JSON")

    def integer(text: str):   # JSON has no limit on digits; Python's int() does (4300)
        return int(text) if len(text) < 4000 else float(text)
    return json.loads(raw, parse_constant=bad_constant, parse_int=integer)


def validate_file(path: str | Path, check_nesting: bool = True, nesting_pid: Any = None) -> Report:
    try:
        data = load(path)
    except (ValueError, RecursionError) as exc:   # NaN, invalid or too deeply nested JSON
        rep = Report()
        rep.error(-1, f"not readable as JSON ({type(exc).__name__}: {str(exc)[:200]})")
        return rep
    try:
        return validate(data, check_nesting, nesting_pid)
    except RecursionError:   # an event holding JSON nested as deep as the decoder allowed
        rep = Report()
        rep.error(-1, "a value nested too deeply to check")
        return rep
