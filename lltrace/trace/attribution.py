"""The region stage: region ranges nested into a forest, each GPU activity tied to the host
range that launched it, and its kernel class (`regions_and_attribution`). A trace goes
reader -> attribution -> instances (lltrace.trace.instances) -> budget, one way.

Links, in order of preference (docs/DESIGN.md §4):
1. `args.correlation` of the activity = `args.correlation` of a cuda_runtime / cuda_driver
   launch; the launch's host thread and time place it inside the innermost enclosing
   region (nesting in time on the same pid/tid).
2. the `ac2g` flow: the `s` end with the activity's correlation id (or the `f` end bound
   to the activity) gives the launch's thread and time.
3. the activity's own `External id`: the host op that launched it (its time on its thread).
4. the `gpu_user_annotation` around the activity on its stream: its External id is the
   host annotation's, which names the region directly.
CUDA-graph replays need nothing special here: every kernel of a graph carries the
correlation id of its cudaGraphLaunch, so it lands in the range around that launch; a later
stage that knows the graph's own structure can move it into virtual rows below that range
(RegionAttribution.add_region).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lltrace.trace import regions
from lltrace.trace.events import (CPU_OP, GPU_ACTIVITY, GPU_ANNOTATION, HOST_RANGE, MEMCPY, MEMSET, PYTHON_MODULE,
                                  RUNTIME, USER_ANNOTATION, Trace)
from lltrace.trace.kernels import CLASSES, classify, classify_op

# how an activity was linked to its launch
NONE, BY_CORRELATION, BY_FLOW, BY_EXTERNAL_ID, BY_GPU_ANNOTATION = 0, 1, 2, 3, 4


class Forest:
    """Region rows: host ranges (rows into trace.x) ordered by thread then start, with nesting
    parents, and then any virtual rows a later stage appended (`append`).

    A virtual row has no trace.x event (`idx == -1`): it stands for a range the trace does not
    record, such as a layer inside a replayed CUDA graph, and gets GPU activities by having
    `Attribution.host` point at it. Every row has its own name id (`name`, into trace.names),
    times and parent, so later stages read rows from here, never from trace.x. A parent always
    precedes its children (appending keeps it), so one backward pass adds up the tree.
    `innermost` only finds recorded ranges: virtual rows are placed by the stage adding them.
    """
    _COLUMNS = (("idx", np.int64), ("name", np.int64), ("thread", np.int64), ("start", np.float64),
                ("end", np.float64), ("parent", np.int64))

    def __init__(self, idx, name, thread, start, end, parent, segments: dict[int, tuple[int, int]]):
        values = (idx, name, thread, start, end, parent)
        self._cols = {k: np.array(v, dtype=dt) for (k, dt), v in zip(self._COLUMNS, values)}
        self._n = len(self._cols["idx"])
        self.segments = segments       # thread key -> [lo, hi) positions of its recorded ranges

    # columns, one value per row (views of growable buffers: appending is amortised O(1))
    idx = property(lambda self: self._cols["idx"][:self._n], doc="trace.x row, -1 for a virtual row")
    name = property(lambda self: self._cols["name"][:self._n], doc="name id into trace.names")
    thread = property(lambda self: self._cols["thread"][:self._n], doc="thread key (pid << 32 | tid)")
    start = property(lambda self: self._cols["start"][:self._n], doc="µs, trace clock")
    end = property(lambda self: self._cols["end"][:self._n], doc="µs, trace clock")
    parent = property(lambda self: self._cols["parent"][:self._n], doc="position of the parent row, -1 for a root")

    def __len__(self) -> int:
        return self._n

    @property
    def virtual(self) -> np.ndarray:
        """bool per row: appended, not recorded in the trace."""
        return self.idx < 0

    def append(self, name: int, parent: int, start: float, end: float) -> int:
        """Add a virtual row (name id, parent position or -1, µs times) below the existing
        ones; returns its position. It takes its parent's thread."""
        k = self._n
        if not -1 <= parent < k:
            raise ValueError(f"parent {parent} is not a row of this forest (0..{k - 1}, or -1)")
        if not end >= start:
            raise ValueError(f"a row ends before it starts ({start} > {end})")
        if k == len(self._cols["idx"]):   # grow the buffers geometrically
            self._cols = {c: np.concatenate([a, np.zeros(max(16, k), dtype=a.dtype)]) for c, a in self._cols.items()}
        thread = self._cols["thread"][parent] if parent >= 0 else -1
        for c, v in (("idx", -1), ("name", name), ("thread", thread), ("start", start), ("end", end),
                     ("parent", parent)):
            self._cols[c][k] = v
        self._n = k + 1
        return k

    def innermost(self, thread: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Position of the innermost recorded range containing time t on the given thread; -1 if none."""
        out = np.full(len(t), -1, dtype=np.int64)
        if not len(self) or not len(t):
            return out
        start, end, parent = self.start, self.end, self.parent
        for key in np.unique(thread):
            seg = self.segments.get(int(key))
            if seg is None:
                continue
            lo, hi = seg
            sel = np.nonzero(thread == key)[0]
            tt = t[sel]
            i = np.searchsorted(start[lo:hi], tt, side="right") - 1 + lo
            i[i < lo] = -1
            # the last range starting before t may have ended: climb to the enclosing one
            while True:
                bad = (i >= 0) & (end[np.maximum(i, 0)] < tt)
                if not bad.any():
                    break
                i[bad] = parent[i[bad]]
            out[sel] = i
        return out


def thread_key(trace: Trace, rows: np.ndarray) -> np.ndarray:
    return (trace.x["pid"][rows].astype(np.int64) << 32) | trace.x["tid"][rows].astype(np.int64)


def build_forest(trace: Trace, rows: np.ndarray) -> Forest:
    """Nest host ranges by time on each thread (hand-written stack: ranges sorted by start,
    a range's parent is the latest-starting one still open)."""
    x = trace.x
    th = thread_key(trace, rows)
    start, dur = x["ts"][rows], x["dur"][rows]
    order = np.lexsort((-dur, start, th))
    rows, th, start, end = rows[order], th[order], start[order], (start + dur)[order]
    n = len(rows)
    parent = np.full(n, -1, dtype=np.int64)
    segments: dict[int, tuple[int, int]] = {}
    stack: list[int] = []
    cur = None
    th_list, s_list, e_list = th.tolist(), start.tolist(), end.tolist()
    for k in range(n):
        if th_list[k] != cur:
            if cur is not None:
                segments[cur] = (segments[cur][0], k)
            cur = th_list[k]
            segments[cur] = (k, n)
            stack.clear()
        s = s_list[k]
        while stack and e_list[stack[-1]] <= s:   # ended before this one starts: a sibling, not a parent
            stack.pop()
        if stack:
            parent[k] = stack[-1]
        stack.append(k)
    return Forest(rows, x["name"][rows], th, start, end, parent, segments)


@dataclass
class Attribution:
    gpu: np.ndarray          # trace.x rows of GPU activities
    launch: np.ndarray       # trace.x row of the launching runtime call, -1 if unknown
    how: np.ndarray          # NONE / BY_CORRELATION / BY_FLOW / BY_GPU_ANNOTATION
    host: np.ndarray         # position in the host forest of the innermost enclosing range, -1 if none
    op_name: np.ndarray      # name id of the host op that launched it (External id), -1 if unknown
    graph: np.ndarray        # bool: replayed from a CUDA graph (launched by cudaGraphLaunch)
    early: np.ndarray | None = None  # bool: launched before the trace's window (see attribute())

    def subset(self, keep: np.ndarray) -> "Attribution":
        return Attribution(self.gpu[keep], self.launch[keep], self.how[keep], self.host[keep],
                           self.op_name[keep], self.graph[keep],
                           None if self.early is None else self.early[keep])

    @property
    def linked_fraction(self) -> float:
        return float((self.how != NONE).mean()) if len(self.how) else 0.0


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """values[j] where sorted_keys[j] == key, else -1 (vectorised dict lookup)."""
    out = np.full(len(keys), -1, dtype=np.int64)
    if not len(sorted_keys) or not len(keys):
        return out
    pos = np.searchsorted(sorted_keys, keys)
    pos_c = np.minimum(pos, len(sorted_keys) - 1)
    hit = (pos < len(sorted_keys)) & (sorted_keys[pos_c] == keys)
    out[hit] = values[pos_c[hit]]
    return out


def _ops_by_external_id(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(External ids, sorted; the host ops, cpu_op / user_annotation / module ranges, that carry them)."""
    x = trace.x
    ops = np.nonzero(np.isin(x["cat"], np.array(HOST_RANGE, dtype=np.uint8)) & (x["ext"] >= 0))[0]
    ops = ops[np.argsort(x["ext"][ops], kind="stable")]
    return x["ext"][ops], ops


def host_op_of(trace: Trace, rows: np.ndarray) -> np.ndarray:
    """The host op (trace.x row) with each row's External id, e.g. the op around a runtime call;
    -1 where there is none."""
    keys, ops = _ops_by_external_id(trace)
    ext = trace.x["ext"][rows]
    out = _lookup(keys, ops, ext)
    out[ext < 0] = -1
    return out


def attribute(trace: Trace, forest: Forest) -> Attribution:
    """Link every GPU activity to its launch and to the innermost range of `forest` around it."""
    x = trace.x
    cat = x["cat"]
    gpu = np.nonzero(np.isin(cat, np.array(GPU_ACTIVITY, dtype=np.uint8)))[0]
    n = len(gpu)
    how = np.zeros(n, dtype=np.uint8)
    host = np.full(n, -1, dtype=np.int64)
    # launch point of each activity: host thread key and time
    l_thread = np.zeros(n, dtype=np.int64)
    l_time = np.zeros(n, dtype=np.float64)

    # 1. correlation id -> runtime launch
    rt = np.nonzero(cat == RUNTIME)[0]
    rt = rt[x["corr"][rt] >= 0]
    rt_sorted = rt[np.argsort(x["corr"][rt], kind="stable")]
    corr = x["corr"][gpu]
    launch = _lookup(x["corr"][rt_sorted], rt_sorted, corr)
    launch[corr < 0] = -1
    ok = launch >= 0
    how[ok] = BY_CORRELATION
    lr = launch[ok]
    l_thread[ok] = thread_key(trace, lr)
    l_time[ok] = x["ts"][lr] + x["dur"][lr] / 2   # the middle of the call is strictly inside its op

    # host ops by External id (cpu_op / user_annotation / module ranges that have one)
    op_ext, ops = _ops_by_external_id(trace)
    # Runtime calls carry CUPTI timestamps, ops the profiler's host clock; they can disagree by
    # a few µs. Place the launch by the op that made it (its External id) when that op is on
    # the same thread around the call: the op and the regions share one clock.
    if len(lr):
        op = _lookup(op_ext, ops, x["ext"][lr])
        op[x["ext"][lr] < 0] = -1
        oc = np.maximum(op, 0)
        mid = l_time[ok]
        near = ((op >= 0) & (thread_key(trace, oc) == l_thread[ok])
                & (x["ts"][oc] - 50.0 <= mid) & (mid <= x["ts"][oc] + x["dur"][oc] + 50.0))
        sel = np.nonzero(ok)[0][near]
        l_time[sel] = x["ts"][oc[near]] + x["dur"][oc[near]] / 2

    # 2. ac2g flows: s end by id (= correlation), or the f end bound to the activity
    todo = np.nonzero(~ok)[0]
    fl = trace.flows
    if len(todo) and len(fl["ts"]):
        is_s = fl["start"] == 1
        s_rows = np.nonzero(is_s)[0]
        s_rows = s_rows[np.argsort(fl["id"][s_rows], kind="stable")]
        s_ids = fl["id"][s_rows]
        flow_id = np.where(corr[todo] >= 0, corr[todo], -1)
        s_hit = _lookup(s_ids, s_rows, flow_id)
        miss = s_hit < 0
        if miss.any():   # the f end sits on the activity: same pid/tid and start time
            f_rows = np.nonzero(~is_s)[0]
            f_index = {(int(fl["pid"][r]), int(fl["tid"][r]), round(float(fl["ts"][r]), 3)): int(fl["id"][r])
                       for r in f_rows}
            g = gpu[todo[miss]]
            ids = np.array([f_index.get((int(p), int(t), round(float(s), 3)), -1)
                            for p, t, s in zip(x["pid"][g], x["tid"][g], x["ts"][g])], dtype=np.int64)
            s_hit[miss] = np.where(ids != -1, _lookup(s_ids, s_rows, ids), -1)
        got = s_hit >= 0
        sel = todo[got]
        sr = s_hit[got]
        how[sel] = BY_FLOW
        l_thread[sel] = (fl["pid"][sr].astype(np.int64) << 32) | fl["tid"][sr].astype(np.int64)
        l_time[sel] = fl["ts"][sr] + 1e-3

    # 3. External id -> the host op (cpu_op / user_annotation) that launched it
    todo = np.nonzero(how == NONE)[0]
    if len(todo):
        ext = x["ext"][gpu[todo]]
        op = _lookup(op_ext, ops, ext)
        op[ext < 0] = -1
        got = op >= 0
        sel, orow = todo[got], op[got]
        how[sel] = BY_EXTERNAL_ID
        l_thread[sel] = thread_key(trace, orow)
        l_time[sel] = x["ts"][orow] + x["dur"][orow] / 2

    linked = how != NONE
    host[linked] = forest.innermost(l_thread[linked], l_time[linked])

    # 4. gpu_user_annotation around an unlinked activity -> host annotation with its External id
    todo = np.nonzero(~linked)[0]
    if len(todo):
        gua = np.nonzero(cat == GPU_ANNOTATION)[0]
        if len(gua):
            gforest = build_forest(trace, gua)
            inner = gforest.innermost(thread_key(trace, gpu[todo]), x["ts"][gpu[todo]] + x["dur"][gpu[todo]] / 2)
            has = inner >= 0
            ext = np.full(len(todo), -1, dtype=np.int64)
            ext[has] = x["ext"][gforest.idx[inner[has]]]
            # host annotation rows of the forest, by External id
            fidx = forest.idx
            f_ua = np.nonzero((fidx >= 0) & (x["cat"][np.maximum(fidx, 0)] == USER_ANNOTATION))[0]
            f_ua = f_ua[np.argsort(x["ext"][forest.idx[f_ua]], kind="stable")]
            pos = _lookup(x["ext"][forest.idx[f_ua]], f_ua, ext)
            pos[ext < 0] = -1
            hit = pos >= 0
            host[todo[hit]] = pos[hit]
            how[todo[hit]] = BY_GPU_ANNOTATION

    # the op that launched it: its own External id, else the launch's
    ext = x["ext"][gpu].copy()
    has_launch = launch >= 0
    no_ext = (ext < 0) & has_launch
    ext[no_ext] = x["ext"][launch[no_ext]]
    op_row = _lookup(op_ext, ops, ext)
    op_row[ext < 0] = -1
    op_name = np.where(op_row >= 0, x["name"][np.maximum(op_row, 0)], -1)

    graph_names = np.array([("GraphLaunch" in nm) for nm in trace.names], dtype=bool)
    graph = np.zeros(n, dtype=bool)
    if has_launch.any():
        graph[has_launch] = graph_names[x["name"][launch[has_launch]]]
    # Launched before the profiler started: the host ran ahead of the GPU, so the window opens
    # with kernels whose launch was never recorded. CUPTI correlation ids grow monotonically,
    # so an unlinked activity with an id below every recorded launch's is such a leftover.
    early = np.zeros(n, dtype=bool)
    if len(rt):
        first_corr = x["corr"][rt].min()
        early = (how == NONE) & (corr >= 0) & (corr < first_corr)
    return Attribution(gpu, launch, how, host, op_name, graph, early)


# ----------------------------------------------------------------------------- the region stage

PYTHON = "(python)"    # CPU-only traces: host time of a region outside any op


def region_candidates(trace: Trace) -> tuple[bool, np.ndarray, dict[int, str | None]]:
    """(lltrace regions?, trace.x rows of the region ranges, name id -> node key): lltrace's
    ll/... ranges, else every record_function and nn.Module range."""
    x, names = trace.x, trace.names
    cat = x["cat"]
    ua = np.nonzero(cat == USER_ANNOTATION)[0]
    lltrace = any(names[i].startswith(regions.PREFIX) for i in np.unique(x["name"][ua]))
    cand = ua if lltrace else np.nonzero((cat == USER_ANNOTATION) | (cat == PYTHON_MODULE))[0]
    key_of_name = {int(nid): regions.node_key(names[nid], lltrace) for nid in np.unique(x["name"][cand])}
    keep = np.array([key_of_name[int(n)] is not None for n in x["name"][cand]], dtype=bool)
    return lltrace, (cand[keep] if len(cand) else cand), key_of_name


@dataclass
class RegionAttribution:
    """The region forest of a trace, its GPU attribution and the kernel class of each
    attributed activity (att and cls_idx are None on CPU-only traces).

    A later stage that knows where activities ran in ranges the trace does not record
    (kernels replayed from a CUDA graph, kernels fused by torch.compile) adds virtual rows
    with `add_region` and re-points `att.host` of those activities to them; the instance
    pass (lltrace.trace.instances.measure) then counts them like recorded regions."""
    lltrace: bool
    key_of_name: dict[int, str | None]   # name id -> budget tree node key (None: not a region)
    forest: Forest
    labels: list[str]            # the kernel classes, plus PYTHON on CPU-only traces
    att: Attribution | None
    cls_idx: np.ndarray | None   # index into labels per attributed GPU activity
    early_note: str | None
    kernel_map: Any = None       # lltrace.trace.kernelmap.KernelMapReport, once applied

    @property
    def gpu_mode(self) -> bool:
        return self.att is not None

    def key(self, trace: Trace, name: int) -> str | None:
        """The tree node key of a name id (names interned after the forest was built too)."""
        if name not in self.key_of_name:
            self.key_of_name[name] = regions.node_key(trace.names[name], self.lltrace)
        return self.key_of_name[name]

    def add_region(self, trace: Trace, name: str, parent: int, start: float, end: float) -> int:
        """Append a virtual region row named `name` (an ll/ name on lltrace traces) below
        `parent` (a forest position, -1 for a top-level region); returns its position."""
        nid = trace.intern(name)
        if self.key(trace, nid) is None:
            raise ValueError(f"{name!r} is not a region name of this trace")
        return self.forest.append(nid, parent, start, end)


def regions_and_attribution(trace: Trace) -> RegionAttribution:
    """Regions (region_candidates + build_forest), attribute_in_window and the kernel classes:
    the stage between the reader and the instance pass."""
    lltrace, rows, key_of_name = region_candidates(trace)
    forest = build_forest(trace, rows)
    gpu_mode = trace.has_gpu
    labels = list(CLASSES) + ([] if gpu_mode else [PYTHON])
    att, note = attribute_in_window(trace, forest) if gpu_mode else (None, None)
    cls_idx = classify_activities(trace, att, labels) if gpu_mode else None
    return RegionAttribution(lltrace, key_of_name, forest, labels, att, cls_idx, note)


def attribute_in_window(trace: Trace, forest: Forest) -> tuple[Attribution, str | None]:
    """GPU attribution without the activities launched before the profiled window opened
    (their launches are not in the trace), and a note saying how much was left out."""
    att = attribute(trace, forest)
    if att.early is None or not att.early.any():
        return att, None
    early_ms = float(trace.x["dur"][att.gpu[att.early]].sum() / 1e3)
    note = (f"{int(att.early.sum())} GPU activities ({early_ms:.3g} ms) were launched before the "
            "profiled window opened: left out of the budget")
    return att.subset(~att.early), note


def classify_activities(trace: Trace, att: Attribution, labels: list[str]) -> np.ndarray:
    """Kernel class (index into labels) of every attributed GPU activity, by kernel name and
    the op that launched it; each distinct combination is classified once."""
    x, names, g = trace.x, trace.names, att.gpu
    memory = np.isin(x["cat"][g], np.array([MEMCPY, MEMSET], dtype=np.uint8))
    combo = (x["name"][g].astype(np.int64) << 33) | ((att.op_name + 1) << 1) | memory.astype(np.int64)
    uniq, inv = np.unique(combo, return_inverse=True)
    per = np.array([labels.index(classify(names[int(u >> 33)],
                                          names[int((u >> 1) & 0xFFFFFFFF) - 1] if (u >> 1) & 0xFFFFFFFF else None,
                                          bool(u & 1))) for u in uniq], dtype=np.int64)
    return per[inv] if len(uniq) else np.zeros(0, dtype=np.int64)


def _top_level(trace: Trace, rows: np.ndarray) -> np.ndarray:
    """The host ops among `rows` not nested inside another of them (same thread)."""
    x = trace.x
    if not len(rows):
        return rows
    th = thread_key(trace, rows)
    order = np.lexsort((-x["dur"][rows], x["ts"][rows], th))
    rows, th = rows[order], th[order]
    s, e = x["ts"][rows], x["ts"][rows] + x["dur"][rows]
    keep = np.zeros(len(rows), dtype=bool)
    bounds = np.flatnonzero(np.diff(th)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rows)]):
        prev_end = np.maximum.accumulate(e[lo:hi])
        keep[lo] = True
        keep[lo + 1:hi] = s[lo + 1:hi] >= prev_end[:-1]
    return rows[keep]


def cpu_self_times(trace: Trace, forest: Forest, labels: list[str], self_by: np.ndarray,
                   kcount: np.ndarray | None = None):
    """Host-only traces: top-level ops' time by class into `self_by` rows (row n: outside every
    region), the rest of each region's own time as the last label. Returns (ops, op ms, op
    class, region ms)."""
    x, names = trace.x, trace.names
    n, parent, L = len(forest), forest.parent, len(labels)
    ops = _top_level(trace, np.nonzero(x["cat"] == CPU_OP)[0])
    op_dur = x["dur"][ops] / 1e3
    inner = forest.innermost(thread_key(trace, ops), x["ts"][ops] + x["dur"][ops] / 2)
    cache: dict[int, int] = {}
    cls_idx = np.array([cache.setdefault(int(nid), labels.index(classify_op(names[nid])))
                        for nid in x["name"][ops]], dtype=np.int64)
    row = np.where(inner >= 0, inner, n)
    np.add.at(self_by, (row, cls_idx), op_dur)
    if kcount is not None:
        np.add.at(kcount, (row, cls_idx), 1)
    dur = (forest.end - forest.start) / 1e3
    child_sum = np.zeros(n)
    np.add.at(child_sum, parent[parent >= 0], dur[parent >= 0])
    self_by[:n, L - 1] = np.maximum(0.0, dur - child_sum - self_by[:n].sum(1))
    return ops, op_dur, cls_idx, dur
