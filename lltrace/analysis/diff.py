"""`lltrace diff A B`: what got faster or slower between two runs, traces or budget JSONs.

Three views, each matched by name so that different presets, step counts and foreign traces
still line up (what has no counterpart is listed as only-in-A / only-in-B):
- headline: ms per video frame, FPS, p99, first-frame and prompt-switch latency (from the
  run directories' summary.json / frames.jsonl, when there are), and GPU (or host) ms per
  unit of work;
- the budget tree side by side, per unit of work (per block for lltrace runs, per
  ProfilerStep for plain profiler traces with steps, else per trace), Δ ms and Δ %;
  plus a roll-up by region name (all `self_attn` of every layer and step together);
- kernels (GPU traces) or host ops (CPU-only traces) that appeared, disappeared or changed
  most (lltrace.analysis.kernel_diff).
Every region and headline metric with per-instance values gets a noise verdict
(lltrace.analysis.noise: Mann-Whitney U plus a minimum effect size); lltrace.analysis.gate
turns one metric into a CI exit code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lltrace.analysis import noise
from lltrace.analysis.kernel_diff import KernelDiff, kernel_diff
from lltrace.analysis.side import Side
from lltrace.capture.frame_clock import steady_blocks
from lltrace.trace.budget import CPU, GPU, LABEL, Node
from lltrace.trace.jsonround import num as json_num
from lltrace.names import split as split_region_name

DIFF_FORMAT = "lltrace-diff/1"
NodePath = tuple[str, ...]
_LEAF_KINDS = ("class", "other", "unattributed")
# the headline metric of the tree's total, by what the tree compares: (name, label)
TREE_TOTAL = {GPU: ("gpu_ms", f"{LABEL[GPU]} ms"), CPU: ("host_ms", f"{LABEL[CPU]} ms")}


# ----------------------------------------------------------------------------- inputs

# ----------------------------------------------------------------------------- results

class Change:
    """B - A and B's change in % of |A| (None without both values, or % when A is 0)."""
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def pct(self) -> float | None:
        d = self.delta
        return None if d is None or not self.a else 100.0 * d / abs(self.a)


@dataclass
class Metric(Change):
    """One headline number in A and B. `regression_pct` > 0 means B is worse."""
    name: str
    label: str
    unit: str
    a: float | None
    b: float | None
    higher_is_better: bool
    judgement: noise.Judgement

    @property
    def regression_pct(self) -> float | None:
        p = self.pct
        return None if p is None else (-p if self.higher_is_better else p)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "unit": self.unit, "a": json_num(self.a),
                "b": json_num(self.b), "delta": json_num(self.delta), "pct": json_num(self.pct),
                "higher_is_better": self.higher_is_better,
                **self.judgement.to_dict()}


@dataclass
class NodeDiff(Change):
    """A budget tree node in A and B; values are ms per unit (see Diff.unit)."""
    path: NodePath
    name: str
    kind: str
    a: float | None
    b: float | None
    a_count: int | None
    b_count: int | None
    judgement: noise.Judgement
    children: list["NodeDiff"] = field(default_factory=list)

    @property
    def impact(self) -> float:
        d = self.delta
        return abs(d) if d is not None else (self.a or self.b or 0.0)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, path: NodePath) -> "NodeDiff | None":
        node = self
        for name in path:
            node = next((c for c in node.children if c.name == name), None)
            if node is None:
                return None
        return node

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        d = {"name": self.name, "path": "/".join(self.path), "kind": self.kind, "a_ms": json_num(self.a),
             "b_ms": json_num(self.b), "delta_ms": json_num(self.delta), "pct": json_num(self.pct),
             "a_count": self.a_count, "b_count": self.b_count, **self.judgement.to_dict()}
        d["children"] = [] if depth is not None and depth <= 0 else \
            [c.to_dict(None if depth is None else depth - 1) for c in self.children]
        return d


