r"""The shared table of programs with independently known limits (issue #14, point 6).

Every :class:`Entry` builds one program through the public API only (``import
tensorprog as tp``, ``tensorprog.nn``) and gives the limits of some of its scalars from
a reference computed without tensorprog: a closed form (with its source), a
scipy/numpy quadrature written here, or a derivation by the Z-calculus written out in
the docstring [TP3 Box 1; TP4 §7 Def 7.3] whose remaining one- to three-dimensional
Gaussian integrals are computed here. ``tests/test_backends.py`` drives every backend
over this table; other test modules may import the references.

Papers: [TP3] Yang 2020, *Tensor Programs III: Neural Matrix Laws*, arXiv:2009.10685;
[TP4] Yang & Hu 2021, *Tensor Programs IV: Feature Learning in Infinite-Width Neural
Networks*, arXiv:2011.14522; [CS09] Cho & Saul 2009, *Kernel Methods for Deep
Learning*, NeurIPS (arc-cosine kernels of degree 0 and 1); [W97] Williams 1997,
*Computing with Infinite Networks*, NeurIPS (the erf kernel); [J18] Jacot, Gabriel &
Hongler 2018, *Neural Tangent Kernel*, NeurIPS (Thm 1: the NTK recursion);
[NT20] Novak et al. 2020, *Neural Tangents*, ICLR (the "ntk" parameterization that
``tensorprog.nn.kernel_program`` follows).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate

import tensorprog as tp
from tensorprog import nn

SQ2PI = math.sqrt(2 * math.pi)

#: Requested accuracy of the scipy quadratures below; their returned error estimates
#: are far below it for these smooth-or-kinked-at-known-points integrands.
QUAD = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 200}


# --------------------------------------------------------------------------------------
# Reference integrals (scipy / numpy only)
# --------------------------------------------------------------------------------------


def gauss1(f: Callable[[float], float], var: float = 1.0, mean: float = 0.0) -> float:
    """𝔼 f(X), X ~ N(mean, var), by adaptive quadrature split at the mean and at 0
    (where the kinks of relu, abs and step lie)."""
    s = math.sqrt(var)

    def g(z: float) -> float:
        return f(mean + s * z) * math.exp(-z * z / 2) / SQ2PI

    cuts = sorted({0.0, -mean / s})
    pieces = [(-np.inf, cuts[0])] + list(zip(cuts, cuts[1:])) + [(cuts[-1], np.inf)]
    return sum(integrate.quad(g, a, b, **QUAD)[0] for a, b in pieces)


def gauss2(f: Callable[[float, float], float], k11: float, k12: float, k22: float) -> float:
    """𝔼 f(X, Y) for centred (X, Y) with covariance [[k11, k12], [k12, k22]], by nested
    adaptive quadrature: X = a z₁, Y = b z₁ + c z₂ (Cholesky), the outer integral
    split at z₁ = 0 and the inner one at Y = 0, so kinks on the axes X = 0, Y = 0 are
    integration limits, not interior points."""
    a = math.sqrt(k11)
    b = k12 / a
    c2 = k22 - b * b
    c = math.sqrt(c2) if c2 > 1e-12 * k22 else 0.0  # (X, Y) on a line: one integral

    def inner(z1: float) -> float:
        x = a * z1
        if c == 0.0:
            return f(x, b * z1)
        cut = -b * z1 / c
        g = lambda z2: f(x, b * z1 + c * z2) * math.exp(-z2 * z2 / 2) / SQ2PI  # noqa: E731
        return (
            integrate.quad(g, -np.inf, cut, **QUAD)[0] + integrate.quad(g, cut, np.inf, **QUAD)[0]
        )

    h = lambda z1: inner(z1) * math.exp(-z1 * z1 / 2) / SQ2PI  # noqa: E731
    return integrate.quad(h, -np.inf, 0.0, **QUAD)[0] + integrate.quad(h, 0.0, np.inf, **QUAD)[0]


def hermite_nd(f: Callable[..., np.ndarray], cov: np.ndarray, degree: int) -> float:
    """𝔼 f(X) for X ~ N(0, cov) in d ≤ 3 dimensions by the tensor Gauss–Hermite rule of
    ``degree`` nodes per axis on X = L z (L the Cholesky factor): exact for polynomials
    of degree < 2·degree per axis, geometrically convergent for analytic integrands.
    Callers compare two degrees to state the accuracy."""
    nodes, weights = hermegauss(degree)
    weights = weights / SQ2PI
    d = len(cov)
    grids = np.meshgrid(*([nodes] * d), indexing="ij")
    z = np.stack([g.ravel() for g in grids])
    w = np.prod(np.meshgrid(*([weights] * d), indexing="ij"), axis=0).ravel()
    x = np.linalg.cholesky(np.asarray(cov, dtype=float)) @ z
    return float(np.sum(w * f(*x)))


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One program and what every backend must do with it.

    Attributes
    ----------
    build : () -> (Program, {scalar name: limit})
        A fresh program and the reference limits of (some of) its scalars.
    exact : bool
        ``method="exact"`` applies (every expectation has a Wick polynomial or a
        registered closed form); otherwise it must raise ``MethodUnavailableError``.
    quadrature : bool
        ``method="quadrature"`` applies (few enough base Gaussians per expectation).
    ref_error : float
        Absolute accuracy of the reference values (from the quadrature's own
        estimate or degree comparison; 1e-12 for closed forms).
    width, seeds : int
        Finite-width check: ``seeds`` simulations at width ``width``.
    samples : int
        Monte Carlo samples (16 replicates).
    diverges : bool
        The limit of the scalars in ``build`` does not exist: every method raises
        ``DivergenceError`` (``exact`` may say it has no form instead).
    bugs : dict
        Backend → reason of a known library bug: that test is ``xfail(strict=True)``.
    """

    name: str
    build: Callable[[], tuple[tp.Program, dict[str, float]]]
    exact: bool = False
    quadrature: bool = True
    ref_error: float = 1e-12
    width: int = 512
    seeds: int = 8
    samples: int = 2**13
    diverges: bool = False
    bugs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


