"""What `lltrace doctor` reports: findings per stage, the CUDA-graph verdict, compile health.

Plain dataclasses with `to_dict()` (JSON for `--json`, the TUI's CUDA-graph panel) and
`from_dict()` (its inverse: an isolated stage group's process sends its report to the parent
as JSON, isolate.py); the analyses that fill them live in graph.py, op_recorder.py and compile.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

COMPATIBLE = "COMPATIBLE"
INCOMPATIBLE = "INCOMPATIBLE"
NOT_RUN = "NOT RUN"

# Finding kinds, in the order a report lists them.
KINDS = ("capture", "replay", "host_sync", "python_scalar", "control_flow", "shape", "address",
         "host_data", "cpu_tensor", "rng", "error")


@dataclass
class Finding:
    """One reason a stage is (or may not be) graph-safe, with the line of code responsible."""

    kind: str                 # one of KINDS
    message: str              # one line
    where: str | None = None  # "lltrace/pipeline/kv_cache.py:131"
    code: str | None = None   # that source line, stripped
    blocking: bool = True     # breaks capture or makes replays wrong (else: a caveat)
    module: str | None = None  # qualified name of the nn.Module running there, if known
    count: int = 1            # ops (or calls) it was seen at

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(**_fields_of(cls, d))

    def line(self) -> str:
        loc = f" [{self.where}]" if self.where else ""
        return f"{self.message}{loc}"


@dataclass
class CompileHealth:
    """torch.compile health of one stage: graph breaks (dynamo.explain) and recompiles between calls."""

    graphs: int | None = None
    graph_breaks: int | None = None
    breaks: list[dict[str, Any]] = field(default_factory=list)        # {"reason", "where"}
    recompiles_first_call: list[dict[str, Any]] = field(default_factory=list)  # within one call
    recompiles_next_call: list[dict[str, Any]] = field(default_factory=list)   # at the next position
    error: str | None = None
    seconds: float = 0.0

    @property
    def recompile_risk(self) -> bool:
        return bool(self.recompiles_next_call)

    def summary(self) -> str:
        if self.error and self.graphs is None:
            return f"not checked: {self.error}"
        parts = [f"{self.graphs} graph{'s' if self.graphs != 1 else ''}",
                 f"{self.graph_breaks} break{'s' if self.graph_breaks != 1 else ''}"]
        if self.recompiles_first_call:
            parts.append(f"{len(self.recompiles_first_call)} recompile(s) within a call")
        parts.append(f"recompiles at next position: {len(self.recompiles_next_call)}"
                     if self.recompiles_next_call else "no recompile at next position")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recompile_risk"] = self.recompile_risk
        d["summary"] = self.summary()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompileHealth:
        return cls(**_fields_of(cls, d))   # recompile_risk and summary follow from the fields


@dataclass
class GraphSavings:
    """What CUDA graphs would save on one call of a stage, at most (savings.py): the
    launch-bound GPU gaps of one profiled eager call, from the budget's idle analysis."""

    ms: float | None = None             # launch-bound gaps of the call; None: not measured
    share: float | None = None          # ms over the call's GPU span (first kernel start to last end)
    call_ms: float | None = None        # wall time of the profiled call (host, synchronized)
    gpu_span_ms: float | None = None
    idle_ms: float | None = None        # all idle GPU time in the span (every cause)
    by_cause: dict[str, float] = field(default_factory=dict)   # idle ms by cause (trace/idle.py)
    note: str = ""                      # why not measured ("needs CUDA"), if so

    def text(self) -> str:
        """"<= 3.1 ms per call (launch-bound gaps: 41% of the call's GPU time)", or the note."""
        if self.ms is None:
            return self.note or "not measured"
        return (f"<= {self.ms:,.2f} ms per call (launch-bound gaps: {self.share:.0%} of the "
                "call's GPU time)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 4)
        d["by_cause"] = {k: round(v, 4) for k, v in self.by_cause.items()}
        d["text"] = self.text()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSavings:
        return cls(**_fields_of(cls, d))   # text follows from the fields


@dataclass
class StageReport:
    stage: str
    description: str = ""                 # what was called, at which positions
    verdict: str = NOT_RUN                # COMPATIBLE | INCOMPATIBLE | NOT RUN
    capture: str = ""                     # what the capture attempt did, or why it did not run
    findings: list[Finding] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    compile: CompileHealth | None = None
    ops_per_call: int = 0
    seconds: float = 0.0
    graph_savings: GraphSavings | None = None   # None: not asked for (e.g. the text encoder)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    def verdict_text(self) -> str:
        if self.verdict == NOT_RUN:
            return f"NOT RUN ({self.capture})" if self.capture else NOT_RUN
        return self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "description": self.description, "verdict": self.verdict,
                "verdict_text": self.verdict_text(), "capture": self.capture,
                "findings": [f.to_dict() for f in self.findings], "fixes": list(self.fixes),
                "compile": None if self.compile is None else self.compile.to_dict(),
                "ops_per_call": self.ops_per_call, "seconds": round(self.seconds, 3),
                "graph_savings": None if self.graph_savings is None else self.graph_savings.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageReport:
        kw = _fields_of(cls, d)
        kw["findings"] = [Finding.from_dict(f) for f in d.get("findings") or []]
        kw["fixes"] = list(d.get("fixes") or [])
        kw["compile"] = None if d.get("compile") is None else CompileHealth.from_dict(d["compile"])
        kw["graph_savings"] = None if d.get("graph_savings") is None else GraphSavings.from_dict(d["graph_savings"])
        return cls(**kw)


@dataclass
class DoctorReport:
    target: str                          # preset name, or the user's module spec
    device: str                          # "cpu" | "cuda (NVIDIA H100 ...)"
    model: str | None = None
    stages: list[StageReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None           # the error the pipeline's stream stopped at, if it did
    attention: str | None = None         # the attention kernel the pipeline ran (describe_backend)
    # Stage groups run each in its own process (isolate.py), in order; None: all in this one.
    isolated: list[list[str]] | None = None
    # Processes that died (a signal, a timeout, no report): one dict each (isolate.merge).
    crashes: list[dict[str, Any]] = field(default_factory=list)

    def stage(self, name: str) -> StageReport:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(name)

    @property
    def verdict(self) -> str:
        """INCOMPATIBLE if any stage is; COMPATIBLE if all were captured and replayed; else NOT RUN."""
        verdicts = {s.verdict for s in self.stages}
        if INCOMPATIBLE in verdicts:
            return INCOMPATIBLE
        if verdicts == {COMPATIBLE}:
            return COMPATIBLE
        return NOT_RUN

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "device": self.device, "model": self.model, "verdict": self.verdict,
                "stages": [s.to_dict() for s in self.stages], "notes": list(self.notes),
                "stopped": self.stopped, "attention": self.attention,
                "isolated": None if self.isolated is None else [list(g) for g in self.isolated],
                "crashes": [dict(c) for c in self.crashes]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DoctorReport:
        """The inverse of to_dict (the verdict follows from the stages)."""
        kw = _fields_of(cls, d)
        kw["stages"] = [StageReport.from_dict(s) for s in d.get("stages") or []]
        kw["notes"] = list(d.get("notes") or [])
        kw["crashes"] = [dict(c) for c in d.get("crashes") or []]
        return cls(**kw)


def _fields_of(cls, d: dict[str, Any]) -> dict[str, Any]:
    """The keys of `d` that are fields of the dataclass `cls` (to_dict adds derived ones:
    verdict_text, summary, text...)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}
