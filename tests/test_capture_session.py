"""Headless session end to end on CPU: run directory contents, trace nesting, recompiles,
errors, Ctrl-C / SIGTERM in a subprocess, py-spy."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lltrace.capture import pyspy as pyspy_mod
from lltrace.capture.session import Session, blocks_for_frames, run_session, switch_block
from lltrace.errors import LltraceError
from lltrace.pipeline.vae import video_frames
import helpers
from helpers.fake_pipeline import FakePipeline, instrument_cache

TESTS = Path(helpers.__file__).resolve().parent.parent   # the folder that holds helpers/
FRAME_FIELDS = {"frame", "block", "prompt", "kind", "ready_s", "latency_ms", "block_ms", "frames_in_block", "clock"}
COLD_FIELDS = {"compile_ms", "graph_capture_ms"}   # only on blocks that compiled / captured a graph


def frame_fields_ok(f: dict) -> bool:
    return FRAME_FIELDS <= set(f) <= FRAME_FIELDS | COLD_FIELDS


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_trace_events(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return json.load(f)["traceEvents"]


def parents(events: list[dict]) -> dict[str, set]:
    """For each ll/ region name: the names of the innermost ll/ ranges containing it."""
    ranges = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
                     and e["name"].startswith("ll/") and e["name"] != "ll/clock_sync"),
                    key=lambda e: (e["ts"], -e["dur"]))
    out: dict[str, set] = {}
    for e in ranges:
        enclosing = [o for o in ranges if o is not e and o["tid"] == e["tid"] and o["ts"] <= e["ts"]
                     and e["ts"] + e["dur"] <= o["ts"] + o["dur"] and o["dur"] > e["dur"]]
        p = min(enclosing, key=lambda o: o["dur"])["name"] if enclosing else None
        out.setdefault(e["name"], set()).add(p)
    return out


def test_frame_block_helpers():
    assert [video_frames(3, first_block=i == 0) for i in range(3)] == [9, 12, 12]
    assert blocks_for_frames(9, 3) == 1 and blocks_for_frames(10, 3) == 2 and blocks_for_frames(33, 3) == 3
    assert switch_block(9, 3) == 1 and switch_block(10, 3) == 2 and switch_block(21, 3) == 2
    with pytest.raises(LltraceError):
        blocks_for_frames(0, 3)


def test_bad_arguments_are_user_errors(tmp_path):
    pipe = FakePipeline()
    with pytest.raises(LltraceError, match="outside the run"):
        Session(pipe, num_blocks=3, prompt="a", switches={3: "b"}, run_dir=tmp_path)
    with pytest.raises(LltraceError, match="outside the run"):
        Session(pipe, num_blocks=3, prompt="a", switches={0: "b"}, run_dir=tmp_path)
    with pytest.raises(LltraceError, match="last block"):
        Session(pipe, num_blocks=3, prompt="a", profile_blocks=(1, 5), run_dir=tmp_path)
    with pytest.raises(LltraceError, match="bad regions level"):
        Session(pipe, num_blocks=3, prompt="a", regions_level="kernel", run_dir=tmp_path)


def test_headless_run_writes_a_complete_run_directory(tmp_path):
    import torch

    torch._dynamo.reset()  # compiled code is cached per code object: start from none
    decode_s = 0.02
    pipe = FakePipeline(layers=2, compiled_int=True, delay_s=decode_s)   # the decode sleeps decode_s
    block_host = {}   # block -> (perf_counter_ns when generate_block was called, when it returned)
    generate = pipe.generate_block

    def timed_generate():
        start = time.perf_counter_ns()
        out = generate()
        block_host[out.index] = (start, time.perf_counter_ns())
        return out

    pipe.generate_block = timed_generate
    result = run_session(pipe, num_blocks=5, prompt="a cat", switches={3: "a dog"}, run_dir=tmp_path / "run",
                         profile_blocks=(1, 3), regions_level="op", command=["lltrace", "run"],
                         instrument=instrument_cache)
    run = tmp_path / "run"
    assert result.status == "completed" and result.run_dir == run
    assert {"meta.json", "summary.json", "frames.jsonl", "events.jsonl", "trace.json.gz"} <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert pipe.observer.__class__.__name__ == "PipelineObserver"   # observer and hooks taken off again
    assert not any(m._forward_hooks for m in pipe.generator.modules())
    assert not any("update" in vars(b.self_attn.cache) for b in pipe.generator.blocks)

    meta = json.loads((run / "meta.json").read_text())
    for key in ("lltrace_version", "run_id", "command", "preset", "knobs", "model", "device", "attention_backend",
                "ceilings", "flops", "started", "clock_sync", "profile", "status", "end"):
        assert key in meta, key
    assert meta["status"] == "completed" and meta["end"]["reason"] == "finished"
    assert meta["preset"] == "fake" and meta["command"] == ["lltrace", "run"] and meta["profile"] == {"blocks": [1, 3]}
    assert {"type", "name", "torch", "cuda", "cudnn"} <= set(meta["device"]) and meta["device"]["type"] == "cpu"
    assert meta["clock_sync"]["marker"] == "ll/clock_sync" and meta["attention_backend"] == "sdpa"

    frames = read_lines(run / "frames.jsonl")
    assert len(frames) == 9 + 4 * 12 and all(frame_fields_ok(f) for f in frames)
    assert [f["frame"] for f in frames] == list(range(57))
    assert [f["kind"] for f in frames[::12][:1]] == ["first"] and {f["kind"] for f in frames if f["block"] == 3} == {"switch"}
    assert {f["prompt"] for f in frames if f["block"] >= 3} == {1}
    # The frame clock agrees with wall time, on the run's host clock (t0): each block's frames are
    # stamped after its decode (which sleeps decode_s) and before generate_block returned. Bounds
    # measured around the call, not a tolerance: a loaded machine only widens them.
    t0 = meta["t0"]["perf_counter_ns"]
    for block in range(5):
        ready = next(f["ready_s"] for f in frames if f["block"] == block)
        start, end = ((t - t0) / 1e9 for t in block_host[block])
        assert start + decode_s <= ready + 1e-6 and ready <= end + 1e-6, (block, start, ready, end)

    events = read_lines(run / "events.jsonl")
    kinds = [e["kind"] for e in events]
    recompile = next(e for e in events if e["kind"] == "recompile")
    # the message summarizes the guard; the raw text stays in data
    assert "i changed (was 0)" in recompile["message"] and any("i == 0" in r for r in recompile["data"]["reasons"])
    assert recompile["t_s"] > 0 and recompile["time_ns"] > 0
    switch = [e for e in events if e["kind"] == "prompt_switch"]
    assert [e["data"]["phase"] for e in switch] == ["requested", "done"]
    assert "profile_window" in kinds
    assert [e["t_s"] for e in events] == sorted(e["t_s"] for e in events)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["frames"] == 57 and summary["blocks"] == 5 and summary["partial"] is False
    assert set(summary["ms_per_frame"]) == {"mean", "p50", "p95", "p99"} and summary["fps"] > 0
    assert len(summary["prompt_switch_ms"]) == 1 and summary["first_frame_ms"] > 0

    # Region names nest as FORMATS.md §1 says, in the real CPU trace of blocks 1..2.
    trace_events = load_trace_events(run / "trace.json.gz")
    nest = parents(trace_events)
    assert {n for n in nest if n.startswith("ll/block[")} == {"ll/block[1]", "ll/block[2]"}
    for name in ("ll/noise", "ll/step[0]", "ll/step[1]", "ll/context", "ll/decode"):
        assert nest[name] == {"ll/block[1]", "ll/block[2]"}, name
    assert nest["ll/embed"] == nest["ll/head"] == {"ll/step[0]", "ll/step[1]", "ll/context"}
    assert nest["ll/layer[0]"] == nest["ll/layer[1]"] == {"ll/step[0]", "ll/step[1]", "ll/context"}
    for op in ("ll/self_attn", "ll/cross_attn", "ll/ffn", "ll/norm"):
        assert nest[op] == {"ll/layer[0]", "ll/layer[1]"}, op
    assert nest["ll/kv_update"] == {"ll/self_attn"}


def test_an_exception_still_leaves_a_readable_run_directory(tmp_path):
    pipe = FakePipeline(fail_at=2)
    with pytest.raises(RuntimeError, match="fake failure in block 2"):
        run_session(pipe, num_blocks=5, prompt="a", run_dir=tmp_path, profile_blocks=(1, 4))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "error" and meta["end"]["reason"] == "RuntimeError"
    assert "fake failure in block 2" in meta["end"]["message"]
    assert {f["block"] for f in read_lines(tmp_path / "frames.jsonl")} == {0, 1}
    assert meta["profile_windows"] == [{"blocks": [1, 3], "file": "trace.json.gz", "partial": True}]
    names = {e.get("name") for e in load_trace_events(tmp_path / "trace.json.gz")}
    assert {"ll/block[1]", "ll/block[2]"} <= names   # the failing block is in the trace, cut short
    assert json.loads((tmp_path / "summary.json").read_text())["partial"] is True
    assert any(e["kind"] == "note" and "fake failure" in e["message"] for e in read_lines(tmp_path / "events.jsonl"))


def test_stop_request_ends_after_the_current_block(tmp_path):
    session = None

    def on_block(out):
        if out.index == 1:
            session.request_stop()

    session = Session(FakePipeline(), num_blocks=10, prompt="a", run_dir=tmp_path,
                      listeners=[SimpleNamespace(on_block=on_block)])
    result = session.run()
    assert result.status == "interrupted" and result.reason == "stopped" and result.stats.blocks == 2


def _signal_self(sig) -> None:
    """Deliver `sig` to this process and give Python's handler the bytecode boundary it runs at.
    With the collector off: a KeyboardInterrupt landing in a gc callback (hypothesis installs
    one in this process) is dropped by Python with a warning; the session copes, the log need not."""
    import gc

    was_on = gc.isenabled()
    gc.disable()
    try:
        os.kill(os.getpid(), sig)
        time.sleep(0.2)
    finally:
        if was_on:
            gc.enable()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_swallowed_interrupt_still_ends_the_run(tmp_path, sig):
    """The KeyboardInterrupt of a Ctrl-C lands wherever Python is; code that catches
    BaseException there (libraries do; finalizers always drop it) must not keep the run going."""
    def on_block(out):
        if out.index == 1:
            try:
                _signal_self(sig)
            except KeyboardInterrupt:
                pass

    result = run_session(FakePipeline(), num_blocks=10, prompt="a", run_dir=tmp_path,
                         listeners=[SimpleNamespace(on_block=on_block)])
    assert result.status == "interrupted" and result.stats.blocks == 2
    assert result.reason == ("sigint" if sig == signal.SIGINT else "sigterm")
    assert any(e.kind == "note" and "swallowed" in e.message for e in result.events)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["end"]["reason"] == result.reason
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handlers given back


def test_ctrl_c_during_a_profiler_transition_waits_for_it(tmp_path, monkeypatch):
    """A Ctrl-C in the middle of torch.profiler's step (here: as the window starts recording) is
    raised once the step is done, so the window is still saved, cut short, with its blocks."""
    from torch.profiler import profile

    transit = profile._transit_action
    sent = []

    def interrupted_transit(self, prev, current):
        if not sent and current is not None and "RECORD" in str(current):
            sent.append(current)
            _signal_self(signal.SIGINT)     # lands between the profiler's state changes
        return transit(self, prev, current)

    monkeypatch.setattr(profile, "_transit_action", interrupted_transit)
    result = run_session(FakePipeline(), num_blocks=6, prompt="a", run_dir=tmp_path, profile_blocks=(1, 4))
    assert sent and result.status == "interrupted" and result.reason == "sigint"
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["profile_windows"] == [{"blocks": [1, 1], "file": "trace.json.gz", "partial": True}]
    assert "ll/clock_sync" in {e.get("name") for e in load_trace_events(tmp_path / "trace.json.gz")}
    assert not [e for e in result.events if e.kind == "note" and e.data.get("source") == "finalize"]


def test_meta_names_the_process_that_writes_the_run(tmp_path):
    import platform

    run_session(FakePipeline(), num_blocks=1, prompt="a", run_dir=tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["pid"] == os.getpid() and meta["host"] == platform.node()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_run_leaves_a_readable_run_directory(tmp_path, sig, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "helpers.fake_pipeline", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])})
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:                 # blocks stream out; interrupt mid-run
            if line.strip() == "block 4" or time.monotonic() > deadline:
                break
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)     # the child's faulthandler prints where it is
            time.sleep(1)
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the run went on after {sig.name}: {out.count('block')} more blocks; its stacks:\n"
                        f"{err[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "status interrupted" in out
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["end"]["reason"] == ("sigint" if sig == signal.SIGINT else "sigterm")
    frames = read_lines(run / "frames.jsonl")           # every line complete
    assert len(frames) >= 9 + 4 * 12 and all(frame_fields_ok(f) for f in frames)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["partial"] is True and summary["frames"] == len(frames)
    window = meta["profile_windows"][0]
    assert window["partial"] is True and window["blocks"][0] == 1
    names = {e.get("name") for e in load_trace_events(run / "trace.json.gz")}
    assert {"ll/block[1]", "ll/block[4]", "ll/clock_sync"} <= names
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    # ... and `lltrace budget` reads it.
    from lltrace.commands.cli import main

    capsys.readouterr()
    assert main(["budget", str(run), "--json"]) == 0, capsys.readouterr().err
    budget = json.loads(capsys.readouterr().out)
    block = next(c for c in budget["tree"]["children"] if c["name"] == "block")
    assert block["count"] >= 4 and block["cpu_ms"] > 0


def test_a_sigkilled_run_reads_as_killed(tmp_path):
    """SIGKILL leaves meta.json at status "running" with no end: readers see the writer's pid
    gone and say "killed (no end record)" instead of "running" forever."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "helpers.fake_pipeline", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])})
    try:
        for line in proc.stdout:
            if line.strip() == "block 2":
                break
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "running" and meta["end"] is None and meta["pid"] == proc.pid
    from lltrace.ui.recorded import load_recorded

    rec = load_recorded(run)
    assert rec.meta["status"] == "killed" and any("killed (no end record)" in w for w in rec.warnings)
    assert rec.stats is not None and rec.stats.frames >= 9   # recomputed from frames.jsonl


