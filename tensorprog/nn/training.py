r"""Full-batch SGD of an abc-parametrized MLP, unrolled into one Tensor Program.

:func:`train_sgd` writes the whole training run of :class:`~tensorprog.nn.MLP` — every
forward pass, backward pass and weight update — as *one* program of the public DSL
([TP4 App H.3–H.5]; docs/concepts/parametrizations.md, "SGD as a Tensor Program"). It is a
thin user of :func:`tensorprog.nn.train`: the MLP becomes an :class:`~tensorprog.nn.Model`
(:func:`_model`: ``W_in`` ``("n", d)``, hidden ``W2 … WL``, readout ``W_out`` ``(1, "n")``,
``init_std`` the ABC's σ_l) under per-parameter :func:`~tensorprog.nn.abcd` exponents
``(a_l, b_l, c)`` (:func:`_abcd`; no fan-in factor, so ``W_in``'s ``init_std`` is σ_1:
TP4's input columns have variance σ_1²), trained by ``nn.SGD(lr)``; :class:`TrainingRun`
is a view of that run. The program ``nn.train`` writes for an MLP is the following
(``docs/training.md``). Only the **initial** weights enter MatMul:

.. math::

    W^l_t x = W^l_0 x - \eta\,n^{1-c-2a_l}\theta_f\sum_{s<t}\sum_i\chi_{s,i}\,
    dh^l_s(\xi_i)\,\frac{x^{l-1}_s(\xi_i)^\top x}{n},

a MatMul of the initial Gaussian matrix plus a Nonlin+ of earlier vectors whose
coefficients are Moments. Width powers are initial scalars depending on ``tp.n``: the
finite-width simulator evaluates them at ``n`` (so ``run.simulate(n)`` *is* the finite
network of ``docs/training.md``, up to rounding), the engine takes ``n → ∞`` (so ``run.limit()``
is its infinite-width limit by the Master Theorem). See ``docs/training.md``.

The program (exponents ``s_l = a_l + b_l``, ``e_l = c + 2a_l``; ``m = min(s_{L+1}, e_{L+1})``)
------------------------------------------------------------------------------------------
Initial objects [TP4 App H.3]:

* ``u0 … u{d-1}``: the columns of ``W¹_0`` (``s_1 = 0``), coordinates ``N(0, σ_1²)``;
* ``W2 … WL``: the hidden ``W^l_0`` (``s_l = 1/2``), entries ``N(0, σ_l²/n)``;
* ``v``: the readout row rescaled to Θ(1) entries, ``W^{L+1}_0 = n^{-s_{L+1}} vᵀ``.

Vectors have Θ(1) coordinates. Gradients are normalised by ``θ_f = n^{-m}``:
``dh^l := n^{m} ∇_{h^l} f``; the readout is carried as ``ŵ_t := n^{m} W^{L+1ᵀ}_t``, so
``dx^L_t = ŵ_t`` and ``f_t(ξ) = n^{1-m}⟨ŵ_t, x^L_t(ξ)⟩`` (``⟨a,b⟩ = aᵀb/n``, a Moment).
The update of layer ``l`` moves ``h^l`` by ``θ_{W^l} = n^{-w_l}`` with
``w_1 = m + e_1`` and ``w_l = m + e_l - 1`` (``l ≥ 2``), and the features of layer ``l``
move by ``θ_l = n^{-ρ_l}``, ``ρ_l = min_{k≤l} w_k`` (``ρ_L = r`` of [TP4 Def 3.2]).

* Layers with ``ρ_l = 0`` (feature learning, e.g. all of μP) are written directly:
  ``h^l_t = W^l_0 x^{l-1}_t + (−η θ_{W^l}) Σ_{s<t,i} χ_{s,i} ⟨x^{l-1}_s(ξ_i), x^{l-1}_t⟩ dh^l_s(ξ_i)``,
  ``x^l_t = φ(h^l_t)``.
* Layers with ``ρ_l > 0`` (the features do not move in the limit) carry the
  normalised change ``Δh^l_t := (h^l_t − h^l_0)/θ_l`` and
  ``Δx^l_t := (φ(h^l_0 + θ_lΔh^l_t) − φ(h^l_0))/θ_l`` — a Nonlin+ whose value at
  ``θ̊_l = 0`` is ``φ'(h^l_0)Δh^l_t`` (a Piecewise in its sympy body) — and the next
  layer multiplies ``W^{l+1}_0`` with ``Δx^l_t`` (TP4 Eq. (55)).
* Backward pass at every training input:
  ``dh^L_t = ŵ_t ⊙ φ'(h^L_t)``, ``dx^{l-1}_t = W^{lᵀ}_0 dh^l_t + (−η θ_{W^l}) Σ_{s<t,j}
  χ_{s,j} ⟨dh^l_s(ξ_j), dh^l_t⟩ x^{l-1}_s(ξ_j)``, ``dh^{l-1}_t = dx^{l-1}_t ⊙ φ'(h^{l-1}_t)``,
  by :func:`tensorprog.grad` through the Moment coefficients of the updates.
* Readout: ``ŵ_{t+1} = ŵ_t + (−η n^{m-e_{L+1}}) Σ_i χ_{t,i} x^L_t(ξ_i)``,
  ``ŵ_0 = n^{m-s_{L+1}} v``; first layer:
  ``h^1_t(ξ) = Σ_j ξ_j u_j + (−η θ_{W^1}) Σ_{s<t,i} χ_{s,i} (ξ_i·ξ) dh^1_s(ξ_i)``.
* Loss derivative ``χ_{t,i} = (f_t(ξ_i) − y_i)/B`` (loss ``(1/2B) Σ_i (f − y_i)²``).

The initial output and ``center``
---------------------------------
``f_0 = n^{1-s_{L+1}}⟨v, x^L_0⟩`` is a Moment with a bounded coefficient only when
``a_{L+1}+b_{L+1} ≥ 1``. For ``a_{L+1}+b_{L+1} < 1`` (``= 1/2`` in SP/NTK: ``f_0``
converges to a Gaussian process [TP4 App H.4.1]) the run is **centred**: the trained
function is ``f_t − f_0`` (TP4b §5.1), written as
``n^{1-s_{L+1}-r}⟨v, Δx^L_t⟩ + (−η n^{1-e_{L+1}}) Σ_{s<t,i} χ_{s,i}⟨x^L_s(ξ_i), x^L_t⟩``,
and the finite network is trained on the loss of ``f − f_0`` (the gradient of ``f_0``
with respect to the current weights is zero, so only ``χ`` changes). ``center=True``
may also be asked for when ``a_{L+1}+b_{L+1} ≥ 1`` (then ``f̃_t = f_t − f_0``). An uncentred
run with ``r > 0`` is carried as changes too (``nn.train(..., changes=True)``), so that
features which do not move have exactly their step-0 limit.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from .. import Program, ProgramTypeError, ProgramValueError
from .mlp import MLP
from .model import Model
from .optim import SGD
from .parametrization import abcd, classify
from .train import TrainSimulation, _values, train

__all__ = ["train_sgd", "TrainingRun", "TrainingLimit", "TrainingSimulation", "Exponents"]


# ---------------------------------------------------------------------------------------
# Width exponents


@dataclass(frozen=True)
class Exponents:
    r"""Width exponents of the normalised program (all :class:`~fractions.Fraction`).

    Attributes
    ----------
    s : tuple
        ``s_l = a_l + b_l``: ``W^l_0`` has entries of size ``n^{-s_l}``.
    e : tuple
        ``e_l = c + 2a_l``: ``ΔW^l = −η n^{-e_l} ∂L/∂W^l``.
    m : Fraction
        ``min(s_{L+1}, e_{L+1})``: gradients are normalised by ``θ_f = n^{-m}``.
    w : tuple, length L
        ``θ_{W^l} = n^{-w_l}``: how much the update of ``W^l`` moves ``h^l``.
    rho : tuple, length L
        ``θ_l = n^{-ρ_l}``, ``ρ_l = min_{k≤l} w_k``: how much ``h^l, x^l`` move.
    r : Fraction
        ``ρ_L``, TP4's ``r`` [TP4 Def 3.2].
    """

    s: tuple[Fraction, ...]
    e: tuple[Fraction, ...]
    m: Fraction
    w: tuple[Fraction, ...]
    rho: tuple[Fraction, ...]

    @property
    def r(self) -> Fraction:
        return self.rho[-1]

    @classmethod
    def of(cls, param: Any) -> Exponents:
        L = param.depth
        s = tuple(a + b for a, b in zip(param.a, param.b))
        e = tuple(param.c + 2 * a for a in param.a)
        m = min(s[L], e[L])
        w = tuple(m + e[0] if ell == 0 else m + e[ell] - 1 for ell in range(L))
        rho = tuple(min(w[: ell + 1]) for ell in range(L))
        return cls(s, e, m, w, rho)


# ---------------------------------------------------------------------------------------
# Validation


def _matrix(X: Any, what: str) -> np.ndarray:
    try:
        A = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise ProgramTypeError(f"train_sgd: {what} must be a numeric array, got {X!r}") from None
    if A.ndim != 2:
        raise ProgramValueError(
            f"train_sgd: {what} must be 2-D, shape (B, d) (one input per row), got shape {A.shape}"
        )
    if A.shape[0] == 0:
        raise ProgramValueError(
            f"train_sgd: {what} must have at least one row, got shape {A.shape}"
        )
    if not np.all(np.isfinite(A)):
        raise ProgramValueError(f"train_sgd: {what} must be finite")
    return A


def _positive(x: Any, what: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise ProgramTypeError(f"train_sgd: {what} must be a positive number, got {x!r}")
    f = float(x)
    if not (math.isfinite(f) and f > 0):
        raise ProgramValueError(f"train_sgd: {what} must be a positive finite number, got {x!r}")
    return f


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class TrainingLimit:
    """The infinite-width limit of a training run (``run.limit()``).

    Attributes
    ----------
    outputs : ndarray, shape (steps+1, B)
        ``f̊_t(ξ_i)`` on the training inputs (before update ``t+1``).
    stderr : ndarray, shape (steps+1, B)
        Monte Carlo standard errors (0 for exact and quadrature values).
    method : ndarray of str, shape (steps+1, B)
        ``"exact" | "quadrature" | "montecarlo"`` per output.
    eval_outputs, eval_stderr : ndarray, shape (steps+1, E)
        The same on ``X_eval``.
    feature_kernels, feature_kernels_stderr : ndarray, shape (steps+1, L, B, B) or None
        ``𝔼[Z^{x^l_t(ξ_i)} Z^{x^l_t(ξ_j)}]``.
    limit : tensorprog Limit
        The underlying :class:`tensorprog.engine.Limit`.
    """

    outputs: np.ndarray
    stderr: np.ndarray
    method: np.ndarray
    eval_outputs: np.ndarray
    eval_stderr: np.ndarray
    feature_kernels: np.ndarray | None
    feature_kernels_stderr: np.ndarray | None
    limit: Any = field(repr=False)
    run: Any = field(default=None, repr=False)  # the TrainingRun (its handles)

    def tabulate(self) -> Any:
        """Every recorded scalar as a :class:`tensorprog.core.tables.Table` row: ``quantity``
        (``"output"``, ``"eval_output"``, ``"feature_kernel"``), ``step`` t, ``layer``
        l, ``i``, ``j``, ``name``, then the limit's ``value, stderr, error, method,
        trusted, khat, warning`` (:meth:`tensorprog.engine.Limit.tabulate`)."""
        from ..core.tables import INDEX_COLUMNS, LIMIT_COLUMNS, Table

        return Table(
            f"Training limit of {self.limit.program.name!r}",
            INDEX_COLUMNS + LIMIT_COLUMNS,
            tuple(_indexed(self.run, "TrainingLimit", self.limit._cells)),
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per output, evaluation output and feature
        kernel entry (long format, as :meth:`tabulate`); e.g. the outputs' curves:
        ``df[df.quantity == "output"].pivot(index="step", columns="i", values="value")``.

        Needs pandas (``pip install 'tensorprog[notebook]'``).
        """
        return self.tabulate().to_pandas()

    def _repr_html_(self) -> str:
        return self.tabulate().html()


