"""Prompt -> text embeddings: the UMT5-XXL encoder Wan2.1 uses, with random weights.

The model is `transformers.UMT5EncoderModel` built from `cfg.text_encoder` on the meta
device and materialised once on the target device (a 5.7B-parameter random init on a CPU
would take minutes). Nothing is ever fetched from the Hugging Face hub: prompts become
token ids through a built-in hashing tokenizer, or through a local tokenizer directory.
Like Wan, embeddings past each prompt's length are zero.

transformers is imported inside functions: importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lltrace.errors import LltraceError, NeedsCudaError

if TYPE_CHECKING:
    from lltrace.pipeline.config import ModelConfig

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's special ids
_WORD = re.compile(r"\w+|[^\w\s]")


class HashTokenizer:
    """Deterministic offline tokenizer: each word or punctuation mark hashes into the vocab.

    Hand-written because no library tokenizer works without downloaded vocab files; it gives
    realistic sequence lengths and shapes, not meaningful ids.
    """

    def __init__(self, vocab_size: int, text_len: int):
        if vocab_size <= 3:
            raise LltraceError(f"text_encoder.vocab_size must be > 3, got {vocab_size}")
        self.vocab_size = vocab_size
        self.text_len = text_len

    def token_id(self, word: str) -> int:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()  # stable across runs
        return 3 + int.from_bytes(digest, "little") % (self.vocab_size - 3)

    def __call__(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids = torch.full((len(prompts), self.text_len), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.text_len), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            toks = [self.token_id(w) for w in _WORD.findall(prompt)][: self.text_len - 1] + [EOS_ID]
            ids[row, : len(toks)] = torch.tensor(toks)
            mask[row, : len(toks)] = 1
        return ids, mask


class LocalTokenizer:
    """A tokenizer directory on disk (e.g. google/umt5-xxl's), loaded without network access."""

    def __init__(self, path: str | Path, vocab_size: int, text_len: int):
        path = Path(path)
        if not path.is_dir():
            raise LltraceError(f"tokenizer directory not found: {path}")
        from transformers import AutoTokenizer
        try:
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # transformers raises OSError/ValueError/... for a bad directory
            raise LltraceError(f"cannot load a tokenizer from {path}: {type(e).__name__}: {e}") from None
        self.vocab_size = vocab_size
        self.text_len = text_len
        self.path = path

    def __call__(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        out = self.tok(prompts, padding="max_length", truncation=True, max_length=self.text_len,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = out["input_ids"].long(), out["attention_mask"].long()
        if int(ids.max()) >= self.vocab_size:
            raise LltraceError(f"tokenizer {self.path} produced id {int(ids.max())}, "
                               f"but the model's vocabulary has {self.vocab_size} entries")
        return ids, mask


def umt5_config(cfg: ModelConfig) -> Any:
    """`transformers.UMT5Config` of the encoder described by `cfg.text_encoder`."""
    from transformers import UMT5Config
    te = dict(cfg.text_encoder)
    required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
    missing = [k for k in required if k not in te]
    if missing:
        raise LltraceError(f"model {cfg.name!r}: text_encoder lacks {missing}")
    if te["d_model"] != cfg.text_dim:
        raise LltraceError(f"model {cfg.name!r}: text_encoder.d_model {te['d_model']} != text_dim {cfg.text_dim}")
    te.setdefault("feed_forward_proj", "gated-gelu")
    return UMT5Config(**te, dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
                      pad_token_id=PAD_ID, eos_token_id=EOS_ID)


def _meta_model(cfg: ModelConfig) -> nn.Module:
    from transformers import UMT5EncoderModel
    with torch.device("meta"):
        return UMT5EncoderModel(umt5_config(cfg))


def text_encoder_parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the encoder (the shared embedding counted once), counted on meta."""
    return sum(p.numel() for p in _meta_model(cfg).parameters())


@torch.no_grad()
def init_umt5_(model: nn.Module, seed: int) -> None:
    """Seeded N(0, s) init on the model's device with T5's scales (q folds in 1/sqrt(d_kv)),
    so random-weight activations stay O(1) through 24 layers."""
    c = model.config
    d, dkv, h, dff = c.d_model, c.d_kv, c.num_heads, c.d_ff
    std_by_suffix = {
        "shared.weight": 1.0,
        "SelfAttention.q.weight": (d * dkv) ** -0.5,
        "SelfAttention.k.weight": d ** -0.5,
        "SelfAttention.v.weight": d ** -0.5,
        "SelfAttention.o.weight": (h * dkv) ** -0.5,
        "relative_attention_bias.weight": d ** -0.5,
        "wi_0.weight": d ** -0.5,
        "wi_1.weight": d ** -0.5,
        "wo.weight": dff ** -0.5,
    }
    gen = torch.Generator(device=model.shared.weight.device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("layer_norm.weight"):
            p.fill_(1.0)
            continue
        std = next((s for suffix, s in std_by_suffix.items() if name.endswith(suffix)), None)
        if std is None:
            raise AssertionError(f"no init rule for UMT5 parameter {name}")
        p.normal_(0.0, std, generator=gen)


class TextEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 tokenizer_path: str | Path | None = None, seed: int = 0):
        super().__init__()
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise NeedsCudaError(f"the text encoder on {device}")
        self.text_len = cfg.text_len
        self.text_dim = cfg.text_dim
        model = _meta_model(cfg).to(dtype=dtype).to_empty(device=device)
        model.encoder.embed_tokens.weight = model.shared.weight  # to_empty unties shared weights
        init_umt5_(model, seed)
        self.model = model.eval().requires_grad_(False)
        vocab = self.model.config.vocab_size
        self.tokenizer = (LocalTokenizer(tokenizer_path, vocab, cfg.text_len) if tokenizer_path
                          else HashTokenizer(vocab, cfg.text_len))

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """ids and attention mask, both [B, text_len] int64 on the CPU."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not a single string")
        return self.tokenizer(list(prompts))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        """[B, text_len, text_dim] in the model's dtype, zero past each prompt's last token."""
        ids, mask = self.tokenize(prompts)
        dev = self.model.shared.weight.device
        ids, mask = ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out * mask.unsqueeze(-1).to(out.dtype)


__all__ = ["TextEncoder", "HashTokenizer", "LocalTokenizer", "text_encoder_parameter_count", "umt5_config"]
