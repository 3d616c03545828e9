"""Run LongLive v1.0's own inference code (NVlabs/LongLive, branch v1.0) with random weights.

This is a *user's* script, the kind `lltrace run --script` profiles: lltrace did not write the
pipeline it runs. It imports LongLive's modules from `.longlive/` (extract them first with
`bash scripts/longlive_v1/fetch_source.sh GIT_DIR`; they are not committed here, their licenses
differ), builds the Wan2.1-T2V-1.3B `CausalWanModel` from its classes with random bf16 weights,
and calls `CausalInferencePipeline.inference` (or `InteractiveCausalInferencePipeline.inference`
with `--switch`) with LongLive's v1.0 inference config (configs/longlive_inference.yaml: denoising
steps 1000/750/500/250 warped by the scheduler, 3 latent frames per block, local attention window
12 frames with a 3-frame sink, timestep shift 5, clean context pass with timestep 0).

What is not LongLive's:
- no checkpoint: `CausalWanModel.from_pretrained` and the VAE loader are replaced, while the
  wrappers are built, by builders of the same classes with random weights;
- no text encoder: a stand-in returns random `prompt_embeds` of T5's shape [B, 512, 4096];
- `flash_attn`: the device image has no flash-attn 2, and LongLive's `flash_attention` calls
  `flash_attn.flash_attn_varlen_func` with no fallback. A stand-in module `flash_attn` runs
  `torch.nn.functional.scaled_dot_product_attention` with flash-attn's semantics (`--attn sdpa`),
  or forwards to flash-attn 4 (`flash_attn.cute`) when that is installed (`--attn fa4`). A real
  flash-attn 2 is used as is (`--attn fa2`);
- LongLive's package `__init__`s import training code and hub loaders: the packages `wan`,
  `wan.modules`, `utils` and `pipeline` are registered in sys.modules as bare packages whose
  path is the extracted folder, so only the modules themselves are imported.

It prints the time of each block (CUDA events on the GPU, wall clock on the CPU) and the decode,
so a plain `python scripts/longlive_v1/run_longlive_v1.py` gives the time without lltrace, and
`--timings-json FILE` writes them for scripts/device/longlive_v1.sh.
`--tiny --device cpu` runs in seconds on a CPU (2 layers, FFN 256, 4x4 latents; the model width
stays 12 heads x 128 because the pipeline allocates its KV cache with that shape).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO / ".longlive"

# Wan2.1-T2V-1.3B (wan/configs/wan_t2v_1_3B.py and the checkpoint's config.json).
WAN_1_3B = {"model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16,
            "dim": 1536, "ffn_dim": 8960, "freq_dim": 256, "text_dim": 4096, "out_dim": 16,
            "num_heads": 12, "num_layers": 30, "qk_norm": True, "cross_attn_norm": True,
            "eps": 1e-6}
# --tiny: the pipeline hard-codes a [B, L, 12, 128] KV cache, so heads and head size stay.
TINY = {**WAN_1_3B, "ffn_dim": 256, "text_len": 64, "text_dim": 64, "num_layers": 2}
# Wan 2.1 VAE (wan/modules/vae.py, _video_vae's configuration).
WAN_VAE = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
           "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0}
LATENT_HW = (60, 104)   # 480x832 video
TINY_LATENT_HW = (4, 4)
PY_DEPS = {"diffusers": "diffusers", "einops": "einops", "ftfy": "ftfy", "regex": "regex",
           "transformers": "transformers"}


class UsageError(Exception):
    """A mistake in how the script was called or set up: one line, exit code 2."""


class Cfg(dict):
    """LongLive reads its OmegaConf config both as attributes (`args.model_kwargs.sink_size`,
    `getattr(args, "context_noise")`) and as a mapping (`**args.model_kwargs`); omegaconf is not
    on the device, so this dict does both."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def wrap(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        return value


# --- flash-attn stand-in ----------------------------------------------------------------------

