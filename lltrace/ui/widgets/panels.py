"""Small status panels: CUDA graphs and compile health, device memory, the preset's knobs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from lltrace.words import count


def _grid() -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    return grid


def _onoff(v: Any) -> Text:
    return Text("on", style="green") if v else Text("off", style="dim")


@dataclass(frozen=True)
class GraphStatus:
    """What is known about CUDA graphs and torch.compile in this run."""
    knobs: dict[str, Any] = field(default_factory=dict)          # preset knobs
    optimizations: dict[str, Any] = field(default_factory=dict)  # pipeline.describe()["optimizations"]
    replays: int | None = None          # pipeline.graphed_forward counters, when it has one
    eager_calls: int | None = None
    graphs: int | None = None
    skips: tuple[str, ...] = ()         # cudagraph_skip reasons
    recompiles: int = 0
    graph_breaks: int = 0
    verdict: str | None = None          # the pre-flight doctor's line (doctor_report.panel_verdict);
                                        # None: no doctor ran (--no-doctor, a recorded run)
    verdict_where: str | None = None    # file:line of the finding the verdict names
    could_save: str | None = None       # from a profiled window: graphs_could_save(budget)


def graphs_could_save(idle: dict[str, Any] | None) -> str | None:
    """The upper bound of what CUDA graphs (or fusion) could win, from a window's idle analysis:
    the launch-bound gaps of its worst forward (lltrace.trace.idle), e.g. "<= 19.98 ms per
    block/step[3]"; None when the window has none."""
    worst = ((idle or {}).get("launch_bound_per_forward") or [None])[0]
    if not worst or worst.get("ms", 0) <= 0:
        return None
    return f"<= {worst['ms']:,.2f} ms per {worst['forward']}"


DOCTOR_CHECKING = "checking…"
DOCTOR_FAILED = "doctor failed"


def _verdict(text: str) -> Text:
    if text.startswith("COMPATIBLE"):
        return Text(text, style="bold green")
    if text.startswith(("INCOMPATIBLE", DOCTOR_FAILED)):
        return Text(text, style="bold red")
    return Text(text, style="dim")      # NOT RUN (no capture on this machine), checking…


class GraphsPanel(Widget):
    DEFAULT_CSS = "GraphsPanel { height: auto; }"

    status: reactive[GraphStatus] = reactive(GraphStatus, layout=True)

    def render(self) -> Table:
        s = self.status
        grid = _grid()
        grid.add_row("cuda_graphs", _onoff(s.knobs.get("cuda_graphs")))
        if s.optimizations.get("cuda_graphs"):
            grid.add_row("", Text(str(s.optimizations["cuda_graphs"]), style="dim"))
        if s.replays is not None:
            grid.add_row("replays", f"{s.replays:,}  eager {s.eager_calls or 0:,}  graphs {s.graphs or 0}")
        grid.add_row("kv_cache", str(s.knobs.get("kv_cache", "–")))
        compiled = s.optimizations.get("compiled_blocks")
        grid.add_row("compile", Text(count(compiled, "block"), style="green") if compiled else _onoff(s.knobs.get("compile")))
        if s.knobs.get("compile") or s.recompiles or s.graph_breaks:
            style = "bold yellow" if s.recompiles or s.graph_breaks else "green"
            grid.add_row("recompiles", Text(f"{s.recompiles}  graph breaks {s.graph_breaks}", style=style))
        if s.skips:
            grid.add_row("skipped", Text(f"{len(s.skips)}x: {s.skips[-1]}", style="red"))
        if s.skips or s.graph_breaks or s.recompiles:
            # The full doctor (compile checks, every stage) drives the pipeline itself: not while a
            # run uses it. The "doctor" row below is its CUDA-graph pre-flight, run before the run.
            grid.add_row("why", Text("lltrace doctor names the line and the fix", style="dim"))
        if s.could_save:
            # measured in the profiled window: its launch-bound gaps (`lltrace budget`'s idle)
            grid.add_row("graphs save", Text(s.could_save, style="yellow"))
        if s.verdict is not None:
            grid.add_row("doctor", _verdict(s.verdict))
            if s.verdict_where:
                # fold: a path has no space to wrap at, and cut short it would not name the line
                grid.add_row("", Text(s.verdict_where, style="cyan", overflow="fold"))
        return grid


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)


@dataclass(frozen=True)
class MemoryStatus:
    device: str = "cpu"                 # "cuda" | "cpu"
    name: str = ""
    allocated: int | None = None
    peak: int | None = None
    reserved: int | None = None
    total: int | None = None
    host_rss_peak: int | None = None


