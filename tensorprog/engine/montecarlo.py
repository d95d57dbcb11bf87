"""Monte Carlo over the limit: sample every base Gaussian, evaluate every ``Z``.

One pass walks the program in order with arrays of ``M`` samples per vector — a
"width-M" run of the *limit*, with no matrices:

* initial vectors: ``M`` iid draws of their joint law;
* MatMul ``Wx``: ``Ẑ^{Wx}`` is drawn conditionally on the earlier hats of its family
  (incremental, rank-tolerant Cholesky of ``σ_W² 𝔼[Z^x Z^{x'}]``), then
  ``Z = Ẑ + Σ_i c_i Z^{y^i}`` with ``c = σ_W² 𝔼[∂Z^x/∂Ẑ_S]`` from the Stein/regression
  form ``Cov(Ẑ_S)⁻¹ 𝔼[Ẑ_S Z^x]`` (a least-squares fit of ``Z^x`` on the hats it
  depends on) [TP4 Remark F.2, THEORY §2.1 note 3] — valid for relu and step;
* Moments are sample means.

Quantities the deterministic pass already knows exactly are used as constants. The
whole pass is repeated on ``K`` independent replicates; the value is their mean and
the standard error their spread over ``√K``, which accounts for every source of
noise (estimated covariances, regressions, propagated moments).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import NumericalError
from ..gaussian import psd_factor
from ..interpreter import Interpreter
from ..ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from .plan import Plan

__all__ = ["MonteCarloPass", "run_montecarlo"]


class _Rows:
    """A growing stack of length-M rows (amortised O(1) append, a view to read)."""

    def __init__(self, M: int) -> None:
        self.buf = np.empty((4, M))
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n == self.buf.shape[0]:
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
        self.buf[self.n] = row
        self.n += 1

    @property
    def view(self) -> np.ndarray:
        return self.buf[: self.n]


class _Family:
    """Incremental lower-triangular factor of one hat family's covariance."""

    def __init__(self, M: int) -> None:
        self.L = np.zeros((0, 0))
        self.normals = _Rows(M)
        self.inputs = _Rows(M)  # Z^x of each member's input
        self.M = M

    def add(self, cov_row: np.ndarray, var: float, fresh: np.ndarray) -> np.ndarray:
        k = self.normals.n
        row = np.zeros(k)
        for i in range(k):
            piv = self.L[i, i]
            s = cov_row[i] - self.L[i, :i] @ row[:i]
            row[i] = s / piv if piv > 1e-12 * max(1.0, abs(var)) else 0.0
        d = var - row @ row
        d = d if d > 1e-12 * max(1.0, abs(var)) else 0.0
        L = np.zeros((k + 1, k + 1))
        L[:k, :k] = self.L
        L[k, :k] = row
        L[k, k] = np.sqrt(d)
        hat = fresh * L[k, k]
        if k and np.any(row):
            hat = hat + row @ self.normals.view
        self.L = L
        self.normals.append(fresh)
        return hat


