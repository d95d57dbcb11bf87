r"""Closed-form Gaussian expectations, registered by nonlinearity object (with means where
they exist).

Each formula below is registered, by a decorator placed on it, under the
:class:`~tensorprog.Nonlinearity` objects it integrates:

* ``@pair_closed_form(φ, ψ)`` on ``f(k11, k12, k22)`` -- :math:`\mathbb E[\phi(u)\psi(v)]`
  for a centred bivariate Gaussian :math:`(u, v)` with :math:`\operatorname{Var}u=k_{11}`,
  :math:`\operatorname{Var}v=k_{22}`, :math:`\operatorname{Cov}(u,v)=k_{12}` (e.g.
  :func:`relu_relu`, :func:`erf_erf`); the pair :math:`(\psi,\phi)` is registered with it;
* ``@mean_closed_form(φ)`` on ``f(k)`` -- :math:`\mathbb E\,\phi(u)`,
  :math:`u\sim\mathcal N(0,k)` (e.g. :func:`mean_relu`);
* with ``means=True`` the form also takes the means, ``f(k11, k12, k22, m1=0, m2=0)``
  or ``f(k, m=0)``, and the exact evaluation uses it for non-centred terms too (a vector
  declared with a mean, an argument ``bᵀg + c``); the piecewise-linear functions, erf,
  sin, cos, exp and gelu's one-variable forms take means;
* :func:`register_combination` -- closed forms of a function that is a sum of
  ``c·f(s·x)`` of functions that have them (``ab_relu``, ``rbf``, ``cos'``);
* the parametrised families of :mod:`tensorprog.core.nonlin` (``ab_relu``, ``rbf``,
  ``gaussian_bump``, ``rectified_monomial``) get their forms when a member is made
  (``Family.on_create``).

Adding a closed form is this one edit: a function with its decorator (here, or in a
user's code for a user's nonlinearity). The registries :data:`PAIR_CLOSED_FORMS` and
:data:`SINGLE_CLOSED_FORMS` are keyed by the objects themselves (``tp.relu``,
``tp.erf.derivative()``; never by name), and the Master Theorem's exact evaluation
looks a factor's nonlinearity up in them (:func:`pair_form`, :func:`mean_form`).
The term ``𝔼[(aᵀg)·φ(bᵀg)]`` uses the pair ``(tp.identity, φ)``.

Conventions
-----------
* :math:`\mathrm{step}(z)=\mathbb 1[z>0]` for :math:`z\neq0` and
  :math:`\mathrm{step}(0)=\tfrac12` (``sympy.Heaviside``'s default ``H(0)=1/2``).
  This only matters for a zero-variance argument: :math:`\mathbb E\,\mathrm{step}(u)
  =\tfrac12` for every centred :math:`u`, including :math:`u\equiv0`.
* :math:`\mathrm{sign}(0)=0` (numpy and sympy), so that
  :math:`\mathrm{sign}=2\,\mathrm{step}-1` everywhere.
* :math:`\mathrm{derf}(z)=\mathrm{erf}'(z)=\tfrac{2}{\sqrt\pi}e^{-z^2}`
  (the object ``tp.erf.derivative()``).
* :math:`\rho=k_{12}/\sqrt{k_{11}k_{22}}` is clipped to :math:`[-1,1]`; when
  :math:`k_{11}k_{22}=0` the pair is degenerate, :math:`k_{12}` must be (numerically)
  zero and :math:`\rho:=0` is used, which gives the correct limit in every closed
  form below (a zero-variance centred Gaussian is the constant 0).
* Covariances are accepted when they are PSD up to the tolerance
  :data:`~tensorprog.core.psd.PSD_TOL` (relative); below that a
  :class:`~tensorprog.core.errors.NonPSDError` is raised, never clipped silently.
* Closed forms behave like numpy ufuncs: they broadcast their arguments and return
  a numpy scalar for scalar input. Every function raises
  :class:`~tensorprog.core.errors.NumericalError` instead of returning NaN or inf.

References
----------
* [CS09] Y. Cho, L. Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009
  (arc-cosine kernels of degree 0 and 1).
* [W97] C. K. I. Williams, *Computing with Infinite Networks*, NeurIPS 1997 (erf).
* [NT] neural-tangents, ``neural_tangents/_src/stax/elementwise.py``: ``ABRelu`` and
  ``Erf`` (summarised in ``docs/concepts/kernel-limits.md``), ``Abs = ABRelu(-1, 1)`` and ``Sign``
  (``nngp = 1 - 2 angle / pi``), ``Gelu``, ``Rbf``, ``Gaussian``, ``RectifiedMonomial``.
* [T21] R. Tsuchida et al., *Avoiding kernel fixed points: computing with ELU and GELU
  infinite networks*, AAAI 2021 (gelu).
* [TRG18] R. Tsuchida, F. Roosta, M. Gallagher, *Invariance of weight distributions in
  rectified MLPs*, ICML 2018 (leaky relu).
* [R61] S. Rosenbaum, *Moments of a truncated bivariate normal distribution*, J. R. Stat.
  Soc. B 23 (1961) (relu and step with means).
* [O56] D. B. Owen, *Tables for computing bivariate normal probabilities*, Ann. Math.
  Statist. 27 (1956) (Owen's T, the bivariate normal CDF).
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
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..core.errors import NonPSDError, NumericalError, ProgramTypeError, ProgramValueError
from ..core.nonlin import (
    Nonlinearity,
    ab_relu,
    cos,
    erf,
    exp,
    gaussian_bump,
    gelu,
    identity,
    rbf,
    rectified_monomial,
    relu,
    sign,
    sin,
    step,
)
from ..core.nonlin import abs as abs_
from ..core.psd import PSD_TOL, batch_index_text

__all__ = [
    "PAIR_CLOSED_FORMS",
    "SINGLE_CLOSED_FORMS",
    "pair_closed_form",
    "mean_closed_form",
    "pair_form",
    "mean_form",
    "has_closed_form",
    "takes_means",
    "on_register",
    "register_combination",
    "bivariate_normal_cdf",
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
    "gelu_gelu",
    "dgelu_dgelu",
    "identity_gelu",
    "identity_dgelu",
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
    "mean_gelu",
    "mean_dgelu",
]

ArrayLike = Any
#: ``f(k11, k12, k22) -> 𝔼[φ(u)ψ(v)]``.
PairForm = Callable[[ArrayLike, ArrayLike, ArrayLike], Any]
#: ``f(k) -> 𝔼 φ(u)``.
MeanForm = Callable[[ArrayLike], Any]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# --------------------------------------------------------------------------------------
# The registries
# --------------------------------------------------------------------------------------

#: ``(φ, ψ) -> f(k11, k12, k22)`` giving :math:`\mathbb E[\phi(u)\psi(v)]` for a centred
#: pair, keyed by :class:`~tensorprog.Nonlinearity` objects; both orders of every pair
#: are present. Filled by :func:`pair_closed_form`.
PAIR_CLOSED_FORMS: dict[tuple[Nonlinearity, Nonlinearity], PairForm] = {}
#: ``φ -> f(k)`` giving :math:`\mathbb E\,\phi(u)` for :math:`u\sim\mathcal N(0,k)`.
#: Filled by :func:`mean_closed_form`.
SINGLE_CLOSED_FORMS: dict[Nonlinearity, MeanForm] = {}
_REGISTERED: set[Nonlinearity] = set()
#: The keys (pairs, or single functions) whose forms also take means.
_WITH_MEANS: set[Any] = set()
_MEANS_FNS: set[Nonlinearity] = set()
_LISTENERS: list[Callable[[], None]] = []


def _one_variable(fn: Any, who: str) -> Nonlinearity:
    if not isinstance(fn, Nonlinearity):
        raise ProgramTypeError(f"{who}: expected a tp.Nonlinearity, got {type(fn).__name__}")
    if fn.arity != 1 or fn.nparams:
        raise ProgramValueError(
            f"{who}: {fn.name} takes {fn.arity} vector argument(s) and {fn.nparams} "
            f"parameter(s); closed forms are registered for functions of one argument "
            f"and no parameters"
        )
    return fn


def _register(table: dict, key: Any, form: Callable[..., Any], who: str) -> None:
    old = table.get(key)
    if old is not None and old is not form and getattr(old, "__wrapped__", None) is not form:
        raise ProgramValueError(
            f"{who}: a closed form is already registered ({getattr(old, '__name__', old)!s})"
        )
    table[key] = form


def _changed(*fns: Nonlinearity) -> None:
    _REGISTERED.update(fns)
    for callback in _LISTENERS:
        callback()


def _swapped(fn: PairForm, first: Nonlinearity, second: Nonlinearity, means: bool) -> PairForm:
    """``(k11, k12, k22[, m1, m2]) -> fn(k22, k12, k11[, m2, m1])``: the pair form with u
    and v exchanged."""

    if means:

        def swapped(
            k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
        ) -> Any:
            return fn(k22, k12, k11, m2, m1)

    else:

        def swapped(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:  # type: ignore[misc]
            return fn(k22, k12, k11)

    swapped.__name__ = swapped.__qualname__ = f"{first.name}_{second.name}"
    swapped.__doc__ = (
        f"E[{first.name}(u) {second.name}(v)] = ``{fn.__name__}(k22, k12, k11)`` "
        f"(:func:`{fn.__name__}` with u and v exchanged)."
    )
    swapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return swapped


def pair_closed_form(
    phi: Nonlinearity, psi: Nonlinearity, *, means: bool = False
) -> Callable[[PairForm], PairForm]:
    r"""Decorator registering ``f(k11, k12, k22)`` as :math:`\mathbb E[\phi(u)\psi(v)]`.

    ``(u, v)`` is a centred Gaussian pair with :math:`\operatorname{Var}u=k_{11}`,
    :math:`\operatorname{Cov}(u,v)=k_{12}`, :math:`\operatorname{Var}v=k_{22}` (numpy
    arrays, broadcast together). With ``means=True`` the form also takes the means,
    ``f(k11, k12, k22, m1=0.0, m2=0.0)`` with :math:`\mathbb E u=m_1`,
    :math:`\mathbb E v=m_2`, and is used for non-centred terms as well. The swapped pair :math:`\mathbb E[\psi(u)\phi(v)]`
    is registered at the same time. The Master Theorem's exact evaluation then uses
    ``f`` for every centred term with factors :math:`\phi(a^\top g)\,\psi(b^\top g)`
    (with ``phi = tp.identity``: the term :math:`(a^\top g)\,\psi(b^\top g)`).

    Parameters
    ----------
    phi, psi : Nonlinearity
        Functions of one argument and no parameters, as objects (``tp.relu``, a
        user's ``tp.Nonlinearity``).
    means : bool, default False
        Whether ``f`` takes the means ``m1, m2`` (keyword arguments, default 0).

    Raises
    ------
    ProgramTypeError, ProgramValueError
        If ``phi`` or ``psi`` is not such a nonlinearity, or the pair already has a
        different closed form.

    Examples
    --------
    :math:`\mathbb E[u^2v^2]=k_{11}k_{22}+2k_{12}^2` (Isserlis) for a user's square:

    >>> import sympy, tensorprog as tp
    >>> x = sympy.Symbol("x", real=True)
    >>> sq = tp.Nonlinearity("sq", x**2, [x])
    >>> @pair_closed_form(sq, sq)
    ... def sq_sq(k11, k12, k22):
    ...     return k11 * k22 + 2 * k12**2
    >>> pair_form(sq, sq)(1.0, 0.5, 2.0)
    2.5
    """
    who = "pair_closed_form"
    phi, psi = _one_variable(phi, who), _one_variable(psi, who)

    def register(form: PairForm) -> PairForm:
        if not callable(form):
            raise ProgramTypeError(
                f"{who}({phi.name}, {psi.name}) decorates a function, got {type(form).__name__}"
            )
        _register(PAIR_CLOSED_FORMS, (phi, psi), form, f"{who}({phi.name}, {psi.name})")
        if psi is not phi:
            _register(
                PAIR_CLOSED_FORMS,
                (psi, phi),
                _swapped(form, psi, phi, means),
                f"{who}({psi.name}, {phi.name})",
            )
        if means:
            _WITH_MEANS.update({(phi, psi), (psi, phi)})
            _MEANS_FNS.update({phi, psi})
        _changed(phi, psi)
        return form

    return register


def mean_closed_form(phi: Nonlinearity, *, means: bool = False) -> Callable[[MeanForm], MeanForm]:
    r"""Decorator registering ``f(k)`` as :math:`\mathbb E\,\phi(u)`, :math:`u\sim\mathcal N(0,k)`.

    Parameters
    ----------
    phi : Nonlinearity
        A function of one argument and no parameters, as an object.
    means : bool, default False
        Whether ``f`` also takes the mean, ``f(k, m=0.0)`` for :math:`u\sim\mathcal N(m,k)`.

    Examples
    --------
    >>> import sympy, tensorprog as tp
    >>> x = sympy.Symbol("x", real=True)
    >>> sq = tp.Nonlinearity("sq", x**2, [x])
    >>> @mean_closed_form(sq)
    ... def mean_sq(k):
    ...     return k
    >>> mean_form(sq) is mean_sq
    True
    """
    who = "mean_closed_form"
    phi = _one_variable(phi, who)

    def register(form: MeanForm) -> MeanForm:
        if not callable(form):
            raise ProgramTypeError(
                f"{who}({phi.name}) decorates a function, got {type(form).__name__}"
            )
        _register(SINGLE_CLOSED_FORMS, phi, form, f"{who}({phi.name})")
        if means:
            _WITH_MEANS.add(phi)
            _MEANS_FNS.add(phi)
        _changed(phi)
        return form

    return register


def pair_form(phi: Nonlinearity, psi: Nonlinearity, centred: bool = True) -> PairForm | None:
    r"""The registered :math:`\mathbb E[\phi(u)\psi(v)]`, or None; with ``centred=False``
    only a form that takes the means (``f(k11, k12, k22, m1, m2)``)."""
    key = (phi, psi)
    return PAIR_CLOSED_FORMS.get(key) if centred or key in _WITH_MEANS else None


def mean_form(phi: Nonlinearity, centred: bool = True) -> MeanForm | None:
    r"""The registered :math:`\mathbb E\,\phi(u)`, or None; with ``centred=False`` only a
    form that takes the mean (``f(k, m)``)."""
    return SINGLE_CLOSED_FORMS.get(phi) if centred or phi in _WITH_MEANS else None


def takes_means(phi: Any) -> bool:
    """Whether some closed form that takes means (``means=True``) mentions ``phi``."""
    return phi in _MEANS_FNS


def has_closed_form(phi: Any) -> bool:
    """Whether some closed form (a mean, or a pair with any function) mentions ``phi``."""
    return phi in _REGISTERED


def on_register(callback: Callable[[], None]) -> None:
    """Call ``callback()`` after every registration (e.g. to clear caches of compiled
    expectations that looked a function up before it had a closed form)."""
    _LISTENERS.append(callback)


#: :math:`\mathrm{erf}'`, the object ``tp.erf.derivative()`` (the NTK of an erf network).
derf = erf.derivative()


def _finish(value: np.ndarray, name: str) -> Any:
    """Raise on NaN/inf; return a numpy scalar for 0-d results (ufunc-like)."""
    if not np.isfinite(value).all():
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
            f"{batch_index_text(bad)}; a covariance must be positive semidefinite"
        )
    return np.maximum(a, 0.0)


class _Pair:
    r"""A validated centred pair: variances ``k11, k22`` (clipped at 0), ``s`` =
    :math:`\sqrt{k_{11}k_{22}}` and the clipped covariance ``k12``; the standard
    deviations ``s1, s2`` and the correlation ``rho`` are computed when first read
    (the erf and gelu forms never read them: a square root and a division per entry
    saved, the same values when read)."""

    __slots__ = ("k11", "k22", "s", "k12", "_a12", "_normal", "_s1", "_s2", "_rho")

    def __init__(
        self,
        k11: np.ndarray,
        k22: np.ndarray,
        s: np.ndarray,
        k12: np.ndarray,
        a12: np.ndarray,
        normal: bool,
    ) -> None:
        self.k11, self.k22, self.s, self.k12 = k11, k22, s, k12
        #: the unclipped covariance, and whether every ``k11·k22`` was a normal float
        self._a12, self._normal = a12, normal
        self._s1 = self._s2 = self._rho = None

    @property
    def s1(self) -> np.ndarray:
        r""":math:`\sqrt{k_{11}}`."""
        return self._root("_s1", self.k11)

    @property
    def s2(self) -> np.ndarray:
        r""":math:`\sqrt{k_{22}}`."""
        return self._root("_s2", self.k22)

    def _root(self, slot: str, k: np.ndarray) -> np.ndarray:
        if getattr(self, slot) is None:
            setattr(self, slot, np.sqrt(k))
        return getattr(self, slot)

    @property
    def rho(self) -> np.ndarray:
        """:math:`k_{12}/s` clipped to :math:`[-1, 1]` (0 where :math:`s = 0`)."""
        if self._rho is None:
            a12, s = self._a12, self.s
            if self._normal:  # (np.minimum/np.maximum: np.clip's values, without its dispatch)
                self._rho = np.minimum(np.maximum(a12 / s, -1.0), 1.0)
            else:
                pos = s > 0
                self._rho = np.clip(np.where(pos, a12 / np.where(pos, s, 1.0), 0.0), -1.0, 1.0)
        return self._rho


def _pair(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, name: str) -> _Pair:
    r"""Validate :math:`\begin{pmatrix}k_{11}&k_{12}\\k_{12}&k_{22}\end{pmatrix}`.

    Returns the arrays broadcast together, with variances clipped at 0,
    :math:`s=\sqrt{k_{11}k_{22}}`, the clipped covariance :math:`k_{12}\in[-s,s]` (0
    where :math:`s=0`), and on demand :math:`s_i=\sqrt{k_{ii}}` and :math:`\rho=k_{12}/s`
    clipped to :math:`[-1,1]` (:math:`\rho:=0` where :math:`s=0`).

    :math:`s` is computed as ``sqrt(k11 * k22)`` (not ``sqrt(k11) * sqrt(k22)``), so
    that ``k11 == k12 == k22`` gives :math:`\rho=1` exactly: arccos/arcsin have
    infinite slope at :math:`\pm1`, where one ulp in :math:`\rho` costs
    :math:`10^{-8}` in the kernel.

    The checks, cheapest first (the common case costs a few passes): the entries are
    finite (their sum is; else each is tested), and the smallest eigenvalue is
    :math:`\ge-\texttt{PSD\_TOL}\cdot\max(1,\lambda_{\max})` — which holds, up to
    rounding far below that tolerance, when :math:`k_{11},k_{22}\ge0` and
    :math:`|k_{12}|\le s` (else :func:`_psd_screen` computes the eigenvalue).
    """
    a11, a12, a22 = (np.asarray(x, dtype=float) for x in (k11, k12, k22))
    if not a11.shape == a12.shape == a22.shape:
        a11, a12, a22 = np.broadcast_arrays(a11, a12, a22)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        finite = np.isfinite(a11 + a12 + a22).all()  # may overflow: then entry by entry
        v1 = np.maximum(a11, 0.0)
        v2 = np.maximum(a22, 0.0)
        prod = v1 * v2
    if not finite and not (
        np.isfinite(a11).all() and np.isfinite(a12).all() and np.isfinite(a22).all()
    ):
        raise NumericalError(f"{name}: k11, k12, k22 must be finite")
    # fall back to s1 * s2 where the product under- or overflows (the common case, all
    # normal, takes the same values without the masks)
    normal = prod.size == 0 or (prod.min() >= _TINY and prod.max() <= _HUGE)
    if normal:
        s = np.sqrt(prod)
        plain = prod.size == 0 or (
            a11.min() >= 0.0 and a22.min() >= 0.0 and bool((np.abs(a12) <= s).all())
        )
        if not plain:
            _psd_screen(a11, a12, a22, name)
        return _Pair(v1, v2, s, np.minimum(np.maximum(a12, -s), s), a12, True)
    _psd_screen(a11, a12, a22, name)
    ok = (prod >= _TINY) & np.isfinite(prod)
    p = _Pair(v1, v2, np.zeros(0), np.zeros(0), a12, False)
    p.s = s = np.where(ok, np.sqrt(np.where(ok, prod, 1.0)), p.s1 * p.s2)
    p.k12 = np.where(s > 0, np.clip(a12, -s, s), 0.0)
    return p


_TINY, _HUGE = np.finfo(float).tiny, np.finfo(float).max


def _psd_screen(a11: np.ndarray, a12: np.ndarray, a22: np.ndarray, name: str) -> None:
    r"""Raise :class:`NonPSDError` where the smallest eigenvalue
    :math:`\tfrac12(k_{11}+k_{22})-\sqrt{(k_{11}-k_{22})^2/4+k_{12}^2}` of finite pairs
    is below :math:`-\texttt{PSD\_TOL}\cdot\max(1,\lambda_{\max})`."""
    half_trace = 0.5 * (a11 + a22)
    radius = np.hypot(0.5 * (a11 - a22), a12)
    lam_min = half_trace - radius
    bad = lam_min < -PSD_TOL * np.maximum(1.0, half_trace + radius)
    if bad.any():
        raise NonPSDError(
            f"{name}: the covariance [[k11, k12], [k12, k22]] is not positive "
            f"semidefinite{batch_index_text(bad)}: its smallest eigenvalue is "
            f"{float(np.min(np.where(bad, lam_min, np.inf))):.6g}; a covariance must "
            "be positive semidefinite"
        )


# --------------------------------------------------------------------------------------
# Non-centred pairs: validation and the normal distribution
# --------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)


def _pair_m(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike, m2: ArrayLike, name: str
) -> tuple[_Pair, np.ndarray, np.ndarray, bool]:
    """:func:`_pair` with the means: ``(pair, m1, m2, centred)``, all broadcast together."""
    if type(m1) is float and type(m2) is float and m1 == 0.0 == m2:  # the centred call
        p = _pair(k11, k12, k22, name)
        zero = np.zeros(p.k11.shape)
        return p, zero, zero, True
    a = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (k11, k12, k22, m1, m2)))
    if not (np.all(np.isfinite(a[3])) and np.all(np.isfinite(a[4]))):
        raise NumericalError(f"{name}: the means m1, m2 must be finite")
    p = _pair(a[0], a[1], a[2], name)
    return p, a[3], a[4], not (np.any(a[3]) or np.any(a[4]))


def _variance_m(k: ArrayLike, m: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`_variance` with the mean: ``(k, m, centred)``, broadcast together."""
    a, b = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(m, dtype=float))
    if not np.all(np.isfinite(b)):
        raise NumericalError(f"{name}: the mean m must be finite")
    return _variance(a, name), b, not np.any(b)


