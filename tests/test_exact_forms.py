"""Exact expectations of polynomials in a few affine forms of many Gaussians.

An integrand ``top(L_1, …, L_K)`` with ``L_k = a_k + c_kᵀ g`` is evaluated over the
``K``-dimensional Gaussian vector of the forms (``N(a + Cμ, C Σ Cᵀ)``) instead of the
``O(d^deg)`` monomials of the ``g``'s. References, written here and importing nothing
from the code under test: Isserlis' theorem with means (a sum over partial pairings),
Monte Carlo with its standard error, the Gram closed form of a lincomb's moments and the
A,B,C,D recursion of a linear network's training (``tests/test_training.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from test_training import X3, Y3, abcd_linear

import tensorprog as tp
from tensorprog import nn
from tensorprog.engine.exact import exact_evaluator, g_monomials
from tensorprog.engine.symbols import g, q

D = 40


def isserlis(mean: np.ndarray, cov: np.ndarray, idx: list[int]) -> float:
    """``𝔼 Π_{i ∈ idx} X_i`` for ``X ~ N(mean, cov)``: the sum over partial pairings of
    ``idx`` of ``Π_{pairs} cov_ij · Π_{unpaired} mean_k`` [Isserlis 1918, with means]."""
    if not idx:
        return 1.0
    first, rest = idx[0], idx[1:]
    total = mean[first] * isserlis(mean, cov, rest)  # the first one unpaired
    for j in range(len(rest)):
        total += cov[first, rest[j]] * isserlis(mean, cov, rest[:j] + rest[j + 1 :])
    return total


def _law(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    F = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(scale=0.3, size=d), F @ F.T + 0.1 * np.eye(d)


def _form(const: float, coeffs: np.ndarray) -> sympy.Expr:
    return sympy.Float(const) + sympy.Add(*[sympy.Float(c) * g(i) for i, c in enumerate(coeffs)])


def _check(expr, A, idx, mean, cov, qv, m, samples, seed):
    """The evaluator against Isserlis on the forms ``A`` (rows ``(a_k, c_k)``) and
    against Monte Carlo over the ``g``'s (within 5 standard errors)."""
    ev = exact_evaluator(expr, D, m, False)
    assert ev is not None
    got = float(ev(mean[None], cov[None], qv[None])[0])
    # the law of the forms, then Isserlis' sum over pairings
    C = A[:, 1:]
    ref = isserlis(A[:, 0] + C @ mean, C @ cov @ C.T, idx)
    # both sides sum O(d²) float products of O(1) terms: rounding ~1e-14 relative
    assert got == pytest.approx(ref, rel=1e-11, abs=1e-12)
    # Monte Carlo over the d Gaussians: the mean of the product of the forms
    rng = np.random.default_rng(seed)
    G = mean + rng.standard_normal((samples, D)) @ np.linalg.cholesky(cov).T
    L = A[:, 0] + G @ C.T  # (samples, K)
    vals = np.prod(L[:, idx], axis=1)
    se = vals.std(ddof=1) / np.sqrt(samples)
    assert abs(got - vals.mean()) <= 5 * se, (got, vals.mean(), se)


def test_square_times_square_of_two_forms_of_40_gaussians():
    """𝔼[(cᵀg)²(eᵀg)²], d = 40: 123 410 g-monomials, two forms."""
    rng = np.random.default_rng(0)
    mean, cov = _law(rng, D)
    c, e = rng.normal(size=D), rng.normal(size=D)
    expr = _form(0.0, c) ** 2 * _form(0.0, e) ** 2
    assert g_monomials(expr, [g(k) for k in range(D)]) is None  # > MAX_TERMS
    A = np.array([np.r_[0.0, c], np.r_[0.0, e]])
    _check(expr, A, [0, 0, 1, 1], mean, cov, np.zeros(0), 0, 200_000, 1)


