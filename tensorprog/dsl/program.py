"""The tracing DSL: :class:`Program` and the handles it hands out.

Operator overloading is thin sugar over explicit construction of IR records
(:mod:`tensorprog.core.ir`): every operation on handles appends one instruction to the
handles' program, unless the program already computes the same thing (then the
earlier variable is returned: ``tp.relu(h)`` twice is one instruction; see
:attr:`Program.aliases` for a computation given a second name).

Examples
--------
>>> import tensorprog as tp
>>> p = tp.Program("AtAv")
>>> A = p.matrix("A", var=2.0)
>>> v = p.vector("v")
>>> x = A.T @ (A @ v)
>>> k = tp.inner(v, x, name="k")
>>> print(p)
Program 'AtAv'
  A : matrix n×n, entries N(0, 2/n)
  v : vector, coordinates N(0, 1)
  h1 = A @ v
  h2 = A.T @ h1
  k = mean(h2*v)
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from ..core import hooks, ir
from ..core.errors import (
    ForeignHandleError,
    NonPSDError,
    ProgramTypeError,
    ProgramValueError,
    UnknownNameError,
)
from ..core.ir import (
    InitMatrix,
    InitScalar,
    InitVector,
    Instruction,
    MatMul,
    Moment,
    Nonlin,
    OuterNonlin,
    ScalarFn,
    Var,
    format_instruction,
)
from ..core.nonlin import BUILTINS, Nonlinearity, _arg_symbols, identity, sympify_strict
from ..core.psd import check_psd

if TYPE_CHECKING:
    import networkx as nx

_SPACE = re.compile(r"\s")

__all__ = [
    "Program",
    "Handle",
    "Matrix",
    "Vector",
    "Scalar",
    "mean",
    "inner",
    "nonlin",
    "outer_nonlin",
    "apply_nonlinearity",
]

_PREFIX = {
    InitMatrix: "W",
    InitVector: "v",
    InitScalar: "c",
    MatMul: "h",
    Nonlin: "x",
    OuterNonlin: "o",
    Moment: "m",
    ScalarFn: "s",
}
_KIND = {
    InitMatrix: "matrix",
    InitVector: "vector",
    InitScalar: "scalar",
    MatMul: "vector",
    Nonlin: "vector",
    OuterNonlin: "vector",
    Moment: "scalar",
    ScalarFn: "scalar",
}


class Program:
    """A Tensor Program under construction (and, once built, the object to analyse).

    Parameters
    ----------
    name : str
        A name for printing.

    Notes
    -----
    The program is append-only: instructions are never changed or removed, so every
    handle stays valid and the instruction list is already in topological order.

    A repeated computation is recorded once: ``W @ x``, ``tp.relu(h)``, ``2 * x`` or
    ``tp.mean(x)`` applied again to the same variables returns the earlier handle, so
    printed programs and derivations are not padded (initial matrices, vectors and
    scalars are independent objects and always new). Given a new name, the repeated
    computation's name becomes an alias of the earlier variable (:attr:`aliases`).

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program("two_layer")
    >>> W = p.matrix("W", var=2.0)
    >>> x = p.vector("x")
    >>> k = tp.mean(tp.relu(W @ x) ** 2, name="k")
    >>> len(p)  # W, x, W @ x, relu(·), (·)**2, mean(·)
    6
    """

    def __init__(self, name: str = "program") -> None:
        if not isinstance(name, str):
            raise ProgramTypeError(f"Program name must be a str, got {type(name).__name__}")
        self.name = name
        self._instructions: list[Instruction] = []
        self._by_name: dict[str, Instruction] = {}
        self._counter = itertools.count(1)
        self._init_vectors: list[Var] = []
        self._init_cov = np.zeros((0, 0))
        self._version = 0
        self._computed: dict[tuple, Var] = {}  # computation key -> its variable (CSE)
        self._functions = _Functions()  # the functions of those keys, up to equality
        self._aliases: dict[str, Var] = {}
        self._sections: list[tuple[int, str]] = []  # (first instruction index, title)

    # -- container protocol -------------------------------------------------------
    @property
    def instructions(self) -> tuple[Instruction, ...]:
        """The instructions, in program (topological) order."""
        return tuple(self._instructions)

    def __len__(self) -> int:
        return len(self._instructions)

    def __iter__(self) -> Iterator[Instruction]:
        return iter(tuple(self._instructions))

    def __getitem__(self, name: str) -> "Handle":
        """Look a handle up by name: ``p["k"]``."""
        return _handle(self, self.var(name, f"{self.name}[…]"))

    def var(
        self,
        key: "Handle | str",
        what: str | Callable[[], str] = "Program.var",
        *,
        before: int | None = None,
    ) -> Var:
        """The variable that ``key``, a handle of this program or a name, stands for.

        The one lookup "handle or name → :class:`~tensorprog.core.ir.Var`": ``p[key]``, the
        lookups of a Limit (``lim[k]``, ``lim.Z(x)``, ...), of a Simulation and of a saved
        limit all go through it.

        Parameters
        ----------
        key : Handle or str
            A handle of this program, or the name of one of its variables (an alias
            names the variable it aliases, :attr:`aliases`).
        what : str or callable, optional
            The operation, named at the start of an error message (a callable is called
            only on error, to format it).
        before : int, optional
            For a result computed from the program's first ``before`` instructions (a
            Limit, a Simulation): a variable defined later is an error saying so.

        Returns
        -------
        Var

        Raises
        ------
        ForeignHandleError
            ``key`` is a handle of another program.
        UnknownNameError
            No variable has the name ``key``, or (with ``before``) the variable was added
            after the result was computed.

        Examples
        --------
        >>> import tensorprog as tp
        >>> p = tp.Program()
        >>> v = p.vector("v")
        >>> p.var(v) is p.var("v") is v.var
        True
        """
        if isinstance(key, Handle):
            v = self._own(key, what)
        else:
            try:
                v = self._by_name[key].out
            except (KeyError, TypeError):
                some = ", ".join(list(self._by_name)[:12])
                raise UnknownNameError(
                    f"program {self.name!r} has no variable named {key!r}; names include: {some}"
                ) from None
        if before is None or v.id < before:
            return v
        if callable(what):
            what = what()
        raise UnknownNameError(
            f"{what}: {v.name} was added to program {self.name!r} after this {what} was "
            f"computed (from its first {before} instructions; it now has "
            f"{len(self.instructions)}); compute it again to include {v.name}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def definition(self, var: "Var | Handle") -> Instruction:
        """The instruction that defines ``var``."""
        v = var.var if isinstance(var, Handle) else var
        if not isinstance(v, Var):
            raise ProgramTypeError(
                f"definition: expected a handle or Var of program {self.name!r}, "
                f"got {type(var).__name__}"
            )
        instr = self._instructions[v.id] if 0 <= v.id < len(self._instructions) else None
        if instr is None or instr.out is not v:
            raise ForeignHandleError(f"{v.name} is not a variable of program {self.name!r}")
        return instr

    def __str__(self) -> str:
        lines = [f"Program {self.name!r}"]
        starts = dict(self._sections)
        for k, instr in enumerate(self._instructions):
            if k in starts:
                lines.append(f"  # {starts[k]}")
            lines.append("  " + format_instruction(instr))
        return "\n".join(lines)

    # -- sections -----------------------------------------------------------------------
    def section(self, title: str) -> None:
        """Start a section: the instructions recorded from now on, until the next
        section, belong to ``title`` (e.g. one step of an unrolled training run).

        Sections change nothing but the printouts: ``str(p)`` shows ``# title`` lines,
        the LaTeX of the program and of its limit a heading per section. They are
        saved with the program.

        Parameters
        ----------
        title : str
            A one-line title (printed as text).

        Examples
        --------
        >>> import tensorprog as tp
        >>> p = tp.Program()
        >>> h = p.vector("h")
        >>> p.section("step 1")
        >>> x = tp.relu(h, name="x")
        >>> print(p)
        Program 'program'
          h : vector, coordinates N(0, 1)
          # step 1
          x = relu(h)
        >>> p.sections
        (('step 1', 1, 2),)
        """
        _check_section_title(title)
        at = len(self._instructions)
        if self._sections and self._sections[-1][0] == at:
            self._sections[-1] = (at, title)  # an empty section is replaced
        else:
            self._sections.append((at, title))

    @property
    def sections(self) -> tuple[tuple[str, int, int], ...]:
        """``(title, start, stop)`` of every section: its instructions are
        ``p.instructions[start:stop]``."""
        ends = [k for k, _ in self._sections[1:]] + [len(self._instructions)]
        return tuple((title, k, e) for (k, title), e in zip(self._sections, ends))

    def __repr__(self) -> str:
        return f"<Program {self.name!r}: {len(self)} instructions>"

    # -- construction of initial objects ----------------------------------------------
    def matrix(self, name: str | None = None, var: float = 1.0) -> "Matrix":
        """An initial n×n Gaussian matrix with iid ``N(0, var/n)`` entries.

        Examples
        --------
        >>> import tensorprog as tp
        >>> W = tp.Program().matrix("W", var=2.0)
        >>> W.variance
        2.0
        """
        var = _nonneg_float(var, "var", f"matrix {name!r}")
        return self._append(InitMatrix, name, var=var)  # type: ignore[return-value]

    def vector(
        self,
        name: str | None = None,
        mean: float = 0.0,
        var: float = 1.0,
        cov: Mapping["Vector", float] | None = None,
    ) -> "Vector":
        """An initial vector with coordinates iid ``N(mean, var)``.

        Parameters
        ----------
        cov : dict, optional
            ``{earlier_initial_vector: covariance}`` — coordinatewise covariance with
            earlier initial vectors (the joint covariance must stay PSD).

        Examples
        --------
        >>> import tensorprog as tp
        >>> p = tp.Program()
        >>> x = p.vector("x")
        >>> y = p.vector("y", var=1.0, cov={x: 0.3})
        """
        what = f"vector {name!r}"
        mean = _finite_float(mean, "mean", what)
        var = _nonneg_float(var, "var", what)
        pairs: list[tuple[Var, float]] = []
        if cov is not None and not isinstance(cov, Mapping):
            raise ProgramTypeError(
                f"{what}: cov must be a dict {{earlier_initial_vector: covariance}}, got "
                f"{type(cov).__name__} (for a joint B×B covariance use p.vectors(name, cov=K))"
            )
        for other, c in (cov or {}).items():
            o = self._own(other, f"cov of {what}")
            if self.definition(o).__class__ is not InitVector:
                raise ProgramTypeError(
                    f"cov of {what}: {o.name} is not an initial vector; covariances can only "
                    f"be given with earlier initial vectors (p.vector / p.vectors)"
                )
            pairs.append((o, _finite_float(c, f"cov[{o.name}]", what)))
        if any(c != 0.0 for _, c in pairs):  # uncorrelated with all earlier: PSD iff var ≥ 0
            self._check_init_cov(var, dict(pairs), what)
        h = self._append(InitVector, name, mean=mean, var=var, cov=tuple(pairs))
        self._commit_init_cov(h.var, var, dict(pairs))
        return h  # type: ignore[return-value]

    def vectors(
        self,
        name: str,
        cov: Any,
        mean: Sequence[float] | float | None = None,
    ) -> list["Vector"]:
        """``B`` jointly Gaussian initial vectors with ``B×B`` covariance ``cov``.

        The vectors are named ``f"{name}_{i}"``.

        Examples
        --------
        >>> import numpy as np, tensorprog as tp
        >>> xs = tp.Program().vectors("xi", cov=np.array([[1.0, 0.5], [0.5, 1.0]]))
        >>> [x.name for x in xs]
        ['xi_0', 'xi_1']
        """
        what = f"vectors {name!r}"
        if not isinstance(name, str):
            raise ProgramTypeError(f"{what}: name must be a str (the vectors are named name_i)")
        _refuse_complex(cov, "cov", what)
        _refuse_complex(mean, "mean", what)
        try:
            K = np.asarray(cov, dtype=float)
        except (TypeError, ValueError):
            raise ProgramTypeError(
                f"{what}: cov must be a square matrix of real numbers, got {cov!r:.80}"
            ) from None
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
            raise ProgramValueError(
                f"{what}: cov must be a non-empty square matrix, got shape {K.shape}"
            )
        if not np.all(np.isfinite(K)):
            raise ProgramValueError(f"{what}: cov has non-finite entries")
        if not np.allclose(K, K.T, rtol=1e-10, atol=1e-12):
            raise NonPSDError(f"{what}: cov must be symmetric")
        B = K.shape[0]
        try:
            means = np.broadcast_to(np.asarray(0.0 if mean is None else mean, dtype=float), (B,))
        except (ValueError, TypeError):
            raise ProgramValueError(
                f"{what}: mean must be a number or a sequence of {B} numbers, got {mean!r}"
            ) from None
        if not np.all(np.isfinite(means)):
            raise ProgramValueError(f"{what}: mean must be finite, got {mean!r}")
        for i in range(B):  # validate every name first: the call adds all vectors or none
            self._new_name(InitVector, f"{name}_{i}")
        # The block is uncorrelated with earlier initial vectors, so the joint covariance
        # is PSD iff K is: one eigendecomposition for the block, not one per vector.
        check_psd(K, what)
        out: list[Vector] = []
        for i in range(B):
            cov_i = tuple((out[j].var, float(K[i, j])) for j in range(i) if K[i, j] != 0.0)
            out.append(
                self._append(
                    InitVector,
                    f"{name}_{i}",
                    mean=float(means[i]),  # type: ignore[arg-type]
                    var=float(K[i, i]),
                    cov=cov_i,
                )
            )
        m = len(self._init_vectors)
        joint = np.zeros((m + B, m + B))
        joint[:m, :m] = self._init_cov
        joint[m:, m:] = K
        self._init_cov = joint
        self._init_vectors.extend(h.var for h in out)
        return out

    def scalar(self, name: str | None = None, value: Any = 0.0) -> "Scalar":
        """An initial scalar with deterministic limit ``value``.

        ``value`` is a number or a sympy expression; it may depend on the width
        ``tp.n`` (the simulator substitutes n, the limit takes n → ∞).

        Examples
        --------
        >>> import tensorprog as tp
        >>> p = tp.Program()
        >>> c = p.scalar("c", 0.5)
        >>> r = p.scalar("r", tp.n ** -0.5)   # tends to 0
        """
        what = f"scalar {name!r}"
        _refuse_complex(value, "value", what, ProgramValueError)  # (as 1 + 2·I below)
        try:
            val = sympify_strict(value, what)
        except ProgramTypeError:
            raise
        except (sympy.SympifyError, TypeError) as exc:
            raise ProgramTypeError(
                f"{what}: value must be a number or sympy expression, got {value!r}"
            ) from exc
        if not isinstance(val, sympy.Expr):
            raise ProgramTypeError(
                f"{what}: value must be a number or sympy expression, got {value!r}"
            )
        free = val.free_symbols - {ir.WIDTH}
        if free:
            raise ProgramValueError(
                f"{what}: value {val} has free symbols {sorted(map(str, free))}; only the "
                f"width tp.n may appear"
            )
        lim = _limit_in_n(val)
        if not (lim.is_number and lim.is_real and lim.is_finite):
            raise ProgramValueError(
                f"{what}: value {val} must have a finite real limit as n → ∞, got {lim}"
            )
        return self._append(InitScalar, name, value=val)  # type: ignore[return-value]

    # -- analysis -------------------------------------------------------------------
    @property
    def graph(self) -> nx.DiGraph:
        """A networkx DiGraph of the dependencies, derived from the instructions.

        Nodes are variable names with attributes ``instruction`` and ``kind``; an edge
        ``u → v`` means ``u`` is an input of ``v``'s instruction (attribute
        ``positions``: the argument positions; argument order lives on the instruction).
        """
        return _graph(self, self._version)

    def check(self) -> None:
        """Validate the program (single assignment, types, arities, PSD initial law).

        Raises
        ------
        TensorProgramError
            naming the first offending instruction.
        """
        # Append-only: a checked prefix stays valid, so only new instructions are checked.
        instrs = self._instructions
        start = getattr(self, "_checked_upto", 0)
        for pos in range(start, len(instrs)):
            instr = instrs[pos]
            if instr.out.id != pos:  # (ids are positions: no variable is defined twice)
                raise ProgramValueError(
                    f"`{format_instruction(instr)}`: variable defined twice or out of order"
                )
            for v in instr.inputs:
                if v.id >= pos or instrs[v.id].out is not v:
                    raise ProgramValueError(
                        f"`{format_instruction(instr)}`: input {v.name} is "
                        f"not defined earlier in {self.name!r}"
                    )
            _check_types(self, instr)
        if self._init_vectors and len(self._init_vectors) != getattr(self, "_checked_inits", 0):
            check_psd(self._init_cov, "the initial vectors' joint covariance")
        self._checked_upto = len(instrs)
        self._checked_inits = len(self._init_vectors)

    # -- interpreters (implemented in higher layers, reached through tensorprog.core.hooks) --
    def simulate(self, n: int, seed: Any = 0, **kwargs: Any) -> Any:
        """Run the program at finite width ``n``; see :func:`tensorprog.simulate`."""
        return hooks.simulate(self, n, seed=seed, **kwargs)

    def limit(self, method: str = "auto", **kwargs: Any) -> Any:
        """The infinite-width limit by the Master Theorem.

        ``p.limit(method, **options)`` is :func:`tensorprog.engine.limit` applied to ``p``.
        """
        return hooks.limit(self, method=method, **kwargs)

    def latex(self, document: bool = False) -> str:
        """The program as LaTeX (``document=True``: standalone); see :mod:`tensorprog.latex`."""
        return hooks.latex(self, document=document)

    def _repr_latex_(self) -> str:
        return hooks.repr_latex(self)

    def save(self, path: Any) -> None:
        """Write the whole program to ``path`` (versioned JSON); read it back with ``tp.load``.

        Lossless: the loaded program prints the same instructions, has the same names
        and the same limit. See :mod:`tensorprog.io`.
        """
        hooks.save(self, path)

    # -- internals ------------------------------------------------------------------
    def _own(self, h: Any, what: str | Callable[[], str]) -> Var:
        """``h``'s Var if ``h`` is a handle of this program; ``what`` (or ``what()``,
        formatted only on error) names the operation in the error."""
        if isinstance(h, Handle) and h.program is self:
            return h.var
        if callable(what):
            what = what()
        if not isinstance(h, Handle):
            raise ProgramTypeError(
                f"{what}: expected a handle of program {self.name!r}, got {type(h).__name__}"
            )
        if h.program is not self:
            raise ForeignHandleError(
                f"{what}: {h.name} belongs to program {h.program.name!r}, not {self.name!r}; "
                f"handles of different programs cannot be mixed"
            )
        return h.var

    def _new_name(self, cls: type, name: str | None) -> str:
        if name is None:
            while True:
                cand = f"{_PREFIX[cls]}{next(self._counter)}"
                if cand not in self._by_name:
                    return cand
        if not isinstance(name, str) or not name or _SPACE.search(name):
            raise ProgramValueError(f"name must be a non-empty str without spaces, got {name!r}")
        if name in self._by_name:
            raise ProgramValueError(
                f"name {name!r} is already used in program {self.name!r} by "
                f"`{format_instruction(self._by_name[name])}`; names are unique"
            )
        return name

    def _append(self, cls: type, name: str | None, **fields: Any) -> "Handle":
        """Record one instruction, or return the variable of an identical earlier one.

        Common-subexpression elimination at recording time: a MatMul, Nonlin, Moment or
        ScalarFn whose :func:`_computation` key (instruction class, operands, and the
        function with its name and constants) equals an earlier instruction's is the same
        deterministic function of the same inputs, so it is not recorded again; a new
        ``name`` becomes an alias of the earlier variable (:attr:`aliases`). Initial
        objects (independent draws) are always recorded.
        """
        key = _computation(cls, fields, self._functions)
        if key is not None:
            same = self._computed.get(key)
            if same is not None:
                if name is not None and name != same.name:
                    self._alias(name, same)
                return _handle(self, same)
        var = Var(len(self._instructions), _KIND[cls], self._new_name(cls, name))  # type: ignore[arg-type]
        instr = cls(out=var, **fields)
        self._instructions.append(instr)
        self._by_name[var.name] = instr
        if key is not None:
            self._computed[key] = var
        self._version += 1
        return _handle(self, var)

    def _alias(self, name: str, var: Var) -> None:
        """Make ``name`` a second name of ``var`` (no instruction is recorded)."""
        instr = self.definition(var)
        self._new_name(type(instr), name)  # a valid name, not yet used
        self._by_name[name] = instr
        self._aliases[name] = var

    @property
    def aliases(self) -> dict[str, str]:
        """Second names of variables: ``{alias: name}``, in the order they were given.

        A computation recorded again under a new name (``tp.relu(h, name="a")`` after
        ``tp.relu(h, name="b")``) is not a new instruction; its name is an alias: ``p["a"]``
        is the handle of ``b``, and results (``lim["a"]``, ``sim["a"]``) are looked up by
        either name. Aliases are saved with the program.

        Examples
        --------
        >>> import tensorprog as tp
        >>> p = tp.Program()
        >>> h = p.vector("h")
        >>> a, b = tp.relu(h, name="a"), tp.relu(h, name="b")
        >>> a is not b and a == b, len(p), p.aliases
        (True, 2, {'b': 'a'})
        """
        return {k: v.name for k, v in self._aliases.items()}

    def _check_init_cov(self, var: float, cov: dict[Var, float], what: str) -> None:
        K = self._extended_cov(var, cov)
        check_psd(K, f"{what}: the joint covariance with earlier initial vectors")

    def _extended_cov(self, var: float, cov: dict[Var, float]) -> np.ndarray:
        m = len(self._init_vectors)
        K = np.zeros((m + 1, m + 1))
        K[:m, :m] = self._init_cov
        for j, v in enumerate(self._init_vectors):
            K[m, j] = K[j, m] = cov.get(v, 0.0)
        K[m, m] = var
        return K

    def _commit_init_cov(self, v: Var, var: float, cov: dict[Var, float]) -> None:
        self._init_cov = self._extended_cov(var, cov)
        self._init_vectors.append(v)

    @property
    def initial_vectors(self) -> tuple[Var, ...]:
        """The initial vectors in order (rows of :attr:`initial_covariance`)."""
        return tuple(self._init_vectors)

    @property
    def initial_covariance(self) -> np.ndarray:
        """Joint covariance of the initial vectors' coordinates."""
        return self._init_cov.copy()

    @property
    def initial_mean(self) -> np.ndarray:
        """Means of the initial vectors' coordinates."""
        return np.array([self._instructions[v.id].mean for v in self._init_vectors])


