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
[TP2 §6], THEORY §2.6): the derivative is odd in a centred base Gaussian that is
independent of everything else in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy

from ..errors import ProgramValueError
from ..interpreter import Interpreter
from ..ir import (
    InitMatrix,
    InitScalar,
    InitVector,
    MatMul,
    Moment,
    Nonlin,
    ScalarFn,
    Var,
)
from .symbols import DotCoef, Theta, ZDot, ZHat, ZSym, g, q

__all__ = ["Derivation", "Base", "Const", "Node"]

#: Canonical integrands bigger than this (tree nodes) are not built symbolically.
MAX_TREE = 400


@dataclass(frozen=True, eq=False)
class Base:
    """A base Gaussian: an initial vector's ``Z`` or a MatMul's ``Ẑ``."""

    bid: int
    var: Var  # the initial vector, or the MatMul's output
    family: Any  # None for initial vectors, (matrix Var, transpose) for hats
    symbol: sympy.Symbol
    index: int  # position within its family


@dataclass(frozen=True, eq=False)
class Const:
    """A deterministic constant of the limit: a scalar's θ̊ or a ZDot coefficient."""

    cid: int
    kind: str  # "scalar" | "dot"
    var: Var  # the scalar; for "dot", the MatMul output Wx
    base: Base | None = None  # for "dot": the Wᵀ-family hat differentiated against
    y: Var | None = None  # for "dot": the vector y of that hat (Ẑ^{Wᵀy})
    symbol: sympy.Symbol | None = None


@dataclass(eq=False)
class Node:
    """``Z`` of one vector as one DAG node.

    kind ``"base"``: ``Z = g`` (an initial vector); ``"fn"``: ``Z = fn(Z^{args}; consts)``;
    ``"matmul"``: ``Z = Ẑ + Σ_i c_i Z^{y_i}`` with ``dot = ((const, y), …)``.
    """

    kind: str
    base: Base | None = None
    fn: Any = None
    args: tuple[Any, ...] = ()  # Vars or Bases
    consts: tuple[Const, ...] = ()
    dot: tuple[tuple[Const, Var], ...] = ()
    support: frozenset[int] = field(default_factory=frozenset)
    polynomial: bool = True


