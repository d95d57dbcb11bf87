"""Tests of the finite-width simulator (:func:`tensorprog.simulate`).

Issue "Foundation" acceptance, part 3 (and the simulate-argument errors of part 2).

Every reference is computed here with numpy/scipy from the simulator's own draws of
the initial vectors (deterministic checks), or from theory (statistical checks):

* ``A`` square with entries ``N(0, σ_A²/n)``, ``v`` with ``N(0, 1)`` coordinates
  (THEORY §2.2, §10.5): ``E[vᵀAᵀAv/n] = σ_A²`` *exactly* at every n (so the seed mean
  has no bias), and ``lim ‖AᵀAv‖²/n = 2σ_A⁴``; at finite n the Wishart identity
  ``E[(AᵀA)²] = σ_A⁴ (2 + 1/n) I`` gives a bias of ``σ_A⁴/n`` (0.01 at n=400), a few
  percent of the standard error used below.
* ``x = tanh(Wᵀy)``, ``σ_W² = 2``: ``lim yᵀWx/n = σ_W² E tanh'(√2 G)``, computed here by
  scipy quadrature (= 0.960049; THEORY §10.5 rounds it to 0.9603).

Statistical tolerances are 4 across-seed standard errors (or, for sample covariances of
Gaussians, 4 × ``sqrt((K_ii K_jj + K_ij²)/n)``); seeds are fixed, so the tests are
deterministic, and the bounds are not tuned to the draws.
"""

from __future__ import annotations

import math
import tracemalloc
import types

import numpy as np
import pytest
import sympy
from scipy import integrate, special, stats

import tensorprog as tp

U = np.finfo(float).eps / 2  # unit roundoff
NSE = 4.0  # number of standard errors allowed in statistical checks


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(np.abs(a - b) <= rtol * (1.0 + np.abs(b))))


# --------------------------------------------------------------------------------------
# Basic API of a Simulation
# --------------------------------------------------------------------------------------


def _atav(var=2.0):
    p = tp.Program("AtAv")
    A = p.matrix("A", var=var)
    v = p.vector("v")
    y = A.matmul(v, name="y")
    x = A.T.matmul(y, name="x")
    k1 = tp.inner(v, x, name="k1")  # -> σ²
    k2 = tp.inner(x, x, name="k2")  # -> 2σ⁴
    return p, (v, y, x, k1, k2)


def test_simulation_lookup_api():
    p, (v, y, x, k1, k2) = _atav()
    sim = p.simulate(n=50, seed=3)
    assert sim.n == 50
    assert isinstance(sim[k1], float)
    assert sim[k1] == sim["k1"] == sim.scalar(k1)
    xv = sim.vector(x)
    assert isinstance(xv, np.ndarray) and xv.shape == (50,) and xv.dtype == np.float64
    np.testing.assert_array_equal(sim[x], xv)
    np.testing.assert_array_equal(sim.vector("x"), xv)
    assert set(sim.scalars) == {"k1", "k2"}
    with pytest.raises(tp.ProgramTypeError):
        sim["A"]  # matrices are not looked up
    with pytest.raises(tp.ProgramTypeError):
        sim.vector(k1)
    with pytest.raises(tp.ProgramTypeError):
        sim.scalar(x)
    with pytest.raises(tp.UnknownNameError):
        sim["nope"]
    q = tp.Program("Q")
    xq = q.vector("x")
    with pytest.raises(tp.ForeignHandleError):
        sim[xq]
    # the function form is the same thing
    sim2 = tp.simulate(p, 50, seed=3)
    assert sim2[k1] == sim[k1] and sim2[k2] == sim[k2]


# --------------------------------------------------------------------------------------
# (c) Deterministic: Nonlins and Moments recomputed with numpy from the initial draws
# --------------------------------------------------------------------------------------

# The same expression is evaluated with the DSL (L = tp) and with numpy (L = NP).
NP = types.SimpleNamespace(
    relu=lambda a: np.maximum(a, 0.0),
    tanh=np.tanh,
    erf=special.erf,
    sigmoid=special.expit,
    gelu=lambda a: a * stats.norm.cdf(a),
    sin=np.sin,
    cos=np.cos,
    abs=np.abs,
    step=lambda a: np.heaviside(a, 0.5),
    identity=lambda a: a,
    sqrt=np.sqrt,
    exp=np.exp,
    mean=np.mean,
    inner=lambda a, b: np.mean(a * b),
)