# ---------------------------------------------------------------------------------------
# handles


class Handle:
    """A reference to one variable of one program (what DSL calls return)."""

    __slots__ = ("program", "var")

    def __init__(self, program: Program, var: Var) -> None:
        self.program = program
        self.var = var

    @property
    def name(self) -> str:
        """The variable's name, unique within its program."""
        return self.var.name

    @property
    def instruction(self) -> Instruction:
        """The instruction defining this variable."""
        return self.program.definition(self.var)

    def __hash__(self) -> int:
        return hash((id(self.program), self.var.id))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.program is self.program and other.var is self.var

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {format_instruction(self.instruction)}>"

    def __bool__(self) -> bool:
        return True

    @staticmethod
    def _apply_nonlinearity(
        fn: Nonlinearity, inputs: Sequence[Any], *, name: str | None = None
    ) -> "Handle":
        """How ``fn(*handles)`` (:meth:`Nonlinearity.__call__`) reaches the DSL."""
        return apply_nonlinearity(fn, inputs, name=name)

    # numpy: an array operand must not broadcast over handles (an object array, one
    # instruction per entry); numpy defers every operator and ufunc to this method.
    __array_priority__ = 1000

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _numpy_ufunc(ufunc, method, inputs, kwargs)


class Matrix(Handle):
    """Handle of an initial n×n matrix; supports ``W @ x`` and ``W.T @ x``."""

    __slots__ = ()

    @property
    def variance(self) -> float:
        """The entry variance ``σ_W²`` (entries ``N(0, σ_W²/n)``)."""
        return self.instruction.var  # type: ignore[attr-defined]

    @property
    def T(self) -> "Transposed":
        """The transpose ``Wᵀ`` (only usable on the left of ``@``)."""
        return Transposed(self)

    def __matmul__(self, x: Any) -> "Vector":
        return _matmul(self, x, transpose=False)

    def __rmatmul__(self, x: Any) -> Any:
        raise ProgramTypeError(
            f"`{_describe(x)} @ {self.name}`: only matrix @ vector is a MatMul; put the matrix on the left"
        )

    def matmul(self, x: "Vector", name: str | None = None) -> "Vector":
        """``W x`` with an explicit name."""
        return _matmul(self, x, transpose=False, name=name)


