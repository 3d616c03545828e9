"""`lltrace budget` of a multi-rank run: a summary line per rank, each rank's tree, the
collectives' skew and the straggler (lltrace.analysis.ranks). Fits 80 columns."""
from __future__ import annotations

import math
import statistics

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from lltrace.analysis.ranks import RanksAnalysis, RankView, comm_by_layer
from lltrace.ui import budget_report


def _ms(us: float) -> str:
    return "-" if us is None or math.isnan(us) else f"{us / 1e3:,.2f}"


def rank_line(v: RankView) -> Text:
    """`rank 1  wall 3,187  block 1,414.3  comm 326.7 10.2%  exposed 322.8` (ms)"""
    b = v.budget
    block = (v.meta.get("ms_per_block") or {}).get("p50")
    share = v.comm_ms / b.wall_ms if b.wall_ms else 0.0
    t = Text(f"rank {v.rank}", style="bold")
    t.append(f"  wall {b.wall_ms:,.0f}")
    if isinstance(block, (int, float)):
        t.append(f"  block {block:,.1f}")
    t.append(f"  comm {v.comm_ms:,.1f} {share:.1%}")
    t.append(f"  exposed {v.exposed_ms:,.1f}", style="yellow" if v.exposed_ms > 0.5 * v.comm_ms else "")
    return t


def summary_lines(a: RanksAnalysis) -> list[Text]:
    lines = [Text(f"{a.world_size} ranks (sequence parallel), ms; block: p50; collectives: "
                  f"{'NCCL kernels' if a.skew.get('clock') == 'device' else 'gloo on the host'}",
                  style="bold")]
    straggler = (a.straggler or {}).get("rank")
    for v in a.ranks:
        line = rank_line(v)
        if v.rank == straggler and len(a.ranks) > 1:
            line.append("  straggler", style="bold yellow")
        lines.append(line)
        by = comm_by_layer(v.budget.tree)
        layers = {k: ms for k, ms in by.items() if k.startswith("layer[")}
        if layers:
            worst = max(layers, key=layers.get)
            median = statistics.median(layers.values())
            # the regions hold the all-to-all's layout copies too, not only the collective
            line = Text(f"  ll/comm per layer: median {median:,.2f} ms, max {layers[worst]:,.2f} {worst}",
                        style="dim")
            if by.get("(outside layers)"):
                line.append(f"; else {by['(outside layers)']:,.2f}")
            lines.append(line)
    return lines


def skew_lines(a: RanksAnalysis) -> list[Text]:
    s = a.skew
    n = s.get("collectives", 0)
    if not n or "start_skew_us_p50" not in s:
        return [Text("rank skew: no collectives matched across ranks", style="dim")]
    lines = [Text(f"rank skew over {n} collectives, ms (start = arrival, end = release):", style="bold"),
             Text(f"  {'collective':<24}{'n':>5}{'start p50':>11}{'p99':>9}{'end p50':>10}{'p99':>9}",
                  style="dim")]
    rows = [("all", {**s, "n": n}), *s["by_op"].items()] if len(s["by_op"]) > 1 else list(s["by_op"].items())
    for op, d in rows:
        label = op if len(op) <= 23 else op[:22] + "…"
        lines.append(Text(f"  {label:<24}{d['n']:>5}{_ms(d['start_skew_us_p50']):>11}"
                          f"{_ms(d['start_skew_us_p99']):>9}{_ms(d['end_skew_us_p50']):>10}"
                          f"{_ms(d['end_skew_us_p99']):>9}"))
    st = a.straggler
    if st:
        lines.append(Text(f"straggler: rank {st['rank']}", style="bold yellow").append(
            f" (last at {st['arrived_last']} of {st['of']}; the others waited "
            f"{st['wait_caused_ms']:,.1f} ms for it)", style=""))
    return lines


def render(a: RanksAnalysis, console: Console, ranks: list[int], depth: int | None = 5, by: str = "region",
           top: int | None = None, expand: bool = False) -> None:
    for line in summary_lines(a):
        console.print(line)
    for r in ranks:
        console.print()
        console.print(Rule(f"rank {r}", style="dim"))
        budget_report.render(a.rank(r).budget, console, depth=depth, by=by, top=top, expand=expand)
    console.print()
    for line in skew_lines(a):
        console.print(line)
    for w in a.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))


def diff_lines(a: dict, b: dict) -> list[Text]:
    """`lltrace diff`'s lines on parallelism (analysis.ranks.side_ranks of A and B)."""
    def share(s: dict) -> str:
        return "-" if not s["comm_share"] else f"{s['comm_share']:.1%}"

    def procs(s: dict) -> str:
        return "1 process" if s["world_size"] == 1 else f"{s['world_size']} ranks"

    lines = [Text(f"parallelism: A {procs(a)}, B {procs(b)}; rank 0's comm share: "
                  f"A {share(a)}, B {share(b)}", style="bold")]
    for side, s in (("A", a), ("B", b)):
        blocks = {r: v for r, v in s["ms_per_block_p50"].items() if isinstance(v, (int, float))}
        if len(blocks) > 1:
            slow = max(blocks, key=blocks.get)
            lines.append(Text(f"  {side} ms per block p50 by rank: "
                              + ", ".join(f"{r}: {v:,.1f}" for r, v in sorted(blocks.items()))
                              + f" (slowest rank {slow})", style="dim"))
    return lines
