r"""Expectations :math:`\mathbb E f(X)`, :math:`X\sim\mathcal N(\mu,C)`, by quadrature.

Three rules over a PSD factor of the covariance (:func:`psd_factor`, valid for
singular :math:`C`), for up to :data:`MAX_QUADRATURE_DIM` Gaussians
(``docs/concepts/evaluation.md``):

* :func:`gauss_hermite_expectation` -- tensor-product Gauss--Hermite rules, degrees
  per dimension in :data:`DEFAULT_DEGREE` (and the finer :data:`REFINED_DEGREE`);
* :func:`trapezoid_expectation` -- the trapezoid rule in standard coordinates, for
  integrands analytic near the real axis;
* :func:`panel_expectation` -- composite Gauss--Legendre panels whose edges follow
  the integrand's kinks and transitions, scaled to the covariance.

Covariances are accepted when they are PSD up to a tolerance (:mod:`tensorprog.core.psd`):
an eigenvalue of the correlation matrix :math:`\lambda\ge-10^{-10}\max(1,\lambda_{\max})`
is treated as 0; below that a :class:`~tensorprog.core.errors.NonPSDError` is raised, never
clipped silently.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ..core.errors import NumericalError, ProgramTypeError, ProgramValueError, ResourceError
from ..core.psd import PSD_TOL, batch_index_text, equilibration, psd_eigh

__all__ = [
    "PSD_TOL",
    "MAX_QUADRATURE_DIM",
    "DEFAULT_DEGREE",
    "REFINED_DEGREE",
    "psd_factor",
    "psd_cholesky",
    "equilibration",
    "default_degree",
    "gauss_hermite_expectation",
    "TRAPEZOID_HALF_WIDTH",
    "trapezoid_expectation",
    "PANEL_LADDER",
    "MAX_PANEL_NODES",
    "panel_expectation",
]

#: Largest number of jointly Gaussian variables (or linear forms of them) handled by
#: quadrature; the engine sends integrands of more to Monte Carlo.
MAX_QUADRATURE_DIM = 4
#: Gauss--Hermite nodes per dimension, by number of Gaussians (see :func:`default_degree`):
#: the rules of :func:`gauss_hermite_expectation` and of the Master Theorem engine.
DEFAULT_DEGREE = {1: 320, 2: 160, 3: 56, 4: 22}
#: The finer rules the engine uses where the default one has not converged
#: (at most 5·10⁵ nodes).
REFINED_DEGREE = {1: 1000, 2: 400, 3: 80, 4: 28}
#: Largest tensor-product rule :func:`gauss_hermite_expectation` will build.
_MAX_NODES = 2**20
#: Memory budget of one chunk of quadrature points (and of f's output).
_CHUNK_BYTES = 64 * 2**20

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

ArrayLike = Any


# --------------------------------------------------------------------------------------
# PSD factor
# --------------------------------------------------------------------------------------


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
    s, eigval, eigvec = psd_eigh(cov, tol=tol, what=what)
    if eigval.shape[-1] == 0:
        return eigvec
    # eigenvalues within rounding of the largest are zero (a singular matrix's factor
    # keeps its exact rank instead of a noise column of size √ε)
    noise = 8 * eigval.shape[-1] * np.finfo(float).eps * eigval[..., -1:]
    eigval = np.where(eigval > noise, eigval, 0.0)
    return s[..., :, None] * eigvec * np.sqrt(eigval)[..., None, :]


# --------------------------------------------------------------------------------------
# Gauss-Hermite quadrature
# --------------------------------------------------------------------------------------


def default_degree(k: int) -> int:
    r"""Default number of Gauss--Hermite nodes per dimension for ``k`` Gaussians.

    :data:`DEFAULT_DEGREE`, ``{1: 320, 2: 160, 3: 56, 4: 22}`` (at most
    :math:`2.4\cdot10^5` tensor-product nodes), the rules of the Master Theorem
    engine too. A rule of degree :math:`n` integrates polynomials of degree
    :math:`<2n` exactly and converges fast for entire integrands: measured relative
    errors of :math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]` at unit variances and
    correlation 1/2 are :math:`9\cdot10^{-16}` with the :math:`k=2` rule,
    :math:`3\cdot10^{-14}` with the :math:`k=3` rule and :math:`3\cdot10^{-6}` with the
    :math:`k=4` rule (:math:`3\cdot10^{-4}` at variance 2). Integrands with complex
    poles near the real axis converge only like :math:`e^{-c\sqrt n}`; measured
    relative errors of :math:`\mathbb E\tanh^2(\sigma G)` are, for :math:`\sigma=1`:
    :math:`7\cdot10^{-15}` (:math:`n=320`), :math:`4\cdot10^{-15}` (160),
    :math:`3\cdot10^{-8}` (56), :math:`1\cdot10^{-4}` (22); for :math:`\sigma=2`:
    :math:`6\cdot10^{-11}` (320), :math:`2\cdot10^{-7}` (160), :math:`3\cdot10^{-4}` (56).
    For a product of such factors in :math:`k` dimensions the error is roughly that of
    the worst direction (measured by ``benchmarks/gaussian_degrees.py``).
    Pass ``degree`` explicitly (or use Monte Carlo) when that is not enough; the
    engine estimates the error against a rule of 3/4 the degree and refines to
    :data:`REFINED_DEGREE`.

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
    return DEFAULT_DEGREE[k]


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


def _rule_arguments(
    f: Any, mean: ArrayLike, cov: ArrayLike, what: str
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
            f"{cov_arr.shape}; got shape {mean_arr.shape}"
        )
    return mean_arr, cov_arr, k


def _on_rule(
    f: Callable[..., Any],
    mean_arr: np.ndarray,
    cov_arr: np.ndarray,
    nodes: np.ndarray,
    weights: np.ndarray,
    params: ArrayLike | None,
    what: str,
    rule: str,
    shell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
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
        where = batch_index_text(bad.reshape(batch)) if batch else ""
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
        raise ResourceError(
            f"a trapezoid rule of step {step} in {k} dimensions has more "
            f"than {_MAX_NODES} nodes; use a larger step"
        )
    nodes, weights, shell = _trapezoid_rule(float(step), k)
    values, frac = _on_rule(f, mean_arr, cov_arr, nodes, weights, params, what, "trapezoid", shell)
    return values, frac


#: Offsets of the panel edges placed on each side of a feature point, in units of the
#: feature's own argument (see :func:`panel_expectation`): panels of width 1/2 next to
#: a kink or a transition (tanh, gelu, erf at 0), growing to 2 at 8 argument units.
PANEL_LADDER = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Edges of the panels in every standard coordinate (the Gaussian weight's own scale):
#: the integers of ``[-6, 6]``, then ``±7.5`` and ``±L``, ``L`` =
#: :data:`TRAPEZOID_HALF_WIDTH`.
_PANEL_GRID = np.concatenate(
    [[-TRAPEZOID_HALF_WIDTH, -7.5], np.arange(-6.0, 6.5, 1.0), [7.5, TRAPEZOID_HALF_WIDTH]]
)
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


def _panel_nodes(
    A0: np.ndarray, A: np.ndarray, n: int, kinks: Sequence[bool]
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
            tau = np.sqrt(np.sum(A[:, f, j + 1 :] ** 2, axis=-1))
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
        e = np.sort(
            np.clip(np.concatenate(edges, axis=-1), -TRAPEZOID_HALF_WIDTH, TRAPEZOID_HALF_WIDTH),
            axis=-1,
        )
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
        raise ProgramValueError(
            f"mean and {what} must have shapes (B, k) and (B, k, k); got "
            f"{mean_arr.shape} and {cov_arr.shape}"
        )
    feats = np.asarray(features, dtype=float)
    B = mean_arr.shape[0]
    if feats.ndim != 3 or feats.shape[0] != B or feats.shape[2] != k + 1:
        raise ProgramValueError(
            f"features must have shape (B, F, k + 1) = ({B}, F, {k + 1}); got {feats.shape}"
        )
    kinks = [True] * feats.shape[1] if kinks is None else [bool(x) for x in kinks]
    if len(kinks) != feats.shape[1]:
        raise ProgramValueError(
            f"kinks must have one entry per feature ({feats.shape[1]}); got {len(kinks)}"
        )
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
        probe = _panel_nodes(A0[lo : lo + 1], A[lo : lo + 1], max(nodes), kinks)[0].shape[1]
        if probe > MAX_PANEL_NODES:
            raise ResourceError(
                f"the panel rule needs {probe} nodes for one expectation (limit {MAX_PANEL_NODES})"
            )
        hi = min(B, lo + max(1, _CHUNK_BYTES // (8 * probe * (2 * k + 4))))
        sl = slice(lo, hi)
        for r, n in enumerate(nodes):
            z, w = _panel_nodes(A0[sl], A[sl], n, kinks)
            if z.shape[1] > MAX_PANEL_NODES:
                raise ResourceError(
                    f"the panel rule needs {z.shape[1]} nodes for one "
                    f"expectation (limit {MAX_PANEL_NODES})"
                )
            pts = mean_arr[sl, None, :] + np.matmul(z, np.swapaxes(L[sl], -1, -2))
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                vals = f(pts) if params_b is None else f(pts, params_b[sl])
                vals = _as_values(vals, pts.shape[:2], False)
                out[r, sl] = (vals * w).sum(axis=1)
                if r == 0:
                    aw = np.abs(vals) * w
                    shell = np.abs(z).max(axis=-1) >= TRAPEZOID_HALF_WIDTH - 1.0
                    out[2, sl] = np.where(shell, aw, 0.0).sum(axis=1) / np.maximum(
                        aw.sum(axis=1), 1e-300
                    )
        lo = hi
    if not np.all(np.isfinite(out[:2])):
        raise NumericalError(
            "panel-rule expectation is not finite: the integrand overflowed "
            "or returned NaN/inf (is it integrable under the Gaussian?)"
        )
    return out[0], out[1], out[2]
