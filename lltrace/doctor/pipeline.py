"""`lltrace doctor` on the streaming pipeline: each stage probed where the pipeline calls it.

The doctor streams a few blocks with prompt switches through the real pipeline, and swaps
each stage's call for a StageProbe (graph.py) at three invocations: a warm-up, then
two consecutive positions (A, B). Stages (lltrace.pipeline.generator.StreamingPipeline):
- denoise:   the generator forward at the first denoising step, blocks 0 / 1 / 2;
- kv_update: the clean forward at context_noise that writes the KV cache (KVCache.update
  runs inside it), blocks 0 / 1 / 2;
- recache:   the first forward of the prompt-switch recache (the chunk that also refills the
  cross-attention cache from the new prompt), at three switches once the window is full;
- decode:    decoder.decode_block, blocks 0 / 1 / 2 (block 0 is the decoder's first);
- text:      text_encoder.encode: the first prompt, then the first two switches.
Generator forwards are called as a graph replay would feed them: the stream position as a
0-dim device tensor (`current_start`), x and t in static buffers. The pipeline's own CUDA
graphs and compiled blocks are switched off while the doctor runs (it captures and compiles
each stage itself), and so is its observer (the doctor's blocks are not a run's); all are put
back afterwards. Forwards that neither a probe examines nor leave state a probed call reads
(the middle denoising steps; every forward, for the decode and text stages) are not run
(`needed` in diagnose_pipeline). The pipeline's stream is left mid-way: call
`pipe.start(prompt)` before streaming again.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from lltrace.doctor.report import DoctorReport, Finding
from lltrace.doctor.compile import compile_time_notes
from lltrace.doctor.gpu_lock import gpu_work
from lltrace.doctor.graph import StageProbe
from lltrace.errors import LltraceError

STAGES = ("denoise", "kv_update", "recache", "decode", "text")
PROMPTS = ("a red fox running through snow", "a red fox running through snow, at night",
           "a red fox running through deep snow in the rain", "a red fox at dawn")
STATIC_CACHE_FIX = "use kv_cache: static (positions in device tensors; --set kv_cache=static)"
CONTEXT_FIX = ("copy each new prompt's context into one static buffer (pipe.context is a new tensor per "
               "prompt), or keep this forward eager as GraphedForward does")


def parse_stages(stages: Sequence[str] | str | None) -> list[str]:
    """Stage names (repeatable or comma-separated) -> a validated list; all stages when empty."""
    if stages is None:
        return list(STAGES)
    items = [stages] if isinstance(stages, str) else list(stages)
    names = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    for s in names:
        if s not in STAGES:
            raise LltraceError(f"unknown stage {s!r}", f"valid stages: {', '.join(STAGES)}")
    return [s for s in STAGES if s in names] or list(STAGES)


TEXT_FIX = ("keep the text encoder eager: it runs once per prompt, outside the per-block loop "
            "(a graph would need tokenization outside it and a static token-id buffer)")


def _pipeline_fixes(findings: list[Finding]) -> list[str]:
    blocking = [f for f in findings if f.blocking]
    if any("DynamicKVCache" in f.message or (f.where or "").startswith("lltrace/pipeline/kv_cache.py")
           for f in blocking):
        return [STATIC_CACHE_FIX]
    if any(f.kind == "address" and "context" in f.message for f in blocking):
        return [CONTEXT_FIX]
    return []


def _text_fixes(findings: list[Finding]) -> list[str]:
    return [TEXT_FIX] if any(f.blocking for f in findings) else []


@dataclass
class _Plan:
    """Which invocation of each stage plays which role."""

    stages: list[str]
    steps: int
    first_switch: int
    blocks: int
    switches: list[int] = field(default_factory=list)
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)   # stage -> role -> where

    @staticmethod
    def role(index: int) -> str | None:
        return ("warmup", "a", "b")[index] if 0 <= index < 3 else None


def _plan(pipe, stages: list[str]) -> _Plan:
    F = pipe.frames_per_block
    # Switches start once the window is full (the recache has its steady shape) and after the
    # blocks the per-block stages are probed at (0, 1, 2).
    first = max(3, math.ceil(pipe.preset.local_attn_size / F))
    switches = [first, first + 1, first + 2] if {"recache", "text"} & set(stages) else []
    blocks = (switches[-1] + 1) if switches else 3
    return _Plan(stages, len(pipe.timesteps), first, blocks, switches)


def _description(stage: str, pipe, plan: _Plan) -> str:
    F, fs = pipe.frames_per_block, pipe.model_config.frame_seqlen
    if stage in ("denoise", "kv_update"):
        what = "generator forward at the first denoising step" if stage == "denoise" else \
            f"clean forward at context_noise {pipe.preset.context_noise} (writes the KV cache)"
        return (f"{what}; blocks 1 -> 2 (current_start {F * fs} -> {2 * F * fs} tokens, "
                "passed as a device tensor)")
    if stage == "recache":
        s = plan.switches
        return (f"first recache forward after a prompt switch (refills the cross-attention cache); "
                f"switches before blocks {s[1]} -> {s[2]}")
    if stage == "decode":
        return f"{type(pipe.decoder).__name__}.decode_block; blocks 1 -> 2"
    return "text_encoder.encode (tokenize + encoder); two prompt switches (runs once per prompt)"


def _text_compile_crashes(pipe) -> bool:
    """torch 2.11 (the H200 image's) segfaults in dynamo on the text encoder's second trace on
    CUDA (2026-12-02, twice, after the other stages' checks in the same process); a native
    crash loses the whole report, so in one process that check is skipped there. 2.13 on the
    CPU traces it fine; other versions are not known to crash. Turning the cyclic GC off is no
    way around it: the doctor then runs out of GPU memory (2026-12-02). With the stage groups
    in processes of their own (isolate.py) the check runs: a crash costs only the text
    group's process, is reported, and the group runs again without compile checks, and a
    fresh process may well trace it (the recache stage's crash needed the earlier stages)."""
    return pipe.device.type == "cuda" and torch.__version__.startswith(("2.11.", "2.11+"))


def diagnose_pipeline(pipe, stages: Sequence[str] | str | None = None, *,
                      compile_check: bool | Sequence[str] = True, capture: bool | None = None,
                      graph_savings: bool = False, isolated: bool = False,
                      progress: Callable[[str], None] = lambda s: None) -> DoctorReport:
    """Probe each stage of a StreamingPipeline; see the module docstring.

    `compile_check`: True / False for every stage, or the stages to run the compile checks on.
    `capture`: try CUDA-graph captures (default: when CUDA is available).
    `graph_savings`: bound what CUDA graphs would save on each per-block stage (denoise,
    kv_update, recache, decode) from one profiled eager call (savings.py; CUDA only). Off by
    default: `lltrace run`'s pre-flight check runs before the first frame, and its TUI bounds
    the savings from the run's own profiled window; `lltrace doctor` turns it on.
    `progress(text)`: told each stage's check as it starts ("denoise: CUDA-graph capture ...").
    `isolated`: this process runs only these stages and nothing after them (isolate.py's
    child): checks known to crash the process natively are run anyway (_text_compile_crashes).
    """
    stages = parse_stages(stages)
    compiled = set(stages) if compile_check is True else set(parse_stages(compile_check)) if compile_check else set()
    notes = []
    if "decode" in stages and pipe.decoder is None:
        stages.remove("decode")
        notes.append("decode: skipped (the preset has decoder: none)")
    if "text" in compiled and not isolated and _text_compile_crashes(pipe):
        compiled.discard("text")
        notes.append(f"text: torch.compile check skipped: torch {torch.__version__}'s dynamo crashes the process "
                     "(segfault in reset_user_object_tracking) tracing the text encoder on CUDA, seen on the "
                     "H200; the text encoder stays eager either way")
    plan = _plan(pipe, stages)
    fs = pipe.model_config.frame_seqlen
    probes: dict[str, StageProbe] = {}
    gen_state = [pipe.kv_cache, pipe.crossattn_cache, pipe.generator]
    gen_roots = {"generator": pipe.generator}

    def generator_forward(x, t, current_start):
        return pipe.generator(x, t, pipe.context, pipe.kv_cache, pipe.crossattn_cache, current_start)

    for stage in stages:
        common = {"compile_check": stage in compiled, "capture": capture, "progress": progress,
                  "description": _description(stage, pipe, plan),
                  "graph_savings": graph_savings and stage != "text"}
        if stage in ("denoise", "kv_update", "recache"):
            probes[stage] = StageProbe(stage, generator_forward, state=gen_state, roots=gen_roots,
                                       fixes=_pipeline_fixes, **common)
        elif stage == "decode":
            probes[stage] = StageProbe(stage, pipe.decoder.decode_block, state=[pipe.decoder],
                                       roots={"decoder": pipe.decoder}, **common)
        else:   # the text encoder runs once per prompt: what graphs would save there is not per block
            probes[stage] = StageProbe(stage, pipe.text_encoder.encode, state=[pipe.text_encoder],
                                       roots={"text_encoder": pipe.text_encoder}, fixes=_text_fixes, **common)

    where = {"phase": "start", "block": -1, "fwd": 0, "switch": -1, "encode": 0}

    def forward_stage() -> tuple[str, str] | None:
        if where["phase"] == "switch":   # the first chunk: it also refills the cross-attention cache
            return ("recache", _Plan.role(where["switch"])) if where["fwd"] == 0 else None
        if where["phase"] == "block":
            j = where["fwd"]
            stage = "denoise" if j == 0 else ("kv_update" if j == plan.steps else None)
            return (stage, _Plan.role(where["block"])) if stage else None
        return None

    generator_probed = bool({"denoise", "kv_update", "recache"} & set(probes))

    def needed(picked: tuple[str, str] | None) -> bool:
        """Whether a forward the probes do not examine must still run: it must when it moves
        state a probed forward reads later. A block's first denoising step writes the block
        into the KV cache (the dynamic cache's positions advance there) and the clean forward
        at context_noise writes it again; a switch's recache chunks rebuild the cache. The
        denoising steps in between write the same positions again (KVCache._advance leaves
        them where they are) and their flow only feeds the next step. So a group without
        generator stages (decode, text) runs no forward at all, and the others skip the
        middle steps: the baseline recache group streams 23 forwards instead of 47."""
        if picked is not None and picked[0] in probes and picked[1] is not None:
            return True
        if not generator_probed:
            return False
        if where["phase"] == "switch":
            return "recache" in probes
        return where["fwd"] in (0, plan.steps)

    def forward(default, x, t, start_frame):
        picked = forward_stage()
        run = needed(picked)
        where["fwd"] += 1
        if not run:
            # The stage's inputs only need their shapes and positions: a zero flow keeps the
            # latents (and so the decoder's input) the right shape at no GPU cost.
            return torch.zeros_like(x)
        if picked is None or picked[0] not in probes or picked[1] is None:
            return default(x, t, start_frame)
        stage, role = picked
        tt = pipe.timestep(t, x.shape[2])
        pos = torch.full((), start_frame * fs, dtype=torch.long, device=pipe.device)
        return probes[stage].run(role, x, tt, pos)

    def stage_hook(stage: str, role_of: Callable[[], str | None]) -> Callable[..., Any]:
        def call(default, *args):
            role = role_of()
            if stage not in probes or role is None:
                return default(*args)
            return probes[stage].run(role, *args)
        return call

    def encode_role():
        i = where["encode"]
        where["encode"] += 1
        return _Plan.role(i)

    with ExitStack() as es, torch.no_grad():
        # The doctor's blocks are not the run's: whoever observes the pipeline (a run's frame
        # clock, the TUI) does not see them.
        from lltrace.pipeline.observer import NULL_OBSERVER
        observer, pipe.observer = pipe.observer, NULL_OBSERVER
        es.callback(setattr, pipe, "observer", observer)
        # The doctor captures and compiles stages itself: the pipeline's own graphs and compiled
        # blocks would stand between it and the code it diagnoses.
        es.enter_context(pipe.eager())
        es.enter_context(pipe.hooked(forward=forward,
                                     decode=stage_hook("decode", lambda: _Plan.role(where["block"])),
                                     encode=stage_hook("text", encode_role)))

        decoder = pipe.decoder
        es.callback(setattr, pipe, "decoder", decoder)
        if "decode" not in probes:
            pipe.decoder = None   # decoding blocks the doctor does not look at only costs time
        stopped, at = None, "the first prompt"
        try:
            # gpu_work: with the stage groups in processes of their own, another process's timed
            # section (savings.py) waits until no block runs here (and a block here for it).
            with gpu_work():
                pipe.start(PROMPTS[0])
            for b in range(plan.blocks):
                at = f"block {b + 1}/{plan.blocks}"
                if b == 3:
                    pipe.decoder = None   # the decode stage's three blocks are done
                # Each probed call compiles / captures / replays its stage: seconds to minutes (fp8).
                progress(f"block {b + 1}/{plan.blocks}" + (" after a prompt switch" if b in plan.switches else ""))
                with gpu_work():
                    if b in plan.switches:
                        where.update(phase="switch", switch=plan.switches.index(b), fwd=0)
                        pipe.switch_prompt(PROMPTS[1 + plan.switches.index(b)])
                    where.update(phase="block", block=b, fwd=0)
                    pipe.generate_block()
                where["phase"] = "idle"
        except Exception as exc:  # noqa: BLE001 - the stages checked so far are still reported
            text = (str(exc).strip().splitlines() or [""])[0]
            stopped = f"at {at}: {type(exc).__name__}: {text}"[:300]

    device = pipe.device.type
    if device == "cuda":
        device = f"cuda ({torch.cuda.get_device_name(pipe.device)})"
    report = DoctorReport(pipe.preset.name, device, pipe.model_config.name, notes=notes, stopped=stopped,
                          attention=pipe.optimizations.get("attention"))   # meta.json's own line
    for stage in stages:
        report.stages.append(probes[stage].report())
        probes[stage].release()
    if pipe.device.type != "cuda":
        report.notes.append("no CUDA: static and compile checks only; a CUDA-graph capture needs CUDA")
    if compiled or pipe.preset.compile:
        report.notes += compile_time_notes()
    return report


def build_doctor_pipeline(preset: str, *, device: str = "auto", model: str | None = None,
                          overrides: dict[str, Any] | None = None):
    """The pipeline `lltrace doctor` examines, and notes on how it differs from the preset.

    Without CUDA: the preset's CPU fallback on the tiny model (as `lltrace run` does there).
    With CUDA: the preset with its own compile and CUDA graphs off (the doctor tries both itself).
    """
    import dataclasses

    from lltrace.pipeline.generator import StreamingPipeline, for_this_machine
    from lltrace.pipeline.presets import load_preset

    p, dev, model, _ = for_this_machine(load_preset(preset, overrides), device, model)
    notes = []
    if dev.type != "cuda":
        notes.append(f"the {model} model on the CPU in float32, fp8 off (the preset's CPU fallback)")
    else:
        p = dataclasses.replace(p, compile=False, cuda_graphs=False)
    notes.append("the preset's own compile / CUDA graphs are off: the doctor compiles and captures each stage itself")
    return StreamingPipeline(p, device=dev, model=model), notes


def diagnose_preset(preset: str, stages: Sequence[str] | str | None = None, *, device: str = "auto",
                    model: str | None = None, overrides: dict[str, Any] | None = None,
                    compile_check: bool | Sequence[str] = True, graph_savings: bool = True,
                    isolate: bool | None = None, jobs: int | None = None, timeout: float | None = None,
                    progress: Callable[[str], None] = lambda s: None) -> DoctorReport:
    """Build the doctor's pipeline for `preset` and diagnose it (what `lltrace doctor` runs).

    `isolate`: each stage group in a fresh process of its own (isolate.py); default (None):
    isolate.auto_isolate (on CUDA when more than one group is asked for, where a native
    crash in dynamo after the earlier stages, torch 2.11, would lose the whole report).
    `jobs`: children at once (default: isolate.default_jobs); `timeout`: seconds each child
    may take (default: isolate.DEFAULT_TIMEOUT_S).
    """
    from lltrace.doctor import isolate as iso
    from lltrace.pipeline.generator import resolve_device

    stages = parse_stages(stages)   # a bad stage is an error before minutes of model building
    compiled = list(stages) if compile_check is True else parse_stages(compile_check) if compile_check else []
    compiled = [s for s in compiled if s in stages]
    if isolate is None:
        isolate = iso.auto_isolate(resolve_device(device).type, stages)
    if isolate:
        return iso.diagnose_isolated(preset, stages, device=device, model=model, overrides=overrides,
                                     compiled=compiled, graph_savings=graph_savings, progress=progress,
                                     jobs=jobs, timeout=timeout)
    progress(f"building {preset}")
    pipe, notes = build_doctor_pipeline(preset, device=device, model=model, overrides=overrides)
    report = diagnose_pipeline(pipe, stages, compile_check=compiled, graph_savings=graph_savings,
                               progress=progress)
    report.notes = notes + report.notes
    return report
