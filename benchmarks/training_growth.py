"""Growth of a training unroll's limit with the steps T, the batch B and the depth L.

Run:  python benchmarks/training_growth.py --trees base=/tmp/base-tg new=.   (≈ 30 min)
      python benchmarks/training_growth.py --config 8 3 2                 (one row, JSON)

The model is that of ``benchmarks/training_model.py`` — a ReLU μP network (an
``nn.Model``, here written with ``stax``) trained by ``nn.train`` (SGD, lr = 1) on the
first B inputs of ``training.X`` (two more inputs for B = 6) — with L hidden layers. The limit is ``run.limit(samples=100_000)``, the default (``auto``) method.

Every row runs in a fresh process (``--config T B L``): the program's size
(instructions, Moments, the plan's requests), the build time, the first limit call
(sympy's compilation included: what a user waits for), then one more time each phase
of ``Program.limit`` (derivation, plan, deterministic pass, Monte Carlo passes).

With ``--trees name=path …`` the grid — T ∈ {2, 4, 8, 16, 24} (B = 3, L = 2),
B ∈ {1, 2, 3, 6} (T = 8, L = 2), L ∈ {1, 2, 3} (T = 8, B = 3) — runs under each
source tree (``PYTHONPATH``) in turn, row by row and ``--repeats`` times (medians), so
that the trees see the same machine state (the row (8, 3, 2) is measured once for the
three axes); then

* growth exponents: least-squares slopes of log(quantity) against log(T), log(B),
  log(L) over each axis (T ≥ 4, B ≥ 1, L ≥ 1) and over its last three points;
* the targets: the limit of T = 8 and T = 24 (B = 3, L = 2) against one simulation at
  n = 4096 of the same run, timed alternately in one process (medians of
  ``--repeats``), and at T = 8 the RMS error over 5 seeds of each against a reference
  limit of 2^20 samples;
* the largest T (B = 3, L = 2) whose build and first limit finish within 2 minutes in a
  fresh process, per tree (T = 24, 32, 40, … or from ``--budget-start``, until one
  does not).

The target row T = 24 runs ``--repeats`` times per tree, the others
``--grid-repeats`` times (default once: the exponents come from a whole axis).

Writes ``benchmarks/results/training_growth.json``; the machine's load average is
recorded with every row (the machine may be shared: compare trees within a run).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "results"
GRID = (
    [("T", (T, 3, 2)) for T in (2, 4, 8, 16, 24)]
    + [("B", (8, B, 2)) for B in (1, 2, 3, 6)]
    + [("L", (8, 3, L)) for L in (1, 2, 3)]
)
SAMPLES = 100_000
BUDGET_S = 120.0


def model_run(T: int, B: int, L: int):
    """``nn.train`` of an L-hidden-layer ReLU μP network, B inputs, T SGD steps (the
    model of ``training_model.py`` for L = 2, written with ``stax``: the same program)."""
    sys.path.insert(0, str(HERE))
    from training import X, Y

    from tensorprog import nn
    from tensorprog.nn import stax

    X6 = np.vstack([X, [[-0.9, 0.4], [0.5, -0.6]]])
    Y6 = np.concatenate([Y, [0.2, -0.7]])
    hidden = [stax.Dense(1.0), stax.Relu()] * (L - 1)
    net = stax.serial(stax.Dense(np.sqrt(2)), stax.Relu(), *hidden, stax.Dense(1.0))
    return nn.train(net.model(2), X6[:B], Y6[:B], steps=T, optimizer=nn.SGD(1.0), param=nn.muP())


def config(T: int, B: int, L: int) -> dict:
    """One row, in this process (see the module docstring)."""
    from tensorprog.core._gc import paused_gc
    from tensorprog.core.ir import Moment
    from tensorprog.engine.derivation import Derivation
    from tensorprog.engine.evaluate import Deterministic
    from tensorprog.engine.methods import Method
    from tensorprog.engine.montecarlo import run_montecarlo
    from tensorprog.engine.plan import Plan
    from tensorprog.nn import stax  # noqa: F401  (the import is not part of the build)

    t0 = time.perf_counter()
    run = model_run(T, B, L)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    lim = run.limit(samples=SAMPLES, seed=0)
    t_first = time.perf_counter() - t0
    p = run.program
    with paused_gc():
        t0 = time.perf_counter()
        der = Derivation(p)
        t1 = time.perf_counter()
        plan = Plan(der)
        t2 = time.perf_counter()
        det = Deterministic(plan, Method.AUTO)
        det.run()
        t3 = time.perf_counter()
        if det.needs_montecarlo:
            run_montecarlo(plan, SAMPLES, 0)
        t4 = time.perf_counter()
    return {
        "T": T,
        "B": B,
        "L": L,
        "instructions": len(p.instructions),
        "moments": sum(isinstance(i, Moment) for i in p.instructions),
        "requests": len(plan.requests),
        "build_s": t_build,
        "limit_first_s": t_first,
        "derivation_s": t1 - t0,
        "plan_s": t2 - t1,
        "deterministic_s": t3 - t2,
        "montecarlo_s": t4 - t3,
        "output_last": float(np.ravel(lim.outputs)[-1]),
        "load": os.getloadavg()[0],
    }


def budget_run(T: int) -> dict:
    """Build and first limit of T steps (B = 3, L = 2), in this process."""
    t0 = time.perf_counter()
    run = model_run(T, 3, 2)
    run.limit(samples=SAMPLES, seed=0)
    return {"T": T, "seconds": time.perf_counter() - t0, "load": os.getloadavg()[0]}


def targets(repeats: int) -> dict:
    """Limit vs one n = 4096 simulation at T = 8 and 24 (B = 3, L = 2), in this process."""
    res: dict = {}
    for T in (8, 24):
        run = model_run(T, 3, 2)
        run.limit(samples=SAMPLES, seed=100)  # warm (sympy compilation)
        run.simulate(4096, seed=100)
        t_lim, t_sim = [], []
        for s in range(repeats):
            t0 = time.perf_counter()
            run.limit(samples=SAMPLES, seed=s)
            t_lim.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run.simulate(4096, seed=s)
            t_sim.append(time.perf_counter() - t0)
        row = {
            "limit_s": float(np.median(t_lim)),
            "sim_4096_s": float(np.median(t_sim)),
            "ratio_limit_over_sim": float(np.median(t_lim) / np.median(t_sim)),
            "load": os.getloadavg()[0],
        }
        if T == 8:
            ref = run.limit(samples=2**20, seed=99)
            ref_out = np.ravel(ref.outputs)
            lims = [np.ravel(run.limit(samples=SAMPLES, seed=10 + s).outputs) for s in range(5)]
            sims = [np.ravel(run.simulate(4096, seed=10 + s).outputs) for s in range(5)]

            row.update(
                reference_max_stderr=float(np.max(ref.stderr)),
                limit_rms_error=rms(lims, ref_out),
                sim_rms_error=rms(sims, ref_out),
                accuracy_ratio=rms(sims, ref_out) / rms(lims, ref_out),
            )
        res[f"T{T}"] = row
    return res


def rms(vals: list, ref: np.ndarray) -> float:
    """Root mean square error of ``vals`` against ``ref`` (over values and entries)."""
    return float(np.sqrt(np.mean([(v - ref) ** 2 for v in vals])))


def _child(tree: str, args: list[str], timeout: float | None = None) -> dict | None:
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(tree).resolve()))
    try:
        out = subprocess.run(
            [sys.executable, __file__, *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def slopes(rows: list[dict], axis: str, keys: list[str]) -> dict:
    """Least-squares log-log slopes of ``keys`` against ``axis``: all points, last three."""
    xs = np.log([r[axis] for r in rows])
    out = {}
    for k in keys:
        ys = np.log([max(r[k], 1e-6) for r in rows])
        out[k] = {
            "all": float(np.polyfit(xs, ys, 1)[0]),
            "last3": float(np.polyfit(xs[-3:], ys[-3:], 1)[0]),
        }
    return out


QUANTITIES = [
    "instructions",
    "moments",
    "requests",
    "build_s",
    "derivation_s",
    "plan_s",
    "deterministic_s",
    "montecarlo_s",
    "limit_first_s",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", nargs=3, type=int, metavar=("T", "B", "L"))
    ap.add_argument("--budget", type=int, metavar="T")
    ap.add_argument("--targets", action="store_true")
    ap.add_argument("--trees", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--grid-repeats",
        type=int,
        default=1,
        help="repeats of the grid rows other than the target T = 24, B = 3, L = 2",
    )
    ap.add_argument(
        "--budget-start",
        nargs="*",
        default=[],
        metavar="NAME=T",
        help="first T of the 2-minute search per tree (default 24)",
    )
    ap.add_argument("--target-trees", nargs="*", default=[], help="trees of the targets")
    ap.add_argument("--skip", nargs="*", default=[], choices=["grid", "targets", "budget"])
    args = ap.parse_args()
    if args.config:
        print(json.dumps(config(*args.config)))
        return
    if args.budget:
        print(json.dumps(budget_run(args.budget)))
        return
    if args.targets:
        print(json.dumps(targets(args.repeats)))
        return
    trees = dict(t.split("=", 1) for t in args.trees or ["current=."])
    path = OUT / "training_growth.json"
    res: dict = json.loads(path.read_text()) if path.exists() else {}
    res["trees"] = {k: str(pathlib.Path(v).resolve()) for k, v in trees.items()}
    if "grid" not in args.skip:
        rows: dict[str, list[dict]] = {name: [] for name in trees}
        done: dict[tuple, dict[str, list[dict]]] = {}  # (8, 3, 2) is on every axis
        for axis, cfg in GRID:
            reps = done.get(cfg)
            if reps is None:
                reps = done[cfg] = {name: [] for name in trees}
                n = args.repeats if cfg == (24, 3, 2) else args.grid_repeats
                for _ in range(n):
                    for name, tree in trees.items():
                        reps[name].append(_child(tree, ["--config", *map(str, cfg)]))
            for name in trees:
                med = {
                    k: float(np.median([r[k] for r in reps[name]]))
                    for k in reps[name][0]
                    if k.endswith("_s") or k == "load"
                }
                row = {**reps[name][0], **med, "axis": axis, "repeats": len(reps[name])}
                rows[name].append(row)
                print(name, json.dumps(row), flush=True)
        res["grid"] = rows
        res["exponents"] = {
            name: {
                axis: slopes(
                    [r for r in rs if r["axis"] == axis and (axis != "T" or r["T"] >= 4)],
                    axis,
                    QUANTITIES,
                )
                for axis in ("T", "B", "L")
            }
            for name, rs in rows.items()
        }
    if "targets" not in args.skip:
        res["targets"] = {}
        for name, tree in trees.items():
            if args.target_trees and name not in args.target_trees:
                continue
            res["targets"][name] = _child(tree, ["--targets", "--repeats", str(args.repeats)])
            print(name, json.dumps(res["targets"][name]), flush=True)
    if "budget" not in args.skip:
        res["budget_2min"] = {}
        start = {k: int(v) for k, v in (b.split("=") for b in args.budget_start)}
        for name, tree in trees.items():
            tried = []
            for T in range(start.get(name, 24), 200, 8):
                r = _child(tree, ["--budget", str(T)], timeout=BUDGET_S)
                tried.append(r if r is not None else {"T": T, "seconds": None})
                print(name, json.dumps(tried[-1]), flush=True)
                if r is None or r["seconds"] > BUDGET_S:
                    break
            ok = [t["T"] for t in tried if t["seconds"] is not None and t["seconds"] <= BUDGET_S]
            res["budget_2min"][name] = {"largest_T": max(ok, default=None), "tried": tried}
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
