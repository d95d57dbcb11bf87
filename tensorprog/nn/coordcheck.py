r"""Quantitative coordinate checks and μTransfer from the limit: ``nn.coord_check``, ``nn.lr_sweep``.

A *coordinate check* [TP5 §7, App D.1] simulates a training run at several widths and
plots the size of every activation against the width; under a correct μP every curve
is flat. :func:`coord_check` replaces the eyeballed flatness by a statistic: for every
tensor the run names (pre-activations, features, their changes since initialisation,
the weight updates' contributions ``ΔW x``, the outputs and their change) and every
step it measures the RMS coordinate size
``‖v‖/√n`` at each width and seed, fits the exponent ``κ`` of ``RMS ∝ n^κ`` with its
standard error, and sets beside it

* the **predicted exponent**, derived from the program: the training compilers
  (:func:`~tensorprog.nn.train`, :func:`~tensorprog.nn.train_sgd`) write every width
  power the parametrization's exponents imply (TP5 Table 3 per parameter class,
  [TP4 Def 3.2]'s ``r``, and the diverging powers of an ``allow_unstable`` run) as a
  scalar of the program in ``tp.n``; :class:`WidthDegrees` reads them off and
  propagates them through the program (below); and
* the **predicted limit** of the width-normalised RMS ``n^{-κ}·RMS`` from the engine
  (a Moment ``mean(v²)`` added to a copy of the program; for a vanishing change, the
  Moment of its leading order :meth:`WidthDegrees.leading`), ± its standard error.

Width degrees
-------------
For every variable ``v`` of a program, ``deg v`` is the ``κ`` with ``RMS(v) = Θ(n^κ)``
(a scalar: ``|v| = Θ(n^κ)``), *generically*, i.e. assuming no cancellation beyond the
ones the rules below see. Rules: an initial vector has degree 0; an initial scalar with
value ``c·n^k`` has degree ``k``; ``Wx`` has the degree of ``x`` (``W`` has
``N(0, σ²/n)`` entries); a coordinatewise ``φ(x…; θ…)`` is read off ``φ``'s sympy body
with each symbol weighted by its degree (sums take the largest, products add, ``x^a``
multiplies by ``a``; bounded functions of a growing argument saturate to degree 0, a
function of vanishing arguments has the degree of its Taylor expansion at 0; a
``Piecewise`` branch ``θ = 0`` is taken when ``θ`` vanishes: the ``Δφ`` quotients of
:func:`~tensorprog.nn.train_sgd`); a Moment ``mean φ(x…)`` has the degree of its
integrand, less ``1/2`` when it is an inner product ``⟨c·u, y⟩`` of an initial
Gaussian direction ``u`` with a vector ``y`` that does not depend on ``u`` (its mean is
0 and its fluctuation ``n^{-1/2}`` by the CLT: the output at initialisation,
[TP4 App H.4.1]).

A change ``v_t − v_0`` has the degree :meth:`WidthDegrees.change` finds by pairing the
two programs' terms: both are linear forms over atoms (flattening ``lincomb``); equal
atoms leave the difference of their coefficients, ``W x_t − W x_0 = W(x_t − x_0)``,
``φ(a) − φ(b)`` is bounded by its linearisation ``Σ ∂φ·(a_i − b_i)`` and by
``max(deg φ(a), deg φ(b))`` (the triangle inequality), unpaired terms keep their own
degree. So ``h_t − h_0 = θ·Δh`` in an NTK run of :func:`~tensorprog.nn.train_sgd`
([TP4 Eq. (55)]: ``θ = n^{-1/2}``) has degree ``−1/2``, and ``ΔW x`` in SP with a
width-independent learning rate the degree ``+1/2`` of ``n^{1}·n^{-1/2}``.

``ΔW x`` of a hidden weight used as ``h_t = W_t x_t`` is ``h_t − θ·W_0 x_t``
(``θ = n^{1/2−s}`` the initial matrix's width multiplier), the sum of the rank-B update
terms ``Σ coef·⟨x_r, x_t⟩·dh_r`` [TP4 §5.3]; :func:`~tensorprog.nn.train` exposes
``θ·W_0 x_t`` with ``coordinates=True``. Its degree is that of the same difference of
linear forms (the ``W_0`` terms cancel exactly, the update terms keep their coefficients'
degrees): 0 in μP; ``−1/2`` in NTK, where ``ΔW x = −η n^{-1}·(∂f/∂h)·(xᵀx)`` with
``∂f/∂h`` of size ``n^{-1/2}`` and ``xᵀx = Θ(n)``; ``+1/2`` in SP with a
width-independent learning rate (``−η·(∂f/∂h)·(xᵀx)``).

These are upper bounds that are attained unless a cancellation the rules do not see
occurs (e.g. a symmetric input whose features cancel); ``verdict`` is how a check
catches both a wrong implementation and such a case.

The statistic
-------------
Per tensor and step, with ``y_{w,s} = log RMS`` at width ``n_w`` and seed ``s``, the
exponent is the weighted least-squares slope of the seed means ``ȳ_w`` on ``log n_w``
(:func:`fit_exponent`: weights the inverse seed variances of the means, smoothed across
widths, and a Birge-ratio standard error). Each row tests up to two hypotheses:

* the exponent: ``z_exponent = |exponent − predicted_exponent| / exponent_se``;
* where a limit is predicted (κ = 0 and the run has a limit, or a vanishing change
  whose leading order is a vector of the program):
  ``z_limit = |normalised − limit| / sqrt(normalised_se² + limit_se²)``, with
  ``normalised`` the mean over seeds of ``n^{-κ}·RMS`` at the largest width and
  ``normalised_se`` its standard error from the smoothed seed variance. Its
  finite-width error is a fluctuation of order ``n^{-1/2}`` (what the seeds measure)
  and a bias of order ``1/n`` [TP4 App H], smaller than the fluctuation's standard
  error at the widths and seeds of a coordinate check.

Each ``z`` has a two-sided p-value from the Student-t distribution with the variances'
degrees of freedom (``W(S−1) − 2`` for W widths and S seeds): standard errors estimated
from a few seeds have heavier tails than known ones.

A check tests many hypotheses at once (about 50 for a 3-step MLP: W widths × S seeds
feed every row); at a per-row level of 99.73% (3σ), one of 50 true rows would be
flagged in one check in eight. The verdicts therefore control the **family-wise error
rate**: with Holm's step-down rule (:func:`holm`) over all the check's p-values, the
probability that a correct implementation gets *any* ``"inconsistent"`` row is at most
``alpha`` (default 0.01), whatever the dependence between the rows (they share their
simulations). A row is ``"inconsistent"`` when the smaller of its adjusted p-values
(``p_adjusted``) is ``≤ alpha``. Holm's rule rejects everything Bonferroni's
(``p ≤ alpha/m``) does and more, so a broken tensor, whose z grows like the square
root of the seeds, is still found; the price of the family-wise guarantee is that a
small deviation must be measured with more seeds to be called.

References
----------
[TP4] Feature learning in infinite-width neural networks (G. Yang, E. J. Hu; ICML 2021;
arXiv:2011.14522). [Holm] S. Holm, A simple sequentially rejective multiple test
procedure, Scand. J. Statist. 6 (1979) 65–70. [TP5] Tensor Programs V: tuning large neural networks via zero-shot
hyperparameter transfer (G. Yang et al.; NeurIPS 2021; arXiv:2203.03466).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from .. import OptionalDependencyError, ProgramTypeError, ProgramValueError, Vector, lincomb, mean
from .. import n as WIDTH
from ..core.ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn
from ..core.nonlin import BOUNDED, inline
from ..core.tables import EXTRA
from .model import Model
from .optim import SGD
from .train import TrainRun, train
from .training import TrainingRun

__all__ = [
    "coord_check",
    "CoordCheck",
    "lr_sweep",
    "LRSweep",
    "WidthDegrees",
    "fit_exponent",
    "holm",
    "fit_vertex",
    "VertexFit",
    "vertex_bootstrap",
]

_NEG = -math.inf
_ALPHA = 0.01  # the family-wise error rate of a check's verdicts


def _require(module: str) -> Any:
    """``pandas`` or ``matplotlib.pyplot``, or an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise OptionalDependencyError(
            f"coordinate checks need {top}, an optional dependency of tensorprog; install it "
            f"with `pip install 'tensorprog[{EXTRA}]'` (or `pip install {top}`)"
        ) from exc


