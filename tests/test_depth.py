"""nn.resnet / Depth-μP [TP6]: the compiled finite network against a numpy residual network
written here (forward and backward by hand, from the same draws: ``sim.param``), the
infinite-width limit against finite widths, the init kernel against its closed form, the
classification of TP6 §7.1 on a grid, and the gradient diversity of TP6 §8 against
Gaussian expectations computed here by quadrature."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from reference_nets import layernorm, layernorm_vjp
from scipy import integrate, stats

import tensorprog as tp
from tensorprog import nn

X2 = np.array([[1.0, 0.0], [0.6, 0.8]])
Y2 = np.array([1.0, -0.5])

# ---------------------------------------------------------------------------------------
# numpy reference: x0 = Uξ, x^l = x^{l-1} + c·MS(g^l(x^{l-1})), f = V x^L, mse loss,
# μP SGD learning rates (docs/training-any-model.md): lr·n (U), lr·mult (hidden), lr/n (V)

_PHI = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "abs": (np.abs, np.sign),
}


def _forward(P, xi, Ws, c, phi, ln=False):
    f, _ = _PHI[phi]
    x = P["U"] @ xi
    cache = []
    for blk in Ws:
        y, lnc = layernorm(x) if ln else (x, None)
        hs, ys = [], [y]
        for w in blk:
            h = P[w] @ y
            hs.append(h)
            y = f(h)
            ys.append(y)
        x = x + c * (y - y.mean())
        cache.append((lnc, hs, ys))
    return x, cache


def ref_resnet(P, X, Y, steps, lr, n, c, Ws, phi, hidden_mult, ln=False):
    """Outputs (steps+1, B) and losses of full-batch SGD."""
    P = {k: v.copy() for k, v in P.items()}
    B = X.shape[0]
    _, dfun = _PHI[phi]
    lrs = {"U": lr * n, "V": lr / n} | {w: lr * hidden_mult for blk in Ws for w in blk}
    outs, losses = [], []
    for t in range(steps + 1):
        fw = [_forward(P, xi, Ws, c, phi, ln) for xi in X]
        F = np.array([(P["V"] @ x)[0] for x, _ in fw])
        outs.append(F)
        losses.append(((F - Y) ** 2).sum() / (2 * B))
        if t == steps:
            break
        G = {k: np.zeros_like(v) for k, v in P.items()}
        for i, (x, cache) in enumerate(fw):
            d = (F[i] - Y[i]) / B
            G["V"] += d * x[None, :]
            dx = d * P["V"][0]
            for blk, (lnc, hs, ys) in zip(reversed(Ws), reversed(cache)):
                dy = c * dx
                dy = dy - dy.mean()  # MS is symmetric
                for j in reversed(range(len(blk))):
                    dh = dy * dfun(hs[j])
                    G[blk[j]] += np.outer(dh, ys[j])
                    dy = P[blk[j]].T @ dh
                dx = dx + (layernorm_vjp(dy, lnc) if ln else dy)
            G["U"] += np.outer(dx, X[i])
        for k in P:
            P[k] = P[k] - lrs[k] * G[k]
    return np.array(outs), np.array(losses)


@pytest.mark.parametrize(
    "L, block, param, phi, lr, ln",
    [
        (3, "one", nn.depth_muP(), "relu", 0.8, False),
        (2, "two", nn.depth_ode(), "abs", 0.3, False),
        (2, "one", nn.depth_muP(), "abs", 0.5, True),
    ],
)
def test_simulation_is_the_numpy_resnet(L, block, param, phi, lr, ln):
    """simulate(n) equals the residual network written above from the same draws, to
    float rounding (Depth-μP relu one-layer blocks; α = 1 abs two-layer blocks, whose
    hidden learning rate is L^{α−γ} = L times μP's; pre-LayerNorm blocks, with the gradient
    through LayerNorm's statistics)."""
    m = nn.resnet(2, 1, L, block=block, param=param, nonlin=phi, branch_mult=0.9, layernorm=ln)
    run = nn.train(m, X2, Y2, steps=2, optimizer=nn.SGD(lr))
    n = 48
    sim = run.simulate(n, seed=4)
    names = [s.name for s in m.params.values()]
    P = {k: np.atleast_2d(sim.param(k)) for k in names}
    hidden = names[1:-1]
    k = 1 if block == "one" else 2
    Ws = [hidden[i : i + k] for i in range(0, len(hidden), k)]
    c = 0.9 * L ** -float(param.alpha)
    mult = float(L) ** float(param.alpha - param.gamma)
    outs, losses = ref_resnet(P, X2, Y2, 2, lr, n, c, Ws, phi, mult, ln)
    np.testing.assert_allclose(sim.outputs[..., 0], outs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sim.loss, losses, rtol=1e-9, atol=1e-12)
    assert P["U"].shape == (n, 2) and P["V"].shape == (1, n)


def test_limit_agrees_with_finite_widths_L2():
    """Depth-μP, L = 2: the limit against widths 256 and 512 (16 seeds each)
    extrapolated in 1/n (f_∞ ≈ 2 f_512 − f_256; its standard error combines both
    sample means' and the limit's Monte Carlo error): within 4 standard errors. (L = 4, 8
    and n up to 4096: benchmarks/depth.py.)"""
    run = nn.train(nn.resnet(2, 1, 2), X2, Y2, steps=2, optimizer=nn.SGD(0.5))
    lim = run.limit(seed=0, method="montecarlo", samples=100_000)
    means, ses = [], []
    for n in (256, 512):
        vals = np.array(
            [
                np.concatenate([s.outputs.ravel(), s.loss])
                for s in (run.simulate(n, seed=k) for k in range(16))
            ]
        )
        means.append(vals.mean(0))
        ses.append(vals.std(0, ddof=1) / np.sqrt(len(vals)))
    extrap = 2 * means[1] - means[0]
    se = np.sqrt(4 * ses[1] ** 2 + ses[0] ** 2)
    limv = np.concatenate([lim.outputs.ravel(), lim.loss])
    lims = np.concatenate([lim.stderr.ravel(), lim.loss_stderr])
    z = np.abs(extrap - limv) / np.sqrt(se**2 + lims**2)
    assert z.max() < 4, z
    assert abs(lim.loss[2] - lim.loss[0]) > 10 * lims[-1]  # it trains (nontrivial)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_init_kernel_closed_form(alpha):
    """At initialisation ⟨x^l, x^l⟩ → q_l with q_l = q_{l−1}(1 + L^{-2α}·Var relu(Z)),
    Var relu(Z) = 1/2 − 1/(2π) (h^l ~ N(0, q_{l−1}) independent of x^{l−1}, MS removes
    the mean): the limit of the recorded Moments equals it to Monte Carlo error."""
    L = 4
    P = nn.DepthParametrization(alpha, 1 - alpha)
    m = nn.resnet(2, 1, L, param=P, record=[(b, b) for b in range(L + 1)])
    run = nn.train(m, X2[:1], Y2[:1], steps=1, optimizer=nn.SGD(0.1))
    lim = run.limit(seed=1, method="montecarlo", samples=50_000)
    v = 0.5 - 1 / (2 * np.pi)
    for b in range(L + 1):
        q = (1 + L ** (-2 * alpha) * v) ** b  # q_0 = ‖ξ‖² = 1
        got, se = lim.named(f"xx{b}_{b}")[0, 0], lim.named_stderr(f"xx{b}_{b}")[0, 0]
        assert abs(got - q) < 4 * se + 1e-12, (b, got, q, se)


# ---------------------------------------------------------------------------------------
# Classification [TP6 §7.1]


GRID = [Fraction(k, 4) for k in range(-2, 7)]  # -1/2 … 3/2


@pytest.mark.parametrize("alpha", GRID)
@pytest.mark.parametrize("gamma", GRID)
def test_classify_depth_claims(alpha, gamma):
    """Claims 7.1–7.5 on a grid of (α, γ), written out independently here."""
    c = nn.classify_depth(alpha, gamma)
    half = Fraction(1, 2)
    assert c.stable_init == (alpha >= half)  # Claim 7.1
    if alpha < half:
        assert c.stable_training is None and c.kappa is None and not c.stable
        assert not c.is_depth_muP
        return
    assert c.stable_training == (alpha + gamma >= 1)  # Claim 7.2
    assert c.nontrivial == (alpha + gamma <= 1)
    if alpha + gamma != 1:
        assert c.faithful is None and c.kappa is None and not c.is_depth_muP
        return
    assert c.faithful_init and c.faithful_training == (alpha <= 1)  # Claim 7.3
    assert c.faithful == (half <= alpha <= 1)
    assert c.feature_learning == (True if c.faithful else None)
    if half < alpha <= 1:
        assert c.kappa == 0 and c.redundant  # Claim 7.4
    assert c.is_depth_muP == (alpha == half and gamma == half)  # Claim 7.5
    if c.is_depth_muP:
        assert c.kappa == half and c.feature_learning
    assert len(c.explain().splitlines()) == len(c.reasons) + 1


def test_presets():
    assert nn.depth_muP().classify().is_depth_muP
    assert nn.depth_ode().classify().redundant
    assert not nn.depth_standard().classify().stable_init
    P = nn.depth_muP()
    assert P.multiplier(64, 2.0) == 0.25 and P.lr_mult(64, nn.SGD(0.1)) == 1.0
    assert nn.DepthParametrization("1/2", "1/2") == P.__class__(0.5, 0.5, "Depth-μP")


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(depth=0), tp.ProgramValueError),
        (dict(block="three"), tp.ProgramValueError),
        (dict(param=(0.5, 0.5)), tp.ProgramTypeError),
        (dict(nonlin="nope"), tp.TensorProgramError),
        (dict(record=[(0, 9)]), tp.ProgramValueError),
        (dict(mean_subtract=1), tp.ProgramTypeError),
    ],
)
def test_resnet_bad_arguments(kwargs, err):
    args = dict(d_in=2, d_out=1, depth=3) | kwargs
    with pytest.raises(err):
        nn.resnet(**args)


