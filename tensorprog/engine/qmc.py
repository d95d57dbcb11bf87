"""Randomised quasi-Monte Carlo: scrambled Sobol' points mapped to standard normals.

The Monte Carlo limits of :mod:`.montecarlo` integrate over a program's base Gaussians.
By default their samples are randomised quasi-Monte Carlo (RQMC) points rather than iid
draws [Owen 1997; L'Ecuyer & Lemieux 2002]: the Sobol' sequence [Sobol' 1967] in ``D``
dimensions, each coordinate scrambled by a random lower-triangular matrix and a random
digital shift over GF(2) ("linear matrix scrambling", Matoušek 1998), then mapped to
normals by the normal quantile.

* Every scrambled point is uniform on the unit cube, so each replicate's averages are
  unbiased, and independent scrambles are independent replicates: the spread of their
  estimates is a valid standard error, exactly as for iid replicates.
* The scrambled points keep the equidistribution of the sequence (the first ``2^m``
  form a ``(t, m, D)``-net), so the error falls faster than the iid ``M^{-1/2}``: at
  100,000 points it is about 6× smaller for the 8-step ReLU μP training run of
  ``benchmarks/training.py`` (54 dimensions, kinks everywhere) and 50× smaller for
  the smooth ``tanh`` program of ``docs/concepts/evaluation.md``.

Direction numbers are Joe & Kuo's "new-joe-kuo-6.21201" table (primitive polynomials
and initial numbers for 21,201 dimensions; Joe & Kuo, SIAM J. Sci. Comput. 30, 2008),
read from the copy SciPy installs with ``scipy.stats`` without importing ``scipy.stats``
(which takes half a second). Dimensions beyond the table are sampled iid.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np

from ..core.errors import MethodUnavailableError

__all__ = [
    "BITS",
    "MAX_DIM",
    "direction_numbers",
    "scramble",
    "sobol_points",
    "sobol_uniforms",
    "normal_quantile",
    "sobol_normals",
]

#: Binary digits per coordinate: points lie on the grid ``(x + ½) 2^-32``, so a normal
#: sample is never infinite (``|z| ≤ 6.4``; the mass beyond is 2·10⁻¹⁰).
BITS = 32
_ONE = np.uint64(1)


@functools.lru_cache(maxsize=1)
def _joe_kuo() -> tuple[np.ndarray, np.ndarray]:
    """The table's primitive polynomials (full bit patterns, leading and trailing 1
    included; dimension 0 is 1) and initial direction numbers ``m_1, m_2, …``."""
    spec = importlib.util.find_spec("scipy")
    where = spec.submodule_search_locations if spec is not None else None
    path = os.path.join(where[0], "stats", "_sobol_direction_numbers.npz") if where else ""
    if not os.path.exists(path):  # pragma: no cover - SciPy has shipped it since 1.7
        raise MethodUnavailableError(
            "randomised quasi-Monte Carlo needs the Sobol' direction numbers that SciPy "
            f"installs with scipy.stats (not found at {path!r}); pass qmc=False for iid "
            "Monte Carlo samples"
        )
    with np.load(path) as table:
        return table["poly"], table["vinit"]


#: Dimensions covered by the direction numbers.
MAX_DIM = 21201


@functools.lru_cache(maxsize=16)
def direction_numbers(D: int) -> np.ndarray:
    """The Sobol' direction numbers ``v[d, k] = m_{k+1} 2^{BITS-k-1}`` of dimensions ``< D``.

    For a primitive polynomial ``x^s + a_1 x^{s-1} + … + a_{s-1} x + 1`` the numbers
    ``m_k`` (odd, ``< 2^k``) after the ``s`` initial ones follow [Bratley & Fox 1988]

    ``m_k = m_{k-s} ⊕ 2^s m_{k-s} ⊕ ⊕_{i=1}^{s-1} a_i 2^i m_{k-i}``;

    dimension 0 (the van der Corput sequence) has every ``m_k = 1``. Dimensions of one
    degree ``s`` are computed together.

    Returns
    -------
    ndarray of uint64, shape (D, BITS)
    """
    poly, vinit = _joe_kuo()
    D = min(int(D), len(poly))
    poly = poly[:D].astype(np.uint64)
    degree = np.array([int(p).bit_length() - 1 for p in poly])
    m = np.ones((D, BITS), dtype=np.uint64)
    for s in np.unique(degree[degree > 0]):
        rows = np.nonzero(degree == s)[0]
        mm = np.zeros((len(rows), BITS), dtype=np.uint64)
        mm[:, :s] = vinit[rows, :s]
        a = [(poly[rows] >> np.uint64(s - i)) & _ONE for i in range(1, s)]  # a_1 … a_{s-1}
        for k in range(s, BITS):
            x = mm[:, k - s] ^ (mm[:, k - s] << np.uint64(s))
            for i in range(1, s):
                x ^= a[i - 1] * (mm[:, k - i] << np.uint64(i))
            mm[:, k] = x
        m[rows] = mm
    shifts = np.arange(BITS - 1, -1, -1, dtype=np.uint64)
    return m << shifts


def _parity(x: np.ndarray) -> np.ndarray:
    """Parity of the set bits of 32-bit values (uint64 arrays), by folding."""
    for s in (16, 8, 4, 2, 1):
        x = x ^ (x >> np.uint64(s))
    return x & _ONE


def scramble(v: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random linear matrix scramble and digital shift of direction numbers.

    Each dimension's digits (most significant first) are multiplied over GF(2) by a
    random lower-triangular matrix ``L`` with unit diagonal — a digit is changed only by
    more significant ones, which keeps the net structure — and its points are then
    shifted by a random digit vector (``⊕ e``) [Matoušek 1998; Owen 2003]. Row ``i`` of
    ``L`` is a bit mask over the digits, so digit ``i`` of ``L v`` is the parity of
    ``row_i ∧ v``.

    Returns
    -------
    (ndarray, ndarray)
        The scrambled direction numbers (D, BITS) and the shifts (D,), uint64.
    """
    D = v.shape[0]
    i = np.arange(BITS, dtype=np.uint64)
    place = np.uint64(BITS - 1) - i  # digit i is the bit 2^{BITS-1-i}
    above = ((_ONE << i) - _ONE) << (np.uint64(BITS) - i)  # the digits before i
    rows = rng.integers(0, 2**BITS, size=(D, BITS), dtype=np.uint64) & above | (_ONE << place)
    digits = _parity(rows[:, :, None] & v[:, None, :])  # [d, i, k]: digit i of L v_k
    v_scr = np.bitwise_or.reduce(digits << place[None, :, None], axis=1)
    shift = rng.integers(0, 2**BITS, size=D, dtype=np.uint64)
    return v_scr, shift


