"""GPU attribution: tie each kernel / memcpy / memset to the host range that launched it.

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
correlation id of its cudaGraphLaunch, so it lands in the range around that launch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lltrace.trace.events import (GPU_ACTIVITY, GPU_ANNOTATION, HOST_RANGE, RUNTIME, USER_ANNOTATION,
                                  Trace)

# how an activity was linked to its launch
NONE, BY_CORRELATION, BY_FLOW, BY_EXTERNAL_ID, BY_GPU_ANNOTATION = 0, 1, 2, 3, 4


@dataclass
class Forest:
    """Host ranges (rows into trace.x), ordered by thread then start, with nesting parents."""
    idx: np.ndarray       # trace.x rows
    thread: np.ndarray    # int64 thread key (pid << 32 | tid)
    start: np.ndarray
    end: np.ndarray
    parent: np.ndarray    # position in this forest, -1 for a root
    segments: dict[int, tuple[int, int]]   # thread key -> [lo, hi) positions

    def __len__(self) -> int:
        return len(self.idx)

    def innermost(self, thread: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Position of the innermost range containing time t on the given thread; -1 if none."""
        out = np.full(len(t), -1, dtype=np.int64)
        if not len(self) or not len(t):
            return out
        for key in np.unique(thread):
            seg = self.segments.get(int(key))
            if seg is None:
                continue
            lo, hi = seg
            sel = np.nonzero(thread == key)[0]
            tt = t[sel]
            i = np.searchsorted(self.start[lo:hi], tt, side="right") - 1 + lo
            i[i < lo] = -1
            # the last range starting before t may have ended: climb to the enclosing one
            while True:
                bad = (i >= 0) & (self.end[np.maximum(i, 0)] < tt)
                if not bad.any():
                    break
                i[bad] = self.parent[i[bad]]
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
    return Forest(rows, th, start, end, parent, segments)


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
    ops = np.nonzero(np.isin(cat, np.array(HOST_RANGE, dtype=np.uint8)) & (x["ext"] >= 0))[0]
    ops = ops[np.argsort(x["ext"][ops], kind="stable")]
    op_ext = x["ext"][ops]
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
            f_ua = np.nonzero(x["cat"][forest.idx] == USER_ANNOTATION)[0]
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
