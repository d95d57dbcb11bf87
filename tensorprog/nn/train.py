r"""``nn.train``: the training of any :class:`~tensorprog.nn.Model`, unrolled into one program.

:func:`train` calls the model's forward at every step on every training input, records
the loss and its derivatives, differentiates with :func:`tensorprog.grad` (one backprop
implementation, through every Moment and scalar: ``through_scalars=True``), and writes
the optimizer's updates — forward, backward and updates of every step in one
:class:`tensorprog.Program`. Width powers are initial scalars in ``tp.n``, so
``run.simulate(n, seed)`` *is* the finite network below (to rounding) and
``run.limit()`` its infinite-width limit by the Master Theorem [TP4 App H.3], [TP4b §2].

Choices where this API departs from the plan of issue #15
---------------------------------------------------------
* ``nn.MF()`` keeps returning TP4's depth-1 :class:`~tensorprog.nn.ABC` (its existing
  users are unchanged); :func:`train` accepts an ABC and reads the per-class exponents
  off its layers (:func:`~tensorprog.nn.parametrization.abc_scaling`): ``nn.MF()`` is the
  mean-field preset of a model without hidden weights.
* Kernel-regime runs (NTK, SP with ``lr·n^{-1}``) are **centred**: they train
  ``f_t − f_0`` ("Kernel-regime runs" below). Unstable runs are
  refused: a run whose program would need a diverging width power raises naming the
  parameter and the exponent; ``allow_unstable=True`` builds it anyway (``simulate``
  works, ``limit`` refuses with the reason).
* ``loss[t]`` is the loss of ``f_t`` over **all** rows of ``X`` (the full-batch
  objective), also when ``batches=`` selects the rows of each gradient step.

The finite network
------------------
Parameter ``P`` (class by shape, :class:`~tensorprog.nn.ParamClass`) with scaling
``(a, b, c)``: ``P = n^{-a} w``, ``w`` iid ``N(init_mean, init_std²·v·n^{-2b})``, SGD on
``w`` with learning rate ``lr·lr_mult·n^{-c}``; so ``P_0`` has entries of size
``n^{-s}``, ``s = a+b``, and ``ΔP = −lr·lr_mult·n^{-e}·∂L/∂P``, ``e = c+2a``. Losses
``"mse"``: ``(1/2B) Σ_i ‖f(ξ_i) − y_i‖²``; ``"xent"``: ``(1/B) Σ_i [logsumexp f(ξ_i) −
f(ξ_i)_{y_i}]`` (B: the rows of the step). SGD with momentum μ is linear in the
gradients: ``P_t = P_0 − lr_P Σ_{r<t} κ_{t−r} ∂L_r/∂P``, ``κ_j = Σ_{q<j} μ^q``
(:class:`~tensorprog.nn.SGD`).

The program (every vector Θ(1) coordinates, every coefficient a power ``n^{-k}``, k ≥ 0)
------------------------------------------------------------------------------------
Gradients are normalised as in μP: for an output ``f_k`` and a vector ``z`` of the
forward, ``dz := n ∂f_k/∂z`` (what :func:`tensorprog.grad` returns), Θ(1) when ``f_k``
is; ``χ_{t,i,k} = ∂L_t/∂f_k(ξ_i)`` (a Scalar). Per class (``⟨a,b⟩ = aᵀb/n``):

* **hidden** ``("n","n")``: one initial matrix ``M`` (entries ``N(0, σ²v/n)``),
  ``P_0 = n^{1/2−s} M``; a use ``h = P_t x`` is
  ``n^{1/2−s} M x + Σ_{r<t} (−lr κ_{t−r} n^{-e}) Σ χ_{r,i,k} ⟨x_u, x⟩ dh_u`` over the
  uses ``u`` (input ``i``, output ``k``) of step ``r`` — only ``M`` enters MatMul, the
  update is rank-B ([TP4 §5.3, App H.3]), and ``tp.grad`` through the Moments ``⟨x_u, x⟩`` gives
  the ``ΔPᵀ`` corrections ``⟨dh_u, dh⟩ x_u``;
* **input** ``("n", d)``: its ``d`` columns are initial vectors ``u_j``,
  ``P_t a = n^{-s} Σ_j a_j u_j + Σ_{r<t} (−lr κ_{t−r} n^{-(e+1)}) Σ χ (ξ_u·a) dh_u``;
* **vector-like** ``("n",)``: ``b_0 = n^{-s} u``,
  ``b_{t+1} = b_t + Σ_{r≤t} (−lr μ^{t−r} n^{-(e+1)}) Σ χ db_r``;
* **output** ``(k, "n")``: rows carried as ``ŵ = n P`` (``ŵ_0 = n^{1−s} u_k``), so
  ``P_k v = ⟨ŵ_k, v⟩`` exactly (a Moment), and
  ``ŵ_{t+1} = ŵ_t + Σ_{r≤t} (−lr μ^{t−r} n^{1−e}) Σ ḡ v_u`` with
  ``ḡ = Σ_k' χ_{k'} ∂f_{k'}/∂(P_k v_u)``;
* **scalar-like**: program scalars ``c_0 = n^{-a}·init_mean``,
  ``c_{t+1} = c_t + Σ_{r≤t} (−lr μ^{t−r} n^{-e}) ∂L_r/∂c``.

Entrywise optimizers (Adam, SignSGD)
------------------------------------
:class:`~tensorprog.nn.Adam` and :class:`~tensorprog.nn.SignSGD` move ``w`` by
``−lr·lr_mult·n^{-c}·Q_t(g_0..g_t; ε_P)``, ``ε_P = eps·n^{-d}`` [TP4b §2.1, Def 2.2.1]; on
``P = n^{-a}w`` that is ``−lr·lr_mult·n^{-(c+a)}·Q_t(n^{-a}∂L/∂P; eps·n^{-d})``. ``Q`` is
scale-equivariant (``Q(λg; λε) = Q(g; ε)``), so with the program's Θ(1) gradients
``Ĝ`` — ``∂L/∂P = Ĝ/n`` for input, vector-like and hidden weights (``k = 1``),
``= Ĝ`` for output and scalar-like ones (``k = 0``) — the update is
``Q_t(Ĝ_0..Ĝ_t; eps·n^{-k_ε})`` with ``k_ε = d − a − k`` (0 in μP: :func:`_entrywise_expos`):

* **vector-like**, **input** (per column ``j``: ``Ĝ_{r,j} = Σ χ ξ_{u,j} dh_u``),
  **output** (per row, on ``ŵ = nP``) and **scalar-like** parameters: ``Ĝ_r`` is one
  vector (scalar) per step and ``U_r = Q_r(Ĝ_0..Ĝ_r)`` an ordinary Nonlin (scalar
  function); ``P_{r+1} = P_r + (−lr·lr_mult·n^{-k_lr}) U_r`` with ``k_lr = c+a``
  (``c+a−1`` for ``ŵ``), so ``P_t ξ = P_0 ξ + Σ_{r<t} Σ_j coef·ξ_j·U_{r,j}``;
* **hidden**: ``(ΔP_t x)_α = −lr·lr_mult·n^{-(c+a−1)}·(1/n) Σ_β Σ_{r<t}
  Q_r(Ĝ_{0,αβ}..Ĝ_{r,αβ}) x_β``, ``Ĝ_{s,αβ} = Σ_u χ_u dh_{u,α} x_{u,β}``: one
  ``tp.outer_nonlin`` per use (rows the ``dh_u``, cols the ``x_u`` and ``x``; swapped for
  ``P_tᵀ y``) — NE⊗OR⊤'s nonlinear outer product [TP4b Def 2.6.1, Thm 2.7.1]; ``tp.grad``
  differentiates through it, so the backward pass carries ``ΔP_tᵀ dh``.

``k_ε > 0`` (``ε_P`` vanishing against the gradients: ``Q`` tends to a sign, outside the
Master Theorem's smoothness) is refused like a diverging power; ``k_ε < 0`` is written
``Q(n^{k_ε}Ĝ; eps)``, an exact, lazier limit. The learning-rate powers ``n^{-k_lr}``
replace SGD's update powers in the refusals below.

Operator regime of entrywise optimizers
---------------------------------------
When an output weight has ``s = a+b < 1`` (NTP: ``s_out = 1/2``) the initial output is a
Gaussian process [TP4 App H.4.1] and, under an entrywise optimizer, the features move by
``o(1)``: TP4b's operator regime [TP4b §2.4, Thm 2.8.19]. Such a run is **centred** by
default, like SGD's kernel-regime runs: it trains ``f − f_0`` (``outputs[0] = 0``). It
carries two programs:

* ``run.program`` (``simulate``): the finite network above — the actual Adam/SignSGD
  network at width ``n`` trained on the loss of ``f_t − f_0`` (its powers of ``n``, among
  them the diverging ``n^{1−s}`` of the initial output, are plain numbers at finite
  ``n``);
* ``run.limit_program`` (``limit``): the recursion ``f̊_0 = 0``,
  ``f̊_{t+1} = f̊_t − lr·K_Q(χ_0..χ_t)`` of [TP4b Thm 2.4.7, 2.4.9], ``K_Q`` built from
  the step-0 kets (one forward and one :func:`tensorprog.grad` backward pass per input,
  gradients normalised by ``n^{s_out}``) by :func:`tensorprog.nn.operator.operator_step`
  — a ``tp.outer_nonlin`` per step and vector multiplied for hidden weights, Nonlins of
  the gradients for the others (that module's docstring has the formula and the width
  exponents ``k_f``, ``k_ε`` that decide which terms remain and which are refused).

``center=False`` builds the uncentred run (refused for its diverging ``f_0`` unless
``allow_unstable``); a forward that cannot be centred (see below) is refused with the
reason under ``center=True`` and falls back to the uncentred run by default.
:func:`operator_kernel` returns ``K_Q`` as a callable on ``χ``.

The exponents ``k`` of the powers ``n^{-k}``: ``s−1/2, e`` (hidden), ``s, e+1`` (input, vector-like), ``s−1, e−1``
(output), ``a, e`` (scalar-like) must be ``≥ 0``: every parametrization whose
parameters are initialised and updated no more than μP's qualifies (μP, MF, any abcd
with Θ(1) everything; smaller ones give vanishing coefficients — a lazier but exact
limit). A negative one is a width power diverging with ``n``: refused (see above).

Kernel-regime runs
------------------
When an output weight has ``s < 1`` its initial output ``n^{1−s}⟨u, x_0⟩`` converges to
a Gaussian process, not a number [TP4 App H.4.1]. If the output weights are updated
stably (``e ≥ 1`` for every trained one: NTK, SP with ``lr·n^{-1}``, any abcd in the
kernel regime) the run is **centred** by default (``center=``): it trains
``f − f_0`` (the loss of ``f_t − f_0``; ``f_0`` is a constant, so the gradients are
those of ``f``) [TP4b §5.1], and ``outputs[0] = 0``. The program then normalises
gradients by ``n^m``, ``m = min(s, e)`` over the output weights (``dz := n^m ∂f/∂z``,
``ŵ = n^m P``): the exponents above become ``e+m−1`` (hidden), ``e+m`` (input,
vector-like), ``m−s, e−m`` (output). Every quantity ``v`` of a forward at step
``t ≥ 1`` also carries its change: ``v_t = v_0 + θ·Δv``, ``θ = n^{-ρ}`` with ``ρ``
found while tracing (:meth:`_Builder.delta`):

* a parameter's use: ``P_t ξ − P_0 ξ`` and ``b_t − b_0`` are the (rank-B) updates,
  ``ρ = e+m``; ``P_t x_t − P_0 x_0 = n^{1/2−s}·n^{-ρ_x} M Δx + (updates, n^{-(e+m−1)})``
  — the initial matrix applied to ``Δx`` separately [TP4 Eq. (55)];
* an instruction of the forward ``y = ψ(x…; c…)`` (Nonlin, Nonlin+, Moment, scalar
  function) is replayed: ``y_0 = ψ(x_0…; c_0…)`` (the step-0 variable itself) and
  ``Δy = (ψ(x_0 + θ r Δx; c_0 + θ r Δc) − ψ(x_0; c_0))/θ``, ``ρ_y = min ρ``,
  ``r = n^{-(ρ_x − ρ_y)}``, whose ``θ̊ = 0`` value is the directional derivative (e.g.
  ``φ'(h_0)Δh``); a Moment's change is the Moment of that function, so LayerNorm's
  mean and variance keep their Θ(1) changes;
* the centred output of ``P_k v``:
  ``f_t − f_0 = n^{1−m−ρ_v}⟨ŵ_{0,k}, Δv⟩ + Σ_{r<t} (−lr κ_{t−r} n^{1−e}) Σ χ ḡ ⟨v_u, v_t⟩``.

The forward's own vectors ``v_t`` stay in the program (its Nonlins of ``h_t = h_0 +
θΔh``, named quantities, the Moments ``⟨v_u, v_t⟩`` of the updates), and
:func:`tensorprog.grad` differentiates them from the cotangent ``ŵ_{t,k}`` of the output's
vector, crossing each hidden use by ``P_tᵀ c = n^{1/2−s}Mᵀc + (its rank-B transpose)``
(:meth:`_Builder.kernel_grads`); the changes never refer to ``v_t`` (the update Moments
of a change use ``v_0 + θΔv``), so each path is counted once. ``nn.train_sgd`` is this
program for an MLP. ``changes=True`` carries an *uncentred* run the same way (output
weights with ``s ≥ 1``, trained with ``e ≥ 1``; ``m = 1``): ``f_t = f_0 + (f_t − f_0)``
with ``f_0 = ⟨ŵ_0, v_0⟩`` — the same finite network, in which features that move by a
vanishing amount keep exactly their step-0 limit (a MatMul of the initial matrix with
them would be a new Gaussian of the same law).
What cannot be centred is refused (:class:`~tensorprog.ProgramValueError`): an output
that is not an output weight's use ``P_k v`` itself (an output bias or a function of
the outputs would act on ``f_0``) and a trained scalar-like parameter (its gradient
``n^{1−m}∂⟨ŵ, x⟩/∂c`` is a Gaussian fluctuation). ``center=True`` when every output has
``s ≥ 1`` (``f_0 → 0``) trains the difference ``f_t − f_0`` of the outputs.

Names
-----
A ``name=`` given inside the forward is recorded per step and input as
``{name}[{t},{i}]`` (a parameter's use by ``p.W.matmul(x, name=...)``; a use that is an
existing variable gets the name as a second name); ``run.named[name]`` holds the handles
(``(steps+1, B+E)``: the training rows, then those of ``X_eval``),
``lim.named(name)`` / ``lim.named_stderr(name)`` the limits of named scalars and
``sim.named(name)`` the values at width ``n`` (``(steps+1, B+E)`` for a scalar,
``(steps+1, B+E, n)`` for a vector). ``feature_kernels=[name, …]`` records the Gram
matrices ``⟨v_t(ξ_i), v_t(ξ_j)⟩`` of named vectors over the training rows.

References
----------
[TP4] G. Yang, E. J. Hu, *Feature Learning in Infinite-Width Neural Networks*, ICML 2021,
arXiv:2011.14522.
[TP4b] G. Yang, E. Littwin, *Tensor Programs IVb: Adaptive Optimization in the
Infinite-Width Limit*, arXiv:2308.01814, 2023.
[TP5] G. Yang et al., *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer*, NeurIPS 2021, arXiv:2203.03466.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from .. import (
    Nonlinearity,
    Program,
    ProgramTypeError,
    ProgramValueError,
    Scalar,
    Vector,
    grad,
    inner,
    lincomb,
    mean,
    nonlin,
    outer_nonlin,
    scalar_lincomb,
)
from .. import n as WIDTH
from .model import Model, ParamSpec
from .operator import KetUse, OperatorKernel, TermScaling, operator_step, term_scaling
from .optim import SGD, Entrywise, Optimizer
from .parametrization import (
    ABC,
    ParamClass,
    PerClass,
    PerParameter,
    Scaling,
    abc_scaling,
    muP,
)

__all__ = ["train", "TrainRun", "TrainLimit", "TrainSimulation", "WeightUse", "operator_kernel"]

_LOSSES = ("mse", "xent")
_HALF = Fraction(1, 2)


def _values(handles: np.ndarray | None, get: Any) -> np.ndarray | None:
    """The numbers ``get(h)`` of an array of handles (one call per distinct variable)."""
    if handles is None:
        return None
    out = np.empty(handles.shape)
    cache: dict[str, Any] = {}
    for idx, h in np.ndenumerate(handles):
        if h.name not in cache:
            cache[h.name] = get(h)
        out[idx] = cache[h.name]
    return out


# ---------------------------------------------------------------------------------------
# A program whose names given inside a forward call are scoped by (step, input)


class _ScopedProgram(Program):
    """A :class:`~tensorprog.Program` that renames ``name=`` given inside a forward call
    to ``{name}[{t},{i}]`` (the forward runs once per step and input; names must be
    unique) and remembers them for :attr:`TrainRun.named`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._scope: tuple[int, int] | None = None
        self._scoped: dict[str, dict[tuple[int, int], str]] = {}
        self._nn_names: set[str] = set()  # names nn.train gives while a forward runs

    def _new_name(self, cls: type, name: str | None) -> str:
        if name is None or self._scope is None or name in self._nn_names:
            return super()._new_name(cls, name)
        t, i = self._scope
        per = self._scoped.setdefault(name, {})
        if (t, i) in per:
            raise ProgramValueError(
                f"nn.train: the forward gives the name {name!r} twice in one call (step {t}, "
                f"input {i}); use distinct names, e.g. f'h{{k}}' in a loop"
            )
        scoped = super()._new_name(cls, f"{name}[{t},{i}]")
        per[(t, i)] = scoped
        return scoped

    def label(self, h: Any, name: str | None) -> Any:
        """Give the variable ``h`` (e.g. a parameter's use, which may be an existing
        variable) the forward's ``name`` as a scoped second name (an alias: no
        instruction is recorded); ``h`` itself is returned."""
        if name is not None:
            scoped = self._new_name(type(self.definition(h)), name)
            scope, self._scope = self._scope, None
            try:
                self._alias(scoped, h.var)
            finally:
                self._scope = scope
        return h


