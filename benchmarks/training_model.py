"""The training benchmark's model written with ``nn.Model`` + ``nn.train`` vs ``nn.train_sgd``.

``nn.train_sgd`` is now itself a user of ``nn.train`` (issue #15 point 4); the results file
predates that change (its ``train_sgd`` column is the former hand-written unroll; the change
itself is measured by ``benchmarks/train_sgd_thin.py``).

Run:  python benchmarks/training_model.py [--repeats 5]

The model of ``benchmarks/training.py`` (``build()``: 2-hidden-layer ReLU μP network,
B = 3, 8 SGD steps, lr = 1) written as an ``nn.Model`` under ``nn.muP()`` (TP4's input
columns have variance σ² = 1; TP5 Table 3's input variance is ``init_std²/d``, so
``init_std = √d``). In one process: program sizes; the default Monte Carlo limit's wall
time, alternating the two runs, medians over ``--repeats`` seeds (after one untimed call
each), wall and CPU time (the machine may be shared: CPU time of this process is the
steadier measure); and the two limits' agreement in units of their combined standard
error.

Writes ``benchmarks/results/training_model.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from training import X, Y, build  # noqa: E402

import tensorprog as tp  # noqa: E402
from tensorprog import nn  # noqa: E402
from tensorprog.core.ir import MatMul, Moment, Nonlin, ScalarFn  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results"


def model_run(T: int = 8, B: int = 3) -> nn.TrainRun:
    m = nn.Model("mlp2")
    m.param("W_in", ("n", 2), init_std=np.sqrt(2))
    m.param("W_2", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ tp.relu(p.W_2 @ tp.relu(p.W_in @ xi))

    return nn.train(m, X[:B], Y[:B], steps=T, optimizer=nn.SGD(1.0), param=nn.muP())


def size(program: tp.Program) -> dict:
    ins = program.instructions
    return {
        "instructions": len(ins),
        "matmuls": sum(isinstance(i, MatMul) for i in ins),
        "moments": sum(isinstance(i, Moment) for i in ins),
        "nonlins": sum(isinstance(i, Nonlin) for i in ins),
        "scalar_fns": sum(isinstance(i, ScalarFn) for i in ins),
    }


def requests(program: tp.Program) -> int:
    """The number of expectations the limit evaluates (the plan's requests)."""
    from tensorprog.engine.derivation import Derivation
    from tensorprog.engine.plan import Plan

    return len(Plan(Derivation(program), symbolic=False).requests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    sgd = build()
    t_build_sgd = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = model_run()
    t_build_model = time.perf_counter() - t0
    sgd.limit(seed=100)  # warm (sympy compilation)
    run.limit(seed=100)
    times: dict[str, list[float]] = {"train_sgd": [], "nn.train": []}
    cpu: dict[str, list[float]] = {"train_sgd": [], "nn.train": []}
    lims = {}
    for seed in range(args.repeats):
        for key, r in (("train_sgd", sgd), ("nn.train", run)):
            t0, c0 = time.perf_counter(), time.process_time()
            lim = r.limit(seed=seed)
            times[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
            lims[key] = lim
    a, b = lims["train_sgd"], lims["nn.train"]
    se = np.sqrt(a.stderr**2 + b.stderr[..., 0] ** 2)
    z = np.abs(a.outputs - b.outputs[..., 0])[se > 0] / se[se > 0]  # t = 0: both exactly 0
    res = {
        "size": {"train_sgd": size(sgd.program), "nn.train": size(run.program)},
        "limit_requests": {"train_sgd": requests(sgd.program), "nn.train": requests(run.program)},
        "build_s": {"train_sgd": t_build_sgd, "nn.train": t_build_model},
        "limit_s": times,
        "limit_median_s": {k: float(np.median(v)) for k, v in times.items()},
        "ratio_median": float(np.median(times["nn.train"]) / np.median(times["train_sgd"])),
        "limit_cpu_median_s": {k: float(np.median(v)) for k, v in cpu.items()},
        "cpu_ratio_median": float(np.median(cpu["nn.train"]) / np.median(cpu["train_sgd"])),
        "max_abs_z": float(z.max()),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "training_model.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
