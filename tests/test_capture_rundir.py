"""Run directory: names, atomic whole files, line files, finalize."""
from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from lltrace.capture.events import RunEvent, TimeBase
from lltrace.capture.frame_clock import FrameRecord
from lltrace.capture.rundir import RunDirectory, new_run_id, write_json_atomic
from lltrace.errors import LltraceError


def test_run_id_and_clash(tmp_path, monkeypatch):
    assert new_run_id("ultra", datetime(2026, 1, 2, 3, 4, 5)) == "20260102-030405-ultra"
    assert new_run_id("my preset/x").endswith("-my_preset_x")
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    a = RunDirectory.create("ultra", run_id="20260102-030405-ultra")
    b = RunDirectory.create("ultra", run_id="20260102-030405-ultra")
    assert a.path == tmp_path / "traces" / "20260102-030405-ultra"
    assert b.run_id == "20260102-030405-ultra-2" and b.path.is_dir()
    c = RunDirectory.create("ultra")
    assert re.fullmatch(r"\d{8}-\d{6}-ultra", c.run_id)


def test_unwritable_traces_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LltraceError, match="cannot create"):
        RunDirectory.create("ultra", root=blocker / "traces")


def test_atomic_json_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "meta.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2, "nan": float("nan")})
    assert json.loads(p.read_text()) == {"a": 2, "nan": None}
    assert [x.name for x in tmp_path.iterdir()] == ["meta.json"]

    circular: dict = {}
    circular["self"] = circular
    with pytest.raises((ValueError, RecursionError)):
        write_json_atomic(p, circular)
    assert json.loads(p.read_text())["a"] == 2  # a failed write leaves the old file whole
    assert [x.name for x in tmp_path.iterdir()] == ["meta.json"]


def test_lines_and_finalize(tmp_path):
    rd = RunDirectory(tmp_path)
    rd.write_meta(preset="ultra", status="running")
    rd.touch_lines()
    rd.append_event(RunEvent("note", "early", {}, time_ns=999_000_000_000, perf_counter_ns=4_000_000_000))
    assert (tmp_path / "events.jsonl").read_text() == ""  # waits for the run's time base
    rd.set_time_base(TimeBase(time_ns=1_000_000_000_000, perf_counter_ns=5_000_000_000))
    rd.append_frame(FrameRecord(0, 0, 0, "first", 0.5, 10.0, 90.0, 9, "host"))
    rd.append_event(RunEvent("note", "hello", {"x": 1}, time_ns=1_000_002_000_000, perf_counter_ns=7_000_000_000))
    frames = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert frames == [{"frame": 0, "block": 0, "prompt": 0, "kind": "first", "ready_s": 0.5, "latency_ms": 10.0,
                       "block_ms": 90.0, "frames_in_block": 9, "clock": "host"}]
    early, ev = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert early["t_s"] == -1.0 and early["message"] == "early"
    assert ev == {"t_s": 2.0, "time_ns": 1_000_002_000_000, "kind": "note", "message": "hello", "data": {"x": 1}}
    rd.finalize("interrupted", "sigint", "interrupted after 3 blocks", summary={"frames": 1, "partial": True})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["preset"] == "ultra" and meta["run_id"] == tmp_path.name
    assert meta["end"]["reason"] == "sigint" and meta["end"]["frames"] == 1 and meta["end"]["events"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["partial"] is True
    with pytest.raises(ValueError):
        rd.finalize("exploded", "x")


# -- the reader (capture.rundir.read_run), next to the writer ---------------------------------------

def _written_run(tmp_path):
    (tmp_path / "run").mkdir()
    rd = RunDirectory(tmp_path / "run")
    rd.set_time_base(TimeBase.now())
    rd.write_meta(run_id="r1", preset="ultra")
    frames = [FrameRecord(i, i // 4, 0, "first" if i < 4 else "steady", 0.125 * (i // 4 + 1), 2.5, 10.0, 4, "host")
              for i in range(12)]
    for f in frames:
        rd.append_frame(f)
    rd.append_event(RunEvent("note", "hello", {"source": "session"}))
    rd.close()
    return rd.path, frames


def test_reader_gives_back_what_the_writer_wrote(tmp_path):
    from lltrace.capture.rundir import read_run
    path, frames = _written_run(tmp_path)
    run = read_run(path)
    assert run.frames == frames and not run.warnings
    assert run.meta["run_id"] == "r1" and run.summary is None
    (e,) = run.events
    assert e.kind == "note" and e.message == "hello" and e.data == {"source": "session"} and e.t_s is not None
    s = run.stats()       # no summary.json: recomputed from the frames, by the frame clock's rules
    assert s.frames == 12 and s.steady_frames == 8 and s.p50_ms == 2.5 and s.first_frame_ms == pytest.approx(125.0)


def test_reader_skips_cut_and_bad_lines_with_one_warning_each_file(tmp_path):
    from lltrace.capture.rundir import read_run
    path, frames = _written_run(tmp_path)
    with open(path / "frames.jsonl", "a") as f:
        f.write('{"frame": 12, "block": "three", "prompt": 0}\n')    # a wrong type
        f.write("[1, 2]\n")                                          # not an object
        f.write('{"frame": 13, "blo')                                # cut by a kill
    with open(path / "events.jsonl", "a") as f:
        f.write('{"kind": "warp", "message": "?"}\n')
    (path / "summary.json").write_text("[]")
    run = read_run(path)
    assert run.frames == frames
    assert any("frames.jsonl: 3 unreadable line(s) skipped (block is not an integer)" in w for w in run.warnings)
    assert any("events.jsonl: 1 unreadable line(s)" in w for w in run.warnings)
    assert any("summary.json is a JSON array, not an object" in w for w in run.warnings)
    assert run.summary is None and len(run.events) == 1