def _sdpa(q, k, v, *, causal, softmax_scale, window_size, dropout_p):
    """flash-attn's attention for one batch laid out [B, L, H, D], through SDPA.

    flash-attn aligns the causal mask and the window to the bottom right when Lq != Lk (query i
    sees key j <= i + Lk - Lq; a query that sees no key gives 0), SDPA's is_causal to the top
    left, so such masks are built here.
    Grouped-query layouts (fewer k/v heads) are repeated to the query heads.
    """
    import torch.nn.functional as F

    lq, lk, hq, hk = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    if hk != hq:
        k = k.repeat_interleave(hq // hk, dim=2)
        v = v.repeat_interleave(hq // hk, dim=2)
    left, right = (-1, -1) if window_size is None else window_size
    mask, is_causal = None, False
    if causal or left >= 0 or right >= 0:
        if causal and lq == lk and left < 0:
            is_causal = True
        else:
            i = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
            j = torch.arange(lk, device=q.device)[None, :]
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
            if causal:
                right = 0
            if right >= 0:
                mask &= j <= i + right
            if left >= 0:
                mask &= j >= i - left
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
        dropout_p=dropout_p, is_causal=is_causal, scale=softmax_scale)
    if mask is not None:   # flash-attn gives 0 where a query sees no key (SDPA: NaN)
        out = out.masked_fill(~mask.any(-1)[:, None], 0.0)
    return out.transpose(1, 2)


def _varlen(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw):
    """Packed [total, H, D] sequences (flash-attn's varlen layout) through a [B, L, H, D] kernel.

    When every sequence has the maximum length (total == B * max, which LongLive's calls always
    satisfy) the batch is a reshape and nothing is read back from the GPU; otherwise the
    boundaries are read once (a sync) and the sequences run one by one.
    """

    b = cu_seqlens_q.numel() - 1
    if q.shape[0] == b * max_seqlen_q and k.shape[0] == b * max_seqlen_k:
        out = attn(q.unflatten(0, (b, max_seqlen_q)), k.unflatten(0, (b, max_seqlen_k)),
                   v.unflatten(0, (b, max_seqlen_k)), **kw)
        return out.flatten(0, 1)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    return torch.cat([attn(q[None, cq[i]:cq[i + 1]], k[None, ck[i]:ck[i + 1]],
                           v[None, ck[i]:ck[i + 1]], **kw)[0] for i in range(b)])


def make_flash_attn_module(backend: str) -> types.ModuleType:
    """A module named `flash_attn` with flash-attn 2's two entry points, run by SDPA or FA4."""
    mod = types.ModuleType("flash_attn")
    mod.__doc__ = f"lltrace's run_longlive_v1.py stand-in for flash-attn 2 ({backend})"
    mod.__version__ = f"2.0-standin-{backend}"
    mod.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)   # find_spec() asks for it
    if backend == "fa4":
        from flash_attn.cute import flash_attn_func as fa4_func

        def attn(q, k, v, *, causal, softmax_scale, window_size, dropout_p):
            if dropout_p:
                raise NotImplementedError("flash-attn 4 has no dropout")
            w = (None, None) if window_size is None else tuple(
                None if x < 0 else x for x in window_size)
            out = fa4_func(q, k, v, softmax_scale=softmax_scale, causal=causal, window_size=w)
            return out[0] if isinstance(out, tuple) else out
    else:
        attn = _sdpa

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                        window_size=(-1, -1), *args, **kwargs):
        return attn(q, k, v, causal=causal, softmax_scale=softmax_scale,
                    window_size=window_size, dropout_p=dropout_p)

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               dropout_p=0.0, softmax_scale=None, causal=False,
                               window_size=(-1, -1), *args, **kwargs):
        return _varlen(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       causal=causal, softmax_scale=softmax_scale, window_size=window_size,
                       dropout_p=dropout_p)

    mod.flash_attn_func = flash_attn_func
    mod.flash_attn_varlen_func = flash_attn_varlen_func
    return mod


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_attention(choice: str, device: str) -> str:
    """Make `import flash_attn` give LongLive what `choice` says; returns the backend used."""
    fa2 = False
    if _has("flash_attn"):
        try:
            fa2 = hasattr(importlib.import_module("flash_attn"), "flash_attn_varlen_func")
        except ImportError:
            fa2 = False
    fa4 = _has("flash_attn") and _has("flash_attn.cute")
    if choice == "auto":
        choice = "fa2" if fa2 and device == "cuda" else "fa4" if fa4 and device == "cuda" else "sdpa"
    if choice in ("fa2", "fa4") and device != "cuda":
        raise UsageError(f"--attn {choice} needs CUDA (--device cuda)")
    if choice == "fa2":
        if not fa2:
            raise UsageError("--attn fa2: flash-attn 2 is not installed (use --attn sdpa)")
        return "fa2"
    if choice == "fa4" and not fa4:
        raise UsageError("--attn fa4: flash-attn 4 (flash_attn.cute) is not installed")
    sys.modules["flash_attn"] = make_flash_attn_module(choice)
    # LongLive prefers flash-attn 3 (flash_attn_interface) on Hopper; None here makes its
    # `import flash_attn_interface` raise ModuleNotFoundError, so the chosen backend runs.
    sys.modules["flash_attn_interface"] = None
    return choice


