"""The hierarchical time budget: run -> block -> step -> layer -> op region -> kernel class.

`build_budget(trace, meta=None) -> Budget` sums the instance pass (lltrace.trace.instances)
into tree nodes (docs/FORMATS.md §1 for names, §3 for the JSON); `budget_of(trace, instances)` does
the same for a pass already made. Each node carries GPU ms (kernels launched inside its
instances), host ms, share of its parent, instance count and p50/p95/p99 over instances,
and FLOPs / TFLOP/s where the model is known. GPU time a region spent outside
its sub-regions is shown as "(other)" with kernel classes below; GPU time outside every
region is "(unattributed)". So every node's children sum to the node.

A trace without GPU events gets the same tree over host time ("metric": "cpu"), with op
classes of the top-level host ops as leaves and "(python)" for host time outside any op.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lltrace.errors import LltraceError
from lltrace.trace import idle, roofline
from lltrace.trace.attribution import BY_GPU_ANNOTATION, NONE
from lltrace.trace.events import MEMCPY, MEMSET, Trace
from lltrace.trace.instances import CPU, GPU, LABEL, OTHER_NODE, UNATTRIBUTED, InstanceNode, Instances, measure
from lltrace.trace.jsonround import rounded
from lltrace.trace.loader import BUDGET_FORMAT, load_trace, resolve_source
from lltrace.trace.reader import Progress

__all__ = ["Budget", "Node", "GPU", "CPU", "LABEL", "OTHER_NODE", "UNATTRIBUTED", "build_budget", "budget_of",
           "load_budget", "percentiles"]

# A node keeps GPU and host ms; Budget.metric (GPU or CPU) says which one is its value.
_FIELDS = {GPU: ("gpu_ms", "instances_gpu_ms"), CPU: ("cpu_ms", "instances_cpu_ms")}


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
        """The node's ms in `metric` (GPU or CPU); 0 when it has none."""
        return getattr(self, _FIELDS[metric][0]) or 0.0

    def instances(self, metric: str) -> dict[str, float] | None:
        """p50/p95/p99 over the node's instances in `metric`, None when not known."""
        return getattr(self, _FIELDS[metric][1])

    def set_value(self, metric: str, ms: float, instances: dict[str, float] | None = None) -> None:
        value_field, inst_field = _FIELDS[metric]
        setattr(self, value_field, ms)
        setattr(self, inst_field, instances)

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
        return {"name": self.name, "kind": self.kind, "gpu_ms": rounded(self.gpu_ms), "cpu_ms": rounded(self.cpu_ms),
                "share": rounded(self.share), "count": self.count, "instances_gpu_ms": rounded(self.instances_gpu_ms),
                "instances_cpu_ms": rounded(self.instances_cpu_ms), "flops": self.flops, "tflops": rounded(self.tflops),
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
    metric: str = GPU                   # GPU, or CPU for traces without GPU events
    partial: bool = False
    warnings: list[str] = field(default_factory=list)
    wall_ms: float = 0.0
    gpu_ms: float = 0.0
    idle_gpu_ms: float = 0.0
    attributed_fraction: float = 0.0    # GPU time inside some region
    linked_fraction: float = 0.0        # GPU activities tied to a launch
    ceiling_tflops: float | None = None
    ceiling_dtype: str = "bf16"         # which matmul ceiling: "fp8" for runs with fp8 linears
    kernels: list[dict[str, Any]] = field(default_factory=list)
    classes: dict[str, float] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None
    hta: dict[str, Any] | None = None
    idle: dict[str, Any] | None = None   # lltrace.trace.idle.analyze: idle GPU time by cause

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUDGET_FORMAT, "source": self.source, "partial": self.partial,
                "warnings": list(self.warnings), "metric": self.metric, "wall_ms": rounded(self.wall_ms),
                "gpu_ms": rounded(self.gpu_ms), "idle_gpu_ms": rounded(self.idle_gpu_ms),
                "attributed_fraction": rounded(self.attributed_fraction), "linked_fraction": rounded(self.linked_fraction),
                "ceiling_tflops": self.ceiling_tflops, "ceiling_dtype": self.ceiling_dtype, "tree": self.tree.to_dict(), "kernels": self.kernels,
                "classes": self.classes, "devices": self.devices, "trace": self.trace, "run": self.run,
                "hta": self.hta, "idle": rounded(self.idle) if self.idle is not None else None}

    @classmethod
    def from_dict(cls, d: Any) -> "Budget":
        if not isinstance(d, dict) or not isinstance(d.get("tree"), dict):
            raise LltraceError("not a budget JSON (no tree)")
        try:
            return cls(source=str(d.get("source", "")), tree=Node.from_dict(d["tree"]),
                       metric=d.get("metric", GPU), partial=bool(d.get("partial", False)),
                       warnings=list(d.get("warnings", [])), wall_ms=float(d.get("wall_ms") or 0.0),
                       gpu_ms=float(d.get("gpu_ms") or 0.0), idle_gpu_ms=float(d.get("idle_gpu_ms") or 0.0),
                       attributed_fraction=float(d.get("attributed_fraction") or 0.0),
                       linked_fraction=float(d.get("linked_fraction") or 0.0),
                       ceiling_tflops=d.get("ceiling_tflops"), ceiling_dtype=str(d.get("ceiling_dtype") or "bf16"), kernels=list(d.get("kernels", [])),
                       classes=dict(d.get("classes", {})), devices=list(d.get("devices", [])),
                       trace=dict(d.get("trace", {})), run=d.get("run"), hta=d.get("hta"),
                       idle=d.get("idle") if isinstance(d.get("idle"), dict) else None)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise LltraceError(f"not a budget JSON ({exc.__class__.__name__}: {str(exc)[:200]})") from None


