"""`lltrace run` end to end on the CPU: the fallback, the run directory, clear errors."""
import json
from pathlib import Path

import pytest
import torch

from lltrace.commands.cli import main


@pytest.fixture
def traces(tmp_path, monkeypatch):
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    return tmp_path / "traces"


def test_headless_run_falls_back_to_tiny_and_writes_a_complete_run_directory(traces, capsys):
    assert main(["run", "--preset", "ultra", "--frames", "33", "--switch-at", '21:"a dog"', "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    run = Path(out["run_dir"])
    assert run.parent == traces and out["status"] == "completed"
    assert {"trace.json.gz", "frames.jsonl", "events.jsonl", "meta.json", "summary.json"} <= {
        p.name for p in run.iterdir()}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["model"]["name"] == "tiny" and meta["knobs"]["model"] == "tiny"
    assert meta["knobs"]["fp8"] is False and meta["knobs"]["cuda_graphs"] is False  # needs CUDA: off
    frames = [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]
    assert len(frames) == out["frames"] == 9 + 12 + 12
    assert [f["kind"] for f in frames].count("switch") == 12
    assert len(out["prompt_switch_ms"]) == 1


def _tiny_checkpoint(path, drop=None):
    from safetensors.torch import save_file

    from lltrace.pipeline.config import load_model_config
    from lltrace.pipeline.model import CausalWanModel

    sd = {"model." + k: v.contiguous() for k, v in CausalWanModel(load_model_config("tiny")).state_dict().items()}
    if drop:
        sd.pop(drop)
    save_file(sd, str(path))
    return str(path)


def test_run_loads_a_checkpoint_and_names_missing_keys(traces, tmp_path, capsys):
    good = _tiny_checkpoint(tmp_path / "good.safetensors")
    assert main(["run", "--frames", "9", "--weights", good, "--json"]) == 0
    capsys.readouterr()
    bad = _tiny_checkpoint(tmp_path / "bad.safetensors", drop="model.blocks.1.ffn.0.weight")
    assert main(["run", "--frames", "9", "--weights", bad, "--headless"]) == 2
    err = capsys.readouterr().err
    assert "blocks.1.ffn.0.weight" in err and "Traceback" not in err


@pytest.mark.parametrize("args,needle", [
    (["--switch-at", "5"], "FRAME"),
    (["--switch-at", '500:"x"'], "outside the run"),
    (["--preset", "ultraa"], "valid presets"),
    (["--set", "sink_size=99"], "sink_size"),
    (["--profile-blocks", "9:3"], "profile"),
])
def test_bad_input_is_one_line_and_exit_2(traces, capsys, args, needle):
    assert main(["run", "--frames", "21", "--headless", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_run_on_cpu_with_device_cuda_says_so(traces, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", "--device", "cuda", "--frames", "9"]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("flag,doctor", [([], True), (["--no-doctor"], False), (["--doctor"], True)])
def test_doctor_flag_reaches_the_tui(traces, monkeypatch, flag, doctor):
    import sys

    import lltrace.ui.app as app

    seen = []
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)     # as on a terminal: the TUI path
    monkeypatch.setattr(app, "run_live_app", lambda pipe, kwargs, **kw: seen.append(kw["doctor"]))
    assert main(["run", "--frames", "9", *flag]) == 0
    assert seen == [doctor]


def test_out_writes_the_run_directory_there_and_refuses_a_used_one(tmp_path, traces, capsys):
    out = tmp_path / "my-run"
    assert main(["run", "-p", "baseline", "--frames", "12", "--profile-blocks", "none", "-o", str(out),
                 "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["run_dir"]) == out
    assert (out / "meta.json").is_file() and not traces.exists()
    assert main(["run", "-p", "baseline", "--frames", "12", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err
