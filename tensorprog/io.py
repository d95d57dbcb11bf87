"""Saving and loading programs and limits: a versioned, lossless JSON format.

``p.save(path)`` writes a whole :class:`~tensorprog.Program` — its instructions in
order, every name, the initial law, initial scalars (which may depend on ``tp.n``)
and every nonlinearity as the sympy ``srepr`` of its body with its argument and
parameter symbols, name, opacity and LaTeX name. ``tp.load(path)`` rebuilds it: the
loaded program prints the same instructions and has the same limit. Builtin
nonlinearities (and their derivatives, e.g. ``tanh'``) are restored as the builtin
objects, so their registered closed forms still apply.

``lim.save(path)`` writes a :class:`~tensorprog.engine.Limit`'s numbers (values,
standard errors, estimated errors, methods), how they were obtained (method, seed,
samples, ...), the library version, and the program itself; ``tp.load`` returns a
:class:`LoadedLimit`.

File layout (``"version": 1``)::

    {"format": "tensorprog", "version": 1, "kind": "program" | "limit",
     "library_version": "0.1.0",
     "program": {"name": ..., "nonlinearities": [...], "instructions": [...],
                 "aliases": [[alias, name], ...],           # only if Program.aliases
                 "sections": [[start, title], ...]},        # only if Program.sections
     "limit": {...}}                                    # kind "limit" only

A file is data, never code
--------------------------
Loading accepts only a whitelist, and everything else is a
:class:`~tensorprog.FormatError` naming the field by its JSON path
(``program.nonlinearities[0].body``) and saying what is valid:

* **size**: at most ``max_bytes`` (default :data:`MAX_BYTES` = 64 MiB) are read; a
  larger file (or ``/dev/zero``) is refused after reading ``max_bytes + 1`` bytes;
  JSON nests at most :data:`MAX_JSON_DEPTH` levels (files written nest 6) and JSON
  integers have at most :data:`MAX_INT_DIGITS` digits; ``NaN``/``Infinity`` literals
  are refused.
* **expressions** are ``srepr`` text read by a parser that never evaluates code
  (:func:`parse_srepr`: Python's ``ast`` parser, then only the calls below, built one
  by one): the sympy classes :data:`SYMPY_CLASSES` (numbers, ``Symbol``, ``Add``,
  ``Mul``, ``Pow``, elementary functions, ``Piecewise`` and relations), the constants
  :data:`SYMPY_CONSTANTS`, and ``Function('f')`` only where ``f`` is a builtin
  nonlinearity (``Function('relu')`` is :data:`tensorprog.relu`) or a nonlinearity
  declared earlier in the same file, and a valid Python identifier that is not a
  keyword. Integers have at most :data:`MAX_INT_DIGITS` digits, numeric exponents
  (and Dirac-delta orders) are at most :data:`MAX_EXPONENT` in absolute value, no
  rational built while reading exceeds :data:`MAX_NUMBER_BITS` bits (checked
  *before* a power or product is computed), floats are finite float64 numbers, an
  expression has at most :data:`MAX_EXPR_CHARS` characters and :data:`MAX_EXPR_NODES`
  nodes and nests at most :data:`MAX_EXPR_DEPTH` calls.
* **LaTeX names** of nonlinearities must be safe (:func:`tensorprog.latex.is_safe_latex`:
  letters, digits, punctuation and a whitelist of math macros; no ``\\input``,
  ``\\write``, ``#``, ``%``, ``^^``).
* **saved limits**: finite values, finite standard errors ≥ 0, errors ≥ 0 (``inf``
  meaning unknown), methods among :data:`METHODS`.

The writer refuses (before writing anything) a program whose expressions fall outside
the whitelist, so every file :func:`save` writes is one :func:`load` reads.

Examples
--------
>>> import os, tempfile, tensorprog as tp
>>> p = tp.Program("AtAv")
>>> A, v = p.matrix("A", var=2.0), p.vector("v")
>>> k = tp.inner(v, A.T @ (A @ v), name="k")
>>> path = os.path.join(tempfile.mkdtemp(), "atav.json")
>>> p.save(path)
>>> q = tp.load(path)
>>> str(q) == str(p), q.limit()["k"]
(True, 2.0)
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sympy
from sympy.core.assumptions import _assume_defined
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.printing.repr import ReprPrinter

from ._version import __version__
from .core import hooks
from .core.errors import (
    FileAccessError,
    FormatError,
    FormatVersionError,
    NumericalError,
    ProgramTypeError,
    ProgramValueError,
    TensorProgramError,
    UnknownNameError,
)
from .core.ir import (
    INSTRUCTIONS,
    InitMatrix,
    InitScalar,
    InitVector,
    MatMul,
    Moment,
    Nonlin,
    OuterNonlin,
    ScalarFn,
)
from .core.nonlin import BUILTINS, FAMILIES, Nonlinearity
from .core.texnames import function_latex, is_safe_latex
from .dsl.program import Program, _check_section_title
from .engine.limit import Limit, ScalarTable
from .engine.methods import RESULT_METHODS
from .engine.tails import StableError

__all__ = [
    "FORMAT",
    "VERSION",
    "MAX_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_EXPONENT",
    "MAX_NUMBER_BITS",
    "MAX_EXPR_NODES",
    "MAX_EXPR_CHARS",
    "MAX_EXPR_DEPTH",
    "METHODS",
    "SYMPY_CLASSES",
    "SYMPY_CONSTANTS",
    "save",
    "load",
    "dumps",
    "loads",
    "to_dict",
    "from_dict",
    "parse_srepr",
    "LoadedLimit",
    "CorruptFileError",
    "MissingFileError",
]

#: The ``"format"`` tag of every file.
FORMAT = "tensorprog"
#: The format version this library writes (and the newest it reads).
VERSION = 1

#: Default cap on the bytes :func:`load` reads (and characters :func:`loads` accepts).
MAX_BYTES = 64 * 2**20
#: Deepest JSON nesting accepted (the files :func:`save` writes nest 6 levels).
MAX_JSON_DEPTH = 32
#: Most digits of an integer, in JSON or in an expression (2¹²⁸ has 39).
MAX_INT_DIGITS = 40
#: Largest |numeric exponent| of a power (and order of a Dirac delta) in an expression.
MAX_EXPONENT = 100
#: Largest bit length of a numerator or denominator built while reading an expression.
MAX_NUMBER_BITS = 4096
#: Most nodes (calls and names) of one expression.
MAX_EXPR_NODES = 100_000
#: Longest ``srepr`` text of one expression (the longest the library writes: ~3000).
MAX_EXPR_CHARS = 2_000_000
#: Deepest nesting of calls in one expression (Python's parser stops at 200).
MAX_EXPR_DEPTH = 100
#: Most arguments of ``Max``, ``Min``, ``Piecewise``, ``And``, ``Or``.
_MAX_VARIADIC = 64
#: The methods a saved limit may name.
METHODS = tuple(m.value for m in RESULT_METHODS)


class CorruptFileError(FormatError, ProgramValueError):
    """A file is not a well-formed tensorprog file (bad JSON, missing or invalid fields)."""


class MissingFileError(FileAccessError, FileNotFoundError):
    """The file to load (or the folder to save into) does not exist."""


# ---------------------------------------------------------------------------------------
# public entry points


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a Program or a Limit to ``path`` as JSON (atomically: all or nothing).

    Parameters
    ----------
    obj : Program or Limit
    path : str or os.PathLike

    Raises
    ------
    ProgramValueError
        if an expression of the program cannot be written in the format (the message
        names the nonlinearity or scalar and what is valid); nothing is written.
    MissingFileError
        (a :class:`~tensorprog.FileAccessError` and ``FileNotFoundError``) if the
        folder does not exist.
    FileAccessError
        (also an ``OSError``) if the file cannot be written there (read-only folder,
        no permission, a path component that is a file, disk full); names the path.
    """
    text = dumps(obj)
    path = _as_path(path, "save")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        cls = FileAccessError if folder.exists() else MissingFileError
        raise cls(f"tp.save: the folder {str(folder)!r} of {str(path)!r} {what}")
    if path.is_dir():
        raise ProgramValueError(f"tp.save: {str(path)!r} is a directory; give a file name")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise FileAccessError(
            f"tp.save: cannot write {str(path)!r} ({exc.strerror or exc}); choose a writable folder"
        ) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


