"""The one frame-budget verdict, for the live TUI, `lltrace view` and the headless `lltrace run`
summary: the p99 of the steady frames' latency (summary.json `ms_per_frame.p99`) against the
frame budget. A rule of its own module so that no view can test a different percentile."""
from __future__ import annotations

FRAME_BUDGET_MS = 40.0      # 25 FPS per video frame (docs/DESIGN.md §1)


def budget_verdict(p99_ms: float | None, budget_ms: float = FRAME_BUDGET_MS) -> tuple[str, bool] | None:
    """("p99 within 40 ms", True) / ("p99 over 40 ms", False); None without frames."""
    if p99_ms is None:
        return None
    ok = p99_ms <= budget_ms
    return f"p99 {'within' if ok else 'over'} {budget_ms:g} ms", ok
