r"""Compile once, evaluate many: a program's limit as a function of its numbers.

The Master Theorem [TP4 §7 Thm 7.4] turns a program into expectation requests
(:mod:`.plan`) whose integrands, layouts of base Gaussians and evaluation methods
depend on the program's *structure* only; the numbers fed to it — the initial
vectors' means and covariances, the initial scalars — only enter as the laws
``(μ, Σ, q)`` of those expectations. :func:`compile_limit` derives and plans a program
once and records, level by level, which requests are evaluated together and where
their laws are gathered from (numpy index arrays); :meth:`CompiledLimit.evaluate`
then computes the limit for ``P`` new sets of numbers at once: every group of
requests becomes one vectorised call over ``P × (its size)`` laws, so the cost of a
new set is numpy work, not Python work.

Groups whose exact evaluator reads its law only through fixed covariance entries
(:class:`~.exact.EntryEvaluator`: centred closed forms such as the arc-cosine and
Williams kernels — Cho & Saul, NeurIPS 2009; Williams, NeurIPS 1997 — and Gaussian
moments, with numeric coefficients), and whose existence holds under every law
(:func:`~.existence.law_free`), are *fused*: the few entries they need are gathered
straight from the sets' numbers — initial
covariances, and ``σ_W²`` times computed hat covariances [TP4 ZHat] — screened for
positive semidefiniteness and evaluated, without building each request's ``(d, d)``
covariance; anything unusual (a non-finite entry, a covariance not plainly PSD, an
evaluator that raises) sends the group to the general path, which reports it by name.
Both paths give the same bits.

What a compiled limit evaluates is the limit :func:`tensorprog.limit` computes (the
same evaluators on the same laws: equal to rounding). Its deterministic methods are
fixed when compiling (exact forms, quadrature); a set of numbers for which one of its
expectations is not certified (quadrature that does not reach its tolerance, an
existence that cannot be proven) is refused by name, since only
:func:`tensorprog.limit` may fall back to Monte Carlo.
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import (
    DivergenceError,
    MethodUnavailableError,
    NonPSDError,
    NumericalError,
    ProgramTypeError,
    ProgramValueError,
    TensorProgramError,
)
from ..core.interpreter import annotate
from ..core.ir import InitScalar, Moment, Nonlin
from ..gaussian import PSD_TOL
from . import evaluate
from .derivation import Derivation
from .evaluate import (
    Deterministic,
    _propagated_error,
    effective_ranks,
    eigenvalue_range,
    gather_laws,
    pair_blocks,
    plainly_psd,
    stein_coefficients,
)
from .exact import EntryEvaluator
from .existence import EXISTS, Verdict, decide, law_free, structure
from .methods import AUTO, DIRECT, EXACT, MONTECARLO, RANK, RESULT_METHODS, Method
from .plan import (
    DotRequest,
    ExpectationRequest,
    InitScalarRequest,
    Plan,
    Request,
    ScalarFnRequest,
    SteinRequest,
    describe,
)

__all__ = ["compile_limit", "CompiledLimit", "LimitBatch", "COMPILABLE"]

#: The ``method`` names :func:`compile_limit` accepts (Monte Carlo is not compiled).
COMPILABLE = (Method.AUTO.value, Method.EXACT.value, Method.QUADRATURE.value)


# -- the schedule: one record per vectorised call -----------------------------------------
@dataclass(frozen=True, eq=False)
class _Group:
    """Requests of one level, integrand and layout: one call of the evaluator.

    ``key`` is :meth:`~.evaluate.Deterministic.expectations`'s; ``bids`` ``(k, d)``,
    ``slots`` ``(k, pairs)`` and ``qdeps`` ``(k, m)`` index the laws and constants;
    ``scale`` ``(k,)``: 1, or ``σ_W²`` for a ZDot coefficient (stored in full). Sets
    that agree on the numbers of ``foot`` share these requests' values: they are
    evaluated once per distinct such numbers."""

    key: tuple[Any, ...]
    reqs: tuple[ExpectationRequest, ...]
    rids: np.ndarray
    bids: np.ndarray
    slots: np.ndarray
    qdeps: np.ndarray
    scale: np.ndarray | None
    #: the initial vectors (indices ≥ 0) and initial scalars (``-1 - column``) the
    #: requests' values depend on; None when that is all of them
    foot: frozenset[int] | None
    #: the fused evaluation, when the integrand's exact evaluator reads covariance
    #: entries only (:func:`_fuse`)
    fused: _Fused | None = None


@dataclass(frozen=True, eq=False)
class _Fused:
    r"""A group whose exact evaluator is an :class:`~.exact.EntryEvaluator` (centred
    closed forms and Gaussian moments with numeric coefficients) and whose existence
    does not depend on the law: its ``n`` needed covariance entries per request are
    gathered straight from the sets' numbers — initial covariances ``C`` (flat indices
    ``init`` ``(k, ·)`` at positions ``init_at``), computed hat covariances ``σ_W²·V``
    (requests ``slots``, factors ``s2``, at ``hat_at``), zeros (``zero_at``) — and the
    evaluator's ``fn`` runs on them, without building the ``(d, d)`` covariances. The
    entries include every variance (``var_at``) and the off-diagonal entry of every
    2×2 independent block (``cross_at``, coordinates ``pairs``) for the PSD screen
    (:func:`~.evaluate.plainly_psd`)."""

    fn: Any
    n: int
    init: np.ndarray
    init_at: np.ndarray
    slots: np.ndarray
    s2: np.ndarray
    hat_at: np.ndarray
    zero_at: np.ndarray
    var_at: np.ndarray
    cross_at: np.ndarray
    pairs: np.ndarray
    cells: np.ndarray
    #: the screen's units — each 1×1 block, then each 2×2 block — as the sources of
    #: their numbers (:func:`_screened`: a unit screened earlier in a run is not again)
    units: tuple[bytes, ...] = ()
    #: (var_at, cross_at, pairs) of the screen of some units, by their indices (cache)
    subsets: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class _Fns:
    """ScalarFns of one function and level: ``fn`` of their parameters (``deps``);
    ``exact``: every parameter is computed exactly (its error is 0: none to propagate)."""

    fn: Any
    reqs: tuple[ScalarFnRequest, ...]
    rids: np.ndarray
    deps: np.ndarray
    exact: bool


@dataclass(frozen=True, eq=False)
class _Stein:
    """One ZDot coefficient by Stein's lemma (:func:`~.evaluate.stein_coefficients`)."""

    req: SteinRequest
    b_rids: np.ndarray
    cov_rids: np.ndarray


