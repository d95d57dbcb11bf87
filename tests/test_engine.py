"""The Master Theorem engine against independently known limits: structure (Ẑ/Ż),
Ż after a μP step, Monte Carlo calibration, finite-width convergence, lookups.

Every reference is computed from formulas (THEORY §2.2, §6.2, §10.3, §10.5) with
scipy/numpy — here or in the shared table ``tests/programs.py`` (whose programs every
backend runs in ``tests/test_backends.py``) — never with tensorprog's own code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from programs import Wt_then_other as prog_Wt_then_other
from programs import atav as prog_AtAv
from programs import gauss1
from programs import relu_layer_kernel as prog_relu_kernel
from programs import tanh_Wt as prog_tanh_Wt
from programs import two_Wt as prog_two_Wt

import tensorprog as tp

# ---------------------------------------------------------------------------- programs
# The programs with reference limits are the shared table's (tests/programs.py): every
# backend runs them in tests/test_backends.py; here they serve the structural tests.


def test_exact_unavailable_is_an_error():
    p, _ = prog_tanh_Wt()
    with pytest.raises(tp.MethodUnavailableError, match="exact"):
        p.limit(method="exact")


# ------------------------------------------------------------------- hat / dot structure


def test_AtAv_hat_dot_decomposition():
    p, _ = prog_AtAv()
    lim = p.limit()
    x = p["h2"]
    zx = lim.Z(x)
    names = {str(s) for s in zx.free_symbols}
    assert any(n.startswith("Ẑ") for n in names) and any(n.startswith("Ż") for n in names)
    # Ż^{Aᵀy} = σ_A² 𝔼[∂Z^y/∂Ẑ^{Av}] Z^v = 2 Z^v.
    assert lim.coefficient(x, p["h1"]) == pytest.approx(1.0)
    assert str(lim.Z(x, expand_dot=True, numeric=True)) == "Ẑ^{A^T h1} + 2.0*Z^{v}"


def test_first_backward_pass_has_zero_dot():
    """GIA (THEORY §2.6): readout centred and independent ⇒ Ż = 0 in the first backward pass."""
    p = tp.Program("backward")
    W = p.matrix("W")
    x = p.vector("x")
    v = p.vector("v")  # readout, independent of x
    h = W @ tp.tanh(x)
    dh = v * tp.tanh.derivative()(h)
    dx = W.T @ dh
    tp.mean(dx * dx, name="g")
    lim = p.limit()
    assert lim.Zdot(dx) == 0
    # 𝔼[(dx)²] = σ² 𝔼[v²] 𝔼[tanh'(h)²], h ~ N(0, 𝔼 tanh(x)²).
    kh = gauss1(lambda z: math.tanh(z) ** 2)
    assert lim["g"] == pytest.approx(gauss1(lambda z: (1 - math.tanh(z) ** 2) ** 2, kh), rel=1e-8)


def test_Wt_then_other_matrix_dot_is_zero():
    p, _ = prog_Wt_then_other()
    lim = p.limit()
    z = [i.out for i in p.instructions if getattr(i, "matrix", None) is not None][-1]
    assert lim.Zdot(p[z.name]) == 0


# ---------------------------------------------------- Ż after one μP step (THEORY §10.3)


def prog_one_step_muP(xi=0.7):
    p = tp.Program("muP_one_step")
    W = p.matrix("W", var=1.0)
    u, v = p.vector("u"), p.vector("v")
    dtanh = tp.tanh.derivative()
    x0 = tp.tanh(u)
    hb0 = W @ x0
    xb0 = tp.tanh(hb0)
    f0 = tp.inner(v, xb0, name="f0")
    chi = f0 - 1.0
    dhb0 = v * dtanh(hb0)
    dh0 = (W.T @ dhb0) * dtanh(u)
    v1 = v - chi * xb0
    u1 = u - chi * dh0
    x1 = tp.tanh(u1 * xi)
    hb1 = W @ x1 - chi * tp.inner(x0, x1) * dhb0
    tp.inner(v1, tp.tanh(hb1), name="f1")
    return p


def test_one_step_muP_needs_zdot():
    """The planner splits f1 into ≤3-Gaussian expectations, so quadrature applies."""
    p = prog_one_step_muP()
    lim = p.limit()
    assert lim["f0"] == pytest.approx(0.0, abs=1e-12)
    ref, ref_se = 0.5185, 0.0005  # THEORY §10.3 (MC, 4e6 samples); without Ż: 0.377
    assert lim.method("f1") == "quadrature"
    assert abs(lim["f1"] - ref) <= 4 * ref_se
    assert lim.error("f1") < 1e-6
    # Ż^{Wx1} along Wᵀd h̄0 is present, and its coefficient is not zero.
    hb1_matmul = [i.out for i in p.instructions if type(i).__name__ == "MatMul"][-1]
    assert lim.Zdot(p[hb1_matmul.name]) != 0


def test_one_step_muP_montecarlo():
    p = prog_one_step_muP()
    exact = p.limit()["f1"]
    lim = p.limit(method="montecarlo", samples=200_000, seed=3)
    assert lim.method("f1") == "montecarlo"
    assert abs(lim["f1"] - exact) <= 4 * lim.stderr("f1")
    assert abs(lim["f1"] - 0.377) > 20 * lim.stderr("f1")


# ------------------------------------------------------------- Monte Carlo's own error


def test_montecarlo_standard_error_matches_spread():
    p, ref = prog_tanh_Wt()
    vals, ses = [], []
    for seed in range(24):
        lim = p.limit(method="montecarlo", samples=8_000, seed=seed)
        vals.append(lim["WxWx"])
        ses.append(lim.stderr("WxWx"))
    ratio = np.std(vals, ddof=1) / np.mean(ses)
    # Sample std over 24 seeds: chi-square(23) bounds at ~99.9% are [0.55, 1.45].
    assert 0.5 < ratio < 1.6, ratio


def test_montecarlo_is_reproducible():
    p, _ = prog_tanh_Wt()
    a = p.limit(method="montecarlo", samples=5_000, seed=7)
    b = p.limit(method="montecarlo", samples=5_000, seed=7)
    c = p.limit(method="montecarlo", samples=5_000, seed=8)
    assert a["WxWx"] == b["WxWx"]
    assert a["WxWx"] != c["WxWx"]


def test_qmc_within_4_se():
    p, ref = prog_tanh_Wt()
    lim = p.limit(method="montecarlo", samples=2**15, seed=0, qmc=True)
    for name, val in ref.items():
        assert abs(lim[name] - val) <= 4 * lim.stderr(name)


# ---------------------------------------------------------- finite width converges


@pytest.mark.parametrize(
    "build", [prog_AtAv, prog_relu_kernel, prog_two_Wt], ids=lambda b: b.__name__
)
def test_finite_width_converges(build):
    p, ref = build()
    lim = p.limit()
    name = next(iter(ref))
    errs = []
    for n in (128, 512, 2048):
        vals = np.array([p.simulate(n, seed=s)[name] for s in range(6)])
        errs.append(np.sqrt(np.mean((vals - lim[name]) ** 2)))
    slope = np.polyfit(np.log([128, 512, 2048]), np.log(errs), 1)[0]
    assert -0.9 < slope < -0.25, (errs, slope)


def test_limit_expr_and_lookup_errors():
    p, _ = prog_AtAv()
    lim = p.limit()
    assert "𝔼" in str(lim.expr("k"))
    with pytest.raises(tp.ProgramTypeError, match="vector"):
        lim["h2"]
    with pytest.raises(tp.UnknownNameError):
        lim["nope"]
    with pytest.raises(tp.UnknownNameError, match="method"):
        p.limit(method="magic")
    with pytest.raises(tp.ProgramValueError, match="samples"):
        p.limit(samples=0)


def test_custom_nonlinearity_of_two_vectors():
    p = tp.Program("custom")
    xs = p.vectors("x", cov=[[1.0, 0.4], [0.4, 2.0]])
    f = tp.nonlin(lambda a, b: a * sympy.tanh(b), xs[0], xs[1], name="phi")
    tp.mean(f, name="m")
    lim = p.limit()
    # 𝔼[a tanh(b)] = Cov(a,b) 𝔼[tanh'(b)] (Stein).
    ref = 0.4 * gauss1(lambda z: 1 - math.tanh(z) ** 2, 2.0)
    assert lim["m"] == pytest.approx(ref, rel=1e-8)


def test_integrand_of_few_linear_forms_is_integrated_over_the_forms():
    """𝔼[tanh(x₁+x₂+x₃) tanh(x₃+x₄−2x₅)] over 5 Gaussians is a 2-D integral over the two
    linear forms (u, v), Cov = A K Aᵀ: quadrature, although 5 > MAX_QUADRATURE_DIM."""
    from tensorprog.engine.evaluate import MAX_QUADRATURE_DIM, quadrature_dim

    rng = np.random.default_rng(3)
    G = rng.standard_normal((5, 5))
    K = G @ G.T / 5 + 0.2 * np.eye(5)
    p = tp.Program("forms")
    x = p.vectors("x", cov=K)
    m = tp.mean(tp.tanh(x[0] + x[1] + x[2]) * tp.tanh(x[2] + x[3] - 2 * x[4]), name="m")
    lim = p.limit()
    req = lim.plan.requests[lim.plan.const_req[lim.derivation.scalar_const[m.var].cid]]
    assert len(req.bids) == 5 > MAX_QUADRATURE_DIM and quadrature_dim(req.expr, 5, 0) == 2
    assert lim.method(m) == "quadrature"
    A = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, -2]], dtype=float)
    C = A @ K @ A.T
    # independent reference: (u, v) = (a z₁, b z₁ + c z₂), Gauss–Legendre on [-9, 9]²
    z, w = np.polynomial.legendre.leggauss(300)
    z, w = 9 * z, 9 * w * np.exp(-((9 * z) ** 2) / 2) / math.sqrt(2 * math.pi)
    a = math.sqrt(C[0, 0])
    b, c = C[0, 1] / a, math.sqrt(C[1, 1] - C[0, 1] ** 2 / C[0, 0])
    ref = np.sum(
        w[:, None] * w[None, :] * np.tanh(a * z[:, None]) * np.tanh(b * z[:, None] + c * z[None, :])
    )
    assert lim[m] == pytest.approx(ref, rel=1e-7)
    assert lim.error(m) < 1e-7


def test_zdot_term_odd_in_an_independent_gaussian_is_dropped():
    """Ż^{Wᵀu} for u = tanh(v)·relu(Wx): 𝔼[∂Z^u/∂Ẑ^{Wx}] = 𝔼[tanh v]·𝔼[step] = 0 because
    Z^u is odd in the centred, independent v — seen by the parity test although v is
    inside tanh (no term of the derivative is a plain odd power of v)."""
    p = tp.Program("odd")
    W = p.matrix("W", var=1.5)
    x, v = p.vector("x"), p.vector("v")
    g = W.T.matmul(tp.tanh(v) * tp.relu(W @ x), name="g")
    tp.inner(g, x, name="gx")
    lim = p.limit()
    assert lim.Zdot(g) == 0
    assert lim["gx"] == pytest.approx(0.0, abs=1e-12)  # Ẑ^{Wᵀu} ⟂ Z^x, and no Ż
    sim = [p.simulate(512, seed=s)["gx"] for s in range(8)]
    assert abs(np.mean(sim)) < 4 * np.std(sim) / math.sqrt(len(sim)) + 1e-12


def test_parity_alone_finds_the_first_backward_pass(monkeypatch):
    """Big integrands skip the termwise (sympy) test; gradient independence is still
    found by parity: every Ż of a kernel program's backward pass is dropped."""
    from tensorprog.engine import derivation
    from tensorprog.nn.kernels import kernel_program

    monkeypatch.setattr(derivation, "VANISH_TREE", 0)
    p, _, _ = kernel_program(np.random.default_rng(0).standard_normal((3, 4)), 3, "tanh", 1.5, 0.1)
    der = derivation.Derivation(p)
    assert all(not n.dot for n in der.nodes.values() if isinstance(n, derivation.MatMulNode))