def test_classify_depth_bad_arguments():
    with pytest.raises(tp.ProgramTypeError):
        nn.classify_depth(None, 0.5)
    with pytest.raises(tp.ProgramValueError):
        nn.classify_depth("one half", 0.5)


# ---------------------------------------------------------------------------------------
# Gradient diversity [TP6 §8.3]


def _ratio(dphi):
    """(E φ'(Z))² / E φ'(Z)², Z ~ N(0, 1), by quadrature."""

    def e(g):  # the two half-lines separately: φ' may jump at 0
        return sum(
            integrate.quad(lambda z: g(z) * stats.norm.pdf(z), a, b)[0]
            for a, b in ((-np.inf, 0), (0, np.inf))
        )

    return e(dphi) ** 2 / e(lambda z: dphi(z) ** 2)


@pytest.mark.parametrize(
    "phi, dphi",
    [
        ("identity", lambda z: 1.0),
        ("relu", lambda z: float(z > 0)),
        ("abs", lambda z: float(np.sign(z))),
        (tp.ab_relu(0.5, 1.0), lambda z: 1.0 if z > 0 else 0.5),
    ],
)
def test_gradient_diversity_factorises(phi, dphi):
    """ρ_h(l) = ρ_x(l)·(Eφ')²/Eφ'² in the limit (h^l independent across blocks and of δx):
    1 for the identity, 1/2 for relu, 0 for |·| — TP6 §8.3's decorrelation by φ'."""
    g = nn.gradient_diversity(phi, 8, layers=[4], seed=0, method="montecarlo", samples=100_000)
    expect = g.rho_x[0] * _ratio(dphi)
    assert abs(g.rho_h[0] - expect) < 4 * g.rho_h_stderr[0] + 1e-12, (g.rho_h, expect)


