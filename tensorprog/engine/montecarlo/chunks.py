"""The unit of work of a Monte Carlo run: a *chunk* of whole replicates, what it
returns (:class:`ChunkResult`, sufficient statistics: per-replicate estimates and tail
tops, never samples) and how it runs (:func:`run_chunk`), the same code in this process
and on an executor's workers (:mod:`.distributed`).

A replicate's estimates are computed from its own stream alone, with no array shared
with another replicate in any reduction (every sum runs over one replicate's samples:
batched products and row sums whose result for replicate ``r`` does not depend on how
many rows the batch has), so a chunk's values for replicate ``r`` are the same bits
whichever other replicates share its pass, and the run's result is the same bits for
any grouping of replicates into chunks, any thread count and any executor
(``tests/test_distributed.py``, ``tests/test_montecarlo.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.errors import NumericalError
from ..plan import Plan
from .estimates import _Estimates
from .rules import MonteCarloPass
from .schedule import _Schedule
from .sources import _normal_source

__all__ = ["Work", "Chunk", "ChunkResult", "run_chunk"]


@dataclass(frozen=True, slots=True)
class Work:
    """What every chunk of one run shares.

    Attributes
    ----------
    K, M : int
        Replicates of the run and samples per replicate.
    C : int or None
        Samples per piece of a replicate too large for ``max_memory`` (run in sweeps
        over its pieces, :func:`_chunked_replicate`; a chunk is then one replicate);
        ``None``: whole replicates. Fixed by the client from ``max_memory`` (a power of
        two, :func:`~.run._chunk_size`), never by a worker: the order of the sums over
        a replicate's samples depends on it.
    qmc : bool
        Randomised QMC points (else iid normals).
    tail, prefix : int
        The run's tail size ``T`` (the ``T + 1`` largest draws of each Moment's
        integrand are kept) and the samples of each replicate that enter the tails.
    levels : tuple of int
        ``(0,)``, or ``(0, 1)`` when an OuterNonlin's inner average is sampled (the
        second level: the same normals, half-size inner blocks, :func:`~.run.inner_bias`).
    per_sample : int
        Bytes of sample arrays per sample of one replicate (a worker's memory check).
    """

    K: int
    M: int
    C: int | None
    qmc: bool
    tail: int
    prefix: int
    levels: tuple[int, ...]
    per_sample: int

    def need(self, chunk: Chunk) -> int:
        """Bytes of sample arrays of ``chunk``."""
        return self.per_sample * (len(chunk.seeds) * self.M if self.C is None else self.C)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Replicates ``start … start + len(seeds) − 1`` of a run, with their streams
    (``SeedSequence(seed).spawn(K)[start:…]``); ``index``: its place in the run."""

    index: int
    start: int
    seeds: tuple[np.random.SeedSequence, ...]

    @property
    def stop(self) -> int:
        """One past the chunk's last replicate."""
        return self.start + len(self.seeds)

    def describe(self) -> str:
        """``"chunk 3 (replicates 6–7)"``."""
        last = self.stop - 1
        reps = (
            f"replicate {self.start}" if last == self.start else f"replicates {self.start}–{last}"
        )
        return f"chunk {self.index} ({reps})"


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """The sufficient statistics of a chunk.

    Attributes
    ----------
    index : int
        The chunk's index.
    replicates : int
        Its replicates ``k``.
    values : tuple of dict
        Per level of :attr:`Work.levels`, ``{const id: (k,) estimates}``, one per
        replicate, in replicate order.
    tops : dict
        ``{Moment const id: (1, tail + 1)}`` the largest ``|integrand|`` draws of the
        chunk's tail prefix (:meth:`~.estimates._Estimates.add_tail`).
    """

    index: int
    replicates: int
    values: tuple[dict[int, np.ndarray], ...]
    tops: dict[int, np.ndarray]


def run_chunk(plan: Plan, schedule: _Schedule, work: Work, chunk: Chunk) -> ChunkResult:
    """Run the replicates of ``chunk``: one pass over all of them (at every level), or,
    for a replicate that does not fit whole (``work.C``), sweeps over its pieces."""
    seeds = list(chunk.seeds)
    k = len(seeds)
    values = []
    tops: dict[int, np.ndarray] = {}
    for inner in work.levels:  # (the coarse level: same normals, half-size inner blocks)
        if work.C is not None:
            const, t = _chunked_replicate(
                plan,
                seeds[0],
                work.M,
                work.C,
                schedule.D,
                work.qmc,
                schedule,
                work.tail,
                inner=inner,
            )
        else:
            state = _Estimates(work.M)
            state.tail, state.prefix = work.tail, work.prefix
            mc = MonteCarloPass(
                plan,
                k,
                work.M,
                _normal_source(seeds, work.M, schedule.D, work.qmc),
                state,
                schedule=schedule,
                inner=inner,
            )
            mc.run()
            const, t = mc.const, state.tops
        values.append({cid: _per_replicate(v, k) for cid, v in const.items()})
        tops = tops or t
    return ChunkResult(chunk.index, k, tuple(values), tops)


def _per_replicate(v: Any, k: int) -> np.ndarray:
    """A pass's estimate (a (k, 1) array, or a known number) as one value per replicate."""
    if isinstance(v, np.ndarray) and v.size == k:
        return v.reshape(k)
    return np.broadcast_to(np.ravel(v), (k,))


def _chunked_replicate(
    plan: Plan,
    ss: np.random.SeedSequence,
    M: int,
    C: int,
    D: int,
    qmc: bool,
    schedule: _Schedule,
    tail: int,
    sweeps: list[int] | None = None,
    inner: int = 0,
) -> tuple[dict[int, Any], dict]:
    """One replicate of ``M`` samples in pieces of at most ``C``: sweeps until complete.

    Piece ``j`` draws samples ``jC … jC + C − 1`` of the replicate's stream (the same
    normals the whole replicate would draw there, iid or QMC). Returns its estimates and
    the tops of its Moments' integrands (``tail + 1`` each). ``sweeps``, if given, gets
    the number of sweeps appended.
    """
    sizes = [C] * (M // C) + ([M % C] if M % C else [])
    state = _Estimates(M)
    n = 0
    state.tail = tail
    while True:
        complete = True
        n += 1
        for j, size in enumerate(sizes):
            mc = MonteCarloPass(
                plan, 1, size, _normal_source([ss], size, D, qmc, j * C), state, schedule, inner
            )
            mc.run()
            complete = complete and not mc.pending
        if complete:
            if sweeps is not None:
                sweeps.append(n)
            return mc.const, state.tops
        if state.finish() == 0:  # pragma: no cover - would loop forever
            raise NumericalError("Monte Carlo in chunks made no progress (internal error)")
