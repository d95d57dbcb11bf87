r"""LaTeX export of programs and of their infinite-width derivations.

Two sympy printers (subclasses of :class:`sympy.printing.latex.LatexPrinter`, one
``_print_<Class>`` method per instruction record and per Z-calculus symbol):

* :class:`ProgramLatexPrinter` prints a :class:`~tensorprog.Program` one line per
  instruction in the papers' notation [TP4 §7 Def 7.1]: ``W_{αβ} ∼ 𝒩(0, σ²/n)``,
  ``h = W x``, ``h = W^⊤ x``, ``x = φ(h)``, ``θ = (1/n) Σ_α φ(x_α)``;
* :class:`DerivationLatexPrinter` prints a :class:`~tensorprog.engine.Limit` as the
  Master Theorem rule applied to each instruction [TP4 Def 7.3] (docs/concepts/master-theorem.md): ZInit,
  ZNonlin, ZMatMul ``Z^{Wx} = \hat Z^{Wx} + \dot Z^{Wx}``, ZHat covariances
  ``Cov(\hat Z^{Wx}, \hat Z^{Wy}) = σ_W² 𝔼[Z^x Z^y]`` and ZDot
  ``\dot Z^{Wx} = σ_W² Σ_i 𝔼[∂Z^x/∂\hat Z^{W^⊤y^i}] Z^{y^i}`` with their values, and
  ZMoment ``\mathring θ = 𝔼[…]`` with value, error and method.

Both lay out rows of an ``align*`` (``aligned`` for notebooks) environment and break
long sums over several rows so that standalone documents (:func:`document`, article
class, amsmath/amssymb only) compile with pdflatex without overfull lines.

``Z`` of a vector is always written through the ``Z`` of its inputs (the DAG of the
derivation, never inlined), so the output stays linear in the program's length.

Examples
--------
>>> import tensorprog as tp
>>> p = tp.Program("AtAv")
>>> A, v = p.matrix("A", var=2.0), p.vector("v")
>>> x = A.T.matmul(A.matmul(v, name="y"), name="x")
>>> k = tp.inner(v, x, name="k")
>>> print(p.latex())
\begin{align*}
A_{\alpha\beta} &\sim \mathcal{N}\left(0, 2/n\right) \\
v_{\alpha} &\sim \mathcal{N}\left(0, 1\right) \\
y &= A v \\
x &= A^{\top} y \\
k &= \frac{1}{n} \sum_{\alpha=1}^{n} v_{\alpha} x_{\alpha}
\end{align*}
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import runpy
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sympy
from sympy.printing.conventions import split_super_sub
from sympy.printing.latex import LatexPrinter
from sympy.printing.latex import translate as _translate
from sympy.printing.precedence import PRECEDENCE

from .core import hooks
from .core.errors import ProgramTypeError, ProgramValueError, ResourceError, TensorProgramError
from .core.ir import (
    WIDTH,
    InitMatrix,
    InitScalar,
    InitVector,
    MatMul,
    Moment,
    Nonlin,
    OuterNonlin,
    ScalarFn,
    Var,
)
from .core.texnames import SAFE_MACROS, call_latex, escape_text, function_latex, is_safe_latex  # noqa: F401
from .dsl.program import Program
from .engine.limit import Limit
from .engine.methods import REQUESTABLE
from .engine.symbols import CopyExpectation, CopyMoment, DotCoef, Theta, ZCopy, ZDot, ZHat, ZSym

__all__ = [
    "ProgramLatexPrinter",
    "DerivationLatexPrinter",
    "Coordinate",
    "latex",
    "latex_name",
    "is_safe_latex",
    "function_latex",
    "program_latex",
    "limit_latex",
    "document",
    "limit_html",
    "load_programs",
    "compile_pdf",
    "PDFLATEX_INSTALL",
]

#: How to install pdflatex (with amsmath/amssymb) on Debian/Ubuntu.
PDFLATEX_INSTALL = "apt-get install -y texlive-latex-base texlive-latex-recommended"

_METHOD_TEXT = {"exact": "exact", "quadrature": "quadrature", "montecarlo": "Monte Carlo"}


# ---------------------------------------------------------------------------------------
# names


_SIMPLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*\Z")


def _greek_word(ch: str) -> str | None:
    """``"theta"`` for ``θ``, ``"Theta"`` for ``Θ`` (Greek letters only), else None."""
    m = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", unicodedata.name(ch, ""))
    if not m:
        return None
    word = m.group(2).lower()
    return word if m.group(1) == "SMALL" else word.capitalize()


_NUMBER_NAME = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_INDEXED_NAME = re.compile(
    r"^(?P<base>[A-Za-z][A-Za-z0-9]*)\[(?P<idx>\d+(,\d+)*)\](?P<rest>(_[A-Za-z0-9]+)*)$"
)


def latex_name(name: str, *, accent: str | None = None, sub: str | None = None) -> str:
    r"""The LaTeX of a variable name, in sympy's conventions with unambiguous subscripts.

    Trailing digits and ``_``-separated parts become subscripts (joined by commas, so
    ``h1_0`` and ``h10`` differ), Greek names become letters, multi-letter names are
    upright. ``accent`` (e.g. ``"mathring"``) decorates the base letter only; ``sub`` is
    appended to the subscripts (``x_{\alpha}``). Names that are not identifiers are
    printed as escaped text.

    Examples
    --------
    >>> latex_name("h1_0"), latex_name("xi_0"), latex_name("W1"), latex_name("vx")
    ('h_{1,0}', '\\xi_{0}', 'W_{1}', '\\mathrm{vx}')
    >>> latex_name("K12", accent="mathring"), latex_name("h1", sub=r"\alpha")
    ('\\mathring{K}_{12}', 'h_{1,\\alpha}')

    A name indexed by brackets gets the indices as subscripts, and a name that is a
    number (a constant named by its value) prints as the number:

    >>> latex_name("x[0,1]"), latex_name("x[2,0]", sub=r"\alpha"), latex_name("-0.5")
    ('x_{[0,1]}', 'x_{[2,0],\\alpha}', '\\left(-0.5\\right)')
    """
    if _NUMBER_NAME.match(name):  # a constant named by its value (nn.train's data)
        tex = _fmt(float(name))
        return rf"\left({tex}\right)" if tex.startswith("-") else tex
    indexed = _INDEXED_NAME.match(name)
    if indexed:  # x[t,i] (a name recorded per step and input) -> x_{[t,i]}
        idx = f"[{indexed.group('idx')}]"
        inner = indexed.group("base") + indexed.group("rest")
        more = idx if sub is None else f"{idx},{sub}"
        return latex_name(inner, accent=accent, sub=more)
    if not name.isascii():
        words = [c if c.isascii() else _greek_word(c) for c in name]
        if all(words):
            name = "".join(words)  # θ1 -> theta1 -> \theta_{1}
    subs: list[str] = []
    if _SIMPLE_NAME.match(name):
        base, _sups, parts = split_super_sub(name)
        base_tex = _translate(base)
        if base_tex == base and len(base) > 1:
            base_tex = rf"\mathrm{{{base}}}"
        subs = [_translate(s) for s in parts]
    else:
        base_tex = rf"\text{{{escape_text(name)}}}"
    if accent:
        base_tex = rf"\{accent}{{{base_tex}}}"
    if sub:
        subs.append(sub)
    return base_tex + (f"_{{{','.join(subs)}}}" if subs else "")


# ---------------------------------------------------------------------------------------
# numbers and layout helpers


def _fmt(x: float, digits: int = 10) -> str:
    """A float in LaTeX: integers without ``.0``, exponents as ``\\cdot 10^{k}``."""
    x = float(x)
    if not math.isfinite(x):
        return {math.inf: r"\infty", -math.inf: r"-\infty"}.get(x, r"\mathrm{NaN}")
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return rf"{mant} \cdot 10^{{{int(exp)}}}"
    return s


def _fmt_pm(value: float, err: float, digits: int = 10) -> str:
    """``value \\pm err`` with the value rounded to the error's precision."""
    if not err or not math.isfinite(err):
        return _fmt(value, digits)
    decimals = max(0, 1 - math.floor(math.log10(abs(err))))
    v = f"{value:.{decimals}f}"
    if len(v.lstrip("-").replace(".", "").lstrip("0")) > digits:
        v = _fmt(value, digits)
    return rf"{v} \pm {_fmt(err, 2)}"


