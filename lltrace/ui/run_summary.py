"""The headless `lltrace run` report: a rich summary of a finished (or interrupted) run."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from lltrace.capture.recompiles import compile_parts
from lltrace.ui.verdict import FRAME_BUDGET_MS, budget_verdict
from lltrace.words import count, plural

BUDGET_MS = FRAME_BUDGET_MS

# events.jsonl kinds as a person counts them
_EVENT_NOUNS = {"recompile": "recompile", "graph_break": "graph break", "compile": "compile",
                "prompt_switch": "prompt-switch event", "cudagraph_skip": "CUDA-graph skip",
                "profile_window": "profiler-window event", "note": "note"}


def _ms(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def _s(ms) -> str:
    return "—" if ms is None else (f"{ms / 1e3:.1f} s" if ms >= 1000 else f"{ms:.1f} ms")


def cold_start_line(summary: dict[str, Any], events: Iterable[Any]) -> str | None:
    """"31.2 s in blocks 0, 1: compile 28.0 s (dynamo 1.2 s, AOT autograd 2.0 s, inductor
    15.0 s, autotune 9.8 s), graph capture 3.2 s"; None when nothing compiled or captured. The
    totals are the frame clock's (summary.json `cold_start`), the compile parts the compile
    events' (lltrace.capture.recompiles.compile_parts)."""
    cs = summary.get("cold_start") or {}
    compile_ms, capture_ms = cs.get("compile_ms") or 0.0, cs.get("graph_capture_ms") or 0.0
    if not (compile_ms or capture_ms):
        return None
    blocks = cs.get("blocks") or []
    parts = []
    if compile_ms:
        p = compile_parts(events)
        split = [(n, p[k]) for n, k in (("dynamo", "dynamo_s"), ("AOT autograd", "aot_autograd_s"),
                                       ("inductor", "inductor_s"), ("autotune", "autotune_s")) if p[k] >= 0.05]
        detail = f" ({', '.join(f'{n} {v:.1f} s' for n, v in split)})" if split else ""
        parts.append(f"compile {_s(compile_ms)}{detail}")
    if capture_ms:
        parts.append(f"graph capture {_s(capture_ms)}")
    where = f" in {plural('block', len(blocks))} {', '.join(map(str, blocks))}" if blocks else ""
    return f"{_s(compile_ms + capture_ms)}{where}: {', '.join(parts)}"


def run_summary(result, describe: dict, notes: list[str]) -> Panel:
    s = result.summary
    mpf = s.get("ms_per_frame") or {}
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    dev = describe.get("device", {})
    t.add_row("preset", f"{describe.get('preset')}  ({describe.get('model', {}).get('name')}, "
                        f"{dev.get('name') or dev.get('type')}, {describe.get('dtype')}, "
                        f"attention {describe.get('attention_backend')})")
    t.add_row("status", f"{result.status}" + (f" ({result.reason})" if result.reason else ""))
    t.add_row("frames", f"{count(s.get('frames', 0), 'video frame')} in {count(s.get('blocks', 0), 'block')} "
                        f"(clock: {s.get('clock')})")
    left = []
    if s.get("profiled_frames"):
        left.append(f"{s['profiled_frames']} of profiled blocks")
    if s.get("cold_frames"):
        left.append(f"{s['cold_frames']} of blocks that compiled or captured a CUDA graph")
    steady = count(s.get("steady_frames", 0), "frame") + (f"; left out: {', '.join(left)}" if left else "")
    if not s.get("steady_frames") and s.get("frames"):
        steady += " (no steady frame: the numbers below are over the rest)"
    t.add_row("steady", steady)
    # one verdict everywhere (the TUI's too): p99 of the steady frames against the budget
    verdict = budget_verdict(mpf.get("p99"), BUDGET_MS)
    judged = "" if verdict is None else (f" — [green]{verdict[0]}[/green]" if verdict[1] else
                                         f" — [red]{verdict[0]}[/red]")
    t.add_row("ms / video frame", f"mean {_ms(mpf.get('mean'))}  p50 {_ms(mpf.get('p50'))}  "
                                  f"p95 {_ms(mpf.get('p95'))}  p99 {_ms(mpf.get('p99'))}{judged}")
    t.add_row("FPS", f"{s.get('fps') or 0:.1f}")
    cold = cold_start_line(s, result.events)
    warm = s.get("warm_first_frame_ms")
    if cold and warm is not None:
        t.add_row("first frame", f"{_ms(warm)} ms warm; {_ms(s.get('first_frame_ms'))} ms with the cold start")
        t.add_row("cold start", cold)
    else:
        t.add_row("first frame", f"{_ms(s.get('first_frame_ms'))} ms")
    if s.get("prompt_switch_ms"):
        t.add_row("prompt switch", ", ".join(f"{v:.1f} ms" for v in s["prompt_switch_ms"]))
    if s.get("peak_mem_bytes"):
        t.add_row("peak GPU memory", f"{s['peak_mem_bytes'] / 2**30:.1f} GiB")
    kinds: dict[str, int] = {}
    for e in result.events:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    if kinds:
        t.add_row("events", ", ".join(count(n, _EVENT_NOUNS.get(k, k.replace("_", " ")))
                                      for k, n in sorted(kinds.items())))
    t.add_row("run directory", str(result.run_dir))
    parts = [t]
    if notes:
        parts.append("\n".join(f"[yellow]note:[/yellow] {n}" for n in notes))
    parts.append(f"next: [bold]lltrace budget {result.run_dir}[/bold]")
    return Panel(Group(*parts), title="lltrace run", expand=False)
