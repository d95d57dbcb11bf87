"""Monte Carlo over the limit: sample every base Gaussian, evaluate every ``Z``.

One pass walks the program in order with every vector an array of shape ``(K, M)``:
``M`` samples of its ``Z`` in each of ``K`` independent replicates — ``K`` "width-M"
runs of the *limit*, with no matrices, sharing one walk (the interpreter's overhead is
paid once per pass, not once per replicate):

* initial vectors: ``M`` iid draws of their joint law per replicate;
* MatMul ``Wx``: ``Ẑ^{Wx}`` is drawn conditionally on the earlier hats of its family
  (incremental, rank-tolerant Cholesky of ``σ_W² 𝔼[Z^x Z^{x'}]``, one factor per
  replicate), then ``Z = Ẑ + Σ_i c_i Z^{y^i}`` with ``c = σ_W² 𝔼[∂Z^x/∂Ẑ_S]`` from the
  Stein/regression form ``Cov(Ẑ_S)⁻¹ 𝔼[Ẑ_S Z^x]`` (a least-squares fit of ``Z^x`` on the
  hats it depends on) [TP4 Remark F.2, THEORY §2.1 note 3] — valid for relu and step;
* Moments are sample means.

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
(they overlap only partly: the GIL changes hands around every short numpy call); each
has its own replicates, so the result does not depend on the scheduling either.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import sympy

from ..errors import NumericalError
from ..gaussian import psd_factor
from ..interpreter import Interpreter
from ..ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from .plan import Plan

__all__ = ["MonteCarloPass", "run_montecarlo"]

_PENDING = None  # a value not computable in this sweep (chunked replicates only)
_RTOL_PIVOT = 1e-12  # Cholesky: pivots / remainders below this × max(1, |var|) are zero
_RCOND = 1e-10  # regression: eigenvalues of Cov(Ẑ_S) below this × the largest are dropped
#: Replicates per pass are capped at this many samples in all (a vector of 512 KiB):
#: beyond it the interpreter's overhead is already amortised and bigger arrays only
#: stream from slower memory.
_PASS_SAMPLES = 2**16
#: Concurrent passes (threads) at most; also bounded by the number of cores.
_MAX_WORKERS = 4


class _Schedule:
    """How a pass evaluates a program, worked out once per program.

    Attributes
    ----------
    dead : list of list of Var
        Per instruction, the vectors read for the last time there (or never read):
        a pass drops them, so that later vectors reuse their memory (fresh memory is
        slow — the first touch of every page is a fault).
    products : set of Moment
        Moments ``𝔼[Z^a Z^b]`` or ``𝔼[(Z^a)²]`` of their arguments: summed in one pass
        (an inner product), without the temporary array of ``Z^a Z^b``.
    linear : dict
        Nonlins whose body is ``Σ_t c_t Π_{j∈P_t} θ_j Z^{x_{i_t}}`` (numbers ``c_t``,
        parameters ``θ_j``): their terms ``(i_t, c_t, P_t)``, accumulated in place
        instead of one new array per operation.
    """

    def __init__(self, instructions: Sequence[Any]) -> None:
        last: dict[Any, int] = {}
        for i, instr in enumerate(instructions):
            last[instr.out] = i
            for v in instr.inputs:
                last[v] = i
        self.dead: list[list[Any]] = [[] for _ in instructions]
        for v, i in last.items():
            if v.kind == "vector":
                self.dead[i].append(v)
        self.products = {i for i in instructions if isinstance(i, Moment) and _is_product(i.fn)}
        self.linear = {i: t for i in instructions if isinstance(i, Nonlin)
                       for t in [_linear_terms(i.fn)] if t is not None}


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
        c, factors = term.as_coeff_mul()
        arg, P = None, []
        for f in factors:
            if f in xs and arg is None:
                arg = xs[f]
            elif f in ps:
                P.append(ps[f])
            else:
                return None
        if arg is None or not c.is_Number:
            return None
        terms.append((arg, float(c), tuple(P)))
    return terms


def _combine(terms: list[tuple[int, float, tuple[int, ...]]], args: list[Any],
             params: list[Any], shape: tuple[int, int]) -> np.ndarray:
    """``Σ_t c_t Π_{j∈P_t} θ_j · args[i_t]`` accumulated in one array (see _Schedule)."""
    out = tmp = None
    for i, c, P in terms:
        coef: Any = c
        for j in P:
            coef = coef * params[j]
        scaled = bool(P) or c != 1.0
        if isinstance(coef, np.ndarray):  # (K, 1): numpy multiplies faster by a (K, M) view
            coef = np.broadcast_to(coef, shape)
        if out is None:
            out = np.multiply(args[i], coef) if scaled else np.array(args[i], dtype=float)
            out = np.broadcast_to(out, shape).copy() if out.shape != shape else out
        elif scaled:
            tmp = np.multiply(args[i], coef, out=tmp if tmp is not None else np.empty(shape))
            out += tmp
        else:
            out += args[i]
    return out


class _Estimates:
    """The replicates' estimates so far (shared by the chunks and sweeps of one pass).

    Keys: ``("m", cid)`` a Moment's mean; ``("c", bid)`` the second moments
    ``𝔼[Z^x Z^{x_j}]`` of MatMul ``bid``'s input with the inputs of its family's members
    ``j ≤`` its own index; ``("d", bid)`` the regression coefficients of MatMul ``bid``'s
    ZDot. ``acc`` holds this sweep's sums over samples, ``final`` finished estimates
    (arrays with the replicate axis first), ``L[family]`` the ``(K, n, n)`` factor of
    the family's hat covariance with ``factored[family]`` rows done.
    """

    def __init__(self, M: int) -> None:
        self.M = M  # samples per replicate (all chunks)
        self.final: dict[Any, np.ndarray] = {}
        self.acc: dict[Any, tuple[np.ndarray, ...]] = {}
        self.L: dict[Any, np.ndarray] = {}
        self.factored: dict[Any, int] = {}

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
            self.final[k] = _regression(sums, self.M) if k[0] == "d" else sums[0] / self.M
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
    """
    sh, sz, shh, shz = sums
    with np.errstate(all="ignore"):
        cov_h = shh / n - sh[:, :, None] * sh[:, None, :] / n**2
        cov_hz = shz / n - sh * sz / n**2
    return (np.linalg.pinv(cov_h, rcond=_RCOND, hermitian=True) @ cov_hz[:, :, None])[:, :, 0]


