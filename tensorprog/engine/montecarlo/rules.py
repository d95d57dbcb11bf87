"""The Monte Carlo rules: one method per instruction class (:class:`MonteCarloPass`).

How a pass computes each instruction's samples from those of its arguments —
InitVector (the joint law's factor times its rows of normals), MatMul (Ẑ by
conditional Cholesky draws, Ż by dot coefficients or regression), Nonlin, Moment
(sample means; tilted moments and the defensive mixture), ScalarFn, InitScalar. The
walk, storage and chunk bookkeeping are those of :class:`~.passes._Pass`; the batched
linear algebra is in :mod:`.linalg`, the plan of stacks in :mod:`.schedule`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special

from ...core import ir
from ...core.errors import NumericalError
from ...core.ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from ...gaussian import psd_factor
from .estimates import _PENDING, DotKey, MomentKey
from .linalg import _combination, _combine, _factor_row, _inner
from .passes import _Family, _first_bad, _Pass
from .schedule import _MCTilt

__all__ = ["MonteCarloPass", "INNER_SAMPLES", "inner_size", "outer_average"]

#: An OuterNonlin's inner expectation 𝔼^{(1)} averages ψ over blocks of about
#: ``m = min(M, max(INNER_SAMPLES, ⌈16√M⌉))`` samples of a replicate of ``M``
#: (:func:`inner_size`, :func:`outer_average`): ``M·m`` evaluations of ψ per replicate.
INNER_SAMPLES = 1024


class MonteCarloPass(_Pass):
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
    inner : int, default 0
        OuterNonlins average over blocks ``2^inner`` times smaller than
        :func:`inner_size` (the coarse level of their bias bound).

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
        out = (
            _combine(lin, args, params, self.theta, self.stacks, self.shape)
            if lin is not None
            else np.asarray(instr.fn.numpy(*args, *params), dtype=float)
        )
        if out.shape != self.shape:
            out = np.broadcast_to(out, self.shape)
        if not np.isfinite(out).all():
            raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")
        return out

    def outer_nonlin(self, instr: ir.OuterNonlin) -> Any:
        rows = [self.env[a] for a in instr.rows]
        cols = [self.env[a] for a in instr.cols]
        params = self._params(instr)
        moments = self.der.copy_moments.get(instr.out)
        if moments is not None:  # ψ polynomial in the cols: Z^y = G(Z^{rows}; θ̊, 𝔼 m_k)
            mus = [self._copy_moment(c, cols) for c in moments]
            if not self._ready(*rows, *params, *mus):
                return self._wait()
            G = self.der.nodes[instr.out].fn
            out = np.broadcast_to(
                np.asarray(G.numpy(*rows, *params, *mus), dtype=float), self.shape
            )
            if not np.isfinite(out).all():
                raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")  # type: ignore[union-attr]
            return out
        if not self._ready(*rows, *cols, *params):
            return self._wait()
        qmc = getattr(self.normals, "qmc", True)
        m = max(2, inner_size(self.state.M, qmc) >> self.inner)
        start = getattr(self.normals, "start", 0)
        out = outer_average(instr.fn.numpy, rows, cols, params, self.shape, m, start, qmc)  # type: ignore[union-attr]
        if not np.isfinite(out).all():
            raise NumericalError(f"{instr.fn.name} produced NaN or inf on Monte Carlo samples")  # type: ignore[union-attr]
        return out

    def _copy_moment(self, c: Any, cols: list[Any]) -> Any:
        """``𝔼 m(Z^{cols})`` of a col monomial (:class:`~..derivation.CopyMomentConst`):
        known, or the replicate's sample mean."""
        known = self.schedule.known.get(c.cid)
        if known is not None:
            return self._record(c.cid, np.float64(known))

        def sums() -> tuple[np.ndarray]:
            vals = np.broadcast_to(c.fn.numpy(*cols), self.shape)
            return (vals.sum(axis=-1, keepdims=True),)

        val = self._estimate(MomentKey(c.cid), sums if self._ready(*cols) else None)
        if val is _PENDING:
            return self._wait()
        if not np.isfinite(val).all():
            raise NumericalError(f"the Monte Carlo estimate of {c.symbol} is not finite")
        return self._record(c.cid, val)

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
            if key in self._row_added:  # (a chunk: the sums came with a Gram row)
                self._row_added.discard(key)
                if ready and cid not in sched.light:
                    pre = self.state.prefix
                    self.state.add_tail(cid, args[0][..., :pre] * args[-1][..., :pre])

            def products() -> tuple[np.ndarray]:
                pre = self.state.prefix
                if cid not in sched.light:
                    self.state.add_tail(cid, args[0][..., :pre] * args[-1][..., :pre])
                row = self._gram_row(instr.args[0], instr.args[-1], key)
                return (row if row is not None else _inner(args[0][:, None], args[-1]),)

            return self._set_const(instr.out, self._estimate(key, products if ready else None))

        def sums() -> tuple[np.ndarray]:
            vals = np.broadcast_to(instr.fn.numpy(*args, *params), self.shape)
            if cid not in sched.light:
                self.state.add_tail(cid, vals[..., : self.state.prefix])
            return (vals.sum(axis=-1, keepdims=True),)

        return self._set_const(instr.out, self._estimate(MomentKey(cid), sums if ready else None))

    def _gram_row(self, a: Any, b: Any, key: Any) -> np.ndarray | None:
        """The sums ``Σ Z^a Z^b`` (K, 1) as part of a row of a stack's Gram matrix, or
        None when ``a`` and ``b`` do not live in one stack.

        With ``w`` the one of ``a``, ``b`` in the later row ``r`` of their stack, every
        pair ``(v, w)`` that :attr:`~.schedule._Schedule.gram_rows` lists, with ``v``
        written in this pass and its estimate not yet taken or being summed, is summed
        by one product ``stack[lo:r+1] · Z^w`` (:func:`~.linalg._inner`; its entries are
        the per-pair sums bit for bit), and the others are handed to the estimates:
        the ``O(k²)`` second moments of ``k`` vectors cost ``k`` products of a stack with
        a vector instead of ``k²`` of two vectors.
        """
        home = self.schedule.home
        ha, hb = home.get(a), home.get(b)
        if ha is None or hb is None or ha[0] != hb[0]:
            return None
        sid, r = ha[0], max(ha[1], hb[1])
        entry = self.schedule.gram_rows.get((sid, r))
        if entry is None:
            return None
        rows, keys = entry
        final, added, filled = self.state.final, self._added, self._filled
        take = [
            j
            for j, k in enumerate(keys)
            if k == key or ((sid, rows[j]) in filled and k not in final and k not in added)
        ]
        stack = self.stacks[sid]
        lo = int(rows[take[0]])
        s = _inner(stack[:, lo : r + 1], stack[:, r])
        mine = None
        for j in take:
            k, v = keys[j], s[:, rows[j] - lo, None]
            if k == key:
                mine = v
                continue
            self._estimate(k, lambda v=v: (v,))
            if not self.whole:
                self._row_added.add(k)
        return mine

    def _tilted_moment(self, instr: Moment, cid: int, tl: "_MCTilt") -> Any:
        """``𝔼[h e^P] = e^c 𝔼[h(μ' + F'ξ)]`` (:class:`_MCTilt`) from the pass's own
        normals ``ξ``: an exact change of measure."""
        consts = [self.const.get(c, _PENDING) for c in tl.cids]
        if not self._ready(*consts):
            return self._set_const(instr.out, self._estimate(MomentKey(cid), None))

        qs = [
            np.broadcast_to(
                np.asarray(c, dtype=float).reshape(-1, 1) if np.ndim(c) else c, (self.shape[0], 1)
            )
            for c in consts
        ]

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
            self.state.add_tail(cid, vals[..., : self.state.prefix])
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
                self._stack(sid), self._normals()[:, row : row + self.schedule.sizes[sid]]
            )
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
            raise NumericalError(
                f"Z^{{{instr.out.name}}} is not finite on Monte Carlo samples "
                f"(its ZDot coefficients: {bad})"
            )
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
                f"the expectation diverges or overflows"
            )
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
            return (
                hsum[:, idx],
                zx.sum(axis=-1, keepdims=True),
                gram[:, idx[:, None], idx],
                hz[:, idx],
            )

        ready = fam is not None and fam.nhats >= j
        beta = self._estimate(DotKey(node.base.bid), sums if ready else None)
        if beta is _PENDING:
            return _PENDING
        return [
            v if v is not None else c.full(beta[:, i, None])
            for i, (v, (c, _)) in enumerate(zip(known, node.dot))
        ]


