"""tensorprog — Tensor Programs compiled to their infinite-width limits.

Write a finite-width neural computation in a small DSL; tensorprog records it as
MatMul / Nonlin / Moment instructions, runs it at any finite width, and derives its
infinite-width limit by the Master Theorem [TP4 §7].

>>> import tensorprog as tp
>>> p = tp.Program("AtAv")
>>> A, v = p.matrix("A", var=2.0), p.vector("v")
>>> k = tp.inner(v, A.T @ (A @ v), name="k")
"""

# The modules implementing methods of lower layers (p.limit(), lim.latex(), p.save(), ...)
# register them in tensorprog.core.hooks when imported: engine and latex here, io and simulate
# below.
from . import engine, latex  # noqa: F401
from ._version import __version__ as __version__
from .core._gc import paused_gc
from .core._resources import require as require_memory
from .core.errors import (
    DivergenceError,
    ExecutorError,
    FileAccessError,
    ForeignHandleError,
    FormatError,
    FormatVersionError,
    MethodUnavailableError,
    MonteCarloWarning,
    NonPSDError,
    NumericalError,
    OptionalDependencyError,
    ProgramTypeError,
    ProgramValueError,
    ResourceError,
    TensorProgramError,
    UnknownNameError,
    UnreliableValueWarning,
)
from .core.ir import WIDTH as n
from .core.nonlin import (
    BUILTINS,
    Nonlinearity,
    ab_relu,
    abs,
    cos,
    erf,
    exp,
    gaussian_bump,
    gelu,
    get_nonlinearity,
    identity,
    leaky_relu,
    monomial,
    polynomial,
    rbf,
    rectified_monomial,
    relu,
    sigmoid,
    sign,
    sin,
    sqrt,
    step,
    tanh,
)
from .dsl.autodiff import grad as grad
from .dsl.autodiff import lincomb, scalar_lincomb
from .dsl.program import (
    Handle,
    Matrix,
    Program,
    Scalar,
    Vector,
    inner,
    mean,
    nonlin,
    outer_nonlin,
)
from .engine.compiled import CompiledLimit, LimitBatch, compile_limit
from .io import load
from .simulate import Simulation, simulate

__all__ = [
    "Program",
    "Handle",
    "Matrix",
    "Vector",
    "Scalar",
    "Nonlinearity",
    "nonlin",
    "outer_nonlin",
    "mean",
    "inner",
    "grad",
    "lincomb",
    "scalar_lincomb",
    "paused_gc",
    "require_memory",
    "simulate",
    "Simulation",
    "compile_limit",
    "CompiledLimit",
    "LimitBatch",
    "load",
    "n",
    "get_nonlinearity",
    "BUILTINS",
    "relu",
    "step",
    "tanh",
    "erf",
    "sigmoid",
    "gelu",
    "sin",
    "cos",
    "abs",
    "sign",
    "identity",
    "sqrt",
    "exp",
    "ab_relu",
    "leaky_relu",
    "rbf",
    "gaussian_bump",
    "rectified_monomial",
    "monomial",
    "polynomial",
    "TensorProgramError",
    "ProgramTypeError",
    "ProgramValueError",
    "NonPSDError",
    "ForeignHandleError",
    "UnknownNameError",
    "NumericalError",
    "DivergenceError",
    "ExecutorError",
    "ResourceError",
    "MethodUnavailableError",
    "FormatVersionError",
    "FormatError",
    "FileAccessError",
    "OptionalDependencyError",
    "MonteCarloWarning",
    "UnreliableValueWarning",
]