def _factor_row(L: np.ndarray, k: int, cov: np.ndarray) -> None:
    """Row ``k`` of a batch of rank-tolerant lower-triangular factors, in place.

    Parameters
    ----------
    L : ndarray, shape (K, n, n)
        One factor per replicate; rows ``< k`` are done.
    k : int
        The row to fill.
    cov : ndarray, shape (K, k + 1)
        The new member's covariance with members ``0..k`` (the last entry its variance).

    Notes
    -----
    Forward substitution ``L[k, i] = (cov_i − Σ_{j<i} L[i, j] L[k, j]) / L[i, i]``,
    vectorised over replicates; a pivot ``L[i, i]`` at most ``1e-12 max(1, |var|)``
    (a direction this replicate's family does not span) gives ``L[k, i] = 0``, and so
    does a remainder ``var − Σ_i L[k, i]²`` below that threshold for the diagonal.
    Replicates may differ in their ranks.
    """
    var = cov[:, k]
    tol = _RTOL_PIVOT * np.maximum(1.0, np.abs(var))
    row = L[:, k, :k]  # a view: filled in place
    with np.errstate(all="ignore"):
        for i in range(k):
            s = cov[:, i] - np.einsum("ri,ri->r", L[:, i, :i], row[:, :i])
            piv = L[:, i, i]
            row[:, i] = np.where(piv > tol, s / piv, 0.0)
        d = var - np.einsum("ri,ri->r", row, row)
        L[:, k, k] = np.sqrt(np.where(d > tol, d, 0.0))


