"""What CUDA graphs would save, in doctor's verdicts (issue #16): the bound is the budget's
launch-bound idle time of a profiled call, read by lltrace's own trace reader (no second gap
computation). The trace here is a plain torch.profiler trace of baseline on an H100 (no
lltrace regions), the kind the doctor records for one call."""
from __future__ import annotations

from pathlib import Path

import pytest

from lltrace.doctor.report import GraphSavings, StageReport
from lltrace.doctor.savings import from_trace
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace
from lltrace.ui.doctor_report import savings_text

TRACE = Path(__file__).parent / "data" / "h100_plain_profiler_baseline.json.gz"


def test_the_bound_is_the_budgets_launch_bound_idle_time():
    g = from_trace(TRACE, call_ms=400.0)
    budget = build_budget(load_trace(TRACE))
    assert g.ms == pytest.approx(budget.idle["by_cause"]["launch"]) and g.ms > 0
    assert g.idle_ms == pytest.approx(budget.idle["total_ms"]) and g.ms <= g.idle_ms
    assert g.by_cause == pytest.approx(budget.idle["by_cause"])
    assert g.gpu_span_ms == pytest.approx(sum(d["span_ms"] for d in budget.devices))
    assert 0 < g.share < 1 and g.share == pytest.approx(g.ms / g.gpu_span_ms)
    assert g.call_ms == 400.0


def test_the_verdict_line_and_its_json():
    g = from_trace(TRACE)
    text = savings_text(StageReport("denoise", graph_savings=g)).plain
    assert text == (f"CUDA graphs would save <= {g.ms:,.2f} ms per call (launch-bound gaps: "
                    f"{g.share:.0%} of the call's GPU time)")
    d = g.to_dict()
    assert d["text"] == g.text() and d["note"] == ""
    assert d["ms"] == pytest.approx(g.ms, abs=1e-4) and set(d["by_cause"]) == set(g.by_cause)
    assert StageReport("x", graph_savings=g).to_dict()["graph_savings"] == d
    assert StageReport("text").to_dict()["graph_savings"] is None


def test_why_not_measured_is_the_line():
    st = StageReport("denoise", graph_savings=GraphSavings(note="not measured: profiler already running"))
    assert savings_text(st).plain == "CUDA graphs would save: not measured: profiler already running"
