"""KV caches of the causal DiT: LongLive's rolling cache and a capturable ring buffer.

Protocol (what the model relies on; both kinds implement it)
------------------------------------------------------------
    k_att, v_att, mask = kv_cache.update(layer_idx, k, v, current_start)

`k`, `v`: [B, n, heads, head_dim], the RoPE'd keys and the values of the n new tokens, whose
first token sits at stream position `current_start` (tokens; = start_frame * frame_seqlen).
The call writes them into layer `layer_idx`'s buffers and returns what the new queries
attend to: `k_att`, `v_att` [B, Lk, heads, head_dim] and `mask` (None, or a boolean
[1, 1, 1, Lk], True = attend). `update(0, ...)` starts a forward: it advances the cache's
one position state (the same for every layer), which layers 1.. reuse, so layer 0 must be
called first in each forward (the model does). `reset()` empties the cache (a new video).

Semantics (LongLive / Self-Forcing, `CausalWanSelfAttention` with a KV cache)
-----------------------------------------------------------------------------
Per layer, k/v buffers of `local_attn_size * frame_seqlen` tokens and two positions:
`global_end` (stream position after the last token written) and `local_end` (the buffer
slot it maps to); stream position p sits in slot p - (global_end - local_end). The first
`sink_size` frames' slots are never evicted. When the new tokens past `global_end` would
overflow the buffer, the non-sink part rolls left by the overflow. New tokens are written
at their slots: a re-run of the same positions (each denoising step of a block, or the
prompt-switch recache, which re-runs the last min(window, frames so far) clean frames at
their own positions) overwrites the same slots and does not roll. Attention reads the sink
plus the last `(local_attn_size - sink_size) * frame_seqlen` tokens up to `local_end`,
which is every written slot below `local_end`.
Two deliberate differences from LongLive's code: it clones both whole buffers in every
layer of every forward (then applies the write after the last layer), which costs
2 x cache-size of memory traffic per layer for nothing; we write in place, as Self-Forcing
does. And while fewer than `sink_size` frames exist, LongLive's attention reads the whole
(partly unwritten, zero) sink region; we read only written slots.

`DynamicKVCache` is that, with Python-int positions and slicing (shapes change every block:
not capturable in a CUDA graph, and each new int recompiles a torch.compile'd forward).
`StaticKVCache` gives the same attention outputs (tested to float32 tolerance, across
roll-over and recache) with fixed shapes and positions in device tensors: the non-sink
slots form a ring indexed by stream position, so the roll moves no data; writes are one
`index_copy_` with slots computed on device; attention reads the whole buffer. Nothing in
`update` syncs with the host or branches on a device value, so a whole denoising step
including the KV update can be captured and replayed (docs/DESIGN.md §5).
While some slots are unwritten (the first blocks of a video, the chunks of a recache) it
passes a validity mask; a masked attention does not run the flash kernel (see attention.py),
which cost 18% of an H100 forward (BENCHMARKS.md). Once every slot is valid it passes no mask:
the keys are stored after RoPE, so attention over the ring in slot order equals attention in
stream order (softmax attention does not depend on the order of its keys). Whether every slot
is valid is known on the host without a sync, from a host mirror of the positions advanced by
int positions, or by `expect()` from whoever passes a device-tensor position (GraphedForward,
which keys its graphs on it). A device-tensor position nobody announced makes the mirror
unknown: masked attention until `reset()`, never a wrong answer.
"""
from __future__ import annotations

import torch

from lltrace.errors import LltraceError
from lltrace.pipeline.config import ModelConfig

KINDS = ("dynamic", "static")


def _mark_static(tensors: list[torch.Tensor]) -> None:
    """Tell torch.compile these never move: without it, mode="reduce-overhead" skips CUDA graphs
    for a forward that mutates them ("mutated inputs"). No effect in eager mode."""
    for t in tensors:
        torch._dynamo.mark_static_address(t)


