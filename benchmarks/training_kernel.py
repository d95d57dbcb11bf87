"""Kernel-regime runs: ``nn.train`` (centred generically) vs ``nn.train_sgd`` (hand-written).

``nn.train_sgd`` is now itself a user of ``nn.train`` (issue #15 point 4): this compares a
model written by hand with ``train_sgd``'s own; ``results/training_kernel.json`` predates
that change (its ``train_sgd`` column is the former hand-written unroll; the change itself is
measured by ``benchmarks/train_sgd_thin.py``).

Run:  python benchmarks/training_kernel.py [--repeats 5]

The same MLP (no biases, TP4 input variance σ² = 1, so the model's ``W_in`` has
``init_std = 1`` under an ``nn.ABC``) under NTK(L) and SP(L, c=1), B = 3 inputs, lr 0.5,
compiled by both. In one process: program sizes (instructions, MatMuls, Moments); the
Monte Carlo limit (100,000 samples), alternating the two runs, medians over
``--repeats`` seeds of wall and CPU time (the machine may be shared: CPU time of this
process is the steadier measure); and the largest difference of the two limits in units
of their combined standard error (on the same seed the two programs draw the same
Gaussians, so it is ~0 when they are the same computation).

Writes ``benchmarks/results/training_kernel.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from training_model import size  # noqa: E402

import tensorprog as tp  # noqa: E402
from tensorprog import nn  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results"
X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])
Y = np.array([0.5, -0.3, 0.8])
PHI = {"relu": tp.relu, "tanh": tp.tanh}
CONFIGS = [("relu", "NTK", 2, 3), ("tanh", "SP(c=1)", 2, 3), ("relu", "NTK", 3, 2)]


def param(name: str, depth: int) -> nn.ABC:
    return nn.NTK(depth) if name == "NTK" else nn.SP(depth, c=1)


def model(depth: int, phi) -> nn.Model:
    m = nn.Model(f"mlp{depth}")
    m.param("W_in", ("n", 2))
    for ell in range(2, depth + 1):
        m.param(f"W{ell}", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        x = phi(p.W_in @ xi)
        for ell in range(2, depth + 1):
            x = phi(getattr(p, f"W{ell}") @ x)
        return p.W_out @ x

    return m


def compare(phi: str, pname: str, depth: int, steps: int, repeats: int) -> dict:
    sgd = nn.train_sgd(
        nn.MLP(2, depth, phi, param(pname, depth)),
        X,
        Y,
        lr=0.5,
        steps=steps,
        feature_kernels=False,
    )
    run = nn.train(
        model(depth, PHI[phi]), X, Y, steps=steps, optimizer=nn.SGD(0.5), param=param(pname, depth)
    )
    kw = {"method": "montecarlo", "samples": 100_000}
    sgd.limit(seed=100, **kw)  # warm (sympy compilation)
    run.limit(seed=100, **kw)
    wall: dict[str, list[float]] = {"train_sgd": [], "nn.train": []}
    cpu: dict[str, list[float]] = {"train_sgd": [], "nn.train": []}
    z = 0.0
    for seed in range(repeats):
        lims = {}
        for key, r in (("train_sgd", sgd), ("nn.train", run)):
            t0, c0 = time.perf_counter(), time.process_time()
            lims[key] = r.limit(seed=seed, **kw)
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
        a, b = lims["train_sgd"], lims["nn.train"]
        se = np.hypot(a.stderr, b.stderr[..., 0])
        diff = np.abs(a.outputs - b.outputs[..., 0])
        z = max(z, float((diff[se > 0] / se[se > 0]).max()))
    med = {k: float(np.median(v)) for k, v in wall.items()}
    cmed = {k: float(np.median(v)) for k, v in cpu.items()}
    return {
        "config": f"{phi}, {pname}, L={depth}, B={len(X)}, T={steps}, lr=0.5",
        "center": run.center,
        "size": {"train_sgd": size(sgd.program), "nn.train": size(run.program)},
        "limit_median_s": med,
        "ratio_median": med["nn.train"] / med["train_sgd"],
        "limit_cpu_median_s": cmed,
        "cpu_ratio_median": cmed["nn.train"] / cmed["train_sgd"],
        "max_abs_z": z,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    res = [compare(*c, args.repeats) for c in CONFIGS]
    OUT.mkdir(exist_ok=True)
    (OUT / "training_kernel.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
