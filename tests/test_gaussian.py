"""Tests of :mod:`tensorprog.gaussian` against independent references.

Every reference is written here and imports nothing from tensorprog: scipy.integrate
(``quad``/``dblquad`` over the Gaussian density), a brute-force piecewise
Gauss--Legendre product rule in standard-normal coordinates (split where the
integrand jumps or kinks, so it converges to rounding), known moments, derivatives of
the moment generating function, and Monte Carlo with a tolerance of 4 standard errors
computed from the samples.

Conventions under test: ``step(0) = 1/2`` (``np.heaviside(z, 0.5)``, sympy's
``Heaviside(0)``), ``sign(0) = 0``, ``derf = erf'``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special

import tensorprog as tp
from tensorprog import gaussian as tg
from tensorprog.core.errors import NonPSDError, NumericalError, ProgramValueError

# --------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------

PHI = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "step": lambda z: np.heaviside(z, 0.5),
    "sign": np.sign,
    "abs": np.abs,
    "erf": special.erf,
    "derf": lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-(z**2)),
    "sin": np.sin,
    "cos": np.cos,
    "exp": np.exp,
}

_GL_T, _GL_W = np.polynomial.legendre.leggauss(160)
_L = 14.0  # standard-normal coordinates are truncated to [-L, L]


def _gl(lo, hi):
    """Gauss-Legendre nodes and weights on [lo, hi]; lo/hi may be arrays."""
    lo = np.asarray(lo, dtype=float)[..., None]
    hi = np.asarray(hi, dtype=float)[..., None]
    half = 0.5 * (hi - lo)
    return lo + half * (_GL_T + 1.0), half * _GL_W


def _halves():
    """Nodes/weights on [-L, 0] and [0, L] (a split at the origin)."""
    x1, w1 = _gl(-_L, 0.0)
    x2, w2 = _gl(0.0, _L)
    return np.concatenate([x1, x2]), np.concatenate([w1, w2])


def ref_1d(g):
    """E g(a) for a ~ N(0, 1), brute force, split at a = 0."""
    a, w = _halves()
    return float(np.sum(w * g(a) * np.exp(-0.5 * a**2)) / math.sqrt(2.0 * math.pi))


def ref_pair(phi, psi, k11, k12, k22):
    """E[phi(u) psi(v)] for centred (u, v) with the given covariance, brute force.

    u = s1 a, v = s2 (rho a + r b) with a, b iid N(0, 1); the outer integral is split at
    a = 0 (u = 0), the inner one at the a-dependent point where v = 0.
    """
    s1, s2 = math.sqrt(k11), math.sqrt(k22)
    if s1 == 0.0 or s2 == 0.0:
        return ref_1d(lambda a: phi(s1 * a) * psi(s2 * a))
    rho = k12 / (s1 * s2)
    if abs(rho) >= 1.0 - 1e-15:
        return ref_1d(lambda a: phi(s1 * a) * psi(math.copysign(s2, rho) * a))
    r = math.sqrt(1.0 - rho**2)
    a, wa = _halves()
    b0 = np.clip(-rho * a / r, -_L, _L)
    b1, wb1 = _gl(-_L, b0)
    b2, wb2 = _gl(b0, _L)
    b = np.concatenate([b1, b2], axis=1)
    wb = np.concatenate([wb1, wb2], axis=1)
    A = a[:, None]
    vals = phi(s1 * A) * psi(s2 * (rho * A + r * b))
    dens = np.exp(-0.5 * (A**2 + b**2)) / (2.0 * math.pi)
    return float(np.sum(wa[:, None] * wb * vals * dens))


def density2(m, c):
    """Bivariate normal density N(m, c) as a function f(v, u) for dblquad."""
    det = c[0][0] * c[1][1] - c[0][1] ** 2
    i11, i22, i12 = c[1][1] / det, c[0][0] / det, -c[0][1] / det
    norm = 1.0 / (2.0 * math.pi * math.sqrt(det))

    def pdf(v, u):
        x, y = u - m[0], v - m[1]
        return norm * math.exp(-0.5 * (i11 * x * x + 2 * i12 * x * y + i22 * y * y))

    return pdf


def dblquad_expect(g, m, c, lo=-np.inf, hi=np.inf):
    """E g(u, v) by scipy dblquad over the density (u outer, v inner)."""
    pdf = density2(m, c)
    val, _ = integrate.dblquad(
        lambda v, u: g(u, v) * pdf(v, u), lo, hi, lo, hi, epsabs=1e-14, epsrel=1e-12
    )
    return val


def quad_expect(g, mean, var):
    """E g(x), x ~ N(mean, var), by scipy quad over the density."""
    s = math.sqrt(var)
    val, _ = integrate.quad(
        lambda z: g(mean + s * z) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
        -np.inf,
        np.inf,
        epsabs=1e-14,
        epsrel=1e-12,
        limit=200,
    )
    return val


def mc_check(samples, value):
    """Assert |mean(samples) - value| <= 4 standard errors of the sample mean."""
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - value) <= 4.0 * se, (samples.mean(), value, se)


def double_factorial(n):
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def gh_reference(poly_fn, mean, cov, n=30):
    """Tensor Gauss-Hermite over a Cholesky factor, exact for low-degree polynomials."""
    x, w = hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    k = len(mean)
    grids = np.meshgrid(*([x] * k), indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=-1)
    wz = np.prod(np.stack(np.meshgrid(*([w] * k), indexing="ij")), axis=0).ravel()
    pts = np.asarray(mean) + z @ np.linalg.cholesky(np.asarray(cov)).T
    return float(np.sum(wz * poly_fn(pts)))


# --------------------------------------------------------------------------------------
# psd_factor
# --------------------------------------------------------------------------------------


def test_psd_factor_reconstructs_batches():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 2, 3, 3))
    cov = a @ np.swapaxes(a, -1, -2)
    f = tg.psd_factor(cov)
    assert f.shape == cov.shape
    np.testing.assert_allclose(f @ np.swapaxes(f, -1, -2), cov, atol=1e-12)


@pytest.mark.parametrize(
    "cov",
    [
        [[1.0, 1.0], [1.0, 1.0]],  # rho = 1
        [[2.0, -3.0], [-3.0, 4.5]],  # rho = -1
        [[0.0, 0.0], [0.0, 1.3]],  # a zero-variance variable
        [[0.0, 0.0], [0.0, 0.0]],
        [[1.0, 0.3, 0.4], [0.3, 0.5, -0.7], [0.4, -0.7, 1.8]],  # w = u - 2 v: rank 2
        [[1.0, 1.0 + 1e-12], [1.0 + 1e-12, 1.0]],  # eigenvalue -1e-12: rounding
    ],
)
def test_psd_factor_singular(cov):
    cov = np.array(cov)
    f = tg.psd_factor(cov)
    np.testing.assert_allclose(f @ f.T, cov, atol=1e-11)


def test_psd_factor_rank2_is_exactly_rank2():
    t = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -2.0]])
    cov = t @ np.array([[1.0, 0.3], [0.3, 0.5]]) @ t.T
    f = tg.psd_factor(cov)
    np.testing.assert_allclose(f @ f.T, cov, atol=1e-14)
    assert np.linalg.matrix_rank(f, tol=1e-8) == 2


def test_psd_factor_rejects_non_psd_naming_what():
    with pytest.raises(NonPSDError, match=r"K\^\(2\) of layer 2") as info:
        tg.psd_factor([[1.0, 2.0], [2.0, 1.0]], what="K^(2) of layer 2")
    msg = str(info.value)
    assert "positive semidefinite" in msg
    assert "-1" in msg  # the smallest eigenvalue
    assert isinstance(info.value, ValueError)


def test_psd_factor_reports_batch_index():
    cov = np.tile(np.eye(2), (3, 1, 1))
    cov[2] = [[1.0, 0.0], [0.0, -0.5]]
    with pytest.raises(NonPSDError, match=r"batch index \(2,\).*-0\.5"):
        tg.psd_factor(cov)


def test_psd_factor_other_errors():
    with pytest.raises(NonPSDError, match="symmetric"):
        tg.psd_factor([[1.0, 0.5], [0.4, 1.0]], what="C")
    with pytest.raises(NumericalError):
        tg.psd_factor([[1.0, np.nan], [np.nan, 1.0]])
    with pytest.raises(NumericalError):
        tg.psd_factor([[np.inf, 0.0], [0.0, 1.0]])
    with pytest.raises(ProgramValueError):
        tg.psd_factor(np.ones((2, 3)))


# --------------------------------------------------------------------------------------
# Gauss-Hermite expectations
# --------------------------------------------------------------------------------------


def test_default_degree_and_limit():
    degs = [tg.default_degree(k) for k in (1, 2, 3, 4)]
    assert degs == sorted(degs, reverse=True)
    assert max(d**k for k, d in zip((1, 2, 3, 4), degs)) <= 2.5e5  # nodes of a rule
    with pytest.raises(ProgramValueError, match="4 Gaussians.*Monte Carlo"):
        tg.default_degree(5)
    with pytest.raises(ProgramValueError, match="4 Gaussians"):
        tg.gauss_hermite_expectation(lambda x: x[..., 0], np.zeros(5), np.eye(5))


def test_gh_known_moments_1d():
    s2, m = 1.7, -0.6
    e = tg.gauss_hermite_expectation(lambda x: x[..., 0] ** 4, [0.0], [[s2]])
    assert isinstance(e, np.ndarray) and e.shape == ()
    np.testing.assert_allclose(e, 3 * s2**2, rtol=1e-12)
    e2 = tg.gauss_hermite_expectation(lambda x: x[..., 0] ** 2, [m], [[s2]])
    np.testing.assert_allclose(e2, m**2 + s2, rtol=1e-12)
    # a rule of degree n is exact below degree 2n, and only there
    g8 = tg.gauss_hermite_expectation(lambda x: x[..., 0] ** 8, [0.0], [[1.0]], degree=5)
    g10 = tg.gauss_hermite_expectation(lambda x: x[..., 0] ** 10, [0.0], [[1.0]], degree=5)
    np.testing.assert_allclose(g8, double_factorial(7), rtol=1e-12)
    assert abs(g10 - double_factorial(9)) > 1.0


def test_gh_known_moments_2d_isserlis_with_means():
    m = np.array([0.4, -1.1])
    c = np.array([[0.9, -0.35], [-0.35, 0.6]])

    def f(x):
        u, v = x[..., 0], x[..., 1]
        return np.stack([u * v, (u - m[0]) ** 2 * (v - m[1]) ** 2], axis=-1)

    e = tg.gauss_hermite_expectation(f, m, c)
    ref = [c[0, 1] + m[0] * m[1], c[0, 0] * c[1, 1] + 2 * c[0, 1] ** 2]
    np.testing.assert_allclose(e, ref, rtol=1e-12)


def test_gh_tanh_tanh_matches_dblquad():
    m = [0.3, -0.2]
    c = [[1.0, 0.4], [0.4, 0.7]]
    e = tg.gauss_hermite_expectation(lambda x: np.tanh(x[..., 0]) * np.tanh(x[..., 1]), m, c)
    ref = dblquad_expect(lambda u, v: math.tanh(u) * math.tanh(v), m, c)
    np.testing.assert_allclose(e, ref, rtol=1e-9)


def test_trapezoid_converges_exponentially_for_analytic_integrands():
    """E tanh²(2G): the error of the trapezoid rule squares when the step halves
    (e^{-2πa/h}); at h = 1/8 it is at round-off, where Gauss–Hermite with 320 nodes
    is still ~4e-11 off. Reference: 30-digit adaptive quadrature (mpmath)."""
    import mpmath as mp

    f = lambda x: np.tanh(x[..., 0]) ** 2  # noqa: E731
    with mp.workdps(30):
        ref = float(mp.quad(lambda z: mp.tanh(2 * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf]))
    errs = [
        abs(float(tg.trapezoid_expectation(f, [0.0], [[4.0]], step=h)[0]) - ref)
        for h in (0.5, 0.25, 0.125)
    ]
    assert errs[0] > 1e-4 and errs[1] < 10 * errs[0] ** 2 and errs[2] < 1e-13


def test_trapezoid_matches_dblquad_and_flags_heavy_tails():
    m = [0.3, -0.2]
    c = [[1.0, 0.4], [0.4, 0.7]]
    v, tail = tg.trapezoid_expectation(
        lambda x: np.tanh(x[..., 0]) * np.tanh(x[..., 1]), m, c, step=0.125
    )
    ref = dblquad_expect(lambda u, v: math.tanh(u) * math.tanh(v), m, c)
    np.testing.assert_allclose(v, ref, rtol=1e-9)
    assert tail < 1e-12
    # E exp(0.4 G²) = 1/√0.2 is finite, but the box [-9, 9] cuts a visible tail
    heavy, tail = tg.trapezoid_expectation(
        lambda x: np.exp(0.4 * x[..., 0] ** 2), [0.0], [[1.0]], step=0.125
    )
    assert tail > 1e-6 and abs(float(heavy) - 1 / math.sqrt(0.2)) > 1e-6


# --------------------------------------------------------------------------------------
# Panel rule (composite Gauss–Legendre scaled to the covariance, edges at features)
# --------------------------------------------------------------------------------------


def _panel(f, mean, cov, features):
    fine, coarse, tail = tg.panel_expectation(
        f, np.atleast_2d(mean), np.asarray(cov)[None], np.asarray(features, dtype=float)[None]
    )
    return float(fine[0]), abs(float(fine[0] - coarse[0])), float(tail[0])


def test_panel_noncentred_relu_closed_form():
    """E relu(μ + σG) = μΦ(μ/σ) + σφ(μ/σ) (e.g. Winkelbauer 2012, *Moments and absolute
    moments of the normal distribution*, eq. for the truncated first moment), at unit
    and large σ: the kink at -μ is a panel edge, so the rule is exact to rounding."""
    for mu, sd in [(0.2, 1.0), (-0.7, 0.3), (0.2, 40.0), (3.0, 1e4)]:
        ref = mu * special.ndtr(mu / sd) + sd * math.exp(-0.5 * (mu / sd) ** 2) / math.sqrt(
            2 * math.pi
        )
        v, err, tail = _panel(lambda x: np.maximum(x[..., 0], 0.0), [mu], [[sd * sd]], [[0.0, 1.0]])
        assert abs(v - ref) <= 1e-13 * abs(ref) and err <= 1e-12 * abs(ref) and tail < 1e-12


def test_panel_large_variance_matches_closed_forms():
    """Kinked and sharp integrands at large variance, against the arc-cosine kernels
    [Cho & Saul 2009] and Williams' erf kernel [Williams 1997] written here: the
    panels follow each argument's scale, so the error does not grow with σ; also at
    ρ = 0.999 (a kink blurred over a small conditional spread) and ρ = 1 (singular)."""
    law = [(sd, rho) for sd in (1.0, 100.0) for rho in (0.3, -0.9, 0.999, 1.0)]
    s1 = np.array([sd for sd, _ in law])
    s2 = 1.7 * s1
    rho = np.array([r for _, r in law])
    cov = np.stack(
        [np.stack([s1 * s1, rho * s1 * s2], -1), np.stack([rho * s1 * s2, s2 * s2], -1)], axis=1
    )
    feats = np.broadcast_to([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], (len(law), 2, 3))
    th = np.arccos(rho)
    a = (1 + 2 * s1 * s1) * (1 + 2 * s2 * s2)
    cases = [
        (
            lambda x: np.maximum(x[..., 0], 0) * np.maximum(x[..., 1], 0),
            s1 * s2 / (2 * np.pi) * (np.sin(th) + (np.pi - th) * rho),
        ),
        (lambda x: (x[..., 0] > 0) * (x[..., 1] > 0.0), (np.pi - th) / (2 * np.pi)),
        (
            lambda x: special.erf(x[..., 0]) * special.erf(x[..., 1]),
            2 / np.pi * np.arcsin(2 * rho * s1 * s2 / np.sqrt(a)),
        ),
    ]
    for f, ref in cases:
        fine, coarse, tail = tg.panel_expectation(f, np.zeros((len(law), 2)), cov, feats)
        scale = np.maximum(1.0, np.abs(ref))
        assert np.all(np.abs(fine - ref) <= 1e-11 * scale), (fine - ref) / scale
        assert np.all(np.abs(fine - coarse) <= 1e-7 * scale) and np.all(tail < 1e-12)


def test_panel_tanh_at_large_variance_matches_adaptive_quadrature():
    """E tanh²(u), Var u = 28.6 (issue #22: Gauss–Hermite and the trapezoid rules do
    not converge here): 30-digit adaptive quadrature (mpmath), split at 0."""
    import mpmath as mp

    k = 28.587
    with mp.workdps(30):
        s = mp.sqrt(k)
        ref = float(
            mp.quad(
                lambda z: mp.tanh(s * z) ** 2 * mp.npdf(z), [-mp.inf, -1, -0.2, 0, 0.2, 1, mp.inf]
            )
        )
    v, err, tail = _panel(lambda x: np.tanh(x[..., 0]) ** 2, [0.0], [[k]], [[0.0, 1.0]])
    assert abs(v - ref) <= 1e-13 and err < 1e-9 and tail < 1e-12


def test_panel_rejects_bad_arguments():
    f = lambda x: x[..., 0]  # noqa: E731
    with pytest.raises(ProgramValueError, match="features"):
        tg.panel_expectation(f, [[0.0]], [[[1.0]]], [[1.0, 0.0]])
    with pytest.raises(NonPSDError):
        tg.panel_expectation(f, [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], np.zeros((1, 0, 3)))
    with pytest.raises(NumericalError):
        tg.panel_expectation(f, [[np.nan]], [[[1.0]]], np.zeros((1, 0, 2)))


def test_gh_vector_valued_integrand():
    m = np.array([0.2, 0.5])
    c = np.array([[0.8, 0.3], [0.3, 0.5]])
    fs = [
        lambda x: np.tanh(x[..., 0]) * np.tanh(x[..., 1]),
        lambda x: x[..., 0] * x[..., 1],
        lambda x: np.cos(x[..., 0]),
    ]
    e = tg.gauss_hermite_expectation(lambda x: np.stack([g(x) for g in fs], -1), m, c)
    assert e.shape == (3,)
    singles = [tg.gauss_hermite_expectation(g, m, c) for g in fs]
    np.testing.assert_allclose(e, singles, rtol=1e-14)
    np.testing.assert_allclose(e[1], c[0, 1] + m[0] * m[1], rtol=1e-12)
    np.testing.assert_allclose(e[2], math.cos(m[0]) * math.exp(-c[0, 0] / 2), rtol=1e-12)


def test_gh_batching_equals_loop():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 3, 2, 2)) * 0.6
    cov = a @ np.swapaxes(a, -1, -2)
    cov[0, 0] = [[1.0, 1.0], [1.0, 1.0]]  # a singular member of the batch
    mean = rng.normal(size=(5, 3, 2)) * 0.5

    def f(x):
        u, v = x[..., 0], x[..., 1]
        return np.stack([np.tanh(u) * np.sin(v), u * u * v], axis=-1)

    def g(x):
        return np.tanh(x[..., 0]) * np.sin(x[..., 1])

    e = tg.gauss_hermite_expectation(f, mean, cov)
    e_scalar = tg.gauss_hermite_expectation(g, mean, cov)
    assert e.shape == (5, 3, 2) and e_scalar.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            one = tg.gauss_hermite_expectation(f, mean[i, j], cov[i, j])
            np.testing.assert_allclose(e[i, j], one, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(e_scalar[i, j], one[0], rtol=1e-13, atol=1e-15)
    # the mean broadcasts against a batch of covariances
    e_b = tg.gauss_hermite_expectation(g, mean[0, 0], cov)
    np.testing.assert_allclose(
        e_b[4, 2], tg.gauss_hermite_expectation(g, mean[0, 0], cov[4, 2]), rtol=1e-13
    )


def test_gh_chunks_stay_within_memory_budget():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1000, 2, 2)) * 0.5
    cov = a @ np.swapaxes(a, -1, -2)
    mean = np.zeros((1000, 2))
    seen = []

    def f(x):
        seen.append(x.nbytes)
        return x[..., 0] * x[..., 1]

    e = tg.gauss_hermite_expectation(f, mean, cov)
    assert len(seen) > 2
    assert max(seen) <= 64 * 2**20
    np.testing.assert_allclose(e, cov[:, 0, 1], rtol=1e-10, atol=1e-14)


def test_gh_singular_rho_one():
    # v = 2u exactly
    c = [[1.0, 2.0], [2.0, 4.0]]
    m = [0.1, 0.2]
    e = tg.gauss_hermite_expectation(
        lambda x: special.erf(x[..., 0]) * special.erf(x[..., 1]), m, c
    )
    ref = quad_expect(lambda u: special.erf(u) * special.erf(2 * u), 0.1, 1.0)
    np.testing.assert_allclose(e, ref, rtol=1e-9)


def test_gh_zero_variance_variable():
    c = [[0.8, 0.0], [0.0, 0.0]]
    m = [0.1, 0.7]
    e = tg.gauss_hermite_expectation(lambda x: np.tanh(x[..., 0]) * np.cos(x[..., 1]), m, c)
    ref = math.cos(0.7) * quad_expect(math.tanh, 0.1, 0.8)
    np.testing.assert_allclose(e, ref, rtol=1e-10)


def test_gh_rank2_three_variables():
    c2 = np.array([[1.0, 0.3], [0.3, 0.5]])
    t = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -2.0]])  # (u, v, w = u - 2v)
    cov = t @ c2 @ t.T
    mu, mv = 0.2, -0.4
    mean = t @ np.array([mu, mv])
    k11, k12, k22 = c2[0, 0], c2[0, 1], c2[1, 1]

    def f(x):
        u, v, w = x[..., 0], x[..., 1], x[..., 2]
        return np.stack([(w - u + 2 * v) ** 2, u * v * w, np.cos(w)], axis=-1)

    e = tg.gauss_hermite_expectation(f, mean, cov)
    e_u2v = mv * (k11 + mu**2) + 2 * mu * k12  # E[u^2 v]
    e_uv2 = mu * (k22 + mv**2) + 2 * mv * k12  # E[u v^2]
    var_w = float(cov[2, 2])
    ref = [0.0, e_u2v - 2 * e_uv2, math.cos(mean[2]) * math.exp(-var_w / 2)]
    np.testing.assert_allclose(e, ref, rtol=1e-11, atol=1e-13)


def test_gh_monte_carlo_three_variables():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3)) * 0.5
    cov = a @ a.T
    mean = np.array([0.3, -0.1, 0.2])

    def f(x):
        return np.exp(-(x[..., 0] ** 2)) * np.cos(x[..., 1]) + x[..., 1] * np.tanh(x[..., 2])

    e = tg.gauss_hermite_expectation(f, mean, cov)
    samples = rng.multivariate_normal(mean, cov, size=400_000)
    mc_check(f(samples), float(e))


def test_gh_errors():
    with pytest.raises(NonPSDError, match="Sigma of h"):
        tg.gauss_hermite_expectation(
            lambda x: x[..., 0], [0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], what="Sigma of h"
        )
    with pytest.raises(NumericalError):
        tg.gauss_hermite_expectation(lambda x: 1.0 / (0.0 * x[..., 0]), [0.0], [[1.0]])
    with pytest.raises(NumericalError):
        tg.gauss_hermite_expectation(lambda x: np.exp(x[..., 0] ** 2), [0.0], [[1e4]])
    with pytest.raises(ProgramValueError):
        tg.gauss_hermite_expectation(lambda x: x[..., 0], [0.0, 0.0], [[1.0]])
    with pytest.raises(ProgramValueError):
        tg.gauss_hermite_expectation(lambda x: np.ones((2, 2, 2, 2)), [0.0], [[1.0]])


# --------------------------------------------------------------------------------------
# Exact polynomial moments
# --------------------------------------------------------------------------------------


def mgf_moment(monomial_exponents, mean, cov):
    """E x^a by differentiating the MGF exp(mu.t + t'Ct/2) at t = 0 (sympy, exact)."""
    k = len(mean)
    t = sympy.symbols(f"t0:{k}")
    expo = sum(mean[i] * t[i] for i in range(k)) + sympy.Rational(1, 2) * sum(
        cov[i][j] * t[i] * t[j] for i in range(k) for j in range(k)
    )
    d = sympy.exp(expo)
    for i, a in enumerate(monomial_exponents):
        if a:
            d = sympy.diff(d, t[i], a)
    return sympy.expand(d.subs({ti: 0 for ti in t}))


def test_moment_fourth_power_numeric_and_symbolic():
    x = sympy.Symbol("x")
    s = sympy.Symbol("s", positive=True)
    val = tg.gaussian_moment(x**4, [x], np.array([0.0]), np.array([[1.7]]))
    assert type(val) is float
    assert val == pytest.approx(3 * 1.7**2, rel=1e-14)
    sym = tg.gaussian_moment(x**4, [x], [0], sympy.Matrix([[s**2]]))
    assert sympy.simplify(sym - 3 * s**4) == 0
    exact = tg.gaussian_moment(x**4, [x], [sympy.Integer(0)], [[sympy.Rational(1, 3)]])
    assert exact == sympy.Rational(1, 3) and isinstance(exact, sympy.Rational)


def test_moment_with_mean():
    x = sympy.Symbol("x")
    m, s = sympy.symbols("m s", real=True)
    sym = tg.gaussian_moment(x**2, [x], [m], sympy.Matrix([[s**2]]))
    assert sympy.expand(sym - (m**2 + s**2)) == 0
    # E (m + s g)^n = sum_j C(n, 2j) m^(n-2j) s^(2j) (2j-1)!!
    mv, sv = -0.7, 1.3
    for n in range(10):
        ref = sum(
            math.comb(n, 2 * j) * mv ** (n - 2 * j) * sv ** (2 * j) * double_factorial(2 * j - 1)
            for j in range(n // 2 + 1)
        )
        got = tg.gaussian_moment(x**n, [x], [mv], [[sv**2]])
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_moment_isserlis_symbolic():
    xs = sympy.symbols("x1:5")
    c = sympy.Matrix(4, 4, lambda i, j: sympy.Symbol(f"c{min(i, j)}{max(i, j)}"))
    got = tg.gaussian_moment(xs[0] * xs[1] * xs[2] * xs[3], xs, [0] * 4, c)
    ref = c[0, 1] * c[2, 3] + c[0, 2] * c[1, 3] + c[0, 3] * c[1, 2]
    assert sympy.expand(got - ref) == 0
    got2 = tg.gaussian_moment(xs[0] ** 2 * xs[1] ** 2, xs[:2], [0, 0], c[:2, :2])
    assert sympy.expand(got2 - (c[0, 0] * c[1, 1] + 2 * c[0, 1] ** 2)) == 0


def test_moment_exact_rational_against_mgf():
    x, y = sympy.symbols("x y")
    r = sympy.Rational
    mean = [r(1, 2), r(-2, 3)]
    cov = [[r(1, 3), r(1, 5)], [r(1, 5), r(1)]]
    for a, b in [(4, 2), (3, 3), (0, 5), (2, 1)]:
        got = tg.gaussian_moment(x**a * y**b, [x, y], mean, sympy.Matrix(cov))
        assert isinstance(got, sympy.Rational)
        assert got == mgf_moment((a, b), mean, cov)
    # symbolic entries against the MGF as well
    m1, k = sympy.symbols("m1 k")
    mean_s, cov_s = [m1, 0], [[k, r(1, 2)], [r(1, 2), 2]]
    got = tg.gaussian_moment(x**3 * y**2 + 5 * x, [x, y], mean_s, cov_s)
    ref = mgf_moment((3, 2), mean_s, cov_s) + 5 * m1
    assert sympy.expand(got - ref) == 0


def test_moment_polynomial_in_three_variables_matches_quadrature():
    rng = np.random.default_rng(4)
    xs = sympy.symbols("x0:3")
    a = rng.normal(size=(3, 3)) * 0.7
    cov = a @ a.T + 0.1 * np.eye(3)
    mean = rng.normal(size=3)
    terms = []
    for _ in range(12):
        e = rng.integers(0, 4, size=3)
        terms.append((float(rng.normal()), tuple(int(v) for v in e)))
    expr = sum(c * xs[0] ** e[0] * xs[1] ** e[1] * xs[2] ** e[2] for c, e in terms)

    def poly_fn(p):
        return sum(c * p[:, 0] ** e[0] * p[:, 1] ** e[1] * p[:, 2] ** e[2] for c, e in terms)

    got = tg.gaussian_moment(expr, xs, mean, cov)
    np.testing.assert_allclose(got, gh_reference(poly_fn, mean, cov), rtol=1e-10)


def test_moment_degree_12_in_6_variables():
    """A dense degree-12 polynomial in 6 variables, exactly (its timing is in
    ``benchmarks/gaussian.py``: wall-clock limits do not belong in tests)."""
    xs = sympy.symbols("x1:7")
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 6)) * 0.4
    cov = a @ a.T
    mean = rng.normal(size=6) * 0.3
    poly = sympy.Poly(sum(xs), *xs) ** 12
    got = tg.gaussian_moment(poly, xs, mean, cov)
    big_m, var = float(mean.sum()), float(cov.sum())  # sum(x) ~ N(M, 1'C1)
    ref = sum(
        math.comb(12, 2 * j) * big_m ** (12 - 2 * j) * var**j * double_factorial(2 * j - 1)
        for j in range(7)
    )
    assert got == pytest.approx(ref, rel=1e-10)


