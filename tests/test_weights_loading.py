"""Generator checkpoints in the real key layout load exactly; bad ones name their keys; LoRA merges."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lltrace.errors import LltraceError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.model import CausalWanModel
from lltrace.pipeline.weights import init_random_weights, load_generator_weights, merge_lora

CFG = load_model_config("tiny")


def model(seed: int) -> CausalWanModel:
    return init_random_weights(CausalWanModel(CFG).eval(), seed, std=0.05)


@torch.no_grad()
def outputs(m: CausalWanModel) -> torch.Tensor:
    """Two blocks through fresh caches, fixed inputs."""
    g = torch.Generator().manual_seed(7)
    kv = make_kv_cache("dynamic", CFG, 1, 4, 1, torch.float32, "cpu")
    xattn = CrossAttnCache(CFG, 1, torch.float32, "cpu")
    ctx = torch.randn(1, CFG.text_len, CFG.text_dim, generator=g)
    outs = []
    for b in range(2):
        x = torch.randn(1, CFG.in_dim, 2, CFG.latent_height, CFG.latent_width, generator=g)
        outs.append(m(x, torch.full((1, 2), 600.0), ctx, kv, xattn, b * 2 * CFG.frame_seqlen))
    return torch.cat(outs, dim=2)


def write(path, sd, container=None):
    sd = {k: v.detach().clone() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({container: sd, "step": 1200} if container else sd, str(path))
    return path


@pytest.mark.parametrize("name,prefix,container", [
    ("g.safetensors", "", None),
    ("g.safetensors", "model.", None),
    ("g.pt", "", None),
    ("g.pt", "model.", "generator_ema"),     # Self-Forcing / LongLive training checkpoint layout
    ("g.pth", "model.model.", "state_dict"),
])
def test_checkpoint_loads_every_key_and_reproduces_outputs(tmp_path, name, prefix, container):
    src = model(seed=1)
    sd = {prefix + k: v for k, v in src.state_dict().items()}
    path = write(tmp_path / name, sd, container)
    dst = model(seed=2)
    assert not torch.equal(outputs(dst), outputs(src))
    report = load_generator_weights(dst, path)
    assert report.prefix == prefix and report.container_key == container
    assert report.tensors == len(src.state_dict()) and not report.missing and not report.unexpected
    assert torch.equal(outputs(dst), outputs(src))


def test_training_checkpoint_uses_the_generator_not_the_ema(tmp_path):
    """LongLive's inference loads "generator" unless use_ema (its configs: use_ema: false)."""
    gen, ema = model(1), model(3)
    path = tmp_path / "longlive_base.pt"
    torch.save({"generator": {"model." + k: v for k, v in gen.state_dict().items()},
                "generator_ema": {"model." + k: v for k, v in ema.state_dict().items()}}, str(path))
    dst = model(2)
    assert load_generator_weights(dst, path).container_key == "generator"
    assert torch.equal(outputs(dst), outputs(gen))


def test_missing_keys_are_named(tmp_path):
    sd = {"model." + k: v for k, v in model(1).state_dict().items()}
    dropped = sorted(k for k in sd if ".ffn." in k)          # 8 keys in the tiny model
    removed = dropped + ["model.head.modulation"]
    path = write(tmp_path / "partial.safetensors", {k: v for k, v in sd.items() if k not in removed})
    with pytest.raises(LltraceError) as err:
        load_generator_weights(model(2), path)
    msg = str(err.value)
    assert "missing" in msg and "(9)" in msg
    for key in removed:
        assert key.removeprefix("model.") in msg


def test_many_missing_keys_are_summarised_and_unexpected_named(tmp_path):
    sd = model(1).state_dict()
    keep = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    keep["blocks.7.self_attn.q.weight"] = torch.zeros(CFG.dim, CFG.dim)
    path = write(tmp_path / "wrong.pt", keep)
    n_missing = sum(k.startswith("blocks.1.") for k in sd)
    with pytest.raises(LltraceError) as err:
        load_generator_weights(model(2), path)
    msg = str(err.value)
    assert f"({n_missing} in all)" in msg and "unexpected blocks.7.self_attn.q.weight" in msg
    report = load_generator_weights(model(2), path, strict=False)
    assert len(report.missing) == n_missing and report.unexpected == ["blocks.7.self_attn.q.weight"]


def test_wrong_shapes_and_unreadable_files_are_errors(tmp_path):
    sd = model(1).state_dict()
    sd["head.head.weight"] = torch.zeros(3, CFG.dim)
    with pytest.raises(LltraceError, match=r"head\.head\.weight \(3, 64\) vs \(64, 64\)"):
        load_generator_weights(model(2), write(tmp_path / "shape.safetensors", sd))
    with pytest.raises(LltraceError, match="not found"):
        load_generator_weights(model(2), tmp_path / "nope.pt")
    bad = tmp_path / "pickle.pt"
    torch.save({"generator": {"x": object()}}, str(bad))
    with pytest.raises(LltraceError, match="weights_only"):
        load_generator_weights(model(2), bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LltraceError, match="safetensors"):
        load_generator_weights(model(2), junk)