# -- Z-calculus identities ---------------------------------------------------------------


def atav() -> tuple[tp.Program, dict[str, float]]:
    r"""x = AᵀAv, σ_A² = 2: ⟨v, x⟩ → σ², ⟨x, x⟩ → 2σ⁴ [TP3 Examples 2.5, 2.8].

    Z^{Av} = Ẑ ~ N(0, σ²); Z^x = Ẑ^{Aᵀy} + σ² Z^v with Ẑ^{Aᵀy} ~ N(0, σ⁴) independent
    of Z^v, so 𝔼[Z^v Z^x] = σ² and 𝔼[(Z^x)²] = σ⁴ + σ⁴.
    """
    s2 = 2.0
    p = tp.Program("AtAv")
    A = p.matrix("A", var=s2)
    v = p.vector("v")
    x = A.T @ (A @ v)
    tp.inner(v, x, name="k")
    tp.mean(x * x, name="kk")
    return p, {"k": s2, "kk": 2 * s2**2}


def tanh_Wt() -> tuple[tp.Program, dict[str, float]]:
    r"""x = tanh(Wᵀy), h = W x, σ_W² = 2 [TP3 Box 1, ZDot; THEORY §2.2].

    Ẑ^{Wᵀy} ~ N(0, σ²); Z^h = Ẑ^{Wx} + σ² 𝔼[tanh'(Ẑ^{Wᵀy})] Z^y with
    Ẑ^{Wx} ~ N(0, σ² 𝔼 tanh²) independent of Z^y: ⟨y, h⟩ → c := σ² 𝔼 tanh'(Ẑ),
    ⟨h, h⟩ → σ² 𝔼 tanh²(Ẑ) + c².
    """
    s2 = 2.0
    p = tp.Program("tanh_Wt")
    W = p.matrix("W", var=s2)
    y = p.vector("y")
    x = tp.tanh(W.T @ y)
    h = W @ x
    tp.inner(y, h, name="yWx")
    tp.mean(h * h, name="WxWx")
    c, t2 = _tanh_Wt_ref(s2)
    return p, {"yWx": c, "WxWx": s2 * t2 + c * c}


@functools.cache
def _tanh_Wt_ref(s2: float) -> tuple[float, float]:
    return (
        s2 * gauss1(lambda z: 1 - math.tanh(z) ** 2, s2),
        gauss1(lambda z: math.tanh(z) ** 2, s2),
    )


def two_Wt() -> tuple[tp.Program, dict[str, float]]:
    r"""h = W v, u₁ = Wᵀh, u₂ = Wᵀh³, σ² = 2 (Wick; ZDot of [TP3 Box 1]).

    Z^{u₁} = Ẑ₁ + σ² Z^v, Z^{u₂} = Ẑ₂ + σ² 𝔼[3h²] Z^v = Ẑ₂ + 3σ⁴ Z^v with
    Cov(Ẑ₁, Ẑ₂) = σ² 𝔼[h⁴] = 3σ⁶: ⟨u₁, u₂⟩ → 3σ⁶ + 3σ⁶ and ⟨u₂, v⟩ → 3σ⁴.
    """
    s2 = 2.0
    p = tp.Program("two_Wt")
    W = p.matrix("W", var=s2)
    v = p.vector("v")
    h = W @ v
    u1, u2 = W.T @ h, W.T @ (h**3)
    tp.inner(u1, u2, name="u1u2")
    tp.inner(u2, v, name="u2v")
    return p, {"u1u2": 6 * s2**3, "u2v": 3 * s2**2}


