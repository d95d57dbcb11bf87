"""Integrands as functions of few linear forms, and their numpy forms.

An integrand over base Gaussians ``g0 … g(d-1)`` often depends on them only through
``k < d`` linear forms ``u = A g`` (every affine argument of a function is one form);
:func:`linear_forms` finds them, so quadrature — and the existence checks of
:mod:`.existence` — work in ``k`` dimensions. Both :mod:`.evaluate` and
:mod:`.existence` build on this module (it imports neither).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import sympy

from ..core.nonlin import _NUMPY_MODULES, codegen_functions
from ..gaussian import MAX_QUADRATURE_DIM
from .exact import affine_parts, applications, coefficient_fn, gaussians, is_affine
from .symbols import GaussSym, g, q

__all__ = ["Reduction", "linear_forms", "quadrature_dim", "lambdify_integrand"]


class Reduction:
    """An integrand rewritten over ``k < d`` linear forms ``u = A(q) g`` of its Gaussians.

    ``expr`` is over ``g0 … g(k-1)`` standing for the forms; ``matrix(qv)`` gives
    ``A`` per request, shape (B, k, d), so ``u ~ N(A μ, A Σ Aᵀ)``.
    """

    def __init__(self, expr: sympy.Expr, k: int, d: int, forms: list[sympy.Expr], m: int) -> None:
        self.expr, self.k, self.d = expr, k, d
        gs, qs = [g(i) for i in range(d)], [q(j) for j in range(m)]
        rows = [coefficient_fn(a, gs, qs) for a in forms]
        self.matrix = lambda qv: np.stack([row(qv) for row in rows], axis=1)

    def reduce(
        self, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The forms' means (B, k) and covariances (B, k, k)."""
        A = self.matrix(qv)
        return (np.einsum("bkd,bd->bk", A, mean), np.einsum("bkd,bde,ble->bkl", A, cov, A))


@functools.lru_cache(maxsize=4096)
def linear_forms(expr: sympy.Expr, d: int, m: int) -> Reduction | None:
    """``expr`` as a function of fewer linear forms of its ``d`` Gaussians, if it is one.

    Every argument of a function application that is affine in the ``g``'s,
    ``aᵀg + c``, becomes ``u_j + c`` with one ``u_j`` per distinct ``a``; a ``g`` left
    anywhere else is a form of its own. E.g. ``φ'(2g₁ + g₂) φ'(g₂ + 2g₃)`` (an NTK
    entry with biases) is a 2-D integral, not a 3-D one. None when there are as many
    forms as Gaussians (nothing to gain) or more than :data:`MAX_QUADRATURE_DIM` (no
    rule would use them) — decided by walks of the expression before any substitution.
    """
    gs = [g(k) for k in range(d)]
    rows: list[tuple[sympy.Expr, ...]] = []
    index: dict[tuple[sympy.Expr, ...], int] = {}
    us: list[sympy.Dummy] = []

    def form(coeffs: tuple[sympy.Expr, ...]) -> sympy.Dummy:
        if coeffs not in index:
            index[coeffs] = len(rows)
            rows.append(coeffs)
            us.append(sympy.Dummy(f"u{len(us)}"))
        return us[index[coeffs]]

    gset = gaussians(gs)
    # Which arguments are substituted (affine ones, read from the tree) and which
    # Gaussians stay outside them: the forms are bounded below before any coefficient is
    # built (distinct supports are distinct forms) and counted before any function is
    # rebuilt (sympy re-evaluates each one).
    apps = {}  # application -> which of its arguments are affine in the g's
    # Canonical order (a set's order follows string hashes, PYTHONHASHSEED): the forms'
    # numbering fixes the order of the quadrature's dimensions, hence its last bits.
    for app in sorted(applications(expr), key=sympy.default_sort_key):
        flags = [bool(gset(a)) and is_affine(a, gset) for a in app.args]
        if any(flags):
            apps[app] = flags
    left_memo: dict = {}

    def left_of(e: sympy.Basic) -> frozenset:
        """The Gaussians of ``e`` outside the substituted arguments."""
        r = left_memo.get(e)
        if r is None:
            if e in apps:
                r = frozenset().union(*(gset(a) for a, f in zip(e.args, apps[e]) if not f))
            elif isinstance(e, GaussSym):
                r = gset(e)
            else:
                r = frozenset().union(*(left_of(a) for a in e.args)) if gset(e) else frozenset()
            left_memo[e] = r
        return r

    left = sorted(left_of(expr), key=lambda s: s.name)
    supports = {gset(a) for app, flags in apps.items() for a, f in zip(app.args, flags) if f}
    bound = len(supports | {frozenset((gk,)) for gk in left})
    if bound > MAX_QUADRATURE_DIM or bound >= d:
        return None
    new_args = {}
    for app, flags in apps.items():
        args = list(app.args)
        for i, f in enumerate(flags):
            if f:
                lin, rest = affine_parts(args[i], gs)
                if not lin:  # (cancelled to a constant: no reduction attempted)
                    return None
                args[i] = form(tuple(lin.get(gk, sympy.S.Zero) for gk in gs)) + rest
        new_args[app] = args
    unit = {tuple(sympy.S.One if h == gk else sympy.S.Zero for h in gs) for gk in left}
    k = len(index.keys() | unit)
    if k == 0 or k >= d or k > MAX_QUADRATURE_DIM:
        return None
    out = expr.xreplace({app: app.func(*args) for app, args in new_args.items()})
    out = out.xreplace(
        {gk: form(tuple(sympy.S.One if h == gk else sympy.S.Zero for h in gs)) for gk in left}
    )
    out = out.xreplace({u: g(j) for j, u in enumerate(us)})
    forms = [sympy.Add(*[c * gk for c, gk in zip(row, gs)]) for row in rows]
    return Reduction(out, len(rows), d, forms, m)


def quadrature_dim(expr: sympy.Expr, d: int, m: int) -> int:
    """Dimension of the Gauss–Hermite rule ``expr`` needs (after :func:`linear_forms`)."""
    red = linear_forms(expr, d, m)
    return red.k if red is not None else d


def lambdify_integrand(expr: sympy.Expr, d: int, m: int) -> Any:
    """numpy form ``f(g0, …, g(d-1), q0, …, q(m-1))`` of an integrand (cached; function
    names pass the code-generation guard :func:`~tensorprog.core.nonlin.codegen_functions`)."""
    syms = [g(k) for k in range(d)] + [q(j) for j in range(m)]
    fns = codegen_functions(expr)  # refuses any name that is not a checked identifier
    return _lambdify_cached(expr, tuple(syms), tuple(sorted(fns.items(), key=lambda kv: kv[0])))


_LAMBDA_CACHE: dict[Any, Any] = {}


def _lambdify_cached(expr: sympy.Expr, syms: tuple, fns: tuple) -> Any:
    key = (expr, syms)
    if key not in _LAMBDA_CACHE:
        _LAMBDA_CACHE[key] = sympy.lambdify(list(syms), expr, modules=[dict(fns)] + _NUMPY_MODULES)
    return _LAMBDA_CACHE[key]