def _progress(it: Any, total: int, desc: str, on: bool) -> Any:
    if not on:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


# ---------------------------------------------------------------------------------------
# Width degrees of a program


def _leading(value: sympy.Expr) -> float:
    """``k`` with ``|value| = Θ(n^k)`` as ``n → ∞`` (``-inf`` for 0)."""
    value = sympy.sympify(value)
    if not value.has(WIDTH):
        return _NEG if value == 0 else 0.0
    k = sympy.limit(sympy.log(sympy.Abs(value)) / sympy.log(WIDTH), WIDTH, sympy.oo)
    return float(k)


def _add(*ds: float) -> float:
    """Sum of degrees (``-inf`` absorbs: a product with 0 is 0)."""
    return _NEG if any(d == _NEG for d in ds) else float(sum(ds))


def body_degree(e: sympy.Expr, w: dict) -> float:
    """The degree in ``n`` of a nonlinearity body whose symbols have degrees ``w``
    (rules in the module docstring; ``nan``: no polynomial degree, e.g. ``exp`` of a
    growing argument)."""
    if e.is_number:
        return _NEG if e == 0 else 0.0
    if e.is_Symbol:
        return w.get(e, 0.0)
    if isinstance(e, sympy.Add):
        return max(body_degree(a, w) for a in e.args)
    if isinstance(e, sympy.Mul):
        return _add(*(body_degree(a, w) for a in e.args))
    if isinstance(e, sympy.Pow) and e.exp.is_number:
        d = body_degree(e.base, w)
        if d == _NEG:
            return _NEG if e.exp > 0 else math.nan
        return d * float(e.exp)
    if isinstance(e, (sympy.Max, sympy.Min, sympy.Abs)):
        return max(body_degree(a, w) for a in e.args)
    if isinstance(e, sympy.Piecewise):
        for expr, cond in e.args:  # the branch the limit takes: θ = 0 for a vanishing θ
            if isinstance(cond, sympy.Eq) and 0 in cond.args:
                (th,) = [a for a in cond.args if a != 0]
                if body_degree(th, w) < 0:
                    return body_degree(expr, w)
        return max(body_degree(expr, w) for expr, _ in e.args)
    if isinstance(e, sympy.Function) or isinstance(e, sympy.exp):
        ds = [body_degree(a, w) for a in e.args]
        D = max(ds)
        if D > 0:
            return 0.0 if isinstance(e, BOUNDED) else math.nan
        at0 = e.func(*[sympy.Integer(0)] * len(e.args))
        return 0.0 if at0 != 0 else D  # f(0) = 0: the Taylor term f'(0)·x
    return math.nan


def _linear_terms(fn: Any) -> list[tuple[int, sympy.Expr]] | None:
    """A Nonlin body ``Σ_i c_i(p)·x_i`` (linear in its arguments, no constant) as
    ``[(i, c_i)]``, else None."""
    body = inline(fn.body)
    if not fn.args:
        return None
    try:
        poly = sympy.Poly(body, *fn.args)
    except sympy.PolynomialError:
        return None
    if poly.total_degree() > 1:
        return None
    terms = []
    for i, x in enumerate(fn.args):
        c = poly.coeff_monomial(x)
        if c != 0:
            terms.append((i, c))
    if poly.coeff_monomial(1) != 0:
        return None
    return terms