def test_product_of_three_affine_forms_with_means_and_constants():
    """𝔼[(a₁ + cᵀg)(a₂ + eᵀg)(a₃ + fᵀg)], d = 40, nonzero means; ``a₁ = q₀`` and one
    coefficient ``q₁`` come from the constants (the evaluator's coefficient walk)."""
    rng = np.random.default_rng(2)
    mean, cov = _law(rng, D)
    mean = mean + 0.5
    c, e, f = rng.normal(size=(3, D))
    qv = np.array([0.7, -1.3])
    L1 = q(0) + sympy.Add(*[sympy.Float(x) * g(i) for i, x in enumerate(c[1:], 1)]) + q(1) * g(0)
    expr = L1 * _form(-0.4, e) * _form(1.1, f)
    assert g_monomials(expr, [g(k) for k in range(D)]) is None  # > MAX_TERMS
    A = np.array([np.r_[qv[0], qv[1], c[1:]], np.r_[-0.4, e], np.r_[1.1, f]])
    _check(expr, A, [0, 1, 2], mean, cov, qv, 2, 200_000, 3)


def _linear_run(steps: int):
    m = nn.Model("linear")
    m.param("W_in", ("n", 2), init_std=np.sqrt(2))  # entries of variance 1
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ (p.W_in @ xi)

    return nn.train(m, X3, Y3, steps=steps, optimizer=nn.SGD(0.5), param=nn.muP())


def test_linear_muP_nn_train_is_exact_at_every_step():
    """The linear 1-hidden-layer μP network (d = 2, B = 3, T = 5) by nn.train: every
    output exact and equal to the A,B,C,D recursion [TP4 §3; THEORY §3.6]. From step 4 on,
    its integrands' trees exceed the derivation's tree limit (they double every step)."""
    lim = _linear_run(5).limit()
    assert np.all(lim.method == "exact"), lim.method[..., 0]
    np.testing.assert_allclose(lim.outputs[..., 0], abcd_linear(X3, Y3, 0.5, 5), atol=1e-10, rtol=0)
    assert np.all(lim.stderr == 0)


def test_forced_quadrature_refuses_a_polynomial_beyond_the_tree_limit():
    """Only the exact evaluator walks a polynomial's DAG; a Gauss–Hermite rule would
    generate code for its whole tree: refused by name, not attempted."""
    with pytest.raises(tp.MethodUnavailableError, match="expression tree"):
        _linear_run(4).limit(method="quadrature")


def test_square_of_a_lincomb_of_60_initial_vectors_is_exact():
    """𝔼[z²], 𝔼[z⁴], 𝔼[zw] for lincombs z = cᵀv, w = eᵀv of 60 correlated initial
    vectors with means: 1830 g-monomials in z², beyond MAX_TERMS. Gram closed forms:
    z ~ N(cᵀμ, cᵀΣc), 𝔼z⁴ = m⁴ + 6m²s² + 3s⁴, 𝔼zw = (cᵀμ)(eᵀμ) + cᵀΣe."""
    k = 60
    rng = np.random.default_rng(4)
    mean, cov = _law(rng, k)
    c, e = rng.normal(size=k), rng.normal(size=k)
    p = tp.Program("lincomb60")
    vs = p.vectors("v", cov=cov, mean=mean)
    s = p.scalar("s", value=c[0])  # a coefficient through a constant q
    z = tp.lincomb([(s, vs[0])] + [(float(ci), v) for ci, v in zip(c[1:], vs[1:])], name="z")
    w = tp.lincomb([(float(ei), v) for ei, v in zip(e, vs)], name="w")
    z2 = tp.mean(z * z, name="z2")
    z4 = tp.mean(z * z * z * z, name="z4")
    zw = tp.inner(z, w, name="zw")
    lim = p.limit()
    mz, s2 = c @ mean, c @ cov @ c
    ref = {
        z2: mz**2 + s2,
        z4: mz**4 + 6 * mz**2 * s2 + 3 * s2**2,
        zw: mz * (e @ mean) + c @ cov @ e,
    }
    for h, r in ref.items():
        assert lim.method(h) == "exact"
        assert lim[h] == pytest.approx(r, rel=1e-11)


