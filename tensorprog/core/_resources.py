"""How much memory and how many cores this process may use.

Free machine memory is not what a process may allocate: a container's cgroup limit
or a process limit on its address space (``ulimit -v``, ``RLIMIT_AS``) can be far
smaller, and exceeding them ends in an out-of-memory kill or a raw ``MemoryError``
deep inside numpy. Every memory guard of tensorprog (``simulate``, ``nn.kernels``,
Monte Carlo) asks :func:`available_memory`, which takes the smallest of

* ``MemAvailable`` of ``/proc/meminfo`` (else the physical memory);
* the soft ``RLIMIT_AS`` minus the address space already mapped (``VmSize``);
* the cgroup limit minus its usage (reclaimable page cache counted as free), for
  cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``), the process's own
  cgroup and its ancestors;

and :func:`refuse` turns a request that does not fit into a :class:`ResourceError`
naming the argument that would make it fit. Monte Carlo takes, unless told otherwise,
:data:`MONTECARLO_SHARE` of that memory for its sample arrays
(:func:`montecarlo_memory`), and runs its threads with :func:`blas_threads` so that
they and the BLAS library's own threads never oversubscribe the cores.
:func:`deep_recursion` gives sympy's
recursive printers the stack depth a deep expression (a 1000-layer chain) needs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ResourceError

__all__ = [
    "MONTECARLO_SHARE",
    "blas_threads",
    "montecarlo_memory",
    "MemoryBudget",
    "memory_budget",
    "available_memory",
    "available_cpus",
    "require",
    "refuse",
    "gib",
    "expression_depth",
    "recursion_room",
    "deep_recursion",
]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes this process may still allocate, and the constraint that binds.

    Attributes
    ----------
    bytes : int
        The smallest of the constraints found.
    source : str
        Which constraint gives ``bytes`` (``"MemAvailable"``, ``"RLIMIT_AS"``,
        ``"cgroup memory.max"``, ...), for error messages.
    """

    bytes: int
    source: str


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where unavailable)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _vm_size() -> int:
    """Address space this process has mapped (``VmSize`` of ``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in a cgroup ``memory.stat`` file (0 if none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(maxsplit=1) for line in lines if " " in line)
    for k in keys:
        if k in values and values[k].strip().isdigit():
            return int(values[k])
    return 0


def _cgroup_dirs(controller: str | None) -> list[Path]:
    """The directories of this process's cgroup and its ancestors, innermost first.

    ``controller=None``: the unified (v2) hierarchy, line ``0::/path`` of
    ``/proc/self/cgroup``; else the v1 hierarchy holding ``controller``. In a container
    the path may not exist under the mount point (the container sees its own cgroup as
    the root): the mount point itself is then the cgroup.
    """
    base = _CGROUP_ROOT if controller is None else _CGROUP_ROOT / controller
    rel = None
    try:
        for line in _PROC_CGROUP.read_text().splitlines():
            hid, ctrls, path = line.split(":", 2)
            if (controller is None and hid == "0" and ctrls == "") or (
                controller is not None and controller in ctrls.split(",")
            ):
                rel = path.lstrip("/")
                break
    except (OSError, ValueError):
        pass
    dirs = []
    if rel:
        d = base / rel
        while d != base and base in d.parents:
            if d.is_dir():
                dirs.append(d)
            d = d.parent
    dirs.append(base)
    return dirs


def _cgroup_free() -> tuple[int, str] | None:
    """``limit − (usage − inactive file cache)`` of the tightest cgroup limit, if any."""
    best: tuple[int, str] | None = None
    for d in _cgroup_dirs(None):  # v2
        limit = _read_int(d / "memory.max")
        if limit is None:
            continue
        usage = _read_int(d / "memory.current") or 0
        free = limit - usage + _stat_value(d / "memory.stat", ("inactive_file",))
        if best is None or free < best[0]:
            best = (free, "cgroup memory.max")
    for d in _cgroup_dirs("memory"):  # v1
        limit = _read_int(d / "memory.limit_in_bytes")
        if limit is None or limit >= _UNLIMITED:
            continue
        usage = _read_int(d / "memory.usage_in_bytes") or 0
        free = (
            limit - usage + _stat_value(d / "memory.stat", ("total_inactive_file", "inactive_file"))
        )
        if best is None or free < best[0]:
            best = (free, "cgroup memory.limit_in_bytes")
    return best


def memory_budget() -> MemoryBudget:
    """The memory this process may still allocate (see the module docstring)."""
    info = _meminfo()
    if "MemAvailable" in info:
        cands = [(info["MemAvailable"], "MemAvailable")]
    elif "MemTotal" in info:  # pragma: no cover - kernels before 3.14
        cands = [(info["MemTotal"], "MemTotal")]
    else:  # pragma: no cover - non-Linux
        try:
            cands = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory")]
        except (ValueError, OSError, AttributeError):
            cands = [(8 * 2**30, "an assumed 8 GiB")]
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        cands.append((soft - _vm_size(), "RLIMIT_AS (ulimit -v)"))
    cg = _cgroup_free()
    if cg is not None:
        cands.append(cg)
    free, source = min(cands, key=lambda c: c[0])
    return MemoryBudget(max(0, int(free)), source)


def available_memory() -> int:
    """Bytes this process may still allocate (:func:`memory_budget`)."""
    return memory_budget().bytes


def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


#: Share of :func:`memory_budget` that Monte Carlo's sample arrays take by default.
MONTECARLO_SHARE = 0.5
#: ... and never less than this, if the budget holds it.
_MONTECARLO_FLOOR = 2**28


def montecarlo_memory() -> int:
    """The default ``max_memory`` of Monte Carlo: :data:`MONTECARLO_SHARE` of what the
    process may allocate (:func:`memory_budget`, so cgroup and ``RLIMIT_AS`` limits
    count), at least 256 MiB if the budget holds that much.

    A fixed budget made the cost of Monte Carlo jump where a replicate stopped fitting
    (replicates then run in chunks, one sweep over the chunks per round of dependent
    Moments); a share of the machine moves that point as far as the machine allows.
    """
    free = memory_budget().bytes
    return max(min(_MONTECARLO_FLOOR, free), int(MONTECARLO_SHARE * free))


@contextlib.contextmanager
def blas_threads(workers: int) -> Iterator[None]:
    """Limit the BLAS library's threads to ``cores // workers`` while ``workers``
    threads of ours run numpy: ``workers`` threads each calling a BLAS that starts one
    thread per core would run ``workers × cores`` threads on ``cores`` cores.

    Uses ``threadpoolctl`` (process-wide, restored on exit); ``workers ≤ 1`` changes
    nothing.
    """
    if workers <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, available_cpus() // workers), user_api="blas"):
        yield


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB for messages (``"2.79 GiB"``)."""
    return f"{nbytes / 2**30:.3g} GiB"


