"""Headline numbers of a run: FPS, ms per frame (p50/p95/p99), first-frame and prompt-switch
latency, against the frame budget."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from lltrace.capture.frame_clock import ClockStats


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}"


class StatsPanel(Widget):
    DEFAULT_CSS = "StatsPanel { height: auto; }"

    stats: reactive[ClockStats | None] = reactive(None)
    state: reactive[str] = reactive("starting")
    budget_ms: reactive[float] = reactive(40.0)
    since_enter_ms: reactive[float | None] = reactive(None)   # last switch: Enter -> its frames

    def render(self) -> Table:
        s = self.stats
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row("state", Text(self.state, style="yellow" if self.state.startswith(("paused", "stop")) else ""))
        if s is None or not s.frames:
            grid.add_row("frames", "none yet")
            return grid
        grid.add_row("FPS", Text(f"{s.fps:,.1f}" if s.fps else "–", style="bold"))
        grid.add_row("ms/frame", f"mean {fmt_ms(s.mean_ms)}")
        grid.add_row("", f"p50 {fmt_ms(s.p50_ms)}  p95 {fmt_ms(s.p95_ms)}  p99 {fmt_ms(s.p99_ms)}")
        if s.p99_ms is not None:
            ok = s.p99_ms <= self.budget_ms
            grid.add_row("budget", Text(f"p99 {'within' if ok else 'over'} {self.budget_ms:g} ms",
                                        style="green" if ok else "bold red"))
        bm = s.block_ms or {}
        if bm.get("p50") is not None:
            grid.add_row("ms/block", f"p50 {fmt_ms(bm['p50'])}  p99 {fmt_ms(bm.get('p99'))}")
        grid.add_row("first frame", f"{fmt_ms(s.first_frame_ms)} ms")
        if s.switch_ms:
            text = f"{fmt_ms(s.switch_ms[-1])} ms"
            if len(s.switch_ms) > 1:
                text += f" (last of {len(s.switch_ms)}, max {fmt_ms(max(s.switch_ms))})"
            grid.add_row("prompt switch", text)
            if self.since_enter_ms is not None:
                grid.add_row("", Text(f"{fmt_ms(self.since_enter_ms)} ms from Enter to frames", style="dim"))
        else:
            grid.add_row("prompt switch", Text("none yet", style="dim"))
        steady = f" ({s.steady_frames} steady)" if s.steady_frames != s.frames else ""
        grid.add_row("frames", f"{s.frames}{steady} in {s.blocks} blocks")
        grid.add_row("clock", Text("CUDA events" if s.clock == "cuda" else "host timer", style="dim"))
        return grid
