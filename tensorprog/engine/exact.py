"""Exact Gaussian expectations of canonical integrands.

An integrand (a sympy expression over base Gaussians ``g_k`` and constants ``q_j``)
is expanded into a sum of terms ``c(q) · P(g) · Π φ_i(a_iᵀ g)``. A term is exact when

* it has no opaque nonlinearity: ``𝔼 P(g)`` by Isserlis/Wick with means
  (:func:`tensorprog.gaussian.gaussian_moment`), for any degree — over the polynomial's
  maximal affine forms ``L_k = a_k + c_kᵀg`` (:func:`linear_forms_of`) when they are
  fewer than its Gaussians, so ``(Σ_i c_i g_i)²`` of hundreds of terms is a second
  moment of one Gaussian, not ``d(d+1)/2`` monomials; or
* ``P`` is constant and there are one or two opaque factors of *linear* forms of
  centred Gaussians with a closed form registered under their nonlinearity objects
  (:mod:`tensorprog.gaussian.closed_forms`, e.g. the arc-cosine kernels of relu/step
  [Cho & Saul 2009], erf [Williams 1997]).

:func:`exact_evaluator` compiles an integrand once into a function vectorised over a
batch of ``(mean, cov, q)`` — how structurally identical expectations (e.g. the B²
entries of a kernel) are evaluated in one numpy call.

Before anything is expanded, :func:`shape` reads the integrand's structure in one walk
of its expression DAG (linear time, no sympy algebra): the base Gaussians inside
non-affine arguments of functions, how many terms an expansion would produce, whether
every function factor is one the exact forms accept. An integrand that cannot be exact
— e.g. ``tanh`` of a training step's pre-activation, whose argument carries ``φ'`` of
earlier steps — is refused from that, so an unrolled training run never waits for
sympy to expand (or differentiate) an expression that no exact form could use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from ..core.nonlin import _NUMPY_MODULES, codegen_functions, identity
from ..gaussian import has_closed_form, mean_form, moment_table, on_register, pair_form
from ..gaussian.closed_forms import takes_means as _takes_means
from .symbols import ConstSym, GaussSym, g, q

__all__ = [
    "exact_evaluator",
    "independent_blocks",
    "shape",
    "Shape",
    "expand_terms",
    "MAX_TERMS",
    "affine_parts",
    "applications",
    "gaussians",
    "is_affine",
    "g_monomials",
    "LinearForms",
    "linear_forms_of",
]

Evaluator = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


#: An integrand whose expansion would have more terms than this is not expanded: every
#: term costs a compiled Wick formula or closed form, and sympy's ``expand`` of a product
#: of sums grows like the number of terms. (The largest exact integrands of the test
#: programs expand to 35 terms; 𝔼[Z⁴] of a sum of 8 Gaussians has 330.)
MAX_TERMS = 512


@dataclass(frozen=True)
class Shape:
    """Structure of an integrand over base Gaussians ``g_k``, read without expanding it.

    Attributes
    ----------
    terms : int
        Upper bound on the number of terms of ``expand(expr, deep=False)`` (function
        applications counted as atoms; capped at ``10⁹``).
    opaque : int
        Upper bound on the number of function factors (with Gaussian arguments) in one
        term of the expansion.
    exact_factors : bool
        Whether every Gaussian-dependent factor is a polynomial or a registered closed
        form of a parameter-free nonlinearity of a *linear* form ``aᵀg`` — what
        :func:`exact_evaluator` accepts term by term.
    entangled : tuple of frozenset
        For every application of a non-polynomial function to a non-affine argument
        (e.g. ``tanh(g₀ + q·tanh'(g₁)g₂)``), the base Gaussians of that argument. The
        integrand depends on them through no fewer than that many linear forms, and so
        does every derivative ``∂/∂g_k`` with ``g_k`` among them (the chain rule keeps
        ``φ'`` of the same argument).
    """

    terms: int
    opaque: int
    exact_factors: bool
    entangled: tuple[frozenset, ...]

    def needs_dims(self, k: GaussSym | None = None) -> int:
        """A lower bound on the quadrature dimension of the integrand (``k=None``) or of
        its derivative ``∂/∂g_k``: the largest entangled set (containing ``g_k``)."""
        return max((len(s) for s in self.entangled if k is None or k in s), default=0)


_CAP = 10**9

#: Entries of the per-integrand caches (:func:`shape`, :func:`exact_evaluator`,
#: :func:`linear_forms_of`): above a plan's number of distinct integrands, so that
#: the plan and the evaluator, which ask in turn for every request's integrand, never
#: cycle through a full cache (a T = 30 linear training unroll has about 4,500).
_LRU_SIZE = 1 << 15


#: What :func:`shape` reads of one node: ``(terms, opaque, blocked, entangled)`` — the
#: bounds of :class:`Shape`, whether some function factor below it is not exact, and the
#: entangled sets below it. Cached per node across integrands (the requests of a plan
#: share their subexpressions: a linear training unroll's are met by ``O(T²)``
#: requests); emptied past ``_CACHE_SIZE`` nodes and when a closed form is registered.
_Facts = tuple[int, int, bool, frozenset]
_SHAPES: dict[sympy.Basic, _Facts] = {}
_INNER: dict[sympy.Basic, frozenset] = {}
_PLAIN: _Facts = (1, 0, False, frozenset())


@functools.lru_cache(maxsize=_LRU_SIZE)
def shape(expr: sympy.Expr) -> Shape:
    """:class:`Shape` of ``expr`` by one walk of its DAG (shared subtrees once, and
    nodes already read for another integrand not again).

    Examples
    --------
    >>> from tensorprog.engine.symbols import g
    >>> s = shape(sympy.tanh(g(0) + g(1) * g(2)) * (g(0) + g(3)) ** 2)
    >>> s.terms, s.opaque, s.exact_factors, s.needs_dims()  # (g₀+g₃)² bounded by 2² terms
    (4, 1, False, 3)
    """
    t, o, blocked, entangled = _facts(expr)
    return Shape(t, o, not blocked, tuple(sorted(entangled, key=len, reverse=True)))


def _facts(e: sympy.Basic) -> _Facts:
    r = _SHAPES.get(e)
    if r is not None:
        return r
    if not _all_gaussians(e) or isinstance(e, GaussSym):
        return _PLAIN
    if isinstance(e, sympy.Add):
        parts = [_facts(a) for a in e.args]
        t, o = min(_CAP, sum(p[0] for p in parts)), max(p[1] for p in parts)
    elif isinstance(e, sympy.Mul):
        parts = [_facts(a) for a in e.args]
        t, o = 1, 0
        for p in parts:
            t, o = min(_CAP, t * p[0]), o + p[1]
    elif isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0:
        parts = [_facts(e.base)]
        n = int(e.exp)
        t, o = min(_CAP, parts[0][0] ** min(n, 30)), n * parts[0][1]
    else:
        blocked, entangled = _function_facts(e)
        r = (1, 1, blocked, entangled)
        parts = None
    if parts is not None:
        blocked = any(p[2] for p in parts)
        entangled = frozenset().union(*(p[3] for p in parts if p[3]))
        r = (t, o, blocked, entangled)
    if len(_SHAPES) > _CACHE_SIZE:
        _SHAPES.clear()
    _SHAPES[e] = r
    return r


def _function_facts(e: sympy.Basic) -> tuple[bool, frozenset]:
    """Whether a function factor is not exact, and the entangled sets in it."""
    fn = getattr(e.func, "nonlinearity", None)
    polynomial = fn is not None and fn.is_polynomial
    ok = (
        isinstance(e, sympy.Function)
        and fn is not None
        and not fn.nparams
        and len(e.args) == 1
        and has_closed_form(fn)
    )
    entangled: set[frozenset] = set()
    for a in e.args:
        ga = _all_gaussians(a)
        if not ga:
            continue
        if not is_affine(a):
            ok = False
            if not polynomial:
                entangled.add(ga)
            entangled |= _inner_facts(a)
        elif not is_affine(a, linear=True) and fn is not None and not _takes_means(fn):
            ok = False  # a constant shift is a mean: only forms that take means
    return not ok, frozenset(entangled)


def _inner_facts(e: sympy.Basic) -> frozenset:
    """The entangled sets of the functions nested in a non-affine argument (entangled in
    their own right; the argument's function is not exact anyway)."""
    r = _INNER.get(e)
    if r is None:
        r = frozenset()
        for a in e.args:
            if not _all_gaussians(a):
                continue
            if isinstance(a, (sympy.Add, sympy.Mul, sympy.Pow)) or not a.args:
                r = r | _inner_facts(a)
            else:
                r = r | _facts(a)[3]
        if len(_INNER) > _CACHE_SIZE:
            _INNER.clear()
        _INNER[e] = r
    return r


def _forget_shapes() -> None:
    shape.cache_clear()
    _SHAPES.clear()
    _INNER.clear()


def expand_terms(expr: sympy.Expr, max_terms: int = MAX_TERMS) -> tuple[sympy.Expr, ...] | None:
    """The terms of ``expand(expr, deep=False)``, or None when :func:`shape` bounds their
    number above ``max_terms`` (the expansion is then not attempted)."""
    if shape(expr).terms > max_terms:
        return None
    return sympy.Add.make_args(sympy.expand(expr, deep=False, power_exp=False, log=False))


@functools.lru_cache(maxsize=_LRU_SIZE)
def exact_evaluator(
    expr: sympy.Expr, d: int, m: int, centred: bool, groups: tuple[int, ...] | None = None
) -> Evaluator | None:
    """Compile ``𝔼[expr]`` into ``f(mean (B,d), cov (B,d,d), q (B,m)) -> (B,)``.

    Returns None when some term has no exact form. ``centred`` says whether every
    base Gaussian has mean zero (closed forms of nonlinearities need it). ``groups``
    labels the base Gaussians so that different labels are independent (different
    matrix families, uncorrelated initial vectors); a term then factorises,
    ``𝔼[Π_blocks F_b] = Π_b 𝔼[F_b]``, and each block may be exact on its own —
    e.g. the NTK's ``𝔼[Ẑ^{Wᵀ·}Ẑ^{Wᵀ·} step(Ẑ^{W·}) step(Ẑ^{W·})]``.
    """
    sh = shape(expr)
    if not sh.exact_factors:
        return None
    if not sh.opaque:  # a polynomial in the g's: by its g-monomials, whatever its size
        return _wick_polynomial(expr, d, m)
    if sh.opaque > 2 and (groups is None or len(set(groups)) < 2):
        return None  # more than two closed-form factors in a term, and nothing factorises
    terms = expand_terms(expr)
    if terms is None:
        return None
    gs = [g(k) for k in range(d)]
    qs = [q(j) for j in range(m)]
    parts: list[Evaluator] = []
    for term in terms:
        ev = _factorised(term, gs, qs, centred, groups)
        if ev is None:
            return None
        parts.append(ev)

    if all(isinstance(ev, EntryEvaluator) for ev in parts):
        return EntryEvaluator.combine(parts, d, np.add, zero=True)  # type: ignore[arg-type]

    def evaluate(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        out = np.zeros(mean.shape[0])
        for ev in parts:
            out = out + ev(mean, cov, qv)
        return out

    return evaluate


# a closed form registered later changes what is exact: forget the compiled verdicts
on_register(_forget_shapes)
on_register(exact_evaluator.cache_clear)


class EntryEvaluator:
    r"""An exact evaluator that reads a law only through fixed entries of its covariance:
    ``f(mean, cov, qv) = fn(cov.reshape(B, d·d)[:, cells].T)`` — centred closed forms and
    Gaussian moments whose coefficients are numbers. A caller that has those entries
    (:class:`~.compiled.CompiledLimit`: gathered from its sets' numbers) calls ``fn`` on
    them, one row per entry ``(len(cells), B)``, without building the covariances.

    Attributes
    ----------
    d : int
        Base Gaussians of the law.
    cells : numpy.ndarray of int
        Sorted flat indices ``i·d + j`` of the entries read.
    fn : callable
        ``entries (len(cells), B) ↦ values (B,)``.
    """

    __slots__ = ("d", "cells", "fn", "const")

    def __init__(
        self,
        d: int,
        cells: np.ndarray,
        fn: Callable[[np.ndarray], np.ndarray],
        const: float | None = None,
    ) -> None:
        #: ``const``: the value, when the evaluator is a number (no entries read)
        self.d, self.cells, self.fn, self.const = d, cells, fn, const

    @staticmethod
    def constant(d: int, v: float) -> EntryEvaluator:
        """The number ``v``."""
        return EntryEvaluator(d, np.zeros(0, dtype=np.intp), lambda E: np.full(E.shape[1], v), v)

    def __call__(self, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        return self.fn(cov.reshape(len(cov), self.d * self.d)[:, self.cells].T)

    @staticmethod
    def of(
        expr: sympy.Expr, d: int, m: int, centred: bool, groups: tuple[int, ...] | None = None
    ) -> EntryEvaluator | None:
        """The exact evaluator of ``𝔼[expr]`` (:func:`exact_evaluator`) when it reads
        covariance entries only — or, for one centred monomial ``c·g_i g_j`` with a
        numeric ``c`` (which :func:`exact_evaluator` integrates by its Wick table),
        ``c·Σ_ij`` [Isserlis 1918]: the same product, the same bits; None otherwise."""
        ev = exact_evaluator(expr, d, m, centred, groups)
        if isinstance(ev, EntryEvaluator) or ev is None or not centred or shape(expr).opaque:
            return ev if isinstance(ev, EntryEvaluator) else None
        mono = g_monomials(expr, [g(k) for k in range(d)])
        one = mono is not None and len(mono) == 1 and sum(next(iter(mono))) == 2
        return _centred_quadratic(sympy.S.One, mono, d) if one else None

    def on(self, cells: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``fn`` taking the entries ``cells`` (sorted, a superset of :attr:`cells`)."""
        if len(cells) == len(self.cells):
            return self.fn
        at = np.searchsorted(cells, self.cells)
        if at.size and at[-1] - at[0] == at.size - 1:  # consecutive rows: a view
            rows = slice(int(at[0]), int(at[-1]) + 1)
            return lambda E: self.fn(E[rows])
        return lambda E: self.fn(E[at])

    @staticmethod
    def combine(parts: list[EntryEvaluator], d: int, op: Any, zero: bool = False) -> EntryEvaluator:
        """The parts combined by ``op`` (``np.add`` from 0 when ``zero``, as a sum of
        terms is evaluated; ``np.multiply`` from the first part) on the union of their
        entries. A sum of one part is that part; a product that starts with a number
        multiplies by it (``v·x`` is ``full(v)·x``, element by element)."""
        if zero and len(parts) == 1:
            return parts[0]
        cells = np.unique(np.concatenate([p.cells for p in parts]))
        first = parts[0].const if not zero else None
        rest = parts if zero or first is None else parts[1:]
        fns = [p.on(cells) for p in rest]

        def fn(E: np.ndarray) -> np.ndarray:
            if zero:
                out: Any = np.zeros(E.shape[1])
            elif first is not None:
                out = first
            else:
                out = fns[0](E)
            for f in fns if zero or first is not None else fns[1:]:
                out = op(out, f(E))
            return out

        return EntryEvaluator(d, cells, fn)


class _TooBig(Exception):
    pass


def g_monomials(
    expr: sympy.Expr, gs: list[GaussSym], max_terms: int = MAX_TERMS
) -> dict[tuple[int, ...], sympy.Expr] | None:
    """A polynomial in the g's as ``{exponents: coefficient}``, the coefficients (free of
    the g's) multiplied and added but never expanded — a linear network's integrand
    ``(Σ_k c_k(q) g_k)²`` has d(d+1)/2 monomials however long its ``c_k`` are. None when
    ``expr`` is not such a polynomial or has more than ``max_terms`` monomials.
    """
    pos = {gk: i for i, gk in enumerate(gs)}
    zero = (0,) * len(gs)
    memo: dict[sympy.Basic, dict] = {}

    def mul(a: dict, b: dict) -> dict:
        out: dict = {}
        for ma, ca in a.items():
            for mb, cb in b.items():
                key = tuple(x + y for x, y in zip(ma, mb))
                out[key] = out[key] + ca * cb if key in out else ca * cb
        if len(out) > max_terms:
            raise _TooBig
        return out

    def walk(e: sympy.Basic) -> dict:
        r = memo.get(e)
        if r is not None:
            return r
        if not _all_gaussians(e):
            r = {zero: e}
        elif isinstance(e, GaussSym):
            if e not in pos:
                raise _TooBig
            r = {tuple(int(i == pos[e]) for i in range(len(gs))): sympy.S.One}
        elif isinstance(e, sympy.Add):
            r = {}
            for a in e.args:
                for k, c in walk(a).items():
                    r[k] = r[k] + c if k in r else c
            if len(r) > max_terms:
                raise _TooBig
        elif isinstance(e, sympy.Mul):
            r = {zero: sympy.S.One}
            for a in e.args:
                r = mul(r, walk(a))
        elif isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0:
            base, r = walk(e.base), {zero: sympy.S.One}
            for _ in range(int(e.exp)):
                r = mul(r, base)
        else:
            raise _TooBig
        memo[e] = r
        return r

    try:
        return walk(expr)
    except _TooBig:
        return None


def _wick_polynomial(expr: sympy.Expr, d: int, m: int) -> Evaluator | None:
    """``𝔼[P(g)]`` of a polynomial: over its affine forms (:func:`linear_forms_of`) when
    there are fewer forms than Gaussians, else by Wick/Isserlis per g-monomial
    (coefficients kept as they are), and over the forms when the g-monomials are too
    many (:data:`MAX_TERMS`)."""
    lf = linear_forms_of(expr)
    if lf is not None and not lf.forms:
        lf = None  # free of the Gaussians: a constant, by its one monomial
    if lf is not None and len(lf.forms) < d:
        ev = _forms_wick(lf, d, m)
        if ev is not None:
            return ev
    mono = g_monomials(expr, [g(k) for k in range(d)])
    if mono is not None:
        return _wick(mono, m)
    return None if lf is None or len(lf.forms) < d else _forms_wick(lf, d, m)


@dataclass(frozen=True)
class LinearForms:
    """A polynomial integrand as a polynomial in affine forms of its Gaussians.

    ``expr = top(L_0, …, L_{K-1})`` with ``L_k = forms[k] = a_k(q) + Σ_i c_{ki}(q) g_i``:
    each form is a *maximal* affine subexpression (a sum whose terms are each free of
    the ``g``'s or one ``g`` times a ``g``-free factor, recursively — read from the
    tree by :func:`is_affine`, never expanded), and ``top`` is a polynomial in the
    placeholders ``g_0 … g_{K-1}`` standing for the forms (its coefficients free of the
    Gaussians). A linear network's integrand ``Z^{x} Z^{y}`` is ``top = g_0 g_1`` over
    two forms with hundreds of terms each.
    """

    top: sympy.Expr
    forms: tuple[sympy.Expr, ...]


@functools.lru_cache(maxsize=_LRU_SIZE)
def linear_forms_of(expr: sympy.Expr) -> LinearForms | None:
    """:class:`LinearForms` of a polynomial in the ``g``'s (None for anything else: a
    function of a Gaussian), by one memoised walk of the DAG above the forms.

    Examples
    --------
    >>> from tensorprog.engine.symbols import g, q
    >>> lf = linear_forms_of(q(0) * (g(0) + 2 * g(1)) ** 2 * (g(2) + 1))
    >>> lf.top, lf.forms
    (q0*g0**2*g1, (g0 + 2*g1, g2 + 1))
    """
    index: dict[sympy.Basic, int] = {}
    memo: dict[sympy.Basic, sympy.Expr] = {}

    def walk(e: sympy.Basic) -> sympy.Expr:
        r = memo.get(e)
        if r is not None:
            return r
        if not _all_gaussians(e):
            r = e
        elif is_affine(e):
            k = index.setdefault(e, len(index))
            r = g(k)
        elif isinstance(e, (sympy.Add, sympy.Mul)) or (
            isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0
        ):
            args = [walk(a) for a in e.args]
            r = e.func(*args)
        else:
            raise _TooBig
        memo[e] = r
        return r

    try:
        top = walk(expr)
    except _TooBig:
        return None
    return LinearForms(top, tuple(index))


def _forms_wick(lf: LinearForms, d: int, m: int) -> Evaluator | None:
    """``𝔼[top(L)]`` by Stein's recursion on the ``K``-dimensional Gaussian vector of the
    forms (Isserlis' theorem with means): ``L ~ N(a + Cμ, C Σ Cᵀ)``, the rows ``(a_k, c_k)``
    from :func:`_form_rows`, then :func:`_wick` of ``top``'s monomials in ``K``
    variables. Cost ``O(K d²)`` for the law of the forms plus the moments of degree
    ``deg top`` in ``K`` dimensions, instead of ``O(d^deg)`` monomials [Isserlis 1918]."""
    K = len(lf.forms)
    mono = g_monomials(lf.top, [g(k) for k in range(K)])
    if mono is None:
        return None
    rows = _form_rows(lf.forms, d, m)
    wick = _wick(mono, m)

    def forms_wick(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        A = rows(qv)  # (B, K, d + 1): constant, then coefficients of g_0 … g_{d-1}
        C = A[:, :, 1:]
        mu = A[:, :, 0] + np.einsum("bkd,bd->bk", C, mean)
        sigma = np.einsum("bkd,bde,ble->bkl", C, cov, C)
        return wick(mu, sigma, qv)

    return forms_wick


def _form_rows(forms: tuple[sympy.Expr, ...], d: int, m: int) -> Callable[[np.ndarray], np.ndarray]:
    """``qv (B, m) ↦ (B, K, d + 1)``: the constant ``a_k(q)`` and coefficients
    ``c_{ki}(q)`` of affine forms ``L_k = a_k + Σ_i c_{ki} g_i``, by
    :func:`affine_rows`."""

    def rows(qv: np.ndarray) -> np.ndarray:
        return np.stack(affine_rows(forms, d, qv), axis=1)

    return rows


@dataclass(frozen=True, slots=True)
class _AffineOp:
    """How an affine node's row is made from its arguments' (:func:`affine_rows`):
    a Gaussian ``g_k`` (``k``), a sum (dependent terms plus ``g``-free ones) or a
    product (``g``-free factors times the one dependent factor). ``qs``: the indices
    ``j`` of every ``q_j`` in the node (its row is a function of those only)."""

    k: int  # the Gaussian's index, -1 for a sum or product
    add: bool
    dep: tuple[sympy.Expr, ...]
    free: Callable[[np.ndarray], np.ndarray] | None  # the g-free parts, (B, m) -> (F, B)
    qs: np.ndarray


#: Per-node records of affine nodes (:func:`_affine_op`), and rows of affine nodes by the
#: values of their constants (:func:`affine_rows`); emptied past ``_CACHE_SIZE`` and
#: ``_ROWS_SIZE`` entries (an entry is a pure function of its key: it never goes stale).
_AFFINE_OPS: dict[sympy.Basic, _AffineOp] = {}
_ROWS: dict[tuple, np.ndarray] = {}
_ROWS_SIZE = 1 << 16
_QS: dict[sympy.Basic, frozenset] = {}


def _constants(e: sympy.Basic) -> frozenset:
    """The constants ``q_j`` in ``e``."""
    r = _QS.get(e)
    return r if r is not None else _placeholders(e, ConstSym, _QS)


def _affine_op(e: sympy.Basic) -> _AffineOp:
    op = _AFFINE_OPS.get(e)
    if op is None:
        qs = np.array(sorted(c.index for c in _constants(e)), dtype=np.intp)
        if isinstance(e, GaussSym):
            op = _AffineOp(e.index, False, (), None, qs)
        else:
            free = [a for a in e.args if not _all_gaussians(a)]
            dep = tuple(a for a in e.args if _all_gaussians(a))
            fn = None
            if free:
                top = max((c.index for a in free for c in _constants(a)), default=-1)
                fn = _lam_q_many(free, _q_list(top + 1))
            op = _AffineOp(-1, isinstance(e, sympy.Add), dep, fn, qs)
        if len(_AFFINE_OPS) > _CACHE_SIZE:
            _AFFINE_OPS.clear()
        _AFFINE_OPS[e] = op
    return op


def affine_rows(forms: tuple[sympy.Expr, ...], d: int, qv: np.ndarray) -> list[np.ndarray]:
    """The rows ``(B, d + 1)`` — constant, then coefficients of ``g_0 … g_{d-1}`` — of
    affine expressions ``L = a(q) + Σ_i c_i(q) g_i`` at a batch of constants ``qv (B, m)``.

    Read from the forms' DAG (sums, and products with one Gaussian-dependent factor),
    never expanded, and memoised across calls per node and values of the node's own
    constants: the requests of a plan share their affine nodes (placed expressions are
    interned, :func:`~.derivation._interned`), so a linear training unroll's ``Z``, a
    DAG of ``O(T)`` nodes met by ``O(T²)`` requests, is walked once, not once per
    request. Each node's row is one numpy operation over its arguments' rows (in the
    arguments' order: the same bits, memoised or not). The arrays returned are the
    memoised ones: read them, never modify them."""
    B = qv.shape[0]
    vals: dict[sympy.Basic, np.ndarray] = {}
    keys: dict[sympy.Basic, tuple] = {}
    stack: list[sympy.Basic] = list(forms)
    while stack:
        e = stack[-1]
        if e in vals:
            stack.pop()
            continue
        op = _affine_op(e)
        key = keys.get(e)
        if key is None:
            key = keys[e] = (e, d, B, qv[:, op.qs].tobytes())
        v = _ROWS.get(key)
        if v is None:
            todo = [a for a in op.dep if a not in vals]
            if todo:
                stack.extend(todo)
                continue
            if op.k >= 0:
                v = np.zeros((B, d + 1))
                v[:, 1 + op.k] = 1.0
            else:
                cv = op.free(qv) if op.free is not None else ()
                if op.add:
                    dep = op.dep
                    v = sum((vals[a] for a in dep[1:]), vals[dep[0]].copy())
                    for c in cv:
                        v[:, 0] += c
                else:  # g-free factors times the one dependent factor (is_affine)
                    scale = np.ones(B)
                    for c in cv:
                        scale = scale * c
                    v = scale[:, None] * vals[op.dep[0]]
            if len(_ROWS) > _ROWS_SIZE:
                _ROWS.clear()
            _ROWS[key] = v
        vals[e] = v
        stack.pop()
    return [vals[f] for f in forms]


def _wick(mono: dict[tuple[int, ...], sympy.Expr], m: int) -> Evaluator:
    """``𝔼[Σ_a c_a(q) gᵃ]`` for a polynomial given by its g-monomials: the moments
    ``𝔼 gᵃ`` by Stein's recursion on the batch's numpy arrays
    (:func:`~tensorprog.gaussian.moment_table`), the coefficients compiled as functions
    of the constants only. Nothing of the size of the expanded moment formula is ever
    built: an eight-dimensional quartic with generated code took seconds to compile."""
    exps = list(mono)
    coeffs = _lam_q_many(list(mono.values()), _q_list(m))

    def wick(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        table = moment_table(mean, cov)
        c = coeffs(qv)
        out = np.zeros(mean.shape[0])
        for k, a in enumerate(exps):
            out = out + c[k] * table(a)
        return out

    return wick


def _lam_q(expr: sympy.Expr, qs: list[sympy.Symbol]) -> Callable[[np.ndarray], np.ndarray]:
    """``expr(q)`` vectorised over a batch of constants ``qv`` (B, m): a number as it is,
    sums, products and powers by :func:`_lam_q_many`'s walk (no code generated), a
    function application compiled on its own (:func:`_lam_node`)."""
    if expr.is_Number:  # most coefficients: no code to generate
        v = float(expr)
        return lambda qv: np.full(qv.shape[0], v)
    if isinstance(expr, (sympy.Add, sympy.Mul, sympy.Pow, sympy.Symbol)):
        many = _lam_q_many([expr], qs)
        return lambda qv: many(qv)[0]
    return _lam_node(expr, tuple(qs))


@functools.lru_cache(maxsize=4096)
def _lam_node(expr: sympy.Expr, qs: tuple[sympy.Symbol, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """``expr(q)`` by generated code, once per expression: opaque nonlinearities may appear
    with constant arguments (``tanh(θ̊)``, ``tanh(0)``)."""
    fns = codegen_functions(expr)  # refuses any name that is not a checked identifier
    f = sympy.lambdify(list(qs), expr, modules=[fns, *_NUMPY_MODULES])
    return lambda qv: np.broadcast_to(np.asarray(f(*qv.T), dtype=float), (qv.shape[0],))


@functools.cache
def _q_list(m: int) -> tuple[ConstSym, ...]:
    """``(q_0, …, q_{m-1})``, one tuple per ``m``."""
    return tuple(q(j) for j in range(m))


@functools.lru_cache(maxsize=256)
def _positions(qs: tuple[sympy.Symbol, ...]) -> dict[sympy.Symbol, int]:
    """``{q_j: j}`` of a tuple of constants (shared: never modified)."""
    return {s: j for j, s in enumerate(qs)}


def _lam_q_many(
    exprs: list[sympy.Expr], qs: list[sympy.Symbol] | tuple[sympy.Symbol, ...]
) -> Callable[[np.ndarray], np.ndarray]:
    """``[expr_k(q)]`` vectorised over a batch of constants: ``qv (B, m) ↦ (K, B)``.

    The expressions are evaluated by walking their DAG once per call (each distinct
    subexpression one numpy operation), not by generated code: the coefficients of a
    polynomial's monomials are built from shared products, and printing them for
    :func:`sympy.lambdify` (even with common-subexpression elimination) took seconds per
    polynomial. Function applications are compiled once per expression
    (:func:`_lam_node`, cached across calls)."""
    key = tuple(qs)
    index = _positions(key)

    def coeffs(qv: np.ndarray) -> np.ndarray:
        B = qv.shape[0]
        memo: dict[sympy.Basic, Any] = {}
        stack = list(exprs)
        while stack:
            e = stack[-1]
            if e in memo:
                stack.pop()
                continue
            if e.is_Number:
                memo[e] = float(e)
            elif e in index:
                memo[e] = qv[:, index[e]]
            elif isinstance(e, (sympy.Add, sympy.Mul, sympy.Pow)):
                todo = [a for a in e.args if a not in memo]
                if todo:
                    stack.extend(todo)
                    continue
                vals = [memo[a] for a in e.args]
                if isinstance(e, sympy.Add):
                    memo[e] = sum(vals[1:], vals[0])
                elif isinstance(e, sympy.Mul):
                    v = vals[0]
                    for w in vals[1:]:
                        v = v * w
                    memo[e] = v
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        memo[e] = np.power(vals[0], vals[1])
            else:  # a function or anything else: compiled on its own, once
                memo[e] = _lam_node(e, key)(qv)
            stack.pop()
        out = np.empty((len(exprs), B))
        for k, e in enumerate(exprs):
            out[k] = memo[e]
        return out

    return coeffs


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
        gr = sorted({groups[s.index] for s in f.free_symbols if isinstance(s, GaussSym)})
        for a in gr[1:]:
            parent[find(a)] = find(gr[0])
        labels.append(gr[0] if gr else None)
    blocks: dict[int | None, list[sympy.Expr]] = {}
    for f, lab in zip(factors, labels):
        blocks.setdefault(find(lab) if lab is not None else None, []).append(f)
    const = coef * sympy.Mul(*blocks.pop(None, []))
    return [const] + [sympy.Mul(*fs) for fs in blocks.values()]


def _factorised(
    term: sympy.Expr,
    gs: list[GaussSym],
    qs: list[sympy.Symbol],
    centred: bool,
    groups: tuple[int, ...] | None,
) -> Evaluator | None:
    """``𝔼[term]`` as a product over blocks of mutually independent Gaussians."""
    if groups is None or len(set(groups)) < 2:
        return _term(term, gs, qs, centred)
    parts = independent_blocks(term, len(gs), groups)
    if len(parts) < 3:
        return _term(term, gs, qs, centred)
    evs = [_term(p, gs, qs, centred) for p in parts]
    if any(e is None for e in evs):
        return None
    if all(isinstance(e, EntryEvaluator) for e in evs):
        return EntryEvaluator.combine(evs, len(gs), np.multiply)  # type: ignore[arg-type]

    def product(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        out = evs[0](mean, cov, qv)
        for e in evs[1:]:
            out = out * e(mean, cov, qv)
        return out

    return product


def _term(
    term: sympy.Expr, gs: list[GaussSym], qs: list[sympy.Symbol], centred: bool
) -> Evaluator | None:
    gset = set(gs)
    if not (term.free_symbols & gset):
        v = _number(term)
        if v is not None:
            return EntryEvaluator.constant(len(gs), v)
        c = _lam_q(term, qs)
        return lambda mean, cov, qv: c(qv)
    coef, rest = term.as_independent(*gs, as_Add=False)
    if any(not isinstance(s, (GaussSym, ConstSym)) for s in term.free_symbols):
        return None
    poly: list[sympy.Expr] = []
    opaque: list[tuple[Any, sympy.Expr]] = []  # (nonlinearity, affine argument)
    shifted = False  # some argument is bᵀg + c with a constant c
    for factor in sympy.Mul.make_args(rest):
        base, e = factor.as_base_exp()
        if factor.is_polynomial(*gs):
            poly.append(factor)
            continue
        fn = getattr(base.func, "nonlinearity", None)
        if fn is None or fn.nparams or len(base.args) != 1 or not e.is_Integer or e < 1:
            return None
        arg = base.args[0]
        parts = affine_parts(arg, gs)
        if parts is None or not parts[0]:
            return None
        if parts[1] != 0:
            shifted = True
        opaque += [(fn, arg)] * int(e)
    c = _lam_q(coef, qs)
    if not opaque:
        mono = g_monomials(sympy.Mul(*poly), gs)
        if mono is None:
            return None
        quad = _centred_quadratic(coef, mono, len(gs)) if centred else None
        if quad is not None:
            return quad
        w = _wick(mono, len(qs))
        return lambda mean, cov, qv: c(qv) * w(mean, cov, qv)
    P = sympy.Mul(*poly)
    if len(opaque) == 1 and P.free_symbols & gset and _linear(P, gs):
        # 𝔼[(aᵀg) φ(bᵀg)]: the (identity, φ) pair closed form.
        opaque.insert(0, (identity, P))
        poly = []
    if len(opaque) > 2 or sympy.Mul(*poly).free_symbols & gset:
        return None
    # with nonzero means (or a constant shift bᵀg + c) only forms that take the means
    # of the linear forms, m = bᵀμ + c, apply
    plain = centred and not shifted
    fns = [fn for fn, _ in opaque]
    form = mean_form(fns[0], plain) if len(fns) == 1 else pair_form(fns[0], fns[1], plain)
    if form is None:
        return None
    Pc = _lam_q(sympy.Mul(*poly), qs)
    parts = [affine_parts(arg, gs) for _, arg in opaque]
    coeffs = [_coefficients(lin, gs, qs) for lin, _ in parts]  # type: ignore[misc]
    shifts = [_lam_q(shift, qs) for _, shift in parts]  # type: ignore[misc]

    fixed = _constant_forms(coef, sympy.Mul(*poly), parts, gs, form, plain)
    if fixed is not None:
        return fixed

    def means(a: np.ndarray, i: int, mean: np.ndarray, qv: np.ndarray) -> np.ndarray:
        return np.einsum("bi,bi->b", a, mean) + shifts[i](qv)

    if len(opaque) == 1:

        def one(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
            a = coeffs[0](qv)
            k = np.einsum("bi,bij,bj->b", a, cov, a)
            if plain:
                return c(qv) * Pc(qv) * form(k)
            return c(qv) * Pc(qv) * form(k, means(a, 0, mean, qv))

        return one

    def two(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        a, b = coeffs[0](qv), coeffs[1](qv)
        k11 = np.einsum("bi,bij,bj->b", a, cov, a)
        k12 = np.einsum("bi,bij,bj->b", a, cov, b)
        k22 = np.einsum("bi,bij,bj->b", b, cov, b)
        if plain:
            return c(qv) * Pc(qv) * form(k11, k12, k22)
        m1, m2 = means(a, 0, mean, qv), means(b, 1, mean, qv)
        return c(qv) * Pc(qv) * form(k11, k12, k22, m1, m2)

    return two


def _number(e: Any) -> float | None:
    """``e`` as a float when it is a number (not a function of the constants), else None."""
    e = sympy.sympify(e)
    return float(e) if e.is_Number else None


def _quadratic_weights(forms: list[np.ndarray], d: int) -> tuple[np.ndarray, list[tuple]]:
    """The flat indices into a covariance ``(d, d)`` that the quadratic forms
    ``aᵀ cov b`` (``forms``) read — the upper triangle only, a symmetric matrix's
    ``(j, i)`` weight added to ``(i, j)`` — and each form's terms ``((row, weight), …)``
    over those entries (:func:`_weighted`). Zero weights are left out (on an overflowed
    entry they would make NaN of inf)."""
    full = []
    for a, b in forms:
        w = np.outer(a, b)
        full.append(np.triu(w) + np.tril(w, -1).T)
    cells = np.zeros((d, d), dtype=bool)
    for w in full:
        cells |= w != 0.0
    idx = np.flatnonzero(cells.reshape(d * d))
    terms = [
        tuple((r, float(w.reshape(d * d)[c])) for r, c in enumerate(idx) if w.reshape(d * d)[c])
        for w in full
    ]
    return idx, terms


def _weighted(E: np.ndarray, terms: tuple[tuple[int, float], ...]) -> np.ndarray:
    """``Σ w·E[row]`` over ``terms`` for entries ``E`` ``(c, B)`` (one row per entry),
    added in the order of the terms for every column whatever ``B`` (a BLAS product
    may block rows differently by batch size, and ``batch_size`` must not change a
    bit)."""
    if not terms:
        return np.zeros(E.shape[1])
    (r0, w0), *rest = terms
    out = E[r0] * w0
    for r, w in rest:
        out += E[r] * w
    return out


def _centred_quadratic(
    coef: sympy.Expr, mono: dict[tuple[int, ...], sympy.Expr], d: int
) -> EntryEvaluator | None:
    r"""``𝔼[c Σ_a c_a gᵃ]`` of centred Gaussians when every coefficient is a number and
    every monomial has degree ≤ 2: ``Σ c_a`` over degree 0, nothing for degree 1
    (centred), ``c_a Σ_ij`` for ``gᵃ = g_i g_j`` [Isserlis 1918] — one product of the
    needed covariance entries with their weights, no moment table. None otherwise."""
    c = _number(coef)
    if c is None or any(sum(a) > 2 for a in mono):
        return None
    const, cells = 0.0, np.zeros((d, d))
    for a, ca in mono.items():
        w = _number(ca)
        if w is None:
            return None
        at = [k for k, e in enumerate(a) for _ in range(e)]
        if len(at) == 0:
            const += w
        elif len(at) == 2:
            cells[at[0], at[1]] += w  # at[0] ≤ at[1]: the upper triangle
    idx = np.flatnonzero(cells.reshape(d * d))
    terms = tuple((r, float(cells.reshape(d * d)[c])) for r, c in enumerate(idx))
    return EntryEvaluator(d, idx, lambda E: c * (_weighted(E, terms) + const))


def _constant_forms(
    coef: sympy.Expr,
    P: sympy.Expr,
    parts: list[Any],
    gs: list[GaussSym],
    form: Callable[..., Any],
    plain: bool,
) -> Evaluator | None:
    r"""The one- or two-function closed form ``c·P·form(k…, m…)`` of a term whose
    coefficients ``c, P``, linear forms ``aᵀg + s`` and shifts are all numbers: the
    variances and covariance ``aᵀΣa, aᵀΣb, bᵀΣb`` are weighted sums of the needed
    covariance entries (:func:`_quadratic_weights`), the means ``aᵀμ + s`` of the
    means — no per-call coefficient arrays. None when some coefficient
    depends on the constants ``q`` (the general evaluators of :func:`_term` apply)."""
    d = len(gs)
    cp = [_number(coef), _number(P)]
    vecs, shifts = [], []
    for lin, shift in parts:
        v = [_number(lin.get(gk, sympy.S.Zero)) for gk in gs]
        s = _number(shift)
        if s is None or any(x is None for x in v):
            return None
        vecs.append(np.array(v, dtype=float))
        shifts.append(s)
    if cp[0] is None or cp[1] is None:
        return None
    scale = np.float64(cp[0]) * np.float64(cp[1])  # as the general path: c(q)·P(q)
    forms = (
        [(vecs[0], vecs[0])]
        if len(vecs) == 1
        else [
            (vecs[0], vecs[0]),
            (vecs[0], vecs[1]),
            (vecs[1], vecs[1]),
        ]
    )
    idx, terms = _quadratic_weights(forms, d)
    if plain:  # the law enters through these covariance entries only
        return EntryEvaluator(d, idx, lambda E: scale * form(*(_weighted(E, t) for t in terms)))
    lin = [tuple((i, float(v[i])) for i in range(d) if v[i]) for v in vecs]

    def fixed(mean: np.ndarray, cov: np.ndarray, qv: np.ndarray) -> np.ndarray:
        E = cov.reshape(len(cov), d * d)[:, idx].T
        K = [_weighted(E, t) for t in terms]
        M = [_weighted(mean.T, t) + sh for t, sh in zip(lin, shifts)]
        return scale * form(*K, *M)

    return fixed


def applications(expr: sympy.Expr) -> set[sympy.Function]:
    """Every function application in ``expr`` (as ``expr.atoms(sympy.Function)``), by a
    walk that visits shared subtrees once."""
    seen: set[sympy.Basic] = set()
    out: set[sympy.Function] = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e in seen or not e.args:
            continue
        seen.add(e)
        if isinstance(e, sympy.Function):
            out.add(e)
        stack.extend(e.args)
    return out


def affine_parts(
    arg: sympy.Expr, gs: list[GaussSym]
) -> tuple[dict[GaussSym, sympy.Expr], sympy.Expr] | None:
    """``arg = Σ_k a_k g_k + c`` as ``({g_k: a_k}, c)`` (``a_k``, ``c`` free of the
    ``g``'s, expanded), or None if ``arg`` is not affine in them.

    Read from the expression tree (sums, and products with one Gaussian-dependent
    factor), never by expanding ``arg``: a non-affine argument is refused by
    :func:`is_affine` before any coefficient is built. (An argument affine only after
    cancellation, ``g₀(g₁+1) − g₀g₁``, counts as non-affine.)
    """
    gset = _all_gaussians if _all_gaussians(arg) <= frozenset(gs) else gaussians(gs)
    if not is_affine(arg, gset):
        return None
    lin: dict[GaussSym, list[sympy.Expr]] = {}
    const: list[sympy.Expr] = []
    stack: list[tuple[sympy.Expr, tuple[sympy.Expr, ...]]] = [(arg, ())]
    while stack:
        e, scale = stack.pop()
        if not gset(e):
            const.append(sympy.Mul(*scale, e))
        elif isinstance(e, GaussSym):
            lin.setdefault(e, []).append(sympy.Mul(*scale))
        elif isinstance(e, sympy.Add):
            stack.extend((a, scale) for a in e.args)
        else:  # a product with one Gaussian-dependent factor (is_affine)
            inner = [a for a in e.args if gset(a)]
            stack.append((inner[0], scale + tuple(a for a in e.args if not gset(a))))

    def tidy(parts: list[sympy.Expr]) -> sympy.Expr:
        return sympy.expand(sympy.Add(*parts), power_exp=False, log=False)

    coeffs = {k: tidy(v) for k, v in lin.items()}
    return {k: v for k, v in coeffs.items() if v != 0}, tidy(const)


#: Per-node caches of the tree walks (sympy expressions are immutable, so entries never
#: go stale; the caches are emptied when they grow past ``_CACHE_SIZE`` nodes).
_GAUSSIANS: dict[sympy.Basic, frozenset] = {}
_AFFINE: dict[tuple[sympy.Basic, bool], bool] = {}
_CACHE_SIZE = 1 << 18
_NONE: frozenset = frozenset()


def _all_gaussians(e: sympy.Basic) -> frozenset:
    r = _GAUSSIANS.get(e)
    return r if r is not None else _placeholders(e, GaussSym, _GAUSSIANS)


def _placeholders(e: sympy.Basic, cls: type, cache: dict[sympy.Basic, frozenset]) -> frozenset:
    """The placeholders of class ``cls`` (``g_k`` or ``q_j``) in ``e``, by a walk cached
    per node in ``cache`` (shared subtrees, and repeated calls, visited once)."""
    r = cache.get(e)
    if r is None:
        if isinstance(e, cls):
            r = frozenset((e,))
        else:
            r = _NONE
            for a in e.args:
                ga = _placeholders(a, cls, cache)
                if ga:
                    r = ga if not r else r | ga
        if len(cache) > _CACHE_SIZE:
            cache.clear()
        cache[e] = r
    return r


def gaussians(gs: list[GaussSym] | None = None) -> Callable[[sympy.Basic], frozenset]:
    """``e ↦`` the base Gaussians ``g_k`` (those in ``gs``; all when None) in ``e``, by a
    walk cached per node (shared subtrees, and repeated calls, are visited once)."""
    if gs is None:
        return _all_gaussians
    wanted = frozenset(gs)

    def gset(e: sympy.Basic) -> frozenset:
        r = _all_gaussians(e)
        return r if r <= wanted else r & wanted

    return gset


def is_affine(
    e: sympy.Expr, gset: Callable[[sympy.Basic], frozenset] = _all_gaussians, linear: bool = False
) -> bool:
    """Whether ``e`` is affine in the Gaussians of ``gset`` read from its tree: free of
    them, one of them, a sum of affine terms, or a product with exactly one dependent
    factor, itself affine. ``linear``: also without a constant term (every term of a
    sum depends on a Gaussian). Cached per node for the default ``gset``."""
    if not gset(e):
        return not linear
    cached = gset is _all_gaussians
    key = (e, linear)
    r = _AFFINE.get(key) if cached else None
    if r is None:
        if isinstance(e, GaussSym):
            r = True
        elif isinstance(e, sympy.Add):
            r = all(is_affine(a, gset, linear) for a in e.args)
        elif isinstance(e, sympy.Mul):
            dep = [a for a in e.args if gset(a)]
            r = len(dep) == 1 and is_affine(dep[0], gset, linear)
        else:
            r = False
        if cached:
            if len(_AFFINE) > _CACHE_SIZE:
                _AFFINE.clear()
            _AFFINE[key] = r
    return r


def _linear(arg: sympy.Expr, gs: list[GaussSym]) -> bool:
    """Whether ``arg`` is ``Σ a_k g_k`` (no constant term; a_k free of g)."""
    parts = affine_parts(arg, gs)
    return parts is not None and bool(parts[0]) and parts[1] == 0


def _coefficients(
    lin: dict[GaussSym, sympy.Expr], gs: list[GaussSym], qs: list[sympy.Symbol]
) -> Callable[[np.ndarray], np.ndarray]:
    """The coefficient vector ``a(q)`` of ``Σ_k a_k g_k`` given as ``{g_k: a_k}``: (B, m) -> (B, d)."""
    fs = [_lam_q(lin.get(gk, sympy.S.Zero), qs) for gk in gs]
    return lambda qv: np.stack([f(qv) for f in fs], axis=1)


def coefficient_fn(
    arg: sympy.Expr, gs: list[GaussSym], qs: list[sympy.Symbol]
) -> Callable[[np.ndarray], np.ndarray]:
    """The coefficient vector ``a(q)`` of a linear form, vectorised: (B, m) -> (B, d)."""
    fs = [_lam_q(arg.coeff(gk), qs) for gk in gs]
    return lambda qv: np.stack([f(qv) for f in fs], axis=1)
