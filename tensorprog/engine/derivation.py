"""The symbolic pass of the Master Theorem: ``Z`` for every vector [TP4 Def 7.3].

:class:`Derivation` walks the program once and records, per vector, its ``Z`` as one
DAG node over earlier vectors (never inlined), per MatMul the Ẑ/Ż split, and the
*base Gaussians* every ``Z`` is a function of:

* ``Z^{x}`` of the initial vectors (one jointly Gaussian family, law given), and
* ``Ẑ^{Wx}`` of every MatMul, one centred Gaussian family per matrix *and direction*
  (``W`` and ``Wᵀ`` are different families) with
  ``Cov(Ẑ^{Wx}, Ẑ^{Wy}) = σ_W² 𝔼[Z^x Z^y]`` [TP4 ZHat].

ZDot [TP4 Eq. (31)] ``Ż^{Wx} = σ_W² Σ_i Z^{y^i} 𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}]`` runs over the
``Wᵀ``-family hats that ``Z^x`` actually depends on (its *support*): the derivative
with respect to any other hat is zero. A coefficient is dropped (shown as 0) when it
vanishes identically, e.g. in the first backward pass (gradient independence,
[TP2 §6]; docs/concepts/master-theorem.md): the derivative is odd in a centred base Gaussian that is
independent of everything else in it.

Records: a vector's ``Z`` is a :class:`BaseNode`, :class:`FnNode`, :class:`MatMulNode` or
:class:`OuterNode`; a constant a :class:`ScalarConst` (θ̊), a :class:`DotConst` (a ZDot
coefficient, which states the σ² convention: :meth:`DotConst.full`) or a
:class:`CopyMomentConst`. An OuterNonlin [TP4b Def 2.6.5] is a function of its rows
only: an :class:`FnNode` whose parameters include moments of its cols
(:class:`CopyMomentConst`) when ψ is a polynomial in the cols, else an
:class:`OuterNode` (no canonical integrand: Monte Carlo). The ZDot candidates of a MatMul are
:meth:`Derivation.dot_candidates`.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from ..core._resources import recursion_room
from ..core.errors import ProgramValueError
from ..core.interpreter import Interpreter
from ..core.ir import (
    InitMatrix,
    InitScalar,
    InitVector,
    MatMul,
    Moment,
    Nonlin,
    OuterNonlin,
    ScalarFn,
    Var,
)
from ..core.nonlin import Nonlinearity
from .symbols import (
    CopyExpectation,
    CopyMoment,
    DotCoef,
    GaussSym,
    Theta,
    ZCopy,
    ZHat,
    ZSym,
    g,
    q,
)

__all__ = [
    "Derivation",
    "Base",
    "Const",
    "ScalarConst",
    "DotConst",
    "CopyMomentConst",
    "Node",
    "BaseNode",
    "FnNode",
    "MatMulNode",
    "OuterNode",
    "Layout",
]

_LID_G, _LID_Q = 0, 1  # interned local structures of a bare base Gaussian / constant

#: Canonical integrands bigger than this (tree nodes) are not built symbolically —
#: except polynomials the exact evaluator takes by walks of their DAG
#: (:meth:`~.plan.Plan._polynomial_beyond_tree`).
MAX_TREE = 400
#: The termwise (sympy) test that a ZDot term vanishes runs on integrands up to this
#: size; bigger ones (long training unrolls) rely on the parity test alone.
VANISH_TREE = 120


@dataclass(frozen=True, eq=False)
class Base:
    """A base Gaussian: an initial vector's ``Z`` or a MatMul's ``Ẑ``."""

    bid: int
    var: Var  # the initial vector, or the MatMul's output
    family: Any  # None for initial vectors, (matrix Var, transpose) for hats
    symbol: sympy.Symbol
    index: int  # position within its family


@dataclass(frozen=True, eq=False)
class ScalarConst:
    """The limit ``θ̊`` of a scalar of the program (a constant of every ``Z`` using it)."""

    cid: int
    var: Var  # the scalar

    @functools.cached_property
    def symbol(self) -> Theta:
        """``θ̊`` of the scalar."""
        return Theta(self.var.name)


@dataclass(frozen=True, eq=False)
class DotConst:
    """A ZDot coefficient of MatMul ``Wx`` along the hat ``Ẑ^{Wᵀy}`` [TP4 Eq. (31)].

    Convention: ``Ż^{Wx} = Σ_i c_i Z^{y^i}`` with the *full* coefficient
    ``c_i = σ_W² 𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}]``; :attr:`symbol` stands for the expectation
    ``𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}]`` alone. :meth:`full` and :meth:`expectation` convert
    between the two: every backend and printer goes through them.
    """

    cid: int
    var: Var  # the MatMul output Wx
    x: Var  # its argument
    base: Base  # the Wᵀ-family hat differentiated against, Ẑ^{Wᵀy}
    y: Var  # the vector y of that hat
    sigma2: float  # σ_W² of the MatMul's matrix
    symbol: DotCoef  # 𝔼[∂Z^x/∂Ẑ^{Wᵀy}]

    def full(self, expectation: Any) -> Any:
        """``c = σ_W² 𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` from the expectation (floats or arrays)."""
        return self.sigma2 * expectation

    def expectation(self, full: Any) -> Any:
        """``𝔼[∂Z^x/∂Ẑ^{Wᵀy}] = c / σ_W²`` from the full coefficient (0 when ``σ_W² = 0``)."""
        return full / self.sigma2 if self.sigma2 else 0.0


@dataclass(frozen=True, eq=False)
class CopyMomentConst:
    """``𝔼[m(Z^{cols})]`` for a monomial ``m`` of an OuterNonlin's ψ in its cols.

    When ψ is a polynomial in its col arguments, ``ψ = Σ_k A_k(rows; θ) m_k(cols)``
    and the OuterNonlin rule [TP4b Def 2.6.5] is
    ``Z^y = Σ_k A_k(Z^{rows}; θ̊) 𝔼[m_k(Z^{cols})]``: a Nonlin of the rows whose
    parameters include these moments (ordinary expectations of the cols' ``Z``).
    """

    cid: int
    var: Var  # the OuterNonlin's output
    cols: tuple[Var, ...]
    fn: Any  # the monomial m_k as a (transparent) Nonlinearity of the cols

    @functools.cached_property
    def symbol(self) -> CopyMoment:
        """``𝔼[m_k(Z^{cols})]``."""
        return CopyMoment(self.fn.inline(*[ZSym(c.name) for c in self.cols]))


#: A deterministic constant of the limit.
Const = ScalarConst | DotConst | CopyMomentConst


@dataclass(frozen=True, eq=False)
class Layout:
    """What a request's base Gaussians look like, up to their identities.

    ``groups`` labels them so that different labels are independent (hats by family
    in order of appearance, ``W`` and ``Wᵀ`` differ; initial vectors ``-1 - c`` by
    their component ``c`` of nonzero initial covariances); ``centred``: every mean is
    zero; ``pairs``: positions ``(i, j)``, ``i ≤ j``, of the same-family hat pairs
    whose covariance ``σ² 𝔼[Z^x Z^y]`` is an unknown of the limit.
    """

    groups: tuple[int, ...]
    centred: bool
    pairs: tuple[tuple[int, int], ...]


def _make_layout(codes: tuple[int, ...]) -> Layout:
    fam: dict[int, int] = {}
    groups = []
    for c in codes:
        groups.append(-1 - (c >> 2) if c & 1 else fam.setdefault(c, len(fam)))
    pairs = tuple(
        (i, j)
        for i, a in enumerate(codes)
        if not a & 1
        for j in range(i, len(codes))
        if codes[j] == a
    )
    return Layout(tuple(groups), not any(c & 2 for c in codes), pairs)


@dataclass(frozen=True, eq=False, slots=True)
class BaseNode:
    """``Z^x = g``: an initial vector, its own base Gaussian."""

    base: Base
    support: frozenset[int]  # bids of the base Gaussians Z depends on
    polynomial: bool = True
    size: int = 1  # nodes of Z's expression tree, shared subtrees counted each time


@dataclass(frozen=True, eq=False, slots=True)
class FnNode:
    """``Z^x = fn(Z^{args}; θ̊ of consts)`` [TP4 ZNonlin]."""

    fn: Any  # the Nonlinearity
    args: tuple[Var, ...]
    consts: tuple[ScalarConst, ...]
    support: frozenset[int]
    polynomial: bool
    size: int


@dataclass(frozen=True, eq=False, slots=True)
class MatMulNode:
    """``Z^{Wx} = Ẑ^{Wx} + Σ_i c_i Z^{y_i}`` with ``dot = ((c_i, y_i), …)`` [TP4 ZMatMul]."""

    base: Base  # Ẑ^{Wx}
    dot: tuple[tuple[DotConst, Var], ...]
    support: frozenset[int]
    polynomial: bool
    size: int


@dataclass(frozen=True, eq=False, slots=True)
class OuterNode:
    """``Z^y = 𝔼^{(1)} fn(Z^{rows}; Z^{cols (1)}; θ̊ of consts)`` [TP4b Def 2.6.5].

    A deterministic function of the rows' ``Z`` (the expectation runs over an iid
    copy of the cols' joint law): ``support`` is the rows', so ZDot differentiates
    through the rows only. It has no canonical integrand (``size`` is beyond
    :data:`MAX_TREE`): expectations of it go to Monte Carlo.
    """

    fn: Any  # the Nonlinearity ψ (rows, then cols, then parameters)
    rows: tuple[Var, ...]
    cols: tuple[Var, ...]
    consts: tuple[ScalarConst, ...]
    support: frozenset[int]
    polynomial: bool = False
    size: int = MAX_TREE + 1


#: ``Z`` of one vector as one node of the Z-DAG (its arguments are earlier vectors).
Node = BaseNode | FnNode | MatMulNode | OuterNode


#: Placed expressions of every derivation, one object per equal expression (hash-consing).
#: Programs that share steps (a longer training run, a rebuilt program) place equal
#: expressions; as distinct objects, every cache keyed by expression would compare them
#: with sympy's ``==``, which walks them as trees — exponential in a linear unroll's
#: length. Interned bottom-up, equal expressions have identical arguments, so each
#: comparison stops one level down. Emptied past ``_INTERN_SIZE`` entries.
_INTERNED: dict[sympy.Basic, sympy.Basic] = {}
_INTERN_SIZE = 1 << 18


def _interned(e: sympy.Basic) -> sympy.Basic:
    if len(_INTERNED) > _INTERN_SIZE:
        _INTERNED.clear()
    return _INTERNED.setdefault(e, e)


class Derivation(Interpreter):
    """Builds the Z-DAG, base Gaussians, constants and ZDot terms of a program."""

    def __init__(self, program: Any) -> None:
        super().__init__(program)
        self.bases: list[Base] = []
        self.consts: list[Const] = []
        self.nodes: dict[Var, Node] = {}
        self.scalar_const: dict[Var, ScalarConst] = {}
        self.families: dict[Any, list[Base]] = {}
        self.sigma2: dict[Var, float] = {}
        self.init_index = {v: j for j, v in enumerate(program.initial_vectors)}
        self.init_mean = program.initial_mean
        self.init_cov = program.initial_covariance
        self.hat_of: dict[Var, Base] = {}
        #: OuterNonlin output -> the col moments its Z uses (ψ polynomial in the cols)
        self.copy_moments: dict[Var, tuple[CopyMomentConst, ...]] = {}
        self.hat_arg: dict[int, Var] = {}  # bid of Ẑ^{Wx} -> x
        self._hat_args: dict[Any, set[Var]] = {}  # family -> arguments of its hats
        self._canon_cache: dict[Any, Any] = {}
        self._canon_roots: dict[tuple, Any] = {}
        self._locals: dict[Var, tuple] = {}
        self._lkeys: list[tuple] = [("g",), ("q",)]  # interned local structures, by lid
        self._lids: dict[tuple, int] = {("g",): _LID_G, ("q",): _LID_Q}
        self._placed: dict[tuple, sympy.Expr] = {}  # (lid, bmap, cmap) -> expression
        self._init_components: list[int] | None = None
        self._codes: list[int] = []
        self._fam_ids: dict[Any, int] = {}
        self._layouts: dict[tuple[int, ...], Layout] = {}
        self._parities: dict[tuple[Var, int], int] = {}
        self._alone_memo: dict[frozenset[int], tuple[int, ...]] = {}
        self.run()
        #: Per base: its initial vector's index (-1 for hats) and σ² of its family
        #: (0 for initial vectors), for vectorised gathers over batches of requests.
        self.base_init_index = np.array(
            [self.init_index[b.var] if b.family is None else -1 for b in self.bases], dtype=np.intp
        )
        self.base_sigma2 = np.array(
            [0.0 if b.family is None else self.sigma2_of(b.family) for b in self.bases]
        )

    # -- instructions ------------------------------------------------------------
    def init_matrix(self, instr: InitMatrix) -> None:
        self.sigma2[instr.out] = float(instr.var)
        self.families[(instr.out, False)] = []
        self.families[(instr.out, True)] = []

    def init_vector(self, instr: InitVector) -> Node:
        b = self._new_base(instr.out, None, ZSym(instr.out.name))
        node = BaseNode(b, frozenset([b.bid]))
        self.nodes[instr.out] = node
        return node

    def init_scalar(self, instr: InitScalar) -> ScalarConst:
        return self._scalar_const(instr.out)

    def scalar_fn(self, instr: ScalarFn) -> ScalarConst:
        return self._scalar_const(instr.out)

    def moment(self, instr: Moment) -> ScalarConst:
        return self._scalar_const(instr.out)

    def nonlin(self, instr: Nonlin) -> Node:
        register_fn(instr.fn)
        sup: frozenset[int] = frozenset().union(*(self.nodes[a].support for a in instr.args))
        poly = instr.fn.is_polynomial and all(self.nodes[a].polynomial for a in instr.args)
        node = FnNode(
            instr.fn,
            instr.args,
            tuple(self.scalar_const[p] for p in instr.params),
            sup,
            poly,
            1 + sum(self.nodes[a].size for a in instr.args),
        )
        self.nodes[instr.out] = node
        return node

    def outer_nonlin(self, instr: OuterNonlin) -> Node:
        register_fn(instr.fn)
        sup: frozenset[int] = frozenset().union(*(self.nodes[a].support for a in instr.rows))
        params = tuple(self.scalar_const[p] for p in instr.params)
        split = separate_cols(instr.fn, len(instr.rows))
        if split is not None:  # Z^y = G(Z^{rows}; θ̊, 𝔼 m_k(Z^{cols})): a Nonlin of the rows
            G, monomials = split
            register_fn(G)
            moments = []
            for m in monomials:
                register_fn(m)
                c = CopyMomentConst(len(self.consts), instr.out, instr.cols, m)
                self.consts.append(c)
                moments.append(c)
            self.copy_moments[instr.out] = tuple(moments)
            node: Node = FnNode(
                G,
                instr.rows,
                params + tuple(moments),
                sup,
                G.is_polynomial and all(self.nodes[a].polynomial for a in instr.rows),
                1 + sum(self.nodes[a].size for a in instr.rows),
            )
            self.nodes[instr.out] = node
            return node
        node = OuterNode(
            instr.fn,
            instr.rows,
            instr.cols,
            params,
            sup,
        )
        self.nodes[instr.out] = node
        return node

    def matmul(self, instr: MatMul) -> Node:
        W, t = instr.matrix, instr.transpose
        seen = self._hat_args.setdefault((W, t), set())
        dup = instr.out.name if instr.arg in seen else None  # a second W x: named by its output
        seen.add(instr.arg)
        b = self._new_base(instr.out, (W, t), ZHat(W.name, t, instr.arg.name, dup))
        self.hat_of[instr.out] = b
        self.hat_arg[b.bid] = instr.arg
        s2 = self.sigma2_of((W, t))
        dot: list[tuple[DotConst, Var]] = []
        for hb in self.dot_candidates(instr):
            if self._dot_vanishes(instr.arg, hb):
                continue
            y = self.hat_arg[hb.bid]
            c = DotConst(
                len(self.consts),
                instr.out,
                instr.arg,
                hb,
                y,
                s2,
                DotCoef(instr.arg.name, hb.symbol),
            )
            self.consts.append(c)
            dot.append((c, y))
        sup = frozenset([b.bid]).union(*(self.nodes[y].support for _, y in dot))
        poly = all(self.nodes[y].polynomial for _, y in dot)
        node = MatMulNode(b, tuple(dot), sup, poly, 1 + sum(self.nodes[y].size for _, y in dot))
        self.nodes[instr.out] = node
        return node

    # -- helpers -------------------------------------------------------------------
    def _new_base(self, var: Var, family: Any, symbol: sympy.Symbol) -> Base:
        fam = self.families.setdefault(family, [])
        b = Base(len(self.bases), var, family, symbol, len(fam))
        self.bases.append(b)
        fam.append(b)
        return b

    def dot_candidates(self, instr: MatMul) -> list[Base]:
        """The hats the ZDot sum of ``instr`` (``Wx``) runs over [TP4 Eq. (31)]: those of
        the transposed family (``Wᵀ``'s hats for ``Wx``, ``W``'s for ``Wᵀx``) that ``Z^x``
        depends on, in order of creation; ``∂Z^x/∂Ẑ`` is 0 for every other hat.

        A candidate whose coefficient vanishes identically (:meth:`_dot_vanishes`) has
        no :class:`DotConst` in the MatMul's node.
        """
        sup = self.nodes[instr.arg].support
        return [b for b in self.families[(instr.matrix, not instr.transpose)] if b.bid in sup]

    def outer_upstream(self, roots: tuple[Any, ...]) -> Var | None:
        """The first OuterNonlin (by program order) without a canonical integrand
        (:class:`OuterNode`) upstream of the vectors among ``roots``, if any (for
        messages: why a request has no exact form)."""
        import networkx as nx

        graph = self.program.graph
        above: set[str] = set()
        for r in roots:
            if isinstance(r, Var):
                above |= nx.ancestors(graph, r.name) | {r.name}
        outer = [v for v, node in self.nodes.items() if isinstance(node, OuterNode)]
        return next((v for v in outer if v.name in above), None)

    def _scalar_const(self, v: Var) -> ScalarConst:
        c = ScalarConst(len(self.consts), v)
        self.consts.append(c)
        self.scalar_const[v] = c
        return c

    def sigma2_of(self, family: Any) -> float:
        """``σ²`` of a hat family (square matrices: the same for ``W`` and ``Wᵀ``)."""
        return self.sigma2[family[0]]

    def base_mean(self, bid: int) -> float:
        b = self.bases[bid]
        return float(self.init_mean[self.init_index[b.var]]) if b.family is None else 0.0

    def independent(self, b1: Base, b2: Base) -> bool:
        """Whether two base Gaussians are independent, as far as known before evaluation."""
        if b1 is b2:
            return False
        if b1.family != b2.family:
            return True
        if b1.family is None:
            i, j = self.init_index[b1.var], self.init_index[b2.var]
            return bool(self.init_cov[i, j] == 0.0)
        return False  # hats of one family: covariance not known yet

    def layout(self, bids: tuple[int, ...]) -> "Layout":
        """The :class:`Layout` of a request's base Gaussians ``bids`` (memoised).

        Requests whose bases have the same families, components and means in the
        same order share one Layout object, however many there are: this is what
        lets the planner and the evaluator batch them without per-request work.
        """
        codes = self._codes
        if len(codes) < len(self.bases):
            self._extend_codes()
        key = tuple([codes[b] for b in bids])
        lay = self._layouts.get(key)
        if lay is None:
            lay = self._layouts[key] = _make_layout(key)
        return lay

    def _extend_codes(self) -> None:
        """One int per base: ``4f`` for a hat of family ``f`` (centred), ``4c + 1`` for
        an initial vector of component ``c``, ``+ 2`` if its mean is not zero."""
        if self._init_components is None:
            m = len(self.init_index)
            comp = list(range(m))
            for i in range(m):
                for j in range(i):
                    if self.init_cov[i, j] != 0.0:
                        a, b = comp[i], comp[j]
                        comp = [b if c == a else c for c in comp]
            self._init_components = comp
        fam_ids: dict[Any, int] = self._fam_ids
        for base in self.bases[len(self._codes) :]:
            if base.family is None:
                c = self._init_components[self.init_index[base.var]]
                self._codes.append(4 * c + 1 + (2 if self.base_mean(base.bid) != 0.0 else 0))
            else:
                self._codes.append(4 * fam_ids.setdefault(base.family, len(fam_ids)))

    # -- canonical integrands --------------------------------------------------------
    def canonical(self, roots: tuple[Any, ...], limit: int = MAX_TREE) -> tuple | None:
        """Canonical structure of ``(Z^{r} for r in roots)``.

        Returns ``(key, bids, cids)``: a hashable key describing the roots with base
        Gaussians numbered ``g0, g1, …`` and constants ``q0, q1, …`` by first
        appearance, and the base / constant ids in that order; ``None`` when a
        root's tree has more than ``limit`` nodes. Each vector's own structure is
        computed once (:meth:`_local`); a request only merges its roots' numberings,
        once per ``roots`` (memoised).
        """
        if limit == MAX_TREE:
            res = self._canon_roots.get(roots, False)
            if res is False:
                res = self._canon_roots[roots] = self._canonical(roots, limit)
            return res
        return self._canonical(roots, limit)

    def _canonical(self, roots: tuple[Any, ...], limit: int) -> tuple | None:
        parts = []
        for r in roots:  # Vars, Bases or ScalarConsts
            if isinstance(r, Var):
                if self.nodes[r].size > limit:  # (before building its structure)
                    return None
                parts.append(self._local(r))
            elif isinstance(r, Base):
                parts.append((_LID_G, (r.bid,), ()))
            else:
                parts.append((_LID_Q, (), (r.cid,)))
        return _merge(parts)

    def _local(self, v: Var) -> tuple:
        """``(lid, bids, cids)`` of ``Z^v`` in its own numbering (memoised).

        ``lid`` interns the local structure (an int: keys stay shallow and hash fast);
        :meth:`_place` turns it back into a sympy expression. (The tree's size is
        ``self.nodes[v].size``.)
        """
        loc = self._locals.get(v)
        if loc is not None:
            return loc
        node = self.nodes[v]
        if isinstance(node, BaseNode):
            loc = (_LID_G, (node.base.bid,), ())
        elif isinstance(node, FnNode):
            kids = [self._local(a) for a in node.args]
            own = [(_LID_Q, (), (c.cid,)) for c in node.consts]
            key, bids, cids = _merge(kids + own)
            loc = (self._intern(("f", node.fn._uid, len(kids)) + key), bids, cids)
        else:
            kids = [self._local(y) for _, y in node.dot]
            hat = (_LID_G, (node.base.bid,), ())
            consts = [(_LID_Q, (), (c.cid,)) for c, _ in node.dot]
            key, bids, cids = _merge([hat] + consts + kids)
            loc = (self._intern(("m", len(node.dot)) + key), bids, cids)
        self._locals[v] = loc
        return loc

    def _intern(self, lkey: tuple) -> int:
        lid = self._lids.get(lkey)
        if lid is None:
            lid = self._lids[lkey] = len(self._lkeys)
            self._lkeys.append(lkey)
        return lid

    def expr_of_key(self, key: Any) -> tuple[sympy.Expr, ...]:
        """The sympy expressions (over ``g_k``, ``q_j``) of a canonical key's roots."""
        out = self._canon_cache.get(key)
        if out is None:
            out = tuple(self._place(part) for part in key)
            self._canon_cache[key] = out
        return out

    def _place(self, part: tuple) -> sympy.Expr:
        """A part's local expression with its indices mapped into the merged ones.

        Built from the interned structure with the index maps composed on the way down
        and memoised per ``(lid, bmap, cmap)``: an expression whose tree repeats shared
        subtrees (a linear training unroll's ``Z`` grows like 2^t as a tree) costs its
        number of distinct placed subexpressions, never its tree size (``xreplace``
        walks every repetition)."""
        e = self._placed.get(part)
        if e is not None:
            return e
        lid, bmap, cmap = part
        lkey = self._lkeys[lid]
        tag = lkey[0]
        if tag == "g":
            e = g(bmap[0])
        elif tag == "q":
            e = q(cmap[0])
        else:
            start = 3 if tag == "f" else 2
            parts = [
                self._place((sl, tuple(bmap[i] for i in sb), tuple(cmap[j] for j in sc)))
                for sl, sb, sc in lkey[start:]
            ]
            if tag == "f":  # ("f", uid, nargs, *parts): args, then the node's constants
                fn, k = _FN_BY_UID[lkey[1]], lkey[2]
                e = fn.apply(*parts[:k], *parts[k:])
            else:  # ("m", k, hat, c_1..c_k, y_1..y_k): Ẑ + Σ_i c_i Z^{y_i}
                k = lkey[1]
                e = parts[0] + sympy.Add(*[c * y for c, y in zip(parts[1 : 1 + k], parts[1 + k :])])
        self._placed[part] = e = _interned(e)
        return e

    def _dot_vanishes(self, x: Var, hb: Base) -> bool:
        """Whether ``𝔼[∂Z^x/∂Ẑ] = 0`` identically, by two sufficient conditions.

        * *Parity* (any size, on the DAG): ``∂Z^x/∂Ẑ`` is odd in a centred base Gaussian
          independent of every other base Gaussian of ``Z^x`` (e.g. the readout in the
          first backward pass [TP2 §6]) — flipping its sign leaves the law
          unchanged and negates the integrand.
        * *Termwise* (integrands of at most :data:`VANISH_TREE` nodes, with sympy): every
          term of the expanded derivative is odd in a centred Gaussian independent of
          the rest of that term.

        A term neither catches is kept; its coefficient then evaluates to 0.
        """
        if self._odd_derivative(x, hb.bid):
            return True
        res = self.canonical((x,), limit=VANISH_TREE)
        if res is None:
            return False
        key, bids, _ = res
        bases = [self.bases[b] for b in bids]
        centred = tuple(self.base_mean(b) == 0.0 for b in bids)
        indep = tuple(self.independent(a, b) for a in bases for b in bases)
        (expr,) = self.expr_of_key(key)
        return _vanishes(expr, bids.index(hb.bid), centred, indep)

    def _odd_derivative(self, x: Var, k: int) -> bool:
        """Whether ``∂Z^x/∂g_k`` is odd in some centred ``g_j`` independent of the rest of
        ``supp(Z^x)`` (``∂/∂g_k`` keeps the parity in ``g_j ≠ g_k`` and flips it in ``g_k``)."""
        for j in self._alone(self.nodes[x].support):
            par = self._parity(x, j)
            if (par == -1 and j != k) or (par == 1 and j == k):
                return True
        return False

    def _alone(self, sup: frozenset[int]) -> tuple[int, ...]:
        """The centred base Gaussians of ``sup`` independent of all the others in it
        (memoised by ``sup``): a hat alone of its family in ``sup``, an initial vector
        uncorrelated with the other initial vectors in ``sup``."""
        out = self._alone_memo.get(sup)
        if out is None:
            bases = [self.bases[b] for b in sup]
            families = Counter(b.family for b in bases)
            inits = [b for b in bases if b.family is None]
            out = tuple(
                b.bid
                for b in bases
                if self.base_mean(b.bid) == 0.0
                and (
                    families[b.family] == 1
                    if b.family is not None
                    else all(self.independent(b, o) for o in inits if o is not b)
                )
            )
            self._alone_memo[sup] = out
        return out

    def _parity(self, v: Var, j: int) -> int:
        """Parity of ``Z^v`` in the base Gaussian ``g_j``: 1 even, -1 odd, 0 neither.

        Memoised per ``(v, j)`` and evaluated with an explicit stack (a deep network
        needs no Python frame per layer).
        """
        memo = self._parities
        out = memo.get((v, j))
        if out is not None:
            return out
        nodes = self.nodes
        stack = [v]
        while stack:
            u = stack[-1]
            if (u, j) in memo:
                stack.pop()
                continue
            node = nodes[u]
            if j not in node.support:
                memo[(u, j)] = 1
                stack.pop()
                continue
            if isinstance(node, BaseNode):
                memo[(u, j)] = -1 if node.base.bid == j else 1
                stack.pop()
                continue
            below = (
                [y for _, y in node.dot]
                if isinstance(node, MatMulNode)
                else list(node.rows)
                if isinstance(node, OuterNode)
                else list(node.args)
            )
            todo = [w for w in below if (w, j) not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if isinstance(node, MatMulNode):  # Ẑ + Σ c_i Z^{y_i}: a sum of parts
                parts = {-1 if node.base.bid == j else 1} | {memo[(y, j)] for y in below}
                memo[(u, j)] = parts.pop() if len(parts) == 1 else 0
            else:  # (an OuterNode's copies do not flip: they are independent of g_j)
                pars = tuple(memo[(a, j)] for a in below)
                flips = tuple(p == -1 for p in pars)
                if isinstance(node, OuterNode):
                    flips += (False,) * len(node.cols)
                memo[(u, j)] = 0 if 0 in pars else _fn_parity(node.fn, flips)
        return memo[(v, j)]

    # -- display -------------------------------------------------------------------
    def Z(self, v: Var, expand_dot: bool = False) -> sympy.Expr:
        """``Z^v`` over base Gaussians and θ̊ (Ż kept as a symbol unless expanded).

        Built bottom-up, without recursion: the vectors ``Z^v`` reads are collected
        with an explicit stack and their expressions formed in program order (a
        1000-layer chain needs no Python frame per layer).
        """
        nodes = self.nodes
        needed: set[Var] = set()
        stack = [v]
        while stack:
            u = stack.pop()
            if u in needed:
                continue
            needed.add(u)
            node = nodes[u]
            if isinstance(node, FnNode):
                stack.extend(node.args)
            elif isinstance(node, OuterNode):
                stack.extend(node.rows)
            elif isinstance(node, MatMulNode) and expand_dot:
                stack.extend(y for _, y in node.dot)
        memo: dict[Var, sympy.Expr] = {}
        depth: dict[int, int] = {}  # sympy depth of the expressions made (by id)
        for u in sorted(needed, key=lambda w: w.id):
            node = nodes[u]
            if isinstance(node, BaseNode):
                e = node.base.symbol
            else:  # sympy queries its arguments recursively while it builds (is_number)
                below = (
                    node.args
                    if isinstance(node, FnNode)
                    else node.rows
                    if isinstance(node, OuterNode)
                    else [y for _, y in node.dot]
                    if expand_dot
                    else []
                )
                with recursion_room(8 + max((depth[id(memo[a])] for a in below), default=0)):
                    if isinstance(node, OuterNode):
                        e = CopyExpectation(
                            node.fn.inline(
                                *[memo[a] for a in node.rows],
                                *[ZCopy(c.name) for c in node.cols],
                                *[c.symbol for c in node.consts],
                            )
                        )
                    elif isinstance(node, FnNode):
                        e = node.fn.apply(
                            *[memo[a] for a in node.args], *[c.symbol for c in node.consts]
                        )
                    elif expand_dot:
                        e = node.base.symbol + self.Zdot(u, memo.__getitem__)
                    else:
                        e = node.base.symbol + node.base.symbol.dot()
                    e.is_commutative  # noqa: B018 - cached now, bottom-up
            memo[u] = e
            _depth_over(e, depth)
        return memo[v]

    def Zdot(self, h: Var, z: Any = None) -> sympy.Expr:
        """``Ż^{Wx} = σ_W² Σ_i 𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}] Z^{y^i}`` (0 when no term survives)."""
        node = self.nodes[h]
        if not isinstance(node, MatMulNode):
            raise ProgramValueError(f"{h.name} is not a MatMul; only MatMuls have Ż")
        z = z or (lambda u: self.Z(u))
        return sympy.Add(*[c.full(c.symbol) * z(y) for c, y in node.dot])


def _depth_over(e: sympy.Basic, known: dict[int, int]) -> int:
    """Depth of ``e``, recorded in ``known`` (depths by ``id`` of live subexpressions)
    with those of its parts, without recursion (visits only nodes not yet known)."""
    stack = [(e, False)]
    out = known
    while stack:
        x, done = stack.pop()
        if done:
            out[id(x)] = 1 + max((out[id(a)] for a in x.args), default=0)
        elif id(x) not in out:
            stack.append((x, True))
            stack.extend((a, False) for a in x.args if id(a) not in out)
    return out[id(e)]


def _merge(parts: list[tuple]) -> tuple:
    """Merge ``(key, bids, cids)`` parts into one numbering by first appearance.

    Returns ``(key, bids, cids)`` with ``key = ((part_key, bmap, cmap), …)``: each
    part's local indices mapped to the merged ones.
    """
    bpos: dict[int, int] = {}
    cpos: dict[int, int] = {}
    key = [
        (pk, _renumber(pb, bpos) if pb else (), _renumber(pc, cpos) if pc else ())
        for pk, pb, pc in parts
    ]
    return tuple(key), tuple(bpos), tuple(cpos)


def _renumber(ids: tuple[int, ...], pos: dict[int, int]) -> tuple[int, ...]:
    """Positions of ``ids`` in ``pos``, new ids numbered next in order of appearance."""
    out = []
    for b in ids:
        i = pos.get(b)
        if i is None:
            i = pos[b] = len(pos)
        out.append(i)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def separate_cols(fn: Nonlinearity, nrows: int) -> tuple[Nonlinearity, tuple] | None:
    """ψ polynomial in its col arguments, split as ``Σ_k A_k(rows; θ) m_k(cols)``.

    Returns ``(G, monomials)``: ``G(rows; θ, μ_1, …) = Σ_k A_k(rows; θ) μ_k`` (``μ_k``
    standing for ``𝔼 m_k(Z^{cols})``; a constant monomial is its number) and the
    non-constant monomials ``m_k`` as Nonlinearities of the cols; ``None`` when ψ is
    not a polynomial in the cols (then its inner expectation is a Monte Carlo average).
    """
    body, rows, cols = fn.body, fn.args[:nrows], fn.args[nrows:]
    if not cols or not body.is_polynomial(*cols):
        return None
    try:
        poly = sympy.Poly(body, *cols)
    except sympy.PolynomialError:  # pragma: no cover - is_polynomial said it is
        return None
    col_syms = [sympy.Symbol(f"x{i}", real=True) for i in range(len(cols))]
    mus: list[sympy.Symbol] = []
    monomials: list[Nonlinearity] = []
    total = sympy.Integer(0)
    for exps, coef in poly.terms():
        coef = sympy.sympify(coef)
        if not any(exps):
            total += coef
            continue
        mu = sympy.Symbol(f"mu{len(mus)}", real=True)
        mus.append(mu)
        mono = sympy.Mul(*[s**e for s, e in zip(col_syms, exps)])
        monomials.append(Nonlinearity(f"{fn.name}_m{len(monomials)}", mono, col_syms, opaque=False))
        total += coef * mu
    G = Nonlinearity(f"E1_{fn.name}", total, rows, fn.params + tuple(mus), opaque=False)
    return G, tuple(monomials)


_FN_BY_UID: dict[int, Any] = {}


def register_fn(fn: Any) -> None:
    """Make a nonlinearity findable from its uid in canonical keys."""
    _FN_BY_UID[fn._uid] = fn


@functools.lru_cache(maxsize=4096)
def _fn_parity(fn: Any, flipped: tuple[bool, ...]) -> int:
    """Parity of ``fn`` when the arguments marked ``flipped`` change sign (the others
    and the parameters fixed): 1 unchanged, -1 negated, 0 neither."""
    body = fn.body
    if not any(flipped):
        return 1
    neg = body.xreplace({a: -a for a, f in zip(fn.args, flipped) if f})
    if sympy.expand(neg - body) == 0:
        return 1
    if sympy.expand(neg + body) == 0:
        return -1
    return 0


@functools.lru_cache(maxsize=4096)
def _vanishes(expr: sympy.Expr, k: int, centred: tuple[bool, ...], indep: tuple[bool, ...]) -> bool:
    """Whether ``𝔼[∂expr/∂g_k] = 0`` because every term of the derivative is odd in a
    centred Gaussian independent of the rest of the term (``indep``: row-major
    independence of ``g_i, g_j``). Memoised across programs: sympy's derivative and
    expansion dominate the derivation of long training unrolls otherwise."""
    free = expr.free_symbols
    if g(k) not in free:
        return True
    inside = _wrapped_symbols(expr)
    if inside is not None and not any(
        c and g(i) in free and g(i) not in inside for i, c in enumerate(centred)
    ):
        return False  # no term can have a centred Gaussian as a bare odd factor
    d = sympy.diff(expr, g(k))
    if d == 0:
        return True
    n = len(centred)
    for term in sympy.Add.make_args(sympy.expand(d, deep=False)):
        if not _term_vanishes(term, centred, indep, n):
            return False
    return True


def _wrapped_symbols(expr: sympy.Expr) -> set[sympy.Symbol] | None:
    """The symbols that occur inside a non-polynomial part of ``expr`` (a function
    application, a ``Max``, a non-integer power).

    Differentiating keeps them inside (the derivative of a non-polynomial function is a
    function of the same argument), so none of them can be a bare factor of a term of
    the derivative. ``None`` when ``expr`` applies a polynomial nonlinearity opaquely,
    whose derivative may drop its argument.
    """
    out: set[sympy.Symbol] = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e.is_Symbol or e.is_Number:
            continue
        if e.is_Add or e.is_Mul:
            stack.extend(e.args)
        elif e.is_Pow and e.exp.is_Integer:
            stack.append(e.base)
        else:
            fn = getattr(e.func, "nonlinearity", None)
            if fn is not None and fn.is_polynomial:
                return None
            out |= e.free_symbols
    return out


def _term_vanishes(
    term: sympy.Expr, centred: tuple[bool, ...], indep: tuple[bool, ...], n: int
) -> bool:
    for s in {s for s in term.free_symbols if isinstance(s, GaussSym)}:
        i = s.index
        if not centred[i]:
            continue
        # s must occur only as an odd power factor of the term, nowhere else.
        coeff, rest = _split_power(term, s)
        if coeff is None or coeff % 2 == 0 or rest.has(s):
            continue
        if all(indep[i * n + o.index] for o in rest.free_symbols if isinstance(o, GaussSym)):
            return True
    return False


def _split_power(term: sympy.Expr, s: sympy.Symbol) -> tuple[int | None, sympy.Expr]:
    """Write ``term = s**k · rest``; ``(None, term)`` if s is not a plain power factor."""
    k = 0
    rest = []
    for f in sympy.Mul.make_args(term):
        base, e = f.as_base_exp()
        if base == s and e.is_Integer:
            k += int(e)
        else:
            rest.append(f)
    if k == 0:
        return None, term
    return k, sympy.Mul(*rest)
