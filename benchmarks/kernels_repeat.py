"""Benchmark: the repeated kernel call — new inputs, same architecture (issue 19, point 3).

``nn.kernels(X, depth=10, nonlin="relu", W_std=1.5, b_std=0.1)`` on ``B = 64`` inputs
of dimension ``d = 32``: one first call (compiling the entry program), then ``--calls``
calls each on *new* inputs ``default_rng(seed + call).standard_normal((B, d))`` — the
everyday notebook loop — timed with ``time.perf_counter`` (wall) and
``time.process_time`` (CPU). Every source tree given (``--trees name=path``, e.g. main
at a branch point and a branch) runs in its own fresh process, the trees alternately
``--rounds`` times, so they share the machine's load; the table gives per tree the
minimum and median over all its calls, and the largest difference of its kernels from
the first tree's on the same inputs (the kernels of the last call).

    python benchmarks/kernels_repeat.py --trees base=/tmp/base branch=.

neural-tangents' jit-warm call on the same configuration:
``python benchmarks/kernels_scale.py --configs relu:10:64 --repeat-B 64``.
This is a measurement, not a test: nothing here asserts a time; on a loaded machine
compare the trees within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def worker(a: argparse.Namespace) -> None:
    """One tree, one process: the first call, then ``a.calls`` timed calls."""
    from tensorprog.nn.kernels import kernels

    kw = dict(depth=a.depth, nonlin=a.nonlin, W_std=a.W_std, b_std=a.b_std)
    kernels(np.random.default_rng(a.seed).standard_normal((a.B, a.dim)), **kw)
    wall, cpu = [], []
    for call in range(1, a.calls + 1):
        X = np.random.default_rng(a.seed + call).standard_normal((a.B, a.dim))
        w0, c0 = time.perf_counter(), time.process_time()
        nngp, ntk = kernels(X, **kw)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    np.save(a.save, np.stack([nngp, ntk]))
    print(json.dumps({"wall": wall, "cpu": cpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trees", nargs="+", default=[f"current={Path.cwd()}"], help="name=path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--nonlin", default="relu")
    ap.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    ap.add_argument("--b-std", dest="b_std", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    trees = [t.split("=", 1) for t in a.trees]
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n, _ in trees}
    args = [f"--{k}={v}" for k, v in (("calls", a.calls), ("B", a.B), ("dim", a.dim))]
    args += [f"--depth={a.depth}", f"--nonlin={a.nonlin}", f"--W-std={a.W_std}"]
    args += [f"--b-std={a.b_std}", f"--seed={a.seed}"]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            for name, path in trees:
                env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
                save = f"{tmp}/{name}.npy"
                cmd = [sys.executable, __file__, "--worker", f"--save={save}", *args]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                for k in ("wall", "cpu"):
                    times[name][k] += run[k]
        ref = np.load(f"{tmp}/{trees[0][0]}.npy")
        print(
            f"nn.kernels repeated call: B={a.B}, d={a.dim}, depth={a.depth}, {a.nonlin}, "
            f"{a.rounds} processes × {a.calls} calls per tree (ms)"
        )
        print(f"{'tree':>10} {'wall min':>9} {'median':>8} {'cpu min':>8} {'median':>8}  max |Δ|")
        for name, _ in trees:
            w, c = (1e3 * np.array(times[name][k]) for k in ("wall", "cpu"))
            diff = np.abs(np.load(f"{tmp}/{name}.npy") - ref).max()
            print(
                f"{name:>10} {w.min():9.1f} {np.median(w):8.1f} {c.min():8.1f} "
                f"{np.median(c):8.1f}  {diff:.1e}"
            )


if __name__ == "__main__":
    main()