# ---------------------------------------------------------------------------------------
# Width powers


def _fmt_expo(x: Fraction) -> str:
    return str(x) if x.denominator == 1 else f"({x})"


def _power_expr(k: Fraction) -> Any:
    """``n^k`` as a sympy expression (``1`` for ``k = 0``)."""
    return WIDTH ** sympy.Rational(k.numerator, k.denominator) if k != 0 else sympy.Integer(1)


@dataclass(frozen=True)
class _Problem:
    """A coefficient ``n^{-k}`` with ``k < 0``: it diverges with the width."""

    param: str
    cls: ParamClass
    what: str
    expo: Fraction
    why: str

    def __str__(self) -> str:
        return (
            f"parameter {self.param!r} ({self.cls.value}): {self.what} has width power "
            f"n^{_fmt_expo(-self.expo)}, which diverges{self.why}"
        )


@dataclass(frozen=True)
class _Unfaithful:
    """An entrywise optimizer's ``ε_P`` vanishing relative to the gradient entries it is
    compared with: ``Q`` tends to a discontinuous (sign-like) function, outside the
    Master Theorem's smoothness [TP4b Setup 2.6.3, Def 2.8.8]."""

    param: str
    cls: ParamClass
    expo: Fraction

    def __str__(self) -> str:
        return (
            f"parameter {self.param!r} ({self.cls.value}): ε_P relative to its gradient "
            f"entries has width power n^{_fmt_expo(-self.expo)}, which vanishes (Q becomes "
            f"sign-like, not smooth: raise d or use nn.abcd with d = a + 1 for input, "
            f"vector-like and hidden, d = a for output and scalar-like parameters)"
        )


# ---------------------------------------------------------------------------------------
# Per-parameter state of the unroll


