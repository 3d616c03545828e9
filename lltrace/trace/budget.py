"""The hierarchical time budget: run -> block -> step -> layer -> op region -> kernel class.

`build_budget(trace, meta=None) -> Budget` aggregates region instances into tree nodes
(docs/FORMATS.md §1 for names, §3 for the JSON). Each node carries GPU ms (kernels launched
inside its instances), host ms, share of its parent, instance count and p50/p95/p99 over
instances, and FLOPs / TFLOP/s where the model is known. GPU time a region spent outside
its sub-regions is shown as "(other)" with kernel classes below; GPU time outside every
region is "(unattributed)". So every node's children sum to the node.

A trace without GPU events gets the same tree over host time ("metric": "cpu"), with op
classes of the top-level host ops as leaves and "(python)" for host time outside any op.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lltrace.trace import roofline
from lltrace.errors import LltraceError
from lltrace.trace import regions
from lltrace.trace.attribution import BY_GPU_ANNOTATION, NONE, attribute, build_forest, thread_key
from lltrace.trace.events import CPU_OP, MEMCPY, MEMSET, PYTHON_MODULE, USER_ANNOTATION, Trace
from lltrace.trace.kernels import CLASSES, classify, classify_op
from lltrace.trace.loader import BUDGET_FORMAT, load_trace, resolve_source
from lltrace.trace.reader import Progress

PYTHON = "(python)"
OTHER_NODE, UNATTRIBUTED = "(other)", "(unattributed)"


def _r(v):
    """Round ms values to the ns: JSON without float noise."""
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, dict):
        return {k: _r(x) for k, x in v.items()}
    return v


def percentiles(values) -> dict[str, float] | None:
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return None
    p = np.percentile(v, [50, 95, 99])
    return {"p50": float(p[0]), "p95": float(p[1]), "p99": float(p[2])}


@dataclass
class Node:
    name: str
    kind: str = "region"            # root | region | other | unattributed | class
    gpu_ms: float = 0.0
    cpu_ms: float | None = None
    share: float = 1.0              # of the parent's value (GPU ms, or host ms for CPU-only traces)
    count: int = 1                  # instances (for class/other leaves: instances of the parent)
    instances_gpu_ms: dict[str, float] | None = None
    instances_cpu_ms: dict[str, float] | None = None
    flops: float | None = None
    tflops: float | None = None
    kernels: int = 0                # GPU activities counted in gpu_ms
    children: list["Node"] = field(default_factory=list)

    def value(self, metric: str) -> float:
        return self.gpu_ms if metric == "gpu" else (self.cpu_ms or 0.0)

    def child(self, name: str) -> "Node | None":
        return next((c for c in self.children if c.name == name), None)

    def find(self, *path: str) -> "Node | None":
        node: Node | None = self
        for name in path:
            node = node.child(name) if node is not None else None
        return node

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], "Node"]]:
        yield path, self
        for c in self.children:
            yield from c.walk(path + (c.name,))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "gpu_ms": _r(self.gpu_ms), "cpu_ms": _r(self.cpu_ms),
                "share": _r(self.share), "count": self.count, "instances_gpu_ms": _r(self.instances_gpu_ms),
                "instances_cpu_ms": _r(self.instances_cpu_ms), "flops": self.flops, "tflops": _r(self.tflops),
                "kernels": self.kernels, "children": [c.to_dict() for c in self.children]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        return cls(name=str(d["name"]), kind=d.get("kind", "region"), gpu_ms=float(d.get("gpu_ms") or 0.0),
                   cpu_ms=d.get("cpu_ms"), share=float(d.get("share", 1.0)), count=int(d.get("count", 1)),
                   instances_gpu_ms=d.get("instances_gpu_ms"), instances_cpu_ms=d.get("instances_cpu_ms"),
                   flops=d.get("flops"), tflops=d.get("tflops"), kernels=int(d.get("kernels", 0)),
                   children=[cls.from_dict(c) for c in d.get("children", [])])


@dataclass
class Budget:
    source: str
    tree: Node
    metric: str = "gpu"                 # "gpu", or "cpu" for traces without GPU events
    partial: bool = False
    warnings: list[str] = field(default_factory=list)
    wall_ms: float = 0.0
    gpu_ms: float = 0.0
    idle_gpu_ms: float = 0.0
    attributed_fraction: float = 0.0    # GPU time inside some region
    linked_fraction: float = 0.0        # GPU activities tied to a launch
    ceiling_tflops: float | None = None
    kernels: list[dict[str, Any]] = field(default_factory=list)
    classes: dict[str, float] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None
    hta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUDGET_FORMAT, "source": self.source, "partial": self.partial,
                "warnings": list(self.warnings), "metric": self.metric, "wall_ms": _r(self.wall_ms),
                "gpu_ms": _r(self.gpu_ms), "idle_gpu_ms": _r(self.idle_gpu_ms),
                "attributed_fraction": _r(self.attributed_fraction), "linked_fraction": _r(self.linked_fraction),
                "ceiling_tflops": self.ceiling_tflops, "tree": self.tree.to_dict(), "kernels": self.kernels,
                "classes": self.classes, "devices": self.devices, "trace": self.trace, "run": self.run,
                "hta": self.hta}

    @classmethod
    def from_dict(cls, d: Any) -> "Budget":
        if not isinstance(d, dict) or not isinstance(d.get("tree"), dict):
            raise LltraceError("not a budget JSON (no tree)")
        try:
            return cls(source=str(d.get("source", "")), tree=Node.from_dict(d["tree"]),
                       metric=d.get("metric", "gpu"), partial=bool(d.get("partial", False)),
                       warnings=list(d.get("warnings", [])), wall_ms=float(d.get("wall_ms") or 0.0),
                       gpu_ms=float(d.get("gpu_ms") or 0.0), idle_gpu_ms=float(d.get("idle_gpu_ms") or 0.0),
                       attributed_fraction=float(d.get("attributed_fraction") or 0.0),
                       linked_fraction=float(d.get("linked_fraction") or 0.0),
                       ceiling_tflops=d.get("ceiling_tflops"), kernels=list(d.get("kernels", [])),
                       classes=dict(d.get("classes", {})), devices=list(d.get("devices", [])),
                       trace=dict(d.get("trace", {})), run=d.get("run"), hta=d.get("hta"))
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise LltraceError(f"not a budget JSON ({exc.__class__.__name__}: {str(exc)[:200]})") from None


# ---------------------------------------------------------------------------------------

@dataclass
class _Acc:
    """Everything known about one tree node while instances are added."""
    name: str
    first: float
    inst_gpu: list[float] = field(default_factory=list)
    inst_cpu: list[float] = field(default_factory=list)
    inst_rows: list[int] = field(default_factory=list)          # rows of the per-instance leaf matrix
    inst_flops: list[float | None] = field(default_factory=list)
    kernels: np.ndarray | None = None                           # activity count per leaf label
    children: dict[tuple[str, ...], float] = field(default_factory=dict)   # child path -> first start


def _idle(starts: np.ndarray, ends: np.ndarray) -> tuple[float, float]:
    """(span, idle) µs of a set of intervals: idle = the gaps where none is running."""
    if not len(starts):
        return 0.0, 0.0
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], np.maximum.accumulate(ends[order])
    gaps = s[1:] - e[:-1]
    return float(e[-1] - s[0]), float(gaps[gaps > 0].sum())


def _devices(trace: Trace, gpu: np.ndarray) -> tuple[list[dict[str, Any]], float]:
    x = trace.x
    out, total_idle = [], 0.0
    pids = x["pid"][gpu]
    for pid in np.unique(pids):
        sel = gpu[pids == pid]
        s, e = x["ts"][sel], x["ts"][sel] + x["dur"][sel]
        span, idle = _idle(s, e)
        total_idle += idle
        streams = []
        tids = x["tid"][sel]
        for tid in np.unique(tids):
            ss = sel[tids == tid]
            sspan, sidle = _idle(x["ts"][ss], x["ts"][ss] + x["dur"][ss])
            streams.append({"stream": trace.ids[tid], "busy_ms": float(x["dur"][ss].sum()) / 1e3,
                            "span_ms": sspan / 1e3, "idle_ms": sidle / 1e3, "activities": int(len(ss))})
        streams.sort(key=lambda r: -r["busy_ms"])
        out.append({"device": trace.ids[pid], "span_ms": span / 1e3, "idle_ms": idle / 1e3,
                    "busy_ms": (span - idle) / 1e3, "streams": streams})
    return out, total_idle / 1e3


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
    attributed activity (att and cls_idx are None on CPU-only traces)."""
    lltrace: bool
    key_of_name: dict
    forest: Any
    labels: list[str]            # the kernel classes, plus PYTHON on CPU-only traces
    att: Any
    cls_idx: np.ndarray | None   # index into labels per attributed GPU activity
    early_note: str | None

    @property
    def gpu_mode(self) -> bool:
        return self.att is not None