# (label, expr(x, y, c, r, L)); x, y: initial vectors, c = 0.7, r = n^{-1/2}
DET = [
    ("x+y", lambda x, y, c, r, L: x + y),
    ("x-y", lambda x, y, c, r, L: x - y),
    ("x*y", lambda x, y, c, r, L: x * y),
    ("x/(|y|+.5)", lambda x, y, c, r, L: x / (L.abs(y) + 0.5)),
    ("(|x|+.1)**y", lambda x, y, c, r, L: (L.abs(x) + 0.1) ** y),
    ("x+c", lambda x, y, c, r, L: x + c),
    ("c-x", lambda x, y, c, r, L: c - x),
    ("x*c", lambda x, y, c, r, L: x * c),
    ("x/c", lambda x, y, c, r, L: x / c),
    ("c/(|x|+1)", lambda x, y, c, r, L: c / (L.abs(x) + 1)),
    ("(|x|+.1)**c", lambda x, y, c, r, L: (L.abs(x) + 0.1) ** c),
    ("c**x", lambda x, y, c, r, L: c**x),
    ("x+2.5", lambda x, y, c, r, L: x + 2.5),
    ("3-x", lambda x, y, c, r, L: 3 - x),
    ("1.5*x", lambda x, y, c, r, L: 1.5 * x),
    ("x/4", lambda x, y, c, r, L: x / 4),
    ("2/(x*x+1)", lambda x, y, c, r, L: 2 / (x * x + 1)),
    ("x**2", lambda x, y, c, r, L: x**2),
    ("x**3", lambda x, y, c, r, L: x**3),
    ("2**x", lambda x, y, c, r, L: 2**x),
    ("-x", lambda x, y, c, r, L: -x),
    ("r*x", lambda x, y, c, r, L: r * x),
    ("relu", lambda x, y, c, r, L: L.relu(x)),
    ("tanh", lambda x, y, c, r, L: L.tanh(x)),
    ("erf", lambda x, y, c, r, L: L.erf(x)),
    ("sigmoid", lambda x, y, c, r, L: L.sigmoid(x)),
    ("gelu", lambda x, y, c, r, L: L.gelu(x)),
    ("sin", lambda x, y, c, r, L: L.sin(x)),
    ("cos", lambda x, y, c, r, L: L.cos(x)),
    ("abs", lambda x, y, c, r, L: L.abs(x)),
    ("step", lambda x, y, c, r, L: L.step(x)),
    ("identity", lambda x, y, c, r, L: L.identity(x)),
    ("sqrt", lambda x, y, c, r, L: L.sqrt(L.abs(x))),
    ("exp", lambda x, y, c, r, L: L.exp(x)),
    ("composite", lambda x, y, c, r, L: L.relu(x) * L.tanh(y) + c * L.gelu(x - y)),
    # Moments and scalar arithmetic
    ("mean(tanh(x)^2 y)", lambda x, y, c, r, L: L.mean(L.tanh(x) ** 2 * y)),
    ("inner(x,y)", lambda x, y, c, r, L: L.inner(x, y)),
    ("mean(x)", lambda x, y, c, r, L: L.mean(x)),
    ("mean(relu(x)^2)", lambda x, y, c, r, L: L.mean(L.relu(x) ** 2)),
    ("mean(x)*c-r", lambda x, y, c, r, L: L.mean(x) * c - r),
    ("sqrt(inner(x,x))", lambda x, y, c, r, L: L.sqrt(L.inner(x, x))),
    ("(mean(x*x)+c)**2", lambda x, y, c, r, L: (L.mean(x * x) + c) ** 2),
    ("-mean(y)", lambda x, y, c, r, L: -L.mean(y)),
    ("2/inner(x,x)", lambda x, y, c, r, L: 2 / L.inner(x, x)),
    ("c**2+r", lambda x, y, c, r, L: c**2 + r),
    ("c/r", lambda x, y, c, r, L: c / r),
    ("LayerNorm", lambda x, y, c, r, L: (x - L.mean(x)) / L.sqrt(L.mean((x - L.mean(x)) ** 2))),
]