def _Phi(x: np.ndarray) -> np.ndarray:
    r"""Standard normal CDF :math:`\Phi`."""
    from scipy.special import ndtr  # scipy is slow to import: on first use

    return ndtr(x)


def _phi(x: np.ndarray) -> np.ndarray:
    r"""Standard normal density :math:`\varphi`."""
    return np.exp(-0.5 * np.square(x)) / _SQRT_2PI


def _ratio(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(m/s where s > 0 else 0, s > 0)``."""
    pos = s > 0
    return np.where(pos, m / np.where(pos, s, 1.0), 0.0), pos


def bivariate_normal_cdf(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> Any:
    r""":math:`\Phi_2(h,k;\rho)=P(X\le h,Y\le k)` for standard normals with correlation
    :math:`|\rho|<1`, through Owen's :math:`T` function.

    .. math::
        \Phi_2(h,k;\rho)=\tfrac12\Phi(h)+\tfrac12\Phi(k)-T(h,a_h)-T(k,a_k)-\beta,\qquad
        a_h=\frac{k-\rho h}{h\sqrt{1-\rho^2}},\;a_k=\frac{h-\rho k}{k\sqrt{1-\rho^2}},

    :math:`\beta=\tfrac12` when :math:`hk<0`, or :math:`hk=0` and :math:`h+k<0`, else 0
    [O56] (D. B. Owen, *Tables for computing bivariate normal probabilities*, Ann. Math.
    Statist. 27 (1956): the relation of :math:`L(h,k,\rho)` to :math:`T(h,a)`); at :math:`h=0` (:math:`k=0`) the limit :math:`a_h=\pm\infty`
    (:math:`T(0,\pm\infty)=\pm\tfrac14`) is used, and
    :math:`\Phi_2(0,0;\rho)=\tfrac14+\arcsin(\rho)/(2\pi)` (Sheppard). ``scipy.special.owens_t``
    evaluates :math:`T` to about machine precision.
    """
    from scipy.special import owens_t

    h, k, rho = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (h, k, rho)))
    r = np.sqrt((1.0 - rho) * (1.0 + rho))
    h0, k0 = h == 0, k == 0
    both = h0 & k0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ah = np.where(h0, np.sign(k) * np.inf, (k - rho * h) / (np.where(h0, 1.0, h) * r))
        ak = np.where(k0, np.sign(h) * np.inf, (h - rho * k) / (np.where(k0, 1.0, k) * r))
    ah, ak = np.where(both, 0.0, ah), np.where(both, 0.0, ak)
    sh, sk = np.sign(h), np.sign(k)
    beta = np.where((sh * sk < 0) | ((sh * sk == 0) & (h + k < 0)), 0.5, 0.0)
    value = 0.5 * _Phi(h) + 0.5 * _Phi(k) - owens_t(h, ah) - owens_t(k, ak) - beta
    value = np.where(both, 0.25 + np.arcsin(rho) / (2.0 * np.pi), value)
    value = np.clip(value, 0.0, 1.0)
    return value[()] if value.ndim == 0 else value


class _Term(NamedTuple):
    """``coef · fn(scale · x)``; ``fn=None`` is the constant 1."""

    coef: float
    fn: Nonlinearity | None
    scale: float = 1.0


def _pl_moments(p: _Pair, m1: np.ndarray, m2: np.ndarray) -> dict[tuple, np.ndarray]:
    r""":math:`\mathbb E[b_i(u)b_j(v)]` for the basis :math:`b\in\{1,x,\mathrm{relu},
    \mathrm{step}\}` (keys ``None``, ``identity``, ``relu``, ``step``) of a Gaussian pair
    with means :math:`m_1,m_2`: the truncated moments of the bivariate normal.

    With :math:`u=m_1+\sigma_1X`, :math:`v=m_2+\sigma_2Y`, :math:`h=m_1/\sigma_1`,
    :math:`k=m_2/\sigma_2`, :math:`r=\sqrt{1-\rho^2}` and :math:`A=\{X>-h,Y>-k\}`
    [R61] (S. Rosenbaum, *Moments of a truncated bivariate normal distribution*, J. R.
    Stat. Soc. B 23 (1961): the first and second moments, written for the lower
    truncation points :math:`-h,-k`; checked against quadrature in
    ``tests/test_closed_forms_nt.py``):

    .. math::
        L&=P(A)=\Phi_2(h,k;\rho),\\
        \mathbb E[X1_A]&=\varphi(h)\Phi\big(\tfrac{k-\rho h}{r}\big)
            +\rho\varphi(k)\Phi\big(\tfrac{h-\rho k}{r}\big),\\
        \mathbb E[XY1_A]&=\rho L-\rho h\varphi(h)\Phi\big(\tfrac{k-\rho h}{r}\big)
            -\rho k\varphi(k)\Phi\big(\tfrac{h-\rho k}{r}\big)
            +\frac{r}{2\pi}e^{-(h^2-2\rho hk+k^2)/(2r^2)},

    then :math:`\mathbb E[\mathrm{step}\,\mathrm{step}]=L`,
    :math:`\mathbb E[\mathrm{relu}(u)\mathrm{step}(v)]=m_1L+\sigma_1\mathbb E[X1_A]`,
    :math:`\mathbb E[\mathrm{relu}\,\mathrm{relu}]=m_1m_2L+m_1\sigma_2\mathbb E[Y1_A]
    +m_2\sigma_1\mathbb E[X1_A]+\sigma_1\sigma_2\mathbb E[XY1_A]`; the terms with
    :math:`x` by Stein's lemma, e.g. :math:`\mathbb E[u\,\mathrm{relu}(v)]=
    m_1\mathbb E\,\mathrm{relu}(v)+k_{12}\Phi(k)` (DERIVED). One variable:
    :math:`\mathbb E\,\mathrm{relu}(u)=m\Phi(m/\sigma)+\sigma\varphi(m/\sigma)`,
    :math:`\mathbb E\,\mathrm{step}(u)=\Phi(m/\sigma)`. At :math:`\rho=\pm1`
    (:math:`Y=\pm X`) the one-dimensional truncated moments are used, and a zero
    variance makes the factor the constant :math:`\phi(m)`.
    """
    s1, s2, rho, c = p.s1, p.s2, p.rho, p.k12
    h, pos1 = _ratio(m1, s1)
    k, pos2 = _ratio(m2, s2)
    er1 = np.where(pos1, m1 * _Phi(h) + s1 * _phi(h), np.maximum(m1, 0.0))
    er2 = np.where(pos2, m2 * _Phi(k) + s2 * _phi(k), np.maximum(m2, 0.0))
    es1 = np.where(pos1, _Phi(h), 0.5 + 0.5 * np.sign(m1))
    es2 = np.where(pos2, _Phi(k), 0.5 + 0.5 * np.sign(m2))
    d1 = np.where(pos1, _phi(h) / np.where(pos1, s1, 1.0), 0.0)
    d2 = np.where(pos2, _phi(k) / np.where(pos2, s2, 1.0), 0.0)
    both = pos1 & pos2
    r = np.sqrt((1.0 - rho) * (1.0 + rho))
    inner = both & (r > 0)
    rs, rh = np.where(inner, r, 1.0), np.where(inner, rho, 0.0)
    fa, fb = _Phi((k - rh * h) / rs), _Phi((h - rh * k) / rs)
    ph, pk = _phi(h), _phi(k)
    L = bivariate_normal_cdf(h, k, rh)
    ex = ph * fa + rh * pk * fb
    ey = pk * fb + rh * ph * fa
    with np.errstate(over="ignore", under="ignore"):
        q = (h * h - 2.0 * rh * h * k + k * k) / (rs * rs)
        exy = rh * L - rh * h * ph * fa - rh * k * pk * fb + rs / (2.0 * np.pi) * np.exp(-0.5 * q)
    # ρ = +1 (Y = X): A = {X > -min(h, k)}; ρ = -1 (Y = -X): A = {-h < X < k}
    cm = np.minimum(h, k)
    inside = h + k > 0
    l_m = np.where(inside, _Phi(k) - _Phi(-h), 0.0)
    ex_m = np.where(inside, ph - pk, 0.0)
    exy_m = -np.where(inside, l_m - k * pk - h * ph, 0.0)

    def pick(general: np.ndarray, plus: np.ndarray, minus: np.ndarray) -> np.ndarray:
        return np.where(r > 0, general, np.where(rho > 0, plus, minus))

    L = pick(L, _Phi(cm), l_m)
    ex, ey = pick(ex, _phi(cm), ex_m), pick(ey, _phi(cm), -ex_m)
    exy = pick(exy, _Phi(cm) - cm * _phi(cm), exy_m)
    rr = m1 * m2 * L + m1 * s2 * ey + m2 * s1 * ex + s1 * s2 * exy
    rs_ = m1 * L + s1 * ex
    sr = m2 * L + s2 * ey
    # a zero variance: that side is the constant relu(m) / step(m)
    ru1, ru2 = np.maximum(m1, 0.0), np.maximum(m2, 0.0)
    su1, su2 = 0.5 + 0.5 * np.sign(m1), 0.5 + 0.5 * np.sign(m2)

    def degenerate(general: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.where(both, general, np.where(~pos1, left, right))

    rr = degenerate(rr, ru1 * er2, er1 * ru2)
    rs_ = degenerate(rs_, ru1 * es2, er1 * su2)
    sr = degenerate(sr, su1 * er2, es1 * ru2)
    ss = degenerate(L, su1 * es2, es1 * su2)
    one = np.ones_like(m1)
    return {
        (None, None): one,
        (None, identity): m2,
        (None, relu): er2,
        (None, step): es2,
        (identity, None): m1,
        (identity, identity): c + m1 * m2,
        (identity, relu): m1 * er2 + c * es2,
        (identity, step): m1 * es2 + c * d2,
        (relu, None): er1,
        (relu, identity): m2 * er1 + c * es1,
        (relu, relu): rr,
        (relu, step): rs_,
        (step, None): es1,
        (step, identity): m2 * es1 + c * d1,
        (step, relu): sr,
        (step, step): ss,
    }


#: The piecewise-linear functions as combinations of the basis 1, x, relu, step:
#: sign = 2 step - 1 (sign(0) = 0 = 2·½ - 1), |x| = 2 relu(x) - x.
_PIECEWISE_LINEAR: dict[Nonlinearity, tuple[_Term, ...]] = {
    identity: (_Term(1.0, identity),),
    relu: (_Term(1.0, relu),),
    step: (_Term(1.0, step),),
    sign: (_Term(2.0, step), _Term(-1.0, None)),
    abs_: (_Term(2.0, relu), _Term(-1.0, identity)),
}


def _pl_pair(p: _Pair, m1: np.ndarray, m2: np.ndarray, f: Nonlinearity, g: Nonlinearity) -> Any:
    """:math:`\\mathbb E[f(u)g(v)]` of two piecewise-linear functions by bilinearity over
    :func:`_pl_moments`."""
    M = _pl_moments(p, m1, m2)
    out = np.zeros_like(m1)
    for a in _PIECEWISE_LINEAR[f]:
        for b in _PIECEWISE_LINEAR[g]:
            out = out + a.coef * b.coef * M[a.fn, b.fn]
    return out


def _pl_mean(k: np.ndarray, m: np.ndarray, f: Nonlinearity) -> Any:
    """:math:`\\mathbb E f(u)`, :math:`u\\sim\\mathcal N(m,k)`, of a piecewise-linear ``f``."""
    z = np.zeros_like(k)
    p = _pair(k, z, z, "mean")
    M = _pl_moments(p, m, z)
    return sum(a.coef * M[a.fn, None] for a in _PIECEWISE_LINEAR[f])


# --------------------------------------------------------------------------------------
# Closed forms: the piecewise-linear family (identity, relu, step, sign, abs)
# --------------------------------------------------------------------------------------
# Each takes the means m1, m2 (default 0). A centred pair uses the arc-cosine formulas
# below; with a mean, every one of them is the bilinear combination of the truncated
# moments of _pl_moments [Rosenbaum 1961].


@pair_closed_form(identity, identity, means=True)
def identity_identity(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[uv]=k_{12}+m_1m_2` (after validating the covariance)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_identity")
    return _finish(p.k12 + m1 * m2, "identity_identity")


@pair_closed_form(identity, relu, means=True)
def identity_relu(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{relu}(v)]=k_{12}/2` (centred).

    Stein: :math:`k_{12}\,\mathbb E[\mathrm{step}(v)]` (DERIVED); with means
    :math:`m_1\mathbb E\,\mathrm{relu}(v)+k_{12}\Phi(m_2/\sqrt{k_{22}})` (:func:`_pl_moments`).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "identity_relu")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, identity, relu), "identity_relu")
    return _finish(0.5 * p.k12, "identity_relu")


@pair_closed_form(identity, step, means=True)
def identity_step(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{step}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}` (centred).

    Stein: :math:`k_{12}\,\mathbb E[\delta(v)]=k_{12}/\sqrt{2\pi k_{22}}`; 0 if
    :math:`k_{22}=0` (DERIVED); with means
    :math:`m_1\Phi(m_2/\sigma_2)+k_{12}\varphi(m_2/\sigma_2)/\sigma_2`.
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "identity_step")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, identity, step), "identity_step")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "identity_step")