class KVCache:
    """Shared shape bookkeeping; see the module docstring for the protocol."""

    kind = ""

    def __init__(self, cfg: ModelConfig, batch: int, local_attn_size: int, sink_size: int,
                 dtype: torch.dtype, device):
        if local_attn_size < 1:
            raise LltraceError(f"local_attn_size must be >= 1 latent frame, got {local_attn_size}")
        if not 0 <= sink_size < local_attn_size:
            raise LltraceError(f"sink_size must be in [0, local_attn_size) = [0, {local_attn_size}), "
                               f"got {sink_size}")
        self.num_layers = cfg.num_layers
        self.frame_seqlen = cfg.frame_seqlen
        self.local_attn_size = local_attn_size
        self.sink_size = sink_size
        self.capacity = local_attn_size * cfg.frame_seqlen      # tokens per layer buffer
        self.sink_tokens = sink_size * cfg.frame_seqlen
        self.ring_tokens = self.capacity - self.sink_tokens      # the part that rolls
        shape = (batch, self.capacity, cfg.num_heads, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]

    def _advance(self, global_end: int, local_end: int, current_start: int, n: int
                 ) -> tuple[int, int, int, int]:
        """Host-int positions after n tokens written from `current_start`:
        (evicted, kept, new global_end, new local_end); see the module docstring."""
        current_end = current_start + n
        grow = current_end - global_end
        evicted = max(0, local_end + grow - self.capacity)
        kept = max(0, local_end - evicted - self.sink_tokens)
        new_local_end = local_end + grow - evicted
        if new_local_end - n < 0:
            raise ValueError(f"tokens from {current_start} are older than the KV cache's window "
                             f"(it ends at {global_end})")
        return evicted, kept, current_end, new_local_end

    def _check_new_tokens(self, n: int) -> None:
        if n > self.capacity:
            raise LltraceError(f"{n} new tokens do not fit a KV cache of {self.capacity} tokens "
                               f"({self.local_attn_size} frames)")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, current_start
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


class DynamicKVCache(KVCache):
    """LongLive's rolling cache with Python-int positions (eager and torch.compile, no graphs)."""

    kind = "dynamic"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self) -> None:
        self.global_end = 0
        self.local_end = 0
        self._plan = (0, 0, 0, 0)   # evicted, kept, write start, write end (this forward)

    def _begin(self, current_start: int, n: int) -> None:
        self._check_new_tokens(n)
        evicted, kept, self.global_end, self.local_end = self._advance(
            self.global_end, self.local_end, current_start, n)
        self._plan = (evicted, kept, self.local_end - n, self.local_end)

    def update(self, layer_idx, k, v, current_start):
        if layer_idx == 0:
            self._begin(int(current_start), k.shape[1])  # int(): a host sync if given a device tensor
        evicted, kept, start, end = self._plan
        s = self.sink_tokens
        for buf, new in ((self.k[layer_idx], k), (self.v[layer_idx], v)):
            if evicted and kept:
                # Source and destination overlap: copy the source first.
                buf[:, s:s + kept] = buf[:, s + evicted:s + evicted + kept].clone()
            buf[:, start:end] = new
        return self.k[layer_idx][:, :end], self.v[layer_idx][:, :end], None


