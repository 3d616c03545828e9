"""`build_decoder(kind, cfg)`: the streaming decoder a preset names ("wan" or "fast").

It sits above both decoder modules so that neither imports the other.
"""
from __future__ import annotations

import torch

from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.config import ModelConfig
from lltrace.pipeline.fast_decoder import FastDecoder
from lltrace.pipeline.vae import DECODER_KINDS, StreamingDecoder, WanDecoder


def build_decoder(kind: str, cfg: ModelConfig, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu", seed: int = 0) -> StreamingDecoder:
    """A decoder with seeded random weights: built on meta, materialised once on `device`."""
    if kind == "wan":
        cls: type[StreamingDecoder] = WanDecoder
    elif kind == "fast":
        cls = FastDecoder
    else:
        raise LltraceError(f"unknown decoder {kind!r}", f"valid: {', '.join(DECODER_KINDS)}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeedsCudaError(f"the {kind} decoder on {device}")
    with torch.device("meta"):
        dec = cls.from_config(cfg)  # type: ignore[attr-defined]
    dec = dec.to(dtype=dtype).to_empty(device=device)
    dec.init_weights(seed)
    return dec.eval().requires_grad_(False)