def inner_size(M: int, qmc: bool) -> int:
    """The block ``m`` of an OuterNonlin's inner average in a replicate of ``M`` samples:
    ``min(M, max(INNER_SAMPLES, ⌈16√M⌉))``, rounded down to a power of two with ``qmc``
    (a block is then a scrambled ``(t, log₂m, s)``-net).

    Why ``16√M``: a smooth statistic of the averages is biased by ``c/m`` (iid: ``c``
    about the inner variance of ψ), against a standard error ``σ/√(K M)`` over ``K``
    replicates; with the default ``K = 16`` the ratio is ``(c/σ)·4√M/m ≤ (c/σ)/4``,
    and it does not grow with ``M``. Cost ``K·M·m ≈ 16 K M^{3/2}`` evaluations of ψ.
    """
    m = int(min(M, max(INNER_SAMPLES, int(np.ceil(16 * np.sqrt(M))))))
    return 1 << (m.bit_length() - 1) if qmc else m


def outer_average(
    fn: Any,
    rows: list[np.ndarray],
    cols: list[np.ndarray],
    params: list[Any],
    shape: tuple[int, int],
    m: int,
    start: int = 0,
    qmc: bool = True,
) -> np.ndarray:
    r"""``Z^y = 𝔼^{(1)} ψ(Z^{rows}; Z^{cols (1)}; θ̊)`` at each sample: ψ averaged over
    the cols of the other samples of its block [TP4b Def 2.6.5].

    The samples of a replicate (shape ``(K, M)``, sample ``a`` of the pass being sample
    ``start + a`` of the replicate) are cut into aligned blocks ``B`` of ``m``
    (:func:`inner_size`; the pieces at a chunk's ends are shorter, and a piece of one
    sample joins its neighbour), and sample ``a ∈ B`` gets

    .. math:: \hat Z^y_a = \frac{1}{|S_a|} \sum_{b \in S_a}
              \psi\big(Z^{rows}_a;\ Z^{cols}_b;\ \mathring\theta\big),
              \qquad S_a = B \setminus \{a\}\ \text{(iid)},\quad S_a = B\ \text{(QMC)}.

    *iid samples* (a U-statistic): the ``Z^{cols}_b``, ``b ≠ a``, are independent draws
    of the cols' joint law (given the replicate's estimated constants), independent of
    sample ``a``: ``Ẑ^y_a`` is unbiased for ``Z^y_a`` given ``Z^{rows}_a`` with variance
    ``Var^{(1)}ψ/(m − 1)``, so a linear statistic of ``y`` is unbiased and a smooth one is
    biased by ``O(1/m)``. *Randomised QMC* (a V-statistic): the points of an aligned
    block of a scrambled Sobol' sequence form a net, and averaging over the whole net —
    ``a`` included — is the product rule of the net with itself for the double
    integral, unbiased up to the points' pairwise dependence (of the order of the QMC
    variance); dropping ``a`` instead would bias every statistic by ``O(1/m)`` times
    ``𝔼[g(Z^{rows})(ψ(Z^{rows}; Z^{cols}) − 𝔼^{(1)}ψ)]``, since a net without one of its
    points is unbalanced. Each replicate stays an independent draw of the whole
    estimator, so the standard error over replicates is that of its mean; the bias of
    a smooth statistic, shared by every replicate, is bounded by running the replicates
    again with blocks of ``m/2`` (:func:`~.run.inner_bias`; both checked by coverage
    over seeds in the tests). Cost: ``K·M·m`` evaluations of ψ in about
    ``m`` vectorised calls over ``(K, M)`` arrays (memory ``2 (K, M)`` per col).
    """
    K, M = shape
    cuts = sorted({0, M} | {c - start for c in range(-(-start // m) * m, start + M, m)})
    pieces = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
    if len(pieces) > 1 and pieces[-1][1] - pieces[-1][0] == 1:
        pieces[-2:] = [(pieces[-2][0], pieces[-1][1])]
    if len(pieces) > 1 and pieces[0][1] - pieces[0][0] == 1:
        pieces[:2] = [(pieces[0][0], pieces[1][1])]
    if not qmc and M < 2:
        raise NumericalError(
            "an OuterNonlin's inner expectation needs at least 2 Monte Carlo samples per "
            "replicate (or chunk); pass more samples= or a larger max_memory="
        )
    rows = [np.broadcast_to(r, shape) for r in rows]
    cols = [np.broadcast_to(c, shape) for c in cols]
    params = [p[:, :, None] if np.ndim(p) == 2 else p for p in params]  # (K, 1, 1)
    out = np.empty(shape)
    full = [(lo, hi) for lo, hi in pieces if hi - lo == m]
    groups = [(full[0][0], full[-1][1], m)] if full else []  # contiguous whole blocks
    groups += [(lo, hi, hi - lo) for lo, hi in pieces if hi - lo != m]
    for lo, hi, L in groups:
        nb = (hi - lo) // L
        R = [r[:, lo:hi].reshape(K, nb, L) for r in rows]
        ext = [np.concatenate([c[:, lo:hi].reshape(K, nb, L)] * 2, axis=2) for c in cols]
        acc = np.zeros((K, nb, L))
        shifts = range(L) if qmc else range(1, L)
        for j in shifts:
            acc += fn(*R, *[e[:, :, j : j + L] for e in ext], *params)
        out[:, lo:hi] = (acc / len(shifts)).reshape(K, hi - lo)
    return out
