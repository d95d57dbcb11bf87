"""The intermediate representation: variables and frozen instruction records.

A Tensor Program [TP4 §7 Def 7.1] is an ordered, single-assignment list of
instructions, each defining one new variable from earlier ones:

===============  ==========================================================
``InitMatrix``   ``W``: n×n, entries iid ``N(0, σ_W²/n)``
``InitVector``   ``x``: coordinates iid, jointly Gaussian with earlier initial vectors
``InitScalar``   ``c``: a scalar with a deterministic limit ``c̊``
``MatMul``       ``W x`` or ``Wᵀ x``
``Nonlin``       ``φ(x¹,…,xᵏ; θ¹,…,θˡ)`` coordinatewise (Nonlin+)
``OuterNonlin``  ``y_α = (1/n) Σ_β ψ(x_α; x'_β; θ)`` (NE⊗OR⊤, order 2)
``Moment``       ``(1/n) Σ_α φ(x¹_α,…,xᵏ_α; θ¹,…,θˡ)`` → scalar
``ScalarFn``     ``ψ(θ¹,…,θˡ)``, a deterministic function of scalars
===============  ==========================================================

Records are frozen; argument order and multiplicity live on the record (never on
graph edges). Interpreters keep their own state and never write onto the IR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import sympy

from .nonlin import Nonlinearity

__all__ = [
    "Var",
    "Instruction",
    "InitMatrix",
    "InitVector",
    "InitScalar",
    "MatMul",
    "Nonlin",
    "OuterNonlin",
    "Moment",
    "ScalarFn",
    "INSTRUCTIONS",
    "WIDTH",
]

Kind = Literal["matrix", "vector", "scalar"]

#: The width ``n`` as a sympy symbol; initial scalars may depend on it (e.g. ``n**-0.5``).
WIDTH = sympy.Symbol("n", positive=True)


@dataclass(frozen=True, eq=False)
class Var:
    """A variable of a program: its position ``id``, its ``kind`` and its ``name``.

    Variables compare by identity: two programs never share a Var.
    """

    id: int
    kind: Kind
    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Instruction:
    """Base of all instruction records; ``out`` is the variable it defines."""

    out: Var
    opname: ClassVar[str] = "instruction"

    @property
    def inputs(self) -> tuple[Var, ...]:
        """Input variables in argument order, with multiplicity."""
        return ()


@dataclass(frozen=True, eq=False)
class InitMatrix(Instruction):
    """An initial n×n matrix with iid ``N(0, var/n)`` entries [TP4 Setup 7.2]."""

    var: float = 1.0
    opname: ClassVar[str] = "init_matrix"


@dataclass(frozen=True, eq=False)
class InitVector(Instruction):
    """An initial vector: coordinates iid ``N(mean, var)``.

    ``cov`` holds the coordinatewise covariances with *earlier* initial vectors;
    the slices ``(x_α)_{x ∈ 𝒱}`` are iid jointly Gaussian across ``α``.
    """

    mean: float = 0.0
    var: float = 1.0
    cov: tuple[tuple[Var, float], ...] = ()
    opname: ClassVar[str] = "init_vector"


@dataclass(frozen=True, eq=False)
class InitScalar(Instruction):
    """An initial scalar; ``value`` may depend on the width symbol ``n``."""

    value: sympy.Expr = sympy.Integer(0)
    opname: ClassVar[str] = "init_scalar"


@dataclass(frozen=True, eq=False)
class MatMul(Instruction):
    """``W x`` (``transpose=False``) or ``Wᵀ x`` for an initial matrix ``W``."""

    matrix: Var | None = None
    arg: Var | None = None
    transpose: bool = False
    opname: ClassVar[str] = "matmul"

    @property
    def inputs(self) -> tuple[Var, ...]:
        return (self.matrix, self.arg)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Nonlin(Instruction):
    """Coordinatewise ``fn(args…; params…)`` → vector (Nonlin+)."""

    fn: Nonlinearity | None = None
    args: tuple[Var, ...] = ()
    params: tuple[Var, ...] = ()
    opname: ClassVar[str] = "nonlin"

    @property
    def inputs(self) -> tuple[Var, ...]:
        return self.args + self.params


@dataclass(frozen=True, eq=False)
class OuterNonlin(Instruction):
    """The nonlinear outer product ``y_α = (1/n) Σ_β fn(rows_α…; cols_β…; params…)``.

    NE⊗OR⊤'s OuterNonlin of order ``r + 1 = 2`` [TP4b Def 2.6.1]: ``rows`` are read at
    the output's own coordinate ``α``, ``cols`` at the summed coordinate ``β``; ``fn``
    takes the rows, then the cols (``fn.arity = len(rows) + len(cols)``), then the
    scalar ``params``. Its limit [TP4b Def 2.6.5] is the deterministic function of the
    rows ``Z^y = 𝔼^{(1)} fn(Z^{rows}; Z^{cols (1)}; θ̊)``, the expectation over an iid
    copy ``(1)`` of the cols' joint law.
    """

    fn: Nonlinearity | None = None
    rows: tuple[Var, ...] = ()
    cols: tuple[Var, ...] = ()
    params: tuple[Var, ...] = ()
    opname: ClassVar[str] = "outer_nonlin"

    @property
    def inputs(self) -> tuple[Var, ...]:
        return self.rows + self.cols + self.params


@dataclass(frozen=True, eq=False)
class Moment(Instruction):
    """``(1/n) Σ_α fn(args_α…; params…)`` → scalar."""

    fn: Nonlinearity | None = None
    args: tuple[Var, ...] = ()
    params: tuple[Var, ...] = ()
    opname: ClassVar[str] = "moment"

    @property
    def inputs(self) -> tuple[Var, ...]:
        return self.args + self.params


@dataclass(frozen=True, eq=False)
class ScalarFn(Instruction):
    """A deterministic function ``fn(params…)`` of earlier scalars → scalar."""

    fn: Nonlinearity | None = None
    params: tuple[Var, ...] = ()
    opname: ClassVar[str] = "scalar_fn"

    @property
    def inputs(self) -> tuple[Var, ...]:
        return self.params


#: The instruction set. Each class's ``opname`` names it everywhere: the interpreter
#: method that runs it and the ``op`` field of saved programs.
INSTRUCTIONS: tuple[type[Instruction], ...] = (
    InitMatrix,
    InitVector,
    InitScalar,
    MatMul,
    Nonlin,
    OuterNonlin,
    Moment,
    ScalarFn,
)


def format_instruction(instr: Instruction) -> str:
    """One readable line for an instruction (used by ``Program.__str__`` and errors)."""
    o = instr.out.name
    if isinstance(instr, InitMatrix):
        return f"{o} : matrix n×n, entries N(0, {_num(instr.var)}/n)"
    if isinstance(instr, InitVector):
        s = f"{o} : vector, coordinates N({_num(instr.mean)}, {_num(instr.var)})"
        if instr.cov:
            s += ", cov " + ", ".join(f"{v.name}: {_num(c)}" for v, c in instr.cov)
        return s
    if isinstance(instr, InitScalar):
        return f"{o} : scalar = {instr.value}"
    if isinstance(instr, MatMul):
        t = ".T" if instr.transpose else ""
        return f"{o} = {instr.matrix.name}{t} @ {instr.arg.name}"  # type: ignore[union-attr]
    if isinstance(instr, OuterNonlin):
        return f"{o} = {outer_body(instr)}"
    if isinstance(instr, (Nonlin, Moment, ScalarFn)):
        fn = instr.fn
        assert fn is not None
        args = getattr(instr, "args", ())
        syms = [sympy.Symbol(v.name) for v in args + instr.params]
        expr = fn.apply(*syms)
        rhs = str(expr)
        if isinstance(instr, Moment):
            rhs = f"mean({rhs})"
        return f"{o} = {rhs}"
    return f"{o} = {instr!r}"  # pragma: no cover


def outer_body(instr: OuterNonlin) -> str:
    """``mean_β(ψ(x; x'_β; θ))``: an OuterNonlin's right-hand side, the cols subscripted
    by the summed coordinate ``β``."""
    syms = (
        [sympy.Symbol(v.name) for v in instr.rows]
        + [sympy.Symbol(f"{v.name}_β") for v in instr.cols]
        + [sympy.Symbol(v.name) for v in instr.params]
    )
    return f"mean_β({instr.fn.inline(*syms)})"  # type: ignore[union-attr]


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