@dataclass(frozen=True, eq=False)
class _Merged:
    """Fused groups of one level with the same integrand, layout and gathered entries
    but different footprints (the per-input requests ⟨x_i, x_i⟩ and ⟨x_j, x_j⟩ of a
    kernel entry): one call of the evaluator on all of their entries, each group's
    gathered for its own distinct sets (:meth:`CompiledLimit._merged`)."""

    parts: tuple[_Group, ...]


class LimitBatch:
    """The limits of a program's scalars for ``P`` sets of numbers
    (:meth:`CompiledLimit.evaluate`).

    Index by scalar handle or name: ``batch[k]`` is the array ``(P,)`` of the limits of
    ``k`` (a float when the numbers were given without a batch axis).

    Attributes
    ----------
    values, errors : dict of str to numpy.ndarray
        Every scalar's limits and estimated absolute errors (0 for exact values; for
        quadrature the difference of two rules), shape ``(P,)``, in program order.
    methods : dict of str to str
        ``"exact"`` or ``"quadrature"``: the least precise method along each scalar's
        dependencies (the same for every set: methods are chosen when compiling).
    size : int
        ``P``, the number of sets.
    uncertified : dict of int to str
        With ``evaluate(..., uncertified="nan")``: the sets whose values are NaN
        because some expectation was not certified, and why (empty otherwise).
    """

    def __init__(
        self,
        compiled: CompiledLimit,
        values: dict[str, np.ndarray],
        errors: dict[str, np.ndarray],
        batched: bool,
        uncertified: dict[int, str],
    ) -> None:
        self.compiled = compiled
        self.uncertified = dict(sorted(uncertified.items()))
        self.values = values
        self.errors = errors
        self.methods = dict(compiled.methods)
        self.size = next(iter(values.values())).shape[0] if values else 0
        self._batched = batched

    def _name(self, key: Any) -> str:
        v = self.compiled.program.var(key, "LimitBatch")
        if v.name not in self.values:
            raise ProgramTypeError(f"{v.name} is a {v.kind}, not a scalar")
        return v.name

    def __getitem__(self, key: Any) -> Any:
        a = self.values[self._name(key)]
        return a if self._batched else float(a[0])

    def error(self, key: Any) -> Any:
        """Estimated absolute error(s) of ``batch[key]``."""
        a = self.errors[self._name(key)]
        return a if self._batched else float(a[0])

    def method(self, key: Any) -> str:
        """``"exact"`` or ``"quadrature"``."""
        return self.methods[self._name(key)]

    def __repr__(self) -> str:
        return f"<LimitBatch of {self.compiled.program.name!r}: {self.size} set(s), {len(self.values)} scalars>"


