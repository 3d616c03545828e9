"""Attention kernels for the DiT: PyTorch SDPA always, flash-attn 2 when installed.

`attention(q, k, v, backend, mask)` takes [B, L, heads, head_dim] tensors (the layout the
model and the KV cache use) and returns the same layout.

- "sdpa": `torch.nn.functional.scaled_dot_product_attention`; PyTorch picks its kernel
  (cuDNN / flash / memory-efficient / math). A mask is passed through.
- "flash": `flash_attn.flash_attn_func`, used only where it can run: CUDA, fp16/bf16 and no
  mask. Anything else (the static KV cache's validity mask, float32, CPU tensors) goes to
  SDPA, so a masked self-attention runs SDPA's masked kernels (memory-efficient or cuDNN,
  not the flash kernel) even when "flash" was asked for. `flash_used(...)` says which.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from lltrace.errors import LltraceError, NeedsCudaError

BACKENDS = ("auto", "sdpa", "flash")


def flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_backend(name: str, device) -> str:
    """"auto" | "sdpa" | "flash" -> the backend that runs: "sdpa" or "flash"."""
    if name not in BACKENDS:
        raise LltraceError(f"unknown attention backend {name!r}", f"valid: {', '.join(BACKENDS)}")
    on_cuda = torch.device(device).type == "cuda"
    if name == "sdpa":
        return "sdpa"
    if name == "auto":
        return "flash" if on_cuda and flash_available() else "sdpa"
    if not on_cuda:
        raise NeedsCudaError("attention backend 'flash' (flash-attn)")
    if not flash_available():
        raise LltraceError("attention backend 'flash' asked for, but flash-attn is not installed",
                           "pip install 'lltrace[flash]', or use attention: sdpa / auto")
    return "flash"


def flash_used(backend: str, q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether `attention` runs flash-attn for these inputs (else SDPA)."""
    return (backend == "flash" and mask is None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention, q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D].

    `mask`: boolean, True = may attend, broadcastable to [B, H, Lq, Lk].
    """
    if flash_used(backend, q, mask):
        from flash_attn import flash_attn_func
        return flash_attn_func(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)
