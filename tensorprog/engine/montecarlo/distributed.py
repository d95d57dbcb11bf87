"""Monte Carlo on any ``concurrent.futures.Executor``: Dask, process pools, threads.

``p.limit(..., executor=ex)`` runs the replicates' chunks (:mod:`.chunks`) as tasks of
``ex`` — ``dask.distributed.Client(...).get_executor()`` (or the ``Client`` itself),
a ``ProcessPoolExecutor``, a ``ThreadPoolExecutor`` — and reduces their sufficient
statistics in this process, in replicate order. The result is the same bits as the
in-process run, for any executor and any number of workers, because

* the unit of work is a chunk of whole replicates, and replicate ``r`` draws from
  ``SeedSequence(seed).spawn(K)[r]`` wherever it runs;
* a replicate's estimates never mix with another's (:mod:`.chunks`), so grouping
  replicates into chunks, and chunks onto workers, changes no bit;
* the sample pieces of a replicate too large for ``max_memory`` (the one choice that
  orders a replicate's sums) are fixed here, from ``max_memory``, never by a worker;
* the reduction over replicates (means, standard errors, tail tops, ``k̂``, stable
  errors, an OuterNonlin's coarse level) runs here, in replicate order, whatever order
  the chunks finish in.

What travels (:class:`ShippedPlan`): not the :class:`~..plan.Plan` — it holds sympy
function classes made at run time and lambdified code, which do not pickle — but the
program in tensorprog's own JSON format (:func:`tensorprog.io.dumps`, zlib-compressed)
and the numbers of the deterministic pass (the requests' values, errors, methods and
flags). A worker loads the program, re-derives the plan's structure (derivation and
planning are deterministic: the same requests and constant ids), copies the numbers in
(no quadrature is redone, and the constants are the client's bits) and caches the
result by the payload's SHA-256 digest, so it plans once per program. For the training
benchmark's limit (932 instructions, 2,324 requests): ~60 KB per task, ~0.4 s of
planning once per worker, against 1.3 s for the client's derivation and deterministic
pass (``benchmarks/distributed.py``). Each task carries its chunk's index and seeds;
it returns per-replicate estimates and tail tops, never samples.

Failures: a chunk whose task raises anything but a :class:`~tensorprog.TensorProgramError`
(which is the program's own error, the same as in-process, re-raised) is resubmitted up
to :data:`RETRIES` times, then reported as :class:`~tensorprog.ExecutorError` naming the
chunk, its replicates and the worker's exception. Dask reschedules the tasks of a
worker that dies; a ``ProcessPoolExecutor`` whose worker dies is broken for good
(``BrokenProcessPool``), which is reported at once.

Threads: a task running in a worker process limits the BLAS library to one thread
(``threadpoolctl``): the executor's workers are the parallelism, one chunk per core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, Future, wait
from typing import Any

import numpy as np

from ..._version import __version__
from ...core import hooks
from ...core._resources import require
from ...core.errors import ExecutorError, ProgramTypeError, TensorProgramError
from ..derivation import Derivation
from ..plan import Plan
from .chunks import Chunk, ChunkResult, Work, run_chunk
from .schedule import _Schedule

__all__ = ["ShippedPlan", "as_executor", "run_on_executor", "remote_chunk", "RETRIES"]

#: Resubmissions of a failed chunk before :class:`~tensorprog.ExecutorError`.
RETRIES = 2
#: Plans a worker process keeps (by digest), most recently used last.
_CACHE_SIZE = 4
_CACHE: OrderedDict[str, tuple[Plan, _Schedule]] = OrderedDict()
_LOCK = threading.Lock()


class ShippedPlan:
    """A plan as it travels to workers: the program's JSON (zlib) and the
    deterministic pass's numbers; :attr:`digest` identifies it.

    In the process that made it, :attr:`local` holds the plan and schedule themselves
    (a thread executor uses them directly); it is dropped when pickled.
    """

    __slots__ = (
        "digest",
        "payload",
        "symbolic",
        "values",
        "errors",
        "methods",
        "deterministic",
        "shape",
        "structure",
        "version",
        "local",
    )

    def __init__(self, plan: Plan, schedule: _Schedule) -> None:
        try:
            text = hooks.dumps(plan.der.program)
        except TensorProgramError as exc:
            raise ExecutorError(
                f"executor=: the program {plan.der.program.name!r} cannot be sent to workers "
                f"(it does not save as tensorprog JSON: {exc}); run it without executor="
            ) from exc
        self.payload = zlib.compress(text.encode(), 6)
        self.symbolic = bool(plan.symbolic)
        self.values = np.array(plan.values, dtype=float)
        self.errors = np.array(plan.errors, dtype=float)
        self.methods = list(plan.methods)
        self.deterministic = np.array(plan.deterministic, dtype=bool)
        self.shape = (len(plan.requests), len(plan.der.consts))
        self.structure = plan_structure(plan)
        self.version = __version__
        h = hashlib.sha256(self.payload)
        for a in (self.values, self.errors, self.deterministic):
            h.update(a.tobytes())
        h.update(pickle.dumps((self.symbolic, [m.value for m in self.methods])))
        self.digest = h.hexdigest()
        self.local: tuple[Plan, _Schedule] | None = (plan, schedule)

    def __dask_tokenize__(self) -> str:  # (Dask keys tasks by their arguments)
        return self.digest

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.local = None

    def plan(self) -> tuple[Plan, _Schedule]:
        """The plan and schedule: this process's own, else re-derived once per worker
        process (cached by :attr:`digest`)."""
        if self.local is not None:
            return self.local
        with _LOCK:
            hit = _CACHE.get(self.digest)
            if hit is not None:
                _CACHE.move_to_end(self.digest)
                return hit
            out = _CACHE[self.digest] = self._replan()
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
            return out

    def _replan(self) -> tuple[Plan, _Schedule]:
        if self.version != __version__:
            raise ExecutorError(
                f"executor=: the worker runs tensorprog {__version__}, the client "
                f"{self.version}; install the same version on both"
            )
        program = hooks.loads(zlib.decompress(self.payload).decode(), source="<executor>")
        plan = Plan(Derivation(program), symbolic=self.symbolic)
        if (len(plan.requests), len(plan.der.consts)) != self.shape:
            raise ExecutorError(
                f"executor=: the worker planned {len(plan.requests)} requests and "
                f"{len(plan.der.consts)} constants, the client {self.shape[0]} and "
                f"{self.shape[1]} (different tensorprog code on the worker?)"
            )
        if plan_structure(plan) != self.structure:
            raise ExecutorError(
                f"executor=: the worker's plan of {program.name!r} differs from the "
                "client's in its requests' dependencies or constants (the client's numbers "
                "would land on other requests); different tensorprog or sympy code on the "
                "worker?"
            )
        plan.values[:] = self.values
        plan.errors[:] = self.errors
        plan.methods[:] = self.methods
        plan.deterministic[:] = self.deterministic.tolist()
        return plan, _Schedule(plan)


def plan_structure(plan: Plan) -> str:
    """A digest of the plan's structure: every request's class, and the integer fields
    that place it (its id, dependencies, level, bases, constants, covariance slots
    and batch) — what the deterministic pass's numbers are indexed by. A worker's
    re-derived plan must match it exactly, or the client's numbers would be copied onto
    other requests."""
    h = hashlib.sha256()
    for r in plan.requests:
        row: list[Any] = [type(r).__name__]
        for f in dataclasses.fields(r):
            v = getattr(r, f.name)
            if isinstance(v, (int, np.integer)) or (
                isinstance(v, tuple) and all(isinstance(x, (int, np.integer)) for x in v)
            ):
                row.append((f.name, v))
        h.update(repr(row).encode())
    h.update(repr(sorted(plan.const_req.items())).encode())  # constant → its request
    return h.hexdigest()


def remote_chunk(shipped: ShippedPlan, work: Work, chunk: Chunk, attempt: int = 0) -> ChunkResult:
    """The task an executor runs: one chunk (:func:`~.chunks.run_chunk`); ``attempt``
    counts resubmissions (it makes a retry a new task for executors that key tasks by
    their arguments, as Dask does, which would otherwise return the failed result).

    In a worker process: the chunk's sample arrays are checked against the memory the
    process may use (a :class:`~tensorprog.ResourceError` naming ``max_memory``) and
    the BLAS library runs one thread.
    """
    if shipped.local is not None:
        return run_chunk(*shipped.local, work, chunk)
    require(
        f"Monte Carlo {chunk.describe()} on a worker (pid {os.getpid()})",
        work.need(chunk),
        "max_memory",
        "pass a smaller max_memory= (the budget of one chunk on one worker)",
    )
    plan, schedule = shipped.plan()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return run_chunk(plan, schedule, work, chunk)


def as_executor(executor: Any) -> Executor | None:
    """``executor`` as a ``concurrent.futures.Executor`` (a ``dask.distributed.Client``:
    its ``get_executor()``), or ``None``.

    Raises
    ------
    ProgramTypeError
        for anything else.
    """
    if executor is None or isinstance(executor, Executor):
        return executor
    if type(executor).__module__.startswith("distributed") and hasattr(executor, "get_executor"):
        return executor.get_executor()
    raise ProgramTypeError(
        f"limit: executor must be None (threads in this process), a concurrent.futures."
        f"Executor (e.g. ProcessPoolExecutor, dask.distributed.Client(...).get_executor()) "
        f"or a dask.distributed.Client, got {type(executor).__name__}"
    )


def executor_workers(ex: Executor) -> int:
    """How many tasks ``ex`` runs at once (for the estimated time; 1 if unknown)."""
    n = getattr(ex, "_max_workers", None)
    if isinstance(n, int):
        return max(1, n)
    client = getattr(ex, "_client", None)
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # pragma: no cover - a client that cannot say
            return 1
    return 1


def run_on_executor(
    ex: Executor,
    shipped: ShippedPlan,
    work: Work,
    chunks: Sequence[Chunk],
    done: Callable[[ChunkResult], None],
    retries: int = RETRIES,
) -> None:
    """Run ``chunks`` on ``ex``, calling ``done`` with each result as it completes.

    A task that raises a :class:`~tensorprog.TensorProgramError` re-raises it (the
    program's own error); any other exception resubmits the chunk, at most ``retries``
    times, then raises :class:`~tensorprog.ExecutorError` naming the chunk, its
    replicates and the exception (chained). A broken executor (a dead
    ``ProcessPoolExecutor`` worker) is reported at once. Tasks still pending when this
    raises are cancelled.
    """
    futures: dict[Future, tuple[Chunk, int]] = {}

    def submit(chunk: Chunk, tries: int) -> None:
        try:
            futures[ex.submit(remote_chunk, shipped, work, chunk, tries)] = (chunk, tries)
        except BrokenExecutor as exc:
            raise _failed(chunk, exc, tries) from exc

    try:
        for c in chunks:
            submit(c, 0)
        while futures:
            finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for f in finished:
                chunk, tries = futures.pop(f)
                try:
                    res = f.result()
                except TensorProgramError:
                    raise
                except BaseException as exc:
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    if tries >= retries or isinstance(exc, BrokenExecutor):
                        raise _failed(chunk, exc, tries) from exc
                    submit(chunk, tries + 1)
                    continue
                done(res)
    finally:
        for f in futures:
            f.cancel()


def _failed(chunk: Chunk, exc: BaseException, tries: int) -> ExecutorError:
    broken = isinstance(exc, BrokenExecutor)
    why = (
        "the executor is broken (a worker process died; a ProcessPoolExecutor cannot "
        "replace it: make a new one, or use dask.distributed, which reschedules the "
        "tasks of a dead worker)"
        if broken
        else f"it failed {tries + 1} time(s)"
    )
    err = ExecutorError(
        f"Monte Carlo {chunk.describe()} on the executor: {why}; the worker's exception: "
        f"{type(exc).__name__}: {exc}"
    )
    err.chunk, err.replicates = chunk.index, (chunk.start, chunk.stop)
    return err
