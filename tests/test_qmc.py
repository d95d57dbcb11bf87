"""Randomised quasi-Monte Carlo points (``tensorprog.engine.qmc``).

References: SciPy's own Sobol' generator (unscrambled points, an independent
implementation of the same sequence), ``scipy.special.ndtri`` (the normal quantile,
Cephes) and ``math.erfc``; the net and uniformity properties are checked directly, and
expectations against closed forms within their standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorprog as tp
from tensorprog.engine import qmc


@pytest.mark.parametrize("D", [1, 7, 64])
def test_unscrambled_points_are_scipys_sobol_points(D):
    from scipy.stats import qmc as sq

    v = qmc.direction_numbers(D)
    ours = qmc.sobol_points(v, np.zeros(D, np.uint64), 0, 512).T.astype(float) / 2**qmc.BITS
    ref = sq.Sobol(D, scramble=False, bits=qmc.BITS).random(512)  # Gray-code order
    assert sorted(map(tuple, ours)) == sorted(map(tuple, ref))  # the same 512 points


def test_direction_numbers_of_high_dimensions():
    """Dimensions near the end of the table (their own degrees and initial numbers)."""
    from scipy.stats import qmc as sq

    D = qmc.MAX_DIM
    v = qmc.direction_numbers(D)
    assert v.shape == (D, qmc.BITS)
    pts = qmc.sobol_points(v, np.zeros(D, np.uint64), 0, 64)[-5:].T.astype(float) / 2**qmc.BITS
    ref = sq.Sobol(D, scramble=False, bits=qmc.BITS).random(64)[:, -5:]
    assert sorted(map(tuple, pts)) == sorted(map(tuple, ref))


def test_points_of_a_range_are_pieces_of_one_sequence():
    rng = np.random.default_rng(3)
    v, shift = qmc.scramble(qmc.direction_numbers(9), rng)
    whole = qmc.sobol_points(v, shift, 0, 1000)
    for start, M in [(0, 1), (1, 7), (125, 125), (640, 360), (999, 1)]:
        np.testing.assert_array_equal(
            qmc.sobol_points(v, shift, start, M), whole[:, start : start + M]
        )


def test_scrambled_points_keep_the_net_structure():
    """Linear scrambling with a digital shift keeps every 1-D projection of the first 2^m
    points stratified, and dimensions 0 and 1 a (0, m, 2)-net."""
    rng = np.random.default_rng(0)
    v, shift = qmc.scramble(qmc.direction_numbers(20), rng)
    x = qmc.sobol_points(v, shift, 0, 1024).T.astype(float) / 2**qmc.BITS
    for d in range(20):
        assert len(np.unique(np.floor(x[:, d] * 1024))) == 1024
    for a in range(11):  # boxes 2^-a × 2^-(10-a) hold one point each
        cells = np.floor(x[:, 0] * 2**a) * 2 ** (10 - a) + np.floor(x[:, 1] * 2 ** (10 - a))
        assert len(np.unique(cells)) == 1024
    v2, _ = qmc.scramble(qmc.direction_numbers(20), rng)
    assert not np.array_equal(v, v2)  # another scramble


def test_every_scrambled_point_is_uniform():
    """Over independent scrambles, a fixed point's coordinates have mean 1/2 and
    variance 1/12 (within 4 standard errors)."""
    rng = np.random.default_rng(1)
    D, R = 8, 4000
    v0 = qmc.direction_numbers(D)
    pts = np.array([qmc.sobol_points(*qmc.scramble(v0, rng), 5, 1)[:, 0] for _ in range(R)])
    u = (pts.astype(float) + 0.5) / 2**qmc.BITS
    se = math.sqrt(1 / 12 / R)
    assert np.all(np.abs(u.mean(axis=0) - 0.5) < 4 * se)
    assert np.all(np.abs(u.var(axis=0) - 1 / 12) < 4 * math.sqrt(1 / 180 / R))


def test_normal_quantile_against_ndtri_and_erfc():
    from scipy.special import ndtri

    u = np.concatenate(
        [np.logspace(-300, -1, 400), np.linspace(0.01, 0.99, 2001), 1 - np.logspace(-16, -1, 200)]
    )
    ours, ref = qmc.normal_quantile(u), ndtri(u)
    np.testing.assert_allclose(ours, ref, rtol=2e-15, atol=4e-16)
    upper = u[u > 0.5]
    np.testing.assert_array_equal(qmc.normal_quantile(1 - upper), -qmc.normal_quantile(upper))
    for z, p in zip(ours[::97], u[::97]):  # Φ(Φ⁻¹(p)) = p, Φ from math.erfc
        assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(p, rel=1e-13)
    assert qmc.normal_quantile(0.5) == 0.0 and np.ndim(qmc.normal_quantile(0.3)) == 0


def test_sobol_normals_chunks_and_dimensions_beyond_the_table(monkeypatch):
    seed = np.random.SeedSequence(4)
    whole = qmc.sobol_normals(5, 64, np.random.default_rng(seed))
    part = qmc.sobol_normals(5, 32, np.random.default_rng(seed), start=32)
    np.testing.assert_array_equal(part, whole[:, 32:])
    monkeypatch.setattr(qmc, "MAX_DIM", 3)  # rows 3, 4: iid, another stream per chunk
    a = qmc.sobol_normals(5, 64, np.random.default_rng(seed))
    b = qmc.sobol_normals(5, 32, np.random.default_rng(seed), start=32)
    np.testing.assert_array_equal(b[:3], a[:3, 32:])
    assert not np.array_equal(b[3:], a[3:, 32:]) and not np.array_equal(b[3:], a[3:, :32])
    assert abs(a[3:].mean()) < 4 / math.sqrt(a[3:].size)


def _relu_cov_program():
    p = tp.Program("rqmc")
    x = p.vector("x")
    y = p.vector("y", cov={x: 0.6})
    tp.mean(tp.relu(x) * tp.relu(y), name="k")
    tp.mean(tp.tanh(x + 0.5 * y) ** 2, name="t")
    return p


def test_randomised_qmc_limits_are_unbiased_with_honest_errors():
    """Against the closed form / quadrature: both samplers within 4 standard errors;
    the scrambled Sobol' points' error bars are several times smaller."""
    p = _relu_cov_program()
    exact = p.limit()  # relu·relu in closed form, tanh² by quadrature
    rq = p.limit(method="montecarlo", samples=2**15, seed=3)
    iid = p.limit(method="montecarlo", samples=2**15, seed=3, qmc=False)
    for name in ("k", "t"):
        for lim in (rq, iid):
            assert abs(lim[name] - exact[name]) <= 4 * lim.stderr(name), name
        assert rq.stderr(name) < iid.stderr(name) / 4, name