def test_termwise_vanishing_shortcut_agrees_with_the_full_test():
    """Before differentiating, ``_vanishes`` answers False when every centred Gaussian
    sits inside a non-polynomial function (then no term of the derivative can have one
    as a bare odd factor). On these integrands it agrees with the full sympy test."""
    import sympy

    from tensorprog.engine import derivation as D
    from tensorprog.engine.symbols import g

    relu = tp.relu.function
    g0, g1, g2 = g(0), g(1), g(2)
    cases = [
        (relu(g0 + g1) * g2, 0, True),  # odd in the bare, independent g2
        (relu(g0 + g1), 0, False),  # every Gaussian inside relu: the shortcut
        ((relu(g1) + g0) * sympy.Heaviside(g0 + g1), 0, False),
        (sympy.tanh(g0) * g1**3 + g2, 2, False),  # ∂/∂g2 = 1: nothing odd
        (sympy.tanh(g0) * g1**3, 0, True),
        (g1 * g0**2, 0, True),
    ]
    indep = (True,) * 9
    for expr, k, expected in cases:
        args = (expr, k, (True,) * 3, indep)
        full = D._vanishes.__wrapped__
        assert D._vanishes(*args) is expected, expr
        # the full test alone (shortcut disabled) gives the same answer
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(D, "_wrapped_symbols", lambda e: None)
            assert full(*args) is expected, expr
    identity_opaque = tp.Nonlinearity(
        "lin", 2 * sympy.Symbol("x", real=True), [sympy.Symbol("x", real=True)]
    )
    assert D._wrapped_symbols(identity_opaque.function(g0) * g1) is None  # linear: no shortcut
    assert D._wrapped_symbols(relu(g0) * g1 + g2**2) == {g0}


