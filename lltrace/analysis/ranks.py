"""The ranks of a sequence-parallel run (`lltrace run --nproc N`): per-rank budgets,
communication vs compute, rank skew per collective, the straggler (docs/FORMATS.md §3 `ranks`).

Stateless over the loaded traces (numpy, no torch). A rank's collectives are, in program
order, its NCCL kernels on a GPU trace (the device time a collective takes, waiting for its
peers included) or, on a CPU trace, gloo's own ranges (`gloo:all_to_all`, on gloo's
worker thread while the caller waits) inside its `ll/comm` regions. Every rank runs the same program, so the k-th collective of one rank is the k-th
of every other: that is how they are matched (a count mismatch is a warning; the common
prefix is used).

- exposed communication: a rank's collective time not overlapped by its compute (GPU:
  kernels that are not collectives, on any stream; CPU: host ops on threads other than
  gloo's, the c10d calls that start a collective left out). Overlapped = collective time minus exposed.
- skew of collective k: max - min over ranks of its start (arrival) and of its end.
- the straggler: the rank that arrives last at a collective makes every other rank wait
  (last start - their start). Summed over collectives, the rank that caused most waiting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lltrace import names
from lltrace.errors import LltraceError
from lltrace.trace.budget import Budget, Node, build_budget
from lltrace.trace.events import (
    CPU_OP,
    GPU_ACTIVITY,
    HOST_RANGE,
    KERNEL,
    USER_ANNOTATION,
    Trace,
)
from lltrace.trace.intervals import coverage, union
from lltrace.trace.loader import load_trace
from lltrace.trace.ranks import base_offset_us, rank_traces

COMM = names.name(names.COMM)
COMM_LEAF = names.leaf(COMM)
_LAYER = "ll/" + names.LAYER + "["


@dataclass
class Collectives:
    """One rank's collectives in program order (µs on rank 0's clock)."""
    start: np.ndarray
    end: np.ndarray
    op: list[str]          # the collective: gloo:all_to_all, ncclDevKernel_AllGather_RING..., ...
    layer: list[int | None]
    clock: str             # "device" (NCCL kernels) | "host" (ll/comm regions)


@dataclass
class RankView:
    rank: int
    trace: Trace
    budget: Budget
    collectives: Collectives
    exposed_ms: float
    overlapped_ms: float
    meta: dict[str, Any] = field(default_factory=dict)   # meta.json ranks.per_rank[r]

    @property
    def comm_ms(self) -> float:
        return float((self.collectives.end - self.collectives.start).sum()) / 1e3


# ----------------------------------------------------------------------------- one rank
def _offset_us(trace: Trace, base_ns: float | None) -> float:
    return base_offset_us(trace.top, base_ns)


def _is_collective_kernel(name: str) -> bool:
    return "nccl" in name.lower()


def collectives_of(trace: Trace, base_ns: float | None = None) -> Collectives:
    """The rank's collectives (see the module docstring), in program order."""
    x, off = trace.x, _offset_us(trace, base_ns)
    ts, dur, cat, nm = x["ts"], x["dur"], x["cat"], x["name"]
    layer_spans = [(float(ts[i]), float(ts[i] + dur[i]), names.split(names.leaf(trace.names[nm[i]]))[1])
                   for i in np.nonzero(np.isin(cat, HOST_RANGE))[0]
                   if trace.names[nm[i]].startswith(_LAYER)]
    layer_spans.sort()
    lstart = np.array([s for s, _, _ in layer_spans])

    def layer_at(t: float) -> int | None:   # layers never nest: the last one started before t
        i = int(np.searchsorted(lstart, t, side="right")) - 1
        return layer_spans[i][2] if i >= 0 and layer_spans[i][1] >= t else None

    kern = np.nonzero(cat == KERNEL)[0]
    nccl = [i for i in kern if _is_collective_kernel(trace.names[nm[i]])]
    if nccl:
        nccl.sort(key=lambda i: ts[i])
        idx = np.array(nccl)   # (a device kernel's layer would need its launch: not needed for skew)
        return Collectives(ts[idx] + off, ts[idx] + dur[idx] + off, [trace.names[nm[i]] for i in idx],
                           [None] * len(idx), "device")
    comm_id = trace.names.index(COMM) if COMM in trace.names else -1
    sel = np.nonzero((nm == comm_id) & np.isin(cat, (USER_ANNOTATION, CPU_OP)))[0]
    sel = sel[np.argsort(ts[sel], kind="stable")]
    # gloo works on its own thread ("gloo:all_to_all", ...) while the caller waits: that range
    # is the collective; ll/comm around it adds the layout copies (the all-to-all's permutes)
    work = _gloo_ranges(trace)
    work = work[np.argsort(ts[work], kind="stable")]
    ops, start, end = [], [], []
    for i in sel:
        j = int(np.searchsorted(ts[work], ts[i], side="left")) if len(work) else 0
        k = work[j] if j < len(work) and ts[work[j]] <= ts[i] + dur[i] else i
        ops.append(trace.names[nm[k]] if k != i else "collective")
        start.append(ts[k])
        end.append(ts[k] + dur[k])
    return Collectives(np.array(start, dtype=np.float64) + off, np.array(end, dtype=np.float64) + off, ops,
                       [layer_at(float(ts[i])) for i in sel], "host")


