"""Neural networks built on the public DSL: parametrizations (and, soon, kernels and training)."""

from .parametrization import (
    ABC,
    MF,
    NTK,
    SP,
    Classification,
    LayerScaling,
    abc,
    classify,
    muP,
    scalings,
)

__all__ = [
    "ABC",
    "Classification",
    "LayerScaling",
    "abc",
    "classify",
    "muP",
    "SP",
    "NTK",
    "MF",
    "scalings",
]