@dataclass
class Diff:
    a: Side
    b: Side
    metric: str                      # GPU | CPU: what the tree compares
    unit: str                        # "block" | "step" | "trace"
    units: tuple[int, int]
    headline: list[Metric]
    tree: NodeDiff
    by_name: list[NodeDiff]
    kernels: KernelDiff | None
    warnings: list[str]
    alpha: float = noise.ALPHA
    min_effect: float = noise.MIN_EFFECT

    @property
    def only_in_a(self) -> list[NodeDiff]:
        return _only(self.tree, noise.ONLY_A)

    @property
    def only_in_b(self) -> list[NodeDiff]:
        return _only(self.tree, noise.ONLY_B)

    def metric_named(self, name: str) -> Metric | None:
        return next((m for m in self.headline if m.name == name), None)

    def to_dict(self, depth: int | None = None, top: int | None = None) -> dict[str, Any]:
        k = self.kernels.to_dict() if self.kernels else None
        if k and top is not None:
            k = {key: (v[:top] if isinstance(v, list) and key in ("appeared", "disappeared", "changed") else v)
                 for key, v in k.items()}
        return {"format": DIFF_FORMAT, "a": self.a.describe, "b": self.b.describe, "metric": self.metric,
                "unit": self.unit, "units": {"a": self.units[0], "b": self.units[1]},
                "noise": {"test": "Mann-Whitney U (two-sided; exact without ties and n1*n2 <= 400, else normal "
                                  "approximation with tie and continuity corrections) on per-instance values, "
                                  "plus a minimum effect on the medians",
                          "alpha": self.alpha, "min_effect": self.min_effect,
                          "min_instances": noise.MIN_INSTANCES},
                "headline": [m.to_dict() for m in self.headline],
                "only_in_a": [{"path": "/".join(n.path), "ms": json_num(n.a)} for n in self.only_in_a],
                "only_in_b": [{"path": "/".join(n.path), "ms": json_num(n.b)} for n in self.only_in_b],
                "tree": self.tree.to_dict(depth), "by_name": [n.to_dict(0) for n in self.by_name],
                "kernels": k, "warnings": list(self.warnings)}


def _same(a: float | None, b: float | None) -> bool:
    """Equal up to the 1e-6 ms rounding of a budget JSON."""
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=2e-6)


def _only(tree: NodeDiff, verdict: str) -> list[NodeDiff]:
    """Top-most regions with the verdict (their descendants are only-in too; kernel-class
    leaves that come and go are in the tree, not in this list)."""
    out: list[NodeDiff] = []

    def visit(n: NodeDiff) -> None:
        if n.judgement.verdict == verdict and n.kind == "region":
            out.append(n)
            return
        for c in n.children:
            visit(c)
    visit(tree)
    return out


# ----------------------------------------------------------------------------- headline