hooks.save.register(Program, save)  # p.save(path)
hooks.save.register(Limit, save)  # lim.save(path)


def load(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> Any:
    """Read a file written by ``save``: a :class:`Program` or a :class:`LoadedLimit`.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default :data:`MAX_BYTES` (64 MiB)
        Refuse a larger file (after reading at most ``max_bytes + 1`` bytes).

    Raises
    ------
    FormatError
        (a ``ValueError``) if the file is not a valid tensorprog file: anything outside
        the format's whitelist (see :mod:`tensorprog.io`), too large, too deep. The
        message names the field by its JSON path and says what is valid. Subclasses:
        :class:`FormatVersionError` (written by a newer format version),
        :class:`CorruptFileError` (bad JSON, missing or invalid fields).
    MissingFileError
        (also a ``FileNotFoundError``) if there is no such file.
    FileAccessError
        (also an ``OSError``) if it cannot be read (permission, ...).

    Notes
    -----
    A file is data, never code. Accepted: at most ``max_bytes``; JSON nested at most
    32 levels, integers of at most 40 digits, no ``NaN``/``Infinity`` literals;
    expressions (sympy ``srepr`` text, read without evaluation) that call only the
    sympy classes of :data:`SYMPY_CLASSES` (numbers, ``Symbol``, ``Add``, ``Mul``,
    ``Pow``, elementary functions, ``Piecewise`` and relations) and
    ``Function('name')`` for a builtin nonlinearity or one declared earlier in the
    file (a Python identifier), with numeric exponents within ±100, rationals of at
    most 4096 bits, constants that are finite float64 numbers, at most 2 000 000
    characters, 100 000 nodes and 100 levels of calls per expression; safe LaTeX names (no ``\\input``, ``#``, ``%``, ``^^``);
    saved limits with finite values, finite standard errors ≥ 0 and known methods.

    Examples
    --------
    >>> import os, tempfile
    >>> import tensorprog as tp
    >>> p = tp.Program("AtAv")
    >>> A, v = p.matrix("A", var=2.0), p.vector("v")
    >>> k = tp.inner(v, A.T @ (A @ v), name="k")
    >>> path = os.path.join(tempfile.mkdtemp(), "AtAv.json")
    >>> p.save(path)
    >>> q = tp.load(path)
    >>> str(q) == str(p), q.limit()["k"]
    (True, 2.0)
    """
    path = _as_path(path, "load")
    max_bytes = _cap(max_bytes, "tp.load")
    try:
        with open(path, "rb") as fh:
            if path.is_file() and os.fstat(fh.fileno()).st_size > max_bytes:
                raw = None  # refused without reading
            else:
                raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise MissingFileError(f"tp.load: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise ProgramValueError(
            f"tp.load: {str(path)!r} is a directory, not a saved file"
        ) from None
    except OSError as exc:
        raise FileAccessError(
            f"tp.load: cannot read {str(path)!r} ({exc.strerror or exc})"
        ) from exc
    if raw is None or len(raw) > max_bytes:
        raise CorruptFileError(
            f"tp.load: {str(path)!r} is larger than max_bytes={max_bytes} bytes; a tensorprog "
            f"file that large is unusual — pass a larger max_bytes to load it anyway"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(
            f"tp.load: {str(path)!r} is not a tensorprog file (not UTF-8 text: {exc})"
        ) from None
    return loads(text, source=str(path), max_bytes=max_bytes)


def dumps(obj: Any) -> str:
    """The JSON text of a Program or Limit (what :func:`save` writes)."""
    return json.dumps(to_dict(obj), ensure_ascii=False, indent=1, allow_nan=False)


def loads(text: str, *, source: str = "<string>", max_bytes: int = MAX_BYTES) -> Any:
    """Inverse of :func:`dumps` (same whitelist and bounds as :func:`load`)."""
    if not isinstance(text, str):
        raise ProgramTypeError(f"tp.io.loads needs a str, got {type(text).__name__}")
    max_bytes = _cap(max_bytes, "tp.io.loads")
    if len(text) > max_bytes:
        raise CorruptFileError(
            f"{source} is longer than max_bytes={max_bytes} characters; pass "
            f"a larger max_bytes to read it anyway"
        )
    try:
        data = json.loads(text, parse_int=_json_int, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{source} is not a tensorprog file: invalid JSON at line {exc.lineno}, "
            f"column {exc.colno} ({exc.msg})"
        ) from None
    except _JSONValueError as exc:
        raise CorruptFileError(
            f"{source} is not a tensorprog file: {exc} ({_locate(text, exc.pattern)})"
        ) from None
    except RecursionError:  # the decoder's own guard, far beyond MAX_JSON_DEPTH
        raise CorruptFileError(
            f"{source} is not a tensorprog file: JSON nested deeper than {MAX_JSON_DEPTH} "
            f"levels ({_locate_depth(text)}; a tensorprog file nests 6)"
        ) from None
    return from_dict(data, source=source)


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-ready dict of a Program or Limit."""
    head = {"format": FORMAT, "version": VERSION}
    if isinstance(obj, Program):
        return {
            **head,
            "kind": "program",
            "library_version": __version__,
            "program": _program_to_dict(obj),
        }
    if isinstance(obj, Limit):
        return {
            **head,
            "kind": "limit",
            "library_version": __version__,
            "program": _program_to_dict(obj.program),
            "limit": _limit_to_dict(obj),
        }
    raise ProgramTypeError(
        f"tp.save: can save a tp.Program or a Limit (p.limit()), got {type(obj).__name__}"
    )


def from_dict(data: Any, *, source: str = "<dict>") -> Any:
    """Inverse of :func:`to_dict`: a :class:`Program` or a :class:`LoadedLimit`.

    ``data`` gets the same checks as a file's JSON (see :mod:`tensorprog.io`).
    """
    r = _Reader(source)
    top = _At("the file", "")
    if not isinstance(data, dict):
        raise r.corrupt(f"the top level must be a JSON object, got {_jtype(data)}")
    _check_json_depth(data, r)
    if data.get("format") != FORMAT:
        raise r.corrupt(
            f'it has no "format": "{FORMAT}" header (got {_short(data.get("format"))})', "format"
        )
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise r.corrupt(f'"version" must be a positive int, got {_short(version)}', "version")
    if version > VERSION:
        written = data.get("library_version", "?")
        raise FormatVersionError(
            f"{source} has format version {_short(version)}, written by tensorprog "
            f"{_short(written, 40) if not isinstance(written, str) else written[:40]}; tensorprog "
            f"{__version__} reads versions ≤ {VERSION}. Upgrade tensorprog to load it."
        )
    kind = data.get("kind")
    if kind not in ("program", "limit"):
        raise r.corrupt(f'"kind" must be "program" or "limit", got {_short(kind)}', "kind")
    lib = data.get("library_version")
    if lib is not None and not isinstance(lib, str):
        raise r.corrupt(f'"library_version" must be a string, got {_jtype(lib)}', "library_version")
    program = _program_from_dict(r.field(data, "program", dict, top), r)
    if kind == "program":
        return program
    return _limit_from_dict(r.field(data, "limit", dict, top), program, data, r)


# ---------------------------------------------------------------------------------------
# programs


def _program_to_dict(p: Any) -> dict[str, Any]:
    p.check()
    fns: list[Nonlinearity] = []
    index: dict[int, int] = {}

    def fn_id(fn: Nonlinearity) -> int:
        if id(fn) not in index:
            for inner in _nested(fn.body):  # declared before the function that applies them
                if BUILTINS.get(inner.name) is not inner:
                    fn_id(inner)
            index[id(fn)] = len(fns)
            fns.append(fn)
        return index[id(fn)]

    instrs = []
    for ins in p.instructions:
        d: dict[str, Any] = {"op": ins.opname, "out": ins.out.name}
        if isinstance(ins, InitMatrix):
            d["var"] = float(ins.var)
        elif isinstance(ins, InitVector):
            d["mean"], d["var"] = float(ins.mean), float(ins.var)
            d["cov"] = [[v.name, float(c)] for v, c in ins.cov]
        elif isinstance(ins, InitScalar):
            d["value"] = _srepr(ins.value, f"the value of scalar {ins.out.name!r}", {})
        elif isinstance(ins, MatMul):
            d["matrix"], d["arg"], d["transpose"] = (
                ins.matrix.name,
                ins.arg.name,
                bool(ins.transpose),
            )
        elif isinstance(ins, OuterNonlin):  # ψ stored like a Nonlin's (data, no code)
            d["fn"] = fn_id(ins.fn)  # type: ignore[arg-type]
            d["rows"] = [v.name for v in ins.rows]
            d["cols"] = [v.name for v in ins.cols]
            d["params"] = [v.name for v in ins.params]
        else:
            d["fn"] = fn_id(ins.fn)
            if not isinstance(ins, ScalarFn):
                d["args"] = [v.name for v in ins.args]
            d["params"] = [v.name for v in ins.params]
        instrs.append(d)
    out, declared = [], _Names()
    for f in fns:
        out.append(_fn_to_dict(f, declared))
        declared.declare(f)
    d = {"name": p.name, "nonlinearities": out, "instructions": instrs}
    if p.aliases:  # second names of repeated computations (Program.aliases)
        d["aliases"] = [[a, nm] for a, nm in p.aliases.items()]
    if p.sections:  # headings of the printouts (Program.section)
        d["sections"] = [[start, title] for title, start, _stop in p.sections]
    return d


def _nested(expr: sympy.Basic) -> list[Nonlinearity]:
    """The nonlinearities applied inside ``expr`` (opaque function applications)."""
    found = {}
    for f in expr.atoms(sympy.Function):
        nl = getattr(type(f), "nonlinearity", None)
        if nl is not None:
            found.setdefault(id(nl), nl)
    return list(found.values())


def _fn_to_dict(f: Nonlinearity, declared: "_Names") -> dict[str, Any]:
    what = f"nonlinearity {f.name!r:.80}"
    if not _valid_fn_name(f.name):
        raise ProgramValueError(
            f"cannot save {what}: a saved name has 1 to {_MAX_NAME} printable characters; rename it"
        )
    d = {
        "name": f.name,
        "args": [_srepr(s, what, {}) for s in f.args],
        "params": [_srepr(s, what, {}) for s in f.params],
        "body": _srepr(f.body, what, declared.functions(f, what)),
        "opaque": bool(f.opaque),
        "latex": function_latex(f),  # what the printers show: an unsafe name escaped
    }
    if BUILTINS.get(f.name) is not f:
        for fam_name, fam in FAMILIES.items():
            found = fam.origin(f)
            if found is not None:  # rebuilt by its family on load, closed forms and all
                d["family"] = [fam_name, _json_params(found[0]), found[1]]
                break
    return d


def _json_params(params: tuple) -> list:
    """A family member's parameters as JSON numbers (a sequence as a list)."""

    def num(v: Any) -> int | float:
        return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v)

    return [
        [num(c) for c in v] if isinstance(v, (list, tuple, np.ndarray)) else num(v) for v in params
    ]


class _Names:
    """Which names ``Function('name')`` may use: builtins, then unique earlier declarations."""

    def __init__(self) -> None:
        self._declared: dict[str, Nonlinearity | None] = {}

    def declare(self, fn: Nonlinearity) -> None:
        if _referable(fn.name) and fn.name not in BUILTINS:
            self._declared[fn.name] = None if fn.name in self._declared else fn

    def resolve(self, name: str) -> Nonlinearity | None:
        """The nonlinearity ``Function(name)`` means here, or None (not referable)."""
        if not _referable(name):
            return None
        return BUILTINS.get(name) or self._declared.get(name)

    def functions(self, f: Nonlinearity, what: str) -> dict[str, Any]:
        """``{name: function class}`` for the nonlinearities applied in ``f``'s body."""
        out = {}
        for inner in _nested(f.body):
            if self.resolve(inner.name) is not inner:
                raise ProgramValueError(
                    f"cannot save {what}: it applies the nonlinearity {inner.name!r}, which a "
                    f"file can only refer to by a unique name that is a Python identifier "
                    f"(and not the name of a different builtin); rename it"
                )
            out[inner.name] = inner.function
        return out

    def classes(self) -> Callable[[str], Any]:
        def lookup(name: str) -> Any:
            fn = self.resolve(name)
            return None if fn is None else fn.function

        return lookup


_MAX_NAME = 1000


def _valid_fn_name(name: str) -> bool:
    return 0 < len(name) <= _MAX_NAME and name.isprintable()


def _referable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


class _Printer(ReprPrinter):
    """``srepr`` writing applied nonlinearities as ``Function('name')(…)``."""

    def _print_FunctionClass(self, expr: Any) -> str:
        nl = getattr(expr, "nonlinearity", None)
        if nl is not None:
            return f"Function({nl.name!r})"
        return super()._print_FunctionClass(expr)


def _srepr(expr: Any, what: str, functions: Mapping[str, Any]) -> str:
    """``srepr(expr)``, checked to read back (within the whitelist) to the same expression."""
    text = _Printer().doprint(expr)
    try:
        back = parse_srepr(text, functions=functions.get)
    except FormatError as exc:
        raise ProgramValueError(
            f"cannot save {what}: its expression {str(expr):.200} cannot be written in the "
            f"tensorprog format ({exc}); write it with the sympy functions listed in "
            f"tensorprog.io.SYMPY_CLASSES"
        ) from None
    if back != expr:
        raise ProgramValueError(
            f"cannot save {what}: its expression {str(expr):.200} does not survive a round trip "
            f"through sympy.srepr (it uses objects that are not plain sympy, e.g. a custom "
            f"Function class); write it with sympy's own functions"
        )
    return text


def _program_from_dict(d: dict[str, Any], r: "_Reader") -> Any:
    at = _At("the program", "program")
    name = r.field(d, "name", str, at)
    fn_specs = r.field(d, "nonlinearities", list, at)
    instrs = r.field(d, "instructions", list, at)
    fns: list[Nonlinearity] = []
    names = _Names()
    for i, spec in enumerate(fn_specs):
        fn = _fn_from_dict(spec, _At(f"nonlinearity {i}", f"program.nonlinearities[{i}]"), names, r)
        fns.append(fn)
        names.declare(fn)
    p = Program(name)
    handles: dict[str, Any] = {}

    def ref(nm: Any, at: _At, key: str, kinds: tuple[str, ...]) -> Any:
        if not isinstance(nm, str):
            raise r.corrupt(f"{at}: {key} must be a name (string), got {_jtype(nm)}", at.path)
        h = handles.get(nm)
        if h is None:
            raise r.corrupt(f"{at}: {key} {nm!r:.80} is not defined earlier", at.path)
        if h.var.kind not in kinds:
            raise r.corrupt(
                f"{at}: {key} {nm!r} is a {h.var.kind}, expected a {' or '.join(kinds)}", at.path
            )
        return h

    def refs(dd: dict, at: _At, key: str, kinds: tuple[str, ...]) -> tuple[Any, ...]:
        items = r.field(dd, key, list, at)
        return tuple(ref(nm, at.sub(f"{key}[{j}]"), key, kinds) for j, nm in enumerate(items))

    def fn_of(dd: dict, at: _At) -> Nonlinearity:
        k = r.field(dd, "fn", int, at)
        if not 0 <= k < len(fns):
            raise r.corrupt(
                f"{at}: fn {_short(k)} is not an index into the nonlinearities "
                f"(0 … {len(fns) - 1})",
                at.sub("fn").path,
            )
        return fns[k]

    for i, dd in enumerate(instrs):
        at = _At(f"instruction {i}", f"program.instructions[{i}]")
        if not isinstance(dd, dict):
            raise r.corrupt(f"{at} must be a JSON object, got {_jtype(dd)}", at.path)
        op = r.field(dd, "op", str, at)
        out = r.field(dd, "out", str, at)
        at = _At(f"instruction {i} ({out!r:.80})", at.path)
        try:
            if op == "init_matrix":
                h = p.matrix(out, var=r.number(dd, "var", at))
            elif op == "init_vector":
                cov_list = r.field(dd, "cov", list, at)
                cov = {}
                for j, item in enumerate(cov_list):
                    cat = at.sub(f"cov[{j}]")
                    if not (isinstance(item, list) and len(item) == 2):
                        raise r.corrupt(
                            f"{at}: cov entries must be [name, number], got {_short(item)}",
                            cat.path,
                        )
                    cov[ref(item[0], cat, "cov", ("vector",))] = r.number({1: item[1]}, 1, cat)
                h = p.vector(
                    out, mean=r.number(dd, "mean", at), var=r.number(dd, "var", at), cov=cov
                )
            elif op == "init_scalar":
                value = r.expr(r.field(dd, "value", str, at), at.sub("value"), None)
                h = p.scalar(out, value)
            elif op == "matmul":
                W = ref(r.field(dd, "matrix", str, at), at.sub("matrix"), "matrix", ("matrix",))
                x = ref(r.field(dd, "arg", str, at), at.sub("arg"), "arg", ("vector",))
                transpose = r.field(dd, "transpose", bool, at)
                h = (W.T if transpose else W).matmul(x, name=out)
            elif op == "outer_nonlin":
                fn = fn_of(dd, at)
                rows = refs(dd, at, "rows", ("vector",))
                cols = refs(dd, at, "cols", ("vector",))
                params = refs(dd, at, "params", ("scalar",))
                if not rows or not cols:
                    raise r.corrupt(
                        f"{at}: an outer_nonlin needs at least one row and one col vector",
                        at.path,
                    )
                if fn.arity != len(rows) + len(cols) or fn.nparams != len(params):
                    raise r.corrupt(
                        f"{at}: nonlinearity {fn.name!r} takes {fn.arity} vector(s) and "
                        f"{fn.nparams} scalar(s), the instruction gives {len(rows)} row(s) + "
                        f"{len(cols)} col(s) and {len(params)}",
                        at.path,
                    )
                h = p._append(
                    OuterNonlin,
                    out,
                    fn=fn,
                    rows=tuple(x.var for x in rows),
                    cols=tuple(x.var for x in cols),
                    params=tuple(x.var for x in params),
                )
            elif op in ("nonlin", "moment", "scalar_fn"):
                fn = fn_of(dd, at)
                args = () if op == "scalar_fn" else refs(dd, at, "args", ("vector",))
                params = refs(dd, at, "params", ("scalar",))
                if fn.arity != len(args) or fn.nparams != len(params):
                    raise r.corrupt(
                        f"{at}: nonlinearity {fn.name!r} takes {fn.arity} vector(s) and "
                        f"{fn.nparams} scalar(s), the instruction gives {len(args)} and {len(params)}",
                        at.path,
                    )
                if op == "nonlin" and not args:
                    raise r.corrupt(f"{at}: a nonlin needs at least one vector argument", at.path)
                cls = {"nonlin": Nonlin, "moment": Moment, "scalar_fn": ScalarFn}[op]
                fields: dict[str, Any] = {"fn": fn, "params": tuple(h.var for h in params)}
                if cls is not ScalarFn:
                    fields["args"] = tuple(h.var for h in args)
                h = p._append(cls, out, **fields)
            else:
                raise r.corrupt(
                    f"{at}: unknown op {op!r:.80}; valid: "
                    f"{', '.join(cls.opname for cls in INSTRUCTIONS)}",
                    at.sub("op").path,
                )
        except FormatError:
            raise
        except TensorProgramError as exc:  # the DSL's own validation of a bad value
            raise r.corrupt(f"{at}: {exc}", at.path) from None
        if p.var(out) is not h.var:  # (a repeated computation's name is an alias of the first)
            raise r.corrupt(f"{at}: could not restore the name", at.path)
        handles[out] = h
    for j, item in enumerate(d.get("aliases", [])):
        at = _At(f"alias {j}", f"program.aliases[{j}]")
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise r.corrupt(f"{at} must be [alias, name], got {_short(item)}", at.path)
        target = ref(item[1], at, "name", ("matrix", "vector", "scalar"))
        try:
            p._alias(item[0], target.var)
        except TensorProgramError as exc:
            raise r.corrupt(f"{at}: {exc}", at.path) from None
        handles[item[0]] = target
    sections = d.get("sections", [])
    if not isinstance(sections, list):
        raise r.corrupt(f"sections must be a list, got {_short(sections)}", "program.sections")
    last = -1
    for j, item in enumerate(sections):
        at = _At(f"section {j}", f"program.sections[{j}]")
        ok = (
            isinstance(item, list)
            and len(item) == 2
            and type(item[0]) is int
            and last < item[0] <= len(p)
        )
        if not ok:
            raise r.corrupt(
                f"{at} must be [start, title] with starts increasing within the "
                f"{len(p)} instructions, got {_short(item)}",
                at.path,
            )
        try:
            _check_section_title(item[1])
        except TensorProgramError as exc:
            raise r.corrupt(f"{at}: {exc}", at.path) from None
        last = item[0]
        p._sections.append((item[0], item[1]))
    try:
        p.check()
    except TensorProgramError as exc:
        raise r.corrupt(f"the program does not check: {exc}", "program") from None
    return p


def _fn_from_dict(spec: Any, at: "_At", names: _Names, r: "_Reader") -> Nonlinearity:
    if not isinstance(spec, dict):
        raise r.corrupt(f"{at} must be a JSON object, got {_jtype(spec)}", at.path)
    name = r.field(spec, "name", str, at)
    if not _valid_fn_name(name):
        raise r.corrupt(
            f"{at}: the name must be 1 to {_MAX_NAME} printable characters, got {name!r:.80}",
            at.sub("name").path,
        )
    at = _At(f"nonlinearity {at.desc.split()[-1]} ({name!r})", at.path)
    args = [
        r.expr(s, at.sub(f"args[{j}]"), None) for j, s in enumerate(r.field(spec, "args", list, at))
    ]
    params = [
        r.expr(s, at.sub(f"params[{j}]"), None)
        for j, s in enumerate(r.field(spec, "params", list, at))
    ]
    if not all(isinstance(s, sympy.Symbol) for s in args + params):
        raise r.corrupt(f"{at}: args and params must be sympy Symbols", at.path)
    body = r.expr(r.field(spec, "body", str, at), at.sub("body"), names)
    opaque = r.field(spec, "opaque", bool, at)
    latex = r.field(spec, "latex", str, at)
    if not is_safe_latex(latex):
        raise r.corrupt(
            f"{at}: the LaTeX name {latex!r:.80} is not safe LaTeX (valid: letters, digits, "
            f"punctuation, balanced braces and math macros such as \\operatorname, \\mathrm, "
            f"Greek letters; no \\input, #, %, ^^)",
            at.sub("latex").path,
        )
    try:
        fn = Nonlinearity(name, body, args, params, opaque=opaque, latex=latex)
    except TensorProgramError as exc:
        raise r.corrupt(f"{at}: {exc}", at.path) from None
    if "family" in spec:
        return _family_member(spec["family"], fn, at.sub("family"), r)
    return _builtin_like(fn) or fn


def _same_function(a: Nonlinearity, b: Nonlinearity) -> bool:
    """Same name, body, opacity and LaTeX name: ``b`` may stand for ``a``."""
    return (
        a.name == b.name
        and a.key == b.key
        and a.opaque == b.opaque
        and a.latex_name == b.latex_name
    )


def _builtin_like(fn: Nonlinearity) -> Nonlinearity | None:
    """The builtin (or derivative of a builtin, up to 2nd order) identical to ``fn``."""
    for b in BUILTINS.values():
        cands = [b]
        if b.arity + b.nparams == 1 and fn.name.startswith(b.name):
            d1 = b.derivative()
            cands += [d1, d1.derivative()]
        for c in cands:
            if _same_function(fn, c):
                return c
    return None


def _family_member(rec: Any, fn: Nonlinearity, at: "_At", r: "_Reader") -> Nonlinearity:
    """The member of a registered family (:data:`~tensorprog.core.nonlin.FAMILIES`)
    that ``rec = [family, params, k]`` names — its ``k``-th derivative — checked to be
    ``fn``, the nonlinearity the file's body defines. Parameters are numbers (or lists
    of numbers): the family's own validation runs on them, nothing else."""

    def number(v: Any) -> bool:
        return type(v) in (int, float) and math.isfinite(v)

    ok = (
        isinstance(rec, list)
        and len(rec) == 3
        and isinstance(rec[0], str)
        and isinstance(rec[1], list)
        and len(rec[1]) <= 8
        and all(
            number(v) or (isinstance(v, list) and 0 < len(v) <= 64 and all(map(number, v)))
            for v in rec[1]
        )
        and type(rec[2]) is int
        and 0 <= rec[2] <= 2
    )
    if not ok:
        raise r.corrupt(
            f"{at} must be [family name, [parameters: numbers or lists of numbers], "
            f"derivative order 0..2], got {_short(rec)}",
            at.path,
        )
    fam = FAMILIES.get(rec[0])
    if fam is None:
        raise r.corrupt(
            f"{at}: no family {rec[0]!r:.60}; valid: {', '.join(sorted(FAMILIES))}", at.path
        )
    try:
        member = fam(*rec[1])
        for _ in range(rec[2]):
            member = member.derivative()
    except (TensorProgramError, TypeError) as exc:  # (TypeError: a wrong parameter count)
        raise r.corrupt(f"{at}: {exc}", at.path) from None
    if not _same_function(fn, member):
        raise r.corrupt(
            f"{at}: {rec[0]}{tuple(rec[1])} (derivative {rec[2]}) is {member.name!r}, not the "
            f"nonlinearity this record defines ({fn.name!r})",
            at.path,
        )
    return member


# ---------------------------------------------------------------------------------------
# limits


def _limit_to_dict(lim: Any) -> dict[str, Any]:
    meta = dict(lim.meta)
    seed = meta.get("seed")
    if seed is not None and not isinstance(seed, int):
        seed = int(seed) if hasattr(seed, "__index__") else repr(seed)
    meta["seed"] = seed
    scalars = []
    for ins in lim.program.instructions:
        v = ins.out
        if v.kind != "scalar":
            continue
        name = v.name
        row = {
            "name": name,
            "value": float(lim[name]),
            "stderr": float(lim._stderr[name]),
            "error": float(lim._error[name]),
            "method": lim.method(name),
        }
        problem = _limit_row_problem(row)
        if problem:
            raise NumericalError(f"cannot save the limit of {name!r}: {problem}")
        row["error"] = _float_out(row["error"])
        if name in lim._flags:
            row["warning"] = lim._flags[name]
        if name in lim._khat:
            row["khat"] = _float_out(float(lim._khat[name]))
        if name in lim._stable:
            e = lim._stable[name]
            row["stable"] = {"alpha": e.alpha, "scale": _float_out(e.scale)}
        scalars.append(row)
    return {"meta": {k: _jsonable(x) for k, x in meta.items()}, "scalars": scalars}


def _limit_row_problem(row: Mapping[str, Any]) -> str | None:
    """What is invalid about a limit row (value, stderr, error, method), or None."""
    if not math.isfinite(row["value"]):
        return f"its value {row['value']} is not finite"
    if not (math.isfinite(row["stderr"]) and row["stderr"] >= 0):
        return f"its standard error {row['stderr']} is not a finite number ≥ 0"
    if not row["error"] >= 0:  # inf: unknown error bound
        return f"its error estimate {row['error']} is not a number ≥ 0 (or inf)"
    if row["method"] not in METHODS:
        return f"unknown method {row['method']!r:.40}; valid: {', '.join(METHODS)}"
    return None


def _limit_from_dict(d: dict[str, Any], program: Any, head: dict, r: "_Reader") -> "LoadedLimit":
    at = _At("the limit", "limit")
    meta = r.field(d, "meta", dict, at)
    for k, x in meta.items():
        if not (x is None or isinstance(x, (bool, int, float, str))):
            raise r.corrupt(
                f'the limit\'s meta "{k:.40}" must be a number, string, boolean or '
                f"null, got {_jtype(x)}",
                f"limit.meta.{k:.40}",
            )
    rows = r.field(d, "scalars", list, at)
    values, stderr, errors, methods = {}, {}, {}, {}
    flags, khat, stable = {}, {}, {}
    for i, row in enumerate(rows):
        at = _At(f"limit scalar {i}", f"limit.scalars[{i}]")
        if not isinstance(row, dict):
            raise r.corrupt(f"{at} must be a JSON object, got {_jtype(row)}", at.path)
        name = r.field(row, "name", str, at)
        at = _At(f"limit scalar {i} ({name!r:.80})", at.path)
        if name not in program or program.var(name).kind != "scalar":
            raise r.corrupt(f"{at} is not a scalar of the saved program", at.sub("name").path)
        got = {
            "value": r.number(row, "value", at, nonfinite=True),
            "stderr": r.number(row, "stderr", at, nonfinite=True),
            "error": r.number(row, "error", at, nonfinite=True),
            "method": r.field(row, "method", str, at),
        }
        problem = _limit_row_problem(got)
        if problem:
            raise r.corrupt(f"{at}: {problem}", at.path)
        if program[name].name != name:  # a repeated computation (an older file): one row
            continue
        values[name], stderr[name], errors[name] = got["value"], got["stderr"], got["error"]
        methods[name] = got["method"]
        if "warning" in row:
            flags[name] = r.field(row, "warning", str, at)
            if len(flags[name]) > _MAX_WARNING:
                raise r.corrupt(
                    f"{at}: its warning is longer than {_MAX_WARNING} characters",
                    at.sub("warning").path,
                )
        if "khat" in row:
            khat[name] = r.number(row, "khat", at, nonfinite=True)
            if math.isnan(khat[name]) or khat[name] == math.inf:
                raise r.corrupt(
                    f"{at}: its Pareto k̂ must be a number or -inf, got {khat[name]}",
                    at.sub("khat").path,
                )
        if "stable" in row:
            stable[name] = _stable_from_dict(row, at, r)
            if name not in flags:
                raise r.corrupt(
                    f"{at}: a heavy-tailed error law belongs to a value that is "
                    f"not trusted (no warning is saved)",
                    at.sub("stable").path,
                )
    return LoadedLimit(
        program,
        values,
        stderr,
        errors,
        methods,
        dict(meta),
        head.get("library_version"),
        r.source,
        flags,
        khat,
        stable,
    )


#: Longest warning a saved limit row may carry (characters).
_MAX_WARNING = 2000


def _stable_from_dict(row: dict[str, Any], at: "_At", r: "_Reader") -> StableError:
    """A row's ``"stable"`` error law, validated: ``0 < alpha ≤ 2``, ``scale ≥ 0`` (inf when
    no interval is given)."""
    d = r.field(row, "stable", dict, at)
    at = _At(f"{at} stable", at.sub("stable").path)
    alpha = r.number(d, "alpha", at)
    scale = r.number(d, "scale", at, nonfinite=True)  # (inf: no interval)
    if not (0 < alpha <= 2 and 0 <= scale):
        raise r.corrupt(
            f"{at}: needs 0 < alpha ≤ 2 and scale ≥ 0 (inf: no interval); got alpha={alpha}, "
            f"scale={scale}",
            at.path,
        )
    return StableError(alpha, scale)


class LoadedLimit(ScalarTable):
    """The numbers of a saved :class:`~tensorprog.engine.Limit` (from :func:`load`).

    Lookup by name or by a handle of :attr:`program` (the saved program, rebuilt):
    ``lim["k"]``, ``lim.stderr("k")``, ``lim.error("k")``, ``lim.method("k")`` — the
    same lookups as a :class:`~tensorprog.engine.Limit` (shared :class:`ScalarTable`).
    Every value is finite and every standard error a finite number ≥ 0 (checked on
    loading).

    Attributes
    ----------
    program : Program
    values, stderrs, errors, methods : dict
        By scalar name, in program order.
    meta : dict
        ``method`` (requested), ``seed``, ``samples``, ``batches``, ``qmc`` as passed
        to ``limit`` (``seed``/``samples`` are None when no Monte Carlo was needed).
    library_version : str
        The tensorprog version that saved the file.
    """

    def __init__(
        self,
        program: Any,
        values: dict[str, float],
        stderrs: dict[str, float],
        errors: dict[str, float],
        methods: dict[str, str],
        meta: dict[str, Any],
        library_version: str | None,
        source: str,
        flags: dict[str, str] | None = None,
        khat: dict[str, float] | None = None,
        stable: dict[str, StableError] | None = None,
    ) -> None:
        super().__init__(program, values, stderrs, errors, methods, meta, flags, khat, stable)
        self.library_version = library_version
        self.source = source

    def _name(self, key: Any) -> str:
        name = super()._name(key)
        if name not in self._values:  # pragma: no cover - a saved limit holds every scalar
            raise UnknownNameError(
                f"the saved limit of {self.program.name!r} has no scalar {name!r}"
            )
        return name

    def _title(self) -> str:
        return (
            f"Saved limit of {self.program.name!r} (method={self.method_requested!r}, "
            f"tensorprog {self.library_version})"
        )


# ---------------------------------------------------------------------------------------
# reading helpers


@dataclass(frozen=True)
class _At:
    """Where a field is: for people (``instruction 2 ('h')``) and as a JSON path."""

    desc: str
    path: str

    def __str__(self) -> str:
        return self.desc

    def sub(self, key: Any) -> "_At":
        if isinstance(key, int):
            return _At(self.desc, f"{self.path}[{key}]")
        return _At(self.desc, f"{self.path}.{key}" if self.path else key)


class _Reader:
    """Field access with errors that say what is wrong and where (the JSON path)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def corrupt(self, msg: str, path: str | None = None) -> CorruptFileError:
        where = f" [field {path}]" if path else ""
        return CorruptFileError(f"corrupt tensorprog file {self.source}: {msg}{where}")

    def field(self, d: Mapping, key: Any, typ: type, at: _At) -> Any:
        if key not in d:
            raise self.corrupt(f'{at} has no "{key}" field', at.path or None)
        x = d[key]
        ok = isinstance(x, typ) and not (typ is int and isinstance(x, bool))
        if not ok:
            raise self.corrupt(
                f'{at}: "{key}" must be a {_JTYPES.get(typ, typ.__name__)}, '
                f"got {_jtype(x)} {_short(x)}",
                at.sub(key).path,
            )
        return x

    def number(self, d: Mapping, key: Any, at: _At, nonfinite: bool = False) -> float:
        if key not in d:
            raise self.corrupt(f'{at} has no "{key}" field', at.path or None)
        x = d[key]
        path = at.sub(key).path
        if nonfinite and x in ("inf", "-inf", "nan"):
            return float(x)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise self.corrupt(f'{at}: "{key}" must be a number, got {_jtype(x)} {_short(x)}', path)
        try:
            return float(x)
        except OverflowError:
            raise self.corrupt(f'{at}: "{key}" {_short(x)} is beyond float64', path) from None

    def expr(self, text: Any, at: _At, names: _Names | None) -> Any:
        if not isinstance(text, str):
            raise self.corrupt(f"{at}: expressions are srepr strings, got {_jtype(text)}", at.path)
        try:
            return parse_srepr(text, functions=names.classes() if names else None)
        except FormatError as exc:
            raise self.corrupt(f"{at}: {exc}", at.path) from None


_JTYPES = {dict: "JSON object", list: "JSON array", str: "string", int: "integer", bool: "boolean"}


def _jtype(x: Any) -> str:
    if x is None:
        return "null"
    for t, nm in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "JSON array"),
        (dict, "JSON object"),
    ):
        if isinstance(x, t):
            return nm
    return type(x).__name__


def _short(x: Any, n: int = 60) -> str:
    """``repr(x)`` cut to ``n`` characters, without building the repr of a huge value."""
    if isinstance(x, (list, dict)):
        return f"<{_jtype(x)} of {len(x)} items>"
    if isinstance(x, int) and not isinstance(x, bool):
        return repr(x) if x.bit_length() < 200 else f"<{x.bit_length()}-bit integer>"
    return f"{x!r:.{n}}"


def _float_out(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def _jsonable(x: Any) -> Any:
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, float):
        return _float_out(x)
    if isinstance(x, int) or hasattr(x, "__index__"):
        x = int(x)
        return x if abs(x) < 10**MAX_INT_DIGITS else hex(x)  # JSON integers are bounded
    return repr(x)


def _cap(max_bytes: Any, what: str) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ProgramValueError(f"{what}: max_bytes must be a positive int, got {max_bytes!r:.40}")
    return max_bytes


class _JSONValueError(ValueError):
    """A JSON literal outside the format's bounds (raised from the decoder's hooks)."""

    def __init__(self, msg: str, pattern: str) -> None:
        super().__init__(msg)
        self.pattern = pattern  # finds the literal in the text, for the error message


def _json_int(s: str) -> int:
    digits = len(s.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _JSONValueError(
            f"a JSON integer has {digits} digits; at most {MAX_INT_DIGITS} are valid",
            rf"\d{{{MAX_INT_DIGITS + 1},}}",
        )
    return int(s)


def _json_constant(s: str) -> float:
    raise _JSONValueError(
        f"the JSON literal {s} is not valid (numbers must be finite; a saved "
        f"limit writes non-finite numbers as strings)",
        re.escape(s),
    )


def _locate(text: str, pattern: str) -> str:
    """``line L, column C`` of the first match of ``pattern`` outside JSON strings."""
    blank = _JSON_STRING.sub(lambda m: " " * len(m.group()), text)
    m = re.search(pattern, blank)
    if m is None:  # pragma: no cover - the decoder saw it
        return "position unknown"
    pos = m.start()
    return f"line {text.count(chr(10), 0, pos) + 1}, column {pos - text.rfind(chr(10), 0, pos)}"


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _check_json_depth(data: Any, r: "_Reader") -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`, naming the path (iterative)."""
    stack = [(data, 1, "")]  # (value, level of the containers around it + 1, path)
    while stack:
        node, level, path = stack.pop()
        if level > MAX_JSON_DEPTH and isinstance(node, (dict, list)):
            raise r.corrupt(
                f"JSON nested deeper than {MAX_JSON_DEPTH} levels (a tensorprog file nests 6)",
                path or None,
            )
        if isinstance(node, dict):
            stack += [(v, level + 1, f"{path}.{k}" if path else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, level + 1, f"{path}[{i}]") for i, v in enumerate(node)]


