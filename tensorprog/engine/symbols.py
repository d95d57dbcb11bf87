"""Symbols of the Z-calculus, printed in the papers' notation.

``Z^{x}`` (an initial vector's coordinate), ``Ẑ^{Wx}`` (the Gaussian part of a
MatMul), ``Ż^{Wx}`` (its correction), ``θ̊`` (a limit scalar) and the expectation
coefficients ``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` of the ZDot rule [TP4 Eq. (31)].

Each symbol carries what it stands for as attributes (names of the program's
variables, the hat a coefficient differentiates against, the index of a placeholder);
its sympy name is derived from them and never parsed back.
"""

from __future__ import annotations

from typing import Any

import sympy

__all__ = [
    "ZSym",
    "ZCopy",
    "CopyExpectation",
    "ZHat",
    "ZDot",
    "Theta",
    "DotCoef",
    "GaussSym",
    "ConstSym",
]


class _VarSymbol(sympy.Symbol):
    """A real symbol standing for one variable of the program, by name (``var``)."""

    _str_fmt = "{}"
    _latex_fmt = "{}"

    def __new__(cls, var: str) -> Any:
        obj = super().__new__(cls, cls._str_fmt.format(var), real=True)
        obj.var = var
        return obj

    def __getnewargs_ex__(self) -> Any:
        return ((self.var,), {})

    def _sympystr(self, printer: Any) -> str:
        return self.name

    def _latex(self, printer: Any) -> str:
        return self._latex_fmt.format(self.var)


class ZSym(_VarSymbol):
    """``Z^{x}``: the limit coordinate distribution of a vector ``x``."""

    _str_fmt = "Z^{{{}}}"
    _latex_fmt = "Z^{{{}}}"


class ZCopy(_VarSymbol):
    """``Z^{x(1)}``: the iid copy ``(1)`` of ``Z^x`` that an OuterNonlin's limit averages
    over, independent of every unmarked ``Z`` [TP4b Def 2.6.5]."""

    _str_fmt = "Z^{{{} (1)}}"
    _latex_fmt = r"Z^{{{}\,(1)}}"


class CopyExpectation(sympy.Function):
    """``𝔼^{(1)}[e]``: the expectation over the iid copy ``(1)`` only (the unmarked
    ``Z`` held fixed) — ``Z`` of an OuterNonlin [TP4b Def 2.6.5]. Never evaluated."""

    nargs = 1

    def _sympystr(self, printer: Any) -> str:
        return f"𝔼⁽¹⁾[{printer._print(self.args[0])}]"

    def _latex(self, printer: Any, exp: Any = None) -> str:
        out = rf"\mathbb{{E}}^{{(1)}}\left[{printer._print(self.args[0])}\right]"
        return rf"\left({out}\right)^{{{exp}}}" if exp is not None else out


class Theta(_VarSymbol):
    """``θ̊``: the deterministic limit of a scalar of the program."""

    _str_fmt = "{}̊"
    _latex_fmt = r"\mathring{{{}}}"


class _MatMulSymbol(sympy.Symbol):
    """A real symbol of one MatMul ``W x`` (``Wᵀ x`` when ``transpose``), by names.

    ``out`` is the MatMul's output name when an earlier MatMul of the same matrix,
    direction and argument exists (two hats then differ by it), else None.
    """

    _str_fmt = "{}"
    _latex_fmt = "{}"

    def __new__(cls, matrix: str, transpose: bool, arg: str, out: str | None = None) -> Any:
        label = f"{matrix}{'^T' if transpose else ''} {arg}" + (f"|{out}" if out else "")
        obj = super().__new__(cls, cls._str_fmt.format(label), real=True)
        obj.matrix, obj.transpose, obj.arg, obj.out = matrix, bool(transpose), arg, out
        return obj

    def __getnewargs_ex__(self) -> Any:
        return ((self.matrix, self.transpose, self.arg, self.out), {})

    def _sympystr(self, printer: Any) -> str:
        return self.name

    def _latex(self, printer: Any) -> str:
        top = r"^{\top}" if self.transpose else ""
        label = f"{self.matrix}{top} {self.arg}" + (f",{self.out}" if self.out else "")
        return self._latex_fmt.format(label)


class ZHat(_MatMulSymbol):
    """``Ẑ^{Wx}``: the Gaussian (hat) part of a MatMul ``Wx`` [TP4 ZHat]."""

    _str_fmt = "Ẑ^{{{}}}"
    _latex_fmt = r"\hat{{Z}}^{{{}}}"

    def dot(self) -> ZDot:
        """``Ż`` of the same MatMul."""
        return ZDot(self.matrix, self.transpose, self.arg, self.out)


class ZDot(_MatMulSymbol):
    """``Ż^{Wx}``: the correction part of a MatMul ``Wx`` [TP4 ZDot]."""

    _str_fmt = "Ż^{{{}}}"
    _latex_fmt = r"\dot{{Z}}^{{{}}}"


class DotCoef(sympy.Symbol):
    """``𝔼[∂Z^{x}/∂Ẑ^{Wᵀy}]``: a ZDot expectation coefficient, by the name ``x`` of the
    vector differentiated and the ``hat`` it is differentiated against."""

    def __new__(cls, x: str, hat: ZHat) -> Any:
        obj = super().__new__(cls, f"𝔼[∂Z^{{{x}}}/∂{hat.name}]", real=True)
        obj.x, obj.hat = x, hat
        return obj

    def __getnewargs_ex__(self) -> Any:
        return ((self.x, self.hat), {})

    def _sympystr(self, printer: Any) -> str:
        return self.name

    def _latex(self, printer: Any) -> str:
        return (
            rf"\mathbb{{E}}\left[\partial Z^{{{self.x}}}/\partial "
            rf"{sympy.latex(self.hat)}\right]"
        )


class _Placeholder(sympy.Symbol):
    """A real placeholder ``<prefix><index>`` of a canonical integrand."""

    _prefix = ""

    def __new__(cls, index: int) -> Any:
        obj = super().__new__(cls, f"{cls._prefix}{index}", real=True)
        obj.index = index
        return obj

    def __getnewargs_ex__(self) -> Any:
        return ((self.index,), {})


class GaussSym(_Placeholder):
    """Canonical placeholder ``g_k`` for the k-th base Gaussian of an integrand."""

    _prefix = "g"


class ConstSym(_Placeholder):
    """Canonical placeholder ``q_j`` for the j-th constant of an integrand."""

    _prefix = "q"


_G_CACHE: list[GaussSym] = []
_Q_CACHE: list[ConstSym] = []


def g(k: int) -> GaussSym:
    """The canonical base-Gaussian placeholder ``g_k``."""
    while len(_G_CACHE) <= k:
        _G_CACHE.append(GaussSym(len(_G_CACHE)))
    return _G_CACHE[k]


def q(j: int) -> ConstSym:
    """The canonical constant placeholder ``q_j``."""
    while len(_Q_CACHE) <= j:
        _Q_CACHE.append(ConstSym(len(_Q_CACHE)))
    return _Q_CACHE[j]
