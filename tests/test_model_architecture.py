"""The DiT is Wan2.1-T2V-1.3B: checkpoint key names, shapes, parameter count; attention backends."""
from __future__ import annotations

import math

import pytest
import torch

from lltrace.errors import LltraceError
from lltrace.pipeline.attention import attention, resolve_backend
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.model import CausalWanModel, count_parameters, rope_split
from lltrace.pipeline.weights import init_random_weights

WAN = load_model_config("wan-1.3b")
TINY = load_model_config("tiny")


def wan_checkpoint_shapes(c) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a Wan2.1 T2V generator state dict, written out from the architecture."""
    d, out = c.dim, c.out_dim * math.prod(c.patch_size)
    lin = lambda o, i: {"weight": (o, i), "bias": (o,)}  # noqa: E731
    shapes = {"patch_embedding.weight": (d, c.in_dim, *c.patch_size), "patch_embedding.bias": (d,)}
    for name, (o, i) in {"text_embedding.0": (d, c.text_dim), "text_embedding.2": (d, d),
                         "time_embedding.0": (d, c.freq_dim), "time_embedding.2": (d, d),
                         "time_projection.1": (6 * d, d), "head.head": (out, d)}.items():
        shapes.update({f"{name}.{p}": s for p, s in lin(o, i).items()})
    shapes["head.modulation"] = (1, 2, d)
    for b in range(c.num_layers):
        p = f"blocks.{b}"
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                shapes.update({f"{p}.{attn}.{proj}.{k}": s for k, s in lin(d, d).items()})
            shapes[f"{p}.{attn}.norm_q.weight"] = (d,)
            shapes[f"{p}.{attn}.norm_k.weight"] = (d,)
        shapes[f"{p}.norm3.weight"] = (d,)
        shapes[f"{p}.norm3.bias"] = (d,)
        shapes.update({f"{p}.ffn.0.{k}": s for k, s in lin(c.ffn_dim, d).items()})
        shapes.update({f"{p}.ffn.2.{k}": s for k, s in lin(d, c.ffn_dim).items()})
        shapes[f"{p}.modulation"] = (1, 6, d)
    return shapes


@pytest.mark.parametrize("cfg", [WAN, TINY], ids=["wan-1.3b", "tiny"])
def test_state_dict_has_the_wan_checkpoint_keys_and_shapes(cfg):
    with torch.device("meta"):
        model = CausalWanModel(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == wan_checkpoint_shapes(cfg)


def test_wan_1_3b_parameter_count():
    """Wan2.1-T2V-1.3B has 1,418,996,800 parameters: "1.3B" is its marketing name (~9% off)."""
    d, f, L, c = WAN.dim, WAN.ffn_dim, WAN.num_layers, WAN
    analytic = (
        d * c.in_dim * math.prod(c.patch_size) + d                      # patch_embedding
        + (c.text_dim * d + d) + (d * d + d)                            # text_embedding
        + (c.freq_dim * d + d) + (d * d + d)                            # time_embedding
        + (d * 6 * d + 6 * d)                                           # time_projection
        + L * (2 * (4 * (d * d + d) + 2 * d)                            # self/cross attn + qk norms
               + 2 * d                                                  # norm3 (affine)
               + (d * f + f) + (f * d + d)                              # ffn
               + 6 * d)                                                 # modulation
        + (d * c.out_dim * math.prod(c.patch_size) + c.out_dim * math.prod(c.patch_size)) + 2 * d  # head
    )
    assert analytic == 1_418_996_800
    assert count_parameters(WAN) == analytic
    assert sum(math.prod(s) for s in wan_checkpoint_shapes(WAN).values()) == analytic


def test_rope_split_is_wans():
    assert rope_split(128) == (44, 42, 42)
    assert sum(rope_split(TINY.head_dim)) == TINY.head_dim


@torch.no_grad()
def test_rope_start_frame_positions_tokens_in_the_stream():
    """A block's RoPE angles are those of its frames' positions in the whole stream."""
    model = CausalWanModel(TINY)
    h, w = TINY.latent_height // 2, TINY.latent_width // 2
    cos_all, sin_all = model.rope.tables(0, 9, h, w)
    cos_blk, sin_blk = model.rope.tables(torch.tensor(6), 3, h, w)
    S = h * w
    assert torch.equal(cos_blk, cos_all[6 * S:]) and torch.equal(sin_blk, sin_all[6 * S:])
    assert not torch.equal(cos_blk, cos_all[:3 * S])


@torch.no_grad()
def test_timestep_modulation_is_per_frame():
    """Frames at different timesteps in one forward get their own adaLN modulation."""
    model = init_random_weights(CausalWanModel(TINY), 0, std=0.05)
    x = torch.randn(1, TINY.in_dim, 2, TINY.latent_height, TINY.latent_width)
    ctx = torch.randn(1, TINY.text_len, TINY.text_dim)

    def run(t):
        kv = make_kv_cache("dynamic", TINY, 1, 4, 0, torch.float32, "cpu")
        return model(x, torch.tensor([t]), ctx, kv, CrossAttnCache(TINY, 1, torch.float32, "cpu"), 0)

    mixed, low, high = run([100.0, 900.0]), run([100.0, 100.0]), run([900.0, 900.0])
    assert mixed.shape == x.shape
    assert not torch.allclose(mixed, low) and not torch.allclose(mixed, high)
    # Frame 1's output is not frame 0's under another timestep: t really is per frame.
    assert not torch.allclose(mixed[:, :, 1], low[:, :, 1])


def test_flash_backend_on_cpu_is_a_clear_error():
    with pytest.raises(LltraceError, match="needs CUDA"):
        resolve_backend("flash", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_model_asking_for_flash_without_cuda_fails_at_build():
    with pytest.raises(LltraceError, match="flash"):
        CausalWanModel(TINY, attention_backend="flash")


def test_backend_resolution():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("sdpa", "cpu") == "sdpa"
    with pytest.raises(LltraceError, match="unknown attention backend"):
        resolve_backend("xformers", "cpu")
    assert CausalWanModel(TINY, attention_backend="auto").attention_backend in ("sdpa", "flash")


def test_sdpa_attention_honours_the_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8) for _ in range(3))
    keep = torch.tensor([True, False, True, True, False, True, False])
    k7, v7 = torch.randn(2, 7, 3, 8), torch.randn(2, 7, 3, 8)
    masked = attention(q, k7, v7, "sdpa", keep.view(1, 1, 1, -1))
    torch.testing.assert_close(masked, attention(q, k7[:, keep], v7[:, keep], "sdpa"))
    assert attention(q, k, v, "flash").shape == q.shape   # flash on CPU tensors runs SDPA
