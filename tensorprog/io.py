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
     "program": {"name": ..., "nonlinearities": [...], "instructions": [...]},
     "limit": {...}}                                    # kind "limit" only

Expressions are read back by a restricted evaluator of ``srepr`` text (calls of
sympy classes on literals; no attribute access, no other names), never by ``eval``,
so a file cannot run code.

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
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sympy

from .engine.limit import ScalarTable
from .errors import (
    FormatVersionError,
    ProgramTypeError,
    ProgramValueError,
    TensorProgramError,
    UnknownNameError,
)
from .ir import INSTRUCTIONS, InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from .nonlin import BUILTINS, Nonlinearity

__all__ = [
    "FORMAT",
    "VERSION",
    "save",
    "load",
    "dumps",
    "loads",
    "to_dict",
    "from_dict",
    "LoadedLimit",
    "CorruptFileError",
    "MissingFileError",
]

#: The ``"format"`` tag of every file.
FORMAT = "tensorprog"
#: The format version this library writes (and the newest it reads).
VERSION = 1



class CorruptFileError(ProgramValueError):
    """A file is not a well-formed tensorprog file (bad JSON, missing or invalid fields)."""


class MissingFileError(TensorProgramError, FileNotFoundError):
    """The file to load (or the folder to save into) does not exist."""


# ---------------------------------------------------------------------------------------
# public entry points


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a Program or a Limit to ``path`` as JSON (atomically: all or nothing).

    Parameters
    ----------
    obj : Program or Limit
    path : str or os.PathLike
    """
    text = dumps(obj)
    path = _as_path(path, "save")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MissingFileError(f"tp.save: the folder {str(folder)!r} of {str(path)!r} does not exist")
    if path.is_dir():
        raise ProgramValueError(f"tp.save: {str(path)!r} is a directory; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike) -> Any:
    """Read a file written by ``save``: a :class:`Program` or a :class:`LoadedLimit`.

    Raises
    ------
    FormatVersionError
        if the file was written in a newer format version than this library reads.
    CorruptFileError
        (a :class:`~tensorprog.ProgramValueError`) if the file is not a well-formed
        tensorprog file; the message says what is wrong and where.
    MissingFileError
        (also a ``FileNotFoundError``) if there is no such file.

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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"tp.load: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise ProgramValueError(f"tp.load: {str(path)!r} is a directory, not a saved file") from None
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"tp.load: {str(path)!r} is not a tensorprog file (not UTF-8 text: {exc})") from None
    return loads(text, source=str(path))


def dumps(obj: Any) -> str:
    """The JSON text of a Program or Limit (what :func:`save` writes)."""
    return json.dumps(to_dict(obj), ensure_ascii=False, indent=1, allow_nan=False)


def loads(text: str, *, source: str = "<string>") -> Any:
    """Inverse of :func:`dumps`."""
    if not isinstance(text, str):
        raise ProgramTypeError(f"tp.io.loads needs a str, got {type(text).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{source} is not a tensorprog file: invalid JSON at line {exc.lineno}, "
            f"column {exc.colno} ({exc.msg})"
        ) from None
    return from_dict(data, source=source)


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-ready dict of a Program or Limit."""
    from . import __version__
    from .engine.limit import Limit
    from .program import Program

    head = {"format": FORMAT, "version": VERSION}
    if isinstance(obj, Program):
        return {**head, "kind": "program", "library_version": __version__,
                "program": _program_to_dict(obj)}
    if isinstance(obj, Limit):
        return {**head, "kind": "limit", "library_version": __version__,
                "program": _program_to_dict(obj.program), "limit": _limit_to_dict(obj)}
    raise ProgramTypeError(
        f"tp.save: can save a tp.Program or a Limit (p.limit()), got {type(obj).__name__}"
    )


def from_dict(data: Any, *, source: str = "<dict>") -> Any:
    """Inverse of :func:`to_dict`: a :class:`Program` or a :class:`LoadedLimit`."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise r.corrupt(f"the top level must be a JSON object, got {_jtype(data)}")
    if data.get("format") != FORMAT:
        raise r.corrupt(f'it has no "format": "{FORMAT}" header (got {data.get("format")!r})')
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise r.corrupt(f'"version" must be a positive int, got {version!r}')
    if version > VERSION:
        from . import __version__

        raise FormatVersionError(
            f"{source} has format version {version}, written by tensorprog "
            f"{data.get('library_version', '?')}; tensorprog {__version__} reads versions "
            f"≤ {VERSION}. Upgrade tensorprog to load it."
        )
    kind = data.get("kind")
    if kind not in ("program", "limit"):
        raise r.corrupt(f'"kind" must be "program" or "limit", got {kind!r}')
    program = _program_from_dict(r.field(data, "program", dict, "the file"), r)
    if kind == "program":
        return program
    return _limit_from_dict(r.field(data, "limit", dict, "the file"), program, data, r)