def sobol_points(
    v: np.ndarray, shift: np.ndarray, start: int, M: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Points ``start … start+M−1`` of the (scrambled) Sobol' sequence, as digits.

    Point ``n`` is ``⊕_{b: bit b of n} v[:, b] ⊕ shift`` (the natural order). The range
    is cut into aligned dyadic blocks ``[a, a + 2^p)``, in which point ``a + j`` is point
    ``a`` ⊕ point ``j`` of the unshifted sequence; the first ``2^p`` points are built by
    doubling (``O(M·D)`` in all).

    Returns
    -------
    ndarray of uint64, shape (D, M)
        Row ``d``: coordinate ``d`` of the points (written to ``out`` if given).
    """
    if start + M > 2**BITS:
        raise ValueError(f"at most 2^{BITS} Sobol' points per sequence")
    blocks = []
    n, end = start, start + M
    while n < end:
        p = (n & -n).bit_length() - 1 if n else BITS
        p = min(p, (end - n).bit_length() - 1)
        blocks.append((n, p))
        n += 1 << p
    P = max(p for _, p in blocks)
    D = v.shape[0]
    T = np.zeros((D, 1 << P), dtype=np.uint64)
    for b in range(P):
        np.bitwise_xor(T[:, : 1 << b], v[:, b, None], out=T[:, 1 << b : 2 << b])
    out = np.empty((D, M), dtype=np.uint64) if out is None else out
    pos = 0
    for a, p in blocks:
        bits = [b for b in range(BITS) if a >> b & 1]
        xa = np.bitwise_xor.reduce(v[:, bits], axis=1) if bits else np.zeros(D, np.uint64)
        np.bitwise_xor(T[:, : 1 << p], (xa ^ shift)[:, None], out=out[:, pos : pos + (1 << p)])
        pos += 1 << p
    return out


# Wichura's AS 241 (PPND16), Applied Statistics 37 (1988) 477–484: the normal quantile
# to about 1e-16, by rational functions in three ranges of the tail probability.
_A = (
    3.3871328727963666080e0,
    1.3314166789178437745e2,
    1.9715909503065514427e3,
    1.3731693765509461125e4,
    4.5921953931549871457e4,
    6.7265770927008700853e4,
    3.3430575583588128105e4,
    2.5090809287301226727e3,
)
_B = (
    1.0,
    4.2313330701600911252e1,
    6.8718700749205790830e2,
    5.3941960214247511077e3,
    2.1213794301586595867e4,
    3.9307895800092710610e4,
    2.8729085735721942674e4,
    5.2264952788528545610e3,
)
_C = (
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
)
_D = (
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
)
_E = (
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
)
_F = (
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
)


#: numerators and denominators of the three ranges, as rows of matrices
_AB, _CD, _EF = np.array([_A, _B]), np.array([_C, _D]), np.array([_E, _F])
#: elements per block of :func:`normal_quantile` (its passes stay in cache; measured
#: fastest on a 2 MiB L2)
_BLOCK = 16384


def _rational(coef: np.ndarray, r: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """``Σ coef[0, i] r^i / Σ coef[1, i] r^i``: both polynomials as one product of the
    coefficients with the powers ``r^0 … r^7`` (written to ``powers``; every term is
    positive where AS 241 uses them, so there is no cancellation)."""
    powers[0] = 1.0
    powers[1] = r
    for i in range(2, len(powers)):
        np.multiply(powers[i - 1], r, out=powers[i])
    nd = coef @ powers
    return np.divide(nd[0], nd[1], out=nd[0])


def normal_quantile(u: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``Φ⁻¹(u)``, the standard normal quantile, for ``0 < u < 1`` (AS 241, ~1e-16).

    Block by block of :data:`_BLOCK` elements (so that the passes stay in cache): the
    central range ``|u − ½| ≤ 0.425``, a rational function of
    ``r = 0.180625 − (u − ½)²``, is evaluated on every element, then the tails
    (rational functions of ``t = √(−log min(u, 1−u))`` up to 5, and beyond) on the
    others. ``out`` (contiguous, float64) may be ``u`` itself.

    Examples
    --------
    >>> from tensorprog.engine.qmc import normal_quantile
    >>> float(normal_quantile(0.975))
    1.959963984540054
    """
    u = np.asarray(u, dtype=float)
    u = u if u.flags.c_contiguous else np.ascontiguousarray(u)
    out = np.empty_like(u) if out is None else out
    flat, res = u.reshape(-1), out.reshape(-1)
    n = min(_BLOCK, flat.size)
    q, r, powers = np.empty(n), np.empty(n), np.empty((len(_A), n))
    for s in range(0, flat.size, _BLOCK):
        ub, ob = flat[s : s + _BLOCK], res[s : s + _BLOCK]
        k = len(ub)
        qb, rb = q[:k], r[:k]
        np.subtract(ub, 0.5, out=qb)
        idx = np.flatnonzero(np.abs(qb) > 0.425)
        ut = ub[idx]  # (before ob, which may be ub, is written)
        np.multiply(qb, qb, out=rb)
        np.subtract(0.180625, rb, out=rb)
        np.multiply(_rational(_AB, rb, powers[:, :k]), qb, out=ob)
        if len(idx):
            t = np.sqrt(-np.log(np.minimum(ut, 1.0 - ut)))  # the smaller tail probability
            far = t > 5.0
            if far.any():  # (beyond 1e-11 of tail probability)
                z = np.empty_like(t)
                for sel, coef, shift in ((~far, _CD, 1.6), (far, _EF, 5.0)):
                    ts = t[sel] - shift
                    z[sel] = _rational(coef, ts, np.empty((coef.shape[1], len(ts))))
            else:
                t -= 1.6
                z = _rational(_CD, t, powers[:, : len(t)])
            ob[idx] = np.copysign(z, qb[idx])
    return out[()] if out.ndim == 0 else out


def sobol_uniforms(
    d: int, M: int, rng: np.random.Generator, start: int = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """Uniforms (d, M) in (0, 1): points ``start …`` of one random scramble of the first
    ``d ≤`` :data:`MAX_DIM` Sobol' dimensions (the centres of their ``2^-BITS`` cells).

    The scramble is drawn from ``rng`` first, so the same generator state gives the
    same scramble whatever ``start`` (chunks of one replicate see one sequence). The
    digits are computed in the memory of ``out`` (contiguous), so the only other array
    is the doubling table.
    """
    out = np.empty((d, M)) if out is None else out
    v, shift = scramble(direction_numbers(d), rng)
    x = sobol_points(v, shift, start, M, out=out.view(np.uint64))
    np.add(x, 0.5, out=out)  # elementwise in place
    out *= 2.0**-BITS
    return out


def sobol_normals(
    D: int, M: int, rng: np.random.Generator, start: int = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """Standard normals (D, M): :func:`sobol_uniforms` through :func:`normal_quantile`.

    Dimensions beyond :data:`MAX_DIM` are iid normals from a stream seeded by ``rng``
    (after the scramble) and ``start`` (another one for each chunk of a replicate).
    """
    out = np.empty((D, M)) if out is None else out
    d = min(D, MAX_DIM)
    normal_quantile(sobol_uniforms(d, M, rng, start, out=out[:d]), out=out[:d])
    if D > d:
        seed = np.random.SeedSequence([int(rng.integers(2**63)), start])
        np.random.default_rng(seed).standard_normal(out=out[d:])
    return out
