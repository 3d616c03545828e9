"""Steady statistics leave the profiler out: the blocks a profiler window warms up for and
records, and the block after it (it pays for exporting the trace), are `profiled`, not `steady`."""
import json

import pytest

from lltrace.capture.session import run_session
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import cpu_fallback, load_preset


def test_profiled_blocks_and_the_trace_save_are_not_steady(tmp_path):
    preset, _ = cpu_fallback(load_preset("baseline", {"decoder": "fast"}))
    pipe = StreamingPipeline(preset, model="tiny", device="cpu")
    res = run_session(pipe, num_blocks=6, prompt="a cat", run_dir=tmp_path / "run", profile_blocks=(2, 4),
                      regions_level="block", handle_signals=False)
    frames = [json.loads(line) for line in (tmp_path / "run" / "frames.jsonl").read_text().splitlines()]
    kind = {f["block"]: f["kind"] for f in frames}
    # block 1: the profiler's warm-up step; 2-3 recorded; 4 pays for the trace's export
    assert kind == {0: "first", 1: "profiled", 2: "profiled", 3: "profiled", 4: "profiled", 5: "steady"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steady_frames"] == 12 and summary["profiled_frames"] == 4 * 12
    steady = [f["latency_ms"] for f in frames if f["block"] == 5]
    assert summary["ms_per_frame"]["p99"] == pytest.approx(steady[0], abs=1e-5)
    assert res.stats.profiled_frames == 48
