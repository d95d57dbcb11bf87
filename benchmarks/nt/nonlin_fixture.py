"""Reference NNGP/NTK of MLPs with every neural-tangents 0.6.5 nonlinearity → a JSON test fixture.

Run with the side venv's interpreter (see setup_env.sh), from the repository root:

    benchmarks/nt/.venv/bin/python benchmarks/nt/nonlin_fixture.py tests/data/nt_nonlinearities.json

For each case it evaluates ``stax.serial(*[Dense(512, W_std, b_std, parameterization="ntk"),
act] * depth, Dense(1, W_std, b_std, parameterization="ntk"))`` -- ``act`` one of
neural-tangents' ``stax`` nonlinearities with its closed-form kernel -- as
``kernel_fn(X, None, ("nngp", "ntk"))`` in float64 (``jax_enable_x64``), on inputs
``X = default_rng(seed).standard_normal((4, 5))``, and writes the inputs, the settings,
the versions and both kernels (``repr`` of every float: the file round-trips exactly;
``null`` where neural-tangents returns NaN -- only the diagonal of ``RectifiedMonomial``).
``tests/test_closed_forms_nt.py`` maps each case's ``"nonlin"`` record (a name and its
parameters) to tensorprog's nonlinearity and compares ``tp.nn.kernels``. The file is data:
tests read it, nothing executes it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from neural_tangents import stax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _fixture_io import write_fixture  # noqa: E402

# (case name, stax layer, tensorprog nonlinearity {name, params}, depth, W_std, b_std, seed)
CASES = [
    ("relu", stax.Relu(), ("relu", []), 3, 1.5, 0.3, 0),
    ("abs", stax.Abs(), ("abs", []), 3, 1.2, 0.3, 1),
    ("leaky_relu_0.1", stax.LeakyRelu(0.1), ("leaky_relu", [0.1]), 3, 1.5, 0.3, 2),
    ("ab_relu_-0.5_2", stax.ABRelu(-0.5, 2.0), ("ab_relu", [-0.5, 2.0]), 3, 0.9, 0.2, 3),
    ("sign", stax.Sign(), ("sign", []), 3, 1.3, 0.4, 4),
    ("gelu", stax.Gelu(), ("gelu", []), 3, 1.5, 0.3, 5),
    ("erf", stax.Erf(), ("erf", []), 3, 1.7, 0.2, 6),
    ("sin", stax.Sin(), ("sin", []), 3, 1.4, 0.3, 7),
    ("cos", stax.Cos(), ("cos", []), 3, 1.1, 0.3, 8),
    ("rbf_0.5", stax.Rbf(0.5), ("rbf", [0.5]), 3, 1.0, 0.2, 9),
    ("exp", stax.Exp(), ("exp", []), 2, 0.5, 0.1, 10),
    ("gaussian_1_-1", stax.Gaussian(1.0, -1.0), ("gaussian_bump", [1.0, -1.0]), 3, 1.5, 0.3, 11),
    (
        "gaussian_0.7_-0.4",
        stax.Gaussian(0.7, -0.4),
        ("gaussian_bump", [0.7, -0.4]),
        3,
        1.5,
        0.3,
        12,
    ),
    ("monomial_2", stax.Monomial(2), ("monomial", [2]), 2, 0.8, 0.3, 13),
    ("monomial_3", stax.Monomial(3), ("monomial", [3]), 1, 0.8, 0.3, 14),
    # depth 1: neural-tangents' RectifiedMonomial divides by sin θ, which is 0 on the
    # diagonal (θ = 0), so its diagonal is NaN and every deeper layer with it
    (
        "rectified_monomial_2",
        stax.RectifiedMonomial(2),
        ("rectified_monomial", [2]),
        1,
        1.2,
        0.3,
        15,
    ),
    (
        "rectified_monomial_3",
        stax.RectifiedMonomial(3),
        ("rectified_monomial", [3]),
        1,
        1.0,
        0.3,
        16,
    ),
    (
        "polynomial",
        stax.Polynomial([0.5, -1.0, 0.25]),
        ("polynomial", [[0.5, -1.0, 0.25]]),
        2,
        1.0,
        0.3,
        17,
    ),
]


def kernels(layer, depth: int, W_std: float, b_std: float, X: np.ndarray):
    layers = [stax.Dense(512, W_std=W_std, b_std=b_std, parameterization="ntk"), layer] * depth
    layers.append(stax.Dense(1, W_std=W_std, b_std=b_std, parameterization="ntk"))
    _, _, kernel_fn = stax.serial(*layers)
    k = kernel_fn(X, None, ("nngp", "ntk"))
    nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
    assert nngp.dtype == np.float64 and ntk.dtype == np.float64
    return nngp, ntk


def _finite_or_none(a: np.ndarray) -> list:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in a]


def main(out: str) -> None:
    cases = []
    for name, layer, (nl, params), depth, W_std, b_std, seed in CASES:
        X = np.random.default_rng(seed).standard_normal((4, 5))
        nngp, ntk = kernels(layer, depth, W_std, b_std, X)
        off = ~np.eye(len(X), dtype=bool)
        if not (np.all(np.isfinite(nngp[off])) and np.all(np.isfinite(ntk[off]))):
            raise SystemExit(f"{name}: neural-tangents returned a non-finite kernel")
        cases.append(
            {
                "name": name,
                "nonlin": {"name": nl, "params": params},
                "X": X.tolist(),
                "depth": depth,
                "W_std": W_std,
                "b_std": b_std,
                "seed": seed,
                # a non-finite entry (a NaN diagonal of neural-tangents) is written as null
                "nngp": _finite_or_none(nngp),
                "ntk": _finite_or_none(ntk),
            }
        )
    write_fixture(
        out,
        "neural-tangents stax nonlinearities, closed-form kernels "
        "(parameterization='ntk'), float64",
        "nonlin_fixture.py",
        cases,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nt_nonlinearities.json")