N_DET = 500
C_VAL = 0.7


@pytest.fixture(scope="module")
def det_sim():
    p = tp.Program("det")
    x, y = p.vectors("z", cov=[[1.0, 0.4], [0.4, 2.0]], mean=[0.2, -0.1])
    c = p.scalar("c", C_VAL)
    r = p.scalar("r", tp.n**-0.5)
    outs = {label: f(x, y, c, r, tp) for label, f in DET}
    phi = tp.nonlin(lambda a, b, s: a * sympy.tanh(b) * s, x, y, c, name="phi")
    outs["custom phi"] = phi
    outs["mean(phi*x)"] = tp.mean(phi * x)
    sim = p.simulate(N_DET, seed=11)
    return sim, x, y, outs


@pytest.mark.parametrize("label", [d[0] for d in DET])
def test_finite_width_values_equal_numpy_recomputation(det_sim, label):
    sim, x, y, outs = det_sim
    a, b = sim.vector(x), sim.vector(y)
    ref = dict(DET)[label](a, b, C_VAL, 1.0 / math.sqrt(N_DET), NP)
    h = outs[label]
    got = sim.vector(h) if isinstance(h, tp.Vector) else sim.scalar(h)
    assert np.shape(got) == np.shape(ref)
    assert _close(got, ref), np.max(np.abs(np.asarray(got) - ref))


def test_custom_nonlin_with_parameter_at_finite_width(det_sim):
    sim, x, y, outs = det_sim
    a, b = sim.vector(x), sim.vector(y)
    want = a * np.tanh(b) * C_VAL
    assert _close(sim.vector(outs["custom phi"]), want)
    assert _close(sim.scalar(outs["mean(phi*x)"]), np.mean(want * a))


def test_initial_vectors_have_not_been_overwritten(det_sim):
    sim, x, y, outs = det_sim
    np.testing.assert_array_equal(sim.vector(outs["identity"]), sim.vector(x))


# --------------------------------------------------------------------------------------
# Deterministic MatMul identities (W shared between W· and Wᵀ·, linearity)
# --------------------------------------------------------------------------------------


def test_matmul_identities_at_finite_width():
    n, var = 300, 2.0
    p = tp.Program("mm")
    W = p.matrix("W", var=var)
    x, y = p.vector("x"), p.vector("y", cov=None)
    Wx, Wy, Wxy = W @ x, W @ y, W @ (x + y)
    WTy = W.T @ y
    WTWx = W.T @ Wx
    Wx_again = W @ x
    sim = p.simulate(n, seed=5)
    xv, yv = sim.vector(x), sim.vector(y)
    rms = lambda a: math.sqrt(np.mean(a * a))  # noqa: E731
    # Rounding: a length-n dot product errs by <= γ_n Σ|a_i b_i| (γ_n ≈ n u); with the
    # matvec inside, the bilinear form yᵀWx/n errs by <= ~2γ_n rms(y)‖W‖_F rms(x), and
    # ‖W‖_F ≈ σ√n.
    tol = 4 * n * U * math.sqrt(var * n)
    # linearity: W(x + y) = Wx + Wy
    assert np.max(np.abs(sim.vector(Wxy) - sim.vector(Wx) - sim.vector(Wy))) <= tol * (
        rms(xv) + rms(yv)
    )
    # the same W in both directions: <y, Wx> = <Wᵀy, x>, and <x, WᵀWx> = ‖Wx‖²
    lhs = np.mean(yv * sim.vector(Wx))
    rhs = np.mean(sim.vector(WTy) * xv)
    assert abs(lhs - rhs) <= tol * rms(xv) * rms(yv)
    assert abs(np.mean(xv * sim.vector(WTWx)) - np.mean(sim.vector(Wx) ** 2)) <= (
        tol * rms(xv) * rms(sim.vector(Wx))
    )
    # the transpose really is the transpose (W is not symmetric)
    assert abs(np.mean(xv * sim.vector(Wy)) - lhs) > 1e3 * tol * rms(xv) * rms(yv)
    # the same matrix is used each time it appears
    np.testing.assert_allclose(sim.vector(Wx_again), sim.vector(Wx), rtol=0, atol=tol * rms(xv))


