"""Existence of expectations before evaluation (issue #13: non-existent expectations got
numbers), the change of measure for exp-polynomial integrands, and a fuzz test of the
existence decision against quadrature of |f| with growing cutoffs.

References are independent of the code under test: closed forms stated next to each
test, and scipy quadrature written here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sympy
from scipy import integrate, special

import tensorprog as tp
from tensorprog.engine.existence import Verdict, decide
from tensorprog.engine.symbols import g

TAN = tp.Nonlinearity(
    "tan", sympy.tan(sympy.Symbol("a", real=True)), [sympy.Symbol("a", real=True)]
)


def _limit(build, **kw):
    p = tp.Program("exist")
    k = build(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tp.UnreliableValueWarning)
        return p.limit(**kw), k


# -- the cases of the issue: each must be refused, in auto and in forced Monte Carlo -----
def _inv(p):
    return tp.mean(1 / p.vector("v"), name="k")


def _inv_hat(p):
    W, x = p.matrix("W"), p.vector("x")
    return tp.mean(1 / (W @ x), name="k")


def _cauchy(p):
    return tp.mean(p.vector("x") / p.vector("y"), name="k")


def _tan(p):
    return tp.mean(TAN(p.vector("v")), name="k")


def _inv_abs(p):
    return tp.mean(1 / tp.abs(p.vector("v")), name="k")


def _step_over(p):
    v = p.vector("v")
    return tp.mean(tp.step(v) / v, name="k")


def _cauchy_sq(p):
    x, y = p.vector("x"), p.vector("y")
    return tp.mean((x / y) ** 2, name="k")


def _inv_sq(p):
    return tp.mean(p.vector("v") ** -2, name="k")


def _inv_sum6(p):
    s = p.vector("a0")
    for i in range(1, 6):
        s = s + p.vector(f"a{i}")
    return tp.mean(1 / s, name="k")


def _exp_sq(var):
    def build(p):
        v = p.vector("v", var=var)
        return tp.mean(tp.exp(v * v), name="k")

    return build


DIVERGENT = {
    "1/v": _inv,
    "1/(Wx)": _inv_hat,
    "x/y": _cauchy,
    "tan": _tan,
    "1/|v|": _inv_abs,
    "step(v)/v": _step_over,
    "(x/y)^2": _cauchy_sq,
    "v^-2": _inv_sq,
    "1/sum6": _inv_sum6,
    "exp(v^2), Var 1": _exp_sq(1.0),
    "exp(v^2), Var 1/2": _exp_sq(0.5),
}


@pytest.mark.parametrize("method", ["auto", "montecarlo"])
@pytest.mark.parametrize("case", list(DIVERGENT))
def test_nonexistent_expectations_are_refused(case, method):
    if method == "montecarlo" and case == "1/(Wx)":
        pytest.skip("a hat's law is only known to Monte Carlo there (see the k̂ test)")
    with pytest.raises(tp.DivergenceError, match=r"does not exist.*\n.*while interpreting `k ="):
        _limit(DIVERGENT[case], method=method, samples=2**12)


def test_forced_quadrature_refuses_a_principal_value():
    with pytest.raises(tp.DivergenceError, match="does not exist"):
        _limit(_cauchy, method="quadrature")


def test_hat_pole_refused_by_tail_diagnostic_in_montecarlo():
    """In forced Monte Carlo the law of ``Ẑ^{Wx}`` is unknown before sampling; the samples
    of ``|Ẑ|^{-3/2}`` have a Pareto tail ``P(|Ẑ|^{-3/2} > t) ~ t^{-2/3}``, i.e. shape
    k = 3/2: refused by k̂."""

    def build(p):
        W, x = p.matrix("W"), p.vector("x")
        return tp.mean(tp.abs(W @ x) ** -1.5, name="k")

    with pytest.raises(tp.DivergenceError, match="k̂ = .* ≥ 1"):
        _limit(build, method="montecarlo", samples=2**14)


# -- expectations that exist get their value ----------------------------------------------
def test_exp_square_at_variance_049_is_computed():
    """𝔼 exp(v²) = 1/√(1 − 2·0.49) = √50 for v ~ N(0, 0.49): by quadrature after the change
    of measure (previously refused as an overflow), and by tilted Monte Carlo."""
    lim, k = _limit(_exp_sq(0.49))
    assert lim.method(k) == "quadrature" and lim.trusted(k)
    assert lim[k] == pytest.approx(math.sqrt(50), rel=1e-10)
    mc, k = _limit(_exp_sq(0.49), method="montecarlo", samples=2**12)
    assert abs(mc[k] - math.sqrt(50)) <= 5 * mc.stderr(k) + 1e-9 * math.sqrt(50)


def test_exp5v_montecarlo_is_calibrated():
    """𝔼 e^{5v} = e^{12.5} (previously 74844 ± 19190 by Monte Carlo, 10 s.e. off)."""

    def build(p):
        return tp.mean(tp.exp(5 * p.vector("v")), name="k")

    for qmc in (True, False):
        lim, k = _limit(build, method="montecarlo", qmc=qmc, samples=2**12)
        assert abs(lim[k] - math.exp(12.5)) <= 5 * lim.stderr(k) + 1e-9 * math.exp(12.5)


@pytest.mark.parametrize(
    "name, body, ref",
    [
        # 𝔼|Z|^p = 2^{p/2} Γ((p+1)/2)/√π, p = −1/2; its variance 𝔼|Z|^{-1} is infinite (k = 1/2):
        # the value is computed, and flagged (its standard error is only indicative)
        (
            "|v|^-1/2",
            lambda v: tp.abs(v) ** -0.5,
            2**-0.25 * special.gamma(0.25) / math.sqrt(math.pi),
        ),
        # 𝔼[sin Z/Z] = ∫₀¹ 𝔼 cos(tZ) dt = ∫₀¹ e^{−t²/2} dt
        (
            "sin(v)/v",
            lambda v: tp.sin(v) / v,
            math.sqrt(math.pi / 2) * special.erf(1 / math.sqrt(2)),
        ),
        # 𝔼 log|Z| = −(γ + log 2)/2
        (
            "log|v|",
            lambda v: tp.nonlin(lambda a: sympy.log(sympy.Abs(a)), v, name="logabs"),
            -(np.euler_gamma + math.log(2)) / 2,
        ),
    ],
)
def test_integrable_singularities_get_values(name, body, ref):
    lim, k = _limit(lambda p: tp.mean(body(p.vector("v")), name="k"), samples=2**16)
    assert lim.trusted(k) == (name != "|v|^-1/2"), lim.warnings
    tol = 6 * lim.stderr(k) if lim.method(k) == "montecarlo" else 1e-6
    assert abs(lim[k] - ref) <= tol


def test_degenerate_form_is_a_constant():
    """x = −y exactly: 1/(x + y) is infinite almost surely; 1/(x + y + 1) is 1."""

    def build(shift):
        def b(p):
            x = p.vector("x")
            y = p.vector("y", cov={x: -1.0})
            return tp.mean(1 / (x + y + shift), name="k")

        return b

    with pytest.raises(tp.DivergenceError, match="probability 1"):
        _limit(build(0.0))
    lim, k = _limit(build(1.0))
    assert lim[k] == pytest.approx(1.0)


def test_unproven_is_flagged_and_warned():
    """1/(v⁴ − v + 2): the zeros of an irreducible quartic are not analysed (it has none:
    existence is unproven, not refuted). The value
    is computed by Monte Carlo (never with stderr 0), flagged and warned about."""
    p = tp.Program("unproven")
    v = p.vector("v")
    k = tp.mean(1 / (v**4 - v + 2), name="k")
    with pytest.warns(tp.UnreliableValueWarning, match="existence not proven"):
        lim = p.limit(samples=2**14)
    assert not lim.trusted(k) and "existence not proven" in lim.warnings["k"]
    assert lim.method(k) == "montecarlo" and lim.stderr(k) > 0
    ref = integrate.quad(
        lambda u: np.exp(-u * u / 2) / math.sqrt(2 * math.pi) / (u**4 - u + 2), -np.inf, np.inf
    )[0]
    assert abs(lim[k] - ref) <= 6 * lim.stderr(k)
    assert "not trusted" in repr(lim)


def test_forced_quadrature_of_an_unproven_value_does_not_vouch_for_it():
    """method='quadrature' computes what it is asked to, but an unproven expectation gets
    no stderr of 0 and no finite error: NaN and inf, with the flag."""
    p = tp.Program("unproven_q")
    v = p.vector("v")
    k = tp.mean(1 / (v**4 - v + 2), name="k")
    with pytest.warns(tp.UnreliableValueWarning):
        lim = p.limit("quadrature")
    ref = integrate.quad(
        lambda u: np.exp(-u * u / 2) / math.sqrt(2 * math.pi) / (u**4 - u + 2), -np.inf, np.inf
    )[0]
    assert lim.method(k) == "quadrature" and abs(lim[k] - ref) <= 1e-9
    assert not lim.trusted(k)
    assert math.isnan(lim.stderr(k)) and lim.error(k) == math.inf
    assert math.isnan(lim.stderrs["k"])


def test_flag_propagates_to_dependents():
    p = tp.Program("prop")
    v = p.vector("v")
    a = tp.mean(1 / (v**4 - v + 2), name="a")
    b = tp.mean(a * v * v, name="b")
    with pytest.warns(tp.UnreliableValueWarning):
        lim = p.limit(samples=2**12)
    assert not lim.trusted(b) and "computed from a" in lim.warnings["b"]


def test_ordinary_programs_are_proven_and_unflagged():
    p = tp.Program("mlp")
    W, x = p.matrix("W"), p.vector("x")
    h = tp.tanh(W @ x)
    k1 = tp.mean(h * h, name="k1")
    k2 = tp.mean(tp.relu(W @ x) * tp.exp(0.5 * x), name="k2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", tp.UnreliableValueWarning)
        lim = p.limit()
    assert lim.trusted(k1) and lim.trusted(k2) and not lim.warnings


# -- the decision itself, on integrands over g0, g1 ---------------------------------------
@pytest.mark.parametrize(
    "expr, var, verdict",
    [
        (1 / g(0), 1.0, Verdict.DIVERGES),
        (sympy.Abs(g(0)) ** sympy.Rational(-1, 2), 1.0, Verdict.EXISTS),
        (sympy.sin(g(0)) / g(0), 1.0, Verdict.EXISTS),
        (sympy.tan(g(0)) * sympy.cos(g(0)), 1.0, Verdict.EXISTS),
        (sympy.exp(g(0) ** 2), 0.49, Verdict.EXISTS),
        (sympy.exp(g(0) ** 2), 0.5, Verdict.DIVERGES),
        # at Var 1/2 the density cancels exp(u²) exactly and ∫ du/(1 + u²) is finite: the
        # boundary case is left unproven (|f|·density ~ r^-2 along the ray), never refused
        (sympy.exp(g(0) ** 2) / (1 + g(0) ** 2), 0.5, Verdict.UNPROVEN),
        (sympy.exp(-(g(0) ** 2)) * sympy.exp(g(0) ** 2 / 2), 4.0, Verdict.EXISTS),
        (1 / (1 + sympy.exp(-g(0))), 1.0, Verdict.EXISTS),
        (1 / sympy.tanh(g(0)), 1.0, Verdict.DIVERGES),
    ],
)
def test_decide_1d(expr, var, verdict):
    got = decide(expr, 1, 0, np.zeros((1, 1)), np.full((1, 1, 1), var), np.zeros((1, 0)))[0]
    assert got.verdict == verdict, got.reason


@pytest.mark.parametrize(
    "expr, cov, verdict",
    [
        (1 / (g(0) ** 2 + g(1) ** 2), np.eye(2), Verdict.DIVERGES),  # ∫ r^-2 r dr
        (1 / sympy.sqrt(g(0) ** 2 + g(1) ** 2), np.eye(2), Verdict.EXISTS),
        (g(0) / g(1), [[1, 0.5], [0.5, 1]], Verdict.DIVERGES),
        (1 / (g(0) - g(1)), [[1, 1], [1, 1]], Verdict.DIVERGES),  # 0 almost surely
        (sympy.exp(g(0) * g(1)), np.eye(2), Verdict.DIVERGES),  # 𝔼_w e^{w²/2}
        (sympy.exp(g(0) * g(1) / 2), np.eye(2), Verdict.EXISTS),  # 1/√(1 − 1/4)
    ],
)
def test_decide_2d(expr, cov, verdict):
    got = decide(expr, 2, 0, np.zeros((1, 2)), np.asarray(cov, float)[None], np.zeros((1, 0)))[0]
    assert got.verdict == verdict, got.reason


# -- fuzzing: the decision against quadrature of |f| with growing cutoffs ---------------
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Factors of the grammar: (sympy builder of u, numpy log|·| of u, singular points).
_FACTORS = {
    "pow": (lambda n: (lambda u: u**n, lambda x: n * np.log(np.abs(x)), [])),
    "pole": (
        lambda a, k: (lambda u: (u - a) ** -k, lambda x: -k * np.log(np.abs(x - float(a))), [a])
    ),
    "abspow": (
        lambda a, p: (
            lambda u: sympy.Abs(u - a) ** -sympy.Rational(p),
            lambda x: -float(sympy.Rational(p)) * np.log(np.abs(x - float(a))),
            [a],
        )
    ),
    "expq": (
        lambda c: (
            lambda u: sympy.exp(sympy.Rational(c) * u**2),
            lambda x: float(sympy.Rational(c)) * x * x,
            [],
        )
    ),
    "expl": (lambda b: (lambda u: sympy.exp(b * u), lambda x: b * x, [])),
    "tan": (lambda: (lambda u: sympy.tan(u), lambda x: np.log(np.abs(np.tan(x))), "tan")),
    "log": (
        lambda a: (
            lambda u: sympy.log(sympy.Abs(u - a)),
            lambda x: np.log(np.abs(np.log(np.abs(x - float(a))))),
            [a],
        )
    ),
    "relu": (lambda: (lambda u: tp.relu.function(u), lambda x: np.log(np.maximum(x, 0.0)), [])),
    "tanh": (lambda: (lambda u: tp.tanh.function(u), lambda x: np.log(np.abs(np.tanh(x))), [])),
}

_factor = st.one_of(
    st.tuples(st.just("pow"), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("pole"), st.sampled_from([0, sympy.Rational(1, 2)]), st.sampled_from([1, 2])),
    st.tuples(
        st.just("abspow"),
        st.sampled_from([0, sympy.Rational(1, 2)]),
        st.sampled_from(["3/10", "1/2", "1", "3/2"]),
    ),
    st.tuples(st.just("expq"), st.sampled_from(["-3/10", "1/10", "3/10", "3/5", "1"])),
    st.tuples(st.just("expl"), st.sampled_from([-2, 1, 3])),
    st.tuples(st.just("tan")),
    st.tuples(st.just("log"), st.sampled_from([0, sympy.Rational(1, 2)])),
    st.tuples(st.just("relu")),
    st.tuples(st.just("tanh")),
)


def _build(spec):
    return _FACTORS[spec[0]](*spec[1:])


def _rule(lo, hi, pts, eps, step, ratio, n):
    """Gauss–Legendre nodes and weights on ``[lo, hi]`` minus ``ε``-neighbourhoods of
    ``pts``: segments of a grid of spacing ``step`` plus geometric ones (ratio ``ratio``)
    towards every point, so that each segment is smooth relative to its length."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    brk = set(np.linspace(lo, hi, int((hi - lo) / step) + 1).tolist())
    geo = 10.0 ** np.arange(math.log10(eps), 0.01, math.log10(ratio))
    for x in pts:
        brk.update((x - geo).tolist() + (x + geo).tolist())
    brk = np.array(
        sorted(y for y in brk if lo <= y <= hi and all(abs(y - x) >= eps * 0.999 for x in pts))
    )
    a, b = brk[:-1], brk[1:]
    keep = np.ones(len(a), dtype=bool)
    for x in pts:  # drop the segments that straddle a cut-out neighbourhood
        keep &= ~((a < x) & (b > x))
    a, b = a[keep], b[keep]
    xs = (a[:, None] + b[:, None]) / 2 + (b - a)[:, None] / 2 * nodes[None]
    return xs.ravel(), ((b - a)[:, None] / 2 * weights[None]).ravel()


