"""Errors raised by tensorprog.

Everything the library raises on bad input derives from :class:`TensorProgramError`
and from the matching builtin (``ValueError``, ``TypeError``, ...), so that
``except ValueError`` keeps working for users who do not know this library.
Messages name the offending instruction or argument and say what would be valid.
"""

from __future__ import annotations

__all__ = [
    "TensorProgramError",
    "ProgramTypeError",
    "ProgramValueError",
    "NonPSDError",
    "ForeignHandleError",
    "UnknownNameError",
    "NumericalError",
    "DivergenceError",
    "ResourceError",
    "MethodUnavailableError",
    "FormatVersionError",
    "FormatError",
    "FileAccessError",
    "OptionalDependencyError",
    "ExecutorError",
    "MonteCarloWarning",
    "UnreliableValueWarning",
]


class TensorProgramError(Exception):
    """Base class of every error tensorprog raises on bad input or bad numerics."""


class ProgramTypeError(TensorProgramError, TypeError):
    """An argument has the wrong type (e.g. ``matrix @ matrix``, Moment of a scalar)."""


class ProgramValueError(TensorProgramError, ValueError):
    """An argument has the right type but an invalid value (e.g. negative variance)."""


class NonPSDError(ProgramValueError):
    """A covariance matrix is not positive semidefinite."""


class ForeignHandleError(ProgramValueError):
    """A handle of one program was used in another program."""


class UnknownNameError(TensorProgramError, KeyError):
    """A name (handle, nonlinearity, method, ...) is not known."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else ""


class NumericalError(TensorProgramError, ArithmeticError):
    """An evaluation produced NaN or inf, or a quantity that must be finite is not."""


class DivergenceError(NumericalError):
    """An expectation diverges (the integrand is not integrable under the Gaussian)."""


class ResourceError(TensorProgramError, MemoryError):
    """A request would not fit in memory (e.g. ``simulate`` at too large a width).

    Raised before any allocation, against the memory this process may use (free memory,
    ``RLIMIT_AS`` and cgroup limits: ``tensorprog.core._resources``). Where it comes from a
    memory guard, ``knob`` names the argument that makes the request fit (``"n"``,
    ``"X"``, ``"max_memory"``, ...), ``need`` and ``limit`` are the bytes estimated and
    allowed.
    """

    knob: str | None = None
    need: int | None = None
    limit: int | None = None


class MethodUnavailableError(ProgramValueError):
    """A forced evaluation method cannot evaluate an expectation (e.g. no exact form)."""


class FormatError(TensorProgramError, ValueError):
    """A saved file (or text given to ``tp.io.loads``) is not a valid tensorprog file.

    Raised for anything outside the format's whitelist: bad JSON, a missing or mistyped
    field, a sympy class or function name the library does not write, an integer or
    exponent beyond the bounds, too large a file, too deep a nesting. The message names
    the field by its JSON path (e.g. ``program.nonlinearities[0].body``) and says what
    would be valid.
    """


class FormatVersionError(FormatError, ProgramValueError):
    """A saved file has an unknown (newer) format version."""


class FileAccessError(TensorProgramError, OSError):
    """A file cannot be read or written (missing folder, no permission, not a directory).

    The message names the path; the original ``OSError`` is chained as ``__cause__``.
    """


class OptionalDependencyError(TensorProgramError, ImportError):
    """An optional dependency is not installed (e.g. pandas for ``to_pandas()``); the
    message names the pip extra that installs it."""


class ExecutorError(TensorProgramError, RuntimeError):
    """A Monte Carlo chunk failed on an executor's worker after its retries, or the
    executor broke (``limit(..., executor=...)``). The message names the chunk, its
    replicates and the worker's exception (chained as ``__cause__``); ``chunk`` is the
    chunk's index and ``replicates`` its ``(first, one past the last)``."""

    chunk: int | None = None
    replicates: tuple[int, int] | None = None


class MonteCarloWarning(UserWarning):
    """A value the caller expects to be deterministic was estimated by Monte Carlo
    (e.g. a kernel entry whose quadrature did not reach its tolerance)."""


class UnreliableValueWarning(UserWarning):
    """A limit value was computed but is not trusted: its expectation is not proven to
    exist, or its Monte Carlo integrand is too heavy-tailed for the standard error to
    mean anything (``Limit.trusted(k)`` is False and ``Limit.warnings`` says why)."""
