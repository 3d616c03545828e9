"""`lltrace doctor --isolate`: each stage group in a fresh process (lltrace/doctor/isolate.py).
On the CPU with the tiny model: the isolated report says what the one-process report says; a
child that dies natively (the test hook LLTRACE_DOCTOR_TEST_CRASH) is that group's result,
run again without compile checks, and the other group still reports; children's progress
reaches the callback prefixed by group; Ctrl-C leaves no child behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from lltrace.commands.cli import main
from lltrace.doctor import isolate
from lltrace.doctor.child import TEST_CRASH_ENV
from lltrace.doctor.gpu_lock import _GpuLock
from lltrace.doctor.pipeline import STAGES, diagnose_preset
from lltrace.doctor.report import (INCOMPATIBLE, NOT_RUN, CompileHealth, DoctorReport, Finding,
                                   GraphSavings, StageReport)

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour")
STAGES_2 = ["kv_update", "decode"]   # two groups of three blocks each: the cheapest pair


@pytest.fixture(scope="module")
def one_process():
    return diagnose_preset("baseline", STAGES_2, device="cpu", compile_check=False, isolate=False)


@pytest.fixture(scope="module")
def isolated():
    """Two groups at once; decode's process dies (SIGSEGV) at its compile check, then runs
    again without it. Compile checks on decode only (kv_update's would cost seconds here)."""
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_CRASH_ENV, "decode:compile")
        report = diagnose_preset("baseline", STAGES_2, device="cpu", compile_check=["decode"],
                                 isolate=True, jobs=2, progress=lines.append)
    return report, lines


def _essentials(st: StageReport):
    return (st.stage, st.verdict, st.capture, st.description, st.ops_per_call, st.fixes,
            [(f.kind, f.message, f.where, f.code, f.blocking) for f in st.findings],
            None if st.graph_savings is None else st.graph_savings.note)


@cpu_only
@pytest.mark.slow
def test_isolated_groups_report_what_one_process_does(isolated, one_process):
    report, _ = isolated
    assert [s.stage for s in report.stages] == [s.stage for s in one_process.stages] == STAGES_2
    for a, b in zip(report.stages, one_process.stages):
        assert _essentials(a) == _essentials(b)
    assert report.verdict == one_process.verdict == INCOMPATIBLE
    assert (report.target, report.device, report.model, report.attention) == \
        (one_process.target, one_process.device, one_process.model, one_process.attention)
    assert report.stopped is None and one_process.stopped is None
    assert all(n in report.notes for n in one_process.notes)
    assert len(report.notes) == len(set(report.notes))          # each group's notes, once
    assert report.isolated == [["kv_update"], ["decode"]] and one_process.isolated is None


@cpu_only
@pytest.mark.slow
def test_a_native_crash_is_the_stage_result_and_runs_again_without_compile(isolated):
    report, _ = isolated
    (crash,) = report.crashes
    assert crash["stages"] == ["decode"] and crash["stage"] == "decode"
    assert crash["returncode"] == -11 and crash["during"] == "the torch.compile check"
    assert crash["retried"] and crash["retry_ok"]
    assert crash["message"] == "decode: the process crashed (SIGSEGV) during the torch.compile check"
    # faulthandler's stack of the child, innermost frame first
    assert crash["stderr"][0] == "Fatal Python error: Segmentation fault"
    assert any("_die_natively" in ln for ln in crash["stderr"])
    assert report.notes[0].startswith("decode: the process crashed (SIGSEGV) during the torch.compile check; "
                                      "re-run without compile checks")
    decode = report.stage("decode")
    assert decode.capture == "capture needs CUDA" and decode.ops_per_call > 0   # the re-run's checks
    assert decode.compile.graphs is None and "crashed (SIGSEGV)" in decode.compile.summary()
    assert report.stage("kv_update").compile is None     # the other group: as asked, untouched
    data = json.loads(json.dumps(report.to_dict()))
    assert DoctorReport.from_dict(data).to_dict() == data


