"""Generator weights: load a Wan / Self-Forcing / LongLive checkpoint, merge a LoRA, or init randomly.

Checkpoints are .safetensors or torch .pt/.pth (loaded with weights_only=True). A .pt may
hold the state dict itself or under a container key (CONTAINER_KEYS, in that order).
Keys may carry a prefix ("model." in LongLive's WanDiffusionWrapper, "module." from DDP,
...): the prefix that makes the most keys match the model is detected and stripped. Every model key must be found and every checkpoint key
used (strict), else LltraceError names the missing / unexpected keys.

LoRA files use peft-style keys `<prefix>.<module>.lora_A.weight` [r, in] and
`.lora_B.weight` [out, r] (or kohya's `lora_down` / `lora_up`, optional `<module>.alpha`).
They are merged at load, W += (alpha / r) * B @ A, so inference pays nothing for them
(LongLive: r = 256, alpha = 256 on the linears; unmerged that is ~25% more linear FLOPs).
"""
from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from lltrace.errors import LltraceError

# LongLive's inference reads "generator" (its configs have use_ema: false), "generator_ema" with
# use_ema, else "model"; its LoRA file holds "generator_lora".
CONTAINER_KEYS = ("generator", "generator_ema", "model", "state_dict", "module", "generator_lora", "lora")
# Wrappers insert these into keys; they are never part of a real module path.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.")


@dataclass
class LoadReport:
    path: str
    format: str                       # "safetensors" | "pt"
    container_key: str | None         # where in a .pt the state dict was found
    prefix: str                       # stripped from every key ("" if none)
    tensors: int                      # model tensors loaded
    params: int                       # their elements
    missing: list[str] = field(default_factory=list)      # non-strict loads only
    unexpected: list[str] = field(default_factory=list)
    lora_path: str | None = None
    lora_modules: int = 0             # linears a LoRA was merged into
    lora_rank: int | None = None
    lora_alpha: float | None = None

    def __str__(self) -> str:
        s = f"{self.path} ({self.tensors} tensors, {self.params / 1e9:.3f}B params"
        if self.prefix:
            s += f", prefix {self.prefix!r} stripped"
        s += ")"
        if self.lora_path:
            s += f" + LoRA {self.lora_path} (r={self.lora_rank}, alpha={self.lora_alpha:g}, " \
                 f"{self.lora_modules} linears merged)"
        return s


def _name_list(keys, limit: int = 10) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}{f' ... ({len(keys)} in all)' if len(keys) > limit else f' ({len(keys)})'}"


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """(tensors by key, format, container key) of a .safetensors / .pt / .pth file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise LltraceError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu"), "safetensors", None
        except (SafetensorError, OSError) as exc:
            raise LltraceError(f"{path}: not a readable safetensors file ({exc})") from None
    if path.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise LltraceError(f"{path}: unknown checkpoint format {path.suffix!r}", "use .safetensors, .pt or .pth")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LltraceError(f"{path}: cannot load as a torch checkpoint with weights_only=True ({first})",
                           "convert it to .safetensors") from None
    sd, container = _find_state_dict(obj)
    if sd is None:
        raise LltraceError(f"{path}: no state dict of tensors found",
                           f"looked at the top level and under {', '.join(CONTAINER_KEYS)}")
    return sd, "pt", container


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(obj) -> tuple[dict | None, str | None]:
    if _is_state_dict(obj):
        return obj, None
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key], key
        nested = [k for k, v in obj.items() if _is_state_dict(v)]
        if len(nested) == 1:
            return obj[nested[0]], nested[0]
    return None, None


def _clean(key: str) -> str:
    for seg in _WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    return key


def detect_prefix(keys, targets: set[str]) -> str:
    """The prefix p that maximises #{k in keys : k == p + t for some target t} ("" on ties)."""
    votes: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in targets:
                votes[".".join(parts[:i]) + "." if i else ""] += 1
    if not votes:
        return ""
    best = max(votes.values())
    return min((p for p, n in votes.items() if n == best), key=len)


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in sd.items()}


@torch.no_grad()
def load_generator_weights(model: nn.Module, path: str | Path, lora_path: str | Path | None = None,
                           lora_alpha: float | None = None, strict: bool = True) -> LoadReport:
    """Load a generator checkpoint into `model` (any device/dtype), merge an optional LoRA."""
    raw, fmt, container = read_state_dict(path)
    raw = {_clean(k): v for k, v in raw.items()}
    own = model.state_dict()
    prefix = detect_prefix(raw, set(own))
    sd = _strip(raw, prefix)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    where = f"{path}" + (f" [{container}]" if container else "")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {_name_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {_name_list(unexpected)}")
        raise LltraceError(f"{where} does not match the model: {'; '.join(parts)}",
                           "is it a Wan2.1-T2V-1.3B generator checkpoint for this model config?")
    bad_shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in sd and sd[k].shape != own[k].shape]
    if bad_shape:
        raise LltraceError(f"{where}: shapes differ from the model: {_name_list(bad_shape, 5)}",
                           "the checkpoint is for another model config")
    loaded = {k: v for k, v in sd.items() if k in own}
    model.load_state_dict(loaded, strict=False)
    report = LoadReport(str(path), fmt, container, prefix, len(loaded), sum(v.numel() for v in loaded.values()),
                        missing, unexpected)
    if lora_path is not None:
        merge_lora(model, lora_path, lora_alpha, report)
    return report


