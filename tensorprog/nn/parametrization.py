r"""abc-parametrizations of an MLP and their classification [TP4 §3.2, §5].

An :math:`L`-hidden-layer perceptron with input :math:`\xi\in\mathbb R^d` and scalar output
[TP4 §1 Eq. (1)]

.. math::

    h^1 = W^1\xi,\qquad x^l=\phi(h^l),\qquad h^{l+1}=W^{l+1}x^l\ (l<L),\qquad
    f = W^{L+1}x^L,

is *abc-parametrized* by exponents :math:`\{a_l,b_l\}_{l=1}^{L+1}\cup\{c\}` [TP4 §3.2]:

* (a) :math:`W^l = n^{-a_l}w^l` with :math:`w^l` the trained parameter;
* (b) :math:`w^l_{\alpha\beta}\sim\mathcal N(0,\sigma_l^2 n^{-2b_l})` (:math:`\sigma_l` is the
  width-independent ``init_std`` constant, 1 in TP4);
* (c) SGD with learning rate :math:`\eta\,n^{-c}`, :math:`\eta` width-independent.

This is exactly the finite network that ``tensorprog.nn`` trains (``docs/training.md``,
"The finite network"). The module provides

* :class:`ABC` — a validated, immutable parametrization with exact rational exponents,
  the symmetry :math:`(a,b,c)\to(a+\theta,b-\theta,c-2\theta)` [TP4 Eq. (5)], a canonical
  representative of each symmetry class and an equivalence test;
* constructors :func:`abc`, :func:`muP`, :func:`SP`, :func:`NTK`, :func:`MF`;
* :func:`classify` — the exponent :math:`r` [TP4 Def 3.2], the per-layer :math:`r_l`
  [TP4 Prop 5.3], stability [TP4 Thm 3.3], nontriviality [TP4 Thm 3.4], the dynamical
  dichotomy [TP4 Thms 3.6, 3.8, Cor 3.9], the NNGP limit [TP4 Cor H.35] and maximality
  [TP4 Props 5.3, 5.5, Thm 5.6], returned as a :class:`Classification`;
* :func:`scalings` — the per-layer width exponents used by the training compiler;
* for :func:`tensorprog.nn.train` (any model): :class:`ParamClass` (a parameter's class
  by shape [TP5 App B]), the per-class tables :data:`MUP_TABLE`, :data:`SP_TABLE`,
  :data:`NTK_TABLE` returned as :class:`PerClass` presets by ``muP()``, ``SP()``,
  ``NTK()`` *without* a depth, per-parameter :func:`abcd`, and :class:`Scaling`, the
  exponents one parameter gets;
* :class:`ParamExponents` and the explanation of ``nn.classify(model, param, optimizer)``
  (:mod:`tensorprog.nn.classification`), the classification above by parameter class.

All exponents are stored and compared as :class:`fractions.Fraction`, so the equalities in
the theorems (e.g. :math:`r=0`, :math:`2a_{L+1}+c=1`) are decided exactly.

References
----------
[TP4] G. Yang and E. J. Hu, *Feature Learning in Infinite-Width Neural Networks*, ICML 2021,
arXiv:2011.14522.
[TP4b] G. Yang, E. Littwin, *Tensor Programs IVb: Adaptive Optimization in the
Infinite-Width Limit*, arXiv:2308.01814, 2023.
[TP5] G. Yang et al., *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer*, NeurIPS 2021, arXiv:2203.03466.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

import numpy as np

from .. import ProgramTypeError, ProgramValueError

__all__ = [
    "ABC",
    "Classification",
    "LayerScaling",
    "abc",
    "muP",
    "SP",
    "NTK",
    "MF",
    "classify",
    "scalings",
    "ParamClass",
    "ClassRule",
    "Scaling",
    "PerClass",
    "PerParameter",
    "abcd",
    "MUP_TABLE",
    "SP_TABLE",
    "NTK_TABLE",
    "ParamExponents",
]

#: Anything accepted where an exponent is expected.
ExponentLike = numbers.Real | str | Fraction

_HALF = Fraction(1, 2)
_MAX_DENOMINATOR = 10**6
_VALID_EXPONENT = (
    "a finite number: an int, a float (0.5 is read as 1/2), a Fraction, or a string such as '1/2'"
)

# Names of the six stability conditions of [TP4 Thm 3.3], in the order of the theorem.
_COND_INPUT = "a1+b1=0"
_COND_HIDDEN = "al+bl=1/2 (2<=l<=L)"
_COND_READOUT_INIT = "a_{L+1}+b_{L+1}>=1/2"
_COND_R = "r>=0"
_COND_READOUT_UPDATE = "2a_{L+1}+c>=1"
_COND_LOGITS = "a_{L+1}+b_{L+1}+r>=1"
STABILITY_CONDITIONS: tuple[str, ...] = (
    _COND_INPUT,
    _COND_HIDDEN,
    _COND_READOUT_INIT,
    _COND_R,
    _COND_READOUT_UPDATE,
    _COND_LOGITS,
)


# --------------------------------------------------------------------------------------
# Conversion and validation helpers
# --------------------------------------------------------------------------------------


def _to_fraction(value: object, what: str) -> Fraction:
    """Convert one exponent to an exact :class:`Fraction`, or raise naming ``what``."""
    if isinstance(value, (bool, np.bool_)):
        raise ProgramTypeError(f"{what} must be {_VALID_EXPONENT}; got the boolean {value!r}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, numbers.Rational):  # int, numpy integers, ...
        return Fraction(int(value.numerator), int(value.denominator))
    if isinstance(value, numbers.Real):  # float, numpy floats, ...
        x = float(value)
        if not math.isfinite(x):
            raise ProgramValueError(
                f"{what} must be {_VALID_EXPONENT}; got {x!r}, which is not finite"
            )
        return Fraction(x).limit_denominator(_MAX_DENOMINATOR)
    if isinstance(value, str):
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ProgramValueError(
                f"{what} must be {_VALID_EXPONENT}; the string {value!r} is not a "
                "finite rational number"
            ) from None
    raise ProgramTypeError(
        f"{what} must be {_VALID_EXPONENT}; got an object of type {type(value).__name__}"
    )


def _as_sequence(value: object, what: str) -> list[object]:
    """Return the entries of a one-dimensional sequence, or raise naming ``what``."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ProgramValueError(
                f"{what} must be a one-dimensional sequence with one entry per layer "
                f"l = 1..L+1; got an array of shape {value.shape}"
            )
        return list(value.tolist())
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ProgramTypeError(
            f"{what} must be a sequence (tuple, list, 1-d array) with one exponent per "
            f"layer l = 1..L+1; got {type(value).__name__} {value!r}"
        )
    return list(value)


def _exponents(value: object, what: str) -> tuple[Fraction, ...]:
    entries = _as_sequence(value, what)
    return tuple(_to_fraction(v, f"{what}[{i}] (layer {i + 1})") for i, v in enumerate(entries))


def _positive_float(value: object, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ProgramTypeError(
            f"{what} must be a positive finite number (a standard deviation); got "
            f"{type(value).__name__} {value!r}"
        )
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise ProgramValueError(
            f"{what} must be a positive finite number (a standard deviation); got {x!r}"
        )
    return x


def _check_depth(depth: object) -> int:
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral):
        raise ProgramTypeError(
            "depth must be an int L >= 1 (the number of hidden layers); got "
            f"{type(depth).__name__} {depth!r}"
        )
    d = int(depth)
    if d < 1:
        raise ProgramValueError(
            f"depth must be an int L >= 1 (the number of hidden layers); got {d}"
        )
    return d


def _fmt(x: Fraction) -> str:
    """Print an exponent as ``0``, ``-1``, ``1/2``, ``-3/2``."""
    return str(x)


def _fmt_tuple(xs: Sequence[Fraction]) -> str:
    if len(xs) == 1:
        return f"({_fmt(xs[0])},)"
    return "(" + ", ".join(_fmt(x) for x in xs) + ")"


def _fmt_power(x: Fraction) -> str:
    """Print ``n`` to the power ``x`` as ``n^2``, ``n^(-1/2)``."""
    return f"n^{_fmt(x)}" if x.denominator == 1 and x >= 0 else f"n^({_fmt(x)})"