def _locate_depth(text: str) -> str:
    """``line L, column C`` where ``text`` first nests deeper than :data:`MAX_JSON_DEPTH`."""
    blank = _JSON_STRING.sub(lambda m: " " * len(m.group()), text)
    codes = np.frombuffer(blank.encode("ascii", "replace"), dtype=np.uint8)
    step = np.isin(codes, (ord("["), ord("{"))).astype(np.int32)
    step -= np.isin(codes, (ord("]"), ord("}")))
    deep = np.flatnonzero(np.cumsum(step) > MAX_JSON_DEPTH)
    pos = int(deep[0]) if deep.size else 0
    return f"line {text.count(chr(10), 0, pos) + 1}, column {pos - text.rfind(chr(10), 0, pos)}"


def _as_path(path: Any, what: str) -> Path:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if str(p) == "" or str(p) == ".":
            raise ProgramValueError(f"tp.{what}: path must name a file, got {path!r}")
        return p
    raise ProgramTypeError(
        f"tp.{what}: path must be a str or os.PathLike, got {type(path).__name__}"
    )


# ---------------------------------------------------------------------------------------
# a whitelisting reader of sympy srepr text (never evaluates code)

_FUNCTIONS = (
    sympy.exp,
    sympy.log,
    sympy.sin,
    sympy.cos,
    sympy.tan,
    sympy.asin,
    sympy.acos,
    sympy.atan,
    sympy.atan2,
    sympy.sinh,
    sympy.cosh,
    sympy.tanh,
    sympy.asinh,
    sympy.acosh,
    sympy.atanh,
    sympy.erf,
    sympy.erfc,
    sympy.Abs,
    sympy.sign,
    sympy.Heaviside,
    sympy.DiracDelta,
    sympy.Max,
    sympy.Min,
)
_LOGIC = (
    sympy.Piecewise,
    ExprCondPair,
    sympy.Equality,
    sympy.Unequality,
    sympy.StrictGreaterThan,
    sympy.StrictLessThan,
    sympy.GreaterThan,
    sympy.LessThan,
    sympy.And,
    sympy.Or,
    sympy.Not,
)
#: The sympy classes a saved expression may call, by ``srepr`` name: numbers, symbols,
#: arithmetic, the elementary functions the builtins and numpy code generation use, and
#: ``Piecewise`` with relations (written by ``tp.nn`` training programs).
SYMPY_CLASSES: dict[str, Any] = {
    c.__name__: c
    for c in (
        sympy.Integer,
        sympy.Rational,
        sympy.Float,
        sympy.Symbol,
        sympy.Add,
        sympy.Mul,
        sympy.Pow,
        *_FUNCTIONS,
        *_LOGIC,
    )
}
#: The sympy constants a saved expression may name.
SYMPY_CONSTANTS: dict[str, Any] = {
    "pi": sympy.pi,
    "E": sympy.E,
    "EulerGamma": sympy.EulerGamma,
    "Catalan": sympy.Catalan,
    "GoldenRatio": sympy.GoldenRatio,
    "true": sympy.true,
    "false": sympy.false,
}
_VARIADIC = {sympy.Max, sympy.Min, sympy.Piecewise, sympy.And, sympy.Or}
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,4})?")
_LONG_DIGITS = re.compile(rf"\d{{{MAX_INT_DIGITS + 1},}}")