class Transposed:
    """``Wᵀ`` for an initial matrix ``W``; supports ``W.T @ x``."""

    __slots__ = ("matrix",)

    def __init__(self, matrix: Matrix) -> None:
        self.matrix = matrix

    @property
    def T(self) -> Matrix:
        return self.matrix

    @property
    def name(self) -> str:
        return f"{self.matrix.name}.T"

    def __matmul__(self, x: Any) -> "Vector":
        return _matmul(self.matrix, x, transpose=True)

    def matmul(self, x: "Vector", name: str | None = None) -> "Vector":
        """``Wᵀ x`` with an explicit name."""
        return _matmul(self.matrix, x, transpose=True, name=name)

    def __repr__(self) -> str:
        return f"<Transposed {self.matrix.name}.T>"

    __array_priority__ = 1000

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _numpy_ufunc(ufunc, method, inputs, kwargs)


class _Arith(Handle):
    """Elementwise arithmetic shared by vectors and scalars."""

    __slots__ = ()

    def __add__(self, o: Any) -> Any:
        return _arith("add", self, o)

    def __radd__(self, o: Any) -> Any:
        return _arith("add", o, self)

    def __sub__(self, o: Any) -> Any:
        return _arith("sub", self, o)

    def __rsub__(self, o: Any) -> Any:
        return _arith("sub", o, self)

    def __mul__(self, o: Any) -> Any:
        return _arith("mul", self, o)

    def __rmul__(self, o: Any) -> Any:
        return _arith("mul", o, self)

    def __truediv__(self, o: Any) -> Any:
        return _arith("div", self, o)

    def __rtruediv__(self, o: Any) -> Any:
        return _arith("div", o, self)

    def __pow__(self, o: Any) -> Any:
        return _arith("pow", self, o)

    def __rpow__(self, o: Any) -> Any:
        return _arith("pow", o, self)

    def __neg__(self) -> Any:
        return _arith("mul", -1, self)

    def __pos__(self) -> Any:
        return self

    def __matmul__(self, o: Any) -> Any:
        raise ProgramTypeError(
            f"`{self.name} @ {_describe(o)}`: the left operand of @ must be an initial matrix "
            f"(p.matrix) or its transpose"
        )


