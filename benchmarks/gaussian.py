"""Gaussian moment benchmark: exact 𝔼 p(X) of dense polynomials (Stein recursion).

Run:  python benchmarks/gaussian.py            (a few seconds)

Times :func:`tensorprog.gaussian.gaussian_moment` on ``(x₁ + … + x₆)^d`` for a random
mean and covariance, d = 6 … 14, and checks each value against the closed form of
the moments of ``Σxᵢ ~ N(M, 1ᵀC1)`` (the test suite checks d = 12 without timing it:
``tests/test_gaussian.py::test_moment_degree_12_in_6_variables``). The docstring of
``gaussian_moment`` quotes the d = 12 time (about 0.1 s); a regression shows up here
as a time growing faster than the number of exponent tuples, C(d + 6, 6).
"""

from __future__ import annotations

import math
import time

import numpy as np
import sympy

from tensorprog import gaussian as tg


def double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2)) if k > 0 else 1


def main() -> None:
    xs = sympy.symbols("x1:7")
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 6)) * 0.4
    cov = a @ a.T
    mean = rng.normal(size=6) * 0.3
    big_m, var = float(mean.sum()), float(cov.sum())
    print(f"{'degree':>6} {'tuples':>8} {'seconds':>8} {'rel. error':>11}")
    for d in (6, 8, 10, 12, 14):
        poly = sympy.Poly(sum(xs), *xs) ** d
        start = time.perf_counter()
        got = tg.gaussian_moment(poly, xs, mean, cov)
        elapsed = time.perf_counter() - start
        ref = sum(
            math.comb(d, 2 * j) * big_m ** (d - 2 * j) * var**j * double_factorial(2 * j - 1)
            for j in range(d // 2 + 1)
        )
        print(f"{d:>6} {math.comb(d + 6, 6):>8} {elapsed:>8.3f} {abs(got - ref) / abs(ref):>11.1e}")


if __name__ == "__main__":
    main()