@dataclass
class TrainingSimulation:
    """A training run at finite width ``n`` (``run.simulate(n, seed)``).

    Attributes
    ----------
    outputs : ndarray, shape (steps+1, B)
    eval_outputs : ndarray, shape (steps+1, E)
    feature_kernels : ndarray, shape (steps+1, L, B, B) or None
    simulation : tensorprog.Simulation
        Every variable of the program at this width (``sim.vector``, ``sim.matrix``).
    """

    outputs: np.ndarray
    eval_outputs: np.ndarray
    feature_kernels: np.ndarray | None
    simulation: Any = field(repr=False)
    run: Any = field(default=None, repr=False)  # the TrainingRun (its handles)

    def tabulate(self) -> Any:
        """Every recorded scalar as a :class:`tensorprog.core.tables.Table` row: ``quantity,
        step, layer, i, j, name`` (as :meth:`TrainingLimit.tabulate`), ``value``, and
        the width ``n`` and ``seed``."""
        from ..core.tables import INDEX_COLUMNS, Column, Table, number

        sim = self.simulation
        return Table(
            f"Training run {sim.program.name!r} at n={sim.n}, seed={sim.seed!r}",
            INDEX_COLUMNS + (Column("value", "value", number), Column("n"), Column("seed")),
            tuple(_indexed(self.run, "TrainingSimulation", lambda h: (sim[h], sim.n, sim.seed))),
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per recorded scalar (as :meth:`tabulate`).

        Needs pandas (``pip install 'tensorprog[notebook]'``).
        """
        return self.tabulate().to_pandas()

    def _repr_html_(self) -> str:
        return self.tabulate().html()

    @property
    def n(self) -> int:
        """The width."""
        return self.simulation.n

    def vector(self, key: Any) -> np.ndarray:
        """A vector of the program at this width (``Simulation.vector``)."""
        return self.simulation.vector(key)

    def matrix(self, key: Any) -> np.ndarray:
        """An initial matrix's sampled entries (``Simulation.matrix``)."""
        return self.simulation.matrix(key)

    def __getitem__(self, key: Any) -> Any:
        return self.simulation[key]

    def param(self, name: str) -> np.ndarray:
        """A weight's **initial** value at this width (numpy), as the network uses it:
        ``"W_in"`` (``W¹_0``, shape (n, d)), ``"W2"`` … ``"WL"`` (``W^l_0``, (n, n)),
        ``"W_out"`` (``W^{L+1}_0``, (1, n)); ``W^l_0 = n^{-a_l} w^l_0`` (docs/training.md,
        "The finite network")."""
        run, n = self.run, float(self.n)
        s, L = run.exponents.s, run.net.depth
        sim, ini = self.simulation, run.initial
        if name == "W_in":
            return n ** -float(s[0]) * np.stack([sim.vector(u) for u in ini["W1_columns"]], 1)
        if name == "W_out":
            return n ** -float(s[L]) * sim.vector(ini["readout"])[None, :]
        hidden = {f"W{ell}": ell for ell in ini["hidden"]}
        if name in hidden:
            ell = hidden[name]
            return n ** (0.5 - float(s[ell - 1])) * sim.matrix(ini["hidden"][ell])
        raise ProgramValueError(
            f"TrainingSimulation.param: the network has weights "
            f"{['W_in', *hidden, 'W_out']}, not {name!r}"
        )

    def named(self, name: str) -> np.ndarray:
        """The pre-activations ``"h{l}"`` and features ``"x{l}"`` at this width, shape
        (steps+1, B+E, n) (as :meth:`tensorprog.nn.TrainSimulation.named`)."""
        return TrainSimulation(None, None, self.simulation, self.run.train_run).named(name)


def _indexed(run: Any, what: str, per_scalar: Any) -> list[tuple[Any, ...]]:
    """The rows of :func:`tensorprog.core.tables.indexed_rows` for a run's recorded scalars."""
    if run is None:
        raise ProgramValueError(
            f"{what}.tabulate: this result was built without its run "
            f"(run=None); use run.limit() or run.simulate(n)"
        )
    from ..core.tables import indexed_rows

    return indexed_rows(
        [
            ("output", run.outputs, ("step", "i")),
            ("eval_output", run.eval_outputs, ("step", "i")),
            ("feature_kernel", run.feature_kernels, ("step", "layer", "i", "j")),
        ],
        per_scalar,
    )


class TrainingRun:
    """The unrolled training of ``net`` (returned by :func:`train_sgd`).

    Attributes
    ----------
    program : tensorprog.Program
        Forward passes, backward passes and updates, as one program.
    outputs : ndarray of Scalar, shape (steps+1, B)
        ``f_t(ξ_i)`` before update ``t+1`` (``f_t − f_0`` when ``center``).
    eval_outputs : ndarray of Scalar, shape (steps+1, E)
        The same on ``X_eval`` (not trained on).
    feature_kernels : ndarray of Scalar, shape (steps+1, L, B, B) or None
        ``⟨x^l_t(ξ_i), x^l_t(ξ_j)⟩`` (the same handle at ``[…, i, j]`` and ``[…, j, i]``).
    chi : ndarray of Scalar, shape (steps, B)
        The loss derivatives ``χ_{t,i} = (f_t(ξ_i) − y_i)/B``.
    initial : dict
        Handles of the initial weights: ``"W1_columns"`` (list of d vectors, the
        columns of ``W¹_0`` up to ``n^{-s_1}``), ``"hidden"`` ({l: Matrix}, ``W^l_0`` up
        to ``n^{1/2-s_l}``), ``"readout"`` (the vector ``v``,
        ``W^{L+1}_0 = n^{-(a_{L+1}+b_{L+1})} vᵀ``). ``sim.param(name)`` gives the weights.
    named : dict
        ``{"h1": …, "x1": …, …, "hL", "xL"}``: the pre-activations and features
        (handles, shape (steps+1, B+E): the training inputs, then ``X_eval``), as
        :attr:`tensorprog.nn.TrainRun.named`.
    train_run : tensorprog.nn.TrainRun
        The :func:`tensorprog.nn.train` run this is a view of.
    problems : tuple of str
        Why the limit does not exist (``allow_unstable=True`` runs); empty otherwise.
    exponents : Exponents
    center : bool
    """

    def __init__(
        self,
        net: MLP,
        X: np.ndarray,
        Y: np.ndarray,
        lr: float,
        steps: int,
        X_eval: np.ndarray,
        *,
        program: Program,
        outputs: np.ndarray,
        eval_outputs: np.ndarray,
        feature_kernels: np.ndarray | None,
        chi: np.ndarray,
        initial: dict,
        center: bool,
        train_run: Any,
    ) -> None:
        self.net, self.X, self.Y, self.lr, self.steps, self.X_eval = net, X, Y, lr, steps, X_eval
        self.program, self.outputs, self.eval_outputs = program, outputs, eval_outputs
        self.feature_kernels, self.chi, self.initial = feature_kernels, chi, initial
        self.center = center
        self.exponents = Exponents.of(net.param)
        self.train_run = train_run
        self.named = train_run.named
        self.problems: tuple[str, ...] = train_run.problems

    @classmethod
    def _of_train_run(cls, net: MLP, X: Any, Y: Any, lr: float, steps: int, Xe: Any, run: Any):
        """The view of an :func:`tensorprog.nn.train` run of :func:`_model`."""
        L = net.depth
        fk = None
        if run.feature_kernels:
            fk = np.stack([run.feature_kernels[f"x{ell}"] for ell in range(1, L + 1)], axis=1)
        P = run._params
        initial = {
            "W1_columns": list(P["W_in"].u),
            "hidden": {ell: P[f"W{ell}"].M for ell in range(2, L + 1)},
            "readout": P["W_out"].u[0],
        }
        return cls(
            net, X, Y, lr, steps, Xe,
            program=run.program,
            outputs=run.outputs[..., 0],
            eval_outputs=run.eval_outputs[..., 0],
            feature_kernels=fk,
            chi=run.chi[..., 0],
            initial=initial,
            center=run.center,
            train_run=run,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<TrainingRun of {self.net!r}: B={self.X.shape[0]}, steps={self.steps}, "
            f"lr={self.lr}, center={self.center}; {len(self.program)} instructions>"
        )

    def limit(self, **kw: Any) -> TrainingLimit:
        """The infinite-width limit (keywords as :meth:`tensorprog.Program.limit`).

        Raises
        ------
        ProgramValueError
            If the run was built with ``allow_unstable=True`` and has no limit
            (:attr:`problems`).
        """
        if self.problems:
            raise ProgramValueError(
                "train_sgd: this run has no infinite-width limit: " + "; ".join(self.problems)
            )
        lim = self.program.limit(**kw)
        meth = np.empty(self.outputs.shape, dtype=object)
        for idx, h in np.ndenumerate(self.outputs):
            meth[idx] = lim.method(h)
        return TrainingLimit(
            outputs=_values(self.outputs, lim.__getitem__),
            stderr=_values(self.outputs, lim.stderr),
            method=meth,
            eval_outputs=_values(self.eval_outputs, lim.__getitem__),
            eval_stderr=_values(self.eval_outputs, lim.stderr),
            feature_kernels=_values(self.feature_kernels, lim.__getitem__),
            feature_kernels_stderr=_values(self.feature_kernels, lim.stderr),
            limit=lim,
            run=self,
        )

    def simulate(self, n: int, seed: Any = 0, **kw: Any) -> TrainingSimulation:
        """The same run at finite width ``n`` (keywords as :meth:`tensorprog.Program.simulate`)."""
        sim = self.program.simulate(n, seed=seed, **kw)
        return TrainingSimulation(
            outputs=_values(self.outputs, sim.__getitem__),
            eval_outputs=_values(self.eval_outputs, sim.__getitem__),
            feature_kernels=_values(self.feature_kernels, sim.__getitem__),
            simulation=sim,
            run=self,
        )


# ---------------------------------------------------------------------------------------
# Entry point


def train_sgd(
    net: MLP,
    X: Any,
    Y: Any,
    lr: float,
    steps: int,
    *,
    X_eval: Any = None,
    center: bool | None = None,
    feature_kernels: bool = True,
    allow_unstable: bool = False,
    name: str | None = None,
) -> TrainingRun:
    r"""Unroll ``steps`` full-batch SGD steps of ``net`` on ``(X, Y)`` into one program.

    Parameters
    ----------
    net : MLP
        The network (depth, nonlinearity, abc-parametrization).
    X : array_like, shape (B, d)
        Training inputs ``ξ_1..ξ_B`` (rows), used as given.
    Y : array_like, shape (B,)
        Targets; loss ``(1/2B) Σ_i (f(ξ_i) − y_i)²``.
    lr : float
        ``η > 0``; the learning rate of every ``w^l`` is ``η n^{-c}``.
    steps : int
        Number of SGD steps ``T ≥ 1``; outputs are recorded at ``t = 0..T``.
    X_eval : array_like, shape (E, d), optional
        Extra inputs on which ``f_t`` is recorded (not trained on).
    center : bool, optional
        Train ``f − f_0`` instead of ``f``. Default: ``True`` iff
        ``a_{L+1}+b_{L+1} < 1`` (where ``f_0`` is not a bounded Moment, e.g. a Gaussian
        process in SP/NTK); ``False`` there raises.
    feature_kernels : bool, default True
        Record ``⟨x^l_t(ξ_i), x^l_t(ξ_j)⟩`` for every layer and step.
    name : str, optional
        Name of the program.

    Returns
    -------
    TrainingRun

    Raises
    ------
    ProgramTypeError, ProgramValueError
        On bad arguments (the message names the argument), or an unstable
        parametrization (whose limit does not exist).

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog import nn
    >>> net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    >>> run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1)
    >>> np.round(run.limit().outputs, 6)
    array([[0.      ],
           [0.708191]])
    """
    if not isinstance(net, MLP):
        raise ProgramTypeError(f"train_sgd: net must be an nn.MLP, got {type(net).__name__}")
    Xa = _matrix(X, "X")
    B, d = Xa.shape
    if d != net.d_in:
        raise ProgramValueError(
            f"train_sgd: X has {d} columns but the network's input dimension d_in is {net.d_in}"
        )
    try:
        Ya = np.asarray(Y, dtype=float)
    except (TypeError, ValueError):
        raise ProgramTypeError(f"train_sgd: Y must be a numeric array, got {Y!r}") from None
    if Ya.shape != (B,):
        raise ProgramValueError(
            f"train_sgd: Y must have shape (B,) = ({B},), one target per row of X, got shape {Ya.shape}"
        )
    if not np.all(np.isfinite(Ya)):
        raise ProgramValueError("train_sgd: Y must be finite")
    lr = _positive(lr, "lr")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Integral):
        raise ProgramTypeError(f"train_sgd: steps must be a positive int, got {steps!r}")
    if steps < 1:
        raise ProgramValueError(f"train_sgd: steps must be a positive int, got {steps}")
    steps = int(steps)
    if X_eval is None:
        Xe = np.zeros((0, d))
    else:
        Xe = _matrix(X_eval, "X_eval")
        if Xe.shape[1] != d:
            raise ProgramValueError(
                f"train_sgd: X_eval must have d_in = {d} columns like X, got shape {Xe.shape}"
            )
    if not isinstance(allow_unstable, (bool, np.bool_)):
        raise ProgramTypeError(f"train_sgd: allow_unstable must be a bool, got {allow_unstable!r}")
    cls = classify(net.param)  # type: ignore[arg-type]
    if not cls.stable and not allow_unstable:
        failing = [k for k, ok in cls.conditions.items() if not ok]
        raise ProgramValueError(
            f"train_sgd: param {net.param!r} is unstable (fails {', '.join(failing)}; "
            f"nn.classify(param) explains): its training diverges as n → ∞, so the run has no "
            f"infinite-width limit and cannot be written with bounded scalars (pass "
            f"allow_unstable=True to simulate it anyway)"
        )
    ex = Exponents.of(net.param)
    s_out = ex.s[-1]
    if center is not None and not isinstance(center, (bool, np.bool_)):
        raise ProgramTypeError(f"train_sgd: center must be a bool or None, got {center!r}")
    if cls.stable:
        assert ex.r == cls.r, (ex.r, cls.r)
        if center is None:
            center = s_out < 1
        elif not center and s_out < 1:
            raise ProgramValueError(
                f"train_sgd: center=False needs a_{{L+1}}+b_{{L+1}} ≥ 1, but it is {s_out}: "
                f"f_0 = n^{1 - s_out}⟨v, x^L_0⟩ is a Gaussian-process fluctuation, not a Moment "
                f"with a bounded coefficient [TP4 App H.4.1]; use center=True (trains f − f_0)"
            )
    if not isinstance(feature_kernels, (bool, np.bool_)):
        raise ProgramTypeError(
            f"train_sgd: feature_kernels must be a bool, got {feature_kernels!r}"
        )
    pname = (
        name if name is not None else f"sgd_{net.param.name or 'abc'}_L{net.depth}_{net.phi.name}"
    )
    changes = True if cls.stable and not center and ex.r > 0 else None
    run = train(
        _model(net),
        Xa,
        Ya,
        steps,
        optimizer=SGD(lr),
        param=_abcd(net),
        center=center,
        allow_unstable=bool(allow_unstable),
        # features that move by a vanishing amount (r > 0) of an uncentred run: carried
        # as changes, so their limit is exactly their step-0 limit [TP4 Eq. (55)]
        changes=changes,
        # names for the uses W_0 x_t that the program already has (ΔW x rows of a
        # coordinate check); a run carried as changes would need new instructions
        coordinates=not center and changes is None,
        X_eval=Xe if len(Xe) else None,
        feature_kernels=[f"x{ell}" for ell in range(1, net.depth + 1)] if feature_kernels else (),
        name=pname,
    )
    return TrainingRun._of_train_run(net, Xa, Ya, lr, steps, Xe, run)