class Vector(_Arith):
    """Handle of a vector of the program (coordinates indexed by α ∈ [n])."""

    __slots__ = ()


class Scalar(_Arith):
    """Handle of a scalar of the program."""

    __slots__ = ()


_HANDLE_CLASS: dict[str, type[Handle]] = {"matrix": Matrix, "vector": Vector, "scalar": Scalar}


def _handle(program: Program, var: Var) -> Handle:
    return _HANDLE_CLASS[var.kind](program, var)


# ---------------------------------------------------------------------------------------
# operations


def _describe(x: Any) -> str:
    if isinstance(x, Handle):
        return f"{x.name} ({type(x).__name__.lower()})"
    if isinstance(x, Transposed):
        return x.name
    return repr(x)


def _matmul(W: Matrix, x: Any, *, transpose: bool, name: str | None = None) -> Vector:
    p = W.program
    t = ".T" if transpose else ""
    if isinstance(x, (Matrix, Transposed)):
        raise ProgramTypeError(
            f"`{W.name}{t} @ {x.name}`: matrix @ matrix is not an instruction of a Tensor "
            f"Program; multiply a vector instead ({W.name}{t} @ ({x.name} @ v))"
        )
    if not isinstance(x, Vector):
        raise ProgramTypeError(
            f"`{W.name}{t} @ {_describe(x)}`: the right operand must be a vector"
        )
    xv = p._own(x, lambda: f"`{W.name}{t} @ {x.name}`")
    return p._append(MatMul, name, matrix=W.var, arg=xv, transpose=transpose)  # type: ignore[return-value]


