"""UMT5 text encoder: offline tokenization, masked embeddings, parameter count, cheap import."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.text_encoder import EOS_ID, PAD_ID, TextEncoder, text_encoder_parameter_count


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


@pytest.fixture(scope="module")
def encoder(tiny):
    return TextEncoder(tiny, seed=0)


def test_tokenize_is_deterministic_padded_and_prompt_specific(encoder, tiny):
    prompts = ["A red fox runs through snow.", "A cat sleeps", ""]
    ids, mask = encoder.tokenize(prompts)
    assert ids.shape == mask.shape == (3, tiny.text_len) and ids.dtype == torch.long
    assert mask.sum(1).tolist() == [8, 4, 1]  # words and punctuation, plus EOS
    for row, n in enumerate(mask.sum(1).tolist()):
        assert ids[row, n - 1] == EOS_ID and (ids[row, n:] == PAD_ID).all()
        assert (ids[row, : n - 1] > 2).all() and (ids[row] < tiny.text_encoder["vocab_size"]).all()
    assert not torch.equal(ids[0], ids[1])
    # same result from another instance (no Python hash randomisation) and in another order
    ids2, _ = TextEncoder(tiny, seed=1).tokenize(prompts[::-1])
    assert torch.equal(ids2.flip(0), ids)


def test_long_prompts_are_truncated_with_eos_last(encoder, tiny):
    ids, mask = encoder.tokenize([" ".join(f"word{i}" for i in range(100))])
    assert mask.sum() == tiny.text_len and ids[0, -1] == EOS_ID


def test_encode_shape_and_zeros_past_each_prompt(encoder, tiny):
    out = encoder.encode(["a fox in the snow", "a fox in the snow", "sunset"])
    assert out.shape == (3, tiny.text_len, tiny.text_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    n0, n2 = 6, 2
    assert (out[0, n0:] == 0).all() and (out[2, n2:] == 0).all()
    assert (out[0, :n0].abs().sum(-1) > 0).all() and (out[2, :n2].abs().sum(-1) > 0).all()
    torch.testing.assert_close(out[0], out[1])  # batch rows are independent
    assert (out[0, :n2] - out[2, :n2]).abs().max() > 1e-3  # the prompt matters


def test_weights_are_seeded(tiny, encoder):
    same = TextEncoder(tiny, seed=0).encode(["hello world"])
    other = TextEncoder(tiny, seed=1).encode(["hello world"])
    torch.testing.assert_close(encoder.encode(["hello world"]), same, rtol=0, atol=0)
    assert (same - other).abs().max() > 1e-3


def test_requested_dtype_is_used(tiny):
    enc = TextEncoder(tiny, dtype=torch.bfloat16)
    assert {p.dtype for p in enc.parameters()} == {torch.bfloat16}
    assert enc.encode(["x"]).dtype == torch.bfloat16
    assert enc.model.encoder.embed_tokens.weight is enc.model.shared.weight  # tied after materialising


def umt5_encoder_params(te: dict) -> int:
    """By hand: token embedding, then per layer q/k/v/o, a relative-position bias table (UMT5 has
    one per layer, T5 only in layer 0), two RMS-norm gains and the gated FFN; then a final norm."""
    d, inner, heads = te["d_model"], te["num_heads"] * te["d_kv"], te["num_heads"]
    layer = 4 * d * inner + te["relative_attention_num_buckets"] * heads + 2 * d + 3 * d * te["d_ff"]
    return te["vocab_size"] * d + te["num_layers"] * layer + d


@pytest.mark.parametrize("model", ["tiny", "wan-1.3b"])
def test_parameter_count_on_meta_matches_umt5(model):
    cfg = load_model_config(model)
    n = text_encoder_parameter_count(cfg)
    expected = umt5_encoder_params(cfg.text_encoder)
    print(f"{model}: text encoder {n:,} parameters (analytic {expected:,})")
    assert abs(n - expected) <= 0.01 * expected
    if model == "wan-1.3b":
        assert 5.6e9 < n < 5.8e9  # UMT5-XXL encoder: ~5.7B


def test_local_tokenizer_directory_is_used_offline(tmp_path, tiny):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "fox": 4, "snow": 5}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path)

    enc = TextEncoder(tiny, tokenizer_path=tmp_path)
    ids, mask = enc.tokenize(["a fox in snow"])
    assert ids[0, :5].tolist() == [3, 4, 2, 5, 1] and (ids[0, 5:] == 0).all()
    assert mask[0].tolist() == [1] * 5 + [0] * (tiny.text_len - 5)


def test_bad_inputs_are_clear_errors(tmp_path, tiny):
    with pytest.raises(LltraceError, match="tokenizer directory not found"):
        TextEncoder(tiny, tokenizer_path=tmp_path / "missing")
    with pytest.raises(LltraceError, match="cannot load a tokenizer"):
        TextEncoder(tiny, tokenizer_path=tmp_path)  # exists, but empty
    bad = dataclasses.replace(tiny, text_dim=32)
    with pytest.raises(LltraceError, match="d_model 48 != text_dim 32"):
        TextEncoder(bad)
    if not torch.cuda.is_available():
        with pytest.raises(NeedsCudaError):
            TextEncoder(tiny, device="cuda")


@pytest.mark.slow
def test_import_does_not_load_transformers():
    code = "import sys, lltrace.pipeline.text_encoder; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