def Wt_then_other() -> tuple[tp.Program, dict[str, float]]:
    r"""u = Aᵀy, z = B tanh(u) with B ≠ A: no Ż (B never multiplied a vector before),
    so Z^z ~ N(0, σ_B² 𝔼 tanh²(Z^u)) independent of Z^u: ⟨z, z⟩ → σ_B² 𝔼 tanh²,
    ⟨z, u⟩ → 0 [TP3 Box 1: families of different matrices are independent]."""
    p = tp.Program("Wt_then_other")
    A, B = p.matrix("A", var=2.0), p.matrix("B", var=0.5)
    y = p.vector("y", var=1.5)
    u = A.T @ y
    z = B @ tp.tanh(u)
    tp.mean(z * z, name="zz")
    tp.inner(z, u, name="zu")
    return p, {"zz": 0.5 * _gauss1_cached("tanh2", 3.0), "zu": 0.0}


@functools.cache
def _gauss1_cached(what: str, var: float) -> float:
    f = {"tanh2": lambda z: math.tanh(z) ** 2}[what]
    return gauss1(f, var)


# -- MLP kernels (nn.kernel_program: NT "ntk" parameterization) ----------------------------

X2 = np.array([[1.0, 0.0], [0.6, 0.8]])  # two inputs in d = 2


def relu_pair(k11: float, k12: float, k22: float) -> tuple[float, float]:
    """(𝔼 relu(u) relu(v), 𝔼 step(u) step(v)) for centred (u, v): the arc-cosine kernels
    of degree 1 and 0 [CS09 Eq. (6)]: with cos θ = k12/√(k11 k22),
    √(k11 k22)(sin θ + (π − θ) cos θ)/2π and (π − θ)/2π."""
    r = math.sqrt(k11 * k22)
    t = math.acos(max(-1.0, min(1.0, k12 / r)))
    return r * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi), (math.pi - t) / (
        2 * math.pi
    )


def erf_pair(k11: float, k12: float, k22: float) -> tuple[float, float]:
    """(𝔼 erf(u) erf(v), 𝔼 erf'(u) erf'(v)) for centred (u, v): (2/π) asin(2k12/√((1+2k11)
    (1+2k22))) [W97 Eq. (11)], and, with erf' = (2/√π) e^{-x²}, (4/π) det(I + 2K)^{-1/2}
    (the Gaussian integral of e^{-u²-v²})."""
    d = (1 + 2 * k11) * (1 + 2 * k22)
    return (
        2 / math.pi * math.asin(2 * k12 / math.sqrt(d)),
        4 / math.pi / math.sqrt(d - 4 * k12 * k12),
    )


def tanh_pair(k11: float, k12: float, k22: float) -> tuple[float, float]:
    """(𝔼 tanh(u) tanh(v), 𝔼 tanh'(u) tanh'(v)) by nested scipy quadrature."""
    return (
        gauss2(lambda u, v: math.tanh(u) * math.tanh(v), k11, k12, k22),
        gauss2(lambda u, v: (1 - math.tanh(u) ** 2) * (1 - math.tanh(v) ** 2), k11, k12, k22),
    )