# ------------------------------------------------------------ nothing silently wrong


def test_divergent_expectation_is_an_error():
    p = tp.Program("divergent")
    x = p.vector("x", var=0.5)  # 𝔼 exp(x²) = ∞ exactly at Var x = 1/2
    tp.mean(tp.exp(x * x), name="k")
    with pytest.raises(tp.NumericalError, match="k"):
        p.limit()
    q = tp.Program("convergent")
    y = q.vector("y", var=0.4)
    tp.mean(tp.exp(y * y), name="k")
    assert q.limit()["k"] == pytest.approx((1 - 2 * 0.4) ** -0.5, rel=1e-10)


def test_nan_in_the_limit_is_an_error():
    p = tp.Program("nan")
    x = p.vector("x")
    tp.mean(tp.sqrt(x), name="r")  # sqrt of a Gaussian: NaN on half the line
    with pytest.raises(tp.NumericalError, match="r"):
        p.limit()


def test_discontinuous_integrand_falls_back_visibly():
    """step(x + 0.3) of a step without closed forms (tp.step has one with means since
    issue #21); the result says how it was obtained."""
    step_q = tp.Nonlinearity("step_q", tp.step.body, tp.step.args)
    p = tp.Program("shifted_step")
    x = p.vector("x")
    tp.mean(step_q(x + 0.3), name="s")
    lim = p.limit(samples=200_000, seed=0)
    from scipy.stats import norm

    ref = norm.cdf(0.3)
    assert lim.method("s") in ("quadrature", "montecarlo")
    assert abs(lim["s"] - ref) <= 4 * lim.error("s") + 1e-9


