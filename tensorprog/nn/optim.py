r"""Optimizers of :func:`tensorprog.nn.train`: typed records of an update rule.

An optimizer is a small frozen record; :func:`tensorprog.nn.train` unrolls its update
rule into the program. Each optimizer is its own class: :class:`SGD` (linear in the
gradients) and the entrywise optimizers :class:`Adam` and :class:`SignSGD` [TP4b §2.1]
(:class:`Entrywise`: a nonlinear function ``Q`` of each entry's gradient history, with the
width exponents of the ``adam_c``/``adam_d`` columns of the presets' tables in
:mod:`tensorprog.nn.parametrization`).

SGD with momentum (docs/training-any-model.md)
----------------------------------------------
With ``g_t`` the gradient of the loss at step ``t`` and ``μ`` the momentum,

.. math::

    \mathrm{buf}_t = \mu\,\mathrm{buf}_{t-1} + g_t,\quad \mathrm{buf}_{-1}=0,\qquad
    w_{t+1} = w_t - \eta_P\,\mathrm{buf}_t ,

which is *linear* in the gradients:
:math:`w_t = w_0 - \eta_P\sum_{r<t}\kappa_{t-r}\,g_r` with
:math:`\kappa_j=\sum_{q<j}\mu^q` (:meth:`SGD.kappa`), and
:math:`w_{t+1} = w_t - \eta_P\sum_{r\le t}\mu^{t-r} g_r` (:meth:`SGD.decay`). So momentum
changes only the numerical coefficients of the unrolled program, never its structure
(no buffer vectors are recorded).

Entrywise optimizers [TP4b §2.1, Eq. (2.1)–(2.3)]
-------------------------------------------------
A parameter entry with gradient history ``g_0..g_t`` moves by
``w_{t+1} = w_t − η_P Q_t(g_0, …, g_t; ε_P)``, ``ε_P = eps · n^{-d_P}`` (``d_P`` from the
parametrization, [TP4b Def 2.2.1, Remark 2.2.6]). Adam in the smooth form of [TP4b §2.1]:

.. math::

    Q_t = \frac{\hat m_t}{\sqrt{\hat v_t+\varepsilon^2}},\quad
    \hat m_t = \frac{\sum_{s\le t}(1-\beta_1)\beta_1^{t-s}g_s}{1-\beta_1^{t+1}},\quad
    \hat v_t = \frac{\sum_{s\le t}(1-\beta_2)\beta_2^{t-s}g_s^2}{1-\beta_2^{t+1}},

(the usual recursions ``m_t = β₁ m_{t−1} + (1−β₁) g_t``, ``v_t = β₂ v_{t−1} + (1−β₂) g_t²``,
``m_{−1} = v_{−1} = 0``, unrolled); SignSGD ``Q(g) = g/√(g² + ε²)`` (memoryless). Both are
*scale-equivariant*: ``Q_t(λg; λε) = Q_t(g; ε)`` for ``λ > 0``, which is how
:func:`tensorprog.nn.train` moves the width powers of the gradients into ``ε``
[TP4b Remark 2.2.6].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from .. import ProgramTypeError, ProgramValueError

__all__ = ["Optimizer", "SGD", "Entrywise", "Adam", "SignSGD"]


def _real(x: object, what: str, lo: float, lo_open: bool, hi: float | None = None) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ProgramTypeError(f"{what} must be a real number, got {x!r}")
    f = float(x)
    ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and (hi is None or f < hi)
    if not ok:
        bound = f"{'>' if lo_open else '≥'} {lo}" + (f" and < {hi}" if hi is not None else "")
        raise ProgramValueError(f"{what} must be a finite number {bound}, got {x!r}")
    return f


@dataclass(frozen=True)
class Optimizer:
    """Base record of an optimizer: the base learning rate ``lr`` (multiplied per
    parameter by its ``lr_mult`` and its width factor)."""

    lr: float


@dataclass(frozen=True)
class SGD(Optimizer):
    r"""Stochastic gradient descent with (heavy-ball) momentum.

    ``buf ← μ·buf + g;  w ← w − lr_P·buf`` (``buf₀ = 0``), ``lr_P = lr · lr_mult ·``
    (width factor of the parameter's class).

    Parameters
    ----------
    lr : float
        Base learning rate ``> 0``.
    momentum : float, default 0.0
        ``μ ∈ [0, 1)``.

    Examples
    --------
    >>> from tensorprog import nn
    >>> opt = nn.SGD(0.5, momentum=0.9)
    >>> opt.kappa(2), opt.decay(1)
    (1.9, 0.9)
    """

    momentum: float = 0.0

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        object.__setattr__(self, "lr", _real(lr, "nn.SGD: lr", 0.0, True))
        object.__setattr__(self, "momentum", _real(momentum, "nn.SGD: momentum", 0.0, False, 1.0))

    def kappa(self, j: int) -> float:
        """``κ_j = Σ_{q<j} μ^q``: the weight of ``g_r`` in ``(w_0 − w_{r+j})/lr_P``."""
        return float(sum(self.momentum**q for q in range(j)))

    def decay(self, j: int) -> float:
        """``μ^j``: the weight of ``g_{t−j}`` in ``(w_t − w_{t+1})/lr_P``."""
        return self.momentum**j


@dataclass(frozen=True)
class Entrywise(Optimizer):
    r"""Base record of the entrywise optimizers [TP4b §2.1]: each entry of a parameter
    moves by ``−lr_P · Q_t(g_0, …, g_t; ε_P)``, a function of that entry's gradient
    history only.

    Subclasses give :meth:`q` (the update as an expression in the gradients, traced by
    sympy for the program and evaluated by numpy at finite width alike) and
    :meth:`memory` (which past gradients it reads).
    """

    eps: float

    def memory(self, t: int) -> tuple[int, ...]:
        """The steps ``s ≤ t`` whose gradients ``Q_t`` reads."""
        raise NotImplementedError

    def q(
        self, t: int, gs: Sequence[Any], eps: Any, sqrt: Callable[[Any], Any] = sympy.sqrt
    ) -> Any:
        """``Q_t`` of the gradients ``gs`` (one per step of :meth:`memory`) with epsilon
        ``eps``; ``sqrt`` is ``sympy.sqrt`` for the program, ``numpy.sqrt`` for arrays."""
        raise NotImplementedError


@dataclass(frozen=True)
class Adam(Entrywise):
    r"""Adam in the smooth form of [TP4b §2.1] (bias-corrected, ``ε`` inside the root).

    .. math::

        w_{t+1}=w_t-\eta_P\,\frac{\hat m_t}{\sqrt{\hat v_t+\varepsilon_P^2}},\qquad
        \hat m_t=\frac{m_t}{1-\beta_1^{t+1}},\ \hat v_t=\frac{v_t}{1-\beta_2^{t+1}},

    ``m_t = β₁ m_{t−1} + (1−β₁) g_t``, ``v_t = β₂ v_{t−1} + (1−β₂) g_t²``,
    ``m_{−1} = v_{−1} = 0``; ``ε_P = eps · n^{-d_P}`` per parameter
    (:class:`~tensorprog.nn.parametrization.Scaling`).

    Parameters
    ----------
    lr : float
        Base learning rate ``> 0``.
    betas : (float, float), default (0.9, 0.999)
        ``β₁, β₂ ∈ [0, 1)``.
    eps : float, default 1e-8
        ``ε > 0`` (the smooth form needs it positive).

    Examples
    --------
    >>> from tensorprog import nn
    >>> import numpy as np
    >>> opt = nn.Adam(0.1, betas=(0.5, 0.5), eps=1e-3)
    >>> float(opt.q(1, [1.0, -1.0], 0.0, np.sqrt))  # m̂ = -1/3, v̂ = 1
    -0.3333333333333333
    """

    betas: tuple[float, float] = (0.9, 0.999)

    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        object.__setattr__(self, "lr", _real(lr, "nn.Adam: lr", 0.0, True))
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise ProgramTypeError(f"nn.Adam: betas must be a pair (β₁, β₂), got {betas!r}")
        b1 = _real(betas[0], "nn.Adam: betas[0] (β₁)", 0.0, False, 1.0)
        b2 = _real(betas[1], "nn.Adam: betas[1] (β₂)", 0.0, False, 1.0)
        object.__setattr__(self, "betas", (b1, b2))
        object.__setattr__(self, "eps", _real(eps, "nn.Adam: eps", 0.0, True))

    def memory(self, t: int) -> tuple[int, ...]:
        """All steps ``0..t`` (Adam is memoryful [TP4b Def 2.1.1])."""
        return tuple(range(t + 1))

    def weights(self, t: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The weights of ``g_s`` in ``m̂_t`` and of ``g_s²`` in ``v̂_t``, ``s = 0..t``:
        ``(1−β)β^{t−s}/(1−β^{t+1})``."""
        out = []
        for b in self.betas:
            norm = 1.0 - b ** (t + 1)
            out.append(tuple((1.0 - b) * b ** (t - s) / norm for s in range(t + 1)))
        return out[0], out[1]

    def q(
        self, t: int, gs: Sequence[Any], eps: Any, sqrt: Callable[[Any], Any] = sympy.sqrt
    ) -> Any:
        """``m̂_t/√(v̂_t + ε²)`` of the history ``gs = (g_0, …, g_t)``."""
        w1, w2 = self.weights(t)
        m = sum(w * g for w, g in zip(w1, gs))
        v = sum(w * g * g for w, g in zip(w2, gs))
        return m / sqrt(v + eps * eps)


@dataclass(frozen=True)
class SignSGD(Entrywise):
    r"""SignSGD in the smooth form of [TP4b §2.1]: ``Q(g) = g/√(g² + ε_P²)``.

    ``w_{t+1} = w_t − η_P g_t/√(g_t² + ε_P²)`` (memoryless, stationary
    [TP4b Defs 2.1.1–2.1.2]); ``ε_P → 0`` is ``sign(g)``.

    Parameters
    ----------
    lr : float
        Base learning rate ``> 0``.
    eps : float
        ``ε > 0``.

    Examples
    --------
    >>> from tensorprog import nn
    >>> import numpy as np
    >>> float(nn.SignSGD(0.1, eps=0.75).q(0, [1.0], 0.75, np.sqrt))
    0.8
    """

    def __init__(self, lr: float, eps: float) -> None:
        object.__setattr__(self, "lr", _real(lr, "nn.SignSGD: lr", 0.0, True))
        object.__setattr__(self, "eps", _real(eps, "nn.SignSGD: eps", 0.0, True))

    def memory(self, t: int) -> tuple[int, ...]:
        """Only step ``t`` (memoryless)."""
        return (t,)

    def q(
        self, t: int, gs: Sequence[Any], eps: Any, sqrt: Callable[[Any], Any] = sympy.sqrt
    ) -> Any:
        """``g_t/√(g_t² + ε²)``."""
        (g,) = gs
        return g / sqrt(g * g + eps * eps)