def _stages_diverge(vals):
    """From the integrals at the four stages: the last increment stays ≥ half the previous
    one (divergent: log-divergent integrals grow by a constant per stage, worse ones
    faster) or falls below a fifth of it (convergent: |u|^{-1/2} falls by 10 per stage,
    Gaussian tails far faster); None when neither (too close to call: skipped)."""
    if any(not np.isfinite(v) for v in vals):
        return True
    d2, d3 = vals[2] - vals[1], vals[3] - vals[2]
    if d3 <= 1e-10 * max(1.0, vals[3]) or d3 < 0.2 * d2:
        return False
    if d3 >= 0.5 * d2 and d3 > 1e-8:
        return True
    return None


def _reference_diverges(logf, points, mu, sd, tan):
    """Whether ∫ |f| dN(μ, σ²) diverges, from quadrature over ``|u − μ| < R`` minus
    ``ε``-neighbourhoods of the singular points, at ``(ε, R) = (10^{-2-2s}, (5 + 5s)σ)``,
    ``s = 0…3`` (:func:`_stages_diverge`)."""
    vals = []
    for s in range(4):
        eps, R = 10.0 ** (-2 - 2 * s), (5 + 5 * s) * sd
        lo, hi = mu - R, mu + R
        pts = [float(a) for a in points]
        if tan:
            j0, j1 = (
                math.floor((lo - math.pi / 2) / math.pi),
                math.ceil((hi - math.pi / 2) / math.pi),
            )
            pts += [math.pi / 2 + j * math.pi for j in range(j0, j1 + 1)]
        pts = sorted(x for x in set(pts) if lo < x < hi)
        xs, ws = _rule(lo, hi, pts, eps, sd / 8, math.sqrt(10), 24)
        with np.errstate(all="ignore"):
            dens = np.exp(logf(xs) - (xs - mu) ** 2 / (2 * sd * sd)) / (sd * math.sqrt(2 * math.pi))
        vals.append(float(np.sum(dens * ws)))
    return _stages_diverge(vals)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    specs=st.lists(_factor, min_size=1, max_size=2),
    mu=st.sampled_from([0.0, 0.3]),
    sd=st.sampled_from([0.5, 1.0, 1.5]),
)
def test_fuzz_existence_1d(specs, mu, sd):
    u = g(0)
    built = [_build(s) for s in specs]
    expr = sympy.Mul(*[b[0](u) for b in built])
    assume(expr.has(u) and not expr.has(sympy.zoo, sympy.nan))
    points = [p for b in built if b[2] != "tan" for p in b[2]]
    tan = any(b[2] == "tan" for b in built)

    def logf(x):
        with np.errstate(all="ignore"):
            return sum(b[1](x) for b in built)

    ref = _reference_diverges(logf, points, mu, sd, tan)
    assume(ref is not None)
    got = decide(expr, 1, 0, np.full((1, 1), mu), np.full((1, 1, 1), sd * sd), np.zeros((1, 0)))[0]
    if ref:
        assert got.verdict != Verdict.EXISTS, (expr, mu, sd)
    else:
        assert got.verdict != Verdict.DIVERGES, (expr, mu, sd, got.reason)


