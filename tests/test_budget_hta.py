"""`lltrace budget --hta`: HolisticTraceAnalysis behind a lazy import."""
from __future__ import annotations

import sys

import pytest

from lltrace.analysis import hta
from lltrace.errors import LltraceError
from lltrace.trace.budget import load_budget
from helpers.synthetic_trace import lltrace_run, write


def test_missing_hta_raises_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "hta", None)
    monkeypatch.setitem(sys.modules, "hta.trace_analysis", None)
    with pytest.raises(LltraceError) as err:
        hta.analyze("whatever.json")
    assert str(err.value) == "HTA is not installed: pip install 'lltrace[hta]'"


def test_hta_analyses_agree_with_the_budget(tmp_path):
    pytest.importorskip("hta.trace_analysis")
    path = write(tmp_path, lltrace_run(blocks=1, steps=1, layers=2).to_json())
    result = hta.analyze(path)
    budget = load_budget(path)
    temporal = result["temporal_breakdown"][0]
    assert temporal["idle_time_ms"] == pytest.approx(budget.idle_gpu_ms, rel=1e-3)
    assert result["kernel_launch"]["launches"] > 0
    assert {r["category"] for r in result["idle_time"]} >= {"kernel_wait"}
