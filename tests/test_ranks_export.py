"""`lltrace export` of a multi-rank run (issue #19): one Perfetto trace, one process per rank."""
import gzip
import json
from collections import Counter
from pathlib import Path

from lltrace.commands.cli import main
from lltrace.export.chrome_format import validate_file
from lltrace.export.ranks import rank_events

RUN = Path(__file__).parent / "data" / "ranks_cpu_run"   # 2 gloo ranks (test_ranks_budget.py)


def _events(path):
    return json.loads(gzip.decompress(path.read_bytes()))


def test_export_merges_the_ranks_into_one_process_each(tmp_path, capsys):
    out = tmp_path / "merged.json.gz"
    assert main(["export", str(RUN), "-o", str(out), "--check"]) == 0
    assert "0 format errors, 0 nesting problems" in capsys.readouterr().out
    data = _events(out)
    ev = data["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e["name"] == "process_name"}
    assert sorted(procs.values()) == ["lltrace", "rank 0", "rank 1"]
    pid = {name: p for p, name in procs.items()}
    assert data["lltraceRanks"] == {"world_size": 2, "pids": {"0": pid["rank 0"], "1": pid["rank 1"]}}
    # every event of a rank's trace is in its process: its collectives and comm regions too
    for r in (0, 1):
        src = _events(RUN / ("trace.json.gz" if r == 0 else f"trace.rank{r}.json.gz"))["traceEvents"]
        want = Counter(e["name"] for e in src if e.get("ph") == "X")
        got = Counter(e["name"] for e in ev if e.get("ph") == "X" and e["pid"] == pid[f"rank {r}"])
        assert got == want and got["ll/comm"] == 25 and got["gloo:all_to_all"] == 20
    # only rank 0's frames: the frame clock is rank 0's
    assert all(e["pid"] == pid["lltrace"] for e in ev if e.get("cat") == "lltrace.frame")


def test_a_window_applies_to_every_rank(tmp_path, capsys):
    out = tmp_path / "w.json.gz"
    assert main(["export", str(RUN), "-o", str(out), "--window-ms", "40", "--check"]) == 0
    capsys.readouterr()
    data = _events(out)
    ev, window = data["traceEvents"], data["lltraceExport"]["window"]
    assert window["end_us"] - window["start_us"] == 40e3
    procs = {e["args"]["name"]: e["pid"] for e in ev if e.get("ph") == "M" and e["name"] == "process_name"}
    spans = {r: [e for e in ev if e.get("ph") == "X" and e["pid"] == procs[f"rank {r}"]] for r in (0, 1)}
    whole = {r: [e for e in _events(RUN / n)["traceEvents"] if e.get("ph") == "X"]
             for r, n in ((0, "trace.json.gz"), (1, "trace.rank1.json.gz"))}
    for r in (0, 1):
        assert 0 < len(spans[r]) < len(whole[r])      # the window keeps part of each rank
        assert all(e["ts"] <= window["end_us"] and e["ts"] + e.get("dur", 0) >= window["start_us"]
                   for e in spans[r])


def test_rank_events_move_devices_flows_and_clocks_into_the_ranks_process():
    data = {"baseTimeNanoseconds": 1_000_000_000, "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 77, "tid": 0, "args": {"name": "python"}},
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "GPU 1"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "stream 7"}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 77, "tid": 77, "ts": 10, "dur": 2},
        {"ph": "s", "cat": "ac2g", "name": "launch", "id": 5, "pid": 77, "tid": 77, "ts": 10},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 1, "tid": 7, "ts": 20, "dur": 5},
        {"ph": "f", "cat": "ac2g", "name": "launch", "id": 5, "bp": "e", "pid": 1, "tid": 7, "ts": 20},
    ]}
    out = list(rank_events(data, 1, 500, 3.0))
    assert {e["pid"] for e in out} == {500}
    names = [e["args"]["name"] for e in out if e.get("name") in ("process_name", "thread_name")]
    assert names == ["rank 1", "GPU 1 stream 7"]          # the rank's process; the device's streams named
    kernel = next(e for e in out if e.get("name") == "gemm")
    launch = next(e for e in out if e.get("name") == "cudaLaunchKernel")
    assert launch["tid"] == 77 and kernel["tid"] > 2**40   # a stream never lands on a host thread
    assert kernel["ts"] == 23.0 and launch["ts"] == 13.0   # onto rank 0's clock
    flows = [e["id"] for e in out if e.get("ph") in ("s", "f")]
    assert flows[0] == flows[1] != 5                      # rank 1's arrows stay apart from rank 0's
    assert [e["id"] for e in rank_events(data, 0, 500, 0.0) if e.get("ph") == "s"] == [5]


def test_merged_export_validates_without_nesting_problems(tmp_path):
    out = tmp_path / "m.json"
    assert main(["export", str(RUN), "-o", str(out)]) == 0
    report = validate_file(out)
    assert report.ok, report.summary()
