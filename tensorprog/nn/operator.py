r"""The operator (neural-tangent) regime of entrywise optimizers: the nonlinear kernel ``K_Q``.

In a parametrization where every update moves the features by ``o(1)`` per coordinate
and the initial output is a Gaussian process (NTP under Adam or SignSGD [TP4b Def 2.4.1];
:func:`tensorprog.nn.classify` says ``regime = "operator"``), the centred output
``f_t − f_0`` obeys, in the limit [TP4b Defs 2.4.2–2.4.4, Thm 2.4.7],

.. math::

    \mathring f_{t+1}-\mathring f_t=-\eta\,\mathcal K_Q(\chi_0,\dots,\chi_t),\qquad
    \mathcal K_Q(\chi)_a=\sum_{P}\mathrm{lr\_mult}_P\;
    \mathbb E\Big[Z^{dh^P_a}\,Q_t\Big(\sum_b\chi_b\,Z^{dh^P_b}\,Z^{x^P_b\,(1)}\Big)\,
    Z^{x^P_a\,(1)}\Big],

``χ_s = ∂L/∂f`` at ``f̊_s`` (per input ``b`` and output), the sum over the trained
parameters ``P`` and their uses ``h = P x`` in the forward passes of the inputs; ``dh``
is the gradient of the output with respect to the use, normalised to Θ(1) coordinates
(``n^m ∂f/∂h`` with ``n^{-m}`` the size of the output weights' entries), ``x`` the
vector multiplied, ``(1)`` an iid copy. Every ket is a step-0 ket (``t``-independent:
one forward and one :func:`tensorprog.grad` backward pass per input at initialization).
Memoryful ``Q`` (Adam) reads the whole history ``χ_0..χ_t`` [TP4b Thm 2.4.9]; for
``Q = id`` the operator is ``χ ↦ Θχ`` with ``Θ`` the NTK [TP4b §2.4]. Per class:

* **hidden** ``(n, n)``: the expectation over the iid copy is a nonlinear outer product,
  one :func:`tensorprog.outer_nonlin` per step and vector ``x`` multiplied,
  ``y_α = (1/n) Σ_β Q_t(Ĝ_{0,αβ}, …, Ĝ_{t,αβ}) x_β``, ``Ĝ_{s,αβ} = Σ_u χ_{s,u} dh_{u,α}
  x_{u,β}``, and the term ``⟨dh_a, y⟩`` (for a transposed use ``h = Pᵀ y`` the roles of
  rows and columns swap);
* **input** ``(n, d)``: the iid copy of the deterministic input is the sum over its
  ``d`` coordinates, ``Σ_j ξ_{a,j} ⟨dh_a, Q_t(Σ_u χ_u ξ_{u,j} dh_u)⟩`` (``Q`` of a
  vector: an ordinary Nonlin);
* **vector-like** ``(n,)`` (biases): ``⟨db_a, Q_t(Σ_u χ_u db_u)⟩``;
* **output** ``(k, n)``: ``dh ≡ 1``, ``⟨Q_t(Σ_u χ_u v_u), v_a⟩`` per row.

Width powers. With ``P = n^{-a}w``, learning rate ``lr·lr_mult·n^{-c}``,
``ε_P = eps·n^{-d}`` [TP4b Def 2.2.1] and ``Q`` scale-equivariant, a term has the
coefficient ``n^{-k_f}`` and ``Q`` sees ``Ĝ`` with ``ε = eps·n^{-k_ε}``:
``k_f = m+c+a−2, k_ε = d−a−m`` (hidden), ``k_f = m+c+a−1, k_ε = d−a−m`` (input,
vector-like), ``k_f = c+a−1, k_ε = d−a`` (output). ``k_f = k_ε = 0`` is a term of
``K_Q``; ``k_f > 0`` (a lazier learning rate) or ``k_ε < 0`` (``Q(n^{k_ε}Ĝ) → Q(0) = 0``)
is a vanishing term, left out; ``k_f < 0`` (the output moves by a diverging amount) and
``k_ε > 0`` (``ε_P`` vanishing against the gradients: ``Q`` tends to a sign, outside the
Master Theorem's smoothness [TP4b Setup 2.6.3]) are problems: the limit is refused.
``k_f ≥ 0`` for every term implies that the features move by ``o(1)`` (the hidden,
input and vector-like updates change a pre-activation by ``n^{1−m−k_f}``,
``n^{-m−k_f}`` with ``m < 1``), which is what makes the kets ``t``-independent.

References
----------
[TP4b] G. Yang, E. Littwin, *Tensor Programs IVb: Adaptive Optimization in the
Infinite-Width Limit*, arXiv:2308.01814, 2023 (§1.2.1: the nonlinear outer product;
§2.4: the neural-tangent limit; §2.8: the classification).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from .. import (
    MethodUnavailableError,
    ProgramValueError,
    Scalar,
    Vector,
    compile_limit,
    inner,
    lincomb,
    nonlin,
    outer_nonlin,
    scalar_lincomb,
)
from .optim import Entrywise
from .parametrization import ParamClass

__all__ = ["KetUse", "TermScaling", "OperatorKernel", "term_scaling", "operator_step"]


@dataclass(frozen=True)
class KetUse:
    """One use of a parameter in the step-0 forward pass of input ``i``, seen from
    output ``k`` (a ket record of :func:`operator_step`).

    Attributes
    ----------
    param : str
        The parameter's name.
    cls : ParamClass
        Its class.
    i, k : int
        The input (row of ``X``) and the output.
    arg : Vector or ndarray or None
        What the parameter multiplies: the vector ``x`` of a hidden use ``P x`` (``y``
        of ``Pᵀ y``), the input row ``ξ`` of an input weight, the vector ``v`` of an
        output weight's use ``P_row v``; ``None`` for a vector-like parameter.
    grad : Vector or None
        ``n^m ∂f_k/∂h`` for the use's output ``h`` (hidden, input, vector-like); ``None``
        for an output weight (``∂f_k/∂(P_row v) = 1``).
    transpose : bool
        A hidden use ``Pᵀ y``.
    row : int
        The output weight's row (``f_k = P_row v``).
    """

    param: str
    cls: ParamClass
    i: int
    k: int
    arg: Any
    grad: Any
    transpose: bool = False
    row: int = 0


@dataclass(frozen=True)
class TermScaling:
    """A parameter's term of ``K_Q``: its learning-rate multiplier and the width
    exponents ``k_f`` (of the term's coefficient ``n^{-k_f}``) and ``k_ε`` (of ``ε``
    relative to the normalised gradients), module docstring."""

    param: str
    cls: ParamClass
    lr_mult: float
    k_f: Fraction
    k_eps: Fraction

    @property
    def kept(self) -> bool:
        """A term of the limit (``k_f = k_ε = 0``, trained)."""
        return self.lr_mult != 0.0 and self.k_f == 0 and self.k_eps == 0

    def problems(self) -> list[str]:
        """Why the limit does not exist because of this term (empty if it does)."""
        if self.lr_mult == 0.0:
            return []
        out = []
        if self.k_f < 0:
            out.append(
                f"parameter {self.param!r} ({self.cls.value}): its update moves the "
                f"centred output by n^{_fmt(-self.k_f)}, which diverges"
            )
        if self.k_eps > 0:
            out.append(
                f"parameter {self.param!r} ({self.cls.value}): ε_P relative to its "
                f"gradient entries has width power n^{_fmt(-self.k_eps)}, which vanishes "
                f"(Q becomes sign-like, not smooth: raise d to a + s_out for input, "
                f"vector-like and hidden, a for output weights)"
            )
        return out


def _fmt(x: Fraction) -> str:
    return str(x) if x.denominator == 1 else f"({x})"


def term_scaling(
    name: str, cls: ParamClass, lr_mult: float, a: Fraction, c: Fraction, d: Fraction, m: Fraction
) -> TermScaling:
    """The :class:`TermScaling` of a parameter with abcd exponents ``(a, ·, c, d)`` when
    the gradients are normalised by ``n^m`` (module docstring, "Width powers")."""
    if cls is ParamClass.HIDDEN:
        kf, ke = m + c + a - 2, d - a - m
    elif cls in (ParamClass.INPUT, ParamClass.VECTOR):
        kf, ke = m + c + a - 1, d - a - m
    elif cls is ParamClass.OUTPUT:
        kf, ke = c + a - 1, d - a
    else:  # scalar-like parameters are refused by the centring (trained) or frozen
        kf, ke = Fraction(0), Fraction(0)
    return TermScaling(name, cls, float(lr_mult), Fraction(kf), Fraction(ke))


class _Index:
    """Distinct handles (by variable) in insertion order."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._pos: dict[int, int] = {}

    def __call__(self, h: Any) -> int:
        key = h.var.id
        if key not in self._pos:
            self._pos[key] = len(self.items)
            self.items.append(h)
        return self._pos[key]


