r"""Optimizers of :func:`tensorprog.nn.train`: typed records of an update rule.

An optimizer is a small frozen record; :func:`tensorprog.nn.train` unrolls its update
rule into the program. Each optimizer is its own class, so entrywise optimizers
(``Adam``, ``SignSGD``: [TP4b §2.1], the ``adam_c``/``adam_d`` columns of the presets'
tables in :mod:`tensorprog.nn.parametrization`) slot in later as new classes with their
own rule; only :class:`SGD` exists today.

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
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .. import ProgramTypeError, ProgramValueError

__all__ = ["Optimizer", "SGD"]


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