#: numpy ufuncs that are DSL arithmetic when every other operand is a numpy scalar
_NUMPY_ARITH = {
    np.add: "add",
    np.subtract: "sub",
    np.multiply: "mul",
    np.true_divide: "div",
    np.power: "pow",
}


def _numpy_ufunc(ufunc: Any, method: str, inputs: tuple, kwargs: dict) -> Any:
    """A numpy ufunc (or operator) with a handle among its operands.

    Numpy scalars (``np.float64(2.0) * x``, 0-d arrays) are numbers: arithmetic
    proceeds as with Python numbers. Arrays are refused — numpy would broadcast the
    handle into an object array, adding one instruction per entry — and so are other
    ufuncs (``np.exp(x)``: the DSL has ``tp.exp``).
    """

    def number(x: Any) -> Any:
        if isinstance(x, np.ndarray) and x.ndim == 0:
            return x[()]
        return x

    args = [number(x) for x in inputs]
    shown = ", ".join(
        _describe(x)
        if isinstance(x, (Handle, Transposed))
        else f"array of shape {x.shape}"
        if isinstance(x, np.ndarray)
        else repr(x)
        for x in args
    )
    arrays = [x for x in args if isinstance(x, np.ndarray)]
    if arrays:
        raise ProgramTypeError(
            f"numpy {ufunc.__name__}({shown}): a numpy array cannot be combined with program "
            f"handles (numpy would broadcast the handle into an object array); operands are "
            f"vectors, scalars and numbers — use a float, or build vectors with p.vector"
        )
    if method == "__call__" and not kwargs:
        if ufunc in _NUMPY_ARITH and len(args) == 2:
            return _arith(_NUMPY_ARITH[ufunc], *args)
        if ufunc is np.negative and len(args) == 1:
            return _arith("mul", -1, args[0])
        if ufunc is np.positive and len(args) == 1:
            return args[0]
    alt = f"; use tp.{ufunc.__name__}" if ufunc.__name__ in BUILTINS else ""
    raise ProgramTypeError(
        f"numpy {ufunc.__name__}{'' if method == '__call__' else '.' + method}({shown}): "
        f"numpy functions do not apply to program handles{alt} (the DSL's nonlinearities, "
        f"tp.nonlin or tp.Nonlinearity), or +, -, *, /, ** with numbers"
    )


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}


def _as_number(x: Any, op: str) -> sympy.Expr:
    if isinstance(x, (bool, np.bool_)):
        raise ProgramTypeError(f"operand of {op} must be a number, vector or scalar, got a bool")
    if isinstance(x, numbers.Number) or isinstance(x, sympy.Expr):
        val = sympy.sympify(x)
        if isinstance(x, float) and not math.isfinite(x):
            raise ProgramValueError(f"operand of {op} must be finite, got {x}")
        if val.free_symbols:
            raise ProgramValueError(
                f"operand of {op}: {val} has free symbols; make it an initial scalar with p.scalar"
            )
        if not val.is_finite:
            raise ProgramValueError(f"operand of {op} must be finite, got {val}")
        if val.is_real is False:
            raise ProgramValueError(f"operand of {op} must be a real number, got {val}")
        if isinstance(x, float) and float(x).is_integer():
            val = sympy.Integer(int(x)) if abs(x) < 2**53 else val
        return val
    raise ProgramTypeError(
        f"operand of {op} must be a vector, a scalar or a number, got {type(x).__name__}"
    )


@functools.lru_cache(maxsize=4096)
def _arith_fn(op: str, pattern: tuple, consts: tuple) -> Nonlinearity:
    """The transparent Nonlinearity for one arithmetic pattern.

    ``pattern`` lists, per operand, ``"v"`` (vector argument), ``"s"`` (scalar
    parameter) or ``"c"`` (a constant, taken from ``consts``).
    """
    nv = pattern.count("v")
    ns = pattern.count("s")
    xs = list(_arg_symbols(nv, "x"))
    ps = list(_arg_symbols(ns, "p"))
    cs = list(consts)
    operands = []
    for kind in pattern:
        operands.append({"v": xs, "s": ps, "c": cs}[kind].pop(0))
    body = _OPS[op](*operands)
    return Nonlinearity(op, body, _arg_symbols(nv, "x"), _arg_symbols(ns, "p"), opaque=False)


def _arith(op: str, a: Any, b: Any) -> Handle:
    handles = [x for x in (a, b) if isinstance(x, Handle)]
    program = handles[0].program
    for h in handles:
        if isinstance(h, Matrix):
            raise ProgramTypeError(
                f"`{_describe(a)} {op} {_describe(b)}`: matrices only appear in W @ x; "
                f"arithmetic is between vectors, scalars and numbers"
            )
        program._own(h, lambda: f"`{_describe(a)} {op} {_describe(b)}`")
    pattern = []
    consts = []
    vecs: list[Var] = []
    scal: list[Var] = []
    for x in (a, b):
        if isinstance(x, Vector):
            pattern.append("v")
            vecs.append(x.var)
        elif isinstance(x, Scalar):
            pattern.append("s")
            scal.append(x.var)
        else:
            pattern.append("c")
            consts.append(_as_number(x, op))
    fn = _arith_fn(op, tuple(pattern), tuple(consts))
    if vecs:
        return program._append(Nonlin, None, fn=fn, args=tuple(vecs), params=tuple(scal))
    return program._append(ScalarFn, None, fn=fn, params=tuple(scal))


