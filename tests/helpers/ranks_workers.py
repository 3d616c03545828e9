"""Worker functions for the multi-process tests (tests/test_ranks_*.py): importable by name,
so that the launcher's spawned processes can unpickle them."""
from __future__ import annotations


def tiny_blocks(sp=None, blocks: int = 2, switch_before: int = 1, knobs: dict | None = None):
    """Clean latents of `blocks` blocks of the tiny model (fp32, CPU, no decoder, preset knobs
    `knobs` on baseline's), with a prompt switch (the KV recache) before block `switch_before`."""
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("baseline", {"decoder": "none", **(knobs or {})}))
    pipe = StreamingPipeline(preset, device="cpu", model="tiny", sequence_parallel=sp)
    pipe.start("a red fox in the snow")
    out = []
    for b in range(blocks):
        if b == switch_before:
            pipe.switch_prompt("a dog on a beach")
        out.append(pipe.generate_block().latents.clone())
    return out, tuple(pipe.kv_cache.k[0].shape)


def sequence_parallel_blocks(knob_sets: list[dict]):
    """One rank's latents under Ulysses over the launched group (gloo), for each knob set
    (one launch for all: starting the processes is most of the cost)."""
    from lltrace.pipeline.parallel import SequenceParallel, init_worker

    init_worker("cpu")
    from lltrace.pipeline.config import load_model_config

    frame_seqlen = load_model_config("tiny").frame_seqlen
    return [tiny_blocks(SequenceParallel(frame_seqlen), knobs=knobs) for knobs in knob_sets]
