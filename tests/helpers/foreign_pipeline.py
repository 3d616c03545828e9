"""A "foreign" streaming pipeline: code lltrace did not write and that knows nothing of it.

The project's own, written from the calling conventions of LongLive-family inference code
(issue #15), not copied from any of it: a causal Wan-like DiT behind a wrapper whose forward
takes `timestep`, per-layer KV caches that are dicts of tensors with *index tensors*
(`global_end_index`, `local_end_index`) read with `.item()` in every layer's attention (the
host syncs that make such code host-bound), several generator calls per block (one per
denoising step at a noisy timestep, then a clean call at timestep 0 that writes the cache), a
VAE-like decoder called through `decode_to_pixel` on the whole video at the end (or per block),
and a prompt switch through a `_recache_after_switch` method. No observer, no lltrace import.

Module names are Wan's: generator.model.blocks.{k}.self_attn / cross_attn / ffn / norm1..3,
patch_embedding, time_embedding, text_embedding, head. Latents are [B, F, C, H, W].
`python tests/data/foreign_script.py --help` runs it as a script.
"""
from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F
from torch import nn

DIM, HEADS, CH, HW, TEXT, FPB = 32, 2, 4, 4, 5, 3
TOKENS = (HW // 2) * (HW // 2)          # per latent frame, after 2x2 patches
TIMESTEPS = (1000.0, 750.0, 500.0, 250.0)


def new_kv_cache(layers: int, max_frames: int, batch: int = 1, device="cpu") -> list[dict[str, torch.Tensor]]:
    n = max_frames * TOKENS
    z = functools.partial(torch.zeros, device=device)
    return [{"k": z(batch, n, HEADS, DIM // HEADS), "v": z(batch, n, HEADS, DIM // HEADS),
             "global_end_index": z(1, dtype=torch.long), "local_end_index": z(1, dtype=torch.long)}
            for _ in range(layers)]


def new_crossattn_cache(layers: int) -> list[dict]:
    return [{"is_init": False} for _ in range(layers)]


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x, kv_cache, current_start):
        b, s, _ = x.shape
        shape = (b, s, HEADS, DIM // HEADS)
        q, k, v = self.q(x).view(shape), self.k(x).view(shape), self.v(x).view(shape)
        # The index tensors live with the cache; reading them is a host sync on a GPU.
        local_end = int(kv_cache["local_end_index"].item())
        start = current_start
        end = start + s
        kv_cache["k"][:, start:end] = k
        kv_cache["v"][:, start:end] = v
        kv_cache["global_end_index"].fill_(max(end, int(kv_cache["global_end_index"].item())))
        kv_cache["local_end_index"].fill_(max(end, local_end))
        keys, values = kv_cache["k"][:, :end], kv_cache["v"][:, :end]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2))
        return self.o(out.transpose(1, 2).reshape(b, s, DIM))


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x, context, cache):
        if not cache["is_init"]:
            cache["k"], cache["v"] = self.k(context), self.v(context)
            cache["is_init"] = True
        attn = torch.softmax(self.q(x) @ cache["k"].transpose(1, 2) / DIM ** 0.5, dim=-1)
        return self.o(attn @ cache["v"])


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.self_attn, self.cross_attn = SelfAttention(), CrossAttention()
        self.ffn = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.modulation = nn.Parameter(torch.zeros(1, 3, DIM))

    def forward(self, x, e, context, kv_cache, cross_cache, current_start):
        shift, scale, gate = (self.modulation + e.unsqueeze(1)).chunk(3, dim=1)
        x = x + gate * self.self_attn(self.norm1(x) * (1 + scale) + shift, kv_cache, current_start)
        x = x + self.cross_attn(self.norm3(x), context, cross_cache)
        return x + self.ffn(self.norm2(x))