def test_abs_maximises_gradient_diversity_among_homogeneous():
    """Among the positively 1-homogeneous φ(z) = p·max(z, 0) + q·min(z, 0) (``ab_relu(q,
    p)``, (q, p) on the unit circle) the limit's diversity 1 − ρ_h is largest at |·|
    (q = −p), where it is 1; it equals 1 − ρ_x·(p + q)²/(2(p² + q²)) (the quadrature-free
    closed form of (Eφ')²/Eφ'² for this family)."""
    thetas = np.linspace(-np.pi / 2, np.pi / 2, 9)  # θ = −π/4: |·|, 0: relu, π/4: identity
    div = []
    for th in thetas:
        q, p = np.sin(th), np.cos(th)
        q, p = (-1.0, 1.0) if np.isclose(th, -np.pi / 4) else (round(q, 12), round(p, 12))
        g = nn.gradient_diversity(
            tp.ab_relu(q, p), 4, layers=[2], seed=0, method="montecarlo", samples=50_000
        )
        expect = 1 - g.rho_x[0] * (p + q) ** 2 / (2 * (p * p + q * q))
        assert abs(g.diversity[0] - expect) < 4 * g.rho_h_stderr[0] + 1e-12, (
            th,
            g.diversity,
            expect,
        )
        div.append(g.diversity[0])
    assert int(np.argmax(div)) == 2 and abs(div[2] - 1) < 0.01
