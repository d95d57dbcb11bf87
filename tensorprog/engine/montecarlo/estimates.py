"""What the replicates of a pass estimate: typed estimate keys and :class:`_Estimates`,
the running sums and finished estimates shared by the chunks and sweeps of one pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tails import merge_tops, tail_size, top_values
from .linalg import _regression

_PENDING = None  # a value not computable in this sweep (chunked replicates only)


@dataclass(frozen=True, slots=True)
class MomentKey:
    """Estimate key: the mean of the Moment of constant ``cid``."""

    cid: int


@dataclass(frozen=True, slots=True)
class PairKey:
    """Estimate key: ``𝔼[Z^a Z^b]`` of the vectors with ids ``i ≤ j``."""

    i: int
    j: int


@dataclass(frozen=True, slots=True)
class DotKey:
    """Estimate key: the ZDot regression coefficients of the MatMul whose hat is ``bid``."""

    bid: int


class _Estimates:
    """The replicates' estimates so far (shared by the chunks and sweeps of one pass).

    Keys: :class:`MomentKey` a Moment's mean; :class:`PairKey` the second moment
    ``𝔼[Z^a Z^b]`` of two vectors (a product Moment, or the covariance of two hats of
    one family: the same sums serve both); :class:`DotKey` the regression coefficients
    of a MatMul's ZDot. ``acc`` holds this sweep's sums over samples,
    ``final`` finished estimates (arrays with the replicate axis first), ``L[family]``
    the ``(K, n, n)`` factor of the family's hat covariance with ``factored[family]``
    rows done, ``U[family]`` its rank-tolerant inverse (see :func:`_factor_row`).
    """

    def __init__(self, M: int) -> None:
        self.M = M  # samples per replicate (all chunks)
        self.final: dict[Any, np.ndarray] = {}
        self.acc: dict[Any, tuple[np.ndarray, ...]] = {}
        self.L: dict[Any, np.ndarray] = {}
        self.U: dict[Any, np.ndarray] = {}
        self.factored: dict[Any, int] = {}
        #: Moment const id -> the ``tail + 1`` largest |integrand| values of the pass's
        #: replicates (1, ·), merged over chunks: the tail diagnostic (:mod:`..tails`).
        #: ``tail`` is that of all the run's tail draws (set by :func:`run_montecarlo`), so
        #: that the passes' tops hold the run's.
        self.tops: dict[int, np.ndarray] = {}
        self.tail = tail_size(M)
        #: The first ``prefix`` samples of each replicate enter the tails (None: all;
        #: :data:`TAIL_DRAWS`).
        self.prefix: int | None = None

    def add_tail(self, cid: int, values: np.ndarray) -> None:
        """Merge a chunk's samples (K, C) of Moment ``cid``'s integrand into its tail (of
        all the chunk's replicates together: a partition of K·C values for the largest
        ``tail + 1``, instead of one per replicate that kept a third of each)."""
        self.tops[cid] = merge_tops(
            self.tops.get(cid), top_values(values.reshape(1, -1), self.tail), self.tail
        )

    def add(self, key: Any, sums: tuple[np.ndarray, ...]) -> None:
        """Add one chunk's sums to the running sums of ``key``."""
        acc = self.acc.get(key)
        with np.errstate(all="ignore"):
            self.acc[key] = sums if acc is None else tuple(a + b for a, b in zip(acc, sums))

    def finish(self, key: Any = None) -> int:
        """Turn the running sums of ``key`` (default: all) into estimates; how many."""
        keys = list(self.acc) if key is None else [key]
        for k in keys:
            sums = self.acc.pop(k)
            self.final[k] = _regression(sums, self.M) if isinstance(k, DotKey) else sums[0] / self.M
        return len(keys)
