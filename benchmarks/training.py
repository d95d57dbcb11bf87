"""Training benchmark: cost and accuracy of ``nn.train_sgd`` limits vs finite width.

Run:  python benchmarks/training.py [--quick]      (about 6 minutes on 2 cores; --quick ≈ 1)

Writes ``benchmarks/results/training.json`` and prints three tables.

1. **Target.** 2-hidden-layer ReLU μP network, B = 3, 8 SGD steps: the Monte Carlo
   limit at 100,000 samples vs ONE finite-width simulation of the same run at
   n = 4096 — wall time (warm: medians over seeds after one untimed call each; and in
   fresh processes, where sympy's compilation and first-touch memory count), and error
   against a reference limit (randomised QMC with 2^18 samples). The target is: MC
   faster than one simulation and ~6× more accurate.
2. **Where the time goes** in one warm MC limit (derivation, plan, Monte Carlo passes).
3. **Scaling** of program size, time and error with steps T, batch B, depth L, and
   Monte Carlo samples.

Complexity (unrolled program, L hidden layers, B training inputs, T steps):

* program: O(T·B·L) vectors and MatMuls (only the initial matrices enter MatMul),
  O(T²·B²·L) Moments (the coefficients ⟨x_s, x_t⟩, ⟨dh_s, dh_t⟩ of the rank-B update
  corrections), Nonlin arities O(t·B) at step t, i.e. O(T²·B²·L) total work per sample;
* finite width n: O(L·n²) to sample, O(T·B·L·n²) for the MatMuls, O(T²·B²·L·n) for
  Nonlins/Moments; memory (L−1)·n² + O(T·B·L·n);
* Monte Carlo limit with M samples: O(T²·B²·L·M) for Nonlins/Moments; per MatMul, the
  conditional draw of its hat and the Ż regression on the k = O(t·B) hats of the
  transposed family it depends on cost O(M·k) (the family's Gram sums are kept
  incrementally), i.e. O(T²·B²·L·M) in all; plus the derivation and plan, which grow
  with the number of Moments, O(T²·B²·L) requests. Replicates run side by side as a
  leading array axis, and passes run concurrently on the cores.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from tensorprog import nn
from tensorprog.engine.derivation import Derivation
from tensorprog.engine.evaluate import Deterministic
from tensorprog.engine.montecarlo import run_montecarlo
from tensorprog.engine.plan import Plan
from tensorprog.ir import MatMul, Moment

OUT = pathlib.Path(__file__).parent / "results"
X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8], [0.7, 0.7]])
Y = np.array([0.5, -0.3, 0.8, 0.1])


def build(T=8, B=3, depth=2, nonlin="relu", param=None):
    net = nn.MLP(d_in=2, depth=depth, nonlin=nonlin, param=param or nn.muP(depth))
    return nn.train_sgd(net, X[:B], Y[:B], lr=1.0, steps=T, feature_kernels=False)


def size(run):
    ins = run.program.instructions
    return {"instructions": len(ins),
            "matmuls": sum(isinstance(i, MatMul) for i in ins),
            "moments": sum(isinstance(i, Moment) for i in ins)}


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


FRESH = """
import sys, time
sys.path.insert(0, {here!r})
from training import build
run = build()
t = time.perf_counter()
{call}
print(time.perf_counter() - t)
"""


def fresh(call: str, repeats: int) -> float:
    """Median wall time of ``call`` in fresh processes (program built, not timed)."""
    import subprocess
    import sys

    code = FRESH.format(here=str(pathlib.Path(__file__).parent), call=call)
    ts = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout.split()[-1]) for _ in range(repeats)]
    return float(np.median(ts))


def target(quick: bool) -> dict:
    """MC (100k samples) vs ONE simulation at n = 4096, both warm (after one untimed call
    each, medians over seeds) and in fresh processes (sympy compilation, first-touch
    memory included)."""
    run = build()
    ref_samples = 2**16 if quick else 2**18
    ref, t_ref = timed(run.limit, method="montecarlo", samples=ref_samples, qmc=True, seed=99)
    run.limit(method="montecarlo", samples=100_000, seed=98)  # warm-up (untimed)
    run.simulate(4096, seed=98)
    mc_seeds = 3 if quick else 5
    mc = [timed(run.limit, method="montecarlo", samples=100_000, seed=s) for s in range(mc_seeds)]
    qmc = timed(run.limit, method="montecarlo", samples=2**17 if not quick else 2**15, qmc=True,
                seed=1)
    sim_seeds = 3 if quick else 5
    sims = [timed(run.simulate, 4096, seed=s) for s in range(sim_seeds)]

    def rms(vals):
        return float(np.sqrt(np.mean([(v - ref.outputs)[1:] ** 2 for v in vals])))

    err_mc = rms([m.outputs for m, _ in mc])
    err_sim = rms([s.outputs for s, _ in sims])
    t_mc = float(np.median([t for _, t in mc]))
    t_sim = float(np.median([t for _, t in sims]))
    repeats = 2 if quick else 3
    f_mc = fresh("run.limit(method='montecarlo', samples=100_000, seed=0)", repeats)
    f_sim = fresh("run.simulate(4096, seed=0)", repeats)
    res = {
        "config": "relu, muP(2), d=2, B=3, T=8, lr=1, feature_kernels=False",
        "program": size(run),
        "reference": {"method": "montecarlo qmc", "samples": ref_samples, "time_s": t_ref,
                      "max_stderr": float(ref.stderr[1:].max())},
        "mc_100k": {"time_s": t_mc, "fresh_process_s": f_mc, "rms_error": err_mc,
                    "mean_reported_stderr":
                    float(np.mean([m.stderr[1:].mean() for m, _ in mc])), "runs": mc_seeds},
        "qmc": {"samples": 2**17 if not quick else 2**15, "time_s": qmc[1],
                "rms_error": rms([qmc[0].outputs])},
        "sim_4096": {"time_s": t_sim, "fresh_process_s": f_sim, "rms_error": err_sim,
                     "seeds": sim_seeds},
        "time_ratio_mc_over_sim": t_mc / t_sim,
        "fresh_ratio_mc_over_sim": f_mc / f_sim,
        "accuracy_ratio_sim_over_mc": err_sim / err_mc,
    }
    res["target_met"] = bool(t_mc < t_sim and f_mc < f_sim and err_sim / err_mc >= 5)
    return res


def phases() -> dict:
    """Where the time of one (warm) MC limit goes, as ``Program.limit`` runs it."""
    from tensorprog._gc import paused_gc

    run = build()
    p = run.program
    run.limit(method="montecarlo", samples=100_000, seed=98)  # warm-up (untimed)
    with paused_gc():
        der, t_der = timed(Derivation, p)
        plan, t_plan = timed(Plan, der, symbolic=False)
        det = Deterministic(plan, "montecarlo")
        _, t_det = timed(det.run)
        _, t_mc = timed(run_montecarlo, plan, 100_000, 0)
    return {"derivation_s": t_der, "plan_s": t_plan, "deterministic_s": t_det,
            "montecarlo_passes_s": t_mc, "requests": len(plan.requests)}


def scaling(quick: bool) -> list[dict]:
    rows = []
    samples = 20_000
    grid = [("T", dict(T=T)) for T in ([1, 2, 4, 8] if not quick else [1, 2, 4])]
    grid += [("B", dict(B=B)) for B in ([1, 2, 3, 4] if not quick else [1, 2])]
    grid += [("depth", dict(depth=L)) for L in ([1, 2, 3] if not quick else [1, 2])]
    for what, kw in grid:
        cfg = dict(T=4, B=2, depth=2)
        cfg.update(kw)
        run, t_build = timed(build, **cfg)
        lim, t_lim = timed(run.limit, method="montecarlo", samples=samples, seed=0)
        sim, t_sim = timed(run.simulate, 1024, seed=0)
        rows.append({"vary": what, **cfg, **size(run), "build_s": t_build,
                     "mc_samples": samples, "mc_time_s": t_lim,
                     "mc_mean_stderr": float(lim.stderr[1:].mean()),
                     "sim_1024_time_s": t_sim,
                     "sim_1024_abs_dev": float(np.abs(sim.outputs - lim.outputs)[1:].mean())})
    run = build(T=4, B=2)
    for M in ([10_000, 30_000, 100_000, 300_000] if not quick else [10_000, 30_000]):
        lim, t = timed(run.limit, method="montecarlo", samples=M, seed=0)
        rows.append({"vary": "samples", "T": 4, "B": 2, "depth": 2, **size(run), "mc_samples": M,
                     "mc_time_s": t, "mc_mean_stderr": float(lim.stderr[1:].mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    res = {"target": target(args.quick), "phases": phases(), "scaling": scaling(args.quick)}
    t = res["target"]
    print("1. target: relu μP, L=2, B=3, T=8")
    print(f"   MC 100k samples : {t['mc_100k']['time_s']:7.2f} s (fresh process "
          f"{t['mc_100k']['fresh_process_s']:.2f} s)   RMS error {t['mc_100k']['rms_error']:.2e}")
    print(f"   QMC {t['qmc']['samples']:>7} : {t['qmc']['time_s']:7.2f} s   RMS error {t['qmc']['rms_error']:.2e}")
    print(f"   one sim n=4096  : {t['sim_4096']['time_s']:7.2f} s (fresh process "
          f"{t['sim_4096']['fresh_process_s']:.2f} s)   RMS error {t['sim_4096']['rms_error']:.2e}")
    print(f"   time MC/sim = {t['time_ratio_mc_over_sim']:.2f} (fresh {t['fresh_ratio_mc_over_sim']:.2f}),"
          f" accuracy sim/MC = {t['accuracy_ratio_sim_over_mc']:.1f}; target met: {t['target_met']}")
    ph = res["phases"]
    print("2. phases of the MC limit (100k samples): " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in ph.items()))
    print("3. scaling (MC 20k samples; sim n=1024)")
    print(f"   {'vary':>7} {'T':>2} {'B':>2} {'L':>2} {'instr':>6} {'matmul':>6} {'moment':>6} "
          f"{'M':>7} {'MC s':>7} {'MC se':>9} {'sim s':>6}")
    for r in res["scaling"]:
        print(f"   {r['vary']:>7} {r['T']:>2} {r['B']:>2} {r['depth']:>2} {r['instructions']:>6} "
              f"{r['matmuls']:>6} {r['moments']:>6} {r['mc_samples']:>7} {r['mc_time_s']:7.2f} "
              f"{r['mc_mean_stderr']:9.2e} {r.get('sim_1024_time_s', float('nan')):6.2f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "training.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {OUT / 'training.json'}")


if __name__ == "__main__":
    main()
