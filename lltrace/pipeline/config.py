"""Model configuration: the numbers of Wan2.1-T2V-1.3B (and a tiny CPU twin) from YAML."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lltrace.errors import LltraceError
from lltrace.paths import configs_dir


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    latent_height: int = 60
    latent_width: int = 104
    vae: dict[str, Any] = field(default_factory=dict)
    fast_vae: dict[str, Any] = field(default_factory=dict)
    text_encoder: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def frame_seqlen(self) -> int:
        """Tokens per latent frame after patching (1560 for 480x832)."""
        _, ph, pw = self.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    @property
    def video_height(self) -> int:
        return self.latent_height * 8

    @property
    def video_width(self) -> int:
        return self.latent_width * 8

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d


def available_models() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "models").glob("*.yaml"))


def load_model_config(name_or_path: str) -> ModelConfig:
    """Load `configs/models/<name>.yaml` (or a YAML path); unknown keys are an error."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):  # a name like "wan-1.3b" has a dot but no YAML suffix
        path = configs_dir() / "models" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise LltraceError(f"unknown model config {name_or_path!r}",
                           f"valid: {', '.join(available_models())}")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LltraceError(f"{path}: unknown model keys {unknown}", f"valid: {sorted(known)}")
    raw.setdefault("name", path.stem)
    if "patch_size" in raw:
        raw["patch_size"] = tuple(raw["patch_size"])
    cfg = ModelConfig(**raw)
    if cfg.dim % cfg.num_heads:
        raise LltraceError(f"{path}: dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
    return cfg
