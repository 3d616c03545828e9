"""A small streaming pipeline with the StreamingPipeline interface, for the capture tests.

It calls the observer exactly like lltrace.pipeline.generator does (FORMATS.md §1 regions,
run_started / text_encoded / switch_requested / block_done), and runs a tiny Wan-shaped torch
module (module names as in Wan2.1: blocks.{k}.self_attn/cross_attn/ffn/norm1..3,
patch_embedding, text_embedding, time_embedding, time_projection, head.head), so CPU traces
contain real ops. The KV cache write is a method of a non-module object, like LongLive's.
Run as a script (`python -m helpers.fake_pipeline RUN_DIR` from tests/, as
tests/test_capture_session.py does) it streams blocks slowly until killed.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from lltrace.pipeline.observer import NULL_OBSERVER
from lltrace.pipeline.vae import video_frames

DIM, HEADS, TOKENS, TEXT, FPB = 32, 4, 8, 6, 3


class KVCache:
    """Not a module: instrument with wrap_method(cache, "update", "ll/kv_update")."""

    def __init__(self, window: int = 4 * TOKENS):
        self.window = window
        self.k = self.v = None

    def update(self, k: torch.Tensor, v: torch.Tensor):
        self.k = k if self.k is None else torch.cat([self.k, k], 1)[:, -self.window:]
        self.v = v if self.v is None else torch.cat([self.v, v], 1)[:, -self.window:]
        return self.k, self.v


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))
        self.cache = KVCache()

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, -1).transpose(1, 2)
        k, v = self.cache.update(self.k(x), self.v(x))
        k = k.view(b, -1, HEADS, DIM // HEADS).transpose(1, 2)
        v = v.view(b, -1, HEADS, DIM // HEADS).transpose(1, 2)
        return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, DIM))


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x, ctx):
        return self.o(F.scaled_dot_product_attention(self.q(x), self.k(ctx), self.v(ctx)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM, elementwise_affine=False)
        self.self_attn = SelfAttention()
        self.norm3 = nn.LayerNorm(DIM)
        self.cross_attn = CrossAttention()
        self.norm2 = nn.LayerNorm(DIM, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(approximate="tanh"), nn.Linear(2 * DIM, DIM))

    def forward(self, x, ctx, e):
        x = x + self.self_attn(self.norm1(x) * (1 + e))
        x = x + self.cross_attn(self.norm3(x), ctx)
        return x + self.ffn(self.norm2(x) * (1 + e))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(DIM, elementwise_affine=False)
        self.head = nn.Linear(DIM, 16)

    def forward(self, x):
        return self.head(self.norm(x))


class TinyWan(nn.Module):
    def __init__(self, layers: int = 2):
        super().__init__()
        self.patch_embedding = nn.Linear(16, DIM)
        self.text_embedding = nn.Sequential(nn.Linear(DIM, DIM), nn.GELU(), nn.Linear(DIM, DIM))
        self.time_embedding = nn.Sequential(nn.Linear(8, DIM), nn.SiLU(), nn.Linear(DIM, DIM))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(DIM, DIM))
        self.blocks = nn.ModuleList(Block() for _ in range(layers))
        self.head = Head()

    def forward(self, latents, t, ctx):
        x = self.patch_embedding(latents)
        ctx = self.text_embedding(ctx)
        e = self.time_projection(self.time_embedding(t.expand(x.shape[0], 1, 8)))
        for block in self.blocks:
            x = block(x, ctx, e)
        return self.head(x)


@dataclass
class BlockOutput:
    index: int
    num_frames: int
    prompt_index: int
    after_switch: bool
    latents: torch.Tensor
    video: torch.Tensor | None


class FakePipeline:
    """StreamingPipeline interface on a tiny model. `delay_s` sleeps (with `spin`: busy-waits) in
    each block's decode, standing in for device work; `fail_at` raises inside that block; `compiled_int` passes the block index
    as a Python int into a torch.compile'd function (one recompile at block 1)."""

    def __init__(self, steps: int = 2, layers: int = 2, delay_s: float = 0.0, fail_at: int | None = None,
                 compiled_int: bool = False, spin: bool = False):
        torch.manual_seed(0)
        self.preset = SimpleNamespace(name="fake", denoising_steps=tuple(range(1000, 0, -1000 // steps))[:steps],
                                      frames_per_block=FPB, to_dict=lambda: {"name": "fake", "steps": steps})
        self.model_config = SimpleNamespace(to_dict=lambda: {"name": "tiny-fake", "dim": DIM, "num_layers": layers})
        self.device = torch.device("cpu")
        self.observer = NULL_OBSERVER
        self.generator = TinyWan(layers).eval()
        self.steps = steps
        self.delay_s = delay_s
        self.spin = spin  # delay as a busy loop (host work a sampler sees) instead of a sleep
        self.fail_at = fail_at
        self.block = 0
        self.prompt_index = 0
        self.after_switch = False
        self.ctx = None
        self.history: list[torch.Tensor] = []
        self._scale = torch.compile(lambda x, i: x * (1 + i % 2), backend="eager") if compiled_int else None

    def describe(self) -> dict:
        return {"attention_backend": "sdpa", "ceilings": {"bf16_tflops": None}, "flops": {"forward": 1.0e6}}

    def _encode(self, prompt: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(abs(hash(prompt)) % (1 << 31))
        return torch.randn(1, TEXT, DIM, generator=g)

    def start(self, prompt: str) -> None:
        self.observer.run_started()
        with self.observer.region("ll/text_encode"):
            self.ctx = self._encode(prompt)
        self.observer.text_encoded(0)

    def switch_prompt(self, prompt: str) -> None:
        self.prompt_index += 1
        self.observer.switch_requested(self.prompt_index, prompt)
        with self.observer.region("ll/text_encode"):
            self.ctx = self._encode(prompt)
        self.observer.text_encoded(self.prompt_index)
        with self.observer.region("ll/recache"), torch.no_grad():
            if self.history:
                self.generator(torch.cat(self.history[-2:], 1), torch.zeros(1, 1, 8), self.ctx)
        self.after_switch = True

    def generate_block(self) -> BlockOutput:
        i = self.block
        obs = self.observer
        with obs.region(f"ll/block[{i}]"), torch.no_grad():
            with obs.region("ll/noise"):
                x = torch.randn(1, TOKENS, 16)
            for j in range(self.steps):
                with obs.region(f"ll/step[{j}]"):
                    x = self.generator(x, torch.full((1, 1, 8), float(j)), self.ctx)
            if self._scale is not None:
                x = self._scale(x, i)
            if self.fail_at == i:
                raise RuntimeError(f"fake failure in block {i}")
            with obs.region("ll/context"):
                self.generator(x, torch.zeros(1, 1, 8), self.ctx)
            with obs.region("ll/decode"):
                video = torch.tanh(x.repeat(1, 1, 4))
                if self.delay_s and self.spin:
                    end = time.perf_counter() + self.delay_s
                    while time.perf_counter() < end:
                        pass
                elif self.delay_s:
                    time.sleep(self.delay_s)
            self.history.append(x)
        n = video_frames(FPB, first_block=i == 0)
        out = BlockOutput(i, n, self.prompt_index, self.after_switch, x, video)
        obs.block_done(i, n, self.prompt_index, self.after_switch)
        self.block += 1
        self.after_switch = False
        return out


def instrument_cache(pipeline: FakePipeline, level: str = "op"):
    """ll/kv_update on every layer's cache write (the cache is not a module)."""
    from lltrace.capture.hooks import instrument_all

    return instrument_all((b.self_attn.cache for b in pipeline.generator.blocks), "update", "ll/kv_update", level)


if __name__ == "__main__":
    # python -m helpers.fake_pipeline RUN_DIR: stream 1000 slow blocks, profiling from block 1.
    import faulthandler
    import signal

    from lltrace.capture.session import run_session

    faulthandler.register(signal.SIGUSR1, all_threads=True)   # a test that times out asks where it is

    pipe = FakePipeline(delay_s=0.05)
    result = run_session(pipe, num_blocks=1000, prompt="a cat", switches={2: "a dog"}, run_dir=sys.argv[1],
                         profile_blocks=(1, 1000), regions_level="op", instrument=instrument_cache,
                         listeners=[SimpleNamespace(on_block=lambda out: print(f"block {out.index}", flush=True))])
    print(f"status {result.status}", flush=True)
