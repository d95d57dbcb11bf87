"""Deterministic evaluation of a plan: exact forms, then quadrature (trapezoid rules for
analytic integrands, panel rules scaled to the covariance with edges at the integrand's
kinks and transitions, Gauss–Hermite for the rest and as the fallback).

Requests are evaluated level by level (a level only depends on earlier levels);
within a level, requests with the same ``sig`` (integrand and layout of base
Gaussians, see :mod:`.plan`) form one group evaluated in one vectorised call over the
batch of their ``(mean, cov, q)``; scalar functions of one function likewise.
Quadrature integrates over the linear forms an integrand depends on
(:func:`linear_forms`), so its dimension can be below the number of Gaussians.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from typing import Any

import numpy as np
import sympy

from ..core.errors import (
    DivergenceError,
    MethodUnavailableError,
    NumericalError,
    ResourceError,
    TensorProgramError,
)
from ..core.interpreter import annotate
from ..core.ir import Moment, Nonlin
from ..core.nonlin import inline, is_analytic, local_features
from ..gaussian import (
    MAX_QUADRATURE_DIM,
    PSD_TOL,
    REFINED_DEGREE,
    default_degree,
    equilibration,
    gauss_hermite_expectation,
    on_register,
    panel_expectation,
    trapezoid_expectation,
)
from .derivation import MAX_TREE
from .exact import (
    _lam_q,
    affine_parts,
    coefficient_fn,
    exact_evaluator,
    expand_terms,
    independent_blocks,
    shape,
)
from .existence import check_requests, structure, tilted
from .forms import lambdify_integrand, linear_forms, quadrature_dim
from .methods import AUTO, DIRECT, EXACT, FACTORISED, MONTECARLO, QUADRATURE, RANK, Method
from .plan import (
    CopyMomentRequest,
    CovRequest,
    DotRequest,
    ExpectationRequest,
    InitScalarRequest,
    Plan,
    Request,
    ScalarFnRequest,
    SteinRequest,
    describe,
    scalar_var,
    split_deps,
)
from .symbols import GaussSym, g, q

__all__ = ["AUTO_MONTECARLO_DIM", "Deterministic", "MAX_QUADRATURE_DIM", "QUADRATURE_RTOL"]

#: Steps of the trapezoid rules tried, in turn, on analytic integrands (by dimension;
#: 37 … 289 nodes per dimension on [-9, 9]; none in 4-D, where Gauss–Hermite is cheaper).
TRAPEZOID_STEPS = {1: (0.5, 0.25, 0.125, 0.0625), 2: (0.5, 0.25, 0.125, 0.0625), 3: (0.5, 0.25)}
#: The trapezoid rules are tried on elements whose features (:func:`panel_features`)
#: have standard deviations at most this (tanh's poles at ±iπ/2 are then ≥ 0.5 away
#: from the real axis in standard coordinates: converged by the step 1/8); sharper ones
#: go straight to the panel rule.
TRAPEZOID_MAX_SCALE = 3.0
#: Dimensions in which the panel rule (:func:`~tensorprog.gaussian.panel_expectation`,
#: composite Gauss–Legendre with edges at the integrand's kinks and transitions, scaled
#: to the covariance) is tried: first for integrands with kinks, after the trapezoid
#: rules for analytic ones, before Gauss–Hermite. (In 3-D its ≥ 16 panels of ≥ 5 nodes
#: per coordinate would already exceed MAX_PANEL_NODES.)
PANEL_DIMS = (1, 2)
#: Gauss–Legendre nodes per panel of the panel rule's fine and coarse rules, by dimension.
PANEL_NODES = {1: (16, 12), 2: (7, 5)}
#: In ``auto`` mode, when Monte Carlo runs anyway (some request has no deterministic
#: method), expectations that need a quadrature in this many dimensions join it: their
#: tensor-product rules cost about 10⁶ integrand evaluations per request with the
#: refinement, against one more integrand on Monte Carlo's samples (an nn.train run
#: with LayerNorm spent 13.7 of its 16 s on twelve 4-D rules, four of which then missed
#: the tolerance and went to Monte Carlo all the same).
AUTO_MONTECARLO_DIM = 4
#: In ``auto`` mode a quadrature value whose estimated relative error exceeds this
#: is not trusted: the request (and what depends on it) goes to Monte Carlo.
QUADRATURE_RTOL = 1e-7

#: A quadrature estimate that grows by more than this fraction from degree to degree
#: (three degrees) is treated as a divergent expectation (an error, never a value).
DIVERGENCE_RTOL = 0.05


class Deterministic:
    """Evaluates every request of a plan that needs no Monte Carlo.

    Parameters
    ----------
    plan : Plan
    method : Method or {"auto", "exact", "quadrature", "montecarlo"}
    degree : int, optional
        Gauss–Hermite nodes per dimension (default by dimension).
    """

    def __init__(self, plan: Plan, method: Method | str, degree: int | None = None) -> None:
        self.plan = plan
        self.der = plan.der
        self.method = Method(method)
        self.degree = degree
        self.needs_montecarlo = False
        self._chosen: dict[int, Method] = {}  # sig -> method
        self._costly_sigs: dict[int, bool] = {}  # sig -> quadrature of ≥ AUTO_MONTECARLO_DIM
        #: Existence (:mod:`.existence`): request ids proven to exist, and the reasons of
        #: those neither proven nor refuted (evaluated, but flagged on the Limit).
        self.proven: set[int] = set()
        self.unproven: dict[int, str] = {}
        #: Request ids whose (forced) quadrature value has no trustworthy error estimate,
        #: and why: an integrable singularity (flagged on the Limit).
        self.inexact: dict[int, str] = {}
        #: Values of every request by id (NaN until evaluated), for vectorised gathers:
        #: the plan's results (initial scalars known from the start).
        self.values = plan.values

    # -- which method per request -----------------------------------------------------
    def _choose(self, req: Request) -> Method:
        if not isinstance(req, ExpectationRequest):
            return DIRECT
        if self.method is MONTECARLO:
            return MONTECARLO
        # Requests of one sig share integrand, dimensions and layout: one decision each.
        method = self._chosen.get(req.sig)
        if method is None:
            method = self._chosen[req.sig] = self._decide(req)
        return method

    def _decide(self, req: ExpectationRequest) -> Method:
        d, m = len(req.bids), len(req.cids)
        exact = (
            req.expr is not None
            and exact_evaluator(req.expr, d, m, req.centred, req.groups) is not None
        )
        if self.method in (EXACT, QUADRATURE) and req.expr is None:
            outer = self.der.outer_upstream(req.roots)
            if outer is not None:
                raise self._unavailable(
                    req,
                    self.method,
                    f"it depends on the OuterNonlin {outer.name}, whose inner expectation "
                    f"𝔼^(1) over the iid copy of its cols is not a finite sum of moments "
                    f"(ψ is not a polynomial in its col arguments)",
                    self.der.program.definition(outer),
                )
        if self.method is EXACT:
            if not exact:
                raise self._unavailable(
                    req, EXACT, "no exact form (Wick polynomial or registered closed form) exists"
                )
            return EXACT
        if self.method is QUADRATURE:
            if req.expr is not None and self.der.canonical(req.roots) is None:
                raise self._unavailable(
                    req,
                    QUADRATURE,
                    f"its integrand is a polynomial whose expression tree has more than "
                    f"{MAX_TREE} nodes: only the exact evaluator (which walks its DAG) takes "
                    f"it (method='exact' or 'auto')",
                )
            if req.expr is None or quadrature_dim(req.expr, d, m) > MAX_QUADRATURE_DIM:
                raise self._unavailable(
                    req,
                    QUADRATURE,
                    f"it depends on {d} base Gaussians through more than "
                    f"{MAX_QUADRATURE_DIM} linear forms (quadrature handles ≤ {MAX_QUADRATURE_DIM})",
                )
            return QUADRATURE
        if exact:
            return EXACT
        if req.expr is not None and factorised_plan(req.expr, d, m, req.centred, req.groups):
            return FACTORISED
        if req.expr is not None and quadrature_dim(req.expr, d, m) <= MAX_QUADRATURE_DIM:
            return QUADRATURE
        return MONTECARLO

    def _costly(self, req: ExpectationRequest) -> bool:
        """Whether the request's quadrature (or a factorised block's) has at least
        :data:`AUTO_MONTECARLO_DIM` dimensions (one decision per sig)."""
        hit = self._costly_sigs.get(req.sig)
        if hit is None:
            d, m = len(req.bids), len(req.cids)
            plan = factorised_plan(req.expr, d, m, req.centred, req.groups)
            if plan is None:
                dims = [quadrature_dim(req.expr, d, m)]
            else:
                dims = [
                    quadrature_dim(block, len(ds), m)
                    for term in plan
                    for block, ds, ev in term
                    if ev is None
                ]
            hit = self._costly_sigs[req.sig] = max(dims, default=0) >= AUTO_MONTECARLO_DIM
        return bool(hit)

    def _unavailable(
        self, req: Request, method: Method, why: str, instr: Any = None
    ) -> TensorProgramError:
        instr = instr if instr is not None else self._instruction(req)
        exc = MethodUnavailableError(
            f"method={method.value!r} cannot evaluate the {describe(req)}: {why}; "
            f"use method='auto' or 'montecarlo'"
        )
        return annotate(exc, instr, "Limit") if instr is not None else exc

    def _instruction(self, req: Request) -> Any:
        """The instruction a request belongs to (for error messages), if any."""
        match req:
            case DotRequest() | SteinRequest():
                var = req.const.var
            case CovRequest():
                var = req.pair[1].var
            case CopyMomentRequest():
                var = req.const.var
            case _:
                var = scalar_var(req)
        return self.der.program.definition(var) if var is not None else None

    # -- evaluation -----------------------------------------------------------------
    def _check_divisors(self) -> None:
        """A Nonlin+/Moment that divides by a function of its parameters that vanishes at
        their (deterministic) limits has no limit: an error naming the scalars, instead of
        an integrand that is infinite everywhere. Vanishing means within the first-order
        error of the computed limits (exactly 0 for exact ones)."""
        der, plan, left = self.der, self.plan, []
        for instr, fn in self._divides:
            rids = [plan.const_req[der.scalar_const[v].cid] for v in instr.params]
            if any(np.isnan(self.values[r]) or not plan.deterministic[r] for r in rids):
                left.append((instr, fn))
                continue
            at = dict(zip(fn.params, (float(plan.values[r]) for r in rids)))
            err = dict(zip(fn.params, (float(plan.errors[r]) for r in rids)))
            for D in fn.divisors:
                val = float(D.xreplace(at))
                slack = sum(
                    abs(float(sympy.diff(D, t).xreplace(at))) * err[t] for t in D.free_symbols
                )
                if abs(val) <= slack:
                    used = [
                        (t, v, r)
                        for t, v, r in zip(fn.params, instr.params, rids)
                        if t in D.free_symbols
                    ]
                    named = D.xreplace({t: sympy.Symbol(v.name) for t, v, _ in used})
                    limits = ", ".join(f"{v.name} → {plan.values[r]:.6g}" for _, v, r in used)
                    raise annotate(
                        NumericalError(
                            f"{fn.name} divides by {named}, whose limit is 0 ({limits}): the "
                            f"instruction has no infinite-width limit"
                        ),
                        instr,
                        "Limit",
                    )
        self._divides = left

    def run(self) -> None:
        prog = self.der.program
        self._divides = [
            (i, i.fn)
            for i in prog.instructions
            if isinstance(i, (Nonlin, Moment)) and i.params and i.fn.divisors
        ]
        plan = self.plan
        methods, det = plan.methods, plan.deterministic
        levels: dict[int, list[Request]] = defaultdict(list)
        for req in plan.requests:
            methods[req.rid] = self._choose(req)
            levels[req.level].append(req)
        if self.method is AUTO and any(v is MONTECARLO for v in methods):
            for req in plan.requests:
                if methods[req.rid] in (QUADRATURE, FACTORISED) and self._costly(req):
                    methods[req.rid] = MONTECARLO
        for level in sorted(levels):
            groups: dict[Any, list[ExpectationRequest]] = defaultdict(list)
            fns: dict[Any, list[ScalarFnRequest]] = defaultdict(list)  # by function
            to_check: dict[Any, list[ExpectationRequest]] = defaultdict(
                list
            )  # Monte Carlo's, laws known
            for req in levels[level]:
                rid = req.rid
                method = methods[rid]
                # (while nothing went to Monte Carlo, every dependency is deterministic)
                ok = det[rid] = method is not MONTECARLO and (
                    not self.needs_montecarlo or all(det[d] for d in req.deps)
                )
                if not ok:
                    self.needs_montecarlo = True
                    if (
                        method is MONTECARLO
                        and req.layout is not None
                        and all(det[d] for d in req.deps)
                    ):
                        to_check[req.sig].append(req)
                    continue
                if isinstance(req, ScalarFnRequest):
                    fns[req.fn].append(req)
                elif method is DIRECT:
                    self._direct(req)
                else:
                    groups[(method, req.sig)].append(req)
            for reqs in to_check.values():
                self._existence(reqs, law_only=True)
            for reqs in fns.values():
                self._scalar_fns(reqs)
            for (method, _), reqs in groups.items():
                r0 = reqs[0]
                self._group(
                    (method, r0.expr, len(r0.bids), len(r0.cids), r0.centred, r0.groups), reqs
                )
            if self._divides:
                self._check_divisors()

    def _support_laws(
        self, reqs: list[Request], d: int, groups: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Means (B, d) and covariances (B, d, d) of a group's base Gaussians
        (:func:`gather_laws`: requests of one group share their layout)."""
        der, B = self.der, len(reqs)
        pairs = reqs[0].layout.pairs
        bids = np.array([r.bids for r in reqs], dtype=np.intp).reshape(B, d)
        slots = np.array([r.slot_rids for r in reqs], dtype=np.intp).reshape(B, len(pairs))
        return gather_laws(
            der,
            self.values[None],
            der.init_mean[None],
            der.init_cov[None],
            bids,
            slots,
            pairs,
            groups,
        )

    def expectations(
        self, key: Any, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Values, error estimates and the divergence mask (None: no check) of one
        integrand's expectations over a batch of laws ``(mean, cov, qv)``, by the
        ``method`` of ``key = (method, expr, d, m, centred, groups)``."""
        method, expr, d, m, centred, indep = key
        if method is EXACT:
            f = exact_evaluator(expr, d, m, centred, indep)
            assert f is not None
            with np.errstate(all="ignore"):
                vals = np.asarray(f(mean, cov, qv), dtype=float)
            return vals, np.zeros(len(mean)), None
        if method is FACTORISED:
            vals, errs = self._factorised(expr, d, m, centred, indep, mean, cov, qv)
            return vals, errs, None
        return tilted(self._quadrature, expr, d, m, mean, cov, qv)

    def _group(self, key: Any, reqs: list[Request]) -> None:
        method, expr, d, m, centred, indep = key
        mean, cov, qv = self._existence(reqs)
        try:
            vals, errs, growth = self.expectations(key, mean, cov, qv)
        except TensorProgramError as exc:
            instr = self._instruction(reqs[0])
            raise (annotate(exc, instr, "Limit") if instr is not None else exc) from exc
        # a pole of integrable order (|x|^{-1/2}): Gauss–Hermite and panel rules converge
        # slowly there, and their two-degree comparison under-states the error (1.568 ±
        # 0.011 for 1.720)
        singular = method is not EXACT and bool(structure(expr, d, m).singular)
        for pos, (r, v, e) in enumerate(zip(reqs, vals, errs)):
            if not np.isfinite(v):
                instr = self._instruction(r)
                exc = NumericalError(
                    f"the {describe(r)} is not finite ({v}); the expectation diverges or overflows"
                )
                raise annotate(exc, instr, "Limit") if instr is not None else exc
            if method is QUADRATURE and growth is not None and growth[pos]:
                instr = self._instruction(r)
                exc = DivergenceError(
                    f"the {describe(r)} does not converge: Gauss–Hermite estimates grow steadily "
                    f"with the degree (last change {e:.3g}, value {v:.6g}); the integrand is not "
                    f"integrable "
                    f"against the Gaussian (e.g. exp(Z²) with Var Z ≥ 1/2)"
                )
                raise annotate(exc, instr, "Limit") if instr is not None else exc
            if (
                method is not EXACT
                and self.method is AUTO
                and (e > QUADRATURE_RTOL * max(1.0, abs(v)) or r.rid in self.unproven or singular)
            ):
                self.plan.deterministic[r.rid] = False  # not trusted: Monte Carlo takes over
                self.plan.methods[r.rid] = MONTECARLO
                self.needs_montecarlo = True
                continue
            if singular:
                self.inexact[r.rid] = (
                    "the integrand has an integrable singularity, where "
                    "the quadrature error estimate does not hold"
                )
            elif not np.isfinite(e):
                self.inexact[r.rid] = (
                    "the integrand jumps along lines the quadrature "
                    "rule is not aligned with: no error estimate"
                )
            self._store(r, float(v), float(e))

    def _existence(
        self, reqs: list[Request], law_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Laws of a group's base Gaussians and constants, after deciding that every
        request's expectation exists (:func:`~.existence.check_requests`: a divergent
        one raises ``DivergenceError`` naming its instruction; unproven ones are recorded
        in ``self.unproven``, and ``auto`` sends them to Monte Carlo). ``law_only``: a
        group bound for Monte Carlo, checked when its law is finite (else Monte Carlo
        reports the overflow by name)."""
        r0 = reqs[0]
        d, m = len(r0.bids), len(r0.cids)
        with np.errstate(all="ignore") if law_only else contextlib.nullcontext():
            mean, cov = self._support_laws(reqs, d, r0.groups)
        qv = self.values[np.array([r.deps[:m] for r in reqs], dtype=np.intp).reshape(len(reqs), m)]
        if not law_only or (np.isfinite(cov).all() and np.isfinite(qv).all()):
            check_requests(self, reqs, mean, cov, qv)
        return mean, cov, qv

    def _factorised(
        self,
        expr: sympy.Expr,
        d: int,
        m: int,
        centred: bool,
        groups: tuple[int, ...],
        mean: np.ndarray,
        cov: np.ndarray,
        qv: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Σ_terms Π_blocks 𝔼[block]: each independent block exact or by its own (lower-
        dimensional) quadrature; the error estimate propagates the blocks' estimates."""
        total = np.zeros(mean.shape[0])
        err = np.zeros(mean.shape[0])
        for term in factorised_plan(expr, d, m, centred, groups):
            val, rel = np.ones(mean.shape[0]), np.zeros(mean.shape[0])
            for block, dims, ev in term:
                if ev is not None:
                    with np.errstate(all="ignore"):
                        b, e = np.asarray(ev(mean, cov, qv), dtype=float), 0.0
                else:
                    sub = cov[:, dims][:, :, dims]
                    b, e, _ = self._quadrature(block, len(dims), m, mean[:, dims], sub, qv)
                val = val * b
                rel = rel + np.abs(e) / np.maximum(np.abs(b), 1e-300)
            total += val
            err += np.abs(val) * rel
        return total, err

    def _quadrature(
        self, expr: sympy.Expr, d: int, m: int, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        red = linear_forms(expr, d, m)
        if red is not None:  # integrate over the k < d linear forms the integrand depends on
            mean, cov = red.reduce(mean, cov, qv)
            cov = _nearest_psd(cov)
            expr, d = red.expr, red.k
        f = lambdify_integrand(expr, d, m)

        def integrand(pts: np.ndarray, params: np.ndarray) -> np.ndarray:
            cols = [pts[..., k] for k in range(d)] + [params[:, j, None] for j in range(m)]
            return np.broadcast_to(f(*cols), pts.shape[:-1])

        if self.degree is not None:  # an explicit Gauss–Hermite degree: that rule only
            return self._quadrature_gh(integrand, d, mean, cov, qv)
        B = len(mean)
        val, err = np.full(B, np.nan), np.full(B, np.inf)
        done = np.zeros(B, dtype=bool)
        if d in TRAPEZOID_STEPS and is_analytic(expr):
            # Features sharper than TRAPEZOID_MAX_SCALE in standard coordinates would
            # need steps below the finest one: those elements go to the panel rule.
            feats = panel_features(expr, d, m)(qv)[:, :, 1:]
            scale = np.sqrt(np.einsum("bfi,bij,bfj->bf", feats, cov, feats)).max(
                axis=1, initial=0.0
            )
            smooth = np.flatnonzero(scale <= TRAPEZOID_MAX_SCALE)
            if smooth.size:
                v, e, ok = self._trapezoid(integrand, d, mean[smooth], cov[smooth], qv[smooth])
                val[smooth], err[smooth], done[smooth] = v, e, ok
        if d in PANEL_DIMS and not done.all():
            rest = np.flatnonzero(~done)
            v2, e2, ok = self._panel(integrand, expr, d, m, mean[rest], cov[rest], qv[rest])
            val[rest[ok]], err[rest[ok]] = v2[ok], e2[ok]
            done[rest[ok]] = True
        if done.all():
            return val, err, None
        # the rest by Gauss–Hermite (with its divergence check)
        rest = np.flatnonzero(~done)
        v2, e2, g2 = self._quadrature_gh(integrand, d, mean[rest], cov[rest], qv[rest])
        if d >= 2 and _has_jumps(expr):
            # a jump along a line the tensor rule is not aligned with converges like
            # n^{-1/2}, and two degrees' difference under-states the error (20× on a
            # step·step Moment of the relu NTK): no estimate is given
            e2 = np.full_like(e2, np.inf)
        val[rest], err[rest] = v2, e2
        growth = None
        if g2 is not None:
            growth = np.zeros(B, dtype=bool)
            growth[rest] = g2
        return val, err, growth

    def _panel(
        self,
        integrand: Any,
        expr: sympy.Expr,
        d: int,
        m: int,
        mean: np.ndarray,
        cov: np.ndarray,
        qv: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The panel rule (edges at the integrand's features, :func:`panel_features`):
        values, error estimates (fine vs coarse rule) and the mask of elements whose
        estimate passes ``QUADRATURE_RTOL`` with a negligible tail; the others are
        left to Gauss–Hermite (also all of them when the rule is too big or a value is
        not finite)."""
        B = len(mean)
        fail = (np.full(B, np.nan), np.full(B, np.inf), np.zeros(B, dtype=bool))
        try:
            feats = panel_features(expr, d, m)
            fine, coarse, tail = panel_expectation(
                integrand, mean, cov, feats(qv), kinks=feats.kinks, nodes=PANEL_NODES[d], params=qv
            )
        except (NumericalError, ResourceError):
            return fail
        e = np.abs(fine - coarse)
        ok = ((e <= QUADRATURE_RTOL * np.abs(fine)) | (e <= 1e-14)) & (tail < 1e-12)
        return fine, e, ok

    def _trapezoid(
        self, integrand: Any, d: int, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trapezoid rules of halving steps (analytic integrands): each element stops
        when two successive rules agree to ``QUADRATURE_RTOL`` relative (the finer one's
        error is then about the square of that) and the box's tails are negligible.

        Returns values, error estimates and the mask of elements done; the others are
        left to Gauss–Hermite (also any batch with a non-finite value).
        """
        B = len(mean)
        val, err = np.full(B, np.nan), np.full(B, np.inf)
        done = np.zeros(B, dtype=bool)
        todo = np.arange(B)
        prev = None
        try:
            for step in TRAPEZOID_STEPS[d]:
                v, tail = trapezoid_expectation(
                    integrand, mean[todo], cov[todo], step=step, params=qv[todo]
                )
                if prev is not None:
                    e = np.abs(v - prev)
                    ok = ((e <= QUADRATURE_RTOL * np.abs(v)) | (e <= 1e-14)) & (tail < 1e-12)
                    val[todo[ok]], err[todo[ok]] = v[ok], e[ok]
                    done[todo[ok]] = True
                    todo, v = todo[~ok], v[~ok]
                    if not todo.size:
                        break
                prev = v
        except NumericalError:  # e.g. a node on a pole: Gauss–Hermite decides
            pass
        return val, err, done

    def _quadrature_gh(
        self, integrand: Any, d: int, mean: np.ndarray, cov: np.ndarray, qv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Gauss–Hermite at the default degree, error vs 3/4 of it, divergence check,
        and one finer rule where the estimate is not good enough."""
        deg = self.degree or default_degree(d)
        lo = min(max(2, int(round(deg * 0.75))), deg - 1)  # always a different rule
        hi_val = gauss_hermite_expectation(integrand, mean, cov, degree=deg, params=qv)
        lo_val = gauss_hermite_expectation(integrand, mean, cov, degree=lo, params=qv)
        err = np.abs(hi_val - lo_val)
        growth = None
        if np.any(err > DIVERGENCE_RTOL * np.abs(hi_val)):
            # A divergent integral grows steadily with the degree (mass far out in the
            # tails); a discontinuous one converges, with oscillating errors.
            lo2 = max(2, deg // 2)
            lo2_val = gauss_hermite_expectation(integrand, mean, cov, degree=lo2, params=qv)
            a, b, c = np.abs(lo2_val), np.abs(lo_val), np.abs(hi_val)
            growth = (b > a * (1 + DIVERGENCE_RTOL / 2)) & (c > b * (1 + DIVERGENCE_RTOL / 2))
            if np.any(growth):
                # Values at round-off level of 𝔼|f| (a mean that cancels, e.g. odd in a
                # centred Gaussian) fluctuate at random; they are not growing.
                scale = gauss_hermite_expectation(
                    lambda pts, params: np.abs(integrand(pts, params)),
                    mean,
                    cov,
                    degree=deg,
                    params=qv,
                )
                growth &= c > 1e-9 * np.abs(scale)
        # Refined where the *relative* error is too big (a factor of a product must be
        # precise relative to itself), unless it is at round-off level.
        refine = (
            (err > QUADRATURE_RTOL * np.abs(hi_val))
            & (err > 1e-14)
            & ~(growth if growth is not None else False)
        )
        if self.degree is None and np.any(refine) and REFINED_DEGREE[d] > deg:
            # Slowly converging (tanh-like poles near the real axis): a finer rule for the
            # elements that need it. Its error is estimated like the default one's (vs
            # 3/4 of its degree) while the estimates keep converging, else vs the default.
            idx = np.flatnonzero(refine)
            top = REFINED_DEGREE[d]
            fine = gauss_hermite_expectation(
                integrand, mean[idx], cov[idx], degree=top, params=qv[idx]
            )
            mid = gauss_hermite_expectation(
                integrand,
                mean[idx],
                cov[idx],
                degree=max(deg + 1, int(round(top * 0.75))),
                params=qv[idx],
            )
            e_fine, e_mid = np.abs(fine - mid), np.abs(mid - hi_val[idx])
            err = err.copy()
            err[idx] = np.where(e_fine < e_mid, e_fine, np.abs(fine - hi_val[idx]))
            hi_val = hi_val.copy()
            hi_val[idx] = fine
        return hi_val, err, growth

    def _scalar_fns(self, reqs: list[ScalarFnRequest]) -> None:
        """ScalarFns of one function (one level): ``fn(θ̊…)`` in one vectorised call."""
        fn = reqs[0].fn
        params = self.values[np.array([r.deps for r in reqs], dtype=np.intp).reshape(len(reqs), -1)]
        with np.errstate(all="ignore"):  # numpy semantics: 1/0 is inf (an error below)
            vals = np.broadcast_to(np.asarray(fn.numpy(*params.T), dtype=float), (len(reqs),))
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            instr = self.der.program.definition(reqs[bad[0]].var)
            raise annotate(
                NumericalError(f"{fn.name} of the limit scalars is not finite ({vals[bad[0]]})"),
                instr,
                "Limit",
            )
        rids = [r.rid for r in reqs]
        self.values[rids] = vals
        self.plan.errors[rids] = _propagated_error(
            fn,
            params,
            self.plan.errors[
                np.array([r.deps for r in reqs], dtype=np.intp).reshape(len(reqs), -1)
            ],
        )

    def _direct(self, req: Request) -> None:
        match req:
            case InitScalarRequest():
                return
            case SteinRequest():
                # Stein's lemma [TP4 Remark F.2]: 𝔼∇_S Z^x = Cov(Ẑ_S)⁺ 𝔼[Ẑ_S Z^x], with
                # Cov(Ẑ_i, Ẑ_j) = σ² 𝔼[Z^{x_i} Z^{x_j}] (the covariance requests).
                b_rids = np.array(req.b_rids, dtype=np.intp)
                cov_rids = np.array(req.cov_rids, dtype=np.intp)
                val, err = stein_coefficients(
                    req,
                    self.values[None, b_rids],
                    self.values[None, cov_rids],
                    self.plan.errors[None, b_rids],
                    self.plan.errors[None, cov_rids],
                )
                self.values[req.rid], self.plan.errors[req.rid] = float(val[0]), float(err[0])
                return
        raise AssertionError(type(req).__name__)  # pragma: no cover

    def _store(self, req: ExpectationRequest, value: float, error: float) -> None:
        if isinstance(req, DotRequest):  # stored as the full coefficient σ_W² 𝔼[∂Z^x/∂Ẑ]
            value, error = req.const.full(value), req.const.full(error)
        self.values[req.rid] = value
        self.plan.errors[req.rid] = error


def stein_coefficients(
    req: SteinRequest, b: np.ndarray, cov: np.ndarray, eb: np.ndarray, ecov: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A ZDot coefficient by Stein's lemma [TP4 Remark F.2] for ``P`` sets of numbers:
    ``𝔼∇_S Z^x = Cov(Ẑ_S)⁺ 𝔼[Ẑ_S Z^x]`` with ``Cov(Ẑ_i, Ẑ_j) = σ² 𝔼[Z^{x_i} Z^{x_j}]``.

    ``b`` ``(P, S)``: the numerators ``𝔼[Ẑ_i Z^x]``; ``cov`` ``(P, S, S)``: the covariance
    requests' values ``𝔼[Z^{x_i} Z^{x_j}]``; ``eb``, ``ecov``: their error estimates.
    Returns the full coefficients ``(P,)`` and their first-order errors
    ``|C⁺|(δb + |δC| |∇|)`` (from ``δ∇ = C⁺(δb − δC ∇)``, bounded term by term)."""
    c = req.const
    C = c.sigma2 * cov
    Cp = np.linalg.pinv(C, rcond=1e-10, hermitian=True)
    grad = (Cp @ b[:, :, None])[:, :, 0]
    j = req.hats.index(c.base)
    eC = c.sigma2 * ecov
    err = np.einsum(
        "pj,pj->p", np.abs(Cp[:, j]), eb + (np.abs(eC) @ np.abs(grad)[:, :, None])[:, :, 0]
    )
    return c.full(grad[:, j]), np.abs(c.full(err))


def effective_ranks(plan: Plan) -> list[int]:
    """Per request, the :data:`~.methods.RANK` of its effective method: the least precise
    along its dependencies (a sampled request counts as Monte Carlo)."""
    sampled = RANK[MONTECARLO]
    eff: list[int] = []
    shared: dict[Any, int] = {}  # split_deps: a shared part's rank, once
    for req, m, ok in zip(plan.requests, plan.methods, plan.deterministic):
        r = RANK[m] if ok else sampled
        own, key, rest = split_deps(req)
        for d in own:
            if eff[d] > r:
                r = eff[d]
        if rest:
            s = shared.get(key)
            if s is None:
                s = shared[key] = max(eff[d] for d in rest)
            r = max(r, s)
        eff.append(r)
    return eff


def gather_laws(
    der: Any,
    values: np.ndarray,
    init_mean: np.ndarray,
    init_cov: np.ndarray,
    bids: np.ndarray,
    slots: np.ndarray,
    pairs: tuple[tuple[int, int], ...],
    groups: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Means ``(P·k, d)`` and covariances ``(P·k, d, d)`` of the base Gaussians of ``k``
    requests of one layout, for ``P`` sets of numbers at once (set-major).

    ``values`` ``(P, n)``: every request's value per set; ``init_mean`` ``(P, N)`` and
    ``init_cov`` ``(P, N, N)``: the initial vectors' law per set; ``bids`` ``(k, d)``:
    the requests' base Gaussians; ``slots`` ``(k, len(pairs))``: the covariance request
    of each same-family hat pair of the layout, whose covariance is ``σ_W²`` times its
    value [TP4 ZHat]. Computed covariances are clipped to the nearest PSD matrix where
    rounding made them slightly indefinite (:func:`_nearest_psd`)."""
    P, (k, d) = values.shape[0], bids.shape
    mean = np.zeros((P, k, d))
    cov = np.zeros((P, k, d, d))
    init, ii, jj = _layout_index(pairs, groups)
    if init.size:
        idx = der.base_init_index[bids[:, init]]
        mean[:, :, init] = init_mean[:, idx]
        cov[:, :, init[:, None], init[None, :]] = init_cov[:, idx[:, :, None], idx[:, None, :]]
    mean, cov = mean.reshape(P * k, d), cov.reshape(P * k, d, d)
    if pairs:
        # σ² per request: a group can mix families of different matrices (same layout)
        s2 = der.base_sigma2[bids[:, ii]]
        with np.errstate(over="ignore", invalid="ignore"):  # inf is reported by name
            vals = (values[:, slots] * s2).reshape(P * k, len(pairs))
        cov[:, ii, jj] = vals
        cov[:, jj, ii] = vals
        cov = _nearest_psd(cov, groups)
    return mean, cov


@functools.lru_cache(maxsize=4096)
def _layout_index(
    pairs: tuple[tuple[int, int], ...], groups: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of a layout: its initial base Gaussians (``groups < 0``) and the rows and columns
    of its hat pairs, as index arrays (once per layout)."""
    init = np.array([i for i, gr in enumerate(groups) if gr < 0], dtype=np.intp)
    ii = np.array([i for i, _ in pairs], dtype=np.intp)
    jj = np.array([j for _, j in pairs], dtype=np.intp)
    return init, ii, jj


@functools.lru_cache(maxsize=4096)
def _label_blocks(labels: tuple[int, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The coordinates alone in their label, and those of every larger label
    (independent blocks of a layout), once per layout."""
    lab = np.asarray(labels, dtype=np.intp)
    blocks = [np.flatnonzero(lab == v) for v in np.unique(lab)]
    singles = np.array([ix[0] for ix in blocks if len(ix) == 1], dtype=np.intp)
    return singles, tuple(ix for ix in blocks if len(ix) > 1)


def _propagated_error(fn: Any, params: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """First-order error of ``fn(θ)`` from the errors ``δθ`` of its inputs (rows of
    ``params``/``errors``, one per request): ``Σᵢ |∂fn/∂θᵢ(θ)| δθᵢ``; ``inf`` where a
    needed derivative is not finite (``√θ`` at 0). Exact inputs give 0 exactly."""
    out = np.zeros(params.shape[0])
    for i in range(params.shape[1]):
        e = errors[:, i]
        if not e.any():
            continue
        with np.errstate(all="ignore"):
            d = np.broadcast_to(
                np.asarray(fn.derivative(i, ae=True).numpy(*params.T), dtype=float), out.shape
            )
            term = np.abs(d) * e
        out += np.where(e > 0, np.where(np.isfinite(term), term, np.inf), 0.0)
    return out


#: Hat covariances are computed (by quadrature, to ~1e-9): eigenvalues down to this
#: relative size below zero are rounding of a singular covariance, and are clipped.
COMPUTED_PSD_TOL = 1e-8


def eigenvalue_range(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest eigenvalues of symmetric matrices ``(P, n, n)``: the entry
    itself for ``n = 1``, ``m ∓ √(((a−c)/2)² + b²)`` with ``m = (a+c)/2`` for ``n = 2``
    (accurate to rounding), ``numpy.linalg.eigvalsh`` beyond."""
    n = M.shape[-1]
    if n == 1:
        return M[:, 0, 0], M[:, 0, 0]
    if n == 2:
        a, c, b = M[:, 0, 0], M[:, 1, 1], M[:, 0, 1]
        m, r = (a + c) / 2, np.hypot((a - c) / 2, b)
        return m - r, m + r
    ev = np.linalg.eigvalsh(M)
    return ev[:, 0], ev[:, -1]


def plainly_psd(var: np.ndarray, cross: np.ndarray, at: np.ndarray) -> bool:
    r"""Whether finite covariances made of 1×1 and 2×2 independent blocks are positive
    semidefinite by the cheapest test: every variance ≥ 0 and, per 2×2 block,
    :math:`|c_{12}| ≤ \sqrt{c_{11}}\sqrt{c_{22}}` (in floating point: the correlation's
    smallest eigenvalue is then ≥ −4ε, far from the ``PSD_TOL`` screen of
    :func:`_nearest_psd`, which would change nothing).

    ``var`` ``(B, d)``: the variances; ``cross`` ``(B, b)``: each 2×2 block's
    off-diagonal entry; ``at`` ``(b, 2)``: its two coordinates."""
    if not (var >= 0.0).all():
        return False
    sd = np.sqrt(var)
    return bool((np.abs(cross) <= sd[:, at[:, 0]] * sd[:, at[:, 1]]).all())


def pair_blocks(groups: tuple[int, ...] | None, d: int) -> np.ndarray | None:
    """The coordinates ``(b, 2)`` of a layout's 2×2 independent blocks (its others
    1×1), or None when some block is larger (:func:`plainly_psd` does not apply)."""
    labels = (0,) * d if groups is None else tuple(groups)
    _, blocks = _label_blocks(labels)
    if any(len(ix) > 2 for ix in blocks):
        return None
    return np.array([ix for ix in blocks], dtype=np.intp).reshape(len(blocks), 2)


def _nearest_psd(cov: np.ndarray, groups: tuple[int, ...] | None = None) -> np.ndarray:
    """Clip rounding-level negative eigenvalues of computed covariances (B, d, d)
    (``groups``: labels of independent coordinates, as :class:`~.derivation.Layout`'s).

    A genuinely indefinite matrix is left as it is (``psd_factor`` then reports it),
    and so is one whose negative eigenvalues are within ``PSD_TOL`` (what every consumer
    tolerates): rebuilding a singular matrix from its eigen-decomposition would move an
    exact correlation of ±1 by an ulp, and arcsine/arccosine kernels turn one ulp there
    into ``10⁻⁸`` (an exact ``ξ, −ξ`` symmetry broken). Eigenvalues are those of the
    correlation matrix (:func:`~tensorprog.gaussian.equilibration`).
    """
    if not np.isfinite(cov).all():
        return cov  # overflowed: reported by name where it is used
    labels = (0,) * cov.shape[-1] if groups is None else tuple(groups)
    singles, blocks = _label_blocks(labels)
    at = pair_blocks(groups, cov.shape[-1])
    if at is not None and plainly_psd(
        np.diagonal(cov, axis1=1, axis2=2), cov[:, at[:, 0], at[:, 1]], at
    ):
        return cov
    s = equilibration(cov)
    ss = s[:, :, None] * s[:, None, :]
    R = cov / ss
    # Screen first: only matrices whose smallest eigenvalue may be below −PSD_TOL·scale
    # are decomposed. The eigenvalues are those of the independent blocks (``groups``:
    # labels of a layout), each by a closed form up to 2×2 (accurate to rounding; a
    # margin of half the tolerance) or by its eigenvalues alone.
    if singles.size:  # 1×1 blocks: their eigenvalue is the diagonal entry
        diag = R[:, singles, singles]
        lo, hi = diag.min(axis=1), np.abs(diag).max(axis=1)
    else:
        lo, hi = np.full(len(R), np.inf), np.zeros(len(R))
    for ix in blocks:
        b_lo, b_hi = eigenvalue_range(R[:, ix[:, None], ix[None, :]])
        lo = np.minimum(lo, b_lo)
        hi = np.maximum(hi, np.maximum(np.abs(b_lo), np.abs(b_hi)))
    maybe = np.flatnonzero(lo < -0.5 * PSD_TOL * np.maximum(1.0, hi))
    if not maybe.size:
        return cov
    w, V = np.linalg.eigh(R[maybe])
    scale = np.maximum(1.0, np.abs(w).max(axis=-1, keepdims=True))
    fix = (w < 0) & (w >= -COMPUTED_PSD_TOL * scale)
    rows = fix.any(axis=-1) & (w.min(axis=-1) < -PSD_TOL * scale[:, 0])
    if not rows.any():
        return cov
    w = np.where(fix, 0.0, w)
    out = cov.copy()
    at = maybe[rows]
    out[at] = np.einsum("bij,bj,bkj->bik", V[rows], w[rows], V[rows]) * ss[at]
    return out


@functools.lru_cache(maxsize=4096)
def _has_jumps(expr: sympy.Expr) -> bool:
    """Whether an integrand may be discontinuous: a step, sign or piecewise definition
    anywhere in it (nonlinearities' bodies included)."""
    return inline(expr).has(sympy.Heaviside, sympy.sign, sympy.Piecewise)


@functools.lru_cache(maxsize=4096)
def panel_features(expr: sympy.Expr, d: int, m: int) -> Any:
    """The features of an integrand over ``g0 … g(d-1)``: affine functions ``c + wᵀg``
    whose level set 0 is a kink (relu, step, abs, sign, sqrt, a ``Piecewise``
    condition, ``Max``/``Min``) or the centre of a transition (every other function of
    an affine argument: tanh, erf, sigmoid, …), found inside the bodies of
    nonlinearities too (``relu(g₀ + 0.2)`` has the feature ``g₀ + 0.2``;
    ``gelu(a)`` the feature ``a/√2`` of its erf).

    Returns ``qv (B, m) -> (B, F, d + 1)``, rows ``[c, w₀, …]`` for
    :func:`~tensorprog.gaussian.panel_expectation`, with the attribute ``kinks``
    (per feature: a kink or jump rather than a smooth transition).
    """
    gs, qs = [g(k) for k in range(d)], [q(j) for j in range(m)]
    gset = set(gs)
    found: dict[sympy.Expr, bool] = {}

    def add(arg: sympy.Expr, kink: bool = True) -> None:
        parts = affine_parts(arg, gs)
        if parts is not None and parts[0]:
            key = sympy.expand(arg)
            found[key] = found.get(key, False) or kink

    def walk(e: sympy.Expr) -> None:
        if not (e.free_symbols & gset):
            return
        nl = getattr(e.func, "nonlinearity", None)
        if nl is not None:  # its body, on these arguments
            walk(nl.inline(*e.args))
            return
        for arg, kink in local_features(e):
            add(arg, kink)
        for a in e.args:
            walk(a)

    walk(expr)
    rows = []
    for arg in found:
        lin, const = affine_parts(arg, gs)
        rows.append((_lam_q(const, qs), coefficient_fn(arg - const, gs, qs)))

    def features(qv: np.ndarray) -> np.ndarray:
        out = np.zeros((qv.shape[0], len(rows), d + 1))
        for f, (c, w) in enumerate(rows):
            out[:, f, 0] = c(qv)
            out[:, f, 1:] = w(qv)
        return out

    features.kinks = tuple(found.values())  # type: ignore[attr-defined]
    return features


@functools.lru_cache(maxsize=4096)
def factorised_plan(
    expr: sympy.Expr, d: int, m: int, centred: bool, groups: tuple[int, ...]
) -> tuple | None:
    """Terms of ``expr`` as products of independent blocks ``(block, dims, exact or None)``.

    Blocks without an exact form are renumbered onto their own base Gaussians ``dims``
    for a quadrature of that (lower) dimension. None when nothing factorises or a
    non-exact block has more than :data:`MAX_QUADRATURE_DIM` Gaussians.
    """
    if len(set(groups)) < 2 or shape(expr).needs_dims() > MAX_QUADRATURE_DIM:
        return None  # (a function of a non-affine argument of too many Gaussians)
    plan, split = [], False
    terms = expand_terms(expr)
    if terms is None:
        return None
    for term in terms:
        parts = independent_blocks(term, d, groups)
        split = split or len(parts) > 2
        row = []
        for block in parts:
            dims = sorted(s.index for s in block.free_symbols if isinstance(s, GaussSym))
            ev = exact_evaluator(block, d, m, centred, None)
            if ev is None:
                block = block.xreplace({g(k): g(i) for i, k in enumerate(dims)})
                if quadrature_dim(block, len(dims), m) > MAX_QUADRATURE_DIM:
                    return None
            row.append((block, dims, ev))
        plan.append(tuple(row))
    return tuple(plan) if split else None


on_register(factorised_plan.cache_clear)  # a later closed form makes blocks exact