# ---------------------------------------------------------------------------------------

def build_budget(trace: Trace, meta: dict[str, Any] | None = None) -> Budget:
    """Aggregate a loaded trace into the budget tree (meta: the run's meta.json, for FLOPs)."""
    return budget_of(trace, measure(trace, meta))


def budget_of(trace: Trace, inst: Instances) -> Budget:
    """The budget of an instance pass: each node's value, percentiles, count and FLOPs from
    its instance values, plus the trace-wide numbers (devices, kernel table, warnings) of
    the trace it was measured on."""
    ra, meta, metric = inst.ra, inst.meta, inst.metric
    x = trace.x
    warnings = list(trace.warnings)
    kernels_table: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    idle_ms = attributed = linked = 0.0
    labels = ra.labels
    if ra.gpu_mode:
        att = ra.att
        if ra.early_note:
            warnings.append(ra.early_note)
        if ra.kernel_map is not None:
            warnings.extend(ra.kernel_map.warnings)
        dur_ms = x["dur"][att.gpu] / 1e3
        total = inst.gpu_ms
        attributed = float(dur_ms[att.host >= 0].sum()) / total if total else 0.0
        linked = att.linked_fraction
        devices, idle_ms = _devices(trace, att.gpu)
        classes = {labels[c]: float(v) for c, v in enumerate(np.bincount(ra.cls_idx, dur_ms, minlength=len(labels)))
                   if v > 0}
        _warn_gpu(trace, att, dur_ms, total, ra.lltrace, attributed, warnings, ra.kernel_map)
        kernels_table = _kernel_table(trace, att, ra.cls_idx, labels, [r.path for r in inst.regions])
        blocks = inst.node(("block",))
        idle_by = idle.analyze(trace, att, ra.forest, lambda k: inst.regions[k].path,
                               blocks.count if blocks is not None else 1,
                               lambda path: inst.node(path).count if inst.node(path) is not None else 1)
    else:   # no gaps to classify; the sync sites are the ops that would sync on a GPU
        blocks = inst.node(("block",))
        idle_by = idle.analyze(trace, None, ra.forest, lambda k: inst.regions[k].path,
                               blocks.count if blocks is not None else 1)
        warnings.append("no GPU events in this trace: a CPU-only budget (host ms per region; "
                        "op classes of the top-level host ops)")
        classes = {labels[c]: float(v) for c, v in enumerate(inst.self_ms[:, :-1].sum(0)) if v > 0}
    tree = _node(inst.tree, metric)
    _finish(tree, metric)

    run = None
    if isinstance(meta, dict):
        run = {k: meta.get(k) for k in ("run_id", "preset", "status", "attention_backend") if k in meta}
        run["device"] = (meta.get("device") or {}).get("name") if isinstance(meta.get("device"), dict) else None
        knobs = meta.get("knobs") if isinstance(meta.get("knobs"), dict) else {}
        if knobs.get("fp8") and roofline.ceiling(meta)[1] != "fp8" and inst.shapes is not None:
            warnings.append("fp8 linears, but meta.json has no fp8 matmul ceiling: the TFLOP/s % column is "
                            "against the bf16 ceiling and can exceed 100%")
        if ra.lltrace and inst.shapes is None:
            warnings.append("meta.json has no usable model config / knobs: no FLOPs column")
    wall_us = trace.span_us
    return Budget(
        source=trace.source, tree=tree, metric=metric, partial=trace.partial, warnings=warnings,
        wall_ms=(wall_us[1] - wall_us[0]) / 1e3, gpu_ms=inst.gpu_ms, idle_gpu_ms=idle_ms,
        attributed_fraction=attributed, linked_fraction=linked, ceiling_tflops=roofline.ceiling(meta)[0], ceiling_dtype=roofline.ceiling(meta)[1],
        kernels=kernels_table, classes=classes, devices=devices,
        trace={"events": trace.stats.get("elements"), "kept": int(len(trace)), "gzip": trace.stats.get("gzip"),
               "device": trace.device_name, "lltrace_regions": ra.lltrace, "region_instances": len(ra.forest),
               "stop_reason": trace.stop_reason, "stopped_at_byte": trace.stopped_at_byte,
               "kernel_map": ra.kernel_map.to_dict() if ra.kernel_map is not None else None},
        run=run, idle=idle_by)


