"""Engine benchmark: Monte Carlo throughput, and accuracy-per-second vs finite width.

Run:  python benchmarks/engine.py            (about a minute on 2 cores)

Prints two tables and writes ``benchmarks/results/engine.json`` (and ``engine.png``
when matplotlib is installed):

1. Monte Carlo throughput of the limit (samples × instructions per second) for a
   depth-L tanh network program with Ż terms (one μP-like step), by sample count.
2. For a two-layer ReLU program with an exact limit, the time needed to reach a
   given accuracy by Monte Carlo on the limit vs by finite-width simulation
   (error = RMS over seeds of |value − exact limit|).
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

import tensorprog as tp

OUT = pathlib.Path(__file__).parent / "results"


def two_layer():
    p = tp.Program("two_layer_relu")
    W1, W2 = p.matrix("W1", var=2.0), p.matrix("W2", var=2.0)
    xi = p.vectors("xi", cov=[[1.0, 0.6], [0.6, 1.0]])
    hs = [W2 @ tp.relu(W1 @ tp.relu(x)) for x in xi]
    tp.inner(tp.relu(hs[0]), tp.relu(hs[1]), name="K")
    return p


def deep_step(depth=3):
    """A forward pass, a backward pass and one update: Ż ≠ 0 afterwards."""
    p = tp.Program("deep_step")
    Ws = [p.matrix(f"W{i}") for i in range(depth)]
    u, v = p.vector("u"), p.vector("v")
    d = tp.tanh.derivative()
    xs, hs = [tp.tanh(u)], []
    for W in Ws:
        hs.append(W @ xs[-1])
        xs.append(tp.tanh(hs[-1]))
    f0 = tp.inner(v, xs[-1])
    chi = f0 - 1.0
    g = v
    grads = []
    for W, h in zip(reversed(Ws), reversed(hs)):
        dh = g * d(h)
        grads.append(dh)
        g = W.T @ dh
    grads.reverse()
    x = tp.tanh(u - chi * g * d(u))
    for W, x_old, dh in zip(Ws, xs[:-1], grads):
        x = tp.tanh(W @ x - chi * tp.inner(x_old, x) * dh)
    tp.inner(v - chi * xs[-1], x, name="f1")
    return p


def throughput():
    rows = []
    p = deep_step()
    for samples in (20_000, 100_000, 400_000):
        t = time.perf_counter()
        lim = p.limit(method="montecarlo", samples=samples, seed=0)
        dt = time.perf_counter() - t
        rows.append(
            {
                "samples": samples,
                "instructions": len(p),
                "seconds": dt,
                "samples_x_instructions_per_s": samples * len(p) / dt,
                "f1": lim["f1"],
                "stderr": lim.stderr("f1"),
            }
        )
    return rows


def accuracy_vs_time():
    p = two_layer()
    exact = p.limit()["K"]
    mc, fw = [], []
    for samples in (10_000, 40_000, 160_000, 640_000):
        t = time.perf_counter()
        vals = [p.limit(method="montecarlo", samples=samples, seed=s)["K"] for s in range(5)]
        dt = (time.perf_counter() - t) / 5
        mc.append(
            {
                "samples": samples,
                "seconds": dt,
                "rms_error": float(np.sqrt(np.mean((np.array(vals) - exact) ** 2))),
            }
        )
    for n in (256, 512, 1024, 2048, 4096):
        t = time.perf_counter()
        vals = [p.simulate(n, seed=s)["K"] for s in range(5)]
        dt = (time.perf_counter() - t) / 5
        fw.append(
            {
                "n": n,
                "seconds": dt,
                "rms_error": float(np.sqrt(np.mean((np.array(vals) - exact) ** 2))),
            }
        )
    return exact, mc, fw


def main():
    OUT.mkdir(exist_ok=True)
    tp_rows = throughput()
    print("Monte Carlo throughput (deep_step program):")
    print(
        f"{'samples':>9} {'instr':>6} {'seconds':>8} {'samples·instr/s':>16} {'f1':>10} {'s.e.':>8}"
    )
    for r in tp_rows:
        print(
            f"{r['samples']:>9} {r['instructions']:>6} {r['seconds']:>8.3f} "
            f"{r['samples_x_instructions_per_s']:>16.3g} {r['f1']:>10.5f} {r['stderr']:>8.1e}"
        )
    exact, mc, fw = accuracy_vs_time()
    print(f"\nTwo-layer ReLU kernel, exact limit K = {exact:.10f}")
    print("Monte Carlo on the limit:          finite-width simulation:")
    for a, b in zip(mc + [None] * 5, fw):
        left = f"{a['samples']:>8} {a['seconds']:>7.3f}s {a['rms_error']:.2e}" if a else " " * 27
        print(f"  {left}    n={b['n']:>5} {b['seconds']:>7.3f}s {b['rms_error']:.2e}")
    res = {"throughput": tp_rows, "exact": exact, "montecarlo": mc, "finite_width": fw}
    (OUT / "engine.json").write_text(json.dumps(res, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(
        [r["seconds"] for r in mc],
        [r["rms_error"] for r in mc],
        "o-",
        label="Monte Carlo on the limit",
    )
    ax.loglog([r["seconds"] for r in fw], [r["rms_error"] for r in fw], "s-", label="finite width")
    ax.set_xlabel("seconds per estimate")
    ax.set_ylabel("RMS error vs exact limit")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "engine.png", dpi=120)


if __name__ == "__main__":
    main()