# --------------------------------------------------------------------------------------
# The parametrization
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ABC:
    r"""An abc-parametrization of an :math:`L`-hidden-layer MLP [TP4 §3.2].

    Layer :math:`l\in\{1,\dots,L+1\}` has effective weight :math:`W^l=n^{-a_l}w^l` with
    trained parameter entries :math:`w^l_{\alpha\beta}\sim\mathcal N(0,\sigma_l^2n^{-2b_l})`,
    and SGD uses learning rate :math:`\eta\,n^{-c}` [TP4 §3.2 (a)–(c)].

    Parameters
    ----------
    a, b : sequence of exponents, length :math:`L+1\ge2`
        :math:`a_l` (multiplier exponent) and :math:`b_l` (initialization exponent) of
        layers :math:`1..L+1`. Entries may be ints, floats (converted with
        ``Fraction(x).limit_denominator(10**6)``, so ``0.5`` becomes ``1/2``), strings
        such as ``"1/2"`` or :class:`~fractions.Fraction`; they are stored as
        :class:`~fractions.Fraction`.
    c : exponent
        The SGD learning-rate exponent: the learning rate is :math:`\eta\,n^{-c}`.
    name : str, optional
        A label (``"muP"``, ``"SP"``, ...). It is not part of equality.
    init_std : positive float or sequence of positive floats, optional
        The width-independent constants :math:`\sigma_l` of the initialization, one per
        layer (a single number applies to every layer). Default: all 1.0, as in TP4.

    Raises
    ------
    ProgramTypeError
        If an argument has the wrong type (e.g. ``a`` is not a sequence, an entry is a
        bool or an arbitrary object, ``c`` is a sequence).
    ProgramValueError
        If ``a`` and ``b`` have different lengths or fewer than 2 entries, an exponent
        is not finite, or an ``init_std`` is not positive and finite.

    Notes
    -----
    For every :math:`\theta`, the parametrizations :math:`(a,b,c)` and
    :math:`(a+\theta,b-\theta,c-2\theta)` give the same function :math:`f_t` for all
    :math:`t` [TP4 Eq. (5)]; see :meth:`shifted`, :meth:`canonical`, :meth:`equivalent`.

    Examples
    --------
    >>> ABC(a=(-0.5, 0, 0.5), b=("1/2", 0.5, 0.5), c=0, name="muP")
    ABC(name='muP', a=(-1/2, 0, 1/2), b=(1/2, 1/2, 1/2), c=0)
    """

    a: tuple[Fraction, ...]
    b: tuple[Fraction, ...]
    c: Fraction
    name: str | None = field(default=None, compare=False)
    init_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        a = _exponents(self.a, "a")
        b = _exponents(self.b, "b")
        if len(a) != len(b):
            raise ProgramValueError(
                f"a and b must have the same length L+1 (one entry per layer "
                f"l = 1..L+1); got len(a) = {len(a)} and len(b) = {len(b)}"
            )
        if len(a) < 2:
            raise ProgramValueError(
                "a and b must have length L+1 >= 2 (at least one hidden layer and the "
                f"readout); got length {len(a)}"
            )
        if isinstance(self.c, (Sequence, np.ndarray)) and not isinstance(self.c, str):
            raise ProgramTypeError(
                "c must be a single exponent (one SGD learning rate eta * n^-c for all "
                f"layers; per-layer c_l is not supported); got {self.c!r}"
            )
        c = _to_fraction(self.c, "c")
        if self.name is not None and not isinstance(self.name, str):
            raise ProgramTypeError(
                f"name must be a str or None; got {type(self.name).__name__} {self.name!r}"
            )
        n_layers = len(a)
        if self.init_std is None:
            init_std: tuple[float, ...] = (1.0,) * n_layers
        elif isinstance(self.init_std, numbers.Real) and not isinstance(
            self.init_std, (bool, np.bool_)
        ):
            init_std = (_positive_float(self.init_std, "init_std"),) * n_layers
        else:
            entries = _as_sequence(self.init_std, "init_std")
            if len(entries) != n_layers:
                raise ProgramValueError(
                    f"init_std must have length L+1 = {n_layers} (one constant per "
                    f"layer, like a and b) or be a single number; got length "
                    f"{len(entries)}"
                )
            init_std = tuple(
                _positive_float(s, f"init_std[{i}] (layer {i + 1})") for i, s in enumerate(entries)
            )
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "init_std", init_std)

    @property
    def depth(self) -> int:
        """The number :math:`L` of hidden layers (``len(a) - 1``)."""
        return len(self.a) - 1

    def __repr__(self) -> str:
        parts = []
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        parts.append(f"a={_fmt_tuple(self.a)}")
        parts.append(f"b={_fmt_tuple(self.b)}")
        parts.append(f"c={_fmt(self.c)}")
        assert self.init_std is not None
        if any(s != 1.0 for s in self.init_std):
            parts.append(f"init_std={self.init_std!r}")
        return f"ABC({', '.join(parts)})"

    def shifted(self, theta: ExponentLike) -> ABC:
        r"""Apply the symmetry :math:`(a,b,c)\to(a+\theta,\,b-\theta,\,c-2\theta)`.

        For SGD, :math:`f_t(\xi)` is unchanged for every :math:`t` and :math:`\xi`
        [TP4 Eq. (5)]: :math:`W^l_0` has the same law and every update
        :math:`\Delta W^l=-\eta n^{-c-2a_l}(\cdots)` is unchanged [TP4 §5.3] (docs/concepts/parametrizations.md). The
        ``name`` and the ``init_std`` constants are kept.

        Parameters
        ----------
        theta : exponent
            The shift :math:`\theta` (any finite rational; floats are converted as in
            :class:`ABC`).

        Returns
        -------
        ABC
        """
        t = _to_fraction(theta, "theta")
        return ABC(
            a=tuple(x + t for x in self.a),
            b=tuple(x - t for x in self.b),
            c=self.c - 2 * t,
            name=self.name,
            init_std=self.init_std,
        )

    def canonical(self) -> ABC:
        r"""The normal form of this parametrization's symmetry class.

        The normal form is the unique representative with :math:`c=0`, i.e. the shift
        :math:`\theta=c/2` [TP4 Eq. (5)]: a width-independent learning rate, with all
        width dependence in the multipliers :math:`n^{-a_l}` and initializations
        :math:`n^{-b_l}`. μP, NTP and SP (with :math:`c=0`) are already canonical; the
        mean-field parametrization MF (:math:`c=-1`) maps to μP with :math:`L=1`
        [TP4 §5.2] (docs/concepts/parametrizations.md).

        Returns
        -------
        ABC
            ``self.shifted(self.c / 2)`` (same ``name`` and ``init_std``).
        """
        return self.shifted(self.c / 2)

    def equivalent(self, other: ABC) -> bool:
        r"""Whether ``other`` is the same parametrization modulo the symmetry.

        True iff both have the same depth and equal :meth:`canonical` exponents
        :math:`(a,b,c)`, i.e. ``other`` is ``self.shifted(theta)`` for some
        :math:`\theta` [TP4 Eq. (5)]. Names and the width-independent ``init_std``
        constants are not compared (they do not affect any width exponent).

        Raises
        ------
        ProgramTypeError
            If ``other`` is not an :class:`ABC`.
        """
        if not isinstance(other, ABC):
            raise ProgramTypeError(
                f"other must be an ABC parametrization (e.g. nn.abc(a, b, c)); got "
                f"{type(other).__name__}"
            )
        if self.depth != other.depth:
            return False
        x, y = self.canonical(), other.canonical()
        return (x.a, x.b, x.c) == (y.a, y.b, y.c)


# --------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------


def abc(
    a: Sequence[ExponentLike],
    b: Sequence[ExponentLike],
    c: ExponentLike,
    *,
    name: str | None = None,
    init_std: float | Sequence[float] | None = None,
) -> ABC:
    r"""Build an abc-parametrization :math:`\{a_l,b_l\}_{l=1}^{L+1}\cup\{c\}` [TP4 §3.2].

    Parameters
    ----------
    a, b : sequences of length :math:`L+1\ge 2`
        Exponents per layer: :math:`W^l=n^{-a_l}w^l`,
        :math:`w^l_{\alpha\beta}\sim\mathcal N(0,\sigma_l^2n^{-2b_l})`.
    c : exponent
        SGD learning rate :math:`\eta\,n^{-c}`.
    name : str, optional
        A label for printing.
    init_std : float or sequence of floats, optional
        The constants :math:`\sigma_l` (default 1.0 for every layer).

    Returns
    -------
    ABC

    Examples
    --------
    >>> abc([0, 1], [0, 0], -1)
    ABC(a=(0, 1), b=(0, 0), c=-1)
    """
    return ABC(a=a, b=b, c=c, name=name, init_std=init_std)  # type: ignore[arg-type]


def muP(
    depth: int | None = None, *, init_std: float | Sequence[float] | None = None
) -> ABC | PerClass:
    r"""The maximal-update parametrization μP for SGD [TP4 §5, Def 5.1].

    ``muP()`` without a depth is the per-class preset of :func:`tensorprog.nn.train`
    (TP5 Table 3, :data:`MUP_TABLE`); ``muP(depth)`` is TP4's abc-parametrization of an
    :class:`~tensorprog.nn.MLP`, described here.

    :math:`a_1=-\tfrac12`, :math:`a_2=\dots=a_L=0`, :math:`a_{L+1}=\tfrac12`;
    :math:`b_l=\tfrac12` for all :math:`l`; :math:`c=0` [TP4 Table 1] (docs/concepts/parametrizations.md). It is the unique
    stable abc-parametrization in which every :math:`W^l` is updated maximally and
    :math:`W^{L+1}` is initialized maximally [TP4 Thm 5.6].

    Parameters
    ----------
    depth : int
        The number :math:`L\ge1` of hidden layers.
    init_std : float or sequence of floats, optional
        The constants :math:`\sigma_l` (default 1.0).

    Examples
    --------
    >>> muP(2)
    ABC(name='muP', a=(-1/2, 0, 1/2), b=(1/2, 1/2, 1/2), c=0)
    >>> muP()
    PerClass('muP')
    """
    if depth is None:
        return _per_class(MUP_TABLE, init_std)
    L = _check_depth(depth)
    a = (Fraction(-1, 2),) + (Fraction(0),) * (L - 1) + (_HALF,)
    return ABC(a=a, b=(_HALF,) * (L + 1), c=Fraction(0), name="muP", init_std=init_std)


