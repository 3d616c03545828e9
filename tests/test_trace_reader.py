"""The streaming trace reader: formats, batch splitting, and damaged or wrong input."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from lltrace.errors import LltraceError
from lltrace.trace import reader
from lltrace.trace.events import CATEGORIES, KERNEL
from lltrace.trace.loader import load_trace, resolve_source
from helpers.synthetic_trace import lltrace_run, write


def _kept_x(events) -> int:
    return sum(1 for e in events if e.get("ph") == "X" and e.get("cat", "").lower() in CATEGORIES
               and (e.get("cat") != "python_function" or e.get("name", "").startswith("nn.Module:")))


@pytest.fixture(scope="module")
def synthetic():
    return lltrace_run(blocks=2, steps=2, layers=2).to_json()


def test_plain_gzip_and_bare_array_read_the_same_events(tmp_path, synthetic):
    plain = load_trace(write(tmp_path, synthetic, "a.json"))
    packed = load_trace(write(tmp_path, synthetic, "b.json", gz=True))
    bare = load_trace(write(tmp_path, synthetic["traceEvents"], "c.json"))
    assert len(plain) == _kept_x(synthetic["traceEvents"]) > 100
    for other in (packed, bare):
        assert len(other) == len(plain)
        for col in ("ts", "dur", "corr", "ext", "cat"):
            assert np.array_equal(other.x[col], plain.x[col])
    assert not plain.partial and not packed.partial and packed.stats["gzip"]


def test_top_level_keys_before_and_after_the_events_are_kept(tmp_path, synthetic):
    trace = load_trace(write(tmp_path, synthetic))
    assert trace.top["baseTimeNanoseconds"] == 1_700_000_000_000_000_000
    assert trace.top["traceName"] == "synthetic"          # written after traceEvents
    assert trace.device_name == "SYNTHETIC GPU"
    assert trace.process_names[4242] == "python"


def test_batches_split_anywhere_give_the_same_result(tmp_path, monkeypatch, synthetic):
    """Tiny batches and reads put every split point inside strings, nested objects and
    multi-byte characters; names with '}, {' fool the splitter on purpose."""
    events = list(synthetic["traceEvents"])
    events.insert(5, {"ph": "X", "cat": "user_annotation", "name": 'odd }, {"ph": "X"} name ☃ ü',
                      "pid": 4242, "tid": 4242, "ts": 10.0, "dur": 1.0,
                      "args": {"nested": [{"a": 1}, {"b": [{"c": "}, {"}]}], "External id": 999}})
    data = {**synthetic, "traceEvents": events}
    path = write(tmp_path, data, gz=True)
    whole = load_trace(path)
    monkeypatch.setattr(reader, "CHUNK", 97)
    monkeypatch.setattr(reader, "RAW_READ", 13)
    pieces = load_trace(path)
    assert len(pieces) == len(whole) == _kept_x(events)
    assert np.array_equal(pieces.x["ts"], whole.x["ts"])
    assert 'odd }, {"ph": "X"} name ☃ ü' in pieces.names
    assert not pieces.partial


def test_events_larger_than_a_batch_are_read(tmp_path, monkeypatch):
    big = {"ph": "X", "cat": "cpu_op", "name": "aten::big", "pid": 1, "tid": 1, "ts": 1, "dur": 2,
           "args": {"Input Dims": [[i, i] for i in range(5000)], "External id": 1}}
    monkeypatch.setattr(reader, "CHUNK", 256)
    trace = load_trace(write(tmp_path, {"traceEvents": [big, {**big, "ts": 5}]}))
    assert len(trace) == 2


def test_json_cut_mid_event_keeps_every_complete_event(tmp_path):
    events = lltrace_run(blocks=1, steps=1, layers=1).to_json()["traceEvents"]
    head = b'{"schemaVersion": 1, "traceEvents": [\n'
    parts, ends = [], []
    pos = len(head)
    for i, e in enumerate(events):
        s = json.dumps(e).encode() + (b",\n" if i < len(events) - 1 else b"")
        parts.append(s)
        pos += len(s)
        ends.append(pos - (2 if i < len(events) - 1 else 0))
    raw = head + b"".join(parts) + b"\n], \"traceName\": \"x\"}"
    for cut in range(len(head) + 50, ends[-1], 997):
        p = tmp_path / "cut.json"
        p.write_bytes(raw[:cut])
        complete = [e for e, end in zip(events, ends) if end <= cut]
        if not _kept_x(complete):
            with pytest.raises(LltraceError, match="no complete event"):
                load_trace(p)
            continue
        trace = load_trace(p)
        assert trace.partial
        assert len(trace) == _kept_x(complete)
        assert "ends" in trace.stop_reason
        assert trace.stopped_at_byte <= cut


def test_truncated_gzip_is_a_partial_trace(tmp_path, synthetic):
    raw = gzip.compress(json.dumps(synthetic).encode())
    p = tmp_path / "cut.json.gz"
    p.write_bytes(raw[: len(raw) // 2])
    trace = load_trace(p)
    assert trace.partial and 0 < len(trace) < _kept_x(synthetic["traceEvents"])
    assert "gzip" in trace.stop_reason
    assert trace.warnings[0].startswith("partial trace")


def test_corrupt_gzip_data_stops_with_a_message(tmp_path, synthetic):
    raw = bytearray(gzip.compress(json.dumps(synthetic).encode()))
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    p = tmp_path / "bad.json.gz"
    p.write_bytes(bytes(raw))
    try:
        trace = load_trace(p)
    except LltraceError as exc:
        assert "gzip" in str(exc)
    else:
        assert trace.partial and "gzip" in trace.stop_reason


def test_invalid_bytes_mid_file_stop_there(tmp_path, synthetic):
    raw = json.dumps(synthetic, indent=1).encode()
    at = raw.index(b'"ph"', len(raw) // 2)
    p = tmp_path / "bad.json"
    p.write_bytes(raw[:at] + b"@@@" + raw[at + 3:])
    trace = load_trace(p)
    assert trace.partial and "invalid JSON" in trace.stop_reason
    assert 0 < len(trace) < _kept_x(synthetic["traceEvents"])


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b'{"a": 1, "b": [1, 2]}', "no traceEvents"),
    (b'{"traceEvents": 5}', "not an array"),
    (b"[1, 2, 3]", "not a trace"),
    (b'"just a string"', "not a JSON object or array"),
    (b"\x00\x01binary", "not a JSON object or array"),
    (b'{"traceEvents": []}', "no events"),
    (b'{"traceEvents": [{"ph": "X", "cat": "Trace", "name": "x", "ts": 1, "dur": 1}]}', "none of its 1 events"),
    (b'{"traceEvents": [{"ph": "X", "cat": "kern', "no complete event"),
    (b'{"schemaVersion": 1, "deviceProp', "not a readable trace"),
])
def test_input_that_is_not_a_trace_is_a_one_line_error(tmp_path, content, message):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(LltraceError) as err:
        load_trace(p)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_empty_gzip_and_gzip_of_nothing(tmp_path):
    p = tmp_path / "e.json.gz"
    p.write_bytes(gzip.compress(b""))
    with pytest.raises(LltraceError, match="empty"):
        load_trace(p)
    p.write_bytes(gzip.compress(b"{}")[:8])
    with pytest.raises(LltraceError, match="gzip"):
        load_trace(p)


def test_loose_field_types_fall_back_without_losing_events(tmp_path):
    events = [
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": "10.5", "dur": 2,
         "args": {"correlation": "77"}},
        {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 20, "dur": 3,
         "args": {"correlation": 77, "External id": 5.0}},
        {"ph": "X", "cat": "cpu_op", "name": "no timestamp", "pid": 1, "tid": 1},
        "not an event",
    ]
    trace = load_trace(write(tmp_path, {"traceEvents": events}))
    assert len(trace) == 2
    assert trace.x["ts"][0] == 10.5 and trace.x["corr"][0] == 77 and trace.x["ext"][1] == 5
    assert trace.stats["invalid"] == 2
    assert any("not valid trace events" in w for w in trace.warnings)


def test_concatenated_gzip_members_are_read(tmp_path, synthetic):
    raw = json.dumps(synthetic).encode()
    half = len(raw) // 2
    p = tmp_path / "multi.json.gz"
    p.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    assert len(load_trace(p)) == _kept_x(synthetic["traceEvents"])


def test_progress_reports_the_whole_file(tmp_path, synthetic):
    path = write(tmp_path, synthetic, gz=True)
    seen = []
    load_trace(path, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_real_torch_profiler_cpu_trace_loads(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, record_function

    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("ll/block[0]"):
            m(torch.randn(4, 16))
    out = tmp_path / "cpu.pt.trace.json"
    prof.export_chrome_trace(str(out))
    data = json.loads(out.read_text())
    trace = load_trace(out)
    assert len(trace) == _kept_x(data["traceEvents"]) > 5
    assert trace.count(KERNEL) == 0 and not trace.partial
    assert "ll/block[0]" in trace.names and "aten::linear" in trace.names
    assert trace.top.get("traceName") == data.get("traceName")


def test_paths_resolve_to_runs_traces_and_budgets(tmp_path, monkeypatch, synthetic):
    run = tmp_path / "traces" / "20261123-120000-ultra"
    run.mkdir(parents=True)
    write(run, synthetic, "trace.json", gz=True)
    (run / "meta.json").write_text(json.dumps({"run_id": run.name}))
    assert resolve_source(run).kind == "run"
    assert resolve_source(run / "trace.json.gz").meta_path == run / "meta.json"
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    assert resolve_source(run.name).run_dir == run
    assert load_trace(run).run_meta == {"run_id": run.name}
    budget = tmp_path / "b.json"
    budget.write_text(json.dumps({"format": "lltrace-budget/1", "tree": {"name": "run"}}))
    assert resolve_source(budget).kind == "budget"
    with pytest.raises(LltraceError, match="budget JSON, not a trace"):
        load_trace(budget)
    with pytest.raises(LltraceError, match="no such file"):
        resolve_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LltraceError, match="no trace file"):
        resolve_source(tmp_path / "empty")


def test_every_profile_window_of_a_run_is_read(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    one = lltrace_run(blocks=1, steps=1, layers=1, extras=False).to_json()
    write(run, one, "trace.json", gz=True)
    two = lltrace_run(blocks=1, steps=1, layers=1, extras=False)
    for e in two.events:     # a later window: later times, later ids (one process)
        if "ts" in e:
            e["ts"] += 1e6
    write(run, two.to_json(), "trace-2.json", gz=True)
    trace = load_trace(run)
    assert len(trace) == 2 * _kept_x(one["traceEvents"])
    assert any("2 profile windows merged" in w for w in trace.warnings)
    assert 2 * load_trace(run / "trace.json.gz").stats["elements"] == trace.stats["elements"]


def test_raw_mode_hands_over_every_event_whole_even_from_a_cut_file(tmp_path, synthetic):
    import msgspec

    class Sink:
        def __init__(self):
            self.items, self.invalid = [], 0

        def add(self, batch):
            self.items += batch

        def count_invalid(self, n=1):
            self.invalid += n

    events = synthetic["traceEvents"]
    events[5] = {**events[5], "args": {**events[5].get("args", {}), "Input Dims": [[2, 3]], "extra": "kept"}}
    full = Sink()
    result = reader.read_events(write(tmp_path, synthetic, gz=True), full, raw=True)
    assert not result.partial and result.gzip
    assert all(isinstance(i, msgspec.Raw) for i in full.items)
    assert [json.loads(bytes(i)) for i in full.items] == events          # every field, in order
    # cut off mid-event: the complete events before the cut, and where it stopped
    raw = json.dumps(synthetic, indent=1).encode()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(raw[:len(raw) // 2]))
    part = Sink()
    result = reader.read_events(cut, part, raw=True)
    assert result.partial and result.stop_reason
    got = [json.loads(bytes(i)) for i in part.items]
    assert 0 < len(got) < len(events) and got == events[:len(got)]
