r"""Closed-form Gaussian expectations, registered by nonlinearity object.

Each formula below is registered, by a decorator placed on it, under the
:class:`~tensorprog.Nonlinearity` objects it integrates:

* ``@pair_closed_form(φ, ψ)`` on ``f(k11, k12, k22)`` -- :math:`\mathbb E[\phi(u)\psi(v)]`
  for a centred bivariate Gaussian :math:`(u, v)` with :math:`\operatorname{Var}u=k_{11}`,
  :math:`\operatorname{Var}v=k_{22}`, :math:`\operatorname{Cov}(u,v)=k_{12}` (e.g.
  :func:`relu_relu`, :func:`erf_erf`); the pair :math:`(\psi,\phi)` is registered with it;
* ``@mean_closed_form(φ)`` on ``f(k)`` -- :math:`\mathbb E\,\phi(u)`,
  :math:`u\sim\mathcal N(0,k)` (e.g. :func:`mean_relu`).

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
  (``nngp = 1 - 2 angle / pi``).
* Stein's lemma: :math:`\mathbb E[u\,g(v)]=\operatorname{Cov}(u,v)\,\mathbb E[g'(v)]`
  for centred jointly Gaussian :math:`(u,v)`; formulas marked *DERIVED* follow from it,
  from :math:`\mathrm{relu}(z)=(z+|z|)/2`, :math:`\mathrm{step}=(1+\mathrm{sign})/2`,
  or from the characteristic function :math:`\mathbb E\,e^{tu+sv}=
  e^{(t^2k_{11}+2tsk_{12}+s^2k_{22})/2}` (also for complex :math:`t,s`), and are
  checked against independent quadrature in ``tests/test_gaussian.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..core.errors import NonPSDError, NumericalError, ProgramTypeError, ProgramValueError
from ..core.nonlin import Nonlinearity, cos, erf, exp, identity, relu, sign, sin, step
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
    "on_register",
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


def _swapped(fn: PairForm, first: Nonlinearity, second: Nonlinearity) -> PairForm:
    """``(k11, k12, k22) -> fn(k22, k12, k11)``: the pair form with u and v exchanged."""

    def swapped(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
        return fn(k22, k12, k11)

    swapped.__name__ = swapped.__qualname__ = f"{first.name}_{second.name}"
    swapped.__doc__ = (
        f"E[{first.name}(u) {second.name}(v)] = ``{fn.__name__}(k22, k12, k11)`` "
        f"(:func:`{fn.__name__}` with u and v exchanged)."
    )
    swapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return swapped


def pair_closed_form(phi: Nonlinearity, psi: Nonlinearity) -> Callable[[PairForm], PairForm]:
    r"""Decorator registering ``f(k11, k12, k22)`` as :math:`\mathbb E[\phi(u)\psi(v)]`.

    ``(u, v)`` is a centred Gaussian pair with :math:`\operatorname{Var}u=k_{11}`,
    :math:`\operatorname{Cov}(u,v)=k_{12}`, :math:`\operatorname{Var}v=k_{22}` (numpy
    arrays, broadcast together). The swapped pair :math:`\mathbb E[\psi(u)\phi(v)]`
    is registered at the same time. The Master Theorem's exact evaluation then uses
    ``f`` for every centred term with factors :math:`\phi(a^\top g)\,\psi(b^\top g)`
    (with ``phi = tp.identity``: the term :math:`(a^\top g)\,\psi(b^\top g)`).

    Parameters
    ----------
    phi, psi : Nonlinearity
        Functions of one argument and no parameters, as objects (``tp.relu``, a
        user's ``tp.Nonlinearity``).

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
                _swapped(form, psi, phi),
                f"{who}({psi.name}, {phi.name})",
            )
        _changed(phi, psi)
        return form

    return register