class TinyCausalDiT(nn.Module):
    """forward(x, t, context, kv_cache, crossattn_cache, current_start): x [B, F, C, H, W],
    t [B, F] timesteps, current_start a token offset into the cache."""

    def __init__(self, layers: int = 2):
        super().__init__()
        self.patch_embedding = nn.Conv2d(CH, DIM, kernel_size=2, stride=2)
        self.time_embedding = nn.Sequential(nn.Linear(16, DIM), nn.SiLU(), nn.Linear(DIM, DIM))
        self.text_embedding = nn.Linear(DIM, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(layers))
        self.head = nn.Linear(DIM, CH * 4)

    def forward(self, *args, **kwargs):   # like Wan's: the wrapper's signature names `timestep`
        return self._forward_inference(*args, **kwargs)

    def _forward_inference(self, x, t, context, kv_cache, crossattn_cache, current_start):
        b, f = x.shape[:2]
        tokens = self.patch_embedding(x.flatten(0, 1))                       # [B*F, D, H/2, W/2]
        tokens = tokens.flatten(2).transpose(1, 2).reshape(b, f * TOKENS, DIM)
        freqs = torch.arange(8, dtype=x.dtype, device=x.device) / 8
        ang = t[:, :1].to(x.dtype) * freqs                                   # [B, 8]
        e = self.time_embedding(torch.cat([ang.sin(), ang.cos()], dim=-1))
        context = self.text_embedding(context)
        for block, kv, cross in zip(self.blocks, kv_cache, crossattn_cache):
            tokens = block(tokens, e, context, kv, cross, current_start)
        out = self.head(tokens).reshape(b, f, HW // 2, HW // 2, CH, 2, 2)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, f, CH, HW, HW)


class DiffusionWrapper(nn.Module):
    """The generator the pipeline calls: named arguments, `timestep` among them."""

    def __init__(self, layers: int = 2):
        super().__init__()
        self.model = TinyCausalDiT(layers)

    def forward(self, noisy_image_or_video, conditional_dict, timestep, kv_cache=None, crossattn_cache=None,
                current_start=0):
        flow = self.model(noisy_image_or_video, timestep, conditional_dict["prompt_embeds"], kv_cache,
                          crossattn_cache, current_start)
        sigma = (timestep / 1000.0).reshape(*timestep.shape, 1, 1, 1)
        return noisy_image_or_video - sigma * flow                              # x0 prediction


class TinyVAE(nn.Module):
    """decode_to_pixel(latents [B, F, C, H, W]) -> video [B, T, 3, 2H, 2W], T = 1 + 4 (F - 1) for
    the first chunk of a video and 4 F for later ones (a causal video VAE's time upsampling)."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Sequential(nn.Conv2d(CH, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3 * 4, 3, padding=1))

    def decode_to_pixel(self, latents, first_chunk: bool = True):
        b, f = latents.shape[:2]
        img = self.decoder(latents.flatten(0, 1))                            # [B*F, 12, H, W]
        img = F.pixel_shuffle(img, 2).reshape(b, f, 3, 2 * HW, 2 * HW)
        video = img.repeat_interleave(4, dim=1)
        return video[:, 3:] if first_chunk else video


class ForeignPipeline(nn.Module):
    """inference(noise, num_blocks, ...) the LongLive-family way. `decode="end"` decodes the
    whole video after the last block; `"block"` decodes each block after its context call.
    `switch_at={block: prompt}` switches prompts before those blocks through
    `_recache_after_switch`. `sleep_s` per denoising step slows it down (the Ctrl-C test)."""

    def __init__(self, layers: int = 2, seed: int = 0, device="cpu"):
        super().__init__()
        torch.manual_seed(seed)
        self.generator = DiffusionWrapper(layers)
        self.vae = TinyVAE()
        self.layers = layers
        self.device = torch.device(device)
        self.to(self.device)

    def encode_text(self, prompt: str) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(sum(map(ord, prompt)))
        return {"prompt_embeds": torch.randn(1, TEXT, DIM, generator=g).to(self.device)}

    @torch.no_grad()
    def inference(self, noise: torch.Tensor, prompt: str = "a fox", *, decode: str = "end",
                  switch_at: dict[int, str] | None = None, sleep_s: float = 0.0,
                  fail_at_block: int | None = None, context_noise: float = 0.0) -> torch.Tensor:
        noise = noise.to(self.device)
        b, total = noise.shape[:2]
        num_blocks = total // FPB
        self.kv_cache = new_kv_cache(self.layers, total, b, self.device)
        self.crossattn_cache = new_crossattn_cache(self.layers)
        cond = self.encode_text(prompt)
        output = torch.zeros_like(noise)
        videos = []
        for block in range(num_blocks):
            if fail_at_block == block:
                raise RuntimeError(f"foreign pipeline: failing on purpose at block {block}")
            if switch_at and block in switch_at:
                cond = self.encode_text(switch_at[block])
                self._recache_after_switch(output, block * FPB, cond)
            start = block * FPB
            x0, video = self.generate_block(noise[:, start:start + FPB], cond, start, decode=decode == "block",
                                            sleep_s=sleep_s, context_noise=context_noise)
            output[:, start:start + FPB] = x0
            if video is not None:
                videos.append(video)
        if decode == "block":
            return torch.cat(videos, dim=1)
        return self.vae.decode_to_pixel(output)

    def generate_block(self, x, cond, start, *, decode=False, sleep_s=0.0, context_noise=0.0):
        """One block: the denoising steps, the context call that writes the cache, and the
        block's decode if asked. Returns (clean latent, video or None)."""
        b = x.shape[0]
        for j, t in enumerate(TIMESTEPS):
            timestep = torch.full((b, FPB), t, device=self.device)
            x0 = self.generator(noisy_image_or_video=x, conditional_dict=cond, timestep=timestep,
                                kv_cache=self.kv_cache, crossattn_cache=self.crossattn_cache,
                                current_start=start * TOKENS)
            if sleep_s:
                time.sleep(sleep_s)
            if j + 1 < len(TIMESTEPS):
                s = TIMESTEPS[j + 1] / 1000.0
                x = (1 - s) * x0 + s * torch.randn_like(x0)
        # the clean forward (timestep 0, or a little noise) writes the block into the KV cache
        self.generator(noisy_image_or_video=x0, conditional_dict=cond,
                       timestep=torch.full((b, FPB), float(context_noise), device=self.device),
                       kv_cache=self.kv_cache, crossattn_cache=self.crossattn_cache, current_start=start * TOKENS)
        video = self.vae.decode_to_pixel(x0, first_chunk=start == 0) if decode else None
        return x0, video

    def _recache_after_switch(self, output, current_start_frame, new_conditional_dict):
        """New prompt: reset the cross-attention cache and re-run the recent clean frames."""
        self.crossattn_cache = new_crossattn_cache(self.layers)
        if current_start_frame == 0:
            return
        lo = max(0, current_start_frame - 2 * FPB)
        frames = output[:, lo:current_start_frame]
        self.generator(noisy_image_or_video=frames, conditional_dict=new_conditional_dict,
                       timestep=torch.zeros(frames.shape[:2], device=self.device), kv_cache=self.kv_cache,
                       crossattn_cache=self.crossattn_cache, current_start=lo * TOKENS)
        self.crossattn_cache = new_crossattn_cache(self.layers)


def make_noise(num_blocks: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_blocks * FPB, CH, HW, HW, generator=g)
