"""Why the GPU waits: every idle gap of a device inside the window, classified by its cause and
credited to the region whose work came next (docs/FORMATS.md §3, `idle`).

A gap is time in [first activity start, last activity end] when no activity runs on any stream
of the device (the budget's `idle_gpu_ms`), so the causes add up to that total. The gap ends
when activity N starts; N's launch (the runtime call that enqueued it) says why:
- `sync`: the host was blocked in a synchronizing call (cudaStreamSynchronize,
  cudaDeviceSynchronize, cudaEventSynchronize, a blocking cudaMemcpy) that returned when the GPU
  drained, and N was launched after it returned: the GPU idled while the host came back. Each
  such call is a sync site, named by the op that made it (`aten::item` ->
  `aten::_local_scalar_dense`) and the region it ran in.
- `launch`: N was launched after the gap began, with no sync in between: the host fell behind.
  The host time from the gap's start to the launch is split into `runtime` (CUDA runtime /
  driver calls), `ops` (the dispatcher and aten ops, outside runtime calls) and `python`
  (neither).
- `h2d`: N is a host-to-device copy launched late (the GPU waited for input data).
- `gpu`: N was enqueued before the gap began, so the host was ahead: a stream dependency or the
  device's own scheduling (HTA's "kernel wait").
- `other`: no launch is known for N (a foreign trace without correlation ids).
A sync site's `line` is the Python line that made the sync, from the `ll/sync_site` marker that
lltrace leaves inside it while it records (lltrace.capture.syncs); traces without markers name
the op and region only. A CPU-only trace has no syncs, but its sync sites are the ops that would
sync on a GPU (`aten::_local_scalar_dense` under item / bool / int, `aten::nonzero`, ...).
Hand-written: HolisticTraceAnalysis splits idle time into host/kernel wait only, per stream, and
names no op or region.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from lltrace import names as region_names
from lltrace.trace.attribution import _top_level, host_op_of, thread_key
from lltrace.trace.events import CPU_OP, MEMCPY, RUNTIME, USER_ANNOTATION, Trace
from lltrace.trace.intervals import coverage

CAUSES = ("sync", "launch", "h2d", "gpu", "other")
SYNC_CALLS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
                        "cudaMemcpy", "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize",
                        "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2"})
# the ops behind a sync (or that would make one, on a GPU): item / bool / int / float -> scalar read
WOULD_SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::nonzero_static",
                            "aten::masked_select"})
_EPS_US = 2.0     # a sync "returned when the GPU drained" if it ended within this of the gap's start


FORWARDS = ("step[", "context", "recache")


def _rows_named(trace: Trace, cat: int, wanted) -> np.ndarray:
    ids = np.array([i for i, n in enumerate(trace.names) if wanted(n)], dtype=np.int64)
    return np.nonzero((trace.x["cat"] == cat) & np.isin(trace.x["name"], ids))[0]


_MARK_AFTER_US = 1_000.0   # how late a sync's marker may come (torch emits the warning on return)


def _site_lines(trace: Trace, syncs: np.ndarray, sync_th: np.ndarray, op_ts: np.ndarray) -> list[str | None]:
    """Each sync's `file:line function`, from the sync-site markers on its thread, taken in
    order: a sync gets the first unused marker that reaches into it (CPU: the marker wraps the
    call) or starts after its op began and at most _MARK_AFTER_US after it ended (CUDA: torch
    raises the sync warning when the op returns to Python, so the marker follows the op)."""
    x = trace.x
    marks = _rows_named(trace, USER_ANNOTATION, lambda n: region_names.parse_sync_site(n) is not None)
    out: list[str | None] = [None] * len(syncs)
    if not len(marks) or not len(syncs):
        return out
    m_th = thread_key(trace, marks)
    s_ts, s_end = x["ts"][syncs], x["ts"][syncs] + x["dur"][syncs]
    for th in np.unique(m_th).tolist():
        m = marks[m_th == th]
        m = m[np.argsort(x["ts"][m], kind="stable")]
        m_ts, m_end = x["ts"][m].tolist(), (x["ts"][m] + x["dur"][m]).tolist()
        mine = np.nonzero(sync_th == th)[0]
        mine = mine[np.argsort(s_ts[mine], kind="stable")]
        k = 0
        for i in mine.tolist():
            while k < len(m) and m_end[k] < s_ts[i] and m_ts[k] < op_ts[i]:
                k += 1          # a marker that ended before this sync (and its op) began
            if k < len(m) and m_ts[k] <= s_end[i] + _MARK_AFTER_US:
                where, function = region_names.parse_sync_site(trace.names[int(x["name"][m[k]])])
                out[i] = f"{where} {function}".strip()
                k += 1
    return out


def analyze(trace: Trace, att, forest, region_path_of, blocks: int,
            instances_of=None) -> dict[str, Any]:
    """The `idle` object of the budget (see the module docstring). `att`: the GPU attribution,
    None for a CPU-only trace (sync sites only); `region_path_of(host row)` gives a forest row's
    tree path; `blocks` normalises sync counts per block; `instances_of(path)` counts a node's
    instances (for the per-forward bound)."""
    x, names = trace.x, trace.names
    out: dict[str, Any] = {"total_ms": 0.0, "by_cause": {c: 0.0 for c in CAUSES},
                           "launch_host_ms": {"python": 0.0, "ops": 0.0, "runtime": 0.0},
                           "gaps": 0, "by_region": [], "sync_sites": [], "launch_bound_per_forward": []}
    g = att.gpu if att is not None else np.zeros(0, np.int64)
    is_rt = x["cat"] == RUNTIME
    if att is not None:
        syncs = _rows_named(trace, RUNTIME, SYNC_CALLS.__contains__)
        op_of_sync = host_op_of(trace, syncs)
    else:   # CPU: the outermost ops that would sync on a GPU are the syncs and their own ops
        syncs = _top_level(trace, _rows_named(trace, CPU_OP, WOULD_SYNC_OPS.__contains__))
        syncs = syncs[np.argsort(x["ts"][syncs], kind="stable")]
        op_of_sync = syncs
    sync_th = thread_key(trace, syncs) if len(syncs) else np.zeros(0, np.int64)
    sync_end = x["ts"][syncs] + x["dur"][syncs]
    op_ts = np.where(op_of_sync >= 0, x["ts"][np.maximum(op_of_sync, 0)], x["ts"][syncs]) if len(syncs) \
        else np.zeros(0)
    lines = _site_lines(trace, syncs, sync_th, op_ts)
    # host-time splits per launch thread: top-level ops and runtime calls as sorted intervals
    covers: dict[int, tuple] = {}

    def cover(th: int):
        if th not in covers:
            pid, tid = th >> 32, th & 0xFFFFFFFF
            on = (x["pid"] == pid) & (x["tid"] == tid)
            rt = np.nonzero(on & is_rt)[0]
            ops = _top_level(trace, np.nonzero(on & (x["cat"] == CPU_OP))[0])
            rt = rt[np.argsort(x["ts"][rt])]
            ops = ops[np.argsort(x["ts"][ops])]
            covers[th] = (coverage(x["ts"][rt], x["ts"][rt] + x["dur"][rt]),
                          coverage(x["ts"][ops], x["ts"][ops] + x["dur"][ops]))
        return covers[th]

    site_idle: dict[tuple, float] = defaultdict(float)
    by_region: dict[tuple, dict[str, float]] = defaultdict(lambda: {c: 0.0 for c in CAUSES})
    # each sync call's site, once: (the op that made it, the region it ran in, the Python line)
    sync_host = forest.innermost(sync_th, x["ts"][syncs] + x["dur"][syncs] / 2) if len(syncs) else syncs
    site_of = [(names[int(x["name"][op])] if op >= 0 else names[int(x["name"][r])],
                "/".join(region_path_of(int(h)) or ()) if h >= 0 else "", line)
               for r, op, h, line in zip(syncs.tolist(), op_of_sync.tolist(), sync_host.tolist(), lines)]
    # per launch thread, the syncs by end time: a gap looks up the few that ended inside it
    by_thread: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for th in np.unique(sync_th).tolist():
        k = np.nonzero(sync_th == th)[0]
        k = k[np.argsort(sync_end[k], kind="stable")]
        by_thread[th] = (k, sync_end[k])

    def sync_before(th: int, g0: float, lt: float) -> int | None:
        """The last sync on thread `th` that returned when the GPU drained at g0, before launch lt."""
        if th not in by_thread:
            return None
        k, ends = by_thread[th]
        lo, hi = np.searchsorted(ends, g0 - _EPS_US, "left"), np.searchsorted(ends, lt + 1e-3, "right")
        hits = [int(i) for i in k[lo:hi] if x["ts"][syncs[i]] < g0 + _EPS_US]
        return max(hits) if hits else None

    launch_th = thread_key(trace, np.maximum(att.launch, 0)) if att is not None else g
    pids = x["pid"][g]
    for pid in np.unique(pids):
        sel = np.nonzero(pids == pid)[0]
        sel = sel[np.argsort(x["ts"][g[sel]], kind="stable")]
        s = x["ts"][g[sel]]
        e = np.maximum.accumulate(s + x["dur"][g[sel]])
        gap = s[1:] - e[:-1]
        idx = np.nonzero(gap > 0)[0]
        for j in idx.tolist():
            a_pos = int(sel[j + 1])            # the activity that ended the gap
            g0, g1 = float(e[j]), float(s[j + 1])
            ms = (g1 - g0) / 1e3
            launch = int(att.launch[a_pos])
            cause, site = "other", None
            if launch >= 0:
                lt = float(x["ts"][launch])
                th = int(launch_th[a_pos])
                if lt < g0:
                    cause = "gpu"
                else:
                    site = sync_before(th, g0, lt)
                    if site is not None:
                        cause = "sync"
                    elif x["cat"][g[a_pos]] == MEMCPY:
                        cause = "h2d"
                    else:
                        cause = "launch"
                        rt_cov, op_cov = cover(th)
                        a_, b_ = np.array([g0]), np.array([min(lt, g1)])
                        r = float(rt_cov(a_, b_)[0])
                        o = max(float(op_cov(a_, b_)[0]) - r, 0.0)
                        span = max(float(b_[0] - a_[0]), 0.0)
                        out["launch_host_ms"]["runtime"] += r / 1e3
                        out["launch_host_ms"]["ops"] += o / 1e3
                        out["launch_host_ms"]["python"] += max(span - r - o, 0.0) / 1e3
            out["by_cause"][cause] += ms
            out["total_ms"] += ms
            out["gaps"] += 1
            host = int(att.host[a_pos])
            path = region_path_of(host) if host >= 0 else ("(unattributed)",)
            by_region[path][cause] += ms
            if site is not None:
                site_idle[site_of[site]] += ms
    site_count = Counter(site_of)   # every sync call counts, whether or not a gap followed it
    per = max(blocks, 1)
    out["sync_sites"] = sorted(({"op": op, "where": where, "line": line, "count": n, "per_block": n / per,
                                 "idle_ms": site_idle.get((op, where, line), 0.0)}
                                for (op, where, line), n in site_count.items()),
                               key=lambda r: (-r["idle_ms"], -r["count"]))
    # what CUDA graphs (or fusion) could win at most: the launch-bound gaps of each forward
    per_forward: dict[tuple, float] = defaultdict(float)
    for path, v in by_region.items():
        cut = next((i for i, name in enumerate(path) if name.startswith(FORWARDS)), None)
        if cut is not None and v["launch"]:
            per_forward[path[:cut + 1]] += v["launch"]
    out["launch_bound_per_forward"] = sorted(
        ({"forward": "/".join(f), "ms": ms / max(instances_of(f) if instances_of else 1, 1)}
         for f, ms in per_forward.items()), key=lambda r: -r["ms"])
    out["by_region"] = sorted(({"region": "/".join(p), "ms": sum(v.values()), **v} for p, v in by_region.items()),
                              key=lambda r: -r["ms"])
    return out
