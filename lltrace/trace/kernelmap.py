"""Below the layer for compiled and CUDA-graph-replayed kernels: which op region each kernel
belongs to, when the trace itself has no range around it (docs/FORMATS.md §5).

Two gaps, two sources, both recorded by the run itself (lltrace.capture):
- **Compiled code** (torch.compile'd block halves): inductor fuses across module boundaries, so
  no op region exists inside a `Torch-Compiled Region: <id>` range. `provenance.json` lists, per
  compile id, every kernel the compiled code calls, in call order, with the region its FX nodes
  vote for. Triton kernels are matched by name; calls of other kernels (GEMMs, attention) fall
  between two matched Triton kernels, where the provenance list says which calls come, in order.
- **CUDA-graph replays**: replayed kernels carry the correlation of their `cudaGraphLaunch`
  only. The capture of graph i (`ll/graph_capture[i]`, in the window's trace or in
  `graph-capture-<i>.json.gz`) holds one launch per graph node, in order, each inside the
  regions (and compiled regions) open at that moment. Replay position k is capture launch k.
  The match is checked (same count; each Triton kernel's name at its position): where it fails,
  the replay's kernels stay at step level and a warning says so.
Matched kernels are moved into (virtual) region rows below the range that launched them, so the
budget, diff and export see them as if the regions had been recorded.

Hand-written: no library maps replayed kernels to capture-time regions or joins inductor's
provenance with a Kineto trace.
"""
from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lltrace import names
from lltrace.capture.patterns import kernel_region
from lltrace.trace import regions
from lltrace.trace.attribution import build_forest, host_op_of, thread_key
from lltrace.trace.events import CPU_OP, RUNTIME, USER_ANNOTATION, Trace

COMPILED_PREFIX = "Torch-Compiled Region: "
CAPTURE = names.GRAPH_CAPTURE   # ll/graph_capture[i]: around the capture of graph i
REPLAY = names.GRAPH            # ll/graph[i]: around each replay of graph i
GRAPH_LAUNCH = names.name(names.GRAPH_LAUNCH)   # replayed kernels without attribution, grouped
LAUNCHES = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                      "cudaLaunchCooperativeKernel", "cudaMemsetAsync", "cudaMemcpyAsync",
                      "cudaMemset2DAsync", "cudaMemcpy2DAsync", "cuMemsetD8Async", "cuMemsetD32Async",
                      "cuMemcpyAsync", "cuMemcpyDtoDAsync"})


@dataclass
class KernelMapReport:
    """What the mapping did, for the budget's warnings and `trace` section."""
    compiled_kernels: int = 0        # GPU activities placed by provenance
    compiled_missed: int = 0         # launched in a compiled region, not placed
    replayed_kernels: int = 0        # GPU activities placed by a recorded capture
    replayed_missed: int = 0         # replayed, not placed (no record, or the match failed)
    method: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"compiled_kernels": self.compiled_kernels, "compiled_missed": self.compiled_missed,
                "replayed_kernels": self.replayed_kernels, "replayed_missed": self.replayed_missed,
                "method": dict(self.method)}


# ----------------------------------------------------------------------------- inputs

