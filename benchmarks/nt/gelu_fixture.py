"""Reference kernels of deep GELU MLPs from neural-tangents 0.6.5 → a JSON test fixture.

Run with the side venv's interpreter (see setup_env.sh), from the repository root:

    benchmarks/nt/.venv/bin/python benchmarks/nt/gelu_fixture.py tests/data/nt_gelu_depth20.json

For each case (depth 20, W_std 1.5, b_std 0.3; inputs include ξ and 2ξ) it evaluates
``stax.serial(*[Dense(512, W_std, b_std, parameterization="ntk"), Gelu()] * depth,
Dense(1, W_std, b_std, parameterization="ntk"))`` — neural-tangents' closed-form GELU
kernel [Tsuchida, Pearce, van der Heide, Roosta & Gallagher 2021, "Avoiding kernel
fixed points: computing with ELU and GELU infinite networks"] — as
``kernel_fn(X, None, ("nngp", "ntk"))`` in float64 (``jax_enable_x64``) and writes the
inputs, the settings, the versions and both kernels (``repr`` of every float, so the
file round-trips exactly). The file is data: tests read it, nothing executes it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _fixture_io import write_fixture  # noqa: E402
from nt_kernels import build_kernel_fn  # noqa: E402

CASES = [
    # (name, X rows, depth, W_std, b_std)
    ("x_2x_3d", [[1.0, 0.5, -0.3], [2.0, 1.0, -0.6], [-0.4, 0.9, 0.2]], 20, 1.5, 0.3),
    ("x_2x_1d", [[1.0], [2.0], [-0.5]], 20, 1.5, 0.3),
]


def main(out: str) -> None:
    cases = []
    for name, X, depth, W_std, b_std in CASES:
        X = np.asarray(X, dtype=np.float64)
        k = build_kernel_fn(depth, "gelu", W_std, b_std)(X, None, ("nngp", "ntk"))
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
        assert nngp.dtype == np.float64 and ntk.dtype == np.float64
        cases.append(
            {
                "name": name,
                "X": X.tolist(),
                "depth": depth,
                "W_std": W_std,
                "b_std": b_std,
                "nonlin": "gelu",
                "nngp": nngp.tolist(),
                "ntk": ntk.tolist(),
            }
        )
    write_fixture(
        out,
        "neural-tangents stax.Gelu closed-form kernel (parameterization='ntk'), float64",
        "gelu_fixture.py",
        cases,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nt_gelu_depth20.json")