@cpu_only
@pytest.mark.slow
def test_children_progress_reaches_the_callback_prefixed_by_group(isolated):
    _, lines = isolated
    assert lines[0] == "isolated: kv_update | decode (2 at a time)"
    for want in ("kv_update: building baseline", "decode: building baseline", "kv_update: block 1/3",
                 "kv_update: recording the ops (position A)", "decode: block 3/3",
                 "decode: crashed (SIGSEGV); again without compile checks"):
        assert want in lines, lines
    assert not any(ln.startswith(("kv_update: kv_update:", "decode: decode:")) for ln in lines)
    crash = lines.index("decode: crashed (SIGSEGV); again without compile checks")
    assert "decode: torch.compile check (dynamo at A, then at B)" in lines[:crash]   # where it died
    assert lines.count("decode: building baseline") == 2      # the first run and the re-run


def test_report_round_trips_through_json():
    report = DoctorReport(
        "baseline", "cpu", "tiny", notes=["n"], stopped="at block 2/3: RuntimeError: x", attention="sdpa: ...",
        isolated=[["denoise", "kv_update"]], crashes=[{"stages": ["denoise"], "message": "m"}],
        stages=[StageReport("denoise", "d", INCOMPATIBLE, "c",
                            [Finding("host_sync", "sync", "a.py:1", "x.item()", True, "m", 2)], ["fix"],
                            CompileHealth(3, 2, [{"reason": "r", "where": "a.py:2", "count": 1}], [],
                                          [{"guard": "g", "code": None, "where": None, "function": "f", "count": 1}],
                                          None, 1.5), 7, 2.25,
                            GraphSavings(1.25, 0.5, 3.0, 2.5, 1.5, {"launch": 1.25}))])
    data = json.loads(json.dumps(report.to_dict()))
    back = DoctorReport.from_dict(data)
    assert back == report
    assert back.to_dict() == data
    assert DoctorReport.from_dict({"target": "t", "device": "cpu"}).isolated is None   # older JSON


def _run(stages, **kw) -> isolate._Run:
    return isolate._Run(list(stages), kw.pop("compiled", []), **kw)


def test_merge_keeps_stopped_per_group_and_reports_a_crash_without_retry():
    rep = DoctorReport("baseline", "cpu", "tiny", [StageReport("recache", verdict=INCOMPATIBLE)],
                       notes=["shared", "recache only"], stopped="at block 5/7: RuntimeError: x")
    other = DoctorReport("baseline", "cpu", "tiny", [StageReport("text", verdict=INCOMPATIBLE)], notes=["shared"])
    died = _run(["denoise", "kv_update"], returncode=-6, last="kv_update: recording the ops (position A)",
                stderr=["noise", "Fatal Python error: Aborted", "", "Current thread 0x1 (most recent call first):",
                        '  File "x.py", line 1 in f', "Extension modules: torch._C"])
    groups = [["denoise", "kv_update"], ["recache"], ["text"]]
    results = [isolate._Group(groups[0], died), isolate._Group(groups[1], _run(groups[1], report=rep.to_dict())),
               isolate._Group(groups[2], _run(groups[2], report=other.to_dict()))]
    merged = isolate.merge("baseline", groups, results, device="cpu", model=None, timeout=900)
    assert [s.stage for s in merged.stages] == ["denoise", "kv_update", "recache", "text"]
    why = "the process crashed (SIGABRT) during kv_update's op recording"
    for s in merged.stages[:2]:
        assert s.verdict == NOT_RUN and s.capture == why and s.verdict_text() == f"NOT RUN ({why})"
    assert merged.stopped == (f"in the denoise,kv_update process: {why}; "
                              "in the recache process at block 5/7: RuntimeError: x")
    assert merged.notes == [f"denoise,kv_update: {why} (--json: the crash's stderr)", "shared", "recache only"]
    (crash,) = merged.crashes
    assert not crash["retried"] and crash["stderr"] == [
        "Fatal Python error: Aborted", "Current thread 0x1 (most recent call first):", '  File "x.py", line 1 in f']