def _gloo_ranges(trace: Trace) -> np.ndarray:
    """Indices of the gloo backend's own ranges (`gloo:<collective>`, on its worker thread)."""
    gloo = [i for i, n in enumerate(trace.names) if n.startswith("gloo:")]
    x = trace.x
    return np.nonzero(np.isin(x["name"], gloo) & np.isin(x["cat"], HOST_RANGE))[0]


def exposure(trace: Trace, coll: Collectives, base_ns: float | None = None) -> tuple[float, float]:
    """(exposed, overlapped) ms of the rank's collectives against its compute."""
    x, off = trace.x, _offset_us(trace, base_ns)
    ts, dur, cat, nm = x["ts"] + off, x["dur"], x["cat"], x["name"]
    if coll.clock == "device":
        comp = np.array([i for i in np.nonzero(np.isin(cat, GPU_ACTIVITY))[0]
                         if not _is_collective_kernel(trace.names[nm[i]])], dtype=np.int64)
    else:
        # host ops off gloo's threads, but not the c10d calls that hand it the collective: while
        # gloo works the caller waits, so only another thread's compute can overlap
        gloo_tids = np.unique(x["tid"][_gloo_ranges(trace)])
        c10d = [i for i, n in enumerate(trace.names) if n.startswith("c10d::")]
        comp = np.nonzero((cat == CPU_OP) & ~np.isin(x["tid"], gloo_tids) & ~np.isin(nm, c10d))[0]
    us, ue = union(ts[comp], ts[comp] + dur[comp])
    cov = coverage(us, ue)(coll.start, coll.end)
    total = float((coll.end - coll.start).sum())
    over = float(cov.sum())
    return (total - over) / 1e3, over / 1e3


def comm_by_layer(tree: Node) -> dict[str, float]:
    """Value of the `comm` op regions under each layer row of a budget tree (summed over
    steps / context / recache), and `(outside layers)` for the rest."""
    out: dict[str, float] = {}
    for path, node in tree.walk():
        if node.name != COMM_LEAF:
            continue
        layer = next((p for p in reversed(path[:-1]) if p.startswith(names.LAYER + "[")), "(outside layers)")
        out[layer] = out.get(layer, 0.0) + node.value("gpu" if node.gpu_ms else "cpu")
    return out


# ----------------------------------------------------------------------------- all ranks
@dataclass
class RanksAnalysis:
    ranks: list[RankView]
    world_size: int
    skew: dict[str, Any]
    straggler: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    def rank(self, r: int) -> RankView:
        for v in self.ranks:
            if v.rank == r:
                return v
        raise LltraceError(f"--rank {r}: the run has ranks {', '.join(str(v.rank) for v in self.ranks)}")

    def to_dict(self, tree_depth=None, prune=None) -> dict[str, Any]:
        per = {}
        for v in self.ranks:
            b = v.budget
            per[str(v.rank)] = {
                "wall_ms": b.wall_ms, "metric": b.metric, "value_ms": b.tree.value(b.metric),
                "comm_ms": v.comm_ms, "comm_share": v.comm_ms / b.wall_ms if b.wall_ms else None,
                "exposed_comm_ms": v.exposed_ms, "overlapped_comm_ms": v.overlapped_ms,
                "collectives": len(v.collectives.start), "clock": v.collectives.clock,
                "comm_by_layer": comm_by_layer(b.tree),
                "ms_per_block": v.meta.get("ms_per_block"),
                "tree": (prune(b.tree, tree_depth) if prune else b.tree).to_dict(),
            }
        return {"world_size": self.world_size, "per_rank": per, "skew": self.skew,
                "straggler": self.straggler, "warnings": list(self.warnings)}