def test_zdot_through_step_uses_stein():
    """Ż^{W step(Wᵀy)} needs 𝔼[step'(·)], a Dirac delta: the Stein form gives σ²𝔼[g step(g)]."""
    p = tp.Program("step_dot")
    W = p.matrix("W")
    y = p.vector("y")
    z = W @ tp.step(W.T @ y)
    tp.inner(z, y, name="k")
    lim = p.limit()
    # 𝔼[Z^y Ż] = 𝔼[step'(Ẑ)] with Ẑ ~ N(0, 1): the standard normal density at 0.
    assert lim["k"] == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-10)
    # finite width: 8 seeds at n = 1500; the seed mean's fluctuation has standard error
    # sd/√8 (Student-t, 7 d.o.f.: |t| > 7.9 with probability 1e-4), and its O(1/n) bias
    # is allowed up to 4× the fluctuation constant sd·√n, i.e. 4·sd/√n
    vals = [p.simulate(1500, seed=s)["k"] for s in range(8)]
    sd = np.std(vals, ddof=1)
    assert abs(np.mean(vals) - lim["k"]) <= 7.9 * sd / np.sqrt(8) + 4 * sd / np.sqrt(1500)


def test_stein_coefficients_of_one_matmul_share_their_covariance_table():
    """The Stein coefficients of one MatMul (one per candidate hat) list the same
    covariance table, built once (a T-step unroll has O(T·B) of them per MatMul); the
    dependency walks that visit a shared table once (``split_deps``) give the ranks of
    the walk over every dependency, with any request sampled."""
    from tensorprog.engine.derivation import Derivation
    from tensorprog.engine.evaluate import effective_ranks
    from tensorprog.engine.methods import RANK, Method
    from tensorprog.engine.plan import Plan, SteinRequest, split_deps

    p = tp.Program("stein_table")
    W = p.matrix("W")
    ys = [p.vector(f"y{i}", cov={}) for i in range(3)]
    u = tp.step(W.T @ ys[0]) + tp.step(W.T @ ys[1]) * tp.step(W.T @ ys[2])
    tp.inner(W @ u, ys[0], name="k")
    tp.inner(W @ (u * u), ys[1], name="k2")
    plan = Plan(Derivation(p))
    stein = [r for r in plan.requests if isinstance(r, SteinRequest)]
    by_matmul: dict = {}
    for r in stein:
        by_matmul.setdefault(r.const.var, []).append(r)
    assert len(by_matmul) == 2 and all(len(rs) == 3 for rs in by_matmul.values())
    for rs in by_matmul.values():
        assert all(r.cov_rids is rs[0].cov_rids and r.b_rids == rs[0].b_rids for r in rs)
    for r in plan.requests:
        own, _, rest = split_deps(r)
        assert own + rest == r.deps
    for sampled in [set(), {stein[0].deps[-1]}, {stein[0].b_rids[0]}, {r.rid for r in stein[:2]}]:
        plan.deterministic = [r.rid not in sampled for r in plan.requests]
        plan.methods = [Method.EXACT] * len(plan.requests)
        naive: list[int] = []
        for r in plan.requests:
            own = RANK[Method.EXACT] if r.rid not in sampled else RANK[Method.MONTECARLO]
            naive.append(max([own] + [naive[d] for d in r.deps]))
        assert effective_ranks(plan) == naive
        assert any(x != naive[0] for x in naive) == bool(sampled)


