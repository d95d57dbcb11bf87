"""Expectations under (jointly) Gaussian laws (being split into modules by idea)."""

from .quadrature import *  # noqa: F403
from .quadrature import MAX_QUADRATURE_DIM, PSD_TOL, __all__  # noqa: F401