def kernel_reference(
    X: np.ndarray, depth: int, pair: Callable, w: float, b: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""NNGP K^{(L+1)} and NTK Θ^{(L+1)} of an L-hidden-layer MLP in the NT "ntk"
    parameterization [NT20 §3; J18 Thm 1]: K¹ = σ_w² XXᵀ/d + σ_b², Θ¹ = K¹ and, with
    (Σ, Σ̇) = 𝔼[φφ], 𝔼[φ'φ'] under N(0, K^{(l)}), K^{(l+1)} = σ_w² Σ + σ_b²,
    Θ^{(l+1)} = K^{(l+1)} + σ_w² Σ̇ ⊙ Θ^{(l)}."""
    B, d = X.shape
    K = w * w * (X @ X.T) / d + b * b
    T = K.copy()
    for _ in range(depth):
        S, Sd = np.zeros_like(K), np.zeros_like(K)
        for i in range(B):
            for j in range(i, B):
                S[i, j], Sd[i, j] = pair(K[i, i], K[i, j], K[j, j])
                S[j, i], Sd[j, i] = S[i, j], Sd[i, j]
        K = w * w * S + b * b
        T = K + w * w * Sd * T
    return K, T


def relu_layer_kernel():
    r"""One relu layer between correlated inputs of unequal variance: ξ ~ N(0, [[1, ρ],
    [ρ, 1.5]]), ρ = 0.6, h_i = W relu(ξ_i), σ_W² = 2: ⟨relu h₀, relu h₁⟩ and ⟨relu² h₁⟩
    by the arc-cosine kernel [CS09] twice (𝔼 relu² = Var/2)."""
    rho, s2 = 0.6, 2.0
    p = tp.Program("relu_kernel")
    W = p.matrix("W", var=s2)
    xs = p.vectors("xi", cov=[[1.0, rho], [rho, 1.5]])
    h = [W @ tp.relu(x) for x in xs]
    tp.inner(tp.relu(h[0]), tp.relu(h[1]), name="K01")
    tp.mean(tp.relu(h[1]) ** 2, name="K11")
    k01 = s2 * relu_pair(1.0, rho, 1.5)[0]
    k00, k11 = s2 * 0.5, s2 * 0.75
    return p, {"K01": relu_pair(k00, k01, k11)[0], "K11": k11 / 2}


def erf_layer_kernel():
    r"""One erf layer between correlated inputs, ξ ~ N(0, [[0.8, ρ], [ρ, 1.2]]), ρ = −0.3,
    σ_W² = 1.5: ⟨erf h₀, erf h₁⟩ by the erf kernel [W97] twice."""
    rho, s2 = -0.3, 1.5
    p = tp.Program("erf_kernel")
    W = p.matrix("W", var=s2)
    xs = p.vectors("xi", cov=[[0.8, rho], [rho, 1.2]])
    h = [W @ tp.erf(x) for x in xs]
    tp.inner(tp.erf(h[0]), tp.erf(h[1]), name="E01")
    k01 = s2 * erf_pair(0.8, rho, 1.2)[0]
    k00, k11 = s2 * erf_pair(0.8, 0.8, 0.8)[0], s2 * erf_pair(1.2, 1.2, 1.2)[0]
    return p, {"E01": erf_pair(k00, k01, k11)[0]}


def _kernels(nonlin: str, pair: Callable, depth: int, w: float, b: float):
    ref = _kernel_ref_cached(nonlin, depth, w, b, pair)
    p, nngp, ntk = nn.kernel_program(X2, depth, nonlin, w, b)
    refs = {}
    for i in range(len(X2)):
        for j in range(i, len(X2)):
            refs[nngp[i, j].name] = ref[0][i, j]
            refs[ntk[i, j].name] = ref[1][i, j]
    return p, refs


@functools.cache
def _kernel_ref_cached(nonlin, depth, w, b, pair):
    return kernel_reference(X2, depth, pair, w, b)


def relu_kernels():
    """NNGP and NTK of a 2-hidden-layer relu MLP, σ_w = 1.5, σ_b = 0.1: arc-cosine
    closed forms [CS09] in the recursion [J18]."""
    return _kernels("relu", relu_pair, 2, 1.5, 0.1)


def erf_kernels():
    """NNGP and NTK of a 2-hidden-layer erf MLP, σ_w = 1.5, σ_b = 0.1: [W97] in [J18]."""
    return _kernels("erf", erf_pair, 2, 1.5, 0.1)


def tanh_kernels():
    """NNGP and NTK of a 1-hidden-layer tanh MLP, σ_w = 1.3: no closed form, scipy
    quadrature in the recursion [J18]."""
    return _kernels("tanh", tanh_pair, 1, 1.3, 0.0)


# -- Nonlinearities, moments and scalar functions -----------------------------------------


def correlated_pair():
    r"""Nonlinearities of two correlated vectors, Var x = 1, Var y = 2, Cov = 0.6.

    ⟨relu(x), tanh(y)⟩ by nested scipy quadrature (no closed form);
    𝔼 cos x cos y = ½(e^{-Var(x−y)/2} + e^{-Var(x+y)/2}) (product to sum, and
    𝔼 cos G = e^{-Var G/2})."""
    k11, k12, k22 = 1.0, 0.6, 2.0
    p = tp.Program("correlated_pair")
    x, y = p.vectors("x", cov=[[k11, k12], [k12, k22]])
    tp.inner(tp.relu(x), tp.tanh(y), name="rt")
    tp.mean(tp.cos(x) * tp.cos(y), name="cc")
    cc = 0.5 * (math.exp(-(k11 - 2 * k12 + k22) / 2) + math.exp(-(k11 + 2 * k12 + k22) / 2))
    return p, {"rt": _relu_tanh_ref(k11, k12, k22), "cc": cc}


@functools.cache
def _relu_tanh_ref(k11, k12, k22):
    return gauss2(lambda u, v: max(u, 0.0) * math.tanh(v), k11, k12, k22)


def moment_algebra():
    r"""A product and a ratio of Moments, Var x = 1.5, Var y = 0.5, Cov = 0.2 (Wick):
    ⟨x, x⟩·⟨y⁴⟩ → σ_x²·3σ_y⁴; ⟨x⁴⟩/⟨x²⟩ → 3σ_x⁴/σ_x²; ⟨x², y²⟩ − ⟨x,x⟩⟨y,y⟩ → 2c²
    (Isserlis: 𝔼x²y² = σ_x²σ_y² + 2c²)."""
    sx, sy, c = 1.5, 0.5, 0.2
    p = tp.Program("moment_algebra")
    x, y = p.vectors("x", cov=[[sx, c], [c, sy]])
    xx, y4 = tp.mean(x * x, name="xx"), tp.mean(y**4, name="y4")
    tp.nonlin(lambda a, b: a * b, xx, y4, name="prod")
    tp.nonlin(lambda a, b: a / b, tp.mean(x**4, name="x4"), xx, name="ratio")
    tp.nonlin(
        lambda a, b, d: a - b * d,
        tp.mean(x * x * y * y, name="x2y2"),
        xx,
        tp.mean(y * y, name="yy"),
        name="cov2",
    )
    return p, {"prod": sx * 3 * sy**2, "ratio": 3 * sx, "cov2": 2 * c * c}


def moment_functions():
    r"""Scalar functions of Moments and a Moment inside a Nonlin+ (Var x = 1, Var y = 2).

    s = √(⟨tanh² x⟩ + ⟨relu² y⟩) with 𝔼 relu²(y) = Var y / 2 = 1; e = exp(−⟨x, x⟩) → e^{-1};
    θ = ⟨relu x⟩ → 1/√(2π); m = ⟨tanh²(θ y)⟩ → 𝔼 tanh²(θ̊ y) [TP4 Def 7.3 ZNonlin+:
    parameters frozen at their limits]; 1-D scipy quadrature for the tanh integrals.
    """
    p = tp.Program("moment_functions")
    x, y = p.vector("x"), p.vector("y", var=2.0)
    t2 = tp.mean(tp.tanh(x) ** 2, name="t2")
    r2 = tp.mean(tp.relu(y) ** 2, name="r2")
    tp.nonlin(lambda a, b: sympy.sqrt(a + b), t2, r2, name="s")
    tp.nonlin(lambda a: sympy.exp(-a), tp.mean(x * x), name="e")
    th = tp.mean(tp.relu(x), name="theta")
    tp.mean(tp.tanh(th * y) ** 2, name="m")
    theta = 1 / SQ2PI
    t2v, mv = _moment_functions_ref(theta)
    return p, {"s": math.sqrt(t2v + 1.0), "e": math.exp(-1.0), "theta": theta, "m": mv}


@functools.cache
def _moment_functions_ref(theta):
    return (gauss1(lambda z: math.tanh(z) ** 2), gauss1(lambda z: math.tanh(theta * z) ** 2, 2.0))


def normalised():
    r"""x = h/√⟨h, h⟩ (a Nonlin+ whose parameter is a Moment), h = W v: Z^x is a centred
    Gaussian of variance 1, so ⟨x²⟩ → 1, ⟨x⁴⟩ → 3, ⟨cos x⟩ → e^{-1/2}."""
    p = tp.Program("normalised")
    W = p.matrix("W", var=3.0)
    h = W @ p.vector("v", var=0.5)
    x = h / tp.sqrt(tp.mean(h * h))
    tp.mean(x * x, name="m2")
    tp.mean(x**4, name="m4")
    tp.mean(tp.cos(x), name="mcos")
    return p, {"m2": 1.0, "m4": 3.0, "mcos": math.exp(-0.5)}


def cos_product():
    r"""𝔼 ∏ᵢ cos xᵢ for five correlated x ~ N(0, C): more linear forms than quadrature
    takes (Monte Carlo only). Product to sum, ∏ cos xᵢ = 2⁻⁵ Σ_{s ∈ {±1}⁵} cos(sᵀx), and
    𝔼 cos(sᵀx) = e^{-sᵀCs/2} (the Gaussian characteristic function)."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(5, 5)) * 0.5
    C = A @ A.T + 0.3 * np.eye(5)
    p = tp.Program("cos_product")
    xs = p.vectors("x", cov=C)
    prod = tp.cos(xs[0])
    for x in xs[1:]:
        prod = prod * tp.cos(x)
    tp.mean(prod, name="c5")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=5)))
    ref = float(np.mean(np.exp(-np.einsum("si,ij,sj->s", signs, C, signs) / 2)))
    return p, {"c5": ref}