# ---------------------------------------------------------------------------------------
# Structure read before expansion (#22: training limits that do not stall)


def _gaussians(d):
    from tensorprog.engine.symbols import g, q

    return [g(k) for k in range(d)], [q(j) for j in range(3)]


def test_affine_parts_agree_with_expansion():
    """Coefficients from the tree walk equal those of the fully expanded argument
    (sympy.Poly, degree ≤ 1 in the g's); non-affine arguments are refused."""
    from tensorprog.engine.exact import affine_parts

    gs, qs = _gaussians(3)
    g0, g1, g2 = gs
    q0, q1, _ = qs
    affine = [
        q0 * (g0 + 2 * g1) - (g2 - 1) / 3 + sympy.tanh(q1),
        (q0 + q1) * (g1 * q1 + 2 * (g0 - q0)) + g2 * q0**2,
        sympy.Rational(1, 2) * (g0 - g1 + q0 * (g0 + g1)),
    ]
    for arg in affine:
        lin, const = affine_parts(arg, gs)
        P = sympy.Poly(sympy.expand(arg), *gs)
        assert P.total_degree() <= 1
        for gk in gs:
            assert sympy.simplify(lin.get(gk, 0) - P.coeff_monomial(gk)) == 0
        assert sympy.simplify(const - P.coeff_monomial(1)) == 0
    for arg in (g0 * g1 + q0, sympy.tanh(g0) + g1, (g0 + q0) ** 2, g0 / g1):
        assert affine_parts(arg, gs) is None


