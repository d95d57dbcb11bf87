"""One walker, many interpreters (in the style of PyTorch FX's ``Interpreter``).

:class:`Interpreter` owns the walk over a program's instructions, the environment
(variable → value) and the error context; a backend subclasses it and implements
one method per instruction class. Backend state lives on the interpreter, never on
the IR.
"""

from __future__ import annotations

from typing import Any

from .errors import TensorProgramError
from .ir import (
    INSTRUCTIONS,
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

__all__ = ["Interpreter", "annotate"]


def annotate(exc: TensorProgramError, instr: Instruction, where: str) -> TensorProgramError:
    """The same error with "while interpreting `line` in where" appended."""
    line = format_instruction(instr)
    msg = str(exc)
    if "while interpreting" in msg:
        return exc
    new = type(exc)(f"{msg}\n  while interpreting `{line}` in {where}")
    new.__cause__ = exc
    return new


class Interpreter:
    """Walks a program in order and calls one method per instruction.

    Subclasses implement ``init_matrix``, ``init_vector``, ``init_scalar``,
    ``matmul``, ``nonlin``, ``outer_nonlin``, ``moment`` and ``scalar_fn``; each receives the
    instruction and returns the value to bind to ``instr.out`` in :attr:`env`.
    """

    #: Rule table: instruction class -> the method interpreting it, ``cls.opname``
    #: (never looked up by strings from user input).
    rules: dict[type, str] = {cls: cls.opname for cls in INSTRUCTIONS}

    def __init__(self, program: Any) -> None:
        self.program = program
        self.env: dict[Var, Any] = {}

    def run(self) -> dict[Var, Any]:
        """Interpret every instruction in order; returns the environment."""
        table = {cls: getattr(self, name) for cls, name in self.rules.items()}
        env = self.env
        instr = None
        try:
            for instr in self.program.instructions:
                env[instr.out] = table[type(instr)](instr)
        except TensorProgramError as exc:
            raise annotate(exc, instr, type(self).__name__) from exc.__cause__
        return env

    def step(self, instr: Instruction) -> Any:
        """Interpret one instruction, annotating errors with where they happened."""
        try:
            return getattr(self, self.rules[type(instr)])(instr)
        except TensorProgramError as exc:
            raise annotate(exc, instr, type(self).__name__) from exc.__cause__

    def read(self, v: Var) -> Any:
        """The value bound to ``v``."""
        return self.env[v]

    # Per-instruction methods (backends override) -------------------------------
    def init_matrix(self, instr: InitMatrix) -> Any:
        raise NotImplementedError

    def init_vector(self, instr: InitVector) -> Any:
        raise NotImplementedError

    def init_scalar(self, instr: InitScalar) -> Any:
        raise NotImplementedError

    def matmul(self, instr: MatMul) -> Any:
        raise NotImplementedError

    def nonlin(self, instr: Nonlin) -> Any:
        raise NotImplementedError

    def outer_nonlin(self, instr: OuterNonlin) -> Any:
        raise NotImplementedError

    def moment(self, instr: Moment) -> Any:
        raise NotImplementedError

    def scalar_fn(self, instr: ScalarFn) -> Any:
        raise NotImplementedError
