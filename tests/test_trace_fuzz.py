"""Hypothesis feeds the loader mutated traces: it must return a (maybe partial) trace whose
budget builds, or raise LltraceError; never anything else."""
from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lltrace.errors import LltraceError
from lltrace.trace import reader
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace
from helpers.synthetic_trace import lltrace_run

BASE = json.dumps(lltrace_run(blocks=1, steps=1, layers=1).to_json(), indent=1).encode()

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(BASE))),
    st.tuples(st.just("flip"), st.integers(0, len(BASE) - 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, len(BASE) - 1), st.integers(1, 400)),
    st.tuples(st.just("insert"), st.integers(0, len(BASE)), st.sampled_from(
        [b"}", b"{", b"]", b"[", b",", b'"', b"\\", b"null", b"1e999", b'"ts": "x",', b"\xff\xfe", b"}, {"])),
)


def _apply(data: bytes, m) -> bytes:
    kind = m[0]
    if kind == "truncate":
        return data[:m[1]]
    if kind == "flip":
        return data[:m[1]] + m[2] + data[m[1] + len(m[2]):]
    if kind == "delete":
        return data[:m[1]] + data[m[1] + m[2]:]
    return data[:m[1]] + m[2] + data[m[1]:]


def _check(path) -> None:
    try:
        trace = load_trace(path)
    except LltraceError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    budget = build_budget(trace)
    assert budget.partial == trace.partial
    json.dumps(budget.to_dict())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3), gz=st.booleans(), small=st.booleans())
def test_mutated_traces_never_crash_the_loader(tmp_path, monkeypatch, mutations, gz, small):
    data = BASE
    for m in mutations:
        data = _apply(data, m)
    if gz:
        data = gzip.compress(data)
        if mutations[0][0] == "truncate":      # also cut the compressed stream
            data = data[: max(0, len(data) * mutations[0][1] // max(1, len(BASE)))]
    if small:   # tiny batches: every split point gets exercised
        monkeypatch.setattr(reader, "CHUNK", 211)
        monkeypatch.setattr(reader, "RAW_READ", 61)
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    path.write_bytes(data)
    _check(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.dictionaries(
    st.sampled_from(["ph", "cat", "name", "ts", "dur", "pid", "tid", "id", "args", "bp"]),
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
              st.text(max_size=8), st.sampled_from(["X", "s", "f", "i", "M", "kernel", "cpu_op", "ac2g",
                                                    "cuda_runtime", "user_annotation", "ll/block[0]"]),
              st.dictionaries(st.sampled_from(["correlation", "External id", "name"]),
                              st.one_of(st.integers(-5, 5), st.text(max_size=4), st.none()))),
), max_size=30))
def test_events_with_arbitrary_fields_never_crash(tmp_path, events):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"traceEvents": events}))
    _check(path)