def test_two_matrices_are_different_draws():
    p = tp.Program("two")
    W, V = p.matrix("W"), p.matrix("V")
    x = p.vector("x")
    a, b = W @ x, V @ x
    sim = p.simulate(200, seed=0)
    # independent: their empirical correlation is O(n^{-1/2}), not 1
    r = np.corrcoef(sim.vector(a), sim.vector(b))[0, 1]
    assert abs(r) < NSE / math.sqrt(200)


# --------------------------------------------------------------------------------------
# (a) AᵀAv statistics, (b) n^{-1/2} convergence
# --------------------------------------------------------------------------------------


def test_atav_seed_means_match_the_limit():
    sigma2, n, S = 2.0, 400, 30
    p, (v, y, x, k1, k2) = _atav(sigma2)
    vals = np.array([[p.simulate(n, seed=s)[k] for k in (k1, k2)] for s in range(S)])
    mean = vals.mean(axis=0)
    se = vals.std(axis=0, ddof=1) / math.sqrt(S)
    assert abs(mean[0] - sigma2) <= NSE * se[0], (mean[0], se[0])
    assert abs(mean[1] - 2 * sigma2**2) <= NSE * se[1], (mean[1], se[1])


def test_atav_converges_like_inverse_sqrt_n():
    p, (v, y, x, k1, k2) = _atav(2.0)
    widths, S = [64, 256, 1024], 60
    rms = []
    for n in widths:
        err = np.array([p.simulate(n, seed=1000 + s)[k1] - 2.0 for s in range(S)])
        rms.append(math.sqrt(np.mean(err**2)))
    slope = np.polyfit(np.log(widths), np.log(rms), 1)[0]
    # The RMS of S draws has relative s.d. ≈ 1/√(2S) = 0.09, so the fitted slope has
    # s.d. ≈ 0.09·√(2/3)/ln 4 ≈ 0.05; [-0.8, -0.3] is -0.5 ± 4-6 s.d.
    assert -0.8 <= slope <= -0.3, (slope, rms)


# --------------------------------------------------------------------------------------
# (d) x = tanh(Wᵀy): Ż in action
# --------------------------------------------------------------------------------------


def _tanh_reference(sigma2=2.0):
    def integrand(z):
        return (1.0 - np.tanh(math.sqrt(sigma2) * z) ** 2) * stats.norm.pdf(z)

    val, abserr = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)
    return sigma2 * val


def test_tanh_transpose_seed_mean_matches_limit():
    ref = _tanh_reference(2.0)
    assert abs(ref - 0.9603) < 5e-4  # THEORY §10.5 (to its 4 printed digits, see above)
    p = tp.Program("tanhWTy")
    W = p.matrix("W", var=2.0)
    y = p.vector("y")
    x = tp.tanh(W.T @ y)
    k = tp.inner(y, W @ x, name="k")
    n, S = 1000, 20
    vals = np.array([p.simulate(n, seed=s)[k] for s in range(S)])
    se = vals.std(ddof=1) / math.sqrt(S)
    assert abs(vals.mean() - ref) <= NSE * se, (vals.mean(), ref, se)
    # Without the Ż correction the limit would be 0 (Wx independent of y): the data
    # exclude it by far.
    assert vals.mean() > 20 * se


# --------------------------------------------------------------------------------------
# (e) initial vectors: means and covariances
# --------------------------------------------------------------------------------------


def test_vectors_have_covariance_K_and_means():
    K = np.array([[1.0, 0.5, -0.3], [0.5, 2.0, 0.4], [-0.3, 0.4, 0.8]])
    mu = np.array([0.0, 1.5, -0.5])
    n = 20000
    p = tp.Program("K")
    xs = p.vectors("xi", cov=K, mean=mu)
    sim = p.simulate(n, seed=2)
    X = np.stack([sim.vector(x) for x in xs])  # B × n
    m = X.mean(axis=1)
    assert np.all(np.abs(m - mu) <= NSE * np.sqrt(np.diag(K) / n)), (m, mu)
    C = np.cov(X)
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / n)
    assert np.all(np.abs(C - K) <= NSE * se), (C, K)