def mean_closed_form(phi: Nonlinearity) -> Callable[[MeanForm], MeanForm]:
    r"""Decorator registering ``f(k)`` as :math:`\mathbb E\,\phi(u)`, :math:`u\sim\mathcal N(0,k)`.

    Parameters
    ----------
    phi : Nonlinearity
        A function of one argument and no parameters, as an object.

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
        _changed(phi)
        return form

    return register


def pair_form(phi: Nonlinearity, psi: Nonlinearity) -> PairForm | None:
    r"""The registered :math:`\mathbb E[\phi(u)\psi(v)]`, or None."""
    return PAIR_CLOSED_FORMS.get((phi, psi))


def mean_form(phi: Nonlinearity) -> MeanForm | None:
    r"""The registered :math:`\mathbb E\,\phi(u)`, or None."""
    return SINGLE_CLOSED_FORMS.get(phi)


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
            f"{batch_index_text(bad)}; a covariance must be positive semidefinite"
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
            f"semidefinite{batch_index_text(bad)}: its smallest eigenvalue is "
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


@pair_closed_form(identity, identity)
def identity_identity(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[uv]=k_{12}` (after validating the covariance)."""
    p = _pair(k11, k12, k22, "identity_identity")
    return _finish(p.k12, "identity_identity")


@pair_closed_form(identity, relu)
def identity_relu(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{relu}(v)]=k_{12}/2`.

    Stein: :math:`k_{12}\,\mathbb E[\mathrm{step}(v)]` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_relu")
    return _finish(0.5 * p.k12, "identity_relu")


@pair_closed_form(identity, step)
def identity_step(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{step}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}`.

    Stein: :math:`k_{12}\,\mathbb E[\delta(v)]=k_{12}/\sqrt{2\pi k_{22}}`; 0 if
    :math:`k_{22}=0` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_step")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "identity_step")


@pair_closed_form(identity, sign)
def identity_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{sign}(v)]=\rho\sqrt{2k_{11}/\pi}`.

    :math:`\mathrm{sign}=2\,\mathrm{step}-1` and :func:`identity_step` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_sign")
    return _finish(2.0 * p.rho * p.s1 / _SQRT_2PI, "identity_sign")


@pair_closed_form(identity, abs_)
def identity_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,|v|]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_abs")
    return _finish(np.zeros_like(p.k11), "identity_abs")


@pair_closed_form(relu, relu)
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


@pair_closed_form(relu, step)
def relu_step(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\mathrm{step}(v)]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`.

    Stein's lemma in :math:`u` gives
    :math:`\mathbb E[u\,\mathbb 1_{u>0}\mathbb 1_{v>0}]=\sqrt{k_{11}}(1+\rho)/(2\sqrt{2\pi})`
    (DERIVED; it is :math:`\partial/\partial\sqrt{k_{22}}` of the degree-1 arc-cosine
    kernel [CS09]). With :math:`k_{22}=0`, :math:`\mathrm{step}(0)=\tfrac12`.
    """
    p = _pair(k11, k12, k22, "relu_step")
    return _finish(p.s1 * (1.0 + p.rho) / (2.0 * _SQRT_2PI), "relu_step")


@pair_closed_form(relu, sign)
def relu_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{sign}(v)]=\rho\sqrt{k_{11}}/\sqrt{2\pi}`.

    :math:`2\,\mathrm{relu\_step}-\mathbb E\,\mathrm{relu}(u)` (DERIVED).
    """
    p = _pair(k11, k12, k22, "relu_sign")
    return _finish(p.rho * p.s1 / _SQRT_2PI, "relu_sign")


@pair_closed_form(relu, abs_)
def relu_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{relu}(u)\,|v|]=\tfrac12\,\mathbb E[|u||v|]`.

    :math:`\mathrm{relu}(u)=(u+|u|)/2` and :math:`\mathbb E[u|v|]=0` (DERIVED).
    """
    p = _pair(k11, k12, k22, "relu_abs")
    return _finish(0.5 * _abs_abs(p.s, p.rho), "relu_abs")


@pair_closed_form(step, step)
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


@pair_closed_form(step, sign)
def step_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,\mathrm{sign}(v)]=\arcsin(\rho)/\pi`.

    Half of :func:`sign_sign`, since :math:`\mathrm{step}=(1+\mathrm{sign})/2` (DERIVED).
    """
    p = _pair(k11, k12, k22, "step_sign")
    return _finish(np.arcsin(p.rho) / np.pi, "step_sign")


@pair_closed_form(step, abs_)
def step_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{step}(u)\,|v|]=\sqrt{k_{22}/(2\pi)}`, independent of :math:`\rho`.

    :math:`\mathrm{step}=(1+\mathrm{sign})/2` and :math:`\mathbb E[\mathrm{sign}(u)|v|]=0`
    (DERIVED).
    """
    p = _pair(k11, k12, k22, "step_abs")
    return _finish(p.s2 / _SQRT_2PI, "step_abs")


