"""Per-video-frame latency over the last frames, with the frame budget (40 ms = 25 FPS) as a
horizontal line. First-block and after-switch frames are drawn as separate points: they include
the text encode / recache and would otherwise hide the steady state."""
from __future__ import annotations

from textual.reactive import reactive
from textual_plotext import PlotextPlot

Sample = tuple[int, float, str]   # (frame index, latency_ms, kind: first | steady | switch)


SHORT_ROWS = 12     # below this height: no title, axis labels or legend; the points keep the rows


class LatencyPlot(PlotextPlot):
    DEFAULT_CSS = "LatencyPlot { min-height: 6; }"

    samples: reactive[tuple[Sample, ...]] = reactive(tuple)
    budget_ms: reactive[float] = reactive(40.0)

    def __init__(self, *, window: int = 600, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window = window

    def on_mount(self) -> None:
        super().on_mount()
        self.replot()

    def watch_samples(self) -> None:
        self.replot()

    def watch_budget_ms(self) -> None:
        self.replot()

    def on_resize(self) -> None:
        self.replot()

    @property
    def short(self) -> bool:
        return 0 < self.size.height < SHORT_ROWS

    def replot(self) -> None:
        plt = self.plt
        plt.clear_figure()
        data = self.samples[-self.window:]
        short = self.short
        if not short:
            plt.xlabel("video frame")
            plt.ylabel("ms")
        steady = [(f, ms) for f, ms, kind in data if kind == "steady"]
        other = [(f, ms) for f, ms, kind in data if kind != "steady"]
        # The y range follows the steady state; taller first/switch frames are clipped to the top.
        top_ref = max((ms for _, ms in steady or [(0, ms) for _, ms, _ in data]), default=0.0)
        upper = max(1.5 * self.budget_ms, 1.15 * top_ref)
        clipped = sum(1 for _, ms in other if ms > upper)
        title = f"ms per video frame (last {len(data)}) | budget {self.budget_ms:g} ms"
        if clipped:
            title += f" | {clipped} first/switch frames above the top"
        if short:
            plt.frame(False)    # the panel's border frames it; the title is the panel's
        else:
            plt.title(title)
        if steady:
            plt.plot([f for f, _ in steady], [ms for _, ms in steady], marker="braille", color="cyan",
                     label=None if short else "steady")
        if other:
            plt.scatter([f for f, _ in other], [min(ms, upper) for _, ms in other], marker="dot",
                        color="orange", label=None if short else "first / after switch")
        if data:
            lo, hi = data[0][0], max(data[-1][0], data[0][0] + 1)
            plt.xlim(lo, hi)
            plt.xticks(sorted({round(lo + (hi - lo) * i / 4) for i in range(5)}))   # frame numbers: integers
        plt.hline(self.budget_ms, color="red")
        plt.ylim(0, upper)
        # Label the budget itself: plotext rounds lines and labels to rows alike, so they share one.
        b = self.budget_ms
        ticks = [0, b] + ([b / 2] if upper <= 3 * b else []) + ([round(upper)] if upper > 1.3 * b else [])
        plt.yticks(sorted(ticks))
        self.refresh()
