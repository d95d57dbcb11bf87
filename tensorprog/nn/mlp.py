r"""The multilayer perceptron that :func:`tensorprog.nn.train_sgd` unrolls.

:class:`MLP` is a *description* (no weights): input dimension :math:`d`, depth
:math:`L` (hidden layers), nonlinearity :math:`\phi` and an abc-parametrization
[TP4 §3.2]. The finite network it stands for (``docs/training.md``, "The finite network"):

.. math::

    h^1 = W^1\xi,\quad x^l=\phi(h^l),\quad h^{l+1}=W^{l+1}x^l\ (l<L),\quad f=W^{L+1}x^L,

with :math:`W^l=n^{-a_l}w^l`, :math:`w^l_{ij}\sim\mathcal N(0,\sigma_l^2n^{-2b_l})`
(:math:`\sigma_l` = ``param.init_std``), :math:`W^1\in\mathbb R^{n\times d}`, hidden
:math:`n\times n`, readout :math:`1\times n`, no biases; SGD on every :math:`w^l` with
learning rate :math:`\eta\,n^{-c}`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import Nonlinearity, ProgramTypeError, ProgramValueError, get_nonlinearity
from .parametrization import ABC, Classification, LayerScaling, classify, muP, scalings

__all__ = ["MLP"]


@dataclass(frozen=True)
class MLP:
    r"""An :math:`L`-hidden-layer perceptron with scalar output, abc-parametrized.

    Parameters
    ----------
    d_in : int
        Input dimension :math:`d\ge1` (a constant as :math:`n\to\infty`).
    depth : int
        Number of hidden layers :math:`L\ge1`.
    nonlin : str or tensorprog.Nonlinearity, default "relu"
        :math:`\phi`: a builtin name (``"relu"``, ``"tanh"``, ``"identity"``, …) or any
        one-argument :class:`tensorprog.Nonlinearity`.
    param : ABC, optional
        The parametrization; default ``nn.muP(depth)``. Its depth must be ``depth``.

    Examples
    --------
    >>> from tensorprog import nn
    >>> net = nn.MLP(d_in=3, depth=2, nonlin="relu", param=nn.muP(2))
    >>> net.classification.regime
    'feature learning'
    """

    d_in: int
    depth: int
    nonlin: Any = "relu"
    param: ABC | None = None

    def __post_init__(self) -> None:
        for what in ("d_in", "depth"):
            v = getattr(self, what)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise ProgramTypeError(f"MLP: {what} must be a positive int, got {v!r}")
            if v < 1:
                raise ProgramValueError(f"MLP: {what} must be a positive int, got {v}")
            object.__setattr__(self, what, int(v))
        phi = get_nonlinearity(self.nonlin)
        if phi.arity != 1 or phi.nparams != 0:
            raise ProgramValueError(
                f"MLP: nonlin must be a function of one argument without parameters, got "
                f"{phi.name} with {phi.arity} arguments and {phi.nparams} parameters"
            )
        object.__setattr__(self, "nonlin", phi)
        param = muP(self.depth) if self.param is None else self.param
        if not isinstance(param, ABC):
            raise ProgramTypeError(
                f"MLP: param must be an abc-parametrization (nn.muP(L), nn.NTK(L), nn.SP(L), "
                f"nn.MF(), nn.abc(a, b, c)), got {type(param).__name__}"
            )
        if param.depth != self.depth:
            raise ProgramValueError(
                f"MLP: param has depth L={param.depth} (len(a) = {param.depth + 1}) but the "
                f"network has depth={self.depth}; give one exponent per layer l = 1..L+1"
            )
        object.__setattr__(self, "param", param)

    @property
    def phi(self) -> Nonlinearity:
        """The nonlinearity :math:`\\phi` as a :class:`tensorprog.Nonlinearity`."""
        return self.nonlin  # type: ignore[return-value]

    @property
    def classification(self) -> Classification:
        """``nn.classify(param)``: stability, regime, r [TP4 §3.2]."""
        return classify(self.param)  # type: ignore[arg-type]

    @property
    def scalings(self) -> tuple[LayerScaling, ...]:
        """Per-layer width exponents (``nn.scalings(param)``)."""
        return scalings(self.param)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"MLP(d_in={self.d_in}, depth={self.depth}, nonlin={self.phi.name!r}, "
            f"param={self.param!r})"
        )
