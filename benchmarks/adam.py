"""Adam and SignSGD, two hidden layers, μP: the limit vs finite widths, and its cost.

Run:  python benchmarks/adam.py [--samples 50000] [--seeds 16]

The model is ``tests/reference_nets.py``'s ``mlp2`` (``f = W_out tanh(W_hid tanh(W_in ξ))``,
2 inputs, 2 outputs, the hidden weight with ``lr_mult = 0.5``), B = 2, mse, 2 steps,
lr = 0.2, ε = 0.3, Adam betas (0.9, 0.99). For each optimizer:

* ``run.limit(method="montecarlo", samples=…)`` — every ``ΔW x`` is a nonlinear outer
  product (``tp.outer_nonlin``, [TP4b Def 2.6.1]);
* the independent numpy network (``reference_nets.train_entrywise``, fresh draws) at
  ``n = 512, 1024, 2048, 4096`` with ``--seeds`` seeds each, seed means extrapolated in
  ``1/n`` by weighted least squares (``tests/test_train_reference.extrapolate``); the
  limit must agree within 4 combined standard errors;
* time: the limit vs one ``run.simulate(4096)`` (tensorprog's exact finite width, ``n²``
  evaluations of ψ per OuterNonlin) and one numpy network at ``n = 4096``, wall and CPU
  time in this process (the machine may be shared: ratios in one process are the measure);
  accuracy: the limit's standard error vs the distance of one ``n = 4096`` network from the
  limit (its finite-width fluctuation).

Writes ``benchmarks/results/adam.json``.

Operator regime (``--operator``): the same model under NTP with Adam (TP4b §2.4), B = 2,
3 steps, lr = 0.3 — ``tests/test_operator_regime.py``'s run at larger scale: the centred
``K_Q`` recursion (``run.limit``) against the independent numpy Adam network trained on
``f − f_0`` at ``n = 512 … 4096`` (``--seeds`` seeds each), extrapolated in ``1/n``; the
time of the limit vs one numpy network at ``n = 4096``. Writes
``benchmarks/results/adam_operator.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

import reference_nets as ref  # noqa: E402
from test_train_reference import extrapolate, tp_model  # noqa: E402

from tensorprog import nn  # noqa: E402

OUT = HERE / "results"
X = np.random.default_rng(12).standard_normal((2, 2))
Y = np.array([[1.0, -0.5], [-0.5, 0.5]])
LR, EPS, BETAS, STEPS = 0.2, 0.3, (0.9, 0.99), 2
WIDTHS = (512, 1024, 2048, 4096)


def optimizer(rule: str):
    return nn.Adam(LR, betas=BETAS, eps=EPS) if rule == "adam" else nn.SignSGD(LR, eps=EPS)


def numpy_run(rule: str, n: int, rng: np.random.Generator) -> np.ndarray:
    model = ref.mlp2()
    P0 = ref.init_params(model.specs, n, rng)
    lrs, epss = ref.adam_settings(model.specs, n, LR, EPS)
    outs, _ = ref.train_entrywise(
        model, P0, lrs, epss, X, Y, loss="mse", steps=STEPS, rule=rule, betas=BETAS
    )
    return outs.ravel()


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def one(rule: str, samples: int, seeds: int) -> dict:
    run = nn.train(tp_model(ref.mlp2()), X, Y, steps=STEPS, optimizer=optimizer(rule))
    lim, t_lim, c_lim = timed(lambda: run.limit(method="montecarlo", samples=samples, seed=0))
    got = np.asarray(lim.outputs, float).ravel()
    err = np.asarray(lim.stderr, float).ravel()
    sim, t_sim, c_sim = timed(lambda: run.simulate(4096, seed=1))
    one_np, t_np, c_np = timed(lambda: numpy_run(rule, 4096, np.random.default_rng([4096, 999])))
    runs = []
    for n in WIDTHS:
        runs.append(
            np.array([numpy_run(rule, n, np.random.default_rng([n, s])) for s in range(seeds)])
        )
    a, se = extrapolate(WIDTHS, runs)
    z = np.abs(got - a) / np.sqrt(se**2 + err**2 + 1e-24)
    sim_out = np.asarray(sim.outputs, float).ravel()
    return {
        "limit": got.tolist(),
        "limit_stderr": err.tolist(),
        "extrapolated": a.tolist(),
        "extrapolated_se": se.tolist(),
        "max_abs_z": float(z.max()),
        "within_4_se": bool(z.max() < 4),
        "moved_by": float(np.abs(got.reshape(STEPS + 1, -1)[-1]).max()),
        "time_s": {
            "limit_wall": t_lim,
            "limit_cpu": c_lim,
            "simulate_4096_wall": t_sim,
            "simulate_4096_cpu": c_sim,
            "numpy_4096_wall": t_np,
            "numpy_4096_cpu": c_np,
        },
        "cpu_ratio_limit_over_simulate_4096": c_lim / c_sim,
        "accuracy": {
            "limit_max_stderr": float(err.max()),
            "one_simulate_4096_max_abs_dev_from_limit": float(np.abs(sim_out - got).max()),
            "seed_std_at_4096_max": float(runs[-1].std(axis=0, ddof=1).max()),
        },
    }


def operator_regime(samples: int, seeds: int) -> dict:
    """NTP with Adam: the K_Q limit vs centred numpy networks (module docstring)."""
    import test_operator_regime as opr

    run = opr.adam_run()
    lim, t_lim, c_lim = timed(lambda: run.limit(samples=samples, seed=0))
    got = np.asarray(lim.outputs, float)[1:].ravel()
    err = np.asarray(lim.stderr, float)[1:].ravel()
    _, t_np, c_np = timed(
        lambda: opr.centred_adam(opr.ntp_init(4096, np.random.default_rng(9)), 4096)
    )
    runs = []
    for n in WIDTHS:
        vals = [
            opr.centred_adam(opr.ntp_init(n, np.random.default_rng([n, s, 77])), n)[1:].ravel()
            for s in range(seeds)
        ]
        runs.append(np.array(vals))
    a, se = extrapolate(WIDTHS, runs)
    z = np.abs(got - a) / np.sqrt(se**2 + err**2)
    return {
        "setup": {
            "model": "mlp2 under nn.NTK() with nn.Adam(0.3, (0.9, 0.99), 0.3)",
            "B": 2,
            "steps": opr.STEPS,
            "widths": WIDTHS,
            "seeds": seeds,
            "samples": samples,
        },
        "limit": got.tolist(),
        "limit_stderr": err.tolist(),
        "extrapolated": a.tolist(),
        "extrapolated_se": se.tolist(),
        "seed_means_4096": runs[-1].mean(axis=0).tolist(),
        "max_abs_z": float(z.max()),
        "within_4_se": bool(z.max() < 4),
        "time_s": {"limit_wall": t_lim, "limit_cpu": c_lim, "numpy_4096_wall": t_np,
                   "numpy_4096_cpu": c_np},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--operator", action="store_true", help="the NTP operator-regime section")
    args = ap.parse_args()
    if args.operator:
        res = operator_regime(args.samples, args.seeds)
        print(json.dumps(res, indent=1), flush=True)
        OUT.mkdir(exist_ok=True)
        (OUT / "adam_operator.json").write_text(json.dumps(res, indent=2))
        return
    res = {
        "setup": {
            "model": "mlp2 (tanh, 2 hidden layers, W_hid lr_mult 0.5)",
            "B": 2,
            "steps": STEPS,
            "lr": LR,
            "eps": EPS,
            "betas": BETAS,
            "widths": WIDTHS,
            "seeds": args.seeds,
            "samples": args.samples,
        }
    }
    for rule in ("adam", "sign"):
        res[rule] = one(rule, args.samples, args.seeds)
        print(rule, json.dumps(res[rule], indent=1), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "adam.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
