"""How a limit scalar is evaluated: the :class:`Method` enum.

The public API takes and returns the plain strings (``p.limit(method="exact")``,
``lim.method(k) == "exact"``); inside the engine every method is a :class:`Method`
member, compared by identity. Being a ``str``, a member equals its string.
"""

from __future__ import annotations

import enum

__all__ = [
    "Method",
    "AUTO",
    "EXACT",
    "QUADRATURE",
    "MONTECARLO",
    "FACTORISED",
    "DIRECT",
    "REQUESTABLE",
    "RESULT_METHODS",
    "RANK",
]


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
    def reported(self) -> Method:
        """The method a result reports (``exact``, ``quadrature`` or ``montecarlo``)."""
        return RESULT_METHODS[RANK[self]]


#: The members as module constants: a module global is read ~20× faster than a member
#: through its class (``Method.EXACT``) on Python 3.11, and the evaluator's loops
#: compare methods per request.
AUTO, EXACT, QUADRATURE = Method.AUTO, Method.EXACT, Method.QUADRATURE
MONTECARLO, FACTORISED, DIRECT = Method.MONTECARLO, Method.FACTORISED, Method.DIRECT

#: Precision order of a result by the method that produced it (the planned methods
#: included): 0 exact, 1 quadrature, 2 Monte Carlo.
RANK = {EXACT: 0, DIRECT: 0, QUADRATURE: 1, FACTORISED: 1, MONTECARLO: 2}

#: The methods :func:`tensorprog.limit` accepts.
REQUESTABLE = (Method.AUTO, Method.EXACT, Method.QUADRATURE, Method.MONTECARLO)
#: The methods a result reports, by :data:`RANK`.
RESULT_METHODS = (Method.EXACT, Method.QUADRATURE, Method.MONTECARLO)
