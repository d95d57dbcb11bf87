"""Running Monte Carlo: replicates grouped into passes, threads, chunked replicates,
memory sizing, seeds, progress and the estimated time, and the merging of the passes'
estimates and tails (:func:`run_montecarlo`)."""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ...core._resources import (
    available_cpus,
    blas_threads,
    gib,
    montecarlo_memory,
    refuse,
    require,
)
from ...core.ir import OuterNonlin
from ..plan import Plan
from ..tails import StableError, khat_of_tops, merge_tops, stable_errors, tail_size
from .chunks import Chunk, ChunkResult, Work, _chunked_replicate, run_chunk
from .distributed import ShippedPlan, as_executor, executor_workers, run_on_executor
from .rules import MonteCarloPass
from .schedule import _Schedule
from .sources import _normal_source

__all__ = ["TAIL_DRAWS", "run_montecarlo"]

#: Draws of a Monte Carlo run that the Pareto k̂ of a Moment is fitted to (the first
#: ``⌈TAIL_DRAWS/K⌉`` samples of each of the ``K`` replicates of larger runs): the sample
#: size at which its thresholds were calibrated (``benchmarks/calibration.py``, 2¹⁴
#: samples), and a bounded cost — a partial sort of every Moment's samples was half of a
#: 100,000-sample training limit. A *prefix*, not a strided subsample: every 2^j-th point
#: of a Sobol' sequence lies in one slab of width 2^{−j} of its first coordinate, which
#: may miss the singularity that makes a tail heavy (𝔼|v|^{−0.7} looked light-tailed,
#: k̂ ≈ −0.9, on 4 of 20 QMC seeds); a prefix of a scrambled Sobol' sequence is spread
#: over the whole cube.
TAIL_DRAWS = 2**14
#: Replicates per pass are capped at this many samples in all (a vector of 512 KiB):
#: beyond it the interpreter's overhead is already amortised and bigger arrays only
#: stream from slower memory.
_PASS_SAMPLES = 2**16
#: Concurrent passes (threads) at most; also bounded by the cores this process may use.
_MAX_WORKERS = 4
#: On an executor, a run has at least ``min(K, _MIN_CHUNKS)`` chunks (whatever the
#: workers: the chunks are fixed by ``K``, ``M`` and ``max_memory`` alone).
_MIN_CHUNKS = 16