def test_shape_bounds_the_expansion_and_finds_entangled_gaussians():
    from tensorprog.engine.exact import shape

    gs, qs = _gaussians(6)
    relu = tp.relu.function
    for e in (
        (gs[0] + gs[1]) * (gs[2] - qs[0] * gs[3]) ** 3 + gs[4] * relu(gs[5]),
        relu(gs[0] + gs[1]) * relu(gs[2]) * (1 + gs[3]) ** 2,
    ):
        n = len(sympy.Add.make_args(sympy.expand(e, deep=False)))
        assert n <= shape(e).terms
    s = shape(relu(gs[0] + gs[1]) * relu(gs[2] - gs[3]))
    assert s.exact_factors and s.opaque == 2 and s.entangled == ()
    inner = gs[0] + qs[0] * gs[1] * relu(gs[2] + gs[3]) + gs[4]
    s = shape(sympy.tanh(inner) * gs[5])
    assert not s.exact_factors
    assert s.needs_dims() == 5 and s.needs_dims(gs[2]) == 5 and s.needs_dims(gs[5]) == 0


def test_linear_forms_counted_before_substitution():
    """A product of φ'(·) of many distinct forms is refused (no reduction below the
    quadrature limit); a few shared forms are still found."""
    from tensorprog.engine.evaluate import MAX_QUADRATURE_DIM, linear_forms

    gs, _ = _gaussians(8)
    dtanh = tp.tanh.derivative().function
    many = sympy.Mul(*[dtanh(gs[k] + gs[k + 1]) for k in range(7)])
    assert linear_forms(many, 8, 3) is None
    few = dtanh(2 * gs[0] + gs[1]) * dtanh(gs[1] + 2 * gs[2]) * dtanh(2 * gs[0] + gs[1]) ** 2
    red = linear_forms(few, 3, 3)
    assert red is not None and red.k == 2 <= MAX_QUADRATURE_DIM


def test_training_run_default_limit_is_montecarlo_where_nothing_else_applies():
    """μP, two tanh layers, two steps: integrands of the second step (tanh of a
    pre-activation that carries tanh' of the first) go to Monte Carlo at once, and the
    deterministic ones keep their methods; default and forced Monte Carlo agree."""
    from tensorprog import nn

    X = np.array([[1.0, 0.3], [-0.5, 1.0]])
    run = nn.train_sgd(
        nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(2)),
        X,
        np.array([0.5, -0.3]),
        lr=1.0,
        steps=2,
        feature_kernels=False,
    )
    a = run.limit(samples=20_000, seed=1)
    b = run.limit(method="montecarlo", samples=20_000, seed=2)
    se = np.sqrt(a.stderr**2 + b.stderr**2)
    assert np.all(np.abs(a.outputs - b.outputs) <= 4 * se + 1e-12)
    assert list(a.method[0]) == ["quadrature"] * 2  # f_0: 1-D tanh expectations
    assert list(a.method[-1]) == ["montecarlo"] * 2