def test_moment_errors():
    x, y, th = sympy.symbols("x y theta")
    for bad in (sympy.sin(x), 1 / x, sympy.sqrt(x), sympy.Abs(x) * y):
        with pytest.raises(ProgramValueError, match="not a polynomial"):
            tg.gaussian_moment(bad, [x, y], [0.0, 0.0], np.eye(2))
    with pytest.raises(NonPSDError):
        tg.gaussian_moment(x * y, [x, y], [0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ProgramValueError):
        tg.gaussian_moment(th * x**2, [x], [0.0], [[1.0]])
    with pytest.raises(ProgramValueError):
        tg.gaussian_moment(x**2, [x, y], [0.0], [[1.0]])


# --------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------

PAIR_CASES = [
    (0.7, 0.3, 1.3),  # generic, rho > 0
    (1.2, -0.9, 0.9),  # generic, rho < 0
    (0.8, 0.8, 0.8),  # the square E phi(u)^2
    (0.5, 1.0, 2.0),  # rho = +1 with different variances
    (1.0, -1.5, 2.25),  # rho = -1
    (0.0, 0.0, 0.8),  # u = 0
    (0.6, 0.0, 0.0),  # v = 0
    (0.0, 0.0, 0.0),
]

REQUIRED_PAIRS = [
    ("relu", "relu"),
    ("step", "step"),
    ("relu", "step"),
    ("step", "relu"),
    ("erf", "erf"),
    ("derf", "derf"),
    ("sign", "sign"),
    ("abs", "abs"),
    ("sin", "sin"),
    ("cos", "cos"),
    ("sin", "cos"),
    ("cos", "sin"),
    ("exp", "exp"),
    ("identity", "identity"),
]


#: The builtin nonlinearity objects the registries are keyed by, named as in PHI.
NL = {
    "identity": tp.identity,
    "relu": tp.relu,
    "step": tp.step,
    "sign": tp.sign,
    "abs": tp.abs,
    "erf": tp.erf,
    "derf": tp.erf.derivative(),
    "sin": tp.sin,
    "cos": tp.cos,
    "exp": tp.exp,
}
NAME = {fn: name for name, fn in NL.items()}
#: the registered builtin pairs, by name (user registrations elsewhere are left out)
BUILTIN_PAIRS = sorted(
    (NAME[a], NAME[b]) for a, b in tg.PAIR_CLOSED_FORMS if a in NAME and b in NAME
)


def test_tables_cover_required_names():
    assert {NAME.get(fn) for fn in tg.SINGLE_CLOSED_FORMS} >= set(PHI)
    for a, b in REQUIRED_PAIRS:
        assert (NL[a], NL[b]) in tg.PAIR_CLOSED_FORMS
    for a, b in tg.PAIR_CLOSED_FORMS:
        assert (b, a) in tg.PAIR_CLOSED_FORMS
    assert all(a in PHI and b in PHI for a, b in BUILTIN_PAIRS) and len(BUILTIN_PAIRS) == 48
    for fn in ("relu_relu", "step_step", "relu_step", "erf_erf", "derf_derf", "sign_sign"):
        a, b = fn.split("_")
        assert tg.pair_form(NL[a], NL[b]) is getattr(tg, fn)
    for name in PHI:
        assert tg.mean_form(NL[name]) is getattr(tg, f"mean_{name}")
        assert tg.has_closed_form(NL[name])
    assert not tg.has_closed_form(tp.tanh) and tg.mean_form(tp.tanh) is None
    assert tg.pair_form(tp.relu, tp.tanh) is None


def test_registration_refuses_what_is_not_a_one_variable_nonlinearity():
    with pytest.raises(tp.ProgramTypeError, match="expected a tp.Nonlinearity"):
        tg.pair_closed_form("relu", tp.relu)
    x, y = sympy.symbols("x y", real=True)
    two = tp.Nonlinearity("prod", x * y, [x, y])
    with pytest.raises(tp.ProgramValueError, match="takes 2 vector argument"):
        tg.mean_closed_form(two)
    with pytest.raises(tp.ProgramValueError, match="already registered"):
        tg.pair_closed_form(tp.relu, tp.relu)(lambda k11, k12, k22: 0.0)


@pytest.mark.parametrize("key", BUILTIN_PAIRS, ids="-".join)
def test_pair_closed_form_matches_quadrature(key):
    fn = tg.PAIR_CLOSED_FORMS[NL[key[0]], NL[key[1]]]
    k11, k12, k22 = (np.array(col) for col in zip(*PAIR_CASES, strict=True))
    got = fn(k11, k12, k22)  # vectorised over all cases at once
    ref = [ref_pair(PHI[key[0]], PHI[key[1]], *case) for case in PAIR_CASES]
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-12)
    # scalar input gives a scalar
    assert np.ndim(fn(*PAIR_CASES[0])) == 0