def skew_and_straggler(colls: dict[int, Collectives]) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """Skew per collective and the straggler (module docstring) of ranks' matched collectives."""
    warnings = []
    ranks = sorted(colls)
    counts = {r: len(colls[r].start) for r in ranks}
    n = min(counts.values()) if counts else 0
    if len(set(counts.values())) > 1:
        warnings.append("the ranks recorded different numbers of collectives ("
                        + ", ".join(f"rank {r}: {c}" for r, c in counts.items())
                        + f"): the first {n} are matched")
    if n == 0 or len(ranks) < 2:
        return {"collectives": n, "by_op": {}}, None, warnings
    starts = np.stack([colls[r].start[:n] for r in ranks])   # [ranks, n]
    ends = np.stack([colls[r].end[:n] for r in ranks])
    start_skew, end_skew = starts.max(0) - starts.min(0), ends.max(0) - ends.min(0)
    last = starts.argmax(0)                                    # who arrived last at each
    wait = (starts.max(0)[None, :] - starts).sum(0)            # µs the others waited for it
    ops = colls[ranks[0]].op[:n]
    by_op: dict[str, Any] = {}
    for op in sorted(set(ops)):
        sel = np.array([o == op for o in ops])
        by_op[op] = {"n": int(sel.sum()), **_stats("start_skew_us", start_skew[sel]),
                     **_stats("end_skew_us", end_skew[sel])}
    caused = {r: float(wait[last == i].sum()) / 1e3 for i, r in enumerate(ranks)}
    arrived_last = {r: int((last == i).sum()) for i, r in enumerate(ranks)}
    worst = max(ranks, key=lambda r: (caused[r], arrived_last[r]))
    skew = {"collectives": n, "clock": colls[ranks[0]].clock,
            **_stats("start_skew_us", start_skew), **_stats("end_skew_us", end_skew), "by_op": by_op}
    straggler = {"rank": worst, "arrived_last": arrived_last[worst], "of": n,
                 "wait_caused_ms": caused[worst],
                 "per_rank": {str(r): {"arrived_last": arrived_last[r], "wait_caused_ms": caused[r]}
                              for r in ranks}}
    return skew, straggler, warnings


def _stats(key: str, v: np.ndarray) -> dict[str, float]:
    p = np.percentile(v, [50, 99]) if len(v) else [math.nan, math.nan]
    return {f"{key}_p50": float(p[0]), f"{key}_p99": float(p[1]), f"{key}_max": float(v.max()) if len(v) else math.nan}


def analyze_run(run_dir: Path, meta: dict[str, Any], rank0: Trace | None = None, budget0: Budget | None = None,
                progress=None) -> RanksAnalysis:
    """Every rank of the run at `run_dir` (meta: its meta.json). `rank0`/`budget0`: rank 0's
    trace and budget when the caller has them already."""
    files = rank_traces(meta)
    if not files:
        raise LltraceError(f"{run_dir} is not a multi-rank run (meta.json has no ranks)")
    per_meta = meta["ranks"].get("per_rank", {})
    traces: dict[int, Trace] = {}
    warnings: list[str] = []
    for r, fs in files.items():
        path = Path(run_dir) / fs[0]
        if r == 0 and rank0 is not None:
            traces[r] = rank0
            continue
        if not path.is_file():
            warnings.append(f"rank {r}: {fs[0]} is missing; that rank is left out")
            continue
        traces[r] = load_trace(path, progress)
    if 0 not in traces:
        raise LltraceError(f"{run_dir}: rank 0's trace is missing")
    base = traces[0].top.get("baseTimeNanoseconds")
    base = float(base) if isinstance(base, (int, float)) else None
    views, colls = [], {}
    world = int(meta["ranks"].get("world_size") or len(files))
    for r, t in traces.items():
        b = budget0 if (r == 0 and budget0 is not None) else build_budget(t, meta)
        per_rank_flops(b, world)
        c = colls[r] = collectives_of(t, base)
        exposed, over = exposure(t, c, base)
        views.append(RankView(r, t, b, c, exposed, over, per_meta.get(str(r), {}) or {}))
    skew, straggler, w = skew_and_straggler(colls)
    return RanksAnalysis(views, world, skew, straggler, warnings + w)


def per_rank_flops(budget: Budget, world: int) -> None:
    """The roofline counts the whole model's FLOPs (meta.json's config); under Ulysses a rank
    does 1/world of every layer's (its tokens in the linears, its heads in attention). The
    patch embedding runs whole on every rank: its few FLOPs are undercounted the same way."""
    if world <= 1 or getattr(budget, "_per_rank_flops", False):
        return
    budget._per_rank_flops = True
    for _, node in budget.tree.walk():
        if node.flops:
            node.flops /= world
        if node.tflops:
            node.tflops /= world


def side_ranks(meta: dict[str, Any] | None, budget: Budget) -> dict[str, Any]:
    """What `lltrace diff` says of one side's parallelism, without reading the other ranks'
    traces: the ranks, rank 0's comm share (its `comm` regions over the run, from the budget
    it already has) and each rank's ms per block (meta.json)."""
    files = rank_traces(meta)
    world = len(files) if files else 1
    comm = sum(v for v in comm_by_layer(budget.tree).values())
    total = budget.tree.value(budget.metric)
    per = ((meta or {}).get("ranks") or {}).get("per_rank") or {} if files else {}
    blocks = {r: (v.get("ms_per_block") or {}).get("p50") for r, v in per.items() if isinstance(v, dict)}
    return {"world_size": world, "comm_ms": comm, "comm_share": comm / total if total else None,
            "ms_per_block_p50": blocks}