def test_py_spy_missing_is_a_note_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy_mod, "find_pyspy", lambda: None)
    result = run_session(FakePipeline(), num_blocks=2, prompt="a", run_dir=tmp_path, py_spy=True)
    assert result.status == "completed"
    notes = [e for e in read_lines(tmp_path / "events.jsonl") if e["kind"] == "note"]
    assert any("py-spy is not installed" in e["message"] for e in notes)
    assert not (tmp_path / "pyspy.json").exists()


def test_py_spy_records_host_stacks_or_says_why(tmp_path):
    if pyspy_mod.find_pyspy() is None:
        pytest.skip("py-spy is not installed")
    result = run_session(FakePipeline(delay_s=0.1, spin=True), num_blocks=4, prompt="a", run_dir=tmp_path, py_spy=True)
    assert result.status == "completed"
    notes = [e for e in read_lines(tmp_path / "events.jsonl") if e["kind"] == "note" and e["data"].get("source") == "py-spy"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    if (tmp_path / "pyspy.json").exists():
        samples = json.loads((tmp_path / "pyspy.json").read_text())
        assert samples and all(s["cat"] == "py-spy" for s in samples)
        assert any("generate_block" in s["name"] for s in samples)
        assert meta["pyspy"]["started"]["time_ns"] > 0
    else:   # e.g. no ptrace permission in this container: the run says so
        assert any("py-spy" in e["message"] and ("exited" in e["message"] or "no trace" in e["message"])
                   for e in notes), notes


def tiny_streaming_pipeline():
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("baseline"))
    return StreamingPipeline(preset, model="tiny", device="cpu")


