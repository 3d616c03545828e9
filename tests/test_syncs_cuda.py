"""Sync sites on the GPU (lltrace.capture.syncs' sync-debug-mode path): run on the device."""
from pathlib import Path

import pytest
import torch

from lltrace.capture.syncs import SyncSites
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _work(x):
    for _ in range(3):
        x = x * 1.0001
        if x.sum().item() > 1e30:    # the sync: one per iteration
            break
    return x


@cuda
def test_each_cuda_sync_is_named_by_its_line(tmp_path):
    x = torch.randn(1 << 20, device="cuda")
    _work(x)
    torch.cuda.synchronize()
    syncs = SyncSites(cuda=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        syncs.start()
        _work(x)
        syncs.stop()
    assert torch.cuda.get_sync_debug_mode() == 0      # restored
    path = tmp_path / "t.json"
    prof.export_chrome_trace(str(path))
    b = build_budget(load_trace(path))
    line = _work.__code__.co_firstlineno + 3
    sites = [s for s in b.idle["sync_sites"] if s["line"] and s["line"].endswith(f"{Path(__file__).name}:{line} _work")]
    assert sum(s["count"] for s in sites) == 3, b.idle["sync_sites"]


def test_on_cpu_the_window_uses_the_function_mode_and_restores_it(monkeypatch):
    """No CUDA context: the would-sync marker mode, entered and left with the window."""
    from torch.overrides import _get_current_function_mode_stack

    from lltrace.capture import syncs
    monkeypatch.setattr(syncs, "_compiled_anything", lambda: False)   # see the test below
    before = len(_get_current_function_mode_stack())
    s = SyncSites(cuda=False)
    s.start()
    assert len(_get_current_function_mode_stack()) == before + 1
    torch.ones(2).sum().item()
    s.stop()
    s.stop()                                           # idempotent
    assert len(_get_current_function_mode_stack()) == before


def test_on_cpu_no_function_mode_once_anything_is_compiled():
    """Entering a function mode would recompile every compiled graph (dynamo guards the mode
    stack): after a compile, the CPU window leaves no markers rather than recompile."""
    from torch.overrides import _get_current_function_mode_stack
    f = torch.compile(lambda x: x * 2, backend="eager")
    f(torch.ones(2))
    s = SyncSites(cuda=False)
    before = len(_get_current_function_mode_stack())
    s.start()
    assert len(_get_current_function_mode_stack()) == before
    s.stop()


def test_a_sync_lltrace_makes_itself_is_named_as_lltraces(monkeypatch, tmp_path):
    """`lltrace run --script` reads each root call's timestep (a sync on a GPU tensor): its
    marker must name lltrace's line, not the user's call site above it."""
    from lltrace import names
    from lltrace.capture import script, syncs
    monkeypatch.setattr(syncs, "_compiled_anything", lambda: False)
    s = SyncSites(cuda=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        s.start()
        script._timestep_value(torch.tensor([3.0]))
        torch.ones(3).sum().item()
        s.stop()
    marks = [e.name for e in prof.events() if names.parse_sync_site(e.name)]
    wheres = [names.parse_sync_site(m)[0] for m in marks]
    assert any(w.startswith("lltrace/capture/script.py:") for w in wheres), wheres
    assert any(w.startswith(f"tests/{Path(__file__).name}:") for w in wheres), wheres
