"""A recorded run directory with FIXED numbers (FORMATS.md §2 files and a small CPU-only
Kineto-shaped trace with ll/ regions), for the view tests and the UI snapshots, and `plain()`,
what a rich renderable shows as text."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from lltrace.capture.frame_clock import FrameRecord, clock_stats

PID = TID = 4242
RUN_ID = "20260101-120000-ultra"


class _Trace:
    """Host ranges on one thread, µs, nested by time like torch.profiler writes them."""

    def __init__(self):
        self.t = 1_000_000.0
        self.ext = 0
        self.events: list[dict] = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
                                    "args": {"name": "python"}}]

    def span(self, name: str, cat: str, inner, gap: float = 1.0):
        start = self.t
        self.t += gap
        inner()
        self.t += gap
        self.ext += 1
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": PID, "tid": TID, "ts": start,
                            "dur": self.t - start, "args": {"External id": self.ext}})
        self.t += gap

    def op(self, name: str, dur: float):
        return lambda: self.span(name, "cpu_op", lambda: setattr(self, "t", self.t + dur), gap=0.0)


def synthetic_cpu_trace(blocks=(2, 3), steps: int = 2, layers: int = 2) -> dict:
    tr = _Trace()

    def layer():
        tr.span("ll/norm", "user_annotation", tr.op("aten::layer_norm", 40.0))
        tr.span("ll/self_attn", "user_annotation",
                lambda: (tr.op("aten::mm", 300.0)(), tr.span("ll/kv_update", "user_annotation",
                                                              tr.op("aten::copy_", 20.0)),
                         tr.op("aten::scaled_dot_product_attention", 500.0)()))
        tr.span("ll/cross_attn", "user_annotation", tr.op("aten::mm", 200.0))
        tr.span("ll/ffn", "user_annotation", lambda: (tr.op("aten::mm", 400.0)(), tr.op("aten::gelu", 60.0)()))

    def forward():
        tr.span("ll/embed", "user_annotation", tr.op("aten::linear", 50.0))
        for k in range(layers):
            tr.span(f"ll/layer[{k}]", "user_annotation", layer)
        tr.span("ll/head", "user_annotation", tr.op("aten::linear", 30.0))

    def block():
        tr.span("ll/noise", "user_annotation", tr.op("aten::randn", 10.0))
        for j in range(steps):
            tr.span(f"ll/step[{j}]", "user_annotation", forward)
        tr.span("ll/context", "user_annotation", forward)
        tr.span("ll/decode", "user_annotation", tr.op("aten::conv3d", 900.0))

    tr.span("ll/clock_sync", "user_annotation", lambda: None, gap=0.0)
    for b in range(*blocks):
        tr.span(f"ll/block[{b}]", "user_annotation", block)
    return {"schemaVersion": 1, "traceEvents": tr.events, "baseTimeNanoseconds": 1_700_000_000_000_000_000}


def _frames() -> list[dict]:
    out, frame, ready = [], 0, 0.0
    block_ms = [240.0, 60.0, 48.0, 150.0, 50.0, 54.0]   # block 3 is the first after a switch
    for b, ms in enumerate(block_ms):
        n = 9 if b == 0 else 12
        ready += ms / 1e3
        kind = "first" if b == 0 else ("switch" if b == 3 else "steady")
        for _ in range(n):
            out.append({"frame": frame, "block": b, "prompt": 0 if b < 3 else 1, "kind": kind,
                        "ready_s": round(ready, 6), "latency_ms": round(ms / n, 6), "block_ms": ms,
                        "frames_in_block": n, "clock": "cuda"})
            frame += 1
    return out


EVENTS = [
    {"t_s": -0.5, "time_ns": 1, "kind": "compile", "message": "compiled forward (3 ops)",
     "data": {"compile_id": "0/0", "co_name": "forward", "graph_op_count": 3}},
    {"t_s": 0.301, "time_ns": 2, "kind": "recompile", "message": "recompile of forward",
     "data": {"compile_id": "0/1", "function": {"name": "forward", "file": "model.py", "line": 210},
              "reasons": ["start == 4680  # kv_cache.local_end_index"]}},
    {"t_s": 0.302, "time_ns": 3, "kind": "graph_break", "message": "graph break: Tensor.item()",
     "data": {"compile_id": "0/1", "where": "kv_cache.py:88", "reason": "Tensor.item()"}},
    {"t_s": 0.35, "time_ns": 4, "kind": "cudagraph_skip", "message": "skipping cudagraphs due to mutated inputs",
     "data": {"reason": "mutated inputs (1 instances)", "logger": "perf_hints"}},
    {"t_s": 0.36, "time_ns": 5, "kind": "profile_window", "message": "profiling from block 2",
     "data": {"phase": "start", "block": 2, "blocks": [2, 3]}},
    {"t_s": 0.41, "time_ns": 6, "kind": "profile_window", "message": "wrote trace.json.gz (blocks 2..2)",
     "data": {"phase": "saved", "blocks": [2, 3], "file": "trace.json.gz", "partial": False, "bytes": 4096}},
    {"t_s": 0.42, "time_ns": 7, "kind": "prompt_switch", "message": "switch to prompt 1: 'a dog'",
     "data": {"phase": "requested", "prompt": 1, "text": "a dog", "before_block": 3}},
    {"t_s": 0.55, "time_ns": 8, "kind": "prompt_switch", "message": "prompt 1 showing after 132.5 ms",
     "data": {"phase": "done", "prompt": 1, "latency_ms": 132.5, "block": 3, "requested_s": 0.4175}},
]

KNOBS = {"name": "ultra", "model": "wan-1.3b", "description": "", "denoising_steps": [1000, 500],
         "frames_per_block": 3, "local_attn_size": 6, "sink_size": 2, "context_noise": 0, "dtype": "bfloat16",
         "fp8": True, "compile": True, "cuda_graphs": True, "kv_cache": "static", "decoder": "fast",
         "attention": "auto"}


def make_recorded_run(root: Path, *, summary: bool = True, trace: bool = True) -> Path:
    run = root / RUN_ID
    run.mkdir(parents=True)
    frames = _frames()
    meta = {"lltrace_version": "0.1.0", "run_id": RUN_ID, "command": ["lltrace", "run", "--preset", "ultra"],
            "preset": "ultra", "knobs": KNOBS, "model": {"name": "tiny"},
            "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_000_000_000},
            "optimizations": {"fp8_linears": 180, "compiled_blocks": 30,
                              "cuda_graphs": "whole forward per block shape"},
            "status": "completed", "end": {"reason": "finished", "message": "6 blocks"},
            "profile": {"blocks": [2, 3]}, "profile_windows": [{"blocks": [2, 3], "file": "trace.json.gz",
                                                               "partial": False}]}
    (run / "meta.json").write_text(json.dumps(meta, indent=2))
    (run / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    if summary:
        s = clock_stats([FrameRecord.from_json(f) for f in frames], [132.5], "cuda")
        (run / "summary.json").write_text(json.dumps({
            "frames": s.frames, "blocks": s.blocks,
            "ms_per_frame": {"mean": s.mean_ms, "p50": s.p50_ms, "p95": s.p95_ms, "p99": s.p99_ms},
            "fps": s.fps, "first_frame_ms": s.first_frame_ms, "prompt_switch_ms": s.switch_ms,
            "ms_per_block": s.block_ms, "peak_mem_bytes": 21_474_836_480, "peak_host_rss_bytes": 3_221_225_472,
            "partial": False, "status": "completed", "clock": "cuda", "steady_frames": s.steady_frames}))
    if trace:
        with gzip.open(run / "trace.json.gz", "wt") as f:
            json.dump(synthetic_cpu_trace(), f)
    return run


def plain(renderable, width: int = 70) -> str:
    """What a widget's render() shows, as text."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()