class _Param:
    """A parameter in the unroll: its initial objects, its value per step (vector-like,
    output, scalar-like) and the gradient terms of each step (``grads[r]``)."""

    def __init__(self, b: _Builder, spec: ParamSpec, sc: Scaling) -> None:
        self.b, self.spec, self.sc = b, spec, sc
        self.grads: list[list[tuple[Any, Any, Any]]] = []
        self.value: list[Any] = []
        self.hist: list[Any] = []  # entrywise: the gradient G_r per step (per column/row/entry)
        self.upd: list[Any] = []  # entrywise: the update Q_r(G_0..G_r) per step
        self._q: tuple[Any, Any] | None = None
        self._w0dx: tuple[Any, Any] | None = None  # change(): (coefficient, M Δx) of Δh
        p, name, std2 = b.p, spec.name, spec.init_std**2 * sc.var_factor
        cls = spec.cls
        # the exponent k of the learning-rate coefficient n^{-k} of this parameter's
        # update in the program (gradients normalised by n^m, see "Kernel-regime runs")
        self.k_sgd = {
            ParamClass.HIDDEN: sc.e + b.m - 1,
            ParamClass.INPUT: sc.e + b.m,
            ParamClass.VECTOR: sc.e + b.m,
            ParamClass.OUTPUT: sc.e - b.m,
            ParamClass.SCALAR: sc.e,
        }[cls]
        mean = spec.init_mean
        if b.kernel and cls is ParamClass.SCALAR and spec.lr_mult != 0.0:
            raise _NotCentrable(
                f"nn.train cannot centre this kernel-regime run: the trained scalar-like "
                f"parameter {name!r} has gradient n^(1-m)·∂⟨ŵ, x⟩/∂{name} (m = {b.m}), the "
                f"Gaussian-process fluctuation of f_0 [TP4 App H.4.1] seen through a scalar; "
                f"freeze it (lr_mult=0) or use a parametrization with a_out+b_out ≥ 1 (muP)"
            )
        if mean != 0.0 and sc.b != 0 and cls is not ParamClass.SCALAR:
            raise ProgramValueError(
                f"nn.train: parameter {name!r} has init_mean {mean} and b = {sc.b} ≠ 0; a "
                f"nonzero mean is supported with b = 0 (the presets' form), where "
                f"P_0 = n^(-a)·(Θ(1) entries)"
            )
        if cls is ParamClass.HIDDEN:
            self.M = p.matrix(name, var=std2)
            self.theta = b.power(sc.s - _HALF, 1.0, self, "initial value n^(1/2-s)·M")
        elif cls is ParamClass.INPUT:
            self.u = [p.vector(f"{name}_{j}", mean=mean, var=std2) for j in range(spec.finite)]
            self.theta = b.power(sc.s, 1.0, self, "initial columns n^(-s)·u")
            self._h0: dict[bytes, Vector] = {}  # P_0 ξ per distinct ξ
        elif cls is ParamClass.VECTOR:
            self.u = [p.vector(name, mean=mean, var=std2)]
            theta = b.power(sc.s, 1.0, self, "initial value n^(-s)·u")
            self.value.append(self.u[0] if theta is None else lincomb([(theta, self.u[0])]))
        elif cls is ParamClass.OUTPUT:
            self.u = [p.vector(f"{name}_{k}", mean=mean, var=std2) for k in range(spec.finite)]
            theta = b.power(
                sc.s - b.m,
                1.0,
                self,
                "the output f = n^(1-s)·⟨u, x⟩",
                " (the initial output is a Gaussian-process fluctuation [TP4 App H.4.1]; "
                + (
                    "entrywise optimizers' operator regime is not centred)"
                    if isinstance(b.opt, Entrywise)
                    else "this run is not centred: see the reason given with center=True)"
                ),
            )
            self.value.append([u if theta is None else lincomb([(theta, u)]) for u in self.u])
        else:  # SCALAR: P_0 = n^{-a}·init_mean, its own initial scalar per entry
            diverges = mean != 0.0 and sc.a < 0
            if diverges:
                b.problems.append(
                    _Problem(name, cls, "the initial value n^(-a)·init_mean", sc.a, "")
                )
            vals = []
            for k in range(spec.finite):
                nm = name if spec.shape == () else f"{name}_{k}"
                if diverges:
                    vals.append(mean / p.scalar(nm, _power_expr(sc.a)))
                else:
                    vals.append(p.scalar(nm, sympy.Float(mean) * _power_expr(-sc.a)))
            self.value.append(vals)

    # -- update coefficients ---------------------------------------------------------
    def coef(self, expo: Fraction, weight: float) -> Any:
        """``−lr·lr_mult·weight·n^{-expo}`` (``None`` never: a Scalar or ``0.0``)."""
        f = -self.b.opt.lr * self.spec.lr_mult * weight
        if f == 0.0:
            return 0.0
        return self.b.power(expo, f, self, "the learning-rate coefficient")

    def step_terms(self, t: int, expo: Fraction) -> list[tuple[Any, Any]]:
        """The update ``P_{t} − P_{t−1}`` as (coefficient, vector-or-scalar) terms."""
        out = []
        for r in range(t):
            c = self.coef(expo, self.b.opt.decay(t - 1 - r))
            if c == 0.0:
                continue
            for g, _, z in self.grads[r]:
                out.append((_prod(c, g), z))
        return out

    # -- entrywise optimizers (Adam, SignSGD): module docstring, "Entrywise optimizers" --
    def entrywise_expos(self) -> tuple[Fraction, Fraction]:
        """``(k_lr, k_ε)``: the update is ``−lr·lr_mult·n^{-k_lr}·Q(Ĝ; eps·n^{-k_ε})`` on the
        program's value of the parameter, ``k_lr = c+a`` (``c+a−1`` for output and hidden
        weights), ``k_ε = d−a−k`` with ``k = 1`` (input, vector-like, hidden: raw gradient
        entries ``Ĝ/n``) or ``0`` (output, scalar-like)."""
        return _entrywise_expos(self.spec.cls, self.sc)

    def q_scalars(self) -> tuple[Any, Any]:
        """``(ε, λ)`` of ``Q(λĜ; ε)``: ``ε = eps·n^{-k_ε}`` (a number when ``k_ε ≤ 0``)
        and ``λ = n^{k_ε}`` when ``k_ε < 0`` (``Q(Ĝ; eps·n^{|k_ε|}) = Q(n^{-|k_ε|}Ĝ; eps)``
        by scale-equivariance), else ``None``."""
        if self._q is None:
            b, (_, ke) = self.b, self.entrywise_expos()
            eps: Any = b.opt.eps
            lam = None
            if ke > 0:
                b.problems.append(_Unfaithful(self.spec.name, self.spec.cls, ke))
                eps = b.power(ke, eps, self, "ε_P")
            elif ke < 0:
                lam = b.power(-ke, 1.0, self, "the gradient scale in Q")
            self._q = (eps, lam)
        return self._q

    def entrywise_step(self, t: int) -> None:
        """The gradient ``G_{t−1}`` and update ``Q_{t−1}(G_0..G_{t−1})`` of the step just
        taken, per column (input), row (output) or entry (scalar-like)."""
        cls, r, b = self.spec.cls, t - 1, self.b
        rec = self.grads[r]
        if cls is ParamClass.VECTOR:
            G = [lincomb([(c, z) for c, _, z in rec]) if rec else None]
        elif cls is ParamClass.INPUT:
            G = []
            for j in range(self.spec.finite):
                terms = [(_prod(c, b.const(xu[j])), dh) for c, xu, dh in rec if xu[j] != 0.0]
                G.append(lincomb(terms) if terms else None)
        elif cls is ParamClass.OUTPUT:
            G = []
            for k in range(self.spec.finite):
                terms = [(c, z) for c, _, (kk, z) in rec if kk == k]
                G.append(lincomb(terms) if terms else None)
        else:
            G = []
            for k in range(self.spec.finite):
                terms = [c for c, _, kk in rec if kk == k]
                G.append(scalar_lincomb(terms) if terms else None)
        self.hist.append(G)
        self.upd.append([b.apply_q(self, r, [h[j] for h in self.hist]) for j in range(len(G))])

    def begin_step(self, t: int) -> None:
        """The value at step ``t ≥ 1`` of a vector-like, output or scalar-like parameter."""
        cls = self.spec.cls
        if isinstance(self.b.opt, Entrywise):
            if cls is ParamClass.HIDDEN:
                return
            if self.spec.lr_mult == 0.0:  # untrained: no history, no update
                if cls is not ParamClass.INPUT:
                    self.value.append(self.value[-1])
                return
            self.entrywise_step(t)
            if cls is ParamClass.INPUT:
                return
            c = self.coef(self.entrywise_expos()[0], 1.0)
            vec = cls is ParamClass.VECTOR
            new = []
            for w, U in zip([self.value[-1]] if vec else self.value[-1], self.upd[-1]):
                if U is None or c == 0.0:
                    new.append(w)
                elif cls is ParamClass.SCALAR:
                    new.append(scalar_lincomb([w, _prod(c, U)]))
                else:
                    new.append(lincomb([(None, w), (c, U)]))
            self.value.append(new[0] if vec else new)
            return
        if cls is ParamClass.VECTOR:
            terms = self.step_terms(t, self.k_sgd)
            self.value.append(
                lincomb([(None, self.value[-1])] + terms) if terms else self.value[-1]
            )
        elif cls is ParamClass.OUTPUT:
            rows = []
            for k, w in enumerate(self.value[-1]):
                terms = [(c, z) for c, (kk, z) in self.step_terms(t, self.k_sgd) if kk == k]
                rows.append(lincomb([(None, w)] + terms) if terms else w)
            self.value.append(rows)
        elif cls is ParamClass.SCALAR:
            vals = []
            for k, c0 in enumerate(self.value[-1]):
                terms = [c for c, kk in self.step_terms(t, self.k_sgd) if kk == k]
                vals.append(scalar_lincomb([c0] + terms) if terms else c0)
            self.value.append(vals)

    # -- uses (called by the parameter view) -----------------------------------------
    def hidden(self, t: int, x: Any, transpose: bool = False) -> Vector:
        """``P_t x`` (``P_tᵀ x`` if ``transpose``). Each gradient term of step ``r`` is
        a rank-one ``(1/n)·left·rightᵀ`` stored as ``(χ, right, left)``: a use ``h = P z``
        gives ``left = dh, right = z``, a use ``h = Pᵀ z`` gives ``left = z, right = dh``;
        so ``P_t x ∋ c χ ⟨right, x⟩ left`` and ``P_tᵀ x ∋ c χ ⟨left, x⟩ right``."""
        b = self.b
        if not isinstance(x, Vector) or x.program is not b.p:
            op = ".T @" if transpose else " @"
            raise ProgramTypeError(
                f"p.{self.spec.name}{op} x: x must be a vector of the model's program (a "
                f"Vector computed in the forward), got {type(x).__name__}"
            )
        if b.kernel and t > 0:
            return self.hidden_kernel(t, x, transpose)
        y = (self.M.T if transpose else self.M).matmul(x)
        terms = [(self.theta, y)]
        if isinstance(b.opt, Entrywise):
            if t > 0:
                terms += self.hidden_entrywise(t, x, transpose)
        else:
            for c, right, left in self.cumulative(t, self.k_sgd, transpose):
                terms.append((_prod(c, b.inner(right, x)), left))
        h = y if len(terms) == 1 and self.theta is None else lincomb(terms)
        b.uses.append(("hidden_T" if transpose else "hidden", self, x, h))
        if b.coordinates:
            b.weight_use(self, t, transpose, h, [(self.theta, y)])
        return h

    def hidden_entrywise(self, t: int, x: Vector, transpose: bool) -> list[tuple[Any, Any]]:
        r"""``ΔP_t x = P_t x − P_0 x`` under an entrywise optimizer: a nonlinear outer
        product [TP4b §2.6–2.7, Def 2.6.1],

        .. math::

            (\Delta P_t x)_\alpha = -\mathrm{lr}\,n^{-k_{lr}}\,\frac1n\sum_\beta
            \sum_{r<t} Q_r\big(\hat G_{0,\alpha\beta},\dots,\hat G_{r,\alpha\beta};
            \varepsilon\big)\,x_\beta,\qquad
            \hat G_{s,\alpha\beta} = \sum_u \chi_u\,\mathrm{left}_{u,\alpha}\,
            \mathrm{right}_{u,\beta}

        (uses ``u`` of step ``s``; for ``P_tᵀ x`` the roles of left and right swap): one
        ``tp.outer_nonlin`` with rows the left vectors of the history, columns the right
        vectors and ``x``, parameters the ``χ``'s, ``ε`` and ``λ``."""
        b = self.b
        c = self.coef(self.entrywise_expos()[0], 1.0)
        if c == 0.0:
            return []
        eps, lam = self.q_scalars()
        rows: list[Vector] = []
        cols: list[Vector] = []
        scal: list[Any] = []
        hist: list[list[tuple[int, int, int]]] = []  # per step: (row, col, χ) indices

        def index(lst: list, h: Any) -> int:
            handle = isinstance(h, (Vector, Scalar))
            for i, z in enumerate(lst):
                if z is h or (handle and isinstance(z, (Vector, Scalar)) and z.var.id == h.var.id):
                    return i
            lst.append(h)
            return len(lst) - 1

        for r in range(t):
            step = []
            for g, right, left in self.grads[r]:
                row, col = (right, left) if transpose else (left, right)
                coefs = g if isinstance(g, tuple) else (g,)
                ks = tuple(index(scal, z) for z in coefs)
                step.append((index(rows, row), index(cols, col), ks))
            hist.append(step)
        if not rows:  # no gradient reached this weight: ΔP = 0
            return []
        ix = len(cols)
        cols.append(x)
        extra = [z for z in (eps, lam) if isinstance(z, Scalar)]
        nr, nc, ns = len(rows), len(cols), len(scal)
        opt = b.opt

        def psi(*a: Any) -> Any:
            R, C, S = a[:nr], a[nr : nr + nc], list(a[nr + nc :])
            th = S[:ns]
            e = S[ns] if isinstance(eps, Scalar) else eps
            lm = S[-1] if lam is not None else 1
            G = []
            for step in hist:
                tot = 0
                for i, j, ks in step:
                    term = R[i] * C[j]
                    for k in ks:
                        term = term * th[k]
                    tot = tot + term
                G.append(tot * lm)
            out = 0
            for r in range(t):
                out = out + opt.q(r, [G[s] for s in opt.memory(r)], e)
            return out * C[ix]

        params = [z if isinstance(z, Scalar) else float(z) for z in scal] + extra
        y = outer_nonlin(psi, rows, cols, params, fn_name=f"{type(opt).__name__}_dW")
        return [(c, y)]

    def hidden_kernel(self, t: int, x: Vector, transpose: bool) -> Vector:
        """``P_t x`` in a kernel-regime run: ``h_0 + n^{-ρ}Δh`` (:meth:`change`), with no
        MatMul of ``x`` itself; the backward pass crosses it by :meth:`vjp`."""
        b = self.b
        h0, dh, rho = self.change("hidden", x, transpose, t)
        if dh is None:
            h = h0
        else:
            h = lincomb([(None, h0), (b.power(rho, 1.0, None, "θ"), dh)])
            b._delta.setdefault(h.var.id, (h0, dh, rho))
            b.cut[h.var.id] = (self, x, transpose, t)
        b.uses.append(("hidden_T" if transpose else "hidden", self, x, h))
        if b.coordinates:  # W_0 x_t = h_0 + θ·(the coefficient of M Δx in Δh)·M Δx
            w0x = [(None, h0)]
            if dh is not None and self._w0dx is not None:
                c, mdx = self._w0dx
                w0x.append((_prod(b.power(rho, 1.0, None, "θ"), c), mdx))
            b.weight_use(self, t, transpose, h, w0x)
        return h

    def vjp(self, t: int, x: Vector, c: Vector, transpose: bool) -> Vector:
        """``P_tᵀ c`` (``P_t c`` for a transposed use): the cotangent of ``x`` from that
        of ``h = P_t x``: ``n^{1/2−s} Mᵀ c + Σ coef χ ⟨left, c⟩ right`` (the transpose of
        :meth:`hidden`'s rank-one terms)."""
        b = self.b
        terms = [(self.theta, (self.M if transpose else self.M.T).matmul(c))]
        for co, right, left in self.cumulative(t, self.k_sgd, transpose):
            terms.append((_prod(co, b.inner(left, c)), right))
        return lincomb(terms)

    def input(self, t: int, a: Any) -> Vector:
        b, spec = self.b, self.spec
        try:
            arr = np.asarray(a, dtype=float)
        except (TypeError, ValueError):
            raise ProgramTypeError(
                f"p.{spec.name} @ xi: xi must be a numeric vector of length {spec.finite} (a "
                f"row of the finite input), got {a!r}"
            ) from None
        if arr.shape == () and spec.finite == 1:
            arr = arr.reshape(1)
        if arr.shape != (spec.finite,) or not np.all(np.isfinite(arr)):
            raise ProgramValueError(
                f"p.{spec.name} @ xi: xi must be a finite numeric vector of length "
                f"{spec.finite} (the input weight has shape {spec.shape}), got shape {arr.shape}"
            )
        key = arr.tobytes()
        if key not in self._h0:
            terms = [(_prod(self.theta, b.const(v)), u) for v, u in zip(arr, self.u) if v != 0.0]
            self._h0[key] = lincomb(terms) if terms else self.u[0] * 0.0
        terms = [(None, self._h0[key])]
        if isinstance(b.opt, Entrywise):  # P_t a = P_0 a + Σ_{r<t} Σ_j coef·a_j·U_{r,j}
            c = self.coef(self.entrywise_expos()[0], 1.0)
            for U in self.upd[:t]:
                for v, Uj in zip(arr, U):
                    if v != 0.0 and Uj is not None and c != 0.0:
                        terms.append((_prod(c, b.const(v)), Uj))
        for r in range(t if isinstance(b.opt, SGD) else 0):
            c = self.coef(self.k_sgd, b.opt.kappa(t - r))
            if c == 0.0:
                continue
            for g, xu, dh in self.grads[r]:
                dot = float(xu @ arr)
                if dot != 0.0:
                    terms.append((_prod(c, g, b.const(dot)), dh))
        h = lincomb(terms) if len(terms) > 1 else terms[0][1]
        b.uses.append(("input", self, arr, h))
        b.leaves.setdefault(h.var.id, ("input", self, arr, None, t))
        return h

    def output(self, t: int, v: Any) -> Any:
        b, spec = self.b, self.spec
        if not isinstance(v, Vector) or v.program is not b.p:
            raise ProgramTypeError(
                f"p.{spec.name} @ v: v must be a vector of the model's program, got "
                f"{type(v).__name__}"
            )
        if b.kernel:  # the centred output itself (module docstring, "Kernel-regime runs")
            gs = [self.centred_output(t, k, v) for k in range(len(self.value[t]))]
            for k, g in enumerate(gs):
                b.out_uses.setdefault(g.var.id, (self, k, v))
        else:
            gs = [inner(w, v) for w in self.value[t]]
        b.uses.append(("output", self, v, gs))
        return gs[0] if len(gs) == 1 else gs

    # -- kernel-regime runs (module docstring, "Kernel-regime runs") ----------------
    def cumulative(
        self, t: int, expo: Fraction, transpose: bool = False
    ) -> list[tuple[Any, Any, Any]]:
        """``P_t − P_0`` as ``(coefficient, right, left)`` terms: each gradient record
        ``(χ, right, left)`` of step ``r < t`` (hidden: the rank-one ``(1/n)·left·rightᵀ``,
        swapped for a transposed use) with ``−lr·lr_mult·κ_{t−r}·n^{-expo}·χ``."""
        out = []
        for r in range(t):
            c = self.coef(expo, self.b.opt.kappa(t - r))
            if c == 0.0:
                continue
            for g, right, left in self.grads[r]:
                if transpose:
                    right, left = left, right
                out.append((_prod(c, g), right, left))
        return out

    def change(self, kind: str, arg: Any, transpose: bool, t: int) -> tuple:
        """``(h_0, Δh, ρ)`` for a use ``h`` of this parameter at step ``t`` (leaf of
        :meth:`_Builder.delta`): ``h_t = h_0 + n^{-ρ} Δh``."""
        b = self.b
        if kind == "vector":
            terms = [(c, z) for c, _, z in self.cumulative(t, Fraction(0))]
            return self.value[0], (lincomb(terms) if terms else None), self.k_sgd
        if kind == "input":
            h0 = self._h0[arg.tobytes()]
            terms = []
            for c, xu, dh in self.cumulative(t, Fraction(0)):
                dot = float(xu @ arg)
                if dot != 0.0:
                    terms.append((_prod(c, b.const(dot)), dh))
            return h0, (lincomb(terms) if terms else None), self.k_sgd
        # hidden: h_t − h_0 = n^{1/2−s} M (x_t − x_0) + (the rank-B updates)
        M = self.M.T if transpose else self.M
        x0, dx, rx = b.delta(arg)
        y0 = M.matmul(x0)
        h0 = y0 if self.theta is None else lincomb([(self.theta, y0)])
        upd = self.cumulative(t, Fraction(0), transpose)
        rhos = ([self.sc.s - _HALF + rx] if dx is not None else []) + ([self.k_sgd] if upd else [])
        if not rhos:
            return h0, None, None
        rho = min(rhos)
        terms = []
        self._w0dx = None
        if dx is not None:
            what = "the change n^(1/2-s)·M(x_t − x_0) relative to its use"
            terms.append((b.power(self.sc.s - _HALF + rx - rho, 1.0, self, what), M.matmul(dx)))
            self._w0dx = terms[0]  # (for coordinates=True: hidden_kernel's W_0 x_t)
        ratio = (
            b.power(self.k_sgd - rho, 1.0, self, "the learning-rate coefficient") if upd else None
        )
        # ⟨right, x_t⟩ of x_t = x_0 + θ_x Δx written from the change: the changes never
        # refer to the vectors of the step's own forward pass (what tp.grad differentiates)
        xt = b.rebuilt(x0, dx, rx) if upd else None
        for c, right, left in upd:
            terms.append((_prod(ratio, c, b.inner(right, xt)), left))
        return h0, lincomb(terms), rho

    def centred_output(self, t: int, k: int, v: Vector) -> Any:
        """``f_t − f_0`` of row ``k`` applied to ``v_t`` (``t ≥ 1``):
        ``n^{1−m−ρ}⟨ŵ_0, Δv⟩ + Σ_{r<t} (−lr κ_{t−r} n^{1−e}) Σ χ ḡ ⟨v_u, v_t⟩``."""
        b = self.b
        if t == 0:  # f_0 − f_0 (one scalar per use and row: the backward pass tells them apart)
            return b.p.scalar(None, 0)
        _, dv, rho = b.delta(v)
        terms = []
        if dv is not None:
            a = b.power(
                rho - (1 - b.m),
                1.0,
                self,
                "the output's change n^(1-m)·⟨ŵ_0, v_t − v_0⟩",
                " (its input vector moves more than the initial output weights allow)",
            )
            terms.append(_prod(a, b.inner(self.value[0][k], dv)))
        # n^{1−m}⟨ŵ_t − ŵ_0, v_t⟩: the readout's updates, n^{m−e} each
        for c, _, (kk, z) in self.cumulative(t, self.sc.e - 1):
            if kk == k:
                terms.append(_prod(c, b.inner(z, v)))
        return scalar_lincomb(terms) if terms else b.p.scalar(None, 0)


