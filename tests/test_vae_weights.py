"""Decoder parameter counts (analytic vs built), checkpoint key names, and checkpoint loading."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lltrace.errors import LltraceError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.fast_decoder import FastDecoder
from lltrace.pipeline.decoders import build_decoder
from lltrace.pipeline.vae import WanDecoder, load_vae_weights


# ---------------------------------------------------------------- analytic parameter counts

def conv(ci: int, co: int, k: int | tuple = 3, bias: bool = True, dims: int = 3) -> int:
    kk = k ** dims if isinstance(k, int) else int(torch.tensor(k).prod())
    return ci * co * kk + (co if bias else 0)


def wan_decoder_params(base: int, dim_mult: list[int], nres: int, t_up: list[bool], z: int = 16) -> int:
    """Wan2.1 VAE decoder (+ conv2) by hand: conv = ci*co*k^3 + co, RMS norm = one gain per channel."""
    def res(ci, co):
        return ci + conv(ci, co) + co + conv(co, co) + (conv(ci, co, 1) if ci != co else 0)

    def attn(c):
        return c + conv(c, 3 * c, 1, dims=2) + conv(c, c, 1, dims=2)

    dims = [base * m for m in [dim_mult[-1]] + dim_mult[::-1]]
    n = conv(z, z, 1) + conv(z, dims[0]) + 2 * res(dims[0], dims[0]) + attn(dims[0])
    for i, (ci, co) in enumerate(zip(dims[:-1], dims[1:])):
        ci = ci // 2 if i > 0 else ci
        n += res(ci, co) + nres * res(co, co)
        if i < len(dim_mult) - 1:
            n += conv(co, co // 2, dims=2)  # spatial upsample conv halves the channels
            n += conv(co, 2 * co, (3, 1, 1)) if t_up[i] else 0
    return n + dims[-1] + conv(dims[-1], 3)


def taehv_decoder_params(n: list[int], latent: int = 16) -> int:
    mem = lambda c: conv(2 * c, c, dims=2) + 2 * conv(c, c, dims=2)  # noqa: E731
    total = conv(latent, n[0], dims=2)
    for i, stride in enumerate((1, 2, 2)):
        total += 3 * mem(n[i]) + conv(n[i], n[i] * stride, 1, bias=False, dims=2) \
            + conv(n[i], n[i + 1], bias=False, dims=2)
    return total + conv(n[3], 3, dims=2)


@pytest.mark.parametrize("model", ["tiny", "wan-1.3b"])
def test_decoder_parameter_counts_match_the_analytic_count(model):
    cfg = load_model_config(model)
    v = cfg.vae
    with torch.device("meta"):
        wan = WanDecoder.from_config(cfg)
        fast = FastDecoder.from_config(cfg)
    n_wan = sum(p.numel() for p in wan.parameters())
    n_fast = sum(p.numel() for p in fast.parameters())
    print(f"{model}: wan decoder {n_wan:,} params, fast decoder {n_fast:,}")
    assert n_wan == wan_decoder_params(v["base_dim"], v["dim_mult"], v["num_res_blocks"], v["temporal_upsample"])
    assert n_fast == taehv_decoder_params(cfg.fast_vae["channels"])
    if model == "wan-1.3b":
        assert n_wan == 73_295_603  # the decoder half of Wan2.1's ~127M-parameter VAE
        assert 9e6 < n_fast < 11e6  # TAEHV is ~10x smaller


def test_wan_decoder_keys_are_wan21_checkpoint_keys():
    with torch.device("meta"):
        sd = WanDecoder.from_config(load_model_config("wan-1.3b")).state_dict()
    shapes = {  # keys and shapes of Wan2.1_VAE.pth's decoder half
        "conv2.weight": (16, 16, 1, 1, 1),
        "decoder.conv1.weight": (384, 16, 3, 3, 3),
        "decoder.middle.0.residual.0.gamma": (384, 1, 1, 1),
        "decoder.middle.0.residual.6.weight": (384, 384, 3, 3, 3),
        "decoder.middle.1.norm.gamma": (384, 1, 1),
        "decoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
        "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
        "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
        "decoder.upsamples.7.time_conv.weight": (768, 384, 3, 1, 1),
        "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),
        "decoder.upsamples.14.residual.6.weight": (96, 96, 3, 3, 3),
        "decoder.head.0.gamma": (96, 1, 1, 1),
        "decoder.head.2.weight": (3, 96, 3, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "decoder.upsamples.11.time_conv.weight" not in sd  # the last upsample is spatial only
    assert not any(k.startswith(("encoder.", "conv1.")) for k in sd)
    assert "latent_mean" not in sd  # constants, not weights


# ---------------------------------------------------------------- loading

@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


def decode(dec, seed=0):
    dec.reset()
    return dec.decode_block(torch.randn(1, 16, 2, 3, 3, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("kind,suffix", [("wan", ".pth"), ("fast", ".safetensors")])
def test_checkpoint_round_trips(tmp_path, tiny, kind, suffix):
    src = build_decoder(kind, tiny, seed=1)
    sd = {f"vae.{k}": v.clone() for k, v in src.state_dict().items()}  # a wrapper prefix, as in some repos
    sd["vae.encoder.conv1.weight"] = torch.zeros(2, 2)  # a full-VAE checkpoint's encoder: ignored
    path = tmp_path / f"dec{suffix}"
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)

    dst = build_decoder(kind, tiny, seed=2)
    assert not torch.equal(decode(src), decode(dst))
    ignored = load_vae_weights(dst, path)
    assert ignored == ["encoder.conv1.weight"]
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    torch.testing.assert_close(decode(dst), decode(src), rtol=0, atol=0)


def test_partial_or_wrong_checkpoints_raise_clear_errors(tmp_path, tiny):
    dec = build_decoder("wan", tiny)
    sd = dec.state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("decoder.head.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(LltraceError, match=r"missing keys: decoder\.head\.0\.gamma, decoder\.head\.2\.weight"):
        load_vae_weights(dec, tmp_path / "partial.pth")

    wrong = dict(sd, **{"decoder.conv1.weight": torch.zeros(5, 16, 3, 3, 3)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(LltraceError, match=r"wrong tensor shapes.*decoder\.conv1\.weight"):
        load_vae_weights(dec, tmp_path / "wrong.pth")

    with pytest.raises(LltraceError, match="not found"):
        load_vae_weights(dec, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LltraceError, match="cannot read VAE weights"):
        load_vae_weights(dec, tmp_path / "junk.pth")
    # the fast decoder's weights are not a Wan VAE
    torch.save(build_decoder("fast", tiny).state_dict(), tmp_path / "fast.pth")
    with pytest.raises(LltraceError, match="not a WanDecoder checkpoint"):
        load_vae_weights(dec, tmp_path / "fast.pth")


def test_taehv_stride2_tgrow_checkpoint_keeps_the_last_timestep(tmp_path, tiny):
    """TAEHV checkpoints can hold a stride-2 TGrow where the Wan decoder uses stride 1 (decoder.7)."""
    src = build_decoder("fast", tiny, seed=1)
    sd = dict(src.state_dict())
    w = sd["decoder.7.conv.weight"]
    sd["decoder.7.conv.weight"] = torch.cat([torch.full_like(w, 7.0), w])  # [earlier step; last step]
    torch.save(sd, tmp_path / "taew.pth")
    dst = build_decoder("fast", tiny, seed=2)
    load_vae_weights(dst, tmp_path / "taew.pth")
    assert torch.equal(dst.state_dict()["decoder.7.conv.weight"], w)
