"""Pausing Python's cyclic garbage collector around bulk, acyclic allocation.

Planning a large program allocates millions of small tuples and records that live
until the limit is returned; CPython's generational collector would traverse them
again and again (about half the planning time of a 50,000-instruction program).
None of them form reference cycles that need collecting early, so the collector is
paused for the duration and restored afterwards (reference counting still frees
everything that becomes unreachable).

On the way out, what was allocated meanwhile is moved to the oldest generation
(``gc.freeze(); gc.unfreeze()``) instead of being traversed by the first young
collection after re-enabling (another ~0.15 s for such a program): the objects are
long-lived, and full collections still visit them as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it if it was enabled.

    Public as ``tensorprog.paused_gc``, for code that records a large program (e.g.
    :func:`tensorprog.nn.kernels`, ``B²`` records) and takes its limit in one pause.

    Examples
    --------
    >>> import gc
    >>> from tensorprog.core._gc import paused_gc
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
            if gc.get_freeze_count() == 0:  # (never undo a freeze of the caller's)
                gc.freeze()
                gc.unfreeze()
            gc.enable()