def _mean_or_inner(fn: Nonlinearity) -> bool:
    """Whether a Moment's function is ``tp.mean``'s ``x`` or ``tp.inner``'s ``x·y``."""
    if fn.nparams:
        return False
    x = fn.args
    return (len(x) == 1 and fn.body == x[0]) or (len(x) == 2 and fn.body == x[0] * x[1])


def _entrywise_expos(cls: ParamClass, sc: Scaling) -> tuple[Fraction, Fraction]:
    """``(k_lr, k_ε)`` of a parameter of class ``cls`` under an entrywise optimizer
    (:meth:`_Param.entrywise_expos`; module docstring, "Entrywise optimizers")."""
    if sc.d is None:
        raise ProgramValueError(
            f"nn.train: an entrywise optimizer needs the exponent d of every parameter "
            f"(ε_P = eps·n^(-d)); got {sc}"
        )
    k = 0 if cls in (ParamClass.OUTPUT, ParamClass.SCALAR) else 1
    lr = sc.c + sc.a - (1 if cls in (ParamClass.OUTPUT, ParamClass.HIDDEN) else 0)
    return lr, sc.d - sc.a - k


def _prod(*cs: Any) -> Any:
    """The product of coefficients (``None`` = 1; Scalars, numbers, tuples) as a tuple."""
    out: list[Any] = []
    for c in cs:
        if c is None:
            continue
        if isinstance(c, tuple):
            out.extend(x for x in c if x is not None)
        elif isinstance(c, numbers.Real) and not isinstance(c, Scalar):
            if c != 1.0:
                out.append(float(c))
        else:
            out.append(c)
    return None if not out else out[0] if len(out) == 1 else tuple(out)


# ---------------------------------------------------------------------------------------
# The parameter view


class _HiddenUse:
    __slots__ = ("param", "t")

    def __init__(self, param: _Param, t: int) -> None:
        self.param, self.t = param, t

    def __matmul__(self, x: Any) -> Vector:
        return self.param.hidden(self.t, x)

    def matmul(self, x: Any, name: str | None = None) -> Any:
        """``p.W @ x`` named ``name`` (recorded per step and input as ``{name}[{t},{i}]``,
        like a ``name=`` of the DSL; :attr:`TrainRun.named`). The use may be a variable
        that already exists (e.g. unchanged since step 0): the name is then a second
        name of it, no instruction is recorded. An output weight's ``d_out > 1`` Scalars
        are named ``{name}_{k}``."""
        out = self @ x
        lab = self.param.b.p.label
        if isinstance(out, list):
            return [lab(o, None if name is None else f"{name}_{k}") for k, o in enumerate(out)]
        return lab(out, name)

    @property
    def T(self) -> Any:
        if self.param.spec.cls is not ParamClass.HIDDEN:
            raise ProgramTypeError(
                f"p.{self.param.spec.name}.T: only hidden weights have a transposed use in nn.train"
            )
        return _TransposedUse(self.param, self.t)

    def __repr__(self) -> str:
        return f"<{self.param.spec.name} at step {self.t}: hidden weights; use p.W @ vector>"


class _TransposedUse(_HiddenUse):
    __slots__ = ()

    def __matmul__(self, x: Any) -> Vector:
        return self.param.hidden(self.t, x, transpose=True)


class _InputUse(_HiddenUse):
    __slots__ = ()

    def __matmul__(self, a: Any) -> Vector:  # type: ignore[override]
        return self.param.input(self.t, a)


class _OutputUse(_HiddenUse):
    __slots__ = ()

    def __matmul__(self, v: Any) -> Any:
        return self.param.output(self.t, v)


class _View:
    """The parameters at step ``t`` (the ``p`` of ``forward(p, xi)``)."""

    def __init__(self, b: _Builder, t: int) -> None:
        object.__setattr__(self, "_b", b)
        object.__setattr__(self, "_t", t)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle, IPython probe these
            raise AttributeError(name)
        b, t = self._b, self._t
        if name not in b.params:
            raise ProgramValueError(
                f"p.{name}: model {b.model.name!r} has no parameter {name!r}; its parameters "
                f"are {list(b.params)}"
            )
        P = b.params[name]
        cls = P.spec.cls
        if cls is ParamClass.HIDDEN:
            return _HiddenUse(P, t)
        if cls is ParamClass.INPUT:
            return _InputUse(P, t)
        if cls is ParamClass.OUTPUT:
            return _OutputUse(P, t)
        if cls is ParamClass.VECTOR:
            b.uses.append(("vector", P, None, P.value[t]))
            b.leaves.setdefault(P.value[t].var.id, ("vector", P, None, None, t))
            return P.value[t]
        vals = P.value[t]
        b.uses.append(("scalar", P, None, vals))
        if P.spec.shape == ():
            return vals[0]
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        return arr

    __getitem__ = __getattr__

    def __setattr__(self, name: str, value: Any) -> None:
        raise ProgramTypeError("the parameter view p is read-only")


# ---------------------------------------------------------------------------------------
# The builder


