"""Sequence parallelism (issue #19) on the CPU: N gloo ranks compute what one process does."""
import pytest
import torch
from helpers.ranks_workers import sequence_parallel_blocks, tiny_blocks

from lltrace.errors import LltraceError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.parallel import check_split, launch


@pytest.mark.slow
def test_two_ranks_produce_the_one_process_latents_through_a_prompt_switch():
    # baseline's path, and ultra's: the static KV cache with the fused elementwise ops
    knob_sets = [{}, {"kv_cache": "static", "elementwise": "fused"}]
    out = launch(2, sequence_parallel_blocks, knob_sets)
    assert sorted(out) == [0, 1]
    for i, knobs in enumerate(knob_sets):
        ref, ref_cache = tiny_blocks(knobs=knobs)
        for rank in out:
            latents, cache_shape = out[rank][i]
            # each rank's KV cache holds its half of the heads for the whole sequence
            assert cache_shape == (*ref_cache[:2], ref_cache[2] // 2, ref_cache[3])
            assert len(latents) == len(ref) == 2
            for got, want in zip(latents, ref):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_split_is_checked_against_heads_and_frame_tokens():
    tiny = load_model_config("tiny")   # 4 heads, 16 tokens per latent frame
    check_split(tiny, 2)
    check_split(tiny, 4)
    with pytest.raises(LltraceError, match="4 attention heads do not divide into 3"):
        check_split(tiny, 3)
    import dataclasses
    with pytest.raises(LltraceError, match="16 tokens do not divide into 32"):
        check_split(dataclasses.replace(tiny, num_heads=32), 32)


def test_nproc_that_does_not_divide_the_heads_is_a_one_line_error(tmp_path, capsys):
    from lltrace.commands.cli import main

    code = main(["run", "--preset", "baseline", "--nproc", "3", "--device", "cpu", "--frames", "3",
                 "--headless", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--nproc 3" in err and "4 attention heads" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()   # checked before any run directory is made


def test_nproc_with_a_script_is_refused(tmp_path, capsys):
    from lltrace.commands.cli import main

    script = tmp_path / "x.py"
    script.write_text("pass\n")
    assert main(["run", "--script", str(script), "--nproc", "2"]) == 2
    assert "--nproc applies to --preset runs" in capsys.readouterr().err


@pytest.mark.slow
def test_nproc_2_writes_one_run_directory_with_a_trace_per_rank(tmp_path, capsys):
    import gzip
    import json

    from lltrace.commands.cli import main

    run = tmp_path / "run"
    assert main(["run", "--preset", "baseline", "--nproc", "2", "--device", "cpu", "--frames", "3",
                 "--set", "decoder=fast", "--profile-blocks", "0:1", "--json", "-o", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed" and out["ranks"]["world_size"] == 2
    names = {p.name for p in run.iterdir()}
    assert {"trace.json.gz", "trace.rank1.json.gz", "meta.json", "summary.json", "frames.jsonl"} <= names
    assert not any(n.startswith(".rank") for n in names)   # the ranks' scratch directories are gone
    meta = json.loads((run / "meta.json").read_text())
    ranks = meta["ranks"]
    assert ranks["backend"] == "gloo" and ranks["frame_clock_rank"] == 0
    assert ranks["per_rank"]["1"]["traces"] == ["trace.rank1.json.gz"]
    assert "trace.rank1.json.gz" in meta["files"]
    assert all(abs(r["clock_offset_us"]) < 1e6 for r in ranks["per_rank"].values())
    for rank, name in enumerate(("trace.json.gz", "trace.rank1.json.gz")):
        trace = json.loads(gzip.decompress((run / name).read_bytes()))
        assert trace["distributedInfo"]["rank"] == rank and trace["distributedInfo"]["world_size"] == 2
        spans = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
        attn = [e for e in spans if e["name"] == "ll/self_attn"]
        comm = [e for e in spans if e["name"] == "ll/comm"]
        # two all-to-alls inside every self-attention (2 layers x 5 forwards of the block: 4 steps
        # + the KV-cache forward), and each forward's all-gather of the head's output outside
        inside = [c for c in comm if any(a["ts"] <= c["ts"] and c["ts"] + c["dur"] <= a["ts"] + a["dur"]
                                         for a in attn)]
        assert (len(attn), len(inside), len(comm)) == (2 * 5, 2 * 2 * 5, 2 * 2 * 5 + 5)


@pytest.mark.slow
def test_a_mistake_the_ranks_find_is_one_line_without_their_tracebacks(tmp_path, capfd):
    from lltrace.commands.cli import main

    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"")
    run = tmp_path / "run"
    code = main(["run", "--preset", "baseline", "--nproc", "2", "--device", "cpu", "--frames", "3",
                 "--lora", str(lora), "--headless", "-o", str(run)])
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "lltrace: error: --lora needs --weights" in err
    assert not run.exists()   # nothing ran: no half run directory left


def test_rank_trace_names_and_the_merge_after_an_interrupt(tmp_path):
    import json

    from lltrace.capture.ranks import merge_partial, rank_trace_name

    assert rank_trace_name("trace.json.gz", 0) == "trace.json.gz"
    assert rank_trace_name("trace.json.gz", 3) == "trace.rank3.json.gz"
    assert rank_trace_name("trace-2.json.gz", 1) == "trace-2.rank1.json.gz"
    run = tmp_path / "run"
    (run / ".rank1").mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"status": "interrupted", "files": ["meta.json", "trace.json.gz"]}))
    (run / "trace.json.gz").write_bytes(b"r0")
    (run / ".rank1" / "trace.json.gz").write_bytes(b"r1")
    (run / ".rank1" / "meta.json").write_text(json.dumps({"status": "interrupted"}))
    merge_partial(run, 3)   # rank 2 saved nothing before the interrupt
    assert sorted(p.name for p in run.iterdir()) == ["meta.json", "trace.json.gz", "trace.rank1.json.gz"]
    assert (run / "trace.rank1.json.gz").read_bytes() == b"r1"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["ranks"]["world_size"] == 3
    assert meta["ranks"]["per_rank"] == {"0": {"traces": ["trace.json.gz"], "status": "interrupted"},
                                         "1": {"traces": ["trace.rank1.json.gz"], "status": "interrupted"},
                                         "2": {"traces": [], "status": None}}
    assert "trace.rank1.json.gz" in meta["files"]