def SP(
    depth: int | None = None,
    c: ExponentLike = 0,
    *,
    init_std: float | Sequence[float] | None = None,
) -> ABC | PerClass:
    r"""Standard parametrization (PyTorch default) with learning rate :math:`\eta n^{-c}`.

    ``SP()`` without a depth is the per-class preset of :func:`tensorprog.nn.train`
    (:data:`SP_TABLE`; ``c`` must then be 0); ``SP(depth, c)`` is TP4's
    abc-parametrization of an :class:`~tensorprog.nn.MLP`, described here.

    :math:`a_l=0` for all :math:`l`; :math:`b_1=0`, :math:`b_l=\tfrac12` for
    :math:`l\ge2` [TP4 Table 1]. With :math:`c=0` it is unstable (:math:`r=-1` for
    :math:`L\ge2`); :math:`c=1` is the largest stable learning rate and gives a kernel
    limit [TP4 Thm 4.1] (docs/concepts/parametrizations.md).

    Parameters
    ----------
    depth : int
        The number :math:`L\ge1` of hidden layers.
    c : exponent, default 0
        The learning-rate exponent.
    init_std : float or sequence of floats, optional
        The constants :math:`\sigma_l` (default 1.0).

    Examples
    --------
    >>> SP(2)
    ABC(name='SP', a=(0, 0, 0), b=(0, 1/2, 1/2), c=0)
    >>> classify(SP(2)).regime, classify(SP(2, c=1)).regime
    ('unstable', 'kernel')
    """
    if depth is None:
        if _to_fraction(c, "SP: c") != 0:
            raise ProgramValueError(
                f"nn.SP(c={c!r}) without a depth: the per-class preset of nn.train has the "
                f"learning rates of TP5 Table 3 (c = 0); use nn.abcd for other exponents, "
                f"or nn.SP(depth, c) for an nn.MLP"
            )
        return _per_class(SP_TABLE, init_std)
    L = _check_depth(depth)
    b = (Fraction(0),) + (_HALF,) * L
    return ABC(a=(Fraction(0),) * (L + 1), b=b, c=c, name="SP", init_std=init_std)  # type: ignore[arg-type]


def NTK(
    depth: int | None = None, *, init_std: float | Sequence[float] | None = None
) -> ABC | PerClass:
    r"""The neural tangent parametrization NTP [TP4 Table 1].

    ``NTK()`` without a depth is the per-class preset of :func:`tensorprog.nn.train`
    (:data:`NTK_TABLE`); ``NTK(depth)`` is TP4's abc-parametrization of an
    :class:`~tensorprog.nn.MLP`, described here.

    :math:`a_1=0`, :math:`a_l=\tfrac12` for :math:`l\ge2`; :math:`b_l=0`; :math:`c=0`.
    It is in the kernel regime with :math:`r=\tfrac12` and equals
    :math:`\mathrm{UP}_{1/2}` [TP4 Thm G.4].

    Parameters
    ----------
    depth : int
        The number :math:`L\ge1` of hidden layers.
    init_std : float or sequence of floats, optional
        The constants :math:`\sigma_l` (default 1.0).

    Examples
    --------
    >>> NTK(2)
    ABC(name='NTK', a=(0, 1/2, 1/2), b=(0, 0, 0), c=0)
    >>> classify(NTK(2)).r
    Fraction(1, 2)
    """
    if depth is None:
        return _per_class(NTK_TABLE, init_std)
    L = _check_depth(depth)
    a = (Fraction(0),) + (_HALF,) * L
    return ABC(a=a, b=(Fraction(0),) * (L + 1), c=Fraction(0), name="NTK", init_std=init_std)


def MF(*, init_std: float | Sequence[float] | None = None) -> ABC:
    r"""The mean-field parametrization MFP of a 1-hidden-layer network [TP4 Table 1].

    :math:`a=(0,1)`, :math:`b=(0,0)`, :math:`c=-1`, i.e.
    :math:`f=\tfrac1n\sum_\alpha v_\alpha\phi(u_\alpha^\top\xi)` trained with learning rate
    :math:`\eta n`. It is μP with :math:`L=1` shifted by :math:`\theta=\tfrac12`
    [TP4 Eq. (5), §5.2] (docs/concepts/parametrizations.md).

    Parameters
    ----------
    init_std : float or sequence of 2 floats, optional
        The constants :math:`\sigma_1,\sigma_2` (default 1.0).

    Examples
    --------
    >>> MF()
    ABC(name='MF', a=(0, 1), b=(0, 0), c=-1)
    >>> MF().equivalent(muP(1))
    True
    """
    return ABC(
        a=(Fraction(0), Fraction(1)),
        b=(Fraction(0), Fraction(0)),
        c=Fraction(-1),
        name="MF",
        init_std=init_std,
    )


# --------------------------------------------------------------------------------------
# Recognising named parametrizations modulo the symmetry
# --------------------------------------------------------------------------------------

_DISPLAY = {"muP": "μP", "MF": "MFP (mean-field)", "NTK": "NTP"}


def _named_equivalents(p: ABC) -> tuple[str, ...]:
    """Names of the standard parametrizations equivalent to ``p`` [TP4 Eq. (5)].

    Returns identifiers among ``"muP"``, ``"MF"`` (only for L = 1), ``"NTK"``,
    ``"SP(c=...)"`` and ``"UP_s"`` (the uniform family, ``s`` in [0, 1/2], [TP4 Thm G.4]).
    """
    L = p.depth
    q = p.canonical()
    names: list[str] = []
    if q.equivalent(muP(L)):
        names.append("muP")
        if L == 1:
            names.append("MF")
    if q.equivalent(NTK(L)):
        names.append("NTK")
    # SP with learning-rate exponent c': canonical a_l = c'/2 for all l,
    # b_1 = -c'/2, b_l = 1/2 - c'/2 (l >= 2).
    alpha = q.a[0]
    if all(x == alpha for x in q.a) and q.b[0] == -alpha:
        if all(x == _HALF - alpha for x in q.b[1:]):
            names.append(f"SP(c={_fmt(2 * alpha)})")
    # UP_s [TP4 Thm G.4]: a_1 = s - 1/2, a_l = s (2 <= l <= L), a_{L+1} = 1/2,
    # b_l = 1/2 - s, c = 0, for s in [0, 1/2].
    s = _HALF - q.b[0]
    if 0 <= s <= _HALF and all(x == _HALF - s for x in q.b):
        up_a = (s - _HALF,) + (s,) * (L - 1) + (_HALF,)
        if q.a == up_a:
            names.append(f"UP_{_fmt(s)}")
    return tuple(names)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------

_REGIMES = ("unstable", "trivial", "kernel", "feature learning")


