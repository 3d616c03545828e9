"""The headless `lltrace run` report: a rich summary of a finished (or interrupted) run."""
from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

BUDGET_MS = 40.0  # 25 FPS per video frame: the streaming target on one H100


def _ms(v) -> str:
    return "—" if v is None else f"{v:.2f}"


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
    t.add_row("frames", f"{s.get('frames', 0)} video frames in {s.get('blocks', 0)} blocks "
                        f"(clock: {s.get('clock')})")
    left = f"; {s['profiled_frames']} frames of profiled blocks left out" if s.get("profiled_frames") else ""
    t.add_row("steady", f"{s.get('steady_frames', 0)} frames{left}")
    # one verdict everywhere (the TUI's too): p99 of the steady frames against the budget
    p99 = mpf.get("p99")
    within = "" if p99 is None else (" [green]within[/green]" if p99 <= BUDGET_MS else " [red]over[/red]")
    t.add_row("ms / video frame", f"mean {_ms(mpf.get('mean'))}  p50 {_ms(mpf.get('p50'))}  "
                                  f"p95 {_ms(mpf.get('p95'))}  p99 {_ms(p99)}  — p99{within} the "
                                  f"{BUDGET_MS:.0f} ms budget")
    t.add_row("FPS", f"{s.get('fps') or 0:.1f}")
    t.add_row("first frame", f"{_ms(s.get('first_frame_ms'))} ms")
    if s.get("prompt_switch_ms"):
        t.add_row("prompt switch", ", ".join(f"{v:.1f} ms" for v in s["prompt_switch_ms"]))
    if s.get("peak_mem_bytes"):
        t.add_row("peak GPU memory", f"{s['peak_mem_bytes'] / 2**30:.1f} GiB")
    kinds = {}
    for e in result.events:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    if kinds:
        t.add_row("events", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    t.add_row("run directory", str(result.run_dir))
    parts = [t]
    if notes:
        parts.append("\n".join(f"[yellow]note:[/yellow] {n}" for n in notes))
    parts.append(f"next: [bold]lltrace budget {result.run_dir}[/bold]")
    return Panel(Group(*parts), title="lltrace run", expand=False)
