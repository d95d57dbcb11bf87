"""Planning: every limit scalar of a program as an *expectation request*.

The Master Theorem turns a program into deterministic unknowns, each an expectation
over base Gaussians whose covariance involves earlier unknowns:

* θ̊ of a Moment: ``𝔼 φ(Z^{x¹}, …; θ̊…)`` [TP4 ZMoment];
* ``𝔼[Z^x Z^y]`` for two inputs of one matrix (the Ẑ covariance, [TP4 ZHat]);
* ZDot coefficients ``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` [TP4 Eq. (31)] — directly when the
  derivative is a function, by Stein's lemma ``Cov(Ẑ_S)⁻¹ 𝔼[Ẑ_S Z^x]`` when it is
  a distribution (relu', step) [TP4 Remark F.2] (docs/concepts/master-theorem.md, "Fine print");
* θ̊ of scalar functions and initial scalars (no expectation).

A request's integrand is a *canonical* sympy expression over placeholders ``g_k`` (its
base Gaussians) and ``q_j`` (its constants), so requests that differ only in their
covariances and constants share one expression. With the same
:class:`~.derivation.Layout` of base Gaussians (interned, like the integrands) they
share one ``sig``: the evaluator chooses a method once per sig and evaluates a sig's
requests together, in one vectorised call (batching by structure). Requests are
created in dependency order, so a request's *level* (1 + the deepest level it depends
on) is known at creation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from ..core.ir import WIDTH, InitScalar, MatMul, Moment, OuterNonlin, ScalarFn, Var
from ..gaussian import MAX_QUADRATURE_DIM
from .derivation import Base, CopyMomentConst, Derivation, DotConst, Layout, register_fn
from .exact import exact_evaluator, shape
from .methods import Method
from .symbols import g

__all__ = [
    "Request",
    "ExpectationRequest",
    "MomentRequest",
    "CopyMomentRequest",
    "CovRequest",
    "SteinBRequest",
    "DotRequest",
    "SteinRequest",
    "ScalarFnRequest",
    "InitScalarRequest",
    "Plan",
    "describe",
    "scalar_var",
    "split_deps",
]


# -- the requests: one frozen record per kind of unknown -----------------------------
@dataclass(frozen=True, eq=False, slots=True)
class Request:
    """One deterministic unknown of the limit: its id, the requests it is computed
    from and its level (1 + the deepest level of ``deps``; 0 without any)."""

    rid: int
    deps: tuple[int, ...]
    level: int


@dataclass(frozen=True, eq=False, slots=True)
class ExpectationRequest(Request):
    """An unknown that is an expectation ``𝔼 f(g; q)`` over base Gaussians.

    ``expr`` is the canonical integrand over ``g_k`` (the bases ``bids``) and ``q_j``
    (the constants ``cids``), None when not built (Monte Carlo estimates it).
    ``roots`` are the Z-DAG items (Vars, Bases, ScalarConsts) the integrand is a
    function of. Without ``layout`` the request has no canonical form (its tree is too
    big) and only Monte Carlo evaluates it; ``slot_rids`` are the covariance requests
    of ``layout.pairs`` and requests of equal ``sig`` share integrand, constants and
    layout (one batch).
    """

    roots: tuple[Any, ...]
    expr: sympy.Expr | None
    bids: tuple[int, ...]
    cids: tuple[int, ...]
    layout: Layout | None
    slot_rids: tuple[int, ...]
    sig: int

    @property
    def groups(self) -> tuple[int, ...]:
        """Independence labels of ``bids`` (:class:`~.derivation.Layout`)."""
        return self.layout.groups if self.layout is not None else ()

    @property
    def centred(self) -> bool:
        """Whether every base Gaussian of ``bids`` has mean 0."""
        return self.layout.centred if self.layout is not None else True


@dataclass(frozen=True, eq=False, slots=True)
class MomentRequest(ExpectationRequest):
    """θ̊ of a Moment ``var``: ``𝔼 φ(Z^{x¹}, …; θ̊…)`` [TP4 ZMoment]."""

    var: Var


@dataclass(frozen=True, eq=False, slots=True)
class CopyMomentRequest(ExpectationRequest):
    """``𝔼[m(Z^{cols})]`` of a monomial ``m`` of an OuterNonlin's ψ polynomial in its
    cols (``const``): a constant of the OuterNonlin's ``Z`` [TP4b Def 2.6.5]."""

    const: CopyMomentConst


