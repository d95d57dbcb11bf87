"""Running Monte Carlo: replicates grouped into passes, threads, chunked replicates,
memory sizing, seeds, progress and the estimated time, and the merging of the passes'
estimates and tails (:func:`run_montecarlo`)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
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
from ...core.errors import NumericalError
from ...core.ir import OuterNonlin
from ..plan import Plan
from ..tails import StableError, khat_of_tops, merge_tops, stable_errors, tail_size
from .estimates import _Estimates
from .rules import MonteCarloPass
from .schedule import _Schedule
from .sources import _IID_BLOCK, _normal_source

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
        Show a progress bar over the replicates.
    max_memory : int, optional
        Bytes for the sample arrays (default: half of what the process may allocate,
        :func:`~tensorprog.core._resources.montecarlo_memory`). As many replicates as fit run in one pass (at
        least one); a replicate that does not fit alone runs in chunks of ``C`` samples
        (see :class:`MonteCarloPass`). The estimates are those of whole replicates, so
        the result does not depend on ``max_memory`` beyond floating-point summation
        order.
    tails : dict, optional
        Filled with ``{const id: k̂}`` for every Moment estimated: the Pareto ``k̂`` of
        its integrand's samples, fitted to the largest ``min(S/5, 3√S)`` of all
        ``S = K·M`` (:mod:`..tails`; at most :data:`TAIL_DRAWS` of them, a prefix of each
        replicate).
    stable : dict, optional
        Filled with ``{const id: StableError}`` for the Moments whose ``k̂`` is in
        ``[1/2, 1)`` (a mean without a variance): the law of their estimate's error, from
        which :meth:`..limit.Limit.interval` gives a robust interval.

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
    D = schedule.D
    K = int(batches)
    M = max(2, samples // K)
    if max_memory is None:
        max_memory = montecarlo_memory()
    # Passes run concurrently on the cores (in threads: numpy releases the GIL inside its
    # kernels; the training benchmark's limit takes 0.33 s with two threads against
    # 0.42 s with one); each gets its share of max_memory. Results do not depend on the
    # scheduling: every pass has its own replicates and streams.
    workers = max(1, min(available_cpus(), _MAX_WORKERS, K))
    fit = int(max_memory) // (per_sample * M * workers)  # whole replicates per pass
    if not fit:
        workers = 1
        fit = int(max_memory) // (per_sample * M)
    C = _chunk_size(int(max_memory) // per_sample, per_sample, max_memory)
    step = max(1, min(K, fit, _PASS_SAMPLES // M))
    if workers > 1:  # balanced passes, at least one per worker
        npass = max(workers, -(-K // step))
        step = -(-K // npass)
    need = per_sample * (min(workers, -(-K // step)) * step * M if fit else C)
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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        chunks = f", chunks of {C}" if not fit else ""
        seconds = len(levels) * _estimate_seconds(  # (the coarse level: at most as long)
            plan, schedule, K, M, C if not fit else None, qmc, workers
        )
        tqdm.write(
            f"Monte Carlo: {K} replicates × {M} samples{chunks} on {workers} "
            f"thread(s), about {gib(need)} of sample arrays; estimated time "
            f"{_duration(seconds)}",
            file=sys.stderr,
        )
        bar = tqdm(total=K, desc=f"Monte Carlo ({K}×{M} samples{chunks})", leave=False)

    def one_pass(seeds: Sequence[np.random.SeedSequence]) -> tuple[list[dict[int, Any]], dict]:
        out: list[dict[int, Any]] = []
        tops: dict = {}
        for inner in levels:  # (the coarse level: same normals, half-size inner blocks)
            if not fit:
                const, t = _chunked_replicate(
                    plan, seeds[0], M, C, D, qmc, schedule, T, inner=inner
                )
            else:
                state = _Estimates(M)
                state.tail, state.prefix = T, prefix
                mc = MonteCarloPass(
                    plan,
                    len(seeds),
                    M,
                    _normal_source(seeds, M, D, qmc),
                    state,
                    schedule=schedule,
                    inner=inner,
                )
                mc.run()
                const, t = mc.const, state.tops
            out.append(const)
            tops = tops or t
        return out, tops

    groups = [children[start : start + step] for start in range(0, K, step)]
    values: dict[int, list[np.ndarray]] = {}
    coarse: dict[int, list[np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(groups) > 1:
            stack.enter_context(blas_threads(min(workers, len(groups))))
            pool = stack.enter_context(ThreadPoolExecutor(min(workers, len(groups))))
            consts = pool.map(one_pass, groups)  # in order, whatever finishes first
        else:
            consts = map(one_pass, groups)
        # the largest draws of each Moment's integrand over the replicates so far
        # (O(√(K·M)) memory per Moment, merged as passes finish)
        tops: dict[int, np.ndarray] = {}
        seen: dict[int, int] = {}
        for seeds, (const, tp_) in zip(groups, consts):
            for cid, v in const[0].items():
                values.setdefault(cid, []).append(_per_replicate(v, len(seeds)))
            if len(levels) > 1:
                for cid, v in const[-1].items():
                    coarse.setdefault(cid, []).append(_per_replicate(v, len(seeds)))
            for cid, t in tp_.items():
                tops[cid] = merge_tops(tops.get(cid), t.reshape(1, -1), T)
                seen[cid] = seen.get(cid, 0) + len(seeds)
            if bar is not None:
                bar.update(len(seeds))
    if bar is not None:
        bar.close()
    cids = list(values)
    vals = np.array([np.concatenate(values[c]) for c in cids]).reshape(len(cids), K)
    means, ses = vals.mean(axis=1), vals.std(axis=1, ddof=1) / np.sqrt(K)
    if len(levels) > 1:  # an OuterNonlin's inner average: its bias bound joins the error
        half = np.array([np.concatenate(coarse[c]) for c in cids]).reshape(len(cids), K)
        ses = np.hypot(ses, inner_bias(vals, half))
    # k̂ of every Moment: one fit (batched over Moments) to the largest of its tail draws
    full = [c for c, n in seen.items() if n == K]
    if tails is not None and full:
        top = np.concatenate([tops[c] for c in full])
        kh = khat_of_tops(top)
        tails.update(zip(full, kh.tolist()))
        if stable is not None:
            errs = stable_errors(top, kh, T / (K * prefix), K * M)
            stable.update((c, e) for c, e in zip(full, errs) if e is not None)
    return {c: (m, e) for c, m, e in zip(cids, means.tolist(), ses.tolist())}


def _per_replicate(v: Any, k: int) -> np.ndarray:
    """A pass's estimate (a (k, 1) array, or a known number) as one value per replicate."""
    if isinstance(v, np.ndarray) and v.size == k:
        return v.reshape(k)
    return np.broadcast_to(np.ravel(v), (k,))


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
    """Samples per chunk of a replicate that does not fit whole: ``fit`` (what
    ``max_memory`` holds) rounded down to a multiple of :data:`_IID_BLOCK` (a chunk then
    draws whole blocks of iid normals), or to a power of two below it (a divisor).

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
    if fit >= _IID_BLOCK:
        return fit - fit % _IID_BLOCK
    return 1 << (fit.bit_length() - 1)


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
    """One replicate of ``M`` samples in chunks of at most ``C``: sweeps until complete.

    Chunk ``j`` draws samples ``jC … jC + C − 1`` of the replicate's stream (the same
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