@pair_closed_form(identity, sign, means=True)
def identity_sign(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{sign}(v)]=\rho\sqrt{2k_{11}/\pi}` (centred).

    :math:`\mathrm{sign}=2\,\mathrm{step}-1` and :func:`identity_step` (DERIVED).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "identity_sign")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, identity, sign), "identity_sign")
    return _finish(2.0 * p.rho * p.s1 / _SQRT_2PI, "identity_sign")


@pair_closed_form(identity, abs_, means=True)
def identity_abs(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,|v|]=0` (centred: odd under :math:`(u,v)\mapsto-(u,v)`);
    with means by :math:`|x|=2\,\mathrm{relu}(x)-x`."""
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "identity_abs")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, identity, abs_), "identity_abs")
    return _finish(np.zeros_like(p.k11), "identity_abs")


@pair_closed_form(relu, relu, means=True)
def relu_relu(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r"""Arc-cosine kernel of degree 1: :math:`\mathbb E[\mathrm{relu}(u)\mathrm{relu}(v)]`.

    .. math::
        \frac{\sqrt{k_{11}k_{22}}}{2\pi}\big(\sin\vartheta+(\pi-\vartheta)\cos\vartheta
        \big),\qquad\vartheta=\arccos\rho,

    [CS09], [NT] ``ABRelu(0, 1)`` (docs/concepts/kernel-limits.md). Diagonal: :math:`k/2`; 0 when a
    variance is 0. With means: the truncated moments of :func:`_pl_moments`
    [Rosenbaum 1961].
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "relu_relu")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, relu, relu), "relu_relu")
    theta = np.arccos(p.rho)
    value = p.s / (2.0 * np.pi) * (np.sqrt(1.0 - p.rho**2) + (np.pi - theta) * p.rho)
    return _finish(value, "relu_relu")