def regions_and_attribution(trace: Trace) -> RegionAttribution:
    """Regions (region_candidates + build_forest), attribute_in_window and the kernel classes,
    once per trace: the budget and the diff's instance values both start from them."""
    cached = trace.memo.get("regions_and_attribution")
    if cached is None:
        lltrace, rows, key_of_name = region_candidates(trace)
        forest = build_forest(trace, rows)
        gpu_mode = trace.has_gpu
        labels = list(CLASSES) + ([] if gpu_mode else [PYTHON])
        att, note = attribute_in_window(trace, forest) if gpu_mode else (None, None)
        cls_idx = classify_activities(trace, att, labels) if gpu_mode else None
        cached = trace.memo["regions_and_attribution"] = RegionAttribution(
            lltrace, key_of_name, forest, labels, att, cls_idx, note)
    return cached


def attribute_in_window(trace: Trace, forest) -> tuple[Any, str | None]:
    """GPU attribution without the activities launched before the profiled window opened
    (their launches are not in the trace), and a note saying how much was left out."""
    att = attribute(trace, forest)
    if att.early is None or not att.early.any():
        return att, None
    early_ms = float(trace.x["dur"][att.gpu[att.early]].sum() / 1e3)
    note = (f"{int(att.early.sum())} GPU activities ({early_ms:.3g} ms) were launched before the "
            "profiled window opened: left out of the budget")
    return att.subset(~att.early), note


