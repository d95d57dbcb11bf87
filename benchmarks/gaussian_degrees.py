"""Relative errors of the Gauss-Hermite rules of DEFAULT_DEGREE (quoted in the docstring
of tensorprog.gaussian.default_degree): E[erf(u) erf(v)] (correlation 1/2) in k = 2..4
dimensions against the arcsine kernel, E tanh(sigma G)^2 against mpmath quadrature.

    PYTHONPATH=. python benchmarks/gaussian_degrees.py
"""

import mpmath as mp
import numpy as np
from scipy.special import erf

from tensorprog.gaussian import DEFAULT_DEGREE, erf_erf, gauss_hermite_expectation

for var in (1.0, 2.0):
    ref = float(erf_erf(var, 0.5 * var, var))
    for k, d in DEFAULT_DEGREE.items():
        if k < 2:
            continue
        c = np.eye(k) * var
        c[0, 1] = c[1, 0] = 0.5 * var
        v = gauss_hermite_expectation(
            lambda x: erf(x[..., 0]) * erf(x[..., 1]), np.zeros(k), c, degree=d
        )
        print(f"erf*erf var={var} k={k} degree={d}: rel err {abs(v - ref) / ref:.1e}")
mp.mp.dps = 30
for s in (1.0, 2.0):
    ref = mp.quad(
        lambda t, s=s: mp.tanh(s * t) ** 2 * mp.exp(-t * t / 2), [-mp.inf, 0, mp.inf]
    ) / mp.sqrt(2 * mp.pi)
    for d in sorted(set(DEFAULT_DEGREE.values()), reverse=True):
        v = gauss_hermite_expectation(lambda x: np.tanh(x[..., 0]) ** 2, [0.0], [[s * s]], degree=d)
        err = abs(float(v) - float(ref)) / float(ref)
        print(f"tanh^2 sigma={s} degree={d}: rel err {err:.1e}")
