"""`lltrace bench` on the CPU: the tiny model is timed, GPU-only knobs are switched off with a
note (as `lltrace run` does), the JSON holds every preset done so far, and the warm-up says
where it is (compiles can take minutes on a GPU)."""
import json

import pytest

from lltrace.commands.cli import main


@pytest.mark.slow
def test_bench_times_presets_and_runs_gpu_presets_with_their_gpu_knobs_off(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "-p", "baseline", "-p", "turbo-fp8", "--warmup", "2", "--blocks", "2",
               "--set", "decoder=fast", "--out", str(out), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert json.loads(out.read_text()) == doc        # the file and stdout agree
    base, fp8 = doc["results"]
    assert base["preset"] == "baseline" and base["model"] == "tiny" and base["error"] is None
    assert base["blocks_timed"] == 2 and base["frames_per_block"] == 12   # 3 latent frames -> 12 video frames
    assert base["ms_per_frame"] * base["frames_per_block"] == base["ms_per_block"]
    assert base["ms_per_forward"] > 0 and base["prompt_switch_ms"] > 0 and base["first_frame_ms"] > 0
    assert fp8["preset"] == "turbo-fp8" and fp8["error"] is None
    assert "turbo-fp8: fp8 needs CUDA: off on this CPU run" in " ".join(captured.err.split())
    assert "warm-up block 1/2" in captured.err and "warm-up block 2/2" in captured.err
    assert "no CUDA device" in captured.err


def test_bench_rejects_an_unknown_preset_before_building_anything(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "-p", "baseline", "-p", "warp-speed", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "warp-speed" in err and "baseline" in err and "Traceback" not in err
    assert not out.exists()