def parse_srepr(text: str, *, functions: Callable[[str], Any] | None = None) -> Any:
    """Rebuild a sympy object from ``sympy.srepr`` text, within a whitelist, without ``eval``.

    Python's ``ast`` parser reads the text (it never runs it); then only these are
    built, one call at a time: the classes of :data:`SYMPY_CLASSES` on arguments that
    are themselves such objects, ``Integer``/``Rational`` on integer literals of at most
    :data:`MAX_INT_DIGITS` digits, ``Float`` on a decimal literal and a precision,
    ``Symbol`` on a name and boolean assumptions, the constants of
    :data:`SYMPY_CONSTANTS`, and ``Function('f')`` when ``functions('f')`` gives a
    function class (the loader passes builtin and declared nonlinearities; ``f`` must be
    a Python identifier and not a keyword). Sizes are bounded before anything is
    computed: exponents by :data:`MAX_EXPONENT`, rationals by :data:`MAX_NUMBER_BITS`,
    the expression by :data:`MAX_EXPR_NODES` nodes and :data:`MAX_EXPR_DEPTH` levels.

    Parameters
    ----------
    text : str
    functions : callable, optional
        ``functions(name)`` → the class ``Function(name)`` stands for, or None.

    Raises
    ------
    FormatError
        for anything else, saying what was found and what is valid.

    Examples
    --------
    >>> parse_srepr("Add(Symbol('x0', real=True), Integer(1))")
    x0 + 1
    >>> parse_srepr("Sum(Symbol('k'), Tuple(Symbol('k'), Integer(0), Integer(10)))")
    Traceback (most recent call last):
    ...
    tensorprog.core.errors.FormatError: 'Sum' is not allowed in a saved expression; valid: ...
    """
    if not isinstance(text, str):
        raise FormatError(f"a saved expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_EXPR_CHARS:
        raise FormatError(
            f"the expression has {len(text)} characters; at most {MAX_EXPR_CHARS} are valid"
        )
    m = _LONG_DIGITS.search(text)
    if m:
        raise FormatError(
            f"a number with {len(m.group())} digits; at most {MAX_INT_DIGITS} "
            f"digits are valid in a saved expression"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        msg = getattr(exc, "msg", None) or type(exc).__name__
        raise FormatError(f"not a sympy srepr expression ({msg}): {text!r:.80}") from None
    try:
        return _Builder(functions or (lambda name: None)).build(tree.body, 0)
    except FormatError:
        raise
    except RecursionError:  # pragma: no cover - MAX_EXPR_DEPTH is far below the limit
        raise FormatError(f"the expression nests too deeply: {text!r:.80}") from None
    except Exception as exc:  # noqa: BLE001 - sympy refused whitelisted arguments
        raise FormatError(
            f"invalid sympy expression {text!r:.80} ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


class _Builder:
    """Builds whitelisted sympy objects from an ``ast`` tree, checking bounds first."""

    def __init__(self, functions: Callable[[str], Any]) -> None:
        self.functions = functions
        self.nodes = 0
        self._free: dict[int, tuple[Any, bool]] = {}  # id -> (object, has free symbols)

    def has_symbols(self, expr: Any) -> bool:
        """Whether ``expr`` has free symbols (memoised for the objects built here)."""
        hit = self._free.get(id(expr))
        if hit is None:
            hit = self._free[id(expr)] = (expr, bool(getattr(expr, "free_symbols", ())))
        return hit[1]

    def build(self, node: ast.AST, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_EXPR_NODES:
            raise FormatError(f"the expression has more than {MAX_EXPR_NODES} nodes")
        if depth > MAX_EXPR_DEPTH:
            raise FormatError(f"the expression nests more than {MAX_EXPR_DEPTH} calls deep")
        if isinstance(node, ast.Name):
            if node.id in SYMPY_CONSTANTS:
                return SYMPY_CONSTANTS[node.id]
            raise FormatError(
                f"the name {node.id!r:.60} is not allowed in a saved expression; "
                f"valid constants: {', '.join(SYMPY_CONSTANTS)}"
            )
        if not isinstance(node, ast.Call):
            what = type(node).__name__
            if isinstance(node, ast.Constant):
                kind = {str: "string", int: "integer", float: "number"}.get(
                    type(node.value), "literal"
                )
                what = f"{kind} {node.value!r:.40}"
            raise FormatError(
                f"unexpected {what} in a saved expression "
                f"(valid: calls of {', '.join(SYMPY_CLASSES)} and Function('name'))"
            )
        if isinstance(node.func, ast.Call):  # Function('name')(args)
            cls = self._function(node.func)
            if node.keywords:
                raise FormatError("keyword arguments of an applied function are not valid")
            return self._checked(cls(*[self.build(a, depth + 1) for a in node.args]))
        if not isinstance(node.func, ast.Name) or node.func.id not in SYMPY_CLASSES:
            what = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise FormatError(
                f"{what!r:.60} is not allowed in a saved expression; valid: "
                f"{', '.join(SYMPY_CLASSES)}, Function('name')"
            )
        cls = SYMPY_CLASSES[node.func.id]
        if cls is sympy.Symbol:
            return self._symbol(node)
        if cls is sympy.Float:
            return self._float(node)
        if cls in (sympy.Integer, sympy.Rational):
            return self._rational(cls, node)
        if node.keywords:
            raise FormatError(f"{cls.__name__} takes no keyword arguments in a saved expression")
        if cls in _VARIADIC and len(node.args) > _MAX_VARIADIC:
            raise FormatError(
                f"{cls.__name__} has {len(node.args)} arguments; at most {_MAX_VARIADIC} are valid"
            )
        args = [self.build(a, depth + 1) for a in node.args]
        self._precheck(cls, args)
        return self._checked(cls(*args))

    # -- leaves -------------------------------------------------------------------------
    def _function(self, node: ast.Call) -> Any:
        ok = (
            isinstance(node.func, ast.Name)
            and node.func.id == "Function"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        )
        if not ok:
            raise FormatError("only Function('name')(…) may be applied in a saved expression")
        name = node.args[0].value
        cls = self.functions(name) if name.isidentifier() and not keyword.iskeyword(name) else None
        if cls is None:
            raise FormatError(
                f"Function({name!r:.60}) is not valid: a saved expression may apply only a builtin "
                f"nonlinearity ({', '.join(sorted(BUILTINS))}) or a nonlinearity declared earlier "
                f"in the file, by a name that is a Python identifier"
            )
        return cls

    def _symbol(self, node: ast.Call) -> sympy.Symbol:
        if not (
            len(node.args) == 1
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            raise FormatError("Symbol takes one name (a string) in a saved expression")
        name = node.args[0].value
        if not (0 < len(name) <= 200 and name.isprintable()):
            raise FormatError(
                f"a Symbol name must be 1 to 200 printable characters, got {name!r:.60}"
            )
        kw = {}
        for k in node.keywords:
            if k.arg not in _assume_defined or not (
                isinstance(k.value, ast.Constant) and isinstance(k.value.value, bool)
            ):
                raise FormatError(
                    f"Symbol({name!r:.40}): {k.arg}=… is not valid; valid: "
                    f"assumptions such as real=True, positive=True"
                )
            kw[k.arg] = k.value.value
        return sympy.Symbol(name, **kw)

    def _float(self, node: ast.Call) -> sympy.Float:
        ok = (
            len(node.args) == 1
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and len(node.args[0].value) <= 64
            and _FLOAT_TEXT.fullmatch(node.args[0].value)
        )
        kw = {k.arg: k.value for k in node.keywords}
        prec = kw.get("precision")
        ok = (
            ok
            and set(kw) <= {"precision"}
            and (
                prec is None
                or (
                    isinstance(prec, ast.Constant)
                    and type(prec.value) is int
                    and 1 <= prec.value <= 1024
                )
            )
        )
        if not ok:
            raise FormatError(
                "Float takes a decimal literal (a string of at most 64 characters) "
                "and precision=1…1024 in a saved expression"
            )
        text = node.args[0].value
        value = sympy.Float(text, precision=prec.value) if prec is not None else sympy.Float(text)
        if not math.isfinite(float(value)):
            raise FormatError(f"Float({text!r}) is beyond float64; valid: finite numbers")
        return value

    def _rational(self, cls: Any, node: ast.Call) -> sympy.Rational:
        ints = []
        for a in node.args:
            neg = isinstance(a, ast.UnaryOp) and isinstance(a.op, ast.USub)
            c = a.operand if neg else a
            if not (isinstance(c, ast.Constant) and type(c.value) is int):
                raise FormatError(f"{cls.__name__} takes integer literals in a saved expression")
            ints.append(-c.value if neg else c.value)
        if node.keywords or len(ints) != (1 if cls is sympy.Integer else 2):
            raise FormatError(
                f"{cls.__name__} takes {'one integer' if cls is sympy.Integer else 'two integers'}"
            )
        if cls is sympy.Rational and ints[1] == 0:
            raise FormatError("Rational with denominator 0 is not a finite number")
        return cls(*ints)

    # -- bounds -------------------------------------------------------------------------
    @staticmethod
    def _precheck(cls: Any, args: list[Any]) -> None:
        """Refuse a power or product whose numbers would exceed the bounds, before computing it."""
        if cls is sympy.Pow and len(args) == 2:
            base, e = args
            if e.is_Number:
                _check_exponent(e)
                if base.is_Rational and e.is_Rational:
                    bits = max(_bits(base), 1) * abs(int(e.p))
                    if bits > MAX_NUMBER_BITS:
                        raise FormatError(
                            f"the power {base}**{e} would have about {bits} bits; "
                            f"at most {MAX_NUMBER_BITS} are valid"
                        )
        elif cls in (sympy.Add, sympy.Mul):
            bits = sum(_bits(a) for a in args if a.is_Rational)
            if bits > MAX_NUMBER_BITS:
                raise FormatError(
                    f"the numbers of a {cls.__name__} have {bits} bits together; at "
                    f"most {MAX_NUMBER_BITS} are valid"
                )
        elif cls is sympy.DiracDelta and len(args) == 2 and args[1].is_Number:
            _check_exponent(args[1])

    def _checked(self, expr: Any) -> Any:
        """Bounds on what sympy built (numbers, exponents), looking one level down.

        A constant (symbol-free) expression must be a finite real float64 number: by
        induction every constant argument sympy meets is moderate, so its own automatic
        evaluation (comparisons in ``Max``, ``Heaviside``, relations) stays cheap —
        ``exp(exp(10**39))`` is refused at the inner ``exp``.
        """
        free = (
            any(self.has_symbols(a) for a in expr.args)
            if expr.args
            else bool(getattr(expr, "free_symbols", ()))
        )
        self._free[id(expr)] = (expr, free)
        if not free and isinstance(expr, sympy.Expr):
            value = expr if expr.is_Number else expr.evalf(15)
            try:
                ok = bool(value.is_Number and value.is_real and math.isfinite(float(value)))
            except (TypeError, OverflowError):
                ok = False
            if not ok:
                raise FormatError(
                    f"the constant {str(expr)[:60]} is not a finite real float64 "
                    f"number (≈ {str(value)[:30]})"
                )
        for part in (expr, *getattr(expr, "args", ())):
            for x in (part, *(part.args[:1] if isinstance(part, sympy.Mul) else ())):
                if isinstance(x, sympy.Rational) and _bits(x) > MAX_NUMBER_BITS:
                    raise FormatError(
                        f"a number of {_bits(x)} bits; at most {MAX_NUMBER_BITS} are valid"
                    )
                if isinstance(x, sympy.Float) and not math.isfinite(float(x)):
                    raise FormatError(
                        f"the number {str(x)[:30]} is beyond float64; valid: finite numbers"
                    )
            if isinstance(part, sympy.Pow) and part.exp.is_Number:
                _check_exponent(part.exp)
        return expr


def _bits(x: sympy.Rational) -> int:
    return int(x.p).bit_length() + int(x.q).bit_length()


def _check_exponent(e: sympy.Number) -> None:
    if not (abs(float(e)) <= MAX_EXPONENT):
        raise FormatError(f"the exponent {float(e):.6g} is beyond ±{MAX_EXPONENT}")


hooks.dumps.register(Program, dumps)  # a program sent to executor workers (engine)
hooks.loads.register(str, loads)  # and read back there