@pair_closed_form(relu, step, means=True)
def relu_step(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\mathrm{step}(v)]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`.

    Stein's lemma in :math:`u` gives
    :math:`\mathbb E[u\,\mathbb 1_{u>0}\mathbb 1_{v>0}]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`
    (DERIVED; it is :math:`\partial/\partial\sqrt{k_{22}}` of the degree-1 arc-cosine
    kernel [CS09]). With :math:`k_{22}=0`, :math:`\mathrm{step}(0)=\tfrac12`. With
    means: :func:`_pl_moments`.
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "relu_step")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, relu, step), "relu_step")
    return _finish(p.s1 * (1.0 + p.rho) / (2.0 * _SQRT_2PI), "relu_step")


@pair_closed_form(relu, sign, means=True)
def relu_sign(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{sign}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}`.

    :math:`2\,\mathrm{relu\_step}-\mathbb E\,\mathrm{relu}(u)` (DERIVED; also with means).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "relu_sign")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, relu, sign), "relu_sign")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "relu_sign")


@pair_closed_form(relu, abs_, means=True)
def relu_abs(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,|v|]=\tfrac12\,\mathbb E[|u||v|]` (centred).

    :math:`\mathrm{relu}(u)=(u+|u|)/2` and :math:`\mathbb E[u|v|]=0` (DERIVED).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "relu_abs")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, relu, abs_), "relu_abs")
    return _finish(0.5 * _abs_abs(p.s, p.rho), "relu_abs")


@pair_closed_form(step, step, means=True)
def step_step(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r"""Arc-cosine kernel of degree 0: :math:`\mathbb E[\mathrm{step}(u)\mathrm{step}(v)]`.

    .. math::
        \mathbb E[\mathrm{step}(u)\mathrm{step}(v)]=\frac{\pi-\vartheta}{2\pi},
        \qquad\vartheta=\arccos\rho,


    :math:`\vartheta=\arccos\rho` [CS09], [NT] ``ABRelu`` ntk factor (docs/concepts/kernel-limits.md).
    Diagonal :math:`\tfrac12`. With a zero variance (:math:`\mathrm{step}(0)=\tfrac12`)
    the value is :math:`\tfrac14`, which is the formula at :math:`\rho=0`. With means:
    the orthant probability :math:`\Phi_2(m_1/\sigma_1,m_2/\sigma_2;\rho)`
    (:func:`bivariate_normal_cdf`).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "step_step")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, step, step), "step_step")
    return _finish((np.pi - np.arccos(p.rho)) / (2.0 * np.pi), "step_step")


@pair_closed_form(step, sign, means=True)
def step_sign(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,\mathrm{sign}(v)]=\arcsin(\rho)/\pi` (centred).

    Half of :func:`sign_sign`, since :math:`\mathrm{step}=(1+\mathrm{sign})/2` (DERIVED).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "step_sign")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, step, sign), "step_sign")
    return _finish(np.arcsin(p.rho) / np.pi, "step_sign")


@pair_closed_form(step, abs_, means=True)
def step_abs(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,|v|]=\sqrt{k_{22}/(2\pi)}`, independent of :math:`\rho`
    (centred).

    :math:`\mathrm{step}=(1+\mathrm{sign})/2` and :math:`\mathbb E[\mathrm{sign}(u)|v|]=0`
    (DERIVED).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "step_abs")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, step, abs_), "step_abs")
    return _finish(p.s2 / _SQRT_2PI, "step_abs")


@pair_closed_form(sign, sign, means=True)
def sign_sign(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\mathrm{sign}(v)]=\tfrac2\pi\arcsin\rho` (centred).

    Grothendieck/Sheppard identity; [NT] ``Sign()``: :math:`1-\tfrac2\pi\arccos\rho`.
    0 when a variance is 0 (:math:`\mathrm{sign}(0)=0`). With means:
    :math:`4\Phi_2-2\Phi(h)-2\Phi(k)+1` (:math:`\mathrm{sign}=2\,\mathrm{step}-1`).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "sign_sign")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, sign, sign), "sign_sign")
    return _finish(2.0 / np.pi * np.arcsin(p.rho), "sign_sign")