@dataclass(frozen=True)
class Classification:
    r"""The verdict of :func:`classify` on an abc-parametrization [TP4 §3.2, §5.3].

    All exponents are exact :class:`~fractions.Fraction`. Write
    :math:`s:=a_{L+1}+b_{L+1}` and :math:`u:=2a_{L+1}+c`.

    Attributes
    ----------
    param : ABC
        The classified parametrization.
    r : Fraction
        :math:`r=\min(s,u)+c-1+\min_{l\le L}(2a_l+\mathbb 1_{l=1})` [TP4 Def 3.2];
        :math:`\Delta x^L_t=\Theta(n^{-r})`.
    r_layers : tuple of Fraction, length L
        :math:`r_l=\min(s,u)+c-1+2a_l+\mathbb 1_{l=1}` for :math:`l=1..L`
        [TP4 Prop 5.3]; :math:`\Delta W^l_t x^{l-1}_t=\Theta(n^{-r_l})` and
        :math:`r=\min_l r_l`.
    readout_ab : Fraction
        :math:`s=a_{L+1}+b_{L+1}`; :math:`f_0=\Theta(n^{1/2-s})`.
    readout_2ac : Fraction
        :math:`u=2a_{L+1}+c`.
    readout_abr : Fraction
        :math:`s+r=a_{L+1}+b_{L+1}+r`.
    conditions : dict[str, bool]
        The six conditions of [TP4 Thm 3.3], by name (see ``STABILITY_CONDITIONS``):
        ``"a1+b1=0"``, ``"al+bl=1/2 (2<=l<=L)"`` (vacuous for :math:`L=1`),
        ``"a_{L+1}+b_{L+1}>=1/2"``, ``"r>=0"``, ``"2a_{L+1}+c>=1"``,
        ``"a_{L+1}+b_{L+1}+r>=1"``.
    stable : bool
        All six conditions hold [TP4 Thm 3.3].
    initialized_maximally : bool
        :math:`s+r=1`: :math:`W^{L+1}` is initialized maximally [TP4 Prop 5.5].
    updated_maximally : bool
        :math:`u=1`: :math:`W^{L+1}` is updated maximally [TP4 Prop 5.5].
    nontrivial : bool
        Stable and (``initialized_maximally`` or ``updated_maximally``) [TP4 Thm 3.4].
        False for unstable parametrizations (the theorem characterises stable ones).
    feature_learning : bool
        Stable, nontrivial and :math:`r=0` [TP4 Thm 3.6].
    kernel : bool
        Stable, nontrivial and :math:`r>0` [TP4 Thm 3.8].
    nngp : bool
        ``kernel`` and :math:`s+r>1` and :math:`u=1`: only the readout's update survives
        and the limit is the NNGP kernel regime [TP4 Cor H.35, Thm H.13].
    regime : str
        ``"unstable"``, ``"trivial"`` (stable but :math:`f_t-f_0\to0`), ``"kernel"`` or
        ``"feature learning"`` [TP4 Cor 3.9].
    maximal_updates : tuple of bool, length L+1
        Entry :math:`l-1` says whether :math:`W^l` is updated maximally: :math:`r_l=0`
        for :math:`l\le L` [TP4 Prop 5.3], :math:`u=1` for :math:`l=L+1`
        [TP4 Prop 5.5]. (The propositions are stated for stable parametrizations.)
    feature_learning_layers : tuple of int
        For a stable nontrivial parametrization, the hidden layers :math:`l` whose
        features move by :math:`\Theta(1)`, i.e. :math:`\min_{m\le l}r_m=0`
        (:math:`\Delta x^l=\Theta(n^{-\min_{m\le l}r_m})`, [TP4 App H.3 :math:`\theta_l`,
        Thm H.13]); empty otherwise. Feature learning in layer :math:`l` implies it in
        layers :math:`l..L`.
    contributing_layers : tuple of int
        For a stable nontrivial parametrization, the layers :math:`l\in[L+1]` whose
        weight updates move :math:`f` by :math:`\Theta(1)`: :math:`l\le L` with
        :math:`s+r_l=1` and :math:`l=L+1` if :math:`u=1`; empty otherwise. In the
        kernel regime these are the layers whose kernels :math:`\Sigma^{l-1,L}` enter
        the limiting kernel [TP4 Thm H.32] (e.g. all layers for NTP, only
        :math:`W^{L+1}` for an NNGP limit). DERIVED from [TP4 Eq. (58)], where the two
        terms of :math:`\delta\mathring f` carry :math:`\theta'_{L+1}=n^{1-u}` and
        :math:`\theta'_{Lf}=n^{1-(s+r)}`.
    f0_gaussian : bool
        :math:`s=\tfrac12`: :math:`f_0` converges to a nondegenerate Gaussian process
        (CLT) [TP4 App H.4.1] (docs/concepts/parametrizations.md, "SGD as a Tensor Program").
    f0_vanishes : bool
        :math:`s>\tfrac12`: :math:`f_0\to0` almost surely.
    equivalent_to : tuple of str
        The standard parametrizations equal to ``param`` modulo the symmetry
        [TP4 Eq. (5)]: ``"muP"``, ``"MF"`` (L = 1), ``"NTK"``, ``"SP(c=...)"``,
        ``"UP_s"`` (:math:`s\in[0,\tfrac12]`, [TP4 Thm G.4]).
    model : str or None
        Set by :func:`~tensorprog.nn.classification.classify_model` (``nn.classify(model, param, optimizer)``): the
        model's name. The fields below are also only set there; for a model, ``param`` is
        the preset or ``nn.abcd``, ``r_layers`` lists :math:`r_P` of the trained input,
        hidden and vector-like parameters and ``maximal_updates`` /
        ``contributing_layers`` / ``feature_learning_layers`` refer to the parameters in
        declaration order (as TP4's layers for a chain such as an MLP); ``r`` and
        ``readout_2ac`` may be ``math.inf`` (nothing moves the features / an untrained
        readout).
    parameters : tuple of ParamExponents
        Per parameter: its scaling and the exponents of its initial value and its update.
    contributing_params : tuple of str
        Parameters whose updates move :math:`f` by :math:`\Theta(1)`.
    limit_supported : bool or None
        Whether :func:`tensorprog.nn.train` builds the limit (no diverging width power).
    limit_problems : tuple of str
        Why it refuses (the parameter, the term and its width power).

    Notes
    -----
    ``repr`` gives a one-line verdict; :meth:`explain` (also ``str``) explains it in words
    with the numbers.
    """

    param: ABC
    r: Fraction
    r_layers: tuple[Fraction, ...]
    readout_ab: Fraction
    readout_2ac: Fraction
    readout_abr: Fraction
    conditions: dict[str, bool] = field(hash=False)
    stable: bool
    initialized_maximally: bool
    updated_maximally: bool
    nontrivial: bool
    feature_learning: bool
    kernel: bool
    nngp: bool
    regime: str
    maximal_updates: tuple[bool, ...]
    feature_learning_layers: tuple[int, ...]
    contributing_layers: tuple[int, ...]
    f0_gaussian: bool
    f0_vanishes: bool
    equivalent_to: tuple[str, ...]
    model: str | None = None
    parameters: tuple = ()
    contributing_params: tuple[str, ...] = ()
    limit_supported: bool | None = None
    limit_problems: tuple[str, ...] = ()

    @property
    def depth(self) -> int | None:
        """The number :math:`L` of hidden layers (``None`` for a model's classification)."""
        return None if self.model is not None else self.param.depth

    @property
    def is_muP(self) -> bool:
        r"""Every :math:`W^l` updated maximally and :math:`W^{L+1}` initialized maximally.

        By [TP4 Thm 5.6] this characterises μP among stable parametrizations.
        """
        return self.stable and all(self.maximal_updates) and self.initialized_maximally

    def __repr__(self) -> str:
        if self.model is not None:
            return (
                f"Classification(model {self.model!r}, {self.param!r}; "
                f"regime={self.regime!r}; r={_fmt(self.r)}; stable={self.stable}; "
                f"nontrivial={self.nontrivial}; limit_supported={self.limit_supported})"
            )
        who = self.param.name or (self.equivalent_to[0] if self.equivalent_to else "abc")
        facets = [
            f
            for f, ok in (
                ("initialized maximally", self.initialized_maximally),
                ("updated maximally", self.updated_maximally),
            )
            if ok
        ]
        parts = [
            f"{who}, L={self.depth}",
            f"regime={self.regime!r}",
            f"r={_fmt(self.r)}",
            f"r_l={_fmt_tuple(self.r_layers)}",
            f"stable={self.stable}",
            f"nontrivial={self.nontrivial}",
        ]
        if self.nngp:
            parts.append("nngp=True")
        parts.append("W^{L+1}: " + (" and ".join(facets) if facets else "neither facet"))
        return f"Classification({'; '.join(parts)})"

    def __str__(self) -> str:
        return self.explain()

    def explain(self) -> str:
        """Explain the verdict in words, with the exponents and theorem numbers.

        Returns
        -------
        str
            A multi-line report.
        """
        if self.model is not None:
            return _explain_model(self)
        p = self.param
        L = p.depth
        a, b, c = p.a, p.b, p.c
        s, u, r = self.readout_ab, self.readout_2ac, self.r
        yes = {True: "yes", False: "no"}
        lines = [f"{p!r}, L = {L} hidden layer{'s' if L > 1 else ''}"]

        inner = ", ".join(_fmt(2 * a[ell - 1] + (1 if ell == 1 else 0)) for ell in range(1, L + 1))
        lines.append(
            f"r = min(a_{{L+1}}+b_{{L+1}}, 2a_{{L+1}}+c) + c - 1 + min_l(2a_l + 1[l=1])"
            f" = min({_fmt(s)}, {_fmt(u)}) {'-' if c < 0 else '+'} {_fmt(abs(c))} - 1"
            f" + min({inner})"
            f" = {_fmt(r)}  [TP4 Def 3.2]"
        )
        lines.append(
            "per-layer r_l = "
            + ", ".join(f"r_{ell} = {_fmt(x)}" for ell, x in enumerate(self.r_layers, 1))
            + "  [TP4 Prop 5.3]"
        )

        n_ok = sum(self.conditions.values())
        if self.stable:
            lines.append("stable: yes (all six conditions of Thm 3.3 hold)")
        else:
            lines.append(
                f"stable: no ({6 - n_ok} of the six conditions of Thm 3.3 "
                f"{'fails' if n_ok == 5 else 'fail'})"
            )
        hidden = ", ".join(
            f"a_{ell}+b_{ell} = {_fmt(a[ell - 1] + b[ell - 1])}" for ell in range(2, L + 1)
        )
        values = {
            _COND_INPUT: f"a_1+b_1 = {_fmt(a[0] + b[0])}",
            _COND_HIDDEN: hidden if hidden else "vacuous for L = 1",
            _COND_READOUT_INIT: f"a_{{L+1}}+b_{{L+1}} = {_fmt(s)}",
            _COND_R: f"r = {_fmt(r)}",
            _COND_READOUT_UPDATE: f"2a_{{L+1}}+c = {_fmt(u)}",
            _COND_LOGITS: f"a_{{L+1}}+b_{{L+1}}+r = {_fmt(self.readout_abr)}",
        }
        for name in STABILITY_CONDITIONS:
            mark = "ok  " if self.conditions[name] else "FAIL"
            lines.append(f"  [{mark}] {name:<22} ({values[name]})")

        facet_text = (
            f"W^{{L+1}} initialized maximally: {yes[self.initialized_maximally]} "
            f"(a_{{L+1}}+b_{{L+1}}+r = {_fmt(self.readout_abr)}); "
            f"updated maximally: {yes[self.updated_maximally]} "
            f"(2a_{{L+1}}+c = {_fmt(u)})  [Prop 5.5]"
        )
        if not self.stable:
            lines.append("nontrivial: not applicable (Thm 3.4 concerns stable ones)")
            lines.append(facet_text)
            lines.append("regime: unstable")
        elif not self.nontrivial:
            lines.append(
                "nontrivial: no (neither a_{L+1}+b_{L+1}+r = 1 nor 2a_{L+1}+c = 1, "
                "Thm 3.4): f_t - f_0 -> 0 for every training routine"
            )
            lines.append(facet_text)
            lines.append("regime: trivial")
        else:
            lines.append("nontrivial: yes (Thm 3.4)")
            lines.append(facet_text)
            if self.feature_learning:
                fl = self.feature_learning_layers
                where = (
                    "in every hidden layer"
                    if len(fl) == L
                    else "in layers " + ", ".join(str(ell) for ell in fl)
                )
                lines.append(
                    f"regime: feature learning (r = 0, Thm 3.6) {where}; "
                    "f_0 -> 0 (Cor 3.10) and the limit is deterministic (Thm H.13)"
                )
            else:
                kind = (
                    "NNGP limit (only the readout is effectively trained, Cor H.35)"
                    if self.nngp
                    else "the kernel gets contributions from the updates of "
                    + ", ".join(f"W^{ell}" for ell in self.contributing_layers)
                )
                lines.append(
                    f"regime: kernel (r = {_fmt(r)} > 0, Thm 3.8): features do not "
                    f"move in the limit; {kind}"
                )
        marks = []
        for ell, ok in enumerate(self.maximal_updates, 1):
            why = (
                f"r_{ell} = {_fmt(self.r_layers[ell - 1])}"
                if ell <= L
                else f"2a_{{L+1}}+c = {_fmt(u)}"
            )
            marks.append(f"W^{ell} {yes[ok]} ({why})")
        lines.append("updated maximally: " + ", ".join(marks) + "  [Props 5.3, 5.5]")
        if self.f0_gaussian:
            lines.append(
                "f_0: a_{L+1}+b_{L+1} = 1/2 -> f_0 converges to a nondegenerate Gaussian "
                "process (CLT; TP4 App H.4.1)"
            )
        elif self.f0_vanishes:
            lines.append(
                f"f_0: a_{{L+1}}+b_{{L+1}} = {_fmt(s)} > 1/2 -> f_0 = "
                f"Theta({_fmt_power(_HALF - s)}) -> 0"
            )
        else:
            lines.append(
                f"f_0: a_{{L+1}}+b_{{L+1}} = {_fmt(s)} < 1/2 -> f_0 = "
                f"Theta({_fmt_power(_HALF - s)}) blows up"
            )
        if self.is_muP:
            lines.append(
                "every W^l is updated maximally and W^{L+1} is initialized maximally: "
                "this is μP (unique, Thm 5.6)"
            )
        if self.equivalent_to:
            shown = [_DISPLAY.get(x, x) for x in self.equivalent_to]
            theta = p.c / 2
            how = "" if theta == 0 else f" (canonical form c = 0 via θ = {_fmt(theta)})"
            lines.append(
                "equivalent modulo the symmetry (a+θ, b-θ, c-2θ) [TP4 Eq. (5)] to: "
                + ", ".join(shown)
                + how
            )
        return "\n".join(lines)