class WidthDegrees:
    """The width degree of every variable of a program (module docstring, "Width degrees").

    ``wd[var]`` is ``deg v`` (``RMS(v) = Θ(n^{deg})``; ``-inf``: identically 0, ``nan``:
    no polynomial degree); ``wd.change(a, b)`` the degree of ``a − b``.
    """

    def __init__(self, program: Any) -> None:
        self.program = program
        self.instr: dict[Any, Any] = {}
        self.deg: dict[Any, float] = {}
        self.clt: set[Any] = set()  # Moments reduced by the CLT rule
        self._inits: dict[Any, frozenset] = {}
        self._lin: dict[Any, Any] = {}
        self._memo: dict[tuple, float] = {}
        for ins in program.instructions:
            v = ins.out
            self.instr[v] = ins
            self.deg[v] = self._degree(ins)

    def __getitem__(self, h: Any) -> float:
        return self.deg[h.var if hasattr(h, "var") else h]

    # -- one instruction -------------------------------------------------------------
    def _inits_of(self, ins: Any) -> frozenset:
        """The initial vectors ``ins`` depends on."""
        if isinstance(ins, InitVector):
            return frozenset([ins.out])
        deps = [a for a in (getattr(ins, "args", ()) + getattr(ins, "params", ()))]
        if isinstance(ins, MatMul):
            deps = [ins.arg]
        s: frozenset = frozenset()
        for a in deps:
            s = s | self._inits.get(a, frozenset())
        return s

    def _fn_degree(self, fn: Any, args: Sequence, params: Sequence) -> float:
        w = dict(zip(fn.args, (self.deg[a] for a in args)))
        w.update(zip(fn.params, (self.deg[p] for p in params)))
        return body_degree(inline(fn.body), w)

    def _degree(self, ins: Any) -> float:
        v = ins.out
        if isinstance(ins, InitMatrix):
            return 0.0
        self._inits[v] = self._inits_of(ins)
        if isinstance(ins, InitVector):
            return _NEG if ins.var == 0 and ins.mean == 0 and not ins.cov else 0.0
        if isinstance(ins, InitScalar):
            return _leading(ins.value)
        if isinstance(ins, MatMul):
            return self.deg[ins.arg]
        d = self._fn_degree(ins.fn, getattr(ins, "args", ()), ins.params)
        if isinstance(ins, Moment) and self._centred(ins):
            self.clt.add(v)
            return d - 0.5
        return d

    def _gaussian_direction(self, v: Any) -> frozenset | None:
        """The initial vectors of ``v`` if ``v`` is a linear combination (scalar
        coefficients) of mean-zero initial vectors, else None."""
        ins = self.instr[v]
        if isinstance(ins, InitVector):
            return frozenset([v]) if ins.mean == 0 else None
        if isinstance(ins, Nonlin) and _linear_terms(ins.fn) is not None:
            us = [self._gaussian_direction(a) for a in ins.args]
            if all(u is not None for u in us):
                return frozenset().union(*us)
        return None

    def _centred(self, ins: Moment) -> bool:
        """A Moment ``⟨c·u, y⟩`` with ``u`` mean-zero Gaussian, ``y`` independent of ``u``."""
        if len(ins.args) != 2 or inline(ins.fn.body) != ins.fn.args[0] * ins.fn.args[1]:
            return False
        for a, b in (ins.args, ins.args[::-1]):
            u = self._gaussian_direction(a)
            if u is not None and not (u & self._inits[b]):
                return True
        return False

    # -- changes -----------------------------------------------------------------------
    def _form(self, v: Any) -> list[tuple[Any, sympy.Expr]]:
        """``v = Σ c·atom`` (coefficients sympy expressions in symbols of scalar vars)."""
        if v in self._lin:
            return self._lin[v]
        ins = self.instr[v]
        out: list[tuple[Any, sympy.Expr]] = [(v, sympy.Integer(1))]
        if isinstance(ins, Nonlin):
            terms = _linear_terms(ins.fn)
            if terms is not None:
                sub = {p: sympy.Symbol(f"_v{q.id}") for p, q in zip(ins.fn.params, ins.params)}
                acc: dict[Any, sympy.Expr] = {}
                for i, c in terms:
                    for atom, c2 in self._form(ins.args[i]):
                        acc[atom] = acc.get(atom, sympy.Integer(0)) + c.xreplace(sub) * c2
                out = [(a, c) for a, c in acc.items() if c != 0]
        self._lin[v] = out
        return out

    def _coef_degree(self, c: sympy.Expr) -> float:
        w = {s: self.deg[self._var_of(s)] for s in c.free_symbols}
        return body_degree(c, w)

    def _var_of(self, s: sympy.Symbol) -> Any:
        i = int(s.name[2:])
        if not hasattr(self, "_by_id"):
            self._by_id = {v.id: v for v in self.instr}
        return self._by_id[i]

    def change(self, a: Any, b: Any) -> float:
        """The degree of ``a − b`` (two vectors, or two scalars, of the program)."""
        a = a.var if hasattr(a, "var") else a
        b = b.var if hasattr(b, "var") else b
        if a == b:
            return _NEG
        key = (a, b)
        if key not in self._memo:
            self._memo[key] = self._change(a, b)
        return self._memo[key]

    def _change(self, a: Any, b: Any) -> float:
        ia, ib = self.instr[a], self.instr[b]
        cap = max(self.deg[a], self.deg[b])
        if isinstance(ia, InitScalar) or isinstance(ib, InitScalar):
            return cap
        fa, fb = self._form(a), self._form(b)
        if len(fa) != 1 or len(fb) != 1 or fa[0][0] != a or fb[0][0] != b:
            # a linear combination (also of an initial vector, e.g. h_t = u + θ·Δh)
            return min(cap, self._forms_change(fa, fb))
        if isinstance(ia, InitVector) or isinstance(ib, InitVector):
            return cap
        return min(cap, self._atoms_change(a, b))

    def _forms_change(self, fa: list, fb: list) -> float:
        ca, cb = dict(fa), dict(fb)
        out = _NEG
        for atom in set(ca) & set(cb):
            diff = sympy.expand(ca[atom] - cb[atom])
            if diff != 0:
                out = max(out, _add(self._coef_degree(diff), self.deg[atom]))
        ra = [(x, c) for x, c in fa if x not in cb]
        rb = [(x, c) for x, c in fb if x not in ca]
        used: set = set()
        for x, c in ra:
            j = next(
                (j for j, (y, _) in enumerate(rb) if j not in used and self._pairs(x, y)), None
            )
            if j is None:
                out = max(out, _add(self._coef_degree(c), self.deg[x]))
                continue
            used.add(j)
            y, d = rb[j]
            dc = sympy.expand(c - d)
            t1 = _NEG if dc == 0 else _add(self._coef_degree(dc), self.deg[x])
            t2 = _add(self._coef_degree(d), self.change(x, y))
            out = max(out, t1, t2)
        for j, (y, d) in enumerate(rb):
            if j not in used:
                out = max(out, _add(self._coef_degree(d), self.deg[y]))
        return out

    def leading(self, a: Any, b: Any) -> tuple[float, list] | None:
        """The leading order of ``a − b`` as ``(κ, [(number, scalar vars, atom)])``:
        ``n^{-κ}(a − b) → Σ number·Π scalars·atom`` (the scalars Θ(1) scalars of the
        program, the width powers ``c·n^k`` replaced by the limit of ``c·n^k·n^{-k}``).
        ``None`` when the difference is not a sum of such terms (a change that needs
        the pairing of ``W x_t − W x_0`` or of two nonlinearities at leading order)."""
        a = a.var if hasattr(a, "var") else a
        b = b.var if hasattr(b, "var") else b
        kappa = self.change(a, b)
        if not math.isfinite(kappa):
            return None
        ca, cb = dict(self._form(a)), dict(self._form(b))
        terms = []
        for atom in set(ca) | set(cb):
            c = sympy.expand(ca.get(atom, 0) - cb.get(atom, 0))
            if c == 0:
                continue
            d = _add(self._coef_degree(c), self.deg[atom])
            if d < kappa:
                continue  # vanishes relative to the leading order
            if (atom not in ca or atom not in cb) and any(
                self._pairs(atom, y)
                for y in (cb if atom in ca else ca)
                if y not in ca or y not in cb
            ):
                return None  # a paired term (W x_t − W x_0): its leading order is not a monomial
            term = self._monomial(c, kappa - self.deg[atom])
            if term is None:
                return None
            terms.append((term[0], term[1], atom))
        return (kappa, terms) if terms else None

    def _monomial(self, c: sympy.Expr, k: float) -> tuple[float, list] | None:
        """``c`` (a product of a number and scalar symbols) as ``(number, [vars])`` with
        its width powers normalised: ``c·n^{-k}`` → number·Π vars; None otherwise."""
        const, vars_, deg = 1.0, [], 0.0
        for f in sympy.Mul.make_args(c):
            base, e = f.as_base_exp()
            if f.is_number:
                const *= float(f)
                continue
            if not (base.is_Symbol and e.is_Integer and e > 0):
                return None
            v = self._var_of(base)
            ins = self.instr[v]
            if isinstance(ins, InitScalar) and sympy.sympify(ins.value).has(WIDTH):
                kv = self.deg[v]
                norm = sympy.limit(ins.value * WIDTH ** (-sympy.nsimplify(kv)), WIDTH, sympy.oo)
                const *= float(norm) ** int(e)
                deg += kv * int(e)
            else:
                vars_ += [v] * int(e)
                deg += self.deg[v] * int(e)
        return (const, vars_) if abs(deg - k) < 1e-12 else None

    def _pairs(self, x: Any, y: Any) -> bool:
        ix, iy = self.instr[x], self.instr[y]
        if isinstance(ix, MatMul) and isinstance(iy, MatMul):
            return ix.matrix == iy.matrix and ix.transpose == iy.transpose
        kinds = (Nonlin, Moment, ScalarFn)
        return (
            isinstance(ix, kinds)
            and type(ix) is type(iy)
            and ix.fn is iy.fn
            and len(getattr(ix, "args", ())) == len(getattr(iy, "args", ()))
            and len(ix.params) == len(iy.params)
        )

    def _atoms_change(self, a: Any, b: Any) -> float:
        ia, ib = self.instr[a], self.instr[b]
        if not self._pairs(a, b):
            return max(self.deg[a], self.deg[b])
        if isinstance(ia, MatMul):
            return self.change(ia.arg, ib.arg)
        fn = ia.fn
        body = inline(fn.body)
        syms = fn.args + fn.params
        xa = getattr(ia, "args", ()) + ia.params
        xb = getattr(ib, "args", ()) + ib.params
        w = {s: max(self.deg[p], self.deg[q]) for s, p, q in zip(syms, xa, xb)}
        out = _NEG
        for s, p, q in zip(syms, xa, xb):
            dpq = self.change(p, q)
            if dpq == _NEG:
                continue
            out = max(out, _add(body_degree(sympy.diff(body, s), w), dpq))
        return out  # (a change of CLT-reduced Moments is not reduced: an upper bound)


# ---------------------------------------------------------------------------------------
# The tensors of a run


@dataclass(frozen=True)
class Tracked:
    """One tensor of a run at one step: the handles per input (``now``) and, for a
    change since initialisation, the handles at step 0 (``base``)."""

    tensor: str
    step: int
    now: tuple
    base: tuple | None
    vector: bool