def lognormal():
    r"""v ~ N(μ, σ²) = N(0.3, 0.8): 𝔼 e^v = e^{μ+σ²/2} (the lognormal mean) and, by
    Stein's lemma, 𝔼[v e^v] = (μ + σ²) e^{μ+σ²/2}."""
    mu, s2 = 0.3, 0.8
    p = tp.Program("lognormal")
    v = p.vector("v", mean=mu, var=s2)
    tp.mean(tp.exp(v), name="ev")
    tp.mean(v * tp.exp(v), name="vev")
    m = math.exp(mu + s2 / 2)
    return p, {"ev": m, "vev": (mu + s2) * m}


def ratio_exists():
    r"""A bounded ratio whose expectation exists though it is singular at the origin.

    x ~ N(0, a²), y ~ N(0, b²) independent, (a, b) = (1, 2): 0 ≤ x²/(x²+y²) ≤ 1 and,
    writing 1/(x²+y²) = ∫₀^∞ e^{-λ(x²+y²)} dλ,
    𝔼 = ∫₀^∞ a²(1+2λa²)^{-3/2}(1+2λb²)^{-1/2} dλ = a/(a+b).
    """
    a, b = 1.0, 2.0
    p = tp.Program("ratio_exists")
    x, y = p.vector("x", var=a * a), p.vector("y", var=b * b)
    tp.mean(x * x / (x * x + y * y), name="q")
    return p, {"q": a / (a + b)}


