"""Batched linear algebra of a Monte Carlo pass: one BLAS call per instruction.

Every array has the replicate axis first (``K`` replicates of a pass): linear
combinations of the rows of a stack (:func:`_combination`, :func:`_combine`), inner
products with a stack (:func:`_inner`), the rank-tolerant incremental Cholesky factor of
a hat family's covariance (:func:`_factor_row`) and the least-squares slopes of the Ż
coefficients (:func:`_regression`), each computed per replicate, so that a replicate's
numbers do not depend on how many replicates share its pass.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .schedule import _Linear

_RTOL_PIVOT = 1e-12  # Cholesky: pivots / remainders below this × max(1, |var|) are zero
_RCOND = 1e-10  # regression: eigenvalues of Cov(Ẑ_S) below this × the largest are dropped


def _combination(coef: np.ndarray, stack: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``Σ_j coef[:, j] · stack[:, j]`` per replicate: (K, j), (K, j, M) → (K, M).

    One batched ``matmul`` (a BLAS product per replicate, the GIL released once); with
    contiguous coefficient rows a replicate's result does not depend on how many share
    the pass.
    """
    coef = np.ascontiguousarray(coef)[:, None, :]  # (strided rows take other code paths)
    if out is None:
        return np.matmul(coef, stack)[:, 0]
    np.matmul(coef, stack, out=out[:, None, :])
    return out