@pair_closed_form(sign, abs_, means=True)
def sign_abs(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\,|v|]=0` (centred: odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "sign_abs")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, sign, abs_), "sign_abs")
    return _finish(np.zeros_like(p.k11), "sign_abs")


def _abs_abs(s: np.ndarray, rho: np.ndarray) -> np.ndarray:
    return s * 2.0 / np.pi * (np.sqrt(1.0 - rho**2) + rho * np.arcsin(rho))


@pair_closed_form(abs_, abs_, means=True)
def abs_abs(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r"""Absolute-value kernel :math:`\mathbb E[|u||v|]`.

    .. math::
        \mathbb E[|u||v|]=\frac2\pi\sqrt{k_{11}k_{22}}\big(\sqrt{1-\rho^2}+\rho\arcsin\rho\big),


    :math:`|z|=\mathrm{relu}(z)+\mathrm{relu}(-z)`, i.e. [NT] ``ABRelu(-1, 1)`` (= ``Abs``),
    from the arc-cosine kernel [CS09]. Diagonal :math:`k`. With means:
    :math:`|x|=2\,\mathrm{relu}(x)-x` and :func:`_pl_moments`.
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "abs_abs")
    if not centred:
        return _finish(_pl_pair(p, m1, m2, abs_, abs_), "abs_abs")
    return _finish(_abs_abs(p.s, p.rho), "abs_abs")


# --------------------------------------------------------------------------------------
# Closed forms: the erf family (identity, erf, derf)
# --------------------------------------------------------------------------------------
# erf(x) = 2Φ(√2 x) - 1 and E Φ(a u) = Φ(a m / √(1 + a² k)) (P(Z < a u) with Z ~ N(0, 1)
# independent): every expectation with means is a normal or bivariate normal CDF.


def _erf_mean(k: np.ndarray, m: np.ndarray) -> np.ndarray:
    from scipy.special import erf as erf_

    return erf_(m / np.sqrt(1.0 + 2.0 * k))


def _derf_mean(k: np.ndarray, m: np.ndarray) -> np.ndarray:
    d = 1.0 + 2.0 * k
    return _TWO_OVER_SQRT_PI / np.sqrt(d) * np.exp(-np.square(m) / d)


@pair_closed_form(identity, erf, means=True)
def identity_erf(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}(v)]=m_1\,\mathrm{erf}\big(m_2/\sqrt{1+2k_{22}}\big)
    +k_{12}\,\mathbb E\,\mathrm{erf}'(v)` (:func:`mean_derf`); centred
    :math:`\frac{2k_{12}}{\sqrt{\pi(1+2k_{22})}}`.

    Stein: :math:`\mathbb E[(u-m_1)g(v)]=k_{12}\,\mathbb E[g'(v)]` (DERIVED).
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_erf")
    value = m1 * _erf_mean(p.k22, m2) + p.k12 * _derf_mean(p.k22, m2)
    return _finish(value, "identity_erf")


@pair_closed_form(identity, derf, means=True)
def identity_derf(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}'(v)]=\mathbb E\,\mathrm{erf}'(v)\,
    \big(m_1-2k_{12}m_2/(1+2k_{22})\big)`; 0 when centred (odd).

    Stein with :math:`\mathrm{erf}''(v)=-2v\,\mathrm{erf}'(v)`, and
    :math:`\mathbb E[v\,e^{-v^2}]=\mathbb E[e^{-v^2}]\,m_2/(1+2k_{22})` (the weight
    :math:`e^{-v^2}` tilts :math:`\mathcal N(m_2,k_{22})` into
    :math:`\mathcal N\big(\tfrac{m_2}{1+2k_{22}},\tfrac{k_{22}}{1+2k_{22}}\big)`; DERIVED).
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_derf")
    e = _derf_mean(p.k22, m2)
    return _finish(e * (m1 - 2.0 * p.k12 * m2 / (1.0 + 2.0 * p.k22)), "identity_derf")


@pair_closed_form(erf, erf, means=True)
def erf_erf(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r"""Arcsine kernel :math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]`.

    .. math::
        \mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]
        =\frac2\pi\arcsin\frac{2k_{12}}{\sqrt{(1+2k_{11})(1+2k_{22})}},


    [W97] (docs/concepts/kernel-limits.md); evaluated as in [NT] ``Erf`` by the angle
    :math:`\arctan\big(2k_{12}/\sqrt{(1+2k_{11})(1+2k_{22})-4k_{12}^2}\big)` (the
    root is :math:`\ge1` for a covariance, so this is NT's ``arctan2`` angle, to
    rounding, at half the cost).

    With means it has no elementary form, but it is a bivariate normal CDF:
    :math:`\mathrm{erf}(x)=2\Phi(\sqrt2x)-1` and
    :math:`\mathbb E[\Phi(\sqrt2u)\Phi(\sqrt2v)]=P(Z_1<\sqrt2u,Z_2<\sqrt2v)
    =\Phi_2(h_1,h_2;\rho')` with :math:`h_i=\sqrt2m_i/\sqrt{1+2k_{ii}}`,
    :math:`\rho'=2k_{12}/\sqrt{(1+2k_{11})(1+2k_{22})}` (:math:`|\rho'|<1`), so
    :math:`4\Phi_2(h_1,h_2;\rho')-2\Phi(h_1)-2\Phi(h_2)+1` (DERIVED;
    :func:`bivariate_normal_cdf`).
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "erf_erf")
    c = p.k12
    d1, d2 = 1.0 + 2.0 * p.k11, 1.0 + 2.0 * p.k22
    if not centred:
        h1, h2 = _SQRT2 * m1 / np.sqrt(d1), _SQRT2 * m2 / np.sqrt(d2)
        rho = np.clip(2.0 * c / np.sqrt(d1 * d2), -1.0, 1.0)
        value = 4.0 * bivariate_normal_cdf(h1, h2, rho) - 2.0 * _Phi(h1) - 2.0 * _Phi(h2) + 1.0
        return _finish(np.asarray(value), "erf_erf")
    den = np.sqrt(d1 * d2 - 4.0 * c**2)  # ≥ 1: arctan of the ratio is arctan2's angle
    return _finish(2.0 / np.pi * np.arctan(2.0 * c / den), "erf_erf")


@pair_closed_form(erf, derf, means=True)
def erf_derf(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}'(v)]=\mathbb E\,\mathrm{erf}'(v)\;
    \mathrm{erf}\big(\tilde m/\sqrt{1+2\tilde k}\big)`, 0 when centred (odd).

    The weight :math:`e^{-v^2}` tilts the pair: :math:`u` gets mean
    :math:`\tilde m=m_1-2k_{12}m_2/(1+2k_{22})` and variance
    :math:`\tilde k=k_{11}-2k_{12}^2/(1+2k_{22})` (Gaussian conditioning; DERIVED), and
    :math:`\mathbb E\,\mathrm{erf}(u)` is :func:`mean_erf`.
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "erf_derf")
    d2 = 1.0 + 2.0 * p.k22
    mt = m1 - 2.0 * p.k12 * m2 / d2
    kt = np.maximum(p.k11 - 2.0 * p.k12**2 / d2, 0.0)
    return _finish(_derf_mean(p.k22, m2) * _erf_mean(kt, mt), "erf_derf")


@pair_closed_form(derf, derf, means=True)
def derf_derf(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r"""Kernel of the derivative :math:`\mathbb E[\mathrm{erf}'(u)\mathrm{erf}'(v)]`.

    .. math::
        \mathbb E[\mathrm{erf}'(u)\mathrm{erf}'(v)]
        =\frac4\pi D^{-1/2}\exp\Big(-\frac{(1+2k_{22})m_1^2-4k_{12}m_1m_2+(1+2k_{11})m_2^2}
        {D}\Big),\quad D=(1+2k_{11})(1+2k_{22})-4k_{12}^2,


    :math:`\mathrm{erf}'(z)=\tfrac2{\sqrt\pi}e^{-z^2}`; centred: [W97]
    (docs/concepts/kernel-limits.md), the ntk factor of [NT] ``Erf``; with means the
    Gaussian integral :math:`\mathbb E\,e^{-x^\top x}=\det(I+2K)^{-1/2}
    e^{-m^\top(I+2K)^{-1}m}` (DERIVED). Equals :math:`4/\pi` when both variances and
    means are 0.
    """
    p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, "derf_derf")
    c = p.k12
    d1, d2 = 1.0 + 2.0 * p.k11, 1.0 + 2.0 * p.k22
    D = d1 * d2 - 4.0 * c**2
    if centred:  # the exponent is 0 (D ≥ 1): the same values without exp
        return _finish(4.0 / np.pi / np.sqrt(D), "derf_derf")
    quad = (d2 * m1**2 - 4.0 * c * m1 * m2 + d1 * m2**2) / D
    return _finish(4.0 / np.pi / np.sqrt(D) * np.exp(-quad), "derf_derf")


# --------------------------------------------------------------------------------------
# Closed forms: the trigonometric / exponential family (identity, sin, cos, exp)
# --------------------------------------------------------------------------------------
# All from the characteristic function: for w ~ N(μ, s²), E cos w = cos(μ) e^{-s²/2},
# E sin w = sin(μ) e^{-s²/2}, E e^w = e^{μ + s²/2}, applied to w = u ± v (DERIVED).


@pair_closed_form(identity, sin, means=True)
def identity_sin(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\sin v]=e^{-k_{22}/2}(m_1\sin m_2+k_{12}\cos m_2)` (Stein; DERIVED)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_sin")
    value = np.exp(-0.5 * p.k22) * (m1 * np.sin(m2) + p.k12 * np.cos(m2))
    return _finish(value, "identity_sin")


@pair_closed_form(identity, cos, means=True)
def identity_cos(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\cos v]=e^{-k_{22}/2}(m_1\cos m_2-k_{12}\sin m_2)` (Stein; 0 when centred)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_cos")
    value = np.exp(-0.5 * p.k22) * (m1 * np.cos(m2) - p.k12 * np.sin(m2))
    return _finish(value, "identity_cos")


@pair_closed_form(identity, exp, means=True)
def identity_exp(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,e^v]=(m_1+k_{12})e^{m_2+k_{22}/2}` (Stein with :func:`mean_exp`; DERIVED)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_exp")
    with np.errstate(over="ignore", invalid="ignore"):
        value = (m1 + p.k12) * np.exp(m2 + 0.5 * p.k22)
    return _finish(value, "identity_exp")


def _cos_sum_diff(p: _Pair, m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(e₋, e₊)``: :math:`e^{-\\operatorname{Var}(u\\mp v)/2}`, exponents ≤ 0."""
    h = 0.5 * (p.k11 + p.k22)
    return np.exp(p.k12 - h), np.exp(-p.k12 - h)


@pair_closed_form(sin, sin, means=True)
def sin_sin(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\sin u\sin v]=\tfrac12\big(\cos(m_1-m_2)e_- - \cos(m_1+m_2)e_+\big)`,
    :math:`e_\mp=e^{-(k_{11}\mp2k_{12}+k_{22})/2}`; centred
    :math:`e^{-(k_{11}+k_{22})/2}\sinh k_{12}`.

    From :math:`\sin a\sin b=\tfrac12(\cos(a-b)-\cos(a+b))` and the characteristic
    function (DERIVED), evaluated with exponentials of nonpositive exponents, so it
    cannot overflow.
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "sin_sin")
    em, ep = _cos_sum_diff(p, m1, m2)
    return _finish(0.5 * (np.cos(m1 - m2) * em - np.cos(m1 + m2) * ep), "sin_sin")


@pair_closed_form(cos, cos, means=True)
def cos_cos(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\cos u\cos v]=\tfrac12\big(\cos(m_1-m_2)e_-+\cos(m_1+m_2)e_+\big)`;
    centred :math:`e^{-(k_{11}+k_{22})/2}\cosh k_{12}` (see :func:`sin_sin`)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "cos_cos")
    em, ep = _cos_sum_diff(p, m1, m2)
    return _finish(0.5 * (np.cos(m1 - m2) * em + np.cos(m1 + m2) * ep), "cos_cos")


