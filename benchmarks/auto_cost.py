"""Cost of ``method="auto"`` against ``method="montecarlo"`` on training limits.

Run:  python benchmarks/auto_cost.py      (a few minutes on 2 cores)

``auto`` gives each expectation the most precise method that applies (exact, then
quadrature, then Monte Carlo); on training programs with LayerNorm, RMSNorm or deep
residual stacks its exact and quadrature stages used to cost 10–30× the Monte Carlo run
that followed anyway (see docs/concepts/evaluation.md §4, ``AUTO_MONTECARLO_DIM``). This
script times both methods, in one process, on the five models of the independent numpy
reference tests (``tests/test_train_reference.py``) and on a Depth-μP ``nn.resnet`` with
eight blocks, and prints how many outputs each method of ``auto`` produced and the
largest difference to Monte Carlo. Writes ``benchmarks/results/auto_cost.json``.
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys
import time

import numpy as np

from tensorprog import nn

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

import test_train_reference as reference  # noqa: E402  (the reference tests' runs)

SAMPLES = 20_000


def runs() -> dict:
    out = {name: reference.run_of(name) for name in reference.CASES}
    X = np.array([[1.0, 0.0], [0.3, 0.8]])
    Y = np.array([0.5, -0.4])
    model = nn.resnet(2, 1, depth=8, param=nn.depth_muP())
    out["resnet_depth_muP_L8"] = nn.train(model, X, Y, steps=2, optimizer=nn.SGD(0.5))
    return out


def main() -> None:
    rows = {}
    for name, run in runs().items():
        t = time.perf_counter()
        auto = run.limit(samples=SAMPLES, seed=0)
        t_auto = time.perf_counter() - t
        t = time.perf_counter()
        mc = run.limit(method="montecarlo", samples=SAMPLES, seed=0)
        t_mc = time.perf_counter() - t
        methods = collections.Counter(np.asarray(auto.method).ravel().tolist())
        diff = float(np.max(np.abs(auto.outputs - mc.outputs)))
        rows[name] = {
            "auto_s": t_auto,
            "montecarlo_s": t_mc,
            "methods": dict(methods),
            "max_diff": diff,
            "max_mc_stderr": float(np.max(mc.stderr)),
        }
        print(
            f"{name:22s} auto {t_auto:6.2f} s  montecarlo {t_mc:5.2f} s  {dict(methods)}  "
            f"max |auto − mc| {diff:.2g} (mc s.e. ≤ {np.max(mc.stderr):.1g})",
            flush=True,
        )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "auto_cost.json").write_text(json.dumps({"samples": SAMPLES, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
