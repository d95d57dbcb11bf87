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

from dataclasses import dataclass, field
from typing import Any

import sympy

from ..gaussian import MAX_QUADRATURE_DIM
from ..ir import WIDTH, InitScalar, MatMul, Moment, ScalarFn, Var
from .derivation import Base, Const, Derivation, Layout, register_fn
from .exact import shape
from .symbols import g

__all__ = ["Request", "Plan"]


@dataclass(eq=False, slots=True)
class Request:
    """One deterministic unknown of the limit and how to obtain it."""

    rid: int
    kind: str  # "moment" | "cov" | "dot" | "stein_b" | "stein" | "scalar_fn" | "init_scalar"
    expr: sympy.Expr | None = None  # canonical integrand (expectation kinds)
    bids: tuple[int, ...] = ()  # base Gaussians g0, g1, … of expr
    cids: tuple[int, ...] = ()  # constants q0, q1, … of expr
    deps: list[int] = field(default_factory=list)
    level: int = 0
    var: Var | None = None  # the scalar (moment, scalar_fn, init_scalar)
    const: Const | None = None  # the ZDot coefficient (dot, stein)
    pair: tuple[Base, Base] | None = None  # the hat pair (cov)
    extra: Any = None
    method: str = ""  # planned: exact | quadrature | montecarlo | direct
    deterministic: bool = True  # no Monte Carlo anywhere upstream
    layout: Layout | None = None  # groups, centring and hat pairs of bids
    slot_rids: tuple[int, ...] = ()  # the cov request of each of layout.pairs
    sig: int = -1  # requests with equal sig share integrand, m and layout (one batch)
    value: float | None = None
    error: float = 0.0

    @property
    def groups(self) -> tuple[int, ...]:
        """Independence labels of ``bids`` (:class:`~.derivation.Layout`)."""
        return self.layout.groups if self.layout is not None else ()

    @property
    def centred(self) -> bool:
        """Whether every base Gaussian of ``bids`` has mean 0."""
        return self.layout.centred if self.layout is not None else True