def test_vector_with_cov_argument():
    n = 20000
    p = tp.Program("cov")
    x = p.vector("x", var=1.0)
    y = p.vector("y", mean=0.5, var=2.0, cov={x: 0.3})
    z = p.vector("z", var=0.5, cov={y: -0.2})  # uncorrelated with x
    sim = p.simulate(n, seed=4)
    X = np.stack([sim.vector(h) for h in (x, y, z)])
    K = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, -0.2], [0.0, -0.2, 0.5]])
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / n)
    assert np.all(np.abs(np.cov(X) - K) <= NSE * se)
    assert np.all(np.abs(X.mean(axis=1) - [0.0, 0.5, 0.0]) <= NSE * np.sqrt(np.diag(K) / n))


def test_singular_and_degenerate_initial_laws():
    p = tp.Program("sing")
    a, b = p.vectors("s", cov=[[1.0, 1.0], [1.0, 1.0]])  # a = b
    c = p.vector("c", mean=1.5, var=0.0)  # constant
    d = p.vector("d", var=4.0, cov={a: -2.0, b: -2.0})  # d = -2a
    n = 1000
    sim = p.simulate(n, seed=0)
    av = sim.vector(a)
    # A singular K is factored up to rounding: its eigen-decomposition carries
    # eigenvalues of size <= B u ‖K‖ on null directions, i.e. factor entries of size
    # <= sqrt(B u ‖K‖) there, so each coordinate of an exact linear relation holds up
    # to 2 B sqrt(B u ‖K‖) max|G| (|G| <= 5 for 4000 standard normals), times the
    # relation's coefficients.
    B, normK = 4, 6.0
    tol = 2 * B * math.sqrt(B * U * normK) * 5.0
    assert np.max(np.abs(sim.vector(b) - av)) <= tol
    assert np.max(np.abs(sim.vector(c) - 1.5)) <= tol
    assert np.max(np.abs(sim.vector(d) + 2 * av)) <= 3 * tol
    assert abs(np.std(av) - 1.0) <= NSE / math.sqrt(2 * n)


# --------------------------------------------------------------------------------------
# (f) reproducibility and seeds
# --------------------------------------------------------------------------------------


def _all_values(sim, p):
    out = {}
    for instr in p:
        v = instr.out
        if v.kind == "vector":
            out[v.name] = sim.vector(v.name)
        elif v.kind == "scalar":
            out[v.name] = np.array(sim.scalar(v.name))
    return out


def test_same_seed_is_bit_identical_and_different_seeds_differ():
    p, _ = _atav()
    p.vector("w", var=2.0)
    a, b, c = (_all_values(p.simulate(64, seed=s), p) for s in (7, 7, 8))
    for name in a:
        assert np.array_equal(a[name], b[name]), name
        assert not np.array_equal(a[name], c[name]), name


def test_numpy_generator_as_seed():
    p, (v, y, x, k1, k2) = _atav()
    s1 = p.simulate(64, seed=np.random.default_rng(42))
    s2 = p.simulate(64, seed=np.random.default_rng(42))
    assert s1[k1] == s2[k1]
    np.testing.assert_array_equal(s1.vector(x), s2.vector(x))
    # a Generator is consumed, not re-seeded: using it twice gives two different draws
    g = np.random.default_rng(42)
    assert p.simulate(64, seed=g)[k1] == s1[k1]
    assert p.simulate(64, seed=g)[k1] != s1[k1]
    # numpy integer seeds are ints
    assert p.simulate(64, seed=np.int64(3))[k1] == p.simulate(64, seed=3)[k1]


def test_default_seed_is_fixed():
    p, (v, y, x, k1, k2) = _atav()
    assert p.simulate(32)[k1] == p.simulate(32)[k1] == p.simulate(32, seed=0)[k1]