@dataclass(frozen=True, eq=False, slots=True)
class CovRequest(ExpectationRequest):
    """``𝔼[Z^x Z^y]`` of the arguments of two hats ``pair = (Ẑ^{Wx}, Ẑ^{Wy})`` of one
    family; their covariance is ``σ_W²`` times it [TP4 ZHat]."""

    pair: tuple[Base, Base]


@dataclass(frozen=True, eq=False, slots=True)
class SteinBRequest(ExpectationRequest):
    """``𝔼[Ẑ Z^x]`` of a hat ``base`` and a vector ``x``: a numerator of Stein's lemma."""

    x: Var
    base: Base


@dataclass(frozen=True, eq=False, slots=True)
class DotRequest(ExpectationRequest):
    """A ZDot coefficient ``const`` as the expectation of a derivative (or regressed by
    Monte Carlo when ``expr`` is None). Its value is the *full* coefficient
    ``σ_W² 𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` (:meth:`~.derivation.DotConst.full`)."""

    const: DotConst


@dataclass(frozen=True, eq=False, slots=True)
class SteinRequest(Request):
    """A ZDot coefficient ``const`` by Stein's lemma, when the derivative is a
    distribution [TP4 Remark F.2]: ``𝔼∇_S Z^x = Cov(Ẑ_S)⁺ 𝔼[Ẑ_S Z^x]`` over the
    candidate hats ``S`` (``hats``); ``b_rids`` are the :class:`SteinBRequest` of each,
    ``cov_rids[i][j]`` the :class:`CovRequest` of each pair."""

    const: DotConst
    hats: tuple[Base, ...]
    b_rids: tuple[int, ...]
    cov_rids: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, eq=False, slots=True)
class ScalarFnRequest(Request):
    """θ̊ of a ScalarFn ``var``: ``fn`` of its parameters' limits (``deps``, in order)."""

    var: Var
    fn: Any


@dataclass(frozen=True, eq=False, slots=True)
class InitScalarRequest(Request):
    """θ̊ of an initial scalar ``var``: its value at ``n → ∞``."""

    var: Var
    value: float