def load_provenance(run_dir: Path | None) -> dict[str, list[tuple[str, str | None]]] | None:
    """compile id -> [(kernel name, region)] in call order, from the run's provenance.json."""
    if run_dir is None:
        return None
    try:
        data = json.loads((Path(run_dir) / "provenance.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("compiles"), dict):
        return None
    out: dict[str, list[tuple[str, str | None]]] = {}
    for cid, comp in data["compiles"].items():
        ks = comp.get("kernels") if isinstance(comp, dict) else None
        if isinstance(ks, list):
            # the region is decided here, from the nodes' modules (capture keeps them raw)
            out[str(cid)] = [(str(k.get("kernel")), kernel_region(k["modules"]) if isinstance(k.get("modules"), dict)
                              else None) for k in ks if isinstance(k, dict)]
    return out


def _is_triton(name: str) -> bool:
    return name.startswith("triton_")


def _enclosing(trace: Trace, rows: np.ndarray, launch_rows: np.ndarray) -> np.ndarray:
    """Index into `rows` of the innermost of these host ranges around each launch (same
    thread, by the launch's middle); -1 if none."""
    if not len(rows) or not len(launch_rows):
        return np.full(len(launch_rows), -1, dtype=np.int64)
    x = trace.x
    forest = build_forest(trace, rows)
    inner = forest.innermost(thread_key(trace, launch_rows), x["ts"][launch_rows] + x["dur"][launch_rows] / 2)
    pos_of_row = {int(r): i for i, r in enumerate(rows)}
    return np.array([pos_of_row[int(forest.idx[p])] if p >= 0 else -1 for p in inner], dtype=np.int64)


def compiled_calls(trace: Trace, launch_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the `Torch-Compiled Region: <id>` ranges of the trace, and for each launch the index of
    the innermost one around it, -1 outside every one)."""
    x, names = trace.x, trace.names
    comp = np.nonzero((x["cat"] == CPU_OP) & np.isin(
        x["name"], [i for i, nm in enumerate(names) if nm.startswith(COMPILED_PREFIX)]))[0]
    return comp, _enclosing(trace, comp, launch_rows)


def compiled_regions(trace: Trace, launch_rows: np.ndarray,
                     prov: dict[str, list[tuple[str, str | None]]], calls=None) -> list[str | None]:
    """The provenance region (`ll/self_attn`, ...) of each launch made inside a compiled region;
    "" where provenance has the kernel but no module of it maps to a region (it stays in its
    layer's own time); None where it is outside one or cannot be placed. `calls`:
    compiled_calls(trace, launch_rows), when the caller has it already."""
    x, names = trace.x, trace.names
    out: list[str | None] = [None] * len(launch_rows)
    if not len(launch_rows) or not prov:
        return out
    comp, where = calls if calls is not None else compiled_calls(trace, launch_rows)
    if not len(comp):
        return out
    ops = host_op_of(trace, launch_rows)
    by_inst: dict[int, list[int]] = defaultdict(list)
    for j in np.argsort(x["ts"][launch_rows], kind="stable"):
        if where[j] >= 0:
            by_inst[int(where[j])].append(int(j))
    for inst, js in by_inst.items():
        entries = prov.get(names[int(x["name"][comp[inst]])][len(COMPILED_PREFIX):])
        if not entries:
            continue
        _place(js, ops, names, x, entries, out)
    return out


def _place(js: list[int], ops: np.ndarray, names: list[str], x, entries, out) -> None:
    """Launches of one compiled-region call (in time order) -> regions, by the provenance list."""
    triton_at: dict[str, deque[int]] = defaultdict(deque)
    for i, (k, _) in enumerate(entries):
        if _is_triton(k):
            triton_at[k].append(i)
    # Triton launches: by name, in order. Then each other launch lies between two placed Triton
    # calls; the provenance entries between them are the calls that happen there.
    pos: list[int | None] = []
    last = -1
    for j in js:
        op = int(ops[j])
        nm = names[int(x["name"][op])] if op >= 0 else None
        if nm is not None and _is_triton(nm) and triton_at.get(nm):
            q = triton_at[nm]
            while q and q[0] <= last:        # an earlier call of the same kernel name
                q.popleft()
            if q:
                last = q.popleft()
                pos.append(last)
                continue
        pos.append(None)
    for k, j in enumerate(js):
        if pos[k] is not None:
            out[j] = entries[pos[k]][1] or ""
            continue
        lo = max((p for p in pos[:k] if p is not None), default=-1)
        hi = min((p for p in pos[k + 1:] if p is not None), default=len(entries))
        gap = {entries[i][1] or "" for i in range(lo + 1, hi) if not _is_triton(entries[i][0])}
        if len(gap) == 1:
            out[j] = next(iter(gap))


def _ll_rows(trace: Trace) -> np.ndarray:
    x, names = trace.x, trace.names
    ids = [i for i, nm in enumerate(names) if nm.startswith(regions.PREFIX)]
    return np.nonzero((x["cat"] == USER_ANNOTATION) & np.isin(x["name"], ids))[0]


def _rows_named(trace: Trace, base: str) -> dict[int, np.ndarray]:
    """ll/<base>[i] user annotations by i."""
    x, names = trace.x, trace.names
    out: dict[int, list[int]] = defaultdict(list)
    for r in _ll_rows(trace):
        b, i = regions.parse(names[int(x["name"][r])][len(regions.PREFIX):])
        if b == base and i is not None:
            out[i].append(int(r))
    return {i: np.array(v, dtype=np.int64) for i, v in out.items()}


def capture_record(trace: Trace, index: int, prov) -> list[tuple[tuple[str, ...], str | None]] | None:
    """Graph `index`'s nodes in order: (region path below the capture, launching op name)."""
    x, names = trace.x, trace.names
    caps = _rows_named(trace, CAPTURE).get(index)
    if caps is None or not len(caps):
        return None
    cap = int(caps[0])
    t0, t1 = x["ts"][cap], x["ts"][cap] + x["dur"][cap]
    rt = np.nonzero((x["cat"] == RUNTIME) & (x["pid"] == x["pid"][cap]) & (x["tid"] == x["tid"][cap])
                    & (x["ts"] >= t0) & (x["ts"] <= t1))[0]
    rt = rt[np.argsort(x["ts"][rt], kind="stable")]
    rnames = [names[int(n)] for n in x["name"][rt]]
    # only what is captured: between the stream's begin and end of capture
    begin = next((k for k, n in enumerate(rnames) if n == "cudaStreamBeginCapture"), -1)
    end = next((k for k, n in enumerate(rnames) if n == "cudaStreamEndCapture"), len(rnames))
    launch = np.array([int(rt[k]) for k in range(begin + 1, end) if rnames[k] in LAUNCHES], dtype=np.int64)
    ll = _ll_rows(trace)
    ll = ll[(x["ts"][ll] >= t0) & (x["ts"][ll] <= t1)]
    inner = _enclosing(trace, ll, launch)
    forest = build_forest(trace, ll)
    pos_of_row = {int(r): p for p, r in enumerate(forest.idx)}
    comp = compiled_regions(trace, launch, prov or {})
    ops = host_op_of(trace, launch)
    out = []
    for j in range(len(launch)):
        path: list[str] = []
        p = pos_of_row.get(int(ll[inner[j]])) if inner[j] >= 0 else None
        while p is not None and p >= 0:
            nm = names[int(x["name"][forest.idx[p]])]
            if nm.startswith(regions.PREFIX) and regions.parse(nm[len(regions.PREFIX):])[0] != CAPTURE:
                path.append(nm)
            p = int(forest.parent[p])
        path.reverse()
        if comp[j] and (not path or path[-1] != comp[j]):
            path.append(comp[j])
        op = int(ops[j])
        out.append((tuple(path), names[int(x["name"][op])] if op >= 0 else None))
    return out


def replay_graphs(trace: Trace, launch_rows: np.ndarray) -> np.ndarray:
    """Graph index of each cudaGraphLaunch row, from the ll/graph[i] range around it; -1 if none."""
    rep = _rows_named(trace, REPLAY)
    if not rep or not len(launch_rows):
        return np.full(len(launch_rows), -1, dtype=np.int64)
    rows = np.concatenate(list(rep.values()))
    idx = np.concatenate([np.full(len(v), i) for i, v in rep.items()])
    where = _enclosing(trace, rows, launch_rows)
    return np.where(where >= 0, idx[np.maximum(where, 0)], -1)


# ----------------------------------------------------------------------------- placing

class _Rows:
    """Find-or-create region rows below existing ones; new rows are appended to the forest at
    the end (a parent always precedes its children)."""

    def __init__(self, trace: Trace, forest):
        self.trace, self.forest = trace, forest
        self.n = len(forest)
        self.child: dict[tuple[int, int], int] = {}
        for k, (p, nm) in enumerate(zip(forest.parent.tolist(), forest.name.tolist())):
            self.child.setdefault((p, nm), k)
        self.new: list[tuple[int, int, float]] = []    # (name id, parent, start)

    def below(self, parent: int, path: tuple[str, ...]) -> int:
        p = parent
        for name in path:
            nid = self.trace.intern(name)
            k = self.child.get((p, nid))
            if k is None:
                start = float(self.forest.start[p]) if p < self.n else self.new[p - self.n][2]
                k = self.child[(p, nid)] = self.n + len(self.new)
                self.new.append((nid, p, start))
            p = k
        return p

    def commit(self) -> None:
        for nid, parent, start in self.new:   # positions were handed out in this order
            self.forest.append(nid, parent, start, start)


def apply(trace: Trace, forest, att) -> KernelMapReport:
    """Move compiled and replayed kernels of `att` (attribution) into op-region rows of `forest`."""
    rep = KernelMapReport()
    x, names = trace.x, trace.names
    if att is None or not len(att.gpu):
        return rep
    prov = load_provenance(trace.run_dir)
    rows = _Rows(trace, forest)
    ll_host = att.host >= 0

    lltrace = any(names[int(n)].startswith(regions.PREFIX) for n in forest.name[:64])
    # compiled code launched eagerly
    eager = np.nonzero((att.launch >= 0) & ~att.graph & ll_host)[0]
    comp_rows, where = compiled_calls(trace, att.launch[eager])
    if len(eager) and len(comp_rows):
        reg = compiled_regions(trace, att.launch[eager], prov, (comp_rows, where)) if prov else [None] * len(eager)
        grouped = 0
        for a, r, w in zip(eager.tolist(), reg, where.tolist()):
            host = int(att.host[a])
            if r is None and w >= 0:
                # no provenance for it: group by its compiled region, named as the trace names it
                cid = names[int(x["name"][comp_rows[w]])][len(COMPILED_PREFIX):]
                att.host[a] = rows.below(host, (f"{regions.PREFIX}compiled[{cid}]" if lltrace
                                                else f"{COMPILED_PREFIX}{cid}",))
                grouped += 1
            elif r:
                if names[int(forest.name[host])] != r:
                    att.host[a] = rows.below(host, (r,))
                rep.compiled_kernels += 1
            elif r == "":
                rep.compiled_kernels += 1   # placed, in its layer's own time: no module of it maps to a region
        rep.compiled_missed = grouped
        rep.method["compiled"] = ("inductor provenance (provenance.json)" if prov else
                                  "none: no provenance.json; kernels grouped by compiled region")

    # CUDA-graph replays
    rg = np.nonzero(att.graph & ll_host)[0]
    if len(rg):
        _replays(trace, att, rg, prov, rows, rep, GRAPH_LAUNCH if lltrace else "cudaGraphLaunch")
    rows.commit()
    if rep.compiled_missed:
        rep.warnings.append(f"{rep.compiled_missed} kernels launched by compiled code have no module attribution "
                            "(not in inductor's provenance, or no provenance.json): grouped by their compiled "
                            "region; their names list the fused ops")
    return rep


def _replays(trace: Trace, att, rg: np.ndarray, prov, rows: _Rows, rep: KernelMapReport, group: str) -> None:
    x, names = trace.x, trace.names
    launches, inv = np.unique(att.launch[rg], return_inverse=True)
    graph_of = replay_graphs(trace, launches)
    records: dict[int, Any] = {}
    for g in sorted(set(graph_of.tolist()) - {-1}):
        records[g] = _record(trace, g, prov)
    bad: dict[int, str] = {}
    by_launch = np.split(rg[np.argsort(inv, kind="stable")], np.cumsum(np.bincount(inv, minlength=len(launches)))[:-1])
    for li, g in enumerate(graph_of.tolist()):
        acts = by_launch[li]
        acts = acts[np.argsort(x["ts"][att.gpu[acts]], kind="stable")]
        rec = records.get(g) if g >= 0 else None
        why = None
        if g < 0:
            why = "no ll/graph[i] range around its cudaGraphLaunch"
        elif rec is None:
            why = f"graph {g}'s capture was not recorded"
        elif len(rec) != len(acts):
            why = f"graph {g}: {len(acts)} kernels replayed, {len(rec)} launches captured"
        else:
            kn = [names[int(n)] for n in x["name"][att.gpu[acts]]]
            off = next((k for k, (_, op) in enumerate(rec) if op and _is_triton(op) and kn[k] != op), None)
            if off is not None:
                why = f"graph {g}: replayed kernel {off} is {kn[off][:40]}, captured {rec[off][1][:40]}"
        if why is not None:   # grouped by their graph launch, below the range around it
            rep.replayed_missed += len(acts)
            bad.setdefault(g, why)
            for a in acts.tolist():
                att.host[a] = rows.below(int(att.host[a]), (group,))
            continue
        for a, (path, _) in zip(acts.tolist(), rec):
            if path:
                att.host[a] = rows.below(int(att.host[a]), path)
        rep.replayed_kernels += len(acts)
    if rep.replayed_kernels:
        rep.method["replayed"] = "recorded capture, matched by order and Triton kernel name"
    for g, why in sorted(bad.items()):
        rep.warnings.append(f"CUDA-graph replay without module attribution ({why}): its kernels are "
                            "grouped by graph launch")


def _record(trace: Trace, g: int, prov):
    rec = capture_record(trace, g, prov)
    if rec is not None or trace.run_dir is None:
        return rec
    path = Path(trace.run_dir) / f"graph-capture-{g}.json.gz"
    if not path.is_file():
        return None
    from lltrace.trace.loader import load_trace   # the capture's own small trace
    try:
        ctrace = load_trace(path)
    except Exception:
        return None
    return capture_record(ctrace, g, prov)
