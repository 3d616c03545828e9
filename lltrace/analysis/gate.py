"""`--fail-above PCT` for CI: did one metric of a Diff regress by more than PCT, beyond noise?"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lltrace.analysis import noise
from lltrace.analysis.diff import TREE_TOTAL, Diff, Metric
from lltrace.errors import LltraceError
from lltrace.trace.jsonround import num as json_num


MIN_TESTABLE = 5   # instances per side below which the gate ignores the noise verdict


@dataclass
class Gate:
    metric: str
    label: str
    a: float | None
    b: float | None
    regression_pct: float
    threshold_pct: float
    verdict: str
    failed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": json_num(self.a), "b": json_num(self.b),
                "regression_pct": json_num(self.regression_pct),
                "threshold_pct": self.threshold_pct, "verdict": self.verdict, "failed": self.failed,
                "message": self.message}


def parse_pct(text: str, option: str = "--fail-above") -> float:
    """`"5%"`, `"5"` or `"0.5%"` -> percent; LltraceError when it is not a number >= 0."""
    s = str(text).strip()
    try:
        v = float(s[:-1] if s.endswith("%") else s)
    except ValueError:
        raise LltraceError(f"bad {option} {text!r}", f"use a percentage, e.g. {option} 5%") from None
    if not math.isfinite(v) or v < 0:
        raise LltraceError(f"bad {option} {text!r}: must be a percentage >= 0")
    return v


def gate(d: Diff, threshold_pct: float, metric: str | None = None, strict: bool = False) -> Gate:
    """Did `metric` regress by more than `threshold_pct`? Default metric: ms per video frame,
    or GPU (host) ms per unit when the inputs have no frames. A regression the noise test
    calls "within noise" does not fail unless `strict`."""
    default = metric is None
    if default:
        m = d.metric_named("ms_per_frame")
        if m is None or m.a is None or m.b is None:
            m = d.metric_named(TREE_TOTAL[d.metric][0])
    else:
        name = {"p99": "p99_ms_per_frame"}.get(metric, metric)
        m = d.metric_named(name)
        if m is None:
            m = _node_metric(d, metric)
    if m is None or m.a is None or m.b is None:
        missing = "A" if m is None or m.a is None else "B"
        known = ", ".join(x.name for x in d.headline if x.a is not None and x.b is not None)
        raise LltraceError(f"--metric {metric}: not known for {missing}",
                           f"metrics both inputs have: {known}, or a region path such as block/step[0]")
    reg = m.regression_pct
    if reg is None:   # A is 0: any growth is a regression of unbounded size
        reg = math.inf if (m.b or 0) > (m.a or 0) and not m.higher_is_better else 0.0
    verdict = m.judgement.verdict
    over = reg > threshold_pct
    # Below MIN_TESTABLE instances a side the rank test cannot reject anything (with 2 vs 2 its
    # smallest p is 0.33): a noise verdict there would let any regression pass. Judge the point
    # estimate instead, and say so.
    n = min(m.judgement.n_a or 0, m.judgement.n_b or 0)
    testable = n >= MIN_TESTABLE
    noisy = testable and verdict in (noise.NOISE, noise.SAME)
    failed = over and (strict or not noisy)
    change = "unchanged" if reg == 0 else f"{abs(reg):.1f}% {'worse' if reg > 0 else 'better'}"
    what = f"{m.name}: {_fmt(m.a)} -> {_fmt(m.b)} {m.unit} ({change})"
    if failed and not testable:
        msg = (f"REGRESSION {what}, above --fail-above {threshold_pct:g}% (too few instances for the "
               f"noise test: {n} < {MIN_TESTABLE} on a side, the point estimate decides)")
    elif failed:
        msg = f"REGRESSION {what}, above --fail-above {threshold_pct:g}%"
    elif over:
        msg = f"{what} is above --fail-above {threshold_pct:g}% but within noise (p={_fmt(m.judgement.p)}): " \
              "not failing (--strict fails anyway)"
    else:
        msg = f"ok {what}, within --fail-above {threshold_pct:g}%"
    return Gate(m.name, m.label, m.a, m.b, reg, threshold_pct, verdict, failed, msg)


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}"


def _node_metric(d: Diff, path: str) -> Metric | None:
    parts = tuple(p for p in path.strip("/").split("/") if p)
    if parts and parts[0] in ("run", "trace", d.tree.name):
        parts = parts[1:]
    node = d.tree.find(parts)
    if node is None:
        return None
    unit = TREE_TOTAL[d.metric][1]
    return Metric("/".join(parts) or d.tree.name, f"{unit} of {path} per {d.unit}", "ms", node.a, node.b, False,
                  node.judgement)
