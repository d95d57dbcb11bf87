"""Sanity check of neural-tangents against the THEORY.md §10.4 fixture.

x1=(1,0), x2=(0.6,0.8), x3=(-1,1); relu, depth 2, W_std=1.5, b_std=0.1,
NTK parameterization. Run with the side venv:

    benchmarks/nt/.venv/bin/python benchmarks/nt/check_fixture.py

Exits non-zero if max |diff| > 1e-7 (the fixture has 8 decimal digits).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from nt_kernels import build_kernel_fn  # noqa: E402

X = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]])
NNGP_REF = np.array(
    [
        [1.45773438, 1.07713069, 0.71741663],
        [1.07713069, 1.45773438, 1.11728273],
        [0.71741663, 1.11728273, 2.88156250],
    ]
)
NTK_REF = np.array(
    [
        [4.34195312, 2.25999961, 0.59056138],
        [2.25999961, 4.34195312, 1.73179554],
        [0.59056138, 1.73179554, 8.61343750],
    ]
)

kernel_fn = build_kernel_fn(depth=2, nonlin="relu", W_std=1.5, b_std=0.1)
k = kernel_fn(X, None, ("nngp", "ntk"))
nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
d_nngp = float(np.max(np.abs(nngp - NNGP_REF)))
d_ntk = float(np.max(np.abs(ntk - NTK_REF)))
np.set_printoptions(precision=10, suppress=True)
print("nngp =\n", nngp)
print("ntk =\n", ntk)
ok = max(d_nngp, d_ntk) <= 1e-7
print(
    json.dumps(
        {"max_abs_diff_nngp": d_nngp, "max_abs_diff_ntk": d_ntk, "dtype": str(nngp.dtype), "ok": ok}
    )
)
sys.exit(0 if ok else 1)
