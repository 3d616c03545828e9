"""The noise test of `lltrace diff`: Mann-Whitney U by hand (no scipy) and the verdict rules."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lltrace.analysis import noise
from lltrace.analysis.noise import judge, mann_whitney_u


def brute_force_p(a, b) -> float:
    """Two-sided exact p by enumerating every split of the pooled ranks (tiny samples only)."""
    pooled = np.concatenate([a, b])
    n1 = len(a)
    u_obs = mann_whitney_u(a, b).u
    mu = n1 * len(b) / 2
    us = []
    for idx in itertools.combinations(range(len(pooled)), n1):
        x = pooled[list(idx)]
        y = np.delete(pooled, list(idx))
        us.append(sum((xi > yi) + 0.5 * (xi == yi) for xi in x for yi in y))
    us = np.array(us)
    return float(np.mean(np.abs(us - mu) >= abs(u_obs - mu) - 1e-9))


@pytest.mark.parametrize("a,b", [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
    ([1.0, 2.5, 3.1], [0.5, 4.0, 6.0, 7.0]),
    ([3.0, 1.0, 4.0, 1.5, 9.0, 2.6], [5.0, 3.5, 8.9, 7.9]),
    ([10, 20, 30, 40], [15, 25, 35, 45]),
])
def test_exact_p_matches_enumeration(a, b):
    r = mann_whitney_u(a, b)
    assert r.exact
    assert r.p == pytest.approx(min(1.0, brute_force_p(np.array(a, float), np.array(b, float))), abs=1e-12)


def test_known_values():
    # completely separated samples of 5: U = 0, p = 2 / C(10, 5)
    r = mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert r.u == 0 and r.p == pytest.approx(2 / 252)
    # 3 vs 3 can never reach p < 0.05: the smallest two-sided p is 2 / C(6, 3) = 0.1
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]).p == pytest.approx(0.1)
    # with ties: normal approximation with tie and continuity corrections (worked by hand:
    # U = 4.5, var = 25/12 * (11 - 30/90), z = 7.5 / sqrt(var))
    r = mann_whitney_u([1, 2, 2, 3, 4], [2, 3, 5, 6, 7])
    assert not r.exact and r.u == 4.5
    z = 7.5 / math.sqrt(25 / 12 * (11 - 30 / 90))
    assert r.p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_large_samples_use_the_normal_approximation_and_detect_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 40), rng.normal(11, 1, 40)
    r = mann_whitney_u(a, b)
    assert not r.exact and r.p < 1e-3
    same = mann_whitney_u(rng.normal(10, 1, 40), rng.normal(10, 1, 40))
    assert same.p > 0.01


def test_all_values_equal_is_no_evidence():
    assert mann_whitney_u([2.0] * 5, [2.0] * 7).p == 1.0


def test_verdicts():
    assert judge([5.0, 5.0, 6.0], [6.0, 5.0, 5.0]).verdict == noise.SAME
    assert judge([10, 11, 9, 10.5, 10.2], [5, 5.5, 4.5, 5.1, 4.9]).verdict == noise.FASTER
    assert judge([5, 5.5, 4.5, 5.1, 4.9], [10, 11, 9, 10.5, 10.2]).verdict == noise.SLOWER
    # overlapping distributions: within noise, whatever the difference of the means
    assert judge([10, 14, 9, 12, 11], [11, 13, 10, 9.5, 12.5]).verdict == noise.NOISE
    # significant but below the minimum effect: noise
    a = np.linspace(100, 100.5, 20)
    assert judge(a, a + 1.0).verdict == noise.NOISE            # +1% < 2%
    assert judge(a, a + 1.0, min_effect=0.005).verdict == noise.SLOWER
    # too few instances
    j = judge([1.0, 2.0], [5.0, 6.0, 7.0])
    assert j.verdict == noise.TOO_FEW and j.effect == pytest.approx(3.0)   # medians 1.5 -> 6
    assert judge(None, [1, 2, 3]).verdict == noise.NO_DATA
    # FPS: higher is better
    assert judge([10, 11, 10.5, 10.2], [20, 21, 20.5, 19.8], higher_is_better=True).verdict == noise.FASTER


def test_outliers_do_not_flip_a_rank_verdict():
    """A warm-up instance 100x slower in A does not make B look faster (it would for means)."""
    a = [100.0, 10.0, 10.1, 9.9, 10.05, 10.2]
    b = [10.1, 10.0, 9.95, 10.15, 10.05, 9.9]
    assert np.mean(b) < 0.7 * np.mean(a)
    assert judge(a, b).verdict == noise.NOISE
