"""The finite-width interpreter: run a program at width ``n`` with numpy.

This is how every limit in tensorprog is checked against reality: the Master
Theorem [TP4 Thm 7.4] says each scalar of the program converges to its limit θ̊
as ``n → ∞``, with fluctuations of order ``n^{-1/2}`` [TP4b Thm 2.6.10].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import hooks
from .core._resources import available_memory, memory_budget, refuse
from .core.errors import NumericalError, ProgramTypeError, ProgramValueError
from .core.interpreter import Interpreter
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
from .core.rng import as_generator
from .dsl.program import Program
from .gaussian import psd_factor

__all__ = ["simulate", "Simulation", "available_memory"]

#: An OuterNonlin at width ``n`` evaluates ``ψ`` on blocks of ``B = ⌈OUTER_BLOCK/n⌉``
#: rows × all ``n`` columns: temporaries of about ``OUTER_BLOCK`` floats (8 MiB),
#: whatever ``n``; ``n²`` evaluations in ``⌈n/B⌉`` vectorised calls.
OUTER_BLOCK = 2**20


def memory_needed(program: Any, n: int) -> int:
    """Bytes ``simulate(n)`` holds at its peak: matrices (n² each) plus vectors (n each)."""
    n_mat = sum(isinstance(i, InitMatrix) for i in program.instructions)
    n_vec = sum(i.out.kind == "vector" for i in program.instructions)
    return 8 * (n_mat * n * n + (n_vec + 2) * n)


class Simulation:
    """Values of every variable of a program at width ``n``.

    Index by handle or name: ``sim[k]`` is a float for a scalar, ``sim.vector(v)``
    (or ``sim[v]``) an array of shape ``(n,)``.
    """

    def __init__(self, program: Any, n: int, seed: Any, env: dict[Var, Any]) -> None:
        self.program = program
        self._size = len(program.instructions)  # a grown program's new handles are not here
        self.n = n
        self.seed = seed
        self._env = env

    def _var(self, key: Any) -> Var:
        return self.program.var(key, "simulation", before=self._size)

    def __getitem__(self, key: Any) -> Any:
        v = self._var(key)
        if v.kind == "matrix":
            raise ProgramTypeError(f"{v.name} is a matrix; use sim.matrix({v.name!r})")
        return self._env[v]

    def vector(self, key: Any) -> np.ndarray:
        """The coordinates of a vector, shape ``(n,)``."""
        v = self._var(key)
        if v.kind != "vector":
            raise ProgramTypeError(f"{v.name} is a {v.kind}, not a vector")
        return self._env[v]

    def matrix(self, key: Any) -> np.ndarray:
        """The sampled entries of an initial matrix, shape ``(n, n)`` (to rebuild the run in numpy)."""
        v = self._var(key)
        if v.kind != "matrix":
            raise ProgramTypeError(f"{v.name} is a {v.kind}, not a matrix")
        return self._env[v]

    def scalar(self, key: Any) -> float:
        """The value of a scalar."""
        v = self._var(key)
        if v.kind != "scalar":
            raise ProgramTypeError(f"{v.name} is a {v.kind}, not a scalar")
        return self._env[v]

    @property
    def scalars(self) -> dict[str, float]:
        """All scalars by name."""
        return {v.name: x for v, x in self._env.items() if v.kind == "scalar"}

    def __repr__(self) -> str:
        return f"<Simulation of {self.program.name!r} at n={self.n}, seed={self.seed!r}>"

    def tabulate(self) -> Any:
        """Every scalar as a :class:`tensorprog.core.tables.Table` row, in program order:
        name, value, n, seed (vectors are not tabulated: ``sim.vector(v)``)."""
        from .core.tables import Column, Table, code, number

        cols = (
            Column("name", "name", code),
            Column("value", "value", number),
            Column("n"),
            Column("seed"),
        )
        return Table(
            f"Simulation of {self.program.name!r} at n={self.n}, seed={self.seed!r}",
            cols,
            tuple((k, x, self.n, self.seed) for k, x in self.scalars.items()),
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per scalar: ``name, value, n, seed``
        (``pd.concat`` over widths and seeds gives a convergence study in one frame).

        Needs pandas (``pip install 'tensorprog[notebook]'``); without it an
        :class:`~tensorprog.core.errors.OptionalDependencyError` says so.
        """
        return self.tabulate().to_pandas()

    def _repr_html_(self) -> str:
        return self.tabulate().html()