class Plan:
    """All requests of a program, created in program (dependency) order.

    After creation, the plan also holds the results by request id, filled by the
    evaluators (:class:`~.evaluate.Deterministic`, then Monte Carlo): ``values`` (NaN
    until known; a :class:`DotRequest`'s is the full coefficient), ``errors``
    (estimated absolute error), ``methods`` (the :class:`~.methods.Method` used) and
    ``deterministic`` (no Monte Carlo anywhere upstream).
    """

    def __init__(self, der: Derivation, symbolic: bool = True) -> None:
        #: False when every expectation goes to Monte Carlo: integrands are not built
        #: (the regression form of ZDot needs no derivative either).
        self.symbolic = symbolic
        self.der = der
        self.requests: list[Request] = []
        self.const_req: dict[int, int] = {}  # const id -> request id
        self.cov_req: dict[tuple[int, int], int] = {}  # (bid, bid) sorted -> request id
        self._stein: dict[tuple[Var, int], int] = {}
        self._stein_tables: dict[Var, Any] = {}  # MatMul output -> _stein_hats
        self._stein_b_rids: dict[tuple[Var, Var], Any] = {}  # -> (b_rids, level)
        self._exprs: dict[Any, sympy.Expr] = {}
        self._same: dict[Any, int] = {}
        self._sigs: dict[Any, int] = {}
        self._combines: dict[Any, Any] = {}  # ("fn", uid, k) -> integrand builder
        self._sampled: list[bool] = []  # by request id: Monte Carlo whatever the method
        for instr in der.program.instructions:
            if isinstance(instr, Moment):
                self._moment(instr)
            elif isinstance(instr, ScalarFn):
                self._scalar_fn(instr)
            elif isinstance(instr, InitScalar):
                self._init_scalar(instr)
            elif isinstance(instr, MatMul):
                for c, _y in der.nodes[instr.out].dot:
                    self._dot(c)
            elif isinstance(instr, OuterNonlin):
                for c in der.copy_moments.get(instr.out, ()):
                    self._copy_moment(c)
        n = len(self.requests)
        self.values = np.full(n, np.nan)
        self.errors = np.zeros(n)
        self.methods: list[Method] = [Method.DIRECT] * n
        self.deterministic: list[bool] = [True] * n
        for r in self.requests:
            if isinstance(r, InitScalarRequest):
                self.values[r.rid] = r.value

    # -- creation --------------------------------------------------------------------
    def _level(self, deps: tuple[int, ...]) -> int:
        reqs = self.requests
        return 1 + max([reqs[d].level for d in deps], default=-1)

    def _add(self, req: Request) -> Request:
        self.requests.append(req)
        # Monte Carlo for sure: no integrand, or something it depends on is
        self._sampled.append(
            (isinstance(req, ExpectationRequest) and req.expr is None)
            or any(self._sampled[d] for d in req.deps)
        )
        return req

    def _expectation(
        self,
        cls: type[ExpectationRequest],
        roots: tuple[Any, ...],
        combine: Any,
        tag: Any,
        **fields: Any,
    ) -> Request:
        """A request ``𝔼[combine(Z^{roots})]`` of class ``cls`` with its dependencies.

        ``tag`` identifies ``combine``; the integrand is built once per (tag, structure).
        ``combine=None``: no integrand (Monte Carlo estimates the request). ``fields``:
        those of ``cls`` beyond :class:`ExpectationRequest`'s.
        """
        der = self.der
        res = der.canonical(roots)
        big = None
        if res is None and self.symbolic and combine is not None:
            big = self._polynomial_beyond_tree(roots, combine)
            if big is not None:
                res = big[0]
        if res is None:
            bids = tuple(
                sorted(
                    frozenset().union(*(der.nodes[r].support for r in roots if isinstance(r, Var)))
                )
            )
            # Monte Carlo evaluates it whatever its inputs: no dependency is needed to
            # order it, and what depends on it lists it (and so is not deterministic).
            return self._add(
                cls(len(self.requests), (), 0, roots, None, bids, (), None, (), -1, **fields)
            )
        key, bids, cids = res
        # The very same expectation is one request, keyed by its integrand when there is
        # one: the Moment ⟨x, y⟩ and the Ẑ covariance 𝔼[Z^x Z^y] share it. DotRequests
        # store σ²·value and are never shared.
        if self.symbolic and combine is not None:
            tk = (tag, key)
            expr = self._exprs.get(tk)
            if expr is None:
                expr = self._exprs[tk] = big[1] if big else combine(*der.expr_of_key(key))
            ident: Any = expr
        else:
            expr, ident = None, (("numeric", tag), key)
        shared = None if cls is DotRequest else (ident, bids, cids)
        if shared is not None:
            same = self._same.get(shared)
            if same is not None:
                return self.requests[same]
        lay = der.layout(bids)
        slot_rids = self._slot_rids(bids, lay) if lay.pairs else ()
        cq = self.const_req
        deps = tuple([cq[c] for c in cids]) + slot_rids if cids else slot_rids
        sigs = self._sigs
        sig = sigs.setdefault((ident, len(cids), lay), len(sigs))
        rid = len(self.requests)
        if shared is not None:
            self._same[shared] = rid
        return self._add(
            cls(
                rid, deps, self._level(deps), roots, expr, bids, cids, lay, slot_rids, sig, **fields
            )
        )

    def _polynomial_beyond_tree(
        self, roots: tuple[Any, ...], combine: Any
    ) -> tuple[tuple, sympy.Expr] | None:
        """``(canonical form, integrand)`` of roots whose trees exceed
        :data:`~.derivation.MAX_TREE` when the integrand is a polynomial in the base
        Gaussians with an exact evaluator (:func:`~.exact.exact_evaluator`); None otherwise.

        A polynomial is evaluated exactly by walks of its expression DAG (its monomials, or
        its linear forms), whatever its tree size — e.g. a linear network's training
        unroll, whose ``Z`` doubles as a tree at every step while its DAG grows linearly.
        The integrand is built (the placement is memoised per distinct subexpression) only
        when every root is a polynomial node and no constant it uses comes from Monte
        Carlo; anything else beyond the tree limit stays a Monte Carlo request.

        The base Gaussians and constants are numbered from the largest root first (the
        key keeps the roots' order): a smaller root, whose subexpressions are mostly
        the larger one's, then reuses their placement instead of being placed again in
        another numbering. In notebook 05's centred NTK linear unroll (Moments
        ``⟨x_s(ξ_i), x_t(ξ_j)⟩`` for all ``s ≤ t``), T = 20 places 838 subexpressions
        instead of 3,230 (265 distinct structures), and the requests share their affine
        nodes (:func:`~.exact.affine_rows`)."""
        der = self.der
        if not all(der.nodes[r].polynomial for r in roots if isinstance(r, Var)):
            return None
        order = sorted(range(len(roots)), key=lambda i: -_size(der, roots[i]))
        res = der.canonical(tuple(roots[i] for i in order), limit=sys.maxsize)
        if res is None:  # pragma: no cover - no limit
            return None
        parts, bids, cids = res
        key = tuple(parts[order.index(i)] for i in range(len(roots)))  # the roots' order
        res = (key, bids, cids)
        if any(self._sampled[self.const_req[c]] for c in cids):
            return None  # its constants come from Monte Carlo: so would it
        expr = combine(*der.expr_of_key(key))
        if shape(expr).opaque:
            return None  # a function of the Gaussians (combine's fn): no DAG-only method
        lay = der.layout(bids)
        if exact_evaluator(expr, len(bids), len(cids), lay.centred, lay.groups) is None:
            return None
        return res, expr

    def _slot_rids(self, bids: tuple[int, ...], lay: Layout) -> tuple[int, ...]:
        """The covariance request of every same-family hat pair of ``bids``."""
        out = []
        known = self.cov_req
        bases = self.der.bases
        for i, j in lay.pairs:
            a, b = bids[i], bids[j]
            rid = known.get((a, b) if a <= b else (b, a))
            out.append(rid if rid is not None else self.cov(bases[a], bases[b]))
        return tuple(out)

    def cov(self, bi: Base, bj: Base) -> int:
        """The request for ``𝔼[Z^x Z^y]`` of two hats ``Ẑ^{Wx}``, ``Ẑ^{Wy}`` (one family)."""
        k = (bi.bid, bj.bid) if bi.bid <= bj.bid else (bj.bid, bi.bid)
        rid = self.cov_req.get(k)
        if rid is not None:
            return rid
        # Create the covariances this one depends on first, without recursion (a deep
        # network would need one Python frame per layer): every dependency of the pair
        # (a, b) is a pair of hats created before max(a, b), so ascending order works.
        der, known, arg = self.der, self.cov_req, self.der.hat_arg
        missing: set[tuple[int, int]] = set()
        stack = [k]
        while stack:
            kk = stack.pop()
            if kk in known or kk in missing:
                continue
            missing.add(kk)
            res = der.canonical((arg[kk[0]], arg[kk[1]]))
            if res is None:
                continue
            bids = res[1]
            for i, j in der.layout(bids).pairs:
                a, b = bids[i], bids[j]
                stack.append((a, b) if a <= b else (b, a))
        for kk in sorted(missing, key=lambda t: (t[1], t[0])):
            self._cov_one(kk)
        return known[k]

    def _cov_one(self, k: tuple[int, int]) -> int:
        bi, bj = self.der.bases[k[0]], self.der.bases[k[1]]
        arg = self.der.hat_arg
        req = self._expectation(CovRequest, (arg[k[0]], arg[k[1]]), _mul, "mul", pair=(bi, bj))
        self.cov_req[k] = req.rid
        return req.rid

    def stein_b(self, x: Var, base: Base) -> int:
        """The request for ``𝔼[Ẑ Z^x]`` (Stein's lemma numerator)."""
        k = (x, base.bid)
        if k not in self._stein:
            self._stein[k] = self._expectation(
                SteinBRequest, (base, x), _mul, "mul", x=x, base=base
            ).rid
        return self._stein[k]

    def _combine(self, fn: Any, k: int) -> tuple[Any, Any]:
        """``(tag, combine)``: the integrand builder ``fn(Z…; θ̊…)`` of a Moment (or of an
        OuterNonlin's col moment) of ``k`` vectors."""
        tag = ("fn", fn._uid, k)
        combine = self._combines.get(tag)
        if combine is None:
            register_fn(fn)
            combine = self._combines[tag] = fn.apply
        return tag, combine

    def _moment(self, instr: Moment) -> None:
        sc = self.der.scalar_const
        roots = instr.args + tuple([sc[p] for p in instr.params]) if instr.params else instr.args
        tag, combine = self._combine(instr.fn, len(instr.args))
        req = self._expectation(MomentRequest, roots, combine, tag, var=instr.out)
        self.const_req[sc[instr.out].cid] = req.rid

    def _copy_moment(self, c: CopyMomentConst) -> None:
        tag, combine = self._combine(c.fn, len(c.cols))
        req = self._expectation(CopyMomentRequest, c.cols, combine, tag, const=c)
        self.const_req[c.cid] = req.rid

    def _scalar_fn(self, instr: ScalarFn) -> None:
        deps = tuple([self.const_req[self.der.scalar_const[p].cid] for p in instr.params])
        req = self._add(
            ScalarFnRequest(len(self.requests), deps, self._level(deps), instr.out, instr.fn)
        )
        self.const_req[self.der.scalar_const[instr.out].cid] = req.rid

    def _init_scalar(self, instr: InitScalar) -> None:
        val = instr.value
        if WIDTH in val.free_symbols:
            val = sympy.limit(val, WIDTH, sympy.oo)
        req = self._add(InitScalarRequest(len(self.requests), (), 0, instr.out, float(val)))
        self.const_req[self.der.scalar_const[instr.out].cid] = req.rid

    def _dot(self, c: DotConst) -> None:
        """``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` for the ZDot term ``c`` of the MatMul ``Wx``."""
        x, hb = c.x, c.base
        res = self.der.canonical((x,))
        regression = not self.symbolic  # Monte Carlo fits every coefficient by regression
        if res is not None and self.symbolic:
            key, bids, _ = res
            k = bids.index(hb.bid)
            (ex,) = self.der.expr_of_key(key)
            if shape(ex).needs_dims(g(k)) > MAX_QUADRATURE_DIM:
                # φ' of a non-affine argument of many Gaussians: no deterministic method
                # (exact.shape), so it is not differentiated; Monte Carlo regresses it.
                regression = True
            else:
                deriv = sympy.diff(ex, g(k))
                if not _is_distribution(deriv):
                    req = self._expectation(
                        DotRequest, (x,), lambda e: sympy.diff(e, g(k)), ("diff", k), const=c
                    )
                    self.const_req[c.cid] = req.rid
                    return
        if regression:
            self.const_req[c.cid] = self._expectation(
                DotRequest, (x,), None, ("diff", hb.bid), const=c
            ).rid
            return
        # Stein form: 𝔼∇_S Z^x = Cov(Ẑ_S)⁺ 𝔼[Ẑ_S Z^x] over the candidate hats S.
        S, cov_rids, cov_deps, cov_level = self._stein_hats(c.var)
        hit = self._stein_b_rids.get((c.var, x))
        if hit is None:  # (one per MatMul: its coefficients share x)
            b_rids = tuple([self.stein_b(x, b) for b in S])
            hit = self._stein_b_rids[c.var, x] = (b_rids, max(self._level(b_rids), cov_level))
        b_rids, level = hit
        req = self._add(
            SteinRequest(len(self.requests), b_rids + cov_deps, level, c, S, b_rids, cov_rids)
        )
        self.const_req[c.cid] = req.rid

    def _stein_hats(
        self, var: Var
    ) -> tuple[tuple[Base, ...], tuple[tuple[int, ...], ...], tuple[int, ...], int]:
        """The candidate hats ``S`` of the MatMul defining ``var``, their covariance
        requests ``cov_rids[i][j]``, the upper triangle of those as dependencies, and the
        level it implies: one table per MatMul, shared by all its ZDot coefficients (a
        T-step unroll has O(T·B) coefficients per MatMul over O(T·B) hats, so building
        it per coefficient cost O(T³·B³) per MatMul)."""
        hit = self._stein_tables.get(var)
        if hit is None:
            S = tuple(self.der.dot_candidates(self.der.program.definition(var)))
            cov_rids = tuple(tuple(self.cov(bi, bj) for bj in S) for bi in S)
            cov_deps = tuple(cov_rids[i][j] for i in range(len(S)) for j in range(i, len(S)))
            hit = self._stein_tables[var] = (S, cov_rids, cov_deps, self._level(cov_deps))
        return hit

    # -- reading -----------------------------------------------------------------------
    def integrand(self, req: Request) -> sympy.Expr | None:
        """A request's canonical integrand: ``req.expr``, or built now for Moments and
        products when the plan was made without integrands (``symbolic=False``); None
        for the other requests and when the tree is too big."""
        if not isinstance(req, ExpectationRequest):
            return None
        if req.expr is not None:
            return req.expr
        if isinstance(req, MomentRequest):
            instr = self.der.program.definition(req.var)
            combine = self._combine(instr.fn, len(instr.args))[1]
        elif isinstance(req, CopyMomentRequest):
            combine = self._combine(req.const.fn, len(req.const.cols))[1]
        elif isinstance(req, (CovRequest, SteinBRequest)):
            combine = _mul
        else:
            return None
        res = self.der.canonical(req.roots)
        return None if res is None else combine(*self.der.expr_of_key(res[0]))


