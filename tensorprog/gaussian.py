r"""Expectations under (jointly) Gaussian laws.

Pure numerics used by the interpreters of a Tensor Program: the Master Theorem
turns every limit scalar into an expectation :math:`\mathbb E\,\phi(Z)` over a
centred or shifted Gaussian vector :math:`Z` [TP4 §7 Def 7.3]. This module offers
three ways of computing such an expectation and nothing else (no IR, no
nonlinearity objects; the engine wires these functions to its registries):

* :func:`gauss_hermite_expectation` -- tensor-product Gauss--Hermite quadrature
  over a PSD factor of the covariance (:func:`psd_factor`), for up to 4 Gaussians
  (``docs/concepts/evaluation.md``).
* :func:`gaussian_moment` -- exact moments of polynomials (Isserlis/Wick theorem
  generalised to nonzero means), numeric or symbolic.
* Closed forms for a centred bivariate Gaussian :math:`(u, v)` with
  :math:`\operatorname{Var}u=k_{11}`, :math:`\operatorname{Var}v=k_{22}`,
  :math:`\operatorname{Cov}(u,v)=k_{12}` (e.g. :func:`relu_relu`, :func:`erf_erf`),
  and one-variable means (e.g. :func:`mean_relu`), collected in
  :data:`PAIR_CLOSED_FORMS` and :data:`SINGLE_CLOSED_FORMS`.

Conventions
-----------
* :math:`\mathrm{step}(z)=\mathbb 1[z>0]` for :math:`z\neq0` and
  :math:`\mathrm{step}(0)=\tfrac12` (``sympy.Heaviside``'s default ``H(0)=1/2``).
  This only matters for a zero-variance argument: :math:`\mathbb E\,\mathrm{step}(u)
  =\tfrac12` for every centred :math:`u`, including :math:`u\equiv0`.
* :math:`\mathrm{sign}(0)=0` (numpy and sympy), so that
  :math:`\mathrm{sign}=2\,\mathrm{step}-1` everywhere.
* :math:`\mathrm{derf}(z)=\mathrm{erf}'(z)=\tfrac{2}{\sqrt\pi}e^{-z^2}`.
* :math:`\rho=k_{12}/\sqrt{k_{11}k_{22}}` is clipped to :math:`[-1,1]`; when
  :math:`k_{11}k_{22}=0` the pair is degenerate, :math:`k_{12}` must be (numerically)
  zero and :math:`\rho:=0` is used, which gives the correct limit in every closed
  form below (a zero-variance centred Gaussian is the constant 0).
* Covariances are accepted when they are PSD up to a tolerance: an eigenvalue
  :math:`\lambda\ge-10^{-10}\max(1,\lambda_{\max})` is treated as 0; below that a
  :class:`~tensorprog.errors.NonPSDError` is raised, never clipped silently.
* Closed forms behave like numpy ufuncs: they broadcast their arguments and return
  a numpy scalar for scalar input. Every function raises
  :class:`~tensorprog.errors.NumericalError` instead of returning NaN or inf.

References
----------
* [TP4] G. Yang, E. Hu, *Feature Learning in Infinite-Width Neural Networks*, 2021.
* [CS09] Y. Cho, L. Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009
  (arc-cosine kernels of degree 0 and 1).
* [W97] C. K. I. Williams, *Computing with Infinite Networks*, NeurIPS 1997 (erf).
* [NT] neural-tangents, ``neural_tangents/_src/stax/elementwise.py``: ``ABRelu`` and
  ``Erf`` (summarised in ``docs/concepts/kernel-limits.md``), ``Abs = ABRelu(-1, 1)`` and ``Sign``
  (``nngp = 1 - 2 angle / pi``).
* Stein's lemma: :math:`\mathbb E[u\,g(v)]=\operatorname{Cov}(u,v)\,\mathbb E[g'(v)]`
  for centred jointly Gaussian :math:`(u,v)`; formulas marked *DERIVED* follow from it,
  from :math:`\mathrm{relu}(z)=(z+|z|)/2`, :math:`\mathrm{step}=(1+\mathrm{sign})/2`,
  or from the characteristic function :math:`\mathbb E\,e^{tu+sv}=
  e^{(t^2k_{11}+2tsk_{12}+s^2k_{22})/2}` (also for complex :math:`t,s`), and are
  checked against independent quadrature in ``tests/test_gaussian.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import sympy
from numpy.polynomial.hermite_e import hermegauss
from sympy.polys.polyerrors import BasePolynomialError

from tensorprog.errors import (
    NonPSDError,
    NumericalError,
    ProgramTypeError,
    ProgramValueError,
    ResourceError,
)

__all__ = [
    "psd_factor",
    "equilibration",
    "default_degree",
    "gauss_hermite_expectation",
    "trapezoid_expectation",
    "panel_expectation",
    "psd_cholesky",
    "gaussian_moment",
    "PAIR_CLOSED_FORMS",
    "SINGLE_CLOSED_FORMS",
    # pairs
    "identity_identity",
    "identity_relu",
    "identity_step",
    "identity_sign",
    "identity_abs",
    "identity_erf",
    "identity_derf",
    "identity_sin",
    "identity_cos",
    "identity_exp",
    "relu_relu",
    "relu_step",
    "relu_sign",
    "relu_abs",
    "step_step",
    "step_sign",
    "step_abs",
    "sign_sign",
    "sign_abs",
    "abs_abs",
    "erf_erf",
    "erf_derf",
    "derf_derf",
    "sin_sin",
    "sin_cos",
    "cos_cos",
    "exp_exp",
    "exp_sin",
    "exp_cos",
    # means
    "mean_identity",
    "mean_relu",
    "mean_step",
    "mean_sign",
    "mean_abs",
    "mean_erf",
    "mean_derf",
    "mean_sin",
    "mean_cos",
    "mean_exp",
]

#: Relative tolerance below which a negative eigenvalue is treated as rounding.
PSD_TOL = 1e-10
#: Relative tolerance for the symmetry of a covariance matrix.
_SYM_TOL = 1e-9
#: Largest number of jointly Gaussian variables (or linear forms of them) handled by
#: quadrature; the engine sends integrands of more to Monte Carlo.
MAX_QUADRATURE_DIM = 4
#: Default Gauss--Hermite degree per dimension (see :func:`default_degree`).
_DEFAULT_DEGREE = {1: 120, 2: 100, 3: 46, 4: 18}
#: Largest tensor-product rule :func:`gauss_hermite_expectation` will build.
_MAX_NODES = 2**20
#: Memory budget of one chunk of quadrature points (and of f's output).
_CHUNK_BYTES = 64 * 2**20

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

ArrayLike = Any
PairForm = Callable[[ArrayLike, ArrayLike, ArrayLike], Any]
SingleForm = Callable[[ArrayLike], Any]


# --------------------------------------------------------------------------------------
# PSD factor
# --------------------------------------------------------------------------------------


def _batch_index_text(mask: np.ndarray) -> str:
    """Describe the first True entry of a batch mask (empty for unbatched input)."""
    if mask.ndim == 0:
        return ""
    idx = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return f" (at batch index {tuple(int(i) for i in idx)})"


def psd_factor(cov: ArrayLike, *, tol: float = PSD_TOL, what: str = "covariance") -> np.ndarray:
    r"""Factor a batch of PSD covariance matrices, allowing singular ones.

    Returns :math:`F` with :math:`FF^\top=C`, computed from the eigendecomposition
    :math:`C=V\operatorname{diag}(\lambda)V^\top` as
    :math:`F=V\operatorname{diag}(\sqrt{\lambda})`. Unlike a Cholesky factor this
    exists for every positive *semi*definite :math:`C` (e.g. :math:`\rho=\pm1`, a
    zero-variance coordinate, or :math:`Z^{x+y}` next to :math:`Z^x, Z^y`), so
    :math:`X=\mu+FG`, :math:`G\sim\mathcal N(0,I)`, samples
    :math:`\mathcal N(\mu, C)` for any PSD :math:`C`.

    Parameters
    ----------
    cov : array_like, shape (..., k, k)
        Covariance matrices; leading axes are a batch.
    tol : float, optional
        Eigenvalues in :math:`[-\mathrm{tol}\cdot\max(1,\lambda_{\max}),0)` are
        rounding errors and are set to 0.
    what : str, optional
        Name of the matrix used in error messages (e.g. ``"covariance of (Z^h, Z^g)"``).

    Returns
    -------
    numpy.ndarray, shape (..., k, k)
        The factor :math:`F` (float64).

    Raises
    ------
    NumericalError
        If ``cov`` contains NaN or inf.
    NonPSDError
        If a matrix is not symmetric (beyond :math:`10^{-9}` relative to its largest
        entry) or has an eigenvalue below :math:`-\mathrm{tol}\cdot\max(1,\lambda_{\max})`.
    ProgramValueError
        If ``cov`` does not have shape (..., k, k).
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
        return c.copy()
    ct = np.swapaxes(c, -1, -2)
    scale = np.max(np.abs(c), axis=(-2, -1))
    asym = np.max(np.abs(c - ct), axis=(-2, -1))
    bad = asym > _SYM_TOL * scale
    if np.any(bad):
        raise NonPSDError(
            f"{what} is not symmetric{_batch_index_text(bad)}: "
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
            f"{what} is not positive semidefinite{_batch_index_text(bad)}: the smallest "
            f"eigenvalue of its correlation matrix is {worst:.6g}; a covariance must be "
            "positive semidefinite"
        )
    # eigenvalues within rounding of the largest are zero (a singular matrix's factor
    # keeps its exact rank instead of a noise column of size √ε)
    noise = 8 * c.shape[-1] * np.finfo(float).eps * eigval[..., -1:]
    eigval = np.where(eigval > noise, eigval, 0.0)
    return s[..., :, None] * eigvec * np.sqrt(eigval)[..., None, :]


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