# commands that only wrap their argument (no width of their own) and one-glyph symbols
_CMD_WRAPPERS = re.compile(
    r"\\(left|right|bigl|bigr|Bigl|Bigr|big|Big|mathrm|mathbb|mathcal|operatorname|hat|dot|"
    r"mathring|frac|partial|cdot|pm|sim|top)(?![A-Za-z])"
)


def _visible(tex: str) -> float:
    """Rough printed width of a LaTeX math snippet, in characters (for line breaking)."""
    s = re.sub(r"\\(sum|quad)(?![A-Za-z])", "xx", tex)
    s = re.sub(r"\\qquad(?![A-Za-z])", "xxxx", s)
    s = re.sub(r"\\text\{([^{}]*)\}", lambda m: "x" * int(len(m.group(1)) * 0.8 + 1), s)
    s = _CMD_WRAPPERS.sub(
        lambda m: "x" if m.group(1) in ("partial", "cdot", "pm", "sim", "top") else "", s
    )
    s = re.sub(r"\\[A-Za-z]+", "x", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    # sub/superscripts are printed small: count them at 70 %
    small = sum(len(m.group(1)) for m in re.finditer(r"[_^]\{([^{}]*)\}", s))
    s = re.sub(r"[{}^_&\s]", "", s)
    return len(s) - 0.3 * small


_ALPHA = r"\alpha"


class Coordinate(sympy.Symbol):
    r"""The ``α``-th coordinate of a vector, printed ``x_{\alpha}`` (used in Moments)."""


class ColCoordinate(sympy.Symbol):
    r"""The ``β``-th coordinate of a vector, printed ``x_{\beta}`` (an OuterNonlin's cols)."""


_BETA = r"\beta"


# ---------------------------------------------------------------------------------------
# the program printer


class ProgramLatexPrinter(LatexPrinter):
    r"""Prints programs, instructions and Z-calculus expressions in the papers' notation.

    Settings (besides :class:`~sympy.printing.latex.LatexPrinter`'s): ``env`` (default
    ``"align*"``; ``"aligned"`` inside ``$$…$$``), ``digits`` (significant digits of
    numbers, default 10) and ``width`` (target width of a row in characters, default 64;
    longer sums and chains of equalities continue on further rows).

    Parameters
    ----------
    settings : dict, optional
    derivation : Derivation, optional
        Not needed (kept for compatibility): the ``\hat Z``/``\dot Z`` and
        ZDot-coefficient symbols carry their variables.

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> h = p.matrix("W1").matmul(p.vector("xi_0"), name="h1_0")
    >>> ProgramLatexPrinter().doprint(p.definition(h))
    'h_{1,0} &= W_{1} \\xi_{0}'
    """

    # The Z symbols carry a ``_latex`` method of their own (raw names); this printer
    # dispatches on ``_print_<Class>`` instead, so that names print as variables.
    printmethod = "_tensorprog_latex"
    _default_settings: dict[str, Any] = {
        **LatexPrinter._default_settings,
        "env": "align*",
        "digits": 10,
        "width": 64,
    }

    def __init__(self, settings: dict[str, Any] | None = None, *, derivation: Any = None) -> None:
        super().__init__(settings)

    # -- names and numbers ------------------------------------------------------------
    def _print_Symbol(self, expr: sympy.Symbol, style: str = "plain") -> str:
        return latex_name(expr.name)

    def _print_Coordinate(self, expr: Coordinate) -> str:
        return latex_name(expr.name, sub=_ALPHA)

    def _print_ColCoordinate(self, expr: ColCoordinate) -> str:
        return latex_name(expr.name, sub=_BETA)

    def _print_Float(self, expr: sympy.Float) -> str:
        return self._num(float(expr))

    def _num(self, x: float) -> str:
        return _fmt(x, self._settings["digits"])

    def _print_Function(self, expr: Any, exp: str | None = None) -> str:
        fn = getattr(type(expr), "nonlinearity", None)
        if fn is None:
            return super()._print_Function(expr, exp)
        inner = ", ".join(self._print(a) for a in expr.args)
        tex = call_latex(fn, inner)
        return rf"{tex}^{{{exp}}}" if exp is not None else tex

    def _print_Expectation(self, expr: Any, exp: str | None = None) -> str:
        tex = rf"\mathbb{{E}}\left[{self._print(expr.args[0])}\right]"
        return rf"{tex}^{{{exp}}}" if exp is not None else tex

    # -- Z-calculus symbols [TP4 Def 7.3] ---------------------------------------------
    def _matrix(self, W: Var | str, transpose: bool) -> str:
        tex = latex_name(W if isinstance(W, str) else W.name)
        return tex + (r"^{\top}" if transpose else "")

    def _hat_label(self, expr: ZHat | ZDot) -> str:
        """``W^{\\top} x`` for the hat/dot symbol of a MatMul (``\\,(h)`` added for a
        second MatMul of the same matrix and argument, ``h`` its output)."""
        tex = f"{self._matrix(expr.matrix, expr.transpose)} {latex_name(expr.arg)}"
        return tex + (rf" \,({latex_name(expr.out)})" if expr.out else "")

    def _print_ZSym(self, expr: ZSym) -> str:
        return rf"Z^{{{latex_name(expr.var)}}}"

    def _print_ZHat(self, expr: ZHat) -> str:
        return rf"\hat{{Z}}^{{{self._hat_label(expr)}}}"

    def _print_ZDot(self, expr: ZDot) -> str:
        return rf"\dot{{Z}}^{{{self._hat_label(expr)}}}"

    def _print_Theta(self, expr: Theta) -> str:
        return latex_name(expr.var, accent="mathring")

    def _print_CopyMoment(self, expr: CopyMoment) -> str:
        r"""``\mathbb{E}[m(Z^{x'})]``: a moment of an OuterNonlin's cols."""
        return rf"\mathbb{{E}}\left[{self._print(expr.expr)}\right]"

    def _print_ZCopy(self, expr: ZCopy) -> str:
        r"""``Z^{x\,(1)}``: the iid copy of ``Z^x`` [TP4b Def 2.6.5]."""
        return rf"Z^{{{latex_name(expr.var)}\,(1)}}"

    def _print_CopyExpectation(self, expr: CopyExpectation, exp: str | None = None) -> str:
        r"""``\mathbb{E}^{(1)}[…]``: the expectation over the iid copy only."""
        tex = rf"\mathbb{{E}}^{{(1)}}\left[{self._print(expr.args[0])}\right]"
        return rf"\left({tex}\right)^{{{exp}}}" if exp is not None else tex

    def _print_DotCoef(self, expr: DotCoef) -> str:
        r"""``\mathbb{E}[\partial Z^{x}/\partial \hat Z^{W^\top y}]``."""
        return (
            rf"\mathbb{{E}}\bigl[\partial Z^{{{latex_name(expr.x)}}}/\partial "
            rf"{self._print(expr.hat)}\bigr]"
        )

    # -- layout --------------------------------------------------------------------------
    def _rows(self, lhs: str, *segments: Sequence[str]) -> list[str]:
        r"""Align rows for ``lhs`` followed by chains of chunks.

        Each segment is a list of chunks whose first one starts with its relation
        (``= …``, ``\sim …``, ``\approx …``). Everything goes on one row if it fits the
        target width; otherwise each segment starts a row of its own (``& = …``) and
        chunks that do not fit continue on indented rows (``& \quad + …``).
        """
        width = self._settings["width"]
        segments = tuple(s for s in segments if s)
        flat = " ".join(c for s in segments for c in s)
        if _visible(lhs) + _visible(flat) <= width or len(segments) <= 1 and not segments[0][1:]:
            return [f"{lhs} &{flat}".lstrip()]
        rows: list[str] = []
        for k, seg in enumerate(segments):
            prefix = f"{lhs} &".lstrip() if k == 0 else "&"
            cur: list[str] = []
            used = _visible(lhs) if k == 0 else 0.0
            for ch in seg:
                w = _visible(ch)
                if cur and used + w > width:
                    rows.append(prefix + " ".join(cur))
                    prefix, cur, used = r"&\quad ", [], _visible(lhs) + 3
                cur.append(ch)
                used += w
            rows.append(prefix + " ".join(cur))
        return rows

    def _terms(self, expr: sympy.Expr) -> list[str]:
        """The printed terms of a sum, each with its sign (``+ a``, ``- b``) but the first."""
        if not isinstance(expr, sympy.Add):
            return [self._print(expr)]
        out = []
        for i, term in enumerate(self._as_ordered_terms(expr, order=None)):
            s = self._print(term)
            if s.startswith("-"):
                out.append(f"- {s[1:].lstrip()}" if i else s)
            else:
                out.append(f"+ {s}" if i else s)
        return out

    def _relation(self, rel: str, expr: sympy.Expr) -> list[str]:
        """``rel expr`` as chunks, breakable between the terms of a sum."""
        terms = self._terms(expr)
        terms[0] = f"{rel} {terms[0]}"
        return terms

    def _environment(self, rows: Sequence[str]) -> str:
        env = self._settings["env"]
        body = " \\\\\n".join(rows) if rows else r"&\text{(empty program)}"
        return f"\\begin{{{env}}}\n{body}\n\\end{{{env}}}"

    @staticmethod
    def _group(rows: Sequence[str]) -> str:
        return " \\\\\n".join(rows)

    # -- instructions as program lines [TP4 §7 Def 7.1] ----------------------------------
    def _print_Program(self, p: Any) -> str:
        return self._environment(self._sectioned(p))

    def _sectioned(self, p: Any) -> list[str]:
        """The rows of every instruction of ``p``, a heading row before each section
        (:meth:`tensorprog.Program.section`)."""
        rows = [self._print(instr) for instr in p.instructions]
        for title, start, _stop in reversed(p.sections):
            rows.insert(start, rf"&\textbf{{{escape_text(title)}}}")
        return rows

    def _print_InitMatrix(self, instr: InitMatrix) -> str:
        W = latex_name(instr.out.name, sub=r"\alpha\beta")
        return self._group(
            self._rows(W, [rf"\sim \mathcal{{N}}\left(0, {self._num(instr.var)}/n\right)"])
        )

    def _law(self, instr: InitVector, covs: list[str]) -> list[str]:
        """``\\sim 𝒩(μ, σ²), \\quad Cov(…) = c, …`` as breakable chunks."""
        law = rf"\sim \mathcal{{N}}\left({self._num(instr.mean)}, {self._num(instr.var)}\right)"
        chunks = [law] + [
            rf"\mathrm{{Cov}}\bigl({a}, {b}\bigr) = {self._num(c)}" for a, b, c in covs
        ]
        for i in range(len(chunks) - 1):
            chunks[i] += ","
        if covs:
            chunks[1] = r"\quad " + chunks[1]
        return chunks

    def _print_InitVector(self, instr: InitVector) -> str:
        x = latex_name(instr.out.name, sub=_ALPHA)
        covs = [(x, latex_name(v.name, sub=_ALPHA), c) for v, c in instr.cov]
        return self._group(self._rows(x, self._law(instr, covs)))

    def _print_InitScalar(self, instr: InitScalar) -> str:
        return self._group(self._rows(latex_name(instr.out.name), self._relation("=", instr.value)))

    def _print_MatMul(self, instr: MatMul) -> str:
        rhs = f"{self._matrix(instr.matrix, instr.transpose)} {latex_name(instr.arg.name)}"
        return f"{latex_name(instr.out.name)} &= {rhs}"

    def _apply(self, instr: Nonlin | Moment | ScalarFn, arg: type = sympy.Symbol) -> sympy.Expr:
        args = getattr(instr, "args", ())
        return instr.fn.apply(
            *[arg(v.name) for v in args], *[sympy.Symbol(v.name) for v in instr.params]
        )

    def _print_Nonlin(self, instr: Nonlin) -> str:
        return self._group(
            self._rows(latex_name(instr.out.name), self._relation("=", self._apply(instr)))
        )

    def _print_ScalarFn(self, instr: ScalarFn) -> str:
        return self._print_Nonlin(instr)  # type: ignore[arg-type]

    def _print_OuterNonlin(self, instr: OuterNonlin) -> str:
        r"""``y_{\alpha} = \frac1n \sum_{\beta=1}^n \psi(x_{\alpha}; x'_{\beta}; θ)`` [TP4b Def 2.6.1]."""
        body = instr.fn.apply(  # type: ignore[union-attr]
            *[Coordinate(v.name) for v in instr.rows],
            *[ColCoordinate(v.name) for v in instr.cols],
            *[sympy.Symbol(v.name) for v in instr.params],
        )
        mean = r"= \frac{1}{n} \sum_{\beta=1}^{n} "
        return self._group(
            self._rows(latex_name(instr.out.name, sub=_ALPHA), _bracketed(mean, self._terms(body)))
        )

    def _print_Moment(self, instr: Moment) -> str:
        mean = r"= \frac{1}{n} \sum_{\alpha=1}^{n} "
        return self._group(
            self._rows(
                latex_name(instr.out.name),
                _bracketed(mean, self._terms(self._apply(instr, Coordinate))),
            )
        )


def _bracketed(
    opening: str, terms: list[str], left: str = r"\bigl(", right: str = r"\bigr)"
) -> list[str]:
    """``opening (t1 + t2 …)`` as chunks (brackets only around a sum)."""
    if len(terms) == 1:
        return [opening + terms[0]]
    return [opening + left + terms[0], *terms[1:-1], terms[-1] + right]


# ---------------------------------------------------------------------------------------
# the derivation printer


class DerivationLatexPrinter(ProgramLatexPrinter):
    r"""Prints a :class:`~tensorprog.engine.Limit` as the Master Theorem applied rule by rule.

    Per instruction [TP4 Def 7.3] (docs/concepts/master-theorem.md), with the rule named in the right column:

    * setup / ZInit: ``W_{\alpha\beta} \sim \mathcal{N}(0, \sigma_W^2/n)``, the law of the
      initial vectors' ``Z``, the limits of initial scalars;
    * ZNonlin: ``Z^{x} = \phi(Z^{h}; \mathring\theta)``;
    * ZMatMul ``Z^{Wx} = \hat Z^{Wx} + \dot Z^{Wx}``, then ZHat: the variance of
      ``\hat Z^{Wx}`` and its covariances with the earlier hats of its family,
      ``\sigma_W^2 \mathbb{E}[Z^x Z^y]``, with values (covariances that no limit needs
      are omitted), then ZDot [TP4 Eq. (31)]: every candidate term
      ``\sigma_W^2 \mathbb{E}[\partial Z^x/\partial \hat Z^{W^\top y}] Z^{y}``, then the
      surviving terms with their coefficients (``= 0`` when none survives, e.g. in the
      first backward pass);
    * ZMoment: ``\mathring\theta = \mathbb{E}[\phi(Z^{x})] = value``, with ``\pm`` error
      and the method when not exact.
    """

    def __init__(self, limit: Any, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.limit = limit

    @staticmethod
    def _tagged(rows: list[str], rule: str) -> list[str]:
        return [rows[0] + rf" && \text{{{rule}}}", *rows[1:]]

    @staticmethod
    def _Z(v: Var) -> str:
        return rf"Z^{{{latex_name(v.name)}}}"

    @staticmethod
    def _sigma2(W: Var) -> str:
        return rf"\sigma_{{{latex_name(W.name)}}}^{{2}}"

    def _value(self, v: Var) -> str:
        """``= value`` (exact) or ``\\approx value \\pm err\\ (\\text{method})``."""
        lim = self.limit
        m, val = lim.method(v.name), lim[v.name]
        if m == "exact":
            return f"= {self._num(val)}"
        pm = _fmt_pm(val, lim.error(v.name), self._settings["digits"])
        return rf"\approx {pm}\ (\text{{{_METHOD_TEXT.get(m, m)}}})"

    def _print_Limit(self, lim: Any) -> str:
        return self._environment(self._sectioned(lim.program))

    def _print_InitMatrix(self, instr: InitMatrix) -> str:
        W = instr.out
        rows = self._rows(
            latex_name(W.name, sub=r"\alpha\beta"),
            [
                rf"\sim \mathcal{{N}}\left(0, {self._sigma2(W)}/n\right),",
                rf"\quad {self._sigma2(W)} = {self._num(instr.var)}",
            ],
        )
        return self._group(self._tagged(rows, "setup"))

    def _print_InitVector(self, instr: InitVector) -> str:
        x = instr.out
        covs = [(self._Z(x), self._Z(v), c) for v, c in instr.cov]
        return self._group(self._tagged(self._rows(self._Z(x), self._law(instr, covs)), "ZInit"))

    def _print_InitScalar(self, instr: InitScalar) -> str:
        val = instr.value
        segments: list[list[str]] = []
        if WIDTH in val.free_symbols:
            segments.append([rf"= \lim_{{n\to\infty}} {self.parenthesize(val, PRECEDENCE['Mul'])}"])
        elif not val.is_Number:
            segments.append(self._relation("=", val))
        segments.append([self._value(instr.out)])
        rows = self._rows(latex_name(instr.out.name, accent="mathring"), *segments)
        return self._group(self._tagged(rows, "ZInit"))

    def _symbolic(self, instr: Nonlin | Moment | ScalarFn) -> sympy.Expr:
        consts = [Theta(p.name) for p in instr.params]
        return instr.fn.apply(*[ZSym(a.name) for a in getattr(instr, "args", ())], *consts)

    def _print_Nonlin(self, instr: Nonlin) -> str:
        rows = self._rows(self._Z(instr.out), self._relation("=", self._symbolic(instr)))
        return self._group(self._tagged(rows, "ZNonlin"))

    def _print_OuterNonlin(self, instr: OuterNonlin) -> str:
        r"""ZOuterNonlin [TP4b Def 2.6.5]: ``Z^y = \mathbb{E}^{(1)} \psi(Z^{x}; Z^{x'(1)};
        \mathring\theta)``, then the copy: ``(Z^{x'(1)}, …)`` iid as ``(Z^{x'}, …)``."""
        copies = [ZCopy(v.name) for v in instr.cols]
        originals = [ZSym(v.name) for v in instr.cols]
        expr = CopyExpectation(
            instr.fn.apply(  # type: ignore[union-attr]
                *[ZSym(v.name) for v in instr.rows],
                *copies,
                *[Theta(v.name) for v in instr.params],
            )
        )

        def tup(xs: list[Any]) -> str:
            inner = ", ".join(self._print(x) for x in xs)
            return rf"\bigl({inner}\bigr)" if len(xs) > 1 else inner

        segments = [self._relation("=", expr)]
        der, plan = self.limit.derivation, self.limit.plan
        moments = der.copy_moments.get(instr.out)
        if moments is not None:  # ψ polynomial in the cols: through their moments
            G = der.nodes[instr.out].fn
            segments.append(
                self._relation(
                    "=",
                    G.apply(
                        *[ZSym(v.name) for v in instr.rows],
                        *[Theta(v.name) for v in instr.params],
                        *[c.symbol for c in moments],
                    ),
                )
            )
        rows = self._tagged(self._rows(self._Z(instr.out), *segments), "ZOuterNonlin")
        rows += self._rows(
            "", [rf"\quad {tup(copies)} \overset{{\text{{iid}}}}{{\sim}} {tup(originals)}"]
        )
        for c in moments or ():
            rid = plan.const_req[c.cid]
            value = (
                f"= {self._num(float(plan.values[rid]))}"
                if plan.deterministic[rid]
                else rf"\quad(\text{{{_METHOD_TEXT['montecarlo']}}})"
            )
            rows += self._rows("", [rf"\quad {self._print(c.symbol)}", value])
        return self._group(rows)

    def _print_ScalarFn(self, instr: ScalarFn) -> str:
        rows = self._rows(
            latex_name(instr.out.name, accent="mathring"),
            self._relation("=", self._symbolic(instr)),
            [self._value(instr.out)],
        )
        return self._group(self._tagged(rows, "ZNonlin"))

    def _print_Moment(self, instr: Moment) -> str:
        terms = self._terms(self._symbolic(instr))
        if len(terms) == 1:
            chain = [rf"= \mathbb{{E}}\left[{terms[0]}\right]"]
        else:
            chain = _bracketed(r"= \mathbb{E}", terms, r"\bigl[", r"\bigr]")
        rows = self._rows(
            latex_name(instr.out.name, accent="mathring"), chain, [self._value(instr.out)]
        )
        return self._group(self._tagged(rows, "ZMoment"))

    def _print_MatMul(self, instr: MatMul) -> str:
        hat = self.limit.Zhat(instr.out.name)
        rows = self._tagged(
            self._rows(self._Z(instr.out), [f"= {self._print(hat)} + {self._print(hat.dot())}"]),
            "ZMatMul",
        )
        rows += self._hat_rows(instr, hat)
        rows += self._dot_rows(instr, hat)
        return self._group(rows)

    def _hat_rows(self, instr: MatMul, hat: Any) -> list[str]:
        """ZHat: ``Var`` of the new hat, then its covariances with earlier hats of its family."""
        out: list[str] = []
        for cov in self.limit.hat_covariances(instr.out.name):
            chain = [
                rf"= {self._sigma2(instr.matrix)}\,\mathbb{{E}}[{self._Z(instr.arg)} {self._Z(cov.y)}]"
            ]
            if cov.value is not None:
                chain.append(f"= {self._num(cov.value)}")
            elif cov.method is not None:
                chain.append(rf"\quad(\text{{{_METHOD_TEXT[cov.method]}}})")
            if cov.hat is hat:
                lhs = rf"\mathrm{{Var}}\,{self._print(hat)}"
                out += self._tagged(self._rows(lhs, chain), "ZHat")
            else:
                covariance = (
                    rf"\mathrm{{Cov}}\bigl({self._print(hat)}, {self._print(cov.hat)}\bigr)"
                )
                out += self._rows("", [r"\quad " + covariance, *chain])
        return out

    def _dot_rows(self, instr: MatMul, hat: Any) -> list[str]:
        """ZDot [TP4 Eq. (31)]: the candidate terms, then the surviving ones with their values."""
        lhs = self._print(hat.dot())
        terms = self.limit.zdot_terms(instr.out.name)
        if not terms:
            return self._tagged(self._rows(lhs, ["= 0"]), "ZDot")
        cands = [f"{self._print(t.coefficient)} {self._Z(t.y)}" for t in terms]
        symbolic = _bracketed(
            rf"= {self._sigma2(instr.matrix)}\,", [cands[0]] + [f"+ {t}" for t in cands[1:]]
        )
        return self._tagged(self._rows(lhs, symbolic, self._dot_values(terms)), "ZDot")

    def _dot_values(self, terms: list[Any]) -> list[str]:
        """``= c_1 Z^{y^1} + …`` with ``c_i = \\sigma_W^2 \\mathbb{E}[\\partial Z^x/\\partial \\hat Z^{W^\\top y^i}]``."""
        out: list[str] = []
        approx = False
        for t in terms:
            if t.vanishes:
                continue
            approx |= t.method != "exact"
            s = _fmt_pm(t.value, t.stderr, self._settings["digits"])
            neg = s.startswith("-") and not t.stderr
            s = s[1:] if neg else s
            s = rf"\left({s}\right) " if t.stderr else ("" if s == "1" else s + " ")
            sign = ("- " if neg else "+ ") if out else ("-" if neg else "")
            out.append(f"{sign}{s}{self._Z(t.y)}")
        if not out:
            return ["= 0"]
        out[0] = (r"\approx " if approx else "= ") + out[0]
        return out


# ---------------------------------------------------------------------------------------
# entry points


def latex(obj: Any, *, derivation: Any = None, **settings: Any) -> str:
    r"""LaTeX of a program, a limit, an instruction or a Z expression.

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> A, v = p.matrix("A", var=2.0), p.vector("v")
    >>> x = A.T.matmul(A.matmul(v, name="y"), name="x")
    >>> lim = p.limit()
    >>> latex(lim.Z(x))
    '\\dot{Z}^{A^{\\top} y} + \\hat{Z}^{A^{\\top} y}'

    ``derivation`` is accepted for compatibility and not needed: the Z symbols carry
    their variables.
    """
    if isinstance(obj, Limit):
        return DerivationLatexPrinter(obj, settings).doprint(obj)
    return ProgramLatexPrinter(settings, derivation=derivation).doprint(obj)


def program_latex(program: Any, document: bool = False, env: str = "align*") -> str:
    """The program as LaTeX rows (``document=True``: a standalone article)."""
    body = ProgramLatexPrinter({"env": env}).doprint(program)
    if document:
        return _standalone([(f"Tensor Program {_texttt(program.name)}", body)])
    return body


def limit_latex(limit: Any, document: bool = False, env: str = "align*") -> str:
    """The Master Theorem derivation as LaTeX (``document=True``: program and derivation)."""
    body = DerivationLatexPrinter(limit, {"env": env}).doprint(limit)
    if document:
        return _standalone(_limit_sections(limit))
    return body


def _texttt(name: str) -> str:
    return rf"\texttt{{{escape_text(name)}}}"


def _limit_sections(limit: Any) -> list[tuple[str, str]]:
    p = limit.program
    method = limit.method_requested
    how = "" if method in (None, "auto") else f" (method={method})"
    return [
        (f"Tensor Program {_texttt(p.name)}", ProgramLatexPrinter().doprint(p)),
        (
            f"Infinite-width limit of {_texttt(p.name)}{escape_text(how)}",
            DerivationLatexPrinter(limit).doprint(limit),
        ),
    ]


_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage{amsmath}
\usepackage{amssymb}
\setlength{\textwidth}{6.5in}
\setlength{\oddsidemargin}{0in}
\setlength{\evensidemargin}{0in}
\setlength{\textheight}{9in}
\setlength{\topmargin}{-0.5in}
\allowdisplaybreaks
"""

_NOTE = (
    r"Notation of Greg Yang's Tensor Programs: $Z^{x}$ is the limit coordinate "
    r"distribution of a vector $x$, $\hat{Z}^{Wx}$ and $\dot{Z}^{Wx}$ the Gaussian and "
    r"correction parts of a MatMul, $\mathring{\theta}$ the limit of a scalar $\theta$ "
    r"(Master Theorem, TP4 Def.~7.3)."
)


def document(sections: Sequence[tuple[str, str]]) -> str:
    """A standalone article (amsmath and amssymb only) with one ``section*`` per item."""
    parts = [_PREAMBLE, "\\begin{document}\n", "\\noindent " + _NOTE + "\n"]
    for title, body in sections:
        parts.append(f"\n\\section*{{{title}}}\n{body}\n")
    parts.append("\n\\end{document}\n")
    return "".join(parts)


_standalone = document  # for functions whose ``document`` argument shadows it


def program_repr_latex(program: Any) -> str:
    """``$$…$$`` math for notebooks (``aligned`` environment)."""
    return "$$" + program_latex(program, env="aligned") + "$$"


def limit_repr_latex(limit: Any) -> str:
    """``$$…$$`` math for notebooks (``aligned`` environment)."""
    return "$$" + limit_latex(limit, env="aligned") + "$$"


def limit_html(limit: Any) -> str:
    """An HTML table of every scalar limit: name, value, ± error, method
    (:meth:`tensorprog.engine.Limit.tabulate` rendered by :mod:`tensorprog.core.tables`)."""
    return limit.tabulate().html()


# p.latex(), lim.latex(), and their notebook displays (tensorprog.core.hooks)
hooks.latex.register(Program, program_latex)
hooks.latex.register(Limit, limit_latex)
hooks.repr_latex.register(Program, program_repr_latex)
hooks.repr_latex.register(Limit, limit_repr_latex)
hooks.html.register(Limit, limit_html)


# ---------------------------------------------------------------------------------------
# command line: python -m tensorprog latex FILE.py


CLI_HELP = """\
Export the Tensor Program(s) defined in a Python file as a standalone LaTeX document:
each program in the papers' notation, followed by its Master Theorem derivation.

Which programs: if the file defines a function build(), its result is used (a
tp.Program or a list/tuple of them); otherwise every module-level tp.Program
instance, in order of definition. The file is run as a script (with
__name__ == "__tensorprog_latex__", so an `if __name__ == "__main__":` block is
skipped).

Without -o the document goes to standard output; with --pdf (which needs a file,
FILE.tex in the current directory by default) pdflatex is run on it in a temporary
folder, and only OUT.pdf is written beside OUT.tex (no .aux or .log files).
"""


def add_cli_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``latex`` subcommand on an argparse sub-parsers object."""
    ap = sub.add_parser(
        "latex",
        help="export the programs of a Python file as a LaTeX document",
        description=CLI_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "file", metavar="FILE.py", help="Python file defining build() or tp.Program objects"
    )
    ap.add_argument(
        "-o",
        "--output",
        metavar="OUT.tex",
        default=None,
        help="where to write the document (default: standard output, or FILE.tex with --pdf)",
    )
    ap.add_argument("--pdf", action="store_true", help="also run pdflatex to produce OUT.pdf")
    ap.add_argument(
        "--method",
        default="auto",
        choices=[m.value for m in REQUESTABLE],
        help="method of the limits (default: auto)",
    )
    ap.add_argument(
        "--no-limit", action="store_true", help="export the programs only, no derivation"
    )
    ap.set_defaults(func=run_cli)
    return ap


def load_programs(path: str | Path) -> list[Any]:
    """The programs a Python file defines (its ``build()`` result, else module-level Programs)."""
    path = Path(path)
    if not path.is_file():
        raise ProgramValueError(f"{path}: no such file")
    # Run it like a script (its folder importable); what it prints goes to stderr so that
    # it cannot mix with a document written to stdout.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            ns = runpy.run_path(str(path), run_name="__tensorprog_latex__")
    finally:
        sys.path.pop(0)
    build = ns.get("build")
    if callable(build):
        res = build()
        progs = (
            [res]
            if isinstance(res, Program)
            else list(res)
            if isinstance(res, (list, tuple))
            else None
        )
        if progs is None or not progs or not all(isinstance(p, Program) for p in progs):
            raise ProgramTypeError(
                f"{path}: build() must return a tp.Program or a non-empty list of them, got {res!r}"
            )
        return progs
    progs = []
    for v in ns.values():
        if isinstance(v, Program) and all(v is not q for q in progs):
            progs.append(v)
    if not progs:
        raise ProgramValueError(
            f"{path}: defines no build() function and no module-level tp.Program; "
            f"see `tensorprog latex --help`"
        )
    return progs


def compile_pdf(tex_path: str | Path) -> Path:
    """Run pdflatex on ``tex_path`` and write the PDF beside it; the PDF's path, or a
    clear error.

    pdflatex runs in the file's folder (so relative ``\\input`` paths resolve) with a
    temporary ``-output-directory``: its ``.aux`` and ``.log`` files are deleted with
    that folder, and only ``FILE.pdf`` is copied next to ``FILE.tex`` (on failure, the
    error shows the log's last lines and nothing is left behind).
    """
    import tempfile

    tex_path = Path(tex_path).resolve()
    exe = shutil.which("pdflatex")
    if exe is None:
        raise ResourceError(
            f"pdflatex was not found on PATH; install TeX Live "
            f"(Debian/Ubuntu: {PDFLATEX_INSTALL}) or drop --pdf"
        )
    pdf = tex_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="tensorprog-latex-") as tmp:
        proc = subprocess.run(
            [
                exe,
                "-interaction=nonstopmode",
                "-halt-on-error",
                f"-output-directory={tmp}",
                tex_path.name,
            ],
            cwd=tex_path.parent,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        built = Path(tmp) / pdf.name
        if proc.returncode != 0 or not built.exists():
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            raise ResourceError(f"pdflatex failed on {tex_path} (exit {proc.returncode}):\n{tail}")
        shutil.copyfile(built, pdf)
    return pdf


def run_cli(args: argparse.Namespace) -> int:
    """The ``latex`` subcommand."""
    try:
        progs = load_programs(args.file)
        sections: list[tuple[str, str]] = []
        for p in progs:
            if args.no_limit:
                sections.append(
                    (f"Tensor Program {_texttt(p.name)}", ProgramLatexPrinter().doprint(p))
                )
            else:
                sections += _limit_sections(p.limit(method=args.method))
        doc = document(sections)
        out = args.output
        if out is None and args.pdf:
            out = Path(args.file).with_suffix(".tex").name
        if out is None or out == "-":
            sys.stdout.write(doc)
            return 0
        Path(out).write_text(doc, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
        if args.pdf:
            pdf = compile_pdf(out)
            print(f"wrote {pdf}", file=sys.stderr)
        return 0
    except TensorProgramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
