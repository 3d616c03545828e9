"""The in-memory event model of a trace: only the events a budget needs, stored column-wise.

A Kineto trace is mostly X (complete) events; we keep those of the categories in `CATEGORIES`
(host ranges, launches, GPU activities), the `ac2g` flow events that link a launch to its
kernel, instants (markers) and process/thread names. Each kept X event costs ~45 bytes in
numpy columns instead of ~1 KB as a Python dict, so a 1 GB trace fits in a few hundred MB.
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np

from lltrace.inputs import printable

# Category codes of the kept X events (uint8 column `cat`).
CPU_OP, USER_ANNOTATION, PYTHON_MODULE, RUNTIME, KERNEL, MEMCPY, MEMSET, GPU_ANNOTATION = range(1, 9)
CATEGORY_NAMES = {
    CPU_OP: "cpu_op", USER_ANNOTATION: "user_annotation", PYTHON_MODULE: "python_function",
    RUNTIME: "cuda_runtime", KERNEL: "kernel", MEMCPY: "gpu_memcpy", MEMSET: "gpu_memset",
    GPU_ANNOTATION: "gpu_user_annotation",
}
# Kineto's names, plus the capitalised ones of old PyTorch (1.8-1.10) traces.
CATEGORIES = {
    "cpu_op": CPU_OP, "operator": CPU_OP,
    "user_annotation": USER_ANNOTATION,
    "python_function": PYTHON_MODULE,
    "cuda_runtime": RUNTIME, "cuda_driver": RUNTIME, "runtime": RUNTIME,
    "kernel": KERNEL,
    "gpu_memcpy": MEMCPY, "memcpy": MEMCPY,
    "gpu_memset": MEMSET, "memset": MEMSET,
    "gpu_user_annotation": GPU_ANNOTATION,
}
GPU_ACTIVITY = (KERNEL, MEMCPY, MEMSET)
HOST_RANGE = (CPU_OP, USER_ANNOTATION, PYTHON_MODULE)
MODULE_PREFIX = "nn.Module:"  # python_function events of torch.profiler(with_modules=True)


# -- typed decoding: only the fields we use; msgspec skips the rest without building them --

Int64 = Annotated[int, msgspec.Meta(ge=-2**63, le=2**63 - 1)]   # larger ones go to the lenient path


class RawArgs(msgspec.Struct, gc=False):
    correlation: Int64 | None = None
    external_id: Int64 | None = msgspec.field(default=None, name="External id")
    name: str | None = None     # process_name / thread_name metadata


class RawEvent(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    ts: float | None = None     # floats and ints both decode here
    dur: float = 0.0
    pid: int | str = 0
    tid: int | str = 0
    id: int | str | None = None
    args: RawArgs | None = None


def lenient_event(obj: Any) -> RawEvent | None:
    """Build a RawEvent from a decoded dict with loose types (the slow path for odd traces);
    None if it is not an event at all."""
    if not isinstance(obj, dict):
        return None

    def text(v) -> str:
        if not isinstance(v, str):
            return "" if v is None or isinstance(v, (dict, list)) else str(v)   # a container is no name
        try:
            v.encode("utf-8")
            return v
        except UnicodeEncodeError:   # invalid UTF-8 read with surrogateescape, or a "\ud800" escape
            return printable(v)

    def num(v):
        if isinstance(v, bool):
            return None
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                return float(v)
            except OverflowError:    # a 400-digit integer: out of range, like 1e308
                return math.inf if v > 0 else -math.inf
        if isinstance(v, float):
            return v
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return None
        return None

    def ident(v):
        if isinstance(v, bool) or v is None:
            return 0
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return text(v)

    def opt_int(v):
        if isinstance(v, bool):
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        elif isinstance(v, str) and len(v) < 30 and v.strip().lstrip("-").isdigit():
            try:
                v = int(v)
            except ValueError:       # str.isdigit() accepts digits int() does not ("²")
                return None
        return v if isinstance(v, int) and -2**63 <= v < 2**63 else None

    ph = obj.get("ph")
    if not isinstance(ph, str):
        return None
    args = obj.get("args")
    raw_args = None
    if isinstance(args, dict):
        n = args.get("name")
        raw_args = RawArgs(correlation=opt_int(args.get("correlation")),
                           external_id=opt_int(args.get("External id")),
                           name=text(n) if isinstance(n, str) else None)
    flow_id = obj.get("id")
    if isinstance(flow_id, (dict, list)):
        flow_id = None
    elif flow_id is not None and not isinstance(flow_id, (int, str)) or isinstance(flow_id, bool):
        flow_id = str(flow_id)
    if isinstance(flow_id, int) and not -2**62 < flow_id < 2**62:
        flow_id = str(flow_id)
    dur = num(obj.get("dur"))
    return RawEvent(ph=text(ph), cat=text(obj.get("cat", "")), name=text(obj.get("name", "")),
                    ts=num(obj.get("ts")), dur=dur if dur is not None else 0.0,
                    pid=ident(obj.get("pid")), tid=ident(obj.get("tid")), id=flow_id, args=raw_args)


class Event(NamedTuple):
    """One kept X event, for code that wants rows instead of columns (export, TUI)."""
    index: int
    cat: str
    name: str
    pid: int | str
    tid: int | str
    ts: float        # µs, the trace's own clock
    dur: float       # µs
    correlation: int  # -1 when absent
    external_id: int  # -1 when absent


class Instant(NamedTuple):
    name: str
    cat: str
    ts: float
    pid: int | str
    tid: int | str


class _Columns:
    """Growable typed columns (array.array: 8 bytes per float, no per-value objects)."""

    def __init__(self, spec: dict[str, str]):
        self.spec = spec
        self.cols = {k: array(t) for k, t in spec.items()}

    def finish(self) -> dict[str, np.ndarray]:
        out = {}
        for k, a in self.cols.items():
            arr = np.frombuffer(a, dtype=a.typecode) if len(a) else np.zeros(0, dtype=a.typecode)
            out[k] = arr
        return out


# Timestamps and durations beyond 2**53 µs (285 years; also where doubles stop holding whole µs)
# are corrupt values, not time: 1e308 would print as "wall inf ms".
MAX_US = float(2**53)

X_SPEC = {"cat": "B", "name": "i", "pid": "i", "tid": "i", "ts": "d", "dur": "d", "corr": "q", "ext": "q"}
FLOW_SPEC = {"start": "B", "id": "q", "pid": "i", "tid": "i", "ts": "d"}
MAX_INSTANTS = 100_000


class EventCollector:
    """Receives decoded batches from the reader and keeps what the model needs."""

    def __init__(self):
        self.x = _Columns(X_SPEC)
        self.flows = _Columns(FLOW_SPEC)
        self.names: dict[str, int] = {}
        self.ids: dict[int | str, int] = {}        # pid / tid values -> compact ints
        self.flow_ids: dict[str, int] = {}          # string flow ids -> ints
        self.cat_cache: dict[str, int] = dict(CATEGORIES)
        self.instants: list[Instant] = []
        self.process_names: dict[int | str, str] = {}
        self.thread_names: dict[tuple[int | str, int | str], str] = {}
        self.total = 0          # array elements seen
        self.kept = 0
        self.invalid = 0        # elements that are not events (or lack a timestamp)
        self.ignored_ph: dict[str, int] = {}
        self.ignored_cats: dict[str, int] = {}
        self.out_of_range = 0   # events with |ts| or dur beyond MAX_US (or not finite): skipped
        self.negative_durs: dict[int, list[float]] = {}   # category -> negative durations (kept as 0)

    def _cat(self, cat: str) -> int:
        code = CATEGORIES.get(cat.lower(), 0)
        self.cat_cache[cat] = code
        return code

    def add(self, batch: list[RawEvent]) -> None:
        """Keep what the model needs of a decoded batch.

        The per-event loop is half of a load's time (each line runs ~1e6 times per 100 MB), so
        it is written for CPython: each field read once into a local, bound appends and dict
        lookups (flows too), globals hoisted, the kept count added once per batch. Measured
        slower on real traces (same process, interleaved): rows of tuples with array.extend
        or a numpy record array per batch (0.6-0.9x), and a field-at-a-time pass over the
        batch with map(attrgetter), numpy masks and a __missing__ interner (0.6x: ~20 passes
        over the batch cost more than one loop). Re-measured for issue #18 (2-core CI box,
        40k-event batch of a real trace): this loop 565 ns per event; C-level passes cost
        34 ns per attrgetter map, 37-80 ns per dict.get map (names are long), 25 ns per list
        to numpy, so the ~15 passes an X event needs add up to ~830 ns; np.array of row tuples
        into a record dtype alone is 470 ns. So the loop stays, hand-written, and a big plain
        file is instead read in parts on several cores (reader._split_read, merge below)."""
        names, ids, cat_cache = self.names, self.ids, self.cat_cache
        names_get, ids_get, cat_get = names.get, ids.get, cat_cache.get
        c, f = self.x.cols, self.flows.cols
        cat_a, name_a, pid_a, tid_a = c["cat"].append, c["name"].append, c["pid"].append, c["tid"].append
        ts_a, dur_a, corr_a, ext_a = c["ts"].append, c["dur"].append, c["corr"].append, c["ext"].append
        fstart_a, fid_a, fpid_a, ftid_a, fts_a = (f[k].append for k in FLOW_SPEC)
        hi, lo, prefix, module = MAX_US, -MAX_US, MODULE_PREFIX, PYTHON_MODULE
        kept = 0
        self.total += len(batch)
        for e in batch:
            ph = e.ph
            if ph == "X":
                cat = e.cat
                code = cat_get(cat)
                if code is None:
                    code = self._cat(cat)
                if not code:
                    self.ignored_cats[cat] = self.ignored_cats.get(cat, 0) + 1
                    continue
                name = e.name
                if code == module and not name.startswith(prefix):
                    continue  # with_stack emits every Python frame; only nn.Module ones are regions
                ts = e.ts
                if ts is None:
                    self.invalid += 1
                    continue
                dur = e.dur
                if not (lo <= ts <= hi and dur <= hi):   # also NaN and inf
                    self.out_of_range += 1
                    continue
                if dur <= 0:
                    if dur < 0:
                        if dur < lo:
                            self.out_of_range += 1
                            continue
                        self.negative_durs.setdefault(code, []).append(dur)
                    dur = 0.0
                n = names_get(name)
                if n is None:
                    n = names[name] = len(names)
                pid = e.pid
                p = ids_get(pid)
                if p is None:
                    p = ids[pid] = len(ids)
                tid = e.tid
                t = ids_get(tid)
                if t is None:
                    t = ids[tid] = len(ids)
                cat_a(code)
                name_a(n)
                pid_a(p)
                tid_a(t)
                ts_a(ts)
                dur_a(dur)
                a = e.args
                if a is None:
                    corr_a(-1)
                    ext_a(-1)
                else:
                    corr, ext = a.correlation, a.external_id
                    corr_a(-1 if corr is None else corr)
                    ext_a(-1 if ext is None else ext)
            elif ph == "f" or ph == "s" or ph == "t":
                ts, fid = e.ts, e.id
                if e.cat != "ac2g" or ts is None or fid is None:
                    continue
                if not lo <= ts <= hi:
                    self.out_of_range += 1
                    continue
                if not isinstance(fid, int) or not -2**62 < fid < 2**62:
                    fid = self.flow_ids.setdefault(fid, -2 - len(self.flow_ids))
                pid, tid = e.pid, e.tid
                p = ids_get(pid)
                if p is None:
                    p = ids[pid] = len(ids)
                t = ids_get(tid)
                if t is None:
                    t = ids[tid] = len(ids)
                fstart_a(1 if ph == "s" else 0)
                fid_a(fid)
                fpid_a(p)
                ftid_a(t)
                fts_a(ts)
            elif ph in ("i", "I", "R"):
                ts = e.ts
                if ts is not None and not lo <= ts <= hi:
                    self.out_of_range += 1
                    continue
                if ts is not None and len(self.instants) < MAX_INSTANTS:
                    self.instants.append(Instant(e.name, e.cat, ts, e.pid, e.tid))
            elif ph == "M":
                label = e.args.name if e.args is not None else None
                if label:
                    if e.name == "process_name":
                        self.process_names[e.pid] = label
                    elif e.name == "thread_name":
                        self.thread_names[(e.pid, e.tid)] = label
            elif ph:
                self.ignored_ph[ph] = self.ignored_ph.get(ph, 0) + 1
            else:
                self.invalid += 1
                continue
            kept += 1
        self.kept += kept

    def count_invalid(self, n: int = 1) -> None:
        self.total += n
        self.invalid += n

    @property
    def negative(self) -> dict[int, list]:
        """category -> [count, sum of |dur| µs] of the negative durations, summed in file order
        (a merge of parts gives the same float as one pass)."""
        out = {}
        for code, durs in self.negative_durs.items():
            total = 0.0
            for d in durs:
                total -= d
            out[code] = [len(durs), total]
        return out

    def mergeable(self, o: EventCollector) -> bool:
        """Whether `merge(o)` can give what one collector would have: string flow ids are
        numbered in order of appearance, and two numberings of them cannot be joined."""
        return not (self.flow_ids and o.flow_ids)

    def merge(self, o: EventCollector) -> None:
        """Append `o`, a collector of the events that follow ours in the file, exactly as if
        this one had read them too: o's names and ids take the numbers first appearance gives
        them here (hand-written: no library merges interned columns)."""
        if not self.mergeable(o):
            raise ValueError("both collectors numbered string flow ids")
        names, ids = self.names, self.ids
        name_map = np.array([names.setdefault(k, len(names)) for k in o.names], dtype=np.int32)
        id_map = np.array([ids.setdefault(k, len(ids)) for k in o.ids], dtype=np.int32)
        remap = {"name": name_map, "pid": id_map, "tid": id_map}
        for cols, theirs in ((self.x.cols, o.x.cols), (self.flows.cols, o.flows.cols)):
            for k, a in cols.items():
                b = theirs[k]
                if k in remap and len(b):
                    a.frombytes(remap[k][np.frombuffer(b, dtype=b.typecode)].astype(b.typecode).tobytes())
                else:
                    a.extend(b)
        if o.flow_ids:
            self.flow_ids = o.flow_ids
        room = MAX_INSTANTS - len(self.instants)
        if room > 0:
            self.instants.extend(o.instants[:room])
        self.process_names.update(o.process_names)
        self.thread_names.update(o.thread_names)
        self.total += o.total
        self.kept += o.kept
        self.invalid += o.invalid
        self.out_of_range += o.out_of_range
        for mine, theirs in ((self.ignored_ph, o.ignored_ph), (self.ignored_cats, o.ignored_cats)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        for code, durs in o.negative_durs.items():
            self.negative_durs.setdefault(code, []).extend(durs)


@dataclass
class Trace:
    """A loaded trace. X events are columns (numpy arrays, one row per event):
    `cat` (codes above), `name` (index into `names`), `pid`/`tid` (index into `ids`),
    `ts`/`dur` (µs), `corr` (args.correlation or -1), `ext` (args["External id"] or -1)."""

    source: str
    x: dict[str, np.ndarray]
    flows: dict[str, np.ndarray]
    names: list[str]
    ids: list[int | str]
    instants: list[Instant] = field(default_factory=list)
    process_names: dict = field(default_factory=dict)
    thread_names: dict = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)   # deviceProperties, baseTimeNanoseconds, traceName...
    partial: bool = False
    stop_reason: str | None = None
    stopped_at_byte: int | None = None
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    run_meta: dict[str, Any] | None = None       # meta.json of the run directory, if any
    _name_ids: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.x["ts"])

    def intern(self, name: str) -> int:
        """The name id of `name`, appended to `names` when no event has it (rows a later stage
        adds, such as the virtual regions of a replayed CUDA graph)."""
        if self._name_ids is None:
            self._name_ids = {nm: i for i, nm in enumerate(self.names)}
        nid = self._name_ids.get(name)
        if nid is None:
            nid = self._name_ids[name] = len(self.names)
            self.names.append(name)
        return nid

    def mask(self, *cats: int) -> np.ndarray:
        return np.isin(self.x["cat"], np.array(cats, dtype=np.uint8))

    @property
    def has_gpu(self) -> bool:
        return bool(self.mask(*GPU_ACTIVITY).any())

    def count(self, cat: int) -> int:
        return int((self.x["cat"] == cat).sum())

    def event(self, i: int) -> Event:
        x = self.x
        return Event(i, CATEGORY_NAMES[int(x["cat"][i])], self.names[x["name"][i]], self.ids[x["pid"][i]],
                     self.ids[x["tid"][i]], float(x["ts"][i]), float(x["dur"][i]),
                     int(x["corr"][i]), int(x["ext"][i]))

    def iter_events(self, *cats: int) -> Iterator[Event]:
        idx = np.nonzero(self.mask(*cats))[0] if cats else range(len(self))
        for i in idx:
            yield self.event(int(i))

    @property
    def span_us(self) -> tuple[float, float]:
        """(first start, last end) over kept X events, µs; (0, 0) when empty."""
        if not len(self):
            return (0.0, 0.0)
        return float(self.x["ts"].min()), float((self.x["ts"] + self.x["dur"]).max())

    @property
    def device_name(self) -> str | None:
        props = self.top.get("deviceProperties")
        if isinstance(props, list) and props and isinstance(props[0], dict):
            return props[0].get("name")
        return None
