"""Monte Carlo over the limit: sample every base Gaussian, evaluate every ``Z``.

One pass walks the program in order with every vector an array of shape ``(K, M)``:
``M`` samples of its ``Z`` in each of ``K`` independent replicates — ``K`` "width-M"
runs of the *limit*, with no matrices, sharing one walk (the interpreter's overhead is
paid once per pass, not once per replicate):

* the samples of every base Gaussian are standard normals drawn up front, one row
  per base Gaussian: by default randomised quasi-Monte Carlo points (an independently
  scrambled Sobol' sequence per replicate, :mod:`.qmc`), else iid;
* initial vectors: the joint law's factor times their rows;
* MatMul ``Wx``: ``Ẑ^{Wx}`` is drawn conditionally on the earlier hats of its family
  (incremental, rank-tolerant Cholesky of ``σ_W² 𝔼[Z^x Z^{x'}]``, one factor per
  replicate), then ``Z = Ẑ + Σ_i c_i Z^{y^i}`` with ``c = σ_W² 𝔼[∂Z^x/∂Ẑ_S]`` from the
  Stein/regression form ``Cov(Ẑ_S)⁻¹ 𝔼[Ẑ_S Z^x]`` (a least-squares fit of ``Z^x`` on the
  hats it depends on) [TP4 Remark F.2], [TP3 Remark 2.12] — valid for relu and step;
* Moments are sample means; a Moment ``𝔼[Z^a Z^b]`` and the hat covariance of the same
  two vectors are one estimate.

Vectors that are read together live as rows of *stacks* (:class:`_Schedule`), so that
hats, Ż terms and linear updates are batched matrix products, one per instruction.

Every estimate (a Moment, a hat second moment, a regression coefficient) is taken per
replicate, an array of shape ``(K, 1)`` that broadcasts against the samples; quantities
the deterministic pass already knows exactly are used as constants. The value of a
scalar is the mean of its replicate estimates and the standard error their spread over
``√K``, which accounts for every source of noise (estimated covariances, regressions,
propagated moments).

Memory: a pass holds as many replicates as fit in ``max_memory``; a replicate that does
not fit on its own runs in chunks of samples, in sweeps (see :class:`MonteCarloPass`).
Replicate ``r`` draws its normals from its own stream in the same order however the
replicates are grouped into passes, so the result depends on ``max_memory`` only
through floating-point summation order. Passes run concurrently, one thread per core
(numpy releases the GIL inside its kernels; the interpreter's share, about 10 ms a pass
for 900 instructions, does not overlap); each has its own replicates, so the result
does not depend on the scheduling either.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special
import sympy

from ..._resources import available_cpus, gib, refuse, require
from ...errors import NumericalError, TensorProgramError
from ...gaussian import psd_factor
from ...interpreter import Interpreter, annotate
from ...ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from ..existence import integrand, tilt
from ..forms import lambdify_integrand
from ..growth import POLY_TAIL_DEGREE, moment_degrees
from ..plan import Plan
from ..qmc import MAX_DIM, normal_quantile, sobol_normals, sobol_uniforms
from ..tails import StableError, khat_of_tops, merge_tops, stable_errors, tail_size, top_values

__all__ = ["MonteCarloPass", "run_montecarlo"]

_PENDING = None  # a value not computable in this sweep (chunked replicates only)
#: Draws of a Monte Carlo run that the Pareto k̂ of a Moment is fitted to (the first
#: ``⌈TAIL_DRAWS/K⌉`` samples of each of the ``K`` replicates of larger runs): the sample
#: size at which its thresholds were calibrated (``benchmarks/calibration.py``, 2¹⁴
#: samples), and a bounded cost — a partial sort of every Moment's samples was half of a
#: 100,000-sample training limit. A *prefix*, not a strided subsample: every 2^j-th point
#: of a Sobol' sequence lies in one slab of width 2^{−j} of its first coordinate, which
#: may miss the singularity that makes a tail heavy (𝔼|v|^{−0.7} looked light-tailed,
#: k̂ ≈ −0.9, on 4 of 20 QMC seeds); a prefix of a scrambled Sobol' sequence is spread
#: over the whole cube.
TAIL_DRAWS = 2**14
_RTOL_PIVOT = 1e-12  # Cholesky: pivots / remainders below this × max(1, |var|) are zero
_RCOND = 1e-10  # regression: eigenvalues of Cov(Ẑ_S) below this × the largest are dropped
#: Replicates per pass are capped at this many samples in all (a vector of 512 KiB):
#: beyond it the interpreter's overhead is already amortised and bigger arrays only
#: stream from slower memory.
_PASS_SAMPLES = 2**16
#: Concurrent passes (threads) at most; also bounded by the cores this process may use.
_MAX_WORKERS = 4
#: iid normals come in blocks of this many samples, one generator each
#: (:func:`_iid_normals`); chunks of long replicates are multiples of it.
_IID_BLOCK = 4096
#: Normals per call of the iid generator at most (512 KiB of float64: the temporary
#: stays in cache for its transposed copy).
_IID_SCRATCH = 2**16


class _Block:
    """Terms ``Σ_t c_t Π_{j∈P_t} θ_j Z^{x_t}`` whose vectors fill rows ``lo..hi−1`` of
    one stack: one batched product ``C · stack[lo:hi]``.

    ``numbers`` (m,) are the ``c_t`` and ``consts`` (m, p) the constant ids of the
    ``θ_j`` (columns of a pass's table of scalars), in row order, padded with ``-1``
    (the table's last column, all ones).
    """

    __slots__ = ("sid", "lo", "hi", "numbers", "consts")

    def __init__(self, sid: int, terms: list[tuple[int, float, tuple[int, ...]]]) -> None:
        # terms: (row, number, constant ids), rows contiguous
        terms = sorted(terms)
        self.sid, self.lo, self.hi = sid, terms[0][0], terms[-1][0] + 1
        self.numbers = np.array([c for _, c, _ in terms])
        width = max(len(P) for _, _, P in terms)
        self.consts = np.array([list(P) + [-1] * (width - len(P)) for _, _, P in terms],
                               dtype=np.intp).reshape(len(terms), width)

    def coefficients(self, theta: np.ndarray) -> np.ndarray:
        """``C`` of shape (K, m) from the table of scalars ``theta`` (K, constants + 1)."""
        return self.numbers * theta[:, self.consts].prod(axis=-1)


class _Linear:
    """How a pass evaluates a linear Nonlin ``Σ_t c_t Π_{j∈P_t} θ_j Z^{x_{i_t}}``.

    ``base``: the index of an argument entering with coefficient exactly 1 (added to
    the blocks' sum), or ``None``; ``blocks``: :class:`_Block` s; ``loose``: the other
    terms ``(arg index, number, parameter indices)``, one array operation each.
    """

    __slots__ = ("base", "blocks", "loose")

    def __init__(self, base: int | None, blocks: list[_Block],
                 loose: list[tuple[int, float, tuple[int, ...]]]) -> None:
        self.base, self.blocks, self.loose = base, blocks, loose


class _Schedule:
    """How a pass evaluates a program, worked out once per program.

    Storage: some vectors live in *stacks*, arrays of shape ``(K, size, M)`` whose
    rows are vectors, so that a linear combination of many of them, or their inner
    products with one vector, is one batched matrix product over contiguous memory
    instead of one array operation per vector:

    * every hat family has a stack of its members' inputs ``Z^x`` (row ``j``: member
      ``j``'s), which the conditional draws, the Ż terms and the covariances read;
    * the vectors that linear Nonlins combine are gathered greedily into further
      stacks: a Nonlin's new vectors open a stack, or extend one whose end its other
      vectors already occupy (a training unroll's updates combine the growing
      history ``dh_0, dh_1, …``, which so stays one contiguous block).

    A vector lives in one place (its first stack); a family whose member multiplies
    a vector stored elsewhere copies it into its own stack.

    Attributes
    ----------
    dead : list of list of Var
        Per instruction, the vectors read for the last time there (or never read):
        a pass drops them, so that later vectors reuse their memory.
    release : list of list of int
        Per instruction, the combination stacks whose members are all dead after it.
    home : dict
        ``Var -> (stack id, row)`` for the vectors that live in a stack.
    sizes : list of int
        Rows of every stack.
    family_stack : dict
        Hat family -> the stack of its inputs.
    rows : dict
        Hat family -> its first row in a pass's block of standard normals, which has
        ``D`` rows: the initial vectors' first, then each family's members in order.
    pairs : dict
        Moment -> the key of ``𝔼[Z^a Z^b]`` for Moments ``𝔼[Z^a Z^b]`` or ``𝔼[(Z^a)²]``
        of their arguments: one estimate per unordered pair of vectors, shared with the
        hat covariances (the same sums).
    cov_keys, cov_known : dict
        Hat ``bid`` -> the pair keys of its input with the inputs of its family's
        members ``0..index``, and the values the deterministic pass found (or None).
    D : int
        Rows of a pass's block of normals: one per base Gaussian.
    linear : dict
        Nonlin -> :class:`_Linear`, for Nonlins whose body is linear in its vectors.
    cid : dict
        Scalar Var -> its constant id.
    known : dict
        Constant id -> value, for every constant the deterministic pass found.
    """

    def __init__(self, plan: Plan) -> None:
        der = plan.der
        instructions = der.program.instructions
        self.cid = {v: c.cid for v, c in der.scalar_const.items()}
        self.known = {c.cid: float(plan.values[rid]) for c in der.consts
                      for rid in [plan.const_req[c.cid]] if plan.deterministic[rid]}
        known_pairs = {k: float(plan.values[rid]) for k, rid in plan.cov_req.items()
                       if plan.deterministic[rid]}  # (bid, bid), ascending
        last: dict[Any, int] = {}
        for i, instr in enumerate(instructions):
            last[instr.out] = i
            for v in instr.inputs:
                last[v] = i
        self.dead: list[list[Any]] = [[] for _ in instructions]
        for v, i in last.items():
            if v.kind == "vector":
                self.dead[i].append(v)
        self.pairs = {i: self.pair(i.args[0], i.args[-1]) for i in instructions
                      if isinstance(i, Moment) and _is_product(i.fn)}
        #: Moments sampled under an exponential tilt (:func:`_tilts`)
        self.tilts = _tilts(plan, self.known)
        #: Moments whose integrands grow at most polynomially (degree ≤
        #: :data:`~.growth.POLY_TAIL_DEGREE`): light tails, no Pareto fit
        self.light = {self.cid[v] for v, p in moment_degrees(plan.der).items()
                      if p is not None and p <= POLY_TAIL_DEGREE and v in self.cid}
        self.home: dict[Any, tuple[int, int]] = {}
        self.sizes: list[int] = []
        self.family_stack: dict[Any, int] = {}
        for instr in instructions:
            if isinstance(instr, MatMul):
                b = der.nodes[instr.out].base
                sid = self.family_stack.get(b.family)
                if sid is None:
                    sid = self.family_stack[b.family] = self._new_stack(0)
                    self.sizes[sid] = len(der.families[b.family])
                self.home.setdefault(instr.arg, (sid, b.index))
        self.cov_keys: dict[int, list[PairKey]] = {}
        self.cov_known: dict[int, list[float | None]] = {}
        for bs in der.families.values():
            for b in bs:
                if b.family is None:
                    continue
                x, earlier = der.hat_arg[b.bid], bs[: b.index + 1]
                self.cov_keys[b.bid] = [self.pair(der.hat_arg[o.bid], x) for o in earlier]
                self.cov_known[b.bid] = [known_pairs.get((o.bid, b.bid)) for o in earlier]
        families = len(self.sizes)
        #: first row of each hat family's normals in a pass's block (after the initial
        #: vectors' rows); D rows in all, one per base Gaussian
        self.rows: dict[Any, int] = {}
        n = len(der.families.get(None, ()))
        for fam in self.family_stack:
            self.rows[fam] = n
            n += len(der.families[fam])
        self.D = n
        self.linear: dict[Any, _Linear] = {}
        for instr in instructions:
            if isinstance(instr, Nonlin):
                terms = _linear_terms(instr.fn)
                if terms is not None:
                    self.linear[instr] = self._plan_linear(instr, terms, families)
        members: dict[int, int] = {}  # combination stack -> last use of its members
        for v, (sid, _) in self.home.items():
            if sid >= families:
                members[sid] = max(members.get(sid, -1), last[v])
        self.release: list[list[int]] = [[] for _ in instructions]
        for sid, i in members.items():
            self.release[i].append(sid)

    def _new_stack(self, size: int) -> int:
        self.sizes.append(size)
        return len(self.sizes) - 1

    def _plan_linear(self, instr: Any, terms: list[tuple[int, float, tuple[int, ...]]],
                     families: int) -> _Linear:
        base = next((i for i, c, P in terms if c == 1.0 and not P), None)
        scaled = [t for t in terms if t[0] != base]
        vecs = [instr.args[i] for i, _, _ in scaled]
        home = self.home
        if len(set(vecs)) == len(vecs):  # gather the new vectors into a combination stack
            new = [v for v in vecs if v not in home]
            rows: dict[int, list[int]] = {}
            for v in vecs:
                if v in home:
                    rows.setdefault(home[v][0], []).append(home[v][1])
            tails = [sid for sid, r in rows.items() if sid >= families
                     and max(r) == self.sizes[sid] - 1 and len(r) == max(r) - min(r) + 1]
            if new and (tails or len(new) > 1):
                sid = tails[0] if tails else self._new_stack(0)
                for v in new:
                    home[v] = (sid, self.sizes[sid])
                    self.sizes[sid] += 1
        by_stack: dict[int, list[tuple[int, float, tuple[int, ...]]]] = {}
        for i, c, P in scaled:
            h = home.get(instr.args[i])
            if h is not None:
                cids = tuple(self.cid[instr.params[j]] for j in P)
                by_stack.setdefault(h[0], []).append((h[1], c, cids))
        blocks = []
        for sid, ts in by_stack.items():
            rows_ = sorted(r for r, _, _ in ts)
            if len(ts) > 1 and rows_ == list(range(rows_[0], rows_[0] + len(ts))):
                blocks.append(_Block(sid, ts))
        blocked = {(b.sid, r) for b in blocks for r in range(b.lo, b.hi)}
        loose = [(i, c, P) for i, c, P in scaled if home.get(instr.args[i]) not in blocked]
        return _Linear(base, blocks, loose)

    def pair(self, a: Any, b: Any) -> PairKey:
        """The estimate key of ``𝔼[Z^a Z^b]`` (unordered)."""
        return PairKey(a.id, b.id) if a.id <= b.id else PairKey(b.id, a.id)


class _MCTilt:
    """A Moment ``𝔼[h(g) e^{P(g)}]`` over initial vectors sampled under the tilted law:
    ``𝔼[h e^P] = e^c 𝔼[h(g')]``, ``g' = μ' + F'ξ ~ N(μ', Σ')`` (the exact change of
    measure of :meth:`.existence.Tilt.law`).

    For ``e^{aᵀg}`` this shifts the mean by ``Σa`` (importance sampling with the
    zero-variance proposal of the exponential factor): ``𝔼 e^{5v}`` is exact, and
    ``𝔼[tanh(v)² e^{2v}]`` samples where the integrand's mass is, instead of averaging
    a lognormal whose Pareto ``k̂`` is 0.6 (an untrustworthy replicate spread).

    When the tilt took the growing branch of a ``max`` (``e^{a relu(v)} = e^{av}·h``,
    ``h = e^{a relu(−v)}``), ``h`` still grows where the tilted law rarely looks, and the
    samples are a *defensive mixture* instead (Hesterberg, "Weighted average importance
    sampling and defensive mixture distributions", Technometrics 37, 1995; Owen & Zhou,
    "Safe and effective importance sampling", JASA 95, 2000): each normal ``ξ`` gives
    ``g₀ = μ + Fξ`` under the original law and ``g₁ = μ' + F'ξ`` under the tilted one,
    and with the mixture ``q = (p₀ + p₁)/2`` and ``t = P − c`` (so ``p₁/p₀ = e^t``),
    ``𝔼 f = e^c 𝔼[h(g₀) σ(t(g₀)) + h(g₁) σ(t(g₁))]`` (``σ`` the logistic function;
    ``f p₀/q = 2e^c h σ(t)``). Each term is bounded by both ``f`` and ``e^c h``: the
    weights are bounded where either law alone leaves a heavy tail.
    """

    __slots__ = ("h", "cids", "mean", "F", "scale", "P", "mean0", "F0", "logc")

    def __init__(self, h: Any, cids: tuple[int, ...], mean: np.ndarray, F: np.ndarray,
                 scale: float, mixture: tuple[Any, np.ndarray, np.ndarray, float] | None = None
                 ) -> None:
        self.h, self.cids, self.mean, self.F, self.scale = h, cids, mean, F, scale
        #: the defensive mixture's ``P`` (numeric), original law ``(μ, F)`` and ``c``
        self.P, self.mean0, self.F0, self.logc = mixture or (None, None, None, 0.0)


def _tilts(plan: Plan, known: dict[int, Any]) -> dict[Any, _MCTilt]:
    """The Moments Monte Carlo estimates under an exponential tilt: integrands
    ``h·exp(P)`` (:func:`.existence.tilt`, ``P`` with numeric coefficients, of degree 1
    or 2) of initial vectors only, whose tilted law exists."""
    from ..symbols import g

    der = plan.der
    out: dict[Any, _MCTilt] = {}
    for instr in der.program.instructions:
        if not isinstance(instr, Moment):
            continue
        cid = der.scalar_const[instr.out].cid
        req = plan.requests[plan.const_req[cid]]
        if cid in known or req.layout is None or not req.bids or any(
                gr >= 0 for gr in req.groups):
            continue
        expr = integrand(plan, req)
        d, m = len(req.bids), len(req.cids)
        tl = tilt(expr, d, m, branches=True) if expr is not None else None
        if tl is None or tl.P.free_symbols - {g(i) for i in range(d)}:
            continue
        idx = der.base_init_index[np.array(req.bids, dtype=np.intp)]
        mean = np.asarray(der.init_mean, dtype=float)[idx]
        cov = np.asarray(der.init_cov, dtype=float)[np.ix_(idx, idx)]
        law = tl.law(mean[None], cov[None], np.zeros((1, m)))
        if law is None:
            continue  # (not integrable: refused by the existence check)
        mean2, cov2, c = law
        mixture = None
        if tl.branched:
            F0 = psd_factor(cov, what="covariance")
            mixture = (lambdify_integrand(tl.P, d, 0), mean, F0, float(c[0]))
        out[instr] = _MCTilt(lambdify_integrand(tl.h, d, m), tuple(req.cids), mean2[0],
                             psd_factor(cov2[0], what="tilted law"), float(np.exp(c[0])),
                             mixture)
    return out


def _is_product(fn: Any) -> bool:
    """Whether ``fn`` is ``x0·x1`` or ``x0²`` (no parameters)."""
    if fn.nparams or fn.arity not in (1, 2):
        return False
    return bool(fn.body == fn.args[0] * fn.args[-1])


def _linear_terms(fn: Any) -> list[tuple[int, float, tuple[int, ...]]] | None:
    """``fn.body`` as terms ``(arg index, number, parameter indices)``, if it is linear.

    Only bodies that are sums of ``number · parameters · one argument`` qualify (no
    powers, functions or constant terms); anything else gives ``None``.
    """
    xs = {x: i for i, x in enumerate(fn.args)}
    ps = {p: j for j, p in enumerate(fn.params)}
    terms = []
    for term in sympy.Add.make_args(fn.body):
        c, factors = term.as_coeff_mul()  # (a Float factor stays among the factors)
        arg, P = None, []
        for f in factors:
            if f in xs and arg is None:
                arg = xs[f]
            elif f in ps:
                P.append(ps[f])
            elif f.is_Number:
                c *= f
            else:
                return None
        if arg is None or not c.is_Number:
            return None
        terms.append((arg, float(c), tuple(P)))
    return terms


def _combine(lin: _Linear, args: list[Any], params: list[Any], theta: np.ndarray,
             stacks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The linear Nonlin planned as ``lin`` (see :class:`_Schedule`), in one new array:
    each block by one batched product, then its base argument and the loose terms
    accumulated in place."""
    out = None
    for blk in lin.blocks:
        part = _combination(blk.coefficients(theta), stacks[blk.sid][:, blk.lo:blk.hi])
        if out is None:
            out = part
        else:
            out += part
    if lin.base is not None:  # (added, not copied first: one pass less)
        base = args[lin.base]
        out = np.array(np.broadcast_to(base, shape)) if out is None else np.add(out, base, out=out)
    tmp = None
    for i, c, P in lin.loose:
        coef: Any = c
        for j in P:
            coef = coef * params[j]
        if out is None:
            out = np.multiply(args[i], coef)
            if out.shape != shape:
                out = np.array(np.broadcast_to(out, shape))
        else:
            tmp = np.multiply(args[i], coef, out=tmp if tmp is not None else np.empty(shape))
            out += tmp
    return out


@dataclass(frozen=True, slots=True)
class MomentKey:
    """Estimate key: the mean of the Moment of constant ``cid``."""

    cid: int


@dataclass(frozen=True, slots=True)
class PairKey:
    """Estimate key: ``𝔼[Z^a Z^b]`` of the vectors with ids ``i ≤ j``."""

    i: int
    j: int


@dataclass(frozen=True, slots=True)
class DotKey:
    """Estimate key: the ZDot regression coefficients of the MatMul whose hat is ``bid``."""

    bid: int


class _Estimates:
    """The replicates' estimates so far (shared by the chunks and sweeps of one pass).

    Keys: :class:`MomentKey` a Moment's mean; :class:`PairKey` the second moment
    ``𝔼[Z^a Z^b]`` of two vectors (a product Moment, or the covariance of two hats of
    one family: the same sums serve both); :class:`DotKey` the regression coefficients
    of a MatMul's ZDot. ``acc`` holds this sweep's sums over samples,
    ``final`` finished estimates (arrays with the replicate axis first), ``L[family]``
    the ``(K, n, n)`` factor of the family's hat covariance with ``factored[family]``
    rows done, ``U[family]`` its rank-tolerant inverse (see :func:`_factor_row`).
    """

    def __init__(self, M: int) -> None:
        self.M = M  # samples per replicate (all chunks)
        self.final: dict[Any, np.ndarray] = {}
        self.acc: dict[Any, tuple[np.ndarray, ...]] = {}
        self.L: dict[Any, np.ndarray] = {}
        self.U: dict[Any, np.ndarray] = {}
        self.factored: dict[Any, int] = {}
        #: Moment const id -> the ``tail + 1`` largest |integrand| values of the pass's
        #: replicates (1, ·), merged over chunks: the tail diagnostic (:mod:`.tails`).
        #: ``tail`` is that of all the run's tail draws (set by :func:`run_montecarlo`), so
        #: that the passes' tops hold the run's.
        self.tops: dict[int, np.ndarray] = {}
        self.tail = tail_size(M)
        #: The first ``prefix`` samples of each replicate enter the tails (None: all;
        #: :data:`TAIL_DRAWS`).
        self.prefix: int | None = None

    def add_tail(self, cid: int, values: np.ndarray) -> None:
        """Merge a chunk's samples (K, C) of Moment ``cid``'s integrand into its tail (of
        all the chunk's replicates together: a partition of K·C values for the largest
        ``tail + 1``, instead of one per replicate that kept a third of each)."""
        self.tops[cid] = merge_tops(self.tops.get(cid),
                                    top_values(values.reshape(1, -1), self.tail), self.tail)

    def add(self, key: Any, sums: tuple[np.ndarray, ...]) -> None:
        """Add one chunk's sums to the running sums of ``key``."""
        acc = self.acc.get(key)
        with np.errstate(all="ignore"):
            self.acc[key] = sums if acc is None else tuple(a + b for a, b in zip(acc, sums))

    def finish(self, key: Any = None) -> int:
        """Turn the running sums of ``key`` (default: all) into estimates; how many."""
        keys = list(self.acc) if key is None else [key]
        for k in keys:
            sums = self.acc.pop(k)
            self.final[k] = _regression(sums, self.M) if isinstance(k, DotKey) else sums[0] / self.M
        return len(keys)


def _regression(sums: tuple[np.ndarray, ...], n: int) -> np.ndarray:
    """Least-squares slopes of ``z`` on hats ``H`` from sample sums, per replicate.

    Parameters
    ----------
    sums : tuple of ndarray
        ``ΣH`` (K, k), ``Σz`` (K, 1), ``ΣHHᵀ`` (K, k, k) and ``ΣHz`` (K, k) over ``n``
        samples.
    n : int
        The number of samples.

    Returns
    -------
    ndarray, shape (K, k)
        ``β = Cov(H)⁺ Cov(H, z)`` — the pseudo-inverse drops eigenvalues below
        ``1e-10`` times the largest, so collinear hats (a rank-deficient family) share
        their coefficient.

    Notes
    -----
    Where a replicate's ``Cov(H)`` is provably that well conditioned, its
    pseudo-inverse is its inverse, applied through a Cholesky factor ``Cov(H) = LLᵀ``
    (a tenth of the cost of the eigendecomposition): with ``λ_min ≥ 1/‖L⁻¹‖_F²`` and
    ``λ_max ≤ tr Cov(H)``, no eigenvalue is dropped if
    ``1/‖L⁻¹‖_F² > 10⁻¹⁰ tr Cov(H)``.
    The other replicates (those whose factorisation fails included) get the
    pseudo-inverse from the eigendecomposition. The choice is made per replicate, so
    a replicate's estimate does not depend on the others in its pass.
    """
    sh, sz, shh, shz = sums
    with np.errstate(all="ignore"):
        cov_h = shh / n - sh[:, :, None] * sh[:, None, :] / n**2
        cov_hz = shz / n - sh * sz / n**2
        beta = np.empty_like(cov_hz)
        Linv = _cholesky_inverse(cov_h)
        good = 1.0 / np.einsum("rij,rij->r", Linv, Linv) > _RCOND * np.trace(cov_h, axis1=1,
                                                                            axis2=2)
        if good.any():
            Lg = Linv[good]
            beta[good] = (Lg.transpose(0, 2, 1) @ (Lg @ cov_hz[good, :, None]))[:, :, 0]
        bad = ~good
        if bad.any():
            beta[bad] = (np.linalg.pinv(cov_h[bad], rcond=_RCOND, hermitian=True)
                         @ cov_hz[bad, :, None])[:, :, 0]
    return beta


def _cholesky_inverse(A: np.ndarray) -> np.ndarray:
    """``L⁻¹`` of ``A = LLᵀ`` per matrix of a (K, k, k) batch; ``inf`` where ``A`` is not
    numerically positive definite (each matrix on its own: numpy fails a whole batch)."""
    try:
        return np.linalg.inv(np.linalg.cholesky(A))
    except np.linalg.LinAlgError:
        out = np.full_like(A, np.inf)
        for r, a in enumerate(A):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[r] = np.linalg.inv(np.linalg.cholesky(a))
        return out


def _factor_row(L: np.ndarray, U: np.ndarray, k: int, cov: np.ndarray) -> None:
    """Row ``k`` of a batch of rank-tolerant lower-triangular factors and their inverses.

    Parameters
    ----------
    L : ndarray, shape (K, n, n)
        One factor per replicate; rows ``< k`` are done. Row ``k`` is filled in place.
    U : ndarray, shape (K, n, n)
        ``L⁺``, the rank-tolerant inverse of ``L`` (rows ``< k`` done), kept alongside
        so that a row costs two small batched products instead of ``k`` steps.
    k : int
        The row to fill.
    cov : ndarray, shape (K, k + 1)
        The new member's covariance with members ``0..k`` (the last entry its variance).

    Notes
    -----
    ``L[k, :k]`` solves ``L[:k, :k] x = cov[:k]`` by forward substitution, with
    ``x_i = 0`` where the pivot ``L[i, i]`` is 0 (a direction this replicate's family does
    not span); that substitution is linear in ``cov``, ``x = U[:k, :k] cov[:k]``, with
    ``U[i] = (e_i − Σ_{j<i} L[i, j] U[j]) / L[i, i]`` (0 for a zero pivot). The pivot
    ``L[k, k]`` is the square root of the remainder ``var − Σ_i L[k, i]²``, or 0 when
    that is at most ``1e-12 max(1, |var|)``. Replicates may differ in their ranks.
    """
    var = cov[:, k]
    tol = _RTOL_PIVOT * np.maximum(1.0, np.abs(var))
    with np.errstate(all="ignore"):
        row = np.matmul(U[:, :k, :k], cov[:, :k, None])[:, :, 0]
        L[:, k, :k] = row
        d = var - np.einsum("ri,ri->r", row, row)
        piv = np.sqrt(np.where(d > tol, d, 0.0))
        L[:, k, k] = piv
        inv = np.where(piv > 0.0, 1.0 / piv, 0.0)
        U[:, k, :k] = -inv[:, None] * np.matmul(row[:, None, :], U[:, :k, :k])[:, 0]
        U[:, k, k] = inv


class _Family:
    """One hat family's samples in one pass (or chunk), member by member.

    ``normals[:, j]`` (rows of the pass's block of normals), ``inputs[:, j]`` (the
    family's input stack, see :class:`_Schedule`) and ``hats[:, j]`` (each (K, M)) are
    member ``j``'s standard normal, the ``Z^x`` it multiplies (valid when ``ready[j]``)
    and its ``Ẑ``; hats exist for a prefix of ``nhats`` members. ``gram``/``hsum`` hold the
    sample sums ``Σ Ẑ_i Ẑ_j`` and ``Σ Ẑ_i`` for the first ``ngram`` members, filled on
    demand (each member once: ``O(M k)``, not ``O(M k²)`` per regression).
    """

    def __init__(self, inputs: np.ndarray, normals: np.ndarray) -> None:
        K, n, M = inputs.shape
        self.normals = normals
        self.inputs = inputs
        self.hats = np.empty((K, n, M))
        self.ready = [False] * n
        self.nhats = 0
        self.gram = np.empty((K, n, n))
        self.hsum = np.empty((K, n))
        self.ngram = 0

    def sums(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``Σ Ẑ_i Ẑ_l`` (K, j, j) and ``Σ Ẑ_i`` (K, j) over the first ``j`` members."""
        for i in range(self.ngram, j):
            g = _inner(self.hats[:, : i + 1], self.hats[:, i])
            self.gram[:, i, : i + 1] = g
            self.gram[:, : i + 1, i] = g
            self.hsum[:, i] = self.hats[:, i].sum(axis=-1)
        self.ngram = max(self.ngram, j)
        return self.gram[:, :j, :j], self.hsum[:, :j]


def _combination(coef: np.ndarray, stack: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``Σ_j coef[:, j] · stack[:, j]`` per replicate: (K, j), (K, j, M) → (K, M).

    One batched ``matmul`` (a BLAS product per replicate, the GIL released once); with
    contiguous coefficient rows a replicate's result does not depend on how many share
    the pass.
    """
    coef = np.ascontiguousarray(coef)[:, None, :]  # (strided rows take other code paths)
    if out is None:
        return np.matmul(coef, stack)[:, 0]
    np.matmul(coef, stack, out=out[:, None, :])
    return out


def _inner(stack: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``Σ_samples stack[:, j] · z`` per replicate: (K, j, M), (K, M) → (K, j).

    ``einsum`` rather than a batched ``matmul`` of the stack with a column: it releases
    the GIL for the whole call (concurrent passes overlap), and each replicate's sums
    do not depend on how many share the pass.
    """
    return np.einsum("rjm,rm->rj", stack, z)


def _first_bad(value: Any) -> Any:
    """The first non-finite entry of ``value`` (for error messages)."""
    value = np.asarray(value)
    return value[~np.isfinite(value)].flat[0] if value.ndim else value


class MonteCarloPass(Interpreter):
    """``K`` replicates of ``M`` samples each: every vector as a (K, M) array of its ``Z``.

    Scalars estimated by Monte Carlo are (K, 1) arrays (one per replicate) and scalars
    the deterministic pass knows are ``np.float64``; both broadcast against the samples.

    Parameters
    ----------
    plan : Plan
        The planned requests; ``plan.requests[rid].value`` is used wherever the request
        is ``deterministic``.
    K : int
        Replicates in this pass.
    M : int
        Samples per replicate in this pass (a chunk's size when ``state`` is given).
    normals : callable
        ``() -> (K, D, M)`` standard normals (``D = schedule.D``, one row per base
        Gaussian, see :class:`_Schedule`), replicate ``r``'s from its own stream;
        called once, when the first base Gaussian is needed.
    state : _Estimates, optional
        The estimates of a replicate run in chunks (shared by the chunks and sweeps);
        by default a fresh one for ``M`` samples.
    schedule : _Schedule, optional
        The program's evaluation schedule (computed if not given).

    Notes
    -----
    An estimate (a Moment, a hat covariance, a regression) must be taken over the whole
    replicate before anything downstream uses it. When the pass holds the whole
    replicate it is finished on the spot. Otherwise (``M`` < ``state.M``) the replicate
    runs in sweeps over its chunks: each sweep computes what the finished estimates
    allow, accumulates the sums of the next ones (:meth:`_estimate`) and marks
    everything downstream pending (``self.pending``). A chunk draws the same normals in
    every sweep (pending or not), so every sweep sees the same samples.
    """

    def __init__(self, plan: Plan, K: int, M: int, normals: Callable[..., np.ndarray],
                 state: _Estimates | None = None, schedule: _Schedule | None = None) -> None:
        super().__init__(plan.der.program)
        self.plan = plan
        self.der = plan.der
        self.shape = (K, M)
        self.normals = normals
        self.state = state if state is not None else _Estimates(M)
        self.whole = M == self.state.M
        self.schedule = schedule if schedule is not None else _Schedule(plan)
        self.pending = False
        self.fam: dict[Any, _Family] = {}
        self.const: dict[int, Any] = {}
        #: every scalar's value, column ``cid`` (K, constants + 1; the last column ones)
        self.theta = np.ones((K, len(self.der.consts) + 1))
        self.stacks: dict[int, np.ndarray] = {}
        self._added: set[Any] = set()  # estimates whose sums this chunk has added
        self._init: np.ndarray | None = None
        self._xi: np.ndarray | None = None

    def _normals(self) -> np.ndarray:
        """The pass's block of standard normals, (K, D, M), drawn on first use."""
        if self._xi is None:
            self._xi = self.normals()
        return self._xi

    def run(self) -> dict[Any, Any]:
        """Interpret every instruction, storing vectors in their stacks and dropping
        each after its last use.

        Floating-point warnings are off for the whole pass: non-finite values are
        found by explicit checks (on Nonlin outputs, ``Z`` of MatMuls and every
        estimate) and reported by name.
        """
        sched, env, stacks = self.schedule, self.env, self.stacks
        home = sched.home
        table = {cls: getattr(self, name) for cls, name in self.rules.items()}
        instr = None
        try:
            with np.errstate(all="ignore"):
                for instr, dead, release in zip(self.program.instructions, sched.dead,
                                                sched.release):
                    val = table[type(instr)](instr)
                    h = home.get(instr.out)
                    if h is not None and val is not _PENDING:
                        slot = self._stack(h[0])[:, h[1]]
                        slot[...] = val
                        val = slot
                    env[instr.out] = val
                    for v in dead:
                        del env[v]
                    for sid in release:
                        stacks.pop(sid, None)  # (never allocated if all pending)
        except TensorProgramError as exc:
            raise annotate(exc, instr, type(self).__name__) from exc.__cause__
        return env

    def _stack(self, sid: int) -> np.ndarray:
        """Stack ``sid`` of this pass, (K, rows, M), allocated on first use."""
        s = self.stacks.get(sid)
        if s is None:
            K, M = self.shape
            s = self.stacks[sid] = np.empty((K, self.schedule.sizes[sid], M))
        return s

    # -- helpers ----------------------------------------------------------------------
    def _wait(self) -> Any:
        """Mark this sweep incomplete; the value is pending."""
        self.pending = True
        return _PENDING

    @staticmethod
    def _ready(*values: Any) -> bool:
        return all(v is not _PENDING for v in values)

    def _estimate(self, key: Any, sums: Callable[[], tuple] | None) -> Any:
        """The replicates' estimate ``key``, or pending while it is being accumulated.

        ``sums`` gives this pass's sums over its samples (``None``: its inputs are
        pending here). A whole replicate finishes the estimate at once; a chunk adds
        its sums and waits for the end of the sweep.
        """
        st = self.state
        if key not in st.final:
            if sums is None or key in self._added:
                return self._wait()
            st.add(key, sums())
            if not self.whole:
                self._added.add(key)
                return self._wait()
            st.finish(key)
        return st.final[key]

    def _set_const(self, v: Any, value: Any) -> Any:
        if value is _PENDING:
            return self._wait()
        if isinstance(value, np.ndarray) and value.ndim:
            finite = np.isfinite(value).all()
        else:
            value = np.float64(value)  # numpy scalars: 1/0 is inf, not an error
            finite = math.isfinite(value)
        if not finite:
            raise NumericalError(
                f"Monte Carlo estimate of {v.name} is not finite ({_first_bad(value)})")
        return self._record(self.schedule.cid[v], value)

    def _record(self, cid: int, value: Any) -> Any:
        self.const[cid] = value
        self.theta[:, cid] = value[:, 0] if isinstance(value, np.ndarray) and value.ndim else value
        return value

    def _params(self, instr: Any) -> list[Any]:
        cid, const = self.schedule.cid, self.const
        return [const.get(cid[p], _PENDING) for p in instr.params]

    # -- instructions -----------------------------------------------------------------
    def init_matrix(self, instr: InitMatrix) -> None:
        return None

    def init_vector(self, instr: InitVector) -> np.ndarray:
        if self._init is None:
            F = psd_factor(self.der.init_cov, what="initial vectors' covariance")
            Z = F @ self._normals()[:, : F.shape[1]]  # (K, vectors, M)
            self._init = Z + np.asarray(self.der.init_mean, dtype=float)[:, None]
        return self._init[:, self.der.init_index[instr.out]]

    def init_scalar(self, instr: InitScalar) -> Any:
        sched = self.schedule
        return self._set_const(instr.out, float(sched.known[sched.cid[instr.out]]))

    def scalar_fn(self, instr: ScalarFn) -> Any:
        params = self._params(instr)
        if not self._ready(*params):
            return self._wait()
        return self._set_const(instr.out, instr.fn.numpy(*params))

    def nonlin(self, instr: Nonlin) -> Any:
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)
        if not self._ready(*args, *params):
            return self._wait()
        lin = self.schedule.linear.get(instr)
        out = (_combine(lin, args, params, self.theta, self.stacks, self.shape)
               if lin is not None else
               np.asarray(instr.fn.numpy(*args, *params), dtype=float))
        if out.shape != self.shape:
            out = np.broadcast_to(out, self.shape)
        if not np.isfinite(out).all():
            raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")
        return out

    def moment(self, instr: Moment) -> Any:
        sched = self.schedule
        cid = sched.cid[instr.out]
        known = sched.known.get(cid)
        if known is not None:
            return self._set_const(instr.out, known)
        tl = sched.tilts.get(instr)
        if tl is not None:
            return self._tilted_moment(instr, cid, tl)
        key = sched.pairs.get(instr)
        if key is not None:  # Σ Z^a Z^b in one pass, no temporary
            val = self.state.final.get(key)
            if val is not None:  # (estimated for a hat covariance, and checked there)
                if self.whole and cid not in sched.light:  # (chunks: no tail here)
                    a, b = self.env[instr.args[0]], self.env[instr.args[-1]]
                    if self._ready(a, b):
                        pre = self.state.prefix
                        self.state.add_tail(cid, a[..., :pre] * b[..., :pre])
                return self._record(cid, val)
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)
        ready = self._ready(*args, *params)
        if key is not None:
            def products() -> tuple[np.ndarray]:
                pre = self.state.prefix
                if cid not in sched.light:
                    self.state.add_tail(cid, args[0][..., :pre] * args[-1][..., :pre])
                return (_inner(args[0][:, None], args[-1]),)

            return self._set_const(instr.out, self._estimate(key, products if ready else None))

        def sums() -> tuple[np.ndarray]:
            vals = np.broadcast_to(instr.fn.numpy(*args, *params), self.shape)
            if cid not in sched.light:
                self.state.add_tail(cid, vals[..., :self.state.prefix])
            return (vals.sum(axis=-1, keepdims=True),)

        return self._set_const(instr.out, self._estimate(MomentKey(cid), sums if ready else None))

    def _tilted_moment(self, instr: Moment, cid: int, tl: "_MCTilt") -> Any:
        """``𝔼[h e^P] = e^c 𝔼[h(μ' + F'ξ)]`` (:class:`_MCTilt`) from the pass's own
        normals ``ξ``: an exact change of measure."""
        consts = [self.const.get(c, _PENDING) for c in tl.cids]
        if not self._ready(*consts):
            return self._set_const(instr.out, self._estimate(MomentKey(cid), None))

        qs = [np.broadcast_to(np.asarray(c, dtype=float).reshape(-1, 1)
                              if np.ndim(c) else c, (self.shape[0], 1)) for c in consts]

        def h(mean: np.ndarray, F: np.ndarray, xi: np.ndarray, P: Any = None) -> np.ndarray:
            gs = mean[None, :, None] + np.einsum("dr,krm->kdm", F, xi[:, : F.shape[1]])
            cols = [gs[:, j] for j in range(gs.shape[1])]
            out = np.broadcast_to(np.asarray(tl.h(*cols, *qs), dtype=float), self.shape)
            if P is None:
                return out
            return out * scipy.special.expit(np.asarray(P(*cols), dtype=float) - tl.logc)

        def sums() -> tuple[np.ndarray]:
            xi = self._normals()
            if tl.P is None:
                vals = h(tl.mean, tl.F, xi)
            else:  # the defensive mixture: both laws from the same ξ
                with np.errstate(over="ignore"):
                    vals = h(tl.mean, tl.F, xi, tl.P) + h(tl.mean0, tl.F0, xi, tl.P)
            self.state.add_tail(cid, vals[..., :self.state.prefix])
            return (tl.scale * vals.sum(axis=-1, keepdims=True),)

        return self._set_const(instr.out, self._estimate(MomentKey(cid), sums))

    def matmul(self, instr: MatMul) -> Any:
        node = self.der.nodes[instr.out]
        b = node.base
        k = b.index
        sid = self.schedule.family_stack[b.family]
        fam = self.fam.get(b.family)
        if fam is None:
            row = self.schedule.rows[b.family]
            fam = self.fam[b.family] = _Family(
                self._stack(sid), self._normals()[:, row:row + self.schedule.sizes[sid]])
        zx = self.env[instr.arg]
        fam.ready[k] = zx is not _PENDING
        if fam.ready[k] and self.schedule.home[instr.arg] != (sid, k):
            fam.inputs[:, k] = zx  # the vector lives elsewhere (an earlier family's stack)
        if not self._factor(b, fam):
            return self._wait()
        Lk = self.state.L[b.family][:, k]
        hat = fam.hats[:, k]
        # Ẑ_k = Σ_{j≤k} L_kj ξ_j, written in place
        _combination(Lk[:, : k + 1], fam.normals[:, : k + 1], out=hat)
        fam.nhats = k + 1
        if zx is _PENDING:
            return self._wait()
        if not node.dot:
            return hat
        coefs = self._dot_coefficients(node, zx)
        # Ż = Σ_i c_i Z^{y_i}: the y_i are the inputs of the transposed family's members.
        other = self.fam[node.dot[0][0].base.family]
        idx = [c.base.index for c, _ in node.dot]
        if coefs is _PENDING or not all(other.ready[i] for i in idx):
            return self._wait()
        j = max(idx) + 1
        c_all = np.zeros((self.shape[0], j))
        for i, coef, (c, _) in zip(idx, coefs, node.dot):
            c_all[:, i] = np.ravel(coef)
            self.const[c.cid] = coef  # (no scalar reads it: not in theta)
        z = _combination(c_all, other.inputs[:, :j])
        z += hat
        if not np.isfinite(z).all():
            r = int(np.argmin(np.isfinite(z).all(axis=-1)))  # the first bad replicate
            bad = [float(np.broadcast_to(c, (self.shape[0], 1))[r, 0]) for c in coefs]
            raise NumericalError(f"Z^{{{instr.out.name}}} is not finite on Monte Carlo samples "
                                 f"(its ZDot coefficients: {bad})")
        return z

    def _factor(self, b: Any, fam: _Family) -> bool:
        """Ensure row ``b.index`` of its family's factor; False while pending."""
        st, k = self.state, b.index
        if b.family not in st.L:
            n = len(self.der.families[b.family])
            st.L[b.family] = np.zeros((self.shape[0], n, n))
            st.U[b.family] = np.zeros((self.shape[0], n, n))
            st.factored[b.family] = 0
        if st.factored[b.family] > k:
            return True
        cov = self._family_cov(b, fam)
        if cov is _PENDING or st.factored[b.family] < k:  # (or an earlier member is pending)
            return False
        cov *= self.der.sigma2_of(b.family)
        if not np.isfinite(cov).all():
            raise NumericalError(
                f"the covariance of {b.symbol} is not finite (variance {_first_bad(cov[:, k])}); "
                f"the expectation diverges or overflows")
        _factor_row(st.L[b.family], st.U[b.family], k, cov)
        st.factored[b.family] = k + 1
        return True

    def _family_cov(self, b: Any, fam: _Family) -> Any:
        """``𝔼[Z^x Z^{x_j}]`` of member ``b``'s input with members ``j ≤ b.index``' inputs,
        (K, k + 1); pending while an estimate is.

        Each entry is a pair estimate (:class:`PairKey` in :class:`_Estimates`), shared with
        the product Moments of the same vectors; the missing ones come from one pass
        over the family's input stack.
        """
        st, k = self.state, b.index
        keys, known = self.schedule.cov_keys[b.bid], self.schedule.cov_known[b.bid]
        final = st.final
        todo = [j for j in range(k + 1) if known[j] is None and keys[j] not in final]
        if todo:
            fresh = [j for j in todo if keys[j] not in self._added]
            if fresh:
                if not (fam.ready[k] and all(fam.ready[j] for j in fresh)):
                    return self._wait()
                s = _inner(fam.inputs[:, : k + 1], fam.inputs[:, k])
                if self.whole:
                    s /= st.M
                    for j in fresh:
                        final[keys[j]] = s[:, j, None]
                else:
                    for j in fresh:
                        self._estimate(keys[j], lambda j=j: (s[:, j, None],))
            if not self.whole:
                return self._wait()
        cov = np.empty((self.shape[0], k + 1))
        for j in range(k + 1):
            cov[:, j] = known[j] if known[j] is not None else st.final[keys[j]][:, 0]
        return cov

    def _dot_coefficients(self, node: Any, zx: np.ndarray) -> Any:
        """``σ² 𝔼[∂Z^x/∂Ẑ_S]`` for each hat of ``node.dot`` (known, or (K, 1) estimates).

        Stein / regression: ``𝔼∇_S Z^x = Cov(Ẑ_S)⁻¹ Cov(Ẑ_S, Z^x)``, fitted on the
        samples (the normal equations, from the family's running sums).
        """
        known = [self.schedule.known.get(c.cid) for c, _ in node.dot]
        if all(v is not None for v in known):
            return known
        fam = self.fam.get(node.dot[0][0].base.family)
        idx = np.array([c.base.index for c, _ in node.dot])
        j = int(idx.max()) + 1

        def sums() -> tuple[np.ndarray, ...]:
            gram, hsum = fam.sums(j)
            hz = _inner(fam.hats[:, :j], zx)
            return (hsum[:, idx], zx.sum(axis=-1, keepdims=True), gram[:, idx[:, None], idx],
                    hz[:, idx])

        ready = fam is not None and fam.nhats >= j
        beta = self._estimate(DotKey(node.base.bid), sums if ready else None)
        if beta is _PENDING:
            return _PENDING
        return [v if v is not None else c.full(beta[:, i, None])
                for i, (v, (c, _)) in enumerate(zip(known, node.dot))]


def run_montecarlo(plan: Plan, samples: int, seed: Any, *, batches: int = 16, qmc: bool = True,
                   progress: bool = False, max_memory: int = 2**30,
                   tails: dict[int, float] | None = None,
                   stable: dict[int, StableError] | None = None
                   ) -> dict[int, tuple[float, float]]:
    """Replicated Monte Carlo passes; returns ``{const id: (mean, standard error)}``.

    Parameters
    ----------
    plan : Plan
        The planned requests (after the deterministic pass).
    samples : int
        Total samples; each of the ``batches`` replicates gets ``M = samples // batches``.
    seed : int, SeedSequence entropy or numpy Generator
        Replicate ``r`` draws from ``default_rng(SeedSequence(seed).spawn(batches)[r])``
        (with ``qmc``: the scramble of its Sobol' sequence).
    batches : int, default 16
        Replicates ``K``; the standard error is their spread over ``√K``.
    qmc : bool, default True
        Randomised quasi-Monte Carlo (scrambled Sobol' points, :mod:`.qmc`); False:
        iid normals.
    progress : bool, default False
        Show a progress bar over the replicates.
    max_memory : int, default 1 GiB
        Bytes for the sample arrays. As many replicates as fit run in one pass (at
        least one); a replicate that does not fit alone runs in chunks of ``C`` samples
        (see :class:`MonteCarloPass`). The estimates are those of whole replicates, so
        the result does not depend on ``max_memory`` beyond floating-point summation
        order.
    tails : dict, optional
        Filled with ``{const id: k̂}`` for every Moment estimated: the Pareto ``k̂`` of
        its integrand's samples, fitted to the largest ``min(S/5, 3√S)`` of all
        ``S = K·M`` (:mod:`.tails`; at most :data:`TAIL_DRAWS` of them, a prefix of each
        replicate).
    stable : dict, optional
        Filled with ``{const id: StableError}`` for the Moments whose ``k̂`` is in
        ``[1/2, 1)`` (a mean without a variance): the law of their estimate's error, from
        which :meth:`.limit.Limit.interval` gives a robust interval.

    Returns
    -------
    dict
        ``{const id: (mean over replicates, std(ddof=1) / √K)}`` for every scalar and
        ZDot coefficient.
    """
    der = plan.der
    per_sample = _bytes_per_sample(der)
    schedule = _Schedule(plan)
    D = schedule.D
    K = int(batches)
    M = max(2, samples // K)
    # Passes run concurrently on the cores (in threads: numpy releases the GIL inside its
    # kernels; the training benchmark's limit takes 0.33 s with two threads against
    # 0.42 s with one); each gets its share of max_memory. Results do not depend on the
    # scheduling: every pass has its own replicates and streams.
    workers = max(1, min(available_cpus(), _MAX_WORKERS, K))
    fit = int(max_memory) // (per_sample * M * workers)  # whole replicates per pass
    if not fit:
        workers = 1
        fit = int(max_memory) // (per_sample * M)
    C = _chunk_size(int(max_memory) // per_sample, per_sample, max_memory)
    step = max(1, min(K, fit, _PASS_SAMPLES // M))
    if workers > 1:  # balanced passes, at least one per worker
        npass = max(workers, -(-K // step))
        step = -(-K // npass)
    need = per_sample * (min(workers, -(-K // step)) * step * M if fit else C)
    require(f"Monte Carlo ({K} replicates × {M} samples, {per_sample} bytes per sample)",
            need, "max_memory", "pass a smaller max_memory= (long replicates then run in "
            "chunks, with the same estimates) or fewer samples=")
    ss = np.random.SeedSequence(seed) if not isinstance(seed, np.random.Generator) else \
        np.random.SeedSequence(int(seed.integers(2**63)))
    children = ss.spawn(K)
    # The tail diagnostic sees a prefix of each whole replicate (at most TAIL_DRAWS in
    # all; chunks: every sample), its fitted tail T of them (Vehtari et al. 2024 §3).
    prefix = min(M, -(-TAIL_DRAWS // K)) if fit else M
    T = tail_size(K * prefix)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        chunks = f", chunks of {C}" if not fit else ""
        seconds = _estimate_seconds(plan, schedule, K, M, C if not fit else None, qmc, workers)
        tqdm.write(f"Monte Carlo: {K} replicates × {M} samples{chunks} on {workers} "
                   f"thread(s), about {gib(need)} of sample arrays; estimated time "
                   f"{_duration(seconds)}", file=sys.stderr)
        bar = tqdm(total=K, desc=f"Monte Carlo ({K}×{M} samples{chunks})", leave=False)
    def one_pass(seeds: Sequence[np.random.SeedSequence]) -> tuple[dict[int, Any], dict]:
        if not fit:
            return _chunked_replicate(plan, seeds[0], M, C, D, qmc, schedule, T)
        state = _Estimates(M)
        state.tail, state.prefix = T, prefix
        mc = MonteCarloPass(plan, len(seeds), M, _normal_source(seeds, M, D, qmc), state,
                            schedule=schedule)
        mc.run()
        return mc.const, state.tops

    groups = [children[start:start + step] for start in range(0, K, step)]
    values: dict[int, list[np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(groups) > 1:
            pool = stack.enter_context(ThreadPoolExecutor(min(workers, len(groups))))
            consts = pool.map(one_pass, groups)  # in order, whatever finishes first
        else:
            consts = map(one_pass, groups)
        # the largest draws of each Moment's integrand over the replicates so far
        # (O(√(K·M)) memory per Moment, merged as passes finish)
        tops: dict[int, np.ndarray] = {}
        seen: dict[int, int] = {}
        for seeds, (const, tp_) in zip(groups, consts):
            for cid, v in const.items():
                values.setdefault(cid, []).append(np.broadcast_to(np.ravel(v), (len(seeds),)))
            for cid, t in tp_.items():
                tops[cid] = merge_tops(tops.get(cid), t.reshape(1, -1), T)
                seen[cid] = seen.get(cid, 0) + len(seeds)
            if bar is not None:
                bar.update(len(seeds))
    if bar is not None:
        bar.close()
    cids = list(values)
    vals = np.array([np.concatenate(values[c]) for c in cids]).reshape(len(cids), K)
    means, ses = vals.mean(axis=1), vals.std(axis=1, ddof=1) / np.sqrt(K)
    # k̂ of every Moment: one fit (batched over Moments) to the largest of its tail draws
    full = [c for c, n in seen.items() if n == K]
    if tails is not None and full:
        top = np.concatenate([tops[c] for c in full])
        kh = khat_of_tops(top)
        tails.update(zip(full, kh.tolist()))
        if stable is not None:
            errs = stable_errors(top, kh, T / (K * prefix), K * M)
            stable.update((c, e) for c, e in zip(full, errs) if e is not None)
    return {c: (m, e) for c, m, e in zip(cids, means.tolist(), ses.tolist())}


def _bytes_per_sample(der: Any) -> int:
    """Memory bound per sample of one replicate (float64): every vector (stacked or
    not), each base Gaussian's normal, a family member's input copy (for a vector that
    lives in another stack) and hat, and a few temporaries."""
    return 8 * (len(der.program) + 4 * len(der.bases) + 4)


def _chunk_size(fit: int, per_sample: int, max_memory: int) -> int:
    """Samples per chunk of a replicate that does not fit whole: ``fit`` (what
    ``max_memory`` holds) rounded down to a multiple of :data:`_IID_BLOCK` (a chunk then
    draws whole blocks of iid normals), or to a power of two below it (a divisor).

    Raises
    ------
    ResourceError
        when ``max_memory`` does not hold one sample.
    """
    if fit < 1:
        raise refuse("Monte Carlo (one sample of every vector)", per_sample, "max_memory",
                     f"pass max_memory ≥ {per_sample} bytes", int(max_memory), "max_memory")
    if fit >= _IID_BLOCK:
        return fit - fit % _IID_BLOCK
    return 1 << (fit.bit_length() - 1)


def _chunked_replicate(plan: Plan, ss: np.random.SeedSequence, M: int, C: int, D: int,
                       qmc: bool, schedule: _Schedule, tail: int,
                       sweeps: list[int] | None = None) -> tuple[dict[int, Any], dict]:
    """One replicate of ``M`` samples in chunks of at most ``C``: sweeps until complete.

    Chunk ``j`` draws samples ``jC … jC + C − 1`` of the replicate's stream (the same
    normals the whole replicate would draw there, iid or QMC). Returns its estimates and
    the tops of its Moments' integrands (``tail + 1`` each). ``sweeps``, if given, gets
    the number of sweeps appended.
    """
    sizes = [C] * (M // C) + ([M % C] if M % C else [])
    state = _Estimates(M)
    n = 0
    state.tail = tail
    while True:
        complete = True
        n += 1
        for j, size in enumerate(sizes):
            mc = MonteCarloPass(plan, 1, size, _normal_source([ss], size, D, qmc, j * C), state,
                                schedule)
            mc.run()
            complete = complete and not mc.pending
        if complete:
            if sweeps is not None:
                sweeps.append(n)
            return mc.const, state.tops
        if state.finish() == 0:  # pragma: no cover - would loop forever
            raise NumericalError("Monte Carlo in chunks made no progress (internal error)")


def _estimate_seconds(plan: Plan, schedule: _Schedule, K: int, M: int, C: int | None,
                      qmc: bool, workers: int) -> float:
    """Wall time of a Monte Carlo run, extrapolated from small timed passes.

    A pass of ``m`` samples takes about ``a + b m`` (``a``: the interpreter's walk,
    ``b``: the array work per sample). After a warm-up pass (code generation, caches),
    passes of ``m₁`` and ``m₂ = 4m₁`` samples (one replicate, a throwaway seed) give
    ``b = (t₂ − t₁)/(m₂ − m₁)`` and ``a = t₁ − b m₁``. Whole replicates: ``K M`` samples
    over ``workers`` threads plus one walk per pass. In chunks of ``C``: every sweep
    walks all ``⌈M/C⌉`` chunks of a replicate again (sweeps counted on a two-chunk
    replicate). A rough guide (machine load changes it), printed before a long run.
    """
    D = schedule.D
    ss = np.random.SeedSequence(0)

    def timed(m: int) -> float:
        t0 = time.perf_counter()
        MonteCarloPass(plan, 1, m, _normal_source([ss], m, D, qmc), schedule=schedule).run()
        return time.perf_counter() - t0

    m2 = int(min(M, 8192))
    m1 = max(1, m2 // 4)
    timed(min(m1, 256))  # warm-up
    t1, t2 = timed(m1), timed(m2)
    b = (t2 - t1) / (m2 - m1) if m2 > m1 else t2 / m2
    if b <= 0:  # noise: charge everything to the samples
        b = t2 / m2
    a = max(t1 - b * m1, 0.0)
    if C is None:
        step = max(1, min(K, _PASS_SAMPLES // M))
        return (K * M * b + a * -(-K // step)) / workers
    sweeps: list[int] = []
    _chunked_replicate(plan, ss, 2 * min(C, 64), min(C, 64), D, qmc, schedule,
                       tail_size(2 * min(C, 64)), sweeps=sweeps)
    return K * sweeps[0] * (M * b + a * -(-M // C))


def _duration(seconds: float) -> str:
    """``seconds`` for humans: ``"0.4 s"``, ``"35 min"``, ``"2.1 h"``."""
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"


def _normal_source(seeds: Sequence[np.random.SeedSequence], M: int, D: int, qmc: bool,
                   start: int = 0) -> Callable[[], np.ndarray]:
    """``() -> (K, D, M)`` standard normals, ``[r]`` from stream ``seeds[r]``.

    Identical on every call with the same arguments (fresh generators), and a function
    of the sample index alone: the chunks of a replicate are pieces of what the whole
    replicate draws. iid: samples ``start … start+M−1`` of the stream's blocks
    (:func:`_iid_normals`). With ``qmc``: points ``start … start+M−1`` of a
    ``D``-dimensional Sobol' sequence scrambled by the stream (:mod:`.qmc`; row ``d``
    is coordinate ``d`` through the normal quantile).
    """
    K = len(seeds)

    def draw() -> np.ndarray:
        out = np.empty((K, D, M))
        if qmc and D <= MAX_DIM:  # the uniforms of every replicate, then one quantile
            for r, s in enumerate(seeds):
                sobol_uniforms(D, M, np.random.default_rng(s), start, out=out[r])
            return normal_quantile(out, out=out)
        for r, s in enumerate(seeds):  # one call per stream: numpy releases the GIL
            rng = np.random.default_rng(s)
            if qmc:
                sobol_normals(D, M, rng, start, out=out[r])
            else:
                _iid_normals(s, start, out[r])
        return out

    return draw


def _iid_normals(ss: np.random.SeedSequence, start: int, out: np.ndarray) -> None:
    """Fill ``out`` (D, m) with the iid normals of samples ``start … start+m−1``.

    Samples come in blocks of :data:`_IID_BLOCK`: block ``b`` draws from its own
    generator, ``default_rng`` of the child ``b`` of ``ss`` (``spawn_key + (b,)``),
    sample after sample, ``D`` normals each (one per base Gaussian). The normals of a
    sample depend only on the seed, the replicate and the sample's index, never on how
    a replicate is cut into chunks or how many replicates share a pass. (A chunk that
    starts inside a block draws and drops the block's earlier samples; chunks are
    multiples or divisors of a block, see :func:`_chunk_size`.)
    """
    D, m = out.shape
    S = _IID_BLOCK
    piece = max(1, _IID_SCRATCH // D)  # samples per call: a bounded temporary
    end = start + m
    for b in range(start // S, -(-end // S)):
        lo, hi = max(start, b * S), min(end, (b + 1) * S)
        rng = np.random.default_rng(np.random.SeedSequence(
            ss.entropy, spawn_key=ss.spawn_key + (b,), pool_size=ss.pool_size))
        skip = lo - b * S
        while skip:
            n = min(skip, piece)
            rng.standard_normal((n, D))
            skip -= n
        for a in range(lo, hi, piece):
            n = min(hi - a, piece)
            out[:, a - start:a - start + n] = rng.standard_normal((n, D)).T
