"""Does an expectation exist? Decided before any method evaluates it.

An expectation ``𝔼 f(g)``, ``g ~ N(μ, Σ)``, exists when ``𝔼|f(g)| < ∞`` (Lebesgue): a
principal value (``𝔼[1/g] = 0`` by symmetry) is not a mean. Two things can make
``𝔼|f|`` infinite, and both are read off the sympy integrand:

**Singularities.** Write ``g = μ + F z`` (``FFᵀ = Σ``, ``z ~ N(0, I)``), so that
degenerate directions simply do not appear. Where ``f`` blows up like ``|L|^{-a}``
near a hypersurface ``{L = 0}`` crossed by the Gaussian (``L`` affine with
``Var L > 0``), the density is bounded and positive there and ``∫ |t|^{-a} dt`` over
the normal coordinate is finite iff ``a < 1``. If ``L`` has variance 0, ``L`` is a
constant: either never 0 (no singularity) or 0 almost surely (``f`` is infinite: no
mean). A zero set of codimension ``r`` (``|Q|^{-a}`` with ``Q`` a positive
semidefinite quadratic of rank ``r`` vanishing at a point of the support) is
integrable iff ``2a < r``. Candidates: negative powers of polynomial factors
(``1/v``, ``|v|^{-1/2}``, ``x/y``, ``1/Σaᵢ``, ``(x/y)²``), zeros of other
denominators along one form (``1/tanh(v)``), and the real poles of ``tan``, ``cot``,
``sec``, ``csc`` (order 1: never integrable). The *order* actually seen at a pole
(the numerator may vanish there: ``sin(v)/v``) is measured from ``|f|`` at distances
``10⁻⁴`` and ``10⁻⁶`` from it; when it equals the symbolic order the decision is
exact, otherwise it is taken only if it is clearly away from 1.

**Growth against the Gaussian.** ``|f|`` is bounded by sums of
``poly · exp(P(g))`` with ``P`` polynomials of degree ≤ 2 (sums → union, products →
sums of exponents, bounded functions → 1; see :func:`_bound`). With
``P(μ + Fz) = zᵀAz + βᵀz + γ``, ``𝔼 exp(P) < ∞`` iff ``λ_max(A) < 1/2`` (the
Gaussian integral of ``exp(−zᵀ(I − 2A)z/2 + βᵀz)``); in one dimension,
``𝔼 exp(c u²) < ∞`` iff ``c Var(u) < 1/2``. ``exp`` of linear forms is always
integrable. A bound that fails is confirmed as a divergence by ``|f|`` along the
offending eigen-direction (growing like ``exp(λ r²)`` with ``λ ≥ 1/2``).

What cannot be decided either way (a function whose singularities are not known, a
denominator whose zeros are not found, a cancellation between divergent terms) is
*unproven*: the value is still computed, by Monte Carlo with its tail diagnostic
(:mod:`.tails`), and flagged on the :class:`~.limit.Limit` with a warning.

The same algebra gives an exact change of measure for integrands
``h(g) exp(P(g))``: ``𝔼_{N(μ,Σ)}[h e^{P}] = e^{c} 𝔼_{N(μ',Σ')}[h]`` (:func:`tilt`),
which makes quadrature and Monte Carlo integrate ``h`` under the Gaussian the
integrand actually concentrates on (``𝔼 exp(v²)`` at ``Var v = 0.49`` is
``√50`` times ``𝔼[1]`` under ``N(0, 24.5)``).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from ..core.nonlin import BOUNDED, inline
from ..gaussian import psd_factor
from .exact import _lam_q, shape
from .forms import lambdify_integrand, linear_forms
from .plan import describe
from .symbols import g, q

__all__ = [
    "Verdict",
    "Finding",
    "decide",
    "structure",
    "tilt",
    "tilted",
    "Tilt",
    "integrand",
    "check_requests",
]


class Verdict(enum.IntEnum):
    """Existence of ``𝔼|f|``, ordered by severity."""

    EXISTS = 0
    UNPROVEN = 1
    DIVERGES = 2


@dataclass(frozen=True)
class Finding:
    """A verdict and the reason (empty for ``EXISTS``)."""

    verdict: Verdict
    reason: str = ""


EXISTS = Finding(Verdict.EXISTS)

#: Distances from a singular set at which the local order is measured (whitened units).
_T1, _T2 = 1e-4, 1e-6
#: Local orders within this of the symbolic one are taken as exactly it.
_ORDER_TOL = 0.02
#: Otherwise an order is decided only if at least this far from the threshold 1.
_ORDER_MARGIN = 0.05
#: Sample points on each singular set (fixed seed: decisions are reproducible). The worst
#: order over them counts, so a numerator that vanishes on part of the set must vanish at
#: all of them to hide the pole: with 3, relu(g₁)/|g₀| at Corr 0.6 was declared to exist
#: (g₁ < 0 at all three points of {g₀ = 0}, a 1-in-8 chance); with 16, 1 in 65536.
_POINTS = 16
#: Eigenvalues within this of 1/2 are the boundary case (decided by the polynomial factor).
_EIG_TOL = 1e-9
#: At most this many exp-bounds per integrand (products multiply their number).
_MAX_BOUNDS = 64

_POLES = {
    sympy.tan: (math.pi / 2, math.pi),
    sympy.sec: (math.pi / 2, math.pi),
    sympy.cot: (0.0, math.pi),
    sympy.csc: (0.0, math.pi),
}


# -- symbolic structure -----------------------------------------------------------------


@dataclass(frozen=True)
class _Pole:
    """``|L|^{-order}`` near ``{L = 0}``, ``L = Σ a_k u_k + c`` (coefficients of ``q``)."""

    coeffs: tuple[sympy.Expr, ...]
    const: sympy.Expr
    order: float
    what: str


@dataclass(frozen=True)
class _QuadZero:
    """``|Q|^{-order}`` with ``Q`` a quadratic polynomial of the forms."""

    poly: sympy.Expr
    order: float
    what: str


@dataclass(frozen=True)
class _Root:
    """``|φ(u_k)|^{-order}``: zeros of a non-polynomial function of one variable."""

    base: sympy.Expr
    var: int
    order: float
    what: str


@dataclass(frozen=True)
class Structure:
    """What the existence of ``𝔼|f|`` hinges on, for one integrand (law-independent).

    ``singular``: candidate singular sets; ``exps``: the exponents ``P`` of the bound
    ``|f| ≲ Σ poly·exp(P)`` that are quadratic (linear ones never matter);
    ``unknown``: reasons why the analysis is incomplete; ``expr``/``k``: the
    integrand over its ``k`` variables (the linear forms, see
    :func:`~.forms.linear_forms`); ``reduction``: the forms (or None: the ``g``'s).
    """

    expr: sympy.Expr
    k: int
    reduction: Any
    singular: tuple[Any, ...]
    exps: tuple[sympy.Expr, ...]
    unknown: tuple[str, ...]

    @property
    def trivial(self) -> bool:
        """Nothing to check: the expectation exists for every law."""
        return not (self.singular or self.exps or self.unknown)


def degree(
    e: sympy.Expr, weights: dict[sympy.Symbol, float], at_infinity: bool = False
) -> float | None:
    """A ``p`` with ``|e| ≤ C (1 + |u|)^p`` when each symbol ``s`` grows like
    ``|u|^{weights[s]}`` (other symbols are constants), or None when no such bound is
    known: sums take the largest degree, products add, ``x^a`` multiplies by ``a``,
    bounded functions are 0, ``1/b`` is 0 when ``b`` is bounded below by a positive
    constant, and ``exp``, other inverses, unknown functions have no bound.

    ``at_infinity=False`` also asks for no singular set (``e`` bounded on compacts:
    what the tails of :mod:`.growth` need); ``True`` bounds the growth at infinity only
    (this module locates singular sets separately), where ``log`` has degree 1 and a
    bounded function of anything is bounded.
    """
    if e.is_number:
        return 0.0 if e.is_finite else None
    if not (e.free_symbols & weights.keys()):
        return 0.0
    if e.is_Symbol:
        return weights[e]
    if at_infinity and all(weights.get(s, 1.0) == 1.0 for s in e.free_symbols):
        us = [s for s in e.free_symbols if s in weights]
        if e.is_polynomial(*us):
            return float(sympy.Poly(e, *us).total_degree())
    if isinstance(e, (sympy.Add, sympy.Max, sympy.Min, sympy.Abs, sympy.Mul)):
        ds = [degree(a, weights, at_infinity) for a in e.args]
        if any(d is None for d in ds):
            return None
        return sum(ds) if isinstance(e, sympy.Mul) else max(ds)
    if isinstance(e, sympy.Pow) and e.exp.is_number:
        d = degree(e.base, weights, at_infinity)
        if d is None:
            return None
        return d * float(e.exp) if e.exp > 0 else 0.0 if _bounded_below(e.base) else None
    if isinstance(e, BOUNDED):
        if at_infinity:
            return 0.0
        return 0.0 if all(degree(a, weights) is not None for a in e.args) else None
    if isinstance(e, sympy.Piecewise):
        ds = [degree(a, weights, at_infinity) for a, _ in e.args]
        return None if any(d is None for d in ds) else max(ds)
    if isinstance(e, sympy.log) and at_infinity:
        return 1.0 if degree(e.args[0], weights, True) is not None else None
    return None


def _poly_like(b: sympy.Expr, us: list[sympy.Symbol]) -> bool:
    """``b`` is a polynomial, or ``|·|`` or a positive power of one: ``1/b`` is bounded
    away from the zero set of the polynomial."""
    while isinstance(b, sympy.Abs) or (isinstance(b, sympy.Pow) and b.exp.is_number and b.exp > 0):
        b = b.args[0]
    return bool(b.is_polynomial(*us))


def _bounded_below(b: sympy.Expr) -> bool:
    """``b ≥ c > 0`` everywhere (so ``1/b`` is bounded): a positive constant plus
    non-negative terms, or its positive multiple."""
    if b.is_number:
        return bool(b != 0)
    terms = sympy.Add.make_args(b)
    const = sum((t for t in terms if t.is_number), sympy.S.Zero)
    return bool(const.is_positive) and all(t.is_number or t.is_nonnegative for t in terms)


def _bound(e: sympy.Expr, us: list[sympy.Symbol]) -> list[sympy.Expr] | None:
    """Exponents ``P_i`` (polynomials in ``us`` of degree ≤ 2) with
    ``|e| ≤ C (1 + |u|)^N Σ_i exp(P_i(u))``; None if no such bound is known."""
    uset = set(us)
    if not (e.free_symbols & uset) or e.is_Symbol:
        return [sympy.S.Zero]
    if isinstance(e, sympy.exp):
        x = e.args[0]
        if x.is_polynomial(*us):
            deg = sympy.Poly(x, *us).total_degree()
            if deg <= 1:
                return [sympy.S.Zero]
            return [sympy.expand(x)] if deg == 2 else None
        d = degree(x, dict.fromkeys(us, 1.0), at_infinity=True)
        return [sympy.S.Zero] if d is not None and d <= 1 else None
    if isinstance(e, (sympy.sinh, sympy.cosh)):
        b1, b2 = _bound(sympy.exp(e.args[0]), us), _bound(sympy.exp(-e.args[0]), us)
        return None if b1 is None or b2 is None else b1 + [x for x in b2 if x not in b1]
    if isinstance(e, (sympy.Add, sympy.Abs, sympy.Max, sympy.Min, sympy.Piecewise)):
        args = [a[0] if isinstance(e, sympy.Piecewise) else a for a in e.args]
        out: list[sympy.Expr] = []
        for a in args:
            b = _bound(a, us)
            if b is None:
                return None
            out += [x for x in b if x not in out]
        return out if len(out) <= _MAX_BOUNDS else None
    if isinstance(e, sympy.Mul):
        out = [sympy.S.Zero]
        for a in e.args:
            b = _bound(a, us)
            if b is None:
                return None
            out = list(dict.fromkeys(sympy.expand(x + y) for x in out for y in b))
            if len(out) > _MAX_BOUNDS:
                return None
        return out
    if isinstance(e, sympy.Pow):
        if not (e.exp.free_symbols & uset) and e.exp.is_number:
            if e.exp > 0:
                b = _bound(e.base, us)
                if b is None:
                    return None
                if e.exp.is_Integer and len(b) > 1:
                    return _bound(sympy.Mul(*[e.base] * int(e.exp), evaluate=False), us)
                return [sympy.expand(e.exp * x) for x in b]
            # at infinity 1/b stays bounded if b is bounded below or grows (polynomial b);
            # near b's zeros it is a singularity (handled separately)
            if _bounded_below(e.base) or _poly_like(e.base, us):
                return [sympy.S.Zero]
            return None
        if not (e.base.free_symbols & uset) and e.base.is_positive:
            return _bound(sympy.exp(e.exp * sympy.log(e.base)), us)
        return None
    if isinstance(e, BOUNDED + tuple(_POLES)):  # (poles are singular sets, not growth)
        return [sympy.S.Zero]
    if isinstance(e, sympy.log):
        return [sympy.S.Zero] if _bound(e.args[0], us) is not None else None
    return None


def _singular(
    e: sympy.Expr,
    us: list[sympy.Symbol],
    qs: list[sympy.Symbol],
    out: list[Any],
    unknown: list[str],
) -> None:
    """Collect candidate singular sets of ``e`` (see :class:`Structure`)."""
    uset = set(us)
    for node in sympy.preorder_traversal(e):
        if not (node.free_symbols & uset):
            continue
        if isinstance(node, sympy.Pow) and node.exp.is_number and node.exp < 0:
            _denominator(node.base, float(-node.exp), us, out, unknown)
        elif isinstance(node, tuple(_POLES)):
            arg = node.args[0]
            if arg.is_polynomial(*us) and sympy.Poly(arg, *us).total_degree() == 1:
                first, period = _POLES[type(node)]
                for c in (first, first - period, first + period):
                    out.append(
                        _Pole(
                            tuple(arg.coeff(u) for u in us),
                            arg.as_independent(*us, as_Add=True)[0] - c,
                            1.0,
                            f"{node.func.__name__} has a pole where {arg} = {c:.6g}",
                        )
                    )
            else:
                unknown.append(f"{node.func.__name__}({arg}): its poles are not located")
        elif isinstance(node, sympy.Function) and not isinstance(
            node,
            BOUNDED
            + (
                sympy.exp,
                sympy.log,
                sympy.Abs,
                sympy.Max,
                sympy.Min,
                sympy.sinh,
                sympy.cosh,
                sympy.Piecewise,
            ),
        ):
            # (a Piecewise adds jumps only: its branches are visited as its children)
            unknown.append(f"{node.func}: its singularities are not analysed")


def _denominator(
    b: sympy.Expr, order: float, us: list[sympy.Symbol], out: list[Any], unknown: list[str]
) -> None:
    """Zero sets of a denominator ``b`` raised to ``order``."""
    while isinstance(b, sympy.Abs):
        b = b.args[0]
    if _bounded_below(b) or b.is_positive or isinstance(b, sympy.exp):
        return
    if b.is_polynomial(*us):
        _, factors = sympy.factor_list(b, *us)
        for fac, mult in factors:
            if not (fac.free_symbols & set(us)):
                continue
            deg = sympy.Poly(fac, *us).total_degree()
            what = f"1/({fac})" + (f"^{order * mult:g}" if order * mult != 1 else "")
            if deg == 1:
                out.append(
                    _Pole(
                        tuple(fac.coeff(u) for u in us),
                        fac.as_independent(*us, as_Add=True)[0],
                        order * mult,
                        what,
                    )
                )
            elif deg == 2:
                out.append(_QuadZero(fac, order * mult, what))
            else:
                unknown.append(f"{what}: zeros of a polynomial of degree {deg} are not analysed")
        return
    free = [i for i, u in enumerate(us) if u in b.free_symbols]
    if len(free) == 1:
        out.append(_Root(b, free[0], order, f"1/({b})" + (f"^{order:g}" if order != 1 else "")))
        return
    unknown.append(f"1/({b}): the zeros of this denominator are not located")


@functools.lru_cache(maxsize=4096)
def structure(expr: sympy.Expr, d: int, m: int) -> Structure:
    """The law-independent part of the existence analysis of ``𝔼 expr(g0…; q0…)``."""
    if not shape(expr).opaque:
        # a polynomial in the Gaussians (of any size: the exact evaluator's cached walk
        # says so): every moment exists, whatever the law, and inlining the bodies of
        # nonlinearities of its constants costs seconds
        return Structure(expr, d, None, (), (), ())
    red = linear_forms(expr, d, m)
    e, k = (red.expr, red.k) if red is not None else (expr, d)
    us = [g(i) for i in range(k)]
    e = inline(e, of=frozenset(us))
    qs = [q(j) for j in range(m)]
    singular: list[Any] = []
    unknown: list[str] = []
    _singular(e, us, qs, singular, unknown)
    bounds = _bound(e, us)
    exps: tuple[sympy.Expr, ...] = ()
    if bounds is None:
        unknown.append(
            f"the growth of {_short(e)} at infinity is not bounded by exp of a quadratic"
        )
    else:
        exps = tuple(P for P in bounds if P != 0 and sympy.Poly(P, *us).total_degree() == 2)
    return Structure(e, k, red, tuple(dict.fromkeys(singular)), exps, tuple(unknown))


def _short(e: sympy.Expr) -> str:
    s = str(e)
    return s if len(s) <= 80 else s[:77] + "..."


# -- decisions for given laws -------------------------------------------------------------
def decide(
    expr: sympy.Expr, d: int, m: int, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
) -> list[Finding]:
    """Whether ``𝔼 expr`` exists, for each element of a batch of laws.

    Parameters
    ----------
    expr : sympy.Expr
        Canonical integrand over ``g0 … g(d−1)`` and constants ``q0 … q(m−1)``.
    mean, cov, qv : ndarray, shapes (B, d), (B, d, d), (B, m)
        Law of the ``g``'s and the constants, per element.

    Returns
    -------
    list of Finding
        One per element: ``EXISTS``, ``UNPROVEN`` (with the reason) or ``DIVERGES``
        (with the reason).
    """
    st = structure(expr, d, m)
    B = mean.shape[0]
    if st.trivial:
        return [EXISTS] * B
    out = [EXISTS] * B
    if st.unknown:
        out = [Finding(Verdict.UNPROVEN, st.unknown[0])] * B
    if not (st.singular or st.exps):
        return out
    qv = np.asarray(qv, dtype=float).reshape(B, m)
    qs = [q(j) for j in range(m)]
    if not st.singular and all(
        _concave(_coefficients(P, st.k, m, qv if P.has(*qs) else qv[:1])).all() for P in st.exps
    ):
        return out  # exp of concave quadratics only: integrable under every law
    if st.reduction is not None:
        mu, cu = st.reduction.reduce(mean, cov, qv)
    else:
        mu, cu = mean, cov
    with np.errstate(all="ignore"):
        F = psd_factor(0.5 * (cu + np.swapaxes(cu, 1, 2)), what="covariance of the linear forms")
    f = _numeric(st.expr, st.k, m)

    def worse(i: int, fnd: Finding) -> None:
        if fnd.verdict > out[i].verdict:
            out[i] = fnd

    for s in st.singular:
        for i, fnd in enumerate(_check_singular(s, st.k, m, f, mu, F, qv)):
            worse(i, fnd)
    for P in st.exps:
        for i, fnd in enumerate(_check_growth(P, st.k, m, f, mu, F, qv)):
            worse(i, fnd)
    return out


@functools.lru_cache(maxsize=4096)
def law_free(expr: sympy.Expr, d: int, m: int) -> bool:
    """Whether :func:`decide` finds that ``𝔼 expr`` exists under every law without
    looking at it: a trivial structure, or exponentials of quadratics that are concave
    whatever the constants (their coefficients are numbers), with nothing singular or
    unknown."""
    st = structure(expr, d, m)
    if st.trivial:
        return True
    qs = [q(j) for j in range(m)]
    if st.unknown or st.singular or any(P.has(*qs) for P in st.exps):
        return False
    return all(_concave(_coefficients(P, st.k, m, np.zeros((1, m)))).all() for P in st.exps)


@functools.lru_cache(maxsize=1024)
def _numeric(e: sympy.Expr, k: int, m: int) -> Any:
    """``|f|`` at points: ``(u (B, P, k), qv (B, m)) -> (B, P)`` (numpy, no warnings)."""

    fn = lambdify_integrand(e, k, m)

    def ev(u: np.ndarray, qv: np.ndarray) -> np.ndarray:
        cols = [u[..., j] for j in range(k)] + [
            qv[:, j, None] * np.ones(u.shape[:-1]) for j in range(m)
        ]
        with np.errstate(all="ignore"):
            try:
                val = np.asarray(fn(*cols), dtype=float)
            except Exception:  # noqa: BLE001 - e.g. a Dirac delta: no pointwise value
                return np.full(u.shape[:-1], np.nan)
        return np.abs(np.broadcast_to(val, u.shape[:-1]))

    return ev


def _points(B: int, r: int) -> np.ndarray:
    """Fixed standard-normal sample points (B, P, r) (reproducible decisions)."""
    return np.random.default_rng(12345).standard_normal((1, _POINTS, r)).repeat(B, axis=0)


def _order_finding(seen: np.ndarray, order_sym: float, codim: int, what: str) -> list[Finding]:
    """Verdicts from measured local orders (B,) at a singular set of codimension
    ``codim`` (NaN: ``f`` vanishes next to it; inf: ``f`` is infinite next to it).

    A measured order within ``_ORDER_TOL`` of the symbolic one is that order exactly
    (the numerator does not vanish there); otherwise it is trusted only when it is
    ``_ORDER_MARGIN`` away from ``codim``.
    """
    out = []
    for s in seen:
        if np.isnan(s):
            out.append(EXISTS)
        elif abs(s - order_sym) <= _ORDER_TOL or s == np.inf:
            o = order_sym if s != np.inf else s
            out.append(
                EXISTS
                if o < codim
                else Finding(
                    Verdict.DIVERGES,
                    f"{what}: near a singular set of codimension {codim} that "
                    f"the Gaussian charges, |integrand| grows like dist^-{o:g}, and "
                    f"∫ dist^-a d(dist^{codim}) is infinite for a ≥ {codim}",
                )
            )
        elif s > codim + _ORDER_MARGIN:
            out.append(
                Finding(
                    Verdict.DIVERGES,
                    f"{what}: near a singular set of codimension "
                    f"{codim}, |integrand| grows like dist^-{s:.3g} (measured), "
                    f"not integrable",
                )
            )
        elif s < codim - _ORDER_MARGIN:
            out.append(EXISTS)
        else:
            out.append(
                Finding(
                    Verdict.UNPROVEN,
                    f"{what}: the measured local order {s:.3g} is too close to {codim} to decide",
                )
            )
    return out


def _local_order(f: Any, u0: np.ndarray, direction: np.ndarray, qv: np.ndarray) -> np.ndarray:
    """Blow-up order of ``|f|`` at points ``u0`` (B, P, k) along ``direction`` (B, 1, k)
    (offsets in whitened units): the worst over points and both sides; NaN where ``f``
    vanishes next to every point, inf where it is infinite next to one."""
    orders = []
    for side in (1.0, -1.0):
        a = f(u0 + side * _T1 * direction, qv)
        b = f(u0 + side * _T2 * direction, qv)
        with np.errstate(all="ignore"):
            o = (np.log(b) - np.log(a)) / math.log(_T1 / _T2)
        o = np.where((a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b), o, np.nan)
        o = np.where(np.isposinf(b) | np.isposinf(a), np.inf, o)
        orders.append(o)
    allo = np.concatenate(orders, axis=1)
    with np.errstate(all="ignore"):
        worst = np.where(np.isnan(allo), -np.inf, allo).max(axis=1)
    return np.where(np.isneginf(worst), np.nan, worst)


def _check_singular(
    s: Any, k: int, m: int, f: Any, mu: np.ndarray, F: np.ndarray, qv: np.ndarray
) -> list[Finding]:
    B = mu.shape[0]
    qs = [q(j) for j in range(m)]
    if isinstance(s, _Pole):
        a = np.stack([_lam_q(c, qs)(qv) for c in s.coeffs], axis=1)  # (B, k)
        c = _lam_q(s.const, qs)(qv)
        n = np.einsum("bkr,bk->br", F, a)  # L = aᵀμ + c + nᵀz
        nn = np.linalg.norm(n, axis=1)
        L0 = np.einsum("bk,bk->b", a, mu) + c
        scale = np.linalg.norm(a, axis=1) * np.maximum(1.0, np.linalg.norm(F, axis=(1, 2)))
        degenerate = nn <= 1e-12 * np.maximum(scale, 1e-300)
        out: list[Finding] = [EXISTS] * B
        live = np.flatnonzero(~degenerate)
        for i in np.flatnonzero(degenerate):
            if abs(L0[i]) <= 1e-12 * max(1.0, np.abs(a[i]).max() * np.abs(mu[i]).max(initial=0)):
                out[i] = Finding(
                    Verdict.DIVERGES,
                    f"{s.what}: the denominator is 0 with probability 1 "
                    f"(a linear form of variance 0 and value 0)",
                )
        if live.size:
            nh = n[live] / nn[live, None]
            z = _points(live.size, F.shape[2])
            t0 = -L0[live] / nn[live]  # the set {nᵀz = t0}
            z = z - (np.einsum("bpr,br->bp", z, nh) - t0[:, None])[..., None] * nh[:, None]
            u0 = mu[live, None] + np.einsum("bkr,bpr->bpk", F[live], z)
            du = np.einsum("bkr,br->bk", F[live], nh)[:, None]
            seen = _local_order(f, u0, du, qv[live])
            for i, fnd in zip(live, _order_finding(seen, s.order, 1, s.what)):
                out[i] = fnd
        return out
    if isinstance(s, _QuadZero):
        return _check_quadratic(s, k, m, f, mu, F, qv)
    if isinstance(s, _Root):
        return _check_root(s, k, m, f, mu, F, qv)
    raise AssertionError(s)  # pragma: no cover


@functools.lru_cache(maxsize=1024)
def _poly_terms(P: sympy.Expr, k: int) -> tuple[tuple[tuple[int, ...], sympy.Expr], ...]:
    """The terms of ``P`` as a polynomial in ``g0 … g(k−1)``: (the indices of each
    monomial's factors, its coefficient) — once per polynomial, not per batch of laws."""
    poly = sympy.Poly(P, *[g(i) for i in range(k)])
    return tuple(
        (tuple(i for i, p in enumerate(mon) for _ in range(p)), coef) for mon, coef in poly.terms()
    )


def _quadratic_parts(
    P: sympy.Expr, k: int, m: int, mu: np.ndarray, F: np.ndarray, qv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P(μ + Fz) = zᵀAz + βᵀz + γ``: (A (B, r, r), β (B, r), γ (B,))."""
    qs = [q(j) for j in range(m)]
    B = mu.shape[0]
    C = np.zeros((B, k, k))
    b = np.zeros((B, k))
    c0 = np.zeros(B)
    for idx, coef in _poly_terms(P, k):
        val = _lam_q(coef, qs)(qv)
        if len(idx) == 2:
            i, j = idx
            if i == j:
                C[:, i, i] += val
            else:
                C[:, i, j] += val / 2
                C[:, j, i] += val / 2
        elif len(idx) == 1:
            b[:, idx[0]] += val
        elif not idx:
            c0 += val
    A = np.einsum("bki,bkl,blj->bij", F, C, F)
    beta = np.einsum("bkr,bk->br", F, 2 * np.einsum("bkl,bl->bk", C, mu) + b)
    gamma = np.einsum("bk,bkl,bl->b", mu, C, mu) + np.einsum("bk,bk->b", b, mu) + c0
    return A, beta, gamma


def _check_quadratic(
    s: _QuadZero, k: int, m: int, f: Any, mu: np.ndarray, F: np.ndarray, qv: np.ndarray
) -> list[Finding]:
    A, beta, gamma = _quadratic_parts(s.poly, k, m, mu, F, qv)
    out: list[Finding] = []
    for i in range(mu.shape[0]):
        w, V = np.linalg.eigh(A[i])
        scale = max(1.0, np.abs(w).max())
        if w.min() < -1e-10 * scale and w.max() > 1e-10 * scale:
            out.append(
                Finding(
                    Verdict.UNPROVEN,
                    f"{s.what}: the zero set of an indefinite quadratic is not analysed",
                )
            )
            continue
        sgn = 1.0 if w.max() > 1e-10 * scale else -1.0
        Ai, bi, ci = sgn * A[i], sgn * beta[i], sgn * gamma[i]
        zstar = -0.5 * np.linalg.pinv(Ai, rcond=1e-10, hermitian=True) @ bi
        qmin = zstar @ Ai @ zstar + bi @ zstar + ci
        resid = np.linalg.norm(2 * Ai @ zstar + bi)
        tol = 1e-10 * max(1.0, abs(ci), float(np.linalg.norm(bi)))
        if resid > 1e-8 * max(1.0, np.linalg.norm(bi)) or qmin < -tol:
            out.append(
                Finding(
                    Verdict.UNPROVEN,
                    f"{s.what}: a quadratic whose zero set is a hypersurface is not analysed",
                )
            )
            continue
        if qmin > tol:
            out.append(EXISTS)  # never 0 on the support
            continue
        rank = int((np.abs(w) > 1e-10 * scale).sum())
        dirn = V[:, np.abs(w) > 1e-10 * scale] @ np.ones(rank) / math.sqrt(rank)
        z0 = np.zeros((1, _POINTS, F.shape[2])) + zstar
        # other points of the zero set: move along the null directions
        null = V[:, np.abs(w) <= 1e-10 * scale]
        if null.shape[1]:
            z0 = z0 + (_points(1, null.shape[1]) @ null.T)
        u0 = mu[i, None, None] + z0 @ F[i].T
        du = (F[i] @ dirn)[None, None]
        seen = _local_order(f, u0, du, qv[i : i + 1])
        out += _order_finding(seen, 2 * s.order, rank, s.what)
    return out


def _check_root(
    s: _Root, k: int, m: int, f: Any, mu: np.ndarray, F: np.ndarray, qv: np.ndarray
) -> list[Finding]:
    """Zeros of a function of one variable ``u_j``: scanned on a grid over
    ``μ_j ± 40σ_j``, refined by bisection, then the local order of ``|f|`` there."""
    base = _numeric(s.base, k, m)
    j = s.var
    out: list[Finding] = []
    for i in range(mu.shape[0]):
        sd = float(np.linalg.norm(F[i, j]))
        if sd == 0.0:
            val = base(mu[i][None, None], qv[i : i + 1])[0, 0]
            out.append(
                Finding(Verdict.DIVERGES, f"{s.what}: the denominator is 0 with probability 1")
                if val == 0
                else EXISTS
            )
            continue
        grid = mu[i, j] + sd * np.linspace(-40, 40, 8001)
        pts = np.repeat(mu[i][None], grid.size, axis=0)
        pts[:, j] = grid
        # signed values: |base| is what _numeric gives; recover the sign numerically

        raw = lambdify_integrand(s.base, k, m)
        cols = [pts[:, c] for c in range(k)] + [np.full(grid.size, qv[i, c]) for c in range(m)]
        with np.errstate(all="ignore"):
            v = np.broadcast_to(np.asarray(raw(*cols), dtype=float), grid.shape)
        roots = list(np.flatnonzero((v[:-1] == 0) | (np.sign(v[:-1]) * np.sign(v[1:]) < 0)))
        if not roots:
            out.append(
                Finding(
                    Verdict.UNPROVEN,
                    f"{s.what}: no zero of the denominator found within 40σ, but none is excluded",
                )
            )
            continue
        lo, hi = grid[roots[0]], grid[roots[0] + 1]
        flo = v[roots[0]]
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            pm = mu[i].copy()
            pm[j] = mid
            fm = float(np.asarray(raw(*pm, *qv[i]), dtype=float))
            if fm == 0 or np.sign(fm) != np.sign(flo):
                hi = mid
            else:
                lo, flo = mid, fm
        root = 0.5 * (lo + hi)
        # points on {u_j = root} of the conditional law: regress the others on u_j
        z = _points(1, F.shape[2])[0]
        Fi = F[i]
        nh = Fi[j] / sd
        z = z - ((z @ nh) - (root - mu[i, j]) / sd)[:, None] * nh[None]
        u0 = (mu[i][None] + z @ Fi.T)[None]
        du = (Fi @ nh)[None, None]
        seen = _local_order(f, u0, du, qv[i : i + 1])
        out += _order_finding(seen, s.order, 1, s.what)
    return out


def _coefficients(P: sympy.Expr, k: int, m: int, qv: np.ndarray) -> np.ndarray:
    """The quadratic part ``C`` (B, k, k) of ``P`` in the ``g``'s themselves."""
    B = qv.shape[0]
    return _quadratic_parts(P, k, m, np.zeros((B, k)), np.broadcast_to(np.eye(k), (B, k, k)), qv)[0]


def _concave(C: np.ndarray) -> np.ndarray:
    """Whether the quadratic part ``C`` of ``P`` (in the ``g``'s themselves) is negative
    semidefinite, per batch element: then ``exp(P)`` is bounded by ``exp`` of a linear
    function under *any* law of the ``g``'s, decided on ``C``'s own scale. (Its image
    ``A = FᵀCF`` in whitened coordinates is negative semidefinite too, but computing its
    eigenvalues there loses ``ε‖A‖``: ``−8Ẑ²`` with ``Var Ẑ = 6·10¹⁶`` — a deep gelu
    network's backward pass — shows a spurious eigenvalue ``+50 > 1/2``.)"""
    w = np.linalg.eigvalsh(C)
    return w[:, -1] <= 16 * np.finfo(float).eps * np.abs(w).max(axis=1, initial=0.0)


def _check_growth(
    P: sympy.Expr, k: int, m: int, f: Any, mu: np.ndarray, F: np.ndarray, qv: np.ndarray
) -> list[Finding]:
    """``𝔼 exp(P)`` finite iff ``λ_max(A) < 1/2``; failures confirmed along the
    eigenvector (``|f|`` must grow like ``exp(λ r²)`` there)."""
    A, beta, gamma = _quadratic_parts(P, k, m, mu, F, qv)
    w, V = np.linalg.eigh(A)
    lam = w[:, -1]
    out: list[Finding] = []
    concave = _concave(_coefficients(P, k, m, qv))
    for i in range(mu.shape[0]):
        if concave[i] or lam[i] < 0.5 - _EIG_TOL:
            out.append(EXISTS)
            continue
        e = V[i, :, -1]
        rs = np.array([8.0, 16.0])
        worst = -np.inf
        for side in (1.0, -1.0):
            u = mu[i][None, None] + (side * rs[:, None] * e[None]) @ F[i].T[None]
            with np.errstate(all="ignore"):
                lf = np.log(f(u, qv[i : i + 1])[0])
            if np.any(np.isposinf(lf)) or np.any(np.isnan(lf)):
                worst = np.inf  # overflow (or inf − inf) far out: it grows
            elif np.all(np.isfinite(lf)):
                # log|f| − r²/2 (f times the density along the ray) against log r: the
                # integral along the ray diverges iff this power is ≥ −1
                h = lf - rs**2 / 2
                worst = max(worst, (h[1] - h[0]) / math.log(rs[1] / rs[0]))
        what = (
            f"exp({_short(P)}) grows like exp({lam[i]:.6g} r²) along a direction where "
            f"the Gaussian density decays like exp(−r²/2)"
        )
        if worst >= -1.0 + _ORDER_MARGIN:
            out.append(
                Finding(Verdict.DIVERGES, what + ": 𝔼 exp(c u²) is finite only for c·Var(u) < 1/2")
            )
        else:
            out.append(
                Finding(Verdict.UNPROVEN, what + ", and the integrand does not follow this bound")
            )
    return out


# -- change of measure ------------------------------------------------------------------
@dataclass(frozen=True)
class Tilt:
    """``f = h · exp(P)`` with ``P`` a polynomial of degree 1 or 2 in the ``g``'s."""

    h: sympy.Expr
    P: sympy.Expr
    d: int
    m: int
    #: Whether ``P`` took the growing branch of a ``max``/``min`` (``h`` then still grows
    #: on the other side, and Monte Carlo samples a defensive mixture, :mod:`.montecarlo`).
    branched: bool = False

    def law(
        self, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(μ', Σ', c)`` with ``𝔼_{N(μ,Σ)}[h e^P] = e^c 𝔼_{N(μ',Σ')}[h]``.

        With ``g = μ + Fz`` and ``P = zᵀAz + βᵀz + γ``: ``S = (I − 2A)⁻¹``,
        ``z ~ N(Sβ, S)`` under the tilted law, ``c = γ + βᵀSβ/2 + log det S / 2``
        (complete the square in ``exp(−zᵀz/2 + P)``). Requires ``λ_max(A) < 1/2``
        (:func:`decide` has proved it; None otherwise).
        """
        with np.errstate(all="ignore"):
            F = psd_factor(0.5 * (cov + np.swapaxes(cov, 1, 2)), what="covariance")
        A, beta, gamma = _quadratic_parts(self.P, self.d, self.m, mean, F, qv)
        r = F.shape[2]
        C = _coefficients(self.P, self.d, self.m, qv)
        if _concave(C).all():
            # C = −LLᵀ, A = −GGᵀ (G = FᵀL): S = (I + 2GGᵀ)⁻¹ from the SVD of G, exact in
            # structure (A's eigenvalues computed from A itself carry ε‖A‖ of rounding,
            # enough to make I − 2A indefinite when Var is ~10¹⁶)
            w, V = np.linalg.eigh(-C)
            G = np.einsum("bkr,bkl->brl", F, V * np.sqrt(np.maximum(w, 0.0))[:, None, :])
            U, sig, _ = np.linalg.svd(G, full_matrices=False)
            s2 = 2 * sig**2
            S = np.eye(r) - np.einsum("bik,bk,bjk->bij", U, s2 / (1 + s2), U)
            logdet = -np.log1p(s2).sum(axis=1)
        else:
            if np.linalg.eigvalsh(A)[:, -1].max(initial=0.0) >= 0.5 - 1e-6:
                return None  # (no finite tilted law: existence is not proven)
            S = np.linalg.inv(np.eye(r) - 2 * A)
            _, logdet = np.linalg.slogdet(S)
        S = 0.5 * (S + np.swapaxes(S, 1, 2))
        zm = np.einsum("bij,bj->bi", S, beta)
        c = gamma + 0.5 * np.einsum("bi,bi->b", beta, zm) + 0.5 * logdet
        mean2 = mean + np.einsum("bkr,br->bk", F, zm)
        cov2 = np.einsum("bkr,brs,bls->bkl", F, S, F)
        return mean2, cov2, c


@functools.lru_cache(maxsize=4096)
def tilt(expr: sympy.Expr, d: int, m: int, branches: bool = False) -> Tilt | None:
    """``expr`` as ``h · exp(P)`` (``P`` of degree 1 or 2 in the ``g``'s, the product of
    every such ``exp`` factor of a top-level product), or None.

    ``branches``: also take the growing branch of ``max``/``min`` terms of an exponent
    (:func:`_growing_part`). Monte Carlo does (the samples of ``h`` then have light
    tails); quadrature does not (``h`` keeps the kink, now off the tilted law's centre,
    where the panel rule of the untilted integrand resolves it better)."""
    gs = [g(i) for i in range(d)]
    e = inline(expr)
    P = sympy.S.Zero
    rest = []
    branched = False
    for fac in sympy.Mul.make_args(e):
        part = _growing_part(fac.args[0], gs, branches) if isinstance(fac, sympy.exp) else None
        if part is None:
            rest.append(fac)
            continue
        P += part
        if part != fac.args[0]:
            rest.append(sympy.exp(fac.args[0] - part))
            branched = branched or not (fac.args[0] - part).is_polynomial(*gs)
    if P == 0:
        return None
    return Tilt(sympy.Mul(*rest), sympy.expand(P), d, m, branched)


def _growing_part(E: sympy.Expr, gs: list[sympy.Symbol], branches: bool) -> sympy.Expr | None:
    """The part of an exponent ``E`` a tilt takes out: its polynomial terms of degree ≤ 2,
    and ``c·L`` for each term ``c·max(L, a)`` (``c > 0``) or ``c·min(L, a)`` (``c < 0``)
    with ``L`` affine — the branch along which ``e^{E}`` grows (``e^{2 relu(v)}``: the
    tilt ``e^{2v}`` leaves ``h = e^{2 relu(−v)}``, whose every moment under the tilted law
    is small, where the samples of ``e^{2 relu(v)}`` look heavy-tailed, k̂ ≈ 0.6). None
    when there is no such part of degree 1 or 2.

    Any split is exact (``𝔼[h e^P] = e^c 𝔼'[h]`` for every ``h``); the choice only
    decides how concentrated ``h`` is under the tilted law. Without ``branches``, only a
    polynomial ``E`` is taken."""
    if not branches:
        ok = E.is_polynomial(*gs) and 0 < sympy.Poly(E, *gs).total_degree() <= 2
        return E if ok else None
    part = sympy.S.Zero
    for t in sympy.Add.make_args(E):
        if t.is_polynomial(*gs):
            part += t
            continue
        c, f = t.as_coeff_Mul()
        if (
            isinstance(f, (sympy.Max, sympy.Min))
            and len(f.args) == 2
            and c.is_number
            and (c > 0) == isinstance(f, sympy.Max)
        ):
            lin = [a for a in f.args if not a.is_number]
            if (
                len(lin) == 1
                and lin[0].is_polynomial(*gs)
                and sympy.Poly(lin[0], *gs).total_degree() == 1
            ):
                part += c * lin[0]
    if part == 0 or not 0 < sympy.Poly(part, *gs).total_degree() <= 2:
        return None
    return part


def tilted(
    quadrature: Any,
    expr: sympy.Expr,
    d: int,
    m: int,
    mean: np.ndarray,
    cov: np.ndarray,
    qv: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``quadrature(expr, d, m, mean, cov, qv)`` after the change of measure of
    :func:`tilt` when ``expr = h·exp(P)``: ``h`` under ``N(μ', Σ')``, times ``e^c``
    (values and error estimates). ``𝔼 exp(v²)`` at ``Var v = 0.49`` is ``√50 · 𝔼[1]``
    instead of a Gauss–Hermite rule on an integrand that decays like ``e^{−0.02 v²}``."""
    tl = tilt(expr, d, m)
    law = tl.law(mean, cov, qv) if tl is not None else None
    if law is None:
        return quadrature(expr, d, m, mean, cov, qv)
    mean2, cov2, logc = law
    with np.errstate(over="ignore"):
        c = np.exp(logc)
    val, err, growth = quadrature(tl.h, d, m, mean2, cov2, qv)
    return val * c, err * c, growth


# -- the hook of the evaluator ------------------------------------------------------------
def integrand(plan: Any, req: Any) -> sympy.Expr | None:
    """A request's canonical integrand (:meth:`~.plan.Plan.integrand`)."""
    return plan.integrand(req)


def _named(reason: str, der: Any, req: Any, expr: sympy.Expr, d: int, m: int) -> str:
    """A reason with the placeholders ``g_k`` named by their base Gaussians (when the
    analysis ran over them, not over linear forms of them)."""
    import re

    if structure(expr, d, m).reduction is not None:
        return reason
    syms = [str(der.bases[b].symbol) for b in req.bids]
    return re.sub(
        r"\bg(\d+)\b",
        lambda mt: syms[int(mt.group(1))] if int(mt.group(1)) < len(syms) else mt.group(0),
        reason,
    )


def check_requests(
    det: Any, reqs: list[Any], mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
) -> None:
    """Decide the existence of a group of requests (one integrand) before evaluation.

    A divergent one raises :class:`~tensorprog.core.errors.DivergenceError` naming its
    instruction and why; the others are recorded in ``det.proven`` or, with the
    reason, ``det.unproven`` (see :class:`~.evaluate.Deterministic`).
    """
    from ..core.errors import DivergenceError
    from ..core.interpreter import annotate

    r0 = reqs[0]
    expr = integrand(det.plan, r0)
    if expr is None:
        return
    d, m = len(r0.bids), len(r0.cids)
    finite = (
        np.isfinite(cov).all(axis=(1, 2))
        & np.isfinite(mean).all(axis=1)
        & np.isfinite(qv).all(axis=1)
    )  # (an overflow is reported by the evaluation, by name)
    reqs = [r for r, ok in zip(reqs, finite) if ok]
    if not reqs:
        return
    finds = decide(expr, d, m, mean[finite], cov[finite], qv[finite])
    for r, fnd in zip(reqs, finds):
        if fnd.verdict is Verdict.DIVERGES:
            exc = DivergenceError(
                f"the {describe(r)} does not exist: "
                f"{_named(fnd.reason, det.plan.der, r, expr, d, m)}"
            )
            instr = det._instruction(r)
            raise annotate(exc, instr, "Limit") if instr is not None else exc
        if fnd.verdict is Verdict.UNPROVEN:
            det.unproven[r.rid] = _named(fnd.reason, det.plan.der, r, expr, d, m)
        else:
            det.proven.add(r.rid)


def exists_for_every_law(plan: Any, req: Any) -> bool:
    """Whether a request's expectation exists whatever the law of its Gaussians: no
    singular set and at most exp-linear growth (:attr:`Structure.trivial`). Used when
    the law is only known to Monte Carlo (hats in ``method="montecarlo"``)."""
    expr = integrand(plan, req)
    return expr is not None and structure(expr, len(req.bids), len(req.cids)).trivial