def read_memory(device: Any, name: str = "", total: int | None = None) -> MemoryStatus:
    """torch.cuda allocator counters (no device sync) on CUDA; the process's peak RSS otherwise."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return MemoryStatus("cuda", name, torch.cuda.memory_allocated(dev), torch.cuda.max_memory_allocated(dev),
                            torch.cuda.memory_reserved(dev), total, rss)
    return MemoryStatus("cpu", name, host_rss_peak=rss)


class MemoryPanel(Widget):
    DEFAULT_CSS = "MemoryPanel { height: auto; }"

    status: reactive[MemoryStatus | None] = reactive(None, layout=True)

    def render(self) -> Table:
        s = self.status
        grid = _grid()
        if s is None:
            grid.add_row("memory", Text("not known yet", style="dim"))
            return grid
        if s.device == "cuda":
            grid.add_row("GPU", s.name or "cuda")
            if s.allocated is not None:       # live only: a recorded run keeps the peak
                grid.add_row("allocated", _bytes(s.allocated))
            peak = _bytes(s.peak)
            if s.total and s.peak is not None:
                peak += f" ({s.peak / s.total:.0%} of {_bytes(s.total)})"
            grid.add_row("peak", peak)
            if s.reserved is not None:
                grid.add_row("reserved", _bytes(s.reserved))
        else:
            grid.add_row("device", Text("CPU run (no GPU memory)", style="yellow"))
            if s.name:
                grid.add_row("", Text(s.name, style="dim"))
        if s.host_rss_peak is not None:
            grid.add_row("host peak", _bytes(s.host_rss_peak))
        return grid


class KnobsPanel(Widget):
    DEFAULT_CSS = "KnobsPanel { height: auto; }"

    preset: reactive[str] = reactive("", layout=True)
    knobs: reactive[dict] = reactive(dict, layout=True)
    notes: reactive[tuple[str, ...]] = reactive(tuple, layout=True)

    def render(self) -> Group:
        # Two knob columns side by side: 14 knobs in 7 lines.
        grid = Table.grid(padding=(0, 1))
        for style in ("bold", "", "bold", ""):
            grid.add_column(style=style, no_wrap=True)
        if self.preset:
            grid.add_row("preset", Text(self.preset, style="bold cyan"))
        cells = []
        for k, v in self.knobs.items():
            if k in ("name", "description"):
                continue
            if isinstance(v, bool):
                cells.append((k, _onoff(v)))
            elif isinstance(v, (list, tuple)):
                cells.append((k, ", ".join(str(x) for x in v)))
            else:
                cells.append((k, str(v)))
        half = (len(cells) + 1) // 2
        for left, right in zip(cells[:half], cells[half:] + [("", "")]):
            grid.add_row(*left, *right)
        if not cells and not self.preset:
            grid.add_row("knobs", Text("not known (a trace without a run directory)", style="dim"))
        return Group(grid, *(Text(note, style="yellow") for note in self.notes))


class FoldedPanels(Widget):
    """The CUDA-graph, memory and preset panels folded into one line, for terminals too short to
    give them their rows (the app shows this instead of them below 45 rows: the budget tree and
    the event log get the space). Fed the same statuses as the panels."""
    DEFAULT_CSS = "FoldedPanels { height: 1; }"

    graphs: reactive[GraphStatus] = reactive(GraphStatus)
    memory: reactive[MemoryStatus | None] = reactive(None)
    preset: reactive[str] = reactive("")

    def render(self) -> Text:
        g, m = self.graphs, self.memory
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.preset:
            line.append(self.preset, style="bold cyan")
            line.append(" │ ", style="dim")
        line.append("graphs ")
        line.append_text(_onoff(g.knobs.get("cuda_graphs")))
        if g.replays is not None:
            line.append(f" {g.replays:,} replays")
        if g.knobs.get("compile") or g.recompiles or g.graph_breaks:
            style = "bold yellow" if g.recompiles or g.graph_breaks else ""
            line.append(f" · {count(g.recompiles, 'recompile')}, {count(g.graph_breaks, 'graph break')}", style=style)
        if g.skips:
            line.append(f" · {len(g.skips)} skipped", style="red")
        if g.verdict is not None:
            line.append(" · doctor ")
            line.append_text(_verdict(g.verdict.split(":")[0]))
        line.append(" │ ", style="dim")
        if m is None:
            line.append("memory not known yet", style="dim")
        elif m.device == "cuda":
            line.append(f"GPU peak {_bytes(m.peak)}")
        else:
            line.append("CPU run", style="yellow")
            if m.host_rss_peak is not None:
                line.append(f", host peak {_bytes(m.host_rss_peak)}")
        return line
