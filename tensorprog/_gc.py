"""Pausing Python's cyclic garbage collector around bulk, acyclic allocation.

Planning a large program allocates millions of small tuples and records that live
until the limit is returned; CPython's generational collector would traverse them
again and again (about half the planning time of a 50,000-instruction program).
None of them form reference cycles that need collecting early, so the collector is
paused for the duration and restored afterwards (reference counting still frees
everything that becomes unreachable).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it if it was enabled.

    Examples
    --------
    >>> import gc
    >>> from tensorprog._gc import paused_gc
    >>> with paused_gc():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