class CompiledLimit:
    """A program's limit, derived and planned once, evaluated for new numbers.

    Made by :func:`compile_limit`; see there. Attributes: ``program``, ``method``,
    ``methods`` (scalar name → ``"exact"`` / ``"quadrature"``), ``initial_vectors`` and
    ``initial_scalars`` (the names :meth:`evaluate` takes numbers for).
    """

    def __init__(self, program: Any, method: Method, degree: int | None) -> None:
        program.check()
        self.program = program
        self.method = method.value
        der = self.derivation = Derivation(program)
        plan = self.plan = Plan(der, symbolic=True)
        det = self._det = Deterministic(plan, method, degree)
        for instr in program.instructions:
            if isinstance(instr, (Nonlin, Moment)) and instr.params and instr.fn.divisors:
                raise annotate(
                    MethodUnavailableError(
                        f"compile_limit: {instr.fn.name} divides by a function of limit scalars, "
                        f"whose vanishing is decided per set of numbers; use tensorprog.limit"
                    ),
                    instr,
                    "compile_limit",
                )
        levels: dict[int, list[Request]] = defaultdict(list)
        for req in plan.requests:
            m = plan.methods[req.rid] = det._choose(req)
            if m is MONTECARLO:
                exc = MethodUnavailableError(
                    f"compile_limit: the {describe(req)} has no deterministic method (exact "
                    f"form or quadrature of ≤ 4 Gaussians); a compiled limit does not run "
                    f"Monte Carlo: use tensorprog.limit"
                )
                instr = det._instruction(req)
                raise annotate(exc, instr, "compile_limit") if instr is not None else exc
            levels[req.level].append(req)
        init_col = {
            r.rid: j
            for j, r in enumerate(q for q in plan.requests if isinstance(q, InitScalarRequest))
        }
        feet = _footprints(plan, der.base_init_index, init_col)
        everything = frozenset().union(*feet) if feet else frozenset()
        self._steps: list[Any] = []
        ranks = effective_ranks(plan)
        for level in sorted(levels):
            groups: dict[Any, list[ExpectationRequest]] = defaultdict(list)
            fns: dict[Any, list[ScalarFnRequest]] = defaultdict(list)
            for req in levels[level]:
                if isinstance(req, InitScalarRequest):
                    continue
                if isinstance(req, ScalarFnRequest):
                    fns[req.fn].append(req)
                elif isinstance(req, SteinRequest):
                    self._steps.append(
                        _Stein(req, _ix(req.b_rids), np.array(req.cov_rids, dtype=np.intp))
                    )
                else:
                    assert plan.methods[req.rid] is not DIRECT
                    foot = feet[req.rid] if feet[req.rid] != everything else None
                    groups[(plan.methods[req.rid], req.sig, foot)].append(req)
            for reqs in fns.values():
                k = len(reqs)
                deps = np.array([r.deps for r in reqs], dtype=np.intp).reshape(k, -1)
                exact = all(ranks[d] == RANK[EXACT] for d in deps.ravel().tolist())
                self._steps.append(
                    _Fns(reqs[0].fn, tuple(reqs), _ix(r.rid for r in reqs), deps, exact)
                )
            self._steps += _merge(
                [_group(meth, reqs, foot, der) for (meth, _, foot), reqs in groups.items()]
            )
        self._scalars: list[tuple[str, int]] = []
        self.methods: dict[str, str] = {}
        init_rids: dict[str, int] = {}
        for instr in program.instructions:
            v = instr.out
            if v.kind != "scalar":
                continue
            rid = plan.const_req[der.scalar_const[v].cid]
            self._scalars.append((v.name, rid))
            exact = isinstance(instr, InitScalar)
            self.methods[v.name] = Method.EXACT.value if exact else RESULT_METHODS[ranks[rid]].value
            if exact:
                init_rids[v.name] = rid
        self._init_rids = init_rids
        self.initial_vectors = tuple(v.name for v in program.initial_vectors)
        self.initial_scalars = tuple(init_rids)
        #: what the structure was derived for: independent pairs and centred vectors
        self._cov0 = np.asarray(der.init_cov, dtype=float)
        self._mean0 = np.asarray(der.init_mean, dtype=float)
        self._values0 = plan.values.copy()
        self._components = _components(self._cov0 != 0.0)
        self._names = [n for n, _ in self._scalars]
        self._rids = _ix(r for _, r in self._scalars)
        self._scalar_rid = dict(self._scalars)
        self._feet = feet
        self._init_rid_set = frozenset(init_col)
        self._skip: dict[bytes, list[Any]] = {}

    @property
    def requests(self) -> int:
        """Number of expectation requests and scalars evaluated per set of numbers."""
        return len(self.plan.requests)

    def __repr__(self) -> str:
        return (
            f"<CompiledLimit of {self.program.name!r}: {self.requests} requests in "
            f"{len(self._steps)} vectorised steps, method={self.method!r}>"
        )

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(
        self, cov: Any = None, mean: Any = None, scalars: Any = None, *, uncertified: str = "raise"
    ) -> LimitBatch:
        r"""The limit for new numbers, ``P`` sets at once.

        Parameters
        ----------
        cov : array_like, shape (N, N) or (P, N, N), optional
            Covariance of the initial vectors' coordinates, rows and columns in the
            order of :attr:`initial_vectors` (the program's
            ``initial_covariance`` by default). Symmetric positive semidefinite, zero
            wherever the program's is zero (independence is part of the structure).
        mean : array_like, shape (N,) or (P, N), optional
            Means of the initial vectors (the program's by default); zero wherever the
            program's is zero.
        scalars : dict, optional
            New limits of initial scalars, by handle or name: a float or an array
            ``(P,)`` each (the others keep the program's).

        uncertified : {"raise", "nan"}, default "raise"
            What to do with a set for which some expectation is not certified by the
            compiled methods (quadrature off its tolerance, an existence not proven):
            raise, or give it NaN values and name it in :attr:`LimitBatch.uncertified`
            (for a caller that evaluates those sets with :func:`tensorprog.limit`).

        Returns
        -------
        LimitBatch
            With a batch axis ``P`` if some argument has one, else floats.

        Raises
        ------
        tensorprog.ProgramTypeError, tensorprog.ProgramValueError
            Malformed numbers (the message names the argument and what is valid).
        tensorprog.MethodUnavailableError
            A set for which some expectation is not certified by the compiled methods
            (quadrature off its tolerance, an existence not proven): evaluate it with
            :func:`tensorprog.limit`. The message names the set and the request.
        tensorprog.NumericalError, tensorprog.DivergenceError
            As :func:`tensorprog.limit` (with the set's index).
        """
        if uncertified not in ("raise", "nan"):
            raise ProgramValueError(
                f"CompiledLimit.evaluate: uncertified must be 'raise' or 'nan', got {uncertified!r}"
            )
        C, M, Q, batched = self._numbers(cov, mean, scalars)
        return self._batch(C, M, Q, batched, uncertified)

    def _run_built(
        self,
        cov: np.ndarray,
        given: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] | None = None,
        share: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Every request's values and errors ``(P, requests)`` (column-major) on covariances
        ``(P, N, N)`` that a caller of the library built itself from numbers it validated
        (:mod:`tensorprog.nn.stax`: the input kernels of its entries) — finite floats,
        symmetric, zero where the compiled program's are, positive semidefinite to
        rounding — which are not checked a second time (every closed form and
        quadrature rule still checks its own law); the program's means and initial
        scalars. Also the sets whose values are not certified (index → why).

        ``given``: pieces ``(rids, values, errors, at)``: those requests' values and
        errors are ``values[:, at]`` and ``errors[:, at]`` (``errors`` None: 0), known
        to the caller — computed by an earlier call on sets with the same numbers in the
        requests' footprints (:meth:`_within`): the steps that compute only given
        requests are skipped. ``share``: :meth:`_run`'s (sets with equal numbers share
        values)."""
        C, M, Q = self._built(cov)
        return self._run(C, M, Q, given, share)

    def _built(self, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        P = cov.shape[0]
        M = np.broadcast_to(self._mean0, (P, self._mean0.shape[0]))
        S = [self._values0[rid] for rid in self._init_rids.values()]
        Q = np.broadcast_to(np.array(S, dtype=float), (P, len(S)))
        return cov, M, Q

    def _within(self, vectors: Any, inputs: Any) -> np.ndarray:
        """The requests (ids) whose value depends on some of the initial vectors
        ``vectors`` and on no other of ``inputs`` (indices into
        :attr:`initial_vectors`): sets that agree on the numbers of ``vectors`` and of
        the vectors outside ``inputs`` agree on them."""
        own, others = frozenset(vectors), frozenset(inputs) - frozenset(vectors)
        return _ix(
            rid
            for rid, foot in enumerate(self._feet)
            if rid not in self._init_rid_set and foot & own and not foot & others
        )

    def _rid(self, key: Any) -> int:
        """The request id of a scalar (handle or name)."""
        return self._scalar_rid[self.program.var(key, "CompiledLimit").name]

    def _batch(
        self, C: np.ndarray, M: np.ndarray, Q: np.ndarray, batched: bool, uncertified: str
    ) -> LimitBatch:
        """The :class:`LimitBatch` of validated numbers (:meth:`evaluate`)."""
        values, errors, bad = self._run(C, M, Q)
        if bad and uncertified == "nan":
            rows = _ix(bad)
            values[rows], errors[rows] = np.nan, np.nan
        elif bad:
            p, why = min(bad.items())
            raise MethodUnavailableError(
                f"CompiledLimit.evaluate: set {p} of {C.shape[0]} ({len(bad)} set(s) in all): "
                f"{why}; evaluate it with tensorprog.limit, which can fall back to Monte Carlo"
            )
        # one gather per table; each scalar's row of it (a view of its own memory)
        vals = dict(zip(self._names, np.ascontiguousarray(values[:, self._rids].T)))
        errs = dict(zip(self._names, np.ascontiguousarray(errors[:, self._rids].T)))
        return LimitBatch(self, vals, errs, batched, bad)

    def _numbers(
        self, cov: Any, mean: Any, scalars: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Validated ``(cov (P, N, N), mean (P, N), init scalar values (P, S), batched)``."""
        N = self._cov0.shape[0]
        where = "CompiledLimit.evaluate"
        sizes: list[tuple[str, int]] = []
        C = self._cov0[None] if cov is None else _real_array(cov, "cov", where, (2, 3))
        if C.shape[-2:] != (N, N):
            raise ProgramValueError(
                f"{where}: cov must have shape ({N}, {N}) or (P, {N}, {N}) (initial vectors "
                f"{', '.join(self.initial_vectors) or 'none'}), got {C.shape}"
            )
        if cov is not None and C.ndim == 3:
            sizes.append(("cov", C.shape[0]))
        C = C if C.ndim == 3 else C[None]
        M = self._mean0[None] if mean is None else _real_array(mean, "mean", where, (1, 2))
        if M.shape[-1] != N:
            raise ProgramValueError(
                f"{where}: mean must have shape ({N},) or (P, {N}), got {M.shape}"
            )
        if mean is not None and M.ndim == 2:
            sizes.append(("mean", M.shape[0]))
        M = M if M.ndim == 2 else M[None]
        given: dict[str, np.ndarray] = {}
        if scalars is not None:
            if not isinstance(scalars, dict):
                raise ProgramTypeError(
                    f"{where}: scalars must be a dict of initial scalars (handles or names) "
                    f"to numbers, got {type(scalars).__name__}"
                )
            for key, val in scalars.items():
                v = self.program.var(key, where)
                if v.name not in self._init_rids:
                    raise ProgramValueError(
                        f"{where}: scalars: {v.name} is not an initial scalar; valid: "
                        f"{', '.join(self.initial_scalars) or 'none (the program has none)'}"
                    )
                a = _real_array(val, f"scalars[{v.name!r}]", where, (0, 1))
                if a.ndim == 1:
                    sizes.append((f"scalars[{v.name!r}]", a.shape[0]))
                given[v.name] = a
        P = {s for _, s in sizes}
        if len(P) > 1:
            raise ProgramValueError(
                f"{where}: the batch axes differ: "
                + ", ".join(f"{a} has {s} set(s)" for a, s in sizes)
            )
        n = P.pop() if P else 1
        if n < 1:
            raise ProgramValueError(f"{where}: an empty batch (0 sets of numbers)")
        C = np.broadcast_to(C, (n, N, N))
        M = np.broadcast_to(M, (n, N))
        self._check_law(C, M, where)
        S = len(self._init_rids)
        Q = np.empty((n, S))
        for j, (name, rid) in enumerate(self._init_rids.items()):
            Q[:, j] = given[name] if name in given else self._values0[rid]
        return C, M, Q, bool(sizes)

    def _check_law(self, C: np.ndarray, M: np.ndarray, where: str) -> None:
        """Symmetric, PSD, and zero where the compiled structure assumes independence
        or a centred vector."""
        names = self.initial_vectors
        zero = self._cov0 == 0.0
        off = np.any(C[:, zero] != 0.0, axis=0) if zero.any() else np.zeros(0, dtype=bool)
        if off.any():
            i, j = np.argwhere(zero)[np.flatnonzero(off)[0]]
            raise ProgramValueError(
                f"{where}: cov[{names[i]}, {names[j]}] must be 0: the program was compiled "
                f"with {names[i]} and {names[j]} independent (a structural fact of its "
                f"limit); compile a program in which they are correlated"
            )
        if not np.array_equal(C, np.swapaxes(C, -1, -2)):
            raise ProgramValueError(f"{where}: cov must be symmetric")
        for comp in self._components:  # independent blocks: PSD one by one
            sub = C[:, comp[:, None], comp[None, :]]
            scale = np.maximum(np.abs(sub).max(axis=(1, 2)), 1e-300)
            w = eigenvalue_range(sub)[0]
            bad = np.flatnonzero(w < -PSD_TOL * scale)
            if bad.size:
                raise NonPSDError(
                    f"{where}: cov of set {bad[0]} is not positive semidefinite (smallest "
                    f"eigenvalue {w[bad[0]]:.3g} of the block of "
                    f"{', '.join(names[i] for i in comp)})"
                )
        centred = self._mean0 == 0.0
        moved = np.any(M[:, centred] != 0.0, axis=0)
        if moved.any():
            i = np.flatnonzero(centred)[np.flatnonzero(moved)[0]]
            raise ProgramValueError(
                f"{where}: mean[{names[i]}] must be 0: the program was compiled with "
                f"{names[i]} centred (a structural fact of its limit); compile a program "
                f"in which its mean is not 0"
            )

    def _run(
        self,
        C: np.ndarray,
        M: np.ndarray,
        Q: np.ndarray,
        given: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] | None = None,
        share: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """Every request's values and errors ``(P, requests)`` for validated numbers, and
        the sets (index → why) whose values are not certified by the compiled methods
        (their values are then meaningless); ``given``: :meth:`_run_built`'s. With
        ``share``, sets that agree on a group's numbers share its values
        (:func:`_distinct`); without, every set is evaluated (a caller whose sets are
        distinct: looking for equal ones would cost more than it saves)."""
        P, N = C.shape[0], C.shape[1]
        # cells-major covariances (N·N, P), the fused groups' source of initial entries:
        # a view when C is one ((P, N, N) view of an (N, N, P) array, as nn.stax builds)
        Cc = C.transpose(1, 2, 0).reshape(N * N, P)
        # column-major: the steps read and write whole columns (requests)
        V = np.empty((len(self._values0), P)).T
        V.T[:] = self._values0[:, None]
        E = np.zeros(V.shape, order="F")  # calloc: untouched while every value is exact
        if self._init_rids:
            V[:, _ix(self._init_rids.values())] = Q
        steps = self._steps
        if given:
            for rids, values, errors, at in given:  # each set's column of values: at
                for q, rid in enumerate(rids.tolist()):
                    np.take(values[q], at, out=V.T[rid])
                    if errors is not None:
                        np.take(errors[q], at, out=E.T[rid])
            steps = self._without(np.concatenate([rids for rids, *_ in given]))
        bad: dict[int, str] = {}
        shared: dict[frozenset[int], Any] = {}
        done: set[bytes] = set()  # the screen units found plainly PSD (every set)
        memo: dict[Any, Any] = {}
        for step in steps:
            if isinstance(step, _Group):
                if share and step.foot is not None and step.foot not in shared:
                    shared[step.foot] = _distinct(step.foot, C, M, Q, memo)
                self._group(step, V, E, C, Cc, M, bad, shared.get(step.foot), done)
            elif isinstance(step, _Merged):
                for g in step.parts:
                    if share and g.foot is not None and g.foot not in shared:
                        shared[g.foot] = _distinct(g.foot, C, M, Q, memo)
                self._merged(step, V, E, C, Cc, M, bad, shared)
            elif isinstance(step, _Fns):
                self._fns(step, V, E, bad)
            else:
                req = step.req
                with np.errstate(all="ignore"):
                    V[:, req.rid], E[:, req.rid] = stein_coefficients(
                        req,
                        V[:, step.b_rids],
                        V[:, step.cov_rids],
                        E[:, step.b_rids],
                        E[:, step.cov_rids],
                    )
        return V, E, bad

    def _without(self, rids: np.ndarray) -> list[Any]:
        """The steps that compute some request not in ``rids`` (merged groups without
        their parts that compute only those), cached per ``rids``."""
        key = rids.tobytes()
        if key not in self._skip:
            known = np.zeros(len(self.plan.requests), dtype=bool)
            known[rids] = True
            steps: list[Any] = []
            for step in self._steps:
                if isinstance(step, _Merged):
                    parts = tuple(g for g in step.parts if not known[g.rids].all())
                    if len(parts) > 1:
                        steps.append(_Merged(parts) if len(parts) < len(step.parts) else step)
                    elif parts:
                        steps.append(parts[0])
                elif not known[step.rids if not isinstance(step, _Stein) else step.req.rid].all():
                    steps.append(step)
            self._skip[key] = steps
        return self._skip[key]

    def _group(
        self,
        step: _Group,
        V: np.ndarray,
        E: np.ndarray,
        C: np.ndarray,
        Cc: np.ndarray,
        M: np.ndarray,
        bad: dict[int, str],
        shared: tuple[np.ndarray, np.ndarray] | None,
        done: set[bytes] | None = None,
    ) -> None:
        """Evaluate one group for every set — or, with ``shared = (rows, inverse)``,
        for the sets ``rows`` only, whose values the other sets share (``inverse``:
        each set's position in ``rows``). ``done``: :func:`_screened`'s."""
        rows, inverse = shared if shared is not None else (None, None)
        if step.fused is not None:
            fast = _fused(step.fused, V, Cc, rows, done if rows is None else None)
            if fast is not None:  # else: the general path below (which reports why)
                vals = fast.reshape(len(step.reqs), -1).T
                if step.scale is not None:
                    vals = vals * step.scale
                V[:, step.rids] = vals if inverse is None else vals[inverse]
                return  # exact: E stays 0
        method, expr, d, m, _, groups = step.key
        r0 = step.reqs[0]
        Vs, Cs, Ms = (V, C, M) if rows is None else (V[rows], C[rows], M[rows])
        P, k = Vs.shape[0], len(step.reqs)

        def real(p: int) -> int:  # the set index of position p
            return p if rows is None else int(rows[p])

        def mark(p: int, why: str) -> None:
            for s in [p] if inverse is None else np.flatnonzero(inverse == p):
                bad.setdefault(int(s), why)

        mean, cov = gather_laws(
            self.derivation, Vs, Ms, Cs, step.bids, step.slots, r0.layout.pairs, groups
        )
        qv = Vs[:, step.qdeps].reshape(P * k, m)
        st = structure(expr, d, m)
        finds = []
        if not st.trivial:
            ok = (
                np.isfinite(cov).all(axis=(1, 2))
                & np.isfinite(mean).all(axis=1)
                & np.isfinite(qv).all(axis=1)
            )
            finds = decide(expr, d, m, mean[ok], cov[ok], qv[ok])
        if finds.count(EXISTS) < len(finds):
            for pos, fnd in zip(np.flatnonzero(ok), finds):
                p = int(pos) // k
                if fnd.verdict is Verdict.DIVERGES and real(p) not in bad:
                    raise self._error(
                        DivergenceError,
                        step.reqs[pos % k],
                        real(p),
                        f"does not exist: {fnd.reason}",
                    )
                if fnd.verdict is Verdict.UNPROVEN:
                    mark(
                        p,
                        f"the existence of the {describe(step.reqs[pos % k])} is not proven ({fnd.reason})",
                    )
        try:
            with np.errstate(all="ignore"):
                vals, errs, growth = self._det.expectations(step.key, mean, cov, qv)
        except TensorProgramError as exc:
            instr = self._det._instruction(r0)
            raise (annotate(exc, instr, "CompiledLimit") if instr is not None else exc) from exc
        vals, errs = np.asarray(vals, dtype=float), np.asarray(errs, dtype=float)
        for pos in () if np.isfinite(vals).all() else np.flatnonzero(~np.isfinite(vals)):
            p = real(int(pos) // k)
            if p not in bad:
                raise self._error(
                    NumericalError,
                    step.reqs[pos % k],
                    p,
                    f"is not finite ({vals[pos]}); the expectation diverges or overflows",
                )
        if growth is not None:
            for pos in np.flatnonzero(growth):
                if real(int(pos) // k) not in bad:
                    raise self._error(
                        DivergenceError,
                        step.reqs[pos % k],
                        real(int(pos) // k),
                        "does not converge: Gauss–Hermite estimates grow steadily with the degree",
                    )
        if method is not EXACT:
            if structure(expr, d, m).singular:
                loose = np.ones(P * k, dtype=bool)
            elif self._det.method is AUTO:
                loose = ~(errs <= evaluate.QUADRATURE_RTOL * np.maximum(1.0, np.abs(vals)))
            else:
                loose = ~np.isfinite(errs)
            for pos in np.flatnonzero(loose):
                mark(
                    int(pos) // k,
                    f"the {describe(step.reqs[pos % k])} is not certified by quadrature "
                    f"(error estimate {errs[pos]:.3g} for {vals[pos]:.6g})",
                )
        vals, errs = vals.reshape(P, k), errs.reshape(P, k)
        if step.scale is not None:
            vals, errs = vals * step.scale, errs * step.scale
        if inverse is not None:
            vals, errs = vals[inverse], errs[inverse]
        V[:, step.rids], E[:, step.rids] = vals, errs

    def _merged(
        self,
        step: _Merged,
        V: np.ndarray,
        E: np.ndarray,
        C: np.ndarray,
        Cc: np.ndarray,
        M: np.ndarray,
        bad: dict[int, str],
        shared: dict[Any, Any],
    ) -> None:
        """Evaluate merged fused groups in one call: each group's entries gathered for
        its sets (its distinct sets when ``shared`` has them), screened and evaluated
        together — the same elementwise operations on the same entries, hence the same
        bits as group by group, which is what happens when some entry is unusual."""
        parts = []
        for g in step.parts:
            rows, inverse = shared.get(g.foot) or (None, None)
            P = V.shape[0] if rows is None else len(rows)
            parts.append((g, P, inverse, _entries(g.fused, V, Cc, rows)))
        if all(ent is not None for *_, ent in parts):
            vals = _screened(step.parts[0].fused, np.concatenate([e for *_, e in parts], axis=1))
            if vals is not None:
                at = 0
                for g, P, inverse, _ in parts:
                    k = len(g.reqs)
                    v = vals[at : at + P * k].reshape(k, P).T
                    at += P * k
                    if g.scale is not None:
                        v = v * g.scale
                    V[:, g.rids] = v if inverse is None else v[inverse]
                return  # exact: E stays 0
        for g in step.parts:  # group by group: the general path names what is wrong
            self._group(g, V, E, C, Cc, M, bad, shared.get(g.foot))

    def _fns(self, step: _Fns, V: np.ndarray, E: np.ndarray, bad: dict[int, str]) -> None:
        P, k = V.shape[0], len(step.reqs)
        # one contiguous row per parameter (the function's arguments), request-major
        # columns, gathered from the rows of Vᵀ
        m = step.deps.shape[1]
        params = V.T[step.deps.T].reshape(m, k * P).T
        with np.errstate(all="ignore"):
            vals = np.broadcast_to(np.asarray(step.fn.numpy(*params.T), dtype=float), (k * P,))
        for pos in np.flatnonzero(~np.isfinite(vals)):
            p = int(pos) % P
            if p not in bad:
                instr = self.program.definition(step.reqs[pos // P].var)
                raise annotate(
                    NumericalError(
                        f"set {p}: {step.fn.name} of the limit scalars is not finite ({vals[pos]})"
                    ),
                    instr,
                    "CompiledLimit",
                )
        V.T[step.rids] = vals.reshape(k, P)
        if not step.exact:  # else: E stays 0
            errs = _propagated_error(step.fn, params, E.T[step.deps.T].reshape(m, k * P).T)
            E.T[step.rids] = errs.reshape(k, P)

    def _error(self, cls: type, req: Request, p: int, what: str) -> TensorProgramError:
        exc = cls(f"set {p}: the {describe(req)} {what}")
        instr = self._det._instruction(req)
        return annotate(exc, instr, "CompiledLimit") if instr is not None else exc


def _fused(
    f: _Fused,
    V: np.ndarray,
    Cc: np.ndarray,
    rows: np.ndarray | None = None,
    done: set[bytes] | None = None,
) -> np.ndarray | None:
    """The values ``(k·P,)`` (request-major) of a fused group (:class:`_Fused`) for the sets' request
    values ``V`` and initial covariances ``Cc`` (:func:`_entries`; the sets ``rows`` of
    them, when given: ``P = len(rows)``); None when some gathered entry is not
    finite, the covariances are not plainly PSD, or a value is not finite or raises:
    the general path then evaluates the group (clipping rounding-level indefiniteness,
    naming what is wrong). Otherwise the values are the general path's, bit for bit
    (the same entries, the same evaluator)."""
    ent = _entries(f, V, Cc, rows)
    return None if ent is None else _screened(f, ent, done)


def _entries(
    f: _Fused, V: np.ndarray, Cc: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray | None:
    """The entries ``(n, k·P)`` a fused group needs (:class:`_Fused`; one row per entry,
    the evaluator's layout; request-major columns) for the sets' request values ``V``
    (column-major ``(P, ·)``) and initial covariances ``Cc`` (cells-major ``(N·N, P)``)
    — of the sets ``rows`` only, when given — or None when one is not finite. Every
    entry row is a gather of contiguous rows of ``Cc`` and ``Vᵀ``."""
    k = f.init.shape[0]
    P = V.shape[0] if rows is None else len(rows)
    ent = np.empty((f.n, k, P))
    with np.errstate(all="ignore"):  # an overflow is reported by the general path
        if f.init_at.size:
            cells = f.init.T
            ent[f.init_at] = Cc[cells] if rows is None else Cc[cells[:, :, None], rows]
        if f.hat_at.size:
            slots, s2 = f.slots.T, f.s2.T[:, :, None]
            hat = V.T[slots] if rows is None else V.T[slots[:, :, None], rows]
            ent[f.hat_at] = hat * s2
        if f.zero_at.size:
            ent[f.zero_at] = 0.0
    ent = ent.reshape(f.n, k * P)
    return ent if np.isfinite(ent).all() else None


def _screened(f: _Fused, ent: np.ndarray, done: set[bytes] | None = None) -> np.ndarray | None:
    """The evaluator's values on finite gathered entries ``(n, ·)`` (:func:`_entries`),
    or None when the covariances are not plainly PSD or a value is not finite or
    raises. ``done``: the units (:attr:`_Fused.units`) screened earlier on the same sets
    — the same numbers, found plainly PSD — which are not screened again (the others
    are added)."""
    with np.errstate(all="ignore"):  # an overflow is reported by the general path
        if done is None:
            if not plainly_psd(ent[f.var_at].T, ent[f.cross_at].T, f.pairs):
                return None
        else:
            new = tuple(u for u, key in enumerate(f.units) if key not in done)
            if new:
                var_at, cross_at, pairs = f.subsets.get(new) or _subset(f, new)
                if not plainly_psd(ent[var_at].T, ent[cross_at].T, pairs):
                    return None
                done.update(f.units[u] for u in new)
        try:
            vals = np.asarray(f.fn(ent), dtype=float)
        except TensorProgramError:
            return None
    return vals if np.isfinite(vals).all() else None


def _subset(f: _Fused, units: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """``(var_at, cross_at, pairs)`` of the screen of some of a fused group's units
    (indices into :attr:`_Fused.units`: 1×1 blocks, then 2×2 blocks), cached."""
    in_pair = set(f.pairs.ravel().tolist())
    singles = [i for i in range(len(f.var_at)) if i not in in_pair]
    blocks = [u - len(singles) for u in units if u >= len(singles)]
    coords = sorted(
        {singles[u] for u in units if u < len(singles)}.union(
            *(f.pairs[b].tolist() for b in blocks)
        )
    )
    at = {c: n for n, c in enumerate(coords)}
    pairs = np.array([[at[int(a)], at[int(b)]] for a, b in f.pairs[blocks]], dtype=np.intp)
    out = (f.var_at[coords], f.cross_at[blocks], pairs.reshape(len(blocks), 2))
    f.subsets[units] = out
    return out


def _merge(groups: list[_Group]) -> list[_Group | _Merged]:
    """The groups of one level, those fused ones that differ only by their footprint
    merged (:class:`_Merged`), each at the place of its first member."""
    by: dict[Any, list[_Group]] = defaultdict(list)
    for g in groups:
        if g.fused is not None:
            by[(g.key, g.fused.cells.tobytes())].append(g)
    out: list[_Group | _Merged] = []
    for g in groups:
        same = by.get((g.key, g.fused.cells.tobytes())) if g.fused is not None else None
        if not same or len(same) == 1:
            out.append(g)
        elif same[0] is g:
            out.append(_Merged(tuple(same)))
    return out


def _components(linked: np.ndarray) -> list[np.ndarray]:
    """Connected components of a symmetric boolean adjacency matrix (index arrays)."""
    n = linked.shape[0]
    label = np.arange(n)
    for i, j in np.argwhere(np.triu(linked, 1)):
        a, b = label[i], label[j]
        label[label == max(a, b)] = min(a, b)
    return [np.flatnonzero(label == c) for c in np.unique(label)]


def _distinct(
    foot: frozenset[int], C: np.ndarray, M: np.ndarray, Q: np.ndarray, memo: dict
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, inverse)``: one set per distinct numbers of ``foot`` (covariances and
    means of its initial vectors, values of its initial scalars) and each set's
    position among them; None when fewer than half the sets would be saved. Only the
    numbers that differ between sets are compared (``memo``: by the initial vectors and
    scalars of ``foot`` with such numbers, and by those numbers)."""
    P = C.shape[0]
    if "varies" not in memo:
        vc, vm, vq = (
            np.any(C != C[:1], axis=0),
            np.any(M != M[:1], axis=0),
            np.any(Q != Q[:1], axis=0),
        )
        memo["varies"] = vc, vm, vq
        live = np.flatnonzero(vc.any(axis=0) | vm).tolist()
        memo["live"] = frozenset(live) | {-1 - j for j in np.flatnonzero(vq).tolist()}
    key = foot & memo["live"]
    if key not in memo:
        vc, vm, vq = memo["varies"]
        vi = np.array(sorted(i for i in key if i >= 0), dtype=np.intp)
        si = np.array(sorted(-1 - i for i in key if i < 0), dtype=np.intp)
        cells = np.argwhere(vc[vi[:, None], vi[None, :]])
        which = (
            tuple((int(vi[a]), int(vi[b])) for a, b in cells),
            tuple(int(i) for i in vi[vm[vi]]),
            tuple(int(j) for j in si[vq[si]]),
        )
        if which not in memo:
            cols = [C[:, a, b] for a, b in which[0]] + [M[:, i] for i in which[1]]
            cols += [Q[:, j] for j in which[2]]
            memo[which] = _unique_rows(np.stack(cols, axis=1) if cols else np.zeros((P, 0)))
        memo[key] = memo[which]
    return memo[key]


#: Rows of a batch looked at before sorting all of them (:func:`_unique_rows`).
_SAMPLE = 256


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """First row of each distinct row of ``keys`` (P, c) and each row's position among
    them (exact float comparison); None when more than half the rows are distinct —
    or, for ``P > 2·_SAMPLE``, when more than half of ``_SAMPLE`` evenly spaced rows are
    (sorting all rows would save nothing; sharing values is only a saving, every set's
    value is the same either way)."""
    P = keys.shape[0]
    if keys.shape[1] == 0:
        return np.zeros(1, dtype=np.intp), np.zeros(P, dtype=np.intp)
    if P > 2 * _SAMPLE:
        few = keys[:: P // _SAMPLE]
        few = few[np.lexsort(few.T[::-1])]
        if 2 * (1 + int(np.any(few[1:] != few[:-1], axis=1).sum())) > len(few):
            return None
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    new = np.ones(P, dtype=bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    if 2 * int(new.sum()) > P:
        return None
    label = np.cumsum(new) - 1
    inverse = np.empty(P, dtype=np.intp)
    inverse[order] = label
    rows = order[new]  # lexsort is stable: the first set of each class
    return rows, inverse


def _ix(it: Any) -> np.ndarray:
    return np.fromiter(it, dtype=np.intp)


def _footprints(
    plan: Plan, init_index: np.ndarray, init_col: dict[int, int]
) -> list[frozenset[int]]:
    """Per request, the initial vectors (their indices) and initial scalars
    (``-1 - column``) its value depends on: those of its own base Gaussians and of the
    requests it is computed from."""
    feet: list[frozenset[int]] = []
    for req in plan.requests:
        own: set[int] = set()
        if isinstance(req, ExpectationRequest):
            own = {int(init_index[b]) for b in req.bids if init_index[b] >= 0}
        elif isinstance(req, InitScalarRequest):
            own = {-1 - init_col[req.rid]}
        feet.append(frozenset(own).union(*(feet[d] for d in req.deps)))
    return feet


def _group(
    method: Method, reqs: list[ExpectationRequest], foot: frozenset[int] | None, der: Derivation
) -> _Group:
    r0 = reqs[0]
    k, d, m = len(reqs), len(r0.bids), len(r0.cids)
    npairs = len(r0.layout.pairs)
    dots = [r.const.sigma2 if isinstance(r, DotRequest) else 1.0 for r in reqs]
    key = (method, r0.expr, d, m, r0.centred, r0.groups)
    bids = np.array([r.bids for r in reqs], dtype=np.intp).reshape(k, d)
    slots = np.array([r.slot_rids for r in reqs], dtype=np.intp).reshape(k, npairs)
    return _Group(
        key,
        tuple(reqs),
        _ix(r.rid for r in reqs),
        bids,
        slots,
        np.array([r.deps[:m] for r in reqs], dtype=np.intp).reshape(k, m),
        np.array(dots) if any(isinstance(r, DotRequest) for r in reqs) else None,
        foot,
        _fuse(key, bids, slots, r0.layout.pairs, der),
    )


def _fuse(
    key: tuple[Any, ...],
    bids: np.ndarray,
    slots: np.ndarray,
    pairs: tuple[tuple[int, int], ...],
    der: Derivation,
) -> _Fused | None:
    """The fused evaluation of a group (:class:`_Fused`), or None: not exact, an
    evaluator that needs more than covariance entries, an existence that depends on
    the law, or an independent block larger than 2×2. Each entry comes from where
    :func:`~.evaluate.gather_laws` puts it: the initial covariance between two initial
    base Gaussians, ``σ_W²`` times a hat pair's covariance request, else 0."""
    method, expr, d, m, centred, groups = key
    if method is not EXACT:
        return None
    ev = EntryEvaluator.of(expr, d, m, centred, groups)
    at = pair_blocks(groups, d)
    if ev is None or at is None or not law_free(expr, d, m):
        return None
    screen = [i * d + i for i in range(d)] + [int(i) * d + int(j) for i, j in at]
    # the evaluator's entries first (it reads the first rows, a view), then the screen's
    extra = np.setdiff1d(np.array(screen, dtype=np.intp), ev.cells)
    cells = np.concatenate([ev.cells, extra]).astype(np.intp)
    where = {c: n for n, c in enumerate(cells.tolist())}
    hat = {}
    for p, (i, j) in enumerate(pairs):
        hat[i * d + j] = hat[j * d + i] = p
    k = bids.shape[0]
    init_at, hat_at, zero_at = [], [], []
    init_cols, slot_cols, s2_cols = [], [], []
    N = der.init_cov.shape[0]
    for c in cells.tolist():
        a, b = divmod(c, d)
        if groups[a] < 0 and groups[b] < 0:
            ia, ib = der.base_init_index[bids[:, a]], der.base_init_index[bids[:, b]]
            init_at.append(where[c])
            init_cols.append(ia * N + ib)
        elif c in hat:
            p = hat[c]
            hat_at.append(where[c])
            slot_cols.append(slots[:, p])
            s2_cols.append(der.base_sigma2[bids[:, pairs[p][0]]])
        else:
            zero_at.append(where[c])

    def cols(xs: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.stack(xs, axis=1).astype(dtype) if xs else np.zeros((k, 0), dtype=dtype)

    source = {p: b"i" + col.tobytes() for p, col in zip(init_at, init_cols)}
    source.update(
        (p, b"h" + c.tobytes() + w.tobytes()) for p, c, w in zip(hat_at, slot_cols, s2_cols)
    )
    var = [where[i * d + i] for i in range(d)]
    paired = set(at.ravel().tolist())
    units = [source.get(var[i], b"z") for i in range(d) if i not in paired]
    units += [
        b"|".join(source.get(p, b"z") for p in (var[a], var[b], where[int(a) * d + int(b)]))
        for a, b in at.tolist()
    ]
    return _Fused(
        ev.fn if not extra.size else _head(ev.fn, len(ev.cells)),
        len(cells),
        cols(init_cols, np.intp),
        _ix(init_at),
        cols(slot_cols, np.intp),
        cols(s2_cols, float),
        _ix(hat_at),
        _ix(zero_at),
        _ix(where[i * d + i] for i in range(d)),
        _ix(where[int(i) * d + int(j)] for i, j in at),
        at,
        cells,
        tuple(units),
    )


def _head(fn: Any, m: int) -> Any:
    """``fn`` of the first ``m`` entry rows."""
    return lambda E: fn(E[:m])


def _real_array(x: Any, arg: str, where: str, ndims: tuple[int, ...]) -> np.ndarray:
    """A finite float array with one of ``ndims`` dimensions, or an error naming ``arg``."""
    if isinstance(x, (bool, np.bool_)):
        raise ProgramTypeError(f"{where}: {arg} must be real numbers, got {x!r}")
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything that is not an array of numbers
        raise ProgramTypeError(f"{where}: {arg} must be an array of real numbers") from None
    if (
        a.dtype == object
        or a.dtype == bool
        or not np.issubdtype(a.dtype, np.number)
        or np.iscomplexobj(a)
    ):
        raise ProgramTypeError(
            f"{where}: {arg} must be an array of real numbers, got dtype {a.dtype}"
        )
    if a.ndim not in ndims:
        dims = " or ".join(str(n) for n in ndims)
        raise ProgramValueError(f"{where}: {arg} must have {dims} dimensions, got shape {a.shape}")
    a = a.astype(float)
    if not np.all(np.isfinite(a)):
        raise ProgramValueError(f"{where}: {arg} must be finite; it has NaN or inf entries")
    return a


def compile_limit(
    program: Any, method: str = "auto", *, degree: int | None = None
) -> CompiledLimit:
    r"""Derive and plan a program's limit once, to evaluate it for many sets of numbers.

    The derivation (Z of every vector [TP4 §7]) and the plan (every limit scalar as an
    expectation request) depend on the program's structure, not on the numbers fed to
    it: the initial vectors' covariance and means and the initial scalars enter only as
    the laws of the expectations. :meth:`CompiledLimit.evaluate` takes new numbers —
    ``P`` sets at once, each argument with an optional leading batch axis — and
    evaluates every group of structurally identical requests in one vectorised call
    over all sets.

    Parameters
    ----------
    program : tensorprog.Program
    method : {"auto", "exact", "quadrature"}
        As :func:`tensorprog.limit`, chosen once per integrand when compiling; Monte
        Carlo is not compiled (a program that needs it raises
        :class:`~tensorprog.MethodUnavailableError`: use :func:`tensorprog.limit`).
    degree : int, optional
        Gauss–Hermite nodes per dimension, as :func:`tensorprog.limit`.

    Returns
    -------
    CompiledLimit

    Raises
    ------
    tensorprog.ProgramTypeError, tensorprog.ProgramValueError
        Bad arguments.
    tensorprog.MethodUnavailableError
        An expectation with no deterministic method, or a nonlinearity that divides by
        a function of limit scalars (whose vanishing is decided per set).

    Notes
    -----
    The values are those of :func:`tensorprog.limit` on a program with the same
    instructions and these numbers (the same evaluators on the same laws; equal to
    rounding). The structure assumes what the compiled program's numbers say about
    independence and centring: a covariance entry that is 0 there, and a mean that is
    0 there, must stay 0 (other entries may take any value, 0 included).

    Examples
    --------
    >>> import numpy as np
    >>> import tensorprog as tp
    >>> p = tp.Program("relu")
    >>> x, y = p.vectors("h", cov=[[1.0, 0.5], [0.5, 1.0]])
    >>> k = tp.inner(tp.relu(x), tp.relu(y), name="k")
    >>> c = tp.compile_limit(p)
    >>> rho = np.array([-0.5, 0.0, 0.5])
    >>> covs = np.stack([[[1.0, r], [r, 1.0]] for r in rho])
    >>> np.round(c.evaluate(cov=covs)[k], 8)       # arc-cosine kernel at three correlations
    array([0.05449889, 0.15915494, 0.30449889])
    >>> round(c.evaluate()[k], 12) == round(p.limit()[k], 12)
    True
    """
    from ..dsl.program import Program

    if not isinstance(program, Program):
        raise ProgramTypeError(
            f"compile_limit: program must be a tp.Program, got {type(program).__name__}"
        )
    if not isinstance(method, str) or method not in COMPILABLE:
        raise ProgramValueError(
            f"compile_limit: method must be one of {', '.join(COMPILABLE)} (Monte Carlo is "
            f"not compiled: use tensorprog.limit), got {method!r}"
        )
    if degree is not None and (
        isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 2
    ):
        raise ProgramValueError(f"compile_limit: degree must be an int ≥ 2, got {degree!r}")
    return CompiledLimit(program, Method(method), None if degree is None else int(degree))