_LORA_SUFFIXES = {"lora_A.weight": "A", "lora_B.weight": "B", "lora_down.weight": "A", "lora_up.weight": "B"}


def _split_lora_key(key: str) -> tuple[str, str] | None:
    """'x.blocks.0.self_attn.q.lora_A.default.weight' -> ('x.blocks.0.self_attn.q', 'A')."""
    key = key.replace(".default.", ".")  # peft's adapter name when saved unfiltered
    for suffix, role in _LORA_SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], role
    if key.endswith(".alpha"):
        return key[: -len(".alpha")], "alpha"
    return None


@torch.no_grad()
def merge_lora(model: nn.Module, lora_path: str | Path, lora_alpha: float | None = None,
               report: LoadReport | None = None) -> LoadReport:
    """Merge a LoRA file into `model`'s linears in place: W += (alpha / r) * B @ A.

    alpha: `lora_alpha` if given, else the file's per-module `.alpha`, else r (scale 1).
    """
    raw, fmt, _ = read_state_dict(lora_path)
    pieces: dict[str, dict[str, torch.Tensor]] = {}
    odd = []
    for key, tensor in raw.items():
        split = _split_lora_key(_clean(key))
        if split is None:
            odd.append(key)
        else:
            pieces.setdefault(split[0], {})[split[1]] = tensor
    if odd:
        raise LltraceError(f"{lora_path}: keys that are not LoRA weights: {_name_list(odd)}",
                           "expected <module>.lora_A.weight / lora_B.weight (or lora_down / lora_up)")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    prefix = detect_prefix(pieces, set(linears))
    pieces = _strip(pieces, prefix)
    unmatched = sorted(k for k in pieces if k not in linears)
    incomplete = sorted(k for k, p in pieces.items() if not {"A", "B"} <= set(p))
    if unmatched or incomplete:
        parts = ([f"no such linear in the model: {_name_list(unmatched)}"] if unmatched else []) + \
                ([f"lora_A or lora_B missing for: {_name_list(incomplete)}"] if incomplete else [])
        raise LltraceError(f"{lora_path}: LoRA does not match the model: {'; '.join(parts)}")
    ranks, alphas = set(), set()
    for name, p in pieces.items():
        weight = linears[name].weight
        a, b = p["A"].float(), p["B"].float()
        r = a.shape[0]
        if a.shape != (r, weight.shape[1]) or b.shape != (weight.shape[0], r):
            raise LltraceError(f"{lora_path}: LoRA shapes for {name} (A {tuple(a.shape)}, B {tuple(b.shape)}) "
                               f"do not fit its weight {tuple(weight.shape)}")
        alpha = float(lora_alpha) if lora_alpha is not None else float(p["alpha"]) if "alpha" in p else float(r)
        delta = (b.to(weight.device) @ a.to(weight.device)) * (alpha / r)
        weight.copy_((weight.float() + delta).to(weight.dtype))
        ranks.add(r)
        alphas.add(alpha)
    if report is None:
        report = LoadReport(str(lora_path), fmt, None, "", 0, 0)
    report.lora_path = str(lora_path)
    report.lora_modules = len(pieces)
    report.lora_rank = max(ranks) if ranks else None
    report.lora_alpha = max(alphas) if alphas else None
    return report


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Seeded random weights that keep activations sane, generated on the model's device.

    Linear / conv weights ~ N(0, std), biases 0, norm weights 1 (biases 0), adaLN
    modulation tables ~ N(0, std) (zero-ish, so 1 + scale stays near 1). Every parameter is
    written, so this also initialises a model made with `to_empty`. Meta tensors are skipped.
    """
    gens: dict[torch.device, torch.Generator] = {}

    def gen(device: torch.device) -> torch.Generator:
        if device not in gens:
            gens[device] = torch.Generator(device=device).manual_seed(seed)
        return gens[device]

    for name, p in model.named_parameters():
        if p.is_meta:
            continue
        is_norm = ".norm" in f".{name}" and not name.endswith("modulation")
        if is_norm:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, std, generator=gen(p.device))
    return model
