"""Streaming decoders (Wan2.1 VAE and the TAEHV-style fast one): frame rule, streaming = one shot,
causality, reset, real-config shapes. CPU, tiny shapes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.decoders import build_decoder
from lltrace.pipeline.vae import CausalConv3d, FeatureCache, video_frames

KINDS = ["wan", "fast"]
H, W = 4, 6  # latent size: non-square so a swapped h/w shows


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


@pytest.fixture(scope="module", params=KINDS)
def decoder(request, tiny):
    return build_decoder(request.param, tiny, torch.float32, "cpu", seed=0)


def latents(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 16, frames, H, W, generator=torch.Generator().manual_seed(seed))


def decode_in_blocks(dec, z: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    dec.reset()
    out, start = [], 0
    for n in sizes:
        out.append(dec.decode_block(z[:, :, start:start + n]))
        start += n
    return out


def test_the_frame_rule():
    # 1 + 4(n-1) for a video's first block, 4n after it
    assert [video_frames(n, first_block=True) for n in range(5)] == [0, 1, 5, 9, 13]
    assert [video_frames(n, first_block=False) for n in range(5)] == [0, 4, 8, 12, 16]
    assert video_frames(3, first_block=True, time_scale=2) == 5
    with pytest.raises(ValueError):
        video_frames(-1, first_block=False)


@pytest.mark.parametrize("sizes", [[3, 1, 2], [1, 2, 3], [2, 3]])
def test_frames_per_block_follow_the_causal_vae_rule(decoder, sizes):
    z = latents(sum(sizes), batch=2)
    for i, (n, video) in enumerate(zip(sizes, decode_in_blocks(decoder, z, sizes))):
        expected_t = 1 + 4 * (n - 1) if i == 0 else 4 * n
        assert decoder.frames_for(n, first=i == 0) == expected_t
        assert video.shape == (2, 3, expected_t, 8 * H, 8 * W)
        assert torch.isfinite(video).all()
        assert video.min() >= -1 and video.max() <= 1
        assert video.std() > 0.01  # not a constant image


@pytest.mark.parametrize("sizes", [[3, 3, 3], [1, 2, 3, 3]])
def test_streaming_blocks_equal_one_shot_decode(decoder, sizes):
    z = latents(9)
    decoder.reset()
    one_shot = decoder.decode_block(z)
    assert one_shot.shape[2] == 1 + 4 * 8
    streamed = torch.cat(decode_in_blocks(decoder, z, sizes), dim=2)
    torch.testing.assert_close(streamed, one_shot, rtol=1e-5, atol=1e-5)


def test_reset_restarts_the_video(decoder):
    z = latents(3)
    decoder.reset()
    a = decoder.decode_block(z)
    b_without_reset = decoder.decode_block(z)  # a continuation: 12 frames, not 9
    decoder.reset()
    b = decoder.decode_block(z)
    assert b_without_reset.shape[2] == 12
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_block_depends_on_the_blocks_before_it(decoder):
    z1, z2, z_next = latents(3, seed=1), latents(3, seed=2), latents(3, seed=3)
    decoder.reset()
    decoder.decode_block(z1)
    after_1 = decoder.decode_block(z_next)
    decoder.reset()
    decoder.decode_block(z2)
    after_2 = decoder.decode_block(z_next)
    assert (after_1 - after_2).abs().max() > 1e-3  # the cache carried the history


def test_decoding_is_causal(decoder):
    """Changing latent frame k leaves every video frame of latent frames < k unchanged."""
    z = latents(5)
    z_changed = z.clone()
    z_changed[:, :, 3:] = latents(2, seed=9)
    decoder.reset()
    a = decoder.decode_block(z)
    decoder.reset()
    b = decoder.decode_block(z_changed)
    before = 1 + 4 * 2  # video frames of latent frames 0..2
    torch.testing.assert_close(a[:, :, :before], b[:, :, :before], rtol=0, atol=0)
    assert (a[:, :, before:] - b[:, :, before:]).abs().max() > 1e-3


def test_causal_conv_cache_equals_full_sequence_conv():
    """Wan's feature cache, fed one frame at a time, is exactly a left-zero-padded conv."""
    torch.manual_seed(0)
    conv = CausalConv3d(4, 5, 3, padding=1)
    x = torch.randn(2, 4, 6, 5, 7)
    full = F.conv3d(F.pad(x, (1, 1, 1, 1, 2, 0)), conv.weight, conv.bias)
    cache = FeatureCache()
    frames = []
    for t in range(x.shape[2]):
        cache.begin_frame()
        frames.append(conv(x[:, :, t:t + 1], cache))
    torch.testing.assert_close(torch.cat(frames, 2), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv(x), full, rtol=1e-5, atol=1e-5)  # no cache: the same zero padding


@pytest.mark.parametrize("kind", KINDS)
def test_wan13b_config_decodes_with_real_channel_counts(kind):
    cfg = load_model_config("wan-1.3b")
    dec = build_decoder(kind, cfg, torch.float32, "cpu")
    dec.reset()
    z = torch.randn(1, 16, 2, 2, 3)  # the real architecture on a 2x3 latent: seconds on a CPU
    first, second = dec.decode_block(z), dec.decode_block(z[:, :, :1])
    assert first.shape == (1, 3, 5, 16, 24) and second.shape == (1, 3, 4, 16, 24)
    assert torch.isfinite(first).all() and torch.isfinite(second).all()


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    a, b, c = (build_decoder("wan", tiny, seed=s) for s in (5, 5, 6))
    w = "decoder.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_bad_decoder_requests_are_clear_errors(tiny):
    with pytest.raises(LltraceError, match="unknown decoder 'taesd'"):
        build_decoder("taesd", tiny)
    if not torch.cuda.is_available():
        with pytest.raises(NeedsCudaError):
            build_decoder("wan", tiny, torch.bfloat16, "cuda")
    dec = build_decoder("fast", tiny)
    with pytest.raises(ValueError, match="expected latents"):
        dec.decode_block(torch.zeros(1, 8, 1, H, W))


def test_decoding_may_switch_between_inference_mode_and_no_grad(decoder):
    """The generator may run under torch.inference_mode; state made there must not break a later
    reset() or decode outside it (inference tensors cannot be updated in place outside)."""
    z = latents(2)
    with torch.inference_mode():
        decoder.reset()
        a = [decoder.decode_block(z), decoder.decode_block(z)]
    decoder.reset()
    b = [decoder.decode_block(z), decoder.decode_block(z)]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_feature_cache_keeps_its_tensors_across_reset():
    """Static state addresses are what a CUDA graph replay of the per-frame decode needs."""
    conv = CausalConv3d(2, 2, 3, padding=1)
    cache = FeatureCache()
    x = torch.randn(1, 2, 1, 4, 4)
    cache.begin_frame()
    conv(x, cache)
    ptr = cache.frames[0].data_ptr()
    assert cache.frames[0].abs().sum() > 0
    cache.reset()
    assert cache.frames[0].data_ptr() == ptr and cache.frames[0].abs().sum() == 0
