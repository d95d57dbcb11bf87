"""Shared pytest configuration: hypothesis profiles.

``ci`` (the default): derandomized — the same examples on every run — and few enough
to keep ``tests/test_properties.py`` under a minute. ``dev``: many more random
examples, for hunting bugs locally: ``HYPOTHESIS_PROFILE=dev pytest tests/test_properties.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