# --------------------------------------------------------------------------------------
# (g) memory guard
# --------------------------------------------------------------------------------------


def test_simulate_refuses_widths_that_do_not_fit():
    p = tp.Program("big")
    W, V = p.matrix("W"), p.matrix("V")
    x = p.vector("x")
    tp.mean(V @ (W @ x), name="k")
    # refused before allocating anything: one vector of width 10⁶ is 8 MB, and the
    # refusal allocates (as numpy reports to tracemalloc) under 1 MiB at its peak
    tracemalloc.start()
    try:
        with pytest.raises(tp.ResourceError) as info:
            p.simulate(10**6, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
    # (tracemalloc does see numpy's arrays: a width-400 run allocates its 1.3 MB matrices)
    tracemalloc.start()
    try:
        p.simulate(400, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak > 400 * 400 * 8, peak
    err = info.value
    assert isinstance(err, MemoryError) and isinstance(err, tp.TensorProgramError)
    msg = str(err)
    assert "GiB" in msg and "1000000" in msg
    with pytest.raises(tp.ResourceError, match="GiB"):
        p.simulate(100, seed=0, max_memory=1000)
    # and the same program fits when allowed enough memory
    assert np.isfinite(p.simulate(100, seed=0, max_memory=10**8)["k"])


# --------------------------------------------------------------------------------------
# (h) scalars depending on the width
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [16, 100, 400])
def test_width_dependent_scalars_are_evaluated_at_n(n):
    p = tp.Program("wd")
    x = p.vector("x")
    r = p.scalar("r", tp.n**-0.5)
    e = p.scalar("e", 1 + 3 / tp.n)
    q = p.scalar("q", sympy.log(tp.n) / tp.n)
    xr = x * r
    s = r * e
    sim = p.simulate(n, seed=1)
    assert sim[r] == pytest.approx(1 / math.sqrt(n), rel=4 * U)
    assert sim[e] == pytest.approx(1 + 3 / n, rel=4 * U)
    assert sim[q] == pytest.approx(math.log(n) / n, rel=4 * U)
    assert _close(sim.vector(xr), sim.vector(x) / math.sqrt(n), rtol=4 * U)
    assert sim[s] == pytest.approx((1 + 3 / n) / math.sqrt(n), rel=8 * U)


# --------------------------------------------------------------------------------------
# (i) NaN / inf at finite width
# --------------------------------------------------------------------------------------


def _nan_cases():
    def neg_sqrt():
        p = tp.Program("nan1")
        v = p.vector("v")
        tp.sqrt(-(v * v) - 1.0, name="root")
        return p, "root"

    def some_negative_sqrt():
        p = tp.Program("nan2")
        v = p.vector("v")
        tp.mean(tp.sqrt(v, name="half"), name="m")
        return p, "half"

    def overflow():
        p = tp.Program("inf1")
        v = p.vector("v")
        tp.mean(tp.exp(1000.0 * (v * v), name="big"))
        return p, "big"

    def zero_div_vector():
        p = tp.Program("inf2")
        v = p.vector("v")
        tp.nonlin(lambda a: 1 / a, v - v, name="recip")  # 1/0 coordinatewise
        return p, "recip"

    def scalar_sqrt():
        p = tp.Program("nan3")
        p.vector("v")
        z = p.scalar("z", 0.0)
        tp.sqrt(z - 1, name="sneg")
        return p, "sneg"

    def vec_div_zero_scalar():
        p = tp.Program("inf3")
        v = p.vector("v")
        z = p.scalar("z", 0.0)
        tp.nonlin(lambda a, s: a / s, v, z, name="vz")
        return p, "vz"

    return [
        neg_sqrt,
        some_negative_sqrt,
        overflow,
        zero_div_vector,
        scalar_sqrt,
        vec_div_zero_scalar,
    ]


@pytest.mark.parametrize("make", _nan_cases(), ids=lambda f: f.__name__)
def test_nan_or_inf_at_finite_width_raises_numerical_error(make):
    p, culprit = make()
    with pytest.raises(tp.NumericalError) as info:
        p.simulate(64, seed=0)
    err = info.value
    assert isinstance(err, ArithmeticError) and isinstance(err, tp.TensorProgramError)
    assert culprit in str(err), str(err)
    assert "n=64" in str(err)


def test_scalar_division_by_zero_is_a_numerical_error():
    p = tp.Program("z")
    v = p.vector("v")
    z = p.scalar("z", 0.0)
    _ = tp.mean(v, name="m") / z
    with pytest.raises(tp.NumericalError):
        p.simulate(16, seed=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda v: v / 0,
        lambda v: tp.nonlin(lambda a: 1 / (a - a), v, name="recip"),
    ],
    ids=["v/0", "nonlin 1/(a-a)"],
)
def test_non_finite_constant_body_is_a_tensorprog_error(build):
    p = tp.Program("zoo")
    v = p.vector("v")
    with pytest.raises(tp.TensorProgramError):  # at construction, check, or simulate
        build(v)
        p.check()
        p.simulate(8, seed=0)


