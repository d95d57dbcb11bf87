"""The standard normals of a pass: scrambled Sobol' points (:mod:`..qmc`) or iid blocks,
a function of the seed, the replicate and the sample's index alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..qmc import MAX_DIM, normal_quantile, sobol_normals, sobol_uniforms

#: iid normals come in blocks of this many samples, one generator each
#: (:func:`_iid_normals`); chunks of long replicates are multiples of it.
_IID_BLOCK = 4096
#: Normals per call of the iid generator at most (512 KiB of float64: the temporary
#: stays in cache for its transposed copy).
_IID_SCRATCH = 2**16


def _normal_source(
    seeds: Sequence[np.random.SeedSequence], M: int, D: int, qmc: bool, start: int = 0
) -> Callable[[], np.ndarray]:
    """``() -> (K, D, M)`` standard normals, ``[r]`` from stream ``seeds[r]``.

    Identical on every call with the same arguments (fresh generators), and a function
    of the sample index alone: the chunks of a replicate are pieces of what the whole
    replicate draws. iid: samples ``start … start+M−1`` of the stream's blocks
    (:func:`_iid_normals`). With ``qmc``: points ``start … start+M−1`` of a
    ``D``-dimensional Sobol' sequence scrambled by the stream (:mod:`..qmc`; row ``d``
    is coordinate ``d`` through the normal quantile). The function carries ``qmc`` and
    ``start`` as attributes (an OuterNonlin's inner average depends on both).
    """
    K = len(seeds)

    def draw() -> np.ndarray:
        out = np.empty((K, D, M))
        if qmc and D <= MAX_DIM:  # the uniforms of every replicate, then one quantile
            for r, s in enumerate(seeds):
                sobol_uniforms(D, M, np.random.default_rng(s), start, out=out[r])
            return normal_quantile(out, out=out)
        for r, s in enumerate(seeds):  # one call per stream: numpy releases the GIL
            rng = np.random.default_rng(s)
            if qmc:
                sobol_normals(D, M, rng, start, out=out[r])
            else:
                _iid_normals(s, start, out[r])
        return out

    draw.qmc, draw.start = bool(qmc), start  # type: ignore[attr-defined]
    return draw


def _iid_normals(ss: np.random.SeedSequence, start: int, out: np.ndarray) -> None:
    """Fill ``out`` (D, m) with the iid normals of samples ``start … start+m−1``.

    Samples come in blocks of :data:`_IID_BLOCK`: block ``b`` draws from its own
    generator, ``default_rng`` of the child ``b`` of ``ss`` (``spawn_key + (b,)``),
    sample after sample, ``D`` normals each (one per base Gaussian). The normals of a
    sample depend only on the seed, the replicate and the sample's index, never on how
    a replicate is cut into chunks or how many replicates share a pass. (A chunk that
    starts inside a block draws and drops the block's earlier samples; chunks are
    multiples or divisors of a block, see :func:`~.run._chunk_size`.)
    """
    D, m = out.shape
    S = _IID_BLOCK
    piece = max(1, _IID_SCRATCH // D)  # samples per call: a bounded temporary
    end = start + m
    for b in range(start // S, -(-end // S)):
        lo, hi = max(start, b * S), min(end, (b + 1) * S)
        rng = np.random.default_rng(
            np.random.SeedSequence(
                ss.entropy, spawn_key=ss.spawn_key + (b,), pool_size=ss.pool_size
            )
        )
        skip = lo - b * S
        while skip:
            n = min(skip, piece)
            rng.standard_normal((n, D))
            skip -= n
        for a in range(lo, hi, piece):
            n = min(hi - a, piece)
            out[:, a - start : a - start + n] = rng.standard_normal((n, D)).T