def _size(der: Derivation, r: Any) -> int:
    return der.nodes[r].size if isinstance(r, Var) else 0


def _mul(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    return a * b


def _is_distribution(e: sympy.Expr) -> bool:
    """Whether ``e`` involves a Dirac delta, directly or inside an opaque nonlinearity."""
    if e.has(sympy.DiracDelta):
        return True
    return any(
        getattr(getattr(f.func, "nonlinearity", None), "is_distribution", False)
        for f in e.atoms(sympy.Function)
    )


def split_deps(req: Request) -> tuple[tuple[int, ...], Any, tuple[int, ...]]:
    """``req.deps`` as ``(own, key, shared)``: ``own + shared == req.deps``, and requests
    with the same ``key`` (not None) have the same ``shared`` part — the covariance
    table of a MatMul's candidate hats, which its O(T·B) Stein coefficients all list
    (:meth:`Plan._stein_hats`). A walk over dependencies (ranks, flags) visits a shared
    part once per key instead of once per request."""
    if isinstance(req, SteinRequest):
        return req.b_rids, id(req.cov_rids), req.deps[len(req.b_rids) :]
    return req.deps, None, ()


def scalar_var(req: Request) -> Var | None:
    """The scalar whose limit a request is (Moments, ScalarFns, initial scalars), else None."""
    if isinstance(req, (MomentRequest, ScalarFnRequest, InitScalarRequest)):
        return req.var
    return None


def describe(req: Request) -> str:
    """What a request computes, for messages (``"limit of k"``, ``"covariance of …"``)."""
    match req:
        case MomentRequest():
            return f"limit of {req.var.name}"
        case CopyMomentRequest():
            return f"moment {req.const.symbol} of the cols of {req.const.var.name}"
        case CovRequest():
            a, b = req.pair
            return f"covariance of {a.symbol} and {b.symbol}"
        case DotRequest() | SteinRequest():
            return f"ZDot coefficient {req.const.symbol}"
        case SteinBRequest():
            return f"Stein numerator 𝔼[{req.base.symbol} Z^{{{req.x.name}}}]"
        case ScalarFnRequest() | InitScalarRequest():
            return f"value of {req.var.name}"
    raise TypeError(f"not a request: {req!r}")  # pragma: no cover