_factor2 = st.one_of(
    st.tuples(st.just("pow"), st.sampled_from([1, 2])),
    st.tuples(st.just("pole"), st.sampled_from([0, sympy.Rational(1, 2)]), st.sampled_from([1, 2])),
    st.tuples(st.just("abspow"), st.sampled_from([0]), st.sampled_from(["1/2", "1", "3/2"])),
    st.tuples(st.just("expq"), st.sampled_from(["-3/10", "1/10", "1/5", "3/5"])),
    st.tuples(st.just("expl"), st.sampled_from([-1, 2])),
    st.tuples(st.just("relu")),
    st.tuples(st.just("tanh")),
)


def _reference_diverges_2d(logA, logB, pA, pB, C):
    """As :func:`_reference_diverges`, in 2-D: ``∫∫ |A(s) B(t)| dN(0, C)`` over the box
    ``|s|, |t| < R`` minus ``ε``-strips around the singular lines (tensor rules)."""
    Ci = np.linalg.inv(C)
    norm = 1 / (2 * math.pi * math.sqrt(np.linalg.det(C)))
    vals = []
    for s in range(4):
        eps = 10.0 ** (-2 - 2 * s)
        (xs, wx), (ys, wy) = [
            _rule(-(5 + 4 * s) * sd, (5 + 4 * s) * sd, pts, eps, sd / 2, 10.0, 8)
            for pts, sd in ((pA, math.sqrt(C[0, 0])), (pB, math.sqrt(C[1, 1])))
        ]
        S, T = np.meshgrid(xs, ys, indexing="ij")
        with np.errstate(all="ignore"):
            q = Ci[0, 0] * S * S + 2 * Ci[0, 1] * S * T + Ci[1, 1] * T * T
            v = np.exp(logA(S) + logB(T) - q / 2) * norm
        vals.append(float(np.einsum("i,ij,j->", wx, v, wy)))
    return _stages_diverge(vals)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(a=_factor2, b=_factor2, rho=st.sampled_from([0.0, 0.6]), summed=st.booleans())
