"""The Chrome trace event format validator: what the spec allows passes, each rule catches
the event that breaks it."""
from __future__ import annotations

import gzip
import json

import pytest

from lltrace.export.chrome_format import load, validate, validate_file

GOOD = [
    {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "p"}},
    {"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": 2, "args": {"sort_index": -1}},
    {"ph": "X", "name": "outer", "cat": "c", "pid": 1, "tid": 2, "ts": 0, "dur": 10, "args": {"k": [1, 2]}},
    {"ph": "X", "name": "inner", "pid": 1, "tid": 2, "ts": 2.5, "dur": 7.5},
    {"ph": "B", "name": "b", "pid": 1, "tid": 3, "ts": 1},
    {"ph": "E", "pid": 1, "tid": 3, "ts": 4},
    {"ph": "i", "name": "mark", "s": "g", "pid": 1, "tid": 2, "ts": 3},
    {"ph": "I", "name": "old mark", "pid": "Traces", "tid": "Trace", "ts": 3},
    {"ph": "C", "name": "ctr", "pid": 1, "tid": 0, "ts": 5, "args": {"a": 1, "b": 2.5}},
    {"ph": "b", "name": "async", "cat": "x", "id": "0x1", "pid": 1, "tid": 2, "ts": 1},
    {"ph": "e", "name": "async", "cat": "x", "id": "0x1", "pid": 1, "tid": 2, "ts": 9},
    {"ph": "s", "name": "ac2g", "cat": "ac2g", "id": 7, "pid": 1, "tid": 2, "ts": 1},
    {"ph": "f", "name": "ac2g", "cat": "ac2g", "id": 7, "pid": 0, "tid": 7, "ts": 2, "bp": "e"},
    {"ph": "O", "name": "obj", "id": 3, "pid": 1, "tid": 2, "ts": 4, "args": {"snapshot": {}}},
]


def test_spec_examples_pass_in_both_layouts():
    for data in ({"traceEvents": GOOD, "displayTimeUnit": "ms"}, GOOD):
        rep = validate(data)
        assert rep.ok and rep.nesting_count == 0, rep.errors + rep.nesting
        assert rep.events == len(GOOD) and rep.phases["X"] == 2


@pytest.mark.parametrize("event,message", [
    ({"name": "x", "pid": 1, "tid": 1, "ts": 0}, "unknown ph"),
    ({"ph": "Z", "name": "x", "pid": 1, "tid": 1, "ts": 0}, "unknown ph"),
    ({"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 1}, "without a name"),
    ({"ph": "X", "name": 3, "pid": 1, "tid": 1, "ts": 0, "dur": 1}, "name is not a string"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0}, "without a finite dur"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0, "dur": -1}, "without a finite dur"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": -5, "dur": 1}, "negative ts"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": "12", "dur": 1}, "ts missing or not a finite number"),
    ({"ph": "i", "name": "x", "pid": 1, "tid": 1}, "ts missing"),
    ({"ph": "X", "name": "x", "tid": 1, "ts": 0, "dur": 1}, "no pid"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": [1], "ts": 0, "dur": 1}, "tid is neither"),
    ({"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0, "dur": 1, "args": [1]}, "args is not an object"),
    ({"ph": "i", "name": "x", "s": "q", "pid": 1, "tid": 1, "ts": 0}, "scope"),
    ({"ph": "C", "name": "x", "pid": 1, "tid": 1, "ts": 0, "args": {"v": "high"}}, "counter args must all be numbers"),
    ({"ph": "C", "name": "x", "pid": 1, "tid": 1, "ts": 0}, "counter event without args"),
    ({"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {}}, "needs args.name"),
    ({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": 1, "args": {"sort_index": "1"}},
     "needs args.sort_index"),
    ({"ph": "M", "name": "thread_colour", "pid": 1, "tid": 1, "args": {"name": "x"}}, "unknown metadata"),
    ({"ph": "b", "name": "x", "cat": "c", "pid": 1, "tid": 1, "ts": 0}, "needs an id"),
    ({"ph": "b", "name": "x", "id": 1, "pid": 1, "tid": 1, "ts": 0}, "needs a cat"),
    ({"ph": "s", "name": "x", "pid": 1, "tid": 1, "ts": 0}, "needs an id"),
    ({"ph": "O", "name": "x", "id": 1, "pid": 1, "tid": 1, "ts": 0, "args": {}}, "snapshot"),
    ({"ph": "E", "pid": 1, "tid": 9, "ts": 0}, "without an open B"),
    ("not an event", "not an object"),
])
def test_each_rule_catches_its_event(event, message):
    rep = validate({"traceEvents": GOOD + [event]})
    assert not rep.ok
    assert any(message in e for e in rep.errors), rep.errors


def test_top_level():
    assert not validate({"events": []}).ok
    assert not validate({"traceEvents": [], "displayTimeUnit": "s"}).ok
    assert not validate("trace").ok


def test_nesting_on_a_thread():
    overlap = [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
               {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 5, "dur": 10},
               {"ph": "X", "name": "c", "pid": 1, "tid": 2, "ts": 5, "dur": 10}]   # other thread: fine
    rep = validate(overlap)
    assert rep.ok and rep.nesting_count == 1 and "tid 1" in rep.nesting[0]
    assert validate(overlap, nesting_pid=2).nesting_count == 0
    assert validate(overlap, check_nesting=False).nesting_count == 0


def test_files_and_non_json_numbers(tmp_path):
    p = tmp_path / "t.json.gz"
    p.write_bytes(gzip.compress(json.dumps({"traceEvents": GOOD}).encode()))
    assert validate_file(p).ok
    bad = tmp_path / "nan.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": NaN, "dur": 1}]}')
    with pytest.raises(ValueError, match="NaN"):
        load(bad)