class MonteCarloPass(Interpreter):
    """One replicate: every vector as ``M`` samples of its ``Z``."""

    def __init__(self, plan: Plan, M: int, normals: Any) -> None:
        super().__init__(plan.der.program)
        self.plan = plan
        self.der = plan.der
        self.M = M
        self.normals = normals  # callable: () -> fresh (M,) standard normal column
        self.fam: dict[Any, _Family] = {}
        self.hat: dict[int, np.ndarray] = {}
        self.const: dict[int, float] = {}
        self._init: np.ndarray | None = None

    def _known(self, rid: int) -> float | None:
        r = self.plan.requests[rid]
        return r.value if r.deterministic else None

    def _set_const(self, v: Any, value: float, instr: Any) -> float:
        if not np.isfinite(value):
            raise NumericalError(f"Monte Carlo estimate of {v.name} is not finite ({value})")
        self.const[self.der.scalar_const[v].cid] = value
        return value

    def _params(self, instr: Any) -> list[float]:
        # numpy scalars: 1/0 gives inf (reported as an error), not ZeroDivisionError
        return [np.float64(self.const[self.der.scalar_const[p].cid]) for p in instr.params]

    def init_matrix(self, instr: InitMatrix) -> None:
        return None

    def init_vector(self, instr: InitVector) -> np.ndarray:
        if self._init is None:
            F = psd_factor(self.der.init_cov, what="initial vectors' covariance")
            G = np.stack([self.normals() for _ in range(F.shape[0])], axis=1)
            self._init = G @ F.T + self.der.init_mean
        z = self._init[:, self.der.init_index[instr.out]]
        self.hat[self.der.nodes[instr.out].base.bid] = z
        return z

    def init_scalar(self, instr: InitScalar) -> float:
        rid = self.plan.const_req[self.der.scalar_const[instr.out].cid]
        return self._set_const(instr.out, float(self.plan.requests[rid].value), instr)

    def scalar_fn(self, instr: ScalarFn) -> float:
        with np.errstate(all="ignore"):
            val = float(instr.fn.numpy(*self._params(instr)))
        return self._set_const(instr.out, val, instr)

    def nonlin(self, instr: Nonlin) -> np.ndarray:
        return self._coordinatewise(instr, [self.env[a] for a in instr.args], self._params(instr))

    def _coordinatewise(self, instr: Nonlin, args: list[Any], params: list[Any]) -> np.ndarray:
        """``fn(args; params)`` on the samples, as an (M,) array; NaN/inf is an error."""
        with np.errstate(all="ignore"):
            out = instr.fn.numpy(*args, *map(np.float64, params))
        out = np.asarray(out, dtype=float)
        if out.shape != (self.M,):
            out = np.full(self.M, out)
        if not np.all(np.isfinite(out)):
            raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")
        return out

    def moment(self, instr: Moment) -> float:
        known = self._known(self.plan.const_req[self.der.scalar_const[instr.out].cid])
        if known is not None:
            return self._set_const(instr.out, known, instr)
        with np.errstate(all="ignore"):
            vals = instr.fn.numpy(*[self.env[a] for a in instr.args], *self._params(instr))
        return self._set_const(instr.out, float(np.mean(np.broadcast_to(vals, (self.M,)))), instr)

    def matmul(self, instr: MatMul) -> np.ndarray:
        der = self.der
        node = der.nodes[instr.out]
        b = node.base
        fam_bases = der.families[b.family][: b.index + 1]
        fam = self.fam.setdefault(b.family, _Family(self.M))
        s2 = der.sigma2_of(b.family)
        zx = self.env[instr.arg]
        with np.errstate(all="ignore"):  # sample second moments with every earlier input
            row = fam.inputs.view @ zx / self.M if b.index else np.zeros(0)
        for j, bj in enumerate(fam_bases[:-1]):
            known = self._known_cov(b, bj)
            if known is not None:
                row[j] = known
        row = s2 * row
        var = s2 * self._second_moment(b, b, zx, zx)
        if not (np.isfinite(var) and np.all(np.isfinite(row))):
            raise NumericalError(
                f"the covariance of {b.symbol} is not finite (variance {var}); the expectation "
                f"diverges or overflows")
        hat = fam.add(row, var, self.normals())
        fam.inputs.append(zx)
        self.hat[b.bid] = hat
        z = hat
        if node.dot:
            coefs = self._dot_coefficients(instr, node, zx)
            with np.errstate(all="ignore"):
                for (c, y), coef in zip(node.dot, coefs):
                    self.const[c.cid] = coef
                    z = z + coef * self.env[y]
            if not np.all(np.isfinite(z)):
                raise NumericalError(f"Z^{{{instr.out.name}}} is not finite on Monte Carlo samples "
                                     f"(its ZDot coefficients: {coefs})")
        return z

    def _known_cov(self, bi: Any, bj: Any) -> float | None:
        rid = self.plan.cov_req.get((min(bi.bid, bj.bid), max(bi.bid, bj.bid)))
        return self._known(rid) if rid is not None else None

    def _second_moment(self, bi: Any, bj: Any, zi: np.ndarray, zj: np.ndarray) -> float:
        known = self._known_cov(bi, bj)
        if known is not None:
            return known
        with np.errstate(all="ignore"):
            return float(np.mean(zi * zj))

    def _dot_coefficients(self, instr: MatMul, node: Any, zx: np.ndarray) -> list[float]:
        known = [self._known(self.plan.const_req[c.cid]) for c, _ in node.dot]
        if all(k is not None for k in known):
            return known  # type: ignore[return-value]
        # Stein / regression: 𝔼∇_S Z^x = Cov(Ẑ_S)⁻¹ Cov(Ẑ_S, Z^x), fitted on the samples.
        H = np.stack([self.hat[c.base.bid] for c, _ in node.dot], axis=1)
        Hc = H - H.mean(axis=0)
        # Normal equations (k×k) instead of an M×k least-squares solve: the same β.
        beta = np.linalg.pinv(Hc.T @ Hc, rcond=1e-10, hermitian=True) @ (Hc.T @ (zx - zx.mean()))
        s2 = self.der.sigma2_of(node.base.family)
        return [k if k is not None else float(s2 * bta) for k, bta in zip(known, beta)]