def _q_of(opt: Entrywise, t: int, hist: list[Any]) -> Any:
    """``Q_t`` (with ``ε = opt.eps``) of a history of gradient vectors (``None``: no
    gradient that step) as a Nonlin — as their combination when ``Q_t`` is linear;
    ``None`` when every entry is 0."""
    eps = opt.eps
    gs = [hist[s] for s in opt.memory(t)]
    present = [g for g in gs if g is not None]
    if not present:
        return None
    mask = tuple(g is not None for g in gs)

    def body(*a: Any) -> Any:
        it = iter(a)
        return opt.q(t, [next(it) if on else 0 for on in mask], eps)

    syms = sympy.symbols(f"g:{len(present)}", real=True)
    expr = sympy.expand(body(*syms))
    coefs = [expr.coeff(g) for g in syms]
    if (
        all(c.is_number for c in coefs)
        and sympy.expand(expr - sum(c * g for c, g in zip(coefs, syms))) == 0
    ):
        # a linear Q (SGD, momentum): the combination itself, which the engine expands
        return lincomb([(float(c), g) for c, g in zip(coefs, present) if c != 0])
    return nonlin(body, *present, fn_name=f"{type(opt).__name__}_Q{t}")


def operator_step(
    uses: Sequence[KetUse],
    terms: dict[str, TermScaling],
    chis: Sequence[dict[int, list[Any]]],
    opt: Entrywise,
    shape: tuple[int, int],
) -> np.ndarray:
    r"""``K_Q(χ_0..χ_t)`` (without ``η``) from the step-0 kets, ``t = len(chis) − 1``.

    Parameters
    ----------
    uses : sequence of KetUse
        Every use of every parameter in the forward pass of every input, per output.
    terms : dict
        ``{parameter name: TermScaling}``; only :attr:`TermScaling.kept` terms enter.
    chis : sequence of dict
        ``chis[s] = {i: [χ_{s,i,k} for k]}`` for the inputs of the batch of step ``s``
        (Scalars or numbers).
    opt : Entrywise
        Its ``Q_t`` (:meth:`~tensorprog.nn.Entrywise.q`) with ``ε = opt.eps``.
    shape : (B, d_out)

    Returns
    -------
    ndarray of object, shape (B, d_out)
        Each entry a Scalar (or ``0.0``): ``K_Q(χ)_{a,k}``.
    """
    t = len(chis) - 1
    out: list[list[list[Any]]] = [[[] for _ in range(shape[1])] for _ in range(shape[0])]
    by_param: dict[str, list[KetUse]] = {}
    for u in uses:
        by_param.setdefault(u.param, []).append(u)
    for name, us in by_param.items():
        ts = terms[name]
        if not ts.kept:
            continue
        w = ts.lr_mult
        cls = ts.cls

        def hist_of(select: Callable[[KetUse], Any], us: list[KetUse] = us) -> list[Any]:
            """Per step ``s``: ``Σ_u χ_{s,u}·select(u)`` over the uses of the batch rows
            (``select`` gives ``(coef, vector)`` or ``None``); ``None`` if empty."""
            hs = []
            for chi in chis:
                parts = []
                for u in us:
                    if u.i not in chi:
                        continue
                    sel = select(u)
                    if sel is None:
                        continue
                    c, v = sel
                    parts.append((_mul(chi[u.i][u.k], c), v))
                hs.append(lincomb(parts) if parts else None)
            return hs

        if cls is ParamClass.VECTOR:
            U = _q_of(opt, t, hist_of(lambda u: (1.0, u.grad)))
            if U is not None:
                for u in us:
                    out[u.i][u.k].append((w, inner(u.grad, U)))
        elif cls is ParamClass.INPUT:
            d = len(us[0].arg)
            Us = [
                _q_of(
                    opt,
                    t,
                    hist_of(lambda u, j=j: (float(u.arg[j]), u.grad) if u.arg[j] != 0 else None),
                )
                for j in range(d)
            ]
            for u in us:
                for j, U in enumerate(Us):
                    if U is not None and u.arg[j] != 0:
                        out[u.i][u.k].append((w * float(u.arg[j]), inner(u.grad, U)))
        elif cls is ParamClass.OUTPUT:
            rows = sorted({u.row for u in us})
            Us = {
                r: _q_of(opt, t, hist_of(lambda u, r=r: (1.0, u.arg) if u.row == r else None))
                for r in rows
            }
            for u in us:
                U = Us[u.row]
                if U is not None:
                    out[u.i][u.k].append((w, inner(U, u.arg)))
        elif cls is ParamClass.HIDDEN:
            for u, y in _hidden_terms(us, chis, opt, t):
                out[u.i][u.k].append((w, inner(u.grad, y)))
    res = np.empty(shape, dtype=object)
    for a in range(shape[0]):
        for k in range(shape[1]):
            parts = out[a][k]
            res[a, k] = scalar_lincomb([(c, s) for c, s in parts]) if parts else 0.0
    return res


