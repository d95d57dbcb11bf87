r"""The one test of "is this a covariance": symmetric and positive semidefinite.

A core module (numpy and :mod:`tensorprog.core.errors` only), so that the DSL
(:meth:`tensorprog.Program.vectors`, whose initial law must be a covariance) and the
Gaussian numerics (:func:`tensorprog.gaussian.psd_factor`, which factors one) apply
the same rule with the same tolerance and the same message:

* the matrix is symmetric to :math:`10^{-9}` relative to its largest entry;
* the eigenvalues of its correlation matrix :math:`D^{-1}CD^{-1}`,
  :math:`D=\operatorname{diag}(\sqrt{C_{ii}})` (:func:`equilibration`), are
  :math:`\ge-\mathrm{tol}\cdot\max(1,\lambda_{\max})`, ``tol`` = :data:`PSD_TOL`;
  above that they are rounding of a singular matrix, below it the matrix is refused
  with a :class:`~tensorprog.core.errors.NonPSDError` naming it, never clipped silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NonPSDError, NumericalError, ProgramTypeError, ProgramValueError

__all__ = ["PSD_TOL", "SYM_TOL", "equilibration", "psd_eigh", "check_psd", "batch_index_text"]

#: Relative tolerance below which a negative eigenvalue is treated as rounding.
PSD_TOL = 1e-10
#: Relative tolerance for the symmetry of a covariance matrix.
SYM_TOL = 1e-9


def batch_index_text(mask: np.ndarray) -> str:
    """Describe the first True entry of a batch mask (empty for unbatched input)."""
    if mask.ndim == 0:
        return ""
    idx = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return f" (at batch index {tuple(int(i) for i in idx)})"


def equilibration(cov: np.ndarray) -> np.ndarray:
    r"""The scales :math:`s_i=\sqrt{C_{ii}}` (1 where :math:`C_{ii}\le0`) of covariances
    ``(..., k, k)``.

    Eigen-decompositions are taken of the correlation matrix :math:`D^{-1}CD^{-1}`,
    :math:`D=\operatorname{diag}(s)`, never of :math:`C` itself: a backward-pass
    Gaussian of variance :math:`10^{17}` next to a forward one of variance 8 (a deep,
    high-gain network) would otherwise lose every digit of the small block to the
    large eigenvalue's rounding (:math:`\epsilon\lambda_{\max}\approx 10`), while
    the correlation matrix keeps each coordinate accurate relative to its own scale.
    """
    d = np.diagonal(cov, axis1=-2, axis2=-1)
    return np.sqrt(np.where(d > 0, d, 1.0))


def psd_eigh(
    cov: Any, *, tol: float = PSD_TOL, what: str = "covariance"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Validate a batch of covariances and return their equilibrated eigen-decomposition.

    Parameters
    ----------
    cov : array_like, shape (..., k, k)
        Covariance matrices; leading axes are a batch.
    tol : float, optional
        Eigenvalues (of the correlation matrix) in
        :math:`[-\mathrm{tol}\cdot\max(1,\lambda_{\max}),0)` are rounding errors.
    what : str, optional
        Name of the matrix in error messages (e.g. ``"vectors 'xi': cov"``).

    Returns
    -------
    s, eigval, eigvec : numpy.ndarray
        The scales :math:`s` (:func:`equilibration`), shape ``(..., k)``, and the
        eigenvalues (ascending) and eigenvectors of :math:`D^{-1}\tfrac12(C+C^\top)D^{-1}`,
        so that :math:`C=DV\operatorname{diag}(\lambda)V^\top D`.

    Raises
    ------
    ProgramTypeError
        If ``cov`` is complex.
    ProgramValueError
        If ``cov`` does not have shape (..., k, k), or ``tol`` is negative.
    NumericalError
        If ``cov`` contains NaN or inf.
    NonPSDError
        If a matrix is not symmetric (beyond :data:`SYM_TOL` relative to its largest
        entry) or has an eigenvalue below :math:`-\mathrm{tol}\cdot\max(1,\lambda_{\max})`.

    Examples
    --------
    >>> s, w, _ = psd_eigh([[4.0, 2.0], [2.0, 1.0]])  # rank one: correlation 1
    >>> s.tolist(), [round(x, 12) for x in w.tolist()]
    ([2.0, 1.0], [0.0, 2.0])
    """
    if np.iscomplexobj(cov):
        raise ProgramTypeError(f"{what} must be real; got a complex array")
    c = np.asarray(cov, dtype=float)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ProgramValueError(
            f"{what} must be an array of square matrices, shape (..., k, k); got shape {c.shape}"
        )
    if not tol >= 0:
        raise ProgramValueError(f"tol must be a nonnegative number; got {tol!r}")
    if not np.all(np.isfinite(c)):
        raise NumericalError(f"{what} contains NaN or inf entries")
    if c.shape[-1] == 0:
        return c[..., 0], c[..., 0], c.copy()
    ct = np.swapaxes(c, -1, -2)
    scale = np.max(np.abs(c), axis=(-2, -1))
    asym = np.max(np.abs(c - ct), axis=(-2, -1))
    bad = asym > SYM_TOL * scale
    if np.any(bad):
        raise NonPSDError(
            f"{what} is not symmetric{batch_index_text(bad)}: "
            f"max |C - C^T| = {float(np.max(asym)):.6g}; a covariance must be a "
            "symmetric positive semidefinite matrix"
        )
    s = equilibration(c)
    eigval, eigvec = np.linalg.eigh(0.5 * (c + ct) / (s[..., :, None] * s[..., None, :]))
    lam_min = eigval[..., 0]
    threshold = tol * np.maximum(1.0, eigval[..., -1])
    bad = lam_min < -threshold
    if np.any(bad):
        worst = float(np.min(np.where(bad, lam_min, np.inf)))
        raise NonPSDError(
            f"{what} is not positive semidefinite{batch_index_text(bad)}: the smallest "
            f"eigenvalue of its correlation matrix is {worst:.6g}; a covariance must be "
            "positive semidefinite"
        )
    return s, eigval, eigvec


def check_psd(cov: Any, what: str) -> None:
    """Raise unless ``cov`` is a (batch of) symmetric PSD matrices (:func:`psd_eigh`).

    Examples
    --------
    >>> check_psd([[1.0, 0.5], [0.5, 1.0]], "cov")
    >>> check_psd([[1.0, 2.0], [2.0, 1.0]], "vectors 'xi': cov")
    Traceback (most recent call last):
    ...
    tensorprog.core.errors.NonPSDError: vectors 'xi': cov is not positive semidefinite: the smallest eigenvalue of its correlation matrix is -1; a covariance must be positive semidefinite
    """
    psd_eigh(cov, what=what)