# --------------------------------------------------------------------------------------
# Gauss-Hermite quadrature
# --------------------------------------------------------------------------------------


def default_degree(k: int) -> int:
    r"""Default number of Gauss--Hermite nodes per dimension for ``k`` Gaussians.

    ``{1: 120, 2: 100, 3: 46, 4: 18}``: at most about :math:`10^5` tensor-product
    nodes. A rule of degree :math:`n` integrates polynomials of degree :math:`<2n`
    exactly and converges fast for entire integrands: measured relative errors of
    :math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]` at unit variances are
    :math:`\sim10^{-15}` with the rules for :math:`k\le3` but :math:`8\cdot10^{-7}`
    with the :math:`k=4` rule (:math:`3\cdot10^{-5}` at variance 2). Integrands with complex poles near the real axis converge only like
    :math:`e^{-c\sqrt n}`; measured relative errors of
    :math:`\mathbb E\tanh^2(\sigma G)` are, for :math:`\sigma=1`: :math:`1\cdot10^{-12}`
    (:math:`n=120`), :math:`2\cdot10^{-11}` (100), :math:`3\cdot10^{-7}` (46),
    :math:`4\cdot10^{-4}` (18); for :math:`\sigma=2`: :math:`2\cdot10^{-6}` (120),
    :math:`8\cdot10^{-6}` (100), :math:`8\cdot10^{-4}` (46). For a product of such
    factors in :math:`k` dimensions the error is roughly that of the worst direction.
    Pass ``degree`` explicitly (or use Monte Carlo) when that is not enough.

    Parameters
    ----------
    k : int
        Number of jointly Gaussian variables, :math:`1\le k\le4`.

    Returns
    -------
    int

    Raises
    ------
    ProgramValueError
        If ``k < 1`` or ``k > 4`` (quadrature is limited to 4 Gaussians).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ProgramTypeError(f"k must be an int; got {type(k).__name__}")
    k = int(k)
    if k < 1:
        raise ProgramValueError(f"quadrature needs at least one Gaussian variable; got k={k}")
    if k > MAX_QUADRATURE_DIM:
        raise ProgramValueError(
            f"Gauss-Hermite quadrature is limited to {MAX_QUADRATURE_DIM} Gaussians; "
            f"this expectation involves k={k} jointly Gaussian variables, use Monte "
            "Carlo instead"
        )
    return _DEFAULT_DEGREE[k]


def _hermite_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss--Hermite nodes and weights normalised to sum to 1.

    numpy's ``hermegauss`` (Golub--Welsch) loses its weights above ~360 nodes; larger
    rules come from scipy's ``roots_hermitenorm`` (asymptotic expansions, stable for
    thousands of nodes [Townsend, Trogdon & Olver 2016]).
    """
    if degree <= 300:
        x, w = hermegauss(degree)
    else:
        from scipy.special import roots_hermitenorm

        x, w = roots_hermitenorm(degree)
    return x, w / _SQRT_2PI  # both weights integrate against exp(-x^2/2)


def _tensor_product(x: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``(N, k)`` and product weights ``(N,)`` of the k-fold tensor product of a
    one-dimensional rule ``(x, w)``."""
    nodes = np.stack([g.ravel() for g in np.meshgrid(*([x] * k), indexing="ij")], axis=-1)
    wgrid = np.meshgrid(*([w] * k), indexing="ij")
    return nodes, np.prod(np.stack([g.ravel() for g in wgrid], axis=0), axis=0)


@functools.lru_cache(maxsize=16)
def _tensor_rule(degree: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Tensor-product probabilists' Gauss--Hermite rule for :math:`\mathcal N(0,I_k)`.

    Nodes whose product weight underflows to exactly 0 are dropped (they cannot
    contribute to a finite sum and could only turn it into ``0 * inf = nan``).
    """
    nodes, weights = _tensor_product(*_hermite_rule(degree), k)
    keep = weights > 0.0
    nodes = np.ascontiguousarray(nodes[keep])
    weights = np.ascontiguousarray(weights[keep])
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def _as_values(out: Any, npts: tuple[int, int], vector: bool | None) -> np.ndarray:
    """Check/broadcast the output of an integrand to (b, N) or (b, N, m)."""
    arr = np.asarray(out)
    if arr.dtype.kind in "biu":
        arr = arr.astype(float)
    elif arr.dtype.kind not in "fc":
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError) as exc:
            raise ProgramTypeError(
                f"the integrand returned values of dtype {arr.dtype}, which cannot be "
                "converted to float"
            ) from exc
    is_vector = arr.ndim == 3 if vector is None else vector
    try:
        if is_vector:
            if arr.ndim != 3:
                raise ValueError
            arr = np.broadcast_to(arr, npts + (arr.shape[-1],))
        else:
            if arr.ndim > 2:
                raise ValueError
            arr = np.broadcast_to(arr, npts)
    except ValueError:
        expected = "(b, N, m)" if is_vector else "(b, N) or (b, N, m)"
        raise ProgramValueError(
            f"the integrand must map points of shape (b, N, k) = {npts + ('k',)} to "
            f"values of shape {expected}; got shape {np.shape(out)}"
        ) from None
    return arr


def gauss_hermite_expectation(
    f: Callable[[np.ndarray], Any],
    mean: ArrayLike,
    cov: ArrayLike,
    *,
    degree: int | None = None,
    what: str = "covariance",
    params: ArrayLike | None = None,
) -> np.ndarray:
    r"""Expectation :math:`\mathbb E f(X)`, :math:`X\sim\mathcal N(\mu,C)`, by quadrature.

    With :math:`C=FF^\top` (:func:`psd_factor`, valid for singular :math:`C`),

    .. math::
        \mathbb E f(X)=\mathbb E f(\mu+FG)\approx\sum_{i_1,\dots,i_k}
        w_{i_1}\cdots w_{i_k}\,f\big(\mu+F(x_{i_1},\dots,x_{i_k})\big),

    where :math:`(x_i,w_i)` is the probabilists' Gauss--Hermite rule of the given
    degree, normalised so that :math:`\sum_iw_i=1`
    (``numpy.polynomial.hermite_e.hermegauss`` weights divided by
    :math:`\sqrt{2\pi}`) (``docs/concepts/evaluation.md``). The rule is exact for
    polynomials of degree :math:`<2\cdot\mathrm{degree}` in :math:`G`.

    Parameters
    ----------
    f : callable
        Vectorised integrand. It receives points of shape ``(b, N, k)`` -- a chunk of
        ``b`` elements of the (flattened) batch, each with the ``N`` quadrature
        nodes -- and returns values of shape ``(b, N)``, or ``(b, N, m)`` for ``m``
        integrands at once. It must act pointwise over the leading axis, since it
        may be called several times on different chunks (including once with
        ``b = 1`` to learn ``m``).
    mean : array_like, shape (..., k)
        Means :math:`\mu`.
    cov : array_like, shape (..., k, k)
        Covariances :math:`C` (PSD, possibly singular). The batch axes of ``mean``
        and ``cov`` are broadcast together.
    degree : int, optional
        Nodes per dimension; default :func:`default_degree` ``(k)``.
    what : str, optional
        Name of ``cov`` used in error messages.
    params : array_like, shape (B, m), optional
        Per-element constants of the flattened batch; when given, ``f`` is called as
        ``f(points, params_chunk)`` with the rows of ``params`` matching the chunk.

    Returns
    -------
    numpy.ndarray
        Shape ``batch`` (0-d for unbatched input) or ``batch + (m,)``.

    Raises
    ------
    ProgramValueError
        ``k > 4`` (use Monte Carlo), inconsistent shapes, or a bad ``degree``.
    ResourceError
        If ``degree ** k`` exceeds :math:`2^{20}` nodes.
    NonPSDError
        If a covariance is not PSD (see :func:`psd_factor`).
    NumericalError
        If an input or the result contains NaN or inf (e.g. a diverging integral).

    Notes
    -----
    The batch is processed in chunks so that the points passed to ``f`` and the
    values it returns stay below about 64 MB per call.
    """
    mean_arr, cov_arr, k = _rule_arguments(f, mean, cov, what)
    deg_default = default_degree(k)  # also validates 1 <= k <= 4
    if degree is None:
        deg = deg_default
    else:
        if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
            raise ProgramTypeError(f"degree must be an int; got {degree!r}")
        deg = int(degree)
        if deg < 1:
            raise ProgramValueError(f"degree must be at least 1; got {deg}")
        if deg**k > _MAX_NODES:
            raise ResourceError(
                f"a Gauss-Hermite rule of degree {deg} in {k} dimensions has "
                f"{deg**k} nodes, more than the limit {_MAX_NODES}; lower the degree "
                "or use Monte Carlo"
            )
    nodes, weights = _tensor_rule(deg, k)
    return _on_rule(f, mean_arr, cov_arr, nodes, weights, params, what, "Gauss-Hermite")[0]