def singular_moment():
    r"""𝔼|x|^{-1/2}, x ~ N(0, 1): exists (|x|^{-1/2} is integrable at 0) and equals
    2^{p/2} Γ((p+1)/2)/√π at p = −1/2 (the absolute moments of a Gaussian). Its
    variance is infinite (𝔼|x|^{-1} = ∞): tail index k = 1/2 exactly."""
    p = tp.Program("singular_moment")
    x = p.vector("x")
    tp.mean(1 / tp.sqrt(tp.abs(x)), name="r")
    return p, {"r": 2**-0.25 * math.gamma(0.25) / math.sqrt(math.pi)}


def ratio_diverges():
    """x/y for independent standard x, y is Cauchy: 𝔼|x/y| = ∞, so the limit of ⟨x/y⟩
    does not exist (at finite width the average is itself Cauchy, for every n)."""
    p = tp.Program("ratio_diverges")
    x, y = p.vector("x"), p.vector("y")
    tp.mean(x / y, name="r")
    return p, {"r": math.nan}


# -- Training (nn.train_sgd) --------------------------------------------------------------


NUMPY_PHI = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "identity": (lambda z: z, np.ones_like),
}


def numpy_mlp(run, sim, grads_at=None):
    """DESIGN.md's finite network of an ``nn.train_sgd`` run, rebuilt from ``sim``'s draws
    (``sim.param``) and trained in plain numpy: ``W^l = n^{-a_l} w^l``, full-batch GD on
    ``w^l`` with learning rate ``η n^{-c}``, loss ``(1/2B) Σ (f − y)²``.

    Returns (outputs (T+1, B), eval outputs (T+1, E)); with ``run.center`` the network
    is trained on, and reports, ``f − f_0``. With ``grads_at=(t, i)`` it also returns
    ``[n ∂f_t(ξ_i)/∂h^l_t for l = 1..L]`` (each shape (n,)).
    """
    net, n = run.net, sim.n
    L = net.depth
    a = [float(x) for x in net.param.a]
    c = float(net.param.c)
    phi, dphi = NUMPY_PHI[net.phi.name]
    names = ["W_in"] + [f"W{ell}" for ell in range(2, L + 1)] + ["W_out"]
    w = [n ** a[ell] * sim.param(nm) for ell, nm in enumerate(names)]  # the trained w^l
    lr = run.lr * n ** (-c)
    X, Y = run.X, run.Y
    B = X.shape[0]
    Xall = np.vstack([X, run.X_eval])
    outs, f0, dfdh = [], None, None
    for t in range(run.steps + 1):
        Wt = [n ** (-a[ell]) * w[ell] for ell in range(L + 1)]
        hs, xs, zc = [], [], Xall.T
        for ell in range(L):
            hs.append(Wt[ell] @ zc)
            zc = phi(hs[-1])
            xs.append(zc)
        f = (Wt[L] @ zc)[0]
        f0 = f.copy() if f0 is None else f0
        ft = f - f0 if run.center else f
        outs.append(ft)
        if grads_at is not None and grads_at[0] == t:
            i, g, dfdh = grads_at[1], Wt[L][0], [None] * L
            for ell in range(L - 1, -1, -1):
                dfdh[ell] = n * g * dphi(hs[ell][:, i])
                g = Wt[ell].T @ (dfdh[ell] / n) if ell > 0 else None
        if t == run.steps:
            break
        chi = (ft[:B] - Y) / B  # ∂L/∂f_i
        grads = [None] * (L + 1)
        grads[L] = chi[None, :] @ xs[L - 1][:, :B].T
        g = Wt[L].T * chi[None, :]  # ∂L/∂x^L, per input
        for ell in range(L - 1, -1, -1):
            dh = g * dphi(hs[ell][:, :B])
            inp = X.T if ell == 0 else xs[ell - 1][:, :B]
            grads[ell] = dh @ inp.T  # ∂L/∂W^l
            g = Wt[ell].T @ dh
        # ∂L/∂w^l = n^{-a_l} ∂L/∂W^l
        w = [w[ell] - lr * n ** (-a[ell]) * grads[ell] for ell in range(L + 1)]
    outs = np.array(outs)
    if grads_at is not None:
        return outs[:, :B], outs[:, B:], dfdh
    return outs[:, :B], outs[:, B:]