class _Builder:
    def __init__(
        self,
        model: Model,
        X: np.ndarray,
        Y: np.ndarray,
        steps: int,
        loss: str,
        opt: Optimizer,
        scalings: dict[str, Scaling],
        batches: list[np.ndarray],
        name: str,
        center: bool = False,
        kernel: bool = False,
        m: Fraction = Fraction(1),
        coordinates: bool = False,
        X_eval: np.ndarray | None = None,
        kernels: tuple[str, ...] = (),
    ) -> None:
        self.model, self.X, self.Y, self.T = model, X, Y, steps
        self.coordinates = coordinates
        self.weight_uses: list[WeightUse] = []
        # center: train f − f_0; kernel: centred by carrying the changes (v_0, Δv), with
        # gradients normalised by n^m (m < 1) — module docstring, "Kernel-regime runs"
        self.center, self.kernel, self.m = center, kernel, m
        self.leaves: dict[int, tuple] = {}
        self.cut: dict[int, tuple] = {}  # hidden uses P_t x carried as h_0 + θΔh
        self.out_uses: dict[int, tuple] = {}
        self._delta: dict[int, tuple] = {}
        self._delta_fns: dict[tuple, Any] = {}
        self._zero: Scalar | None = None
        self.step1 = 0  # the first variable of step 1 (earlier ones are step-0 objects)
        self.loss_name, self.opt, self.batches = loss, opt, batches
        self.p = _ScopedProgram(name)
        self.p.section("initial parameters")
        self.problems: list[_Problem] = []
        self._powers: dict[tuple[Fraction, float], Any] = {}
        self._consts: dict[float, Scalar] = {}
        self._inner: dict[tuple[int, int], Scalar] = {}
        self._fns: dict[tuple, Any] = {}
        self.uses: list[Any] = []
        self.params = {nm: _Param(self, spec, scalings[nm]) for nm, spec in model.params.items()}
        B, T = X.shape[0], steps
        # inputs of the forward: the training rows, then the evaluation rows (X_eval:
        # outputs recorded at every step, never in the loss or the gradients)
        Xall = X if X_eval is None or not len(X_eval) else np.vstack([X, X_eval])
        self.d_out: int | None = None
        self.f = np.empty((T + 1, len(Xall)), dtype=object)  # the outputs (trained on: [:B])
        self.g = np.empty((T + 1, len(Xall)), dtype=object)  # what the forward returned (grad)
        self.rows = np.empty((T + 1, len(Xall)), dtype=object)  # kernel runs: (P, k, v)
        self.loss = np.empty(T + 1, dtype=object)
        self.chi: list[dict[int, list[Any]]] = []
        self.step_uses: list[list[list[Any]]] = []  # per step, per input: the uses
        self.kernels = {nm: np.empty((T + 1, B, B), dtype=object) for nm in kernels}
        for t in range(T + 1):
            self.p.section(f"step {t}: forward pass on {B} input{'s' * (B > 1)}, loss")
            if t == 1:
                self.step1 = len(self.p)
            if t > 0:
                for P in self.params.values():
                    P.begin_step(t)
            uses = []
            for i in range(len(Xall)):
                self.uses = []
                self.p._scope = (t, i)
                try:
                    out = model.fn(_View(self, t), Xall[i].copy())  # type: ignore[misc]
                finally:
                    self.p._scope = None
                self.g[t, i] = self.outputs(out, t, i)
                self.f[t, i] = self.centred(t, i) if center or kernel else self.g[t, i]
                uses.append(self.uses)
            self.step_uses.append(uses)
            if t == 0:
                self.check_targets()
            self.feature_kernels(t)
            self.loss[t] = self.loss_of(range(B), self.f[t], name=f"loss_{t}")
            if t < T:
                self.p.section(f"step {t}: backward pass, update {t + 1}")
                self.backward(t, uses)

    def weight_use(self, P: _Param, t: int, transpose: bool, h: Vector, w0x: list) -> None:
        """Record a hidden use ``h = P_t x`` with its ``θ·W_0 x_t`` (``coordinates=True``):
        the existing variable when it is one, else one ``lincomb`` (named either way)."""
        _, i = self.p._scope
        u = sum(1 for w in self.weight_uses if (w.param, w.step, w.input) == (P.spec.name, t, i))
        label = self.fresh(f"{P.spec.name}{'ᵀ' if transpose else ''}_0x[{t},{i},{u}]")
        if len(w0x) == 1 and w0x[0][0] is None:
            v = w0x[0][1]
            if label is not None:
                self.p._alias(label, v.var)
        else:
            v = lincomb(w0x, name=label)
        self.weight_uses.append(WeightUse(P.spec.name, t, i, transpose, h, v))

    # -- scalars ---------------------------------------------------------------------
    def power(
        self, expo: Fraction, factor: float, P: _Param | None, what: str, why: str = ""
    ) -> Any:
        """The scalar ``factor·n^{-expo}`` (``None`` for 1), shared by all its uses; a
        diverging one (``expo < 0``) is recorded as a problem of ``P`` and written as
        ``factor / n^{expo}``, a scalar function of a vanishing initial scalar (so the
        finite network still simulates; the limit is refused)."""
        if expo == 0 and factor == 1.0:
            return None
        if expo < 0 and P is not None:  # (P None: a θ of a change whose cause is recorded)
            prob = _Problem(P.spec.name, P.spec.cls, what, expo, why)
            if prob not in self.problems:
                self.problems.append(prob)
        key = (expo, factor)
        if key not in self._powers:
            lab = f"{factor:g}" + ("" if expo == 0 else f"n^{_fmt_expo(-expo)}")
            if expo >= 0:
                val = sympy.Float(factor) * _power_expr(-expo)
                self._powers[key] = self.p.scalar(self.fresh(lab), val)
            else:
                inv = self.p.scalar(self.fresh(f"n^{_fmt_expo(expo)}"), _power_expr(expo))
                self._powers[key] = factor / inv
        return self._powers[key]

    def fresh(self, label: str) -> str | None:
        """``label`` as a name of nn.train's own (never scoped by a forward call) if it is
        free, else ``None`` (a generated name)."""
        if label in self.p:
            return None
        self.p._nn_names.add(label)
        return label

    def const(self, v: float) -> Any:
        """The number ``v`` as a shared initial scalar (``None`` for 1)."""
        v = float(v)
        if v == 1.0:
            return None
        if v not in self._consts:
            self._consts[v] = self.p.scalar(self.fresh(f"{v:g}"), v)
        return self._consts[v]

    def inner(self, a: Vector, b: Vector) -> Scalar:
        key = (a.var.id, b.var.id) if a.var.id <= b.var.id else (b.var.id, a.var.id)
        if key not in self._inner:
            self._inner[key] = inner(a, b)
        return self._inner[key]

    # -- centring (module docstring, "Kernel-regime runs") ----------------------------
    def zero(self) -> Scalar:
        """The centred initial output ``f_0 − f_0 = 0`` (one shared scalar)."""
        if self._zero is None:
            self._zero = self.p.scalar(self.fresh("f_0_centred"), 0)
        return self._zero

    def centred(self, t: int, i: int) -> list[Any]:
        """The outputs trained on in a centred run: ``f_t − f_0``."""
        gs = self.g[t, i]
        if self.kernel:  # the outputs are the output weights' centred uses
            rows = []
            for j, g in enumerate(gs):
                use = self.out_uses.get(g.var.id)
                if use is None:
                    raise _NotCentrable(
                        f"nn.train cannot centre this kernel-regime run: output {j} of the "
                        f"forward of model {self.model.name!r} is not an output weight's use "
                        f"p.W_out @ v itself; centring subtracts the Gaussian-process "
                        f"fluctuation f_0 [TP4 App H.4.1] from each P_k v, so the forward must "
                        f"return those Scalars unchanged (no output bias, multiplier or "
                        f"function of them)"
                    )
                rows.append(use)
            self.rows[t, i] = rows
            if not self.center:  # uncentred, carried as changes: f_t = f_0 + (f_t − f_0)
                if t == 0:  # f_0 = ⟨ŵ_0, v_0⟩ (m = 1: f_0 bounded)
                    return [self.inner(P.value[0][k], v) for P, k, v in rows]
                return [scalar_lincomb([a, b]) for a, b in zip(self.f[0, i], gs)]
            return gs
        # f_0 is a bounded Moment: the difference itself
        if t == 0:
            return [self.zero()] * len(gs)
        return [scalar_lincomb([g, (g0, -1.0)]) for g, g0 in zip(gs, self.g[0, i])]

    def delta(self, h: Any) -> tuple[Any, Any, Any]:
        r"""``(h_0, Δh, ρ)`` for a quantity ``h`` of a forward at step ``t ≥ 1``:
        ``h_t = h_0 + n^{-ρ}Δh`` with ``h_0`` its step-0 counterpart and ``Δh`` Θ(1)
        (``Δh = None``: ``h`` does not change).

        Leaves are the parameters' uses (:meth:`_Param.change`) and step-0 objects; an
        instruction ``y = ψ(x…; c…)`` of the forward is replayed on the counterparts
        (``y_0 = ψ(x_0…; c_0…)``, the step-0 variable itself by the program's
        common-subexpression elimination) and its change is
        ``Δy = (ψ(x_0 + θ r Δx…; c_0 + θ r Δc…) − ψ(x_0…; c_0…))/θ`` with
        ``θ = n^{-ρ_y}``, ``ρ_y`` the smallest ``ρ`` of the inputs and
        ``r = n^{-(ρ_x − ρ_y)}`` (:meth:`delta_fn`): a Nonlin+ for a Nonlin, a Moment of
        it for a Moment (``⟨a_t, b_t⟩ − ⟨a_0, b_0⟩`` keeps its Θ(1) parts), a scalar
        function for a scalar function.
        """
        key = h.var.id
        hit = self._delta.get(key)
        if hit is not None:
            return hit
        if key < self.step1:
            out: tuple = (h, None, None)
        elif key in self.leaves:
            kind, P, arg, transpose, t = self.leaves[key]
            out = P.change(kind, arg, transpose, t)
        else:
            out = self._replay(h)
        self._delta[key] = out
        return out

    def _replay(self, h: Any) -> tuple[Any, Any, Any]:
        p = self.p
        instr = p.definition(h)
        op = instr.opname
        if op == "init_scalar":  # a constant of the forward
            return h, None, None
        moment = op == "moment"
        if op not in ("nonlin", "moment", "scalar_fn") or (moment and not _mean_or_inner(instr.fn)):
            raise _NotCentrable(
                f"nn.train cannot centre this kernel-regime run: the forward computes "
                f"{h.name} = {instr.opname}({', '.join(v.name for v in instr.inputs)}), which "
                f"is not a parameter's use, a Nonlin (Nonlin+) or scalar function of them, or "
                f"a Moment tp.mean / tp.inner (an initial object or a MatMul of a matrix "
                f"that is not a parameter has no change to carry)"
            )
        args = instr.args if op != "scalar_fn" else ()
        ra = [self.delta(p[v.name]) for v in args]
        rp = [self.delta(p[v.name]) for v in instr.params]
        a0, p0 = [r[0] for r in ra], [r[0] for r in rp]
        if moment:  # tp.mean or tp.inner: the step-0 Moment itself
            h0 = mean(a0[0]) if len(a0) == 1 else inner(a0[0], a0[1])
        else:
            h0 = nonlin(instr.fn, *a0, *p0)
        rhos = [r[2] for r in ra + rp if r[1] is not None]
        if not rhos:
            return h0, None, None
        rho = min(rhos)
        ratios = tuple(None if r[1] is None else r[2] - rho for r in ra + rp)
        fn = self.delta_fn(instr.fn, len(ra), ratios)
        theta = self.power(rho, 1.0, None, "θ") if rho != 0 else self.one()
        extra = [self.power(k, 1.0, None, "θ") for k in ratios if k]
        d_args = [r[1] for r in ra if r[1] is not None]
        d_pars = [r[1] for r in rp if r[1] is not None]
        d = nonlin(fn, *a0, *d_args, *p0, *d_pars, theta, *extra)
        return h0, (mean(d) if moment else d), rho

    def rebuilt(self, v0: Vector, dv: Any, rho: Any) -> Vector:
        """``v_0 + n^{-ρ}Δv`` as a vector of its own (``v_0`` if ``Δv`` is None), one per
        change."""
        if dv is None:
            return v0
        key = ("rebuilt", dv.var.id)
        if key not in self._delta:
            self._delta[key] = lincomb([(None, v0), (self.power(rho, 1.0, None, "θ"), dv)])
        return self._delta[key]

    def one(self) -> Scalar:
        """The number 1 as an initial scalar (θ of a change that is not small)."""
        if 1.0 not in self._consts:
            self._consts[1.0] = self.p.scalar(self.fresh("1"), 1.0)
        return self._consts[1.0]

    def delta_fn(self, fn: Nonlinearity, nargs: int, ratios: tuple) -> Nonlinearity:
        """``(x_0…, Δx…; c_0…, Δc…, θ, r…) ↦ (ψ(x_0 + θ r Δx; c_0 + θ r Δc) − ψ(x_0; c_0))/θ``
        for ``ψ = fn`` (its first ``nargs`` inputs vectors; ``ratios[j]``: ``None`` for an
        input that does not change, else the exponent of ``r_j``, no ``r_j`` for 0).
        Polynomial ``ψ``: the quotient expanded; else a Piecewise whose ``θ = 0`` branch
        is the directional derivative ``Σ ∂_jψ · r_j Δ_j`` (the value of ``θ̊ = 0``), as
        ``train_sgd``'s ``Δφ``. One object per (ψ, ratios): shared by every step."""
        key = (fn, ratios)
        hit = self._delta_fns.get(key)
        if hit is not None:
            return hit
        ins = fn.args + fn.params
        th = sympy.Symbol("theta_", real=True)
        ds, rs, sub = [], [], {}
        for j, (s, k) in enumerate(zip(ins, ratios)):
            if k is None:
                continue
            d = sympy.Symbol(f"d_{j}", real=True)
            ds.append(d)
            r = 1
            if k:
                r = sympy.Symbol(f"r_{j}", real=True)
                rs.append(r)
            sub[s] = (s, d, r)
        shifted = fn.body.xreplace({s: s + th * r * d for s, (_, d, r) in sub.items()})
        quotient = (shifted - fn.body) / th
        poly = fn.body.is_polynomial(*ins)
        if poly:
            body = sympy.expand(sympy.cancel(quotient))
        else:
            slope = sum(sympy.diff(fn.body, s) * r * d for s, (_, d, r) in sub.items())
            body = sympy.Piecewise((slope, sympy.Eq(th, 0)), (quotient, True))
        n_d_args = sum(1 for k in ratios[:nargs] if k is not None)
        args = list(fn.args) + ds[:n_d_args]
        params = list(fn.params) + ds[n_d_args:] + [th] + rs
        out = Nonlinearity(f"Δ{fn.name}", body, args, params, opaque=not poly)
        self._delta_fns[key] = out
        return out

    # -- feature kernels -------------------------------------------------------------
    def feature_kernels(self, t: int) -> None:
        """``⟨v_t(ξ_i), v_t(ξ_j)⟩`` (a Moment, shared with the updates' when they have it)
        over the training rows for every vector name of ``feature_kernels=``."""
        B = self.X.shape[0]
        for nm, K in self.kernels.items():
            per = self.p._scoped.get(nm, {})
            vs = [self.p[per[(t, i)]] if (t, i) in per else None for i in range(B)]
            if any(not isinstance(v, Vector) for v in vs):
                raise ProgramValueError(
                    f"nn.train: feature_kernels names {nm!r}, which the forward of model "
                    f"{self.model.name!r} does not name as a vector at step {t} on every "
                    f"training input (give name={nm!r} to a Vector it computes)"
                )
            for i in range(B):
                for j in range(i, B):
                    K[t, i, j] = K[t, j, i] = self.inner(vs[i], vs[j])

    # -- outputs and loss ------------------------------------------------------------
    def outputs(self, out: Any, t: int, i: int) -> list[Scalar]:
        outs = [out] if isinstance(out, Scalar) else out
        try:
            outs = list(outs)
        except TypeError:
            outs = None
        if not outs or not all(isinstance(s, Scalar) and s.program is self.p for s in outs):
            raise ProgramTypeError(
                f"nn.train: the forward of model {self.model.name!r} must return its outputs "
                f"as a Scalar or a sequence of Scalars of the program (e.g. p.W_out @ x); "
                f"got {out!r}"
            )
        if self.d_out is None:
            self.d_out = len(outs)
        elif len(outs) != self.d_out:
            raise ProgramValueError(
                f"nn.train: the forward returned {len(outs)} outputs at step {t}, input {i}, "
                f"but {self.d_out} before; d_out must not change"
            )
        return outs

    def check_targets(self) -> None:
        Y, K, B = self.Y, self.d_out, self.X.shape[0]
        if self.loss_name == "mse":
            if Y.ndim == 1 and K == 1:
                self.Y = Y.reshape(B, 1)
            elif Y.shape != (B, K):
                raise ProgramValueError(
                    f"nn.train: Y must have shape (B, d_out) = ({B}, {K})"
                    + (f" or ({B},)" if K == 1 else "")
                    + f" for loss='mse', got {Y.shape}"
                )
        else:
            if Y.shape != (B,) or not np.all(Y == np.round(Y)) or Y.min() < 0 or Y.max() >= K:
                raise ProgramValueError(
                    f"nn.train: Y must be integer labels in [0, d_out) = [0, {K}), shape "
                    f"({B},), for loss='xent'; got {Y!r}"
                )
            self.Y = Y.astype(int)

    def scalar_fn(
        self, key: tuple, body: Any, args: list[Scalar], name: str | None = None
    ) -> Scalar:
        """``body(*args)`` as one scalar function; its Nonlinearity is traced by sympy
        once per ``key`` (loss and loss derivatives repeat at every step)."""
        fn = self._fns.get(key)
        if fn is None:
            out = nonlin(body, *args, name=name, fn_name=key[0])
            self._fns[key] = self.p.definition(out).fn
            return out  # type: ignore[return-value]
        return nonlin(fn, *args, name=name)  # type: ignore[return-value]

    def apply_q(self, P: _Param, t: int, hist: list[Any]) -> Any:
        """``Q_t(λ G_s for s in memory(t); ε)`` of an entrywise optimizer, coordinatewise
        (a Nonlin of the gradient vectors) or on scalars (a scalar function). A history
        entry that is a number (``None``: 0) is a constant gradient; ``None`` if no entry
        is a handle (the gradients are identically 0 and so is ``Q``)."""
        opt = self.opt
        gs = [hist[s] for s in opt.memory(t)]
        handle = tuple(isinstance(g, (Vector, Scalar)) for g in gs)
        if not any(handle):
            return None
        consts = tuple(None if h else float(g or 0.0) for g, h in zip(gs, handle))
        eps, lam = P.q_scalars()
        args = [g for g, h in zip(gs, handle) if h]
        extra = [z for z in (eps, lam) if isinstance(z, Scalar)]
        na = len(args)

        def body(*a: Any) -> Any:
            it, rest = iter(a[:na]), list(a[na:])
            e = rest.pop(0) if isinstance(eps, Scalar) else eps
            lm = rest.pop(0) if lam is not None else 1
            g = [(next(it) if c is None else c) * lm for c in consts]
            return opt.q(t, g, e)

        e_key = "eps" if isinstance(eps, Scalar) else eps
        key = (type(opt).__name__, opt, t, consts, e_key, lam is not None, args[0].__class__)
        return self.scalar_fn(key, body, args + extra)

    def loss_of(self, rows: Any, fs: Any, name: str | None = None) -> Scalar:
        """The loss of outputs ``fs`` over ``rows`` (module docstring)."""
        rows = list(rows)
        args = [s for i in rows for s in fs[i]]
        K, m, Y = self.d_out, len(rows), self.Y
        if self.loss_name == "mse":
            ys = tuple(float(Y[i, k]) for i in rows for k in range(K))

            def body(*a: Any) -> Any:
                return sum((a[j] - ys[j]) ** 2 for j in range(len(a))) / (2 * m)

            key: tuple = ("mse", ys)
        else:
            ys = tuple(int(Y[i]) for i in rows)

            def body(*a: Any) -> Any:
                return (
                    sum(
                        sympy.log(sum(sympy.exp(a[j * K + k] - a[j * K + y]) for k in range(K)))
                        for j, y in enumerate(ys)
                    )
                    / m
                )

            key = ("xent", K, ys)
        return self.scalar_fn(key, body, args, name=name)

    def chis(self, t: int, rows: np.ndarray) -> dict[int, list[Any]]:
        """``χ_{t,i,k} = ∂L_t/∂f_k(ξ_i)`` for the rows of step ``t``: ``(f − y)/B``
        (mse), ``(softmax(f)_k − 1[k = y_i])/B`` (xent)."""
        m, K, out = len(rows), self.d_out, {}
        for i in rows:
            fs = self.f[t, i]
            if self.loss_name == "mse":
                out[i] = [
                    scalar_lincomb([(fs[k], 1.0 / m), -float(self.Y[i, k]) / m]) for k in range(K)
                ]
                continue
            y = int(self.Y[i])
            row = []
            for k in range(K):
                hit = 1.0 / m if k == y else 0.0

                def body(*a: Any, k: int = k, hit: float = hit) -> Any:
                    return 1 / (m * sum(sympy.exp(a[j] - a[k]) for j in range(K))) - hit

                row.append(self.scalar_fn(("dxent", K, k, hit, m), body, list(fs)))
            out[i] = row
        return out

    # -- backward --------------------------------------------------------------------
    def backward(self, t: int, uses: list[list[Any]]) -> None:
        rows = self.batches[t]
        chi = self.chis(t, rows)
        self.chi.append(chi)
        grads: dict[int, list[Any]] = {id(P): [] for P in self.params.values()}
        for i in rows:
            # One record per handle: a use repeated with the same operands is one variable
            # (the program records a computation once), and a vector-/scalar-like
            # parameter read several times is one value per step.
            recs: dict[int, tuple[Any, ...]] = {}
            for kind, P, arg, val in uses[i]:
                for k, h in enumerate(val if isinstance(val, list) else [val]):
                    recs.setdefault(h.var.id, (kind, P, arg, k, h))
            if self.kernel:
                recs = {key: rec for key, rec in recs.items() if rec[0] != "output"}
            wrt = [rec[4] for rec in recs.values()]
            for k_out in range(self.d_out):  # type: ignore[arg-type]
                c = chi[i][k_out]
                if self.kernel:
                    gmap = self.kernel_grads(t, i, k_out, recs, wrt)
                    P_o, kk, v = self.rows[t, i][k_out]
                    grads[id(P_o)].append((c, None, (kk, v)))
                else:
                    g_all = grad(self.g[t, i][k_out], wrt, through_scalars=True)
                    gmap = {h.var.id: g for h, g in zip(wrt, g_all)}
                for kind, P, arg, k, h in recs.values():
                    g = gmap[h.var.id]
                    if kind in ("hidden", "input"):
                        grads[id(P)].append((c, arg, g))
                    elif kind == "hidden_T":
                        grads[id(P)].append((c, g, arg))
                    elif kind == "vector":
                        grads[id(P)].append((c, None, g))
                    elif kind == "output":
                        if isinstance(g, numbers.Real) and g == 0.0:
                            continue
                        grads[id(P)].append((_prod(c, g), None, (k, arg)))
                    else:  # scalar-like: gradient of entry k
                        if isinstance(g, numbers.Real) and g == 0.0:
                            continue
                        grads[id(P)].append((_prod(c, g), None, k))
        for P in self.params.values():
            P.grads.append(grads[id(P)])

    def kernel_grads(
        self, t: int, i: int, k_out: int, recs: dict[int, tuple], wrt: list[Any]
    ) -> dict[int, Any]:
        """``n^m ∂f_k/∂z`` for the uses ``z`` of a kernel-regime forward: backpropagation
        from the cotangent ``ŵ_{t,k}`` of the output's vector, crossing each hidden use
        ``h = h_0 + θΔh`` (whose recorded inputs are changes, not ``x``) by
        :meth:`_Param.vjp`, from the last use to the first (so each path is counted
        once); elsewhere :func:`tensorprog.grad` through the forward's own instructions."""
        P_o, kk, v = self.rows[t, i][k_out]
        pending: dict[int, list[Any]] = {v.var.id: [v, P_o.value[t][kk]]}

        def outs() -> tuple[list[Any], list[Any]]:
            return [x for x, *_ in pending.values()], [
                cs[0] if len(cs) == 1 else lincomb([(None, c) for c in cs])
                for _, *cs in pending.values()
            ]

        gmap: dict[int, Any] = {}
        for kind, P, x, _, h in reversed([r for r in recs.values() if r[4].var.id in self.cut]):
            ys, cs = outs()
            gh = grad(ys, h, cotangent=cs, through_scalars=True)
            gmap[h.var.id] = gh
            pending.setdefault(x.var.id, [x]).append(P.vjp(t, x, gh, kind == "hidden_T"))
        rest = [h for h in wrt if h.var.id not in gmap]
        if rest:
            ys, cs = outs()
            gmap.update(
                (h.var.id, g)
                for h, g in zip(rest, grad(ys, rest, cotangent=cs, through_scalars=True))
            )
        return gmap


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class TrainLimit:
    """The infinite-width limit of a :class:`TrainRun` (``run.limit()``).

    Attributes
    ----------
    outputs, stderr : ndarray, shape (steps+1, B, d_out)
        ``f̊_t(ξ_i)`` (before update ``t+1``) and its Monte Carlo standard error (0 for
        exact and quadrature values).
    loss, loss_stderr : ndarray, shape (steps+1,)
        The loss of ``f̊_t`` over all rows.
    limit : tensorprog Limit
        The underlying :class:`tensorprog.engine.Limit`.
    eval_outputs, eval_stderr : ndarray, shape (steps+1, E, d_out)
        The same on the rows of ``X_eval``.
    """

    outputs: np.ndarray
    stderr: np.ndarray
    loss: np.ndarray
    loss_stderr: np.ndarray
    limit: Any = field(repr=False)
    run: Any = field(default=None, repr=False)
    eval_outputs: np.ndarray | None = None
    eval_stderr: np.ndarray | None = None

    def named(self, name: str) -> np.ndarray:
        """The limits of a scalar the forward named: shape (steps+1, B+E)."""
        return _values(self.run._named_limit(name), self.limit.__getitem__)

    def named_stderr(self, name: str) -> np.ndarray:
        """Their standard errors: shape (steps+1, B+E)."""
        return _values(self.run._named_limit(name), self.limit.stderr)

    def feature_kernel(self, name: str) -> np.ndarray:
        """The limit ``𝔼[Z^{v_t(ξ_i)} Z^{v_t(ξ_j)}]`` of a recorded feature kernel:
        shape (steps+1, B, B)."""
        return _values(self.run._kernel(name), self.limit.__getitem__)

    def feature_kernel_stderr(self, name: str) -> np.ndarray:
        """Its standard errors: shape (steps+1, B, B)."""
        return _values(self.run._kernel(name), self.limit.stderr)

    @property
    def method(self) -> np.ndarray:
        """How each output was obtained (``"exact" | "quadrature" | "montecarlo"``),
        shape (steps+1, B, d_out)."""
        out = np.empty(self.run.outputs.shape, dtype=object)
        for idx, h in np.ndenumerate(self.run._lim_outputs):
            out[idx] = self.limit.method(h)
        return out