# ---------------------------------------------------------------------------------------
# programs


def _program_to_dict(p: Any) -> dict[str, Any]:
    p.check()
    fns: list[Nonlinearity] = []
    index: dict[int, int] = {}

    def fn_id(fn: Nonlinearity) -> int:
        if id(fn) not in index:
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
            d["value"] = _srepr(ins.value, f"the value of scalar {ins.out.name!r}")
        elif isinstance(ins, MatMul):
            d["matrix"], d["arg"], d["transpose"] = ins.matrix.name, ins.arg.name, bool(ins.transpose)
        else:
            d["fn"] = fn_id(ins.fn)
            if not isinstance(ins, ScalarFn):
                d["args"] = [v.name for v in ins.args]
            d["params"] = [v.name for v in ins.params]
        instrs.append(d)
    return {
        "name": p.name,
        "nonlinearities": [_fn_to_dict(f) for f in fns],
        "instructions": instrs,
    }


def _fn_to_dict(f: Nonlinearity) -> dict[str, Any]:
    what = f"nonlinearity {f.name!r}"
    return {
        "name": f.name,
        "args": [_srepr(s, what) for s in f.args],
        "params": [_srepr(s, what) for s in f.params],
        "body": _srepr(f.body, what),
        "opaque": bool(f.opaque),
        "latex": f.latex_name,
    }


def _srepr(expr: Any, what: str) -> str:
    """``srepr(expr)``, checked to read back to the same expression."""
    text = sympy.srepr(expr)
    try:
        back = parse_srepr(text)
    except CorruptFileError:
        back = None
    if back != expr:
        raise ProgramValueError(
            f"cannot save {what}: its expression {expr} does not survive a round trip "
            f"through sympy.srepr (it uses objects that are not plain sympy, e.g. a custom "
            f"Function class); write it with sympy's own functions"
        )
    return text


