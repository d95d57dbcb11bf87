"""Exact limits of a linear network's training by ``nn.train``: time and methods per T.

Run:  python benchmarks/linear_train.py [T ...]      (default T = 3 5 8 12; seconds)

The linear one-hidden-layer μP network (φ = identity, d = 2, B = 3, mse, lr 0.5) of
``tests/test_training.py::test_linear_muP_is_exact``, written with ``nn.Model`` and
trained by ``nn.train`` for T steps. Prints, per T, the time of ``run.limit()``, how many
outputs each method produced, and the largest difference to the A,B,C,D recursion of
the test (exact outputs agree to rounding; Monte Carlo ones to their standard errors).
Every integrand is a polynomial in three Gaussians whose expression tree doubles at
each step (docs/concepts/evaluation.md §4): before the linear forms of
``tensorprog.engine.exact`` and the DAG placement of the derivation, steps ≥ 4 went to
Monte Carlo and a forced exact walk of the tree took 39 s at T = 8.
"""

from __future__ import annotations

import collections
import pathlib
import sys
import time

import numpy as np

from tensorprog import nn

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_training import X3, Y3, abcd_linear  # noqa: E402  (the test's recursion)


def run_of(T: int):
    m = nn.Model("linear")
    m.param("W_in", ("n", 2), init_std=np.sqrt(2))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ (p.W_in @ xi)

    return nn.train(m, X3, Y3, steps=T, optimizer=nn.SGD(0.5), param=nn.muP())


def main(Ts: list[int]) -> None:
    for T in Ts:
        run = run_of(T)
        t = time.perf_counter()
        lim = run.limit(seed=0)
        dt = time.perf_counter() - t
        methods = dict(collections.Counter(np.asarray(lim.method).ravel().tolist()))
        diff = np.abs(lim.outputs[..., 0] - abcd_linear(X3, Y3, 0.5, T)).max()
        print(f"T={T:3d}  limit {dt:7.2f} s  {methods}  max |f - ABCD| = {diff:.2e}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 5, 8, 12])