def _mul(chi: Any, c: float) -> Any:
    """The coefficient ``χ·c`` for :func:`tensorprog.lincomb` (a Scalar, a number, or
    their product as a tuple)."""
    if isinstance(chi, Scalar):
        return chi if c == 1.0 else (chi, c)
    return float(chi) * c


def _hidden_terms(
    us: Sequence[KetUse], chis: Sequence[dict[int, list[Any]]], opt: Entrywise, t: int
) -> list[tuple[KetUse, Vector]]:
    r"""For each use ``z`` of a hidden weight: ``(z, y_z)`` with
    ``y_z = (1/n) Σ_β Q_t(Ĝ_{0,αβ}..Ĝ_{t,αβ}) x_{z,β}`` (``Pᵀ``: rows and columns
    swapped), one :func:`tensorprog.outer_nonlin` per (orientation, vector multiplied)."""
    # the rank-one records (left, right, χ) of the outer products Ĝ_s = Σ χ left rightᵀ
    steps = opt.memory(t)
    recs: list[list[tuple[int, int, int]]] = []
    for s in steps:
        chi, rec = chis[s], []
        for u in us:
            if u.i not in chi:
                continue
            left, right = (u.arg, u.grad) if u.transpose else (u.grad, u.arg)
            c = chi[u.i][u.k]
            if not isinstance(c, Scalar):
                if float(c) == 0.0:
                    continue
            rec.append((left, right, c))
        recs.append(rec)
    out: list[tuple[KetUse, Vector]] = []
    made: dict[tuple[bool, int], Vector] = {}
    for z in us:
        key = (z.transpose, z.arg.var.id)
        if key not in made:
            y = _outer(recs, z.arg, z.transpose, opt, t)
            if y is None:
                continue
            made[key] = y
        out.append((z, made[key]))
    return out