def test_division_by_a_vanishing_scalar_names_it():
    """x / ⟨x, y⟩ with x, y independent: the divisor's limit is exactly 0, so the
    Nonlin+ has no limit — an error naming the scalar, not a quadrature failure."""
    for wrap in (lambda z: z, tp.tanh):
        p = tp.Program()
        x, y = p.vector("x"), p.vector("y")
        m = tp.mean(x * y, name="m")
        tp.mean(wrap(x / m) * x, name="k")
        with pytest.raises(tp.NumericalError, match=r"divides by m, whose limit is 0 \(m → 0\)"):
            p.limit()
    p = tp.Program()  # a non-vanishing divisor is fine: 𝔼[x tanh(x/√𝔼x²)]
    x = p.vector("x", var=2.0)
    k = tp.mean(tp.tanh(x / tp.sqrt(tp.mean(x * x))) * x, name="k")
    assert p.limit()[k] == pytest.approx(
        gauss1(lambda z: z * math.tanh(z / math.sqrt(2)), 2.0), rel=1e-9
    )


# ---------------------------------------------------------------------------------------
# the public view of a derivation (what the printer reads) and the typed records


def test_limit_hat_covariances_and_zdot_terms_atav():
    """AᵀAv with σ_A² = 2, v ~ N(0, 1), y = Av, x = Aᵀy. By hand [TP4 ZHat, Eq. (31)]:
    Var Ẑ^{Av} = σ² 𝔼[v²] = 2; Var Ẑ^{Aᵀy} = σ² 𝔼[(Z^y)²] = σ² · 2 = 4; Ż^{Aᵀy} has the one
    candidate Ẑ^{Av} with 𝔼[∂Z^y/∂Ẑ^{Av}] = 1, i.e. the full coefficient σ² · 1 = 2; so
    𝔼[(Z^x)²] = 𝔼[(Ẑ^{Aᵀy} + 2 Z^v)²] = 4 + 4 = 8. Without a limit that needs it, a
    variance is listed without a value or method."""
    p = tp.Program("atav")
    A, v = p.matrix("A", var=2.0), p.vector("v")
    y = A.matmul(v, name="y")
    x = A.T.matmul(y, name="x")
    unused = A.matmul(x, name="z")
    tp.inner(x, x, name="k")
    lim = p.limit()
    assert lim["k"] == 8.0
    (var_z,) = lim.hat_covariances(unused)[:1]
    assert (var_z.value, var_z.method) == (None, None)
    (var_y,) = lim.hat_covariances(y)
    assert (var_y.hat, var_y.y, var_y.value, var_y.method) == (lim.Zhat(y), v.var, 2.0, "exact")
    (var_x,) = lim.hat_covariances("x")
    assert var_x.hat == lim.Zhat(x) and var_x.value == 4.0
    (term,) = lim.zdot_terms(x)
    assert term.hat == lim.Zhat(y) and term.y is v.var and not term.vanishes
    assert (term.value, term.stderr, term.method) == (2.0, 0.0, "exact")
    assert lim.coefficient(x, v) == 1.0  # the expectation alone, without σ²
    assert lim.zdot_terms(y) == []  # no transposed hat before the first MatMul
    with pytest.raises(tp.TensorProgramError, match="MatMul"):
        lim.zdot_terms(v)


def test_limit_zdot_terms_mark_vanishing_candidates():
    """The first backward pass dx = Wᵀ(v ⊙ Wx): the one candidate Ẑ^{Wx} has
    𝔼[∂(Z^v Ẑ^{Wx})/∂Ẑ^{Wx}] = 𝔼[Z^v] = 0 (gradient independence [TP2 §6])."""
    p = tp.Program("backward")
    W, x, v = p.matrix("W", var=2.0), p.vector("x"), p.vector("v")
    h = W.matmul(x, name="h")
    W.T.matmul(v * h, name="dx")
    lim = p.limit()
    (term,) = lim.zdot_terms("dx")
    assert term.vanishes and term.value == 0.0 and term.hat == lim.Zhat(h)
    assert lim.Zdot("dx") == 0