def classify_activities(trace: Trace, att, labels: list[str]) -> np.ndarray:
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


def cpu_self_times(trace: Trace, forest, labels: list[str], self_by: np.ndarray, kcount: np.ndarray | None = None):
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


def build_budget(trace: Trace, meta: dict[str, Any] | None = None) -> Budget:
    """Aggregate a loaded trace into the budget tree (meta: the run's meta.json, for FLOPs)."""
    meta = meta if meta is not None else trace.run_meta
    x = trace.x
    warnings = list(trace.warnings)

    # -- regions: lltrace's ll/... ranges, else every record_function and nn.Module range --
    ra = regions_and_attribution(trace)
    lltrace, key_of_name, forest, labels = ra.lltrace, ra.key_of_name, ra.forest, ra.labels
    n = len(forest)
    parent = forest.parent
    gpu_mode = ra.gpu_mode
    L = len(labels)
    self_by = np.zeros((n + 1, L))          # row n: outside every region
    kcount = np.zeros((n + 1, L), dtype=np.int64)
    kernels_table: list[dict[str, Any]] = []
    classes: dict[str, float] = {}
    devices: list[dict[str, Any]] = []
    idle_ms = gpu_total_ms = attributed = linked = 0.0
    inst_metric = np.zeros(n)

    if gpu_mode:
        att, cls_idx = ra.att, ra.cls_idx
        if ra.early_note:
            warnings.append(ra.early_note)
        g = att.gpu
        dur_ms = x["dur"][g] / 1e3
        row = np.where(att.host >= 0, att.host, n)
        np.add.at(self_by, (row, cls_idx), dur_ms)
        np.add.at(kcount, (row, cls_idx), 1)
        gpu_total_ms = float(dur_ms.sum())
        attributed = float(dur_ms[att.host >= 0].sum()) / gpu_total_ms if gpu_total_ms else 0.0
        linked = att.linked_fraction
        incl = self_by[:n].sum(1)
        for k in range(n - 1, -1, -1):     # children come after their parent: add up the tree
            if parent[k] >= 0:
                incl[parent[k]] += incl[k]
        inst_metric = incl
        devices, idle_ms = _devices(trace, g)
        classes = {labels[c]: float(v) for c, v in enumerate(np.bincount(cls_idx, dur_ms, minlength=L)) if v > 0}
        _warn_gpu(trace, att, dur_ms, gpu_total_ms, lltrace, attributed, warnings)
    else:
        warnings.append("no GPU events in this trace: a CPU-only budget (host ms per region; "
                        "op classes of the top-level host ops)")
        ops, op_dur, cls_idx, dur = cpu_self_times(trace, forest, labels, self_by, kcount)
        inst_metric = dur
        classes = {labels[c]: float(v) for c, v in enumerate(self_by[:, :L - 1].sum(0)) if v > 0}

    # -- roofline per instance (lltrace traces with a model config) --
    shapes = roofline.WanShapes.from_meta(meta) if lltrace else None
    paths, inst_flops = instance_paths(trace, forest, key_of_name, lltrace, shapes)

    # -- aggregate instances into nodes --
    root_path: tuple[str, ...] = ()
    accs: dict[tuple[str, ...], _Acc] = {root_path: _Acc("run" if lltrace else "trace", -np.inf)}
    host_ms = (forest.end - forest.start) / 1e3
    for k in range(n):
        path = paths[k]
        acc = accs.get(path)
        if acc is None:
            acc = accs[path] = _Acc(path[-1] if path else accs[()].name, float(forest.start[k]))
            acc.kernels = np.zeros(L, dtype=np.int64)
        if path:
            accs[path[:-1]].children.setdefault(path, float(forest.start[k]))
        acc.inst_gpu.append(float(inst_metric[k]) if gpu_mode else 0.0)
        acc.inst_cpu.append(float(host_ms[k]))
        acc.inst_rows.append(k)
        acc.inst_flops.append(inst_flops[k])
        if acc.kernels is None:
            acc.kernels = np.zeros(L, dtype=np.int64)
        acc.kernels += kcount[k]

    metric = "gpu" if gpu_mode else "cpu"
    tree = _make_node(accs, root_path, labels, metric, self_by, kind="root")
    # the root: one instance, the whole window; GPU time outside every region is explicit
    outside = self_by[n]
    if outside.sum() > 0:
        leaves = _leaves(labels, outside[None, :], kcount[n], metric, count=1)
        if any(c.kind == "region" for c in tree.children):
            total = float(outside.sum())
            tree.children.append(Node(UNATTRIBUTED, kind="unattributed", gpu_ms=total if gpu_mode else 0.0,
                                      cpu_ms=None if gpu_mode else total, count=1,
                                      instances_gpu_ms=percentiles([total]) if gpu_mode else None,
                                      instances_cpu_ms=None if gpu_mode else percentiles([total]),
                                      kernels=int(kcount[n].sum()), children=leaves))
        else:
            tree.children.extend(leaves)
    wall_us = trace.span_us
    tree.count = 1
    tree.kernels = sum(c.kernels for c in tree.children)
    if gpu_mode:
        tree.gpu_ms = gpu_total_ms
        tree.cpu_ms = (wall_us[1] - wall_us[0]) / 1e3 if not accs[()].inst_cpu else sum(accs[()].inst_cpu)
    else:
        tree.cpu_ms = sum(c.cpu_ms or 0.0 for c in tree.children)
    tree.instances_gpu_ms = percentiles([tree.gpu_ms]) if gpu_mode else None
    tree.instances_cpu_ms = percentiles([tree.cpu_ms])
    top_flops = [c.flops for c in tree.children if c.kind == "region" and c.flops is not None]
    if tree.flops is None and top_flops:
        tree.flops = float(sum(top_flops))
    _finish(tree, metric)

    if gpu_mode:
        kernels_table = _kernel_table(trace, att, cls_idx, labels, paths, n)
    ceiling = roofline.ceiling_tflops(meta)
    run = None
    if isinstance(meta, dict):
        run = {k: meta.get(k) for k in ("run_id", "preset", "status", "attention_backend") if k in meta}
        run["device"] = (meta.get("device") or {}).get("name") if isinstance(meta.get("device"), dict) else None
        if lltrace and shapes is None:
            warnings.append("meta.json has no usable model config / knobs: no FLOPs column")
    return Budget(
        source=trace.source, tree=tree, metric=metric, partial=trace.partial, warnings=warnings,
        wall_ms=(wall_us[1] - wall_us[0]) / 1e3, gpu_ms=gpu_total_ms, idle_gpu_ms=idle_ms,
        attributed_fraction=attributed, linked_fraction=linked, ceiling_tflops=ceiling,
        kernels=kernels_table, classes=classes, devices=devices,
        trace={"events": trace.stats.get("elements"), "kept": int(len(trace)), "gzip": trace.stats.get("gzip"),
               "device": trace.device_name, "lltrace_regions": lltrace, "region_instances": n,
               "stop_reason": trace.stop_reason, "stopped_at_byte": trace.stopped_at_byte},
        run=run)