def mf_one_step():
    r"""One μP (= mean-field) SGD step of a 1-hidden-layer tanh net [TP4 §6.1 Thm 6.1].

    f(ξ) = (1/n) Σ v_α tanh(u_α ξ), u, v ~ N(0, 1), loss ½(f − 1)² at ξ₀ = 1, η = 1:
    χ₀ = f̊₀ − 1 = −1, so Z^{v₁} = Z^v + tanh Z^u, Z^{u₁} = Z^u + Z^v sech² Z^u and
    f̊₁(ξ) = 𝔼[(Z^v + tanh Z^u) tanh(ξ(Z^u + Z^v sech² Z^u))]: see :func:`mf_reference`.
    """
    net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1, X_eval=[[0.5]])
    f1, f1e = run.outputs[1, 0], run.eval_outputs[1, 0]
    return run.program, {f1.name: mf_reference(1.0)[0], f1e.name: mf_reference(0.5)[0]}


@functools.cache
def mf_reference(xi: float) -> tuple[float, float]:
    """(f̊₁(ξ), accuracy) of :func:`mf_one_step`: the 2-D integral by tensor Gauss–Hermite
    of 200 nodes per axis; the accuracy is the change from 160 nodes (the convergence
    is geometric but not monotone: 80…200 nodes change it by 9e-8, 4e-8, 4e-9, 5e-10
    at ξ = 1, and nested scipy quadrature agrees with 200 nodes to 5e-10)."""

    def f(u, v):
        return (v + np.tanh(u)) * np.tanh(xi * (u + v * (1 - np.tanh(u) ** 2)))

    coarse, fine = (hermite_nd(f, np.eye(2), d) for d in (160, 200))
    return fine, abs(fine - coarse)


def muP_two_layer_step():
    r"""One μP SGD step of a 2-hidden-layer tanh net, f̊₁(0.7): needs Ż after training
    [TP4 §6.3 Thm 6.4; THEORY §10.3].

    h = ξu, x = tanh h, h̄ = W x, x̄ = tanh h̄, f = ⟨v, x̄⟩; u, v ~ N(0, 1), W ~ N(0, 1/n);
    one step (η = 1) on (ξ₀, y₀) = (1, 1), loss ½(f − y)²; see :func:`muP_step_reference`.
    """
    net = nn.MLP(d_in=1, depth=2, nonlin="tanh", param=nn.muP(2))
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1, X_eval=[[0.7]])
    return run.program, {run.eval_outputs[1, 0].name: muP_step_reference(0.7)[0]}