def _tracked(run: Any) -> list[Tracked]:
    """The tensors a run names: for :func:`~tensorprog.nn.train`, every ``name=`` of the
    forward (and ``Δname``, its change since step 0, for a vector), the outputs ``f``
    (and ``Δf``) and, for a run built with ``coordinates=True``, ``ΔW x`` of every
    hidden weight ``W`` (``ΔWᵀ x`` of a transposed use): ``h_t − θ·W_0 x_t`` over its
    uses at step ``t ≥ 1``; for :func:`~tensorprog.nn.train_sgd`, its pre-activations
    ``h{l}``, features ``x{l}`` (and their changes), ``ΔW{l} x`` where the program has
    the MatMul ``W{l}_0 x{l-1}_t`` (an uncentred run) and its outputs."""
    out: list[Tracked] = []

    def add(name: str, H: np.ndarray, vector: bool, changes: bool) -> None:
        for t in range(H.shape[0]):
            out.append(Tracked(name, t, tuple(H[t].ravel()), None, vector))
        if changes:
            for t in range(1, H.shape[0]):
                out.append(Tracked("Δ" + name, t, tuple(H[t].ravel()), tuple(H[0].ravel()), vector))

    def weight_rows(weight_uses: Any) -> None:
        # ΔW x = h_t − θ·W_0 x_t per hidden weight use, from step 1 (ΔW_0 = 0)
        uses: dict[tuple, list] = {}
        for u in weight_uses:
            if u.step > 0:
                uses.setdefault((u.param, u.transpose, u.step), []).append(u)
        for (nm, tr, t), us in uses.items():
            now, base = tuple(u.h for u in us), tuple(u.w0x for u in us)
            out.append(Tracked(f"Δ{nm}{'ᵀ' if tr else ''} x", t, now, base, True))

    if isinstance(run, TrainRun):
        for nm, H in run.named.items():
            add(nm, H, isinstance(H.flat[0], Vector), isinstance(H.flat[0], Vector))
        add("f", run.outputs.reshape(run.outputs.shape[0], -1), False, True)
        weight_rows(run.weight_uses)
        return out
    if isinstance(run, TrainingRun):
        # train_sgd's named pre-activations h{l} and features x{l} (its nn.train run)
        B = run.X.shape[0]
        for nm, H in run.named.items():
            add(nm, H[:, :B], True, True)
        weight_rows(run.train_run.weight_uses)
        add("f", run.outputs, False, not run.center)
        return out
    raise ProgramTypeError(
        f"coord_check: run must be an nn.train or nn.train_sgd run (TrainRun, TrainingRun), "
        f"got {type(run).__name__}"
    )


def _rms(sim: Any, tr: Tracked) -> float:
    def val(h: Any) -> Any:
        return sim.vector(h) if tr.vector else sim[h]

    sq = []
    for k, h in enumerate(tr.now):
        x = np.asarray(val(h), dtype=float)
        if tr.base is not None:
            x = x - np.asarray(val(tr.base[k]), dtype=float)
        sq.append(np.mean(x * x))
    return float(np.sqrt(np.mean(sq)))


# ---------------------------------------------------------------------------------------
# The limit of the normalised RMS


def _limits(run: Any, rows: list[Tracked], kappa: list[float], kw: dict) -> tuple:
    """``limit, limit_se, reason`` per tracked tensor (NaN and a reason where none)."""
    lim = np.full(len(rows), np.nan)
    se = np.full(len(rows), np.nan)
    why = [""] * len(rows)
    problems = getattr(run, "problems", ())
    want = []
    wd0 = WidthDegrees(run.program)
    lead: dict[int, list] = {}  # vanishing changes: the leading terms per input
    for j, k in enumerate(kappa):
        tr = rows[j]
        if problems:
            why[j] = "the run has no infinite-width limit: " + "; ".join(problems)
        elif math.isfinite(k) and k < 0 and tr.vector and tr.base is not None:
            ls = [wd0.leading(h, b) for h, b in zip(tr.now, tr.base)]
            if all(x is not None for x in ls):
                lead[j] = [x[1] if x[0] == k else [] for x in ls]  # (a lower-order input: 0)
                want.append(j)
            else:
                why[j] = (
                    f"predicted exponent {k:g}: the leading order of the change is not a "
                    f"sum of width powers times vectors of the program"
                )
        elif not math.isfinite(k) or k != 0:
            why[j] = (
                f"predicted exponent {k:g} ≠ 0: the normalised RMS n^(-κ)·RMS has no "
                f"Moment of this program"
            )
        else:
            want.append(j)
    if not want:
        return lim, se, why
    p = copy.deepcopy(run.program)
    wd = WidthDegrees(p)
    handles = {}
    for j in want:
        tr = rows[j]
        if j in lead:  # n^{-κ}(v_t − v_0) → Σ number·Π scalars·atom, per input
            name_of = {v.id: v.name for v in wd0.instr}
            sq = []
            for terms in lead[j]:
                if not terms:
                    continue
                lc = [
                    (tuple([c] + [p[name_of[v.id]] for v in vs]), p[name_of[atom.id]])
                    for c, vs, atom in terms
                ]
                x = lincomb(lc)
                sq.append(x * x)
            s = sq[0]
            for t in sq[1:]:
                s = s + t
            handles[j] = mean(s * (1.0 / len(tr.now)), name=f"_coordcheck_{j}")
            continue
        if not tr.vector:
            if any(p[h.name].var in wd.clt for h in tr.now):
                why[j] = (
                    "a Gaussian fluctuation (mean-zero Moment, CLT): its normalised value "
                    "is random, not a number"
                )
                continue
            handles[j] = [p[h.name] for h in tr.now]
            continue
        terms = []
        for k, h in enumerate(tr.now):
            x = p[h.name]
            if tr.base is not None:
                x = x - p[tr.base[k].name]
            terms.append(x * x)
        s = terms[0]
        for t in terms[1:]:
            s = s + t
        handles[j] = mean(s * (1.0 / len(terms)), name=f"_coordcheck_{j}")
    L = p.limit(**kw)
    for j, h in handles.items():
        if isinstance(h, list):
            v = np.array([L[x] for x in h])
            e = np.array([L.stderr(x) for x in h])
            r = float(np.sqrt(np.mean(v * v)))
            lim[j] = r
            se[j] = float(np.sqrt(np.sum((v * e) ** 2)) / (len(v) * r)) if r > 0 else np.nan
        else:
            ms, mse = float(L[h]), float(L.stderr(h))
            r = math.sqrt(max(ms, 0.0))
            lim[j] = r
            se[j] = mse / (2 * r) if r > 0 else math.sqrt(mse)
    return lim, se, why


# ---------------------------------------------------------------------------------------
# The fit


@dataclass(frozen=True)
class ExponentFit:
    """The fit of ``log RMS = κ log n + c`` (:func:`fit_exponent`).

    Attributes
    ----------
    exponent, se : float
        ``κ`` and its standard error.
    var : ndarray
        The (smoothed) seed variance of ``log RMS`` at each width.
    dof : int
        Degrees of freedom of the variances: ``W(S−1) − 2`` when smoothed, else ``S − 1``.
    """

    exponent: float
    se: float
    var: np.ndarray
    dof: int


