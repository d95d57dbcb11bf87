r"""Exact moments of polynomials of jointly Gaussian variables (Isserlis/Wick).

:func:`gaussian_moment` computes :math:`\mathbb E\,p(X)`, :math:`X\sim\mathcal N(\mu,\Sigma)`,
for a polynomial :math:`p`, numerically (floats), exactly (rationals) or symbolically
(sympy entries), by Stein's identity -- Isserlis' (Wick's) theorem generalised to
nonzero means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
from sympy.polys.polyerrors import BasePolynomialError

from ..core.errors import NonPSDError, NumericalError, ProgramTypeError, ProgramValueError
from ..core.psd import check_psd

__all__ = ["gaussian_moment", "moment_table"]


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


def moment_table(mean: np.ndarray, cov: np.ndarray) -> Callable[[tuple[int, ...]], Any]:
    r"""Moments :math:`\mathbb E\,X^a` of a batch of Gaussians, :math:`X_b\sim\mathcal
    N(\mu_b,\Sigma_b)`, as a memoised map from exponent tuples ``a`` to arrays ``(B,)``.

    The recursion of :func:`gaussian_moment` (Stein's identity) run on numpy arrays: every
    sub-moment of the batch is one vectorised operation, and no formula is built or
    compiled (the engine's exact Wick evaluator, whose symbolic formula and generated code
    cost seconds for eight-dimensional polynomials).

    Parameters
    ----------
    mean : numpy.ndarray, shape (B, k)
    cov : numpy.ndarray, shape (B, k, k)
        Symmetric; not checked (the engine checks its laws before evaluating).

    Returns
    -------
    callable
        ``a ↦ 𝔼 X^a`` of shape ``(B,)`` (a float ``1.0`` for ``a = 0``).

    Examples
    --------
    >>> import numpy as np
    >>> table = moment_table(np.array([[0.0], [1.0]]), np.array([[[2.0]], [[1.0]]]))
    >>> table((4,)).tolist()  # 3σ⁴ and μ⁴ + 6μ²σ² + 3σ⁴
    [12.0, 10.0]
    """
    k = mean.shape[1]
    return _moment_table(
        [mean[:, i] for i in range(k)],
        [[cov[:, i, j] for j in range(k)] for i in range(k)],
        0.0,
        1.0,
        lambda v: v,
        lambda v: not np.any(v),
    )


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
    check_psd(sig, "covariance")
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
            check_psd(numeric.real, "covariance")
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
