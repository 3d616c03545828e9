"""HolisticTraceAnalysis where it adds what the budget does not: the temporal breakdown
(compute / non-compute / idle), kernel launch statistics (launch delay, launch-bound
kernels) and the idle-time breakdown (host wait, kernel wait, other).

HTA is optional (`pip install 'lltrace[hta]'`, it pulls jupyterlab) and imported lazily.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from lltrace.errors import LltraceError

NOT_INSTALLED = "HTA is not installed: pip install 'lltrace[hta]'"


def require():
    """The hta.trace_analysis.TraceAnalysis class, or LltraceError when HTA is missing."""
    try:
        from hta.trace_analysis import TraceAnalysis
    except ImportError:
        raise LltraceError(NOT_INSTALLED) from None
    return TraceAnalysis


def _version() -> str:
    try:
        from importlib.metadata import version
        for dist in ("traceinsight", "HolisticTraceAnalysis"):
            try:
                return version(dist)
            except Exception:
                continue
    except ImportError:
        pass
    return "?"


def _records(df, limit: int = 20) -> list[dict[str, Any]]:
    rows = []
    for rec in df.head(limit).to_dict("records"):
        rows.append({str(k): (v.item() if hasattr(v, "item") else v) for k, v in rec.items()})
    return rows


def _temporal(ta) -> list[dict[str, Any]]:
    df = ta.get_temporal_breakdown(visualize=False)
    rows = []
    for r in _records(df):
        out = {"rank": r.get("rank")}
        for k in ("idle_time", "compute_time", "non_compute_time", "kernel_time"):
            v = r.get(f"{k}(us)", r.get(k))
            if v is not None:
                out[f"{k}_ms"] = float(v) / 1e3
        for k in ("idle_time_pctg", "compute_time_pctg", "non_compute_time_pctg"):
            if k in r:
                out[k] = float(r[k])
        rows.append(out)
    return rows


def _launch_stats(ta, rank: int, runtime_cutoff: int, launch_delay_cutoff: int) -> dict[str, Any]:
    stats = ta.get_cuda_kernel_launch_stats(ranks=[rank], runtime_cutoff=runtime_cutoff,
                                            launch_delay_cutoff=launch_delay_cutoff, visualize=False)
    df = stats.get(rank) if isinstance(stats, dict) else None
    if df is None or not len(df):
        return {"launches": 0}
    delay = df["launch_delay"]
    return {"launches": int(len(df)),
            "launch_delay_p50_us": float(delay.quantile(0.5)), "launch_delay_p95_us": float(delay.quantile(0.95)),
            "launch_delay_max_us": float(delay.max()),
            f"launch_delay_over_{launch_delay_cutoff}us": int((delay > launch_delay_cutoff).sum()),
            # kernels that ran shorter than the CPU call that launched them: launch-bound
            "kernels_shorter_than_launch": int((df["gpu_duration"] < df["cpu_duration"]).sum()),
            f"of_them_launch_over_{runtime_cutoff}us": int(((df["cpu_duration"] > runtime_cutoff)
                                                            & (df["gpu_duration"] < df["cpu_duration"])).sum())}


def _idle(ta, rank: int) -> list[dict[str, Any]]:
    res = ta.get_idle_time_breakdown(ranks=[rank], visualize=False)
    df = res[0] if isinstance(res, tuple) else res
    rows = []
    for r in _records(df, limit=50):
        row = {"stream": r.get("stream"), "category": r.get("idle_category")}
        if "idle_time" in r:
            row["idle_ms"] = float(r["idle_time"]) / 1e3
        if "idle_time_ratio" in r:
            row["ratio"] = float(r["idle_time_ratio"])
        rows.append(row)
    return rows


def analyze(trace_path: str | Path, runtime_cutoff: int = 50, launch_delay_cutoff: int = 100) -> dict[str, Any]:
    """Run HTA's analyses on one trace file; each part is a dict/list, or {"error": ...}."""
    TraceAnalysis = require()
    trace_path = Path(trace_path).resolve()
    result: dict[str, Any] = {"version": _version()}
    # HTA reads every trace in a directory and logs/prints freely: give it a directory of one
    # file and keep its output off stdout (which may carry --json).
    with tempfile.TemporaryDirectory(prefix="lltrace-hta-") as tmp, \
            contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("hta").setLevel(logging.ERROR)
        suffix = ".json.gz" if trace_path.name.endswith(".gz") else ".json"
        os.symlink(trace_path, Path(tmp) / f"rank-0{suffix}")
        try:
            ta = TraceAnalysis(trace_dir=tmp)
        except Exception as exc:   # HTA fails in many ways on traces it does not expect
            raise LltraceError(f"HTA could not load {trace_path.name}: {exc.__class__.__name__}: {exc}") from None
        ranks = sorted(getattr(ta.t, "traces", {0: None}).keys()) or [0]
        rank = ranks[0]
        for name, fn in (("temporal_breakdown", lambda: _temporal(ta)),
                         ("kernel_launch", lambda: _launch_stats(ta, rank, runtime_cutoff, launch_delay_cutoff)),
                         ("idle_time", lambda: _idle(ta, rank))):
            try:
                result[name] = fn()
            except Exception as exc:
                result[name] = {"error": f"{exc.__class__.__name__}: {exc}"[:200]}
    return result
