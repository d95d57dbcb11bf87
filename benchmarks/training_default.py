"""Default ``run.limit()`` vs ``method="montecarlo"`` on unrolled training runs (issue #22).

Run:  python benchmarks/training_default.py [--cap SECONDS] [--out NAME] [--steps 4 8]
                                            [--params muP NTK SP MF]
      python benchmarks/training_default.py --table BEFORE.json AFTER.json

Over the parametrizations μP/NTK/SP (depths L ∈ {2, 3}; SP with learning rate
η/n, ``nn.SP(L, c=1)``: with ``c = 0`` SP is unstable and has no limit) and MF
(defined for L = 1 only), φ ∈ {relu, tanh, gelu} and the given numbers of SGD steps (B = 3 training
inputs, d = 2, lr = 1, no feature kernels), each configuration runs in a **fresh
process**: one-time costs (imports, thread pools, first lambdify) are paid by an
untimed warm-up on an unrelated small program, the run is built (untimed), then
``run.limit(method="montecarlo")`` and ``run.limit()`` (both 200,000 samples where
Monte Carlo is used) are timed, each under a wall-clock cap — a stalled call is
recorded as ``> cap`` instead of hanging.
The target of #22: the default within 2× of Monte Carlo, or faster, everywhere.

Writes ``benchmarks/results/<NAME>.json`` (default ``training_default``; an existing
file is updated, the rows of the configurations run replaced) and prints a table. On a shared machine single timings are noisy (the ratio is the robust number:
both calls run in one process, one after the other).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

OUT = pathlib.Path(__file__).parent / "results"
#: (parametrization, depths): MF is the 1-hidden-layer mean-field parametrization.
GRID = (("muP", (2, 3)), ("NTK", (2, 3)), ("SP", (2, 3)), ("MF", (1,)))
NONLINS = ("relu", "tanh", "gelu")

CHILD = r"""
import signal, sys, time, json
import numpy as np
import tensorprog as tp
from tensorprog import nn
w = tp.Program("warmup")
A, u = w.matrix("A"), w.vector("u")
tp.mean(tp.tanh(A @ tp.relu(A @ u)) * u, name="m")
w.limit(), w.limit(method="montecarlo", samples=20_000)
X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])
Y = np.array([0.5, -0.3, 0.8])
param, L, phi, T, cap = {param!r}, {L}, {phi!r}, {T}, {cap}
P = nn.MF() if param == "MF" else nn.SP(L, c=1) if param == "SP" else {{"muP": nn.muP, "NTK": nn.NTK}}[param](L)
run = nn.train_sgd(nn.MLP(d_in=2, depth=L, nonlin=phi, param=P), X, Y, lr=1.0, steps=T,
                   feature_kernels=False)

class Capped(Exception):
    pass

def _alarm(*a):
    raise Capped

signal.signal(signal.SIGALRM, _alarm)
out = {{}}
for name, kw in (("montecarlo", {{"method": "montecarlo"}}), ("default", {{}})):
    signal.alarm(cap)
    t = time.perf_counter()
    try:
        lim = run.limit(**kw)
        dt = time.perf_counter() - t
        out[name] = {{"time_s": dt, "capped": False,
                     "methods": sorted(set(lim.method.ravel().tolist())),
                     "outputs": lim.outputs.tolist(), "stderr": lim.stderr.tolist()}}
    except Capped:
        out[name] = {{"time_s": float(cap), "capped": True}}
    finally:
        signal.alarm(0)
print(json.dumps(out))
"""


def measure(param: str, L: int, phi: str, T: int, cap: int) -> dict:
    code = CHILD.format(param=param, L=L, phi=phi, T=T, cap=cap)
    try:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=3 * cap + 120
        )
    except subprocess.TimeoutExpired:  # the alarm could not interrupt (inside C code)
        return {
            "montecarlo": {"time_s": None, "capped": True},
            "default": {"time_s": float(cap), "capped": True},
        }
    if p.returncode != 0:
        return {
            "error": p.stderr[-2000:],
            "montecarlo": {"time_s": None, "capped": False},
            "default": {"time_s": None, "capped": False},
        }
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=60)
    ap.add_argument("--out", default="training_default")
    ap.add_argument("--steps", type=int, nargs="+", default=[4])
    ap.add_argument("--params", nargs="+", default=[name for name, _ in GRID])
    ap.add_argument(
        "--table",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="print the before/after table of two result files (no run)",
    )
    args = ap.parse_args()
    if args.table:
        print(table(*(json.loads(pathlib.Path(f).read_text()) for f in args.table)))
        return
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{args.out}.json"
    # an existing result file is updated: rows of the configurations run now are replaced
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    print(
        f"{'param':>5} {'L':>2} {'phi':>5} {'T':>2} {'MC s':>7} {'default s':>10} {'ratio':>6}  methods"
    )
    for T in args.steps:
        for param, depths in GRID:
            if param not in args.params:
                continue
            for L in depths:
                for phi in NONLINS:
                    r = measure(param, L, phi, T, args.cap)
                    mc, de = r["montecarlo"], r["default"]
                    ratio = (
                        de["time_s"] / mc["time_s"]
                        if mc.get("time_s") and de.get("time_s")
                        else None
                    )
                    rows = [
                        x
                        for x in rows
                        if (x["param"], x["L"], x["phi"], x["T"]) != (param, L, phi, T)
                    ]
                    rows.append(
                        {
                            "param": param,
                            "L": L,
                            "phi": phi,
                            "T": T,
                            "B": 3,
                            "cap_s": args.cap,
                            **r,
                            "ratio": ratio,
                        }
                    )
                    path.write_text(json.dumps({"cap_s": args.cap, "rows": rows}, indent=1))
                    print(_row(rows[-1], args.cap), flush=True)
    print(f"wrote {path}")


def table(before: dict, after: dict) -> str:
    """A Markdown table: Monte Carlo and default times before and after, and the ratios."""
    old = {(r["param"], r["L"], r["phi"], r["T"]): r for r in before["rows"]}
    lines = [
        "| param | L | φ | T | MC before | default before | MC after | default after "
        "| default/MC after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in after["rows"]:
        b = old.get((r["param"], r["L"], r["phi"], r["T"]))
        cells = (
            [_fmt(b["montecarlo"], b["cap_s"]), _fmt(b["default"], b["cap_s"])] if b else ["", ""]
        )
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['param']} | {r['L']} | {r['phi']} | {r['T']} | {cells[0]} | {cells[1]} "
            f"| {_fmt(r['montecarlo'], r['cap_s'])} | {_fmt(r['default'], r['cap_s'])} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def _fmt(m: dict, cap: int) -> str:
    if m.get("capped"):
        return f"> {cap}"
    return "error" if m.get("time_s") is None else f"{m['time_s']:.2f}"


def _row(r: dict, cap: int) -> str:
    mc, de = r["montecarlo"], r["default"]
    ratio = "" if r["ratio"] is None else (">" if de["capped"] else "") + f"{r['ratio']:.2f}"
    return (
        f"{r['param']:>5} {r['L']:>2} {r['phi']:>5} {r['T']:>2} {_fmt(mc, cap):>7} "
        f"{_fmt(de, cap):>10} {ratio:>6}  {','.join(de.get('methods', []))}"
    )


if __name__ == "__main__":
    main()
