"""Methods of lower layers whose implementations live in higher layers.

tensorprog's layers import downward only (``docs/concepts/architecture.md``;
``tests/test_layers.py`` checks it): the DSL (:mod:`tensorprog.dsl.program`) never imports
the engine or the finite-width simulator, and the engine's
:class:`~tensorprog.engine.limit.Limit` never imports the LaTeX printer or the file
format. For convenience, their objects still have the methods ``p.simulate(n)``,
``p.limit()``, ``p.latex()``, ``p.save(path)``, ``lim.latex()``, ``lim.save(path)``,
``lim._repr_latex_()``, ... Each such method calls one of the generic functions below
(:func:`functools.singledispatch`, keyed by the class of its first argument), and the
module that implements it registers its implementation there, next to the
implementation: the lower layer owns the table, the higher layer fills it (as
PyTensor's backends register per-op functions with ``singledispatch``, and as JAX's
interpreters own rule tables that the primitives' modules fill)::

    # tensorprog/latex.py
    hooks.latex.register(Program, program_latex)
    hooks.latex.register(Limit, limit_latex)

``import tensorprog`` (which runs before any of its submodules is imported) imports
every module that registers, so every hook is filled before a program exists.
"""

from __future__ import annotations

import functools
from typing import Any, NoReturn

from .errors import ProgramTypeError

__all__ = ["simulate", "limit", "latex", "repr_latex", "html", "save", "dumps", "loads"]


def _unregistered(hook: Any, obj: Any) -> NoReturn:
    done = ", ".join(c.__name__ for c in hook.registry if c is not object) or "nothing"
    raise ProgramTypeError(
        f"{hook.__name__}: no implementation for a {type(obj).__name__} (registered for: "
        f"{done}); the implementing modules register when `import tensorprog` runs"
    )


@functools.singledispatch
def simulate(program: Any, n: int, **kwargs: Any) -> Any:
    """``program.simulate(n, …)``; registered by :mod:`tensorprog.simulate` for Program."""
    _unregistered(simulate, program)


@functools.singledispatch
def limit(program: Any, **kwargs: Any) -> Any:
    """``program.limit(…)``; registered by :mod:`tensorprog.engine` for Program."""
    _unregistered(limit, program)


@functools.singledispatch
def latex(obj: Any, document: bool = False) -> str:
    """``obj.latex(document)``; registered by :mod:`tensorprog.latex` for Program and Limit."""
    _unregistered(latex, obj)


@functools.singledispatch
def repr_latex(obj: Any) -> str:
    """``obj._repr_latex_()`` (notebooks); registered by :mod:`tensorprog.latex`."""
    _unregistered(repr_latex, obj)


@functools.singledispatch
def html(obj: Any) -> str:
    """``obj._repr_html_()`` (notebooks); registered by :mod:`tensorprog.latex` for Limit."""
    _unregistered(html, obj)


@functools.singledispatch
def save(obj: Any, path: Any) -> None:
    """``obj.save(path)``; registered by :mod:`tensorprog.io` for Program and Limit."""
    _unregistered(save, obj)


@functools.singledispatch
def dumps(obj: Any) -> str:
    """``tp.io.dumps(obj)`` for lower layers (the engine sends a program to executor
    workers as this text); registered by :mod:`tensorprog.io` for Program."""
    _unregistered(dumps, obj)


@functools.singledispatch
def loads(text: Any, *, source: str = "<string>") -> Any:
    """``tp.io.loads(text)`` for lower layers (an executor's worker reads the program
    back); registered by :mod:`tensorprog.io` for str."""
    _unregistered(loads, text)