def _outer(
    recs: list[list[tuple[Vector, Vector, Any]]], x: Vector, transpose: bool, opt: Entrywise, t: int
) -> Vector | None:
    """``(1/n) Σ_β Q_t(Ĝ_{·,αβ}) x_β`` (``transpose``: ``(1/n) Σ_α Q_t(Ĝ_{·,αβ}) x_α``)."""
    rows, cols, scal = _Index(), _Index(), _Index()
    consts: list[float] = []
    hist: list[list[tuple[int, int, Any]]] = []
    for rec in recs:
        step = []
        for left, right, c in rec:
            r, cc = (right, left) if transpose else (left, right)
            if isinstance(c, Scalar):
                ks: Any = ("s", scal(c))
            else:
                consts.append(float(c))
                ks = ("c", len(consts) - 1)
            step.append((rows(r), cols(cc), ks))
        hist.append(step)
    if not any(hist):
        return None
    ix = cols(x)
    nr, nc, ns = len(rows.items), len(cols.items), len(scal.items)
    eps = opt.eps

    def psi(*a: Any) -> Any:
        Rv, Cv, th = a[:nr], a[nr : nr + nc], a[nr + nc : nr + nc + ns]
        G = []
        for step in hist:
            tot = 0
            for i, j, (kind, k) in step:
                tot = tot + Rv[i] * Cv[j] * (th[k] if kind == "s" else consts[k])
            G.append(tot)
        return opt.q(t, G, eps) * Cv[ix]

    return outer_nonlin(
        psi, rows.items, cols.items, list(scal.items), fn_name=f"K_{type(opt).__name__}{t}"
    )


