r"""Safe LaTeX for names that come from users or files (a core module: no printer).

A nonlinearity's LaTeX name is printed wherever it is applied -- by the printers of
:mod:`tensorprog.latex`, by ``sympy.latex`` of a ``Z`` expression (the ``_latex``
method of :attr:`tensorprog.Nonlinearity.function`) and in saved files -- so the test
of what may reach LaTeX raw lives below all of them: :func:`is_safe_latex` accepts a
whitelist of macros, :func:`function_latex` falls back to escaped text
(:func:`escape_text`). :mod:`tensorprog.latex` re-exports these names.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SAFE_MACROS", "escape_text", "is_safe_latex", "function_latex"]

_TEXT_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "#": r"\#",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape_text(s: str) -> str:
    """``s`` escaped for LaTeX text mode (non-ASCII characters spelled out as ``U+XXXX``)."""
    out = []
    for ch in s:
        if ch in _TEXT_ESCAPES:
            out.append(_TEXT_ESCAPES[ch])
        elif ord(ch) < 128 and ch.isprintable():
            out.append(ch)
        else:
            out.append(f"U+{ord(ch):04X}")
    return "".join(out)


_GREEK = (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu "
    "xi pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta "
    "Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega"
)
#: Macros a nonlinearity's LaTeX name may use (letters, fonts, accents, operators).
SAFE_MACROS = frozenset(
    (
        _GREEK + " operatorname mathrm mathit mathbf mathsf mathtt mathcal mathbb mathfrak "
        "mathscr boldsymbol text textrm textit textbf textsf texttt textbackslash textasciitilde "
        "textasciicircum sin cos tan cot sec csc sinh cosh tanh coth arcsin arccos arctan exp log "
        "ln lg max min sup inf arg sqrt partial prime nabla ell infty cdot circ ast star dagger "
        "hat tilde bar dot ddot check breve acute grave vec mathring widehat widetilde overline "
        "underline left right big Big bigl bigr Bigl Bigr langle rangle lvert rvert vert quad qquad"
    ).split()
)
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\.|.", re.DOTALL)
_SAFE_SYMBOLS = frozenset(["\\" + c for c in ",;:! {}#$%&_|"])
_UNSAFE_CHARS = frozenset("%#$&\\")


def is_safe_latex(tex: str) -> bool:
    r"""Whether ``tex`` is harmless LaTeX for a function name.

    Safe: at most 500 characters of letters (any script), digits, punctuation and
    symbols, balanced braces, the macros of :data:`SAFE_MACROS` (Greek letters,
    ``\operatorname``, ``\mathrm``, ``\tanh``, accents, ...) and the escapes ``\{``,
    ``\}``, ``\_``, ``\#``, ``\%``, ``\&``, ``\$`` and spacing. Never ``\input``,
    ``\write``, ``\def`` or any other macro, a raw ``%``, ``#``, ``$``, ``&``, ``^^``
    (TeX's character-code escape) or control characters.

    Examples
    --------
    >>> is_safe_latex(r"\operatorname{softplus}"), is_safe_latex(r"\sigma'"), is_safe_latex(r"\zeta")
    (True, True, True)
    >>> is_safe_latex(r"\input{/etc/hostname}"), is_safe_latex("f}^^5cinput{x"), is_safe_latex("a%")
    (False, False, False)
    """
    if not isinstance(tex, str) or len(tex) > 500 or "^^" in tex:
        return False
    depth = 0
    for tok in _LATEX_TOKEN.findall(tex):
        if tok[0] == "\\" and len(tok) > 1:
            if tok[1:].rstrip("*") not in SAFE_MACROS and tok not in _SAFE_SYMBOLS:
                return False
        elif tok in _UNSAFE_CHARS or not (tok.isprintable() or tok == " "):
            return False
        elif tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def function_latex(fn: Any) -> str:
    r"""The LaTeX of a nonlinearity's name: its ``latex_name`` when safe, else its name as text.

    A name from a file or from ``tp.nonlin(..., fn_name=...)`` never reaches LaTeX
    raw: an unsafe one (see :func:`is_safe_latex`) is printed as
    ``\operatorname{\text{…}}`` with every special character escaped.

    Examples
    --------
    >>> import sympy, tensorprog as tp
    >>> x = sympy.Symbol("x", real=True)
    >>> f = tp.Nonlinearity(r"a}\input{/etc/hostname", x**2, [x])
    >>> function_latex(f)
    '\\operatorname{\\text{a\\}\\textbackslash{}input\\{/etc/hostname}}'
    """
    tex = fn.latex_name
    if is_safe_latex(tex):
        return tex
    return rf"\operatorname{{\text{{{escape_text(fn.name)}}}}}"


#: LaTeX names that are macros of one argument: applied as ``\sqrt{x}``, not
#: ``\sqrt\left(x\right)`` (which does not compile: ``\sqrt`` needs a braced argument).
_ARGUMENT_MACROS = frozenset({r"\sqrt"})


def call_latex(fn: Any, inner: str) -> str:
    r"""The LaTeX of ``fn`` applied to arguments already printed as ``inner``.

    Examples
    --------
    >>> import tensorprog as tp
    >>> call_latex(tp.tanh, "x"), call_latex(tp.sqrt, "x")
    ('\\tanh\\left(x\\right)', '\\sqrt{x}')
    """
    name = function_latex(fn)
    if name in _ARGUMENT_MACROS:
        return rf"{name}{{{inner}}}"
    return rf"{name}\left({inner}\right)"