@pair_closed_form(sign, sign)
def sign_sign(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\mathrm{sign}(v)]=\tfrac2\pi\arcsin\rho`.

    Grothendieck/Sheppard identity; [NT] ``Sign()``: :math:`1-\tfrac2\pi\arccos\rho`.
    0 when a variance is 0 (:math:`\mathrm{sign}(0)=0`).
    """
    p = _pair(k11, k12, k22, "sign_sign")
    return _finish(2.0 / np.pi * np.arcsin(p.rho), "sign_sign")


@pair_closed_form(sign, abs_)
def sign_abs(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{sign}(u)\,|v|]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "sign_abs")
    return _finish(np.zeros_like(p.k11), "sign_abs")


def _abs_abs(s: np.ndarray, rho: np.ndarray) -> np.ndarray:
    return s * 2.0 / np.pi * (np.sqrt(1.0 - rho**2) + rho * np.arcsin(rho))


@pair_closed_form(abs_, abs_)
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


@pair_closed_form(identity, erf)
def identity_erf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}(v)]=\frac{2k_{12}}{\sqrt{\pi(1+2k_{22})}}`.

    Stein: :math:`k_{12}\,\mathbb E[\mathrm{erf}'(v)]` and :func:`mean_derf` (DERIVED).
    """
    p = _pair(k11, k12, k22, "identity_erf")
    value = p.k12 * _TWO_OVER_SQRT_PI / np.sqrt(1.0 + 2.0 * p.k22)
    return _finish(value, "identity_erf")


@pair_closed_form(identity, derf)
def identity_derf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,\mathrm{erf}'(v)]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_derf")
    return _finish(np.zeros_like(p.k11), "identity_derf")


@pair_closed_form(erf, erf)
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


@pair_closed_form(erf, derf)
def erf_derf(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}'(v)]=0` (odd under :math:`(u,v)\to-(u,v)`)."""
    p = _pair(k11, k12, k22, "erf_derf")
    return _finish(np.zeros_like(p.k11), "erf_derf")


@pair_closed_form(derf, derf)
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


@pair_closed_form(identity, sin)
def identity_sin(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\sin v]=k_{12}e^{-k_{22}/2}` (Stein, :math:`\mathbb E\cos v`; DERIVED)."""
    p = _pair(k11, k12, k22, "identity_sin")
    return _finish(p.k12 * np.exp(-0.5 * p.k22), "identity_sin")


@pair_closed_form(identity, cos)
def identity_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\cos v]=0` (odd under :math:`(u,v)\mapsto-(u,v)`)."""
    p = _pair(k11, k12, k22, "identity_cos")
    return _finish(np.zeros_like(p.k11), "identity_cos")


@pair_closed_form(identity, exp)
def identity_exp(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[u\,e^v]=k_{12}e^{k_{22}/2}` (Stein with :func:`mean_exp`; DERIVED)."""
    p = _pair(k11, k12, k22, "identity_exp")
    with np.errstate(over="ignore", invalid="ignore"):
        value = p.k12 * np.exp(0.5 * p.k22)
    return _finish(value, "identity_exp")


@pair_closed_form(sin, sin)
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


@pair_closed_form(cos, cos)
def cos_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\cos u\cos v]=e^{-(k_{11}+k_{22})/2}\cosh k_{12}` (see :func:`sin_sin`)."""
    p = _pair(k11, k12, k22, "cos_cos")
    c = p.k12
    h = 0.5 * (p.k11 + p.k22)
    return _finish(0.5 * (np.exp(c - h) + np.exp(-c - h)), "cos_cos")


@pair_closed_form(sin, cos)
def sin_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[\sin u\cos v]=0` for a centred pair (odd under :math:`(u,v)\to-(u,v)`)."""
    p = _pair(k11, k12, k22, "sin_cos")
    return _finish(np.zeros_like(p.k11), "sin_cos")


@pair_closed_form(exp, exp)
def exp_exp(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^ue^v]=e^{(k_{11}+2k_{12}+k_{22})/2}` (moment generating function).

    Raises :class:`~tensorprog.core.errors.NumericalError` on overflow.
    """
    p = _pair(k11, k12, k22, "exp_exp")
    with np.errstate(over="ignore"):
        value = np.exp(0.5 * (p.k11 + p.k22) + p.k12)
    return _finish(value, "exp_exp")


