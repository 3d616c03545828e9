"""`lltrace doctor`'s CUDA path: real captures, replays at the next position, failed captures
that leave the process usable. Runs only where CUDA is (the CPU behaviour is in the other
test_doctor_* files)."""
from __future__ import annotations

import pytest
import torch

from lltrace.doctor.report import COMPATIBLE, INCOMPATIBLE
from lltrace.doctor.graph import diagnose_module
from lltrace.doctor.pipeline import diagnose_pipeline as diagnose
from lltrace.doctor.pipeline import build_doctor_pipeline
from helpers.doctor_cases import IntPositionCache, ItemScale, TensorPositionCache, where

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs CUDA")


def stage_of(module, calls):
    return diagnose_module(module.cuda(), [c.cuda() for c in calls], compile_check=False).stages[0]


def test_capturable_module_is_compatible():
    st = stage_of(TensorPositionCache(), [torch.randn(1, 4, 4), torch.randn(1, 4, 4)])
    assert st.verdict == COMPATIBLE, [f.line() for f in st.findings]
    assert st.capture.startswith("captured; replays match eager")


def test_python_int_position_replays_the_captured_position():
    st = stage_of(IntPositionCache(), [torch.randn(1, 4, 4), torch.randn(1, 4, 4)])
    assert st.verdict == INCOMPATIBLE
    replay = [f for f in st.findings if f.kind == "replay"]
    assert replay and "the graph captured one position" in replay[0].message


def test_failed_capture_names_the_line_and_leaves_cuda_usable():
    st = stage_of(ItemScale(), [torch.randn(2, 4), torch.randn(2, 4)])
    cap = [f for f in st.findings if f.kind == "capture"]
    assert cap and cap[0].where == where(ItemScale.forward, '.item()')
    assert st.capture.startswith("capture failed")
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.ones(3, device="cuda").sum().item() == 3.0


def test_pipeline_static_cache_captures_and_dynamic_cache_does_not():
    ultra, _ = build_doctor_pipeline("ultra", device="cuda", model="tiny")
    report = diagnose(ultra, ["denoise", "kv_update"], compile_check=False)
    for st in report.stages:
        assert st.verdict == COMPATIBLE, (st.stage, st.capture, [f.line() for f in st.findings])
    baseline, _ = build_doctor_pipeline("baseline", device="cuda", model="tiny")
    st = diagnose(baseline, ["denoise"], compile_check=False).stage("denoise")
    assert st.verdict == INCOMPATIBLE
    cap = [f for f in st.findings if f.kind == "capture"]
    assert cap and cap[0].where.startswith("lltrace/pipeline/kv_cache.py:")
    assert torch.ones(3, device="cuda").sum().item() == 3.0


def test_eager_baseline_denoise_states_what_graphs_would_save():
    """The bound comes from one profiled eager call: present, > 0 for eager baseline (its
    kernels wait on the host between launches), and within the call's GPU span and wall time."""
    baseline, _ = build_doctor_pipeline("baseline", device="cuda", model="tiny")
    report = diagnose(baseline, ["denoise", "kv_update", "decode"], compile_check=False, graph_savings=True)
    for st in report.stages:
        g = st.graph_savings
        assert g is not None and g.ms is not None, (st.stage, g)
        assert 0 <= g.ms <= g.gpu_span_ms <= g.call_ms, (st.stage, g)
        assert 0 <= g.share <= 1
        assert g.text().startswith("<= ") and "of the call's GPU time" in g.text()
    den = report.stage("denoise").graph_savings
    assert den.ms > 0, den
    dec = report.stage("decode")   # the Wan decoder's decode_block captures (vae.py's stream order)
    assert dec.verdict == COMPATIBLE, [f.line() for f in dec.findings]
    assert torch.ones(3, device="cuda").sum().item() == 3.0


def test_doctor_json_has_the_bound_and_progress_on_stderr(capsys):
    import json

    from lltrace.commands.cli import main

    code = main(["doctor", "--preset", "baseline", "--model", "tiny", "--stage", "denoise", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    (st,) = json.loads(out)["stages"]
    assert st["graph_savings"]["ms"] > 0 and st["graph_savings"]["note"] == ""
    assert "denoise: profiling one eager call (what graphs would save)" in err
    assert "denoise: CUDA-graph capture and replay (position A)" in err
