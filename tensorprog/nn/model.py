r"""``nn.Model``: a neural network written in the DSL, with declared parameters.

A model declares its parameters with shapes over the width ``"n"`` and finite dims
(:meth:`Model.param`) and one forward function written in the ordinary DSL
(:meth:`Model.forward`). :func:`tensorprog.nn.train` calls the forward once per step
and training input, with a *parameter view* ``p`` whose attributes are the parameters
at that step:

* ``p.W @ v`` for a hidden weight ``("n", "n")`` and a vector ``v`` (``p.W.T @ v``: its
  transpose, e.g. for tied weights);
* ``p.W_in @ xi`` for an input weight ``("n", d)`` and a numeric vector ``xi`` of length
  ``d`` (a row of the finite input, or part of it);
* ``p.W_out @ v`` for an output weight ``(k, "n")``: ``k`` Scalars (a Scalar if ``k = 1``);
* ``p.b`` for a vector-like parameter ``("n",)``: a Vector;
* ``p.c`` for a scalar-like parameter: a Scalar (shape ``()``) or a 1-d array of Scalars
  (shape ``(k,)``).

Everything else is the DSL: ``tp.relu``, Moments, ``nn.layernorm``, residual branches
with multipliers, weight reuse, Python loops over time steps. The forward returns the
``d_out`` outputs: a Scalar or a sequence of Scalars. Quantities the forward names with
``name=`` (a vector or a scalar) are recorded per step and input (``run.named``).

Classes by shape follow [TP5 App B] (:class:`~tensorprog.nn.ParamClass`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import ProgramTypeError, ProgramValueError
from .parametrization import WIDTH_DIM, ParamClass, param_class

__all__ = ["Model", "ParamSpec"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ParamSpec:
    """A declared parameter of a :class:`Model`.

    Attributes
    ----------
    name : str
    shape : tuple
        Entries ``"n"`` (the width) or positive ints (finite dims).
    cls : ParamClass
        Decided by the shape.
    init_mean, init_std, lr_mult : float
        Entries iid ``N(init_mean, init_std² · v)``; learning rate ``lr · s · lr_mult``
        (``v``, ``s`` from the parametrization).
    """

    name: str
    shape: tuple
    cls: ParamClass
    init_mean: float
    init_std: float
    lr_mult: float

    @property
    def finite(self) -> int:
        """The finite dimension: ``d`` of an input weight, ``k`` of an output weight or of
        a ``(k,)`` scalar-like parameter, 1 for shape ``()`` and width-only shapes."""
        dims = [s for s in self.shape if s != WIDTH_DIM]
        return int(dims[0]) if dims else 1

    def sim_shape(self, n: int) -> tuple:
        """The shape at width ``n``."""
        return tuple(n if s == WIDTH_DIM else int(s) for s in self.shape)


def _number(x: Any, what: str, lo: float | None = None) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ProgramTypeError(f"{what} must be a real number, got {x!r}")
    f = float(x)
    if not math.isfinite(f) or (lo is not None and f < lo):
        raise ProgramValueError(
            f"{what} must be a finite number"
            + (f" ≥ {lo}" if lo is not None else "")
            + f", got {x!r}"
        )
    return f


def _shape(shape: Any, name: str) -> tuple:
    what = f"Model.param({name!r}): shape"
    valid = (
        '("n", d) input weights, ("n", "n") hidden, (k, "n") output weights, ("n",) '
        "vector-like, () or (k,) scalar-like (d, k positive ints)"
    )
    if isinstance(shape, (str, int)):
        shape = (shape,)
    if not isinstance(shape, tuple):
        raise ProgramTypeError(f"{what} must be a tuple, one of {valid}; got {shape!r}")
    out = []
    for s in shape:
        if s == WIDTH_DIM:
            out.append(WIDTH_DIM)
        elif isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1:
            out.append(int(s))
        else:
            raise ProgramValueError(f'{what} entries must be "n" or positive ints; got {shape!r}')
    ok = len(out) <= 2 and not (len(out) == 2 and WIDTH_DIM not in out)
    if not ok:
        raise ProgramValueError(f"{what} {shape!r} is not one of {valid}")
    return tuple(out)


class Model:
    """A neural network: declared parameters and a forward function in the DSL.

    Parameters
    ----------
    name : str, default "model"

    Examples
    --------
    >>> import tensorprog as tp
    >>> from tensorprog import nn
    >>> m = nn.Model("mlp")
    >>> _ = m.param("W_in", ("n", 2))
    >>> _ = m.param("W_out", (1, "n"))
    >>> @m.forward
    ... def f(p, xi):
    ...     return p.W_out @ tp.relu(p.W_in @ xi)
    >>> m
    <Model 'mlp': W_in ('n', 2) input weights, W_out (1, 'n') output weights>
    """

    def __init__(self, name: str = "model") -> None:
        if not isinstance(name, str) or not name:
            raise ProgramTypeError(f"nn.Model: name must be a non-empty str, got {name!r}")
        self.name = name
        self.params: dict[str, ParamSpec] = {}
        self.fn: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        body = ", ".join(f"{s.name} {s.shape} {s.cls.value}" for s in self.params.values())
        return f"<Model {self.name!r}: {body}>"

    def param(
        self,
        name: str,
        shape: Any,
        init_mean: float = 0.0,
        init_std: float = 1.0,
        lr_mult: float = 1.0,
    ) -> ParamSpec:
        """Declare a parameter.

        Parameters
        ----------
        name : str
            A Python identifier (the attribute of the parameter view ``p``).
        shape : tuple
            ``("n", d)`` input weights, ``("n", "n")`` hidden weights, ``(k, "n")`` output
            weights, ``("n",)`` vector-like (bias, gain), ``()`` or ``(k,)`` scalar-like.
        init_mean : float, default 0.0
            Mean of the entries (e.g. 1 for a LayerNorm gain); must be 0 for hidden weights.
        init_std : float, default 1.0
            Entries iid ``N(init_mean, init_std² · v)`` (``v`` from the parametrization);
            must be 0 for scalar-like parameters (a random finite-dim draw has no
            deterministic limit).
        lr_mult : float, default 1.0
            Multiplies the parameter's learning rate (``≥ 0``; 0 freezes it).

        Returns
        -------
        ParamSpec
        """
        if not isinstance(name, str) or not _IDENT.match(name):
            raise ProgramValueError(f"Model.param: name must be a Python identifier, got {name!r}")
        if name in self.params:
            raise ProgramValueError(f"Model.param: parameter {name!r} is already declared")
        shp = _shape(shape, name)
        cls = param_class(shp)
        what = f"Model.param({name!r})"
        mean = _number(init_mean, f"{what}: init_mean")
        std = _number(init_std, f"{what}: init_std", 0.0)
        mult = _number(lr_mult, f"{what}: lr_mult", 0.0)
        if cls is ParamClass.HIDDEN and mean != 0.0:
            raise ProgramValueError(
                f"{what}: a hidden weight must have init_mean 0 [TP5 App B] (a nonzero mean "
                f"is a rank-one matrix of norm Θ(n)), got {mean}"
            )
        if cls is ParamClass.SCALAR and std != 0.0:
            raise ProgramValueError(
                f"{what}: a scalar-like parameter must have init_std=0 (a random draw of a "
                f"finite-dimensional parameter has no deterministic limit); give its initial "
                f"value as init_mean"
            )
        spec = ParamSpec(name, shp, cls, mean, std, mult)
        self.params[name] = spec
        return spec

    def forward(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the forward function ``fn(p, xi)`` (``p``: the parameter view at
        the current step, ``xi``: one row of the inputs as a numpy array), returning the
        outputs (a Scalar or a sequence of Scalars)."""
        if not callable(fn):
            raise ProgramTypeError(f"Model.forward needs a function fn(p, xi), got {fn!r}")
        self.fn = fn
        return fn