@dataclass
class TrainSimulation:
    """A :class:`TrainRun` at finite width ``n`` (``run.simulate(n, seed)``).

    Attributes
    ----------
    outputs : ndarray, shape (steps+1, B, d_out)
    loss : ndarray, shape (steps+1,)
    simulation : tensorprog.Simulation
        Every variable of the program at this width.
    eval_outputs : ndarray, shape (steps+1, E, d_out)
    """

    outputs: np.ndarray
    loss: np.ndarray
    simulation: Any = field(repr=False)
    run: Any = field(default=None, repr=False)
    eval_outputs: np.ndarray | None = None

    def feature_kernel(self, name: str) -> np.ndarray:
        """A recorded feature kernel ``⟨v_t(ξ_i), v_t(ξ_j)⟩`` at this width: shape
        (steps+1, B, B)."""
        return _values(self.run._kernel(name), self.simulation.__getitem__)

    @property
    def n(self) -> int:
        """The width."""
        return self.simulation.n

    def named(self, name: str) -> np.ndarray:
        """A quantity the forward named, at this width: shape (steps+1, B+E) for a scalar,
        (steps+1, B+E, n) for a vector."""
        H = self.run._named(name)
        sim = self.simulation
        if isinstance(H.flat[0], Scalar):
            return _values(H, sim.__getitem__)
        return np.stack([np.stack([sim.vector(h) for h in row]) for row in H])

    def param(self, name: str) -> Any:
        """The parameter's **initial** value at this width as it enters the forward
        (``P_0 = n^{-a} w_0``; numpy, shape with ``"n"`` replaced by ``n``; a float for
        shape ``()``)."""
        P = self.run._param(name)
        n, sim, sc, cls = self.n, self.simulation, P.sc, P.spec.cls
        scale = float(n) ** (-float(sc.s))
        if cls is ParamClass.HIDDEN:
            return float(n) ** (0.5 - float(sc.s)) * sim.matrix(P.M)
        if cls is ParamClass.INPUT:
            return scale * np.stack([sim.vector(u) for u in P.u], axis=1)
        if cls is ParamClass.VECTOR:
            return scale * sim.vector(P.u[0])
        if cls is ParamClass.OUTPUT:
            return scale * np.stack([sim.vector(u) for u in P.u])
        vals = np.array([sim[c] for c in P.value[0]])
        return float(vals[0]) if P.spec.shape == () else vals


@dataclass(frozen=True)
class WeightUse:
    r"""A use ``h = P_t x`` (or ``P_tᵀ x``) of a hidden weight in the forward at step
    ``t`` on input ``i``, with ``w0x = θ·W_0 x_t`` (``θ = n^{1/2−s}``, the width multiplier
    of the initial matrix): ``h − w0x = ΔW_t x_t``, the sum of the rank-B updates
    (module docstring). Recorded by :func:`train` with ``coordinates=True``."""

    param: str
    step: int
    input: int
    transpose: bool
    h: Vector
    w0x: Vector


class TrainRun:
    """The unrolled training of a model (returned by :func:`train`).

    Attributes
    ----------
    program : tensorprog.Program
        Forward passes, backward passes and updates of every step.
    outputs : ndarray of Scalar, shape (steps+1, B, d_out)
        ``f_t(ξ_i)`` before update ``t+1``.
    loss : ndarray of Scalar, shape (steps+1,)
        The loss of ``f_t`` over all rows of ``X``.
    eval_outputs : ndarray of Scalar, shape (steps+1, E, d_out)
        ``f_t`` on the rows of ``X_eval`` (not trained on; E = 0 without ``X_eval``).
    chi : ndarray of Scalar, shape (steps, B, d_out)
        The loss derivatives ``χ_{t,i,k} = ∂L_t/∂f_k(ξ_i)`` (``None`` for rows outside
        the step's batch).
    feature_kernels : dict
        ``{name: ndarray of Scalar, shape (steps+1, B, B)}``: ``⟨v_t(ξ_i), v_t(ξ_j)⟩`` for
        each vector name of ``feature_kernels=`` (one handle at ``[t, i, j]`` and ``[t, j, i]``).
    named : dict
        ``{name: ndarray of handles, shape (steps+1, B+E)}`` for every ``name=`` given in
        the forward (the training rows, then the rows of ``X_eval``).
    problems : tuple of str
        Why the limit does not exist (diverging width powers); empty for stable runs.
    scalings : dict
        ``{parameter name: Scaling}``: the exponents each parameter got.
    center : bool
        Whether the outputs (and the loss) are of ``f_t − f_0``.
    weight_uses : tuple of WeightUse
        Every hidden weight's use with its ``θ·W_0 x_t`` (``coordinates=True``; else empty).
    operator : bool
        An entrywise optimizer's operator regime ("Operator regime of entrywise
        optimizers" in the module docstring): :attr:`program` is the finite network
        (``simulate``), :attr:`limit_program` the ``K_Q`` recursion (``limit``).
    limit_program : tensorprog.Program
        The program whose limit :meth:`limit` takes (:attr:`program` unless
        :attr:`operator`).
    """

    def __init__(
        self,
        model: Model,
        builder: _Builder,
        scalings: dict[str, Scaling],
        op: _OperatorLimit | None = None,
    ) -> None:
        self.model = model
        self.program = builder.p
        T, BE = builder.f.shape
        K, B = builder.d_out, builder.X.shape[0]
        every = _stack(builder.f, K)
        self.outputs, self.eval_outputs = every[:, :B], every[:, B:]
        self.loss = builder.loss
        self.chi = np.empty((T - 1, B, K), dtype=object)
        for t, per in enumerate(builder.chi):
            for i, cs in per.items():
                self.chi[t, i] = cs
        self.feature_kernels = builder.kernels
        self.scalings = scalings
        self.center = builder.center
        self.problems = tuple(str(p) for p in builder.problems)
        self.operator = op is not None
        self.limit_program = builder.p if op is None else op.p
        self._lim_outputs = self.outputs if op is None else _stack(op.f, K)
        self._lim_loss = self.loss if op is None else op.loss
        if op is not None:
            self.problems = tuple(op.problems)
        self._params = builder.params
        self.weight_uses = tuple(builder.weight_uses)
        self.named: dict[str, np.ndarray] = {}
        for nm, per in builder.p._scoped.items():
            H = np.empty((T, BE), dtype=object)
            for (t, i), scoped in per.items():
                H[t, i] = builder.p[scoped]
            if any(h is None for h in H.flat):
                raise ProgramValueError(
                    f"nn.train: the forward names {nm!r} in some calls only; a named quantity "
                    f"must be named at every step and input"
                )
            self.named[nm] = H

    def __repr__(self) -> str:
        T, B, K = self.outputs.shape
        return (
            f"<TrainRun of model {self.model.name!r}: steps={T - 1}, B={B}, d_out={K}; "
            f"{len(self.program)} instructions>"
        )

    def _named(self, name: str) -> np.ndarray:
        if name not in self.named:
            raise ProgramValueError(
                f"the forward named no quantity {name!r}; named: {sorted(self.named)}"
            )
        return self.named[name]

    def _named_scalars(self, name: str) -> np.ndarray:
        H = self._named(name)
        if not isinstance(H.flat[0], Scalar):
            raise ProgramValueError(
                f"{name!r} is a vector: its limit is a distribution, not a number; name a "
                f"Moment of it in the forward (e.g. tp.mean(h * h, name=...)) or read "
                f"sim.named({name!r}) at finite width"
            )
        return H

    def _named_limit(self, name: str) -> np.ndarray:
        if self.operator:
            raise ProgramValueError(
                f"{name!r}: the limit of an operator-regime run is the K_Q recursion of its "
                f"outputs only (its features stay at their step-0 values, [TP4b Thm 2.4.7]); "
                f"read sim.named({name!r}) at finite width"
            )
        return self._named_scalars(name)

    def _param(self, name: str) -> _Param:
        if name not in self._params:
            raise ProgramValueError(
                f"model {self.model.name!r} has no parameter {name!r}; its parameters are "
                f"{list(self._params)}"
            )
        return self._params[name]

    def limit(self, **kw: Any) -> TrainLimit:
        """The infinite-width limit (keywords as :meth:`tensorprog.Program.limit`, e.g.
        ``executor=`` to run its Monte Carlo on a cluster, docs/cluster.md): the limit of
        :attr:`limit_program` (for an operator-regime run, the ``K_Q`` recursion).

        Raises
        ------
        ProgramValueError
            If the run was built with ``allow_unstable=True`` and has diverging width
            powers (:attr:`problems`).
        """
        if self.problems:
            raise ProgramValueError(
                "nn.train: this run has no infinite-width limit: " + "; ".join(self.problems)
            )
        if self.operator and self.eval_outputs.size:
            raise ProgramValueError(
                "nn.train: an operator-regime run's limit is the K_Q recursion on the training "
                "rows; its X_eval outputs have no limit here (read sim.eval_outputs at finite "
                "width)"
            )
        lim = self.limit_program.limit(**kw)
        handles = {"outputs": self._lim_outputs, "loss": self._lim_loss, "eval": self.eval_outputs}
        vals = {k: _values(h, lim.__getitem__) for k, h in handles.items()}
        errs = {k: _values(h, lim.stderr) for k, h in handles.items()}
        return TrainLimit(
            vals["outputs"],
            errs["outputs"],
            vals["loss"],
            errs["loss"],
            limit=lim,
            run=self,
            eval_outputs=vals["eval"],
            eval_stderr=errs["eval"],
        )

    def simulate(self, n: int, seed: Any = 0, **kw: Any) -> TrainSimulation:
        """The same run at finite width ``n`` (keywords as :meth:`tensorprog.Program.simulate`)."""
        sim = self.program.simulate(n, seed=seed, **kw)
        out, loss, ev = (
            _values(h, sim.__getitem__) for h in (self.outputs, self.loss, self.eval_outputs)
        )
        return TrainSimulation(out, loss, simulation=sim, run=self, eval_outputs=ev)

    def _kernel(self, name: str) -> np.ndarray:
        if name not in self.feature_kernels:
            raise ProgramValueError(
                f"the run records no feature kernel of {name!r}; it records "
                f"{sorted(self.feature_kernels)} (nn.train(..., feature_kernels=[...]))"
            )
        return self.feature_kernels[name]


