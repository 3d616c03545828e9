"""Kernels (GPU traces) or top-level host ops (CPU-only traces) of two budgets, by name:
which appeared, disappeared or changed most, per unit of work; class totals; and GPU time
by class and precision, which is where "bf16 GEMMs were replaced by fp8 ones" shows."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lltrace.analysis.side import Side
from lltrace.trace.budget import GPU
from lltrace.trace.jsonround import num as _r


@dataclass
class KernelDiff:
    """Kernels (GPU) or top-level host ops (CPU-only) by name, per unit."""
    kind: str                                    # "kernel" | "op"
    appeared: list[dict[str, Any]]               # only in B, largest first
    disappeared: list[dict[str, Any]]            # only in A
    changed: list[dict[str, Any]]                # in both, largest |Δ| first
    classes: list[dict[str, Any]]                # class totals
    precision: list[dict[str, Any]]              # (class, precision) totals, kernels only

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "appeared": self.appeared, "disappeared": self.disappeared,
                "changed": self.changed, "classes": self.classes, "precision": self.precision}


# Precision of a GEMM / attention kernel from its name (first match wins: cutlass names
# read "bf16bf16_bf16f32", so the input type comes first).
_PRECISION = [("fp8", re.compile(r"e4m3|e5m2|fp8|float8|f8f8|_f8_|mxf8")),
              ("bf16", re.compile(r"bf16|bfloat16")),
              ("fp16", re.compile(r"fp16|f16|half")),
              ("tf32", re.compile(r"tf32")),
              ("int8", re.compile(r"int8|i8i8|s8s8|imma")),
              ("fp32", re.compile(r"fp32|f32|sgemm|float\b"))]


def precision(kernel_name: str) -> str:
    name = kernel_name.lower()
    for tag, rx in _PRECISION:
        if rx.search(name):
            return tag
    return "?"


def _kernel_table(side: "Side", units: int) -> tuple[str, dict[str, dict[str, Any]]] | None:
    if side.budget.metric == GPU:
        return "kernel", {k["name"]: {"class": k.get("class", "other"), "ms": float(k.get("gpu_ms", 0.0)) / units,
                                     "count": int(k.get("count", 0)), "region": k.get("region")}
                          for k in side.budget.kernels}
    if side.instances is not None:
        return "op", {o["name"]: {"class": o["class"], "ms": o["host_ms"] / units, "count": o["count"],
                                  "region": None} for o in side.instances.ops}
    return None


def kernel_diff(A: "Side", B: "Side", units: tuple[int, int], warnings: list[str]) -> KernelDiff | None:
    ta, tb = _kernel_table(A, units[0]), _kernel_table(B, units[1])
    if ta is None or tb is None:
        warnings.append("no kernel / op table for a budget JSON of a CPU-only trace: kernel section left out")
        return None
    if ta[0] != tb[0]:
        warnings.append("one input has GPU kernels and the other only host ops: kernel section left out")
        return None
    kind, ka, kb = ta[0], ta[1], tb[1]

    def row(name, a, b):
        va, vb = (a or {}).get("ms"), (b or {}).get("ms")
        d = None if va is None or vb is None else vb - va
        src = a or b
        r = {"name": name, "class": src["class"], "a_ms": _r(va), "b_ms": _r(vb), "delta_ms": _r(d),
             "pct": _r(100.0 * d / va if d is not None and va else None),
             "a_count": (a or {}).get("count"), "b_count": (b or {}).get("count"), "region": src.get("region")}
        if kind == "kernel":
            r["precision"] = precision(name)
        return r

    appeared = sorted((row(n, None, kb[n]) for n in kb if n not in ka), key=lambda r: -r["b_ms"])
    disappeared = sorted((row(n, ka[n], None) for n in ka if n not in kb), key=lambda r: -r["a_ms"])
    changed = sorted((row(n, ka[n], kb[n]) for n in ka if n in kb), key=lambda r: -abs(r["delta_ms"]))

    def totals(key):
        sa: dict[Any, float] = {}
        sb: dict[Any, float] = {}
        for table, acc in ((ka, sa), (kb, sb)):
            for n, k in table.items():
                acc[key(n, k)] = acc.get(key(n, k), 0.0) + k["ms"]
        rows = []
        for k in list(sa) + [k for k in sb if k not in sa]:
            va, vb = sa.get(k, 0.0), sb.get(k, 0.0)
            rows.append({"key": k, "a_ms": _r(va), "b_ms": _r(vb), "delta_ms": _r(vb - va),
                         "pct": _r(100.0 * (vb - va) / va if va else None)})
        rows.sort(key=lambda r: (-abs(r["delta_ms"]), -max(r["a_ms"], r["b_ms"])))
        return rows

    classes = [{"class": r.pop("key"), **r} for r in totals(lambda n, k: k["class"])]
    prec = []
    if kind == "kernel":
        prec = [{"class": r["key"][0], "precision": r["key"][1], **{k: v for k, v in r.items() if k != "key"}}
                for r in totals(lambda n, k: (k["class"], precision(n)))]
    return KernelDiff(kind, appeared, disappeared, changed, classes, prec)