def apply_nonlinearity(
    fn: Nonlinearity, inputs: Sequence[Any], *, name: str | None = None
) -> Handle:
    """Record ``fn(*inputs)``: a Nonlin of vectors (ScalarFn when all are scalars).

    Inputs are vectors followed by scalar parameters, matching ``fn.args`` then
    ``fn.params``.
    """
    inputs = tuple(inputs)
    program = next((x.program for x in inputs if isinstance(x, Handle)), None)
    if program is None:
        raise ProgramTypeError(f"{fn.name}(…) needs at least one vector or scalar of a program")

    def describe() -> str:  # (only on the error paths: it was a third of a kernel build)
        return f"{fn.name}({', '.join(_describe(x) for x in inputs)})"

    vec_list: list[Var] = []
    scal_list: list[Var] = []
    for x in inputs:  # (one pass: this is on the path of every recorded Nonlin)
        if isinstance(x, Vector):
            if scal_list:
                raise ProgramTypeError(
                    f"`{describe()}`: give the vectors first, then the scalar parameters"
                )
            vec_list.append(x.var)
        elif isinstance(x, Scalar):
            scal_list.append(x.var)
        else:
            raise ProgramTypeError(
                f"`{describe()}`: arguments must be vectors or scalars, got {_describe(x)}"
            )
        if x.program is not program:  # (the closure of the error message only then)
            program._own(x, lambda: f"`{describe()}`")
    vecs, scal = tuple(vec_list), tuple(scal_list)
    if len(vecs) + len(scal) != fn.arity + fn.nparams:
        raise ProgramValueError(
            f"`{describe()}`: {fn.name} takes {fn.arity + fn.nparams} inputs, got {len(inputs)}"
        )
    if vecs and len(vecs) != fn.arity:
        raise ProgramValueError(
            f"`{describe()}`: {fn.name} takes {fn.arity} vector argument(s) and {fn.nparams} scalar "
            f"parameter(s); got {len(vecs)} vectors and {len(scal)} scalars"
        )
    if not vecs:
        # φ applied to scalars only: a deterministic function of scalars.
        return program._append(ScalarFn, name, fn=fn.as_scalar_function, params=scal)
    return program._append(Nonlin, name, fn=fn, args=vecs, params=scal)


def nonlin(
    fn: Callable[..., Any] | Nonlinearity,
    *inputs: Any,
    name: str | None = None,
    fn_name: str | None = None,
) -> Handle:
    """A custom coordinatewise nonlinearity of several vectors (and scalars).

    Parameters
    ----------
    fn : callable or Nonlinearity
        ``fn(a, b, …)`` written with sympy functions, one argument per input, in
        the order given; it is traced once with sympy symbols.
    *inputs : Vector or Scalar
        Vectors (coordinatewise arguments) and scalars (parameters).
    name : str, optional
        Name of the new variable.
    fn_name : str, optional
        Name of the nonlinearity in printouts (defaults to ``name`` or ``"phi"``).

    Examples
    --------
    >>> import sympy, tensorprog as tp
    >>> p = tp.Program()
    >>> h, u = p.vector("h"), p.vector("u")
    >>> f = tp.nonlin(lambda a, b: a * sympy.tanh(b), h, u, name="phi")
    >>> print(p.definition(f))
    Nonlin(out=phi, fn=Nonlinearity(phi: (x0, x1) ↦ x0*tanh(x1)), args=(h, u), params=())
    """
    if isinstance(fn, Nonlinearity):
        return apply_nonlinearity(fn, inputs, name=name)
    if not callable(fn):
        raise ProgramTypeError(
            f"tp.nonlin needs a callable traceable by sympy, got {type(fn).__name__}"
        )
    for x in inputs:
        if not isinstance(x, (Vector, Scalar)):
            raise ProgramTypeError(
                f"tp.nonlin: inputs must be vectors or scalars, got {_describe(x)}"
            )
    syms = [sympy.Dummy(f"a{i}", real=True) for i in range(len(inputs))]
    label = (
        fn_name
        or name
        or (getattr(fn, "__name__", "phi") if getattr(fn, "__name__", "") != "<lambda>" else "phi")
    )
    body = _trace(fn, syms, f"tp.nonlin {label!r}")
    vec_syms = [s for s, x in zip(syms, inputs) if isinstance(x, Vector)]
    par_syms = [s for s, x in zip(syms, inputs) if isinstance(x, Scalar)]
    ordered = [x for x in inputs if isinstance(x, Vector)] + [
        x for x in inputs if isinstance(x, Scalar)
    ]
    f = Nonlinearity(label, body, vec_syms, par_syms)
    return apply_nonlinearity(f, ordered, name=name)


