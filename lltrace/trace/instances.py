"""The instance pass: the value of every instance of every budget tree node, in one pass over
the region forest and its GPU attribution (lltrace.trace.attribution).

`measure(trace)` walks the forest once: each row's own GPU ms per kernel class (host ms per
op class on CPU-only traces), its inclusive value, host span, GPU span and model FLOPs; rows
grouped by tree path become an `InstanceNode` tree holding those values per instance. The
budget (lltrace.trace.budget.budget_of) only sums them and takes their percentiles, the
noise test of `lltrace diff` reads them, and the Perfetto export draws the regions, so the
three cannot disagree. Rows are read from the forest and attribution alone (name, times,
parent, attributed activities), so virtual rows a later stage appended count like recorded
ranges.

Tree shape (docs/FORMATS.md §3): a region's GPU time outside its sub-regions is its "(other)"
child with kernel-class leaves (a region without sub-regions gets the leaves directly); GPU
time outside every region is the root's "(unattributed)" child. A leaf has one value per
instance of its parent.
"""
from __future__ import annotations

import bisect

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from lltrace.trace import regions, roofline
from lltrace.trace import kernelmap
from lltrace.trace.attribution import RegionAttribution, cpu_self_times, regions_and_attribution
from lltrace.trace.events import Trace

OTHER_NODE, UNATTRIBUTED = "(other)", "(unattributed)"
# What the values measure: GPU ms of the activities, or host ms on traces without GPU activities.
GPU, CPU = "gpu", "cpu"
LABEL = {GPU: "GPU", CPU: "host"}   # what a metric's ms are called in reports
Path = tuple[str, ...]


@dataclass
class RegionInstance:
    """One instance of a region: a row of the forest (recorded range or virtual row)."""
    path: Path
    name: str          # the range's name (ll/block[3])
    row: int           # trace.x row, -1 for a virtual row
    start_us: float    # host range, trace clock
    end_us: float
    value_ms: float    # inclusive GPU ms (GPU traces) or host ms (CPU-only traces)
    gpu_start_us: float | None = None   # first / last GPU activity attributed inside it
    gpu_end_us: float | None = None
    flops: float | None = None          # modeled forward FLOPs, None when not modeled


@dataclass
class InstanceNode:
    """One budget tree node with one value per instance."""
    name: str
    kind: str                      # root | region | other | unattributed | class
    values: np.ndarray             # ms per instance in the trace's metric (leaves: per instance of the parent)
    host: np.ndarray | None = None     # host ms per instance: region nodes, and the root's host span
    flops: np.ndarray | None = None    # FLOPs per instance, NaN where not modeled (regions, root)
    kernels: int = 0                   # GPU activities (host ops on CPU-only traces) counted in it
    children: list["InstanceNode"] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def total(self) -> float:
        """The node's value: the (correctly rounded) sum of its instance values."""
        return math.fsum(self.values.tolist())

    @property
    def flops_total(self) -> float | None:
        """Modeled FLOPs over the instances that have them; None when none has."""
        return None if self.flops is None else _known_sum(self.flops)

    def walk(self, path: Path = ()) -> Iterator[tuple[Path, "InstanceNode"]]:
        yield path, self
        for c in self.children:
            yield from c.walk(path + (c.name,))


@dataclass
class Instances:
    """Everything the instance pass knows about a trace; see the module docstring. It keeps no
    reference to the trace itself, so a diff holding two of them holds no trace."""
    meta: dict[str, Any] | None          # the run's meta.json the FLOPs were modeled with
    metric: str                          # GPU | CPU
    ra: RegionAttribution
    tree: InstanceNode
    regions: list[RegionInstance]        # one per forest row, in forest order
    self_ms: np.ndarray                  # (rows + 1, labels): each row's own ms by label; last row: outside every region
    gpu_ms: float                        # GPU ms of every activity in the window (0 on CPU-only traces)
    shapes: roofline.WanShapes | None    # the model the FLOPs come from, None when not modeled
    ops: list[dict[str, Any]] = field(default_factory=list)   # CPU-only traces: top-level host ops by name
    _by_path: dict[Path, InstanceNode] | None = field(default=None, repr=False)

    @property
    def lltrace(self) -> bool:
        return self.ra.lltrace

    def node(self, path: Path) -> InstanceNode | None:
        if self._by_path is None:
            self._by_path = dict(self.tree.walk())
        return self._by_path.get(tuple(path))

    def values(self, path: Path) -> np.ndarray | None:
        """Per-instance values of a tree node in the trace's metric."""
        node = self.node(path)
        return None if node is None else node.values

    def host_values(self, path: Path) -> np.ndarray | None:
        """Host ms per instance of a region (to compare a GPU trace with a CPU-only one)."""
        node = self.node(path)
        return node.host if node is not None and node.kind == "region" else None