def test_programs_sharing_steps_place_identical_expressions():
    """A longer run repeats a shorter one's steps: their derivations place *the same*
    expression objects for the shared outputs (hash-consing), so caches keyed by
    expression never compare two equal DAGs with sympy's ``==`` — which walks them as
    trees, exponential in a linear unroll's length (T = 16 after T = 14 took 91 s)."""
    from tensorprog.core.ir import Moment
    from tensorprog.engine.derivation import Derivation

    short, long = _linear_run(4), _linear_run(5)
    d_short, d_long = Derivation(short.program), Derivation(long.program)
    placed = [
        d_short.expr_of_key(d_short.canonical(m.args, limit=1 << 30)[0])
        for m in short.program.instructions
        if isinstance(m, Moment)
    ]
    sympy.core.cache.clear_cache()  # what sympy's bounded cache does to large programs
    pairs = [
        (a.args, b.args)
        for a, b in zip(short.program.instructions, long.program.instructions)
        if isinstance(a, Moment)
    ]
    assert len(pairs) > 10
    for (_, args_l), exprs in zip(pairs, placed):
        key_l = d_long.canonical(args_l, limit=1 << 30)
        for e_s, e_l in zip(exprs, d_long.expr_of_key(key_l[0]), strict=True):
            assert e_s == e_l and e_s is e_l


def test_centred_linear_run_computes_each_affine_row_once(monkeypatch):
    """notebook 05's NTK(1) linear run (centred: f − f_0; feature kernels of every step,
    O(T²B²) Moments of affine forms sharing one DAG), T = 6. Every output exact and equal
    to kernel gradient descent f ← f − ηΘ(f − y)/B with the linear network's NTK
    Θ = 2XXᵀ [TP4 App H.4.1]; and the affine rows are computed once per node and values
    of the node's constants for the whole plan — what a walk of each request's forms
    (about 16× as many nodes here) would recompute."""
    import tensorprog.engine.exact as ex

    calls = []
    rows = ex.affine_rows

    def recorded(forms, d, qv):
        calls.append((forms, d, qv.copy()))
        return rows(forms, d, qv)

    class Stored(dict):  # the memo of rows, counting what is computed and stored
        count = 0

        def __setitem__(self, key, value):
            Stored.count += 1
            super().__setitem__(key, value)

    monkeypatch.setattr(ex, "affine_rows", recorded)
    monkeypatch.setattr(ex, "_ROWS", Stored())
    T = 6
    net = nn.MLP(d_in=2, depth=1, nonlin="identity", param=nn.NTK(1))
    lim = nn.train_sgd(net, X3, Y3, lr=0.5, steps=T).limit()
    computed = Stored.count

    theta, f, ref = 2.0 * X3 @ X3.T, np.zeros(3), [np.zeros(3)]
    for _ in range(T):
        f = f - 0.5 * theta @ (f - Y3) / 3
        ref.append(f)
    assert np.all(lim.method == "exact")
    np.testing.assert_allclose(lim.outputs, np.array(ref), atol=1e-12, rtol=0)

    # the nodes of each request's forms, and their constants, read here by own walks
    syms: dict = {}

    def symbols(e):  # the g's and q's in e, memoised per node (a DAG, not a tree)
        if e not in syms:
            own = {e} if e.is_Symbol else set()
            syms[e] = own.union(*(symbols(a) for a in e.args))
        return syms[e]

    gs, Q = {g(k) for k in range(8)}, type(q(0))

    def affine_nodes(forms):
        out, stack = set(), list(forms)
        while stack:
            e = stack.pop()
            if e not in out:
                out.add(e)
                stack.extend(a for a in e.args if symbols(a) & gs)
        return out

    visits, distinct = 0, set()
    for forms, d, qv in calls:
        nodes = affine_nodes(forms)
        visits += len(nodes)
        for e in nodes:
            idx = sorted(s.index for s in symbols(e) if isinstance(s, Q))
            distinct.add((e, d, qv[:, idx].tobytes(), qv.shape[0]))
    assert computed == len(distinct), (computed, len(distinct))
    assert visits > 10 * computed, (visits, computed)