def outer_nonlin(
    fn: Callable[..., Any] | Nonlinearity,
    rows: Sequence[Any],
    cols: Sequence[Any],
    scalars: Sequence[Any] = (),
    name: str | None = None,
    fn_name: str | None = None,
) -> Vector:
    r"""A nonlinear outer product: ``y_α = (1/n) Σ_β ψ(rows_α; cols_β; θ)``.

    The OuterNonlin instruction of NE⊗OR⊤ (order 2) [TP4b Def 2.6.1]: with
    :math:`\mathbf x_\alpha` the ``α``-th coordinates of the ``rows`` and
    :math:`\mathbf x'_\beta` those of the ``cols``,

    .. math:: y_\alpha = \frac1n \sum_{\beta=1}^n
              \psi(\mathbf x_\alpha;\ \mathbf x'_\beta;\ \theta).

    It expresses "(an entrywise-processed outer product) × vector", e.g. Adam's
    update of a hidden weight applied to a vector, which Nonlin+ cannot.

    Parameters
    ----------
    fn : callable or Nonlinearity
        ``fn(*row_args, *col_args, *scalar_args)`` written with sympy functions (it is
        traced once with sympy symbols, like :func:`nonlin`'s callable), or a
        :class:`~tensorprog.Nonlinearity` of arity ``len(rows) + len(cols)`` with
        ``len(scalars)`` parameters.
    rows : sequence of Vector
        The vectors read at the output's coordinate ``α`` (at least one).
    cols : sequence of Vector
        The vectors read at the summed coordinate ``β`` (at least one).
    scalars : sequence of Scalar or number, optional
        Parameters ``θ``; a number is a constant of ``ψ``.
    name : str, optional
        Name of the new vector.
    fn_name : str, optional
        Name of ``ψ`` in printouts (defaults to ``fn``'s name). A lambda without
        ``fn_name`` is printed by its body.

    Returns
    -------
    Vector

    Notes
    -----
    *Limit* [TP4b Def 2.6.5, OuterNonlin rule]: ``Z^y`` is the deterministic function
    of the rows

    .. math:: Z^y = \mathbb E^{(1)}\,\psi(Z^{\mathbf x};\ Z^{\mathbf x'(1)};\
              \mathring\theta),

    the expectation over an iid copy ``(1)`` of the cols' joint law, independent of
    everything unmarked. For ZDot, ``∂Z^y/∂Ẑ`` goes through the rows only.

    *Cost.* Finite width (:func:`~tensorprog.simulate`): exact, ``n²`` evaluations of
    ``ψ`` per OuterNonlin, in blocks of ``⌈2²⁰/n⌉`` rows (memory ``O(2²⁰ + n)``
    floats). Monte Carlo limit: each of the ``N`` samples of a replicate averages
    ``ψ`` over the cols of the samples of its block of ``m ≈ min(N, max(1024,
    16√N))`` samples of the same replicate (a U-statistic for iid samples, a
    V-statistic over Sobol' nets for QMC; see
    ``tensorprog.engine.montecarlo.rules.outer_average``), ``N·m`` evaluations per
    replicate, and once more with blocks of ``m/2`` (``N·m/2``): the difference of the
    two bounds the bias of the inner average, which joins the standard error. When
    ``ψ`` is a polynomial in the col arguments the inner expectation is a sum of
    moments of the cols, computed exactly (``method="exact"``) or by one sample mean
    each, and no inner sum runs.

    *Gradients.* :func:`tensorprog.grad` differentiates through an OuterNonlin: its
    rows by ψ's partial derivatives averaged over the cols (a Nonlin of the rows), its
    cols by an OuterNonlin with the roles exchanged, and its scalars — the backward
    pass of a network trained by Adam crosses the hidden weights' updates.

    Examples
    --------
    >>> import sympy, tensorprog as tp
    >>> p = tp.Program()
    >>> x, z = p.vector("x"), p.vector("z", var=2.0)
    >>> y = tp.outer_nonlin(lambda a, b: a * b**2, [x], [z], name="y")
    >>> k = tp.inner(y, x, name="k")
    >>> print(p)
    Program 'program'
      x : vector, coordinates N(0, 1)
      z : vector, coordinates N(0, 2)
      y = mean_β(x*z_β**2)
      k = mean(x*y)
    >>> lim = p.limit()  # Z^y = Z^x 𝔼[(Z^z)²]: ψ is a polynomial in its col
    >>> lim[k], lim.method(k)
    (2.0, 'exact')
    >>> s = tp.outer_nonlin(lambda a, b: sympy.sign(a - b), [x], [z], name="s")
    >>> m = tp.inner(s, x, name="m")  # 𝔼[Z^x (2Φ(Z^x/√2) − 1)] = √(2/(3π)) = 0.46066…
    >>> round(p.limit(samples=2**14)[m], 3)
    0.461
    """
    what = "tp.outer_nonlin"
    groups: dict[str, tuple] = {}
    for arg, seq in (("rows", rows), ("cols", cols), ("scalars", scalars)):
        if isinstance(seq, Handle):
            seq = (seq,)
        if isinstance(seq, (str, bytes, Transposed)):
            raise ProgramTypeError(f"{what}: {arg} must be a sequence, got {_describe(seq)}")
        try:
            groups[arg] = tuple(seq)
        except TypeError:
            raise ProgramTypeError(
                f"{what}: {arg} must be a sequence, got {type(seq).__name__}"
            ) from None
    rows_, cols_, scal_ = groups["rows"], groups["cols"], groups["scalars"]
    for arg, seq in (("rows", rows_), ("cols", cols_)):
        if not seq:
            raise ProgramValueError(
                f"{what}: {arg} is empty; an OuterNonlin needs at least one row vector and one "
                f"col vector (a function of the cols only is tp.mean of a Nonlin)"
            )
        for x in seq:
            if not isinstance(x, Vector):
                raise ProgramTypeError(f"{what}: {arg} must be vectors, got {_describe(x)}")
    program = rows_[0].program
    for x in rows_ + cols_ + tuple(h for h in scal_ if isinstance(h, Handle)):
        program._own(x, what)
    consts: list[sympy.Expr | None] = []  # per scalar: its number, or None for a Scalar
    for x in scal_:
        if isinstance(x, Scalar):
            consts.append(None)
        elif isinstance(x, Handle):
            raise ProgramTypeError(
                f"{what}: scalars must be scalars or numbers, got {_describe(x)}"
            )
        else:
            consts.append(_as_number(x, f"{what} (scalars)"))
    k = len(rows_) + len(cols_)
    if isinstance(fn, Nonlinearity):
        if fn.arity != k or fn.nparams != len(scal_):
            raise ProgramValueError(
                f"{what}: {fn.name} takes {fn.arity} vector(s) and {fn.nparams} scalar(s); got "
                f"{len(rows_)} row(s) + {len(cols_)} col(s) and {len(scal_)} scalar(s)"
            )
        if any(c is not None for c in consts):
            body = fn.body.xreplace({p: c for p, c in zip(fn.params, consts) if c is not None})
            kept = [p for p, c in zip(fn.params, consts) if c is None]
            fn = Nonlinearity(fn.name, body, fn.args, kept, opaque=fn.opaque, latex=fn.latex_name)
    elif callable(fn):
        own = getattr(fn, "__name__", None)
        named = fn_name is not None or (isinstance(own, str) and own.isidentifier())
        label = fn_name or (own if named else "psi")
        xs = [sympy.Dummy(f"a{i}", real=True) for i in range(k)]
        ps = [sympy.Dummy(f"p{j}", real=True) for j, c in enumerate(consts) if c is None]
        it = iter(ps)
        scalar_args = [c if c is not None else next(it) for c in consts]
        body = _trace(fn, [*xs, *scalar_args], f"{what} {label!r}")
        # Named (a def or fn_name): printed by its name; a lambda: by its body.
        fn = Nonlinearity(label, body, xs, ps, opaque=named)
    else:
        raise ProgramTypeError(
            f"{what} needs a callable traceable by sympy or a Nonlinearity, got {type(fn).__name__}"
        )
    params = tuple(x.var for x in scal_ if isinstance(x, Scalar))
    return program._append(  # type: ignore[return-value]
        OuterNonlin,
        name,
        fn=fn,
        rows=tuple(x.var for x in rows_),
        cols=tuple(x.var for x in cols_),
        params=params,
    )


def _trace(fn: Callable[..., Any], args: Sequence[Any], what: str) -> sympy.Expr:
    """``fn(*args)`` on sympy symbols, as a sympy expression (``what`` names it in errors)."""
    try:
        body = sympify_strict(fn(*args), what)
    except ProgramTypeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ProgramTypeError(
            f"{what}: the function is not traceable by sympy (calling it on "
            f"symbols raised {type(exc).__name__}: {exc}); write it with sympy functions"
        ) from exc
    if not isinstance(body, sympy.Expr):
        raise ProgramTypeError(f"{what}: the function must return an expression, got {body!r}")
    return body


def _check_section_title(title: Any) -> None:
    """A section title is a one-line, non-empty str (:meth:`Program.section`; also
    checked when a saved program is loaded)."""
    if not isinstance(title, str) or not title.strip() or "\n" in title:
        raise ProgramTypeError(f"section: title must be a one-line, non-empty str, got {title!r}")


def mean(x: Any, name: str | None = None) -> Scalar:
    """The Moment ``(1/n) Σ_α x_α`` of a vector — a scalar.

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> x = p.vector("x")
    >>> k = tp.mean(x * x, name="k")
    """
    if isinstance(x, Scalar):
        raise ProgramTypeError(
            f"tp.mean({x.name}): {x.name} is a scalar; a Moment averages the coordinates of a vector"
        )
    if not isinstance(x, Vector):
        raise ProgramTypeError(f"tp.mean needs a vector of a program, got {_describe(x)}")
    return x.program._append(Moment, name, fn=identity, args=(x.var,), params=())  # type: ignore[return-value]


