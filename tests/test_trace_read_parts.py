"""A big plain trace is read in parts at the same time (one forked process per core) and the
parts merged in file order (issue #18): the result must be what one pass gives, bit for bit,
on real traces, on false split points, on damage inside a later part, on a bare array, on
keys after the events, and on a run's later windows merged into the same collector."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from lltrace.trace import reader as rd
from lltrace.trace.events import EventCollector
from lltrace.trace.loader import load_trace

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "h100_plain_profiler_baseline.json.gz"
EXAMPLE = ROOT / "traces" / "examples" / "h200-baseline" / "trace.json.gz"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"),
                                reason="parts are read in forked processes on Linux only")


def _everything(t) -> str:
    """sha256 of all a loaded trace holds: columns, names, ids, stats, warnings, markers..."""
    h = hashlib.sha256()
    for part in (t.x, t.flows):
        for k in sorted(part):
            h.update(k.encode())
            h.update(part[k].tobytes())
    h.update(json.dumps([t.names, [repr(i) for i in t.ids], t.stats, t.warnings, t.top, t.partial, t.stop_reason,
                         t.stopped_at_byte, [list(i) for i in t.instants], repr(t.process_names),
                         repr(t.thread_names)], sort_keys=True, default=repr).encode())
    return h.hexdigest()


@pytest.fixture
def parts(monkeypatch):
    """Split files of a few hundred KB (the real threshold is tens of MB), into `n` parts."""
    calls = []
    real = rd._split_read

    def spy(path, sink, progress, n):
        got = real(path, sink, progress, n)
        calls.append(got is not None)
        return got

    monkeypatch.setattr(rd, "SPLIT_MIN", 64 << 10)
    monkeypatch.setattr(rd.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(rd, "_idle_cores", lambda cores: cores - 1)
    monkeypatch.setattr(rd, "_split_read", spy)

    def load(path, n):
        monkeypatch.setenv(rd.PARTS_ENV, str(n))
        calls.clear()
        return load_trace(path), list(calls)
    return load


def _plain(tmp_path: Path, src: Path = DATA, name: str = "t.json") -> Path:
    out = tmp_path / name
    out.write_bytes(gzip.decompress(src.read_bytes()))
    return out


@pytest.mark.parametrize("src", [DATA, pytest.param(EXAMPLE, marks=pytest.mark.slow)], ids=lambda p: p.parent.name)
def test_parts_give_what_one_pass_gives_on_real_traces(src, parts, tmp_path):
    if not src.is_file():
        pytest.skip(f"{src} is not in this checkout")
    plain = _plain(tmp_path, src)
    one, used = parts(plain, 1)
    assert used == []                      # one part: the plain reader, untouched
    want = _everything(one)
    for n in (2, 3, 5):
        got, used = parts(plain, n)
        assert used == [True], n           # really read in parts
        assert _everything(got) == want, n


@pytest.mark.parametrize(("lo", "hi", "n", "split"), [(3, 7, 2, False), (57, 77, 3, True)])
def test_a_false_split_point_is_read_again_in_one_piece(lo, hi, n, split, parts, tmp_path):
    """Names holding `}, {` where a split lands: the part before it does not end cleanly
    there, so the file is read again whole (the first split) or from that part's start on,
    here (a later one); the same trace either way."""
    data = json.loads(gzip.decompress(DATA.read_bytes()))
    ev = data["traceEvents"]
    fake = '}, {"ph": "X", "cat": "kernel", "name": "fake", "ts": 1, "dur": 1, "pid": 0, "tid": 0'
    for e in ev[len(ev) * lo // (10 if hi < 10 else 100): len(ev) * hi // (10 if hi < 10 else 100)]:
        if e.get("ph") == "X":
            e["name"] = fake * 3
    path = tmp_path / "false.json"
    path.write_text(json.dumps(data))
    one, _ = parts(path, 1)
    got, used = parts(path, n)
    assert used == [split]                 # False: the first split fell inside a name
    assert _everything(got) == _everything(one)
    assert "fake" not in got.names and fake * 3 in got.names


@pytest.mark.parametrize("where", ["cut", "garbage"])
def test_damage_in_a_later_part_stops_where_one_pass_stops(where, parts, tmp_path):
    raw = gzip.decompress(DATA.read_bytes())
    at = raw.index(b"\n  },\n  {", len(raw) * 4 // 5) + 4     # between two events (Kineto's layout)
    bad = raw[:at] if where == "cut" else raw[:at] + b", @@ not json @@" + raw[at:]
    path = tmp_path / f"{where}.json"
    path.write_bytes(bad)
    one, _ = parts(path, 1)
    assert one.partial
    for n in (2, 4):
        got, used = parts(path, n)
        assert used == [True] and _everything(got) == _everything(one), n


def test_a_bare_array_and_keys_after_the_events(parts, tmp_path):
    data = json.loads(gzip.decompress(DATA.read_bytes()))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data["traceEvents"], indent=1))
    after = tmp_path / "after.json"
    after.write_text(json.dumps({"traceEvents": data["traceEvents"], "traceName": "x", "deviceProperties": [1],
                                 "traceEvents ": 2}))
    for path in (bare, after):
        one, _ = parts(path, 1)
        got, used = parts(path, 3)
        assert used == [True] and _everything(got) == _everything(one), path.name
    assert got.top["traceName"] == "x"


def test_string_flow_ids_in_two_parts_are_numbered_as_in_one_pass(parts, tmp_path):
    """String flow ids get numbers in order of appearance; two parts that both numbered some
    cannot be joined, so the later one is read again here."""
    data = json.loads(gzip.decompress(DATA.read_bytes()))
    for i, e in enumerate(data["traceEvents"]):
        if e.get("ph") in ("s", "f") and i % 7 == 0:
            e["id"] = f"flow-{e['id']}"
    path = tmp_path / "sflows.json"
    path.write_text(json.dumps(data))
    one, _ = parts(path, 1)
    got, used = parts(path, 3)
    assert used == [True] and _everything(got) == _everything(one)
    assert (got.flows["id"] <= -2).any()


def test_later_windows_merge_into_the_same_ids(parts, tmp_path):
    """A run's trace-2.json is read into the collector that already holds trace.json: its
    parts take the names and ids the first window gave."""
    run = tmp_path / "run"
    run.mkdir()
    _plain(run, name="trace.json")
    raw = json.loads(gzip.decompress(DATA.read_bytes()))
    raw["traceEvents"] = raw["traceEvents"][::-1]           # another order of first appearance
    (run / "trace-2.json").write_text(json.dumps(raw))
    one, _ = parts(run, 1)
    got, used = parts(run, 2)
    assert used == [True, True] and _everything(got) == _everything(one)


def test_merge_equals_one_collector():
    """EventCollector.merge, on the events of a real trace cut in three: the same collector."""
    import msgspec

    from lltrace.trace.events import RawEvent
    raw = json.loads(gzip.decompress(DATA.read_bytes()))["traceEvents"]
    ev = msgspec.json.Decoder(list[RawEvent]).decode(json.dumps(raw))
    whole = EventCollector()
    whole.add(ev)
    merged = EventCollector()
    for a, b in ((0, len(ev) // 3), (len(ev) // 3, len(ev) // 2), (len(ev) // 2, len(ev))):
        part = EventCollector()
        part.add(ev[a:b])
        merged.merge(part)
    for attr in ("names", "ids", "instants", "process_names", "thread_names", "total", "kept", "invalid",
                 "ignored_ph", "ignored_cats", "out_of_range", "negative"):
        assert getattr(merged, attr) == getattr(whole, attr), attr
    for mine, theirs in ((merged.x, whole.x), (merged.flows, whole.flows)):
        assert {k: bytes(v) for k, v in mine.cols.items()} == {k: bytes(v) for k, v in theirs.cols.items()}


def test_no_parts_for_gzip_small_files_or_inside_a_worker(monkeypatch, tmp_path):
    monkeypatch.delenv(rd.PARTS_ENV, raising=False)
    monkeypatch.setattr(rd.os, "sched_getaffinity", lambda _pid: set(range(4)))
    monkeypatch.setattr(rd, "_idle_cores", lambda cores: cores - 1)
    assert rd._part_count(rd.SPLIT_MIN * 10) == 4
    assert rd._part_count(rd.SPLIT_MIN) == 1
    monkeypatch.setattr(rd, "_idle_cores", lambda cores: 1)    # two cores busy: one part each idle core
    assert rd._part_count(rd.SPLIT_MIN * 10) == 2
    monkeypatch.setattr(rd, "_idle_cores", lambda cores: 3)
    monkeypatch.setenv(rd.PARTS_ENV, "1")
    assert rd._part_count(rd.SPLIT_MIN * 10) == 1
    with pytest.raises(ValueError):
        rd._Bytes(DATA, None, 100, 200)    # a gzip stream has no parts


def test_no_process_to_be_had_reads_in_one_piece(parts, tmp_path, monkeypatch):
    plain = _plain(tmp_path)
    one, _ = parts(plain, 1)

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(rd.os, "fork", no_fork)
    got, used = parts(plain, 3)
    assert used == [False] and _everything(got) == _everything(one)