def _warn_gpu(trace, att, dur_ms, total, lltrace, attributed, warnings) -> None:
    if not total:
        return
    unlinked = att.how == NONE
    if unlinked.any():
        warnings.append(f"{int(unlinked.sum())} GPU activities ({dur_ms[unlinked].sum() / total:.1%} of GPU time) "
                        "have no launch in the trace (no correlation, flow or annotation)")
    if att.graph.any():
        warnings.append(f"{int(att.graph.sum())} kernels ({dur_ms[att.graph].sum():.3g} ms) were replayed from "
                        "CUDA graphs: they count toward the range around cudaGraphLaunch (ranges inside a "
                        "graph are not recorded)")
    by_ann = att.how == BY_GPU_ANNOTATION
    if by_ann.any():
        warnings.append(f"{int(by_ann.sum())} GPU activities were placed by their gpu_user_annotation")
    if lltrace and attributed < 0.95:
        warnings.append(f"only {attributed:.1%} of GPU time is inside an ll/ region")


def instance_paths(trace, forest, key_of_name, lltrace, shapes):
    """Tree path of each region instance, and its model FLOPs (None when not modeled)."""
    x, names = trace.x, trace.names
    n = len(forest)
    parent = forest.parent
    paths: list[tuple[str, ...]] = [()] * n
    idx_paths: list[tuple[tuple[str, int | None], ...]] = [()] * n
    interned: dict[tuple[str, ...], tuple[str, ...]] = {}   # one tuple per distinct path
    for k in range(n):
        nid = int(x["name"][forest.idx[k]])
        key = key_of_name[nid]
        p = parent[k]
        ppath = paths[p] if p >= 0 else ()
        if lltrace and p < 0 and key == "run":
            paths[k] = ()                      # ll/run is the root itself
            idx_paths[k] = ()
            continue
        path = ppath + (key,)
        paths[k] = interned.setdefault(path, path)
        if shapes is not None:
            idx_paths[k] = (idx_paths[p] if p >= 0 else ()) + (regions.parse(names[nid][len(regions.PREFIX):]),)
    flops: list[float | None] = [None] * n
    if shapes is None:
        return paths, flops
    blocks = sorted((float(forest.start[k]), idx_paths[k][-1][1]) for k in range(n)
                    if idx_paths[k] and idx_paths[k][-1][0] == "block" and idx_paths[k][-1][1] is not None)
    modeled = [False] * n
    seen: set[tuple[int, tuple]] = set()
    for k in range(n):
        ip = idx_paths[k]
        if not ip:
            continue
        # a model part recorded in pieces (ll/embed around patch, text and time embedding)
        # carries its FLOPs once per parent instance
        once = (int(parent[k]), ip[-1])
        if parent[k] >= 0 and ip[-1][0] not in regions.FORWARDS and once in seen:
            flops[k], modeled[k] = 0.0, True
            continue
        seen.add(once)
        frames = None
        if any(p[0] == "recache" for p in ip):
            t = float(forest.start[k])
            before = [b for s, b in blocks if s < t]
            after = [b for s, b in blocks if s >= t]
            frames = ((before[-1] + 1) * shapes.frames_per_block if before
                      else after[0] * shapes.frames_per_block if after else None)
        f = roofline.region_flops(shapes, list(ip), frames)
        if f is not None:
            flops[k], modeled[k] = f, True
    # regions that are not a model part (block, run, ...) count the FLOPs of what they contain
    for k in range(n - 1, -1, -1):
        p = parent[k]
        if p >= 0 and not modeled[p] and flops[k] is not None:
            flops[p] = (flops[p] or 0.0) + flops[k]
    return paths, flops


