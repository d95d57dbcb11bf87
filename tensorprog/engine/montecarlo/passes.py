"""The walk of one Monte Carlo pass: the machinery under the per-instruction rules.

:class:`_Pass` owns what every rule of :class:`~.rules.MonteCarloPass` relies on: the
walk over the instructions with vectors stored in their stacks and freed after their
last use (FX-style, from :attr:`_Schedule.dead` and :attr:`_Schedule.release`), the
block of standard normals, the table of scalars, and the estimates of a replicate run
in chunks, whose values stay pending until a sweep has seen every chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...core.errors import NumericalError, TensorProgramError
from ...core.interpreter import Interpreter, annotate
from ..plan import Plan
from .estimates import _PENDING, _Estimates
from .linalg import _inner
from .schedule import _Schedule


class _Family:
    """One hat family's samples in one pass (or chunk), member by member.

    ``normals[:, j]`` (rows of the pass's block of normals), ``inputs[:, j]`` (the
    family's input stack, see :class:`_Schedule`) and ``hats[:, j]`` (each (K, M)) are
    member ``j``'s standard normal, the ``Z^x`` it multiplies (valid when ``ready[j]``)
    and its ``Ẑ``; hats exist for a prefix of ``nhats`` members. ``gram``/``hsum`` hold the
    sample sums ``Σ Ẑ_i Ẑ_j`` and ``Σ Ẑ_i`` for the first ``ngram`` members, filled on
    demand (each member once: ``O(M k)``, not ``O(M k²)`` per regression).
    """

    def __init__(self, inputs: np.ndarray, normals: np.ndarray) -> None:
        K, n, M = inputs.shape
        self.normals = normals
        self.inputs = inputs
        self.hats = np.empty((K, n, M))
        self.ready = [False] * n
        self.nhats = 0
        self.gram = np.empty((K, n, n))
        self.hsum = np.empty((K, n))
        self.ngram = 0

    def sums(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``Σ Ẑ_i Ẑ_l`` (K, j, j) and ``Σ Ẑ_i`` (K, j) over the first ``j`` members."""
        for i in range(self.ngram, j):
            g = _inner(self.hats[:, : i + 1], self.hats[:, i])
            self.gram[:, i, : i + 1] = g
            self.gram[:, : i + 1, i] = g
            self.hsum[:, i] = self.hats[:, i].sum(axis=-1)
        self.ngram = max(self.ngram, j)
        return self.gram[:, :j, :j], self.hsum[:, :j]


def _first_bad(value: Any) -> Any:
    """The first non-finite entry of ``value`` (for error messages)."""
    value = np.asarray(value)
    return value[~np.isfinite(value)].flat[0] if value.ndim else value


class _Pass(Interpreter):
    """The machinery of a pass (see :class:`~.rules.MonteCarloPass`, which adds one rule
    per instruction class): storage, freeing, normals, scalars and pending estimates."""

    def __init__(
        self,
        plan: Plan,
        K: int,
        M: int,
        normals: Callable[..., np.ndarray],
        state: _Estimates | None = None,
        schedule: _Schedule | None = None,
        inner: int = 0,
    ) -> None:
        super().__init__(plan.der.program)
        #: OuterNonlins' inner blocks are halved this many times (the coarser level of
        #: their bias bound, :func:`~.run.run_montecarlo`)
        self.inner = inner
        self.plan = plan
        self.der = plan.der
        self.shape = (K, M)
        self.normals = normals
        self.state = state if state is not None else _Estimates(M)
        self.whole = M == self.state.M
        self.schedule = schedule if schedule is not None else _Schedule(plan)
        self.pending = False
        self.fam: dict[Any, _Family] = {}
        self.const: dict[int, Any] = {}
        #: every scalar's value, column ``cid`` (K, constants + 1; the last column ones)
        self.theta = np.ones((K, len(self.der.consts) + 1))
        self.stacks: dict[int, np.ndarray] = {}
        self._added: set[Any] = set()  # estimates whose sums this chunk has added
        #: pair keys a chunk added with a row of their stack's Gram matrix, before the
        #: Moment that reads them came (it takes the tail samples then)
        self._row_added: set[Any] = set()
        self._filled: set[tuple[int, int]] = set()  # (stack, row) written in this pass
        self._init: np.ndarray | None = None
        self._xi: np.ndarray | None = None

    def _normals(self) -> np.ndarray:
        """The pass's block of standard normals, (K, D, M), drawn on first use."""
        if self._xi is None:
            self._xi = self.normals()
        return self._xi

    def run(self) -> dict[Any, Any]:
        """Interpret every instruction, storing vectors in their stacks and dropping
        each after its last use.

        Floating-point warnings are off for the whole pass: non-finite values are
        found by explicit checks (on Nonlin outputs, ``Z`` of MatMuls and every
        estimate) and reported by name.
        """
        sched, env, stacks, fams = self.schedule, self.env, self.stacks, self.fam
        home, stack_family, init_last = sched.home, sched.stack_family, sched.init_last
        table = {cls: getattr(self, name) for cls, name in self.rules.items()}
        instr = None
        try:
            with np.errstate(all="ignore"):
                for i, (instr, dead, release) in enumerate(
                    zip(self.program.instructions, sched.dead, sched.release)
                ):
                    val = table[type(instr)](instr)
                    h = home.get(instr.out)
                    if h is not None and val is not _PENDING:
                        self._filled.add(h)
                        slot = self._stack(h[0])[:, h[1]]
                        slot[...] = val
                        val = slot
                    env[instr.out] = val
                    for v in dead:
                        del env[v]
                    for sid in release:
                        stacks.pop(sid, None)  # (never allocated if all pending)
                        fams.pop(stack_family.get(sid), None)
                    if i == init_last:
                        self._init = None
        except TensorProgramError as exc:
            raise annotate(exc, instr, type(self).__name__) from exc.__cause__
        return env

    def _stack(self, sid: int) -> np.ndarray:
        """Stack ``sid`` of this pass, (K, rows, M), allocated on first use."""
        s = self.stacks.get(sid)
        if s is None:
            K, M = self.shape
            s = self.stacks[sid] = np.empty((K, self.schedule.sizes[sid], M))
        return s

    # -- helpers ----------------------------------------------------------------------
    def _wait(self) -> Any:
        """Mark this sweep incomplete; the value is pending."""
        self.pending = True
        return _PENDING

    @staticmethod
    def _ready(*values: Any) -> bool:
        return all(v is not _PENDING for v in values)

    def _estimate(self, key: Any, sums: Callable[[], tuple] | None) -> Any:
        """The replicates' estimate ``key``, or pending while it is being accumulated.

        ``sums`` gives this pass's sums over its samples (``None``: its inputs are
        pending here). A whole replicate finishes the estimate at once; a chunk adds
        its sums and waits for the end of the sweep.
        """
        st = self.state
        if key not in st.final:
            if sums is None or key in self._added:
                return self._wait()
            st.add(key, sums())
            if not self.whole:
                self._added.add(key)
                return self._wait()
            st.finish(key)
        return st.final[key]

    def _set_const(self, v: Any, value: Any) -> Any:
        if value is _PENDING:
            return self._wait()
        if isinstance(value, np.ndarray) and value.ndim:
            finite = np.isfinite(value).all()
        else:
            value = np.float64(value)  # numpy scalars: 1/0 is inf, not an error
            finite = math.isfinite(value)
        if not finite:
            raise NumericalError(
                f"Monte Carlo estimate of {v.name} is not finite ({_first_bad(value)})"
            )
        return self._record(self.schedule.cid[v], value)

    def _record(self, cid: int, value: Any) -> Any:
        self.const[cid] = value
        self.theta[:, cid] = value[:, 0] if isinstance(value, np.ndarray) and value.ndim else value
        return value

    def _params(self, instr: Any) -> list[Any]:
        cid, const = self.schedule.cid, self.const
        return [const.get(cid[p], _PENDING) for p in instr.params]