@pytest.mark.parametrize("name", sorted(PHI))
def test_single_closed_form_matches_quadrature(name):
    ks = np.array([0.0, 0.3, 1.0, 2.5])
    got = tg.SINGLE_CLOSED_FORMS[NL[name]](ks)
    ref = [ref_1d(lambda a, k=k: PHI[name](math.sqrt(k) * a)) for k in ks]
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-12)


def test_closed_form_conventions_and_known_values():
    # step(0) = 1/2 (sympy's Heaviside(0)) and relu(0) = 0 for zero variance
    assert tg.mean_step(0.0) == 0.5 and tg.mean_step(2.0) == 0.5
    assert sympy.Heaviside(0) == sympy.Rational(1, 2)
    assert tg.step_step(0.0, 0.0, 0.0) == 0.25
    assert tg.step_step(0.0, 0.0, 1.0) == 0.25
    assert tg.relu_relu(0.0, 0.0, 3.0) == 0.0
    assert tg.mean_relu(0.0) == 0.0 and tg.sign_sign(0.0, 0.0, 1.0) == 0.0
    # diagonals: E relu^2 = k/2, E step^2 = 1/2, E |u|^2 = k, E sign^2 = 1
    for k in (0.3, 2.0):
        assert tg.relu_relu(k, k, k) == pytest.approx(k / 2, rel=1e-14)
        assert tg.step_step(k, k, k) == pytest.approx(0.5, rel=1e-14)
        assert tg.abs_abs(k, k, k) == pytest.approx(k, rel=1e-14)
        assert tg.sign_sign(k, k, k) == pytest.approx(1.0, rel=1e-14)
        assert tg.identity_identity(k, -k, k) == pytest.approx(-k, rel=1e-14)
    # THEORY.md §10.4 hand check: relu, K = 0.5 on the diagonal gives Sigma = 0.25
    assert tg.relu_relu(0.5, 0.5, 0.5) == pytest.approx(0.25, rel=1e-14)
    # rho slightly beyond 1 by rounding is clipped, not NaN
    assert np.isfinite(tg.relu_relu(1.0, 1.0 + 1e-13, 1.0))


