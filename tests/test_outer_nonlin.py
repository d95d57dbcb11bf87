"""The OuterNonlin instruction (NE⊗OR⊤ nonlinear outer product, TP IVb Def 2.6.1/2.6.5).

References, none of which imports the code under test:

* a finite-width network written here in plain numpy (``y_α = (1/n) Σ_β ψ(·)`` as an
  explicit ``n × n`` array), over widths and seeds, extrapolated linearly in ``1/n``
  (the Master Theorem's leading finite-width correction of a mean is ``O(1/n)``),
  compared with the limit within 4 combined standard errors;
* closed forms for a ψ polynomial in its col arguments.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import tensorprog as tp

EPS = 0.3
THETA = 0.5


def _program() -> tuple[tp.Program, list]:
    """Rows and cols that depend on MatMuls of one matrix (``b = Wᵀ tanh(W v)`` has a Ż
    term, and ``W y1`` has a Ż term through ``y1``'s row ``b``), a scalar parameter and
    a numeric constant, two non-separable ψ."""
    p = tp.Program("outer")
    W = p.matrix("W")
    v, u = p.vector("v"), p.vector("u")
    th = p.scalar("th", THETA)
    h = W @ v
    a = tp.tanh(h)
    b = W.T @ a
    c = h + th
    y1 = tp.outer_nonlin(lambda r, s, t: sympy.sign(r * s) * t, [b], [c, u * u], name="y1")
    y2 = tp.outer_nonlin(
        lambda r, s, e: r * s / sympy.sqrt(r**2 * s**2 + e**2), [b], [c], [EPS], name="y2"
    )
    z = W @ y1
    ks = [
        tp.inner(y1, v, name="k1"),
        tp.mean(y1 * y1, name="k2"),
        tp.inner(y2, b, name="k3"),
        tp.inner(z, a, name="k4"),
        tp.mean(y2 * y2, name="k5"),
    ]
    return p, ks


def _numpy_network(n: int, rng: np.random.Generator) -> np.ndarray:
    """The same program at width n, written out (explicit n × n outer arrays)."""
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    v, u = rng.standard_normal(n), rng.standard_normal(n)
    h = W @ v
    a = np.tanh(h)
    b = W.T @ a
    c = h + THETA
    B, C = b[:, None], c[None, :]
    y1 = (np.sign(B * C) * (u * u)[None, :]).mean(axis=1)
    y2 = (B * C / np.sqrt(B**2 * C**2 + EPS**2)).mean(axis=1)
    z = W @ y1
    return np.array([y1 @ v / n, y1 @ y1 / n, y2 @ b / n, z @ a / n, y2 @ y2 / n])


def _extrapolate(widths: list[int], seeds: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Intercept at 1/n = 0 of a weighted least-squares line through the seed means at
    each width, and its standard error (from the seeds' spread)."""
    means, var = [], []
    for n in widths:
        rng = np.random.default_rng(1000 + n)
        vals = np.array([_numpy_network(n, rng) for _ in range(seeds[n])])
        means.append(vals.mean(0))
        var.append(vals.var(0, ddof=1) / seeds[n])
    x = 1.0 / np.array(widths, dtype=float)
    X = np.stack([np.ones_like(x), x], axis=1)
    out, se = [], []
    for j in range(len(means[0])):
        w = 1.0 / np.array([vv[j] for vv in var])
        A = X.T @ (w[:, None] * X)
        cov = np.linalg.inv(A)
        beta = cov @ (X.T @ (w * np.array([m[j] for m in means])))
        out.append(beta[0])
        se.append(np.sqrt(cov[0, 0]))
    return np.array(out), np.array(se)


def test_limit_matches_finite_width_extrapolated():
    """sign(a·b)·t and a·b/√(a²b²+ε²): the Monte Carlo limit (inner expectation over the
    replicate's other samples) against numpy networks at n = 128 … 1024."""
    p, ks = _program()
    lim = p.limit(samples=2**15, seed=3)
    widths = [128, 256, 512, 1024]
    ref, ref_se = _extrapolate(widths, {128: 48, 256: 24, 512: 12, 1024: 6})
    for j, k in enumerate(ks):
        assert lim.method(k) == "montecarlo"
        se = np.hypot(ref_se[j], lim.stderr(k))
        assert abs(lim[k] - ref[j]) <= 4 * se, (k.name, lim[k], ref[j], se)


def test_simulate_is_the_numpy_network():
    """simulate(n) computes y_α = (1/n) Σ_β ψ exactly (blocks of rows), on its own draws."""
    p, ks = _program()
    n = 300
    sim = p.simulate(n, seed=7)
    W, v, u = sim.matrix("W"), sim.vector("v"), sim.vector("u")
    h = W @ v
    b = W.T @ np.tanh(h)
    c = h + THETA
    y1 = np.array([np.mean(np.sign(bi * c) * u * u) for bi in b])
    y2 = np.array([np.mean(bi * c / np.sqrt(bi**2 * c**2 + EPS**2)) for bi in b])
    np.testing.assert_allclose(sim.vector("y1"), y1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sim.vector("y2"), y2, rtol=1e-12, atol=1e-14)


def test_dsl_errors():
    p = tp.Program()
    x = p.vector("x")
    s = p.scalar("s", 1.0)
    with pytest.raises(tp.ProgramValueError, match="at least one row"):
        tp.outer_nonlin(lambda a: a, [], [x])
    with pytest.raises(tp.ProgramTypeError, match="rows must be vectors"):
        tp.outer_nonlin(lambda a, b: a * b, [s], [x])
    with pytest.raises(tp.ProgramValueError, match="takes 2 vector"):
        a, b = sympy.symbols("a b", real=True)
        tp.outer_nonlin(tp.Nonlinearity("f", a * b, [a, b]), [x], [x, x])
    q = tp.Program()
    w = q.vector("w")
    with pytest.raises(tp.ForeignHandleError):
        tp.outer_nonlin(lambda a, b: a * b, [x], [w])
    # the same computation twice is one instruction
    y = tp.outer_nonlin(lambda a, b: a * b**2, [x], [x])
    assert tp.outer_nonlin(lambda a, b: a * b**2, [x], [x]) == y