def _node(src: InstanceNode, metric: str) -> Node:
    """A budget node from an instance node: sums and percentiles of its instance values."""
    node = Node(src.name, kind=src.kind, count=src.count, kernels=src.kernels, flops=src.flops_total,
                children=[_node(c, metric) for c in src.children])
    node.set_value(metric, src.total, percentiles(src.values))
    if metric != CPU and src.host is not None:   # host ms alongside the GPU value
        node.set_value(CPU, math.fsum(src.host.tolist()), percentiles(src.host))
    return node


def _finish(node: Node, metric: str) -> None:
    """Shares of the parent and achieved TFLOP/s, top-down."""
    total = node.value(metric)
    for c in node.children:
        c.share = c.value(metric) / total if total > 0 else 0.0
        _finish(c, metric)
    if node.flops and node.gpu_ms > 0:   # no rate for memory-bound parts (0 FLOPs)
        node.tflops = node.flops / (node.gpu_ms / 1e3) / 1e12


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



def _warn_gpu(trace, att, dur_ms, total, lltrace, attributed, warnings, kmap=None) -> None:
    if not total:
        return
    unlinked = att.how == NONE
    if unlinked.any():
        warnings.append(f"{int(unlinked.sum())} GPU activities ({dur_ms[unlinked].sum() / total:.1%} of GPU time) "
                        "have no launch in the trace (no correlation, flow or annotation)")
    placed = kmap.replayed_kernels if kmap is not None else 0
    if att.graph.any() and placed < int(att.graph.sum()):
        left = int(att.graph.sum()) - placed
        warnings.append(f"{left} of {int(att.graph.sum())} kernels replayed from CUDA graphs count toward the "
                        "range around their cudaGraphLaunch: no recorded capture matched them")
    by_ann = att.how == BY_GPU_ANNOTATION
    if by_ann.any():
        warnings.append(f"{int(by_ann.sum())} GPU activities were placed by their gpu_user_annotation")
    if lltrace and attributed < 0.95:
        warnings.append(f"only {attributed:.1%} of GPU time is inside an ll/ region")



def _kernel_table(trace, att, cls_idx, labels, paths) -> list[dict[str, Any]]:
    """Per kernel name: total GPU ms, count, class, and the tree node where most of it ran."""
    x = trace.x
    g = att.gpu
    if not len(g):
        return []
    path_ids: dict[tuple[str, ...], int] = {}
    inst_path = np.array([path_ids.setdefault(p, len(path_ids)) for p in paths] + [-1], dtype=np.int64)
    where = inst_path[np.where(att.host >= 0, att.host, len(paths))]
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
    memory = np.zeros(len(uniq), dtype=bool)
    memory[inv] = np.isin(x["cat"][g], (MEMCPY, MEMSET))
    # where each kernel ran: (path, ms) per tree node, largest first, down to 0.1% of the kernel's
    # time (the rest is left out), so "mostly in" can say "all 30 layers" instead of one of them
    spread: dict[int, list[tuple[str, float]]] = {}
    for j in np.argsort(-pt, kind="stable"):
        k, w = int(pu[j] // (len(path_ids) + 1)), int(pu[j] % (len(path_ids) + 1)) - 1
        if pt[j] >= 1e-3 * total[k]:
            spread.setdefault(k, []).append(("/".join(by_id[w]) if w >= 0 else UNATTRIBUTED, float(pt[j])))
    rows = []
    for u in np.argsort(-total):
        pid = best.get(int(u), -1)
        rows.append({"name": trace.names[int(uniq[u])], "class": labels[int(first_cls[u])],
                     "gpu_ms": float(total[u]), "count": int(count[u]),
                     "region": "/".join(by_id[pid]) if pid >= 0 else UNATTRIBUTED, "memory": bool(memory[u]),
                     "regions": [[p, round(ms, 4)] for p, ms in spread.get(int(u), [])]})
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