class OperatorKernel:
    r"""``K_Q`` of a model at initialization as a callable on ``χ`` (returned by
    :func:`tensorprog.nn.operator_kernel`).

    ``K(chi)`` with ``chi`` of shape ``(B, d_out)`` (memoryless ``Q``: SignSGD) or a
    history ``(t+1, B, d_out)`` (``χ_0..χ_t``, Adam) returns ``K_Q(χ_0..χ_t)``, shape
    ``(B, d_out)``, such that ``f̊_{t+1} − f̊_t = −lr·K_Q`` (learning-rate multipliers
    included) [TP4b Def 2.4.4, Thm 2.4.7, 2.4.9]. Built from a program whose ``χ`` are
    initial scalars: compiled once by :func:`tensorprog.compile_limit` per history
    length when every expectation has a deterministic method (Nonlins and separable
    outer products: one hidden layer, ``Q = id``); otherwise (a non-separable nonlinear
    outer product, hidden weights under Adam or SignSGD) each call builds the program
    with its ``χ`` and takes its Monte Carlo limit (``limit_kw`` as
    :func:`tensorprog.limit`; :attr:`stderr` holds the standard errors of the last call).

    Attributes
    ----------
    method : str
        How the last call's values were obtained: ``"compiled"`` (one compiled program
        for every ``χ``), else the least precise method of :func:`tensorprog.limit` on
        the program built with these ``χ`` (``"exact" | "quadrature" | "montecarlo"``;
        a compiled quadrature that is not certified for some ``χ`` falls back to it).
    stderr : ndarray or None
        Standard errors of the last call's values (zeros when compiled).
    """

    def __init__(
        self,
        build: Callable[[np.ndarray | None, int], tuple[Any, np.ndarray, list]],
        memoryless: bool,
        limit_kw: dict | None = None,
    ) -> None:
        self._build, self.memoryless = build, memoryless
        self.limit_kw = dict(limit_kw or {})
        prog, out, handles = build(None, 1)
        self.shape: tuple[int, int] = out.shape
        self.program = prog  #: the program of a one-step history (χ as initial scalars)
        self._built: dict[int, Any] = {1: (prog, out, handles)}
        self._compiled: dict[int, Any] = {}
        self.method: str | None = None
        self.stderr: np.ndarray | None = None

    def _history(self, chi: Any) -> np.ndarray:
        arr = np.asarray(chi, dtype=float)
        B, K = self.shape
        if arr.shape == (B, K):
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (B, K) or not np.all(np.isfinite(arr)):
            raise ProgramValueError(
                f"operator_kernel: chi must be finite, shape (B, d_out) = ({B}, {K}) or a "
                f"history (t+1, {B}, {K}); got shape {arr.shape}"
            )
        if self.memoryless:
            arr = arr[-1:]
        return arr

    def __call__(self, chi: Any) -> np.ndarray:
        hist = self._history(chi)
        L = hist.shape[0]
        if L not in self._compiled:
            prog, out, handles = self._built.get(L) or self._build(None, L)
            try:
                comp = compile_limit(prog)
            except MethodUnavailableError:
                comp = None
            self._compiled[L] = (comp, out, handles)
        comp, out, handles = self._compiled[L]
        scalar = [(idx, h) for idx, h in np.ndenumerate(out) if isinstance(h, Scalar)]
        res, err = np.zeros(self.shape), np.zeros(self.shape)
        if comp is not None:
            try:
                vals = comp.evaluate(scalars={h: float(v) for h, v in zip(handles, hist.ravel())})
            except MethodUnavailableError:  # quadrature not certified: not compiled
                vals = None
                self._compiled[L] = (None, out, handles)
            if vals is not None:
                for idx, h in scalar:
                    res[idx] = vals[h]
                self.method, self.stderr = "compiled", err
                return res
        prog, out, _ = self._build(hist, L)
        lim = prog.limit(**self.limit_kw)
        methods = set()
        for idx, h in np.ndenumerate(out):
            if isinstance(h, Scalar):
                res[idx], err[idx] = lim[h], lim.stderr(h)
                methods.add(lim.method(h))
        self.method = (
            "montecarlo"
            if "montecarlo" in methods
            else "quadrature"
            if "quadrature" in methods
            else "exact"
        )
        self.stderr = err
        return res
