"""Rendering of a Diff: rich tables for a terminal, GitHub markdown for PR comments.

Order: headline first, then the budget tree side by side (siblings sorted by impact), the
roll-up by region name, then kernels (or host ops) that disappeared, appeared or changed.
"""
from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lltrace.analysis import noise
from lltrace.analysis.diff import Diff, Metric, NodeDiff
from lltrace.analysis.gate import Gate
from lltrace.trace.budget import LABEL
from lltrace.ui.budget_report import short_kernel_name

_STYLE = {noise.FASTER: "green", noise.SLOWER: "bold red", noise.NOISE: "dim", noise.SAME: "dim",
          noise.ONLY_A: "yellow", noise.ONLY_B: "yellow"}
HIDE_BELOW = 0.001      # tree rows under 0.1% of the root (in both A and B) are folded away


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return ""
    a = abs(v)
    s = f"{v:,.3f}" if a < 10 else f"{v:,.1f}" if a < 1e5 else f"{v:,.0f}"
    return s + unit


def _delta(v: float | None) -> str:
    if v is None:
        return ""
    s = _num(v)
    if s.strip("-+0.,") == "":     # rounds to zero: no sign
        return _num(0.0)
    return ("+" if v > 0 else "") + s


def _pct(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:+.1f}%"


def verdict_text(j: noise.Judgement) -> str:
    s = j.verdict
    if j.p is not None and j.verdict not in (noise.SAME,):
        s += f" (p={j.p:.2g})"
    return s


def _per(d: Diff) -> str:
    return f"/{d.unit}" if d.unit != "trace" else ""


def _counts(n: NodeDiff, d: Diff) -> str:
    """Instances per unit, A -> B, when they differ (a count change explains a Δ by itself)."""
    ua, ub = d.units
    if n.a_count is None or n.b_count is None:
        return str(n.a_count if n.a_count is not None else n.b_count or "")
    ca, cb = n.a_count / ua, n.b_count / ub
    if abs(ca - cb) <= 1e-9:
        return f"{n.a_count}" if n.a_count == n.b_count else f"{n.a_count}→{n.b_count}"
    return f"{ca:.3g}→{cb:.3g}" + _per(d)


def _header_lines(d: Diff) -> list[str]:
    lines = []
    for label, side in (("A", d.a), ("B", d.b)):
        info = side.describe
        parts = [f"{label}: {info['path']}"]
        for key in ("preset", "device"):
            if info.get(key):
                parts.append(f"{key}={info[key]}")
        parts.append(f"{d.units[0 if label == 'A' else 1]} {d.unit}(s)" if d.unit != "trace" else "whole trace")
        if info.get("partial"):
            parts.append("PARTIAL")
        lines.append("  ".join(parts))
    lines.append(f"{LABEL[d.metric]} ms per {d.unit}; noise: Mann-Whitney U on per-instance values, "
                 f"alpha {d.alpha:g}, min effect {d.min_effect:.0%} of A's median, >= {noise.MIN_INSTANCES} instances")
    return lines


def _visible(d: Diff, depth: int | None) -> list[tuple[NodeDiff, int, str, bool]]:
    """(node, level, tree guide, folded) in display order; small rows are folded away."""
    root = d.tree
    scale = max(root.a or 0.0, root.b or 0.0)
    rows: list[tuple[NodeDiff, int, str, bool]] = []

    def big(n: NodeDiff) -> bool:
        return scale <= 0 or max(n.a or 0.0, n.b or 0.0) >= HIDE_BELOW * scale

    def add(n: NodeDiff, level: int, prefix: str, last: bool) -> None:
        guide = "" if level == 0 else prefix + ("└─ " if last else "├─ ")
        rows.append((n, level, guide, False))
        if depth is not None and level >= depth:
            return
        # an only-in subtree shows its top node only
        if level > 0 and n.judgement.verdict in (noise.ONLY_A, noise.ONLY_B):
            return
        kids = [c for c in n.children if big(c)]
        hidden = len(n.children) - len(kids)
        child_prefix = "" if level == 0 else prefix + ("   " if last else "│  ")
        for i, c in enumerate(kids):
            add(c, level + 1, child_prefix, i == len(kids) - 1 and not hidden)
        if hidden:
            rows.append((n, level + 1, child_prefix + "└─ ", True))
    add(root, 0, "", True)
    return rows


# ----------------------------------------------------------------------------- rich

