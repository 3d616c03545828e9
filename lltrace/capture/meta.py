"""meta.json contents (docs/FORMATS.md §2): what ran, where, with which versions."""
from __future__ import annotations

import os
import platform
import sys
from datetime import datetime
from typing import Any

import torch

import lltrace

# Keys lltrace itself owns; a pipeline's describe() cannot override them.
_RESERVED = {"lltrace_version", "run_id", "command", "started", "status", "end", "clock_sync", "t0", "pid", "host"}


def device_info(device: torch.device | str) -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "type": device.type,
        "name": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": sys.version.split()[0],
        "host": platform.node(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(name=props.name, index=idx, capability=f"{props.major}.{props.minor}",
                    memory_bytes=props.total_memory, sm_count=props.multi_processor_count,
                    driver=_driver_version())
    return info


def _driver_version() -> str | None:
    try:
        return torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    except Exception:
        return None


def _to_dict(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def build_meta(pipeline: Any, *, run_id: str, command: list[str] | None, extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The start-of-run meta.json: lltrace's own fields + `pipeline.describe()` (its keys win
    over the defaults taken from pipeline.preset / model_config / device)."""
    preset = getattr(pipeline, "preset", None)
    model = getattr(pipeline, "model_config", None)
    device = getattr(pipeline, "device", torch.device("cpu"))
    meta: dict[str, Any] = {
        "lltrace_version": lltrace.__version__,
        "run_id": run_id,
        "command": list(command if command is not None else sys.argv),
        "preset": getattr(preset, "name", None),
        "knobs": _to_dict(preset),
        "model": _to_dict(model),
        "device": device_info(device),
        "attention_backend": None,
        "ceilings": {"bf16_tflops": None},
        "flops": {"forward": None},
        "started": datetime.now().astimezone().isoformat(timespec="milliseconds"),
        # who writes the run: a reader on this host tells a live run from a killed one by them
        "pid": os.getpid(),
        "host": platform.node(),
        "clock_sync": None,
        "profile": None,
        "status": "running",
        "end": None,
    }
    try:
        described = pipeline.describe() if hasattr(pipeline, "describe") else {}
    except Exception as exc:  # a run without a full description beats no run
        described = {"describe_error": f"{type(exc).__name__}: {exc}"}
    for key, value in (described or {}).items():
        if key in _RESERVED:
            continue
        if key == "preset" and not isinstance(value, str):
            knobs = _to_dict(value)
            meta["knobs"] = knobs
            meta["preset"] = knobs.get("name", meta["preset"]) if isinstance(knobs, dict) else meta["preset"]
        elif key == "device" and isinstance(value, dict):
            meta["device"] = {**meta["device"], **value}
        else:
            meta[key] = _to_dict(value)
    if isinstance(meta.get("knobs"), dict):
        meta["knobs"].pop("name", None)
    meta.update(extra or {})
    return meta