def _inner(stack: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``Σ_samples stack[:, j] · z`` per replicate: (K, j, M), (K, M) → (K, j).

    ``einsum`` rather than a batched ``matmul`` of the stack with a column: it releases
    the GIL for the whole call (concurrent passes overlap), and each replicate's sums
    do not depend on how many share the pass.
    """
    return np.einsum("rjm,rm->rj", stack, z)


def _combine(
    lin: _Linear,
    args: list[Any],
    params: list[Any],
    theta: np.ndarray,
    stacks: dict[int, np.ndarray],
    shape: tuple[int, int],
) -> np.ndarray:
    """The linear Nonlin planned as ``lin`` (see :class:`_Schedule`), in one new array:
    each block by one batched product, then its base argument and the loose terms
    accumulated in place."""
    out = None
    for blk in lin.blocks:
        part = _combination(blk.coefficients(theta), stacks[blk.sid][:, blk.lo : blk.hi])
        if out is None:
            out = part
        else:
            out += part
    if lin.base is not None:  # (added, not copied first: one pass less)
        base = args[lin.base]
        out = np.array(np.broadcast_to(base, shape)) if out is None else np.add(out, base, out=out)
    tmp = None
    for i, c, P in lin.loose:
        coef: Any = c
        for j in P:
            coef = coef * params[j]
        if out is None:
            out = np.multiply(args[i], coef)
            if out.shape != shape:
                out = np.array(np.broadcast_to(out, shape))
        else:
            tmp = np.multiply(args[i], coef, out=tmp if tmp is not None else np.empty(shape))
            out += tmp
    return out


def _regression(sums: tuple[np.ndarray, ...], n: int) -> np.ndarray:
    """Least-squares slopes of ``z`` on hats ``H`` from sample sums, per replicate.

    Parameters
    ----------
    sums : tuple of ndarray
        ``ΣH`` (K, k), ``Σz`` (K, 1), ``ΣHHᵀ`` (K, k, k) and ``ΣHz`` (K, k) over ``n``
        samples.
    n : int
        The number of samples.

    Returns
    -------
    ndarray, shape (K, k)
        ``β = Cov(H)⁺ Cov(H, z)`` — the pseudo-inverse drops eigenvalues below
        ``1e-10`` times the largest, so collinear hats (a rank-deficient family) share
        their coefficient.

    Notes
    -----
    Where a replicate's ``Cov(H)`` is provably that well conditioned, its
    pseudo-inverse is its inverse, applied through a Cholesky factor ``Cov(H) = LLᵀ``
    (a tenth of the cost of the eigendecomposition): with ``λ_min ≥ 1/‖L⁻¹‖_F²`` and
    ``λ_max ≤ tr Cov(H)``, no eigenvalue is dropped if
    ``1/‖L⁻¹‖_F² > 10⁻¹⁰ tr Cov(H)``.
    The other replicates (those whose factorisation fails included) get the
    pseudo-inverse from the eigendecomposition. The choice is made per replicate, so
    a replicate's estimate does not depend on the others in its pass.
    """
    sh, sz, shh, shz = sums
    with np.errstate(all="ignore"):
        cov_h = shh / n - sh[:, :, None] * sh[:, None, :] / n**2
        cov_hz = shz / n - sh * sz / n**2
        beta = np.empty_like(cov_hz)
        Linv = _cholesky_inverse(cov_h)
        good = 1.0 / np.einsum("rij,rij->r", Linv, Linv) > _RCOND * np.trace(
            cov_h, axis1=1, axis2=2
        )
        if good.any():
            Lg = Linv[good]
            beta[good] = (Lg.transpose(0, 2, 1) @ (Lg @ cov_hz[good, :, None]))[:, :, 0]
        bad = ~good
        if bad.any():
            beta[bad] = (
                np.linalg.pinv(cov_h[bad], rcond=_RCOND, hermitian=True) @ cov_hz[bad, :, None]
            )[:, :, 0]
    return beta


def _cholesky_inverse(A: np.ndarray) -> np.ndarray:
    """``L⁻¹`` of ``A = LLᵀ`` per matrix of a (K, k, k) batch; ``inf`` where ``A`` is not
    numerically positive definite (each matrix on its own: numpy fails a whole batch)."""
    try:
        return np.linalg.inv(np.linalg.cholesky(A))
    except np.linalg.LinAlgError:
        out = np.full_like(A, np.inf)
        for r, a in enumerate(A):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[r] = np.linalg.inv(np.linalg.cholesky(a))
        return out


def _factor_row(L: np.ndarray, U: np.ndarray, k: int, cov: np.ndarray) -> None:
    """Row ``k`` of a batch of rank-tolerant lower-triangular factors and their inverses.

    Parameters
    ----------
    L : ndarray, shape (K, n, n)
        One factor per replicate; rows ``< k`` are done. Row ``k`` is filled in place.
    U : ndarray, shape (K, n, n)
        ``L⁺``, the rank-tolerant inverse of ``L`` (rows ``< k`` done), kept alongside
        so that a row costs two small batched products instead of ``k`` steps.
    k : int
        The row to fill.
    cov : ndarray, shape (K, k + 1)
        The new member's covariance with members ``0..k`` (the last entry its variance).

    Notes
    -----
    ``L[k, :k]`` solves ``L[:k, :k] x = cov[:k]`` by forward substitution, with
    ``x_i = 0`` where the pivot ``L[i, i]`` is 0 (a direction this replicate's family does
    not span); that substitution is linear in ``cov``, ``x = U[:k, :k] cov[:k]``, with
    ``U[i] = (e_i − Σ_{j<i} L[i, j] U[j]) / L[i, i]`` (0 for a zero pivot). The pivot
    ``L[k, k]`` is the square root of the remainder ``var − Σ_i L[k, i]²``, or 0 when
    that is at most ``1e-12 max(1, |var|)``. Replicates may differ in their ranks.
    """
    var = cov[:, k]
    tol = _RTOL_PIVOT * np.maximum(1.0, np.abs(var))
    with np.errstate(all="ignore"):
        row = np.matmul(U[:, :k, :k], cov[:, :k, None])[:, :, 0]
        L[:, k, :k] = row
        d = var - np.einsum("ri,ri->r", row, row)
        piv = np.sqrt(np.where(d > tol, d, 0.0))
        L[:, k, k] = piv
        inv = np.where(piv > 0.0, 1.0 / piv, 0.0)
        U[:, k, :k] = -inv[:, None] * np.matmul(row[:, None, :], U[:, :k, :k])[:, 0]
        U[:, k, k] = inv