def run_montecarlo(
    plan: Plan,
    samples: int,
    seed: Any,
    *,
    batches: int = 16,
    qmc: bool = True,
    progress: bool = False,
    max_memory: int | None = None,
    tails: dict[int, float] | None = None,
    stable: dict[int, StableError] | None = None,
    executor: Any = None,
    chunk_replicates: int | None = None,
) -> dict[int, tuple[float, float]]:
    """Replicated Monte Carlo passes; returns ``{const id: (mean, standard error)}``.

    Parameters
    ----------
    plan : Plan
        The planned requests (after the deterministic pass).
    samples : int
        Total samples; each of the ``batches`` replicates gets ``M = samples // batches``.
    seed : int, SeedSequence entropy or numpy Generator
        Replicate ``r`` draws from ``default_rng(SeedSequence(seed).spawn(batches)[r])``
        (with ``qmc``: the scramble of its Sobol' sequence).
    batches : int, default 16
        Replicates ``K``; the standard error is their spread over ``√K``.
    qmc : bool, default True
        Randomised quasi-Monte Carlo (scrambled Sobol' points, :mod:`..qmc`); False:
        iid normals.
    progress : bool, default False
        Show a progress bar over the replicates (advanced as chunks complete).
    max_memory : int, optional
        Bytes for the sample arrays (default: half of what the process may allocate,
        :func:`~tensorprog.core._resources.montecarlo_memory`); with an ``executor``,
        the budget of one chunk on one worker. As many replicates as fit run in one
        pass (at least one); a replicate that does not fit alone runs in pieces of
        ``C`` samples, the largest power of two that fits (see :class:`MonteCarloPass`).
        The result depends on ``max_memory`` only through ``C`` (the order of the sums
        over a replicate's samples): the same bits for every ``max_memory`` that holds
        a whole replicate.
    tails : dict, optional
        Filled with ``{const id: k̂}`` for every Moment estimated: the Pareto ``k̂`` of
        its integrand's samples, fitted to the largest ``min(S/5, 3√S)`` of all
        ``S = K·M`` (:mod:`..tails`; at most :data:`TAIL_DRAWS` of them, a prefix of each
        replicate).
    stable : dict, optional
        Filled with ``{const id: StableError}`` for the Moments whose ``k̂`` is in
        ``[1/2, 1)`` (a mean without a variance): the law of their estimate's error, from
        which :meth:`..limit.Limit.interval` gives a robust interval.
    executor : concurrent.futures.Executor or dask.distributed.Client, optional
        Run the chunks (groups of whole replicates, :mod:`.chunks`) as tasks of this
        executor (:mod:`.distributed`); ``None``: threads of this process. The same bits
        either way.
    chunk_replicates : int, optional
        Replicates per chunk on an executor (default: at most :data:`_PASS_SAMPLES`
        samples and what ``max_memory`` holds, and at least ``min(K, 16)`` chunks);
        it changes no bit (benchmarks and tests vary it).

    Returns
    -------
    dict
        ``{const id: (mean over replicates, std(ddof=1) / √K)}`` for every scalar and
        ZDot coefficient. A program with an OuterNonlin whose inner expectation is
        sampled runs every replicate twice, the second time with half-size inner
        blocks, and its standard errors include :func:`inner_bias` in quadrature.
    """
    der = plan.der
    per_sample = _bytes_per_sample(der)
    schedule = _Schedule(plan)
    K = int(batches)
    M = max(2, samples // K)
    if max_memory is None:
        max_memory = montecarlo_memory()
    ex = as_executor(executor)
    # In this process, passes run concurrently on the cores (in threads: numpy releases
    # the GIL inside its kernels; the training benchmark's limit takes 0.33 s with two
    # threads against 0.42 s with one); each gets its share of max_memory. On an
    # executor, max_memory is the budget of one chunk. Results do not depend on either:
    # every chunk has its own replicates and streams.
    workers = 1 if ex is not None else max(1, min(available_cpus(), _MAX_WORKERS, K))
    fit = int(max_memory) // (per_sample * M * workers)  # whole replicates per pass
    if not fit:
        workers = 1
        fit = int(max_memory) // (per_sample * M)
    C = _chunk_size(int(max_memory) // per_sample, per_sample, max_memory)
    if ex is not None:  # (a rule of K, M and max_memory: not of the workers)
        step = max(1, min(K, fit, _PASS_SAMPLES // M, -(-K // _MIN_CHUNKS))) if fit else 1
        if chunk_replicates is not None:
            step = max(1, min(K, int(chunk_replicates))) if fit else 1
    else:
        step = max(1, min(K, fit, _PASS_SAMPLES // M))
        if workers > 1:  # balanced passes, at least one per worker
            npass = max(workers, -(-K // step))
            step = -(-K // npass)
    need = per_sample * (min(workers, -(-K // step)) * step * M if fit else C)
    if ex is None:
        require(
            f"Monte Carlo ({K} replicates × {M} samples, {per_sample} bytes per sample)",
            need,
            "max_memory",
            "pass a smaller max_memory= (long replicates then run in "
            "chunks, with the same estimates) or fewer samples=",
        )
    ss = (
        np.random.SeedSequence(seed)
        if not isinstance(seed, np.random.Generator)
        else np.random.SeedSequence(int(seed.integers(2**63)))
    )
    children = ss.spawn(K)
    # The tail diagnostic sees a prefix of each whole replicate (at most TAIL_DRAWS in
    # all; chunks: every sample), its fitted tail T of them (Vehtari et al. 2024 §3).
    prefix = min(M, -(-TAIL_DRAWS // K)) if fit else M
    T = tail_size(K * prefix)
    levels = (0, 1) if sampled_outer(der) else (0,)
    work = Work(K, M, None if fit else C, bool(qmc), T, prefix, levels, per_sample)
    chunks = [
        Chunk(i, start, tuple(children[start : start + step]))
        for i, start in enumerate(range(0, K, step))
    ]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        pieces = f", chunks of {C}" if not fit else ""
        where = (
            f"{len(chunks)} chunks on {type(ex).__name__}"
            if ex is not None
            else f"{workers} thread(s)"
        )
        seconds = len(levels) * _estimate_seconds(  # (the coarse level: at most as long)
            plan,
            schedule,
            K,
            M,
            C if not fit else None,
            qmc,
            executor_workers(ex) if ex is not None else workers,
        )
        tqdm.write(
            f"Monte Carlo: {K} replicates × {M} samples{pieces} on {where}, about "
            f"{gib(need)} of sample arrays{' per chunk' if ex is not None else ''}; "
            f"estimated time {_duration(seconds)}",
            file=sys.stderr,
        )
        bar = tqdm(total=K, desc=f"Monte Carlo ({K}×{M} samples{pieces})", leave=False)
    reduction = _Reduction(work)

    def done(res: ChunkResult) -> None:
        reduction.add(res)
        if bar is not None:
            bar.update(res.replicates)

    try:
        if ex is not None:
            with contextlib.ExitStack() as stack:
                if isinstance(ex, ThreadPoolExecutor):  # (threads of this process)
                    stack.enter_context(blas_threads(executor_workers(ex)))
                run_on_executor(ex, ShippedPlan(plan, schedule), work, chunks, done)
        elif workers > 1 and len(chunks) > 1:
            with (
                blas_threads(min(workers, len(chunks))),
                ThreadPoolExecutor(min(workers, len(chunks))) as pool,
            ):  # in order, whatever finishes first
                for res in pool.map(lambda c: run_chunk(plan, schedule, work, c), chunks):
                    done(res)
        else:
            for c in chunks:
                done(run_chunk(plan, schedule, work, c))
    finally:
        if bar is not None:
            bar.close()
    return reduction.finish(tails, stable)


class _Reduction:
    """The reduction over replicates of a run's chunk results, in replicate order
    whatever order they arrive in (a result waits for the chunks before it): the
    per-replicate estimates are concatenated, the tails merged (the largest draws of
    each Moment's integrand, ``O(√(K·M))`` memory per Moment), then means, standard
    errors, an OuterNonlin's bias bound, ``k̂`` and stable errors (:meth:`finish`)."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.values: list[dict[int, list[np.ndarray]]] = [{} for _ in work.levels]
        self.tops: dict[int, np.ndarray] = {}
        self.seen: dict[int, int] = {}
        self.waiting: dict[int, ChunkResult] = {}
        self.next = 0

    def add(self, res: ChunkResult) -> None:
        """Take a chunk's result; merge every result now in order."""
        self.waiting[res.index] = res
        while self.next in self.waiting:
            r = self.waiting.pop(self.next)
            self.next += 1
            for level, const in zip(self.values, r.values):
                for cid, v in const.items():
                    level.setdefault(cid, []).append(v)
            for cid, t in r.tops.items():
                self.tops[cid] = merge_tops(self.tops.get(cid), t.reshape(1, -1), self.work.tail)
                self.seen[cid] = self.seen.get(cid, 0) + r.replicates

    def finish(
        self, tails: dict[int, float] | None, stable: dict[int, StableError] | None
    ) -> dict[int, tuple[float, float]]:
        """``{const id: (mean, standard error)}``; fills ``tails`` and ``stable``."""
        K, M, T, prefix = self.work.K, self.work.M, self.work.tail, self.work.prefix
        values = self.values[0]
        cids = list(values)
        vals = np.array([np.concatenate(values[c]) for c in cids]).reshape(len(cids), K)
        means, ses = vals.mean(axis=1), vals.std(axis=1, ddof=1) / np.sqrt(K)
        if len(self.values) > 1:  # an OuterNonlin's inner average: its bias bound joins the error
            coarse = self.values[-1]
            half = np.array([np.concatenate(coarse[c]) for c in cids]).reshape(len(cids), K)
            ses = np.hypot(ses, inner_bias(vals, half))
        # k̂ of every Moment: one fit (batched over Moments) to the largest of its tail draws
        full = [c for c, n in self.seen.items() if n == K]
        if tails is not None and full:
            top = np.concatenate([self.tops[c] for c in full])
            kh = khat_of_tops(top)
            tails.update(zip(full, kh.tolist()))
            if stable is not None:
                errs = stable_errors(top, kh, T / (K * prefix), K * M)
                stable.update((c, e) for c, e in zip(full, errs) if e is not None)
        return {c: (m, e) for c, m, e in zip(cids, means.tolist(), ses.tolist())}


def sampled_outer(der: Any) -> bool:
    """Whether an OuterNonlin's inner expectation is a Monte Carlo average (ψ not a
    polynomial in its cols)."""
    return any(
        isinstance(i, OuterNonlin) and i.out not in der.copy_moments
        for i in der.program.instructions
    )


def inner_bias(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """A bound on the bias of estimates downstream of OuterNonlins' inner averages:
    ``|mean_r(T_r(m) − T_r(m/2))|`` per row, from the same replicates ``r`` run with
    inner blocks of ``m`` (``fine``, the estimates) and ``m/2`` (``coarse``).

    The inner average's error makes a smooth statistic ``T(m)`` biased by ``b(m)``,
    which the replicates' spread does not show (every replicate shares it). iid
    samples (a U-statistic): ``b(m) = c/(m − 1)``, so ``T(m/2) − T(m) ≈ b(m)``;
    randomised QMC (a V-statistic over nets): ``b`` falls faster than ``1/m`` and the
    difference bounds it from above. Added in quadrature to the standard error, it is
    negligible next to it unless the statistic barely varies (e.g. ``𝔼[y²]`` for a
    ``y`` that is almost constant), where it is what keeps the error honest.
    """
    return np.abs((fine - coarse).mean(axis=1))


def _bytes_per_sample(der: Any) -> int:
    """Memory bound per sample of one replicate (float64): every vector (stacked or
    not), each base Gaussian's normal, a family member's input copy (for a vector that
    lives in another stack) and hat, and a few temporaries (an OuterNonlin's inner
    average: its cols extended by the window, ≤ 2 per col, and the sum)."""
    outer = max(
        (
            2 * len(i.cols) + 2
            for i in der.program.instructions
            if isinstance(i, OuterNonlin) and i.out not in der.copy_moments
        ),
        default=0,
    )
    return 8 * (len(der.program) + 4 * len(der.bases) + 4 + outer)


def _chunk_size(fit: int, per_sample: int, max_memory: int) -> int:
    """Samples per piece of a replicate that does not fit whole: the largest power of
    two ≤ ``fit`` (the samples ``max_memory`` holds), so that the pieces (and the order
    of the sums over a replicate's samples, hence the bits) change only when the budget
    crosses a power of two, not with every fluctuation of the free memory a default
    ``max_memory`` is a share of. A power of two ≥ :data:`~.sources._IID_BLOCK` is a
    multiple of it, one below a divisor (a piece draws whole blocks of iid normals, or
    whole pieces of one). Uses at least half of ``fit``.

    Raises
    ------
    ResourceError
        when ``max_memory`` does not hold one sample.
    """
    if fit < 1:
        raise refuse(
            "Monte Carlo (one sample of every vector)",
            per_sample,
            "max_memory",
            f"pass max_memory ≥ {per_sample} bytes",
            int(max_memory),
            "max_memory",
        )
    return 1 << (int(fit).bit_length() - 1)


def _estimate_seconds(
    plan: Plan, schedule: _Schedule, K: int, M: int, C: int | None, qmc: bool, workers: int
) -> float:
    """Wall time of a Monte Carlo run, extrapolated from small timed passes.

    A pass of ``m`` samples takes about ``a + b m`` (``a``: the interpreter's walk,
    ``b``: the array work per sample). After a warm-up pass (code generation, caches),
    passes of ``m₁`` and ``m₂ = 4m₁`` samples (one replicate, a throwaway seed) give
    ``b = (t₂ − t₁)/(m₂ − m₁)`` and ``a = t₁ − b m₁``. Whole replicates: ``K M`` samples
    over ``workers`` threads plus one walk per pass. In chunks of ``C``: every sweep
    walks all ``⌈M/C⌉`` chunks of a replicate again (sweeps counted on a two-chunk
    replicate). A rough guide (machine load changes it), printed before a long run.
    """
    D = schedule.D
    ss = np.random.SeedSequence(0)

    def timed(m: int) -> float:
        t0 = time.perf_counter()
        MonteCarloPass(plan, 1, m, _normal_source([ss], m, D, qmc), schedule=schedule).run()
        return time.perf_counter() - t0

    m2 = int(min(M, 8192))
    m1 = max(1, m2 // 4)
    timed(min(m1, 256))  # warm-up
    t1, t2 = timed(m1), timed(m2)
    b = (t2 - t1) / (m2 - m1) if m2 > m1 else t2 / m2
    if b <= 0:  # noise: charge everything to the samples
        b = t2 / m2
    a = max(t1 - b * m1, 0.0)
    if C is None:
        step = max(1, min(K, _PASS_SAMPLES // M))
        return (K * M * b + a * -(-K // step)) / workers
    sweeps: list[int] = []
    _chunked_replicate(
        plan,
        ss,
        2 * min(C, 64),
        min(C, 64),
        D,
        qmc,
        schedule,
        tail_size(2 * min(C, 64)),
        sweeps=sweeps,
    )
    return K * sweeps[0] * (M * b + a * -(-M // C))


def _duration(seconds: float) -> str:
    """``seconds`` for humans: ``"0.4 s"``, ``"35 min"``, ``"2.1 h"``."""
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"