def _program_from_dict(d: dict[str, Any], r: "_Reader") -> Any:
    from .program import Program

    name = r.field(d, "name", str, "the program")
    fn_specs = r.field(d, "nonlinearities", list, "the program")
    instrs = r.field(d, "instructions", list, "the program")
    fns = [_fn_from_dict(spec, i, r) for i, spec in enumerate(fn_specs)]
    p = Program(name)
    handles: dict[str, Any] = {}

    def ref(i: int, dd: dict, key: str, kinds: tuple[str, ...]) -> Any:
        nm = r.field(dd, key, str, f"instruction {i}")
        h = handles.get(nm)
        if h is None:
            raise r.corrupt(f"instruction {i} ({dd.get('out')!r}): {key} {nm!r} is not defined earlier")
        if h.var.kind not in kinds:
            raise r.corrupt(f"instruction {i} ({dd.get('out')!r}): {key} {nm!r} is a {h.var.kind}, "
                            f"expected a {' or '.join(kinds)}")
        return h

    def refs(i: int, dd: dict, key: str, kinds: tuple[str, ...]) -> tuple[Any, ...]:
        names = r.field(dd, key, list, f"instruction {i}")
        return tuple(ref(i, {key: nm, "out": dd.get("out")}, key, kinds) for nm in names)

    for i, dd in enumerate(instrs):
        if not isinstance(dd, dict):
            raise r.corrupt(f"instruction {i} must be a JSON object, got {_jtype(dd)}")
        op = r.field(dd, "op", str, f"instruction {i}")
        out = r.field(dd, "out", str, f"instruction {i}")
        where = f"instruction {i} ({out!r})"
        try:
            if op == "init_matrix":
                h = p.matrix(out, var=r.number(dd, "var", where))
            elif op == "init_vector":
                cov_list = r.field(dd, "cov", list, where)
                cov = {}
                for item in cov_list:
                    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                        raise r.corrupt(f"{where}: cov entries must be [name, number], got {item!r}")
                    cov[ref(i, {"cov": item[0], "out": out}, "cov", ("vector",))] = r.number(
                        {"c": item[1]}, "c", where)
                h = p.vector(out, mean=r.number(dd, "mean", where), var=r.number(dd, "var", where),
                             cov=cov)
            elif op == "init_scalar":
                value = r.expr(r.field(dd, "value", str, where), where)
                h = p.scalar(out, value)
            elif op == "matmul":
                W = ref(i, dd, "matrix", ("matrix",))
                x = ref(i, dd, "arg", ("vector",))
                transpose = r.field(dd, "transpose", bool, where)
                h = (W.T if transpose else W).matmul(x, name=out)
            elif op in ("nonlin", "moment", "scalar_fn"):
                k = r.field(dd, "fn", int, where)
                if not 0 <= k < len(fns):
                    raise r.corrupt(f"{where}: fn {k} is not an index into the nonlinearities")
                fn = fns[k]
                args = () if op == "scalar_fn" else refs(i, dd, "args", ("vector",))
                params = refs(i, dd, "params", ("scalar",))
                if fn.arity != len(args) or fn.nparams != len(params):
                    raise r.corrupt(
                        f"{where}: nonlinearity {fn.name!r} takes {fn.arity} vector(s) and "
                        f"{fn.nparams} scalar(s), the instruction gives {len(args)} and {len(params)}")
                if op == "nonlin" and not args:
                    raise r.corrupt(f"{where}: a nonlin needs at least one vector argument")
                cls = {"nonlin": Nonlin, "moment": Moment, "scalar_fn": ScalarFn}[op]
                fields: dict[str, Any] = {"fn": fn, "params": tuple(h.var for h in params)}
                if cls is not ScalarFn:
                    fields["args"] = tuple(h.var for h in args)
                h = p._append(cls, out, **fields)
            else:
                raise r.corrupt(f"{where}: unknown op {op!r}; valid: {', '.join(cls.opname for cls in INSTRUCTIONS)}")
        except CorruptFileError:
            raise
        except TensorProgramError as exc:  # the DSL's own validation of a bad value
            raise r.corrupt(f"{where}: {exc}") from None
        if h.name != out:  # pragma: no cover - names are given explicitly
            raise r.corrupt(f"{where}: could not restore the name")
        handles[out] = h
    try:
        p.check()
    except TensorProgramError as exc:
        raise r.corrupt(f"the program does not check: {exc}") from None
    return p


def _fn_from_dict(spec: Any, i: int, r: "_Reader") -> Nonlinearity:
    where = f"nonlinearity {i}"
    if not isinstance(spec, dict):
        raise r.corrupt(f"{where} must be a JSON object, got {_jtype(spec)}")
    name = r.field(spec, "name", str, where)
    where = f"nonlinearity {i} ({name!r})"
    args = [r.expr(s, where) for s in r.field(spec, "args", list, where)]
    params = [r.expr(s, where) for s in r.field(spec, "params", list, where)]
    if not all(isinstance(s, sympy.Symbol) for s in args + params):
        raise r.corrupt(f"{where}: args and params must be sympy Symbols")
    body = r.expr(r.field(spec, "body", str, where), where)
    opaque = r.field(spec, "opaque", bool, where)
    latex = r.field(spec, "latex", str, where)
    try:
        fn = Nonlinearity(name, body, args, params, opaque=opaque, latex=latex)
    except TensorProgramError as exc:
        raise r.corrupt(f"{where}: {exc}") from None
    return _builtin_like(fn) or fn


def _builtin_like(fn: Nonlinearity) -> Nonlinearity | None:
    """The builtin (or derivative of a builtin, up to 2nd order) identical to ``fn``."""

    def same(b: Nonlinearity) -> bool:
        return (b.name == fn.name and b.key == fn.key and b.opaque == fn.opaque
                and b.latex_name == fn.latex_name)

    for b in BUILTINS.values():
        cands = [b]
        if b.arity + b.nparams == 1 and fn.name.startswith(b.name):
            d1 = b.derivative()
            cands += [d1, d1.derivative()]
        for c in cands:
            if same(c):
                return c
    return None


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
        scalars.append({
            "name": v.name,
            "value": _float_out(lim[v.name]),
            "stderr": _float_out(lim.stderr(v.name)),
            "error": _float_out(lim.error(v.name)),
            "method": lim.method(v.name),
        })
    return {"meta": {k: _jsonable(x) for k, x in meta.items()}, "scalars": scalars}