class _Family:
    """One hat family's samples in one pass (or chunk), member by member.

    ``normals[:, j]``, ``inputs[:, j]`` and ``hats[:, j]`` (each (K, M)) are member
    ``j``'s standard normal, the ``Z^x`` it multiplies (valid when ``ready[j]``) and its
    ``Ẑ``; hats exist for a prefix of ``nhats`` members. ``gram``/``hsum`` hold the
    sample sums ``Σ Ẑ_i Ẑ_j`` and ``Σ Ẑ_i`` for the first ``ngram`` members, filled on
    demand (each member once: ``O(M k)``, not ``O(M k²)`` per regression).
    """

    def __init__(self, K: int, n: int, M: int) -> None:
        self.normals = np.empty((K, n, M))
        self.inputs = np.empty((K, n, M))
        self.hats = np.empty((K, n, M))
        self.ready = [False] * n
        self.nhats = 0
        self.gram = np.empty((K, n, n))
        self.hsum = np.empty((K, n))
        self.ngram = 0

    def sums(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``Σ Ẑ_i Ẑ_l`` (K, j, j) and ``Σ Ẑ_i`` (K, j) over the first ``j`` members."""
        for i in range(self.ngram, j):
            with np.errstate(all="ignore"):
                g = np.matmul(self.hats[:, : i + 1], self.hats[:, i, :, None])[:, :, 0]
            self.gram[:, i, : i + 1] = g
            self.gram[:, : i + 1, i] = g
            self.hsum[:, i] = self.hats[:, i].sum(axis=-1)
        self.ngram = max(self.ngram, j)
        return self.gram[:, :j, :j], self.hsum[:, :j]


#: ``Σ_samples a·b`` per replicate without a temporary array (numpy ≥ 2 has vecdot).
_vecdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("...m,...m->...", a, b))


def _inner(stack: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``Σ_samples stack[:, j] · z`` per replicate: (K, j, M), (K, M) → (K, j)."""
    with np.errstate(all="ignore"):
        return np.matmul(stack, z[:, :, None])[:, :, 0]


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
        ``(out=None) -> (K, M)`` fresh standard normals (written to ``out`` if given),
        row ``r`` from replicate ``r``'s stream.
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
    everything downstream pending (``self.pending``). A chunk draws its normals in the
    same order in every sweep (pending or not), so every sweep sees the same samples.
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
        self.schedule = schedule if schedule is not None else _Schedule(self.program.instructions)
        self.pending = False
        self.fam: dict[Any, _Family] = {}
        self.const: dict[int, Any] = {}
        self._init: np.ndarray | None = None

    def run(self) -> dict[Any, Any]:
        """Interpret every instruction, dropping each vector after its last use."""
        for instr, dead in zip(self.program.instructions, self.schedule.dead):
            self.env[instr.out] = self.step(instr)
            for v in dead:
                del self.env[v]
        return self.env

    # -- helpers ----------------------------------------------------------------------
    def _wait(self) -> Any:
        """Mark this sweep incomplete; the value is pending."""
        self.pending = True
        return _PENDING

    @staticmethod
    def _ready(*values: Any) -> bool:
        return all(v is not _PENDING for v in values)

    def _known(self, rid: int) -> float | None:
        r = self.plan.requests[rid]
        return r.value if r.deterministic else None

    def _known_cov(self, bi: Any, bj: Any) -> float | None:
        rid = self.plan.cov_req.get((min(bi.bid, bj.bid), max(bi.bid, bj.bid)))
        return self._known(rid) if rid is not None else None

    def _estimate(self, key: Any, sums: Callable[[], tuple] | None) -> Any:
        """The replicates' estimate ``key``, or pending while it is being accumulated.

        ``sums`` gives this pass's sums over its samples (``None``: its inputs are
        pending here). A whole replicate finishes the estimate at once; a chunk adds
        its sums and waits for the end of the sweep.
        """
        st = self.state
        if key not in st.final:
            if sums is None:
                return self._wait()
            st.add(key, sums())
            if not self.whole:
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
        self.const[self.der.scalar_const[v].cid] = value
        return value

    def _params(self, instr: Any) -> list[Any]:
        return [self.const.get(self.der.scalar_const[p].cid, _PENDING) for p in instr.params]

    # -- instructions -----------------------------------------------------------------
    def init_matrix(self, instr: InitMatrix) -> None:
        return None

    def init_vector(self, instr: InitVector) -> np.ndarray:
        if self._init is None:
            F = psd_factor(self.der.init_cov, what="initial vectors' covariance")
            G = np.stack([self.normals() for _ in range(F.shape[1])])  # (d, K, M)
            Z = (F @ G.reshape(G.shape[0], -1)).reshape((F.shape[0],) + self.shape)
            self._init = Z + np.asarray(self.der.init_mean, dtype=float)[:, None, None]
        return self._init[self.der.init_index[instr.out]]

    def init_scalar(self, instr: InitScalar) -> Any:
        rid = self.plan.const_req[self.der.scalar_const[instr.out].cid]
        return self._set_const(instr.out, float(self.plan.requests[rid].value))

    def scalar_fn(self, instr: ScalarFn) -> Any:
        params = self._params(instr)
        if not self._ready(*params):
            return self._wait()
        with np.errstate(all="ignore"):
            return self._set_const(instr.out, instr.fn.numpy(*params))

    def nonlin(self, instr: Nonlin) -> Any:
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)
        if not self._ready(*args, *params):
            return self._wait()
        terms = self.schedule.linear.get(instr)
        with np.errstate(all="ignore"):
            out = (_combine(terms, args, params, self.shape) if terms is not None else
                   np.asarray(instr.fn.numpy(*args, *params), dtype=float))
        if out.shape != self.shape:
            out = np.broadcast_to(out, self.shape)
        if not np.isfinite(out).all():
            raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")
        return out

    def moment(self, instr: Moment) -> Any:
        cid = self.der.scalar_const[instr.out].cid
        known = self._known(self.plan.const_req[cid])
        if known is not None:
            return self._set_const(instr.out, known)
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)

        def sums() -> tuple[np.ndarray]:
            with np.errstate(all="ignore"):
                if instr in self.schedule.products:  # Σ Z^a Z^b in one pass, no temporary
                    return (_vecdot(args[0], args[-1])[:, None],)
                vals = instr.fn.numpy(*args, *params)
                return (np.broadcast_to(vals, self.shape).sum(axis=-1, keepdims=True),)

        ready = self._ready(*args, *params)
        return self._set_const(instr.out, self._estimate(("m", cid), sums if ready else None))

    def matmul(self, instr: MatMul) -> Any:
        node = self.der.nodes[instr.out]
        b = node.base
        k = b.index
        fam = self.fam.get(b.family)
        if fam is None:
            K, M = self.shape
            fam = self.fam[b.family] = _Family(K, len(self.der.families[b.family]), M)
        self.normals(out=fam.normals[:, k])  # always: the stream is the same in every sweep
        zx = self.env[instr.arg]
        fam.ready[k] = zx is not _PENDING
        if fam.ready[k]:
            fam.inputs[:, k] = zx
        if not self._factor(b, fam):
            return self._wait()
        Lk = self.state.L[b.family][:, k]
        hat = fam.hats[:, k]
        # Ẑ_k = Σ_{j≤k} L_kj ξ_j: one batched product, written in place
        np.matmul(Lk[:, None, : k + 1], fam.normals[:, : k + 1], out=hat[:, None, :])
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
        c_all = np.zeros((self.shape[0], 1, j))
        for i, coef, (c, _) in zip(idx, coefs, node.dot):
            c_all[:, 0, i] = np.ravel(coef)
            self.const[c.cid] = coef
        with np.errstate(all="ignore"):
            z = hat + np.matmul(c_all, other.inputs[:, :j])[:, 0]
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
            st.factored[b.family] = 0
        if st.factored[b.family] > k:
            return True
        members = self.der.families[b.family][: k + 1]
        known = [self._known_cov(b, bj) for bj in members]
        if all(v is not None for v in known):
            cov = np.broadcast_to(np.array(known, dtype=float), (self.shape[0], k + 1))
        else:  # sample second moments with every earlier input (and its own)
            def sums() -> tuple[np.ndarray]:
                return (_inner(fam.inputs[:, : k + 1], fam.inputs[:, k]),)

            cov = self._estimate(("c", b.bid), sums if all(fam.ready[: k + 1]) else None)
            if cov is _PENDING:
                return False
            cov = cov.copy()
            for j, v in enumerate(known):
                if v is not None:
                    cov[:, j] = v
        if st.factored[b.family] < k:  # an earlier member is still pending
            return False
        with np.errstate(all="ignore"):
            cov = self.der.sigma2_of(b.family) * cov
        if not np.isfinite(cov).all():
            raise NumericalError(
                f"the covariance of {b.symbol} is not finite (variance {_first_bad(cov[:, k])}); "
                f"the expectation diverges or overflows")
        _factor_row(st.L[b.family], k, cov)
        st.factored[b.family] = k + 1
        return True

    def _dot_coefficients(self, node: Any, zx: np.ndarray) -> Any:
        """``σ² 𝔼[∂Z^x/∂Ẑ_S]`` for each hat of ``node.dot`` (known, or (K, 1) estimates).

        Stein / regression: ``𝔼∇_S Z^x = Cov(Ẑ_S)⁻¹ Cov(Ẑ_S, Z^x)``, fitted on the
        samples (the normal equations, from the family's running sums).
        """
        known = [self._known(self.plan.const_req[c.cid]) for c, _ in node.dot]
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
        beta = self._estimate(("d", node.base.bid), sums if ready else None)
        if beta is _PENDING:
            return _PENDING
        s2 = self.der.sigma2_of(node.base.family)
        return [v if v is not None else s2 * beta[:, i, None] for i, v in enumerate(known)]


