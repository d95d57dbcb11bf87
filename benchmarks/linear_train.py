"""Exact limits of a linear network's training by ``nn.train``: time and methods per T.

Run:  python benchmarks/linear_train.py [--ntk] [T ...]      (default T = 3 5 8 12; seconds)

Default: the linear one-hidden-layer μP network (φ = identity, d = 2, B = 3, mse, lr 0.5)
of ``tests/test_training.py::test_linear_muP_is_exact``, written with ``nn.Model`` and
trained by ``nn.train`` for T steps. Prints, per T, the time of ``run.limit()``, how many
outputs each method produced, and the largest difference to the A,B,C,D recursion of
the test (exact outputs agree to rounding; Monte Carlo ones to their standard errors).
Every integrand is a polynomial in three Gaussians whose expression tree doubles at
each step (docs/concepts/evaluation.md §4): before the linear forms of
``tensorprog.engine.exact`` and the DAG placement of the derivation, steps ≥ 4 went to
Monte Carlo and a forced exact walk of the tree took 39 s at T = 8.

``--ntk``: the same network under NTK(1) through ``nn.train_sgd`` — notebook 05's
T = 30 cell: a centred kernel-regime run, whose unroll carries the changes
``(φ(h₀+θΔh) − φ(h₀))/θ`` and records the feature kernels (O(T²B²) Moments of affine
forms sharing one DAG). Prints the build and limit times and the largest difference to
kernel gradient descent ``f_{t+1} = f_t − η Θ (f_t − y)/B`` with the linear network's
NTK ``Θ = 2 X Xᵀ`` (both layers' contributions, unit variances [TP4 App H.4.1]).
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


def kernel_descent(X: np.ndarray, Y: np.ndarray, lr: float, T: int) -> np.ndarray:
    """``f_t`` on the training inputs under ``f ← f − η Θ (f − y)/B``, ``Θ = 2XXᵀ``, ``f_0 = 0``."""
    theta = 2.0 * X @ X.T
    f = np.zeros(len(X))
    out = [f]
    for _ in range(T):
        f = f - lr * theta @ (f - Y) / len(X)
        out.append(f)
    return np.array(out)


def main(Ts: list[int], ntk: bool = False) -> None:
    for T in Ts:
        t0 = time.perf_counter()
        if ntk:
            net = nn.MLP(d_in=2, depth=1, nonlin="identity", param=nn.NTK(1))
            run = nn.train_sgd(net, X3, Y3, lr=0.5, steps=T)
            ref = kernel_descent(X3, Y3, 0.5, T)
        else:
            run = run_of(T)
            ref = abcd_linear(X3, Y3, 0.5, T)
        t = time.perf_counter()
        lim = run.limit(seed=0)
        dt = time.perf_counter() - t
        methods = dict(collections.Counter(np.asarray(lim.method).ravel().tolist()))
        out = np.asarray(lim.outputs).reshape(T + 1, -1)
        diff = np.abs(out - ref).max()
        print(
            f"T={T:3d}  build {t - t0:5.2f} s  limit {dt:7.2f} s  {methods}  "
            f"max |f - {'kernel GD' if ntk else 'ABCD'}| = {diff:.2e}",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main([int(a) for a in args if a != "--ntk"] or [3, 5, 8, 12], ntk="--ntk" in args)