def require(what: str, need: int, knob: str, advice: str) -> None:
    """Raise :func:`refuse`'s error if ``need`` bytes exceed :func:`memory_budget`.

    Public as ``tensorprog.require_memory``: code that builds a large program (e.g.
    :func:`tensorprog.nn.kernels`) refuses it *before* building, with the same
    :class:`~tensorprog.ResourceError` as the library's own checks.

    The parameters are :func:`refuse`'s: the request ``what``, its peak memory ``need``
    in bytes, the argument ``knob`` that makes it fit, and the ``advice``.

    Examples
    --------
    >>> import tensorprog as tp
    >>> tp.require_memory("a tiny request", 1024, "n", "choose a smaller n")  # fits: no error
    >>> try:
    ...     tp.require_memory("an impossible request", 2**80, "n", "choose a smaller n")
    ... except tp.ResourceError as e:
    ...     print(e.knob)
    n
    """
    b = memory_budget()
    if need > b.bytes:
        raise refuse(what, need, knob, advice, b.bytes, b.source)


def refuse(
    what: str,
    need: int,
    knob: str,
    advice: str,
    limit: int | None = None,
    source: str | None = None,
) -> ResourceError:
    """The error for a request of ``need`` bytes that does not fit.

    Parameters
    ----------
    what : str
        The request, e.g. ``"simulate(n=100000) of 'AtAv'"``.
    need : int
        Its estimated peak memory in bytes.
    knob : str
        The argument that makes it fit (stored on the error as ``knob``).
    advice : str
        What to do with it, e.g. ``"choose a smaller n"``.
    limit, source : optional
        The bytes allowed and where that bound comes from; default
        :func:`memory_budget`.
    """
    if limit is None:
        b = memory_budget()
        limit, source = b.bytes, b.source
    err = ResourceError(
        f"{what} needs about {gib(need)} but only {gib(limit)} may be used ({source}); {advice}"
    )
    err.knob, err.need, err.limit = knob, int(need), int(limit)
    return err


# ---------------------------------------------------------------------------------------
# recursion depth (sympy's printers recurse once per level of an expression)

_FRAMES_PER_LEVEL = 8  # printer._print, _print_<Class>/_sympystr, a generator, ... per level
#: Deepest expression walked: sympy's queries recurse through generators, a few C
#: frames per level (measured: 5000 levels print within the default 8 MiB stack).
_MAX_DEPTH = 5_000
_printing = threading.local()


def expression_depth(expr: Any) -> int:
    """Nesting depth of a sympy expression (an atom: 1), without recursion."""
    depth: dict[int, int] = {}
    stack = [(expr, False)]
    while stack:
        e, done = stack.pop()
        key = id(e)
        if done:
            depth[key] = 1 + max((depth[id(a)] for a in e.args), default=0)
        elif key not in depth:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if id(a) not in depth)
    return depth[id(expr)]


@contextlib.contextmanager
def recursion_room(depth: int) -> Iterator[None]:
    """Room on Python's stack for a recursive walk ``depth`` levels deep (sympy's
    printers and assumption queries recurse once per level of an expression).

    Raises the recursion limit by what such a walk needs, for the duration (nested
    uses cost nothing). Deeper than :data:`_MAX_DEPTH` levels is refused with a
    ``ResourceError`` rather than risk the C stack.
    """
    if depth > _MAX_DEPTH:
        err = ResourceError(
            f"an expression {depth} levels deep is too deep for sympy's "
            f"recursive printing and queries (at most {_MAX_DEPTH}); work "
            f"with its parts (e.g. lim.Z of an intermediate vector)"
        )
        err.knob = "depth"
        raise err
    frame, used = sys._getframe(), 0
    while frame is not None:
        used, frame = used + 1, frame.f_back
    want = _FRAMES_PER_LEVEL * depth + 200 + used
    old = sys.getrecursionlimit()
    if want <= old:
        yield
        return
    sys.setrecursionlimit(want)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@contextlib.contextmanager
def deep_recursion(expr: Any) -> Iterator[None]:
    """:func:`recursion_room` for a walk of the sympy expression ``expr`` (its depth is
    measured once, by the outermost of nested uses)."""
    if getattr(_printing, "active", False):
        yield
        return
    _printing.active = True
    try:
        with recursion_room(expression_depth(expr)):
            yield
    finally:
        _printing.active = False