def test_registered_closed_form_is_used_by_the_exact_engine():
    """One decorated function per form makes a user's nonlinearity exact in limits.

    bump(x) = exp(-x²/2): 𝔼 bump(u) bump(v) = det(I + K)^(-1/2) and 𝔼 bump(u) =
    (1 + k)^(-1/2) (Gaussian integrals); the reference is Gauss-Hermite written here
    (the integrand is entire and decays: 60 nodes per axis reach rounding)."""
    x = sympy.Symbol("x", real=True)
    bump = tp.Nonlinearity("bump", sympy.exp(-(x**2) / 2), [x])
    p = tp.Program("bump")
    K0 = np.array([[1.0, 0.3], [0.3, 0.5]])
    xa, xb = p.vectors("x", cov=K0)
    W = p.matrix("W", var=2.0)
    ha, hb = W @ xa, W @ xb
    tp.inner(bump(ha), bump(hb), name="k")
    tp.mean(bump(ha), name="m")
    K = 2.0 * K0  # covariance of (Z^ha, Z^hb)
    ref_k = gh_reference(lambda z: np.exp(-(z[:, 0] ** 2 + z[:, 1] ** 2) / 2), [0.0, 0.0], K, 60)
    ref_m = gh_reference(lambda z: np.exp(-(z[:, 0] ** 2) / 2), [0.0], K[:1, :1], 60)
    with pytest.raises(tp.MethodUnavailableError):
        p.limit(method="exact")
    before = p.limit()  # (this also fills the engine's caches for bump's integrands)
    assert before.method("k") == "quadrature"
    assert before["k"] == pytest.approx(ref_k, rel=1e-7)  # the engine's quadrature target

    @tg.pair_closed_form(bump, bump)
    def bump_bump(k11, k12, k22):
        return 1.0 / np.sqrt((1.0 + k11) * (1.0 + k22) - k12**2)

    @tg.mean_closed_form(bump)
    def mean_bump(k):
        return 1.0 / np.sqrt(1.0 + k)

    lim = p.limit(method="exact")
    assert lim.method("k") == lim.method("m") == "exact"
    assert lim["k"] == pytest.approx(ref_k, rel=1e-13)
    assert lim["m"] == pytest.approx(ref_m, rel=1e-13)
    assert tg.pair_form(bump, bump) is bump_bump and tg.mean_form(bump) is mean_bump


