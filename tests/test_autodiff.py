"""Reverse mode over the DSL (``tp.grad``) against numpy backprop and finite differences.

Every reference is recomputed here in numpy from the *same draws* as the finite-width
simulation (``sim.matrix``, ``sim.vector`` of the initial vectors); nothing is taken
from the code under test. Normalisation: ``tp.grad(f, x)`` is ``n ∂f/∂x``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from scipy import integrate

import tensorprog as tp
from tensorprog import nn

N = 257


def _relu(z):
    return np.maximum(z, 0.0)


def _two_layer():
    """f = ⟨v, z⟩ + 0.3 mean(z²) − 1 with z = Vᵀ(½ tanh h) + relu(h) ⊙ x, h = W x."""
    p = tp.Program("two_layer")
    W = p.matrix("W", var=2.0)
    V = p.matrix("V", var=0.5)
    x = p.vector("x")
    v = p.vector("v", var=1.5)
    h = W @ x
    y = tp.tanh(h)
    z = V.T @ (y * 0.5) + tp.relu(h) * x
    f = tp.inner(v, z) + 0.3 * tp.mean(z * z) - 1.0
    return p, f, {"x": x, "h": h, "y": y, "z": z}


def _numpy_two_layer(W, V, x, v):
    n = x.size
    h = W @ x
    y = np.tanh(h)
    z = V.T @ (0.5 * y) + _relu(h) * x
    f = v @ z / n + 0.3 * np.mean(z * z) - 1.0
    dz = v + 0.6 * z  # n ∂f/∂z
    dy = 0.5 * (V @ dz)
    dh = dy * (1 - y**2) + dz * x * (h > 0)
    dx = W.T @ dh + dz * _relu(h)
    return f, {"x": dx, "h": dh, "y": dy, "z": dz}


def test_grad_matches_numpy_backprop():
    p, f, vs = _two_layer()
    names = list(vs)
    grads = tp.grad(f, [vs[k] for k in names])
    sim = p.simulate(N, seed=3)
    W, V = sim.matrix("W"), sim.matrix("V")
    x, v = sim.vector("x"), sim.vector("v")
    fv, ref = _numpy_two_layer(W, V, x, v)
    assert sim[f] == pytest.approx(fv, rel=1e-12)
    for k, g in zip(names, grads):
        np.testing.assert_allclose(sim.vector(g), ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_grad_matches_finite_differences():
    p, f, vs = _two_layer()
    dx = tp.grad(f, vs["x"])
    sim = p.simulate(N, seed=5)
    W, V = sim.matrix("W"), sim.matrix("V")
    x, v = sim.vector("x"), sim.vector("v")
    rng = np.random.default_rng(0)
    for _ in range(3):
        u = rng.standard_normal(N)
        eps = 1e-6
        fp = _numpy_two_layer(W, V, x + eps * u, v)[0]
        fm = _numpy_two_layer(W, V, x - eps * u, v)[0]
        # directional derivative ∇f·u = (n ∂f/∂x)·u / n
        assert (fp - fm) / (2 * eps) == pytest.approx(sim.vector(dx) @ u / N, rel=1e-6, abs=1e-9)


def _layernorm():
    p = tp.Program("layernorm")
    W = p.matrix("W")
    x, v = p.vector("x"), p.vector("v")
    h = W @ x
    s = tp.sqrt(tp.mean(h * h))
    y = h / s
    f = tp.inner(v, tp.tanh(y))
    return p, f, h


def test_scalars_frozen_by_default_and_traversed_on_request():
    """Nonlin+ parameters are constants unless through_scalars=True (full gradient)."""
    p, f, h = _layernorm()
    frozen = tp.grad(f, h)
    full = tp.grad(f, h, through_scalars=True)
    sim = p.simulate(N, seed=1)
    hv, v = sim.vector(h), sim.vector("v")
    s = math.sqrt(np.mean(hv**2))
    y = hv / s
    g = v * (1 - np.tanh(y) ** 2)  # n ∂f/∂y
    np.testing.assert_allclose(sim.vector(frozen), g / s, rtol=1e-12)
    # full: y = h/s(h), s = √(mean h²): n ∂f/∂h = g/s − (⟨g, h⟩/s³) h
    ref = g / s - (g @ hv / N) / s**3 * hv
    np.testing.assert_allclose(sim.vector(full), ref, rtol=1e-10, atol=1e-13)

    def fval(hh):
        return v @ np.tanh(hh / math.sqrt(np.mean(hh**2))) / N

    u = np.random.default_rng(2).standard_normal(N)
    eps = 1e-6
    fd = (fval(hv + eps * u) - fval(hv - eps * u)) / (2 * eps)
    assert fd == pytest.approx(sim.vector(full) @ u / N, rel=1e-6)


def test_accumulates_over_several_uses():
    """x used twice in one Nonlin and again elsewhere: contributions are added."""
    p = tp.Program("multi")
    x, v = p.vector("x"), p.vector("v")
    y = tp.nonlin(lambda a, b: a * b, x, x)  # x²
    z = tp.sin(x) + y
    f = tp.inner(v, z) + tp.mean(x)
    dx = tp.grad(f, x)
    sim = p.simulate(N, seed=0)
    xv, vv = sim.vector(x), sim.vector(v)
    np.testing.assert_allclose(sim.vector(dx), vv * (np.cos(xv) + 2 * xv) + 1.0, rtol=1e-12)


def test_independent_vector_gets_zero_gradient():
    p = tp.Program("indep")
    x, y = p.vector("x"), p.vector("y")
    f = tp.mean(tp.tanh(x))
    dy = tp.grad(f, [y])[0]
    assert np.all(p.simulate(16, seed=0).vector(dy) == 0.0)


def test_limit_of_a_gradient_first_backward_pass():
    """dx = Wᵀ(v ⊙ tanh'(Wx)): Ż = 0 (GIA, THEORY §2.6) and 𝔼(dx)² = σ² 𝔼[v²] 𝔼[tanh'(h)²]."""
    p = tp.Program("backward")
    W = p.matrix("W", var=2.0)
    x, v = p.vector("x"), p.vector("v")
    f = tp.inner(v, tp.tanh(W @ x))
    dx = tp.grad(f, x)
    g = tp.mean(dx * dx, name="g")
    lim = p.limit()
    assert lim.Zdot(dx) == 0
    q = math.sqrt(2.0)  # h ~ N(0, σ² 𝔼x²) = N(0, 2)
    ref, _ = integrate.quad(
        lambda z: (1 - math.tanh(q * z) ** 2) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
        -np.inf,
        np.inf,
        epsabs=1e-13,
    )
    assert lim[g] == pytest.approx(2.0 * ref, rel=1e-8)
    sims = [p.simulate(2048, seed=s)[g] for s in range(4)]
    assert abs(np.mean(sims) - lim[g]) < 4 * np.std(sims, ddof=1) / 2 + 0.02


def test_reproduces_the_backward_pass_of_an_unrolled_sgd_run():
    """In μP (θ_f = 1/n) tp.grad of a train_sgd run's output f_t with respect to its
    pre-activations h^l_t is n ∂f_t/∂h^l_t of the finite network — the backward pass of a
    numpy MLP rebuilt from the same draws (``tests/programs.py``) — including the
    rank-one ΔWᵀ corrections, which flow through the Moment parameters."""
    from programs import numpy_mlp

    X = np.array([[1.0, -0.4], [0.3, 0.9]])
    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(2))
    run = nn.train_sgd(net, X, [0.5, -0.5], lr=0.8, steps=2, feature_kernels=False)
    t, i = 1, 1
    f = run.outputs[t, i]
    hs = [run.named["h1"][t, i], run.named["h2"][t, i]]
    auto = tp.grad(f, hs, through_scalars=True)
    sim = run.simulate(300, seed=4)
    explicit = numpy_mlp(run, sim, grads_at=(t, i))[2]
    for a, e in zip(auto, explicit):
        np.testing.assert_allclose(sim.vector(a), e, rtol=1e-10, atol=1e-12)
    # Frozen scalars drop the ΔWᵀ correction of layer 2 → a different dh1 at t ≥ 1.
    frozen = tp.grad(f, hs[0])
    sim = run.simulate(300, seed=4)
    assert np.max(np.abs(sim.vector(frozen) - explicit[0])) > 1e-3


def test_bad_arguments():
    p, f, vs = _two_layer()
    with pytest.raises(tp.ProgramTypeError, match="f must be a Scalar"):
        tp.grad(vs["x"], [vs["h"]])
    with pytest.raises(tp.ProgramTypeError, match="wrt must be Vectors or Scalars"):
        tp.grad(f, [p["W"]])
    with pytest.raises(tp.ProgramValueError, match="wrt"):
        tp.grad(f, [])
    q = tp.Program("other")
    y = q.vector("y")
    with pytest.raises(tp.ForeignHandleError):
        tp.grad(f, [y])


# ---------------------------------------------------------------------------------------
# Piecewise-constant φ: backprop uses the almost-everywhere derivative (sign' = 0)


def test_grad_through_sign_is_the_finite_network_backprop():
    """f = ⟨v, sign(h) tanh(h)⟩, h = W x: dx = Wᵀ(v ⊙ sign(h) tanh'(h)) (sign' = 0 a.e.),
    exactly the numpy backprop at finite width; its limit 𝔼[dx²] = σ²𝔼[v²]𝔼[tanh'(h)²]
    (sign² = 1; no Ż term: 𝔼_v[v·…] = 0) by Gauss–Hermite quadrature here."""
    p = tp.Program("sign_backprop")
    W, x, v = p.matrix("W", var=1.5), p.vector("x", var=0.8), p.vector("v")
    h = W @ x
    f = tp.inner(v, tp.sign(h) * tp.tanh(h))
    dx = tp.grad(f, x)
    k = tp.mean(dx * dx, name="k")
    sim = p.simulate(N, seed=4)
    Wn, xn, vn = sim.matrix("W"), sim.vector("x"), sim.vector("v")
    hn = Wn @ xn
    ref = Wn.T @ (vn * np.sign(hn) * (1 - np.tanh(hn) ** 2))
    np.testing.assert_allclose(sim.vector(dx), ref, rtol=1e-12, atol=1e-13)
    z, w = np.polynomial.hermite_e.hermegauss(200)
    var_h = 1.5 * 0.8
    expected = (
        1.5 * np.sum(w * (1 - np.tanh(np.sqrt(var_h) * z) ** 2) ** 2) / math.sqrt(2 * math.pi)
    )
    assert p.limit()[k] == pytest.approx(expected, rel=1e-9)


def test_sign_kernels_match_the_arcsine_recursion():
    """neural-tangents' ``Sign`` kernel: K^{l+1} = σ_w² (2/π) arcsin ρ^l + σ_b², and the
    NTK recursion Θ^{l+1} = K^{l+1} + σ_w² Σ̇ Θ^l with Σ̇ = 𝔼[sign'·sign'] = 0 (a.e.), so
    Θ = K. Inputs include ξ and −ξ (ρ = −1); diagonals use ρ = 1 exactly."""
    X = np.array([[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4], [0.7, -0.1, 0.6], [-1.0, -0.5, 0.3]])
    for depth, b_std in ((1, 0.0), (3, 0.2)):
        nngp, ntk = nn.kernels(X, depth=depth, nonlin="sign", W_std=1.3, b_std=b_std)
        w2, b2 = 1.3**2, b_std**2
        K = w2 * X @ X.T / X.shape[1] + b2
        for _ in range(depth):
            d = np.sqrt(np.diag(K))
            rho = np.clip(K / np.outer(d, d), -1, 1)
            np.fill_diagonal(rho, 1.0)
            K = w2 * (2 / np.pi) * np.arcsin(rho) + b2
        np.testing.assert_allclose(nngp, K, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ntk, K, rtol=0, atol=1e-12)


def test_sign_inside_the_program_keeps_the_dirac_stein_form():
    """Ż of sign *inside* the program is the distributional 𝔼[∂Z/∂Ẑ] = 2𝔼δ(h)·…, not 0:
    y = Wᵀ sign(W x) has 𝔼[x y] = 𝔼[∂ sign(Ẑ^{Wx})/∂Ẑ^{Wx}]·σ²𝔼[x²] = 2φ_σ(0)σ²𝔼x²,
    φ_σ(0) = 1/√(2πσ²𝔼x²) the density of h = Wx at 0."""
    p = tp.Program("sign_zdot")
    W, x = p.matrix("W", var=2.0), p.vector("x", var=0.5)
    y = W.T @ tp.sign(W @ x)
    m = tp.inner(x, y, name="m")
    var_h = 2.0 * 0.5
    assert p.limit()[m] == pytest.approx(2 / math.sqrt(2 * math.pi * var_h) * 2.0 * 0.5, rel=1e-9)
    assert tp.sign.derivative(ae=True).body == 0
    assert tp.sign.derivative().is_distribution


# ---------------------------------------------------------------------------------------
# Gradients with respect to scalars


def test_grad_wrt_scalars():
    """f = (m − d)² with m = mean(tanh(c x)²): ∂f/∂d = −2(m − d) and, through the
    Nonlin+ parameter c, ∂f/∂c = 2(m − d)·mean(2 tanh(cx) tanh'(cx) x) — numpy at finite
    width (same draws), and the limit by Gauss–Hermite quadrature."""
    p = tp.Program("scalar_grad")
    x, c, d = p.vector("x", var=1.3), p.scalar("c", 0.7), p.scalar("d", 0.3)
    m = tp.mean(tp.tanh(x * c) ** 2, name="m")
    f = (m - d) ** 2
    dm, dd = tp.grad(f, [m, d])
    dc = tp.grad(f, c, through_scalars=True)
    with pytest.raises(tp.ProgramValueError, match="scalar c enters .* through_scalars=True"):
        tp.grad(f, c)
    assert tp.grad(tp.mean(x * x), d) == 0.0
    sim = p.simulate(N, seed=5)
    xn = sim.vector("x")
    t = np.tanh(0.7 * xn)
    mn = np.mean(t**2)
    assert sim[dd] == pytest.approx(-2 * (mn - 0.3), rel=1e-12)
    assert sim[dm] == pytest.approx(2 * (mn - 0.3), rel=1e-12)
    assert sim[dc] == pytest.approx(2 * (mn - 0.3) * np.mean(2 * t * (1 - t**2) * xn), rel=1e-10)
    z, w = np.polynomial.hermite_e.hermegauss(200)
    xs, w = math.sqrt(1.3) * z, w / math.sqrt(2 * math.pi)
    ts = np.tanh(0.7 * xs)
    m_lim = np.sum(w * ts**2)
    lim = p.limit()
    assert lim[dd] == pytest.approx(-2 * (m_lim - 0.3), rel=1e-9)
    assert lim[dc] == pytest.approx(
        2 * (m_lim - 0.3) * np.sum(w * 2 * ts * (1 - ts**2) * xs), rel=1e-9
    )


# ---------------------------------------------------------------------------------------
# Vector–Jacobian products (cotangent=), several outputs, names, recorded instructions


def _ancestors(p, handles):
    seen, stack = set(), [h.var for h in handles]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        d = p.definition(v)
        stack += [
            u
            for u in (
                getattr(d, "args", ())
                + getattr(d, "params", ())
                + ((d.arg, d.matrix) if hasattr(d, "arg") else ())
            )
        ]
    return seen


def test_vector_jacobian_products_match_numpy_backprop():
    """grad(y, x, cotangent=c) = n ∂⟨c, y⟩/∂x, and several outputs add up:
    y = tanh(W x) ⊙ x, s = mean(x²) (∂s/∂x = 2x/n): numpy backprop on the same draws."""
    p = tp.Program("vjp")
    W, x, c = p.matrix("W", var=1.5), p.vector("x"), p.vector("c", var=0.7)
    h = W @ x
    y = tp.tanh(h) * x
    s = tp.mean(x * x)
    g = p.scalar("g", 0.3)
    dx, dh = tp.grad(y, [x, h], cotangent=c, names=["dx", "dh"])
    both = tp.grad([y, s], x, cotangent=[c, g])
    via_moment = tp.grad(tp.inner(c, y), x)
    sim = p.simulate(N, seed=7)
    Wn, xn, cn = sim.matrix("W"), sim.vector("x"), sim.vector("c")
    hn = Wn @ xn
    dh_ref = cn * xn * (1 - np.tanh(hn) ** 2)
    dx_ref = Wn.T @ dh_ref + cn * np.tanh(hn)
    np.testing.assert_allclose(sim.vector(dh), dh_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sim.vector(dx), dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim.vector(both), dx_ref + 0.3 * 2 * xn, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim.vector(via_moment), dx_ref, rtol=1e-10, atol=1e-12)
    assert dx.name == "dx" and dh.name == "dh"


def test_records_only_what_the_gradients_use():
    """Every instruction grad appends is an ancestor of a returned gradient; a target
    whose own inputs are off the paths records nothing beyond its gradient. For
    h = W x (a MatMul) and cotangent c: exactly one MatMul Wᵀc, named as asked."""
    p, f, vs = _two_layer()
    before = len(p)
    grads = tp.grad(f, [vs["x"], vs["h"], vs["z"]], through_scalars=True)
    new = {ins.out for ins in p.instructions[before:]}
    assert new <= _ancestors(p, grads)
    q = tp.Program("matmul_vjp")
    W, x, c = q.matrix("W"), q.vector("x"), q.vector("c")
    h = W @ x
    n0 = len(q)
    dx = tp.grad(h, x, cotangent=c, names="dx")
    assert len(q) == n0 + 1
    d = q.definition(dx)
    assert (d.matrix, d.arg, d.transpose, d.out.name) == (W.var, c.var, True, "dx")
    dh = tp.grad(h, h, cotangent=c)  # the cotangent itself: no instruction
    assert dh is c or dh.var is c.var
    assert len(q) == n0 + 1


def test_coefficients_ride_along_without_instructions():
    """The scalar factors of a linear chain (σ·W x, then a Moment's adjoint) become
    coefficients of the gradient's one instruction, not ScalarFn instructions."""
    p = tp.Program("coefs")
    W, x, v = p.matrix("W"), p.vector("x"), p.vector("v")
    a, b = p.scalar("a", 0.5), p.scalar("b", 2.0)
    h = tp.lincomb([((a, b), W @ x)])  # a·b·(W x)
    f = tp.inner(v, h) * 3.0
    n0 = len(p)
    dx = tp.grad(f, x)
    added = p.instructions[n0:]
    assert [type(i).__name__ for i in added] == ["MatMul", "Nonlin"]  # Wᵀv, then 3ab·(Wᵀv)
    sim = p.simulate(N, seed=1)
    ref = 3.0 * 0.5 * 2.0 * sim.matrix("W").T @ sim.vector("v")
    np.testing.assert_allclose(sim.vector(dx), ref, rtol=1e-12)


def test_bad_cotangents_and_names():
    p = tp.Program("bad")
    W, x, c = p.matrix("W"), p.vector("x"), p.vector("c")
    y = W @ x
    s = tp.mean(x * x)
    with pytest.raises(tp.ProgramTypeError, match="needs a cotangent"):
        tp.grad(y, x)
    with pytest.raises(tp.ProgramTypeError, match="cotangent of the vector"):
        tp.grad(y, x, cotangent=1.0)
    with pytest.raises(tp.ProgramTypeError, match="cotangent of the scalar"):
        tp.grad(s, x, cotangent=c)
    with pytest.raises(tp.ProgramTypeError, match="one cotangent per output"):
        tp.grad([y, s], x, cotangent=[c])
    with pytest.raises(tp.ProgramTypeError, match="names must give one str"):
        tp.grad(y, [x], cotangent=c, names=["a", "b"])
    q = tp.Program("other")
    with pytest.raises(tp.ForeignHandleError):
        tp.grad(y, x, cotangent=q.vector("c2"))


# ---------------------------------------------------------------------------------------
# Every kind of partial derivative, and deterministic builds


def test_every_derivative_kind_matches_finite_differences():
    """The partial derivatives grad forms are of five kinds: a term of a linear
    combination (with a Scalar coefficient: ∂(θx + 2y)/∂x = θ, /∂θ = x), an argument
    (∂(u²/2 + sin t)/∂u = u), a number (∂(u + eᵗ)/∂u = 1), a function of the parameters
    only (∂(u²/2 + sin t)/∂t = cos t), and a new Nonlin (tanh'). Through all of them,
    ``n ∂f/∂x`` and ``∂f/∂θ`` equal central differences of ``f`` recomputed in numpy
    on the same draws. Step ε = 1e-6: truncation O(ε²·f''') ≈ 1e-12 and rounding
    ≈ 1e-16·|f|/ε ≈ 1e-10, far below the tolerance."""
    u, t = sympy.symbols("u t", real=True)
    quad = tp.Nonlinearity("quad", u**2 / 2 + sympy.sin(t), [u], [t])
    shift = tp.Nonlinearity("shift", u + sympy.exp(t), [u], [t])
    p = tp.Program("kinds")
    W, x, v = p.matrix("W", var=1.5), p.vector("x"), p.vector("v", var=0.8)
    th = p.scalar("th", 0.6)
    h = W @ x
    y = tp.tanh(h)
    f = (
        tp.inner(v, quad(h, th))
        + tp.mean(shift(y, th) * x)
        + tp.inner(v, tp.lincomb([(th, x), (2.0, y)]))
    )
    dx, dth = tp.grad(f, [x, th], through_scalars=True)
    sim = p.simulate(N, seed=11)
    Wn, xn, vn = sim.matrix("W"), sim.vector("x"), sim.vector("v")

    def fval(xx, tt):
        hh = Wn @ xx
        yy = np.tanh(hh)
        return (
            vn @ (hh**2 / 2 + np.sin(tt)) / N
            + np.mean((yy + np.exp(tt)) * xx)
            + vn @ (tt * xx + 2 * yy) / N
        )

    assert sim[f] == pytest.approx(fval(xn, 0.6), rel=1e-12)
    eps = 1e-6
    for U in np.random.default_rng(4).standard_normal((3, N)):
        fd = (fval(xn + eps * U, 0.6) - fval(xn - eps * U, 0.6)) / (2 * eps)
        assert fd == pytest.approx(sim.vector(dx) @ U / N, rel=1e-6, abs=1e-9)
    fd = (fval(xn, 0.6 + eps) - fval(xn, 0.6 - eps)) / (2 * eps)
    assert fd == pytest.approx(sim[dth], rel=1e-6, abs=1e-9)


def test_two_builds_of_a_program_are_identical(tmp_path):
    """Building is deterministic: a training run (forward passes, tp.grad backward
    passes, SGD updates) and a kernel program, each built twice in one process (the
    second time with every cache warm), print and save identically."""
    X, Y = np.array([[1.0, 0.3], [-0.5, 1.0]]), np.array([0.5, -0.3])

    def train():
        net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.muP(2))
        return nn.train_sgd(net, X, Y, lr=1.0, steps=2).program

    def kernel():
        return nn.kernel_program(X, 3, "tanh", 1.5, 0.1)[0]

    for build in (train, kernel):
        a, b = build(), build()
        assert str(a) == str(b) and a.aliases == b.aliases
        a.save(tmp_path / "a.json")
        b.save(tmp_path / "b.json")
        assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
