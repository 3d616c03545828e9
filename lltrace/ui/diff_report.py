"""Rendering of a Diff: rich tables for a terminal, GitHub markdown for PR comments.

Order: headline first, then the budget tree side by side (siblings sorted by impact), the
roll-up by region name, then kernels (or host ops) that disappeared, appeared or changed.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lltrace.analysis import noise
from lltrace.analysis.diff import Change, Diff, Metric, NodeDiff
from lltrace.analysis.gate import Gate
from lltrace.trace.budget import LABEL
from lltrace.trace.kernels import short_names
from lltrace.ui import siblings
from lltrace.ui.budget_report import WIDE, Col, column_widths, fitted_table

_STYLE = {noise.FASTER: "green", noise.SLOWER: "bold red", noise.NOISE: "dim", noise.SAME: "dim",
          noise.ONLY_A: "yellow", noise.ONLY_B: "yellow"}
HIDE_BELOW = 0.001      # tree rows under 0.1% of the root (in both A and B) are folded away
DELTA_SPREAD_PP = 5.0   # a repeated sibling whose Δ % is this many points from its group's median is named


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


# verdicts in narrow tables (below WIDE columns): the same words, shorter
_SHORT = {noise.TOO_FEW: "n/a: too few", noise.NO_DATA: "n/a: 1 value", noise.TAIL: "n/a: tail",
          noise.NOISE: "noise"}


def verdict_text(j: noise.Judgement, short: bool = False) -> str:
    s = _SHORT.get(j.verdict, j.verdict) if short else j.verdict
    if j.p is not None and j.verdict not in (noise.SAME,):
        s += " (p<.001)" if short and j.p < 1e-3 else f" (p={j.p:.2g})"
    return s


def _per(d: Diff) -> str:
    return f"/{d.unit}" if d.unit != "trace" else ""


def _counts(n: NodeDiff, d: Diff, per: bool = True) -> str:
    """Instances per unit, A -> B, when they differ (a count change explains a Δ by itself);
    `per=False` leaves out the unit (the table's "n" header names it)."""
    ua, ub = d.units
    if n.a_count is None or n.b_count is None:
        return str(n.a_count if n.a_count is not None else n.b_count or "")
    ca, cb = n.a_count / ua, n.b_count / ub
    if abs(ca - cb) <= 1e-9:
        return f"{n.a_count}" if n.a_count == n.b_count else f"{n.a_count}→{n.b_count}"
    return f"{ca:.3g}→{cb:.3g}" + (_per(d) if per else "")


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


@dataclass
class GroupRow(Change):
    """Repeated siblings (`layer[0..29]`) as one row: sums per unit, their verdicts counted."""
    name: str
    members: list[NodeDiff]
    kind: str = "region"

    @property
    def a(self) -> float | None:
        v = [m.a for m in self.members if m.a is not None]
        return sum(v) if v else None

    @property
    def b(self) -> float | None:
        v = [m.b for m in self.members if m.b is not None]
        return sum(v) if v else None

    def verdicts(self) -> str:
        """The members' verdict when they agree, else the most common one and how many share it."""
        counts: dict[str, int] = {}
        for m in self.members:
            v = _SHORT.get(m.judgement.verdict, m.judgement.verdict)
            counts[v] = counts.get(v, 0) + 1
        top, n = max(counts.items(), key=lambda kv: kv[1])
        return top if n == len(self.members) else f"{top} ({n}/{len(self.members)})"


def _visible(d: Diff, depth: int | None, expand: bool = False,
             spreads: list[str] | None = None) -> list[tuple[Any, int, str, bool]]:
    """(node, level, tree guide, folded) in display order; small rows are folded away and,
    unless `expand`, repeated siblings are one GroupRow (its spread line goes to `spreads`)."""
    root = d.tree
    scale = max(root.a or 0.0, root.b or 0.0)
    rows: list[tuple[Any, int, str, bool]] = []

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
        items = kids if expand else siblings.group(kids, lambda c: c.name)
        child_prefix = "" if level == 0 else prefix + ("   " if last else "│  ")
        for i, c in enumerate(items):
            is_last = i == len(items) - 1 and not hidden
            if isinstance(c, siblings.Group):
                g = GroupRow(c.label, [m for _, m in c.members])
                rows.append((g, level + 1, child_prefix + ("└─ " if is_last else "├─ "), False))
                if spreads is not None:
                    where = "/".join(p for p in c.members[0][1].path[:-1] if p != "block")
                    line = siblings.spread_line(c, lambda m: m.pct, unit="", fmt=lambda v: f"{v:+.1f}%",
                                                off_by=DELTA_SPREAD_PP)
                    spreads.append(f"{where + '/' if where else ''}{c.label} Δ: {line}")
                continue
            add(c, level + 1, child_prefix, is_last)
        if hidden:
            rows.append((n, level + 1, child_prefix + "└─ ", True))
    add(root, 0, "", True)
    return rows


# ----------------------------------------------------------------------------- rich

def headline_table(d: Diff, width: int = 200) -> Table:
    cols = [Col("metric", "left"), Col("A"), Col("B"), Col("Δ"), Col("Δ %"), Col("verdict", "left")]
    rows = [[m.label, _num(m.a), _num(m.b), _delta(m.delta), _pct(m.pct),
             Text(verdict_text(m.judgement, width < WIDE), style=_metric_style(m))] for m in d.headline]
    return fitted_table(cols, rows, width, label={0: 0.6, 5: 0.4})


def _metric_style(m: Metric) -> str:
    return _STYLE.get(m.judgement.verdict, "")


def _tree_cols(d: Diff) -> list[Col]:
    per = _per(d)
    return [Col("region", "left"), Col(f"A ms\n{per}" if per else "A ms"), Col(f"B ms\n{per}" if per else "B ms"),
            Col("Δ ms"), Col("Δ %"), Col(f"n\n{per}" if per else "n"), Col("verdict\n(per instance)", "left")]


def tree_table(d: Diff, depth: int | None = 3, width: int = 200, expand: bool = False,
               spreads: list[str] | None = None) -> Table:
    rows = []
    for n, level, guide, folded in _visible(d, depth, expand, spreads):
        label = Text(guide, style="dim")
        if folded:
            small = [c for c in n.children if max(c.a or 0, c.b or 0) < HIDE_BELOW * max(d.tree.a or 0, d.tree.b or 0)]
            label.append(f"({len(small)} under {HIDE_BELOW:.1%})",
                         style="dim italic")
            rows.append([label, "", "", "", "", "", ""])
            continue
        if isinstance(n, GroupRow):
            label.append(n.name, style="bold" if level <= 1 else "")
            rows.append([label, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), f"×{len(n.members)}",
                         Text(n.verdicts(), style="dim")])
            continue
        dim = n.kind in ("class", "other", "unattributed")
        label.append(n.name, style=("dim" if dim else "bold" if level <= 1 else "") + (" italic" if n.kind == "class"
                                                                                        else ""))
        rows.append([label, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d, False),
                     Text(verdict_text(n.judgement, width < WIDE), style=_STYLE.get(n.judgement.verdict, ""))])
    return fitted_table(_tree_cols(d), rows, width)