def measure(trace: Trace, meta: dict[str, Any] | None = None, ra: RegionAttribution | None = None) -> Instances:
    """The instance pass over `ra` (default: regions_and_attribution(trace)); meta is the
    run's meta.json for FLOPs (default: the trace's own run directory's)."""
    meta = meta if meta is not None else trace.run_meta
    ra = ra if ra is not None else regions_and_attribution(trace)
    if ra.gpu_mode and ra.kernel_map is None:   # compiled / replayed kernels into their op regions
        ra.kernel_map = kernelmap.apply(trace, ra.forest, ra.att)
    x, forest, labels = trace.x, ra.forest, ra.labels
    n, L, parent = len(forest), len(labels), forest.parent
    self_ms = np.zeros((n + 1, L))          # row n: outside every region
    kcount = np.zeros((n + 1, L), dtype=np.int64)
    gpu_first = np.full(n, np.inf)
    gpu_last = np.full(n, -np.inf)
    ops: list[dict[str, Any]] = []
    gpu_total = 0.0
    if ra.gpu_mode:
        att = ra.att
        g = att.gpu
        dur_ms = x["dur"][g] / 1e3
        row = np.where(att.host >= 0, att.host, n)
        np.add.at(self_ms, (row, ra.cls_idx), dur_ms)
        np.add.at(kcount, (row, ra.cls_idx), 1)
        inside = att.host >= 0
        np.minimum.at(gpu_first, att.host[inside], x["ts"][g][inside])
        np.maximum.at(gpu_last, att.host[inside], (x["ts"][g] + x["dur"][g])[inside])
        value = self_ms[:n].sum(1)
        for k in range(n - 1, -1, -1):     # a parent precedes its children: add up the tree
            p = parent[k]
            if p >= 0:
                value[p] += value[k]
                gpu_first[p] = min(gpu_first[p], gpu_first[k])
                gpu_last[p] = max(gpu_last[p], gpu_last[k])
        gpu_total = math.fsum(dur_ms.tolist())
    else:
        op_rows, op_dur, op_cls, value = cpu_self_times(trace, forest, labels, self_ms, kcount)
        ops = _op_table(trace, op_rows, op_dur, op_cls, labels)

    shapes = roofline.WanShapes.from_meta(meta) if ra.lltrace else None
    paths, flops = instance_paths(trace, ra, shapes)
    host_ms = (forest.end - forest.start) / 1e3
    names = trace.names
    insts = [RegionInstance(paths[k], names[int(forest.name[k])], int(forest.idx[k]), float(forest.start[k]),
                            float(forest.end[k]), float(value[k]),
                            float(gpu_first[k]) if np.isfinite(gpu_first[k]) else None,
                            float(gpu_last[k]) if np.isfinite(gpu_last[k]) else None, flops[k])
             for k in range(n)]

    # rows by path; a node's children in order of their first instance
    rows_of: dict[Path, list[int]] = {(): []}
    children_of: dict[Path, dict[Path, float]] = {(): {}}
    for k in range(n):
        path = paths[k]
        if path not in rows_of:
            rows_of[path], children_of[path] = [], {}
            children_of[path[:-1]].setdefault(path, float(forest.start[k]))
        rows_of[path].append(k)
    flops_arr = np.array([np.nan if f is None else f for f in flops], dtype=np.float64)
    b = _Builder(labels, self_ms, kcount, value, host_ms, flops_arr, rows_of, children_of)

    root = b.node((), "run" if ra.lltrace else "trace", "root")
    outside = self_ms[n]
    if outside.sum() > 0:
        leaves = b.leaves(outside[None, :], kcount[n])
        if any(c.kind == "region" for c in root.children):
            root.children.append(InstanceNode(UNATTRIBUTED, "unattributed", np.array([outside.sum()]),
                                              kernels=int(kcount[n].sum()), children=leaves))
        else:
            root.children.extend(leaves)
    # the root is one instance, the whole window
    root.kernels = sum(c.kernels for c in root.children)
    wall_us = trace.span_us
    run_rows = rows_of[()]
    root_host = math.fsum(host_ms[run_rows].tolist()) if run_rows else (wall_us[1] - wall_us[0]) / 1e3
    if ra.gpu_mode:
        root.values, root.host = np.array([gpu_total]), np.array([root_host])
    else:
        root.values = np.array([math.fsum(c.total for c in root.children)])
        root.host = root.values.copy()
    # FLOPs of an ll/run root, else of the top-level regions
    parts = [root.flops] if root.flops is not None else \
        [c.flops for c in root.children if c.kind == "region" and c.flops is not None]
    root.flops = np.array([math.fsum(_known_sum(f) for f in parts)]) if parts else None
    return Instances(meta, GPU if ra.gpu_mode else CPU, ra, root, insts, self_ms, gpu_total, shapes, ops)