def test_scalar_overflow_is_a_numerical_error():
    p = tp.Program("o")
    p.vector("v")
    c = p.scalar("c", 10.0)
    _ = c**1000
    with pytest.raises(tp.NumericalError):
        p.simulate(16, seed=0)


# --------------------------------------------------------------------------------------
# simulate() argument validation (issue part 2)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,cls,builtin",
    [
        (0, tp.ProgramValueError, ValueError),
        (-3, tp.ProgramValueError, ValueError),
        (2.5, tp.ProgramTypeError, TypeError),
        (True, tp.ProgramTypeError, TypeError),
        ("10", tp.ProgramTypeError, TypeError),
        (None, tp.ProgramTypeError, TypeError),
    ],
    ids=["0", "-3", "2.5", "True", "str", "None"],
)
def test_simulate_rejects_bad_width(n, cls, builtin):
    p, _ = _atav()
    with pytest.raises(cls) as info:
        p.simulate(n, seed=0)
    assert isinstance(info.value, builtin) and isinstance(info.value, tp.TensorProgramError)
    msg = str(info.value)
    assert "width n" in msg and repr(n) in msg, msg


@pytest.mark.parametrize(
    "seed,cls,builtin",
    [
        ("abc", tp.ProgramTypeError, TypeError),
        (1.5, tp.ProgramTypeError, TypeError),
        (True, tp.ProgramTypeError, TypeError),
        (-1, tp.ProgramValueError, ValueError),
    ],
    ids=["str", "float", "bool", "negative"],
)
def test_simulate_rejects_bad_seed(seed, cls, builtin):
    p, _ = _atav()
    with pytest.raises(cls) as info:
        p.simulate(8, seed=seed)
    assert isinstance(info.value, builtin) and isinstance(info.value, tp.TensorProgramError)
    msg = str(info.value)
    assert "seed" in msg and repr(seed) in msg, msg


def test_max_memory_cannot_exceed_what_the_process_may_allocate(monkeypatch):
    """An explicit max_memory may use the whole budget (not only the default 80%), but
    not more: beyond it the allocation would fail with a raw MemoryError (issue #13).
    Needs: 8·(n² + 4n) bytes (one matrix, two vectors + 2): 829,440 at n = 320 and
    1,048,320 at n = 360, against a budget of 10⁶ bytes."""
    import sys

    from tensorprog.core import _resources

    simulate_module = sys.modules["tensorprog.simulate"]  # (tp.simulate is the function)

    monkeypatch.setattr(
        simulate_module,
        "memory_budget",
        lambda: _resources.MemoryBudget(10**6, "RLIMIT_AS (ulimit -v)"),
    )
    p = tp.Program("m")
    W = p.matrix("W")
    tp.mean(W @ p.vector("x"), name="k")
    with pytest.raises(tp.ResourceError, match="80% of RLIMIT_AS"):
        p.simulate(320)
    assert np.isfinite(p.simulate(320, max_memory=10**6)["k"])
    with pytest.raises(tp.ResourceError, match="RLIMIT_AS") as info:
        p.simulate(360, max_memory=10**9)
    assert info.value.knob == "n" and info.value.limit == 10**6
    assert info.value.need == 8 * (360**2 + 4 * 360)