class Derivation(Interpreter):
    """Builds the Z-DAG, base Gaussians, constants and ZDot terms of a program."""

    def __init__(self, program: Any) -> None:
        super().__init__(program)
        self.bases: list[Base] = []
        self.consts: list[Const] = []
        self.nodes: dict[Var, Node] = {}
        self.scalar_const: dict[Var, Const] = {}
        self.families: dict[Any, list[Base]] = {}
        self.sigma2: dict[Var, float] = {}
        self.init_index = {v: j for j, v in enumerate(program.initial_vectors)}
        self.init_mean = program.initial_mean
        self.init_cov = program.initial_covariance
        self.hat_of: dict[Var, Base] = {}
        self._canon_cache: dict[Any, sympy.Expr] = {}
        self.run()

    # -- instructions ------------------------------------------------------------
    def init_matrix(self, instr: InitMatrix) -> None:
        self.sigma2[instr.out] = float(instr.var)
        self.families[(instr.out, False)] = []
        self.families[(instr.out, True)] = []

    def init_vector(self, instr: InitVector) -> Node:
        b = self._new_base(instr.out, None, ZSym(instr.out.name))
        node = Node("base", base=b, support=frozenset([b.bid]))
        self.nodes[instr.out] = node
        return node

    def init_scalar(self, instr: InitScalar) -> Const:
        return self._scalar_const(instr.out)

    def scalar_fn(self, instr: ScalarFn) -> Const:
        return self._scalar_const(instr.out)

    def moment(self, instr: Moment) -> Const:
        return self._scalar_const(instr.out)

    def nonlin(self, instr: Nonlin) -> Node:
        register_fn(instr.fn)
        sup: frozenset[int] = frozenset().union(*(self.nodes[a].support for a in instr.args))
        poly = instr.fn.is_polynomial and all(self.nodes[a].polynomial for a in instr.args)
        node = Node(
            "fn",
            fn=instr.fn,
            args=instr.args,
            consts=tuple(self.scalar_const[p] for p in instr.params),
            support=sup,
            polynomial=poly,
        )
        self.nodes[instr.out] = node
        return node

    def matmul(self, instr: MatMul) -> Node:
        W, t = instr.matrix, instr.transpose
        label = f"{W.name}{'^T' if t else ''} {instr.arg.name}"
        top = r"^{\top}" if t else ""
        latex_label = f"{W.name}{top} {instr.arg.name}"
        if any(b.symbol.name == ZHat(label).name for b in self.families[(W, t)]):
            label = f"{label}|{instr.out.name}"
            latex_label = f"{latex_label},{instr.out.name}"
        b = self._new_base(instr.out, (W, t), ZHat(label, latex_label))
        self.hat_of[instr.out] = b
        x = self.nodes[instr.arg]
        # ZDot: the transposed family's hats that Z^x depends on.
        other = {c.bid for c in self.families[(W, not t)]}
        dot: list[tuple[Const, Var]] = []
        for bid in sorted(x.support & other):
            hb = self.bases[bid]
            y = self.program.definition(hb.var).arg
            if self._dot_vanishes(instr.arg, hb):
                continue
            c = Const(
                len(self.consts),
                "dot",
                instr.out,
                base=hb,
                y=y,
                symbol=DotCoef(
                    f"Z^{{{instr.arg.name}}}/∂{hb.symbol.name}",
                    rf"\partial Z^{{{instr.arg.name}}}/\partial {sympy.latex(hb.symbol)}",
                ),
            )
            self.consts.append(c)
            dot.append((c, y))
        sup = frozenset([b.bid]).union(*(self.nodes[y].support for _, y in dot))
        poly = all(self.nodes[y].polynomial for _, y in dot)
        node = Node("matmul", base=b, dot=tuple(dot), support=sup, polynomial=poly)
        self.nodes[instr.out] = node
        return node

    # -- helpers -------------------------------------------------------------------
    def _new_base(self, var: Var, family: Any, symbol: sympy.Symbol) -> Base:
        fam = self.families.setdefault(family, [])
        b = Base(len(self.bases), var, family, symbol, len(fam))
        self.bases.append(b)
        fam.append(b)
        return b

    def _scalar_const(self, v: Var) -> Const:
        c = Const(len(self.consts), "scalar", v, symbol=Theta(v.name))
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

    # -- canonical integrands --------------------------------------------------------
    def canonical(self, roots: tuple[Any, ...], limit: int = MAX_TREE) -> tuple | None:
        """Canonical structure of ``(Z^{r} for r in roots)``.

        Returns ``(key, bids, cids)``: a hashable key describing the roots with base
        Gaussians numbered ``g0, g1, …`` and constants ``q0, q1, …`` by first
        appearance, and the base / constant ids in that order; ``None`` when the
        tree has more than ``limit`` nodes.
        """
        bids: dict[int, int] = {}
        cids: dict[int, int] = {}
        memo: dict[Var, Any] = {}
        count = [0]

        def gb(b: Base) -> tuple:
            if b.bid not in bids:
                bids[b.bid] = len(bids)
            return ("g", bids[b.bid])

        def qc(c: Const) -> tuple:
            if c.cid not in cids:
                cids[c.cid] = len(cids)
            return ("q", cids[c.cid])

        def walk(r: Any) -> Any:
            if isinstance(r, Base):
                return gb(r)
            if isinstance(r, Const):
                return qc(r)
            if r in memo:
                return memo[r]
            count[0] += 1
            if count[0] > limit:
                raise _TooBig
            node = self.nodes[r]
            if node.kind == "base":
                out: Any = gb(node.base)
            elif node.kind == "fn":
                out = ("f", node.fn._uid, tuple(walk(a) for a in node.args),
                       tuple(qc(c) for c in node.consts))
            else:
                out = ("m", gb(node.base), tuple((qc(c), walk(y)) for c, y in node.dot))
            memo[r] = out
            return out

        try:
            key = tuple(walk(r) for r in roots)
        except _TooBig:
            return None
        return key, tuple(bids), tuple(cids)

    def expr_of_key(self, key: Any) -> tuple[sympy.Expr, ...]:
        """The sympy expressions (over ``g_k``, ``q_j``) of a canonical key's roots."""
        out = []
        for item in key:
            e = self._canon_cache.get(item)
            if e is None:
                e = self._build(item)
                self._canon_cache[item] = e
            out.append(e)
        return tuple(out)

    def _build(self, item: Any) -> sympy.Expr:
        tag = item[0]
        if tag == "g":
            return g(item[1])
        if tag == "q":
            return q(item[1])
        if tag == "f":
            fn = _FN_BY_UID[item[1]]
            args = [self.expr_of_key((a,))[0] for a in item[2]]
            params = [q(c[1]) for c in item[3]]
            return fn.apply(*args, *params)
        if tag == "m":
            hat = g(item[1][1])
            return hat + sympy.Add(*[q(c[1]) * self.expr_of_key((y,))[0] for c, y in item[2]])
        raise AssertionError(item)  # pragma: no cover

    def _dot_vanishes(self, x: Var, hb: Base) -> bool:
        """Whether ``𝔼[∂Z^x/∂Ẑ] = 0`` identically (odd in an independent centred Gaussian)."""
        res = self.canonical((x,))
        if res is None:
            return False
        key, bids, _ = res
        (expr,) = self.expr_of_key(key)
        k = bids.index(hb.bid)
        d = sympy.diff(expr, g(k))
        if d == 0:
            return True
        local = [self.bases[b] for b in bids]
        for term in sympy.Add.make_args(sympy.expand(d, deep=False)):
            if not self._term_vanishes(term, local):
                return False
        return True

    def _term_vanishes(self, term: sympy.Expr, local: list[Base]) -> bool:
        syms = {s for s in term.free_symbols if s.name.startswith("g")}
        for s in syms:
            b = local[int(s.name[1:])]
            if self.base_mean(b.bid) != 0.0:
                continue
            # s must occur only as an odd power factor of the term, nowhere else.
            coeff, rest = _split_power(term, s)
            if coeff is None or coeff % 2 == 0 or rest.has(s):
                continue
            others = [local[int(o.name[1:])] for o in rest.free_symbols if o.name.startswith("g")]
            if all(self.independent(b, o) for o in others):
                return True
        return False

    # -- display -------------------------------------------------------------------
    def Z(self, v: Var, expand_dot: bool = False) -> sympy.Expr:
        """``Z^v`` over base Gaussians and θ̊ (Ż kept as a symbol unless expanded)."""
        memo: dict[Var, sympy.Expr] = {}

        def z(u: Var) -> sympy.Expr:
            if u in memo:
                return memo[u]
            node = self.nodes[u]
            if node.kind == "base":
                e = node.base.symbol
            elif node.kind == "fn":
                e = node.fn.apply(*[z(a) for a in node.args], *[c.symbol for c in node.consts])
            else:
                e = node.base.symbol + (self.Zdot(u, z) if expand_dot else ZDot(node.base.symbol._label, node.base.symbol._latex_label))
            memo[u] = e
            return e

        return z(v)

    def Zdot(self, h: Var, z: Any = None) -> sympy.Expr:
        """``Ż^{Wx} = σ_W² Σ_i 𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}] Z^{y^i}`` (0 when no term survives)."""
        node = self.nodes[h]
        if node.kind != "matmul":
            raise ProgramValueError(f"{h.name} is not a MatMul; only MatMuls have Ż")
        z = z or (lambda u: self.Z(u))
        s2 = sympy.Float(self.sigma2_of(node.base.family)) if node.dot else 0
        return s2 * sympy.Add(*[c.symbol * z(y) for c, y in node.dot])


class _TooBig(Exception):
    pass


_FN_BY_UID: dict[int, Any] = {}


def register_fn(fn: Any) -> None:
    """Make a nonlinearity findable from its uid in canonical keys."""
    _FN_BY_UID[fn._uid] = fn


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