def run_montecarlo(plan: Plan, samples: int, seed: Any, *, batches: int = 16, qmc: bool = False,
                   progress: bool = False, max_memory: int = 2**30) -> dict[int, tuple[float, float]]:
    """Replicated Monte Carlo passes; returns ``{const id: (mean, standard error)}``.

    ``batches`` replicates of ``M = samples // batches`` samples each. A replicate whose
    arrays do not fit in ``max_memory`` is run in chunks of ``C`` samples (see
    :class:`ChunkedPass`): the estimates are those of the whole replicate, so the result
    does not depend on ``max_memory`` beyond floating-point summation order.
    """
    prog = plan.der.program
    per_sample = 8 * (len(prog) + len(plan.der.bases) + 4)
    K = int(batches)
    M = max(2, samples // K)
    if qmc:  # Sobol points keep their balance properties at powers of two
        M = 2 ** max(1, int(round(np.log2(M))))
    C = max(1, int(max_memory) // per_sample)
    ss = np.random.SeedSequence(seed) if not isinstance(seed, np.random.Generator) else \
        np.random.SeedSequence(int(seed.integers(2**63)))
    children = ss.spawn(K)
    results: list[dict[int, float]] = []
    it = range(K)
    if progress:
        from tqdm.auto import tqdm

        chunks = "" if C >= M else f", chunks of {C}"
        it = tqdm(it, desc=f"Monte Carlo ({K}×{M} samples{chunks})", leave=False)
    D = len(plan.der.bases)
    for r in it:
        if C >= M:
            normals = _normal_source(children[r], M, D, qmc)
            mc = MonteCarloPass(plan, M, normals)
            mc.run()
            results.append(dict(mc.const))
        else:
            results.append(_chunked_replicate(plan, children[r], M, C, D, qmc))
    out: dict[int, tuple[float, float]] = {}
    for cid in results[0]:
        vals = np.array([res[cid] for res in results])
        out[cid] = (float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(K)))
    return out


_PENDING = None  # the value of a vector or scalar not computable in this sweep


class _ReplicateState:
    """What one replicate has estimated so far (shared by its chunks and sweeps).

    Keys: ``("m", cid)`` a Moment's mean, ``("c", bid, bid')`` a hat family's second
    moment ``𝔼[Z^x Z^{x'}]``, ``("d", bid)`` the Stein regression of a MatMul ``bid``.
    ``acc`` holds this sweep's running sums; ``final`` the finished estimates.
    """

    def __init__(self, M: int) -> None:
        self.M = M
        self.final: dict[Any, Any] = {}
        self.acc: dict[Any, Any] = {}
        self.L: dict[int, tuple[np.ndarray, float]] = {}  # bid -> (row of L, diagonal)

    def add(self, key: Any, value: Any) -> None:
        if key not in self.acc:
            self.acc[key] = value
        elif isinstance(value, tuple):
            self.acc[key] = tuple(a + b for a, b in zip(self.acc[key], value))
        else:
            self.acc[key] = self.acc[key] + value

    def finish(self, s2_of: Any) -> int:
        for key, val in self.acc.items():
            if key[0] == "d":  # regression sums: n, ΣH, Σz, ΣHHᵀ, ΣHz
                n, sh, sz, shh, shz = val
                cov_h = shh / n - np.outer(sh, sh) / n**2
                cov_hz = shz / n - sh * sz / n**2
                self.final[key] = s2_of(key[1]) * (np.linalg.pinv(cov_h, rcond=1e-10,
                                                                   hermitian=True) @ cov_hz)
            else:
                self.final[key] = float(val) / self.M
        done = len(self.acc)
        self.acc = {}
        return done


class ChunkedPass(MonteCarloPass):
    """One sweep of one chunk (``C`` samples) of a replicate too big for memory.

    Every estimate (a Moment, a hat covariance, a Stein regression) must be taken over
    the whole replicate before anything downstream uses it, so a replicate runs in
    sweeps over its chunks: each sweep computes what the finished estimates allow,
    accumulates the sums of the next ones, and marks everything downstream pending.
    The chunk's normals are drawn in the same order in every sweep (pending or not),
    so every sweep sees the same samples.
    """

    def __init__(self, plan: Plan, C: int, normals: Any, state: _ReplicateState) -> None:
        super().__init__(plan, C, normals)
        self.state = state
        self.pending = False
        self.inputs: dict[Any, list[Any]] = {}  # family -> Z^x of each member, this chunk
        self.fresh: dict[Any, list[np.ndarray]] = {}  # family -> normals of each member

    def _ready(self, *values: Any) -> bool:
        if any(v is _PENDING for v in values):
            self.pending = True
            return False
        return True

    def _params(self, instr: Any) -> list[float]:
        return [self.const.get(self.der.scalar_const[p].cid, _PENDING) for p in instr.params]

    def scalar_fn(self, instr: ScalarFn) -> Any:
        params = self._params(instr)
        if not self._ready(*params):
            return _PENDING
        with np.errstate(all="ignore"):
            val = float(instr.fn.numpy(*map(np.float64, params)))
        return self._set_const(instr.out, val, instr)

    def nonlin(self, instr: Nonlin) -> Any:
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)
        if not self._ready(*args, *params):
            return _PENDING
        return self._coordinatewise(instr, args, params)

    def moment(self, instr: Moment) -> Any:
        cid = self.der.scalar_const[instr.out].cid
        known = self._known(self.plan.const_req[cid])
        if known is not None:
            return self._set_const(instr.out, known, instr)
        if ("m", cid) in self.state.final:
            return self._set_const(instr.out, self.state.final[("m", cid)], instr)
        args = [self.env[a] for a in instr.args]
        params = self._params(instr)
        if self._ready(*args, *params):
            with np.errstate(all="ignore"):
                vals = instr.fn.numpy(*args, *map(np.float64, params))
            total = float(np.sum(np.broadcast_to(vals, (self.M,))))
            if not np.isfinite(total):
                raise NumericalError(f"Monte Carlo estimate of {instr.out.name} is not finite")
            self.state.add(("m", cid), total)
        self.pending = True
        return _PENDING

    def _cov(self, bi: Any, bj: Any, zi: Any, zj: Any) -> Any:
        k = (min(bi.bid, bj.bid), max(bi.bid, bj.bid))
        rid = self.plan.cov_req.get(k)
        known = self._known(rid) if rid is not None else None
        if known is not None:
            return known
        key = ("c",) + k
        if key in self.state.final:
            return self.state.final[key]
        if zi is not _PENDING and zj is not _PENDING:
            with np.errstate(all="ignore"):
                self.state.add(key, float(np.sum(zi * zj)))
        return _PENDING

    def matmul(self, instr: MatMul) -> Any:
        der, st = self.der, self.state
        node = der.nodes[instr.out]
        b = node.base
        fresh = self.fresh.setdefault(b.family, [])
        fresh.append(self.normals())  # always: the stream is the same in every sweep
        inputs = self.inputs.setdefault(b.family, [])
        zx = self.env[instr.arg]
        inputs.append(zx)
        if b.bid not in st.L:
            s2 = der.sigma2_of(b.family)
            fam_bases = der.families[b.family][: b.index + 1]
            row = [self._cov(b, bj, zx, inputs[j]) for j, bj in enumerate(fam_bases[:-1])]
            var = self._cov(b, b, zx, zx)
            earlier = all(bj.bid in st.L for bj in fam_bases[:-1])
            if not self._ready(var, *row) or not earlier:
                self.pending = True
                return _PENDING
            row = s2 * np.array(row, dtype=float)
            var = s2 * var
            if not (np.isfinite(var) and np.all(np.isfinite(row))):
                raise NumericalError(
                    f"the covariance of {b.symbol} is not finite (variance {var}); the "
                    f"expectation diverges or overflows")
            st.L[b.bid] = _factor_row(st, fam_bases, row, var)
        Lrow, diag = st.L[b.bid]
        hat = fresh[b.index] * diag
        for i, coef in enumerate(Lrow):
            if coef != 0.0:
                hat = hat + coef * fresh[i]
        self.hat[b.bid] = hat
        if not self._ready(zx):
            return _PENDING
        z = hat
        if node.dot:
            coefs = self._dot_coefficients(instr, node, zx)
            ys = [self.env[y] for _, y in node.dot]
            if coefs is _PENDING or not self._ready(*ys):
                self.pending = True
                return _PENDING
            with np.errstate(all="ignore"):
                for (c, _y), coef, yv in zip(node.dot, coefs, ys):
                    self.const[c.cid] = coef
                    z = z + coef * yv
            if not np.all(np.isfinite(z)):
                raise NumericalError(f"Z^{{{instr.out.name}}} is not finite on Monte Carlo samples "
                                     f"(its ZDot coefficients: {coefs})")
        return z

    def _dot_coefficients(self, instr: MatMul, node: Any, zx: np.ndarray) -> Any:
        known = [self._known(self.plan.const_req[c.cid]) for c, _ in node.dot]
        if all(k is not None for k in known):
            return known
        key = ("d", node.base.bid)
        if key in self.state.final:
            return [k if k is not None else float(b)
                    for k, b in zip(known, self.state.final[key])]
        hats = [self.hat.get(c.base.bid, _PENDING) for c, _ in node.dot]
        if all(h is not _PENDING for h in hats):
            H = np.stack(hats, axis=1)
            self.state.add(key, (H.shape[0], H.sum(0), zx.sum(), H.T @ H, H.T @ zx))
        return _PENDING


