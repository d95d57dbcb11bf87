"""The operator (neural-tangent) regime of entrywise optimizers (issue 16 point 5, TP4b §2.4).

References, none of which imports the code under test:

* ``Q = id``: ``K_id(χ) = Θχ`` with ``Θ`` the NTK of ``nn.kernels`` (neural-tangents'
  conventions, its own test suite checks it against published values and quadrature);
* SignSGD, batch size 1, a one-hidden-layer relu net: ``K_Q(χ)`` by ``scipy.integrate.quad``
  written here from the operator's definition [TP4b Def 2.4.4], and its ``ε → 0`` limit
  ``sign(χ)·K_sign`` in closed form;
* Adam, NTP, two hidden layers: ``run.simulate(n)`` against the numpy Adam network of
  ``tests/reference_nets.py`` (centred: trained on ``f − f_0``, i.e. on the targets
  ``y + f_0``) to 1e-10, and ``run.limit()`` against that network's seed means at
  ``n = 512, 1024, 2048`` extrapolated in ``1/n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
import reference_nets as ref
import sympy
from scipy import integrate
from test_train_reference import extrapolate, tp_model

import tensorprog as tp
from tensorprog import ProgramValueError, nn

EPS = 0.3
BETAS = (0.9, 0.99)


@dataclass(frozen=True)
class IdentityQ(nn.Entrywise):
    """``Q_t(g_0..g_t) = g_t``: plain SGD written as an entrywise optimizer."""

    def memory(self, t):
        return (t,)

    def q(self, t, gs, eps, sqrt=sympy.sqrt):
        return gs[0]


def relu_model(depth: int, d: int = 2, lr_in: float = 1.0) -> nn.Model:
    """``f = W_out relu(W_hid … relu(W_in ξ))`` with ``depth`` hidden layers; ``lr_in``:
    the input weights' ``lr_mult``."""
    m = nn.Model(f"relu{depth}")
    m.param("W_in", ("n", d), lr_mult=lr_in)
    for j in range(depth - 1):
        m.param(f"W_{j}", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        x = tp.relu(p.W_in @ xi)
        for j in range(depth - 1):
            x = tp.relu(p[f"W_{j}"] @ x)
        return p.W_out @ x

    return m


@pytest.mark.parametrize("depth", [1, 3])
def test_identity_q_is_the_ntk(depth):
    """``K_id(χ) = Θχ`` to 1e-10 (both exact: the outer product with ``Q = id`` is
    separable, relu's arc-cosine closed forms) for relu nets with 1 and 3 hidden layers.
    neural-tangents' input layer is ``W ξ/√d`` with ``W`` iid ``N(0, 1)`` trained at rate 1:
    NTP's input weights ``P = W/√d`` trained at rate ``1/d`` (``lr_mult = 1/d``)."""
    X = np.array([[1.0, 0.5], [-0.3, 1.0], [0.7, -0.8]])
    K = nn.operator_kernel(relu_model(depth, lr_in=0.5), X, nn.NTK(), IdentityQ(1.0, 1.0))
    _, ntk = nn.kernels(X, depth=depth, nonlin="relu", W_std=1.0, b_std=0.0)
    chi = np.array([[0.4], [-1.3], [0.25]])
    got = K(chi)
    assert K.method == "compiled"
    np.testing.assert_allclose(got, ntk @ chi, rtol=1e-10, atol=1e-12)
    chi2 = np.array([[1.0], [0.0], [-2.0]])  # the same compiled program, new χ
    np.testing.assert_allclose(K(chi2), ntk @ chi2, rtol=1e-10, atol=1e-12)


def _k_sign_quadrature(xi: np.ndarray, chi: float, eps: float) -> float:
    r"""``K_Q(χ)`` of ``f = W_out relu(W_in ξ)`` (NTP, ``W_in`` entries ``N(0, 1/d)``) for
    ``Q(g) = g/√(g² + ε²)`` and one input [TP4b Def 2.4.4]: ``h ~ N(0, q)``,
    ``q = |ξ|²/d``; ``u ~ N(0, 1)`` the normalised readout (``dh = u·1[h > 0]``):
    ``E[Q(χ relu(h)) relu(h)] + Σ_j ξ_j · ½ E[u Q(χ u ξ_j)]``."""

    def Q(g):
        return g / np.sqrt(g * g + eps * eps)

    q = float(xi @ xi) / len(xi)
    s = np.sqrt(q)
    phi = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    out, _ = integrate.quad(lambda z: s * z * Q(chi * s * z) * phi(z), 0, np.inf, epsabs=1e-13)
    for x in xi:
        inn, _ = integrate.quad(
            lambda u, x=x: u * Q(chi * u * x) * phi(u), -np.inf, np.inf, epsabs=1e-13
        )
        out += x * 0.5 * inn
    return out


@pytest.mark.slow  # ≈ 8 s: Monte Carlo limits of three kernels (9 calls)
def test_signsgd_batch_one_against_quadrature_and_sign_limit():
    """SignSGD, batch 1: ``K(χ)`` against scipy quadrature within 4 of the library's
    standard errors (its ``E[dh·Q(χ dh ξ_j)]`` with ``dh = u·1[h > 0]`` is a Monte Carlo
    value; quadrature's error, below 1e-9, is negligible); odd in ``χ``, and by
    scale-equivariance ``K_ε(χ) = sign(χ)·K_{ε/|χ|}(1)``; as ``ε/|χ| → 0`` it tends to
    ``sign(χ)·K_sign``, ``K_sign = √q/√(2π) + Σ_j |ξ_j|/√(2π)`` (``E relu(h) = √q/√(2π)``,
    ``½E|u| = 1/√(2π)``): linear in ``sign(χ)`` [TP4b §2.4], to the ``O(δ log 1/δ)`` of
    ``|Q − sign|`` at ``δ = ε/|χ| = 1e-3`` (bounded by 1e-2·K_sign)."""
    xi = np.array([[1.0, -0.5]])
    m = relu_model(1)
    K = nn.operator_kernel(m, xi, nn.NTK(), nn.SignSGD(1.0, eps=EPS), samples=40_000, seed=1)

    def value(kern, chi):
        v = float(kern([[chi]])[0, 0])
        return v, float(kern.stderr[0, 0])

    for chi in (0.7, -2.0):
        got, se = value(K, chi)
        assert abs(got - _k_sign_quadrature(xi[0], chi, EPS)) <= 4 * se + 1e-9, (chi, got, se)
    (a, sa), (b, sb) = value(K, 0.7), value(K, -0.7)
    assert abs(a + b) <= 4 * np.hypot(sa, sb) + 1e-12
    K2 = nn.operator_kernel(m, xi, nn.NTK(), nn.SignSGD(1.0, eps=EPS / 2.0), samples=40_000, seed=1)
    (a, sa), (b, sb) = value(K, -2.0), value(K2, 1.0)
    assert abs(a + b) <= 4 * np.hypot(sa, sb) + 1e-12
    q = float(xi[0] @ xi[0]) / 2
    k_sign = (np.sqrt(q) + np.abs(xi[0]).sum()) / np.sqrt(2 * np.pi)
    Ks = nn.operator_kernel(m, xi, nn.NTK(), nn.SignSGD(1.0, eps=1e-3), samples=40_000, seed=1)
    for chi in (1.0, -1.0):
        got, se = value(Ks, chi)
        assert abs(got - np.sign(chi) * k_sign) <= 1e-2 * k_sign + 4 * se
        assert abs(got - _k_sign_quadrature(xi[0], chi, 1e-3)) <= 4 * se + 1e-9


# ------------------------------------------------------------------ Adam, NTP, finite widths

MODEL = ref.mlp2()  # tanh, W_in (n, 2), W_hid (n, n) with lr_mult 0.5, W_out (2, n)
X2 = np.random.default_rng(12).standard_normal((2, 2))
Y2 = np.array([[1.0, -0.5], [-0.5, 0.5]])
LR = 0.3
STEPS = 3
_RUN: dict = {}


def adam_run():
    if not _RUN:
        _RUN["run"] = nn.train(
            tp_model(MODEL), X2, Y2, steps=STEPS, optimizer=nn.Adam(LR, BETAS, EPS),
            param=nn.NTK(),
        )  # fmt: skip
    return _RUN["run"]


def ntp_settings(n: int) -> tuple[dict, dict]:
    """NTP for Adam without multipliers (TP4b Def 2.4.1 by TP4b Prop 2.2.3, θ = −a):
    learning rates ``lr·lr_mult·n^{-c}`` with ``c`` = 1/2 (input), 3/2 (hidden), 1 (output),
    ``ε_P = ε·n^{-d}`` with ``d`` = 1/2, 1/2, 0."""
    c = {"input": 0.5, "hidden": 1.5, "output": 1.0}
    d = {"input": 0.5, "hidden": 0.5, "output": 0.0}
    lrs = {s.name: LR * s.lr_mult * n ** -c[s.cls] for s in MODEL.specs}
    epss = {s.name: EPS * n ** -d[s.cls] for s in MODEL.specs}
    return lrs, epss


def ntp_init(n: int, rng: np.random.Generator) -> dict:
    """NTP's initial weights: ``W_in`` entries ``N(0, 1/d)``, ``W_hid`` and ``W_out``
    entries ``N(0, 1/n)``."""
    return {
        "W_in": rng.standard_normal((n, 2)) / np.sqrt(2),
        "W_hid": rng.standard_normal((n, n)) / np.sqrt(n),
        "W_out": rng.standard_normal((2, n)) / np.sqrt(n),
    }


def centred_adam(P0: dict, n: int) -> np.ndarray:
    """The numpy Adam network trained on ``f − f_0`` (= on the targets ``y + f_0``);
    returns ``f_t − f_0``, shape (steps+1, B, 2)."""
    F0 = ref.outputs_of(MODEL, P0, X2)
    lrs, epss = ntp_settings(n)
    outs, _ = ref.train_entrywise(
        MODEL, P0, lrs, epss, X2, Y2 + F0, loss="mse", steps=STEPS, rule="adam", betas=BETAS
    )
    return outs - F0


def test_simulate_is_the_centred_numpy_adam_network():
    """``run.simulate(64)`` is the actual NTP Adam network (centred) on the same draws."""
    run = adam_run()
    assert run.operator and run.center
    n = 64
    sim = run.simulate(n, seed=3)
    P0 = {s.name: sim.param(s.name) for s in MODEL.specs}
    np.testing.assert_allclose(
        sim.outputs.astype(float), centred_adam(P0, n), rtol=1e-10, atol=1e-12
    )


@pytest.mark.slow  # ≈ 10 s idle (26 s under load): an MC limit with 6 outer products, 24 networks
def test_limit_against_finite_widths():
    """The ``K_Q`` recursion against the numpy network's seed means at n = 512, 1024,
    2048 (8 seeds each), extrapolated in ``1/n``: within 4 combined standard errors; and
    the training moved ``f`` by many of them."""
    lim = adam_run().limit(samples=4096, seed=0)
    got = np.asarray(lim.outputs, float)[1:].ravel()
    err = np.asarray(lim.stderr, float)[1:].ravel()
    widths = (512, 1024, 2048)
    runs = []
    for n in widths:
        vals = []
        for seed in range(8):
            P0 = ntp_init(n, np.random.default_rng([n, seed, 7]))
            vals.append(centred_adam(P0, n)[1:].ravel())
        runs.append(np.array(vals))
    a, se_fit = extrapolate(widths, runs)
    z = np.abs(got - a) / np.sqrt(se_fit**2 + err**2)
    assert z.max() < 4, (z, got, a)
    assert np.abs(got).max() > 20 * np.sqrt(se_fit**2 + err**2).max()


def test_refusals():
    """μP is not an operator regime (``operator_kernel`` refuses); an output that is not
    an output weight's use cannot be centred (``center=True`` raises with the reason, the
    default builds the uncentred run, refused for its diverging ``f_0``)."""
    with pytest.raises(ProgramValueError, match="a\\+b ≥ 1"):
        nn.operator_kernel(relu_model(1), X2, nn.muP(), nn.SignSGD(1.0, EPS))
    m = nn.Model("scaled")
    m.param("W_in", ("n", 2))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        return 2.0 * (p.W_out @ tp.tanh(p.W_in @ xi))

    with pytest.raises(ProgramValueError, match="cannot centre"):
        nn.train(m, X2, Y2[:, 0], steps=1, optimizer=nn.SignSGD(0.1, EPS), param=nn.NTK(),
                 center=True)  # fmt: skip
    with pytest.raises(ProgramValueError, match="Gaussian-process.*cannot centre"):
        nn.train(m, X2, Y2[:, 0], steps=1, optimizer=nn.SignSGD(0.1, EPS), param=nn.NTK())
    run = nn.train(m, X2, Y2[:, 0], steps=1, optimizer=nn.SignSGD(0.1, EPS), param=nn.NTK(),
                   allow_unstable=True)  # fmt: skip
    assert not run.operator and run.problems


def test_classify_agrees_with_train_in_the_operator_regime():
    """NTP's exponents with a hidden learning rate too large by ``n^{1/2}`` (``c = 1``): the
    hidden term of ``K_Q`` moves ``f`` by ``n^{1/2}`` — ``classify`` and ``nn.train`` both
    refuse, naming ``W_hid``; NTP itself is built."""
    m = tp_model(MODEL)
    h = Fraction(1, 2)
    ok = {"W_in": (0, 0, h, h), "W_hid": (0, h, 3 * h, h), "W_out": (0, h, 1, 0)}
    bad = dict(ok, W_hid=(0, h, 1, h))
    for expo, built in ((ok, True), (bad, False)):
        param = nn.abcd(expo)
        cls = nn.classify(m, param, nn.SignSGD(0.1, EPS))
        assert cls.limit_supported == built
        if built:
            assert nn.train(
                m, X2, Y2, steps=1, optimizer=nn.SignSGD(0.1, EPS), param=param
            ).operator
        else:
            with pytest.raises(ProgramValueError, match="W_hid.*diverges"):
                nn.train(m, X2, Y2, steps=1, optimizer=nn.SignSGD(0.1, EPS), param=param)


@pytest.mark.slow  # ≈ 8 s: two Monte Carlo limits
def test_identity_q_run_is_the_sgd_kernel_regime_run_tied_weights():
    """``Q = id`` through ``nn.train`` (the operator-regime recursion, ``K_Q`` from the
    kets) against ``nn.SGD`` under NTP (the centred kernel-regime program of
    ``nn.train``, built by a different construction, tested against numpy networks in
    tests/test_train_kernel*.py): the same finite network, so the same limit, every step,
    within 4 combined standard errors — on a model with a bias and a hidden weight used
    twice, ``W`` and ``Wᵀ`` (the transposed nonlinear outer product)."""
    m = nn.Model("tied")
    m.param("W_in", ("n", 2))
    m.param("b", ("n",))
    m.param("W", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        x1 = tp.tanh(p.W_in @ xi + p.b)
        return p.W_out @ tp.tanh(p.W.T @ tp.tanh(p.W @ x1))

    X = np.array([[1.0, 0.5], [-0.3, 1.0]])
    Y = np.array([0.6, -0.4])
    r_id = nn.train(m, X, Y, steps=3, optimizer=IdentityQ(0.5, 1.0), param=nn.NTK())
    r_sgd = nn.train(m, X, Y, steps=3, optimizer=nn.SGD(0.5), param=nn.NTK())
    assert r_id.operator and r_sgd.center and not r_sgd.operator
    a = r_id.limit(samples=40_000, seed=0)
    b = r_sgd.limit(samples=40_000, seed=1)
    ga, gb = np.asarray(a.outputs, float), np.asarray(b.outputs, float)
    se = np.hypot(np.asarray(a.stderr, float), np.asarray(b.stderr, float))
    assert np.all(np.abs(ga - gb) <= 4 * se + 1e-12), (ga, gb, se)
    assert np.abs(ga[-1]).max() > 50 * se.max()