class StaticKVCache(KVCache):
    """Fixed-shape ring buffer with device-tensor positions: CUDA-graph capturable.

    Slot of stream position p, with offset = global_end - local_end (tokens evicted so far):
    the sink slot p - offset while that is < sink_tokens (as in the dynamic cache; a recache
    after roll-over refills the sink this way), else the ring slot
    sink_tokens + (p - sink_tokens) mod ring_tokens, which never moves as the window rolls.
    """

    kind = "static"

    def __init__(self, cfg, batch, local_attn_size, sink_size, dtype, device):
        super().__init__(cfg, batch, local_attn_size, sink_size, dtype, device)
        self.global_end = torch.zeros((), dtype=torch.long, device=device)
        self.local_end = torch.zeros((), dtype=torch.long, device=device)
        self._slot_ids = torch.arange(self.capacity, device=device)
        self._slots = torch.zeros(0, dtype=torch.long, device=device)
        self._mask = torch.zeros(1, 1, 1, self.capacity, dtype=torch.bool, device=device)
        self._host: tuple[int, int] | None = (0, 0)   # host mirror of (global_end, local_end); None: unknown
        self._announced: bool | None = None            # expect()'s answer for the next device-position forward
        self._full = False                             # this forward: every slot valid (attend without a mask)
        _mark_static(self.tensors())

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache mutates in place (fixed addresses for the cache's lifetime)."""
        return self.k + self.v + [self.global_end, self.local_end]

    def reset(self) -> None:
        self.global_end.zero_()
        self.local_end.zero_()
        self._host, self._announced = (0, 0), None

    def _advance_host(self, current_start: int, n: int) -> bool:
        """Advance the host mirror; True when every slot is valid after this write."""
        if self._host is None:
            return False
        _, _, g, l = self._advance(*self._host, current_start, n)
        self._host = (g, l)
        return l == self.capacity

    def expect(self, current_start: int, n: int) -> bool:
        """The next forward writes n tokens from `current_start` and passes that position as a
        device tensor: advance the host mirror and say whether it attends without a mask.
        Re-announcing the same position (graph warm-up, capture) is idempotent."""
        self._announced = self._advance_host(current_start, n)
        return self._announced

    def forget_announcement(self) -> None:
        """A replayed graph consumed the announcement without running update()."""
        self._announced = None

    def _begin(self, current_start, n: int) -> None:
        """Slots of the n new tokens and the validity mask, all computed on the device."""
        self._check_new_tokens(n)
        s, ring = self.sink_tokens, self.ring_tokens
        g, l = self.global_end, self.local_end
        grow = (current_start + n) - g                        # 0-dim device tensor
        evicted = (l + grow - self.capacity).clamp(min=0)
        new_l = l + grow - evicted
        new_g = g + grow
        offset = new_g - new_l
        pos = self._slot_ids[:n] + current_start
        logical = pos - offset
        self._slots = torch.where(logical < s, logical, s + torch.remainder(pos - s, ring))
        # Valid: sink slots below local_end; ring slots holding the last (local_end - sink)
        # positions before global_end (d = how far back the slot's position is).
        ids = self._slot_ids
        back = torch.remainder(new_g - 1 - ids, ring)
        valid = torch.where(ids < s, ids < new_l, back < (new_l - s))
        self._mask = valid.view(1, 1, 1, -1)
        g.copy_(new_g)
        l.copy_(new_l)

    def update(self, layer_idx, k, v, current_start):
        if layer_idx == 0:
            n = k.shape[1]
            if isinstance(current_start, int):
                self._full = self._advance_host(current_start, n)
            elif self._announced is not None:
                self._full, self._announced = self._announced, None
            else:   # a device position nobody announced: the mirror cannot follow it
                self._full, self._host = False, None
            self._begin(current_start, n)
        kb, vb = self.k[layer_idx], self.v[layer_idx]
        kb.index_copy_(1, self._slots, k)
        vb.index_copy_(1, self._slots, v)
        return kb, vb, (None if self._full else self._mask)


def make_kv_cache(kind: str, cfg: ModelConfig, batch: int, local_attn_size: int, sink_size: int,
                  dtype: torch.dtype, device) -> KVCache:
    """A `kind` ("dynamic" | "static") KV cache for every layer of `cfg`'s model."""
    classes = {"dynamic": DynamicKVCache, "static": StaticKVCache}
    if kind not in classes:
        raise LltraceError(f"unknown kv_cache kind {kind!r}", f"valid: {', '.join(KINDS)}")
    return classes[kind](cfg, batch, local_attn_size, sink_size, dtype, device)


class CrossAttnCache:
    """Per-layer cross-attention k/v of the current prompt's text tokens.

    The model fills it (`copy_` into k[i], v[i]) on the first forward after `reset()` (a new
    prompt) and reads it afterwards. The buffers are allocated once and refilled in place, so a CUDA graph captured
    while reading them sees the new prompt after a switch.
    """

    def __init__(self, cfg: ModelConfig, batch: int, dtype: torch.dtype, device):
        shape = (batch, cfg.text_len, cfg.num_heads, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.ready = False   # a host flag: flips only on a prompt switch
        _mark_static(self.tensors())

    def tensors(self) -> list[torch.Tensor]:
        return self.k + self.v

    def reset(self) -> None:
        self.ready = False
