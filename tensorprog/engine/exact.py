"""Exact Gaussian expectations of canonical integrands.

An integrand (a sympy expression over base Gaussians ``g_k`` and constants ``q_j``)
is expanded into a sum of terms ``c(q) · P(g) · Π φ_i(a_iᵀ g)``. A term is exact when

* it has no opaque nonlinearity: ``𝔼 P(g)`` by Isserlis/Wick with means
  (:func:`tensorprog.gaussian.gaussian_moment`), for any degree; or
* ``P`` is constant and there are one or two opaque factors of *linear* forms of
  centred Gaussians with a registered closed form (:data:`tensorprog.nonlin.CLOSED_FORMS`,
  e.g. the arc-cosine kernels of relu/step [Cho & Saul 2009], erf [Williams 1997]).

:func:`exact_evaluator` compiles an integrand once into a function vectorised over a
batch of ``(mean, cov, q)`` — how structurally identical expectations (e.g. the B²
entries of a kernel) are evaluated in one numpy call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy

from ..gaussian import gaussian_moment
from ..nonlin import _NUMPY_MODULES, CLOSED_FORMS, codegen_functions
from .symbols import ConstSym, GaussSym, g, q

__all__ = ["exact_evaluator", "independent_blocks"]

Evaluator = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@functools.lru_cache(maxsize=4096)
def exact_evaluator(expr: sympy.Expr, d: int, m: int, centred: bool,
                    groups: tuple[int, ...] | None = None) -> Evaluator | None:
    """Compile ``𝔼[expr]`` into ``f(mean (B,d), cov (B,d,d), q (B,m)) -> (B,)``.

    Returns None when some term has no exact form. ``centred`` says whether every
    base Gaussian has mean zero (closed forms of nonlinearities need it). ``groups``
    labels the base Gaussians so that different labels are independent (different
    matrix families, uncorrelated initial vectors); a term then factorises,
    ``𝔼[Π_blocks F_b] = Π_b 𝔼[F_b]``, and each block may be exact on its own —
    e.g. the NTK's ``𝔼[Ẑ^{Wᵀ·}Ẑ^{Wᵀ·} step(Ẑ^{W·}) step(Ẑ^{W·})]``.
    """
    gs = [g(k) for k in range(d)]
    qs = [q(j) for j in range(m)]
    expr = sympy.expand(expr, deep=False, power_exp=False, log=False)
    parts: list[Evaluator] = []
    for term in sympy.Add.make_args(expr):
        ev = _factorised(term, gs, qs, centred, groups)
        if ev is None:
            return None
        parts.append(ev)

    def evaluate(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        out = np.zeros(mean.shape[0])
        for ev in parts:
            out = out + ev(mean, cov, qv)
        return out

    return evaluate


def _lam_q(expr: sympy.Expr, qs: list[sympy.Symbol]) -> Callable[[np.ndarray], np.ndarray]:
    """``expr(q)`` vectorised over a batch of constants ``qv`` (B, m)."""
    if expr.is_Number:  # most coefficients: no code to generate
        v = float(expr)
        return lambda qv: np.full(qv.shape[0], v)
    # opaque nonlinearities may appear with constant arguments (tanh(θ̊), tanh(0))
    fns = codegen_functions(expr)  # refuses any name that is not a checked identifier
    f = sympy.lambdify(qs, expr, modules=[fns, *_NUMPY_MODULES])
    return lambda qv: np.broadcast_to(np.asarray(f(*qv.T), dtype=float), (qv.shape[0],))


def independent_blocks(term: sympy.Expr, d: int, groups: tuple[int, ...]) -> list[sympy.Expr]:
    """Split a product ``term`` into ``[constant part, block₁, block₂, …]``.

    Factors sharing a possibly-dependent base Gaussian (equal ``groups`` label) are
    in one block; different blocks are independent, so ``𝔼[term]`` is the constant
    part times the product of the blocks' expectations.
    """
    gs = [g(k) for k in range(d)]
    coef, rest = term.as_independent(*gs, as_Add=False)
    factors = list(sympy.Mul.make_args(rest))
    parent = {gr: gr for gr in set(groups)}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    labels = []
    for f in factors:
        gr = sorted({groups[int(s.name[1:])] for s in f.free_symbols if isinstance(s, GaussSym)})
        for a in gr[1:]:
            parent[find(a)] = find(gr[0])
        labels.append(gr[0] if gr else None)
    blocks: dict[int | None, list[sympy.Expr]] = {}
    for f, lab in zip(factors, labels):
        blocks.setdefault(find(lab) if lab is not None else None, []).append(f)
    const = coef * sympy.Mul(*blocks.pop(None, []))
    return [const] + [sympy.Mul(*fs) for fs in blocks.values()]


def _factorised(term: sympy.Expr, gs: list[GaussSym], qs: list[sympy.Symbol], centred: bool,
                groups: tuple[int, ...] | None) -> Evaluator | None:
    """``𝔼[term]`` as a product over blocks of mutually independent Gaussians."""
    if groups is None or len(set(groups)) < 2:
        return _term(term, gs, qs, centred)
    parts = independent_blocks(term, len(gs), groups)
    if len(parts) < 3:
        return _term(term, gs, qs, centred)
    evs = [_term(p, gs, qs, centred) for p in parts]
    if any(e is None for e in evs):
        return None

    def product(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        out = evs[0](mean, cov, qv)
        for e in evs[1:]:
            out = out * e(mean, cov, qv)
        return out

    return product


def _term(term: sympy.Expr, gs: list[GaussSym], qs: list[sympy.Symbol], centred: bool) -> Evaluator | None:
    gset = set(gs)
    if not (term.free_symbols & gset):
        c = _lam_q(term, qs)
        return lambda mean, cov, qv: c(qv)
    coef, rest = term.as_independent(*gs, as_Add=False)
    if any(not isinstance(s, (GaussSym, ConstSym)) for s in term.free_symbols):
        return None
    poly: list[sympy.Expr] = []
    opaque: list[tuple[Any, sympy.Expr]] = []  # (nonlinearity, linear argument)
    for factor in sympy.Mul.make_args(rest):
        base, e = factor.as_base_exp()
        if factor.is_polynomial(*gs):
            poly.append(factor)
            continue
        fn = getattr(base.func, "nonlinearity", None)
        if fn is None or fn.nparams or len(base.args) != 1 or not e.is_Integer or e < 1:
            return None
        arg = base.args[0]
        if not _linear(arg, gs):
            return None
        opaque += [(fn, arg)] * int(e)
    c = _lam_q(coef, qs)
    if not opaque:
        P = sympy.Mul(*poly)
        mus = sympy.symbols(f"mu0:{len(gs)}", real=True)
        sig = sympy.Matrix(len(gs), len(gs), lambda i, j: sympy.Symbol(f"S{min(i, j)}_{max(i, j)}", real=True))
        formula = gaussian_moment(P, gs, list(mus), sig)
        syms = list(mus) + [sig[i, j] for i in range(len(gs)) for j in range(i, len(gs))] + list(qs)
        f = sympy.lambdify(syms, formula, modules=_NUMPY_MODULES)
        iu = np.triu_indices(len(gs))

        def wick(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
            args = list(mean.T) + list(cov[:, iu[0], iu[1]].T) + list(qv.T)
            val = np.broadcast_to(np.asarray(f(*args), dtype=float), (mean.shape[0],))
            return c(qv) * val

        return wick
    P = sympy.Mul(*poly)
    if centred and len(opaque) == 1 and P.free_symbols & gset and _linear(P, gs):
        # 𝔼[(aᵀg) φ(bᵀg)]: the ("identity", φ) pair closed form.
        opaque.insert(0, (None, P))
        poly = []
    if not centred or len(opaque) > 2 or sympy.Mul(*poly).free_symbols & gset:
        return None
    names = ["identity" if fn is None else CLOSED_FORMS.get(fn) for fn, _ in opaque]
    if any(nm is None for nm in names):
        return None
    from ..gaussian import PAIR_CLOSED_FORMS, SINGLE_CLOSED_FORMS

    Pc = _lam_q(sympy.Mul(*poly), qs)
    coeffs = [coefficient_fn(arg, gs, qs) for _, arg in opaque]
    if len(opaque) == 1:
        single = SINGLE_CLOSED_FORMS.get(names[0])
        if single is None:
            return None

        def one(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
            a = coeffs[0](qv)
            k = np.einsum("bi,bij,bj->b", a, cov, a)
            return c(qv) * Pc(qv) * single(k)

        return one
    pair = PAIR_CLOSED_FORMS.get((names[0], names[1]))
    if pair is None:
        return None

    def two(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        a, b = coeffs[0](qv), coeffs[1](qv)
        k11 = np.einsum("bi,bij,bj->b", a, cov, a)
        k12 = np.einsum("bi,bij,bj->b", a, cov, b)
        k22 = np.einsum("bi,bij,bj->b", b, cov, b)
        return c(qv) * Pc(qv) * pair(k11, k12, k22)

    return two


def affine_parts(arg: sympy.Expr, gs: list[GaussSym]
                 ) -> tuple[dict[GaussSym, sympy.Expr], sympy.Expr] | None:
    """``arg = Σ_k a_k g_k + c`` as ``({g_k: a_k}, c)`` (``a_k``, ``c`` free of the
    ``g``'s), or None if ``arg`` is not affine in them."""
    gset = set(gs)
    lin: dict[GaussSym, sympy.Expr] = {}
    rest = []
    for t in sympy.Add.make_args(sympy.expand(arg, power_exp=False, log=False)):
        c, dep = t.as_independent(*gs, as_Add=False)
        if dep == 1:
            rest.append(t)
        elif dep in gset:
            lin[dep] = lin.get(dep, 0) + c
        else:
            return None
    return lin, sympy.Add(*rest)


def _linear(arg: sympy.Expr, gs: list[GaussSym]) -> bool:
    """Whether ``arg`` is ``Σ a_k g_k`` (no constant term; a_k free of g)."""
    parts = affine_parts(arg, gs)
    return parts is not None and bool(parts[0]) and parts[1] == 0


def coefficient_fn(arg: sympy.Expr, gs: list[GaussSym], qs: list[sympy.Symbol]) -> Callable[[np.ndarray], np.ndarray]:
    """The coefficient vector ``a(q)`` of a linear form, vectorised: (B, m) -> (B, d)."""
    fs = [_lam_q(arg.coeff(gk), qs) for gk in gs]
    return lambda qv: np.stack([f(qv) for f in fs], axis=1)