def _model(net: MLP) -> Model:
    r"""``net`` as an :class:`~tensorprog.nn.Model`: input weights ``W_in`` ``("n", d)``,
    hidden ``W2 … WL`` ``("n", "n")``, readout ``W_out`` ``(1, "n")``, ``init_std`` the
    ABC's σ_l; the forward names ``h{l}`` and ``x{l} = φ(h{l})``."""
    L, phi, std = net.depth, net.phi, net.param.init_std  # type: ignore[union-attr]
    m = Model(f"mlp_L{L}_{phi.name}")
    m.param("W_in", ("n", net.d_in), init_std=float(std[0]))
    for ell in range(2, L + 1):
        m.param(f"W{ell}", ("n", "n"), init_std=float(std[ell - 1]))
    m.param("W_out", (1, "n"), init_std=float(std[L]))

    @m.forward
    def forward(p: Any, xi: np.ndarray) -> Any:
        h = p.W_in.matmul(xi, name="h1")
        x = phi(h, name="x1")
        for ell in range(2, L + 1):
            h = p[f"W{ell}"].matmul(x, name=f"h{ell}")
            x = phi(h, name=f"x{ell}")
        return p.W_out @ x

    return m


def _abcd(net: MLP) -> Any:
    r"""TP4's per-layer ``(a_l, b_l, c)`` as per-parameter :func:`~tensorprog.nn.abcd`
    exponents of :func:`_model`'s weights (``d`` unused by SGD: 0). ``nn.abcd`` has no
    fan-in factor, so ``W_in``'s ``init_std`` is σ_1 itself — the TP4 input columns'
    variance σ_1² (``σ_1√d`` under a per-class preset's TP5 Table 3 ``1/d``); learning
    rates map one to one: ``η n^{-c}`` on every ``w^l``."""
    prm, L = net.param, net.depth
    names = ["W_in"] + [f"W{ell}" for ell in range(2, L + 1)] + ["W_out"]
    return abcd({nm: (prm.a[k], prm.b[k], prm.c, 0) for k, nm in enumerate(names)})  # type: ignore[union-attr]