@functools.cache
def muP_step_reference(xi: float, degree: int = 64) -> tuple[float, float]:
    r"""(f̊₁(ξ), accuracy) of :func:`muP_two_layer_step` by the Z-calculus [TP4 Thm 6.4].

    f̊₀ = 0, so χ₀ = −1. With g₀ := Ẑ^{Wx₀} ~ N(0, q₀), q₀ = 𝔼 tanh²(u):
    dh̄₀ = v sech²(g₀); a := Ẑ^{Wᵀdh̄₀} ~ N(0, 𝔼 sech⁴ g₀) independent of (u, v, g₀)
    (first backward pass: Ż = 0); u₁ = u + a sech² u; x₁ = tanh(ξu₁).
    Ẑ^{Wx₁} =: g₁ is jointly Gaussian with g₀: Var g₁ = 𝔼 x₁², Cov = c₀₁ := 𝔼 x₀x₁.
    Ż^{Wx₁} = dh̄₀ 𝔼[∂x₁/∂a] = dh̄₀ · ξ 𝔼[tanh'(ξu₁) sech² u], and W₁x₁ = Wx₁ + dh̄₀ c₀₁,
    so h̄₁ = g₁ + κ v sech² g₀ with κ = ξ𝔼[tanh'(ξu₁) sech² u] + c₀₁, and
    f̊₁ = 𝔼[(v + tanh g₀) tanh h̄₁]. The (u, a) and (v, g₀, g₁) integrals are tensor
    Gauss–Hermite of ``degree`` and ``3·degree/2`` nodes per axis; the accuracy
    returned is the change from ``degree`` to ``3·degree/2`` (the integrands are
    analytic: geometric convergence).
    """
    out = []
    for deg in (degree, 3 * degree // 2):
        q0 = hermite_nd(lambda u: np.tanh(u) ** 2, np.eye(1), deg)
        sa = hermite_nd(lambda g: np.cosh(g) ** -4, np.eye(1) * q0, deg)
        cov_ua = np.diag([1.0, sa])

        def x1(u, a):
            return np.tanh(xi * (u + a / np.cosh(u) ** 2))

        q1 = hermite_nd(lambda u, a: x1(u, a) ** 2, cov_ua, deg)
        c01 = hermite_nd(lambda u, a: np.tanh(u) * x1(u, a), cov_ua, deg)
        d = hermite_nd(lambda u, a: xi * (1 - x1(u, a) ** 2) / np.cosh(u) ** 2, cov_ua, deg)
        kappa = d + c01
        cov = np.array([[1.0, 0, 0], [0, q0, c01], [0, c01, q1]])

        def f(v, g0, g1, kappa=kappa):
            return (v + np.tanh(g0)) * np.tanh(g1 + kappa * v / np.cosh(g0) ** 2)

        out.append(hermite_nd(f, cov, deg))
    return out[1], abs(out[1] - out[0])


TABLE: list[Entry] = [
    Entry("AtAv", atav, exact=True, width=256),
    Entry("tanh_Wt", tanh_Wt, ref_error=1e-11, width=256),
    Entry("two_Wt", two_Wt, exact=True, width=256, seeds=12),
    Entry("Wt_then_other", Wt_then_other, ref_error=1e-11, width=256),
    Entry(
        "relu_kernels",
        relu_kernels,
        exact=True,
        width=256,
    ),
    Entry("erf_kernels", erf_kernels, exact=True, width=256),
    Entry("tanh_kernels", tanh_kernels, ref_error=1e-10, width=256),
    Entry("correlated_pair", correlated_pair, ref_error=1e-10),
    Entry("moment_algebra", moment_algebra, exact=True),
    Entry("moment_functions", moment_functions, ref_error=1e-11),
    Entry("normalised", normalised, exact=True, width=256),
    Entry("lognormal", lognormal, exact=True),  # exp with a mean: a closed form (issue #21)
    Entry("cos_product", cos_product, quadrature=False),
    Entry(
        "ratio_exists",
        ratio_exists,
    ),
    Entry(
        "singular_moment",
        singular_moment,
    ),
    Entry("ratio_diverges", ratio_diverges, diverges=True),
    Entry("mf_one_step", mf_one_step, ref_error=1e-8),
    Entry("muP_two_layer_step", muP_two_layer_step, ref_error=1e-7, width=256),
]

#: The stated accuracy of the references computed by degree comparison: each must be
#: within its entry's ``ref_error`` (checked by tests/test_backends.py).
REFERENCE_ACCURACY: dict[str, Callable[[], float]] = {
    "mf_one_step": lambda: max(mf_reference(1.0)[1], mf_reference(0.5)[1]),
    "muP_two_layer_step": lambda: muP_step_reference(0.7)[1],
}