def flash_attention_cpu(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None,
                        q_scale=None, causal=False, window_size=(-1, -1), deterministic=False,
                        dtype=None, version=None):
    """CPU only (--device cpu): LongLive's `flash_attention` asserts a CUDA tensor, so on the CPU
    this takes its place in wan.modules.attention and wan.modules.model. It packs the batch
    the way LongLive's does and calls the same varlen stand-in, in the input's dtype."""

    b, lq, lk = q.size(0), q.size(1), k.size(1)
    q_lens = torch.full((b,), lq, dtype=torch.int32) if q_lens is None else q_lens
    k_lens = torch.full((b,), lk, dtype=torch.int32) if k_lens is None else k_lens
    qp = torch.cat([u[:n] for u, n in zip(q, q_lens.tolist())])
    kp = torch.cat([u[:n] for u, n in zip(k, k_lens.tolist())])
    vp = torch.cat([u[:n] for u, n in zip(v, k_lens.tolist())])
    if q_scale is not None:
        qp = qp * q_scale

    def cu(lens):
        return torch.cat([lens.new_zeros(1), lens]).cumsum(0, dtype=torch.int32)

    x = sys.modules["flash_attn"].flash_attn_varlen_func(
        qp, kp, vp, cu(q_lens), cu(k_lens), lq, lk, dropout_p=dropout_p,
        softmax_scale=softmax_scale, causal=causal, window_size=window_size)
    return x.unflatten(0, (b, lq))


# --- LongLive's modules -----------------------------------------------------------------------

def check_source(source: Path):
    """LongLive's source and the packages its modules import are there (else a one-line error)."""
    if not (source / "pipeline" / "causal_inference.py").is_file():
        raise UsageError(f"LongLive's source is not in {source}: run "
                         "`bash scripts/longlive_v1/fetch_source.sh GIT_DIR` (a clone of "
                         "NVlabs/LongLive) or pass --source DIR")
    missing = [pip for mod, pip in PY_DEPS.items() if not _has(mod)]
    if missing:
        raise UsageError(f"LongLive's modules need {', '.join(missing)}: pip install "
                         f"{' '.join(missing)} (on the device: scripts/device/fetch_wheels.sh)")


def import_longlive(source: Path, device: str):
    """Imports LongLive's pipeline modules without running its package __init__s."""
    for name in ("wan", "wan.modules", "utils", "pipeline"):
        where = str(source.joinpath(*name.split(".")))
        old = sys.modules.get(name)
        if old is not None:
            if list(getattr(old, "__path__", [])) == [where]:
                continue   # registered by an earlier run in this process
            raise UsageError(f"a module named {name!r} is already imported from "
                             f"{getattr(old, '__file__', None) or old}; LongLive's would clash")
        pkg = types.ModuleType(name)
        pkg.__path__ = [where]
        sys.modules[name] = pkg
        if "." in name:
            setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], pkg)

    patches = contextlib.ExitStack()
    if not torch.cuda.is_available():
        # utils/memory.py runs `torch.device(f'cuda:{torch.cuda.current_device()}')` on import.
        patches.enter_context(mock.patch.object(torch.cuda, "current_device", lambda: 0))
    with patches:
        ci = importlib.import_module("pipeline.causal_inference")
        ici = importlib.import_module("pipeline.interactive_causal_inference")
    ww = sys.modules["utils.wan_wrapper"]
    attention = sys.modules["wan.modules.attention"]
    if device == "cpu":
        attention.flash_attention = flash_attention_cpu
        sys.modules["wan.modules.model"].flash_attention = flash_attention_cpu
    return types.SimpleNamespace(ci=ci, ici=ici, ww=ww, attention=attention)


