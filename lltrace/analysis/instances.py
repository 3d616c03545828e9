"""Per-instance values of every budget tree node, for the noise test of `lltrace diff`.

A Budget keeps p50/p95/p99 per node, not the instance values a significance test needs, so
this module computes them from the budget's own building blocks: the region forest and GPU
attribution (shared with the budget through `regions_and_attribution`, computed once per
trace), kernel classes and the budget's instance paths. The sum over a node's instances
equals the node's value in the budget (tests/test_diff_instances.py checks it on every
node), so the two cannot drift apart silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lltrace.trace.budget import OTHER_NODE, UNATTRIBUTED, cpu_self_times, instance_paths, regions_and_attribution
from lltrace.trace.events import Trace

Path = tuple[str, ...]


@dataclass
class RegionInstance:
    """One instance of a region (an X range of the trace)."""
    path: Path
    name: str          # the range's name in the trace (ll/block[3])
    row: int           # trace.x row
    start_us: float    # host range, trace clock
    end_us: float
    value_ms: float    # inclusive GPU ms (GPU traces) or host ms (CPU-only traces)
    gpu_start_us: float | None = None   # first / last GPU activity attributed inside it
    gpu_end_us: float | None = None


@dataclass
class Instances:
    metric: str                                   # "gpu" | "cpu"
    lltrace: bool
    by_path: dict[Path, np.ndarray]               # every tree node below the root, and () for the root
    regions: list[RegionInstance] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)   # CPU-only traces: host ops by name

    _host: dict[Path, np.ndarray] | None = field(default=None, repr=False)

    def values(self, path: Path) -> np.ndarray | None:
        return self.by_path.get(tuple(path))

    def host_values(self, path: Path) -> np.ndarray | None:
        """Host ms per instance of a region (to compare a GPU trace with a CPU-only one)."""
        if self._host is None:
            acc: dict[Path, list[float]] = {}
            for r in self.regions:
                acc.setdefault(r.path, []).append((r.end_us - r.start_us) / 1e3)
            self._host = {p: np.array(v) for p, v in acc.items()}
        return self._host.get(tuple(path))


def compute(trace: Trace) -> Instances:
    """Instance values of every node of build_budget(trace)'s tree, keyed by path."""
    x, names = trace.x, trace.names
    ra = regions_and_attribution(trace)
    lltrace, key_of_name, forest, labels = ra.lltrace, ra.key_of_name, ra.forest, ra.labels
    n = len(forest)
    parent = forest.parent
    gpu_mode = ra.gpu_mode
    self_by = np.zeros((n + 1, len(labels)))     # row n: outside every region
    gpu_first = np.full(n, np.inf)
    gpu_last = np.full(n, -np.inf)
    ops_table: list[dict[str, Any]] = []

    if gpu_mode:
        att, cls_idx = ra.att, ra.cls_idx
        g = att.gpu
        dur_ms = x["dur"][g] / 1e3
        row = np.where(att.host >= 0, att.host, n)
        np.add.at(self_by, (row, cls_idx), dur_ms)
        inside = att.host >= 0
        np.minimum.at(gpu_first, att.host[inside], x["ts"][g][inside])
        np.maximum.at(gpu_last, att.host[inside], (x["ts"][g] + x["dur"][g])[inside])
        incl = self_by[:n].sum(1)
        for k in range(n - 1, -1, -1):          # children come after their parent
            p = parent[k]
            if p >= 0:
                incl[p] += incl[k]
                gpu_first[p] = min(gpu_first[p], gpu_first[k])
                gpu_last[p] = max(gpu_last[p], gpu_last[k])
        value = incl
        root_total = float(dur_ms.sum())
    else:
        ops, op_dur, cls_idx, dur = cpu_self_times(trace, forest, labels, self_by)
        value = dur
        root_total = None
        ops_table = _op_table(trace, ops, op_dur, cls_idx, labels)

    paths, _ = instance_paths(trace, forest, key_of_name, lltrace, None)
    groups: dict[Path, list[int]] = {}
    for k in range(n):
        groups.setdefault(paths[k], []).append(k)
    has_children = {p[:-1] for p in groups if p}

    by_path: dict[Path, np.ndarray] = {}
    for path, ks in groups.items():
        idx = np.array(ks, dtype=np.int64)
        by_path[path] = value[idx]
        inst_self = self_by[idx]
        if path in has_children:
            if inst_self.sum() > 0:
                by_path[path + (OTHER_NODE,)] = inst_self.sum(1)
                _leaf_values(by_path, path + (OTHER_NODE,), inst_self, labels)
        else:
            _leaf_values(by_path, path, inst_self, labels)
    # the root: one instance (the window); what ran outside every region
    outside = self_by[n]
    if outside.sum() > 0:
        top_regions = any(len(p) == 1 for p in groups)
        base: Path = (UNATTRIBUTED,) if top_regions else ()
        if top_regions:
            by_path[base] = np.array([outside.sum()])
        _leaf_values(by_path, base, outside[None, :], labels)
    if () not in groups:
        total = root_total if root_total is not None else \
            sum(float(v.sum()) for p, v in by_path.items() if len(p) == 1)
        by_path[()] = np.array([total])

    inst = [RegionInstance(paths[k], names[int(forest.name[k])], int(forest.idx[k]),
                           float(forest.start[k]), float(forest.end[k]), float(value[k]),
                           float(gpu_first[k]) if np.isfinite(gpu_first[k]) else None,
                           float(gpu_last[k]) if np.isfinite(gpu_last[k]) else None)
            for k in range(n)]
    return Instances("gpu" if gpu_mode else "cpu", lltrace, by_path, inst, ops_table)


def _leaf_values(by_path: dict[Path, np.ndarray], path: Path, inst_self: np.ndarray, labels: list[str]) -> None:
    totals = inst_self.sum(0)
    for c, label in enumerate(labels):
        if totals[c] > 0:
            by_path[path + (label,)] = inst_self[:, c].copy()


def _op_table(trace: Trace, ops: np.ndarray, op_dur: np.ndarray, cls_idx: np.ndarray,
              labels: list[str]) -> list[dict[str, Any]]:
    """Top-level host ops by name (the CPU-only counterpart of the budget's kernel table)."""
    if not len(ops):
        return []
    name = trace.x["name"][ops].astype(np.int64)
    uniq, inv = np.unique(name, return_inverse=True)
    total = np.bincount(inv, op_dur)
    count = np.bincount(inv)
    first_cls = np.zeros(len(uniq), dtype=np.int64)
    first_cls[inv] = cls_idx
    return [{"name": trace.names[int(uniq[u])], "class": labels[int(first_cls[u])], "host_ms": float(total[u]),
             "count": int(count[u])} for u in np.argsort(-total)]