def test_methods_are_plain_strings_outside_the_engine():
    """``lim.method`` returns str (not the engine's enum); the enum is accepted as input."""
    from tensorprog.engine import Method

    p = tp.Program()
    v = p.vector("v")
    k = tp.inner(v, v, name="k")
    lim = p.limit(method=Method.EXACT)
    assert type(lim.method(k)) is str and lim.method(k) == "exact"
    assert all(type(m) is str for m in lim.methods.values())
    assert lim.method_requested == "exact" and type(lim.method_requested) is str


def test_symbols_carry_their_variables():
    """Hat, dot and coefficient symbols and the placeholders ``g_k`` know what they stand
    for (no name is parsed back) and survive pickling with it."""
    import pickle

    from tensorprog.engine.symbols import DotCoef, ZHat, g

    h = ZHat("W", True, "x", "h2")
    assert (h.matrix, h.transpose, h.arg, h.out) == ("W", True, "x", "h2")
    assert str(h) == "Ẑ^{W^T x|h2}" and str(h.dot()) == "Ż^{W^T x|h2}"
    c = pickle.loads(pickle.dumps(DotCoef("y", h)))
    assert c.x == "y" and c.hat.out == "h2"
    assert pickle.loads(pickle.dumps(g(7))).index == 7


def test_dot_constants_state_the_sigma2_convention():
    """Every ZDot constant converts between 𝔼[∂Z^x/∂Ẑ] and the full coefficient σ²·𝔼 of
    Z^y in Ż (σ_W² = 3 here), and 𝔼 is 0 for σ_W² = 0."""
    from tensorprog.engine.derivation import Derivation, DotConst

    p = tp.Program()
    A, v = p.matrix("A", var=3.0), p.vector("v")
    A.T.matmul(A.matmul(v, name="y"), name="x")
    B = p.matrix("B", var=0.0)
    B.T.matmul(B.matmul(v, name="u"), name="w")
    dots = [c for c in Derivation(p).consts if isinstance(c, DotConst)]
    assert [c.sigma2 for c in dots] == [3.0, 0.0]
    assert dots[0].full(0.5) == 1.5 and dots[0].expectation(1.5) == 0.5
    assert dots[1].expectation(0.0) == 0.0


def test_auto_sends_four_dimensional_quadrature_to_a_monte_carlo_run():
    """``auto`` is cost-aware (``AUTO_MONTECARLO_DIM``): a 4-D quadrature is done when
    nothing needs Monte Carlo, and joins Monte Carlo when the program runs it anyway —
    where its value agrees with the quadrature within 4 standard errors."""
    from tensorprog.engine.evaluate import AUTO_MONTECARLO_DIM

    assert AUTO_MONTECARLO_DIM == 4
    K = 0.5 * np.eye(5) + 0.5

    def program(with_five: bool):
        p = tp.Program("cost")
        xs = p.vectors("x", cov=K)
        ts = [tp.cos(x + 0.3) for x in xs]
        k4 = tp.mean(ts[0] * ts[1] * ts[2] * ts[3], name="k4")
        if with_five:
            tp.mean(ts[0] * ts[1] * ts[2] * ts[3] * ts[4], name="k5")
        return p, k4

    p1, a = program(False)
    lim1 = p1.limit()
    assert lim1.method(a) == "quadrature"
    p2, b = program(True)
    lim2 = p2.limit(samples=200_000, seed=1)
    assert lim2.method(p2["k5"]) == "montecarlo"
    assert lim2.method(b) == "montecarlo"
    assert abs(lim2[b] - lim1[a]) <= 4 * lim2.stderr(b)
