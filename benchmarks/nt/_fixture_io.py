"""Writing a neural-tangents fixture: one JSON file with the versions and the cases.

Shared by ``gelu_fixture.py`` and ``nonlin_fixture.py`` (run with the side venv).
"""

from __future__ import annotations

import json


def write_fixture(out: str, source: str, script: str, cases: list[dict]) -> None:
    """Write ``{"source", "produced_by", "versions", "cases"}`` to ``out`` (floats as
    ``repr``, so the file round-trips exactly)."""
    import jax
    import neural_tangents
    import numpy as np

    doc = {
        "source": source,
        "produced_by": f"benchmarks/nt/.venv/bin/python benchmarks/nt/{script} {out}",
        "versions": {
            "neural_tangents": neural_tangents.__version__,
            "jax": jax.__version__,
            "numpy": np.__version__,
        },
        "cases": cases,
    }
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
