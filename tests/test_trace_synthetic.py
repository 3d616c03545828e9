"""Tests of the correlation logic on SYNTHETIC Kineto-shaped GPU traces (tests/helpers/synthetic_trace.py)."""
from __future__ import annotations

import numpy as np

from lltrace.trace.attribution import (BY_CORRELATION, BY_EXTERNAL_ID, BY_FLOW, BY_GPU_ANNOTATION, NONE, attribute,
                                       build_forest)
from lltrace.trace.events import KERNEL, USER_ANNOTATION
from lltrace.trace.loader import load_trace
from helpers.synthetic_trace import lltrace_run, write

def test_every_kernel_is_linked_the_way_it_was_launched(tmp_path):
    syn = lltrace_run(blocks=1, steps=1, layers=1)
    trace = load_trace(write(tmp_path, syn.to_json()))
    forest = build_forest(trace, np.nonzero(trace.x["cat"] == USER_ANNOTATION)[0])
    att = attribute(trace, forest)
    names = [trace.names[n] for n in trace.x["name"][att.gpu]]
    how = dict(zip(names, att.how.tolist()))
    assert how["void at::native::vectorized_elementwise_kernel<4, MulFunctor>"] == BY_FLOW
    assert how["void at::native::vectorized_elementwise_kernel<4, SubFunctor>"] == BY_EXTERNAL_ID
    assert how["void at::native::vectorized_elementwise_kernel<4, AddFunctor>"] == BY_GPU_ANNOTATION
    assert how["nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT"] == BY_CORRELATION
    assert NONE not in att.how.tolist()
    # the three replayed kernels are marked as graph kernels and land in ll/decode
    graph = [nm for nm, g in zip(names, att.graph.tolist()) if g]
    assert graph == ["triton_red_fused_sum_1"] * 3
    region_names = [trace.names[trace.x["name"][forest.idx[h]]] if h >= 0 else None for h in att.host.tolist()]
    assert region_names[names.index("triton_red_fused_sum_1")] == "ll/decode"
    assert region_names[names.index("Memcpy HtoD (Pageable -> Device)")] is None
    # the op that launched each kernel comes from its External id
    ops = {nm: trace.names[o] for nm, o in zip(names, att.op_name.tolist()) if o >= 0}
    assert ops["nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT"] == "aten::linear"


def test_innermost_range_is_found_by_time_nesting(tmp_path):
    syn = lltrace_run(blocks=1, steps=1, layers=2, extras=False)
    trace = load_trace(write(tmp_path, syn.to_json()))
    forest = build_forest(trace, np.nonzero(trace.x["cat"] == USER_ANNOTATION)[0])
    att = attribute(trace, forest)
    for h, (path, _, _) in zip(att.host.tolist(), syn.expected):
        leaf = trace.names[trace.x["name"][forest.idx[h]]]
        assert leaf.removeprefix("ll/").split("[")[0] == path[-1].split("[")[0]


def test_kernels_are_only_counted_once(tmp_path):
    syn = lltrace_run(blocks=1, steps=1, layers=1)
    trace = load_trace(write(tmp_path, syn.to_json()))
    assert trace.count(KERNEL) + 1 == len(syn.expected)   # + the memcpy