def fit_exponent(widths: Sequence[int], rms: np.ndarray) -> ExponentFit:
    """The slope of ``log RMS`` on ``log n`` and its standard error.

    ``rms`` has shape (widths, seeds). Weighted least squares of the seed means
    ``ȳ_w`` of ``y = log RMS`` with weights ``1/v_w``, ``v_w = Var_s(y)/S``. With ≥ 3
    widths the per-width seed variances, each from only ``S − 1`` degrees of freedom,
    are smoothed by a least-squares line of ``log Var_s(y)`` on ``log n`` (a Θ(1)
    quantity's variance falls like a power of ``n``, a blown-up one's is flat),
    corrected for the bias ``ψ((S−1)/2) − log((S−1)/2)`` of a log sample variance. The
    slope's standard error is ``(Σ_w (x_w − x̄)²/v_w)^{-1/2}``, ``x = log n``, ``x̄`` the
    weighted mean, times the Birge ratio ``sqrt(max(1, χ²/(W − 2)))`` (``χ² = Σ_w
    r_w²/v_w`` over the residuals of the W width means): when the means scatter about
    the line more than their seed variances say (a finite-width correction), the
    standard error grows accordingly. Needs ≥ 2 widths and ≥ 2 seeds.

    Examples
    --------
    >>> import numpy as np
    >>> ws = np.array([128, 256, 512])
    >>> fit = fit_exponent(ws, np.outer(ws**0.5, [0.9, 1.0, 1.1]))
    >>> round(fit.exponent, 6)
    0.5
    """
    x = np.log(np.asarray(widths, dtype=float))
    with np.errstate(divide="ignore"):
        y = np.log(np.asarray(rms, dtype=float))
    W, S = y.shape
    if not np.all(np.isfinite(y)):
        return ExponentFit(math.nan, math.nan, np.full(W, np.nan), S - 1)
    v = np.maximum(y.var(axis=1, ddof=1), 1e-300)
    dof = S - 1
    if W > 2:  # smooth the noisy per-width variances: log v_w linear in log n_w
        from scipy.special import digamma

        k = S - 1  # E log(s²/σ²) = ψ(k/2) − log(k/2) for s² with k degrees of freedom
        bias = digamma(k / 2) - math.log(k / 2)
        b, a = np.polyfit(x, np.log(v), 1)
        v = np.exp(a + b * x - bias)
        dof = W * (S - 1) - 2
    w = S / v
    xb = np.sum(w * x) / np.sum(w)
    yb = y.mean(axis=1)
    sxx = np.sum(w * (x - xb) ** 2)
    slope = float(np.sum(w * (x - xb) * yb) / sxx)
    se = 1.0 / math.sqrt(sxx)
    if W > 2:  # Birge ratio: the means scatter about the line more than the seeds say
        resid = yb - (np.sum(w * yb) / np.sum(w) + slope * (x - xb))
        chi2 = float(np.sum(w * resid**2)) / (W - 2)
        se *= math.sqrt(max(1.0, chi2))
    return ExponentFit(slope, float(se), v, int(dof))


def _p_value(z: float, dof: int) -> float:
    """The two-sided p-value ``2·P(T > z)`` of ``|estimate − prediction| / se = z``, ``T``
    Student-t with ``dof`` degrees of freedom: a standard error estimated from few seeds
    has heavier tails than a known one (NaN for NaN)."""
    from scipy.stats import t

    return float(2 * t.sf(z, max(dof, 1))) if math.isfinite(z) else math.nan