def _leaves(labels, inst_self: np.ndarray, kernels, metric, count) -> list[Node]:
    out = []
    totals = inst_self.sum(0)
    for c, label in enumerate(labels):
        if totals[c] <= 0:
            continue
        v = float(totals[c])
        inst = percentiles(inst_self[:, c])
        out.append(Node(label, kind="class", gpu_ms=v if metric == "gpu" else 0.0,
                        cpu_ms=None if metric == "gpu" else v, count=count,
                        instances_gpu_ms=inst if metric == "gpu" else None,
                        instances_cpu_ms=None if metric == "gpu" else inst, kernels=int(kernels[c])))
    out.sort(key=lambda nd: -nd.value(metric))
    return out


def _make_node(accs, path, labels, metric, self_by, kind="region") -> Node:
    acc = accs[path]
    children = [_make_node(accs, cp, labels, metric, self_by)
                for cp, _ in sorted(acc.children.items(), key=lambda kv: kv[1])]
    node = Node(acc.name, kind=kind, count=len(acc.inst_cpu))
    if acc.inst_cpu:
        node.cpu_ms = float(sum(acc.inst_cpu))
        node.instances_cpu_ms = percentiles(acc.inst_cpu)
        inst_self = self_by[acc.inst_rows]
        if metric == "gpu":
            node.gpu_ms = float(sum(acc.inst_gpu))
            node.instances_gpu_ms = percentiles(acc.inst_gpu)
        known = [f for f in acc.inst_flops if f is not None]
        node.flops = float(sum(known)) if known else None
        leaves = _leaves(labels, inst_self, acc.kernels, metric, node.count)
        if children and inst_self.sum() > 0:
            tot = inst_self.sum(1)
            other = Node(OTHER_NODE, kind="other", count=node.count, kernels=int(acc.kernels.sum()), children=leaves)
            if metric == "gpu":
                other.gpu_ms, other.instances_gpu_ms = float(tot.sum()), percentiles(tot)
            else:
                other.cpu_ms, other.instances_cpu_ms = float(tot.sum()), percentiles(tot)
            children.append(other)
        elif not children:
            children = leaves
    node.children = children
    node.kernels = int(acc.kernels.sum()) + sum(c.kernels for c in children if c.kind == "region") \
        if acc.kernels is not None else sum(c.kernels for c in children)
    return node