def _headline_values(side: Side, unit_node: str | None, unit: str, units: int, metric: str) -> dict[str, tuple]:
    """name -> (label, unit, value, instances or None, higher_is_better)."""
    out: dict[str, tuple] = {}
    s = side.run.summary or {}
    blocks = steady_blocks(side.run.frames)

    def num(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    mpf = s.get("ms_per_frame") if isinstance(s.get("ms_per_frame"), dict) else {}
    lat = [r["latency_ms"] for r in blocks] or None
    if num(mpf.get("mean")) is not None:
        out["ms_per_frame"] = ("ms per video frame (mean)", "ms", num(mpf["mean"]), lat, False)
    if num(mpf.get("p99")) is not None:
        out["p99_ms_per_frame"] = ("ms per video frame (p99)", "ms", num(mpf["p99"]), None, False)
    if num(s.get("fps")) is not None:
        fps = [1e3 * r["frames"] / r["block_ms"] for r in blocks if r["block_ms"] > 0] or None
        out["fps"] = ("FPS", "fps", num(s["fps"]), fps, True)
    mpb = s.get("ms_per_block") if isinstance(s.get("ms_per_block"), dict) else {}
    if num(mpb.get("mean")) is not None:
        out["ms_per_block"] = ("ms per block (mean)", "ms", num(mpb["mean"]), [r["block_ms"] for r in blocks] or None,
                               False)
    if num(s.get("first_frame_ms")) is not None:
        out["first_frame_ms"] = ("first-frame latency", "ms", num(s["first_frame_ms"]), [num(s["first_frame_ms"])],
                                 False)
    raw_sw = s.get("prompt_switch_ms")
    sw = [num(v) for v in raw_sw if num(v) is not None] if isinstance(raw_sw, list) else []
    if sw:
        out["prompt_switch_ms"] = ("prompt-switch latency (mean)", "ms", float(np.mean(sw)), sw, False)
    # from the trace: time per unit of work
    tree = side.budget.tree
    per = f" per {unit}"
    inst = None
    if side.instances is not None and unit_node is not None:
        inst = _values(side, (unit_node,), metric)
    name, label = TREE_TOTAL[metric]
    # the whole run's GPU time divided by the units, not the tree's `block` row (which leaves
    # out text encoding, recache and what runs outside the blocks): named apart from it
    whole = " (whole run)" if unit != "trace" else ""
    out[name] = (label + per + whole, "ms", tree.value(metric) / units, inst, False)
    # why the GPU waits (lltrace.trace.idle), per unit of work: one value per side (the gaps of a
    # window are not independent instances), so these carry no noise verdict
    idle = side.budget.idle
    if idle and metric == "gpu":
        out["idle_ms"] = ("idle GPU ms" + per, "ms", float(idle.get("total_ms", 0.0)) / units, None, False)
        for cause, ms in (idle.get("by_cause") or {}).items():
            if ms:
                out[f"idle_{cause}_ms"] = (f"  idle: {cause}" + per, "ms", float(ms) / units, None, False)
        syncs = sum(int(x.get("count", 0)) for x in idle.get("sync_sites") or [])
        out["syncs"] = ("host syncs" + per, "", syncs / units, None, False)
    return out


# ----------------------------------------------------------------------------- tree

def _values(side: Side, path: NodePath, metric: str) -> np.ndarray | None:
    """Per-instance values of a node in the compared metric (None for a budget JSON)."""
    ins = side.instances
    if ins is None:
        return None
    if metric == ins.metric:
        return ins.values(path)
    return ins.host_values(path)   # host time of a GPU trace's regions (the other side is CPU-only)


def _diff_nodes(a: Node | None, b: Node | None, path: NodePath, ctx: "_Ctx") -> NodeDiff:
    node = a if a is not None else b
    va = a.value(ctx.metric) / ctx.units[0] if a is not None else None
    vb = b.value(ctx.metric) / ctx.units[1] if b is not None else None
    if a is None:
        j = noise.Judgement(noise.ONLY_B, n_b=b.count)
    elif b is None:
        j = noise.Judgement(noise.ONLY_A, n_a=a.count)
    else:
        j = noise.judge(_values(ctx.A, path, ctx.metric), _values(ctx.B, path, ctx.metric),
                        alpha=ctx.alpha, min_effect=ctx.min_effect)
        if j.verdict == noise.NO_DATA and _same(va, vb):
            j = noise.Judgement(noise.SAME, effect=0.0)
    out = NodeDiff(path, node.name, node.kind, va, vb, a.count if a else None, b.count if b else None, j)
    ka = [c for c in (a.children if a else []) if ctx.keep(c)]
    kb = [c for c in (b.children if b else []) if ctx.keep(c)]
    names = [c.name for c in ka] + [c.name for c in kb if all(c.name != x.name for x in ka)]
    for name in names:
        ca = next((c for c in ka if c.name == name), None)
        cb = next((c for c in kb if c.name == name), None)
        out.children.append(_diff_nodes(ca, cb, path + (name,), ctx))
    out.children.sort(key=lambda n: -n.impact)
    return out


@dataclass
class _Ctx:
    A: Side
    B: Side
    metric: str
    units: tuple[int, int]
    alpha: float
    min_effect: float
    leaves: bool = True

    def keep(self, node: Node) -> bool:
        return self.leaves or node.kind not in _LEAF_KINDS


def _base_name(name: str, lltrace: bool) -> str:
    return split_region_name(name)[0] if lltrace else name


def _by_name(tree: NodeDiff, ctx: _Ctx) -> list[NodeDiff]:
    """Region nodes pooled by name (indices dropped: every layer[k] is "layer"), each counted
    once (a node inside an ancestor of the same name is already in it)."""
    lltrace = any(s.budget.trace.get("lltrace_regions") for s in (ctx.A, ctx.B))
    pools: dict[str, dict[str, Any]] = {}

    def visit(n: NodeDiff, seen: frozenset[str]) -> None:
        for c in n.children:
            if c.kind != "region":
                continue
            base = _base_name(c.name, lltrace)
            if base not in seen:
                p = pools.setdefault(base, {"a": 0.0, "b": 0.0, "ia": [], "ib": [], "na": 0, "nb": 0,
                                            "in_a": False, "in_b": False})
                if c.a is not None:
                    p["a"] += c.a
                    p["na"] += c.a_count or 0
                    p["in_a"] = True
                    v = _values(ctx.A, c.path, ctx.metric)
                    p["ia"].append(v)
                if c.b is not None:
                    p["b"] += c.b
                    p["nb"] += c.b_count or 0
                    p["in_b"] = True
                    p["ib"].append(_values(ctx.B, c.path, ctx.metric))
            visit(c, seen | {base})
    visit(tree, frozenset())

    out = []
    for base, p in pools.items():
        def pooled(parts):
            return None if not parts or any(v is None for v in parts) else np.concatenate(parts)
        if not p["in_b"]:
            j = noise.Judgement(noise.ONLY_A, n_a=p["na"])
        elif not p["in_a"]:
            j = noise.Judgement(noise.ONLY_B, n_b=p["nb"])
        else:
            j = noise.judge(pooled(p["ia"]), pooled(p["ib"]), alpha=ctx.alpha, min_effect=ctx.min_effect)
        out.append(NodeDiff((base,), base, "region", p["a"] if p["in_a"] else None, p["b"] if p["in_b"] else None,
                            p["na"] if p["in_a"] else None, p["nb"] if p["in_b"] else None, j))
    out.sort(key=lambda n: -n.impact)
    return out


# ----------------------------------------------------------------------------- diff

def _unit(A: Side, B: Side) -> tuple[str | None, str, tuple[int, int]]:
    """(tree node of the unit, its label, (count in A, count in B)): values are per unit so
    windows of different lengths compare."""
    for node, label in (("block", "block"), ("ProfilerStep", "step")):
        na, nb = A.budget.tree.child(node), B.budget.tree.child(node)
        if na is not None and nb is not None and na.kind == nb.kind == "region" and na.count and nb.count:
            return node, label, (na.count, nb.count)
    return None, "trace", (1, 1)


def diff(A: Side, B: Side, *, alpha: float = noise.ALPHA, min_effect: float = noise.MIN_EFFECT) -> Diff:
    """Compare two loaded inputs; see the module docstring."""
    warnings: list[str] = []
    for label, s in (("A", A), ("B", B)):
        if s.budget.partial:
            warnings.append(f"{label} is a partial trace ({s.budget.trace.get('stop_reason') or 'cut off'}): "
                            "its values cover what was recovered")
        if s.instances is None:
            warnings.append(f"{label} is a budget JSON: no per-instance values, so no noise verdicts for it")
        warnings.extend(f"{label}: {w}" for w in s.run.warnings)
    metric = A.budget.metric
    leaves = True
    if A.budget.metric != B.budget.metric:
        metric, leaves = CPU, False
        gpu_side = "A" if A.budget.metric == GPU else "B"
        warnings.append(f"only {gpu_side} has GPU activities: comparing host ms of regions (kernel classes left out)")
    unit_node, unit, units = _unit(A, B)
    if unit_node is not None and units[0] != units[1]:
        warnings.append(f"A's trace has {units[0]} {unit}s, B's {units[1]}: values are per {unit}")
    pa, pb = A.describe["profile_blocks"], B.describe["profile_blocks"]
    if pa and pb and pa != pb:
        warnings.append(f"profiled blocks differ (A {pa[0]}..{pa[1] - 1}, B {pb[0]}..{pb[1] - 1}): per-block values "
                        "may compare warm-up with steady state")
    da, db = A.describe["device"], B.describe["device"]
    if da and db and da != db:
        warnings.append(f"different devices: A {da}, B {db}")

    ctx = _Ctx(A, B, metric, units, alpha, min_effect, leaves)
    tree = _diff_nodes(A.budget.tree, B.budget.tree, (), ctx)
    tree.name = A.budget.tree.name if A.budget.tree.name == B.budget.tree.name else \
        f"{A.budget.tree.name} / {B.budget.tree.name}"
    by_name = _by_name(tree, ctx)

    ha = _headline_values(A, unit_node, unit, units[0], metric)
    hb = _headline_values(B, unit_node, unit, units[1], metric)
    headline = []
    for name in list(ha) + [n for n in hb if n not in ha]:
        la, lb = ha.get(name), hb.get(name)
        src = la or lb
        va, vb = (la[2] if la else None), (lb[2] if lb else None)
        if la and lb:
            j = noise.judge(la[3], lb[3], higher_is_better=src[4], alpha=alpha, min_effect=min_effect)
            if j.verdict == noise.NO_DATA and _same(va, vb):
                j = noise.Judgement(noise.SAME, effect=0.0)
        else:
            j = noise.Judgement(noise.ONLY_A if la else noise.ONLY_B)
        if j.verdict == noise.NO_DATA and name == "p99_ms_per_frame" and va != vb:
            j = noise.Judgement(noise.TAIL)   # one number per run: no distribution to test
        headline.append(Metric(name, src[0], src[1], va, vb, src[4], j))
    kernels = kernel_diff(A, B, units, warnings)
    return Diff(A, B, metric, unit, units, headline, tree, by_name, kernels, warnings, alpha, min_effect)
