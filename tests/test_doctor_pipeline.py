"""`lltrace doctor` on the streaming pipeline (tiny model, CPU): the dynamic KV cache is named
incompatible with the changing index and its line; the static cache has no changing values."""
from __future__ import annotations

import pytest
import torch

from lltrace.doctor.report import INCOMPATIBLE, NOT_RUN
from lltrace.doctor.pipeline import diagnose_pipeline as diagnose
from lltrace.doctor.pipeline import STATIC_CACHE_FIX, build_doctor_pipeline, parse_stages
from lltrace.errors import LltraceError
from lltrace.pipeline.observer import NULL_OBSERVER, PipelineObserver

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour (capture needs CUDA)")


class CountingObserver(PipelineObserver):
    def __init__(self):
        self.calls = 0

    def run_started(self):
        self.calls += 1

    def block_done(self, *args):
        self.calls += 1


@pytest.fixture(scope="module")
def baseline_report():
    pipe, _ = build_doctor_pipeline("baseline", device="cpu")
    return diagnose(pipe, ["denoise", "kv_update"], compile_check=["denoise"])


@pytest.fixture(scope="module")
def ultra():
    pipe, _ = build_doctor_pipeline("ultra", device="cpu")
    assert pipe.kv_cache.kind == "static" and pipe.model_config.name == "tiny"
    before = [b.latents for b in pipe.stream("a red fox", 3)]
    observer = CountingObserver()
    pipe.observer = observer
    report = diagnose(pipe, ["denoise", "kv_update", "decode"], compile_check=["denoise"])
    assert pipe.observer is observer and observer.calls == 0   # a run's observer never sees the doctor
    pipe.observer = NULL_OBSERVER
    return pipe, report, before


@pytest.mark.slow
def test_dynamic_cache_is_incompatible_and_names_the_changing_index(baseline_report):
    report = baseline_report
    for st in report.stages:
        assert st.verdict == INCOMPATIBLE, st.stage
        assert st.capture == "capture needs CUDA"
        scalars = [f for f in st.findings if f.kind == "python_scalar" and f.blocking]
        assert scalars, [f.message for f in st.findings]
        msg = scalars[0].message
        # Blocks 1 -> 2 of 3 latent frames x 16 tokens: the cache ends at 96, then at 144.
        assert "DynamicKVCache.global_end changes between calls (96 -> 144)" in msg
        assert scalars[0].where.startswith("lltrace/pipeline/kv_cache.py:")
        assert scalars[0].code == "buf[:, start:end] = new"
        sync = [f for f in st.findings if f.kind == "host_sync"]
        assert sync and sync[0].where.startswith("lltrace/pipeline/kv_cache.py:")
        assert "int(current_start)" in sync[0].code
        assert any(f.kind == "shape" for f in st.findings)   # k[:, :end] grows until the window is full
        assert st.fixes[0] == STATIC_CACHE_FIX
    assert report.verdict == INCOMPATIBLE
    assert any("capture needs CUDA" in n for n in report.notes)


@pytest.mark.slow
def test_compile_health_of_the_dynamic_cache(baseline_report):
    c = baseline_report.stage("denoise").compile
    assert c.error is None and c.graph_breaks >= 1
    assert any(b["where"].startswith("lltrace/pipeline/kv_cache.py:") for b in c.breaks)
    # The next position fails a guard on the cache's Python ints or on the grown shape.
    assert c.recompile_risk
    assert baseline_report.stage("kv_update").compile is None   # not asked for


@pytest.mark.slow
def test_static_cache_has_no_changing_python_values(ultra):
    _, report, _ = ultra
    for st in report.stages:
        assert [f for f in st.findings if f.blocking] == [], [f.line() for f in st.findings]
        assert st.verdict == NOT_RUN and st.verdict_text() == "NOT RUN (capture needs CUDA)"
        assert st.ops_per_call > 100
    c = report.stage("denoise").compile
    assert (c.graphs, c.graph_breaks, c.recompiles_next_call) == (1, 0, [])


@pytest.mark.slow
def test_pipeline_streams_the_same_after_the_doctor(ultra):
    pipe, _, before = ultra
    assert "forward" not in vars(pipe) and "decode_block" not in vars(pipe.decoder)
    assert pipe.decoder is not None and pipe.graphed_forward is None
    after = [b.latents for b in pipe.stream("a red fox", 3)]
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_recache_and_text_name_what_a_new_prompt_changes(ultra):
    pipe, _, _ = ultra
    report = diagnose(pipe, "recache,text", compile_check=False)
    recache, text = report.stage("recache"), report.stage("text")
    # The recache's first forward embeds the new prompt, a new tensor per prompt.
    addr = [f for f in recache.findings if f.kind == "address"]
    assert addr and "embed_text: context" in addr[0].message
    assert addr[0].where.startswith("lltrace/pipeline/model.py:")
    # Tokenizing inside the stage makes host data that changes with the prompt.
    host = [f for f in text.findings if f.kind == "host_data"]
    assert host and host[0].where.startswith("lltrace/pipeline/text_encoder.py:")
    assert text.verdict == INCOMPATIBLE


def test_bad_stage_is_a_one_line_error():
    with pytest.raises(LltraceError, match="unknown stage 'denoize'.*valid stages: denoise, kv_update"):
        parse_stages(["denoize"])
    assert parse_stages(["text,denoise"]) == ["denoise", "text"]