def test_closed_forms_broadcast():
    k11 = np.array([[0.5], [1.0], [2.0]])
    k22 = np.array([[0.7, 1.1, 0.2, 3.0]])
    k12 = 0.3 * np.sqrt(k11 * k22)
    out = tg.erf_erf(k11, k12, k22)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[2, 1], tg.erf_erf(2.0, k12[2, 1], 1.1), rtol=1e-15)


def test_closed_forms_against_dblquad():
    k11, k12, k22 = 0.9, 0.5, 1.4
    c = [[k11, k12], [k12, k22]]
    ref = dblquad_expect(lambda u, v: u * v, [0, 0], c, lo=0.0)  # positive quadrant
    np.testing.assert_allclose(tg.relu_relu(k11, k12, k22), ref, rtol=1e-8)
    ref = dblquad_expect(lambda u, v: math.erf(u) * math.erf(v), [0, 0], c)
    np.testing.assert_allclose(tg.erf_erf(k11, k12, k22), ref, rtol=1e-8)


def test_closed_forms_monte_carlo():
    rng = np.random.default_rng(6)
    k11, k12, k22 = 1.1, -0.4, 0.6
    uv = rng.multivariate_normal([0, 0], [[k11, k12], [k12, k22]], size=400_000)
    u, v = uv[:, 0], uv[:, 1]
    mc_check(np.maximum(u, 0) * np.maximum(v, 0), tg.relu_relu(k11, k12, k22))
    mc_check(special.erf(u) * special.erf(v), tg.erf_erf(k11, k12, k22))
    mc_check(np.maximum(u, 0) * (v > 0), tg.relu_step(k11, k12, k22))