class FiniteWidth(Interpreter):
    """Samples the initial objects per the program's law and executes it at width n."""

    def __init__(self, program: Any, n: int, rng: np.random.Generator) -> None:
        super().__init__(program)
        self.n = n
        self.rng = rng
        self._init_block: np.ndarray | None = None
        self._init_index = {v: j for j, v in enumerate(program.initial_vectors)}

    def init_matrix(self, instr: InitMatrix) -> np.ndarray:
        W = self.rng.standard_normal((self.n, self.n))
        W *= np.sqrt(instr.var / self.n)
        return W

    def init_vector(self, instr: InitVector) -> np.ndarray:
        if self._init_block is None:
            # All initial vectors at once: iid rows ~ N(μ, Σ) over coordinates α.
            F = psd_factor(self.program.initial_covariance, what="initial vectors' covariance")
            G = self.rng.standard_normal((self.n, F.shape[0]))
            self._init_block = G @ F.T + self.program.initial_mean
        return np.ascontiguousarray(self._init_block[:, self._init_index[instr.out]])

    def init_scalar(self, instr: InitScalar) -> float:
        val = instr.value.subs(WIDTH, self.n)
        try:
            x = float(val)
        except TypeError:  # complex or undefined at this n (e.g. sqrt(n - 10) at n = 4)
            raise NumericalError(
                f"{instr.out.name} = {instr.value} is not a real number at "
                f"width n={self.n} (got {val})"
            ) from None
        return _finite(x, instr)

    def matmul(self, instr: MatMul) -> np.ndarray:
        W = self.read(instr.matrix)
        x = self.read(instr.arg)
        with np.errstate(all="ignore"):
            out = W.T @ x if instr.transpose else W @ x
        if not np.all(np.isfinite(out)):
            raise NumericalError(f"{instr.out.name} overflowed (inf or NaN) at width n={self.n}")
        return out

    def nonlin(self, instr: Nonlin) -> np.ndarray:
        out = np.asarray(self._apply(instr), dtype=float)
        return out if out.shape == (self.n,) else np.full(self.n, out)

    def outer_nonlin(self, instr: OuterNonlin) -> np.ndarray:
        """``y_α = (1/n) Σ_β ψ(rows_α; cols_β; θ)`` exactly, ``n²`` evaluations of ``ψ``
        in blocks of rows (:data:`OUTER_BLOCK`) [TP4b Def 2.6.1]."""
        n = self.n
        rows = [self.read(v) for v in instr.rows]
        cols = [self.read(v)[None, :] for v in instr.cols]
        params = [np.float64(self.read(v)) for v in instr.params]
        fn = instr.fn.numpy  # type: ignore[union-attr]
        B = -(-OUTER_BLOCK // n)
        out = np.empty(n)
        with np.errstate(all="ignore"):
            for lo in range(0, n, B):
                block = [r[lo : lo + B, None] for r in rows]
                vals = np.broadcast_to(fn(*block, *cols, *params), (len(block[0]), n))
                out[lo : lo + B] = vals.mean(axis=1)
        if not np.all(np.isfinite(out)):
            raise NumericalError(
                f"{instr.fn.name} produced NaN or inf at width n={n}"  # type: ignore[union-attr]
            )
        return out

    def moment(self, instr: Moment) -> float:
        return float(np.mean(np.broadcast_to(self._apply(instr), (self.n,))))

    def scalar_fn(self, instr: ScalarFn) -> float:
        return float(self._apply(instr))

    def _apply(self, instr: Nonlin | Moment | ScalarFn) -> Any:
        args = [self.read(v) for v in getattr(instr, "args", ())]
        params = [np.float64(self.read(v)) for v in instr.params]  # numpy semantics: inf, not raise
        with np.errstate(all="ignore"):
            out = instr.fn.numpy(*args, *params)  # type: ignore[union-attr]
        if not np.all(np.isfinite(out)):
            raise NumericalError(
                f"{instr.fn.name} produced NaN or inf at width n={self.n}"  # type: ignore[union-attr]
            )
        return out


def _finite(x: float, instr: Any) -> float:
    if not np.isfinite(x):
        raise NumericalError(f"{instr.out.name} is not finite ({x})")
    return x


def simulate(program: Any, n: int, seed: Any = 0, *, max_memory: int | None = None) -> Simulation:
    """Run ``program`` at finite width ``n`` (float64 numpy).

    Every initial matrix gets iid ``N(0, σ²/n)`` entries, initial vectors iid
    coordinate slices from their joint Gaussian law, initial scalars their value at
    this ``n``; then the instructions run in order.

    Parameters
    ----------
    program : Program
    n : int
        The width (a positive integer).
    seed : int or numpy.random.Generator, default 0
        Randomness; the same seed gives bit-identical results.
    max_memory : int, optional
        Bytes the simulation may use; default 80% of the memory this process may still
        allocate (the smallest of free memory, ``RLIMIT_AS`` and cgroup limits), and
        never more than all of it.

    Returns
    -------
    Simulation

    Raises
    ------
    ResourceError
        if the matrices of width ``n`` would not fit in that memory (before anything is
        allocated; ``err.knob == "n"``).

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> A, v = p.matrix("A", var=2.0), p.vector("v")
    >>> k = tp.inner(v, A.T @ (A @ v), name="k")
    >>> round(p.simulate(2000, seed=1)[k], 1)  # the limit σ² = 2, up to O(n^{-1/2})
    1.8
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ProgramTypeError(f"simulate: width n must be a positive int, got {n!r}")
    if n < 1:
        raise ProgramValueError(f"simulate: width n must be a positive int, got {n}")
    n = int(n)
    if not isinstance(program, Program):
        raise ProgramTypeError(
            f"simulate: program must be a tp.Program, got {type(program).__name__}"
        )
    if max_memory is not None and (
        isinstance(max_memory, (bool, np.bool_))
        or not isinstance(max_memory, (int, np.integer))
        or max_memory < 1
    ):
        raise (
            ProgramValueError
            if isinstance(max_memory, (int, np.integer))
            and not isinstance(max_memory, (bool, np.bool_))
            else ProgramTypeError
        )(f"simulate: max_memory must be a positive int (bytes) or None, got {max_memory!r}")
    need = memory_needed(program, n)
    budget = memory_budget()
    if max_memory is None:
        limit, source = int(0.8 * budget.bytes), f"80% of {budget.source}"
    elif int(max_memory) <= budget.bytes:
        limit, source = int(max_memory), "max_memory"
    else:  # more than the process may allocate: a MemoryError (or the OOM killer) later
        limit, source = budget.bytes, budget.source
    if need > limit:
        raise refuse(
            f"simulate(n={n}) of {program.name!r} (8·n² bytes per matrix)",
            need,
            "n",
            "choose a smaller width n"
            + (" (or a larger max_memory)" if source == "max_memory" else ""),
            limit,
            source,
        )
    program.check()
    rng = as_generator(seed, "simulate")
    env = FiniteWidth(program, n, rng).run()
    return Simulation(program, n, seed, env)


hooks.simulate.register(Program, simulate)  # p.simulate(n)
