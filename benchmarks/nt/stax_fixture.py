"""neural-tangents 0.6.5 kernels and predictions → JSON fixtures for tests/test_stax.py,
tests/test_predict.py and notebooks/08_from_neural_tangents.ipynb.

Run with the side venv's interpreter (see setup_env.sh), from the repository root:

    benchmarks/nt/.venv/bin/python benchmarks/nt/stax_fixture.py

Writes, in float64 (``jax_enable_x64``; ``repr`` of every float, so the files round-trip):

* ``tests/data/nt_stax.json``: for each case, a network given as a list of layer specs
  (``["Dense", W_std, b_std]``, ``["Relu"]``, ``["LeakyRelu", alpha]``, ``["FanOut", 2]``,
  ``["parallel", [branch, …]]``, ``["FanInSum"]``, ``["LayerNorm"]``, …; the readout is the
  last Dense, of width 1, hidden Dense layers have width 512 — the kernels do not depend on
  widths), the inputs ``x1`` (and ``x2`` for a cross-kernel) and NT's
  ``kernel_fn(x1, x2, ("nngp", "ntk"))``, all Dense layers with ``parameterization="ntk"``;
* ``tests/data/nt_predict.json``: ``nt.predict.gradient_descent_mse`` on given kernels
  (several times, ``t = None``, ``diag_reg``, 1-D and 2-D targets), and the
  neural-tangents cookbook's 1-D regression (``sin`` with noise, an Erf network with
  ``W_std = 1.5``, ``b_std = 0.05``; ``gradient_descent_mse_ensemble`` means of the NNGP
  and the NTK at ``t = ∞`` with ``diag_reg = 1e-4``) on the cookbook's own random data
  (``jax.random.PRNGKey(10)``).

The files are data: tests read them, nothing executes them.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
from jax import random  # noqa: E402
from neural_tangents import stax  # noqa: E402

WIDTH = 512


def layer(spec):
    kind, *args = spec
    if kind == "Dense":
        W_std, b_std = args
        return stax.Dense(WIDTH, W_std=W_std, b_std=b_std or None, parameterization="ntk")
    if kind == "parallel":
        return stax.parallel(*[network(branch) for branch in args[0]])
    return getattr(stax, kind)(*args)


def network(specs, readout=False):
    layers = [layer(s) for s in specs]
    if readout:  # the last Dense is the readout: width 1
        W_std, b_std = specs[-1][1:]
        layers[-1] = stax.Dense(1, W_std=W_std, b_std=b_std or None, parameterization="ntk")
    return stax.serial(*layers)


def mlp(depth, act, W_std, b_std):
    act = [act] if isinstance(act, str) else list(act)
    return [["Dense", W_std, b_std], act] * depth + [["Dense", W_std, b_std]]


RES_BLOCK = [
    ["FanOut", 2],
    ["parallel", [[["Relu"], ["Dense", 1.3, 0.2]], [["Identity"]]]],
    ["FanInSum"],
]

CASES = [
    # name, layers, (B1, B2 or None, d)
    ("relu_mlp_cross", mlp(3, "Relu", 1.5, 0.1), (4, 3, 3)),
    ("erf_mlp_cross", mlp(2, "Erf", 1.5, 0.05), (3, 4, 2)),
    ("relu_mlp_square", mlp(2, "Relu", 1.2, 0.3), (4, None, 5)),
    (
        "layernorm",
        [
            ["Dense", 1.2, 0.1],
            ["LayerNorm"],
            ["Relu"],
            ["Dense", 1.4, 0.2],
            ["Erf"],
            ["Dense", 1.1, 0.0],
        ],
        (3, 2, 3),
    ),
    (
        "residual",
        [["Dense", 1.0, 0.1], *RES_BLOCK, *RES_BLOCK, ["Relu"], ["Dense", 1.1, 0.05]],
        (3, 3, 4),
    ),
    (
        "residual_layernorm",
        [["Dense", 1.0, 0.1], *RES_BLOCK, ["LayerNorm"], ["Erf"], ["Dense", 1.1, 0.05]],
        (3, None, 4),
    ),
] + [
    (f"{act[0].lower()}_cross", mlp(2, act, 1.3, 0.2), (3, 2, 3))
    for act in (
        ["Abs"],
        ["Sign"],
        ["LeakyRelu", 0.2],
        ["ABRelu", -0.3, 1.1],
        ["Gelu"],
        ["Sigmoid_like"],
        ["Sin"],
        ["Cos"],
        ["Exp", 1.0, 0.5],
        ["Rbf", 0.7],
    )
]


def case_doc(name, specs, shape, rng):
    B1, B2, d = shape
    x1 = rng.standard_normal((B1, d))
    x2 = None if B2 is None else rng.standard_normal((B2, d))
    _, _, kernel_fn = network(specs, readout=True)
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    return {
        "name": name,
        "layers": specs,
        "x1": x1.tolist(),
        "x2": None if x2 is None else x2.tolist(),
        "nngp": np.asarray(k.nngp, dtype=np.float64).tolist(),
        "ntk": np.asarray(k.ntk, dtype=np.float64).tolist(),
    }


def predict_docs(rng):
    """``gradient_descent_mse`` on the NTK of a relu MLP (train 5, test 3 inputs)."""
    _, _, kernel_fn = network(mlp(2, "Relu", 1.5, 0.1), readout=True)
    x, xt = rng.standard_normal((5, 3)), rng.standard_normal((3, 3))
    k = np.asarray(kernel_fn(x, None, "ntk"))
    kt = np.asarray(kernel_fn(xt, x, "ntk"))
    out = []
    for name, y, lr, reg, f0, g0 in [
        ("y_2d", rng.standard_normal((5, 1)), 1.0, 0.0, 0.0, 0.0),
        ("y_2d_lr_init", rng.standard_normal((5, 2)), 0.3, 0.0, 0.25, -0.5),
        ("y_2d_reg", rng.standard_normal((5, 1)), 2.0, 1e-2, 0.0, 0.0),
    ]:
        predict_fn = nt.predict.gradient_descent_mse(k, y, learning_rate=lr, diag_reg=reg)
        ts = [0.0, 0.5, 3.0, 40.0]
        fx, gx = predict_fn(np.array(ts), f0, g0, kt)
        fi, gi = predict_fn(None, f0, g0, kt)
        out.append(
            {
                "name": name,
                "k_train_train": k.tolist(),
                "k_test_train": kt.tolist(),
                "y_train": np.asarray(y).tolist(),
                "learning_rate": lr,
                "diag_reg": reg,
                "fx_train_0": f0,
                "fx_test_0": g0,
                "t": ts,
                "fx_train_t": np.asarray(fx).tolist(),
                "fx_test_t": np.asarray(gx).tolist(),
                "fx_train_inf": np.asarray(fi).tolist(),
                "fx_test_inf": np.asarray(gi).tolist(),
            }
        )
    return out


def cookbook():
    """The neural-tangents cookbook's 1-D regression, with its own data and network."""
    key = random.PRNGKey(10)
    train_points, test_points, noise_scale = 5, 50, 1e-1
    key, x_key, y_key = random.split(key, 3)
    train_xs = random.uniform(x_key, (train_points, 1), minval=-np.pi, maxval=np.pi)
    train_ys = np.sin(train_xs) + noise_scale * random.normal(y_key, (train_points, 1))
    test_xs = np.linspace(-np.pi, np.pi, test_points).reshape(-1, 1)
    specs = mlp(2, "Erf", 1.5, 0.05)
    _, _, kernel_fn = network(specs, readout=True)
    predict_fn = nt.predict.gradient_descent_mse_ensemble(
        kernel_fn, train_xs, train_ys, diag_reg=1e-4
    )
    nngp_mean = predict_fn(x_test=test_xs, get="nngp")
    ntk_mean = predict_fn(x_test=test_xs, get="ntk")
    return {
        "layers": specs,
        "diag_reg": 1e-4,
        "train_xs": np.asarray(train_xs).tolist(),
        "train_ys": np.asarray(train_ys).tolist(),
        "test_xs": test_xs.tolist(),
        "nngp_mean": np.asarray(nngp_mean).tolist(),
        "ntk_mean": np.asarray(ntk_mean).tolist(),
    }


def dump(doc, path):
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


def main(stax_out, predict_out):
    rng = np.random.default_rng(2026)
    versions = {"neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__}
    produced = "benchmarks/nt/.venv/bin/python benchmarks/nt/stax_fixture.py"
    dump(
        {
            "source": "neural-tangents stax kernel_fn (parameterization='ntk'), float64",
            "produced_by": produced,
            "versions": versions,
            "cases": [case_doc(n, s, sh, rng) for n, s, sh in CASES],
        },
        stax_out,
    )
    dump(
        {
            "source": "neural-tangents predict.gradient_descent_mse(_ensemble), float64",
            "produced_by": produced,
            "versions": versions,
            "cases": predict_docs(rng),
            "cookbook": cookbook(),
        },
        predict_out,
    )


if __name__ == "__main__":
    main(
        *(
            sys.argv[1:3]
            if len(sys.argv) > 2
            else ("tests/data/nt_stax.json", "tests/data/nt_predict.json")
        )
    )