def _finish(node: Node, metric: str) -> None:
    """Shares of the parent and achieved TFLOP/s, top-down."""
    total = node.value(metric)
    for c in node.children:
        c.share = c.value(metric) / total if total > 0 else 0.0
        _finish(c, metric)
    if node.flops and node.gpu_ms > 0:   # no rate for memory-bound parts (0 FLOPs)
        node.tflops = node.flops / (node.gpu_ms / 1e3) / 1e12


def _kernel_table(trace, att, cls_idx, labels, paths, n) -> list[dict[str, Any]]:
    """Per kernel name: total GPU ms, count, class, and the tree node where most of it ran."""
    x = trace.x
    g = att.gpu
    if not len(g):
        return []
    path_ids: dict[tuple[str, ...], int] = {}
    inst_path = np.array([path_ids.setdefault(p, len(path_ids)) for p in paths] + [-1], dtype=np.int64)
    where = inst_path[np.where(att.host >= 0, att.host, n)]
    name = x["name"][g].astype(np.int64)
    dur = x["dur"][g] / 1e3
    uniq, inv = np.unique(name, return_inverse=True)
    total = np.bincount(inv, dur)
    count = np.bincount(inv)
    pair = inv.astype(np.int64) * (len(path_ids) + 1) + (where + 1)
    pu, pinv = np.unique(pair, return_inverse=True)
    pt = np.bincount(pinv, dur)
    order = np.lexsort((-pt, pu // (len(path_ids) + 1)))
    best: dict[int, int] = {}
    for j in order:
        best.setdefault(int(pu[j] // (len(path_ids) + 1)), int(pu[j] % (len(path_ids) + 1)) - 1)
    by_id = {v: k for k, v in path_ids.items()}
    first_cls = np.zeros(len(uniq), dtype=np.int64)
    first_cls[inv] = cls_idx
    rows = []
    for u in np.argsort(-total):
        pid = best.get(int(u), -1)
        rows.append({"name": trace.names[int(uniq[u])], "class": labels[int(first_cls[u])],
                     "gpu_ms": float(total[u]), "count": int(count[u]),
                     "region": "/".join(by_id[pid]) if pid >= 0 else UNATTRIBUTED})
    return rows


# ---------------------------------------------------------------------------------------

def load_budget(path: str | Path, progress: Progress | None = None) -> Budget:
    """The budget of a run directory, a trace file, or a saved budget JSON."""
    src = resolve_source(path)
    if src.kind == "budget":
        try:
            data = json.loads(src.path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise LltraceError(f"{src.path}: unreadable budget JSON ({exc.__class__.__name__})") from None
        return Budget.from_dict(data)
    return build_budget(load_trace(src, progress))