class Plan:
    """All requests of a program, created in program (dependency) order."""

    def __init__(self, der: Derivation, symbolic: bool = True) -> None:
        #: False when every expectation goes to Monte Carlo: integrands are not built
        #: (the regression form of ZDot needs no derivative either).
        self.symbolic = symbolic
        self.der = der
        self.requests: list[Request] = []
        self.const_req: dict[int, int] = {}  # const id -> request id
        self.cov_req: dict[tuple[int, int], int] = {}  # (bid, bid) sorted -> request id
        self._stein: dict[tuple[Var, int], int] = {}
        self._exprs: dict[Any, sympy.Expr] = {}
        self._same: dict[Any, int] = {}
        self._sigs: dict[Any, int] = {}
        self._combines: dict[Any, Any] = {}  # ("fn", uid, k) -> integrand builder
        for instr in der.program.instructions:
            if isinstance(instr, (Moment,)):
                self._moment(instr)
            elif isinstance(instr, ScalarFn):
                self._scalar_fn(instr)
            elif isinstance(instr, InitScalar):
                self._init_scalar(instr)
            elif isinstance(instr, MatMul):
                for c, _y in der.nodes[instr.out].dot:
                    self._dot(c)

    # -- creation --------------------------------------------------------------------
    def _add(self, req: Request) -> Request:
        req.rid = len(self.requests)
        reqs = self.requests
        req.level = 1 + max([reqs[d].level for d in req.deps], default=-1)
        reqs.append(req)
        return req

    def _expectation(self, kind: str, roots: tuple[Any, ...], combine: Any, tag: Any,
                     var: Var | None = None, const: Const | None = None,
                     pair: tuple[Base, Base] | None = None) -> Request:
        """A request ``𝔼[combine(Z^{roots})]`` with its dependencies.

        ``tag`` identifies ``combine``; the integrand is built once per (tag, structure).
        ``combine=None``: no integrand (Monte Carlo estimates the request).
        """
        der = self.der
        res = der.canonical(roots)
        if res is None:
            req = Request(-1, kind, extra=roots, var=var, const=const, pair=pair)
            req.bids = tuple(sorted(frozenset().union(
                *(der.nodes[r].support for r in roots if isinstance(r, Var)))))
            # Monte Carlo evaluates it whatever its inputs: no dependency is needed to
            # order it, and what depends on it lists it (and so is not deterministic).
            return self._add(req)
        key, bids, cids = res
        # The very same expectation is one request, keyed by its integrand when there is
        # one: the Moment ⟨x, y⟩ and the Ẑ covariance 𝔼[Z^x Z^y] share it. "dot" requests
        # store σ²·value and are never shared.
        if self.symbolic and combine is not None:
            tk = (tag, key)
            expr = self._exprs.get(tk)
            if expr is None:
                expr = self._exprs[tk] = combine(*der.expr_of_key(key))
            ident: Any = expr
        else:
            expr, ident = None, (("numeric", tag), key)
        shared = None if kind == "dot" else (ident, bids, cids)
        if shared is not None:
            same = self._same.get(shared)
            if same is not None:
                return self.requests[same]
        lay = der.layout(bids)
        slot_rids = self._slot_rids(bids, lay) if lay.pairs else ()
        cq = self.const_req
        deps = [cq[c] for c in cids] + list(slot_rids) if cids else list(slot_rids)
        req = Request(-1, kind, expr, bids, cids, deps, extra=roots, var=var, const=const,
                      pair=pair, layout=lay, slot_rids=slot_rids)
        sigs = self._sigs
        req.sig = sigs.setdefault((ident, len(cids), lay), len(sigs))
        if shared is not None:
            self._same[shared] = len(self.requests)
        return self._add(req)

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
        req = self._expectation("cov", (arg[k[0]], arg[k[1]]), _mul, "mul", pair=(bi, bj))
        self.cov_req[k] = req.rid
        return req.rid

    def stein_b(self, x: Var, base: Base) -> int:
        """The request for ``𝔼[Ẑ Z^x]`` (Stein's lemma numerator)."""
        k = (x, base.bid)
        if k not in self._stein:
            self._stein[k] = self._expectation("stein_b", (base, x), _mul, "mul").rid
        return self._stein[k]

    def _moment(self, instr: Moment) -> None:
        sc = self.der.scalar_const
        roots = instr.args + tuple([sc[p] for p in instr.params]) if instr.params else instr.args
        fn = instr.fn
        tag = ("fn", fn._uid, len(instr.args))
        combine = self._combines.get(tag)
        if combine is None:
            register_fn(fn)
            k = len(instr.args)

            def combine(*exprs: sympy.Expr) -> sympy.Expr:
                return fn.apply(*exprs[:k], *exprs[k:])

            self._combines[tag] = combine
        req = self._expectation("moment", roots, combine, tag, var=instr.out)
        self.const_req[sc[instr.out].cid] = req.rid

    def _scalar_fn(self, instr: ScalarFn) -> None:
        deps = [self.const_req[self.der.scalar_const[p].cid] for p in instr.params]
        req = self._add(Request(-1, "scalar_fn", deps=deps, var=instr.out, extra=instr.fn,
                                method="direct"))
        self.const_req[self.der.scalar_const[instr.out].cid] = req.rid

    def _init_scalar(self, instr: InitScalar) -> None:
        val = instr.value
        if WIDTH in val.free_symbols:
            val = sympy.limit(val, WIDTH, sympy.oo)
        req = self._add(Request(-1, "init_scalar", var=instr.out, method="direct"))
        req.value = float(val)
        self.const_req[self.der.scalar_const[instr.out].cid] = req.rid

    def _dot(self, c: Const) -> None:
        """``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` for the ZDot term ``c`` of the MatMul ``Wx``."""
        x = self.der.program.definition(c.var).arg
        hb = c.base
        assert hb is not None
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
                    req = self._expectation("dot", (x,), lambda e: sympy.diff(e, g(k)),
                                            ("diff", k), const=c)
                    self.const_req[c.cid] = req.rid
                    return
        if regression:
            self.const_req[c.cid] = self._expectation("dot", (x,), None, ("diff", hb.bid),
                                                      const=c).rid
            return
        # Stein form: 𝔼∇_S Z^x = Cov(Ẑ_S)⁺ 𝔼[Ẑ_S Z^x] over the family hats S in supp(x).
        fam = hb.family
        S = [self.der.bases[b] for b in sorted(self.der.nodes[x].support)
             if self.der.bases[b].family == fam]
        deps = [self.stein_b(x, b) for b in S]
        deps += [self.cov(bi, bj) for i, bi in enumerate(S) for bj in S[i:]]
        req = self._add(Request(-1, "stein", deps=deps, const=c, extra=S, method="direct"))
        self.const_req[c.cid] = req.rid


def _mul(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    return a * b


def _is_distribution(e: sympy.Expr) -> bool:
    """Whether ``e`` involves a Dirac delta, directly or inside an opaque nonlinearity."""
    if e.has(sympy.DiracDelta):
        return True
    return any(getattr(getattr(f.func, "nonlinearity", None), "is_distribution", False)
               for f in e.atoms(sympy.Function))


def describe(req: Request) -> str:
    """What a request computes, for messages (``"limit of k"``, ``"covariance of …"``)."""
    if req.kind == "moment":
        return f"limit of {req.var.name}"
    if req.kind == "cov":
        a, b = req.pair
        return f"covariance of {a.symbol} and {b.symbol}"
    if req.kind in ("dot", "stein_b", "stein"):
        return f"ZDot coefficient {req.const.symbol}"
    return f"value of {req.var.name}" if req.var is not None else req.kind