def _inputs(X: Any, who: str) -> np.ndarray:
    """``X`` as a finite float array of shape ``(B, d_x)``, ``B ≥ 1`` (else an error
    naming ``who``)."""
    Xa = _as_floats(X, "X", who)
    if Xa.ndim != 2 or Xa.shape[0] == 0 or not np.all(np.isfinite(Xa)):
        raise ProgramValueError(
            f"{who}: X must be a finite 2-D array, shape (B, d_x) with B ≥ 1, got shape {Xa.shape}"
        )
    return Xa


def _stack(f: np.ndarray, K: int) -> np.ndarray:
    """``(steps+1, B)`` lists of ``K`` outputs as an array ``(steps+1, B, K)``."""
    T, B = f.shape
    out = np.empty((T, B, K), dtype=object)
    for idx, fs in np.ndenumerate(f):
        out[idx] = fs
    return out


# ---------------------------------------------------------------------------------------
# The operator regime of entrywise optimizers (module docstring; nn/operator.py)


def _operator_m(model: Model, scalings: dict[str, Scaling]) -> Fraction | None:
    """``s_out`` (the smallest ``a+b`` of the output weights) when it is ``< 1``: the
    initial output is a Gaussian process, and an entrywise run is compiled as the
    operator regime (centred); ``None`` otherwise."""
    outs = [scalings[nm].s for nm, sp in model.params.items() if sp.cls is ParamClass.OUTPUT]
    s_out = min(outs, default=None)
    return s_out if s_out is not None and s_out < 1 else None


@dataclass
class _OperatorLimit:
    """The ``K_Q`` recursion of an operator-regime run: its program, outputs
    ``f̊_t − f̊_0`` (``(steps+1, B)`` lists), loss and problems."""

    p: Program
    f: np.ndarray
    loss: np.ndarray
    problems: list[str]


def _kets(
    model: Model,
    X: np.ndarray,
    Y: np.ndarray,
    loss: str,
    opt: Entrywise,
    scalings: dict[str, Scaling],
    m: Fraction,
    name: str,
) -> tuple[_Builder, list[KetUse], dict[str, TermScaling]]:
    """The step-0 kets: one forward and one :func:`tensorprog.grad` backward pass per
    input at initialization, gradients normalised by ``n^m`` (the kernel-regime
    builder's step 0: ``dz = n^m ∂f/∂z``, ``ŵ = n^m P``); raises :class:`_NotCentrable`
    for a forward that cannot be centred."""
    kb = _Builder(model, X, Y, 0, loss, opt, scalings, [], name, center=True, kernel=True, m=m)
    uses: list[KetUse] = []
    for i in range(X.shape[0]):
        recs: dict[int, tuple[Any, ...]] = {}
        for kind, P, arg, val in kb.step_uses[0][i]:
            if kind in ("output", "scalar"):
                continue
            recs.setdefault(val.var.id, (kind, P, arg, 0, val))
        wrt = [rec[4] for rec in recs.values()]
        for k in range(kb.d_out):  # type: ignore[arg-type]
            gmap = kb.kernel_grads(0, i, k, recs, wrt) if wrt else {}
            for kind, P, arg, _, h in recs.values():
                g = gmap[h.var.id]
                if not isinstance(g, Vector):  # no path from this use to output k
                    continue
                uses.append(
                    KetUse(P.spec.name, P.spec.cls, i, k, arg, g, transpose=kind == "hidden_T")
                )
            P_o, kk, v = kb.rows[0, i][k]
            uses.append(KetUse(P_o.spec.name, ParamClass.OUTPUT, i, k, v, None, row=kk))
    terms = {
        nm: term_scaling(nm, sp.cls, sp.lr_mult, sc.a, sc.c, sc.d, m)  # type: ignore[arg-type]
        for (nm, sp), sc in zip(model.params.items(), scalings.values())
    }
    return kb, uses, terms


def _operator_limit(args: tuple, m: Fraction) -> _OperatorLimit:
    r"""The limit of a centred operator-regime run [TP4b Thm 2.4.7, 2.4.9]:
    ``f̊_0 = 0``, ``f̊_{t+1} = f̊_t − lr·K_Q(χ_0..χ_t)`` with ``χ_s = ∂L/∂f`` at ``f̊_s``
    (Scalars of the program, rows of step ``s``) and ``K_Q`` from the step-0 kets
    (:func:`tensorprog.nn.operator.operator_step`); ``args`` as :class:`_Builder`'s
    first nine, ``m = s_out``."""
    model, X, Y, steps, loss, opt, scalings, batches, name = args
    kb, uses, terms = _kets(model, X, Y, loss, opt, scalings, m, f"{name}_KQ")
    problems = [str(p) for p in kb.problems] + [
        msg for ts in terms.values() for msg in ts.problems()
    ]
    B = X.shape[0]
    K = kb.d_out
    f = np.empty((steps + 1, B), dtype=object)
    f[0] = kb.f[0]
    kb.f = f
    lossv = np.empty(steps + 1, dtype=object)
    lossv[0] = kb.loss[0]
    chis: list[dict[int, list[Any]]] = []
    for t in range(steps):
        kb.p.section(f"step {t}: K_Q(χ_0..χ_{t}) [TP4b Thm 2.4.7]")
        chis.append(kb.chis(t, batches[t]))
        kq = operator_step(uses, terms, chis, opt, (B, K))  # type: ignore[arg-type]
        lr = -opt.lr
        for a in range(B):
            f[t + 1, a] = [
                f[t, a][k]
                if isinstance(kq[a, k], float)
                else scalar_lincomb([f[t, a][k], (lr, kq[a, k])])
                for k in range(K)  # type: ignore[arg-type]
            ]
        lossv[t + 1] = kb.loss_of(range(B), f[t + 1], name=f"loss_{t + 1}")
    return _OperatorLimit(kb.p, f, lossv, problems)


def operator_kernel(
    model: Model, X: Any, param: Any, optimizer: Entrywise, **limit_kw: Any
) -> OperatorKernel:
    r"""The operator-regime kernel ``K_Q`` of a model at initialization, as a callable.

    ``K = nn.operator_kernel(model, X, param, optimizer)``; ``K(chi)`` with ``chi`` of
    shape ``(B, d_out)`` (or a history ``(t+1, B, d_out)`` for Adam) is
    :math:`\mathcal K_Q(\chi)_a=\sum_P \mathrm{lr\_mult}_P\,\mathbb E[Z^{dh_a}
    Q(\sum_b\chi_b Z^{dh_b}Z^{x_b(1)})Z^{x_a(1)}]` [TP4b Defs 2.4.2–2.4.4] (module
    docstring of :mod:`tensorprog.nn.operator`), so that a centred operator-regime run
    of :func:`train` moves by ``f̊_{t+1} − f̊_t = −lr·K(χ_0..χ_t)``. ``Q = id`` gives
    ``χ ↦ Θχ``, ``Θ`` the NTK.

    Parameters
    ----------
    model : nn.Model
    X : array_like, shape (B, d_x)
    param : a per-class preset or nn.abcd
        Whose output weights have ``a+b < 1`` (e.g. ``nn.NTK()``).
    optimizer : nn.Adam, nn.SignSGD or another nn.Entrywise
        Its ``Q`` and ``ε`` (its ``lr`` is not used).
    **limit_kw
        Options of :func:`tensorprog.limit` for the calls that need Monte Carlo.

    Returns
    -------
    OperatorKernel

    Raises
    ------
    ProgramValueError
        A parametrization that is not in the operator regime, or a term of ``K_Q`` whose
        limit does not exist (the message names the parameter).

    Examples
    --------
    A linear network ``f = W_out W_in ξ`` (a compiled kernel: every expectation exact):

    >>> from tensorprog import nn
    >>> lin = nn.Model("lin")
    >>> for name, shape in (("W_in", ("n", 1)), ("W_out", (1, "n"))):
    ...     _ = lin.param(name, shape)
    >>> _ = lin.forward(lambda p, xi: p.W_out @ (p.W_in @ xi))
    >>> K = nn.operator_kernel(lin, [[1.0]], nn.NTK(), nn.SignSGD(1.0, eps=0.5))
    >>> K([[2.0]]).shape, K.method
    ((1, 1), 'compiled')
    """
    if not isinstance(model, Model) or model.fn is None:
        raise ProgramTypeError("nn.operator_kernel: model must be an nn.Model with a forward")
    if not isinstance(optimizer, Entrywise):
        raise ProgramTypeError(
            f"nn.operator_kernel: optimizer must be an entrywise optimizer (nn.Adam, "
            f"nn.SignSGD), got {optimizer!r}"
        )
    Xa = _inputs(X, "nn.operator_kernel")
    scalings = {nm: _scaling(param, spec, optimizer) for nm, spec in model.params.items()}
    m = _operator_m(model, scalings)
    if m is None:
        raise ProgramValueError(
            "nn.operator_kernel: the output weights have a+b ≥ 1 under this "
            "parametrization: f_0 → 0 and the run is not an operator-regime run with a "
            "Gaussian-process output (use nn.NTK() or nn.abcd with a+b < 1 for the outputs)"
        )
    B = Xa.shape[0]

    def build(hist: np.ndarray | None, L: int) -> tuple[Any, np.ndarray, list]:
        # the targets are irrelevant: χ are the program's own initial scalars
        Y = np.zeros(B)
        kb, uses, terms = _kets(model, Xa, Y, "mse", optimizer, scalings, m, "operator_kernel")
        probs = [str(p) for p in kb.problems] + [
            msg for ts in terms.values() for msg in ts.problems()
        ]
        if probs:
            raise ProgramValueError("nn.operator_kernel: K_Q has no limit: " + "; ".join(probs))
        K = kb.d_out
        handles, chis = [], []
        for s in range(L):
            row = {}
            for i in range(B):
                row[i] = []
                for k in range(K):  # type: ignore[arg-type]
                    v = 1.0 if hist is None else float(hist[s, i, k])
                    h = kb.p.scalar(f"chi[{s},{i},{k}]", v)
                    handles.append(h)
                    row[i].append(h)
            chis.append(row)
        kq = operator_step(uses, terms, chis, optimizer, (B, K))  # type: ignore[arg-type]
        return kb.p, kq, handles

    return OperatorKernel(build, optimizer.memory(1) == (1,), limit_kw)


# ---------------------------------------------------------------------------------------
# Entry point


class _NotCentrable(ProgramValueError):
    """A kernel-regime forward that cannot be centred (module docstring)."""