def test_timed_gpu_sections_wait_for_other_processes_gpu_work(tmp_path):
    """flock locks belong to open files, so two _GpuLock objects on one path stand for two processes."""
    path = str(tmp_path / "gpu.lock")
    a, b, c = _GpuLock(path), _GpuLock(path), _GpuLock(path)
    order: list[str] = []
    b_waiting = threading.Event()

    def timed():
        b_waiting.set()
        with b.exclusive():
            order.append("b timed")
            time.sleep(0.2)
        order.append("b done")

    def work():
        with c.shared():
            order.append("c work")

    with a.shared():
        t = threading.Thread(target=timed)
        t.start()
        b_waiting.wait()
        time.sleep(0.3)
        assert order == []                 # a's GPU work holds b's timed section off
        u = threading.Thread(target=work)  # new GPU work waits behind the timed section
        u.start()
        time.sleep(0.2)
        assert order == []
    t.join(5)
    u.join(5)
    assert order[0] == "b timed" and order.index("c work") > order.index("b timed")
    with a.shared(), a.exclusive(), a.shared():   # a timed section inside its own GPU work
        pass

    def after():
        with b.shared(), c.shared():   # all released: nothing waits
            order.append("free")
    v = threading.Thread(target=after, daemon=True)
    v.start()
    v.join(5)
    assert order[-1] == "free"


def _timed_in_thread(lock: _GpuLock, done: list[str], tag: str) -> threading.Thread:
    def timed():
        with lock.exclusive():
            done.append(tag)
    t = threading.Thread(target=timed, daemon=True)
    t.start()
    return t


def test_cpu_work_inside_gpu_work_lets_a_timed_section_run(tmp_path):
    """dynamo tracing a stage takes seconds of CPU inside a streamed block's GPU work: another
    process's timed section runs meanwhile, but not while a compiled graph runs (GPU work
    again) nor after the tracing (the block's GPU work holds the lock again)."""
    path = str(tmp_path / "gpu.lock")
    a, b = _GpuLock(path), _GpuLock(path)
    done: list[str] = []
    with a.shared():
        with a.suspended():
            _timed_in_thread(b, done, "during cpu work").join(5)
            assert done == ["during cpu work"]
            with a.shared():                     # a graph's run inside the tracing
                t = _timed_in_thread(b, done, "after the graph")
                time.sleep(0.3)
                assert done == ["during cpu work"]
            t.join(5)
            assert done[-1] == "after the graph"
        t = _timed_in_thread(b, done, "after the block")
        time.sleep(0.3)
        assert done[-1] == "after the graph"     # the block's shared lock is back
    t.join(5)
    assert done[-1] == "after the block"


def test_the_compile_check_traces_outside_the_lock_and_runs_graphs_inside(tmp_path, monkeypatch):
    from lltrace.doctor import gpu_lock
    from lltrace.doctor.compile import CompileProbe

    monkeypatch.setenv(gpu_lock.ENV, str(tmp_path / "gpu.lock"))
    monkeypatch.setattr(gpu_lock, "_LOCK", None)
    lock = gpu_lock._lock()
    modes = []

    @torch._dynamo.disable   # runs eagerly, between two graphs
    def between(x):
        modes.append(("eager", lock._mode))
        return x

    def stage(x):
        return between(x * 2) + 1

    from torch._dynamo.backends.debugging import ExplainWithBackend
    real = ExplainWithBackend.__call__

    def spy(self, gm, example_inputs):
        run = real(self, gm, example_inputs)
        return lambda *args: modes.append(("graph", lock._mode)) or run(*args)
    monkeypatch.setattr(ExplainWithBackend, "__call__", spy)
    probe = CompileProbe(stage)
    with gpu_lock.gpu_work():
        probe.first((torch.ones(3),))
        assert lock._mode == "sh"
    assert probe.health.error is None and probe.health.graphs == 2
    assert modes == [("graph", "sh"), ("eager", None), ("graph", "sh")]