class RandomTextEncoder(torch.nn.Module):
    """Stands in for LongLive's WanTextEncoder (umT5-XXL): the same call and output,
    `{"prompt_embeds": [B, 512, text_dim]}`, random per prompt, no tokenizer or download."""

    def __init__(self, text_len: int, text_dim: int):
        super().__init__()
        self.text_len, self.text_dim = text_len, text_dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self, text_prompts):
        embeds = []
        for prompt in text_prompts:
            g = torch.Generator().manual_seed(sum(map(ord, prompt)) % (2 ** 31))
            embeds.append(torch.randn(self.text_len, self.text_dim, generator=g))
        return {"prompt_embeds": torch.stack(embeds).to(self.anchor.device, self.anchor.dtype)}


class StubVAE(torch.nn.Module):
    """--vae stub: WanVAEWrapper.decode_to_pixel's output shape ([B, 1 + 4(F-1), 3, 8H, 8W],
    in [-1, 1]) with no compute, for the tiny CPU run."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def decode_to_pixel(self, latent, use_cache=False):
        b, f, _, h, w = latent.shape
        return torch.zeros(b, 1 + 4 * (f - 1), 3, 8 * h, 8 * w, device=latent.device)


def build_pipeline(ll, args, model_cfg: dict, cfg: Cfg, dev: str, dtype):
    vae_mod = sys.modules["wan.modules.vae"]

    def random_wan(cls):
        def from_pretrained(path, **kwargs):   # the wrapper's call, with no checkpoint to read
            with torch.device(dev):
                return cls(**model_cfg, **kwargs)
        return from_pretrained

    def random_vae(pretrained_path=None, z_dim=None, device="cpu", **kwargs):
        with torch.device(dev):
            return vae_mod.WanVAE_(**{**WAN_VAE, "z_dim": z_dim or 16, **kwargs})

    with mock.patch.object(ll.ww.CausalWanModel, "from_pretrained",
                           random_wan(ll.ww.CausalWanModel)), \
         mock.patch.object(ll.ww, "_video_vae", random_vae):
        generator = ll.ww.WanDiffusionWrapper(**cfg.model_kwargs, is_causal=True)
        vae = ll.ww.WanVAEWrapper() if args.vae == "random" else StubVAE()
    text_encoder = RandomTextEncoder(model_cfg["text_len"], model_cfg["text_dim"])
    cls = ll.ici.InteractiveCausalInferencePipeline if args.switch else ll.ci.CausalInferencePipeline
    pipe = cls(cfg, device=dev, generator=generator, text_encoder=text_encoder, vae=vae)
    if args.tiny:   # "hard code for Wan2.1-T2V-1.3B" in the pipeline's __init__
        pipe.num_transformer_blocks = model_cfg["num_layers"]
        pipe.frame_seq_length = math.prod(TINY_LATENT_HW) // 4
    if args.lora:
        from utils.lora_utils import configure_lora_for_model

        pipe.generator.model = configure_lora_for_model(
            pipe.generator.model, model_name="generator", lora_config=cfg.adapter)
    return pipe.to(device=dev, dtype=dtype)


# --- timing -----------------------------------------------------------------------------------

def calls_per_block(n_blocks: int, fpb: int, steps: int, switches: list[int]) -> list[int]:
    """Generator calls in each block: one per denoising step, one clean context pass, and one
    recache at the start of the block where a prompt switch lands (InteractiveCausalInference
    Pipeline.inference's loop: a switch at frame s is taken by the first block starting at or
    after s, and recaches unless that block is the first)."""
    out, seg = [], 0
    for b in range(n_blocks):
        extra = 0
        if seg < len(switches) and b * fpb >= switches[seg]:
            seg += 1
            extra = int(b > 0)
        out.append(steps + 1 + extra)
    return out


class BlockClock:
    """Marks the end of each block from the generator's forward hooks: CUDA events on the GPU
    (recorded on the stream, read after the run, so the clock adds no sync), perf_counter on
    the CPU, or with `sync` a device sync then perf_counter (the A/B: the same syncs, at block
    edges only, in both arms). Block i's time runs from block i-1's last call to its own (block
    0 from its first)."""

    def __init__(self, generator, schedule: list[int], cuda: bool, sync: bool = False):
        self.schedule, self.cuda, self.calls = schedule, cuda and not sync, 0
        self.sync = sync and cuda
        self.ends = [sum(schedule[:i + 1]) for i in range(len(schedule))]
        self.marks = []
        self._event = (lambda: torch.cuda.Event(enable_timing=True)) if cuda else None
        self._handles = [generator.register_forward_pre_hook(self._pre),
                         generator.register_forward_hook(self._post)]

    def _mark(self):
        if self.sync:
            torch.cuda.synchronize()
        if self.cuda:
            ev = self._event()
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def _pre(self, module, args):
        if not self.marks:
            self._mark()

    def _post(self, module, args, output):
        self.calls += 1
        if self.calls in self.ends:
            self._mark()

    def finish(self):
        """Marks the end of the run; returns (block ms list, ms from the last block's end to
        the return of inference(), i.e. the decode)."""
        self._mark()
        for h in self._handles:
            h.remove()
        if self.cuda:
            torch.cuda.synchronize()
            ms = [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        else:
            ms = [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return ms[:-1], ms[-1]


def write_json_atomic(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


# --- main -------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="run_longlive_v1.py",
        description="Run LongLive v1.0's CausalInferencePipeline (Wan2.1-1.3B, random weights) "
                    "and print each block's time. Profile it with: lltrace run --script "
                    "scripts/longlive_v1/run_longlive_v1.py -- --blocks 12")
    p.add_argument("--blocks", type=int, default=None,
                   help="blocks of 3 latent frames to generate (default: the config's 120 "
                        "frames = 40 blocks; 3 with --tiny)")
    p.add_argument("--switch", default="", metavar="F[,F...]",
                   help="latent frames at which the prompt switches: runs "
                        "InteractiveCausalInferencePipeline (recache after each switch)")
    p.add_argument("--tiny", action="store_true",
                   help="2 layers, FFN 256, 64 text tokens, 4x4 latents, stub VAE: seconds on a CPU")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="default: cuda if available, else cpu (cpu needs --tiny)")
    p.add_argument("--attn", choices=["auto", "sdpa", "fa2", "fa4"], default="auto",
                   help="flash-attn LongLive calls: fa2 = installed flash-attn 2, fa4 = "
                        "flash-attn 4 (flash_attn.cute) behind a flash-attn 2 stand-in, sdpa = "
                        "stand-in running PyTorch SDPA (default: fa2, else fa4, else sdpa)")
    p.add_argument("--vae", choices=["random", "stub"], default=None,
                   help="random = LongLive's WanVAE with random weights decodes the video at "
                        "the end (default on GPU); stub = right-shaped zeros (default --tiny)")
    p.add_argument("--lora", action="store_true",
                   help="wrap the generator in LongLive's LoRA (peft, rank 256, as its config "
                        "does with a LoRA checkpoint; random adapters)")
    p.add_argument("--low-memory", action="store_true",
                   help="inference(low_memory=True), as LongLive's inference.py passes: the "
                        "output latents live on the CPU")
    p.add_argument("--longlive-profile", action="store_true",
                   help="also pass profile=True to CausalInferencePipeline.inference, which "
                        "prints LongLive's own per-block CUDA-event times (it syncs after each "
                        "block); a cross-check of this script's clock. GPU, no --switch")
    p.add_argument("--layers", type=int, default=None, help="override the number of layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                   help="LongLive v1.0 source folder (default: .longlive/ at the repo root)")
    p.add_argument("--timings-json", type=Path, default=None, metavar="FILE",
                   help="also write the block and decode times to FILE")
    p.add_argument("--ab-rounds", type=int, default=0, metavar="N",
                   help="measure lltrace's overhead in this process instead: N rounds, each one "
                        "group of --ab-blocks blocks bare and one under lltrace.profile per "
                        "--ab-levels level (scripts/bench_script_overhead.py's method)")
    p.add_argument("--ab-blocks", type=int, default=4, metavar="K",
                   help="blocks counted per A/B group (one more runs first, not counted)")
    p.add_argument("--ab-levels", default="block,layer,op", help="lltrace --regions levels to compare")
    args = p.parse_args(argv)
    if args.blocks is not None and args.blocks < 1:
        p.error("--blocks must be at least 1")
    if args.layers is not None and args.layers < 1:
        p.error("--layers must be at least 1")
    if args.ab_rounds < 0 or args.ab_blocks < 1:
        p.error("--ab-rounds must be positive and --ab-blocks at least 1")
    if args.ab_rounds and args.switch:
        p.error("--ab-rounds runs CausalInferencePipeline: no --switch")
    args.ab_levels = [lv for lv in args.ab_levels.split(",") if lv]
    if not set(args.ab_levels) <= {"off", "block", "layer", "op"}:
        p.error(f"--ab-levels takes off, block, layer, op, not {','.join(args.ab_levels)}")
    try:
        args.switch = [int(s) for s in args.switch.split(",") if s.strip()]
    except ValueError:
        p.error(f"--switch takes latent frame numbers like 18 or 18,30, not {args.switch!r}")
    if any(s <= 0 for s in args.switch) or args.switch != sorted(set(args.switch)):
        p.error("--switch frames must be positive and increasing")
    return args


def load_config(source: Path, interactive: bool) -> Cfg:
    import yaml

    name = "longlive_interactive_inference.yaml" if interactive else "longlive_inference.yaml"
    path = source / "configs" / name
    if not path.is_file():
        raise UsageError(f"{path} is missing: re-run scripts/longlive_v1/fetch_source.sh")
    return Cfg.wrap(yaml.safe_load(path.read_text()))


def run(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda needs CUDA, and torch sees no GPU (try --tiny --device cpu)")
    if device == "cpu" and not args.tiny:
        raise UsageError("the 1.3B model on the CPU would take minutes a block: add --tiny")
    if args.low_memory and device != "cuda":
        raise UsageError("--low-memory needs CUDA (it moves the text encoder to the GPU)")
    if args.longlive_profile and (device != "cuda" or args.switch):
        raise UsageError("--longlive-profile needs CUDA and no --switch (LongLive's profile "
                         "option exists only in CausalInferencePipeline and uses CUDA events)")
    if args.lora and not _has("peft"):
        raise UsageError("--lora needs peft (pip install peft)")
    vae = args.vae or ("stub" if args.tiny else "random")
    args.vae = vae
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    check_source(args.source)
    # diffusers records at import which attention packages exist: import it before the stand-in,
    # so that it sees none and its own attention dispatch never calls the stand-in.
    importlib.import_module("diffusers.models.modeling_utils")
    backend = install_attention(args.attn, device)
    ll = import_longlive(args.source.resolve(), device)
    cfg = load_config(args.source, bool(args.switch))
    model_cfg = dict(TINY if args.tiny else WAN_1_3B)
    if args.layers:
        model_cfg["num_layers"] = args.layers
    fpb = int(cfg.num_frame_per_block)
    n_blocks = args.blocks or (3 if args.tiny else int(cfg.num_output_frames) // fpb)
    h, w = TINY_LATENT_HW if args.tiny else LATENT_HW
    if backend == "sdpa" or backend == "fa4":
        used = f"stand-in flash_attn ({backend})"
    else:
        used = "flash-attn 2"
    if getattr(ll.attention, "FLASH_ATTN_3_AVAILABLE", False):
        used = "flash-attn 3 (LongLive's own choice on Hopper)"

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    pipe = build_pipeline(ll, args, model_cfg, cfg, device, dtype)
    build_s = time.perf_counter() - t0
    steps = len(pipe.denoising_step_list)
    n_params = sum(p.numel() for p in pipe.generator.parameters())
    steps_shown = ", ".join(f"{t:g}" for t in pipe.denoising_step_list.tolist())
    print(f"LongLive v1.0 {type(pipe).__name__} ({(_commit(args.source) or '?')[:12]})\n"
          f"  {model_cfg['num_layers']} layers, {n_params / 1e9:.2f} B params, "
          f"{str(dtype).replace('torch.', '')}, {device}, built in {build_s:.1f} s\n"
          f"  attention: {used}; vae: {vae}\n"
          f"  steps [{steps_shown}], {fpb} latent frames/block\n"
          f"  attention window {cfg.model_kwargs.local_attn_size} frames, sink "
          f"{cfg.model_kwargs.sink_size}; {n_blocks} blocks", flush=True)

    if args.ab_rounds:
        return ab_overhead(args, pipe, device, dtype, fpb, steps, (h, w), used, model_cfg["num_layers"])
    noise = torch.randn([1, n_blocks * fpb, 16, h, w], device=device, dtype=dtype)
    switches = [s for s in args.switch if s < n_blocks * fpb]
    schedule = calls_per_block(n_blocks, fpb, steps, switches if args.switch else [])
    clock = BlockClock(pipe.generator, schedule, cuda=device == "cuda")
    prompt = "a panda walking in a bamboo forest"
    with torch.no_grad():
        if args.switch:
            prompts = [[prompt]] + [[f"{prompt}, scene {i + 2}"] for i in range(len(switches))]
            video = pipe.inference(noise, text_prompts_list=prompts,
                                   switch_frame_indices=switches, low_memory=args.low_memory)
        else:
            video = pipe.inference(noise, text_prompts=[prompt], low_memory=args.low_memory,
                                   profile=args.longlive_profile)
    block_ms, decode_ms = clock.finish()
    if len(block_ms) != n_blocks or clock.calls != sum(schedule):
        raise RuntimeError(f"expected {sum(schedule)} generator calls in {n_blocks} blocks, saw "
                           f"{clock.calls}: the pipeline's call pattern changed")

    for i, ms in enumerate(block_ms):
        tag = " (recache)" if schedule[i] > steps + 1 else ""
        print(f"block {i:3d}: {ms:9.1f} ms{tag}")
    steady = block_ms[1:] or block_ms   # block 0 pays the first-call costs
    med = statistics.median(steady)
    span = f"blocks 1..{n_blocks - 1}" if n_blocks > 1 else "block 0"
    print(f"median block {med:.1f} ms over {span} (block 0 {block_ms[0]:.1f} ms)\n"
          f"decode {decode_ms:.1f} ms -> video {tuple(video.shape)}", flush=True)
    if args.timings_json:
        write_json_atomic(args.timings_json, {
            "pipeline": type(pipe).__name__, "longlive_commit": _commit(args.source),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "dtype": str(dtype), "attention": used, "vae": vae, "lora": args.lora,
            "layers": model_cfg["num_layers"], "tiny": args.tiny, "blocks": n_blocks,
            "frames_per_block": fpb, "switch": switches, "block_ms": block_ms,
            "median_block_ms": med, "decode_ms": decode_ms, "build_s": build_s,
            "video_shape": list(video.shape)})
    return 0


def ab_overhead(args, pipe, device, dtype, fpb, steps, hw, attention, layers) -> int:
    """--ab-rounds: lltrace's overhead on this pipeline inside one process. Every group is one
    inference() of K+1 blocks (its first block, where lltrace finds the root, not counted),
    timed by BlockClock with a sync at block edges; scripts/bench_script_overhead.py holds the
    method (rounds, rotation, median of per-round ratios, sign-test interval)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_script_overhead as ab

    k = args.ab_blocks
    noise = torch.randn([1, (k + 1) * fpb, 16, *hw], device=device, dtype=dtype)
    schedule = calls_per_block(k + 1, fpb, steps, [])
    prompt = "a panda walking in a bamboo forest"

    def run_blocks():
        clock = BlockClock(pipe.generator, schedule, cuda=device == "cuda", sync=True)
        with torch.no_grad():
            pipe.inference(noise, text_prompts=[prompt], low_memory=args.low_memory)
        block_ms, _ = clock.finish()
        if clock.calls != sum(schedule):
            raise RuntimeError(f"expected {sum(schedule)} generator calls, saw {clock.calls}")
        return block_ms

    t0 = time.perf_counter()
    run_blocks()   # warm-up: allocator, cuDNN/cuBLAS choices, lltrace's imports below
    # LongLive prints per inference() call: to stderr
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        groups = ab.interleaved(ab.group_runner(run_blocks, pipe, tmp), ["bare", *args.ab_levels],
                                args.ab_rounds, log=lambda m: print(m, file=sys.stderr, flush=True))
    rows = ab.overhead_rows(groups)
    print(f"lltrace overhead on LongLive v1.0 {type(pipe).__name__}, {device}: {args.ab_rounds} rounds of "
          f"{k} blocks per arm, in one process ({time.perf_counter() - t0:.0f} s)")
    print(ab.overhead_table(rows), flush=True)
    if args.timings_json:
        write_json_atomic(args.timings_json, {
            "pipeline": type(pipe).__name__, "longlive_commit": _commit(args.source),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": str(dtype),
            "attention": attention, "vae": args.vae, "layers": layers, "lora": args.lora,
            "frames_per_block": fpb, "method": "in-process rounds (scripts/bench_script_overhead.py)",
            "rounds": args.ab_rounds, "blocks_per_group": k, "arms": rows})
    return 0


def _commit(source: Path) -> str | None:
    f = source / "COMMIT"
    return f.read_text().strip() if f.is_file() else None


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
