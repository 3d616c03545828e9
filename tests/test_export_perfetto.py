"""`lltrace export`: a real CPU run of the tiny pipeline (and the real H100 traces when present)
exported for Perfetto; every event checked against the trace event format; the output read
back by `lltrace budget` gives the same budget; trimming keeps whole blocks and their GPU work."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from lltrace.commands.cli import main
from lltrace.trace.instances import measure
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace
from lltrace.export import perfetto as pe
from lltrace.export.chrome_format import load, validate, validate_file
from helpers.tiny_run import make_tiny_run
from helpers.synthetic_trace import lltrace_run, write

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(p for p in (ROOT / "tests" / "data").glob("*.json*") if p.is_file()) + \
    sorted(p for p in (ROOT / "traces" / "examples").glob("*") if p.is_dir() and any(p.glob("trace.json*")))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run("baseline", tmp_path_factory.mktemp("export") / "run", blocks=6, switch_at=4)


def budget_of(path, meta=None):
    return build_budget(load_trace(path), meta)


def lltrace_pid(data) -> int:
    return data["lltraceExport"]["pid"]


@pytest.mark.slow
def test_export_is_valid_and_round_trips_through_budget(tmp_path, run, capsys):
    out = tmp_path / "run.json.gz"
    assert main(["export", str(run), "-o", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "gzipped" in printed and "MB of JSON" in printed
    assert "0 format errors" in printed
    data = load(out)
    rep = validate(data)
    assert rep.ok, rep.errors[:5]
    assert rep.nesting_count == 0, rep.nesting[:3]
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp file left
    # lltrace budget reads the export exactly like the original (given the run's meta.json for FLOPs)
    original = budget_of(run)
    exported = budget_of(out, json.loads((run / "meta.json").read_text()))
    assert exported.tree.to_dict() == original.tree.to_dict()
    assert exported.classes == original.classes and exported.metric == original.metric
    assert main(["budget", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tree"]["children"]


@pytest.mark.slow
def test_lltrace_tracks(tmp_path, run):
    out = tmp_path / "run.json"
    result = pe.export(run, out)
    data = json.loads(out.read_bytes())
    assert out.read_bytes()[:1] == b"{"
    pid = lltrace_pid(data)
    mine = [e for e in data["traceEvents"] if e.get("pid") == pid]
    names = {(e["name"], e["args"].get("name")) for e in mine if e["ph"] == "M"}
    assert ("process_name", "lltrace") in names
    assert {("thread_name", n) for n in ("video frames", "prompt switches", "run events", "regions (host)")} <= names
    frames = [e for e in mine if e.get("cat") == "lltrace.frame"]
    n_frames = len((run / "frames.jsonl").read_text().splitlines())
    assert len(frames) == n_frames == result.lltrace_events["frames"]
    assert [e["args"]["frame"] for e in frames] == list(range(n_frames))
    assert all(e["ph"] == "X" and e["dur"] > 0 for e in frames)
    counters = [e for e in mine if e["ph"] == "C"]
    assert len(counters) >= 6 and all(isinstance(v, float) for e in counters for v in e["args"].values())
    markers = [e for e in mine if e["ph"] == "i"]
    assert any(e["cat"] == "lltrace.prompt_switch" for e in markers) and all(e["s"] == "t" for e in markers)
    assert [e["name"] for e in mine if e.get("cat") == "lltrace.switch"] == ["prompt switch -> 1"]
    # frames sit on the trace's clock: each block slice ends after its ll/block[i] range ends (its
    # frames are ready when the block's decode returns) and before the next block's range starts
    # (the trace's end for the last): bounds from the trace itself, not a wall-clock tolerance;
    # SLACK is what the clock sync may be off by: its (marker, perf_counter) pair is two calls,
    # which a busy 2-core machine can split by a few ms (seen: 1.45 ms under -n 2)
    assert result.clock == "ll/clock_sync marker"
    SLACK_US = 5_000.0   # a block is ~300 ms: a frame misplaced by a block is still caught
    ranges = {e["name"]: e for e in data["traceEvents"] if e.get("cat") == "user_annotation"
              and e["name"].startswith("ll/block[")}
    blocks = [e for e in mine if e.get("cat") == "lltrace.block"]
    assert len(blocks) == 6
    starts = sorted(r["ts"] for r in ranges.values())
    trace_end = max(x["ts"] + x.get("dur", 0.0) for x in data["traceEvents"] if x.get("pid") != pid and x["ph"] == "X")
    for e in blocks:
        r = ranges[f"ll/block[{e['args']['block']}]"]
        next_start = next((t for t in starts if t > r["ts"]), trace_end)
        assert r["ts"] + r["dur"] - SLACK_US <= e["ts"] + e["dur"] <= next_start + SLACK_US
        assert e["ts"] <= r["ts"] + SLACK_US
    regions = [e for e in mine if e.get("cat") == "lltrace.region"]
    assert len(regions) == len(measure(load_trace(run)).regions)


@pytest.mark.slow
def test_blocks_trim_to_whole_blocks(tmp_path, run, capsys):
    out = tmp_path / "b.json.gz"
    assert main(["export", str(run), "-o", str(out), "--blocks", "2:4"]) == 0
    assert "blocks 2..3" in capsys.readouterr().out
    rep = validate_file(out)
    assert rep.ok and rep.nesting_count == 0
    inst = measure(load_trace(run))
    want = [r for r in inst.regions if r.name in ("ll/block[2]", "ll/block[3]")]
    b = budget_of(out)
    block = b.tree.child("block")
    assert block.count == 2
    assert block.cpu_ms == pytest.approx(sum(r.value_ms for r in want), rel=1e-9)
    assert b.tree.child("recache") is None and b.tree.child("text_encode") is None   # before / after the window
    data = load(out)
    mine = [e for e in data["traceEvents"] if e.get("pid") == lltrace_pid(data)]
    assert {e["args"]["block"] for e in mine if e.get("cat") == "lltrace.frame"} == {2, 3}
    lo, hi = min(r.start_us for r in want), max(r.end_us for r in want)
    for e in data["traceEvents"]:
        if e["ph"] == "X":
            assert e["ts"] < hi and e["ts"] + e["dur"] > lo
    assert out.stat().st_size < (run / "trace.json.gz").stat().st_size


@pytest.mark.slow
def test_window_ms(tmp_path, run):
    out = tmp_path / "w.json"
    r = pe.export(run, out, window_ms=(100.0, 200.0))
    assert r.window.label == "100..200 ms"
    data = load(out)
    assert validate(data).ok
    t0 = load_trace(run).span_us[0]
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert xs and all(e["ts"] < t0 + 200e3 and e["ts"] + e["dur"] > t0 + 100e3 for e in xs)
    assert r.events_written < r.events_read


def test_gpu_work_stays_with_its_launch(tmp_path):
    """SYNTHETIC GPU trace (no GPU here): kernels run after their launch; trimming to block 1
    keeps every kernel launched in it, linked, and nothing else."""
    src = write(tmp_path, lltrace_run(blocks=3, steps=2, layers=2).to_json(), "trace.json", gz=True)
    inst = measure(load_trace(src))
    block1 = next(r for r in inst.regions if r.name == "ll/block[1]")
    out = tmp_path / "b1.json.gz"
    pe.export(src, out, blocks=(1, 2))
    assert validate_file(out).ok
    b = budget_of(out)
    assert b.tree.child("block").count == 1
    assert b.gpu_ms == pytest.approx(block1.value_ms) and b.linked_fraction == 1.0
    data = load(out)
    gpu_regions = [e for e in data["traceEvents"] if e.get("cat") == "lltrace.gpu_region"]
    blk = next(e for e in gpu_regions if e["name"] == "ll/block[1]")
    assert blk["ts"] == pytest.approx(block1.gpu_start_us) and blk["args"]["gpu_ms"] == pytest.approx(block1.value_ms)


@pytest.mark.slow
def test_cut_off_trace_exports_what_was_recovered(tmp_path, run, capsys):
    raw = gzip.decompress((run / "trace.json.gz").read_bytes())
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    (cut / "trace.json.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    out = tmp_path / "cut.json.gz"
    assert main(["export", str(cut), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "exported the events before it" in err
    assert validate_file(out).ok


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(tmp_path, run, capsys):
    assert main(["budget", str(run), "--json"]) == 0
    budget_json = tmp_path / "budget.json"
    budget_json.write_text(capsys.readouterr().out)
    foreign = write(tmp_path, {"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1,
                                                "ts": 1, "dur": 2}]}, "foreign.json")
    out = str(tmp_path / "o.json.gz")
    cases = [((str(budget_json), "-o", out), "budget JSON"),
             ((str(run), "-o", out, "--blocks", "5:9"), "block(s) 6, 7, 8 are not in this trace"),
             ((str(run), "-o", out, "--blocks", "two"), "Invalid value for '--blocks'"),
             ((str(run), "-o", out, "--blocks", "3:1"), "Invalid value for '--blocks'"),
             ((str(run), "-o", out, "--blocks", "1:2", "--window-ms", "5"), "exclusive"),
             ((str(run), "-o", out, "--window-ms", "9e9:1e10"), "starts after the trace ends"),
             ((str(run), "-o", out, "--window-ms", "50:10"), "Invalid value for '--window-ms'"),
             ((str(run), "-o", str(tmp_path / "o.txt")), "should end in .json"),
             ((str(run), "-o", str(tmp_path / "nope" / "o.json")), "no such directory"),
             ((str(tmp_path / "missing"), "-o", out), "no such file"),
             ((str(foreign), "-o", out, "--blocks", "0:1"), "no ll/block")]
    for args, message in cases:
        code = main(["export", *args])
        captured = capsys.readouterr()
        assert code == 2, args
        assert message in captured.err and "Traceback" not in captured.out + captured.err, (args, captured.err)
        assert len(captured.err.strip().splitlines()) == 1, (args, captured.err)
    assert not (tmp_path / "o.json.gz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_traces(tmp_path, path):
    out = tmp_path / "real.json.gz"
    pe.export(path, out)
    rep = validate_file(out)
    assert rep.ok, rep.errors[:5]
    trace = load_trace(path)
    original = build_budget(trace)
    # The export keeps every event of the trace; the run's kernel-map records (provenance.json,
    # graph captures) stay in the run directory, so read the export beside them.
    exported = load_trace(out)
    exported.run_dir = trace.run_dir
    assert build_budget(exported, trace.run_meta).tree.to_dict() == original.tree.to_dict()
    span = trace.span_us
    ms = (span[1] - span[0]) / 1e3
    small = tmp_path / "window.json.gz"
    pe.export(path, small, window_ms=(ms * 0.25, ms * 0.5))
    assert validate_file(small).ok
    trimmed = budget_of(small)
    assert 0 < trimmed.gpu_ms < original.gpu_ms or original.metric == "cpu"
    if original.metric == "gpu" and original.linked_fraction == 1.0:
        assert trimmed.linked_fraction == 1.0       # kernels kept with their launches


@pytest.mark.slow
def test_run_events_and_clipping_to_the_profiled_window(tmp_path, run):
    """A recompile recorded mid-run becomes an instant marker named after the function; run
    events and frames outside the profiled window (here: everything after it) are left off."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    frames = [json.loads(line) for line in (copy / "frames.jsonl").read_text().splitlines()]
    mid = frames[len(frames) // 2]["ready_s"]
    late = frames[-1]["ready_s"] + 60.0          # a minute after the profiled window
    with open(copy / "events.jsonl", "a") as f:
        for t in (mid, late):
            f.write(json.dumps({"t_s": t, "time_ns": 0, "kind": "recompile", "message": "recompiled forward",
                                "data": {"compile_id": "0/1", "function": {"name": "forward", "file": "model.py",
                                                                           "line": 10}, "reasons": ["x == 3"]}}) + "\n")
        f.write(json.dumps({"t_s": late, "kind": "note", "message": "after"}) + "\n")
    with open(copy / "frames.jsonl", "a") as f:     # frames of a block that was not profiled
        for i in range(3):
            f.write(json.dumps({**frames[-1], "frame": len(frames) + i, "block": 99, "ready_s": late}) + "\n")
    out = tmp_path / "ev.json"
    r = pe.export(copy, out)
    data = load(out)
    assert validate(data).ok
    mine = [e for e in data["traceEvents"] if e.get("pid") == lltrace_pid(data)]
    recompiles = [e for e in mine if e.get("cat") == "lltrace.recompile"]
    assert len(recompiles) == 1 and recompiles[0]["name"] == "recompile forward"
    assert recompiles[0]["args"]["data"]["reasons"] == ["x == 3"]
    assert not any(e.get("args", {}).get("block") == 99 for e in mine)
    assert r.lltrace_events["frames"] == len(frames)


@pytest.mark.slow
def test_wall_clock_alignment_agrees_with_the_marker(tmp_path, run):
    """Without the ll/clock_sync pairing, Kineto's baseTimeNanoseconds places frames on the trace
    clock by wall time; both methods put each block's frames within a millisecond of each other."""
    with_marker = pe.export(run, tmp_path / "m.json")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["clock_sync"]["marker"] = None
    (copy / "meta.json").write_text(json.dumps(meta))
    by_wall = pe.export(copy, tmp_path / "w.json")
    assert with_marker.clock == "ll/clock_sync marker"
    assert by_wall.clock == "wall clock (baseTimeNanoseconds)"

    def block_ends(path):
        data = load(path)
        return {e["args"]["block"]: e["ts"] + e["dur"] for e in data["traceEvents"]
                if e.get("cat") == "lltrace.block"}
    a, b = block_ends(tmp_path / "m.json"), block_ends(tmp_path / "w.json")
    assert a.keys() == b.keys() and len(a) == 6
    assert all(abs(a[k] - b[k]) < 1000.0 for k in a)