def _factor_row(st: _ReplicateState, fam_bases: list, cov_row: np.ndarray,
                var: float) -> tuple[np.ndarray, float]:
    """Row ``k`` of the family's rank-tolerant Cholesky factor (as :class:`_Family`)."""
    k = len(fam_bases) - 1
    row = np.zeros(k)
    for i in range(k):
        Li, piv = st.L[fam_bases[i].bid]
        s = cov_row[i] - Li[:i] @ row[:i]
        row[i] = s / piv if piv > 1e-12 * max(1.0, abs(var)) else 0.0
    d = var - row @ row
    return row, float(np.sqrt(d)) if d > 1e-12 * max(1.0, abs(var)) else 0.0


def _chunked_replicate(plan: Plan, ss: np.random.SeedSequence, M: int, C: int, D: int,
                       qmc: bool) -> dict[int, float]:
    """One replicate of ``M`` samples in chunks of at most ``C``: sweeps until complete."""
    sizes = [C] * (M // C) + ([M % C] if M % C else [])
    chunk_ss = ss.spawn(len(sizes))
    state = _ReplicateState(M)
    der = plan.der
    s2_of = lambda bid: der.sigma2_of(der.bases[bid].family)  # noqa: E731
    while True:
        complete = True
        for j, size in enumerate(sizes):
            normals = _chunk_normals(chunk_ss[j], ss, j * C, size, D, qmc)
            mc = ChunkedPass(plan, size, normals, state)
            mc.run()
            complete = complete and not mc.pending
        if complete:
            return dict(mc.const)
        if state.finish(s2_of) == 0:  # pragma: no cover - would loop forever
            raise NumericalError("Monte Carlo in chunks made no progress (internal error)")


def _chunk_normals(ss: np.random.SeedSequence, parent: np.random.SeedSequence, start: int,
                   size: int, D: int, qmc: bool) -> Any:
    """Normals of one chunk; identical on every call (a fresh generator each sweep)."""
    if not qmc:
        rng = np.random.default_rng(ss)
        return lambda: rng.standard_normal(size)
    from scipy.special import ndtri
    from scipy.stats import qmc as _qmc

    sob = _qmc.Sobol(d=max(D, 1), scramble=True, seed=np.random.default_rng(parent))
    sob.fast_forward(start)
    U = np.clip(sob.random(size), 1e-16, 1 - 1e-16)
    cols = iter(range(U.shape[1]))
    return lambda: ndtri(U[:, next(cols)])


def _normal_source(ss: np.random.SeedSequence, M: int, D: int, qmc: bool) -> Any:
    if not qmc:
        rng = np.random.default_rng(ss)
        return lambda: rng.standard_normal(M)
    from scipy.special import ndtri
    from scipy.stats import qmc as _qmc

    sob = _qmc.Sobol(d=max(D, 1), scramble=True, seed=np.random.default_rng(ss))
    U = sob.random(M)
    U = np.clip(U, 1e-16, 1 - 1e-16)
    cols = iter(range(U.shape[1]))
    return lambda: ndtri(U[:, next(cols)])