def headline_table(d: Diff) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("metric", "left"), ("A", "right"), ("B", "right"), ("Δ", "right"), ("Δ %", "right"),
                      ("verdict", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for m in d.headline:
        style = _metric_style(m)
        t.add_row(m.label, _num(m.a), _num(m.b), _delta(m.delta), _pct(m.pct),
                  Text(verdict_text(m.judgement), style=style))
    return t


def _metric_style(m: Metric) -> str:
    return _STYLE.get(m.judgement.verdict, "")


def tree_table(d: Diff, depth: int | None = 3) -> Table:
    per = _per(d)
    t = Table(box=None, pad_edge=False, header_style="bold")
    t.add_column("region", no_wrap=True)
    for col in (f"A ms{per}", f"B ms{per}", "Δ ms", "Δ %", "n"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("verdict (per instance)", no_wrap=True)
    for n, level, guide, folded in _visible(d, depth):
        label = Text(guide, style="dim")
        if folded:
            small = [c for c in n.children if max(c.a or 0, c.b or 0) < HIDE_BELOW * max(d.tree.a or 0, d.tree.b or 0)]
            label.append(f"({len(small)} row{'s' if len(small) != 1 else ''} under {HIDE_BELOW:.1%} of the total)",
                         style="dim italic")
            t.add_row(label, "", "", "", "", "", "")
            continue
        dim = n.kind in ("class", "other", "unattributed")
        label.append(n.name, style=("dim" if dim else "bold" if level <= 1 else "") + (" italic" if n.kind == "class"
                                                                                        else ""))
        t.add_row(label, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d),
                  Text(verdict_text(n.judgement), style=_STYLE.get(n.judgement.verdict, "")))
    return t


def by_name_table(d: Diff, top: int = 15) -> Table:
    per = _per(d)
    t = Table(box=None, pad_edge=False, header_style="bold", title="regions by name (all instances pooled)",
              title_justify="left")
    t.add_column("region", no_wrap=True)
    for col in (f"A ms{per}", f"B ms{per}", "Δ ms", "Δ %", "n"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("verdict (per instance)", no_wrap=True)
    for n in d.by_name[:top]:
        t.add_row(n.name, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d),
                  Text(verdict_text(n.judgement), style=_STYLE.get(n.judgement.verdict, "")))
    return t


def _kernel_rows(rows: list[dict[str, Any]], cols: Iterable[str], width: int) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    t.add_column("name", no_wrap=True)
    t.add_column("class", no_wrap=True)
    cols = list(cols)
    for c in cols:
        t.add_column(c, justify="right", no_wrap=True)
    for r in rows:
        name = short_kernel_name(r["name"], width)
        cls = r["class"] + (f" {r['precision']}" if r.get("precision") not in (None, "?") else "")
        t.add_row(name, cls, *[_cell(r, c) for c in cols])
    return t


_KERNEL_COLS = {"A ms": "a_ms", "B ms": "b_ms", "Δ ms": "delta_ms", "Δ %": "pct", "A n": "a_count", "B n": "b_count"}


def _cell(r: dict[str, Any], col: str) -> str:
    v = r.get(_KERNEL_COLS[col])
    if col == "Δ ms":
        return _delta(v)
    if col == "Δ %":
        return _pct(v)
    if col in ("A n", "B n"):
        return "" if v is None else str(v)
    return _num(v)


def kernel_tables(d: Diff, top: int = 10, width: int = 120) -> list[Any]:
    k = d.kernels
    if k is None:
        return []
    what = "kernels" if k.kind == "kernel" else "host ops (top-level)"
    per = _per(d)
    name_w = max(24, min(80, width - 50))
    out: list[Any] = []
    for title, rows, cols in ((f"{what} only in A (disappeared), ms{per}", k.disappeared, ("A ms", "A n")),
                              (f"{what} only in B (appeared), ms{per}", k.appeared, ("B ms", "B n")),
                              (f"{what} that changed most, ms{per}", k.changed, ("A ms", "B ms", "Δ ms", "Δ %"))):
        if not rows:
            continue
        out.append(Text(title + (f" (top {top} of {len(rows)})" if len(rows) > top else ""), style="bold"))
        out.append(_kernel_rows(rows[:top], cols, name_w))
    if k.classes:
        t = Table(box=None, pad_edge=False, header_style="bold", title=f"{what} by class, ms{per}",
                  title_justify="left")
        for c in ("class", "A ms", "B ms", "Δ ms", "Δ %"):
            t.add_column(c, justify="left" if c == "class" else "right", no_wrap=True)
        for r in k.classes:
            t.add_row(r["class"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"]), _pct(r["pct"]))
        out.append(t)
    prec = precision_rows(d)
    if prec:
        t = Table(box=None, pad_edge=False, header_style="bold",
                  title=f"GEMM and attention GPU time by precision, ms{per}", title_justify="left")
        for c in ("class", "precision", "A ms", "B ms", "Δ ms"):
            t.add_column(c, justify="left" if c in ("class", "precision") else "right", no_wrap=True)
        for r in prec:
            t.add_row(r["class"], r["precision"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"]))
        out.append(t)
    return out


def precision_rows(d: Diff) -> list[dict[str, Any]]:
    """(class, precision) rows of the classes where precision is a design choice (GEMMs,
    attention), when at least one kernel name tells its precision."""
    k = d.kernels
    if k is None or not any(r["precision"] != "?" for r in k.precision):
        return []
    return [r for r in k.precision if r["class"] in ("gemm", "attention") and (r["a_ms"] or r["b_ms"])]


def _only_lines(d: Diff) -> list[Text]:
    per = _per(d)
    out = []
    for label, nodes, attr in (("only in A", d.only_in_a, "a"), ("only in B", d.only_in_b, "b")):
        if nodes:
            items = ", ".join(f"{'/'.join(n.path)} ({_num(getattr(n, attr))} ms{per})" for n in nodes[:12])
            more = f" and {len(nodes) - 12} more" if len(nodes) > 12 else ""
            out.append(Text(f"{label}: {items}{more}", style="yellow"))
    return out


def render(d: Diff, console: Console, depth: int | None = 3, top: int = 10, gate: Gate | None = None) -> None:
    for line in _header_lines(d):
        console.print(Text(line, style="dim" if line.startswith(("GPU ms", "host ms")) else "bold"))
    console.print()
    console.print(headline_table(d))
    console.print()
    console.print(tree_table(d, depth))
    for line in _only_lines(d):
        console.print(line)
    if d.by_name:
        console.print()
        console.print(by_name_table(d))
    for item in kernel_tables(d, top, console.width):
        console.print()
        console.print(item)
    for w in d.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    if gate is not None:
        console.print(Text(gate.message, style="bold red" if gate.failed else "green"))


# ----------------------------------------------------------------------------- markdown

def _md_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")
    left = [i < right_from or h.startswith("verdict") for i, h in enumerate(header)]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if lf else "---:" for lf in left) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def markdown(d: Diff, depth: int | None = 3, top: int = 10, gate: Gate | None = None) -> str:
    per = _per(d)
    lines = ["## lltrace diff", ""]
    lines += [f"- {line}" for line in _header_lines(d)]
    lines.append("")
    if gate is not None:
        lines += [f"**{gate.message}**", ""]
    lines += _md_table(["metric", "A", "B", "Δ", "Δ %", "verdict"],
                       [[m.label, _num(m.a), _num(m.b), _delta(m.delta), _pct(m.pct), verdict_text(m.judgement)]
                        for m in d.headline])
    lines += ["", "### Budget", ""]
    rows = []
    for n, level, _, folded in _visible(d, depth):
        indent = "&nbsp;&nbsp;" * level
        if folded:
            rows.append([indent + "*(small rows folded)*", "", "", "", "", "", ""])
            continue
        name = f"`{n.name}`" if n.kind == "region" or level == 0 else f"*{n.name}*"
        rows.append([indent + name, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d),
                     verdict_text(n.judgement)])
    lines += _md_table(["region", f"A ms{per}", f"B ms{per}", "Δ ms", "Δ %", "n", "verdict (per instance)"], rows)
    for t in _only_lines(d):
        lines += ["", t.plain]
    if d.by_name:
        lines += ["", "### Regions by name (all instances pooled)", ""]
        lines += _md_table(["region", f"A ms{per}", f"B ms{per}", "Δ ms", "Δ %", "n", "verdict"],
                           [[f"`{n.name}`", _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d),
                             verdict_text(n.judgement)] for n in d.by_name[:15]])
    k = d.kernels
    if k is not None:
        what = "Kernels" if k.kind == "kernel" else "Host ops"
        for title, rows_k, cols in (("only in A (disappeared)", k.disappeared, ("A ms", "A n")),
                                    ("only in B (appeared)", k.appeared, ("B ms", "B n")),
                                    ("changed most", k.changed, ("A ms", "B ms", "Δ ms", "Δ %"))):
            if not rows_k:
                continue
            lines += ["", f"### {what} {title}, ms{per}", ""]
            lines += _md_table(["name", "class", *cols],
                               [[f"`{short_kernel_name(r['name'], 90)}`",
                                 r["class"] + (f" {r['precision']}" if r.get("precision") not in (None, "?") else ""),
                                 *[_cell(r, c) for c in cols]] for r in rows_k[:top]], right_from=2)
        if k.classes:
            lines += ["", f"### {what} by class, ms{per}", ""]
            lines += _md_table(["class", "A ms", "B ms", "Δ ms", "Δ %"],
                               [[r["class"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"]), _pct(r["pct"])]
                                for r in k.classes])
        prec = precision_rows(d)
        if prec:
            lines += ["", f"### GEMM and attention GPU time by precision, ms{per}", ""]
            lines += _md_table(["class", "precision", "A ms", "B ms", "Δ ms"],
                               [[r["class"], r["precision"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"])]
                                for r in prec], right_from=2)
    if d.warnings:
        lines += [""] + [f"> warning: {w}" for w in d.warnings]
    return "\n".join(lines) + "\n"
