"""How a limit scalar is evaluated: the :class:`Method` enum.

The public API takes and returns the plain strings (``p.limit(method="exact")``,
``lim.method(k) == "exact"``); inside the engine every method is a :class:`Method`
member, compared by identity. Being a ``str``, a member equals its string.
"""

from __future__ import annotations

import enum

__all__ = ["Method", "REQUESTABLE", "RESULT_METHODS"]


class Method(str, enum.Enum):
    """An evaluation method of the engine."""

    #: per expectation, the best that applies (a requested method only)
    AUTO = "auto"
    #: Wick polynomials and registered closed forms; no error
    EXACT = "exact"
    #: deterministic quadrature (trapezoid, panel, Gauss–Hermite rules)
    QUADRATURE = "quadrature"
    #: sampled from the limit's Z distribution (with a standard error)
    MONTECARLO = "montecarlo"
    #: products of independent blocks, each exact or by quadrature (planned only)
    FACTORISED = "factorised"
    #: computed from other limit scalars without an expectation (planned only:
    #: initial scalars, scalar functions, Stein's lemma solves)
    DIRECT = "direct"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def rank(self) -> int:
        """Precision order of a result: 0 exact, 1 quadrature, 2 Monte Carlo."""
        return _RANK[self]

    @property
    def reported(self) -> Method:
        """The method a result reports (``exact``, ``quadrature`` or ``montecarlo``)."""
        return RESULT_METHODS[_RANK[self]]


_RANK = {Method.EXACT: 0, Method.DIRECT: 0, Method.QUADRATURE: 1, Method.FACTORISED: 1,
         Method.MONTECARLO: 2}

#: The methods :func:`tensorprog.limit` accepts.
REQUESTABLE = (Method.AUTO, Method.EXACT, Method.QUADRATURE, Method.MONTECARLO)
#: The methods a result reports, by :attr:`Method.rank`.
RESULT_METHODS = (Method.EXACT, Method.QUADRATURE, Method.MONTECARLO)