def test_a_child_is_done_when_it_exits_not_when_what_it_left_behind_does(tmp_path, monkeypatch):
    """A child that leaves a process behind holding its stderr (a compile worker pool, say) is
    done when it exits, not when the pipe closes; what it left is ended with it."""
    import queue

    pid_file = tmp_path / "left.pid"
    script = ("import json, os, subprocess, sys\n"
              "p = subprocess.Popen(['sleep', '60'], stdout=2)\n"   # stderr, as the child's fd 1 is
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "print(json.dumps({'report': {'ok': 1}}), flush=True)\n"
              "os._exit(0)\n")
    monkeypatch.setattr(isolate, "_child_command", lambda spec: [sys.executable, "-c", script])
    t0 = time.perf_counter()
    run = isolate._run_child({"stages": ["decode"], "compile_check": []}, "decode", dict(os.environ), 60,
                             isolate._Children(), queue.Queue())
    assert time.perf_counter() - t0 < 3 and run.report == {"ok": 1} and run.returncode == 0
    left = int(pid_file.read_text())
    for _ in range(50):   # SIGKILLed; gone once init reaps it
        try:
            os.kill(left, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"process {left} the child left is still running")


def test_a_group_is_done_at_its_report_not_at_its_exit(monkeypatch):
    """A child's exit after its report is its CUDA context's teardown (seconds on the H200, after
    each group's last check): the parent goes on at the report, says the group is done, and
    ends the process in the background."""
    import queue

    script = ("import json, time\n"
              "print(json.dumps({'progress': 'decode: block 1/3'}), flush=True)\n"
              "print(json.dumps({'report': {'ok': 1}}), flush=True)\n"
              "time.sleep(30)\n")   # a slow teardown
    monkeypatch.setattr(isolate, "_child_command", lambda spec: [sys.executable, "-c", script])
    events: queue.Queue = queue.Queue()
    children = isolate._Children()
    t0 = time.perf_counter()
    run = isolate._run_child({"stages": ["decode"], "compile_check": []}, "decode", dict(os.environ), 60,
                             children, events)
    assert time.perf_counter() - t0 < 5
    assert run.report == {"ok": 1} and run.returncode == 0 and not run.died
    assert [events.get_nowait() for _ in range(events.qsize())] == ["decode: block 1/3", "decode: done"]
    for _ in range(100):   # ended in the background (SIGTERM, at once: it is sleeping)
        if not children._procs:
            break
        time.sleep(0.05)
    assert not children._procs


def test_isolation_by_default_on_cuda_with_more_than_one_group(monkeypatch):
    assert isolate.auto_isolate("cuda", STAGES) and isolate.auto_isolate("cuda", ["recache", "text"])
    assert not isolate.auto_isolate("cuda", ["denoise", "kv_update"])   # one group: nothing to isolate from
    assert not isolate.auto_isolate("cpu", STAGES)
    assert isolate.stage_groups(["kv_update", "recache", "text"]) == [["kv_update"], ["recache"], ["text"]]
    for cores, want in ((16, 4), (2, 1), (1, 1), (6, 3)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert isolate.default_jobs(4) == want


def test_isolate_flags_are_in_help_and_parse(capsys):
    assert main(["doctor", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--isolate / --no-isolate" in out and "fresh process" in out
    assert "--jobs N" in out and "--stage-timeout SECONDS" in out
    for args, message in ((["--module", "json:make", "--isolate"], "--isolate do not apply"),
                          (["--jobs", "0"], "Invalid value for '--jobs'")):
        assert main(["doctor", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@cpu_only
@pytest.mark.slow
def test_ctrl_c_ends_the_children(monkeypatch):
    started: list[subprocess.Popen] = []
    real_add = isolate._Children.add
    monkeypatch.setattr(isolate._Children, "add", lambda self, p: (started.append(p), real_add(self, p)))

    def progress(text):
        if text.endswith("building baseline"):   # the children are up
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diagnose_preset("baseline", STAGES_2, device="cpu", compile_check=False, isolate=True, jobs=2,
                        progress=progress)
    assert started and all(p.poll() is not None for p in started)


def test_a_child_ends_when_the_parent_goes():
    """stdin closing (the parent died, even by SIGKILL) ends a child before it imports torch's world."""
    p = subprocess.Popen([sys.executable, "-c", "import sys; from lltrace.doctor.child import _watch_parent; "
                          "_watch_parent(); import time; time.sleep(60)"],
                         stdin=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    p.stdin.close()
    assert p.wait(30) == 1
