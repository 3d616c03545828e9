"""Headline numbers of a run: FPS, ms per frame (p50/p95/p99), the budget verdict (p99 of steady
frames, as the headless summary), first-frame latency warm and with its cold start (compile,
autotune, graph capture), prompt-switch latency. In a short panel (a small terminal) the same
numbers fold into five lines."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from lltrace.capture.frame_clock import ClockStats
from lltrace.ui.verdict import FRAME_BUDGET_MS, budget_verdict
from lltrace.words import count


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}"


def fmt_s(ms: float | None) -> str:
    """A cold start is seconds: 30,419 ms -> "30.4 s"; under a second it stays in ms."""
    if ms is None:
        return "–"
    return f"{ms / 1e3:,.1f} s" if ms >= 1000 else f"{fmt_ms(ms)} ms"


def cold_start_ms(s: ClockStats) -> float:
    """Compile + graph-capture time of the run (summary.json `cold_start`)."""
    cs = s.cold_start or {}
    return float(cs.get("compile_ms") or 0.0) + float(cs.get("graph_capture_ms") or 0.0)


class StatsPanel(Widget):
    DEFAULT_CSS = "StatsPanel { height: auto; }"

    stats: reactive[ClockStats | None] = reactive(None)
    state: reactive[str] = reactive("starting")
    budget_ms: reactive[float] = reactive(FRAME_BUDGET_MS)
    since_enter_ms: reactive[float | None] = reactive(None)   # last switch: Enter -> its frames
    ended: reactive[bool] = reactive(False)                   # no more frames will come

    def render(self) -> Table:
        grid = self._grid(compact=False)
        width, rows = self.content_size
        if rows > 0 and width > 0:
            console = self.app.console
            lines = console.render_lines(grid, console.options.update_width(width), pad=False)
            if len(lines) > rows:          # a short panel: the compact lines instead
                grid = self._grid(compact=True)
        return grid

    def _grid(self, compact: bool) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=6 if compact else None)
        grid.add_column(no_wrap=compact, overflow="ellipsis" if compact else "fold")
        busy = self.state.startswith(("paused", "stop"))
        # one line: the header's subtitle has the whole state
        grid.add_row("state", Text(self.state, style="yellow" if busy else "", no_wrap=True, overflow="ellipsis"))
        s = self.stats
        if s is None or not s.frames:
            grid.add_row("frames", "none" if self.ended else "none yet")
            return grid
        verdict = budget_verdict(s.p99_ms, self.budget_ms)
        if compact:
            self._compact(grid, s, verdict)
        else:
            self._full(grid, s, verdict)
        return grid

    def _full(self, grid: Table, s: ClockStats, verdict) -> None:
        grid.add_row("FPS", Text(f"{s.fps:,.1f}" if s.fps else "–", style="bold"))
        grid.add_row("ms/frame", f"mean {fmt_ms(s.mean_ms)}")
        grid.add_row("", f"p50 {fmt_ms(s.p50_ms)}  p95 {fmt_ms(s.p95_ms)}  p99 {fmt_ms(s.p99_ms)}")
        if verdict is not None:
            grid.add_row("budget", Text(verdict[0], style="green" if verdict[1] else "bold red"))
        bm = s.block_ms or {}
        if bm.get("p50") is not None:
            grid.add_row("ms/block", f"p50 {fmt_ms(bm['p50'])}  p99 {fmt_ms(bm.get('p99'))}")
        grid.add_row("first frame", self._first(s))
        cold = cold_start_ms(s)
        if cold:
            cs = s.cold_start
            parts = [f"compile {fmt_s(cs.get('compile_ms'))}"] if cs.get("compile_ms") else []
            if cs.get("graph_capture_ms"):
                parts.append(f"graph capture {fmt_s(cs['graph_capture_ms'])}")
            grid.add_row("cold start", f"{fmt_s(cold)}: {', '.join(parts)}")
        if s.switch_ms:
            text = f"{fmt_ms(s.switch_ms[-1])} ms"
            if len(s.switch_ms) > 1:
                text += f" (last of {len(s.switch_ms)}, max {fmt_ms(max(s.switch_ms))})"
            grid.add_row("prompt switch", text)
            if self.since_enter_ms is not None:
                grid.add_row("", Text(f"{fmt_ms(self.since_enter_ms)} ms from Enter to frames", style="dim"))
        else:
            grid.add_row("prompt switch", Text("none" if self.ended else "none yet", style="dim"))
        grid.add_row("frames", self._frames(s))
        grid.add_row("clock", Text("CUDA events" if s.clock == "cuda" else "host timer", style="dim"))

    def _compact(self, grid: Table, s: ClockStats, verdict) -> None:
        """Four lines under the state; the event log has each switch's latency too."""
        line = Text(f"{s.fps:,.1f}" if s.fps else "–", style="bold")
        if verdict is not None:
            line.append(f"  {verdict[0]}", style="green" if verdict[1] else "bold red")
        grid.add_row("FPS", line)
        grid.add_row("frame", f"p50 {fmt_ms(s.p50_ms)}  p99 {fmt_ms(s.p99_ms)} ms")
        first = self._first(s)
        if s.switch_ms and not cold_start_ms(s):
            first += f"; switch {fmt_ms(s.switch_ms[-1])} ms"
        grid.add_row("first", first)
        steady = f", {s.steady_frames} steady" if s.steady_frames != s.frames else ""
        grid.add_row("frames", f"{s.frames}{steady}, {count(s.blocks, 'block')}")

    def _first(self, s: ClockStats) -> str:
        cold = cold_start_ms(s)
        if cold and s.warm_first_frame_ms is not None:
            return f"{fmt_ms(s.warm_first_frame_ms)} ms warm (cold {fmt_s(s.first_frame_ms)})"
        return f"{fmt_ms(s.first_frame_ms)} ms"

    def _frames(self, s: ClockStats) -> str:
        steady = f" ({s.steady_frames} steady)" if s.steady_frames != s.frames else ""
        return f"{s.frames}{steady} in {count(s.blocks, 'block')}"
