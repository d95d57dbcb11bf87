"""Seeds: every random path takes an int seed or a numpy Generator (default 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ProgramTypeError, ProgramValueError

__all__ = ["as_generator"]


def as_generator(seed: Any, where: str) -> np.random.Generator:
    """A numpy Generator from an int seed (≥ 0) or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ProgramTypeError(
            f"{where}: seed must be an int ≥ 0 or a numpy Generator, got {seed!r}"
        )
    if seed < 0:
        raise ProgramValueError(f"{where}: seed must be ≥ 0, got {seed}")
    return np.random.default_rng(int(seed))