def test_closed_forms_reject_bad_covariances():
    with pytest.raises(NonPSDError, match="positive semidefinite"):
        tg.relu_relu(1.0, 2.0, 1.0)
    with pytest.raises(NonPSDError):
        tg.erf_erf(np.array([1.0, -1.0]), 0.0, 1.0)
    with pytest.raises(NonPSDError):
        tg.mean_relu(-0.5)
    with pytest.raises(NumericalError):
        tg.step_step(np.nan, 0.0, 1.0)
    with pytest.raises(NumericalError):
        tg.exp_exp(800.0, 800.0, 800.0)
    # huge but PSD: cos_cos must not produce inf * 0
    assert tg.cos_cos(1e3, 1e3, 1e3) == pytest.approx(0.5 * (1 + math.exp(-2e3)))


def test_moment_table_matches_gauss_hermite_in_the_test():
    """The batched Stein recursion (the engine's exact Wick evaluator) against a tensor
    Gauss–Hermite rule in the whitened coordinates, exact for these degrees."""
    rng = np.random.default_rng(3)
    B, k = 5, 3
    A = rng.normal(size=(B, k, k))
    cov = A @ np.swapaxes(A, 1, 2) / k
    mean = rng.normal(size=(B, k))
    x, w = hermegauss(8)  # exact for degree ≤ 15 in each coordinate
    w = w / w.sum()
    Z = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, k)
    W = np.prod(np.stack(np.meshgrid(w, w, w, indexing="ij"), -1).reshape(-1, k), axis=1)
    table = tg.moment_table(mean, cov)
    for a in [(4, 0, 0), (1, 1, 0), (2, 1, 3), (3, 3, 1), (0, 0, 0)]:
        ref = np.empty(B)
        for b in range(B):
            X = mean[b] + Z @ np.linalg.cholesky(cov[b]).T
            ref[b] = W @ np.prod(X ** np.array(a), axis=1)
        got = np.broadcast_to(table(a), (B,))
        assert np.allclose(got, ref, rtol=1e-11, atol=1e-12), (a, got, ref)
