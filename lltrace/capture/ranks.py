"""A sequence-parallel run (`lltrace run --nproc N`): N ranks, one run directory, a trace per rank.

The launching process creates the run directory and starts N workers through torch's elastic
launcher (pipeline.parallel.launch). Each worker joins the process group, builds the pipeline
with Ulysses attention, measures its clock offset at a barrier, and runs the usual Session:
rank 0 into the run directory itself (its frame clock, summary and `trace.json.gz` are the
run's, so every single-rank tool reads a multi-rank run as rank 0's), rank r > 0 into a
scratch directory `.rank<r>/` whose profiler traces then move up as `trace.rank<r>.json.gz`
(a later window: `trace-2.rank<r>.json.gz`). meta.json's `ranks` (docs/FORMATS.md §2) lists
them with each rank's offset and step times. Comm regions: `ll/comm` around each all-to-all
and the final all-gather (`instrument_comm`).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from lltrace import names
from lltrace.capture.hooks import InstrumentHandle, wrap_method
from lltrace.capture.rundir import RunDirectory, write_json_atomic
from lltrace.errors import LltraceError

COMM = names.name(names.COMM)
# the SequenceParallel methods that communicate (pipeline.parallel)
COMM_METHODS = ("heads_from_tokens", "tokens_from_heads", "gather_tokens")


def rank_trace_name(name: str, rank: int) -> str:
    """`trace.json.gz` of rank r -> `trace.rank<r>.json.gz` (rank 0 keeps the plain name)."""
    if rank == 0:
        return name
    stem, dot, ext = name.partition(".")
    return f"{stem}.rank{rank}{dot}{ext}"


def instrument_comm(pipeline: Any, level: str) -> InstrumentHandle:
    """ll/comm on the sequence-parallel group's collectives (an op region: it nests under the
    ll/self_attn of the layer that communicates)."""
    handle = InstrumentHandle()
    sp = getattr(pipeline, "sequence_parallel", None)
    if sp is None:
        return handle
    for method in COMM_METHODS:
        handle.add(wrap_method(sp, method, COMM, level))
    return handle


def _clock_offset_us(rounds: int = 5) -> list[float]:
    """Each rank's wall clock minus rank 0's, read right after a barrier: of `rounds` tries, the
    one nearest zero per rank (what is left on one host is the barrier's release spread, as
    NTP keeps its least-delayed sample; on two hosts, their clocks' offset)."""
    import torch.distributed as dist

    best: list[float] | None = None
    for _ in range(rounds):
        dist.barrier()
        now = time.time_ns()
        got: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(got, now)
        offs = [(t - got[0]) / 1000.0 for t in got]
        best = offs if best is None else [min(a, b, key=abs) for a, b in zip(best, offs)]
    return best


def rank_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One rank of a --nproc run (the launcher's entrypoint; `spec` from run_ranks)."""
    import torch.distributed as dist

    from lltrace.capture.session import run_session
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.parallel import SequenceParallel, init_worker

    rank, world, device = init_worker(spec["device"])
    try:
        from lltrace.pipeline.config import load_model_config

        cfg = load_model_config(spec["model"] or spec["preset"].model)
        sp = SequenceParallel(cfg.frame_seqlen)
        try:
            pipe = StreamingPipeline(spec["preset"], device=device, sequence_parallel=sp, **spec["pipeline"])
        except LltraceError as exc:
            # the user's mistake (every rank makes the same): its line for the launcher, exit 2
            # (the launcher stops the other ranks on a failure)
            (Path(spec["log_dir"]) / f"error.rank{rank}.txt").write_text(str(exc))
            raise SystemExit(2) from None
        if device.type == "cuda" and spec.get("ceiling") is not None:   # meta.json's roofline ceiling
            pipe.ceiling_tflops = spec["ceiling"](iters=10)
        offsets = _clock_offset_us()
        run_dir = Path(spec["run_dir"])
        if rank:
            run_dir = run_dir / f".rank{rank}"
        kwargs = dict(spec["session"], run_dir=run_dir, instrument=instrument_comm)
        result = run_session(pipe, **kwargs)
        dist.barrier()   # every rank's trace is written before the launcher merges them
        return {"rank": rank, "world": world, "offset_us": offsets[rank], "result": result,
                "describe": pipe.describe(), "traces": [str(p) for p in result.traces]}
    finally:
        dist.destroy_process_group()


def run_ranks(nproc: int, spec: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run `spec` over `nproc` ranks; merge their traces into rank 0's run directory.
    Returns (rank 0's RunResult, rank 0's pipeline description, meta.json's `ranks`)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from lltrace.pipeline.parallel import launch

    run_dir = Path(spec["run_dir"])
    log_dir = run_dir / ".ranks-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "log_dir": str(log_dir)}
    try:
        out = launch(nproc, rank_worker, spec, run_id=run_dir.name, log_dir=str(log_dir), quiet=True)
    except SignalException:
        # Ctrl-C / SIGTERM: the launcher stopped the ranks with SIGTERM, which each rank's
        # session ends like Ctrl-C (its run directory finalized, an open window saved)
        merge_partial(run_dir, nproc)
        shutil.rmtree(log_dir, ignore_errors=True)
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:   # the first failure's message, not its traceback
        mistakes = sorted(log_dir.glob("error.rank*.txt"))
        if mistakes:
            message = mistakes[0].read_text().strip()
            if _only_logs(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise LltraceError(message) from None
        raise LltraceError(f"a rank failed: {_first_failure(exc)}",
                           f"each rank's output is under {log_dir}") from None
    ranks = merge_ranks(run_dir, out)
    shutil.rmtree(log_dir, ignore_errors=True)
    return out[0]["result"], out[0]["describe"], ranks


def _only_logs(run_dir: Path) -> bool:
    """Nothing but the launcher's logs: the run never started (a user mistake at build)."""
    return all(p.name == ".ranks-logs" for p in run_dir.iterdir())


def _first_failure(exc: BaseException) -> str:
    failures = getattr(exc, "failures", None) or {}
    for f in failures.values():
        msg = getattr(f, "message", None)
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        if msg:
            return str(msg).strip().splitlines()[-1][:200]
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def merge_partial(run_dir: Path, nproc: int) -> None:
    """After an interrupted launch (no return values): the traces the ranks saved, moved up and
    listed in meta.json `ranks` as far as they exist."""
    import json

    meta_path = run_dir / "meta.json"
    if not meta_path.is_file():
        return
    per_rank: dict[str, Any] = {}
    for r in range(nproc):
        src_dir = run_dir if r == 0 else run_dir / f".rank{r}"
        files = []
        for src in sorted(src_dir.glob("trace*.json.gz")) if src_dir.is_dir() else []:
            if "rank" in src.name:
                continue
            dst = run_dir / rank_trace_name(src.name, r)
            if r:
                os.replace(src, dst)
            files.append(dst.name)
        status = None
        if r and (src_dir / "meta.json").is_file():
            status = json.loads((src_dir / "meta.json").read_text()).get("status")
        per_rank[str(r)] = {"traces": files, "status": status if r else None}
        if r:
            shutil.rmtree(src_dir, ignore_errors=True)
    meta = json.loads(meta_path.read_text())
    per_rank["0"]["status"] = meta.get("status")
    meta["ranks"] = {"world_size": nproc, "kind": "ulysses", "frame_clock_rank": 0, "per_rank": per_rank}
    meta["files"] = sorted(set(meta.get("files") or []) | {f for v in per_rank.values() for f in v["traces"]})
    write_json_atomic(meta_path, meta)


def merge_ranks(run_dir: Path, out: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Move ranks' traces into `run_dir`, drop their scratch directories, write meta.json's
    `ranks`. `out`: the workers' return values by rank."""
    world = len(out)
    per_rank: dict[str, Any] = {}
    for r in sorted(out):
        w = out[r]
        files = []
        for t in w["traces"]:
            src = Path(t)
            dst = run_dir / rank_trace_name(src.name, r)
            if r:
                os.replace(src, dst)
            files.append(dst.name)
        s = w["result"].summary
        per_rank[str(r)] = {"traces": files, "clock_offset_us": round(w["offset_us"], 3),
                            "status": w["result"].status, "ms_per_block": s.get("ms_per_block"),
                            "ms_per_frame": s.get("ms_per_frame")}
        if r:
            shutil.rmtree(run_dir / f".rank{r}", ignore_errors=True)
    ranks = {"world_size": world, "kind": "ulysses",
             "backend": "nccl" if out[0]["describe"]["device"]["type"] == "cuda" else "gloo",
             "frame_clock_rank": 0, "per_rank": per_rank}
    rd = RunDirectory(run_dir)
    import json
    meta = json.loads((run_dir / "meta.json").read_text())
    listed = set(meta.get("files") or [])
    meta["files"] = sorted(listed | {f for v in per_rank.values() for f in v["traces"]})
    meta["ranks"] = ranks
    write_json_atomic(rd.path / "meta.json", meta)
    return ranks
