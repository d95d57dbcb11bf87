"""The schedule of a Monte Carlo pass, worked out once per program (:class:`_Schedule`).

Which vectors live as rows of which stacks (hat families' inputs, the histories that
linear Nonlins combine), where each vector is read for the last time (a pass frees it
there), which Moments share their sums with a hat covariance (pairs), which are sampled
under an exponential tilt (:class:`_MCTilt`), and which have light tails (no Pareto
fit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy

from ...core.ir import MatMul, Moment, Nonlin
from ...gaussian import psd_factor
from ..exact import shape
from ..existence import integrand, tilt
from ..forms import lambdify_integrand
from ..growth import POLY_TAIL_DEGREE, moment_degrees
from ..plan import Plan
from .estimates import PairKey


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
        self.consts = np.array(
            [list(P) + [-1] * (width - len(P)) for _, _, P in terms], dtype=np.intp
        ).reshape(len(terms), width)

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

    def __init__(
        self,
        base: int | None,
        blocks: list[_Block],
        loose: list[tuple[int, float, tuple[int, ...]]],
    ) -> None:
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
        Per instruction, the stacks not read after it: a combination stack whose
        members are all dead, a family's stack once its members are dead and its last
        MatMul (its own, or one whose Ż reads its inputs and hats) is done. A pass
        frees them with the family's hats and sums (last uses computed once per
        schedule, as torch.fx's ``Interpreter`` does with ``user_to_last_uses``).
    stack_family : dict
        Family stack id -> its hat family.
    init_last : int
        The instruction after which no initial vector is read (their block is freed).
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
    gram_rows : dict
        ``(stack id, row r)`` -> ``(rows i ≤ r, their pair keys with row r)`` for the
        vectors living in one stack whose second moments some product Moment or hat
        covariance reads: the pair estimates of row ``r`` are taken together, as one
        row of the stack's Gram matrix (:meth:`~.rules.MonteCarloPass.moment`), when
        the first of them is needed.
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
        self.known = {
            c.cid: float(plan.values[rid])
            for c in der.consts
            for rid in [plan.const_req[c.cid]]
            if plan.deterministic[rid]
        }
        known_pairs = {
            k: float(plan.values[rid]) for k, rid in plan.cov_req.items() if plan.deterministic[rid]
        }  # (bid, bid), ascending
        last: dict[Any, int] = {}
        for i, instr in enumerate(instructions):
            last[instr.out] = i
            for v in instr.inputs:
                last[v] = i
        self.dead: list[list[Any]] = [[] for _ in instructions]
        for v, i in last.items():
            if v.kind == "vector":
                self.dead[i].append(v)
        self.pairs = {
            i: self.pair(i.args[0], i.args[-1])
            for i in instructions
            if isinstance(i, Moment) and _is_product(i.fn)
        }
        #: Moments sampled under an exponential tilt (:func:`_tilts`)
        self.tilts = _tilts(plan, self.known)
        #: Moments whose integrands grow at most polynomially (degree ≤
        #: :data:`~..growth.POLY_TAIL_DEGREE`): light tails, no Pareto fit
        self.light = {
            self.cid[v]
            for v, p in moment_degrees(plan.der).items()
            if p is not None and p <= POLY_TAIL_DEGREE and v in self.cid
        }
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
        used = set(self.pairs.values())
        used.update(k for ks in self.cov_keys.values() for k in ks)
        self.gram_rows = self._gram_rows(used)
        members: dict[int, int] = {}  # stack -> last use of its members and family
        for v, (sid, _) in self.home.items():
            members[sid] = max(members.get(sid, -1), last[v])
        self.stack_family = {sid: fam for fam, sid in self.family_stack.items()}
        for i, instr in enumerate(instructions):
            if isinstance(instr, MatMul):  # its family's and the Ż's family's data
                node = der.nodes[instr.out]
                for fam in [node.base.family, *(c.base.family for c, _ in node.dot)]:
                    sid = self.family_stack[fam]
                    members[sid] = max(members.get(sid, -1), i)
        self.init_last = max((last[v] for v in der.init_index), default=-1)
        self.release: list[list[int]] = [[] for _ in instructions]
        for sid, i in members.items():
            self.release[i].append(sid)

    def _gram_rows(self, used: set[PairKey]) -> dict[tuple[int, int], tuple[Any, list]]:
        """:attr:`gram_rows`, for the pair keys ``used``."""
        members: dict[int, dict[int, Any]] = {}
        for v, (sid, r) in self.home.items():
            members.setdefault(sid, {})[r] = v
        out: dict[tuple[int, int], tuple[Any, list]] = {}
        for sid, vs in members.items():
            for r, w in vs.items():
                rows = [i for i in sorted(vs) if i <= r and self.pair(vs[i], w) in used]
                if rows:
                    out[sid, r] = (np.array(rows), [self.pair(vs[i], w) for i in rows])
        return out

    def _new_stack(self, size: int) -> int:
        self.sizes.append(size)
        return len(self.sizes) - 1

    def _plan_linear(
        self, instr: Any, terms: list[tuple[int, float, tuple[int, ...]]], families: int
    ) -> _Linear:
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
            tails = [
                sid
                for sid, r in rows.items()
                if sid >= families
                and max(r) == self.sizes[sid] - 1
                and len(r) == max(r) - min(r) + 1
            ]
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
    measure of :meth:`..existence.Tilt.law`).

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

    def __init__(
        self,
        h: Any,
        cids: tuple[int, ...],
        mean: np.ndarray,
        F: np.ndarray,
        scale: float,
        mixture: tuple[Any, np.ndarray, np.ndarray, float] | None = None,
    ) -> None:
        self.h, self.cids, self.mean, self.F, self.scale = h, cids, mean, F, scale
        #: the defensive mixture's ``P`` (numeric), original law ``(μ, F)`` and ``c``
        self.P, self.mean0, self.F0, self.logc = mixture or (None, None, None, 0.0)


def _tilts(plan: Plan, known: dict[int, Any]) -> dict[Any, _MCTilt]:
    """The Moments Monte Carlo estimates under an exponential tilt: integrands
    ``h·exp(P)`` (:func:`..existence.tilt`, ``P`` with numeric coefficients, of degree 1
    or 2) of initial vectors only, whose tilted law exists."""
    from ..symbols import g

    der = plan.der
    out: dict[Any, _MCTilt] = {}
    for instr in der.program.instructions:
        if not isinstance(instr, Moment):
            continue
        cid = der.scalar_const[instr.out].cid
        req = plan.requests[plan.const_req[cid]]
        if cid in known or req.layout is None or not req.bids or any(gr >= 0 for gr in req.groups):
            continue
        expr = integrand(plan, req)
        d, m = len(req.bids), len(req.cids)
        # (a polynomial has no exp factor to tilt by: skipped by a DAG walk, not inlined)
        tl = tilt(expr, d, m, branches=True) if expr is not None and shape(expr).opaque else None
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
        out[instr] = _MCTilt(
            lambdify_integrand(tl.h, d, m),
            tuple(req.cids),
            mean2[0],
            psd_factor(cov2[0], what="tilted law"),
            float(np.exp(c[0])),
            mixture,
        )
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
