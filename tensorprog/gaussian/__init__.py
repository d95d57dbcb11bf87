r"""Expectations under (jointly) Gaussian laws.

Pure numerics used by the interpreters of a Tensor Program: the Master Theorem
turns every limit scalar into an expectation :math:`\mathbb E\,\phi(Z)` over a
centred or shifted Gaussian vector :math:`Z` [TP4 §7 Def 7.3]. This package computes
such expectations in three ways, one module each (it knows the nonlinearities, but
no IR, DSL or engine; the engine wires these functions to its plan):

* :mod:`tensorprog.gaussian.quadrature` -- :func:`gauss_hermite_expectation`
  (tensor-product Gauss--Hermite over a PSD factor of the covariance,
  :func:`psd_factor`), :func:`trapezoid_expectation` and :func:`panel_expectation`,
  for up to 4 Gaussians (``docs/concepts/evaluation.md``).
* :mod:`tensorprog.gaussian.moments` -- :func:`gaussian_moment`, exact moments of
  polynomials (Isserlis/Wick theorem generalised to nonzero means), numeric or
  symbolic.
* :mod:`tensorprog.gaussian.closed_forms` -- closed forms for a centred bivariate
  Gaussian (e.g. :func:`relu_relu`, :func:`erf_erf`) and one-variable means (e.g.
  :func:`mean_relu`), each registered beside its formula under the
  :class:`~tensorprog.Nonlinearity` objects it integrates (:func:`pair_closed_form`,
  :func:`mean_closed_form`) in :data:`PAIR_CLOSED_FORMS` and
  :data:`SINGLE_CLOSED_FORMS`.

Every name of the three modules is exported here. The test "is this a covariance"
(symmetric, PSD up to :data:`PSD_TOL` after :func:`equilibration`) is
:mod:`tensorprog.core.psd`, shared with the DSL.

References
----------
* [TP4] G. Yang, E. Hu, *Feature Learning in Infinite-Width Neural Networks*, 2021.
* The closed forms cite their sources (:mod:`tensorprog.gaussian.closed_forms`).
"""

from . import closed_forms, moments, quadrature
from .closed_forms import *  # noqa: F403
from .moments import *  # noqa: F403
from .quadrature import *  # noqa: F403

__all__ = [*quadrature.__all__, *moments.__all__, *closed_forms.__all__]