def _verdicts(
    conditions: dict, s: Fraction, u: Fraction | float, r: Fraction | float, moves: bool = False
) -> dict:
    """The verdict fields of :class:`Classification` from the readout's ``s = a+b``,
    ``u = c+2a``, ``r`` and the stability conditions [TP4 Thms 3.3–3.8, Cor 3.9, H.35];
    ``moves``: something besides the readout moves ``f`` by Θ(1) (a scalar-like
    parameter of a model)."""
    stable = all(conditions.values())
    init_max, upd_max = s + r == 1, u == 1
    nontrivial = stable and (init_max or upd_max or moves)
    regime = (
        "unstable"
        if not stable
        else "trivial"
        if not nontrivial
        else "feature learning"
        if r == 0
        else "kernel"
    )
    kernel = regime == "kernel"
    return dict(
        readout_ab=s,
        readout_2ac=u,
        readout_abr=s + r,
        conditions=conditions,
        stable=stable,
        initialized_maximally=init_max,
        updated_maximally=upd_max,
        nontrivial=nontrivial,
        feature_learning=regime == "feature learning",
        kernel=kernel,
        nngp=kernel and s + r > 1 and upd_max,
        regime=regime,
        f0_gaussian=s == _HALF,
        f0_vanishes=s > _HALF,
    )


def classify(param: ABC) -> Classification:
    r"""Classify an abc-parametrization by the theorems of [TP4 §3.2, §5.3].

    ``nn.classify(model, param, optimizer)`` (with an :class:`~tensorprog.nn.Model`
    first) is :func:`tensorprog.nn.classification.classify_model`, the same
    classification by parameter class for any model (it agrees with this function on
    MLPs).

    With :math:`s=a_{L+1}+b_{L+1}` and :math:`u=2a_{L+1}+c`:

    * :math:`r=\min(s,u)+c-1+\min_{l\le L}(2a_l+\mathbb 1_{l=1})` [TP4 Def 3.2] and
      :math:`r_l=\min(s,u)+c-1+2a_l+\mathbb 1_{l=1}` [TP4 Prop 5.3];
    * stable iff :math:`a_1+b_1=0`, :math:`a_l+b_l=\tfrac12\ (2\le l\le L)`,
      :math:`s\ge\tfrac12`, :math:`r\ge0`, :math:`u\ge1`, :math:`s+r\ge1` [TP4 Thm 3.3];
    * a stable parametrization is nontrivial iff :math:`s+r=1` (:math:`W^{L+1}`
      initialized maximally) or :math:`u=1` (updated maximally) [TP4 Thm 3.4, Prop 5.5];
    * a stable nontrivial one is in the feature-learning regime iff :math:`r=0`
      [TP4 Thm 3.6] and in the kernel regime iff :math:`r>0` [TP4 Thm 3.8]; the kernel
      regime is the NNGP limit if moreover :math:`s+r>1` and :math:`u=1`
      [TP4 Cor H.35].

    The verdict is invariant under the symmetry :math:`(a+\theta,b-\theta,c-2\theta)`
    [TP4 Eq. (5)], since :math:`s`, :math:`u` and :math:`c+2a_l` are. The stability
    theorem assumes :math:`\phi\in\{\tanh,\sigma\text{-gelu}\}`; for linear :math:`\phi`
    the dichotomy can fail [TP4 Remark H.15].

    Parameters
    ----------
    param : ABC
        E.g. ``muP(2)`` or ``abc(a, b, c)``.

    Returns
    -------
    Classification

    Raises
    ------
    ProgramTypeError
        If ``param`` is not an :class:`ABC`.

    Examples
    --------
    >>> classify(muP(3)).regime
    'feature learning'
    >>> classify(SP(2, c=1)).r
    Fraction(1, 2)
    """
    if not isinstance(param, ABC):
        raise ProgramTypeError(
            "param must be an ABC parametrization (build one with nn.abc(a, b, c), "
            f"nn.muP(L), nn.SP(L), nn.NTK(L) or nn.MF()); got {type(param).__name__}"
        )
    L = param.depth
    a, b, c = param.a, param.b, param.c
    s = a[L] + b[L]
    u = 2 * a[L] + c
    base = min(s, u) + c - 1
    r_layers = tuple(base + 2 * a[ell - 1] + (1 if ell == 1 else 0) for ell in range(1, L + 1))
    r = min(r_layers)
    conditions = {
        _COND_INPUT: a[0] + b[0] == 0,
        _COND_HIDDEN: all(a[ell - 1] + b[ell - 1] == _HALF for ell in range(2, L + 1)),
        _COND_READOUT_INIT: s >= _HALF,
        _COND_R: r >= 0,
        _COND_READOUT_UPDATE: u >= 1,
        _COND_LOGITS: s + r >= 1,
    }
    v = _verdicts(conditions, s, u, r)
    nontrivial, upd_max = v["nontrivial"], v["updated_maximally"]
    maximal_updates = tuple(x == 0 for x in r_layers) + (upd_max,)
    if nontrivial:
        fl_layers = tuple(ell for ell in range(1, L + 1) if min(r_layers[:ell]) == 0)
        contributing = tuple(ell for ell in range(1, L + 1) if s + r_layers[ell - 1] == 1) + (
            (L + 1,) if upd_max else ()
        )
    else:
        fl_layers, contributing = (), ()
    return Classification(
        param=param,
        r=r,
        r_layers=r_layers,
        maximal_updates=maximal_updates,
        feature_learning_layers=fl_layers,
        contributing_layers=contributing,
        **v,
        equivalent_to=_named_equivalents(param),
    )


# --------------------------------------------------------------------------------------
# Width exponents for the training compiler
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerScaling:
    r"""Width scalings of one layer :math:`l` of the finite network (``docs/training.md``).

    The finite network trained by ``tensorprog.nn`` is :math:`W^l=n^{-a_l}w^l`,
    :math:`w^l_{ij}\sim\mathcal N\big(0,(\sigma_l n^{-b_l})^2\big)`, and plain SGD on
    :math:`w^l` with learning rate :math:`\eta\,n^{-c}` [TP4 §3.2].

    Attributes
    ----------
    layer : int
        :math:`l\in\{1,\dots,L+1\}`.
    shape : tuple of str
        Symbolic shape of :math:`W^l`: ``("n", "d")`` for :math:`l=1`, ``("n", "n")``
        for hidden layers, ``("1", "n")`` for the readout.
    a : Fraction
        The multiplier exponent: :math:`W^l=n^{-a_l}w^l`.
    init_std_exponent : Fraction
        :math:`-b_l`: the entries of :math:`w^l` have standard deviation
        :math:`\sigma_l\,n^{-b_l}`.
    init_std : float
        The width-independent constant :math:`\sigma_l`.
    lr_exponent : Fraction
        :math:`-c`: the learning rate of :math:`w^l` is :math:`\eta\,n^{-c}`.
    """

    layer: int
    shape: tuple[str, str]
    a: Fraction
    init_std_exponent: Fraction
    init_std: float
    lr_exponent: Fraction

    @property
    def b(self) -> Fraction:
        """The initialization exponent :math:`b_l` (``-init_std_exponent``)."""
        return -self.init_std_exponent

    def multiplier(self, n: float) -> float:
        r"""The multiplier :math:`n^{-a_l}` at width ``n``."""
        return float(_check_width(n) ** float(-self.a))

    def std(self, n: float) -> float:
        r"""The standard deviation :math:`\sigma_l n^{-b_l}` of :math:`w^l` entries."""
        return self.init_std * float(_check_width(n) ** float(self.init_std_exponent))

    def learning_rate(self, lr: float, n: float) -> float:
        r"""The SGD learning rate :math:`\eta\,n^{-c}` of :math:`w^l` for ``lr`` = η."""
        return float(lr) * float(_check_width(n) ** float(self.lr_exponent))