@pytest.mark.slow
def test_session_drives_the_real_pipeline(tmp_path):
    """lltrace's own StreamingPipeline (tiny model, CPU): the same regions, KV update included."""
    pipe = tiny_streaming_pipeline()
    result = run_session(pipe, num_blocks=4, prompt="a cat", switches={2: "a dog"}, run_dir=tmp_path,
                         profile_blocks=(1, 3))
    assert result.status == "completed"
    frames = read_lines(tmp_path / "frames.jsonl")
    assert len(frames) == result.summary["frames"] > 0
    assert [f["kind"] for f in frames if f["block"] == 2][0] == "switch"
    assert ("DynamicKVCache.update", "ll/kv_update") in result.instrumented
    assert "update" not in vars(pipe.kv_cache)                     # unwrapped again
    nest = parents(load_trace_events(tmp_path / "trace.json.gz"))
    assert nest["ll/recache"] == {None} and nest["ll/step[3]"] == {"ll/block[1]", "ll/block[2]"}
    assert nest["ll/layer[1]"] == {"ll/step[0]", "ll/step[1]", "ll/step[2]", "ll/step[3]", "ll/context",
                                   "ll/recache"}
    assert nest["ll/kv_update"] == {"ll/self_attn"} and nest["ll/ffn"] == {"ll/layer[0]", "ll/layer[1]"}
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["preset"] == "baseline" and meta["attention_backend"] == "sdpa"
    assert meta["model"]["name"] == "tiny" and "name" not in meta["knobs"]


