"""Compute NNGP / NTK kernels of a ReLU/Erf/GELU MLP with neural-tangents 0.6.5.

Run with the side venv's interpreter (see setup_env.sh):

    benchmarks/nt/.venv/bin/python benchmarks/nt/nt_kernels.py \
        --depth 10 --batch 64 --dim 32 --nonlin relu --W-std 1.5 --b-std 0.1 \
        --seed 0 --out /tmp/nt.npz

Prints one JSON line with timings (seconds):
  t_import        process start -> jax + neural_tangents imported
  t_first_call    first (un-jitted) kernel_fn(X, None, ('nngp', 'ntk')) call
  t_second_call   second identical call (same kernel_fn object)
  t_total_process process start -> just before printing
(optionally --repeat R > 2 adds t_calls: all R call times;
 --jit times the jax.jit-wrapped kernel_fn instead, so the first call includes
 XLA compilation).
"""

import time

_T0 = time.perf_counter()  # as early as possible, before importing jax

import argparse
import json
import os

# Keep TensorFlow (pulled in by neural-tangents via tf2jax) quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from neural_tangents import stax  # noqa: E402

_T_IMPORT = time.perf_counter() - _T0


def build_kernel_fn(depth, nonlin, W_std, b_std, width=512):
    act = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu}[nonlin]()
    layers = [stax.Dense(width, W_std=W_std, b_std=b_std, parameterization="ntk"), act] * depth
    layers.append(stax.Dense(1, W_std=W_std, b_std=b_std, parameterization="ntk"))
    _, _, kernel_fn = stax.serial(*layers)
    return kernel_fn


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--depth", type=int, required=True, help="number of hidden Dense+activation blocks"
    )
    p.add_argument(
        "--batch", type=int, default=None, help="number of inputs B (ignored with --inputs)"
    )
    p.add_argument(
        "--dim", type=int, default=None, help="input dimension d (ignored with --inputs)"
    )
    p.add_argument("--nonlin", choices=["relu", "erf", "gelu"], required=True)
    p.add_argument("--W-std", dest="W_std", type=float, required=True)
    p.add_argument("--b-std", dest="b_std", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--inputs", default=None, help=".npy file with a (B, d) array used as X instead of the rng"
    )
    p.add_argument("--out", default=None, help=".npz file to save X, nngp, ntk (float64)")
    p.add_argument(
        "--repeat", type=int, default=2, help="number of kernel_fn calls (>= 2; default 2)"
    )
    p.add_argument(
        "--jit",
        action="store_true",
        help="wrap kernel_fn in jax.jit(..., static_argnames='get'); "
        "then t_first_call includes compilation",
    )
    a = p.parse_args(argv)

    if a.inputs is not None:
        X = np.asarray(np.load(a.inputs), dtype=np.float64)
        if X.ndim != 2:
            p.error(f"--inputs must hold a 2-D array, got shape {X.shape}")
    else:
        if a.batch is None or a.dim is None:
            p.error("--batch and --dim are required unless --inputs is given")
        X = np.random.default_rng(a.seed).standard_normal((a.batch, a.dim))
    X = X.astype(np.float64)

    kernel_fn = build_kernel_fn(a.depth, a.nonlin, a.W_std, a.b_std)
    if a.jit:
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")

    times = []
    out = None
    for _ in range(max(2, a.repeat)):
        t = time.perf_counter()
        k = kernel_fn(X, None, ("nngp", "ntk"))
        nngp = np.asarray(jax.block_until_ready(k.nngp))
        ntk = np.asarray(jax.block_until_ready(k.ntk))
        times.append(time.perf_counter() - t)
        if out is None:
            out = (nngp, ntk)

    nngp, ntk = out
    assert nngp.dtype == np.float64 and ntk.dtype == np.float64, (nngp.dtype, ntk.dtype)
    if a.out:
        np.savez(a.out, X=X, nngp=nngp, ntk=ntk)

    rec = {
        "depth": a.depth,
        "batch": int(X.shape[0]),
        "dim": int(X.shape[1]),
        "nonlin": a.nonlin,
        "W_std": a.W_std,
        "b_std": a.b_std,
        "seed": a.seed,
        "inputs": a.inputs,
        "jit": a.jit,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "t_import": _T_IMPORT,
        "t_first_call": times[0],
        "t_second_call": times[1],
    }
    if len(times) > 2:
        rec["t_calls"] = times
    rec["t_total_process"] = time.perf_counter() - _T0
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