def test_fuzz_existence_2d(a, b, rho, summed):
    """``A(g0)·B(t)`` with ``t = g1`` or ``g0 + g1``, ``Corr(g0, g1) = ρ``."""
    A, B = _build(a), _build(b)
    g0, g1 = g(0), g(1)
    t = g0 + g1 if summed else g1
    expr = A[0](g0) * B[0](t)
    assume(not expr.has(sympy.zoo, sympy.nan))
    cov = np.array([[1.0, rho], [rho, 1.0]])
    T = np.array([[1.0, 0.0], [1.0, 1.0]]) if summed else np.eye(2)
    C = T @ cov @ T.T  # law of (s, t) = (g0, t)
    with np.errstate(all="ignore"):
        ref = _reference_diverges_2d(
            A[1], B[1], [float(x) for x in A[2]], [float(x) for x in B[2]], C
        )
    assume(ref is not None)
    got = decide(expr, 2, 0, np.zeros((1, 2)), cov[None], np.zeros((1, 0)))[0]
    if ref:
        assert got.verdict != Verdict.EXISTS, (expr, rho)
    else:
        assert got.verdict != Verdict.DIVERGES, (expr, rho, got.reason)


def test_piecewise_bodies_are_analysed_through_their_branches():
    """A Piecewise adds only jumps; its branches carry any singularity. (Every NTK/SP
    training limit has the Piecewise Nonlin+ Δφ, and was flagged as unproven.)"""
    p = tp.Program("pw")
    v = p.vector("v", var=4.0)
    k = tp.mean(tp.nonlin(lambda a: sympy.Piecewise((a, a > 0), (0, True)), v), name="k")
    lim = p.limit()
    assert lim.trusted(k) and not lim.warnings
    assert abs(lim[k] - 2.0 / math.sqrt(2 * math.pi)) <= 1e-12  # 𝔼 relu(2G) = 2/√(2π)
    tp.mean(tp.nonlin(lambda a: sympy.Piecewise((1 / a, a > 0), (0, True)), v), name="bad")
    with pytest.raises(tp.DivergenceError, match="bad"):
        p.limit()


def test_a_pole_hidden_on_part_of_its_set_is_found():
    """relu(g₁)/|g₀| at Corr(g₀, g₁) = 0.6 diverges (g₁ > 0 on half of {g₀ = 0}); with 3
    sample points on the set, all had g₁ < 0 and the pole was missed (found by the
    hypothesis fuzzer)."""
    g0, g1 = g(0), g(1)
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    expr = tp.relu.apply(g1) / sympy.Abs(g0)
    got = decide(expr, 2, 0, np.zeros((1, 2)), cov[None], np.zeros((1, 0)))[0]
    assert got.verdict == Verdict.DIVERGES