LORA_TARGETS = ["blocks.0.self_attn.q", "blocks.1.ffn.0", "blocks.0.cross_attn.o", "head.head"]


def lora_pieces(m, rank=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    linears = dict(m.named_modules())
    return {name: (torch.randn(rank, linears[name].in_features, generator=g) * 0.1,
                   torch.randn(linears[name].out_features, rank, generator=g) * 0.1) for name in LORA_TARGETS}


@pytest.mark.parametrize("style", ["peft", "kohya"])
def test_lora_merges_as_w_plus_scaled_ba(tmp_path, style):
    base = model(1)
    base_path = write(tmp_path / "base.safetensors", base.state_dict())
    pieces = lora_pieces(base)
    rank, alpha = 4, 8.0
    lora = {}
    for name, (a, b) in pieces.items():
        if style == "peft":
            lora[f"base_model.model.{name}.lora_A.weight"] = a
            lora[f"base_model.model.{name}.lora_B.weight"] = b
        else:
            lora[f"{name}.lora_down.weight"] = a
            lora[f"{name}.lora_up.weight"] = b
            lora[f"{name}.alpha"] = torch.tensor(alpha)
    lora_path = write(tmp_path / "lora.pt", lora, container="generator_lora" if style == "peft" else None)

    merged = model(2)
    report = load_generator_weights(merged, base_path, lora_path=lora_path,
                                    lora_alpha=alpha if style == "peft" else None)
    assert (report.lora_modules, report.lora_rank, report.lora_alpha) == (len(LORA_TARGETS), rank, alpha)

    explicit = model(1)
    with torch.no_grad():
        mods = dict(explicit.named_modules())
        for name, (a, b) in pieces.items():
            mods[name].weight += (alpha / rank) * b @ a
    torch.testing.assert_close(outputs(merged), outputs(explicit), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outputs(merged), outputs(base), atol=1e-4)


def test_lora_without_alpha_uses_scale_one(tmp_path):
    m, explicit = model(1), model(1)
    (a, b) = lora_pieces(m)["blocks.0.self_attn.q"]
    path = write(tmp_path / "l.safetensors", {"blocks.0.self_attn.q.lora_A.weight": a,
                                              "blocks.0.self_attn.q.lora_B.weight": b})
    merge_lora(m, path)
    with torch.no_grad():
        explicit.blocks[0].self_attn.q.weight += b @ a
    torch.testing.assert_close(m.blocks[0].self_attn.q.weight, explicit.blocks[0].self_attn.q.weight)


def test_unmatched_or_incomplete_lora_is_an_error(tmp_path):
    base_path = write(tmp_path / "base.safetensors", model(1).state_dict())
    a, b = torch.zeros(4, CFG.dim), torch.zeros(CFG.dim, 4)
    unmatched = write(tmp_path / "u.safetensors", {
        "model.blocks.0.self_attn.q.lora_A.weight": a, "model.blocks.0.self_attn.q.lora_B.weight": b,
        "model.blocks.9.self_attn.q.lora_A.weight": a, "model.blocks.9.self_attn.q.lora_B.weight": b})
    with pytest.raises(LltraceError, match=r"no such linear in the model: blocks\.9\.self_attn\.q"):
        load_generator_weights(model(2), base_path, lora_path=unmatched)
    incomplete = write(tmp_path / "i.safetensors", {"blocks.0.ffn.2.lora_A.weight": torch.zeros(4, CFG.ffn_dim)})
    with pytest.raises(LltraceError, match=r"lora_A or lora_B missing for: blocks\.0\.ffn\.2"):
        load_generator_weights(model(2), base_path, lora_path=incomplete)
    stray = write(tmp_path / "s.safetensors", {"blocks.0.ffn.2.weight": torch.zeros(2)})
    with pytest.raises(LltraceError, match="not LoRA weights"):
        load_generator_weights(model(2), base_path, lora_path=stray)


def test_random_init_is_seeded_and_initialises_every_parameter():
    a, b, c = model(5), model(5), model(6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0].self_attn.q.weight, c.blocks[0].self_attn.q.weight)
    # A model built on meta and materialised with to_empty is fully written (no garbage).
    with torch.device("meta"):
        empty = CausalWanModel(CFG)
    empty = init_random_weights(empty.to_empty(device="cpu"), 5, std=0.05)
    assert all(torch.equal(x, y) for x, y in zip(empty.state_dict().values(), a.state_dict().values()))
    assert torch.isfinite(outputs(empty)).all()
    assert torch.equal(a.blocks[0].norm3.weight, torch.ones(CFG.dim))
    assert torch.equal(a.blocks[0].self_attn.q.bias, torch.zeros(CFG.dim))
