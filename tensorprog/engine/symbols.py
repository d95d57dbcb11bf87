"""Symbols of the Z-calculus, printed in the papers' notation.

``Z^{x}`` (an initial vector's coordinate), ``Ẑ^{Wx}`` (the Gaussian part of a
MatMul), ``Ż^{Wx}`` (its correction), ``θ̊`` (a limit scalar) and the expectation
coefficients ``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` of the ZDot rule [TP4 Eq. (31)].
"""

from __future__ import annotations

from typing import Any

import sympy

__all__ = ["ZSym", "ZHat", "ZDot", "Theta", "DotCoef", "GaussSym", "ConstSym"]


class _Labelled(sympy.Symbol):
    """A real symbol whose str/LaTeX forms are given by a label."""

    _str_fmt = "{}"
    _latex_fmt = "{}"

    def __new__(cls, label: str, latex_label: str | None = None) -> Any:
        obj = super().__new__(cls, cls._str_fmt.format(label), real=True)
        obj._label = label
        obj._latex_label = latex_label if latex_label is not None else label
        return obj

    def __getnewargs_ex__(self) -> Any:
        return ((self._label, self._latex_label), {})

    def _sympystr(self, printer: Any) -> str:
        return self.name

    def _latex(self, printer: Any) -> str:
        return self._latex_fmt.format(self._latex_label)


class ZSym(_Labelled):
    """``Z^{x}``: the limit coordinate distribution of a vector ``x``."""

    _str_fmt = "Z^{{{}}}"
    _latex_fmt = "Z^{{{}}}"


class ZHat(_Labelled):
    """``Ẑ^{Wx}``: the Gaussian (hat) part of a MatMul ``Wx`` [TP4 ZHat]."""

    _str_fmt = "Ẑ^{{{}}}"
    _latex_fmt = r"\hat{{Z}}^{{{}}}"


class ZDot(_Labelled):
    """``Ż^{Wx}``: the correction part of a MatMul ``Wx`` [TP4 ZDot]."""

    _str_fmt = "Ż^{{{}}}"
    _latex_fmt = r"\dot{{Z}}^{{{}}}"


class Theta(_Labelled):
    """``θ̊``: the deterministic limit of a scalar of the program."""

    _str_fmt = "{}̊"
    _latex_fmt = r"\mathring{{{}}}"


class DotCoef(_Labelled):
    """``𝔼[∂Z^{x}/∂Ẑ^{Wᵀy}]``: a ZDot expectation coefficient."""

    _str_fmt = "𝔼[∂{}]"
    _latex_fmt = r"\mathbb{{E}}\left[{}\right]"


class GaussSym(sympy.Symbol):
    """Canonical placeholder ``g_k`` for the k-th base Gaussian of an integrand."""


class ConstSym(sympy.Symbol):
    """Canonical placeholder ``q_j`` for the j-th constant of an integrand."""


_G_CACHE: list[GaussSym] = []
_Q_CACHE: list[ConstSym] = []


def g(k: int) -> GaussSym:
    """The canonical base-Gaussian placeholder ``g_k``."""
    while len(_G_CACHE) <= k:
        _G_CACHE.append(GaussSym(f"g{len(_G_CACHE)}", real=True))
    return _G_CACHE[k]


def q(j: int) -> ConstSym:
    """The canonical constant placeholder ``q_j``."""
    while len(_Q_CACHE) <= j:
        _Q_CACHE.append(ConstSym(f"q{len(_Q_CACHE)}", real=True))
    return _Q_CACHE[j]