def by_name_table(d: Diff, top: int = 15, width: int = 200) -> Table:
    rows = [[n.name, _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct), _counts(n, d, False),
             Text(verdict_text(n.judgement, width < WIDE), style=_STYLE.get(n.judgement.verdict, ""))]
            for n in d.by_name[:top]]
    t = fitted_table(_tree_cols(d), rows, width)
    t.title, t.title_justify = "regions by name (all instances pooled)", "left"
    return t


def _kernel_rows(rows: list[dict[str, Any]], cols: Iterable[str], width: int) -> Table:
    cols = list(cols)
    spec = [Col("name", "left"), Col("class", "left")] + [Col(c) for c in cols]

    def cells(labels: list[str]) -> list[list[Any]]:
        return [[name, r["class"] + (f" {r['precision']}" if r.get("precision") not in (None, "?") else ""),
                 *[_cell(r, c) for c in cols]] for r, name in zip(rows, labels)]

    name_w = column_widths(spec, cells(short_names(r["name"] for r in rows)), width)[0]
    # names fitted here, not by the table, so that they stay distinct at this width
    return fitted_table(spec, cells(short_names([r["name"] for r in rows], name_w)), width)


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
    out: list[Any] = []
    for title, rows, cols in ((f"{what} only in A (disappeared), ms{per}", k.disappeared, ("A ms", "A n")),
                              (f"{what} only in B (appeared), ms{per}", k.appeared, ("B ms", "B n")),
                              (f"{what} that changed most, ms{per}", k.changed, ("A ms", "B ms", "Δ ms", "Δ %"))):
        if not rows:
            continue
        out.append(Text(title + (f" (top {top} of {len(rows)})" if len(rows) > top else ""), style="bold"))
        out.append(_kernel_rows(rows[:top], cols, width))
    if k.classes:
        out.append(Text(f"{what} by class, ms{per}", style="bold"))
        out.append(fitted_table([Col("class", "left"), Col("A ms"), Col("B ms"), Col("Δ ms"), Col("Δ %")],
                                [[r["class"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"]), _pct(r["pct"])]
                                 for r in k.classes], width))
    prec = precision_rows(d)
    if prec:
        out.append(Text(f"GEMM and attention GPU time by precision, ms{per}", style="bold"))
        out.append(fitted_table([Col("class", "left"), Col("precision", "left"), Col("A ms"), Col("B ms"),
                                 Col("Δ ms")],
                                [[r["class"], r["precision"], _num(r["a_ms"]), _num(r["b_ms"]), _delta(r["delta_ms"])]
                                 for r in prec], width))
    return out


def precision_rows(d: Diff) -> list[dict[str, Any]]:
    """(class, precision) rows of the classes where precision is a design choice (GEMMs,
    attention), when at least one kernel name tells its precision."""
    k = d.kernels
    if k is None or not any(r["precision"] != "?" for r in k.precision):
        return []
    return [r for r in k.precision if r["class"] in ("gemm", "attention") and (r["a_ms"] or r["b_ms"])]


def _only_lines(d: Diff) -> list[Text]:
    """Regions only in A / only in B, their indices pooled (`context/layer[0..29]/kv_update`)."""
    per = _per(d)
    out = []
    for label, nodes, attr in (("only in A", d.only_in_a, "a"), ("only in B", d.only_in_b, "b")):
        if nodes:
            pooled = siblings.pool_paths([(n.path, getattr(n, attr) or 0.0) for n in nodes])
            items = ", ".join(f"{p} ({_num(ms)} ms{per}{f', ×{k}' if k > 1 else ''})" for p, ms, k in pooled[:8])
            more = f" and {len(pooled) - 8} more" if len(pooled) > 8 else ""
            out.append(Text(f"{label}: {items}{more}", style="yellow"))
    return out


def render(d: Diff, console: Console, depth: int | None = 3, top: int = 10, gate: Gate | None = None,
           expand: bool = False) -> None:
    w = console.width
    for line in _header_lines(d):
        console.print(Text(line, style="dim" if line.startswith(("GPU ms", "host ms")) else "bold"))
    console.print()
    console.print(headline_table(d, w))
    console.print()
    spreads: list[str] = []
    console.print(tree_table(d, depth, w, expand, spreads))
    for line in spreads:
        console.print(Text(line, style="dim"))
    if spreads:
        console.print(Text("(--expand lists each repeated region)", style="dim"))
    for line in _only_lines(d):
        console.print(line)
    if d.by_name:
        console.print()
        console.print(by_name_table(d, width=w))
    for item in kernel_tables(d, top, w):
        console.print()
        console.print(item)
    for warning in d.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
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


def markdown(d: Diff, depth: int | None = 3, top: int = 10, gate: Gate | None = None, expand: bool = False) -> str:
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
    for n, level, _, folded in _visible(d, depth, expand):
        indent = "&nbsp;&nbsp;" * level
        if folded:
            rows.append([indent + "*(small rows folded)*", "", "", "", "", "", ""])
            continue
        if isinstance(n, GroupRow):
            rows.append([indent + f"`{n.name}`", _num(n.a), _num(n.b), _delta(n.delta), _pct(n.pct),
                         f"×{len(n.members)}", n.verdicts()])
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
            labels = short_names(r["name"] for r in rows_k[:top])
            lines += _md_table(["name", "class", *cols],
                               [[f"`{label}`",
                                 r["class"] + (f" {r['precision']}" if r.get("precision") not in (None, "?") else ""),
                                 *[_cell(r, c) for c in cols]] for r, label in zip(rows_k[:top], labels)],
                               right_from=2)
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