def inner(x: Any, y: Any, name: str | None = None) -> Scalar:
    """``⟨x, y⟩ = (1/n) Σ_α x_α y_α`` as one Moment.

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> x, y = p.vector("x"), p.vector("y")
    >>> s = tp.inner(x, y, name="s")
    """
    for v in (x, y):
        if isinstance(v, Scalar):
            raise ProgramTypeError(f"tp.inner: {v.name} is a scalar; inner products are of vectors")
        if not isinstance(v, Vector):
            raise ProgramTypeError(f"tp.inner needs two vectors, got {_describe(v)}")
    p = x.program
    if y.program is not p:  # (the closure of the error message only then)
        p._own(y, lambda: f"tp.inner({x.name}, {_describe(y)})")
    fn = _arith_fn("mul", ("v", "v"), ())
    return p._append(Moment, name, fn=fn, args=(x.var, y.var), params=())  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# helpers


def _refuse_complex(x: Any, arg: str, what: str, cls: type = ProgramTypeError) -> None:
    """A complex number or array (even with imaginary part 0) is refused, not truncated
    to its real part."""
    if isinstance(x, (complex, np.complexfloating)) or (
        not isinstance(x, (numbers.Number, sympy.Basic, str)) and _complex_array(x)
    ):
        raise cls(
            f"{what}: {arg} must be real, got a complex value {x!r:.80}; "
            f"covariances, means and values of a Tensor Program are real"
        )


def _complex_array(x: Any) -> bool:
    try:
        return bool(np.iscomplexobj(np.asarray(x)))
    except (TypeError, ValueError):  # ragged or odd input: the caller's checks say why
        return False


def _finite_float(x: Any, arg: str, what: str) -> float:
    if isinstance(x, (bool, np.bool_)):
        raise ProgramTypeError(f"{what}: {arg} must be a real number, got {x!r}")
    _refuse_complex(x, arg, what)
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ProgramTypeError(f"{what}: {arg} must be a real number, got {x!r}") from None
    if not math.isfinite(f):
        raise ProgramValueError(f"{what}: {arg} must be finite, got {f}")
    return f


def _nonneg_float(x: Any, arg: str, what: str) -> float:
    f = _finite_float(x, arg, what)
    if f < 0:
        raise ProgramValueError(f"{what}: {arg} must be ≥ 0 (a variance), got {f}")
    return f


def _computation(cls: type, fields: Mapping[str, Any], functions: _Functions) -> tuple | None:
    """What an instruction computes, as a hashable key; None for initial objects.

    Two instructions with equal keys compute the same thing: the same class, the same
    operand variables in the same order (Vars compare by identity), and for Nonlin,
    Moment and ScalarFn the same function (``functions.representative``: the same
    printed name, LaTeX name, opacity and structural
    :attr:`~tensorprog.Nonlinearity.key` — arity, parameter count and the ``srepr`` of
    its body). Constants live in the body (``2*x`` is ``mul`` with body ``2*x0``);
    ``srepr`` writes a Float with all its digits, so two floating constants share a key
    only when they are the same number. Operand order is kept (``x + y`` and ``y + x``
    are two instructions), and so is a function's name (a user's ``myrelu`` and
    :data:`tensorprog.relu` are two).
    """
    if cls is MatMul:
        return (MatMul, fields["matrix"], fields["arg"], bool(fields["transpose"]))
    if cls is OuterNonlin:
        return (
            cls,
            functions.representative(fields["fn"]),
            tuple(fields["rows"]),
            tuple(fields["cols"]),
            tuple(fields["params"]),
        )
    if cls in (Nonlin, Moment, ScalarFn):
        return (
            cls,
            functions.representative(fields["fn"]),
            tuple(fields.get("args", ())),
            tuple(fields["params"]),
        )
    return None


class _Functions:
    """The functions met by one program's :func:`_computation` keys, up to equality.

    Two functions are equal when their name, LaTeX name, opacity and structural
    :attr:`~tensorprog.Nonlinearity.key` are; :meth:`representative` maps each to the
    first equal one met. The structural key writes the body with ``srepr`` (slow for
    a long linear combination), so functions are first grouped by a cheap signature —
    name, LaTeX name, opacity, arity, parameter count and the body's structural hash,
    which equal keys share — and keys are computed only to tell apart two functions
    of one group.
    """

    __slots__ = ("_representative", "_groups")

    def __init__(self) -> None:
        self._representative: dict[Nonlinearity, Nonlinearity] = {}  # by identity
        self._groups: dict[tuple, list[Nonlinearity]] = {}

    def representative(self, fn: Nonlinearity) -> Nonlinearity:
        """The first function met that is equal to ``fn`` (``fn`` itself if none is)."""
        rep = self._representative.get(fn)
        if rep is None:
            signature = (fn.name, fn.latex_name, fn.opaque, fn.arity, fn.nparams, hash(fn.body))
            group = self._groups.setdefault(signature, [])
            rep = next((g for g in group if g.key == fn.key), None)
            if rep is None:
                group.append(fn)
                rep = fn
            self._representative[fn] = rep
        return rep


def _limit_in_n(val: sympy.Expr) -> sympy.Expr:
    if ir.WIDTH not in val.free_symbols:
        return val
    return sympy.limit(val, ir.WIDTH, sympy.oo)


def _check_types(p: Program, instr: Instruction) -> None:
    if isinstance(instr, (InitMatrix, InitVector, InitScalar)):
        return
    if isinstance(instr, MatMul):
        if instr.matrix.kind != "matrix" or instr.arg.kind != "vector":  # type: ignore[union-attr]
            raise ProgramTypeError(
                f"`{format_instruction(instr)}`: MatMul needs an initial matrix and a vector"
            )
        return
    fn = instr.fn  # type: ignore[attr-defined]
    if isinstance(instr, OuterNonlin):
        args = instr.rows + instr.cols
        if not instr.rows or not instr.cols:
            raise ProgramValueError(
                f"`{format_instruction(instr)}`: an OuterNonlin needs at least one row "
                f"and one col vector"
            )
    else:
        args = getattr(instr, "args", ())
    params = instr.params  # type: ignore[attr-defined]
    for v in args:
        if v.kind != "vector":
            raise ProgramTypeError(f"`{format_instruction(instr)}`: arguments must be vectors")
    for v in params:
        if v.kind != "scalar":
            raise ProgramTypeError(f"`{format_instruction(instr)}`: parameters must be scalars")
    if fn.arity != len(args) or fn.nparams != len(params):
        raise ProgramValueError(
            f"`{format_instruction(instr)}`: {fn.name} takes {fn.arity} vector(s) and {fn.nparams} scalar(s), "
            f"got {len(args)} and {len(params)}"
        )


def _graph(p: Program, version: int) -> nx.DiGraph:
    cached = getattr(p, "_graph_cache", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    import networkx as nx  # on first use: networkx is slow to import

    g = nx.DiGraph(name=p.name)
    for instr in p._instructions:
        g.add_node(instr.out.name, instruction=instr, kind=instr.out.kind)
        for pos, v in enumerate(instr.inputs):
            if g.has_edge(v.name, instr.out.name):
                g.edges[v.name, instr.out.name]["positions"].append(pos)
            else:
                g.add_edge(v.name, instr.out.name, positions=[pos])
    p._graph_cache = (version, g)  # type: ignore[attr-defined]
    return g