@pair_closed_form(sin, cos, means=True)
def sin_cos(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[\sin u\cos v]=\tfrac12\big(\sin(m_1+m_2)e_++\sin(m_1-m_2)e_-\big)`;
    0 for a centred pair (odd under :math:`(u,v)\to-(u,v)`)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "sin_cos")
    em, ep = _cos_sum_diff(p, m1, m2)
    return _finish(0.5 * (np.sin(m1 + m2) * ep + np.sin(m1 - m2) * em), "sin_cos")


@pair_closed_form(exp, exp, means=True)
def exp_exp(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[e^ue^v]=e^{m_1+m_2+(k_{11}+2k_{12}+k_{22})/2}` (moment generating function).

    Raises :class:`~tensorprog.core.errors.NumericalError` on overflow.
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "exp_exp")
    with np.errstate(over="ignore"):
        value = np.exp(m1 + m2 + 0.5 * (p.k11 + p.k22) + p.k12)
    return _finish(value, "exp_exp")


@pair_closed_form(exp, sin, means=True)
def exp_sin(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[e^u\sin v]=e^{m_1+(k_{11}-k_{22})/2}\sin(m_2+k_{12})`.

    Imaginary part of :math:`\mathbb E\,e^{u+iv}=e^{m_1+im_2+(k_{11}-k_{22})/2+ik_{12}}` (DERIVED).
    """
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "exp_sin")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(m1 + 0.5 * (p.k11 - p.k22)) * np.sin(m2 + p.k12)
    return _finish(value, "exp_sin")


@pair_closed_form(exp, cos, means=True)
def exp_cos(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[e^u\cos v]=e^{m_1+(k_{11}-k_{22})/2}\cos(m_2+k_{12})` (see :func:`exp_sin`)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "exp_cos")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(m1 + 0.5 * (p.k11 - p.k22)) * np.cos(m2 + p.k12)
    return _finish(value, "exp_cos")


# --------------------------------------------------------------------------------------
# One-variable means of a Gaussian u ~ N(m, k) (m = 0 by default)
# --------------------------------------------------------------------------------------


