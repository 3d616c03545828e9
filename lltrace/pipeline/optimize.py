"""Per-preset optimizations of the generator: fused elementwise, fp8 linears, regional compile,
CUDA graphs.

- elementwise: "fused" runs RoPE, the norms and the adaLN modulation / gating in the model's
  dtype with fewer kernels (CausalWanModel.set_elementwise); set first, so that compiled code
  and captured graphs are built from the fused forward.

- fp8: torchao float8 dynamic activation + weight quantization with per-row scales on the
  transformer blocks' linears (H100: SM 8.9+). In eager mode its quantize kernels are unfused
  (docs/DESIGN.md §3: 3x slower); it pays under torch.compile.
- compile: regional, the transformer block's two tensor-only halves (before and after the
  attention over the KV cache), shared by all blocks. The KV-cache update and the attention
  over the cache run eagerly between them: the update slices by Python ints (dynamic cache) or
  indexes per-layer lists, and either would recompile per value if compiled.
- cuda_graphs: CUDA graphs of the whole generator forward for a block's shape (one while the
  KV cache fills, masked; one once it is full, unmasked), over the
  static KV cache (positions in device tensors) and the cross-attention cache (refilled in
  place), replayed for every denoising step, the KV-update forward and the recache's chunks.
  A forward after the cross-attention cache was reset (it refills it from the new prompt) and
  a forward of another shape (a recache's partial chunk) run eagerly.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lltrace import names
from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.attention import describe_backend


def apply(pipe) -> dict:
    """Apply the preset's fp8 / compile / cuda_graphs to `pipe`; returns what was done."""
    p, done = pipe.preset, {}
    pipe.generator.set_elementwise(p.elementwise)
    if p.elementwise != "reference":
        done["elementwise"] = p.elementwise
    done["attention"] = describe_backend(pipe.attention_backend)
    if p.fp8:
        done["fp8_linears"] = apply_fp8(pipe.generator, pipe.device)
    if p.compile:
        done["compiled_blocks"] = compile_blocks(pipe.generator, pipe.kv_cache)
    if p.cuda_graphs:
        if pipe.device.type != "cuda":
            raise NeedsCudaError("cuda_graphs")
        if pipe.kv_cache.kind != "static":
            raise LltraceError("cuda_graphs need kv_cache: static")
        pipe.graphed_forward = GraphedForward(pipe)
        done["cuda_graphs"] = "whole forward per block shape"
    return done


def _fp8_filter(module: nn.Module, fqn: str) -> bool:
    # Only the transformer blocks' linears; float8 GEMMs need dims that are multiples of 16.
    return (isinstance(module, nn.Linear) and fqn.startswith("blocks.")
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def apply_fp8(model: nn.Module, device: torch.device) -> int:
    if device.type != "cuda":
        raise NeedsCudaError("fp8 (torchao float8 linears)")
    if torch.cuda.get_device_capability(device) < (8, 9):
        raise LltraceError(f"fp8 needs an SM 8.9+ GPU (Ada/Hopper); this is {torch.cuda.get_device_name(device)}")
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError as exc:
        raise LltraceError(f"fp8 needs torchao ({exc})", "pip install torchao") from None
    n = sum(1 for fqn, m in model.named_modules() if _fp8_filter(m, fqn))
    # set_inductor_config=False: by default torchao turns on inductor's coordinate-descent
    # tuning (all directions) process-wide, which on the H100 made the first compiled forward
    # take over 4 minutes (py-spy: Triton compiles of every candidate config; BENCHMARKS.md).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    quantize_(model, config, filter_fn=_fp8_filter)
    return n


# Tests swap in "eager" (dynamo's graph capture without inductor's C++/Triton build).
COMPILE_BACKEND = "inductor"


def compile_blocks(model: nn.Module, kv_cache) -> int:
    """Regional torch.compile: the two tensor-only halves of every transformer block.

    The block's forward becomes pre_attn (compiled) -> KV-cache update + attention (eager) ->
    post_attn (compiled); see CausalWanBlock.forward_split. Every block shares the compiled
    code (same class, parameters are inputs), so the 30 blocks compile once per variant.
    """
    for block in model.blocks:
        block.pre_attn = torch.compile(block.pre_attn, dynamic=False, backend=COMPILE_BACKEND)
        block.post_attn = torch.compile(block.post_attn, dynamic=False, backend=COMPILE_BACKEND)
        block.forward = block.forward_split
    return len(model.blocks)


# What compile_blocks sets on each block instance: the compiled halves and the split forward that
# calls them. Without them the class's own (eager) methods run.
COMPILED_BLOCK_ATTRS = ("pre_attn", "post_attn", "forward")


@contextmanager
def uncompiled_blocks(model: nn.Module) -> Iterator[None]:
    """compile_blocks undone until the context closes; then the same compiled objects go back
    (their dynamo caches kept: nothing compiles again)."""
    taken = []
    for block in model.blocks:
        for attr in COMPILED_BLOCK_ATTRS:
            if attr in block.__dict__:
                taken.append((block, attr, block.__dict__[attr]))
                delattr(block, attr)
    try:
        yield
    finally:
        for block, attr, value in taken:
            setattr(block, attr, value)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    t: torch.Tensor
    start: torch.Tensor
    out: torch.Tensor
    index: int              # ll/graph[index] around its replays, ll/graph_capture[index] around its capture


class GraphedForward:
    """The generator forward as CUDA-graph replays (see the module docstring)."""

    def __init__(self, pipe, warmup: int = 2):
        self.pipe = pipe
        self.warmup = warmup
        self.graphs: dict[tuple, _Graph] = {}
        self.replays = 0
        self.eager_calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, start_frame: int) -> torch.Tensor:
        pipe = self.pipe
        token_start = start_frame * pipe.model_config.frame_seqlen
        if not pipe.crossattn_cache.ready or x.shape[2] != pipe.frames_per_block:
            self.eager_calls += 1
            return pipe.generator(x, t, pipe.context, pipe.kv_cache, pipe.crossattn_cache, token_start)
        # Two graphs per shape: masked attention while some cache slots are unwritten, the
        # flash kernel without a mask once all are (StaticKVCache docstring).
        n = x.shape[2] * pipe.model_config.frame_seqlen
        full = pipe.kv_cache.expect(token_start, n)
        key = (tuple(x.shape), full)
        g = self.graphs.get(key)
        if g is None:
            g = self.graphs[key] = self._capture(x, t, token_start, n, len(self.graphs))
        g.x.copy_(x)
        g.t.copy_(t)
        g.start.fill_(token_start)
        with pipe.observer.region(names.name(names.GRAPH, g.index)):
            g.graph.replay()
        pipe.kv_cache.forget_announcement()
        self.replays += 1
        return g.out

    def _capture(self, x, t, token_start, n, index: int) -> _Graph:
        pipe = self.pipe
        sx, st = x.clone(), t.clone()
        start = torch.full((), token_start, dtype=torch.long, device=x.device)

        def run():
            pipe.kv_cache.expect(token_start, n)   # update() consumes it once per forward
            return pipe.generator(sx, st, pipe.context, pipe.kv_cache, pipe.crossattn_cache, start)

        # Warm up on a side stream (compile, autotune, lazy inits) before capturing. Re-running
        # the same position rewrites the same cache slots, so the cache state is unchanged.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with pipe.observer.graph_capture(index), torch.cuda.graph(graph):
            out = run()
        return _Graph(graph, sx, st, start, out, index)