def _without_timings(report) -> dict:
    d = report.to_dict()
    for st in d["stages"]:
        st.pop("seconds")
    return d


def test_compiled_blocks_run_eagerly_under_the_doctor_and_come_back(monkeypatch):
    """A preset with regional compile: the doctor runs the blocks' eager class methods (its own
    compile check is what looks at compile), then the run gets its compiled halves back."""
    import dataclasses

    from torch._dynamo.utils import counters

    from lltrace.doctor.pipeline import diagnose_pipeline
    from lltrace.pipeline import optimize
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")   # dynamo without inductor's C++ build
    preset, _ = cpu_fallback(load_preset("baseline"))
    compiled = StreamingPipeline(dataclasses.replace(preset, compile=True), model="tiny", device="cpu")
    eager = StreamingPipeline(preset, model="tiny", device="cpu")
    halves = [{a: vars(b)[a] for a in ("pre_attn", "post_attn", "forward")} for b in compiled.generator.blocks]
    assert all(h["forward"].__func__ is type(b).forward_split for h, b in zip(halves, compiled.generator.blocks))
    torch._dynamo.reset()
    counters.clear()
    report = diagnose_pipeline(compiled, ["denoise", "kv_update"], compile_check=False)
    assert counters["stats"]["unique_graphs"] == 0      # nothing compiled ran under the doctor
    assert _without_timings(report) == _without_timings(
        diagnose_pipeline(eager, ["denoise", "kv_update"], compile_check=False))
    assert report.verdict == INCOMPATIBLE
    for block, h in zip(compiled.generator.blocks, halves):   # the same objects, back in place
        assert all(vars(block)[a] is h[a] for a in h)
    list(compiled.stream("a red fox", 2))
    assert counters["stats"]["unique_graphs"] >= 1      # the run streams through them again


def _compile_findings(stage) -> dict:
    d = stage.compile.to_dict()
    d.pop("seconds")
    return d


@pytest.mark.slow
def test_a_stages_compile_findings_do_not_depend_on_the_other_stages(baseline_report):
    """Each stage's dynamo runs (at A, then at B) come back to back: denoise's compile check
    (in the same blocks) neither resets nor fills the cache kv_update's check reads. Before,
    another stage's dynamo reset between A and B turned the next-position check into a fresh
    trace."""
    alone_pipe, _ = build_doctor_pipeline("baseline", device="cpu")
    alone = diagnose(alone_pipe, ["kv_update"], compile_check=True).stage("kv_update")
    both_pipe, _ = build_doctor_pipeline("baseline", device="cpu")
    both = diagnose(both_pipe, ["denoise", "kv_update"], compile_check=True)
    assert _compile_findings(both.stage("kv_update")) == _compile_findings(alone)
    assert _compile_findings(both.stage("denoise")) == _compile_findings(baseline_report.stage("denoise"))
    guards = [r["guard"] for r in alone.compile.recompiles_next_call]
    assert any("local_end" in g for g in guards), guards   # the cache's Python int, at the next block


def test_the_text_compile_check_is_skipped_only_where_dynamo_crashes_on_it(monkeypatch):
    """torch 2.11 on CUDA segfaults tracing the text encoder (the H200, twice): the doctor skips
    that one check there and says so, instead of losing the whole report; elsewhere it runs."""
    from types import SimpleNamespace

    from lltrace.doctor.pipeline import _text_compile_crashes

    cuda, cpu = SimpleNamespace(device=torch.device("cuda")), SimpleNamespace(device=torch.device("cpu"))
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    assert _text_compile_crashes(cuda) and not _text_compile_crashes(cpu)
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert not _text_compile_crashes(cuda)


@pytest.mark.parametrize("stages, forwards", [
    # baseline: 4 denoising steps + the clean forward a block; a 12-frame window of 4 chunks of
    # 3 frames, so the switches come before blocks 4, 5, 6 (7 blocks).
    ("decode", 0), ("text", 0),                      # neither reads the generator's work
    ("denoise", 3),               # the 3 blocks' clean forwards (they write the cache)
    ("kv_update", 3),             # the first steps, which write the block before the probed call
    ("recache", 7 * 2 + 3 * 3),   # first step + clean forward a block, each switch's chunks 2-4
])
def test_the_doctor_runs_only_the_forwards_its_stages_need(monkeypatch, stages, forwards):
    """The denoising steps no probe examines (and every forward, for a group without generator
    stages) are not run: the isolated recache group streamed 47 forwards on the H200 only to
    reach its switches. The forwards that move the KV cache's state still run, so the probed
    calls see the cache a run gives them (test_a_stages_compile_findings_... checks that)."""
    pipe, _ = build_doctor_pipeline("baseline", device="cpu")
    assert (len(pipe.timesteps), pipe.preset.local_attn_size, pipe.frames_per_block) == (4, 12, 3)
    ran = []
    real = pipe.forward
    monkeypatch.setattr(pipe, "forward", lambda x, t, start: ran.append(t) or real(x, t, start))
    report = diagnose(pipe, stages, compile_check=False)
    assert report.stopped is None and len(ran) == forwards
    assert set(ran) <= {pipe.timesteps[0], float(pipe.preset.context_noise)}   # no middle step