def _check_width(n: object) -> float:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Real):
        raise ProgramTypeError(f"n must be a positive width; got {type(n).__name__}")
    x = float(n)
    if not (math.isfinite(x) and x > 0):
        raise ProgramValueError(f"n must be a positive finite width; got {x!r}")
    return x


def scalings(param: ABC) -> tuple[LayerScaling, ...]:
    r"""Per-layer width exponents of the finite network of an abc-parametrization.

    For layer :math:`l=1..L+1`: multiplier exponent :math:`a_l`
    (:math:`W^l=n^{-a_l}w^l`), init std exponent :math:`-b_l`
    (:math:`w^l_{ij}\sim\mathcal N(0,\sigma_l^2n^{-2b_l})`), and learning-rate exponent
    :math:`-c` (learning rate :math:`\eta\,n^{-c}`) [TP4 §3.2]. This is the network
    ``nn.train_sgd`` unrolls (``docs/training.md``): :math:`h^1=W^1\xi`, :math:`x^l=\phi(h^l)`,
    :math:`h^{l+1}=W^{l+1}x^l`, :math:`f=W^{L+1}x^L`, full-batch SGD on every
    :math:`w^l`.

    Parameters
    ----------
    param : ABC
        The parametrization, e.g. ``muP(L)``.

    Returns
    -------
    tuple of LayerScaling
        One entry per layer, in order :math:`l=1..L+1`.

    Examples
    --------
    >>> [(str(s.a), str(s.init_std_exponent), str(s.lr_exponent)) for s in scalings(MF())]
    [('0', '0', '1'), ('1', '0', '1')]
    """
    if not isinstance(param, ABC):
        raise ProgramTypeError(
            "param must be an ABC parametrization (e.g. nn.muP(L) or nn.abc(a, b, c)); "
            f"got {type(param).__name__}"
        )
    L = param.depth
    assert param.init_std is not None
    out = []
    for ell in range(1, L + 2):
        shape = ("n", "d") if ell == 1 else ("1", "n") if ell == L + 1 else ("n", "n")
        out.append(
            LayerScaling(
                layer=ell,
                shape=shape,
                a=param.a[ell - 1],
                init_std_exponent=-param.b[ell - 1],
                init_std=param.init_std[ell - 1],
                lr_exponent=-param.c,
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------
# Per-class presets and per-parameter abcd for nn.train (any model)
# --------------------------------------------------------------------------------------
#
# nn.train (tensorprog/nn/train.py) trains any nn.Model. Its parameters are classified by
# shape [TP5 App B] and each class gets width exponents from a table; a
# parameter's exponents are one record, Scaling, whatever their source (a preset, an
# nn.abcd mapping, or the layers of a TP4 ABC).


class ParamClass(Enum):
    r"""The class of a parameter, decided by its shape [TP5 App B].

    ``"n"`` is the width (an infinite dimension), an int a finite one:

    ========== ============== ===============================================
    class      shape          examples
    ========== ============== ===============================================
    INPUT      ``("n", d)``   input weights (finite → infinite)
    HIDDEN     ``("n", "n")`` hidden weights (matrix-like)
    OUTPUT     ``(k, "n")``   output weights, ``k`` logits (infinite → finite)
    VECTOR     ``("n",)``     biases, LayerNorm gains (vector-like)
    SCALAR     ``()``, ``(k,)`` no infinite dimension (an output bias, a scale)
    ========== ============== ===============================================
    """

    INPUT = "input weights"
    HIDDEN = "hidden weights"
    OUTPUT = "output weights"
    VECTOR = "vector-like"
    SCALAR = "scalar-like"


#: The width dimension in a parameter's shape.
WIDTH_DIM = "n"


def param_class(shape: tuple) -> ParamClass:
    """The :class:`ParamClass` of a validated shape (see :meth:`nn.Model.param`)."""
    inf = tuple(s == WIDTH_DIM for s in shape)
    table = {
        (True, False): ParamClass.INPUT,
        (True, True): ParamClass.HIDDEN,
        (False, True): ParamClass.OUTPUT,
        (True,): ParamClass.VECTOR,
    }
    return table.get(inf, ParamClass.SCALAR)


@dataclass(frozen=True)
class ClassRule:
    r"""One row of a per-class table: the exponents of one parameter class.

    The parameter ``P`` (no multiplier, ``a = 0``) has entries iid
    ``N(init_mean, init_std² · v)`` with ``v = n^{-2b}`` (times ``1/d`` when
    ``fan_in_d``: the fan-in ``d`` of input weights), and SGD learning rate
    ``lr · lr_mult · s`` with ``s = n^{-c}``.

    Attributes
    ----------
    b, c : Fraction
        SGD exponents: ``v = n^{-2b}`` (``/d``), ``s = n^{-c}``.
    fan_in_d : bool
        Divide the variance by the finite fan-in ``d`` (input weights in TP5's tables).
    adam_c, adam_d : Fraction or None
        Adam/SignSGD (entrywise optimizers, [TP4b Def 2.2.1]): learning-rate factor
        ``n^{-adam_c}`` and ``ε_P = eps · n^{-adam_d}``; ``None`` where the preset does
        not tabulate them (data for the optimizers to come; SGD ignores them).
    """

    b: Fraction
    c: Fraction
    fan_in_d: bool = False
    adam_c: Fraction | None = None
    adam_d: Fraction | None = None


def _rule(b: object, c: object, fan_in_d: bool = False, adam: tuple | None = None) -> ClassRule:
    ac, ad = (None, None) if adam is None else (Fraction(adam[0]), Fraction(adam[1]))
    return ClassRule(Fraction(b), Fraction(c), fan_in_d, ac, ad)


_I, _H, _O, _V, _S = (
    ParamClass.INPUT,
    ParamClass.HIDDEN,
    ParamClass.OUTPUT,
    ParamClass.VECTOR,
    ParamClass.SCALAR,
)

#: μP without multipliers [TP5 Table 3]. SGD ``(v, s)``: input
#: ``(1/d, n)``, vector-like ``(1, n)``, output ``(1/n², 1/n)``, hidden ``(1/n, 1)``,
#: scalar-like ``(1, 1)``. Adam/SignSGD learning-rate factors input 1, vector-like 1,
#: output ``1/n``, hidden ``1/n``; ``ε_P = eps·n^{-d}`` with ``d = 1`` for input,
#: vector-like and hidden, ``0`` for output (ε scales like the gradient entries [TP4b §2.2]).
MUP_TABLE: dict[ParamClass, ClassRule] = {
    _I: _rule(0, -1, True, (0, 1)),
    _V: _rule(0, -1, False, (0, 1)),
    _O: _rule(1, 1, False, (1, 0)),
    _H: _rule(Fraction(1, 2), 0, False, (1, 1)),
    _S: _rule(0, 0, False, (0, 0)),
}

#: Standard parametrization [TP5 Table 3, values in parentheses]: SGD ``(v, s)``: input
#: ``(1/d, 1)``, vector-like ``(1, 1)``, output ``(1/n, 1)``, hidden ``(1/n, 1)``,
#: scalar-like ``(1, 1)``; Adam learning rate 1 and ``ε`` constant for every class.
SP_TABLE: dict[ParamClass, ClassRule] = {
    _I: _rule(0, 0, True, (0, 0)),
    _V: _rule(0, 0, False, (0, 0)),
    _O: _rule(Fraction(1, 2), 0, False, (0, 0)),
    _H: _rule(Fraction(1, 2), 0, False, (0, 0)),
    _S: _rule(0, 0, False, (0, 0)),
}

#: Neural tangent parametrization [TP4 Table 1] written without multipliers: a weight
#: ``n^{-1/2} w`` (``w`` iid ``N(0,1)``, learning rate ``η``) is ``P`` with ``v = 1/n`` and
#: ``s = 1/n``. SGD ``(v, s)``: input ``(1/d, 1)``, vector-like ``(1, 1)``, output
#: ``(1/n, 1/n)``, hidden ``(1/n, 1/n)``, scalar-like ``(1, 1)``. Adam/SignSGD: TP4b's NTP
#: [TP4b Def 2.4.1] ``(a, b, c, d)`` = input ``(0, 0, 1/2, 1/2)``, hidden ``(1/2, 0, 1, 1)``,
#: output ``(1/2, 0, 1/2, 1/2)`` without multipliers (``θ = −a`` in
#: ``(a+θ, b−θ, c−θ, d+θ)``, [TP4b Prop 2.2.3]): learning-rate factors input/vector-like
#: ``n^{-1/2}``, output ``n^{-1}``, hidden ``n^{-3/2}``; ``d`` = 1/2, 1/2, 0, 1/2.
NTK_TABLE: dict[ParamClass, ClassRule] = {
    _I: _rule(0, 0, True, (Fraction(1, 2), Fraction(1, 2))),
    _V: _rule(0, 0, False, (Fraction(1, 2), Fraction(1, 2))),
    _O: _rule(Fraction(1, 2), 1, False, (1, 0)),
    _H: _rule(Fraction(1, 2), 1, False, (Fraction(3, 2), Fraction(1, 2))),
    _S: _rule(0, 0, False, (0, 0)),
}

_TABLE_NAMES = {id(MUP_TABLE): "muP", id(SP_TABLE): "SP", id(NTK_TABLE): "NTK"}


@dataclass(frozen=True)
class Scaling:
    r"""The width exponents of one parameter of an :class:`~tensorprog.nn.Model`
    ([TP4b Def 2.2.1], abcd): the parameter is ``P = n^{-a} w``, ``w`` iid
    ``N(init_mean, init_std² · var_factor · n^{-2b})``, SGD learning rate of ``w``
    ``lr · lr_mult · n^{-c}``, ``ε_P = eps · n^{-d}`` for entrywise optimizers.

    Only two combinations matter for SGD: ``P_0`` has entries of size ``n^{-s}``,
    ``s = a + b``, and ``ΔP = −lr·lr_mult·n^{-e} ∂L/∂P``, ``e = c + 2a``.
    """

    a: Fraction
    b: Fraction
    c: Fraction
    d: Fraction | None = None
    var_factor: float = 1.0

    @property
    def s(self) -> Fraction:
        """``a + b``: the size exponent of the initial entries."""
        return self.a + self.b

    @property
    def e(self) -> Fraction:
        """``c + 2a``: the exponent of the effective learning rate of ``P``."""
        return self.c + 2 * self.a


@dataclass(frozen=True)
class PerClass:
    """A per-class preset for :func:`tensorprog.nn.train` (``nn.muP()``, ``nn.SP()``,
    ``nn.NTK()``): exponents by :class:`ParamClass` from a table of :class:`ClassRule`.

    Attributes
    ----------
    name : str
    table : dict
        ``{ParamClass: ClassRule}``.
    """

    name: str
    table: dict = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"PerClass({self.name!r})"

    def scaling(self, name: str, cls: ParamClass, fan_in: int, entrywise: bool = False) -> Scaling:
        """The :class:`Scaling` of parameter ``name`` of class ``cls`` (``fan_in``: the
        finite fan-in ``d`` of an input weight); ``entrywise``: the learning-rate exponent
        of the Adam/SignSGD column (``adam_c``) instead of SGD's."""
        rule = self.table[cls]
        vf = 1.0 / fan_in if rule.fan_in_d else 1.0
        if entrywise:
            if rule.adam_c is None or rule.adam_d is None:
                raise ProgramValueError(
                    f"the preset {self.name} has no Adam/SignSGD exponents for {cls.value}; "
                    f"give them per parameter with nn.abcd"
                )
            return Scaling(Fraction(0), rule.b, rule.adam_c, rule.adam_d, vf)
        return Scaling(Fraction(0), rule.b, rule.c, rule.adam_d, vf)


def _per_class(table: dict, init_std: object) -> PerClass:
    if init_std is not None:
        raise ProgramValueError(
            "init_std is a per-layer constant of the depth-taking presets (nn.MLP); the "
            "per-class presets of nn.train take it per parameter: m.param(..., init_std=...)"
        )
    return PerClass(_TABLE_NAMES[id(table)], table)


@dataclass(frozen=True)
class PerParameter:
    """Per-parameter abcd exponents for :func:`tensorprog.nn.train` (``nn.abcd``).

    Attributes
    ----------
    exponents : dict
        ``{parameter name: (a, b, c, d)}`` as Fractions.
    """

    exponents: dict

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: ({', '.join(map(_fmt, v))})" for k, v in self.exponents.items())
        return f"abcd({{{body}}})"

    def scaling(self, name: str, cls: ParamClass, fan_in: int, entrywise: bool = False) -> Scaling:
        """The :class:`Scaling` of parameter ``name`` (``cls``, ``fan_in``, ``entrywise``
        unused: abcd exponents carry no fan-in factor — put it in ``init_std`` — and one
        ``c`` for every optimizer)."""
        if name not in self.exponents:
            raise ProgramValueError(
                f"nn.abcd gives no exponents for parameter {name!r}; it has "
                f"{sorted(self.exponents)} — give (a, b, c, d) for every parameter of the model"
            )
        a, b, c, d = self.exponents[name]
        return Scaling(a, b, c, d)


def abcd(exponents: dict) -> PerParameter:
    r"""Per-parameter abcd exponents for :func:`tensorprog.nn.train` [TP4b Def 2.2.1].

    Parameter ``P = n^{-a} w`` with ``w`` iid ``N(init_mean, init_std² · n^{-2b})`` (no
    fan-in factor: put it in ``init_std``), SGD learning rate ``lr · lr_mult · n^{-c}``,
    ``ε_P = eps · n^{-d}`` for entrywise optimizers (SGD ignores ``d``).

    Parameters
    ----------
    exponents : dict
        ``{name: (a, b, c, d)}`` for every parameter of the model (exponents as ints,
        floats, Fractions or strings such as ``"1/2"``).

    Examples
    --------
    >>> abcd({"W_in": (0, 0, -1, 0), "W_out": (0, 1, 1, 0)})
    abcd({'W_in': (0, 0, -1, 0), 'W_out': (0, 1, 1, 0)})
    """
    if not isinstance(exponents, dict):
        raise ProgramTypeError(
            f"nn.abcd needs a dict {{parameter name: (a, b, c, d)}}, got {type(exponents).__name__}"
        )
    out = {}
    for k, v in exponents.items():
        if not isinstance(k, str):
            raise ProgramTypeError(f"nn.abcd: keys are parameter names (str), got {k!r}")
        vals = _as_sequence(v, f"nn.abcd[{k!r}]")
        if len(vals) != 4:
            raise ProgramValueError(
                f"nn.abcd[{k!r}] must be four exponents (a, b, c, d), got {v!r}"
            )
        out[k] = tuple(
            _to_fraction(x, f"nn.abcd[{k!r}][{j}] ({'abcd'[j]})") for j, x in enumerate(vals)
        )
    return PerParameter(out)


def abc_scaling(param: ABC, name: str, cls: ParamClass) -> Scaling:
    r"""The exponents a TP4 :class:`ABC` gives a parameter of class ``cls``.

    Input weights and vector-like parameters (biases are input-like, [TP4 App C.1]) take
    layer 1's ``(a_1, b_1)``, output weights layer ``L+1``'s, hidden weights layer 2's
    (all hidden layers must then share exponents), scalar-like parameters ``(0, 0)``;
    every class learns at ``η n^{-c}``. ``init_std`` σ_l of the ABC must be 1 (the model
    gives its own per parameter). So ``nn.MF()`` is the mean-field preset of a model
    without hidden weights: input/vector-like ``(v, s) = (1, n)``, output ``(1/n², 1/n)``.
    """
    L = param.depth
    if any(s != 1.0 for s in param.init_std):
        raise ProgramValueError(
            f"nn.train: the ABC {param!r} has init_std {param.init_std}; with nn.train give "
            f"init_std per parameter (m.param(..., init_std=...))"
        )
    if cls is ParamClass.HIDDEN:
        if L < 2:
            raise ProgramValueError(
                f"nn.train: parameter {name!r} is a hidden weight but {param!r} has no hidden "
                f"layer exponents (depth 1); use nn.muP() or nn.abcd"
            )
        if len({(param.a[ell], param.b[ell]) for ell in range(1, L)}) > 1:
            raise ProgramValueError(
                f"nn.train: {param!r} has different exponents per hidden layer; a model's "
                f"hidden weights are not numbered — use nn.abcd per parameter"
            )
        ell = 1
    elif cls in (ParamClass.INPUT, ParamClass.VECTOR):
        ell = 0
    elif cls is ParamClass.OUTPUT:
        ell = L
    else:
        return Scaling(Fraction(0), Fraction(0), param.c)
    return Scaling(param.a[ell], param.b[ell], param.c)


# --------------------------------------------------------------------------------------
# Classification of any model by parameter class (nn.classify(model, param, optimizer))
# --------------------------------------------------------------------------------------

# Extra stability conditions of a model beyond the six of [TP4 Thm 3.3] (only listed
# when the model has such parameters).
_COND_VECTOR = "vector-like a+b>=0"
_COND_SCALAR = "scalar-like a>=0 (nonzero mean), c+2a>=0"


@dataclass(frozen=True)
class ParamExponents:
    r"""The width exponents of one parameter of a model, as ``nn.classify(model, ...)`` reads them.

    Every exponent ``k`` means "size :math:`\Theta(n^{-k})`" (so ``k > 0`` vanishes,
    ``k < 0`` diverges); ``None`` means "no such term" (an untrained parameter, a class
    that does not feed the features). With ``s = a+b``, ``e = c+2a`` (:class:`Scaling`)
    and ``m = min over output weights of min(s_out, e_out)`` (the size exponent of the
    entries of :math:`\partial f/\partial x`, [TP4 Def 3.2]):

    ========== ================== ========================= ==========================
    class      init (``init``)    feature update ``r_P``     output update
    ========== ================== ========================= ==========================
    INPUT      ``s``              ``e + m``                 ``s_out + r_P − 1``
    HIDDEN     ``s − 1/2``        ``e + m − 1``             ``s_out + r_P − 1``
    VECTOR     ``s``              ``e + m``                 ``s_out + r_P − 1``
    OUTPUT     ``s − 1/2`` (f_0)  —                         ``e − 1``
    SCALAR     ``a`` (None: 0)    —                         ``e``
    ========== ================== ========================= ==========================

    For the layers of an MLP these are TP4's quantities: ``r_P`` is :math:`r_l`
    [TP4 Prop 5.3], ``e − 1`` of the readout is :math:`2a_{L+1}+c-1` and the output
    update of a feature parameter :math:`a_{L+1}+b_{L+1}+r_l-1` [TP4 Thm 3.3, Prop 5.5].

    Attributes
    ----------
    name : str
    cls : ParamClass
    scaling : Scaling
        Its ``(a, b, c)`` from the parametrization.
    init : Fraction or None
        Size exponent of the initial contribution (to the features it produces, or
        ``f_0`` for output weights, the value itself for scalar-like ones).
    feature_update : Fraction or None
        ``r_P``: :math:`\Delta(P x)=\Theta(n^{-r_P})` in the features it produces.
    output_update : Fraction or None
        Size exponent of its update's contribution to :math:`f_t-f_0`.
    """

    name: str
    cls: ParamClass
    scaling: Scaling
    init: Fraction | None
    feature_update: Fraction | None
    output_update: Fraction | None


def _limit_problems(
    spec: object, sc: Scaling, m: Fraction = Fraction(1), kernel: bool = False
) -> list[str]:
    """Why ``nn.train`` refuses the limit of parameter ``spec`` with scaling ``sc``.

    The coefficients of its program are ``n^{-k}`` for the exponents ``k`` listed in
    :mod:`tensorprog.nn.train` ("The program"; gradients normalised by ``n^m``, ``m < 1``
    in a centred kernel-regime run, ``kernel``); each must be ``≥ 0``.
    """
    cls, trained = spec.cls, spec.lr_mult != 0.0
    s, e = sc.s, sc.e
    out_init = (
        ("the initial output weights n^(m-s)·u", s - m)
        if kernel
        else (
            "the output f = n^(1-s)·⟨u, x⟩ (f_0 a Gaussian-process fluctuation, not centred)",
            s - 1,
        )
    )
    need = {
        ParamClass.HIDDEN: [("initial value n^(1/2-s)·M", s - _HALF), ("learning rate", e + m - 1)],
        ParamClass.INPUT: [("initial columns n^(-s)·u", s), ("learning rate", e + m)],
        ParamClass.VECTOR: [("initial value n^(-s)·u", s), ("learning rate", e + m)],
        ParamClass.OUTPUT: [out_init, ("learning rate", e - m)],
        ParamClass.SCALAR: [
            ("initial value n^(-a)·init_mean", sc.a if spec.init_mean else 0),
            ("learning rate", e),
        ],
    }[cls]
    out = [
        f"{spec.name!r} ({cls.value}): {what} has width power {_fmt_power(-k)}"
        for what, k in need
        if k < 0 and (trained or what != "learning rate")
    ]
    return out


def _model_failures(rows: Sequence[ParamExponents], r: Fraction | float) -> dict:
    """Per stability condition of a model (see :func:`classify_model`), the names of the
    parameters that violate it (empty: the condition holds)."""

    def bad(cls: ParamClass, ok: Any) -> tuple[str, ...]:
        return tuple(x.name for x in rows if x.cls is cls and not ok(x))

    out_cls = ParamClass.OUTPUT
    out = {
        _COND_INPUT: bad(ParamClass.INPUT, lambda x: x.scaling.s == 0),
        _COND_HIDDEN: bad(ParamClass.HIDDEN, lambda x: x.scaling.s == _HALF),
        _COND_READOUT_INIT: bad(out_cls, lambda x: x.scaling.s >= _HALF),
        _COND_R: tuple(
            x.name for x in rows if x.feature_update is not None and x.feature_update < 0
        ),
        _COND_READOUT_UPDATE: bad(
            out_cls, lambda x: x.output_update is None or x.output_update >= 0
        ),
        _COND_LOGITS: bad(out_cls, lambda x: x.scaling.s + r >= 1),
    }
    if any(x.cls is ParamClass.VECTOR for x in rows):
        out[_COND_VECTOR] = bad(ParamClass.VECTOR, lambda x: x.scaling.s >= 0)
    if any(x.cls is ParamClass.SCALAR for x in rows):
        out[_COND_SCALAR] = bad(
            ParamClass.SCALAR,
            lambda x: (
                (x.init is None or x.init >= 0)
                and (x.output_update is None or x.output_update >= 0)
            ),
        )
    return out


# The conditions of [TP4 Thm 3.3] as they read for a model's parameter classes.
_MODEL_COND_TEXT = {
    _COND_INPUT: "input weights: a+b = 0",
    _COND_HIDDEN: "hidden weights: a+b = 1/2",
    _COND_READOUT_INIT: "output weights: a+b >= 1/2",
    _COND_R: "r >= 0",
    _COND_READOUT_UPDATE: "output weights: c+2a >= 1",
    _COND_LOGITS: "output weights: a+b+r >= 1",
    _COND_VECTOR: "vector-like: a+b >= 0",
    _COND_SCALAR: "scalar-like: a >= 0 (nonzero mean), c+2a >= 0",
}


def _explain_model(c: Classification) -> str:
    """:meth:`Classification.explain` for :func:`classify_model`."""

    def fx(x: Any) -> str:
        return "-" if x is None else _fmt(x)

    rows = c.parameters
    lines = [f"model {c.model!r} under {c.param!r}, SGD"]
    lines.append("  parameter        class            a     b     c   | init  r_P   f-update")
    for x in rows:
        g = x.scaling
        lines.append(
            f"  {x.name:<16} {x.cls.value:<15} {_fmt(g.a):>5} {_fmt(g.b):>5} {_fmt(g.c):>5} | "
            f"{fx(x.init):>5} {fx(x.feature_update):>5} {fx(x.output_update):>5}"
        )
    lines.append(
        "  (exponents k of Theta(n^-k): init of P_0's contribution, r_P of the feature "
        "update, f-update of the update's contribution to f_t - f_0)"
    )
    feats = [x for x in rows if x.feature_update is not None]
    if feats:
        who = ", ".join(x.name for x in feats if x.feature_update == c.r)
        lines.append(f"r = min_P r_P = {_fmt(c.r)}, decided by {who}  [TP4 Def 3.2, Prop 5.3]")
    else:
        lines.append("r = inf: no trained parameter feeds the features  [TP4 Def 3.2]")
    failing = _model_failures(rows, c.r)
    n_bad = sum(1 for v in failing.values() if v)
    lines.append(
        "stable: yes (every condition of Thm 3.3 holds, by parameter class)"
        if c.stable
        else f"stable: no ({n_bad} of the {len(failing)} conditions of Thm 3.3 fail)"
    )
    for name, bad in failing.items():
        mark = "FAIL" if bad else "ok  "
        text = (
            f"{_MODEL_COND_TEXT[name]:<30} [TP4: {name}]"
            if name in STABILITY_CONDITIONS
            else (_MODEL_COND_TEXT[name])
        )
        lines.append(f"  [{mark}] {text}" + (f"  (violated by {', '.join(bad)})" if bad else ""))
    outs = [x for x in rows if x.cls is ParamClass.OUTPUT]
    im = [x.name for x in outs if x.scaling.s + c.r == 1]
    um = [x.name for x in outs if x.output_update == 0]
    sm = [x.name for x in rows if x.cls is ParamClass.SCALAR and x.output_update == 0]
    if not c.stable:
        lines.append("regime: unstable (nontriviality, Thm 3.4, concerns stable ones)")
    elif not c.nontrivial:
        lines.append(
            "regime: trivial (no output weight has s+r = 1 or c+2a = 1, Thm 3.4): f_t - f_0 -> 0"
        )
    else:
        why = []
        if im:
            why.append("initialized maximally (s+r = 1): " + ", ".join(im))
        if um:
            why.append("updated maximally (c+2a = 1): " + ", ".join(um))
        if sm:
            why.append("scalar-like updated by Theta(1): " + ", ".join(sm))
        lines.append("nontrivial: yes (Thm 3.4, Prop 5.5) — " + "; ".join(why))
        if c.feature_learning:
            zero = ", ".join(x.name for x in feats if x.feature_update == 0)
            lines.append(
                f"regime: feature learning (r = 0, Thm 3.6): the updates of {zero} move "
                "the features by Theta(1)"
            )
        else:
            lines.append(
                f"regime: kernel (r = {_fmt(c.r)} > 0, Thm 3.8): features do not move in "
                "the limit; f moves through " + ", ".join(c.contributing_params)
            )
    if c.limit_supported:
        lines.append("nn.train: builds the limit (no diverging width power)")
    else:
        lines.append(
            "nn.train: refuses the limit (allow_unstable=True simulates it): "
            + "; ".join(c.limit_problems)
        )
    return "\n".join(lines)
