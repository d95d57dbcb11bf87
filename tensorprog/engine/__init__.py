"""The Master Theorem engine: ``limit(program)`` [TP4 §7 Thm 7.4].

Pipeline: :class:`~.derivation.Derivation` (symbolic Z-DAG, Ẑ/Ż split) →
:class:`~.plan.Plan` (every limit scalar as an expectation request) →
:class:`~.evaluate.Deterministic` (exact forms and quadrature, batched by structure)
→ :func:`~.montecarlo.run_montecarlo` for whatever remains → :class:`~.limit.Limit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import hooks
from ..core._gc import paused_gc
from ..core.errors import ProgramTypeError, ProgramValueError, UnknownNameError
from ..core.ir import InitScalar
from ..dsl.program import Program
from .compiled import compile_limit
from .derivation import Derivation, DotConst
from .evaluate import Deterministic, effective_ranks
from .limit import Expectation, Limit
from .methods import REQUESTABLE, RESULT_METHODS, Method
from .montecarlo import run_montecarlo
from .montecarlo.distributed import as_executor
from .plan import Plan
from .tails import assess

__all__ = ["limit", "compile_limit", "Limit", "Expectation", "METHODS", "Method"]

#: The ``method`` names :func:`limit` accepts.
METHODS = tuple(m.value for m in REQUESTABLE)


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < 1:
        raise (
            ProgramTypeError
            if not isinstance(x, (int, np.integer)) or isinstance(x, (bool, np.bool_))
            else ProgramValueError
        )(f"limit: {name} must be a positive int, got {x!r}")
    return int(x)


def limit(
    program: Any,
    method: str = "auto",
    *,
    samples: int = 200_000,
    seed: Any = 0,
    batches: int = 16,
    qmc: bool = True,
    progress: bool = False,
    degree: int | None = None,
    max_memory: int | None = None,
    executor: Any = None,
) -> Limit:
    """The infinite-width limit of a program by the Master Theorem.

    Every vector gets its ``Z`` (``Ẑ + Ż`` for MatMuls) and every scalar its limit
    ``θ̊``, each expectation evaluated by the best method that applies.

    Parameters
    ----------
    program : Program
    method : {"auto", "exact", "quadrature", "montecarlo"}
        ``auto`` picks per expectation: exact (Wick polynomials, closed forms) →
        Gauss–Hermite quadrature (≤ 4 base Gaussians) → Monte Carlo. The others
        force one method (``exact``/``quadrature`` raise
        :class:`~tensorprog.MethodUnavailableError` where it cannot apply).
    samples : int, default 200_000
        Monte Carlo samples (in total over all replicates).
    seed : int or numpy.random.Generator, default 0
        Monte Carlo randomness; the same seed gives bit-identical results.
    batches : int, default 16
        Independent Monte Carlo replicates; the standard error is their spread.
    qmc : bool, default True
        Monte Carlo samples are randomised quasi-Monte Carlo points (independently
        scrambled Sobol' sequences, one per replicate: unbiased, with standard errors
        from the replicates' spread, and usually far more accurate than iid points;
        see :mod:`tensorprog.engine.qmc`). ``False``: iid normals.
    progress : bool, default False
        Show a tqdm progress bar for Monte Carlo, after a line on standard error saying
        what the run will cost (replicates, samples, memory of the sample arrays, and a
        time estimated from small timed passes) before it starts.
    degree : int, optional
        Gauss–Hermite nodes per dimension (default by dimension).
    max_memory : int, optional
        Bound on the Monte Carlo sample arrays; default: half of the memory this
        process may allocate (free memory, ``RLIMIT_AS``, cgroup limits), at least
        256 MiB. Replicates that do not fit run in chunks (the same estimates, up to the
        order of summation, but one sweep over the chunks per round of dependent
        Moments: slower). A plan that does
        not fit in the memory this process may use (free memory, ``RLIMIT_AS``, cgroup
        limits) raises :class:`~tensorprog.ResourceError` naming ``max_memory`` before
        anything runs. Monte Carlo passes run in at most 4 threads, no more than the
        cores this process may use, with the BLAS library's threads limited so that
        the two never oversubscribe the cores; results do not depend on the thread
        count. With an ``executor``: the budget of one chunk on one worker.
    executor : concurrent.futures.Executor or dask.distributed.Client, optional
        Run Monte Carlo's chunks (groups of whole replicates) as tasks of this executor
        — ``dask.distributed.Client(...).get_executor()`` (or the ``Client``), a
        ``ProcessPoolExecutor``, … — instead of threads of this process. The result is
        the same bits for any executor and any number of workers (docs/cluster.md);
        the derivation, the plan and the deterministic expectations stay in this
        process. Needs a program that saves as tensorprog JSON (it is what travels).

    Returns
    -------
    Limit

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program("AtAv")
    >>> A, v = p.matrix("A", var=2.0), p.vector("v")
    >>> x = A.T @ (A @ v)
    >>> k = tp.inner(v, x, name="k")
    >>> lim = p.limit()
    >>> lim[k], lim.method(k)
    (2.0, 'exact')
    """
    if not isinstance(method, str):
        raise ProgramTypeError(f"limit: method must be a str, one of {METHODS}, got {method!r}")
    if method not in METHODS:
        raise UnknownNameError(f"limit: unknown method {method!r}; valid: {', '.join(METHODS)}")
    samples = _positive_int(samples, "samples")
    batches = _positive_int(batches, "batches")
    if batches < 2:
        raise ProgramValueError("limit: batches must be ≥ 2 (the standard error is their spread)")
    if samples < 2 * batches:
        raise ProgramValueError(
            f"limit: samples={samples} is too few for batches={batches} Monte Carlo replicates; "
            f"give samples ≥ 2·batches = {2 * batches}"
        )
    if degree is not None:
        degree = _positive_int(degree, "degree")
        if degree < 2:
            raise ProgramValueError(
                f"limit: degree must be ≥ 2 Gauss–Hermite nodes per dimension "
                f"(its error estimate compares two degrees), got {degree}"
            )
    from ..core.rng import as_generator

    as_generator(seed, "limit")  # validates
    if max_memory is not None:
        max_memory = _positive_int(max_memory, "max_memory (bytes)")
    for flag, val in (("progress", progress), ("qmc", qmc)):
        if not isinstance(val, (bool, np.bool_)):
            raise ProgramTypeError(f"limit: {flag} must be True or False, got {val!r}")
    if not isinstance(program, Program):
        raise ProgramTypeError(f"limit: program must be a tp.Program, got {type(program).__name__}")
    executor = as_executor(executor)
    with paused_gc():
        return _limit(
            program,
            Method(method),
            samples,
            seed,
            batches,
            qmc,
            progress,
            degree,
            max_memory,
            executor,
        )


hooks.limit.register(Program, limit)  # p.limit()


def _limit(
    program: Any,
    method: Method,
    samples: int,
    seed: Any,
    batches: int,
    qmc: bool,
    progress: bool,
    degree: int | None,
    max_memory: int | None,
    executor: Any = None,
) -> Limit:
    program.check()
    der = Derivation(program)
    plan = Plan(der, symbolic=method is not Method.MONTECARLO)
    det = Deterministic(plan, method, degree)
    det.run()
    mc: dict[int, tuple[float, float]] = {}
    khat: dict[int, float] = {}
    stable: dict[int, Any] = {}
    if det.needs_montecarlo:
        mc = run_montecarlo(
            plan,
            samples,
            seed,
            batches=batches,
            qmc=qmc,
            progress=progress,
            max_memory=max_memory,
            executor=executor,
            tails=khat,
            stable=stable,
        )
    flags = assess(plan, det.proven, det.unproven, khat, det.inexact)
    eff = effective_ranks(plan)
    reported = [m.value for m in RESULT_METHODS]
    values, stderrs, errors, methods = {}, {}, {}, {}
    const_req, scalar_const = plan.const_req, der.scalar_const
    for instr in program.instructions:
        v = instr.out
        if v.kind != "scalar":
            continue
        cid = scalar_const[v].cid
        rid = const_req[cid]
        name = v.name
        if plan.deterministic[rid]:
            values[name], stderrs[name], errors[name] = (
                float(plan.values[rid]),
                0.0,
                float(plan.errors[rid]),
            )
        else:
            values[name], stderrs[name] = mc[cid]
            errors[name] = 0.0
        methods[name] = Method.EXACT.value if isinstance(instr, InitScalar) else reported[eff[rid]]
    coefficients = {}
    for c in der.consts:
        if not isinstance(c, DotConst):
            continue
        rid = const_req[c.cid]
        val, se = (float(plan.values[rid]), 0.0) if plan.deterministic[rid] else mc[c.cid]
        coefficients[c.cid] = (c.expectation(val), c.expectation(se), reported[eff[rid]])
    meta = {
        "method": method.value,
        "samples": samples if mc else None,
        "seed": seed if mc else None,
        "batches": batches if mc else None,
        "qmc": qmc,
    }
    names = {cid: v.name for v, c in scalar_const.items() for cid in [c.cid]}
    warned = {const_req[scalar_const[v].cid]: v.name for v in scalar_const}
    lim = Limit(
        program,
        der,
        plan,
        values,
        stderrs,
        errors,
        methods,
        coefficients,
        meta,
        flags={warned[r]: why for r, why in flags.items() if r in warned},
        khat={names[c]: k for c, k in khat.items() if c in names},
        stable={names[c]: e for c, e in stable.items() if c in names},
    )
    lim._warn()
    return lim