def _limit_from_dict(d: dict[str, Any], program: Any, head: dict, r: "_Reader") -> "LoadedLimit":
    meta = r.field(d, "meta", dict, "the limit")
    rows = r.field(d, "scalars", list, "the limit")
    values, stderr, errors, methods = {}, {}, {}, {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise r.corrupt(f"limit scalar {i} must be a JSON object, got {_jtype(row)}")
        name = r.field(row, "name", str, f"limit scalar {i}")
        where = f"limit scalar {i} ({name!r})"
        if name not in program or program[name].var.kind != "scalar":
            raise r.corrupt(f"{where} is not a scalar of the saved program")
        values[name] = r.number(row, "value", where, nonfinite=True)
        stderr[name] = r.number(row, "stderr", where, nonfinite=True)
        errors[name] = r.number(row, "error", where, nonfinite=True)
        method = r.field(row, "method", str, where)
        if method not in ("exact", "quadrature", "montecarlo"):
            raise r.corrupt(f"{where}: unknown method {method!r}")
        methods[name] = method
    return LoadedLimit(program, values, stderr, errors, methods, dict(meta),
                       head.get("library_version"), r.source)


class LoadedLimit(ScalarTable):
    """The numbers of a saved :class:`~tensorprog.engine.Limit` (from :func:`load`).

    Lookup by name or by a handle of :attr:`program` (the saved program, rebuilt):
    ``lim["k"]``, ``lim.stderr("k")``, ``lim.error("k")``, ``lim.method("k")`` — the
    same lookups as a :class:`~tensorprog.engine.Limit` (shared :class:`ScalarTable`).

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

    def __init__(self, program: Any, values: dict[str, float], stderrs: dict[str, float],
                 errors: dict[str, float], methods: dict[str, str], meta: dict[str, Any],
                 library_version: str | None, source: str) -> None:
        super().__init__(program, values, stderrs, errors, methods, meta)
        self.library_version = library_version
        self.source = source

    def _name(self, key: Any) -> str:
        name = super()._name(key)
        if name not in self._values:  # pragma: no cover - a saved limit holds every scalar
            raise UnknownNameError(f"the saved limit of {self.program.name!r} has no scalar {name!r}")
        return name

    def _title(self) -> str:
        return (f"Saved limit of {self.program.name!r} (method={self.method_requested!r}, "
                f"tensorprog {self.library_version})")


# ---------------------------------------------------------------------------------------
# reading helpers


class _Reader:
    """Field access with errors that say what is wrong and where."""

    def __init__(self, source: str) -> None:
        self.source = source

    def corrupt(self, msg: str) -> CorruptFileError:
        return CorruptFileError(f"corrupt tensorprog file {self.source}: {msg}")

    def field(self, d: Mapping, key: str, typ: type, where: str) -> Any:
        if key not in d:
            raise self.corrupt(f'{where} has no "{key}" field')
        x = d[key]
        ok = isinstance(x, typ) and not (typ is int and isinstance(x, bool))
        if not ok:
            raise self.corrupt(f'{where}: "{key}" must be a {_JTYPES.get(typ, typ.__name__)}, '
                               f"got {_jtype(x)} {x!r:.60}")
        return x

    def number(self, d: Mapping, key: str, where: str, nonfinite: bool = False) -> float:
        if key not in d:
            raise self.corrupt(f'{where} has no "{key}" field')
        x = d[key]
        if nonfinite and x in ("inf", "-inf", "nan"):
            return float(x)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise self.corrupt(f'{where}: "{key}" must be a number, got {_jtype(x)} {x!r:.60}')
        return float(x)

    def expr(self, text: Any, where: str) -> Any:
        if not isinstance(text, str):
            raise self.corrupt(f"{where}: expressions are srepr strings, got {_jtype(text)}")
        try:
            return parse_srepr(text)
        except CorruptFileError as exc:
            raise self.corrupt(f"{where}: {exc}") from None


_JTYPES = {dict: "JSON object", list: "JSON array", str: "string", int: "integer", bool: "boolean"}


def _jtype(x: Any) -> str:
    if x is None:
        return "null"
    for t, nm in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                  (list, "JSON array"), (dict, "JSON object")):
        if isinstance(x, t):
            return nm
    return type(x).__name__


def _float_out(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def _jsonable(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return _float_out(x)
    if hasattr(x, "__index__"):
        return int(x)
    return repr(x)


# ---------------------------------------------------------------------------------------
# a restricted reader of sympy srepr text


def parse_srepr(text: str) -> Any:
    """Rebuild a sympy object from ``sympy.srepr`` text without ``eval``.

    Only calls of sympy classes (``Symbol``, ``Integer``, ``Float``, ``Add``,
    ``tanh``, ``Function('f')``, ...) on literals and other such calls, sympy
    singletons (``pi``, ``E``, ``true``, ...) and tuples are accepted.

    Raises
    ------
    CorruptFileError
        for anything else.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CorruptFileError(f"not a sympy srepr expression ({exc.msg}): {text!r:.80}") from None
    try:
        return _eval_node(tree.body)
    except CorruptFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - sympy rejected the arguments
        raise CorruptFileError(f"invalid sympy expression {text!r:.80} ({type(exc).__name__}: {exc})") from None


def _sympy_name(name: str) -> Any:
    obj = getattr(sympy, name, None)
    ok = isinstance(obj, sympy.Basic) or (isinstance(obj, type) and issubclass(obj, sympy.Basic))
    if not ok:
        obj = _sympy_classes().get(name)
    if obj is None:
        raise CorruptFileError(f"{name!r} is not a sympy class or constant")
    return obj


def _sympy_classes() -> dict[str, type]:
    """Every imported subclass of ``sympy.Basic`` defined by sympy itself, by name."""
    out: dict[str, type] = {}
    stack = [sympy.Basic]
    while stack:
        cls = stack.pop()
        for sub in type.__subclasses__(cls) if isinstance(cls, type) else ():
            if str(getattr(sub, "__module__", "")).startswith("sympy.") and sub.__name__ not in out:
                out[sub.__name__] = sub
            stack.append(sub)
    return out


def _eval_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(
            node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
        return -node.operand.value
    if isinstance(node, ast.Tuple):
        return tuple(_eval_node(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_eval_node(e) for e in node.elts]
    if isinstance(node, ast.Name):
        return _sympy_name(node.id)
    if isinstance(node, ast.Call):
        func = _eval_node(node.func)
        callable_ok = (isinstance(func, type) and issubclass(func, sympy.Basic)) or isinstance(
            func, sympy.FunctionClass)
        if not callable_ok:
            raise CorruptFileError(f"cannot call {func!r} in a saved expression")
        args = [_eval_node(a) for a in node.args]
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise CorruptFileError("**kwargs are not allowed in a saved expression")
            kwargs[kw.arg] = _eval_node(kw.value)
        # Strings reach sympy only where srepr puts them (names and Float digits): a
        # string anywhere else would be sympified, i.e. parsed and evaluated.
        for i, a in enumerate(args):
            if isinstance(a, str) and not (i == 0 and _takes_string(func, a)):
                raise CorruptFileError(f"unexpected string {a!r:.40} as argument {i} of {func.__name__}")
        for k, a in kwargs.items():
            if not isinstance(a, (bool, int, type(None))) and not (
                    k == "dummy_index" and isinstance(a, int)):
                raise CorruptFileError(f"unexpected keyword value {k}={a!r:.40} for {func.__name__}")
        return func(*args, **kwargs)
    raise CorruptFileError(f"unexpected {type(node).__name__} in a saved expression")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _takes_string(func: Any, s: str) -> bool:
    """Whether ``func(s, …)`` is a name or a literal, never a parsed expression."""
    if func is sympy.Float:
        return bool(_NUMBER.fullmatch(s))
    names = (sympy.Symbol, sympy.Dummy, sympy.Wild, sympy.Function)
    return any(func is t for t in names) and s.isprintable()


def _as_path(path: Any, what: str) -> Path:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if str(p) == "" or str(p) == ".":
            raise ProgramValueError(f"tp.{what}: path must name a file, got {path!r}")
        return p
    raise ProgramTypeError(f"tp.{what}: path must be a str or os.PathLike, got {type(path).__name__}")
