r"""Normalisation layers written in the DSL: LayerNorm and RMSNorm over the width.

Both are ordinary program code — Moments for the statistics, a Nonlin+ for the
division — so :func:`tensorprog.grad` differentiates them (with
``through_scalars=True`` the gradient also flows through the mean and the variance,
as in a finite network), :func:`tensorprog.simulate` runs them at width ``n`` and the
Master Theorem takes their limit: a Moment converges to its expectation, so in the
limit LayerNorm is the coordinatewise map ``z ↦ (z − 𝔼Z)/√(Var Z + ε)``
([TP2 §3, LayerNorm as a Nonlin+ of Moments], [TP4 §2.2]).

Means are over the ``n`` coordinates and the variance is the biased one
(``1/n``), as in ``torch.nn.LayerNorm`` without its affine gain and bias; a gain is a
separate vector-like parameter of the model (``nn.Model.param(..., init_mean=1)``).
"""

from __future__ import annotations

import numbers
from typing import Any

from .. import ProgramTypeError, ProgramValueError, Vector, lincomb, mean, sqrt

__all__ = ["layernorm", "rmsnorm"]


def layernorm(h: Vector, eps: float = 1e-5, name: str | None = None) -> Vector:
    r"""LayerNorm without gain: :math:`(h - \bar h)/\sqrt{\overline{(h-\bar h)^2} + \varepsilon}`.

    Parameters
    ----------
    h : tensorprog.Vector
        The vector to normalise.
    eps : float, default 1e-5
        ``ε ≥ 0`` added to the variance (0 is allowed; then the variance must not vanish).
    name : str, optional
        Name of the normalised vector.

    Returns
    -------
    tensorprog.Vector
        ``(h − mean(h)) / sqrt(mean((h − mean h)²) + eps)``.

    Examples
    --------
    >>> import tensorprog as tp
    >>> from tensorprog import nn
    >>> p = tp.Program()
    >>> h = p.vector("h", var=4.0)
    >>> y = nn.layernorm(h, name="y")
    >>> k = tp.mean(y * y)
    >>> round(float(p.limit()[k]), 6)  # = 4/(4 + 1e-5)
    0.999998
    """
    _check(h, eps, "layernorm")
    c = h - mean(h)
    return _divide(c, sqrt(mean(c * c) + eps), name)


def rmsnorm(h: Vector, eps: float = 1e-5, name: str | None = None) -> Vector:
    r"""RMSNorm without gain: :math:`h/\sqrt{\overline{h^2} + \varepsilon}`.

    Parameters
    ----------
    h : tensorprog.Vector
        The vector to normalise.
    eps : float, default 1e-5
        ``ε ≥ 0`` added to the mean square.
    name : str, optional
        Name of the normalised vector.

    Returns
    -------
    tensorprog.Vector
        ``h / sqrt(mean(h²) + eps)``.

    Examples
    --------
    >>> import tensorprog as tp
    >>> from tensorprog import nn
    >>> p = tp.Program()
    >>> h = p.vector("h", var=3.0)
    >>> k = tp.mean(nn.rmsnorm(h + 1.0, eps=0.0) ** 2)
    >>> round(float(p.limit()[k]), 12)  # E[(h+1)²]/E[(h+1)²]
    1.0
    """
    _check(h, eps, "rmsnorm")
    return _divide(h, sqrt(mean(h * h) + eps), name)


def _divide(x: Vector, s: Any, name: str | None) -> Vector:
    return lincomb([(1 / s, x)], name=name)


def _check(h: Any, eps: Any, where: str) -> None:
    if not isinstance(h, Vector):
        raise ProgramTypeError(
            f"nn.{where}: h must be a vector of a program, got {type(h).__name__}"
        )
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ProgramValueError(f"nn.{where}: eps must be a real number ≥ 0, got {eps!r}")