def holm(p: Any) -> np.ndarray:
    r"""Holm's step-down adjusted p-values (Holm 1979, *Scand. J. Statist.* 6:65–70).

    With the ``m`` finite p-values sorted, ``p_{(1)} ≤ … ≤ p_{(m)}``,
    ``p̃_{(j)} = max_{i ≤ j} min(1, (m − i + 1)·p_{(i)})``; rejecting every hypothesis
    with ``p̃ ≤ α`` keeps the probability of rejecting any true one at most ``α``
    whatever the dependence between the tests (the family-wise error rate). NaN
    entries are not hypotheses and stay NaN.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005, float("nan")]).round(3)
    array([0.03, 0.06, 0.06, 0.02,  nan])
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)
    return out


# ---------------------------------------------------------------------------------------
# coord_check


@dataclass
class CoordCheck:
    """The result of :func:`coord_check`.

    Attributes
    ----------
    data : pandas.DataFrame
        ``tensor, step, width, seed, rms`` (measured at finite width).
    summary : pandas.DataFrame
        Per tensor and step: ``exponent, exponent_se, predicted_exponent, limit,
        limit_se, normalised, normalised_se`` (the normalised RMS at the largest width,
        mean ± s.e. over seeds), ``z_exponent, z_limit`` and their two-sided
        Student-t p-values ``p_exponent, p_limit``, ``p_adjusted`` (the smaller of the
        row's two Holm-adjusted p-values), ``verdict, blows_up, reason`` (module
        docstring, "The statistic"). ``verdict`` is ``"inconsistent"`` when
        ``p_adjusted ≤ alpha`` (also when an RMS is 0 or not finite at some width),
        ``"consistent"`` otherwise, or ``"no prediction"`` when the width degree has no
        polynomial bound (e.g. ``exp`` of a growing argument); ``reason`` says why a
        limit is missing.
    widths, seeds : the widths and the number of seeds.
    alpha : float
        The family-wise error rate of the verdicts.
    hypotheses : int
        The size of the family: the number of finite p-values (exponents and limits).
    """

    data: Any
    summary: Any
    widths: tuple
    seeds: int
    alpha: float = _ALPHA
    hypotheses: int = 0
    run: Any = field(default=None, repr=False)

    def inconsistent(self) -> Any:
        """The rows of :attr:`summary` whose verdict is ``"inconsistent"``."""
        return self.summary[self.summary.verdict == "inconsistent"]

    def plot(
        self, tensors: Sequence[str] | None = None, axes: Any = None, band: float = 3.0
    ) -> Any:
        """mup-style panels: one per step, RMS against width (log-log), one line per
        tensor (mean over seeds ± s.e.), the predicted ``limit·n^κ`` dotted with its
        ``±band`` s.e. band where a limit is predicted; changes since initialisation
        (``Δ…``) dashed. Returns the figure."""
        plt = _require("matplotlib.pyplot")
        d, s = self.data, self.summary
        names = list(dict.fromkeys(s.tensor)) if tensors is None else list(tensors)
        steps = sorted(set(s.step))
        if axes is None:
            fig, axes = plt.subplots(
                1, len(steps), figsize=(3.2 * len(steps), 3.0), sharey=True, squeeze=False
            )
            axes = axes[0]
        else:
            fig = np.ravel(axes)[0].figure
        nn_ = np.asarray(self.widths, dtype=float)
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        color = {nm: cmap(j % cmap.N) for j, nm in enumerate(names)}  # one colour per tensor
        for ax, t in zip(np.ravel(axes), steps):
            for nm in names:
                g = d[(d.tensor == nm) & (d.step == t)]
                if g.empty:
                    continue
                st = g.groupby("width").rms.agg(["mean", "std", "count"])
                (line,) = ax.plot(
                    st.index,
                    st["mean"],
                    marker="o",
                    ms=3,
                    label=nm,
                    color=color[nm],
                    ls="--" if nm.startswith("Δ") else "-",
                )
                ax.fill_between(
                    st.index,
                    st["mean"] - st["std"] / np.sqrt(st["count"]),
                    st["mean"] + st["std"] / np.sqrt(st["count"]),
                    color=line.get_color(),
                    alpha=0.25,
                )
                row = s[(s.tensor == nm) & (s.step == t)].iloc[0]
                if np.isfinite(row.limit):
                    kap = row.predicted_exponent
                    c = line.get_color()
                    ax.plot(nn_, row.limit * nn_**kap, ":", color=c, lw=1)
                    lo = (row.limit - band * row.limit_se) * nn_**kap
                    hi = (row.limit + band * row.limit_se) * nn_**kap
                    ax.fill_between(nn_, lo, hi, color=c, alpha=0.12)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"step {t}")
            ax.set_xlabel("width n")
        np.ravel(axes)[0].set_ylabel("RMS coordinate size")
        handles: dict = {}
        for ax in np.ravel(axes):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(
            list(handles.values()),
            list(handles),
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
        )
        fig.tight_layout()
        return fig


def _width_seed(s: Any, n: int) -> Any:
    """The randomness of seed ``s`` at width ``n``: ``numpy.random.default_rng([s, n])``
    for an int seed, so that the widths are independent (one int seed's streams at two
    widths share their first coordinates, which would correlate the width means the
    fit treats as independent); any other seed as given."""
    if isinstance(s, numbers.Integral) and not isinstance(s, bool):
        return np.random.default_rng([int(s), int(n)])
    return s


def _check_widths(widths: Any, what: str, allow_none: bool = False) -> list:
    try:
        ws = list(widths)
    except TypeError:
        raise ProgramTypeError(
            f"{what}: widths must be a sequence of ints, got {widths!r}"
        ) from None
    ok = all(
        (w is None and allow_none)
        or (isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 2)
        for w in ws
    )
    if not ws or not ok or len(set(ws)) != len(ws):
        valid = "ints ≥ 2 (None: the limit)" if allow_none else "ints ≥ 2"
        raise ProgramValueError(f"{what}: widths must be distinct {valid}, got {widths!r}")
    return ws


def _check_seeds(seeds: Any, what: str) -> list:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 2:
            raise ProgramValueError(
                f"{what}: seeds must be ≥ 2 (the standard errors are the seeds' spread), got {seeds}"
            )
        return list(range(int(seeds)))
    try:
        ss = list(seeds)
    except TypeError:
        raise ProgramTypeError(f"{what}: seeds must be an int or a sequence of seeds") from None
    if len(ss) < 2:
        raise ProgramValueError(f"{what}: give at least 2 seeds, got {seeds!r}")
    return ss


def coord_check(
    run: Any,
    widths: Sequence[int] = (256, 512, 1024, 2048),
    seeds: int | Sequence[Any] = 4,
    *,
    limit: bool | dict = True,
    alpha: float = _ALPHA,
    progress: bool = False,
) -> CoordCheck:
    r"""A quantitative coordinate check of a training run (module docstring).

    Parameters
    ----------
    run : TrainRun or TrainingRun
        From :func:`~tensorprog.nn.train` (its named quantities and outputs, and
        ``ΔW x`` of its hidden weights when built with ``coordinates=True``; an
        ``allow_unstable=True`` run too) or :func:`~tensorprog.nn.train_sgd` (its
        ``h{l}``, ``x{l}``, ``ΔW{l} x`` unless centred, and outputs).
    widths : sequence of int, default (256, 512, 1024, 2048)
        At least 2 widths.
    seeds : int or sequence, default 4
        The seeds per width (an int ``S``: ``0..S-1``); at least 2. Seed ``s`` at width
        ``n`` simulates with ``numpy.random.default_rng([s, n])``: independent widths,
        the same bits on every call.
    limit : bool or dict, default True
        Compute the predicted limits (a dict: keywords of :meth:`tensorprog.Program.limit`,
        e.g. ``{"samples": 20_000}``, or ``{"executor": client}`` for a cluster);
        ``False``: the verdict uses the exponents only.
    alpha : float, default 0.01
        The family-wise error rate: the probability that a check of a correct
        implementation calls any row ``"inconsistent"`` is at most ``alpha`` (Holm's
        rule over every exponent and limit test of the check; module docstring).
    progress : bool
        A tqdm bar over the simulations.

    Returns
    -------
    CoordCheck
        ``.data``, ``.summary`` (pandas), ``.plot()`` (matplotlib).

    Examples
    --------
    >>> import tensorprog as tp
    >>> from tensorprog import nn
    >>> net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    >>> run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1)
    >>> cc = nn.coord_check(run, widths=[128, 256, 512], seeds=3, limit=False)
    >>> list(cc.summary.verdict.unique())
    ['consistent']
    """
    pd = _require("pandas")
    ws = _check_widths(widths, "coord_check")
    if len(ws) < 2:
        raise ProgramValueError(f"coord_check: give at least 2 widths to fit an exponent, got {ws}")
    ss = _check_seeds(seeds, "coord_check")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ProgramValueError(f"coord_check: alpha must be a number in (0, 1), got {alpha!r}")
    if not isinstance(limit, (bool, dict)):
        raise ProgramTypeError(
            f"coord_check: limit must be a bool or a dict of Program.limit keywords, got {limit!r}"
        )
    rows = _tracked(run)
    wd = WidthDegrees(run.program)
    kappa = []
    for tr in rows:
        if tr.base is None:
            ds = [wd[h] for h in tr.now]
        else:
            ds = [wd.change(h, b) for h, b in zip(tr.now, tr.base)]
        kappa.append(float(max(ds)))
    keep = [j for j, kp in enumerate(kappa) if kp != _NEG]  # identically zero: nothing to fit
    rows = [rows[j] for j in keep]
    kappa = [kappa[j] for j in keep]
    R = np.empty((len(rows), len(ws), len(ss)))
    jobs = [(a, n, b, s) for a, n in enumerate(ws) for b, s in enumerate(ss)]
    recs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for a, n, b, s in _progress(jobs, len(jobs), "coord_check", progress):
            sim = run.simulate(n, seed=_width_seed(s, n)).simulation
            for j, tr in enumerate(rows):
                R[j, a, b] = _rms(sim, tr)
                recs.append((tr.tensor, tr.step, n, s, R[j, a, b]))
    data = pd.DataFrame.from_records(recs, columns=["tensor", "step", "width", "seed", "rms"])
    if limit is False:
        lim = np.full(len(rows), np.nan)
        lse = np.full(len(rows), np.nan)
        why = ["not computed (limit=False)"] * len(rows)
    else:
        lim, lse, why = _limits(run, rows, kappa, {} if limit is True else dict(limit))
    out = []
    nmax = float(max(ws))
    amax = ws.index(max(ws))
    P = np.full((len(rows), 2), np.nan)  # two-sided p-values: exponent, limit
    for j, tr in enumerate(rows):
        fit = fit_exponent(ws, R[j])
        e, ese = fit.exponent, fit.se
        kp = kappa[j]
        z_e = abs(e - kp) / ese if math.isfinite(kp) and ese > 0 else math.nan
        norm = R[j, amax] * nmax ** (-kp) if math.isfinite(kp) else np.full(len(ss), np.nan)
        # its standard error from the smoothed variance of log RMS at that width
        nm_ = float(np.mean(norm))
        nse = nm_ * math.sqrt(fit.var[amax] / len(ss)) if math.isfinite(e) else math.nan
        z_l = (
            abs(nm_ - lim[j]) / math.sqrt(nse**2 + lse[j] ** 2)
            if np.isfinite(lim[j]) and (nse > 0 or lse[j] > 0)
            else math.nan
        )
        if math.isfinite(kp) and math.isfinite(e):
            P[j] = [_p_value(z, fit.dof) for z in (z_e, z_l)]
        out.append([tr.tensor, tr.step, e, ese, kp, lim[j], lse[j], nm_, nse, z_e, z_l, *P[j]])
    adj = holm(P.ravel()).reshape(P.shape)
    for j, row in enumerate(out):
        kp, e = kappa[j], row[2]
        p_row = float(np.nanmin(adj[j])) if np.isfinite(adj[j]).any() else math.nan
        reason = why[j]
        if not math.isfinite(kp):
            verdict, reason = "no prediction", "the width degree has no polynomial bound"
        elif not math.isfinite(e):
            verdict, reason = "inconsistent", "an RMS is 0 or not finite at some width"
        else:
            verdict = "inconsistent" if p_row <= alpha else "consistent"
        row += [p_row, verdict, bool(kp > 0), reason]
    summary = pd.DataFrame.from_records(
        out,
        columns=[
            "tensor",
            "step",
            "exponent",
            "exponent_se",
            "predicted_exponent",
            "limit",
            "limit_se",
            "normalised",
            "normalised_se",
            "z_exponent",
            "z_limit",
            "p_exponent",
            "p_limit",
            "p_adjusted",
            "verdict",
            "blows_up",
            "reason",
        ],
    )
    m = int(np.isfinite(P).sum())
    return CoordCheck(data, summary, tuple(ws), len(ss), float(alpha), m, run)


# ---------------------------------------------------------------------------------------
# lr_sweep


@dataclass
class LRSweep:
    """The result of :func:`lr_sweep`.

    Attributes
    ----------
    data : pandas.DataFrame
        ``width`` (``None``: the limit), ``lr``, ``seed`` (``None`` for the limit),
        ``value`` (the metric after the last step), ``stderr`` (the limit's; 0 at
        finite width).
    best_lr : pandas.DataFrame
        Per width: ``lr`` (the argmin), ``log_lr``, ``log_lr_se`` (bootstrap, within
        the basin), ``at_edge`` (the grid's minimum is at its first or last learning
        rate: no vertex, ``log_lr_se`` NaN), ``points`` (the learning rates the vertex
        was fitted to), ``basin_lo, basin_hi`` (the learning rates bounding the basin of
        the grid minimum) and ``p_basin`` (the fraction of bootstrap resamples whose
        minimum is in that basin; well below 1: another basin is about as deep, see
        :func:`vertex_bootstrap`).
    """

    data: Any
    best_lr: Any
    metric: str = "loss"

    def plot(self, ax: Any = None) -> Any:
        """The metric against the learning rate (log x), one curve per width (mean ±
        s.e. over seeds; the limit ± its stderr), the argmins marked. Returns the figure."""
        plt = _require("matplotlib.pyplot")
        if ax is None:
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
        else:
            fig = ax.figure
        d = self.data
        for w, g in d.groupby(d.width.fillna(-1), sort=True):
            st = g.groupby("lr").value.agg(["mean", "std", "count"])
            lab = "n = ∞" if w == -1 else f"n = {int(w)}"
            err = (
                g.groupby("lr").stderr.mean()
                if w == -1
                else st["std"].fillna(0) / np.sqrt(st["count"])
            )
            (line,) = ax.plot(st.index, st["mean"], "o-", ms=3, label=lab, lw=2 if w == -1 else 1)
            ax.fill_between(
                st.index, st["mean"] - err, st["mean"] + err, alpha=0.2, color=line.get_color()
            )
            b = self.best_lr[self.best_lr.width.fillna(-1) == w]
            if len(b) and np.isfinite(b.lr.iloc[0]):
                ax.axvline(b.lr.iloc[0], color=line.get_color(), ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"{self.metric} after training")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


@dataclass(frozen=True)
class VertexFit:
    """The argmin of a sweep's curve (:func:`fit_vertex`).

    Attributes
    ----------
    log_lr : float
        The vertex in ``log lr`` (the grid minimum's when ``at_edge``).
    at_edge : bool
        No vertex: the minimum is at the grid's first or last point, or its three
        points are not convex.
    basin : tuple of int
        ``(lo, hi)``, inclusive grid indices of the minimum's basin: the contiguous run
        around it where the curve decreases strictly to the minimum and increases
        strictly after it.
    used : tuple of int
        The grid indices the vertex was fitted to.
    """

    log_lr: float
    at_edge: bool
    basin: tuple[int, int]
    used: tuple[int, ...]


def _basin(y: np.ndarray, j: int, lo: int, hi: int) -> tuple[int, int]:
    """The run ``[a, b] ⊆ [lo, hi]`` around ``j`` on which ``y`` falls strictly to ``j``
    and rises strictly after it (NaN/inf entries end it)."""
    a, b = j, j
    while a > lo and np.isfinite(y[a - 1]) and y[a - 1] > y[a]:
        a -= 1
    while b < hi and np.isfinite(y[b + 1]) and y[b + 1] > y[b]:
        b += 1
    return a, b


def fit_vertex(logs: np.ndarray, y: np.ndarray, within: tuple[int, int] | None = None) -> VertexFit:
    r"""The argmin of a curve ``y`` on a grid ``logs`` (``log lr``), fitted in the basin
    of the grid minimum.

    The minimum ``j`` of ``y`` over the grid (over ``within = (lo, hi)``, inclusive,
    when given) fixes the basin (:class:`VertexFit`); the argmin is the vertex of the
    parabola through ``(logs, y)`` at ``j − 1, j, j + 1``, which lie in that basin. Near
    a smooth minimum the curve is quadratic in ``log lr``: the three nearest points
    resolve the vertex below the grid spacing without the bias of points farther up
    the basin's walls, and no point of another basin enters (a parabola fitted to a
    curve with two basins has its vertex between them, where the curve is high).
    ``within`` is how :func:`lr_sweep`'s bootstrap keeps a resampled curve in the
    basin of the point estimate.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-2.0, 2.0, 9)
    >>> y = np.minimum((x + 1) ** 2, 0.1 + (x - 1.2) ** 2)  # two basins
    >>> fit = fit_vertex(x, y)
    >>> round(fit.log_lr, 12), fit.basin, fit.used
    (-1.0, (0, 4), (1, 2, 3))
    """
    yy = np.where(np.isfinite(y), y, np.inf)
    lo, hi = (0, len(yy) - 1) if within is None else within
    j = lo + int(np.argmin(yy[lo : hi + 1]))
    basin = _basin(yy, j, lo, hi)
    if j == 0 or j == len(yy) - 1 or not np.all(np.isfinite(yy[j - 1 : j + 2])):
        return VertexFit(float(logs[j]), True, basin, (j,))
    x0, x1, x2 = logs[j - 1 : j + 2]
    y0, y1, y2 = yy[j - 1 : j + 2]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    A = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    Bc = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / den
    if not A > 0:
        return VertexFit(float(logs[j]), True, basin, (j,))
    return VertexFit(float(np.clip(-Bc / (2 * A), x0, x2)), False, basin, (j - 1, j, j + 1))


def vertex_bootstrap(logs: np.ndarray, y: np.ndarray, draws: Any) -> tuple[VertexFit, float, float]:
    """``(fit, se, p_basin)``: :func:`fit_vertex` of ``y``; the standard deviation of the
    vertex over the resampled curves ``draws`` (an iterable of curves on the same grid),
    each fitted within the basin of ``fit`` (NaN when ``fit.at_edge``); and the fraction
    of resamples whose grid minimum lies in that basin (below 1: another basin is about
    as deep, and ``se`` is the uncertainty *within* this one)."""
    fit = fit_vertex(logs, y)
    lo, hi = fit.basin
    xs, inside = [], 0
    for yb in draws:
        yb = np.where(np.isfinite(yb), yb, np.inf)
        inside += lo <= int(np.argmin(yb)) <= hi
        xs.append(fit_vertex(logs, yb, within=fit.basin).log_lr)
    se = math.nan if fit.at_edge or len(xs) < 2 else float(np.std(xs, ddof=1))
    return fit, se, inside / max(len(xs), 1)


def _metric(res: Any, run: Any, metric: str) -> float:
    """The metric after the last step from a simulation or limit result."""
    if metric == "loss":
        if hasattr(res, "loss"):
            return float(res.loss[-1])
        f = np.asarray(res.outputs, dtype=float)[-1]
        return float(np.sum((f - run.Y) ** 2) / (2 * len(run.Y)))
    return float(np.mean(res.named(metric)[-1]))


def lr_sweep(
    model_or_factory: Model | Callable[[float], Any],
    X: Any = None,
    Y: Any = None,
    lrs: Sequence[float] = (),
    widths: Sequence[int | None] = (256, 1024, None),
    steps: int = 3,
    *,
    metric: str = "loss",
    seeds: int | Sequence[Any] = 4,
    param: Any = None,
    loss: str = "mse",
    limit_kw: dict | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> LRSweep:
    r"""The metric after ``steps`` steps against the learning rate, at each width and at
    width ∞ (``None`` in ``widths``: the limit), with the argmin per width.

    The argmin is :func:`fit_vertex`'s: the vertex of the parabola through the grid's
    minimum and its two neighbours in ``log lr``, all in the minimum's basin (near a
    smooth minimum the metric is quadratic in ``log lr``; the vertex resolves it below
    the grid spacing). A curve can have two basins (the loss after a few steps of a
    tanh network returns close to 0 at two learning rates): ``best_lr`` reports the
    basin's bounds and the points used. Its standard error ``log_lr_se`` is the spread
    of the vertex over ``bootstrap`` resamplings, each fitted within the same basin
    (:func:`vertex_bootstrap`): at finite width of the seeds (with replacement; the seeds
    are independent networks), at width ∞ of the limit's values within their Monte
    Carlo standard errors (Gaussian; 0 for exact values); ``p_basin`` is how often a
    resample's minimum falls in that basin. It is the seeds' (and the Monte Carlo's)
    uncertainty only: at width ``n`` the mean loss exceeds the limit's by the outputs'
    variance, ``O(1/n)``, so the finite-width argmin also differs from the limit's by an
    ``O(1/n)`` bias, which shrinks as the width grows (μTransfer); under SP the argmin
    drifts like a power of ``n`` instead. When two basins are about as deep, that bias
    can put the finite-width minimum in one basin and the limit's in the other: compare
    ``basin_lo, basin_hi`` before comparing argmins.

    Parameters
    ----------
    model_or_factory : nn.Model or callable
        A model (each learning rate ``lr`` is ``nn.train(model, X, Y, steps,
        loss=loss, optimizer=nn.SGD(lr), param=param, allow_unstable=True)``), or
        ``factory(lr) -> run`` (an ``nn.train`` or ``nn.train_sgd`` run).
    X, Y : array_like
        The training data (for a model).
    lrs : sequence of float
        At least 3 positive learning rates, increasing (a geometric grid).
    widths : sequence of int or None
        ``None``: the infinite-width limit (NaN for a run without a limit).
    steps : int
        Steps (for a model).
    metric : str
        ``"loss"`` (the training loss after the last step) or a scalar the forward
        named (its mean over the inputs after the last step).
    seeds : int or sequence
        Seeds per finite width (≥ 2).
    param, loss : the parametrization and the loss (for a model).
    limit_kw : dict, optional
        Keywords of ``run.limit`` (e.g. ``{"executor": client}``: the limits' Monte
        Carlo on a cluster, docs/cluster.md).
    bootstrap : int
        Bootstrap resamples for ``log_lr_se``.
    seed : int
        The bootstrap's seed.

    Returns
    -------
    LRSweep

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog import nn
    >>> m = nn.Model("linear")
    >>> _ = m.param("W_in", ("n", 1)); _ = m.param("W_out", (1, "n"))
    >>> _ = m.forward(lambda p, xi: p.W_out @ (p.W_in @ xi))
    >>> lrs = 2.0 ** np.arange(-2.0, 0.01, 0.25)
    >>> sw = nn.lr_sweep(m, [[1.0]], [1.0], lrs, widths=[64, None], steps=1, seeds=2)
    >>> round(float(sw.best_lr.lr.iloc[-1]), 1)  # the limit: f_1 = 2·lr·y = y at lr = 1/2
    0.5
    """
    pd = _require("pandas")
    ws = _check_widths(widths, "lr_sweep", allow_none=True)
    ss = _check_seeds(seeds, "lr_sweep")
    try:
        grid = np.asarray(list(lrs), dtype=float)
    except (TypeError, ValueError):
        raise ProgramTypeError(
            f"lr_sweep: lrs must be a sequence of numbers, got {lrs!r}"
        ) from None
    if grid.ndim != 1 or len(grid) < 3 or not np.all(grid > 0) or not np.all(np.diff(grid) > 0):
        raise ProgramValueError(
            f"lr_sweep: lrs must be at least 3 increasing positive learning rates, got {lrs!r}"
        )
    if isinstance(model_or_factory, Model):
        model = model_or_factory

        def factory(lr: float) -> Any:
            return train(
                model,
                X,
                Y,
                steps,
                loss=loss,
                optimizer=SGD(float(lr)),
                param=param,
                allow_unstable=True,
            )
    elif callable(model_or_factory):
        factory = model_or_factory
    else:
        raise ProgramTypeError(
            f"lr_sweep: model_or_factory must be an nn.Model or a callable lr -> run, got "
            f"{type(model_or_factory).__name__}"
        )
    recs = []
    jobs = len(grid) * (sum(w is not None for w in ws) * len(ss) + (None in ws))
    bar = _progress(iter(()), jobs, "lr_sweep", progress) if progress else None
    for lr in grid:
        run = factory(float(lr))
        for w in ws:
            if w is None:
                if getattr(run, "problems", ()):
                    recs.append((None, lr, None, math.nan, math.nan))
                else:
                    L = run.limit(**(limit_kw or {}))
                    v = _metric(L, run, metric)
                    if metric == "loss" and hasattr(L, "loss_stderr"):
                        e = float(L.loss_stderr[-1])
                    elif metric == "loss":
                        e = 0.0  # train_sgd: the outputs' stderr enter below
                        f, fe = L.outputs[-1], L.stderr[-1]
                        e = float(np.sqrt(np.sum(((f - run.Y) * fe) ** 2)) / len(run.Y))
                    else:
                        e = float(np.sqrt(np.sum(L.named_stderr(metric)[-1] ** 2)))
                        e /= L.named_stderr(metric).shape[1]
                    recs.append((None, lr, None, v, e))
                if bar is not None:
                    bar.update(1)
                continue
            for s in ss:
                with np.errstate(over="ignore", invalid="ignore"):
                    v = _metric(run.simulate(w, seed=s), run, metric)
                recs.append((w, lr, s, v if np.isfinite(v) else math.inf, 0.0))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    data = pd.DataFrame.from_records(recs, columns=["width", "lr", "seed", "value", "stderr"])
    logs = np.log(grid)
    rng = np.random.default_rng(seed)
    best = []
    for w in ws:
        if w is None:
            g = data[data.width.isna()]
            y, e = g.value.to_numpy(float), g.stderr.to_numpy(float)
            if not np.any(np.isfinite(y)):
                best.append((None, *[math.nan] * 3, False, (), *[math.nan] * 3))
                continue
            draws = (y + e * rng.standard_normal(len(y)) for _ in range(bootstrap))
        else:
            g = data[data.width == w]
            V = g.pivot(index="seed", columns="lr", values="value").to_numpy(float)
            y = V.mean(axis=0)
            draws = (
                V[rng.integers(0, V.shape[0], V.shape[0])].mean(axis=0) for _ in range(bootstrap)
            )
        fit, se, p_in = vertex_bootstrap(logs, y, draws)
        lo, hi = fit.basin
        used = tuple(float(grid[i]) for i in fit.used)
        best.append(
            (w, math.exp(fit.log_lr), fit.log_lr, se, fit.at_edge, used, grid[lo], grid[hi], p_in)
        )
    best_lr = pd.DataFrame.from_records(
        best,
        columns=[
            "width",
            "lr",
            "log_lr",
            "log_lr_se",
            "at_edge",
            "points",
            "basin_lo",
            "basin_hi",
            "p_basin",
        ],
    )
    return LRSweep(data, best_lr, metric)
