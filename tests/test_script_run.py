"""Profiling code lltrace did not write (issue #15): `lltrace run --script` and `lltrace.profile`
on the project's own foreign-style pipeline (tests/helpers/foreign_pipeline.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.foreign_pipeline import FPB, ForeignPipeline, make_noise
from torch import nn

import lltrace
from lltrace.commands.cli import main
from lltrace.pipeline.vae import video_frames
from lltrace.trace.budget import load_budget

SCRIPT = Path(__file__).parent / "data" / "foreign_script.py"
REPO = Path(__file__).resolve().parents[1]


def latent_frames(blocks: int) -> int:
    return sum(video_frames(FPB, first_block=b == 0) for b in range(blocks))


def child(node, name):
    return next((c for c in node.children if c.name == name), None)


def names_of(node):
    return [c.name for c in node.children]


def read(run: Path, name: str):
    return json.loads((run / name).read_text())


def frames(run: Path):
    return [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]


def test_script_run_finds_blocks_steps_context_and_the_video_decode(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--script", str(SCRIPT), "--profile-blocks", "1:2", "-o", str(out), "--json",
                 "--", "--blocks", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)                         # the script's print went to stderr
    assert "video (1, 33, 3, 8, 8)" in captured.err
    assert summary["status"] == "completed" and summary["blocks"] == 3
    # decode at the end of the video: frames come from each block's latent frames
    assert summary["frames"] == latent_frames(3) == 33
    meta = read(out, "meta.json")
    assert meta["source"] == "script" and meta["script"] == {"path": str(SCRIPT), "args": ["--blocks", "3"]}
    assert meta["root"]["class"].endswith("DiffusionWrapper") and meta["root"]["timestep_arg"] == "timestep"
    assert meta["num_blocks"] == 3 and meta["frames_from"] == ["latent"] and meta["status"] == "completed"
    assert meta["profile_windows"][0]["blocks"] == [1, 2]
    assert [f["block"] for f in frames(out)] == [0] * 9 + [1] * 12 + [2] * 12

    tree = load_budget(out).tree
    block = child(tree, "block")
    assert block is not None and block.count == 1            # the window recorded block 1 only
    assert names_of(block)[:5] == ["step[0]", "step[1]", "step[2]", "step[3]", "context"]
    step = child(block, "step[0]")
    assert {"layer[0]", "layer[1]", "embed", "head"} <= set(names_of(step))
    layer = child(step, "layer[0]")
    assert {"self_attn", "cross_attn", "ffn", "norm"} <= set(names_of(layer))
    assert child(block, "decode") is None                      # the video's decode is no block's


def test_script_per_block_decode_gives_the_frames_and_nests_in_the_block(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--script", str(SCRIPT), "--profile-blocks", "0:2", "-o", str(out), "--json",
                 "--regions", "layer", "--", "--blocks", "2", "--decode", "block"]) == 0
    capsys.readouterr()
    meta = read(out, "meta.json")
    assert meta["frames_from"] == ["decode"] and meta["num_blocks"] == 2
    assert [f["frames_in_block"] for f in frames(out)] == [9] * 9 + [12] * 12   # the decoder's output
    block = child(load_budget(out).tree, "block")
    assert block.count == 2 and "decode" in names_of(block)
    layer = child(child(block, "step[0]"), "layer[0]")
    assert layer is not None and not any(n in names_of(layer) for n in ("self_attn", "ffn"))   # --regions layer


def test_script_prompt_switch_is_a_recache(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--script", str(SCRIPT), "--profile-blocks", "1:3", "-o", str(out), "--json",
                 "--", "--blocks", "3", "--switch-at", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["prompt_switch_ms"]) == 1
    assert read(out, "meta.json")["switches"] == {"2": ""}
    assert [f["kind"] for f in frames(out) if f["block"] == 2] == ["switch"] * 12
    tree = load_budget(out).tree
    recache = child(tree, "recache")
    assert recache is not None and recache.count == 1 and "layer[0]" in names_of(recache)
    assert child(tree, "block").count == 2


def test_block_fn_names_the_blocks_and_a_noisy_context_call_still_splits_them(tmp_path, capsys):
    # the cache-writing call at timestep 100: not "clean", so it is no ll/context; the next
    # block's first step (1000, not below 100) still starts a block
    out = tmp_path / "detected"
    assert main(["run", "--script", str(SCRIPT), "--profile-blocks", "1:2", "-o", str(out), "--json",
                 "--", "--blocks", "3", "--context-noise", "100"]) == 0
    capsys.readouterr()
    block = child(load_budget(out).tree, "block")
    assert read(out, "meta.json")["num_blocks"] == 3
    assert names_of(block)[:5] == ["step[0]", "step[1]", "step[2]", "step[3]", "step[4]"]
    # --block-fn: each call of generate_block is one block, its own decode included
    out = tmp_path / "by-fn"
    assert main(["run", "--script", str(SCRIPT), "--profile-blocks", "1:2", "-o", str(out), "--json",
                 "--block-fn", "helpers.foreign_pipeline:ForeignPipeline.generate_block",
                 "--", "--blocks", "3", "--decode", "block"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["blocks"] == 3 and summary["frames"] == 33
    assert read(out, "meta.json")["frames_from"] == ["decode"]
    block = child(load_budget(out).tree, "block")
    assert names_of(block)[:5] == ["step[0]", "step[1]", "step[2]", "step[3]", "context"]
    assert "decode" in names_of(block)
    from helpers.foreign_pipeline import ForeignPipeline as P
    assert not hasattr(P.generate_block, "_lltrace_wrapper")      # the class is restored


def test_headless_summary_names_the_root_and_says_frames_are_latent_derived(tmp_path, capsys):
    assert main(["run", "--script", str(SCRIPT), "--profile-blocks", "none", "-o", str(tmp_path / "r"),
                 "--headless", "--", "--blocks", "2"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "script foreign_script.py" in text and "21 video frames in 2 blocks" in text
    assert "DiffusionWrapper" in text and "latent-derived" in text
    assert "Traceback" not in text


def test_a_failing_script_shows_its_traceback_and_finalizes_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--script", str(SCRIPT), "--profile-blocks", "none", "-o", str(out),
                 "--", "--blocks", "3", "--fail-at", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "failing on purpose at block 1" in err and "foreign_pipeline.py" in err
    assert "lltrace/capture" not in err and "runpy" not in err      # their stack, not ours
    meta = read(out, "meta.json")
    assert meta["status"] == "error" and meta["end"]["reason"] == "RuntimeError"
    assert read(out, "summary.json")["blocks"] == 1                 # block 0 finished before it
    assert nn.Module.__call__ is torch.nn.modules.module.Module._wrapped_call_impl   # nothing left on


def test_ctrl_c_finalizes_the_run_directory_and_exits_130(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lltrace", "run", "--script", str(SCRIPT), "--profile-blocks",
                             "none", "-o", str(out), "--headless", "--", "--blocks", "60", "--sleep", "0.05"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "frames.jsonl").exists() and (out / "frames.jsonl").read_text().count("\n") >= 9:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    meta = read(out, "meta.json")
    assert meta["status"] == "interrupted" and meta["end"]["reason"] == "sigint"
    summary = read(out, "summary.json")
    assert summary["status"] == "interrupted" and 1 <= summary["blocks"] < 60
    assert b"Traceback" not in err


@pytest.mark.parametrize("args,needle", [
    (["--script", "SCRIPT", "--preset", "ultra"], "mutually exclusive"),
    (["--script", "nope.py"], "no such file"),
    (["--script", "DIR"], "directory"),
    (["--script", "FIFO"], "FIFO"),
    (["--script", "SCRIPT", "--frames", "9"], "--frames applies to --preset"),
    (["--preset", "ultra", "--", "--blocks", "2"], "go to a --script"),
    (["--preset", "ultra", "--block-fn", "a:b"], "--block-fn applies to --script"),
    (["--script", "SCRIPT", "--block-fn", "nomodule"], "MODULE:QUALNAME"),
    (["--script", "SCRIPT", "--block-fn", "no_such_module_x:f"], "cannot import"),
    (["--script", "SCRIPT", "--regions-map", "MAP_BAD_YAML"], "not valid YAML"),
    (["--script", "SCRIPT", "--regions-map", "MAP_BAD_REGION"], "not an lltrace region"),
    (["--script", "SCRIPT", "--regions-map", "nope.yaml"], "cannot read"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, args, needle):
    (tmp_path / "bad.yaml").write_text("blocks.{k}: [unclosed\n")
    os.mkfifo(tmp_path / "fifo.py")
    (tmp_path / "region.yaml").write_text("transformer_blocks.{k}: my/layer[{k}]\n")
    subs = {"SCRIPT": str(SCRIPT), "DIR": str(tmp_path), "FIFO": str(tmp_path / "fifo.py"), "MAP_BAD_YAML": str(tmp_path / "bad.yaml"),
            "MAP_BAD_REGION": str(tmp_path / "region.yaml")}
    argv = ["run", *(subs.get(a, a) for a in args), "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert nn.Module.__call__ is torch.nn.modules.module.Module._wrapped_call_impl
    assert not (tmp_path / "out").exists()          # a mistake leaves no run directory behind


def test_api_profiles_a_pipeline_object_into_the_same_run_directory(tmp_path):
    pipe = ForeignPipeline()
    with lltrace.profile(pipe, out=tmp_path / "api", profile_blocks=(1, 2)) as run:
        video = pipe.inference(make_noise(3), decode="block")
    assert video.shape[1] == 33
    r = run.result
    assert r.status == "completed" and r.summary["blocks"] == 3 and r.summary["frames"] == 33
    meta = read(r.run_dir, "meta.json")
    assert meta["source"] == "api" and meta["target"] == "ForeignPipeline" and meta["frames_from"] == ["decode"]
    assert meta["decoders"] and meta["decoders"][0].startswith("vae (TinyVAE")
    block = child(load_budget(r.run_dir).tree, "block")
    assert names_of(block)[:5] == ["step[0]", "step[1]", "step[2]", "step[3]", "context"]
    # nothing of lltrace is left on the user's objects
    assert not any("forward" in vars(m) or m._forward_pre_hooks or m._forward_hooks for m in pipe.modules())
    assert "decode_to_pixel" not in vars(pipe.vae) and "_recache_after_switch" not in vars(pipe)


def test_api_op_hooks_are_on_only_while_the_profiler_window_is(tmp_path):
    pipe = ForeignPipeline()
    layer = pipe.generator.model.blocks[0]
    seen = set()
    with lltrace.profile(pipe, out=tmp_path / "api", profile_blocks=(2, 3)) as run:
        def probe(module, args):   # at each forward: (block, op regions on, layer regions on)
            seen.add((run.detector.block_index, "forward" in vars(layer.self_attn), "forward" in vars(layer)))

        h = pipe.generator.model.register_forward_pre_hook(probe)
        pipe.inference(make_noise(4))
        h.remove()
    # window 2:3: block 1 warms the profiler up, block 2 is recorded; ops are hooked for those only
    assert seen == {(0, False, True), (1, True, True), (2, True, True), (3, False, True)}
    assert "forward" not in vars(layer) and "forward" not in vars(layer.self_attn)


def test_api_error_is_reraised_with_status_error(tmp_path):
    pipe = ForeignPipeline()
    with pytest.raises(RuntimeError, match="on purpose"), \
            lltrace.profile(pipe, out=tmp_path / "api", profile_blocks=None):
        pipe.inference(make_noise(2), fail_at_block=1)
    meta = read(tmp_path / "api", "meta.json")
    assert meta["status"] == "error" and meta["num_blocks"] == 1


def test_api_regions_block_and_a_regions_map(tmp_path):
    pipe = ForeignPipeline()
    with lltrace.profile(pipe.generator, out=tmp_path / "b", profile_blocks=(0, 1), regions="block"):
        pipe.inference(make_noise(1))
    step = child(child(load_budget(tmp_path / "b").tree, "block"), "step[0]")
    assert step is not None and not any(n.startswith("layer") for n in names_of(step))
    with lltrace.profile(pipe.generator, out=tmp_path / "m", profile_blocks=(0, 1),
                         regions_map=[("blocks.*.ffn", "ll/head")]):
        pipe.inference(make_noise(1))
    layer = child(child(child(load_budget(tmp_path / "m").tree, "block"), "step[0]"), "layer[0]")
    assert "head" in names_of(layer) and "ffn" not in names_of(layer)   # the map comes first


def test_import_lltrace_stays_cheap_and_profile_is_lazy():
    code = ("import sys, lltrace; assert 'torch' not in sys.modules; assert callable(lltrace.profile); "
            "assert 'torch' not in sys.modules, 'torch comes with the first profile() call only'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_layer_and_op_regions_keep_nn_modules_fast_path():
    """Host-bound code pays for every hook microsecond: plain modules get their forward wrapped
    on the instance (no hooks, so nn.Module skips its hook machinery), and nothing is left after."""
    from lltrace.capture.hooks import instrument_module

    model = ForeignPipeline(layers=1).generator
    handle = instrument_module(model, "op")
    mods = [m for name, m in model.named_modules() if name in dict(handle.installed)]
    assert len(mods) >= 6 and all("forward" in vars(m) for m in mods)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    handle.remove()
    assert not any("forward" in vars(m) for m in model.modules())


def test_api_ctrl_c_finalizes_the_run_and_is_reraised(tmp_path):
    pipe = ForeignPipeline()
    calls = []

    def interrupt_in_block_1(module, args):   # Ctrl-C lands in the user's code, mid-block
        calls.append(1)
        if len(calls) == 7:                      # block 0 = 5 calls; the 2nd step of block 1
            raise KeyboardInterrupt

    h = pipe.generator.model.register_forward_pre_hook(interrupt_in_block_1)
    with pytest.raises(KeyboardInterrupt), lltrace.profile(pipe, out=tmp_path / "api", profile_blocks=None):
        pipe.inference(make_noise(3))
    h.remove()
    meta = read(tmp_path / "api", "meta.json")
    assert meta["status"] == "interrupted" and meta["end"]["reason"] == "sigint"
    assert meta["end"]["message"] == "interrupted during block 1" and meta["num_blocks"] == 1
    assert read(tmp_path / "api", "summary.json")["blocks"] == 1


def test_regions_map_file_parses_in_order(tmp_path):
    from lltrace.commands.params import REGIONS_MAP

    f = tmp_path / "map.yaml"
    f.write_text("transformer_blocks.{k}: ll/layer[{k}]\ntransformer_blocks.*.attn1: ll/self_attn\n")
    assert REGIONS_MAP.convert(str(f), None, None) == (("transformer_blocks.{k}", "ll/layer[{k}]"),
                                                       ("transformer_blocks.*.attn1", "ll/self_attn"))
    f.write_text("- [blocks.*.mlp, ll/ffn]\n")
    assert REGIONS_MAP.convert(str(f), None, None) == (("blocks.*.mlp", "ll/ffn"),)
