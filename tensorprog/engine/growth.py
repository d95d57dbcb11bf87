"""How fast a Moment's integrand can grow: a polynomial degree read off the Z-DAG.

If ``|f(g)| ≤ C (1 + |g|)^p`` over the base Gaussians ``g`` and ``f`` has no singular
set, every moment of ``f(g)`` is finite and its tail is that of ``|Z|^p``:
``P(|f| > t) ≲ exp(−c t^{2/p})`` (a Weibull tail, in the Gumbel domain: Pareto shape
``k = 0``). Monte Carlo needs no tail diagnostic for such a Moment — its replicate
standard error is as good as a Gaussian's (:mod:`.tails`) — and the Pareto fit of
every Moment was a fifth of a 100,000-sample training limit, whose Moments are almost
all inner products of relu/tanh vectors (degree ≤ 2).

The degree is propagated through the program: an initial vector or a hat ``Ẑ`` has
degree 1, ``Z = Ẑ + Σ cᵢ Z^{yᵢ}`` the largest of 1 and the ``yᵢ``'s, and a
nonlinearity's body is read with its arguments weighted by their degrees
(:func:`.existence.degree`: sums take the largest, products add, ``x^a`` multiplies by ``a``,
bounded functions are 0, anything else — ``exp``, ``1/x``, ``log``, an unknown
function — has no polynomial bound).
"""

from __future__ import annotations

import functools
from typing import Any

from ..core.ir import Moment
from ..core.nonlin import inline
from .derivation import FnNode, MatMulNode, OuterNode
from .existence import degree

__all__ = ["moment_degrees", "POLY_TAIL_DEGREE"]

#: Moments whose integrand grows at most like ``|g|^p`` with ``p`` ≤ this get no Pareto
#: fit (their tails are light: :mod:`.growth`). Degree 4 covers products of four
#: relu/linear vectors; the replicate standard error of ``Z⁴`` (kurtosis 184) over
#: replicates of thousands of samples is already that of a normal mean.
POLY_TAIL_DEGREE = 4.0


@functools.lru_cache(maxsize=8192)
def _fn_degree(fn: Any, degs: tuple[float, ...]) -> float | None:
    body = inline(fn.body)
    return degree(body, dict(zip(fn.args, degs)))


def moment_degrees(der: Any) -> dict[Any, float | None]:
    """The polynomial degree of every Moment's integrand (by output Var), or None."""
    deg: dict[Any, float | None] = {}

    def of(x: Any) -> float | None:
        return deg.get(x, 1.0)

    out: dict[Any, float | None] = {}
    for instr in der.program.instructions:
        v = instr.out
        node = der.nodes.get(v)
        if node is not None:
            if isinstance(node, MatMulNode):
                ds = [of(y) for _, y in node.dot]
                deg[v] = None if any(d is None for d in ds) else max([1.0, *ds])
            elif isinstance(node, OuterNode):
                # |ψ(r; c)| ≤ C(c)(1 + |r|)^p ⇒ |𝔼^{(1)}ψ(r; ·)| ≤ 𝔼C · (1 + |r|)^p: the
                # degree in the rows with the cols held fixed (their moments: existence)
                ds = tuple(of(a) for a in node.rows)
                deg[v] = (
                    None
                    if any(d is None for d in ds)
                    else _fn_degree(node.fn, ds + (0.0,) * len(node.cols))
                )
            elif isinstance(node, FnNode):
                ds = tuple(of(a) for a in node.args)
                deg[v] = None if any(d is None for d in ds) else _fn_degree(node.fn, ds)
            else:  # BaseNode: an initial Gaussian
                deg[v] = 1.0
        elif isinstance(instr, Moment):
            ds = tuple(of(a) for a in instr.args)
            out[v] = None if any(d is None for d in ds) else _fn_degree(instr.fn, ds)
    return out
