"""`lltrace budget` of a multi-rank run (issue #19): per-rank trees with their comm regions,
exposed communication, rank skew and the straggler. The run directory under
tests/data/ranks_cpu_run was recorded on the CPU by
`lltrace run --preset baseline --nproc 2 --device cpu --frames 12 --set decoder=fast
--profile-blocks 1:2 --headless` (2 gloo ranks, one profiled block)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lltrace.analysis.ranks import (
    Collectives,
    analyze_run,
    collectives_of,
    exposure,
    skew_and_straggler,
)
from lltrace.commands.cli import main
from lltrace.trace.intervals import coverage, union
from lltrace.trace.loader import load_trace

RUN = Path(__file__).parent / "data" / "ranks_cpu_run"


def _coll(starts, ends, op="gloo:all_to_all"):
    return Collectives(np.array(starts, float), np.array(ends, float), [op] * len(starts),
                       [None] * len(starts), "host")


# -- the math, on synthetic collectives -----------------------------------------------------------
def test_skew_is_the_spread_of_a_collectives_start_and_end_across_ranks():
    colls = {0: _coll([0, 100, 200], [10, 110, 215]),
             1: _coll([4, 130, 201], [11, 131, 216]),
             2: _coll([1, 102, 260], [12, 133, 262])}
    skew, _, warnings = skew_and_straggler(colls)
    assert warnings == [] and skew["collectives"] == 3
    # start spreads 4, 30, 60; end spreads 2, 23, 47
    assert skew["start_skew_us_max"] == 60 and skew["start_skew_us_p50"] == 30
    assert skew["end_skew_us_max"] == 47 and skew["end_skew_us_p50"] == 23
    assert skew["by_op"]["gloo:all_to_all"]["n"] == 3


def test_the_straggler_is_the_rank_the_others_waited_for_most():
    # rank 1 is last at collectives 0 and 1 (the others wait 3+4 and 30+28 µs), rank 2 at the
    # third only but by far (59+60 µs): rank 2 made the others wait longest
    colls = {0: _coll([0, 100, 200], [1, 101, 261]),
             1: _coll([4, 130, 201], [5, 131, 261]),
             2: _coll([1, 102, 260], [2, 131, 261])}
    _, st, _ = skew_and_straggler(colls)
    assert st["rank"] == 2 and st["arrived_last"] == 1 and st["of"] == 3
    assert st["wait_caused_ms"] == pytest.approx((60 + 59) / 1e3)
    assert st["per_rank"]["1"] == {"arrived_last": 2, "wait_caused_ms": pytest.approx((3 + 4 + 30 + 28) / 1e3)}
    assert st["per_rank"]["0"]["arrived_last"] == 0


def test_ranks_with_different_collective_counts_match_the_common_prefix_and_say_so():
    colls = {0: _coll([0, 100], [1, 101]), 1: _coll([5], [6])}
    skew, st, warnings = skew_and_straggler(colls)
    assert skew["collectives"] == 1 and st["rank"] == 1
    assert warnings and "rank 0: 2, rank 1: 1" in warnings[0]


def test_overlap_of_intervals_with_a_union():
    us, ue = union(np.array([5.0, 0.0, 20.0, 8.0]), np.array([10.0, 6.0, 30.0, 9.0]))
    assert us.tolist() == [0.0, 20.0] and ue.tolist() == [10.0, 30.0]
    got = coverage(us, ue)(np.array([-5.0, 9.0, 12.0, 25.0]), np.array([2.0, 22.0, 18.0, 40.0]))
    assert got.tolist() == [2.0, 3.0, 0.0, 5.0]


def test_exposed_communication_on_a_gpu_trace_is_nccl_time_outside_compute_kernels(tmp_path):
    def k(name, ts, dur, tid):
        return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": tid, "ts": ts, "dur": dur,
                "args": {"correlation": int(ts)}}
    # compute on stream 7: [0, 100) and [150, 200); NCCL on stream 13: [80, 160) and [300, 320)
    events = [k("ampere_gemm", 0, 100, 7), k("ampere_gemm", 150, 50, 7),
              k("ncclDevKernel_AllToAll_RING", 80, 80, 13), k("ncclDevKernel_AllGather_RING", 300, 20, 13)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    trace = load_trace(path)
    c = collectives_of(trace)
    assert c.clock == "device" and c.op == ["ncclDevKernel_AllToAll_RING", "ncclDevKernel_AllGather_RING"]
    exposed, overlapped = exposure(trace, c)
    # overlapped: [80, 100) + [150, 160) = 30 µs; exposed: [100, 150) + [300, 320) = 70 µs
    assert overlapped == pytest.approx(0.030) and exposed == pytest.approx(0.070)


# -- the recorded two-rank run --------------------------------------------------------------------
def test_recorded_run_has_matched_collectives_on_both_ranks():
    meta = json.loads((RUN / "meta.json").read_text())
    a = analyze_run(RUN, meta)
    assert [v.rank for v in a.ranks] == [0, 1] and a.warnings == []
    # one profiled block: 5 forwards x (2 layers x 2 all-to-alls + 1 all-gather)
    assert a.skew["collectives"] == 25
    assert a.skew["by_op"]["gloo:all_to_all"]["n"] == 20 and a.skew["by_op"]["gloo:all_gather"]["n"] == 5
    for v in a.ranks:
        assert v.collectives.clock == "host"
        assert [x for x in v.collectives.layer if x is not None].count(0) == 10   # 5 forwards x 2 in layer 0
        # gloo blocks the calling thread: nothing of this rank computes meanwhile
        assert v.exposed_ms == pytest.approx(v.comm_ms, rel=0.05)
    assert a.straggler["rank"] in (0, 1)
    assert a.skew["start_skew_us_max"] >= a.skew["start_skew_us_p50"] >= 0


def test_budget_of_a_two_rank_run_shows_each_rank_with_its_comm_regions(capsys):
    assert main(["budget", str(RUN), "--depth", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80
    assert "2 ranks (sequence parallel)" in out
    assert any(line.startswith("rank 0  wall") for line in lines) and any(line.startswith("rank 1  wall")
                                                                          for line in lines)
    assert sum(line.endswith("  straggler") for line in lines) == 1
    assert sum("── rank" in line for line in lines) == 2          # a tree per rank
    assert sum("comm" in line and "├─" in line or "└─ comm" in line for line in lines) >= 4
    assert "rank skew over 25 collectives" in out and "straggler: rank" in out


def test_budget_json_of_a_two_rank_run_has_the_ranks_object(capsys):
    assert main(["budget", str(RUN), "--json", "--rank", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rank"] == 1 and data["source"].endswith("trace.rank1.json.gz")
    ranks = data["ranks"]
    assert ranks["world_size"] == 2 and set(ranks["per_rank"]) == {"0", "1"}
    for r in ("0", "1"):
        p = ranks["per_rank"][r]
        assert set(p["comm_by_layer"]) == {"layer[0]", "layer[1]", "(outside layers)"}
        assert p["collectives"] == 25 and 0 < p["comm_ms"] <= p["wall_ms"]
        assert p["exposed_comm_ms"] + p["overlapped_comm_ms"] == pytest.approx(p["comm_ms"])
        assert p["tree"]["name"] == "run"
    assert ranks["straggler"]["rank"] in (0, 1) and ranks["skew"]["collectives"] == 25


def test_budget_rank_errors_are_one_line(capsys, tmp_path):
    assert main(["budget", str(RUN), "--rank", "2"]) == 2
    assert capsys.readouterr().err.strip() == "lltrace: error: --rank 2: the run has ranks 0, 1"
    trace = tmp_path / "t.json.gz"   # one rank's trace on its own: no run, no ranks
    trace.write_bytes((RUN / "trace.rank1.json.gz").read_bytes())
    assert main(["budget", str(trace), "--rank", "1"]) == 2
    assert "is not a multi-rank run" in capsys.readouterr().err


def test_reading_a_multi_rank_run_imports_no_torch():
    code = ("import sys; from pathlib import Path; import json; from lltrace.analysis.ranks import analyze_run; "
            f"a = analyze_run(Path({str(RUN)!r}), json.loads(Path({str(RUN / 'meta.json')!r}).read_text())); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(a.skew['collectives'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "25"


def test_diff_of_one_process_against_two_ranks_names_the_parallelism_and_comm_share(tmp_path, capsys):
    single = tmp_path / "single.json.gz"   # rank 0's trace without its run: one process to diff
    single.write_bytes((RUN / "trace.json.gz").read_bytes())
    assert main(["diff", str(single), str(RUN)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("parallelism:"))
    share = line.rsplit("B ", 1)[1]
    assert line == f"parallelism: A 1 process, B 2 ranks; rank 0's comm share: A {share}, B {share}"
    assert "B ms per block p50 by rank: 0: " in out and max(map(len, out.splitlines())) <= 80
    assert main(["diff", str(single), str(RUN), "--json"]) == 0
    ranks = json.loads(capsys.readouterr().out)["ranks"]
    assert ranks["a"]["world_size"] == 1 and ranks["b"]["world_size"] == 2
    assert 0 < ranks["b"]["comm_share"] < 1 and set(ranks["b"]["ms_per_block_p50"]) == {"0", "1"}
    assert ranks["a"]["comm_share"] == pytest.approx(ranks["b"]["comm_share"])   # the same trace