def _known_sum(flops: np.ndarray) -> float:
    return math.fsum(flops[np.isfinite(flops)].tolist())


@dataclass
class _Builder:
    """Turns rows grouped by path into InstanceNodes (one recursion over the paths)."""
    labels: list[str]
    self_ms: np.ndarray
    kcount: np.ndarray
    value: np.ndarray
    host: np.ndarray
    flops: np.ndarray
    rows_of: dict[Path, list[int]]
    children_of: dict[Path, dict[Path, float]]

    def node(self, path: Path, name: str, kind: str = "region") -> InstanceNode:
        rows = np.array(self.rows_of[path], dtype=np.int64)
        children = [self.node(cp, cp[-1]) for cp, _ in sorted(self.children_of[path].items(), key=lambda kv: kv[1])]
        node = InstanceNode(name, kind, self.value[rows], self.host[rows],
                            self.flops[rows] if len(rows) and np.isfinite(self.flops[rows]).any() else None)
        own = self.kcount[rows].sum(0)
        if len(rows):
            inst_self = self.self_ms[rows]
            leaves = self.leaves(inst_self, own)
            if children and inst_self.sum() > 0:
                children.append(InstanceNode(OTHER_NODE, "other", inst_self.sum(1), kernels=int(own.sum()),
                                             children=leaves))
            elif not children:
                children = leaves
        node.children = children
        node.kernels = int(own.sum()) + sum(c.kernels for c in children if c.kind == "region")
        return node

    def leaves(self, inst_self: np.ndarray, kernels: np.ndarray) -> list[InstanceNode]:
        """Kernel-class (op-class) leaves with time, largest first."""
        totals = inst_self.sum(0)
        out = [InstanceNode(label, "class", inst_self[:, c].copy(), kernels=int(kernels[c]))
               for c, label in enumerate(self.labels) if totals[c] > 0]
        out.sort(key=lambda nd: -nd.total)
        return out


def instance_paths(trace: Trace, ra: RegionAttribution, shapes: roofline.WanShapes | None):
    """Tree path of each forest row, and its model FLOPs (None when not modeled)."""
    names, forest, lltrace = trace.names, ra.forest, ra.lltrace
    n = len(forest)
    parent = forest.parent
    name_ids = forest.name
    paths: list[Path] = [()] * n
    idx_paths: list[tuple[tuple[str, int | None], ...]] = [()] * n
    interned: dict[Path, Path] = {}   # one tuple per distinct path
    for k in range(n):
        nid = int(name_ids[k])
        key = ra.key(trace, nid)
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
    # A recache runs its frames chunk by chunk (one forward per chunk, each with its embed, its
    # layers and its head): the chunk of a row is the number of heads of its recache before it.
    heads: dict[int, list[float]] = {}
    for k in range(n):
        p = int(parent[k])
        if p >= 0 and idx_paths[p] and idx_paths[p][-1][0] == "recache" and idx_paths[k] \
                and idx_paths[k][-1][0] == "head":
            heads.setdefault(p, []).append(float(forest.start[k]))
    chunk: list[int | None] = [None] * n
    for k in range(n):
        p = int(parent[k])
        if p < 0:
            continue
        if idx_paths[p] and idx_paths[p][-1][0] == "recache":
            chunk[k] = bisect.bisect_left(sorted(heads.get(p, [])), float(forest.start[k]))
        else:
            chunk[k] = chunk[p]
    seen: set[tuple[int, tuple, int | None]] = set()
    for k in range(n):
        ip = idx_paths[k]
        if not ip:
            continue
        # a model part recorded in pieces (ll/embed around patch, text and time embedding)
        # carries its FLOPs once per parent instance (and recache chunk)
        once = (int(parent[k]), ip[-1], chunk[k])
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
        f = roofline.region_flops(shapes, list(ip), frames, chunk[k])
        if f is not None:
            flops[k], modeled[k] = f, True
    # regions that are not a model part (block, run, ...) count the FLOPs of what they contain
    for k in range(n - 1, -1, -1):
        p = parent[k]
        if p >= 0 and not modeled[p] and flops[k] is not None:
            flops[p] = (flops[p] or 0.0) + flops[k]
    return paths, flops


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
