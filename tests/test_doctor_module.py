"""`lltrace doctor` on a user's own module: each graph hazard is named with its source line."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lltrace.doctor.report import INCOMPATIBLE, NOT_RUN
from lltrace.doctor.graph import diagnose_module, load_module_factory
from lltrace.doctor.stage_state import StateSnapshot
from lltrace.errors import LltraceError
from helpers.doctor_cases import IntPositionCache, ItemScale, TensorPositionCache, source_path, where

def check(module, calls, **kw):
    kw.setdefault("compile_check", False)
    return diagnose_module(module, calls, **kw).stages[0]


def blocking(stage, kind):
    return [f for f in stage.findings if f.kind == kind and f.blocking]


def test_item_call_is_a_host_sync_with_its_line():
    st = check(ItemScale(), [torch.randn(2, 4), torch.randn(2, 4)])
    syncs = blocking(st, "host_sync")
    assert syncs, st.findings
    assert syncs[0].where == where(ItemScale.forward, '.item()')
    assert ".item()" in syncs[0].code and syncs[0].module == "ItemScale"
    assert st.verdict == INCOMPATIBLE
    assert st.capture == "capture needs CUDA"     # no capture was faked on a CPU


def test_changing_python_int_and_growing_shape_are_named():
    m = IntPositionCache()
    st = check(m, [torch.randn(1, 4, 4), torch.randn(1, 4, 4)])
    scalars = blocking(st, "python_scalar")
    assert scalars and "IntPositionCache.end changes between calls (4 -> 8)" in scalars[0].message
    assert scalars[0].where == where(IntPositionCache.forward, 'self.buf[:, self.end:self.end + n] = x')
    shapes = blocking(st, "shape")
    assert shapes and shapes[0].where == where(IntPositionCache.forward, 'return self.buf')
    offsets = blocking(st, "address")
    assert offsets and "another offset of the same buffer" in offsets[0].message
    # The doctor's extra runs left the module as the three real calls did (warm-up, A, B).
    assert m.end == 12


def test_capturable_module_has_no_blocking_finding_and_says_capture_needs_cuda():
    m = TensorPositionCache()
    st = check(m, [torch.randn(1, 4, 4), torch.randn(1, 4, 4)], capture=True)
    assert [f for f in st.findings if f.blocking] == []
    assert st.verdict == NOT_RUN and st.capture == "capture needs CUDA"
    assert st.verdict_text() == "NOT RUN (capture needs CUDA)"
    assert int(m.end) == 12      # warm-up, A, B: the extra runs were undone


class RebindState(nn.Module):
    def __init__(self):
        super().__init__()
        self.h = torch.zeros(3)

    def forward(self, x):
        y = x + self.h
        self.h = y * 0.5            # a new tensor each call
        return y


def test_state_rebound_to_a_new_tensor_is_an_address_change():
    st = check(RebindState(), [torch.randn(3), torch.randn(3)])
    addr = blocking(st, "address")
    assert addr and "RebindState.h" in addr[0].message
    assert addr[0].where == where(RebindState.forward, 'y = x + self.h')


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 2:
            return x.sin()
        return x.cos() * 2


def test_python_branch_on_changing_value_is_control_flow():
    st = check(Branchy(), [torch.randn(3), torch.randn(3)])
    cf = blocking(st, "control_flow")
    assert cf and "different ops" in cf[0].message and "aten.sin" in cf[0].message


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return x + torch.randn(x.shape, generator=self.gen)


def test_rng_with_own_generator_is_reported_as_a_caveat():
    st = check(Noisy(), [torch.randn(3), torch.randn(3)])
    rng = [f for f in st.findings if f.kind == "rng"]
    assert rng and not rng[0].blocking and "register_generator_state" in rng[0].message
    assert rng[0].where == where(Noisy.forward, 'torch.randn')
    assert st.verdict == NOT_RUN


def masked_mean(x):
    return x[x > 0].mean()


def test_boolean_mask_indexing_is_a_host_sync_and_int_indexing_is_not():
    st = check(masked_mean, [torch.randn(8), torch.randn(8)])
    assert blocking(st, "host_sync")
    st = check(lambda x: x[torch.tensor([0, 2])] * 2, [torch.randn(8), torch.randn(8)])
    assert not blocking(st, "host_sync")


def test_python_argument_that_changes_is_named():
    def shift(x, offset):
        return x + offset

    st = check(shift, [(torch.randn(3), 4), (torch.randn(3), 8)])
    args = [f for f in blocking(st, "python_scalar") if f.message.startswith("argument offset")]
    assert args and "(4 -> 8)" in args[0].message


def test_input_whose_shape_changes_is_named_and_the_second_call_still_runs():
    st = check(lambda x: x * 2, [torch.randn(3), torch.randn(5)])
    shape = [f for f in blocking(st, "shape") if f.message.startswith("argument x")]
    assert shape and "changes from float32[3] to float32[5]" in shape[0].message


def test_compile_health_reports_the_graph_break_line_and_the_recompile():
    report = diagnose_module(ItemScale(), [torch.randn(2, 4), torch.randn(2, 4)], compile_check=True)
    c = report.stages[0].compile
    assert c.graphs == 2 and c.graph_breaks == 1
    assert c.breaks[0]["where"] == where(ItemScale.forward, '.item()')
    assert "item" in c.breaks[0]["reason"].lower()
    # The .item() value is specialized in the resumed graph: a new value recompiles.
    assert c.recompile_risk and c.recompiles_next_call[0]["where"].startswith(source_path(ItemScale.forward))


def test_snapshot_restores_values_in_place_and_python_state():
    m = IntPositionCache()
    m(torch.ones(1, 4, 4))
    ptr = m.buf.data_ptr()
    snap = StateSnapshot([m])
    m(torch.full((1, 4, 4), 7.0))
    m.extra = [1]
    snap.restore()
    assert m.end == 4 and m.buf.data_ptr() == ptr
    assert float(m.buf[:, 4:8].abs().sum()) == 0.0 and float(m.buf[:, :4].sum()) == 16.0


def test_bad_factories_are_one_line_errors(tmp_path):
    # MODULE:FACTORY itself is the command line's to split (tests/test_params.py)
    with pytest.raises(LltraceError, match="function in it"):
        load_module_factory("json", "not a name")
    with pytest.raises(LltraceError, match="cannot import"):
        load_module_factory("no_such_pkg_xyz.mod", "make")
    with pytest.raises(LltraceError, match="no such file"):
        load_module_factory(str(tmp_path / "missing.py"), "make")
    f = tmp_path / "case.py"
    f.write_text("import torch\n"
                 "def wrong():\n    return torch.nn.Linear(2, 2)\n"
                 "def good():\n    return torch.nn.Linear(2, 2), [torch.randn(1, 2), torch.randn(1, 2)]\n")
    with pytest.raises(LltraceError, match="no callable 'missing'"):
        load_module_factory(str(f), "missing")
    with pytest.raises(LltraceError, match=r"must return \(module"):
        load_module_factory(str(f), "wrong")
    module, calls = load_module_factory(str(f), "good")
    assert isinstance(module, nn.Linear) and len(calls) == 2
    with pytest.raises(LltraceError, match="two consecutive calls"):
        diagnose_module(module, [calls[0]])


def test_slow_inductor_settings_are_named_in_the_notes(monkeypatch):
    """dynamo's checks cannot see inductor settings that make every first compile take minutes
    (torchao's quantize_ turns coordinate-descent tuning on process-wide by default)."""
    from torch._inductor import config

    calls = [torch.randn(1, 4, 4), torch.randn(1, 4, 4)]
    monkeypatch.setattr(config, "coordinate_descent_tuning", False)
    assert not any("coordinate_descent" in n for n in diagnose_module(TensorPositionCache(), calls).notes)
    monkeypatch.setattr(config, "coordinate_descent_tuning", True)
    notes = diagnose_module(TensorPositionCache(), calls).notes
    assert any("coordinate_descent_tuning is on" in n and "set_inductor_config=False" in n for n in notes)
    # Without compile checks the doctor says nothing about compiling.
    assert not any("coordinate_descent" in n
                   for n in diagnose_module(TensorPositionCache(), calls, compile_check=False).notes)