def _rule_arguments(f: Any, mean: ArrayLike, cov: ArrayLike, what: str
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(mean, cov, k)`` of a quadrature call (shapes ``(..., k)``, ``(..., k, k)``)."""
    if not callable(f):
        raise ProgramTypeError(f"f must be callable; got {type(f).__name__}")
    cov_arr = np.asarray(cov, dtype=float)
    mean_arr = np.asarray(mean, dtype=float)
    if cov_arr.ndim < 2 or cov_arr.shape[-1] != cov_arr.shape[-2]:
        raise ProgramValueError(f"{what} must have shape (..., k, k); got shape {cov_arr.shape}")
    k = cov_arr.shape[-1]
    if mean_arr.ndim < 1 or mean_arr.shape[-1] != k:
        raise ProgramValueError(
            f"mean must have shape (..., {k}) to match {what} of shape "
            f"{cov_arr.shape}; got shape {mean_arr.shape}")
    return mean_arr, cov_arr, k


def _on_rule(f: Callable[..., Any], mean_arr: np.ndarray, cov_arr: np.ndarray,
             nodes: np.ndarray, weights: np.ndarray, params: ArrayLike | None, what: str,
             rule: str, shell: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``Σ_i w_i f(μ + F z_i)`` over a batch (see :func:`gauss_hermite_expectation`).

    With ``shell`` (a boolean mask of nodes), also the fraction of ``Σ_i w_i |f|`` that
    those nodes carry, per batch element (the truncation guard of the trapezoid rule).
    """
    k = cov_arr.shape[-1]
    if not np.all(np.isfinite(mean_arr)):
        raise NumericalError("mean contains NaN or inf entries")
    factor = psd_factor(cov_arr, what=what)
    try:
        batch = np.broadcast_shapes(mean_arr.shape[:-1], factor.shape[:-2])
    except ValueError:
        raise ProgramValueError(
            f"batch shapes of mean {mean_arr.shape[:-1]} and {what} "
            f"{cov_arr.shape[:-2]} do not broadcast"
        ) from None
    mean_b = np.broadcast_to(mean_arr, batch + (k,)).reshape(-1, k)
    factor_t = np.swapaxes(np.broadcast_to(factor, batch + (k, k)), -1, -2)
    factor_t = factor_t.reshape(-1, k, k)
    total = mean_b.shape[0]
    n_nodes = nodes.shape[0]
    params_b = None
    if params is not None:
        params_b = np.asarray(params, dtype=float).reshape(total, -1)
    shell_w = None if shell is None else np.stack([weights * shell, weights], axis=-1)
    fractions: list[np.ndarray] = []

    def evaluate(lo: int, hi: int, vector: bool | None) -> np.ndarray:
        pts = mean_b[lo:hi, None, :] + np.matmul(nodes, factor_t[lo:hi])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = f(pts) if params_b is None else f(pts, params_b[lo:hi])
            vals = _as_values(out, (hi - lo, n_nodes), vector)
            if shell_w is not None:
                a = np.abs(vals.reshape(hi - lo, n_nodes, -1)).sum(axis=-1) @ shell_w
                fractions.append(a[:, 0] / np.maximum(a[:, 1], 1e-300))
            return np.einsum("bn...,n->b...", vals, weights)

    # A first call on a single batch element (or an empty one) reveals the output
    # shape, from which the chunk size is chosen.
    first = evaluate(0, min(1, total), None)
    vector = first.ndim == 2
    m = first.shape[1] if vector else 1
    bytes_per_element = 8 * n_nodes * (k + m + 1)
    chunk = max(1, _CHUNK_BYTES // bytes_per_element)
    pieces = [first]
    for lo in range(1, total, chunk):
        piece = evaluate(lo, min(lo + chunk, total), vector)
        if vector and piece.shape[1] != m:
            raise ProgramValueError(
                "the integrand returned a different number of values on different "
                f"chunks ({m} and {piece.shape[1]})"
            )
        pieces.append(piece)
    result = np.concatenate(pieces, axis=0)
    finite = np.isfinite(result)
    if not np.all(finite):
        bad = ~finite if not vector else ~np.all(finite, axis=1)
        where = _batch_index_text(bad.reshape(batch)) if batch else ""
        raise NumericalError(
            f"{rule} expectation is not finite{where}: the integrand "
            "overflowed or returned NaN/inf (is it integrable under the Gaussian?)"
        )
    frac = np.concatenate(fractions).reshape(batch) if fractions else None
    return result.reshape(batch + ((m,) if vector else ())), frac


#: Half-width of the trapezoid rule's box, in standard deviations: the Gaussian mass
#: outside it is below 2e-19 per dimension.
TRAPEZOID_HALF_WIDTH = 9.0


@functools.lru_cache(maxsize=16)
def _trapezoid_rule(step: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tensor trapezoid rule on ``[-L, L]^k`` (``L`` = :data:`TRAPEZOID_HALF_WIDTH`)
    with weights ``step·φ(z)`` per dimension, and the mask of its outermost shell
    (nodes within one unit of the box's boundary)."""
    n = int(round(TRAPEZOID_HALF_WIDTH / step))
    x = step * np.arange(-n, n + 1)
    nodes, weights = _tensor_product(x, step * np.exp(-x * x / 2) / _SQRT_2PI, k)
    shell = np.abs(nodes).max(axis=1) >= TRAPEZOID_HALF_WIDTH - 1.0
    for a in (nodes, weights, shell):
        a.flags.writeable = False
    return nodes, weights, shell


def trapezoid_expectation(
    f: Callable[..., Any],
    mean: ArrayLike,
    cov: ArrayLike,
    *,
    step: float,
    params: ArrayLike | None = None,
    what: str = "covariance",
) -> tuple[np.ndarray, np.ndarray]:
    r"""Expectation :math:`\mathbb E f(X)`, :math:`X\sim\mathcal N(\mu,C)`, by the
    trapezoid rule in standard coordinates.

    .. math::
        \mathbb E f(X)\approx\sum_{i\in\{-n..n\}^k} \prod_j h\,\varphi(h i_j)\;
        f\big(\mu+F\,h\,i\big),\qquad nh = L = 9.

    For integrands analytic in a strip :math:`|\operatorname{Im} z|<a` of each
    standard coordinate the error falls like :math:`e^{-2\pi a/h}` [Trefethen &
    Weideman, SIAM Rev. 56 (2014), §5]: halving ``h`` squares it, so the difference
    between two successive steps bounds the error of the finer one. Functions with
    poles near the real axis (tanh, sigmoid at large variance) converge much faster
    than under Gauss--Hermite, whose nodes spread out to :math:`\sqrt{4n}`. The
    box truncates the Gaussian: the second return value is the fraction of
    :math:`\sum_i w_i|f|` carried by the box's outermost unit shell, which must be
    negligible for the value to be trusted (it is not for integrands growing like
    :math:`e^{cz^2}`).

    Parameters
    ----------
    f, mean, cov, params, what
        As for :func:`gauss_hermite_expectation`.
    step : float
        The step :math:`h` per dimension (``L/h`` must be an integer).

    Returns
    -------
    values : numpy.ndarray
        Shape ``batch`` (or ``batch + (m,)``).
    shell_fraction : numpy.ndarray
        Shape ``batch``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog.gaussian import trapezoid_expectation
    >>> v, tail = trapezoid_expectation(lambda z: np.tanh(z[..., 0]) ** 2, [0.0], [[4.0]],
    ...                                 step=0.125)
    >>> round(float(v), 10), bool(tail < 1e-12)
    (0.6352612343, True)
    """
    mean_arr, cov_arr, k = _rule_arguments(f, mean, cov, what)
    default_degree(k)  # validates 1 <= k <= 4
    n = TRAPEZOID_HALF_WIDTH / step
    if not (step > 0 and abs(n - round(n)) < 1e-9):
        raise ProgramValueError(f"step must divide {TRAPEZOID_HALF_WIDTH}; got {step}")
    if (2 * round(n) + 1) ** k > _MAX_NODES:
        raise ResourceError(f"a trapezoid rule of step {step} in {k} dimensions has more "
                            f"than {_MAX_NODES} nodes; use a larger step")
    nodes, weights, shell = _trapezoid_rule(float(step), k)
    values, frac = _on_rule(f, mean_arr, cov_arr, nodes, weights, params, what, "trapezoid",
                            shell)
    return values, frac


#: Offsets of the panel edges placed on each side of a feature point, in units of the
#: feature's own argument (see :func:`panel_expectation`): panels of width 1/2 next to
#: a kink or a transition (tanh, gelu, erf at 0), growing to 2 at 8 argument units.
PANEL_LADDER = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Edges of the panels in every standard coordinate (the Gaussian weight's own scale):
#: the integers of ``[-6, 6]``, then ``±7.5`` and ``±L``, ``L`` =
#: :data:`TRAPEZOID_HALF_WIDTH`.
_PANEL_GRID = np.concatenate([[-TRAPEZOID_HALF_WIDTH, -7.5], np.arange(-6.0, 6.5, 1.0),
                              [7.5, TRAPEZOID_HALF_WIDTH]])
#: Largest number of nodes of one panel rule per batch element.
MAX_PANEL_NODES = 2**19


def psd_cholesky(cov: np.ndarray) -> np.ndarray:
    r"""Lower-triangular :math:`L` with :math:`LL^\top=C` for PSD (possibly singular)
    covariances ``(B, k, k)``.

    Computed on the correlation matrix :math:`D^{-1}CD^{-1}` (:func:`equilibration`)
    and scaled back, so coordinates of very different scales keep their relative
    accuracy; a pivot below :math:`10^{-12}` (in correlation units) is a singular
    direction and gets a zero column (e.g. :math:`\rho=\pm1`). Validate with
    :func:`psd_factor` first: this routine does not check.
    """
    s = equilibration(cov)
    R = cov / (s[:, :, None] * s[:, None, :])
    k = R.shape[-1]
    L = np.zeros_like(R)
    for j in range(k):
        piv = R[:, j, j] - np.einsum("bi,bi->b", L[:, j, :j], L[:, j, :j])
        ok = piv > 1e-12
        root = np.sqrt(np.where(ok, piv, 1.0))
        L[:, j, j] = np.where(ok, root, 0.0)
        for r in range(j + 1, k):
            num = R[:, r, j] - np.einsum("bi,bi->b", L[:, r, :j], L[:, j, :j])
            L[:, r, j] = np.where(ok, num / root, 0.0)
    return s[:, :, None] * L


@functools.lru_cache(maxsize=8)
def _legendre_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    from numpy.polynomial.legendre import leggauss

    return leggauss(n)


def _panel_nodes(A0: np.ndarray, A: np.ndarray, n: int, kinks: Sequence[bool]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Nested composite Gauss–Legendre nodes ``z`` (b, N, k) and weights (b, N) of the
    standard normal law, with panel edges at the features ``A0 + A z`` (b, F), (b, F, k)
    and at the ladder around them (see :func:`panel_expectation`)."""
    b, F, k = A.shape
    xg, wg = _legendre_rule(n)
    ladder = np.array(PANEL_LADDER)
    spacing = np.diff(np.concatenate([[0.0], ladder]))
    z = np.zeros((b, 1, 0))
    w = np.ones((b, 1))
    for j in range(k):
        aj = A[:, :, j]
        edges = [np.broadcast_to(_PANEL_GRID, (b, z.shape[1], len(_PANEL_GRID)))]
        for f in range(F):
            scale = float(np.max(np.abs(aj[:, f]))) if b else 0.0
            if scale == 0.0:
                continue  # this feature does not move along z_j
            # Integrating the later coordinates out smooths the feature over its
            # conditional spread τ (argument units): a transition of width τ. The
            # ladder's unit is max(1, τ), plus, for a kink or jump, a second ladder of
            # unit τ when 1e-9 < τ < 1 (the kink blurred at that scale).
            tau = np.sqrt(np.sum(A[:, f, j + 1:] ** 2, axis=-1))
            units = [np.maximum(1.0, tau)]
            small = (tau > 1e-9) & (tau < 1.0)
            if kinks[f] and small.any():
                units.append(np.where(small, tau, np.nan))
            offs = [np.zeros((b, 1))]
            for unit in units:
                # the ladder where it is finer than the grid (spacing < 1 in z units)
                umin = float(np.nanmin(unit))
                t = ladder[: int(np.sum(spacing * umin < scale))]
                offs += [unit[:, None] * t, -unit[:, None] * t]
            offs = np.concatenate(offs, axis=1)  # (b, T); NaN: not used by that element
            pos = A0[:, f, None] + np.einsum("bi,bni->bn", A[:, f, :j], z)  # (b, N)
            a = aj[:, f, None, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                e = (offs[:, None, :] - pos[:, :, None]) / a
            edges.append(np.where((a != 0.0) & np.isfinite(e), e, -TRAPEZOID_HALF_WIDTH))
        e = np.sort(np.clip(np.concatenate(edges, axis=-1), -TRAPEZOID_HALF_WIDTH,
                            TRAPEZOID_HALF_WIDTH), axis=-1)
        half = 0.5 * (e[..., 1:] - e[..., :-1])
        mid = 0.5 * (e[..., 1:] + e[..., :-1])
        zj = (mid[..., None] + half[..., None] * xg).reshape(b, z.shape[1], -1)
        wj = (half[..., None] * wg).reshape(b, z.shape[1], -1) * np.exp(-0.5 * zj * zj) / _SQRT_2PI
        m = zj.shape[-1]
        z = np.concatenate([np.repeat(z, m, axis=1), zj.reshape(b, -1, 1)], axis=-1)
        w = (w[:, :, None] * wj).reshape(b, -1)
    return z, w


def panel_expectation(
    f: Callable[..., Any],
    mean: ArrayLike,
    cov: ArrayLike,
    features: ArrayLike,
    *,
    kinks: Sequence[bool] | None = None,
    nodes: tuple[int, int] = (10, 7),
    params: ArrayLike | None = None,
    what: str = "covariance",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Expectation :math:`\mathbb E f(X)`, :math:`X\sim\mathcal N(\mu,C)`, by nested
    composite Gauss--Legendre rules whose panels follow the integrand's features.

    With :math:`X=\mu+Lz`, :math:`L` lower-triangular (:func:`psd_cholesky`) and
    :math:`z\sim\mathcal N(0,I_k)`, the integral
    :math:`\int f(\mu+Lz)\prod_j\varphi(z_j)\,dz` is computed as iterated
    one-dimensional integrals over :math:`z_1,\dots,z_k`, each by Gauss--Legendre
    rules of ``n`` nodes on panels whose edges are

    * the integers of :math:`[-9, 9]` (the Gaussian weight's own scale; the mass
      outside is below :math:`2\cdot10^{-19}` per coordinate), and
    * for every *feature* :math:`a(X)=c+w^\top X` — the argument of a kink
      (relu, step, abs at 0) or of a transition (tanh, erf, gelu around 0) — the
      points where :math:`a` equals :math:`0, \pm\tfrac12, \pm1, \dots, \pm8`
      (:data:`PANEL_LADDER`), given the outer coordinates; ladder points are used
      only where they are finer than the integer grid.

    The panels are thus scaled to the covariance: a feature of an argument with
    standard deviation :math:`\sigma` sits in panels of width about
    :math:`1/(2\sigma)` in the standard coordinate, so a large variance costs a few
    more panels, not an exponentially slower rule. An integrand smooth on every panel
    — in particular one whose kinks are all features, since each kink is then a panel
    edge — converges geometrically in ``n`` [Trefethen, *Approximation Theory and
    Approximation Practice* (2013), Thm 19.3]; the rule with ``nodes[1]`` nodes per
    panel gives an error estimate for the one with ``nodes[0]``.

    Parameters
    ----------
    f : callable
        As for :func:`gauss_hermite_expectation` (points ``(b, N, k)`` → ``(b, N)``).
    mean : array_like, shape (B, k)
    cov : array_like, shape (B, k, k)
        PSD, possibly singular.
    features : array_like, shape (B, F, k + 1)
        Rows ``[c, w_1, …, w_k]`` of the affine functions :math:`a(X)=c+w^\top X`
        whose level sets near 0 the panels follow (``F`` may be 0).
    kinks : sequence of bool, optional
        Per feature: whether it is a kink or jump (True, the default) rather than a
        smooth transition. A kink whose argument also depends on later coordinates is
        blurred over their spread :math:`\tau`; when :math:`\tau<1` a second ladder of
        unit :math:`\tau` resolves it.
    nodes : (int, int), default (10, 7)
        Gauss--Legendre nodes per panel of the fine and the coarse rule.
    params : array_like, shape (B, m), optional
        Per-element constants passed to ``f``.
    what : str
        Name of ``cov`` in error messages.

    Returns
    -------
    fine, coarse : numpy.ndarray, shape (B,)
        The values of the two rules (``|fine - coarse|`` estimates the error of the
        coarse one, a bound for the fine one's while the rules converge).
    shell_fraction : numpy.ndarray, shape (B,)
        Fraction of :math:`\sum_i w_i|f|` (fine rule) carried by nodes in the outermost
        unit shell of the box, as for :func:`trapezoid_expectation`.

    Raises
    ------
    NonPSDError
        If a covariance is not PSD.
    ResourceError
        If one element would need more than :data:`MAX_PANEL_NODES` nodes.
    NumericalError
        If an input or a value is NaN or inf.

    Examples
    --------
    :math:`\mathbb E\,\mathrm{relu}(G+0.2)=0.2\,\Phi(0.2)+\varphi(0.2)`:

    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> from tensorprog.gaussian import panel_expectation
    >>> fine, coarse, tail = panel_expectation(lambda z: np.maximum(z[..., 0] + 0.2, 0.0),
    ...                                        [[0.0]], [[[1.0]]], [[[0.2, 1.0]]])
    >>> bool(abs(fine[0] - (0.2 * norm.cdf(0.2) + norm.pdf(0.2))) < 1e-14)
    True
    """
    mean_arr, cov_arr, k = _rule_arguments(f, mean, cov, what)
    if mean_arr.ndim != 2 or cov_arr.ndim != 3 or cov_arr.shape[0] != mean_arr.shape[0]:
        raise ProgramValueError(f"mean and {what} must have shapes (B, k) and (B, k, k); got "
                                f"{mean_arr.shape} and {cov_arr.shape}")
    feats = np.asarray(features, dtype=float)
    B = mean_arr.shape[0]
    if feats.ndim != 3 or feats.shape[0] != B or feats.shape[2] != k + 1:
        raise ProgramValueError(f"features must have shape (B, F, k + 1) = ({B}, F, {k + 1}); "
                                f"got {feats.shape}")
    kinks = [True] * feats.shape[1] if kinks is None else [bool(x) for x in kinks]
    if len(kinks) != feats.shape[1]:
        raise ProgramValueError(f"kinks must have one entry per feature ({feats.shape[1]}); "
                                f"got {len(kinks)}")
    if not (np.all(np.isfinite(mean_arr)) and np.all(np.isfinite(feats))):
        raise NumericalError("mean or features contain NaN or inf entries")
    psd_factor(cov_arr, what=what)  # validates (raises NonPSDError)
    L = psd_cholesky(cov_arr)
    # features in the standard coordinates: a = c + wᵀμ + (Lᵀw)ᵀ z
    A0 = feats[:, :, 0] + np.einsum("bfi,bi->bf", feats[:, :, 1:], mean_arr)
    A = np.einsum("bfi,bij->bfj", feats[:, :, 1:], L)
    params_b = None if params is None else np.asarray(params, dtype=float).reshape(B, -1)
    out = np.zeros((3, B))
    lo = 0
    while lo < B:
        # the chunk's node count (with its ladders) decides the chunk size
        probe = _panel_nodes(A0[lo:lo + 1], A[lo:lo + 1], max(nodes), kinks)[0].shape[1]
        if probe > MAX_PANEL_NODES:
            raise ResourceError(f"the panel rule needs {probe} nodes for one expectation "
                                f"(limit {MAX_PANEL_NODES})")
        hi = min(B, lo + max(1, _CHUNK_BYTES // (8 * probe * (2 * k + 4))))
        sl = slice(lo, hi)
        for r, n in enumerate(nodes):
            z, w = _panel_nodes(A0[sl], A[sl], n, kinks)
            if z.shape[1] > MAX_PANEL_NODES:
                raise ResourceError(f"the panel rule needs {z.shape[1]} nodes for one "
                                    f"expectation (limit {MAX_PANEL_NODES})")
            pts = mean_arr[sl, None, :] + np.matmul(z, np.swapaxes(L[sl], -1, -2))
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                vals = f(pts) if params_b is None else f(pts, params_b[sl])
                vals = _as_values(vals, pts.shape[:2], False)
                out[r, sl] = (vals * w).sum(axis=1)
                if r == 0:
                    aw = np.abs(vals) * w
                    shell = np.abs(z).max(axis=-1) >= TRAPEZOID_HALF_WIDTH - 1.0
                    out[2, sl] = np.where(shell, aw, 0.0).sum(axis=1) / np.maximum(
                        aw.sum(axis=1), 1e-300)
        lo = hi
    if not np.all(np.isfinite(out[:2])):
        raise NumericalError("panel-rule expectation is not finite: the integrand overflowed "
                             "or returned NaN/inf (is it integrable under the Gaussian?)")
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------------------
# Exact polynomial moments
# --------------------------------------------------------------------------------------


def _is_symbolic(x: Any) -> bool:
    """True if ``x`` is a sympy object or a (nested) container holding one."""
    if isinstance(x, (sympy.Basic, sympy.MatrixBase)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype == object and any(isinstance(e, sympy.Basic) for e in x.flat)
    if isinstance(x, (list, tuple)):
        return any(_is_symbolic(e) for e in x)
    return False


def _sympy_entries(x: Any, shape: tuple[int, ...], name: str) -> list[Any]:
    """Flatten ``x`` row-major into a list of sympy objects of the given shape."""
    try:
        mat = sympy.Matrix(x) if not isinstance(x, sympy.MatrixBase) else x
    except (TypeError, ValueError, sympy.SympifyError) as exc:
        raise ProgramTypeError(f"{name} could not be read as a sympy matrix") from exc
    n = math.prod(shape)
    if len(shape) == 1:
        ok = mat.shape in ((n, 1), (1, n)) or (n == 0 and 0 in mat.shape)
    else:
        ok = mat.shape == shape
    if not ok:
        raise ProgramValueError(
            f"{name} must have shape {shape} for {shape[0]} Gaussians; got shape {mat.shape}"
        )
    return [sympy.sympify(e) for e in mat]


def _moment_table(
    mu: Sequence[Any],
    sigma: Sequence[Sequence[Any]],
    zero: Any,
    one: Any,
    normalize: Callable[[Any], Any],
    is_zero: Callable[[Any], bool],
) -> Callable[[tuple[int, ...]], Any]:
    r"""Return a memoised map from exponent tuples :math:`a` to :math:`\mathbb E X^a`.

    Uses Stein's identity for :math:`X\sim\mathcal N(\mu,\Sigma)`,
    :math:`\mathbb E[x_i\,m(X)]=\mu_i\,\mathbb E[m(X)]+\sum_j\Sigma_{ij}\,
    \mathbb E[\partial_jm(X)]`, with :math:`x_i` the first variable of the monomial.
    The recursion is evaluated with an explicit stack (no recursion limit).
    """
    k = len(mu)
    partners = [[j for j in range(k) if not is_zero(sigma[i][j])] for i in range(k)]
    mean_zero = [is_zero(m) for m in mu]
    memo: dict[tuple[int, ...], Any] = {(0,) * k: one}

    def children(a: tuple[int, ...]) -> list[tuple[Any, tuple[int, ...]]]:
        i = next(idx for idx, e in enumerate(a) if e)
        b = list(a)
        b[i] -= 1
        out = []
        if not mean_zero[i]:
            out.append((mu[i], tuple(b)))
        for j in partners[i]:
            if b[j]:
                c = list(b)
                c[j] -= 1
                out.append((sigma[i][j] * b[j], tuple(c)))
        return out

    def moment(target: tuple[int, ...]) -> Any:
        stack = [target]
        while stack:
            a = stack[-1]
            if a in memo:
                stack.pop()
                continue
            terms = children(a)
            missing = [t for _, t in terms if t not in memo]
            if missing:
                stack.extend(missing)
                continue
            value = zero
            for coeff, t in terms:
                value = value + coeff * memo[t]
            memo[a] = normalize(value)
            stack.pop()
        return memo[target]

    return moment


def _numeric_moment(terms: list[tuple[tuple[int, ...], Any]], mean: Any, cov: Any, k: int) -> float:
    """Numeric branch of :func:`gaussian_moment` (float arithmetic)."""
    mu = np.asarray(mean, dtype=float)
    sig = np.asarray(cov, dtype=float)
    if mu.shape != (k,) or sig.shape != (k, k):
        raise ProgramValueError(
            f"for {k} Gaussians mean must have shape ({k},) and cov shape ({k}, {k}); "
            f"got {mu.shape} and {sig.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sig))):
        raise NumericalError("mean or cov contains NaN or inf entries")
    psd_factor(sig, what="covariance")  # validation only
    sig = 0.5 * (sig + sig.T)
    coeffs = []
    for _, c in terms:
        try:
            coeffs.append(float(c))
        except TypeError:
            raise ProgramValueError(
                f"the coefficient {c} of the polynomial is not a number; pass mean "
                "and cov as sympy objects to get a symbolic moment"
            ) from None
    moment = _moment_table(
        [float(v) for v in mu],
        [[float(v) for v in row] for row in sig],
        0.0,
        1.0,
        lambda v: v,
        lambda v: v == 0.0,
    )
    total = math.fsum(c * moment(m) for c, (m, _) in zip(coeffs, terms, strict=True))
    if not math.isfinite(total):
        raise NumericalError("the Gaussian moment overflowed (result is not finite)")
    return float(total)


def _symbolic_moment(
    terms: list[tuple[tuple[int, ...], Any]], mean: Any, cov: Any, k: int
) -> sympy.Expr:
    """Symbolic branch of :func:`gaussian_moment` (exact rationals via Fraction)."""
    mu = _sympy_entries(mean, (k,), "mean")
    flat = _sympy_entries(cov, (k, k), "cov")
    sig = [flat[i * k : (i + 1) * k] for i in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            if sympy.expand(sig[i][j] - sig[j][i]) != 0:
                raise NonPSDError(
                    f"covariance is not symmetric: entries ({i}, {j}) = {sig[i][j]} "
                    f"and ({j}, {i}) = {sig[j][i]} differ; a covariance must be a "
                    "symmetric positive semidefinite matrix"
                )
    if all(e.is_number for e in flat):
        try:
            numeric = np.array([[complex(e) for e in row] for row in sig])
        except TypeError:
            numeric = None
        if numeric is not None and np.all(numeric.imag == 0):
            psd_factor(numeric.real, what="covariance")  # validation only
    coeffs = [sympy.sympify(c) for _, c in terms]
    if all(isinstance(e, sympy.Rational) for e in (*mu, *flat, *coeffs)):

        def frac(r: sympy.Rational) -> Fraction:
            return Fraction(int(r.p), int(r.q))

        moment = _moment_table(
            [frac(v) for v in mu],
            [[frac(v) for v in row] for row in sig],
            Fraction(0),
            Fraction(1),
            lambda v: v,
            lambda v: v == 0,
        )
        total = sum(
            (frac(c) * moment(m) for c, (m, _) in zip(coeffs, terms, strict=True)),
            Fraction(0),
        )
        return sympy.Rational(total.numerator, total.denominator)
    moment = _moment_table(mu, sig, sympy.S.Zero, sympy.S.One, sympy.expand, lambda v: v == 0)
    total = sympy.Add(*(c * moment(m) for c, (m, _) in zip(coeffs, terms, strict=True)))
    return sympy.expand(total)


def gaussian_moment(
    expr: Any, variables: Sequence[sympy.Symbol], mean: Any, cov: Any
) -> float | sympy.Expr:
    r"""Exact moment :math:`\mathbb E\,p(X)` of a polynomial, :math:`X\sim\mathcal N(\mu,\Sigma)`.

    Monomials are reduced with Stein's identity (Isserlis/Wick's theorem
    generalised to nonzero means),

    .. math::
        \mathbb E[x_i\,m(X)]=\mu_i\,\mathbb E[m(X)]
        +\sum_j\Sigma_{ij}\,\mathbb E[\partial_j m(X)],\qquad \mathbb E[1]=1,

    memoised on exponent tuples, so all sub-moments of a polynomial are computed
    once (a dense polynomial of degree 12 in 6 variables takes about 0.1 s). E.g.
    :math:`\mathbb E x^4=3\sigma^4` and :math:`\mathbb E(m+\sigma g)^2=m^2+\sigma^2`.

    Parameters
    ----------
    expr : sympy expression or sympy.Poly
        Polynomial in ``variables``; coefficients may contain other symbols when
        the result is symbolic.
    variables : sequence of sympy.Symbol
        The Gaussian variables :math:`x_1,\dots,x_k` (distinct).
    mean : array_like or sympy matrix, length k
        :math:`\mu`.
    cov : array_like or sympy matrix, shape (k, k)
        :math:`\Sigma` (symmetric; PSD is checked whenever it is numeric).

    Returns
    -------
    float or sympy.Expr
        A Python ``float`` when ``mean`` and ``cov`` are numeric (numpy arrays,
        lists of Python numbers); otherwise (any sympy object in them) an expanded
        sympy expression, which is an exact ``sympy.Rational`` when every entry and
        coefficient is rational.

    Raises
    ------
    ProgramValueError
        If ``expr`` is not a polynomial in ``variables``, shapes do not match, or
        (numeric case) a coefficient is symbolic.
    NonPSDError
        If the covariance is not symmetric, or numeric and not PSD.
    NumericalError
        If numeric inputs are not finite or the result overflows.
    """
    try:
        gens = tuple(sympy.sympify(v) for v in variables)
    except sympy.SympifyError as exc:
        raise ProgramTypeError("variables must be sympy symbols") from exc
    for v in gens:
        if not isinstance(v, sympy.Symbol):
            raise ProgramTypeError(f"variables must be sympy symbols; got {v!r}")
    if len(set(gens)) != len(gens):
        raise ProgramValueError(f"variables must be distinct; got {gens}")
    k = len(gens)
    symbolic = _is_symbolic(mean) or _is_symbolic(cov)
    if isinstance(expr, sympy.Poly):
        if k == 0:
            expr = expr.as_expr()
    else:
        try:
            expr = sympy.sympify(expr)
        except sympy.SympifyError as exc:
            raise ProgramTypeError(f"expr could not be read as a sympy expression: {exc}") from exc
    if k == 0:
        terms: list[tuple[tuple[int, ...], Any]] = [((), expr)]
    else:
        try:
            poly = sympy.Poly(expr, *gens)  # also re-reads a Poly in these generators
        except BasePolynomialError:
            raise ProgramValueError(
                f"{expr} is not a polynomial in the given Gaussians {gens}; exact "
                "moments need a polynomial, use quadrature or a closed form instead"
            ) from None
        terms = poly.terms()
    if symbolic:
        return _symbolic_moment(terms, mean, cov, k)
    return _numeric_moment(terms, mean, cov, k)


# --------------------------------------------------------------------------------------
# Closed forms: validation helpers
# --------------------------------------------------------------------------------------


def _finish(value: np.ndarray, name: str) -> Any:
    """Raise on NaN/inf; return a numpy scalar for 0-d results (ufunc-like)."""
    if not np.all(np.isfinite(value)):
        raise NumericalError(
            f"{name}: the closed form is not finite (overflow for these variances)"
        )
    return value[()] if value.ndim == 0 else value


def _variance(k: ArrayLike, name: str) -> np.ndarray:
    """Validate a variance (finite, >= -PSD_TOL) and clip it at 0."""
    a = np.asarray(k, dtype=float)
    if not np.all(np.isfinite(a)):
        raise NumericalError(f"{name}: the variance contains NaN or inf")
    bad = a < -PSD_TOL
    if np.any(bad):
        raise NonPSDError(
            f"{name}: negative variance {float(np.min(a)):.6g}"
            f"{_batch_index_text(bad)}; a covariance must be positive semidefinite"
        )
    return np.maximum(a, 0.0)


class _Pair(NamedTuple):
    """A validated centred pair: variances, std devs, correlation, covariance."""

    k11: np.ndarray
    k22: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    s: np.ndarray
    rho: np.ndarray
    k12: np.ndarray


def _pair(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, name: str) -> _Pair:
    r"""Validate :math:`\begin{pmatrix}k_{11}&k_{12}\\k_{12}&k_{22}\end{pmatrix}`.

    Returns the arrays broadcast together, with variances clipped at 0,
    :math:`s_i=\sqrt{k_{ii}}`, :math:`s=\sqrt{k_{11}k_{22}}`, :math:`\rho=k_{12}/s`
    clipped to :math:`[-1,1]` (:math:`\rho:=0` where :math:`s=0`) and the clipped
    covariance :math:`k_{12}\in[-s,s]` (0 where :math:`s=0`).

    :math:`s` is computed as ``sqrt(k11 * k22)`` (not ``sqrt(k11) * sqrt(k22)``), so
    that ``k11 == k12 == k22`` gives :math:`\rho=1` exactly: arccos/arcsin have
    infinite slope at :math:`\pm1`, where one ulp in :math:`\rho` costs
    :math:`10^{-8}` in the kernel.
    """
    a11, a12, a22 = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (k11, k12, k22)))
    if not all(np.all(np.isfinite(a)) for a in (a11, a12, a22)):
        raise NumericalError(f"{name}: k11, k12, k22 must be finite")
    half_trace = 0.5 * (a11 + a22)
    radius = np.hypot(0.5 * (a11 - a22), a12)
    lam_min = half_trace - radius
    bad = lam_min < -PSD_TOL * np.maximum(1.0, half_trace + radius)
    if np.any(bad):
        raise NonPSDError(
            f"{name}: the covariance [[k11, k12], [k12, k22]] is not positive "
            f"semidefinite{_batch_index_text(bad)}: its smallest eigenvalue is "
            f"{float(np.min(np.where(bad, lam_min, np.inf))):.6g}; a covariance must "
            "be positive semidefinite"
        )
    v1 = np.maximum(a11, 0.0)
    v2 = np.maximum(a22, 0.0)
    s1 = np.sqrt(v1)
    s2 = np.sqrt(v2)
    with np.errstate(over="ignore", under="ignore"):
        prod = v1 * v2
    normal = (prod >= np.finfo(float).tiny) & np.isfinite(prod)
    # fall back to s1 * s2 where the product under- or overflows
    s = np.where(normal, np.sqrt(np.where(normal, prod, 1.0)), s1 * s2)
    pos = s > 0
    rho = np.clip(np.where(pos, a12 / np.where(pos, s, 1.0), 0.0), -1.0, 1.0)
    c = np.where(pos, np.clip(a12, -s, s), 0.0)
    return _Pair(v1, v2, s1, s2, s, rho, c)


# --------------------------------------------------------------------------------------
# Closed forms: the piecewise-linear family (identity, relu, step, sign, abs)
# --------------------------------------------------------------------------------------


def identity_identity(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[uv]=k_{12}` (after validating the covariance)."""
    p = _pair(k11, k12, k22, "identity_identity")
    return _finish(p.k12, "identity_identity")


def identity_relu(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{relu}(v)]=k_{12}/2`.

    Stein: :math:`k_{12}\,\mathbb E[\mathrm{step}(v)]` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_relu")
    return _finish(0.5 * p.k12, "identity_relu")


def identity_step(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{step}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}`.

    Stein: :math:`k_{12}\,\mathbb E[\delta(v)]=k_{12}/\sqrt{2\pi k_{22}}`; 0 if
    :math:`k_{22}=0` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_step")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "identity_step")


def identity_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{sign}(v)]=\rho\sqrt{2k_{11}/\pi}`.

    :math:`\mathrm{sign}=2\,\mathrm{step}-1` and :func:`identity_step` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_sign")
    return _finish(2.0 * p.rho * p.s1 / _SQRT_2PI, "identity_sign")


def identity_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,|v|]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_abs")
    return _finish(np.zeros_like(p.k11), "identity_abs")


def relu_relu(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""Arc-cosine kernel of degree 1: :math:`\mathbb E[\mathrm{relu}(u)\mathrm{relu}(v)]`.

    .. math::
        \frac{\sqrt{k_{11}k_{22}}}{2\pi}\big(\sin\vartheta+(\pi-\vartheta)\cos\vartheta
        \big),\qquad\vartheta=\arccos\rho,

    [CS09], [NT] ``ABRelu(0, 1)`` (docs/concepts/kernel-limits.md). Diagonal: :math:`k/2`; 0 when a
    variance is 0.
    """
    p = _pair(k11, k12, k22, "relu_relu")
    theta = np.arccos(p.rho)
    value = p.s / (2.0 * np.pi) * (np.sqrt(1.0 - p.rho**2) + (np.pi - theta) * p.rho)
    return _finish(value, "relu_relu")


def relu_step(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\mathrm{step}(v)]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`.

    Stein's lemma in :math:`u` gives
    :math:`\mathbb E[u\,\mathbb 1_{u>0}\mathbb 1_{v>0}]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`
    (DERIVED; it is :math:`\partial/\partial\sqrt{k_{22}}` of the degree-1 arc-cosine
    kernel [CS09]). With :math:`k_{22}=0`, :math:`\mathrm{step}(0)=\tfrac12`.
    """
    p = _pair(k11, k12, k22, "relu_step")
    return _finish(p.s1 * (1.0 + p.rho) / (2.0 * _SQRT_2PI), "relu_step")


def relu_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{sign}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}`.

    :math:`2\,\mathrm{relu\_step}-\mathbb E\,\mathrm{relu}(u)` (DERIVED).
    """
    p = _pair(k11, k12, k22, "relu_sign")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "relu_sign")


def relu_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,|v|]=\tfrac12\,\mathbb E[|u||v|]`.

    :math:`\mathrm{relu}(u)=(u+|u|)/2` and :math:`\mathbb E[u|v|]=0` (DERIVED).
    """
    p = _pair(k11, k12, k22, "relu_abs")
    return _finish(0.5 * _abs_abs(p.s, p.rho), "relu_abs")


def step_step(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""Arc-cosine kernel of degree 0: :math:`\mathbb E[\mathrm{step}(u)\mathrm{step}(v)]`.

    .. math::
        \mathbb E[\mathrm{step}(u)\mathrm{step}(v)]=\frac{\pi-\vartheta}{2\pi},
        \qquad\vartheta=\arccos\rho,


    :math:`\vartheta=\arccos\rho` [CS09], [NT] ``ABRelu`` ntk factor (docs/concepts/kernel-limits.md).
    Diagonal :math:`\tfrac12`. With a zero variance (:math:`\mathrm{step}(0)=\tfrac12`)
    the value is :math:`\tfrac14`, which is the formula at :math:`\rho=0`.
    """
    p = _pair(k11, k12, k22, "step_step")
    return _finish((np.pi - np.arccos(p.rho)) / (2.0 * np.pi), "step_step")


def step_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,\mathrm{sign}(v)]=\arcsin(\rho)/\pi`.

    Half of :func:`sign_sign`, since :math:`\mathrm{step}=(1+\mathrm{sign})/2` (DERIVED).
    """
    p = _pair(k11, k12, k22, "step_sign")
    return _finish(np.arcsin(p.rho) / np.pi, "step_sign")


def step_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,|v|]=\sqrt{k_{22}/(2\pi)}`, independent of :math:`\rho`.

    :math:`\mathrm{step}=(1+\mathrm{sign})/2` and :math:`\mathbb E[\mathrm{sign}(u)|v|]=0`
    (DERIVED).
    """
    p = _pair(k11, k12, k22, "step_abs")
    return _finish(p.s2 / _SQRT_2PI, "step_abs")


def sign_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\mathrm{sign}(v)]=\tfrac2\pi\arcsin\rho`.

    Grothendieck/Sheppard identity; [NT] ``Sign()``: :math:`1-\tfrac2\pi\arccos\rho`.
    0 when a variance is 0 (:math:`\mathrm{sign}(0)=0`).
    """
    p = _pair(k11, k12, k22, "sign_sign")
    return _finish(2.0 / np.pi * np.arcsin(p.rho), "sign_sign")


def sign_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\,|v|]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "sign_abs")
    return _finish(np.zeros_like(p.k11), "sign_abs")


def _abs_abs(s: np.ndarray, rho: np.ndarray) -> np.ndarray:
    return s * 2.0 / np.pi * (np.sqrt(1.0 - rho**2) + rho * np.arcsin(rho))


def abs_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""Absolute-value kernel :math:`\mathbb E[|u||v|]`.

    .. math::
        \mathbb E[|u||v|]=\frac2\pi\sqrt{k_{11}k_{22}}\big(\sqrt{1-\rho^2}+\rho\arcsin\rho\big),


    :math:`|z|=\mathrm{relu}(z)+\mathrm{relu}(-z)`, i.e. [NT] ``ABRelu(-1, 1)`` (= ``Abs``),
    from the arc-cosine kernel [CS09]. Diagonal :math:`k`.
    """
    p = _pair(k11, k12, k22, "abs_abs")
    return _finish(_abs_abs(p.s, p.rho), "abs_abs")


# --------------------------------------------------------------------------------------
# Closed forms: the erf family (identity, erf, derf)
# --------------------------------------------------------------------------------------


def identity_erf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}(v)]=\frac{2k_{12}}{\sqrt{\pi(1+2k_{22})}}`.

    Stein: :math:`k_{12}\,\mathbb E[\mathrm{erf}'(v)]` and :func:`mean_derf` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_erf")
    value = p.k12 * _TWO_OVER_SQRT_PI / np.sqrt(1.0 + 2.0 * p.k22)
    return _finish(value, "identity_erf")


def identity_derf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}'(v)]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_derf")
    return _finish(np.zeros_like(p.k11), "identity_derf")


def erf_erf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""Arcsine kernel :math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]`.

    .. math::
        \mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]
        =\frac2\pi\arcsin\frac{2k_{12}}{\sqrt{(1+2k_{11})(1+2k_{22})}},


    [W97] (docs/concepts/kernel-limits.md); evaluated as in [NT] ``Erf`` with
    :math:`\arctan2\big(2k_{12},\sqrt{(1+2k_{11})(1+2k_{22})-4k_{12}^2}\big)`.
    """
    p = _pair(k11, k12, k22, "erf_erf")
    c = p.k12
    den = np.sqrt((1.0 + 2.0 * p.k11) * (1.0 + 2.0 * p.k22) - 4.0 * c**2)
    return _finish(2.0 / np.pi * np.arctan2(2.0 * c, den), "erf_erf")


def erf_derf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}'(v)]=0` (odd under :math:`(u,v)\to-(u,v)`)."""
    p = _pair(k11, k12, k22, "erf_derf")
    return _finish(np.zeros_like(p.k11), "erf_derf")


def derf_derf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""Kernel of the derivative :math:`\mathbb E[\mathrm{erf}'(u)\mathrm{erf}'(v)]`.

    .. math::
        \mathbb E[\mathrm{erf}'(u)\mathrm{erf}'(v)]
        =\frac4\pi\big((1+2k_{11})(1+2k_{22})-4k_{12}^2\big)^{-1/2},


    :math:`\mathrm{erf}'(z)=\tfrac2{\sqrt\pi}e^{-z^2}`; [W97] (docs/concepts/kernel-limits.md), the ntk
    factor of [NT] ``Erf``. Equals :math:`4/\pi` when both variances are 0.
    """
    p = _pair(k11, k12, k22, "derf_derf")
    c = p.k12
    value = 4.0 / np.pi / np.sqrt((1.0 + 2.0 * p.k11) * (1.0 + 2.0 * p.k22) - 4.0 * c**2)
    return _finish(value, "derf_derf")


# --------------------------------------------------------------------------------------
# Closed forms: the trigonometric / exponential family (identity, sin, cos, exp)
# --------------------------------------------------------------------------------------


def identity_sin(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\sin v]=k_{12}e^{-k_{22}/2}` (Stein, :math:`\mathbb E\cos v`; DERIVED)."""
    p = _pair(k11, k12, k22, "identity_sin")
    return _finish(p.k12 * np.exp(-0.5 * p.k22), "identity_sin")


def identity_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\cos v]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_cos")
    return _finish(np.zeros_like(p.k11), "identity_cos")


def identity_exp(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,e^v]=k_{12}e^{k_{22}/2}` (Stein with :func:`mean_exp`; DERIVED)."""
    p = _pair(k11, k12, k22, "identity_exp")
    with np.errstate(over="ignore", invalid="ignore"):
        value = p.k12 * np.exp(0.5 * p.k22)
    return _finish(value, "identity_exp")


def sin_sin(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\sin u\sin v]=e^{-(k_{11}+k_{22})/2}\sinh k_{12}`.

    From :math:`\mathbb E\cos(u\mp v)=e^{-(k_{11}\mp2k_{12}+k_{22})/2}`
    (characteristic function; DERIVED), evaluated as a difference of two
    exponentials with nonpositive exponents, so it cannot overflow.
    """
    p = _pair(k11, k12, k22, "sin_sin")
    c = p.k12
    h = 0.5 * (p.k11 + p.k22)
    return _finish(0.5 * (np.exp(c - h) - np.exp(-c - h)), "sin_sin")


def cos_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\cos u\cos v]=e^{-(k_{11}+k_{22})/2}\cosh k_{12}` (see :func:`sin_sin`)."""
    p = _pair(k11, k12, k22, "cos_cos")
    c = p.k12
    h = 0.5 * (p.k11 + p.k22)
    return _finish(0.5 * (np.exp(c - h) + np.exp(-c - h)), "cos_cos")


def sin_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\sin u\cos v]=0` for a centred pair (odd under :math:`(u,v)\to-(u,v)`)."""
    p = _pair(k11, k12, k22, "sin_cos")
    return _finish(np.zeros_like(p.k11), "sin_cos")


def exp_exp(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^ue^v]=e^{(k_{11}+2k_{12}+k_{22})/2}` (moment generating function).

    Raises :class:`~tensorprog.errors.NumericalError` on overflow.
    """
    p = _pair(k11, k12, k22, "exp_exp")
    with np.errstate(over="ignore"):
        value = np.exp(0.5 * (p.k11 + p.k22) + p.k12)
    return _finish(value, "exp_exp")


def exp_sin(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^u\sin v]=e^{(k_{11}-k_{22})/2}\sin k_{12}`.

    Imaginary part of :math:`\mathbb E\,e^{u+iv}=e^{(k_{11}-k_{22})/2+ik_{12}}` (DERIVED).
    """
    p = _pair(k11, k12, k22, "exp_sin")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(0.5 * (p.k11 - p.k22)) * np.sin(p.k12)
    return _finish(value, "exp_sin")


def exp_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^u\cos v]=e^{(k_{11}-k_{22})/2}\cos k_{12}` (see :func:`exp_sin`)."""
    p = _pair(k11, k12, k22, "exp_cos")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(0.5 * (p.k11 - p.k22)) * np.cos(p.k12)
    return _finish(value, "exp_cos")


# --------------------------------------------------------------------------------------
# One-variable means of a centred Gaussian u ~ N(0, k)
# --------------------------------------------------------------------------------------


def mean_identity(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,u=0`."""
    return _finish(np.zeros_like(_variance(k, "mean_identity")), "mean_identity")


def mean_relu(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{relu}(u)=\sqrt{k/(2\pi)}` (half-normal mean)."""
    return _finish(np.sqrt(_variance(k, "mean_relu")) / _SQRT_2PI, "mean_relu")


def mean_step(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{step}(u)=\tfrac12`, also for :math:`k=0` (step(0) = 1/2)."""
    return _finish(np.full_like(_variance(k, "mean_step"), 0.5), "mean_step")


def mean_sign(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{sign}(u)=0`."""
    return _finish(np.zeros_like(_variance(k, "mean_sign")), "mean_sign")


def mean_abs(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,|u|=\sqrt{2k/\pi}` (half-normal mean)."""
    return _finish(2.0 * np.sqrt(_variance(k, "mean_abs")) / _SQRT_2PI, "mean_abs")


def mean_erf(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}(u)=0` (odd)."""
    return _finish(np.zeros_like(_variance(k, "mean_erf")), "mean_erf")


def mean_derf(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}'(u)=\tfrac{2}{\sqrt\pi}(1+2k)^{-1/2}`.

    From :math:`\mathbb E\,e^{-u^2}=(1+2k)^{-1/2}` (Gaussian integral).
    """
    v = _variance(k, "mean_derf")
    return _finish(_TWO_OVER_SQRT_PI / np.sqrt(1.0 + 2.0 * v), "mean_derf")


def mean_sin(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\sin u=0` (odd)."""
    return _finish(np.zeros_like(_variance(k, "mean_sin")), "mean_sin")


def mean_cos(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\cos u=e^{-k/2}` (characteristic function)."""
    return _finish(np.exp(-0.5 * _variance(k, "mean_cos")), "mean_cos")


def mean_exp(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,e^u=e^{k/2}` (moment generating function); raises on overflow."""
    v = _variance(k, "mean_exp")
    with np.errstate(over="ignore"):
        value = np.exp(0.5 * v)
    return _finish(value, "mean_exp")


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _swapped(fn: PairForm, first: str, second: str) -> PairForm:
    """``(k11, k12, k22) -> fn(k22, k12, k11)``: the pair form with u and v exchanged."""

    def swapped(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        return fn(k22, k12, k11)

    swapped.__name__ = swapped.__qualname__ = f"{first}_{second}"
    swapped.__doc__ = (
        f"E[{first}(u) {second}(v)] = ``{fn.__name__}(k22, k12, k11)`` "
        f"(:func:`{fn.__name__}` with u and v exchanged)."
    )
    return swapped


_CANONICAL_PAIRS: dict[tuple[str, str], PairForm] = {
    ("identity", "identity"): identity_identity,
    ("identity", "relu"): identity_relu,
    ("identity", "step"): identity_step,
    ("identity", "sign"): identity_sign,
    ("identity", "abs"): identity_abs,
    ("identity", "erf"): identity_erf,
    ("identity", "derf"): identity_derf,
    ("identity", "sin"): identity_sin,
    ("identity", "cos"): identity_cos,
    ("identity", "exp"): identity_exp,
    ("relu", "relu"): relu_relu,
    ("relu", "step"): relu_step,
    ("relu", "sign"): relu_sign,
    ("relu", "abs"): relu_abs,
    ("step", "step"): step_step,
    ("step", "sign"): step_sign,
    ("step", "abs"): step_abs,
    ("sign", "sign"): sign_sign,
    ("sign", "abs"): sign_abs,
    ("abs", "abs"): abs_abs,
    ("erf", "erf"): erf_erf,
    ("erf", "derf"): erf_derf,
    ("derf", "derf"): derf_derf,
    ("sin", "sin"): sin_sin,
    ("sin", "cos"): sin_cos,
    ("cos", "cos"): cos_cos,
    ("exp", "exp"): exp_exp,
    ("exp", "sin"): exp_sin,
    ("exp", "cos"): exp_cos,
}

#: ``(name_u, name_v) -> f(k11, k12, k22)`` giving :math:`\mathbb E[\phi(u)\psi(v)]`
#: for a centred pair; both orders of every pair are present.
PAIR_CLOSED_FORMS: dict[tuple[str, str], PairForm] = {
    **_CANONICAL_PAIRS,
    **{(b, a): _swapped(fn, b, a) for (a, b), fn in _CANONICAL_PAIRS.items() if a != b},
}

#: ``name -> f(k)`` giving :math:`\mathbb E\,\phi(u)` for :math:`u\sim\mathcal N(0,k)`.
SINGLE_CLOSED_FORMS: dict[str, SingleForm] = {
    "identity": mean_identity,
    "relu": mean_relu,
    "step": mean_step,
    "sign": mean_sign,
    "abs": mean_abs,
    "erf": mean_erf,
    "derf": mean_derf,
    "sin": mean_sin,
    "cos": mean_cos,
    "exp": mean_exp,
}
