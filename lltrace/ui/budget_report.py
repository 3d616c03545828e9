"""Rich rendering of a Budget: the tree with aligned columns, the kernel table, HTA results."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lltrace.trace.budget import GPU, LABEL, Budget, Node

_DIM_KINDS = {"class", "other", "unattributed"}


def _ms(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"


def _tflops(node: Node, ceiling: float | None) -> str:
    if node.tflops is None:
        return ""
    s = f"{node.tflops:,.0f}" if node.tflops >= 10 else f"{node.tflops:.2f}"
    if ceiling:
        s += f" ({node.tflops / ceiling:.0%})"
    return s


def prune(node: Node, depth: int | None) -> Node:
    """A copy of the tree cut below `depth` levels under the root (None: keep everything)."""
    if depth is None:
        return node
    copy = Node(**{**node.__dict__, "children": []})
    if depth > 0:
        copy.children = [prune(c, depth - 1) for c in node.children]
    return copy


def tree_table(budget: Budget, depth: int | None = 3) -> Table:
    gpu = budget.metric == GPU
    has_flops = any(n.tflops is not None for _, n in budget.tree.walk())
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("region", no_wrap=True)
    if gpu:
        table.add_column("GPU ms", justify="right")
    table.add_column("share", justify="right")
    table.add_column("count", justify="right")
    for p in ("p50", "p95", "p99"):
        table.add_column(f"{p} {LABEL[budget.metric]}", justify="right")
    table.add_column("host ms", justify="right")
    if has_flops:
        table.add_column("TFLOP/s" + (" (% ceil)" if budget.ceiling_tflops else ""), justify="right")

    def add(node: Node, prefix: str, last: bool, level: int) -> None:
        guide = "" if level == 0 else prefix + ("└─ " if last else "├─ ")
        style = "dim" if node.kind in _DIM_KINDS else ("bold" if level <= 1 else "")
        label = Text(guide, style="dim")
        label.append(node.name, style=style + (" italic" if node.kind == "class" else ""))
        inst = node.instances(budget.metric)
        row: list[Any] = [label]
        if gpu:
            row.append(_ms(node.gpu_ms))
        row += [f"{node.share:.1%}", str(node.count)]
        row += [_ms(inst[k]) if inst else "" for k in ("p50", "p95", "p99")]
        row.append(_ms(node.cpu_ms) if node.kind not in ("class",) or not gpu else "")
        if has_flops:
            row.append(_tflops(node, budget.ceiling_tflops))
        table.add_row(*row)
        if depth is not None and level >= depth:
            return
        kids = node.children
        for i, c in enumerate(kids):
            add(c, "" if level == 0 else prefix + ("   " if last else "│  "), i == len(kids) - 1, level + 1)

    add(budget.tree, "", True, 0)
    return table


def short_kernel_name(name: str, width: int = 70) -> str:
    """Kernel names are C++ signatures hundreds of characters long: drop `void ` and the
    argument list, then cut the template arguments to fit."""
    s = name[5:] if name.startswith("void ") else name
    s = s.replace("(anonymous namespace)::", "").replace("at::native::", "")
    depth = 0
    for i, ch in enumerate(s):   # cut the argument list: the first "(" outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            s = s[:i]
            break
    return s if len(s) <= width else s[:width - 1] + "…"


def _short_path(path: str, width: int = 32) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1):]


def kernel_table(budget: Budget, top: int = 20, width: int = 120) -> Table:
    # fixed columns take ~70 characters; the kernel name and the region share the rest
    name_w = max(16, min(70, (width - 70) * 2 // 3))
    path_w = max(12, min(40, width - 70 - name_w))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("kernel", no_wrap=True)
    table.add_column("class", no_wrap=True)
    for col in ("GPU ms", "share", "count", "mean µs"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("mostly in", no_wrap=True)
    total = budget.gpu_ms or 1.0
    for k in budget.kernels[:top]:
        table.add_row(short_kernel_name(k["name"], name_w), k["class"], _ms(k["gpu_ms"]),
                      f"{k['gpu_ms'] / total:.1%}", str(k["count"]),
                      f"{k['gpu_ms'] * 1e3 / max(1, k['count']):,.1f}", _short_path(k.get("region", ""), path_w))
    if len(budget.kernels) > top:
        rest = sum(k["gpu_ms"] for k in budget.kernels[top:])
        table.add_row(Text(f"({len(budget.kernels) - top} more kernels)", style="dim"), "", _ms(rest),
                      f"{rest / total:.1%}", "", "", "")
    return table


def summary_lines(budget: Budget) -> list[Text]:
    lines = []
    if budget.partial:
        reason = budget.trace.get("stop_reason") or "the trace is incomplete"
        lines.append(Text(f"PARTIAL BUDGET: {reason}", style="bold red"))
    head = Text(budget.source, style="bold")
    if budget.trace.get("device"):
        head.append(f"  {budget.trace['device']}", style="cyan")
    if budget.run:
        head.append("  " + "  ".join(f"{k}={v}" for k, v in budget.run.items() if v), style="dim")
    lines.append(head)
    if budget.metric == GPU:
        window = sum(d["span_ms"] for d in budget.devices) or 0.0
        idle = f"{budget.idle_gpu_ms:,.1f} ms idle GPU" + (f" ({budget.idle_gpu_ms / window:.1%} of the GPU window)"
                                                           if window else "")
        lines.append(Text(f"wall {budget.wall_ms:,.1f} ms   GPU kernels {budget.gpu_ms:,.1f} ms   {idle}"))
        lines.append(Text(f"GPU time in a region {budget.attributed_fraction:.1%}   GPU activities linked to "
                          f"their launch {budget.linked_fraction:.1%}"))
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
        out.append(Text(f"idle GPU {total:,.1f} ms in {idle['gaps']:,} gaps, by cause (ms): {causes}"))
        host = idle.get("launch_host_ms") or {}
        if idle["by_cause"].get("launch"):
            out.append(Text("  launch-bound host time (ms): " + "   ".join(f"{k} {v:,.1f}" for k, v in host.items()),
                            style="dim"))
        fw = idle.get("launch_bound_per_forward") or []
        if fw:
            worst = fw[0]
            out.append(Text(f"  CUDA graphs / fusion could win at most {worst['ms']:,.2f} ms per {worst['forward']} "
                            "(its launch-bound gaps)", style="dim"))
        for r in idle.get("by_region", [])[:top]:
            out.append(Text(f"  {r['ms']:9,.2f} ms  {r['region']}", style="dim"))
    sites = [s for s in idle.get("sync_sites", []) if s["count"]]
    if sites and not total:
        out.append(Text(f"{sum(s['count'] for s in sites):,} ops that would sync on a GPU (no GPU in this trace):"))
    for s in sites[:top]:
        at = f"{s['line']}, " if s.get("line") else ""
        idle_ms = f", {s['idle_ms']:,.2f} ms idle after it" if total else ""
        out.append(Text(f"  sync {s['op']} at {at}{s['where'] or '(no region)'}: {s['count']:,} "
                        f"({s['per_block']:.3g} per block){idle_ms}"))
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


def render(budget: Budget, console: Console, depth: int | None = 3, by: str = "region", top: int | None = None) -> None:
    for line in summary_lines(budget):
        console.print(line)
    console.print()
    if by == "kernel":
        if budget.metric != GPU:
            console.print("no GPU kernels in this trace", style="yellow")
        else:
            console.print(kernel_table(budget, top or 20, console.width))
    else:
        console.print(tree_table(budget, depth))
        if depth is not None and any(len(p) > depth for p, _ in budget.tree.walk()):
            console.print(Text(f"(--depth {depth + 1} or more to see deeper levels)", style="dim"))
    if budget.hta:
        console.print()
        for item in hta_tables(budget.hta):
            console.print(item)
    for w in budget.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
