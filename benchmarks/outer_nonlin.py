"""Benchmark: the OuterNonlin limit (NE⊗OR⊤, TP IVb Def 2.6.5) against finite width.

The program of ``tests/test_outer_nonlin.py`` (``_program``: rows ``b = Wᵀ tanh(W v)``
and cols ``h + θ``, ``u²``; ψ = ``sign(a·b)·t`` and ``a·b/√(a²b²+ε²)``; a MatMul of the
OuterNonlin's output, so ZDot runs through its row), measured three ways:

* the limit at the default settings (200,000 QMC samples, 16 replicates) and its wall
  time, and again with ``qmc=False``;
* numpy networks written in the test (explicit ``n × n`` outer arrays) at
  ``n = 256 … 2048``, seeds ∝ 1/n, extrapolated linearly in ``1/n`` (weighted least
  squares, standard error from the seeds' spread): ``z = (limit − extrapolated) /
  combined standard error`` per statistic;
* the wall time of ``simulate(n)`` (blocks of rows) against the plain ``n × n`` numpy
  network at ``n = 2048``, in the same process.

    PYTHONPATH=. python benchmarks/outer_nonlin.py

Results: a table on stdout and ``benchmarks/results/outer_nonlin.json``. Timings on a
shared machine are indicative only. This is a measurement, not a test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_outer_nonlin import _extrapolate, _numpy_network, _program  # noqa: E402


def main() -> None:
    p, ks = _program()
    out: dict = {"statistics": [k.name for k in ks]}
    for qmc in (True, False):
        t0 = time.perf_counter()
        lim = p.limit(seed=0, qmc=qmc)
        dt = time.perf_counter() - t0
        out[f"limit_qmc={qmc}"] = {
            "seconds": dt,
            "values": [lim[k] for k in ks],
            "stderrs": [lim.stderr(k) for k in ks],
        }
    seeds = {256: 128, 512: 64, 1024: 32, 2048: 16}
    t0 = time.perf_counter()
    ref, ref_se = _extrapolate(list(seeds), seeds)
    out["finite_width"] = {
        "widths": seeds,
        "seconds": time.perf_counter() - t0,
        "extrapolated": ref.tolist(),
        "stderrs": ref_se.tolist(),
    }
    for qmc in (True, False):
        lim = out[f"limit_qmc={qmc}"]
        se = np.hypot(ref_se, lim["stderrs"])
        lim["z"] = ((np.array(lim["values"]) - ref) / se).tolist()
    n = 2048
    t0 = time.perf_counter()
    p.simulate(n, seed=1)
    t1 = time.perf_counter()
    _numpy_network(n, np.random.default_rng(1))
    t2 = time.perf_counter()
    out["simulate_2048_seconds"], out["numpy_2048_seconds"] = t1 - t0, t2 - t1
    print(
        f"{'stat':>5} {'limit (QMC)':>22} {'limit (iid)':>22} {'n→∞ from n≤2048':>22}  z(QMC) z(iid)"
    )
    for j, k in enumerate(ks):
        a, b = out["limit_qmc=True"], out["limit_qmc=False"]
        print(
            f"{k.name:>5} {a['values'][j]:>12.6f} ± {a['stderrs'][j]:.6f} "
            f"{b['values'][j]:>12.6f} ± {b['stderrs'][j]:.6f} "
            f"{ref[j]:>12.6f} ± {ref_se[j]:.6f}  {a['z'][j]:+.2f}  {b['z'][j]:+.2f}"
        )
    print(
        f"limit time: QMC {out['limit_qmc=True']['seconds']:.1f} s, iid "
        f"{out['limit_qmc=False']['seconds']:.1f} s; simulate(2048) "
        f"{out['simulate_2048_seconds']:.2f} s vs numpy {out['numpy_2048_seconds']:.2f} s"
    )
    path = ROOT / "benchmarks" / "results" / "outer_nonlin.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