@mean_closed_form(identity, means=True)
def mean_identity(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,u=m`."""
    _, m, _ = _variance_m(k, m, "mean_identity")
    return _finish(m.copy(), "mean_identity")


@mean_closed_form(relu, means=True)
def mean_relu(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{relu}(u)=m\Phi(m/\sqrt k)+\sqrt k\,\varphi(m/\sqrt k)`;
    centred :math:`\sqrt{k/(2\pi)}` (half-normal mean)."""
    v, m, centred = _variance_m(k, m, "mean_relu")
    if not centred:
        return _finish(_pl_mean(v, m, relu), "mean_relu")
    return _finish(np.sqrt(v) / _SQRT_2PI, "mean_relu")


@mean_closed_form(step, means=True)
def mean_step(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{step}(u)=\Phi(m/\sqrt k)`; :math:`\tfrac12` when centred, also
    for :math:`k=0` (step(0) = 1/2)."""
    v, m, centred = _variance_m(k, m, "mean_step")
    if not centred:
        return _finish(_pl_mean(v, m, step), "mean_step")
    return _finish(np.full_like(v, 0.5), "mean_step")


@mean_closed_form(sign, means=True)
def mean_sign(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{sign}(u)=2\Phi(m/\sqrt k)-1` (0 when centred)."""
    v, m, centred = _variance_m(k, m, "mean_sign")
    if not centred:
        return _finish(_pl_mean(v, m, sign), "mean_sign")
    return _finish(np.zeros_like(v), "mean_sign")


@mean_closed_form(abs_, means=True)
def mean_abs(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,|u|=2\,\mathbb E\,\mathrm{relu}(u)-m`; centred :math:`\sqrt{2k/\pi}`
    (half-normal mean)."""
    v, m, centred = _variance_m(k, m, "mean_abs")
    if not centred:
        return _finish(_pl_mean(v, m, abs_), "mean_abs")
    return _finish(2.0 * np.sqrt(v) / _SQRT_2PI, "mean_abs")


@mean_closed_form(erf, means=True)
def mean_erf(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}(u)=\mathrm{erf}\big(m/\sqrt{1+2k}\big)` (0 when centred).

    :math:`\mathrm{erf}(x)=2\Phi(\sqrt2x)-1` and :math:`\mathbb E\,\Phi(au)=
    \Phi\big(am/\sqrt{1+a^2k}\big)` (DERIVED).
    """
    v, m, _ = _variance_m(k, m, "mean_erf")
    return _finish(_erf_mean(v, m), "mean_erf")


@mean_closed_form(derf, means=True)
def mean_derf(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}'(u)=\tfrac{2}{\sqrt\pi}(1+2k)^{-1/2}e^{-m^2/(1+2k)}`.

    From :math:`\mathbb E\,e^{-u^2}=(1+2k)^{-1/2}e^{-m^2/(1+2k)}` (Gaussian integral).
    """
    v, m, _ = _variance_m(k, m, "mean_derf")
    return _finish(_derf_mean(v, m), "mean_derf")


@mean_closed_form(sin, means=True)
def mean_sin(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\sin u=\sin(m)e^{-k/2}` (characteristic function; 0 when centred)."""
    v, m, _ = _variance_m(k, m, "mean_sin")
    return _finish(np.sin(m) * np.exp(-0.5 * v), "mean_sin")


@mean_closed_form(cos, means=True)
def mean_cos(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\cos u=\cos(m)e^{-k/2}` (characteristic function)."""
    v, m, _ = _variance_m(k, m, "mean_cos")
    return _finish(np.cos(m) * np.exp(-0.5 * v), "mean_cos")


@mean_closed_form(exp, means=True)
def mean_exp(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,e^u=e^{m+k/2}` (moment generating function); raises on overflow."""
    v, m, _ = _variance_m(k, m, "mean_exp")
    with np.errstate(over="ignore"):
        value = np.exp(m + 0.5 * v)
    return _finish(value, "mean_exp")


# --------------------------------------------------------------------------------------
# Closed forms: gelu(x) = x Φ(x) and its derivative
# --------------------------------------------------------------------------------------

#: :math:`\mathrm{gelu}'(x)=\Phi(x)+x\varphi(x)`, the object ``tp.gelu.derivative()``.
dgelu = gelu.derivative()


@pair_closed_form(gelu, gelu)
def gelu_gelu(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r"""GELU kernel :math:`\mathbb E[\mathrm{gelu}(u)\mathrm{gelu}(v)]`, :math:`\mathrm{gelu}(x)=x\Phi(x)`.

    .. math::
        \frac{k_{12}}4+\frac1{2\pi}\Big(\frac{k_{12}^2+k_{11}k_{22}\,\delta^2}
        {(1+k_{11})(1+k_{22})\,\delta}+k_{12}\arctan\frac{k_{12}}{\delta}\Big),\qquad
        \delta^2=(1+k_{11})(1+k_{22})-k_{12}^2,

    [T21] (Tsuchida, Pearce, van der Heide, Roosta & Gallagher, *Avoiding kernel fixed
    points: computing with ELU and GELU infinite networks*, AAAI 2021: the GELU kernel),
    in the form evaluated by [NT] ``Gelu``; checked against quadrature in
    ``tests/test_closed_forms_nt.py``. :math:`\delta\ge1`, so it is finite for every
    covariance.
    """
    p = _pair(k11, k12, k22, "gelu_gelu")
    c, a1, a2, d2 = _gelu_delta(p)
    d = np.sqrt(d2)
    term = c**2 / (a1 * a2 * d) + (p.k11 / a1) * (p.k22 / a2) * d
    value = 0.25 * c + (term + c * np.arctan2(c, d)) / (2.0 * np.pi)
    return _finish(value, "gelu_gelu")


def _gelu_delta(p: _Pair) -> tuple[np.ndarray, ...]:
    r""":math:`(k_{12},1+k_{11},1+k_{22},\delta^2)` with
        :math:`\delta^2=(1+k_{11})(1+k_{22})-k_{12}^2` evaluated as
        :math:`1+k_{11}+k_{22}+k_{11}k_{22}(1-
    ho)(1+
    ho)`: no cancellation when
        :math:`k_{12}pprox\sqrt{k_{11}k_{22}}` is large (deep networks)."""
    c, a1, a2 = p.k12, 1.0 + p.k11, 1.0 + p.k22
    d2 = 1.0 + p.k11 + p.k22 + p.s**2 * (1.0 - p.rho) * (1.0 + p.rho)
    return c, a1, a2, d2


@pair_closed_form(dgelu, dgelu)
def dgelu_dgelu(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{gelu}'(u)\mathrm{gelu}'(v)]`, the ntk factor of GELU.

    .. math::
        \frac14+\frac{1}{2\pi}\arctan\frac{k_{12}}{\delta}+\frac{k_{12}}{2\pi\delta}
        \Big(\frac1{\delta^2}+\frac{1-k_{11}k_{22}}{(1+k_{11})(1+k_{22})}+1\Big),

    :math:`\delta` as in :func:`gelu_gelu`; the derivative of [T21]'s kernel as
    evaluated by [NT] ``Gelu``, checked against quadrature in
    ``tests/test_closed_forms_nt.py``.
    """
    p = _pair(k11, k12, k22, "dgelu_dgelu")
    c, a1, a2, d2 = _gelu_delta(p)
    d = np.sqrt(d2)
    # (1 - k11 k22)/(a1 a2) + 1 = (2 + k11 + k22)/(a1 a2), without cancellation
    value = (
        0.25
        + np.arctan2(c, d) / (2.0 * np.pi)
        + c / (2.0 * np.pi * d) * (1.0 / d2 + (2.0 + p.k11 + p.k22) / (a1 * a2))
    )
    return _finish(value, "dgelu_dgelu")


def _gelu_parts(k: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r""":math:`(\mathbb E\,\mathrm{gelu},\mathbb E\,\mathrm{gelu}',\mathbb E\,\mathrm{gelu}'')`
    for :math:`u\sim\mathcal N(m,k)`.

    With :math:`c=\sqrt{1+k}`, :math:`t=m/c`: :math:`\mathbb E\,\Phi(u)=\Phi(t)`,
    :math:`\mathbb E\,\varphi(u)=\varphi(t)/c`, and the weight :math:`\varphi(u)` tilts
    :math:`u` to :math:`\mathcal N(m/c^2,k/c^2)`; so
    :math:`\mathbb E[u\Phi(u)]=m\Phi(t)+k\varphi(t)/c` (Stein),
    :math:`\mathbb E\,\mathrm{gelu}'(u)=\Phi(t)+\varphi(t)\,m/c^3` and
    :math:`\mathbb E\,\mathrm{gelu}''=\mathbb E[(2-u^2)\varphi(u)]=\tfrac{\varphi(t)}{c}
    \big(2-\tfrac{k}{c^2}-\tfrac{m^2}{c^4}\big)` (DERIVED).
    """
    c2 = 1.0 + k
    c = np.sqrt(c2)
    t = m / c
    Ph, ph = _Phi(t), _phi(t)
    return m * Ph + k * ph / c, Ph + ph * m / (c2 * c), ph / c * (2.0 - k / c2 - m**2 / c2**2)


@mean_closed_form(gelu, means=True)
def mean_gelu(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{gelu}(u)=m\Phi(t)+k\varphi(t)/\sqrt{1+k}`, :math:`t=m/\sqrt{1+k}`
    (:func:`_gelu_parts`); centred :math:`k/\sqrt{2\pi(1+k)}`."""
    v, m, _ = _variance_m(k, m, "mean_gelu")
    return _finish(_gelu_parts(v, m)[0], "mean_gelu")


@mean_closed_form(dgelu, means=True)
def mean_dgelu(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
    r""":math:`\mathbb E\,\mathrm{gelu}'(u)=\Phi(t)+\varphi(t)\,m/(1+k)^{3/2}`; centred
    :math:`\tfrac12` (:func:`_gelu_parts`)."""
    v, m, _ = _variance_m(k, m, "mean_dgelu")
    return _finish(_gelu_parts(v, m)[1], "mean_dgelu")


@pair_closed_form(identity, gelu, means=True)
def identity_gelu(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{gelu}(v)]=m_1\mathbb E\,\mathrm{gelu}(v)+k_{12}\,
    \mathbb E\,\mathrm{gelu}'(v)` (Stein; centred :math:`k_{12}/2`; DERIVED)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_gelu")
    e0, e1, _ = _gelu_parts(p.k22, m2)
    return _finish(m1 * e0 + p.k12 * e1, "identity_gelu")


@pair_closed_form(identity, dgelu, means=True)
def identity_dgelu(
    k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{gelu}'(v)]=m_1\mathbb E\,\mathrm{gelu}'(v)+k_{12}\,
    \mathbb E\,\mathrm{gelu}''(v)` (Stein with :func:`_gelu_parts`; DERIVED)."""
    p, m1, m2, _ = _pair_m(k11, k12, k22, m1, m2, "identity_dgelu")
    _, e1, e2 = _gelu_parts(p.k22, m2)
    return _finish(m1 * e1 + p.k12 * e2, "identity_dgelu")


# --------------------------------------------------------------------------------------
# Combinations: a function that is a sum of c·f(s·x) of registered functions
# --------------------------------------------------------------------------------------


def _term_pair(
    t1: _Term, t2: _Term, p: _Pair, m1: np.ndarray, m2: np.ndarray, centred: bool
) -> np.ndarray:
    """:math:`\\mathbb E[f(s_1u)g(s_2v)]` of two terms (coefficients not applied)."""
    s1, s2 = t1.scale, t2.scale
    if t1.fn is None and t2.fn is None:
        return np.ones_like(p.k11)
    if t1.fn is None or t2.fn is None:
        t, k, m = (t2, p.k22, m2) if t1.fn is None else (t1, p.k11, m1)
        form = mean_form(t.fn, centred)
        args = (t.scale**2 * k,) if centred else (t.scale**2 * k, t.scale * m)
        return np.asarray(form(*args))  # type: ignore[misc]
    form = pair_form(t1.fn, t2.fn, centred)
    args = (s1 * s1 * p.k11, s1 * s2 * p.k12, s2 * s2 * p.k22)
    if not centred:
        args += (s1 * m1, s2 * m2)
    return np.asarray(form(*args))  # type: ignore[misc]


def _available(t1: _Term, t2: _Term | None, centred: bool) -> bool:
    """Whether the closed forms that :func:`_term_pair` needs are registered."""
    fns = [t.fn for t in (t1, t2) if t is not None and t.fn is not None]
    if len(fns) == 2:
        return pair_form(fns[0], fns[1], centred) is not None
    if len(fns) == 1:
        return mean_form(fns[0], centred) is not None
    return True


def _combination_pair(
    phi: Nonlinearity, c1: tuple[_Term, ...], psi: Nonlinearity, c2: tuple[_Term, ...], means: bool
) -> PairForm:
    name = f"{phi.name}_{psi.name}"

    def form(
        k11: ArrayLike, k12: ArrayLike, k22: ArrayLike, m1: ArrayLike = 0.0, m2: ArrayLike = 0.0
    ) -> Any:
        p, m1, m2, centred = _pair_m(k11, k12, k22, m1, m2, name)
        if not (centred or means):
            raise ProgramValueError(f"{name}: this closed form is for centred pairs only")
        out = np.zeros_like(p.k11)
        for a in c1:
            for b in c2:
                out = out + a.coef * b.coef * _term_pair(a, b, p, m1, m2, centred)
        return _finish(out, name)

    form.__name__ = form.__qualname__ = name
    form.__doc__ = (
        f"E[{phi.name}(u) {psi.name}(v)] by bilinearity: {phi.name} = {_text(c1)}, "
        f"{psi.name} = {_text(c2)} (E[c·f(s u)·d·g(t v)] = c d E[f(u')g(v')] with the pair "
        f"(s u, t v) of covariance (s² k11, s t k12, t² k22) and means (s m1, t m2))."
    )
    return form


def _combination_mean(phi: Nonlinearity, c: tuple[_Term, ...], means: bool) -> MeanForm:
    name = f"mean_{phi.name}"

    def form(k: ArrayLike, m: ArrayLike = 0.0) -> Any:
        v, m, centred = _variance_m(k, m, name)
        if not (centred or means):
            raise ProgramValueError(f"{name}: this closed form is for centred variables only")
        z = np.zeros_like(v)
        p = _pair(v, z, z, name)
        one = _Term(1.0, None)
        out = sum(a.coef * _term_pair(a, one, p, m, z, centred) for a in c)
        return _finish(np.asarray(out, dtype=float), name)

    form.__name__ = form.__qualname__ = name
    form.__doc__ = f"E {phi.name}(u) by linearity: {phi.name} = {_text(c)}."
    return form


def _text(c: tuple[_Term, ...]) -> str:
    def one(t: _Term) -> str:
        fn = "1" if t.fn is None else (t.fn.name + (f"({t.scale:g}·x)" if t.scale != 1 else ""))
        return f"{t.coef:g}·{fn}"

    return " + ".join(one(t) for t in c)


def register_combination(
    members: dict[Nonlinearity, tuple[_Term, ...]], partners: tuple[Nonlinearity, ...] = ()
) -> None:
    """Register the closed forms of functions that are combinations of registered ones.

    ``members`` maps each new function :math:`\\phi=\\sum_i c_i f_i(s_i x)` to its terms
    (``_Term(c, f, s)``; ``f=None`` is the constant 1). Registered: :math:`\\mathbb E\\phi`,
    and :math:`\\mathbb E[\\phi(u)\\psi(v)]` for every pair of members, of a member with
    ``identity`` and with each of ``partners`` -- each by bilinearity (exact, since every
    term is), taking means when every term's form does, and only where every term's form
    exists. Pairs that already have a form keep it.
    """
    items: dict[Nonlinearity, tuple[_Term, ...]] = {identity: (_Term(1.0, identity),)}
    for f in partners:
        items[f] = (_Term(1.0, f),)
    items.update(members)

    for phi, c in members.items():
        if phi in SINGLE_CLOSED_FORMS:
            continue
        if all(_available(t, None, True) for t in c):
            means = all(_available(t, None, False) for t in c)
            mean_closed_form(phi, means=means)(_combination_mean(phi, c, means))
    keys = list(items)
    for i, phi in enumerate(keys):
        for psi in keys[i:]:
            if (phi not in members and psi not in members) or (phi, psi) in PAIR_CLOSED_FORMS:
                continue
            c1, c2 = items[phi], items[psi]
            if not all(_available(a, b, True) for a in c1 for b in c2):
                continue
            means = all(_available(a, b, False) for a in c1 for b in c2)
            pair_closed_form(phi, psi, means=means)(_combination_pair(phi, c1, psi, c2, means))


#: :math:`\cos'=-\sin` (a new object: its body ``-sin(x)`` is no builtin).
dcos = cos.derivative()
register_combination({dcos: (_Term(-1.0, sin),)}, partners=(sin, cos))


@ab_relu.on_create
def _ab_relu_forms(phi: Nonlinearity, a: float, b: float) -> None:
    r"""``ab_relu(a, b)`` :math:`=a\,x+(b-a)\,\mathrm{relu}(x)`, its derivative
    :math:`a+(b-a)\,\mathrm{step}(x)` (with :math:`\mathrm{step}(0)=\tfrac12`:
    :math:`a\,\mathrm{step}(-x)+b\,\mathrm{step}(x)` at 0 is :math:`(a+b)/2`), so every
    expectation is a combination of the arc-cosine kernels [CS09] -- and with means of
    the truncated moments [Rosenbaum 1961]. Centred, :math:`\mathbb E[\phi(u)\phi(v)]
    =\tfrac{a^2+b^2}2k_{12}+\tfrac{(a-b)^2}{2\pi}\sqrt{k_{11}k_{22}}(\sqrt{1-\rho^2}
    -\rho\arccos\rho)` ([NT] ``ABRelu``; leaky relu: [Tsuchida, Roosta & Gallagher,
    *Invariance of weight distributions in rectified MLPs*, ICML 2018]).
    """
    register_combination(
        {
            phi: (_Term(a, identity), _Term(b - a, relu)),
            phi.derivative(): (_Term(a, None), _Term(b - a, step)),
        },
        partners=(relu, step),
    )


@rbf.on_create
def _rbf_forms(phi: Nonlinearity, gamma: float) -> None:
    r"""``rbf(γ)`` :math:`=\sqrt2\sin(\beta x+\pi/4)=\sin(\beta x)+\cos(\beta x)`,
    :math:`\beta=\sqrt{2\gamma}`, derivative :math:`\beta\cos(\beta x)-\beta\sin(\beta x)`:
    combinations of :func:`sin_sin`, :func:`sin_cos`, :func:`cos_cos` (characteristic
    function). Centred: :math:`\mathbb E[\phi(u)\phi(v)]=e^{-\gamma(k_{11}-2k_{12}+k_{22})}`,
    :math:`\mathbb E[\phi'(u)\phi'(v)]=2\gamma e^{-\gamma(k_{11}-2k_{12}+k_{22})}` ([NT] ``Rbf``).
    """
    beta = math.sqrt(2.0 * gamma)
    register_combination(
        {
            phi: (_Term(1.0, sin, beta), _Term(1.0, cos, beta)),
            phi.derivative(): (_Term(beta, cos, beta), _Term(-beta, sin, beta)),
        }
    )


@rectified_monomial.on_create
def _rectified_monomial_forms(phi: Nonlinearity, n: int) -> None:
    r"""``rectified_monomial(n)`` :math:`=\mathrm{relu}(x)^n`: the arc-cosine kernel of degree n.

    .. math::
        \mathbb E[\mathrm{relu}(u)^n\mathrm{relu}(v)^n]=\frac{(k_{11}k_{22})^{n/2}}{2\pi}
        J_n(\vartheta),\quad J_n(\vartheta)=(-1)^n(\sin\vartheta)^{2n+1}
        \Big(\frac1{\sin\vartheta}\frac{\partial}{\partial\vartheta}\Big)^n
        \frac{\pi-\vartheta}{\sin\vartheta},

    :math:`\vartheta=\arccos\rho` [CS09] (their arc-cosine kernel of degree n;
    :math:`\mathbb E` is half their
    :math:`k_n`, whose weights are :math:`\mathcal N(0,I)` with a factor 2); :math:`J_n`
    is differentiated and simplified by sympy once per degree into a trigonometric
    polynomial in :math:`\vartheta` (no division by :math:`\sin\vartheta`, unlike [NT]
    ``RectifiedMonomial``, whose diagonal is NaN). :math:`\mathbb E\,\mathrm{relu}(u)^n=
    \tfrac12\mathbb E|u|^n=\tfrac12k^{n/2}2^{n/2}\Gamma(\tfrac{n+1}2)/\sqrt\pi`,
    :math:`\mathbb E[u\,\mathrm{relu}(v)^n]=nk_{12}\,\mathbb E\,\mathrm{relu}(v)^{n-1}`
    (Stein), and :math:`\phi'=n\,\mathrm{relu}^{n-1}` is a combination (DERIVED).
    """
    J = _arccos_J(n)
    below = rectified_monomial(n - 1)  # relu for n = 2

    def pair(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        p = _pair(k11, k12, k22, phi.name)
        theta = np.arctan2(np.sqrt((1.0 - p.rho) * (1.0 + p.rho)), p.rho)
        return _finish(p.s**n / (2.0 * np.pi) * J(theta), f"{phi.name}_{phi.name}")

    def half_abs_moment(k: np.ndarray, j: int) -> np.ndarray:
        return (
            0.5 * k ** (0.5 * j) * 2.0 ** (0.5 * j) * math.gamma(0.5 * (j + 1)) / math.sqrt(np.pi)
        )

    def mean(k: ArrayLike) -> Any:
        return _finish(half_abs_moment(_variance(k, phi.name), n), f"mean_{phi.name}")

    def with_identity(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        p = _pair(k11, k12, k22, phi.name)
        return _finish(n * p.k12 * half_abs_moment(p.k22, n - 1), f"identity_{phi.name}")

    for f, doc in (
        (pair, "E[relu(u)^n relu(v)^n], the arc-cosine kernel of degree n [CS09]"),
        (mean, "E relu(u)^n (half the absolute moment)"),
        (with_identity, "E[u relu(v)^n] = n k12 E relu(v)^(n-1) (Stein)"),
    ):
        f.__doc__ = doc
    pair.__name__ = f"{phi.name}_{phi.name}"
    pair_closed_form(phi, phi)(pair)
    mean_closed_form(phi)(mean)
    pair_closed_form(identity, phi)(with_identity)
    register_combination({phi.derivative(ae=True): (_Term(float(n), below),)})


@functools.lru_cache(maxsize=32)
def _arccos_J(n: int) -> Callable[[np.ndarray], np.ndarray]:
    r""":math:`J_n(\vartheta)` of [CS09] as a numpy function of :math:`\vartheta`.

    With :math:`c=\cos\vartheta`, :math:`s=\sin\vartheta=\sqrt{1-c^2}`, the operator
    :math:`\frac1{\sin\vartheta}\frac{\partial}{\partial\vartheta}` is
    :math:`-\frac{d}{dc}`, so :math:`J_n=s^{2n+1}\frac{d^n}{dc^n}\frac{A}{s}` with
    :math:`A=\pi-\arccos c`, :math:`dA/dc=1/s`, :math:`ds^p/dc=-pc\,s^{p-2}`. The
    derivatives are kept exactly as sums of :math:`P(c)\,A^{\{0,1\}}s^p` with integer
    polynomials :math:`P`; after the factor :math:`s^{2n+1}` every power of :math:`s`
    is :math:`\ge0` (e.g. :math:`J_2=3cs+A(s^2+3c^2)`), so :math:`J_n` is evaluated
    without division and is accurate up to :math:`\vartheta=0`, where
    :math:`J_n(0)=\pi(2n-1)!!`.
    """
    from numpy.polynomial import polynomial as P

    terms: dict[tuple[int, int], np.ndarray] = {(1, -1): np.array([1.0])}

    def add(out: dict[tuple[int, int], np.ndarray], key: tuple[int, int], poly: np.ndarray) -> None:
        out[key] = P.polyadd(out.get(key, np.zeros(1)), poly)

    for _ in range(n):
        new: dict[tuple[int, int], np.ndarray] = {}
        for (kind, power), poly in terms.items():
            add(new, (kind, power), P.polyder(poly))
            if kind:
                add(new, (0, power - 1), poly)
            if power:
                add(new, (kind, power - 2), P.polymul(poly, [0.0, -float(power)]))
        terms = new
    final = [(k, p + 2 * n + 1, poly) for (k, p), poly in terms.items() if np.any(poly)]
    assert all(p >= 0 for _, p, _ in final)

    def J(theta: np.ndarray) -> np.ndarray:
        c, s, A = np.cos(theta), np.sin(theta), np.pi - theta
        return sum(P.polyval(c, poly) * (A if k else 1.0) * s**p for k, p, poly in final)

    return J


@gaussian_bump.on_create
def _gaussian_bump_forms(phi: Nonlinearity, a: float, b: float) -> None:
    r"""``gaussian_bump(a, b)`` :math:`=a\,e^{bx^2}` and its derivative :math:`2abx\,e^{bx^2}`.

    For a centred pair with covariance :math:`K` and :math:`B=bI`, :math:`\mathbb E\,
    e^{b(u^2+v^2)}=\det(I-2BK)^{-1/2}=D^{-1/2}`,
    :math:`D=(1-2bk_{11})(1-2bk_{22})-4b^2k_{12}^2`, and under the weight
    :math:`e^{b(u^2+v^2)}` the pair is Gaussian with covariance
    :math:`(K^{-1}-2B)^{-1}`, whose off-diagonal entry is :math:`k_{12}/D`; so
    :math:`\mathbb E[\phi(u)\phi(v)]=a^2D^{-1/2}`,
    :math:`\mathbb E[\phi'(u)\phi'(v)]=4a^2b^2k_{12}D^{-3/2}`,
    :math:`\mathbb E\,\phi(u)=a(1-2bk)^{-1/2}`,
    :math:`\mathbb E[u\,\phi'(v)]=2abk_{12}(1-2bk_{22})^{-3/2}` (Stein), and
    :math:`\mathbb E\,\phi'`, :math:`\mathbb E[u\phi(v)]`, :math:`\mathbb E[\phi(u)\phi'(v)]`
    vanish (odd) (DERIVED; [NT] ``Gaussian``). The expectations are infinite when
    :math:`D\le0` or :math:`1-2bk_{ii}\le0` (possible for ``b > 0``): then
    :class:`~tensorprog.core.errors.NumericalError`.
    """
    dphi = phi.derivative()

    def det(p: _Pair, name: str) -> np.ndarray:
        d1, d2 = 1.0 - 2.0 * b * p.k11, 1.0 - 2.0 * b * p.k22
        D = d1 * d2 - 4.0 * b * b * p.k12**2
        if np.any((D <= 0) | (d1 <= 0) | (d2 <= 0)):
            raise NumericalError(f"{name}: E[exp(b u²) exp(b v²)] is infinite (1 - 2 b k ≤ 0)")
        return D

    def one_var(k: np.ndarray, name: str) -> np.ndarray:
        d = 1.0 - 2.0 * b * k
        if np.any(d <= 0):
            raise NumericalError(f"{name}: E exp(b u²) is infinite (1 - 2 b k ≤ 0)")
        return d

    def pp(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        p = _pair(k11, k12, k22, phi.name)
        return _finish(a * a / np.sqrt(det(p, phi.name)), f"{phi.name}_{phi.name}")

    def dd(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        p = _pair(k11, k12, k22, dphi.name)
        return _finish(4 * a * a * b * b * p.k12 * det(p, dphi.name) ** -1.5, dphi.name)

    def zero(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        return _finish(np.zeros_like(_pair(k11, k12, k22, phi.name).k11), phi.name)

    def id_d(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        p = _pair(k11, k12, k22, dphi.name)
        return _finish(2 * a * b * p.k12 * one_var(p.k22, dphi.name) ** -1.5, dphi.name)

    def mean(k: ArrayLike) -> Any:
        return _finish(a / np.sqrt(one_var(_variance(k, phi.name), phi.name)), phi.name)

    def mean_d(k: ArrayLike) -> Any:
        return _finish(np.zeros_like(_variance(k, dphi.name)), dphi.name)

    for f, name in ((pp, "pair"), (dd, "derivative pair"), (zero, "odd pair"), (id_d, "Stein")):
        f.__doc__ = f"{name} of {phi.name}: see _gaussian_bump_forms"
    pair_closed_form(phi, phi)(pp)
    pair_closed_form(dphi, dphi)(dd)
    pair_closed_form(phi, dphi)(zero)
    pair_closed_form(identity, phi)(zero)
    pair_closed_form(identity, dphi)(id_d)
    mean_closed_form(phi)(mean)
    mean_closed_form(dphi)(mean_d)
