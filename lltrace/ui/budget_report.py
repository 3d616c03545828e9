"""Rich rendering of a Budget: the tree with aligned columns, the kernel table, HTA results.

Readable at 80 columns and piped (rich then assumes 80): numbers are never cut, labels
shorten instead (lltrace.trace.kernels.fit / short_names); the low-value columns (p95,
host ms) appear from WIDE columns on. Repeated siblings (`layer[0]` … `layer[29]`) are
one row by default (lltrace.ui.siblings) with their spread; `expand=True` lists each.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lltrace.trace.budget import GPU, LABEL, UNATTRIBUTED, Budget, Node
from lltrace.trace.kernels import fit, short_names
from lltrace.ui import siblings

_DIM_KINDS = {"class", "other", "unattributed"}
WIDE = 110          # from this width on: p95 and host ms columns
HIDE_BELOW = 0.001  # sibling rows under 0.1% of the run are one row (not with expand)


def _ms(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"


def _tflops(node: Node, ceiling: float | None, wide: bool = True) -> str:
    if node.tflops is None:
        return ""
    s = f"{node.tflops:,.0f}" if node.tflops >= 10 else f"{node.tflops:.2f}"
    if ceiling:
        s += f" ({node.tflops / ceiling:.0%})" if wide else f" {node.tflops / ceiling:.0%}"
    return s


# ----------------------------------------------------------------------------- fitted tables

@dataclass
class Col:
    header: str                  # "\n" splits a two-line header
    justify: str = "right"


def column_widths(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int,
                  label: int | dict[int, float] = 0) -> list[int]:
    """Each column's width: number columns exactly as wide as their widest cell (or header
    line); the `label` column (or columns, {index: share of the room}) gets what is left."""
    def plain(c: Any) -> str:
        return c.plain if isinstance(c, Text) else str(c)
    flex = {label: 1.0} if isinstance(label, int) else dict(label)
    widths = [max([len(line) for line in col.header.split("\n")] + [len(plain(r[i])) for r in rows])
              for i, col in enumerate(cols)]
    room = width - sum(w for i, w in enumerate(widths) if i not in flex) - (len(cols) - 1)
    want = {i: widths[i] for i in flex}
    if sum(want.values()) > room:    # share the room; a column that needs less gives the rest away
        left, todo = room, dict(flex)
        while todo:
            total = sum(todo.values())
            small = {i for i, f in todo.items() if want[i] <= left * f / total}
            if not small:
                for i, f in todo.items():
                    widths[i] = max(6, int(left * f / total))
                break
            for i in small:
                widths[i] = want[i]
                left -= want[i]
                del todo[i]
    return widths


def fitted_table(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int,
                 label: int | dict[int, float] = 0) -> Table:
    """A borderless table at `width` columns (column_widths) in which rich never cuts a
    number: label cells shorten instead (the middle of a name is cut, a tree guide is kept)."""
    flex = {label: 1.0} if isinstance(label, int) else dict(label)
    widths = column_widths(cols, rows, width, label)
    table = Table(box=None, pad_edge=False, padding=(0, 1), collapse_padding=True, header_style="bold",
                  show_edge=False)
    for i, col in enumerate(cols):
        table.add_column(col.header, justify=col.justify, width=widths[i], no_wrap=True,
                         overflow="ellipsis" if i in flex else "crop")
    for r in rows:
        cells = list(r)
        for i in flex:
            cells[i] = _fit_label(cells[i], widths[i])
        table.add_row(*cells)
    return table


def _fit_label(cell: Any, width: int) -> Any:
    """A label cell cut to `width`: a Text keeps its first span (the tree guide) whole."""
    if not isinstance(cell, Text):
        return fit(str(cell), width)
    if cell.cell_len <= width:
        return cell
    guide = cell.spans[0].end if cell.spans and cell.spans[0].start == 0 else 0
    guide = min(guide, width - 1)
    head, rest = cell[:guide], cell[guide:]
    cut = fit(rest.plain, width - guide)
    out = head.copy()
    out.append(cut, style=rest.spans[0].style if rest.spans else "")
    return out


# ----------------------------------------------------------------------------- the tree

def prune(node: Node, depth: int | None) -> Node:
    """A copy of the tree cut below `depth` levels under the root (None: keep everything)."""
    if depth is None:
        return node
    copy = Node(**{**node.__dict__, "children": []})
    if depth > 0:
        copy.children = [prune(c, depth - 1) for c in node.children]
    return copy


def merge(nodes: Sequence[Node], name: str) -> Node:
    """One node standing for repeated siblings: sums of their values, counts and FLOPs, and
    their children merged by name (percentiles of a merged node are not known: None)."""
    first = nodes[0]
    cpu = [n.cpu_ms for n in nodes if n.cpu_ms is not None]
    flops = [n.flops for n in nodes]
    out = Node(name, kind=first.kind, gpu_ms=math.fsum(n.gpu_ms for n in nodes),
               cpu_ms=math.fsum(cpu) if cpu else None, share=math.fsum(n.share for n in nodes),
               count=sum(n.count for n in nodes), flops=math.fsum(flops) if all(f is not None for f in flops) else None,
               kernels=sum(n.kernels for n in nodes))
    if out.flops and out.gpu_ms > 0:
        out.tflops = out.flops / (out.gpu_ms / 1e3) / 1e12
    by_name: dict[str, list[Node]] = {}
    for n in nodes:
        for c in n.children:
            by_name.setdefault(c.name, []).append(c)
    total = out.gpu_ms if first.gpu_ms or not first.cpu_ms else (out.cpu_ms or 0.0)
    for cname, group in by_name.items():
        child = merge(group, cname)
        value = child.gpu_ms if first.gpu_ms or not first.cpu_ms else (child.cpu_ms or 0.0)
        child.share = value / total if total > 0 else 0.0
        out.children.append(child)
    return out


@dataclass
class Row:
    node: Node
    level: int
    guide: str
    merged: bool            # stands for several nodes (its percentiles are not known)


def tree_rows(budget: Budget, depth: int | None = 3, expand: bool = False) -> tuple[list[Row], list[str]]:
    """The rows to show, in order, and one spread line per collapsed group of siblings."""
    rows: list[Row] = []
    spreads: list[str] = []
    metric = budget.metric
    small = HIDE_BELOW * budget.tree.value(metric)

    def add(node: Node, prefix: str, last: bool, level: int, merged: bool, path: str) -> None:
        rows.append(Row(node, level, "" if level == 0 else prefix + ("└─ " if last else "├─ "), merged))
        if depth is not None and level >= depth:
            return
        kids = node.children
        if not expand:   # rows under 0.1% of the run become one "(n under 0.1%)" row with their sum
            tiny = [c for c in kids if c.value(metric) < small]
            if len(tiny) == len(kids):   # a small node: its own row says enough
                kids = []
            elif len(tiny) > 1:
                kids = [c for c in kids if c.value(metric) >= small]
                rest = Node(f"({len(tiny)} under {HIDE_BELOW:.1%})", kind="other", count=node.count,
                            share=math.fsum(c.share for c in tiny))
                rest.set_value(metric, math.fsum(c.value(metric) for c in tiny))
                kids.append(rest)
        items = kids if expand else siblings.group(kids, lambda c: c.name)
        child_prefix = "" if level == 0 else prefix + ("   " if last else "│  ")
        for i, item in enumerate(items):
            is_last = i == len(items) - 1
            if isinstance(item, siblings.Group):
                label = item.label
                where = f"{path}/{label}" if path and path != "block" else label
                # per call (value / instances): folded steps hold each layer 4× as often as the context
                line = siblings.spread_line(item, lambda n: n.value(metric) / max(1, n.count), fmt=_ms,
                                            over="call")
                spreads.append(f"{where}: {line}")
                add(merge([n for _, n in item.members], label), child_prefix, is_last, level + 1, True, where)
            else:
                add(item, child_prefix, is_last, level + 1, merged,
                    f"{path}/{item.name}" if path and path != "block" else item.name)

    for c in [budget.tree]:
        add(c, "", True, 0, False, "")
    return rows, spreads


def tree_table(budget: Budget, depth: int | None = 3, width: int = 200, expand: bool = False,
               rows: list[Row] | None = None) -> Table:
    """The budget tree at `width` columns: region, GPU ms, % of the parent, instances,
    p50 / p99 per instance, TFLOP/s; from WIDE on also p95 and host ms."""
    gpu = budget.metric == GPU
    wide = width >= WIDE
    if rows is None:
        rows = tree_rows(budget, depth, expand)[0]
    has_flops = any(r.node.tflops is not None for r in rows)
    unit = LABEL[budget.metric]
    cols = [Col("region", "left")]
    if gpu:
        cols.append(Col("GPU\nms"))
    cols += [Col("% of\nparent"), Col("n")]
    pcts = ("p50", "p95", "p99") if wide else ("p50", "p99")
    cols += [Col(f"{p}\n{unit}") for p in pcts]
    if wide or not gpu:
        cols.append(Col("host\nms"))
    if has_flops:
        cols.append(Col("TFLOP/s" + ("\n(% ceil)" if budget.ceiling_tflops and wide else
                                     "\n% ceil" if budget.ceiling_tflops else "")))
    out = []
    for r in rows:
        node = r.node
        style = "dim" if node.kind in _DIM_KINDS else ("bold" if r.level <= 1 else "")
        label = Text(r.guide, style="dim")
        label.append(node.name, style=style + (" italic" if node.kind == "class" else ""))
        inst = None if r.merged else node.instances(budget.metric)
        row: list[Any] = [label]
        if gpu:
            row.append(_ms(node.gpu_ms))
        row += [f"{node.share:.1%}", str(node.count)]
        row += [_ms(inst[k]) if inst else "" for k in pcts]
        if wide or not gpu:
            row.append(_ms(node.cpu_ms) if node.kind not in ("class",) or not gpu else "")
        if has_flops:
            row.append(_tflops(node, budget.ceiling_tflops, wide))
        out.append(row)
    return fitted_table(cols, out, width)


# ----------------------------------------------------------------------------- kernels

def where_text(k: dict[str, Any]) -> str:
    """Where a kernel ran, from its budget row's `regions` (path, ms): the paths pooled over
    their indices (`step[0..3]/layer[0..29]/self_attn`, lltrace.ui.siblings.pool_paths), the
    largest pool named with its share of the kernel's time. Rows without `regions` (older
    budget JSONs) give `region`."""
    spread = k.get("regions")
    if not spread:
        return k.get("region", "")
    text, ms, _ = siblings.pool_paths([(p.split("/"), ms) for p, ms in spread])[0]
    share = ms / k["gpu_ms"] if k.get("gpu_ms") else 1.0
    return (text or UNATTRIBUTED) if share >= 0.995 else f"{text or UNATTRIBUTED} {share:.0%}"


def kernel_table(budget: Budget, top: int = 20, width: int = 120) -> Table:
    """The top kernels: short names (unique within the table, lltrace.trace.kernels), GPU ms,
    share of all GPU activity, launches, mean µs and where they ran (where_text)."""
    wide = width >= WIDE
    shown = budget.kernels[:top]
    total = budget.gpu_ms or 1.0
    cols = [Col("kernel", "left")] + ([Col("class", "left")] if wide else [])
    cols += [Col("GPU ms"), Col("% of\nGPU"), Col("n"), Col("mean\nµs"), Col("mostly in", "left")]
    flex = {0: 0.55, len(cols) - 1: 0.45}

    def rows_for(labels: list[str]) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for k, name in zip(shown, labels):
            row: list[Any] = [name] + ([k["class"]] if wide else [])
            row += [_ms(k["gpu_ms"]), f"{k['gpu_ms'] / total:.1%}", f"{k['count']:,}",
                    f"{k['gpu_ms'] * 1e3 / max(1, k['count']):,.1f}", where_text(k)]
            rows.append(row)
        if len(budget.kernels) > top:
            rest = sum(k["gpu_ms"] for k in budget.kernels[top:])
            rows.append([Text(f"({len(budget.kernels) - top} more)", style="dim")] + ([""] if wide else [])
                        + [_ms(rest), f"{rest / total:.1%}", "", "", ""])
        return rows

    full = short_names(k["name"] for k in shown)
    name_w = column_widths(cols, rows_for(full), width, flex)[0]
    # names fitted here, not by the table, so that they stay distinct at this width
    return fitted_table(cols, rows_for(short_names([k["name"] for k in shown], name_w)), width, flex)


# ----------------------------------------------------------------------------- summary

def summary_lines(budget: Budget) -> list[Text]:
    lines = []
    if budget.partial:
        reason = budget.trace.get("stop_reason") or "the trace is incomplete"
        lines.append(Text(f"PARTIAL BUDGET: {reason}", style="bold red"))
    lines.append(Text(budget.source, style="bold"))
    if budget.trace.get("device"):
        lines[-1].append(f"  {budget.trace['device']}", style="cyan")
    if budget.run:
        lines.append(Text("  ".join(f"{k}={v}" for k, v in budget.run.items() if v and k != "device"), style="dim"))
    if budget.metric == GPU:
        mem = [k for k in budget.kernels if "memory" in k]
        split = ""
        if mem:
            copies = sum(k["gpu_ms"] for k in mem if k["memory"])
            split = f" (kernels {budget.gpu_ms - copies:,.1f}, memcpy/memset {copies:,.1f})"
        lines.append(Text(f"wall {budget.wall_ms:,.1f} ms   GPU activity {budget.gpu_ms:,.1f} ms{split}"))
        window = sum(d["span_ms"] for d in budget.devices) or 0.0
        lines.append(Text(f"idle GPU {budget.idle_gpu_ms:,.1f} ms" +
                          (f" ({budget.idle_gpu_ms / window:.1%} of the GPU window)" if window else "")))
        lines.append(Text(f"GPU time in a region {budget.attributed_fraction:.1%}   linked to its launch "
                          f"{budget.linked_fraction:.1%}"))
        if budget.classes:
            total = sum(budget.classes.values()) or 1.0
            parts = sorted(budget.classes.items(), key=lambda kv: -kv[1])
            lines.append(Text("classes: " + "   ".join(f"{k} {v / total:.1%}" for k, v in parts), style="dim"))
        if budget.ceiling_tflops:
            what = ("fp8 matmul: the linears run in fp8, attention in bf16" if budget.ceiling_dtype == "fp8"
                    else "bf16 matmul")
            lines.append(Text(f"ceiling: {budget.ceiling_tflops:,.0f} TFLOP/s ({what})", style="dim"))
        lines.extend(idle_lines(budget.idle))
    else:
        lines.append(Text(f"wall {budget.wall_ms:,.1f} ms   host time only (no GPU events)"))
    return lines


def idle_lines(idle: dict[str, Any] | None, top: int = 3) -> list[Text]:
    """Idle GPU time by cause, the regions where it sits and the sync sites (80 columns)."""
    if not idle:
        return []
    out: list[Text] = []
    total = idle.get("total_ms") or 0.0
    if total:
        causes = "   ".join(f"{c} {v:,.1f}" for c, v in sorted(idle["by_cause"].items(), key=lambda kv: -kv[1])
                           if v > 0)
        out += [Text(f"idle GPU {total:,.1f} ms in {idle['gaps']:,} gaps"), Text(f"  by cause (ms): {causes}")]
        host = idle.get("launch_host_ms") or {}
        if idle["by_cause"].get("launch"):
            out.append(Text("  launch-bound host time (ms): " + "   ".join(f"{k} {v:,.1f}" for k, v in host.items()),
                            style="dim"))
        fw = idle.get("launch_bound_per_forward") or []
        if fw:
            worst = fw[0]
            out.append(Text(f"  CUDA graphs / fusion: at most {worst['ms']:,.2f} ms per {worst['forward']}",
                            style="dim"))
        for r in idle.get("by_region", [])[:top]:
            out.append(Text(f"  {r['ms']:9,.2f} ms idle in {r['region']}", style="dim"))
    sites = [s for s in idle.get("sync_sites", []) if s["count"]]
    if sites and not total:
        out.append(Text(f"{sum(s['count'] for s in sites):,} ops that would sync on a GPU (no GPU in this trace):"))
    for s in sites[:top]:
        # the line first: it is what the user came for; the region path can be long
        if s.get("line"):
            out.append(Text(f"  sync {s['op']} at {s['line']}"))
        idle_ms = f", {s['idle_ms']:,.2f} ms idle after" if total else ""
        out.append(Text(f"  {'  ' if s.get('line') else 'sync ' + s['op'] + ' '}in {s['where'] or '(no region)'}: "
                        f"{s['count']:,} ({s['per_block']:.3g}/block){idle_ms}"))
    return out


def hta_tables(hta: dict[str, Any]) -> list[Any]:
    out: list[Any] = [Text(f"HolisticTraceAnalysis {hta.get('version', '')}", style="bold")]
    for section, data in hta.items():
        if section == "version":
            continue
        if isinstance(data, dict) and "error" in data:
            out.append(Text(f"  {section}: unavailable ({data['error']})", style="yellow"))
            continue
        table = Table(title=section.replace("_", " "), title_justify="left", box=None, header_style="bold")
        rows = data if isinstance(data, list) else [data]
        if not rows:
            continue
        if len(rows) == 1:   # one record: a key / value list reads better than a wide row
            table.show_header = False
            table.add_column("")
            table.add_column("", justify="right")
            for k, v in rows[0].items():
                table.add_row(str(k).replace("_", " "), f"{v:,.3f}" if isinstance(v, float) else str(v))
            out.append(table)
            continue
        cols = list(rows[0].keys())
        for c in cols:
            table.add_column(c, justify="left" if c in ("stream", "category") else "right")
        for r in rows:
            table.add_row(*[f"{v:,.3f}" if isinstance(v, float) else str(v) for v in (r.get(c) for c in cols)])
        out.append(table)
    return out


def render(budget: Budget, console: Console, depth: int | None = 3, by: str = "region", top: int | None = None,
           expand: bool = False) -> None:
    for line in summary_lines(budget):
        console.print(line)
    console.print()
    if by == "kernel":
        if budget.metric != GPU:
            console.print("no GPU kernels in this trace", style="yellow")
        else:
            console.print(kernel_table(budget, top or 20, console.width))
    else:
        rows, spreads = tree_rows(budget, depth, expand)
        console.print(tree_table(budget, depth, console.width, expand, rows))
        hints = []
        if depth is not None and any(len(p) > depth for p, _ in budget.tree.walk()):
            hints.append(f"--depth {depth + 1} or more shows deeper levels")
        if spreads:
            console.print()
            for s in spreads:
                console.print(Text(s, style="dim"))
            hints.append("--expand lists each repeated region and the small rows")
        if console.width < WIDE:
            hints.append(f"{WIDE}+ columns add p95 and host ms")
        console.print(Text("(" + "; ".join(hints) + ")", style="dim") if hints else "")
    if budget.hta:
        console.print()
        for item in hta_tables(budget.hta):
            console.print(item)
    for w in budget.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
