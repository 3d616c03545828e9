"""Presets: YAML files of pipeline knobs in `configs/` (baseline ... ultra), validated strictly."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lltrace.errors import LltraceError
from lltrace.paths import configs_dir

DTYPES = ("bfloat16", "float16", "float32")
DECODERS = ("wan", "fast", "none")
ATTENTION = ("auto", "sdpa", "flash", "flash4")   # lltrace.pipeline.attention.BACKENDS
KV_CACHES = ("dynamic", "static")
# How the DiT computes RoPE, the norms' casts and the adaLN modulation / gating:
# "reference" as Wan and LongLive do (float32), "fused" in the model's dtype with fewer
# kernels (lltrace.pipeline.model.CausalWanModel.set_elementwise says what changes and why
# it stays within bf16 tolerance).
ELEMENTWISE = ("reference", "fused")


@dataclass(frozen=True)
class Preset:
    name: str
    model: str = "wan-1.3b"
    description: str = ""
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    frames_per_block: int = 3
    local_attn_size: int = 12   # latent frames attended to, sink included (LongLive's cache size)
    sink_size: int = 3          # latent frames never evicted
    context_noise: int = 0      # timestep of the clean KV-update forward
    dtype: str = "bfloat16"
    fp8: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    kv_cache: str = "dynamic"
    decoder: str = "wan"
    attention: str = "auto"
    # --- decoder knobs (issue #17; lltrace.pipeline.decoders.optimize_decoder) -----------------
    decoder_layout: str = "contiguous"     # "channels_last": conv weights + activations NDHWC/NHWC
    cudnn_benchmark: bool = False          # torch.backends.cudnn.benchmark (process-wide)
    decoder_compile: bool = False          # torch.compile of the steady decode, static shapes
    decoder_graph: bool = False            # CUDA graph of a steady block's decode (CUDA only)
    decode_async: bool = False             # decode on a 2nd CUDA stream, overlapping the next block
    # --- end of decoder knobs ---------------------------------------------------------------
    elementwise: str = "reference"

    @property
    def steps(self) -> int:
        return len(self.denoising_steps)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["denoising_steps"] = list(self.denoising_steps)
        return d


KNOBS = [f.name for f in dataclasses.fields(Preset) if f.name != "name"]


# The documented progression first; any user-added preset after them.
ORDER = ("baseline", "balanced", "turbo", "turbo-fp8", "ultra")


def available_presets() -> list[str]:
    names = {p.stem for p in configs_dir().glob("*.yaml")}
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def _validate(p: Preset, where: str) -> None:
    def bad(knob: str, why: str) -> LltraceError:
        return LltraceError(f"{where}: bad value for {knob!r}: {why}")

    if not p.denoising_steps or any(not (0 < t <= 1000) for t in p.denoising_steps):
        raise bad("denoising_steps", "need 1+ timesteps in (0, 1000]")
    if list(p.denoising_steps) != sorted(p.denoising_steps, reverse=True):
        raise bad("denoising_steps", "timesteps must decrease")
    if p.frames_per_block < 1:
        raise bad("frames_per_block", "must be >= 1")
    if p.sink_size < 0:
        raise bad("sink_size", "must be >= 0")
    if p.local_attn_size < p.sink_size + p.frames_per_block:
        raise bad("local_attn_size", f"must be >= sink_size + frames_per_block "
                                     f"({p.sink_size} + {p.frames_per_block})")
    if not (0 <= p.context_noise < 1000):
        raise bad("context_noise", "must be in [0, 1000)")
    for knob, valid in (("dtype", DTYPES), ("decoder", DECODERS), ("attention", ATTENTION),
                        ("kv_cache", KV_CACHES), ("elementwise", ELEMENTWISE)):
        if getattr(p, knob) not in valid:
            raise bad(knob, f"{getattr(p, knob)!r} is not one of {', '.join(valid)}")
    _validate_decoder_knobs(p, bad)
    if p.cuda_graphs and p.kv_cache != "static":
        raise bad("cuda_graphs", "CUDA graphs need kv_cache: static (the dynamic cache moves by "
                                 "Python ints; see `lltrace doctor`)")


# --- decoder knobs (issue #17) -------------------------------------------------------------------
DECODER_KNOBS = ("decoder_layout", "cudnn_benchmark", "decoder_compile", "decoder_graph",
                 "decode_async")
DECODER_GPU_ONLY_KNOBS = ("decoder_graph", "decode_async", "decoder_compile")


DECODER_LAYOUTS = ("contiguous", "channels_last")


def _validate_decoder_knobs(p: Preset, bad) -> None:
    if p.decoder_layout not in DECODER_LAYOUTS:
        raise bad("decoder_layout", f"{p.decoder_layout!r} is not one of {', '.join(DECODER_LAYOUTS)}")
    if p.decoder == "none":
        on = [k for k in DECODER_KNOBS if getattr(p, k) not in (False, "contiguous")]
        if on:
            raise bad(on[0], "there is no decoder to optimize (decoder: none)")
# --- end of decoder knobs ----------------------------------------------------------------------


def _coerce(knob: str, value: Any, where: str) -> Any:
    field_type = {f.name: f.type for f in dataclasses.fields(Preset)}[knob]
    try:
        if knob == "denoising_steps":
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(int(v) for v in value)
        if field_type == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if field_type == "int":
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        raise LltraceError(f"{where}: bad value for {knob!r}: {value!r} is not a {field_type}") from None


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["steps=2", "fp8=true"]` -> dict; `--set KNOB=VALUE` on the command line."""
    out = {}
    for item in items:
        if "=" not in item:
            raise LltraceError(f"bad --set {item!r}", "use KNOB=VALUE, e.g. --set sink_size=2")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_preset(name_or_path: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Load `configs/<name>.yaml` or a YAML path, apply overrides, validate every knob."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):  # a preset name may contain dots
        path = configs_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise LltraceError(f"unknown preset {name_or_path!r}",
                           f"valid presets: {', '.join(available_presets())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LltraceError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise LltraceError(f"{path}: a preset is a mapping of knobs")
    raw = {**raw, **(overrides or {})}
    unknown = sorted(set(raw) - set(KNOBS))
    if unknown:
        raise LltraceError(f"{path.name}: unknown knob(s) {', '.join(unknown)}",
                           f"valid knobs: {', '.join(KNOBS)}")
    values = {k: _coerce(k, v, path.name) for k, v in raw.items()}
    preset = Preset(name=path.stem, **values)
    _validate(preset, path.name)
    return preset


GPU_ONLY_KNOBS = ("fp8", "cuda_graphs", "compile")


def cpu_fallback(preset: Preset) -> tuple[Preset, list[str]]:
    """The preset as it can run on a CPU: GPU-only knobs off, with a note for each.

    compile (and decoder_compile) is turned off too: inductor's CPU C++ build of even the tiny
    model takes minutes, which is not what someone trying the tool on a laptop wants. `lltrace doctor` and the tests
    exercise compile on CPU explicitly.
    """
    changes = {k: False for k in GPU_ONLY_KNOBS + DECODER_GPU_ONLY_KNOBS if getattr(preset, k)}
    notes = [f"{k} needs CUDA: off on this CPU run" for k in changes]
    return dataclasses.replace(preset, **changes), notes
