"""Ulysses sequence parallelism over N processes (issue #19), as LongLive 2.0 / xDiT run it.

Every rank holds the whole model. A forward's tokens are split across the ranks: rank r keeps
tokens [r*s, (r+1)*s) of every latent frame (s = frame_seqlen / N), so each rank's slice still
has whole frames' worth of per-frame adaLN modulation and its own RoPE rows. Everything
token-local (norms, projections, cross-attention, FFN, head) runs on the slice. Self-attention
needs all tokens: an all-to-all turns q/k/v from (tokens/N, all heads) into (all tokens,
heads/N); attention and the KV cache (each rank keeps its heads for the whole sequence) run
locally; a second all-to-all turns the output back. The head's output is all-gathered so that
every rank ends the forward with the full prediction (the sampler then runs identically
everywhere, and rank 0 decodes the frames that the frame clock sees).

The collectives are torch.distributed's (gloo on the CPU, NCCL on CUDA); the processes come
from torch's elastic launcher (`launch`). `SequenceParallel.heads_from_tokens` /
`tokens_from_heads` are the all-to-alls: lltrace.capture puts its `ll/comm` region on them.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from lltrace.errors import LltraceError
from lltrace.pipeline.config import ModelConfig


def check_split(cfg: ModelConfig, nproc: int) -> None:
    """Ulysses needs the heads and a frame's tokens to divide evenly (one-line error otherwise)."""
    if nproc < 1:
        raise LltraceError(f"--nproc must be >= 1, got {nproc}")
    if cfg.num_heads % nproc:
        raise LltraceError(f"--nproc {nproc}: the model's {cfg.num_heads} attention heads do not divide "
                           f"into {nproc} ranks", "Ulysses splits the heads: pick a divisor of the heads")
    if cfg.frame_seqlen % nproc:
        raise LltraceError(f"--nproc {nproc}: a latent frame's {cfg.frame_seqlen} tokens do not divide "
                           f"into {nproc} ranks", "each rank takes an equal slice of every frame")


def local_config(cfg: ModelConfig, nproc: int) -> ModelConfig:
    """The config whose heads are one rank's share (heads/N, same head_dim): what the KV cache of
    a rank is allocated for."""
    return dataclasses.replace(cfg, num_heads=cfg.num_heads // nproc, dim=cfg.dim // nproc)


class SequenceParallel:
    """One rank's view of the sequence-parallel group (see the module docstring)."""

    def __init__(self, frame_seqlen: int, group: Any = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        if frame_seqlen % self.world:
            raise LltraceError(f"a latent frame's {frame_seqlen} tokens do not divide into {self.world} ranks")
        self.frame_seqlen = frame_seqlen
        self.s = frame_seqlen // self.world   # this rank's tokens per frame

    def attach(self, model: torch.nn.Module) -> None:
        """Make `model` (a CausalWanModel) run its forwards sequence-parallel on this rank."""
        if model.cfg.num_heads % self.world:
            raise LltraceError(f"{model.cfg.num_heads} heads do not divide into {self.world} ranks")
        model.sp = self
        for block in model.blocks:
            block.self_attn.sp = self

    # -- token slices (no communication) ---------------------------------------------------------
    def split_tokens(self, x: torch.Tensor, dim: int, frames: int) -> torch.Tensor:
        """This rank's slice of every frame along token dim `dim` (frames * frame_seqlen long)."""
        x = x.unflatten(dim, (frames, self.world, self.s)).select(dim + 1, self.rank)
        return x.flatten(dim, dim + 1)

    def gather_tokens(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, frames*s, C] slices of every rank -> [B, frames*frame_seqlen, C] in stream order."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        b, c = x.shape[0], x.shape[-1]
        full = torch.stack([p.view(b, frames, self.s, c) for p in parts], dim=2)   # [B, F, N, s, C]
        return full.flatten(1, 3)

    # -- the two all-to-alls ---------------------------------------------------------------------
    def _all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        """Chunk i of dim 0 goes to rank i; chunk j of the result came from rank j."""
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.group)
        return out

    def heads_from_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [B, frames*s, H, D] (this rank's tokens, all heads) -> [B, frames*S, H/N, D]
        (all tokens, this rank's heads), in stream token order. One all-to-all for the three."""
        b, n_local, h, d = q.shape
        frames, n = n_local // self.s, self.world
        x = torch.stack((q, k, v)).view(3, b, frames, self.s, n, h // n, d)
        x = self._all_to_all(x.permute(4, 0, 1, 2, 3, 5, 6).contiguous())   # [N, 3, B, F, s, h/N, D]
        x = x.permute(1, 2, 3, 0, 4, 5, 6).reshape(3, b, frames * n * self.s, h // n, d)
        return x[0], x[1], x[2]

    def tokens_from_heads(self, a: torch.Tensor) -> torch.Tensor:
        """The inverse: attention output [B, frames*S, H/N, D] -> [B, frames*s, H, D]."""
        b, n_all, hl, d = a.shape
        frames, n = n_all // self.frame_seqlen, self.world
        x = a.view(b, frames, n, self.s, hl, d).permute(2, 0, 1, 3, 4, 5).contiguous()  # [N, B, F, s, h/N, D]
        x = self._all_to_all(x)                     # chunk j: rank j's heads of this rank's tokens
        return x.permute(1, 2, 3, 0, 4, 5).reshape(b, frames * self.s, n * hl, d)


# ----------------------------------------------------------------------------- processes
def backend_for(device: torch.device | str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_worker(device: torch.device | str) -> tuple[int, int, torch.device]:
    """In a launched worker: join the process group (env:// from the launcher), pin the rank's GPU.
    Returns (rank, world size, this rank's device)."""
    dev = torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        # the CPU's cores are shared by the ranks: N ranks of all-core matmuls only thrash
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if not dist.is_initialized():
        dist.init_process_group(backend_for(dev), device_id=dev if dev.type == "cuda" else None)
    return dist.get_rank(), dist.get_world_size(), dev


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, entrypoint: Callable[..., Any], *args: Any, run_id: str = "lltrace",
           log_dir: str | None = None, quiet: bool = False) -> dict[int, Any]:
    """Run `entrypoint(*args)` in `nproc` processes on this host through torch's elastic launcher
    (what torchrun runs): rendezvous on a free local port, no restarts. Returns {rank: return
    value}. A worker's exception comes back as torch's ChildFailedError. `quiet`: the workers'
    stdout/stderr go to files under `log_dir` only, and the launcher's own log stays silent
    (the caller reports a failure)."""
    import logging

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=run_id,
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}",
                          max_restarts=0, monitor_interval=0.1, start_method="spawn",
                          logs_specs=DefaultLogsSpecs(log_dir=log_dir, redirects=Std.ALL if quiet else Std.NONE))
    log = logging.getLogger("torch.distributed")
    level = log.level
    if quiet:
        log.setLevel(logging.CRITICAL + 1)
    try:
        return elastic_launch(config, entrypoint)(*args)
    finally:
        log.setLevel(level)
