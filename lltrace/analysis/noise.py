"""Is a change between two runs real, or run-to-run noise? Per-region verdicts for `lltrace diff`.

The test: two-sided Mann-Whitney U on the per-instance values of a region in A and in B
(e.g. each block's step[0] GPU ms), plus a minimum effect size on the medians.

Why Mann-Whitney and not a t-test or a bootstrap:
- instance times are not normal: the first block compiles or warms caches, a prompt switch
  or a GC pause makes one instance 10x slower. A rank test is not moved by such outliers,
  a t-test (means, variances) is.
- profiled windows are short (3 to 20 blocks). A bootstrap CI of the median difference
  needs many distinct resamples to mean anything and is random unless seeded; the U test
  has an exact null distribution for small samples (used here when there are no ties) and
  is deterministic, so the same two traces always give the same CI verdict.
- it answers the question asked: do the instance distributions of A and B overlap?
A significant but tiny shift (0.3% on a region that ran 2000 times) is not worth a
reviewer's time, hence the minimum effect: |median B - median A| / median A.

scipy is not a dependency: U, its exact distribution and the normal approximation (with tie
and continuity corrections) are written by hand below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lltrace.trace.jsonround import num

MIN_INSTANCES = 3
ALPHA = 0.05
# 2% of A's median. Measured (BENCHMARKS.md, scripts/device/noise_calibration.sh): between four
# identical H200 baseline runs (6 pairs, 2,820 region comparisons with >= 3 instances a side) the
# |median change| is 0.7% at p50, 2.8% at p90 and 3.9% at p95, and none is flagged at 1, 2 or 3%:
# the U test already rejects the noise at these sample sizes, so the effect floor only drops
# significant-but-tiny shifts of regions with thousands of instances.
MIN_EFFECT = 0.02
_EXACT_MAX = 400           # n1 * n2 up to which the exact null distribution is used (no ties)

# verdicts
FASTER, SLOWER = "faster", "slower"
NOISE, SAME = "within noise", "no change"
TOO_FEW, NO_DATA = "n/a (too few instances)", "n/a (no per-instance data)"
TAIL = "n/a (tail statistic)"
ONLY_A, ONLY_B = "only in A", "only in B"


@dataclass(frozen=True)
class MannWhitney:
    u: float          # U of the first sample: pairs (a, b) with a > b, ties count 1/2
    p: float          # two-sided p-value
    exact: bool


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and the sizes of the tie groups."""
    order = np.argsort(values, kind="mergesort")
    sv = values[order]
    ranks = np.empty(len(values))
    _, start, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


@lru_cache(maxsize=256)
def _exact_cdf(n1: int, n2: int) -> tuple[float, ...]:
    """P(U <= u) for u = 0..n1*n2 under H0, no ties: the U counts are the coefficients of
    the Gaussian binomial [n1+n2 choose n1]_q (hand-written recurrence on n2)."""
    # counts[m][u]: arrangements of n1 a's among m b's with U = u; add one b at a time
    counts = np.zeros(n1 * n2 + 1)
    # f(n1, 0) = [1]; f(i, j) = f(i-1, j) shifted by j + f(i, j-1)
    table = [np.array([1.0]) for _ in range(n1 + 1)]     # table[i] = f(i, j) for current j
    for j in range(1, n2 + 1):
        new = [np.array([1.0])]
        for i in range(1, n1 + 1):
            a = np.concatenate([np.zeros(j), new[i - 1]])   # last element is an a: it beats all j b's
            b = table[i]                                     # last element is a b
            size = max(len(a), len(b))
            new.append(np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b))))
        table = new
    counts[:len(table[n1])] = table[n1]
    cdf = np.cumsum(counts) / counts.sum()
    return tuple(float(c) for c in cdf)


def mann_whitney_u(a, b) -> MannWhitney:
    """Two-sided Mann-Whitney U test of samples a and b (no scipy)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _ranks(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    has_ties = bool((ties > 1).any())
    if not has_ties and n1 * n2 <= _EXACT_MAX:
        cdf = _exact_cdf(n1, n2)
        u = int(round(min(u1, n1 * n2 - u1)))
        return MannWhitney(u1, min(1.0, 2.0 * cdf[u]), True)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float((ties ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:                       # every value equal: no evidence of any shift
        return MannWhitney(u1, 1.0, False)
    z = (abs(u1 - mu) - 0.5) / math.sqrt(var)   # continuity correction
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return MannWhitney(u1, min(1.0, p), False)


@dataclass(frozen=True)
class Judgement:
    verdict: str
    p: float | None = None
    effect: float | None = None     # (median B - median A) / median A
    n_a: int = 0
    n_b: int = 0
    test: str | None = None          # "mann-whitney exact" | "mann-whitney normal"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "p": num(self.p), "effect": num(self.effect),
                "n_a": self.n_a, "n_b": self.n_b, "test": self.test}


def judge(a, b, *, higher_is_better: bool = False, alpha: float = ALPHA,
          min_effect: float = MIN_EFFECT) -> Judgement:
    """Verdict on the instance values of one region (or metric) in A and in B.

    "no change" when the values are identical (or all one value), "within noise" when the medians differ by less
    than `min_effect` or the U test does not reject at `alpha`, "n/a (too few instances)" below
    MIN_INSTANCES on either side, else "faster" / "slower" (by the median's direction).
    """
    a = np.asarray(a if a is not None else [], dtype=np.float64)
    b = np.asarray(b if b is not None else [], dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return Judgement(NO_DATA, n_a=len(a), n_b=len(b))
    identical = len(a) == len(b) and np.array_equal(np.sort(a), np.sort(b))
    one_value = a.min() == a.max() == b.min() == b.max()     # e.g. 4 blocks vs 2, every instance equal
    if identical or one_value:
        return Judgement(SAME, p=1.0, effect=0.0, n_a=len(a), n_b=len(b))
    ma, mb = float(np.median(a)), float(np.median(b))
    effect = (mb - ma) / abs(ma) if ma != 0 else (math.inf if mb > ma else -math.inf if mb < ma else 0.0)
    if len(a) < MIN_INSTANCES or len(b) < MIN_INSTANCES:
        return Judgement(TOO_FEW, effect=effect, n_a=len(a), n_b=len(b))
    mw = mann_whitney_u(a, b)
    test = "mann-whitney " + ("exact" if mw.exact else "normal")
    if abs(effect) < min_effect or mw.p >= alpha:
        return Judgement(NOISE, p=mw.p, effect=effect, n_a=len(a), n_b=len(b), test=test)
    better = (mb > ma) if higher_is_better else (mb < ma)
    return Judgement(FASTER if better else SLOWER, p=mw.p, effect=effect, n_a=len(a), n_b=len(b), test=test)