def _centring(
    model: Model, scalings: dict[str, Scaling], center: Any = None, changes: Any = None
) -> tuple[bool, bool, Fraction]:
    """``(center, kernel, m)`` of a run (module docstring, "Kernel-regime runs").

    The rule: with ``s_out`` the smallest ``s = a+b`` of the output weights and ``e_out``
    the smallest ``e = c+2a`` of the trained ones, the initial output
    ``n^{1−s}⟨u, x_0⟩`` does not vanish when ``s_out < 1`` (a Gaussian-process
    fluctuation [TP4 App H.4.1]); such a run is centred by default when its readout is
    updated stably (``e_out ≥ 1``) — NTK, SP with ``lr·n^{-1}`` — and no trained
    scalar-like parameter needs a gradient that centring cannot give (and, seen only when
    the forward is traced, its outputs are the output weights' uses themselves); then
    ``kernel`` (carried as changes) with ``m = min(s_out, e_out)``. ``center=True`` with
    ``s_out ≥ 1`` trains ``f_t − f_0`` as the difference of the outputs (``m = 1``).
    """
    outs = [nm for nm, sp in model.params.items() if sp.cls is ParamClass.OUTPUT]
    s_out = min((scalings[o].s for o in outs), default=None)
    trained = [scalings[o].e for o in outs if model.params[o].lr_mult != 0.0]
    e_out = min(trained, default=None)
    gp = s_out is not None and s_out < 1  # f_0 does not vanish
    scalar_trained = any(
        sp.cls is ParamClass.SCALAR and sp.lr_mult != 0.0 for sp in model.params.values()
    )
    if center is None:
        center = gp and (e_out is None or e_out >= 1) and not scalar_trained
    elif not isinstance(center, (bool, np.bool_)):
        raise ProgramTypeError(f"nn.train: center must be a bool or None, got {center!r}")
    center = bool(center)
    kernel = center and gp
    m = min([s_out] + ([e_out] if e_out is not None else [])) if kernel else Fraction(1)
    if changes is not None and not isinstance(changes, (bool, np.bool_)):
        raise ProgramTypeError(f"nn.train: changes must be a bool or None, got {changes!r}")
    if changes and not kernel:
        if gp or e_out is None or e_out < 1:
            raise ProgramValueError(
                f"nn.train: changes=True carries an uncentred run as step-0 values plus "
                f"changes; it needs every output weight with a+b ≥ 1 (a bounded f_0) and its "
                f"updates with c+2a ≥ 1, got a+b = {s_out}, c+2a = {e_out}"
            )
        kernel = True  # uncentred, carried as changes (m = 1)
    return center, kernel, Fraction(m)


def _scaling(param: Any, spec: ParamSpec, opt: Optimizer | None = None) -> Scaling:
    entrywise = isinstance(opt, Entrywise)
    if isinstance(param, (PerClass, PerParameter)):
        return param.scaling(spec.name, spec.cls, spec.finite, entrywise)
    if isinstance(param, ABC):
        if entrywise:
            raise ProgramTypeError(
                f"nn.train: {type(opt).__name__} needs abcd exponents (ε_P = eps·n^(-d)); an "
                f"nn.ABC such as nn.MF() has none — use nn.muP() (for one hidden layer it is "
                f"the mean-field parametrization) or nn.abcd({{...}})"
            )
        return abc_scaling(param, spec.name, spec.cls)
    raise ProgramTypeError(
        f"nn.train: param must be a per-class preset (nn.muP(), nn.SP(), nn.NTK()), "
        f"nn.abcd({{...}}) or an nn.ABC (e.g. nn.MF()); got {param!r}"
    )


def _as_floats(a: Any, what: str, who: str = "nn.train") -> np.ndarray:
    try:
        return np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise ProgramTypeError(f"{who}: {what} must be a numeric array, got {a!r}") from None


def train(
    model: Model,
    X: Any,
    Y: Any,
    steps: int,
    *,
    loss: str = "mse",
    optimizer: Optimizer | None = None,
    param: Any = None,
    batches: Any = None,
    allow_unstable: bool = False,
    center: bool | None = None,
    coordinates: bool = False,
    X_eval: Any = None,
    feature_kernels: Any = (),
    changes: bool | None = None,
    name: str | None = None,
) -> TrainRun:
    r"""Unroll ``steps`` optimizer steps of ``model`` on ``(X, Y)`` into one program.

    Parameters
    ----------
    model : nn.Model
        Parameters and forward (``m.forward``).
    X : array_like, shape (B, d_x)
        Inputs; row ``i`` is passed to the forward as ``xi`` (numpy).
    Y : array_like
        ``"mse"``: targets, shape ``(B, d_out)`` (or ``(B,)`` when ``d_out = 1``);
        ``"xent"``: integer labels in ``[0, d_out)``, shape ``(B,)``.
    steps : int
        ``T ≥ 1``; outputs and loss are recorded at ``t = 0..T``.
    loss : {"mse", "xent"}
        ``(1/2B) Σ_i ‖f(ξ_i) − y_i‖²`` or ``(1/B) Σ_i [logsumexp f(ξ_i) − f(ξ_i)_{y_i}]``.
    optimizer : nn.SGD, nn.Adam or nn.SignSGD, default nn.SGD(1.0)
        Entrywise optimizers need abcd exponents with ``d`` (a preset's Adam column or
        ``nn.abcd``; see "Entrywise optimizers" above).
    param : default nn.muP()
        ``nn.muP()``, ``nn.SP()``, ``nn.NTK()`` (per-class presets), ``nn.abcd({...})``
        (per parameter) or an ``nn.ABC`` such as ``nn.MF()`` (per layer; see the module
        docstring).
    batches : sequence of ``steps`` sequences of row indices, optional
        The rows of each gradient step (default: all rows).
    allow_unstable : bool, default False
        Build a run whose program needs diverging width powers (its finite network
        simulates; ``limit()`` refuses, naming the parameters and exponents).
    center : bool, optional
        Train ``f − f_0`` instead of ``f`` (``outputs[0] = 0``). Default: ``True`` exactly
        when an output weight has ``a+b < 1`` (``f_0`` a Gaussian-process fluctuation,
        e.g. NTK, SP with ``lr·n^{-1}``), the output weights are updated stably
        (``c+2a ≥ 1``) and the run can be centred; ``False`` there builds the uncentred
        run, whose diverging ``f_0`` is refused unless ``allow_unstable``. See
        "Kernel-regime runs" in the module docstring. Entrywise optimizers: ``True`` by
        default when an output weight has ``a+b < 1`` (the operator regime, "Operator
        regime of entrywise optimizers").
    coordinates : bool, default False
        Also expose, per hidden weight use, the vector ``θ·W_0 x_t`` whose difference
        from the use is ``ΔW_t x_t`` (:attr:`TrainRun.weight_uses`, for
        :func:`~tensorprog.nn.coord_check`): a name of the MatMul ``W_0 x_t`` where the
        program has it, else one ``lincomb`` per use (a kernel-regime run applies ``W_0``
        to ``x_0`` and ``Δx`` separately). ``False`` leaves the program unchanged.
    X_eval : array_like, shape (E, d_x), optional
        Inputs on which the forward is evaluated at every step with that step's
        parameters (``run.eval_outputs``; centred like the outputs), never trained on.
    feature_kernels : sequence of str, optional
        Names of vectors the forward names (``name=``): their Gram matrices
        ``⟨v_t(ξ_i), v_t(ξ_j)⟩`` over the training rows at every step
        (``run.feature_kernels[name]``, ``lim.feature_kernel(name)``).
    changes : bool, optional
        Carry every quantity of the forward at step ``t ≥ 1`` as its step-0 value plus a
        normalised change ("Kernel-regime runs" in the module docstring). Default: exactly
        for the centred kernel-regime runs. ``True`` also carries an uncentred run whose
        ``f_0`` is bounded (output weights ``a+b ≥ 1``, updated with ``c+2a ≥ 1``) so,
        ``f_t = f_0 + (f_t − f_0)``: the same finite network, and features that move by
        a vanishing amount have exactly their step-0 limit (not a new Gaussian of the
        same law, as a MatMul of the initial matrix with them would be) [TP4 Eq. (55)].
    name : str, optional
        Name of the program.

    Returns
    -------
    TrainRun

    Raises
    ------
    ProgramTypeError, ProgramValueError
        Bad arguments (the message names the argument), or a run without a limit
        (unless ``allow_unstable``).

    Examples
    --------
    >>> import numpy as np, tensorprog as tp
    >>> from tensorprog import nn
    >>> m = nn.Model("mf")
    >>> _ = m.param("W_in", ("n", 1))
    >>> _ = m.param("W_out", (1, "n"))
    >>> @m.forward
    ... def f(p, xi):
    ...     return p.W_out @ tp.tanh(p.W_in @ xi)
    >>> run = nn.train(m, [[1.0]], [1.0], steps=1, optimizer=nn.SGD(1.0), param=nn.MF())
    >>> np.round(run.limit().outputs[:, 0, 0], 6)
    array([0.      , 0.708191])
    """
    if not isinstance(model, Model):
        raise ProgramTypeError(f"nn.train: model must be an nn.Model, got {type(model).__name__}")
    if model.fn is None:
        raise ProgramValueError(
            f"nn.train: model {model.name!r} has no forward; decorate one with @m.forward"
        )
    if not model.params:
        raise ProgramValueError(f"nn.train: model {model.name!r} declares no parameters")
    Xa = _inputs(X, "nn.train")
    B = Xa.shape[0]
    Xe = None
    if X_eval is not None:
        Xe = _as_floats(X_eval, "X_eval")
        if Xe.ndim != 2 or Xe.shape[1] != Xa.shape[1] or not np.all(np.isfinite(Xe)):
            raise ProgramValueError(
                f"nn.train: X_eval must be a finite 2-D array with the {Xa.shape[1]} columns "
                f"of X, shape (E, {Xa.shape[1]}), got shape {Xe.shape}"
            )
    try:
        kernels = tuple(dict.fromkeys(feature_kernels))
    except TypeError:
        kernels = None  # type: ignore[assignment]
    if (
        isinstance(feature_kernels, str)
        or kernels is None
        or not all(isinstance(k, str) for k in kernels)
    ):
        raise ProgramTypeError(
            f"nn.train: feature_kernels must be a sequence of names (str) the forward gives "
            f"to vectors, got {feature_kernels!r}"
        )
    Ya = _as_floats(Y, "Y")
    if Ya.ndim == 0 or Ya.shape[0] != B or not np.all(np.isfinite(Ya)):
        raise ProgramValueError(
            f"nn.train: Y must be finite with one row per row of X ({B}), got shape {Ya.shape}"
        )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ProgramValueError(f"nn.train: steps must be an int ≥ 1, got {steps!r}")
    steps = int(steps)
    if loss not in _LOSSES:
        raise ProgramValueError(f"nn.train: loss must be one of {_LOSSES}, got {loss!r}")
    opt = SGD(1.0) if optimizer is None else optimizer
    if not isinstance(opt, (SGD, Entrywise)):
        raise ProgramTypeError(
            f"nn.train: optimizer must be nn.SGD(lr, momentum), nn.Adam(lr, betas, eps) or "
            f"nn.SignSGD(lr, eps), got {optimizer!r}"
        )
    param = muP() if param is None else param
    if isinstance(param, PerParameter):
        extra = sorted(set(param.exponents) - set(model.params))
        if extra:
            raise ProgramValueError(
                f"nn.train: nn.abcd names unknown parameters {extra}; model {model.name!r} "
                f"has {list(model.params)}"
            )
    scalings = {nm: _scaling(param, spec, opt) for nm, spec in model.params.items()}
    if batches is None:
        rows = [np.arange(B)] * steps
    else:
        try:
            rows = [np.asarray(r) for r in batches]
        except TypeError:
            raise ProgramTypeError(
                f"nn.train: batches must be a sequence of {steps} sequences of row indices"
            ) from None
        if len(rows) != steps:
            raise ProgramValueError(
                f"nn.train: batches must give the rows of each of the {steps} steps, got "
                f"{len(rows)} entries"
            )
        for t, r in enumerate(rows):
            ok = (
                r.ndim == 1
                and r.size > 0
                and np.issubdtype(r.dtype, np.integer)
                and r.min() >= 0
                and r.max() < B
                and len(set(r.tolist())) == r.size
            )
            if not ok:
                raise ProgramValueError(
                    f"nn.train: batches[{t}] must be a non-empty sequence of distinct row "
                    f"indices in [0, {B}), got {r.tolist()!r}"
                )
        rows = [np.asarray(r, dtype=int) for r in rows]
    if not isinstance(allow_unstable, (bool, np.bool_)):
        raise ProgramTypeError(f"nn.train: allow_unstable must be a bool, got {allow_unstable!r}")
    if not isinstance(coordinates, (bool, np.bool_)):
        raise ProgramTypeError(f"nn.train: coordinates must be a bool, got {coordinates!r}")
    args = (model, Xa, Ya, steps, loss, opt, scalings, rows, name or f"train_{model.name}")
    extra = {"X_eval": Xe, "kernels": kernels, "coordinates": bool(coordinates)}
    center_given = center
    op: _OperatorLimit | None = None
    why_not = ""
    if isinstance(opt, Entrywise):
        if changes:
            raise ProgramValueError(
                f"nn.train: changes=True is for SGD runs; {type(opt).__name__} runs are "
                f"written directly"
            )
        if center is not None and not isinstance(center, (bool, np.bool_)):
            raise ProgramTypeError(f"nn.train: center must be a bool or None, got {center!r}")
        m_op = _operator_m(model, scalings)
        if center and m_op is None:
            raise ProgramValueError(
                f"nn.train: center=True centres runs whose initial output is a Gaussian "
                f"process (output weights with a+b < 1: the operator regime of "
                f"{type(opt).__name__} [TP4b Thm 2.4.7]); here f_0 → 0 and the run is "
                f"not centred"
            )
        center, kernel, m = False, False, Fraction(1)
        if m_op is not None and center_given is not False:
            try:
                op = _operator_limit(args, m_op)
                center = True  # the finite network trains f − f_0 like its limit
            except _NotCentrable as exc:
                if center_given is not None:
                    raise
                why_not = f" ({exc})"
    else:
        center, kernel, m = _centring(model, scalings, center, changes)
    try:
        builder = _Builder(*args, center=center, kernel=kernel, m=m, **extra)
    except _NotCentrable as exc:
        if center_given is not None or changes:
            raise
        # the default centring does not apply to this forward: the uncentred run (its
        # f_0 is then a diverging power, a problem like any other)
        why_not = f" ({exc})"
        builder = _Builder(*args, **extra)
    problems = builder.problems if op is None else op.problems
    if problems and not allow_unstable:
        raise ProgramValueError(
            "nn.train: the run has no infinite-width limit (pass allow_unstable=True to "
            "simulate it anyway): " + "; ".join(str(p) for p in problems) + why_not
        )
    return TrainRun(model, builder, scalings, op)