@pair_closed_form(exp, sin)
def exp_sin(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^u\sin v]=e^{(k_{11}-k_{22})/2}\sin k_{12}`.

    Imaginary part of :math:`\mathbb E\,e^{u+iv}=e^{(k_{11}-k_{22})/2+ik_{12}}` (DERIVED).
    """
    p = _pair(k11, k12, k22, "exp_sin")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(0.5 * (p.k11 - p.k22)) * np.sin(p.k12)
    return _finish(value, "exp_sin")


@pair_closed_form(exp, cos)
def exp_cos(k11: ArrayLike, k12: ArrayLike, k22: ArrayLike) -> Any:
    r""":math:`\mathbb E[e^u\cos v]=e^{(k_{11}-k_{22})/2}\cos k_{12}` (see :func:`exp_sin`)."""
    p = _pair(k11, k12, k22, "exp_cos")
    with np.errstate(over="ignore", invalid="ignore"):
        value = np.exp(0.5 * (p.k11 - p.k22)) * np.cos(p.k12)
    return _finish(value, "exp_cos")


# --------------------------------------------------------------------------------------
# One-variable means of a centred Gaussian u ~ N(0, k)
# --------------------------------------------------------------------------------------


@mean_closed_form(identity)
def mean_identity(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,u=0`."""
    return _finish(np.zeros_like(_variance(k, "mean_identity")), "mean_identity")


@mean_closed_form(relu)
def mean_relu(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{relu}(u)=\sqrt{k/(2\pi)}` (half-normal mean)."""
    return _finish(np.sqrt(_variance(k, "mean_relu")) / _SQRT_2PI, "mean_relu")


@mean_closed_form(step)
def mean_step(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{step}(u)=\tfrac12`, also for :math:`k=0` (step(0) = 1/2)."""
    return _finish(np.full_like(_variance(k, "mean_step"), 0.5), "mean_step")


@mean_closed_form(sign)
def mean_sign(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{sign}(u)=0`."""
    return _finish(np.zeros_like(_variance(k, "mean_sign")), "mean_sign")


@mean_closed_form(abs_)
def mean_abs(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,|u|=\sqrt{2k/\pi}` (half-normal mean)."""
    return _finish(2.0 * np.sqrt(_variance(k, "mean_abs")) / _SQRT_2PI, "mean_abs")


@mean_closed_form(erf)
def mean_erf(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}(u)=0` (odd)."""
    return _finish(np.zeros_like(_variance(k, "mean_erf")), "mean_erf")


@mean_closed_form(derf)
def mean_derf(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,\mathrm{erf}'(u)=\tfrac{2}{\sqrt\pi}(1+2k)^{-1/2}`.

    From :math:`\mathbb E\,e^{-u^2}=(1+2k)^{-1/2}` (Gaussian integral).
    """
    v = _variance(k, "mean_derf")
    return _finish(_TWO_OVER_SQRT_PI / np.sqrt(1.0 + 2.0 * v), "mean_derf")


@mean_closed_form(sin)
def mean_sin(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\sin u=0` (odd)."""
    return _finish(np.zeros_like(_variance(k, "mean_sin")), "mean_sin")


@mean_closed_form(cos)
def mean_cos(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\cos u=e^{-k/2}` (characteristic function)."""
    return _finish(np.exp(-0.5 * _variance(k, "mean_cos")), "mean_cos")


@mean_closed_form(exp)
def mean_exp(k: ArrayLike) -> Any:
    r""":math:`\mathbb E\,e^u=e^{k/2}` (moment generating function); raises on overflow."""
    v = _variance(k, "mean_exp")
    with np.errstate(over="ignore"):
        value = np.exp(0.5 * v)
    return _finish(value, "mean_exp")