@pytest.mark.slow
def test_regionally_compiled_real_pipeline_shows_recompiles_and_keeps_layer_regions(tmp_path):
    """What the `balanced` preset does on a GPU (block.compile() per block, the KV update left
    eager), with the eager backend so it takes seconds on a CPU."""
    import torch

    torch._dynamo.reset()
    pipe = tiny_streaming_pipeline()
    pipe.kv_cache.update = torch.compiler.disable(pipe.kv_cache.update, recursive=True)
    for block in pipe.generator.blocks:
        block.compile(backend="eager")
    result = run_session(pipe, num_blocks=3, prompt="a cat", run_dir=tmp_path, profile_blocks=(1, 3))
    assert result.status == "completed"
    installed = dict(result.instrumented)
    assert installed["blocks.0"] == "ll/layer[0]" and "blocks.0.ffn" not in installed
    names = {e.get("name") for e in load_trace_events(tmp_path / "trace.json.gz")}
    assert {"ll/layer[0]", "ll/layer[1]", "ll/kv_update", "ll/step[0]"} <= names
    assert "ll/ffn" not in names                       # inside the compiled block: not claimed
    events = read_lines(tmp_path / "events.jsonl")
    assert any(e["kind"] == "note" and "compiled modules" in e["message"] for e in events)
    reasons = [r for e in events if e["kind"] == "recompile" for r in e["data"]["reasons"]]
    assert any("layer_idx" in r for r in reasons)      # the int layer index recompiles the block
    assert any(e["kind"] == "graph_break" and "model.py" in e["data"]["where"] for e in events)
