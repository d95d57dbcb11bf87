"""``nn.train_sgd`` through ``nn.train`` (issue #15 point 4) against its hand-written unroll.

Run:  git worktree add /tmp/base-sgd b19557a
      python benchmarks/train_sgd_thin.py --base /tmp/base-sgd [--rounds 3] [--repeats 3]

``--base`` is a checkout of the commit before the change (b19557a: ``train_sgd`` with its
own unroll). Each round runs one process with the base on ``PYTHONPATH`` and one with this
tree, alternating (the machine may be shared). Each process builds the training
benchmark's target run (``benchmarks/training.py``: ReLU μP, L = 2, B = 3, 8 steps) and
three more (relu NTK(2), tanh SP(2, c=1), T = 3; tanh μP(3), T = 4 with feature kernels),
counts their instructions, times the Monte Carlo limit (100,000 samples; one untimed call,
then ``--repeats`` seeds: wall and CPU time of the process), and records the limit's
outputs with their standard errors and one simulation at n = 256. Reported per run: the
instruction counts, the medians over rounds of the per-process medians and their ratio
new/base, the largest difference of the simulations (same seed: the programs draw the same
Gaussians in the same order, so it is rounding) and of the limits in units of their
combined standard error.

Writes ``benchmarks/results/train_sgd_thin.json``.
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

HERE = pathlib.Path(__file__).parent
OUT = HERE / "results"

CHILD = r"""
import json, sys, time
import numpy as np
from tensorprog import nn
from tensorprog.core.ir import MatMul, Moment, Nonlin, ScalarFn

X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])
Y = np.array([0.5, -0.3, 0.8])
CONFIGS = {
    "target: relu muP(2), T=8": ("relu", nn.muP(2), 8, 1.0, False),
    "relu NTK(2), T=3": ("relu", nn.NTK(2), 3, 0.5, False),
    "tanh SP(2, c=1), T=3": ("tanh", nn.SP(2, c=1), 3, 0.5, False),
    "tanh muP(3), T=4, feature kernels": ("tanh", nn.muP(3), 4, 1.0, True),
}
out = {}
for key, (phi, prm, T, lr, fk) in CONFIGS.items():
    t0 = time.perf_counter()
    run = nn.train_sgd(nn.MLP(2, prm.depth, phi, prm), X, Y, lr=lr, steps=T, feature_kernels=fk)
    build = time.perf_counter() - t0
    ins = run.program.instructions
    kinds = {"matmuls": MatMul, "moments": Moment, "nonlins": Nonlin, "scalar_fns": ScalarFn}
    size = {"instructions": len(ins)}
    size.update({k: sum(isinstance(i, c) for i in ins) for k, c in kinds.items()})
    kw = {"method": "montecarlo", "samples": 100_000}
    run.limit(seed=100, **kw)
    wall, cpu = [], []
    for s in range({repeats}):
        t0, c0 = time.perf_counter(), time.process_time()
        lim = run.limit(seed=s, **kw)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out[key] = {
        "size": size, "build_s": build, "wall": float(np.median(wall)), "cpu": float(np.median(cpu)),
        "outputs": lim.outputs.tolist(), "stderr": lim.stderr.tolist(),
        "sim256": run.simulate(256, seed=0).outputs.tolist(),
    }
print(json.dumps(out))
"""


def child(path: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=path)
    code = CHILD.replace("{repeats}", str(repeats))
    code += f"\nimport tensorprog; assert tensorprog.__file__.startswith({path!r})\n"
    res = subprocess.run(  # cwd: `python -c` puts the working directory first on sys.path
        [sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="a checkout of the commit before the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    new_path = str(HERE.parent.resolve())
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        runs["base"].append(child(str(pathlib.Path(args.base).resolve()), args.repeats))
        runs["new"].append(child(new_path, args.repeats))
    res = {}
    for key in runs["new"][0]:
        b, n = runs["base"][0][key], runs["new"][0][key]
        med = {
            side: {
                m: float(np.median([r[key][m] for r in runs[side]]))
                for m in ("wall", "cpu", "build_s")
            }
            for side in runs
        }
        se = np.hypot(np.array(b["stderr"]), np.array(n["stderr"]))
        diff = np.abs(np.array(b["outputs"]) - np.array(n["outputs"]))
        res[key] = {
            "size": {"base": b["size"], "new": n["size"]},
            "median_s": med,
            "wall_ratio": med["new"]["wall"] / med["base"]["wall"],
            "cpu_ratio": med["new"]["cpu"] / med["base"]["cpu"],
            "limit_max_abs_z": float((diff[se > 0] / se[se > 0]).max()),
            "limit_max_abs_diff": float(diff.max()),
            "sim256_max_abs_diff": float(
                np.abs(np.array(b["sim256"]) - np.array(n["sim256"])).max()
            ),
        }
    res["_meta"] = {
        "rounds": args.rounds,
        "repeats": args.repeats,
        "total_s": time.perf_counter() - t0,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "train_sgd_thin.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