def run_montecarlo(plan: Plan, samples: int, seed: Any, *, batches: int = 16, qmc: bool = False,
                   progress: bool = False, max_memory: int = 2**30) -> dict[int, tuple[float, float]]:
    """Replicated Monte Carlo passes; returns ``{const id: (mean, standard error)}``.

    Parameters
    ----------
    plan : Plan
        The planned requests (after the deterministic pass).
    samples : int
        Total samples; each of the ``batches`` replicates gets ``M = samples // batches``
        (with ``qmc``, the nearest power of two).
    seed : int, SeedSequence entropy or numpy Generator
        Replicate ``r`` draws from ``default_rng(SeedSequence(seed).spawn(batches)[r])``
        (with ``qmc``: one scrambled Sobol sequence seeded from it).
    batches : int, default 16
        Replicates ``K``; the standard error is their spread over ``√K``.
    qmc : bool, default False
        Randomised quasi-Monte Carlo instead of iid normals.
    progress : bool, default False
        Show a progress bar over the replicates.
    max_memory : int, default 1 GiB
        Bytes for the sample arrays. As many replicates as fit run in one pass (at
        least one); a replicate that does not fit alone runs in chunks of ``C`` samples
        (see :class:`MonteCarloPass`). The estimates are those of whole replicates, so
        the result does not depend on ``max_memory`` beyond floating-point summation
        order.

    Returns
    -------
    dict
        ``{const id: (mean over replicates, std(ddof=1) / √K)}`` for every scalar and
        ZDot coefficient.
    """
    der = plan.der
    D = len(der.bases)
    per_sample = _bytes_per_sample(der)
    schedule = _Schedule(der.program.instructions)
    K = int(batches)
    M = max(2, samples // K)
    if qmc:  # Sobol points keep their balance properties at powers of two
        M = 2 ** max(1, int(round(np.log2(M))))
    # Passes run concurrently on the cores (in threads: numpy releases the GIL inside its
    # kernels, so they overlap partly — two passes of the training benchmark take 0.36 s
    # against 0.41 s in one); each gets its share of max_memory. Results do not depend on the scheduling: every pass
    # has its own replicates and streams.
    workers = max(1, min(os.cpu_count() or 1, _MAX_WORKERS, K))
    fit = int(max_memory) // (per_sample * M * workers)  # whole replicates per pass
    if not fit:
        workers = 1
        fit = int(max_memory) // (per_sample * M)
    C = max(1, int(max_memory) // per_sample)  # samples per chunk, when none fits
    step = max(1, min(K, fit, _PASS_SAMPLES // M))
    if workers > 1:  # balanced passes, at least one per worker
        npass = max(workers, -(-K // step))
        step = -(-K // npass)
    ss = np.random.SeedSequence(seed) if not isinstance(seed, np.random.Generator) else \
        np.random.SeedSequence(int(seed.integers(2**63)))
    children = ss.spawn(K)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        chunks = f", chunks of {C}" if not fit else ""
        bar = tqdm(total=K, desc=f"Monte Carlo ({K}×{M} samples{chunks})", leave=False)
    def one_pass(seeds: Sequence[np.random.SeedSequence]) -> dict[int, Any]:
        if not fit:
            return _chunked_replicate(plan, seeds[0], M, C, D, qmc, schedule)
        mc = MonteCarloPass(plan, len(seeds), M, _normal_source(seeds, M, D, qmc),
                            schedule=schedule)
        mc.run()
        return mc.const

    groups = [children[start:start + step] for start in range(0, K, step)]
    values: dict[int, list[np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(groups) > 1:
            pool = stack.enter_context(ThreadPoolExecutor(min(workers, len(groups))))
            consts = pool.map(one_pass, groups)  # in order, whatever finishes first
        else:
            consts = map(one_pass, groups)
        for seeds, const in zip(groups, consts):
            for cid, v in const.items():
                values.setdefault(cid, []).append(np.broadcast_to(np.ravel(v), (len(seeds),)))
            if bar is not None:
                bar.update(len(seeds))
    if bar is not None:
        bar.close()
    cids = list(values)
    vals = np.array([np.concatenate(values[c]) for c in cids]).reshape(len(cids), K)
    means, ses = vals.mean(axis=1), vals.std(axis=1, ddof=1) / np.sqrt(K)
    return {c: (m, e) for c, m, e in zip(cids, means.tolist(), ses.tolist())}


def _bytes_per_sample(der: Any) -> int:
    """Memory bound per sample of one replicate: every vector, each base's normal, input
    copy and hat, the Sobol normals, and a few temporaries (float64)."""
    return 8 * (len(der.program) + 4 * len(der.bases) + 4)


def _chunked_replicate(plan: Plan, ss: np.random.SeedSequence, M: int, C: int, D: int,
                       qmc: bool, schedule: _Schedule) -> dict[int, Any]:
    """One replicate of ``M`` samples in chunks of at most ``C``: sweeps until complete."""
    sizes = [C] * (M // C) + ([M % C] if M % C else [])
    chunk_ss = ss.spawn(len(sizes))
    state = _Estimates(M)
    while True:
        complete = True
        for j, size in enumerate(sizes):
            seeds = [ss] if qmc else [chunk_ss[j]]  # QMC: one sequence, chunk j's points
            mc = MonteCarloPass(plan, 1, size, _normal_source(seeds, size, D, qmc, j * C), state,
                                schedule)
            mc.run()
            complete = complete and not mc.pending
        if complete:
            return mc.const
        if state.finish() == 0:  # pragma: no cover - would loop forever
            raise NumericalError("Monte Carlo in chunks made no progress (internal error)")


def _normal_source(seeds: Sequence[np.random.SeedSequence], M: int, D: int, qmc: bool,
                   start: int = 0) -> Callable[..., np.ndarray]:
    """``(out=None) -> (K, M)`` standard normals, row ``r`` the next ``M`` of stream ``seeds[r]``.

    Identical on every call with the same arguments (fresh generators). With ``qmc``,
    stream ``r`` is a scrambled ``D``-dimensional Sobol sequence seeded from ``seeds[r]``;
    its points ``start .. start+M−1`` are drawn at once and each call returns the next
    coordinate (through the normal quantile).
    """
    K = len(seeds)
    if not qmc:
        rngs = [np.random.default_rng(s) for s in seeds]

        def draw(out: np.ndarray | None = None) -> np.ndarray:
            out = np.empty((K, M)) if out is None else out
            for r, rng in enumerate(rngs):
                rng.standard_normal(out=out[r])
            return out

        return draw
    from scipy.special import ndtri
    from scipy.stats import qmc as _qmc

    U = np.empty((D_ := max(D, 1), K, M))
    for r, s in enumerate(seeds):
        # Sobol spawns from its generator's SeedSequence: seed it from an unspawned copy,
        # so that every chunk and sweep of a replicate gets the same scrambling.
        s = np.random.SeedSequence(s.entropy, spawn_key=s.spawn_key, pool_size=s.pool_size)
        sob = _qmc.Sobol(d=D_, scramble=True, seed=np.random.default_rng(s))
        if start:
            sob.fast_forward(start)
        U[:, r] = sob.random(M).T
    normals = iter(ndtri(np.clip(U, 1e-16, 1 - 1e-16)))

    def take(out: np.ndarray | None = None) -> np.ndarray:
        z = next(normals)
        if out is not None:
            out[...] = z
        return z

    return take
