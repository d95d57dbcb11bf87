"""The result of :func:`tensorprog.limit`: values, errors, methods and Z expressions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sympy

from ..core import hooks
from ..core._resources import deep_recursion, expression_depth, recursion_room
from ..core.errors import ProgramTypeError, ProgramValueError, TensorProgramError
from ..core.ir import InitScalar, MatMul, Moment, ScalarFn, Var
from .methods import Method
from .symbols import DotCoef, ZHat
from .tails import StableError

if TYPE_CHECKING:
    from .derivation import Derivation
    from .plan import Plan

__all__ = ["Limit", "ScalarTable", "Expectation", "HatCovariance", "ZDotTerm"]


@dataclass(frozen=True)
class HatCovariance:
    """``Cov(Ẑ^{Wx}, Ẑ^{Wy}) = σ_W² 𝔼[Z^x Z^y]`` of a MatMul's hat ``Ẑ^{Wx}`` and a hat
    of the same family [TP4 ZHat] (:meth:`Limit.hat_covariances`).

    Attributes
    ----------
    hat : ZHat
        ``Ẑ^{Wy}`` (the MatMul's own hat for its variance).
    y : Var
        The argument of that hat.
    value : float or None
        ``σ_W² 𝔼[Z^x Z^y]``; None when it was estimated by Monte Carlo or not needed.
    method : str or None
        ``"exact"``, ``"quadrature"`` or ``"montecarlo"``; None when no limit needed it.
    """

    hat: ZHat
    y: Var
    value: float | None
    method: str | None


@dataclass(frozen=True)
class ZDotTerm:
    """One candidate term ``σ_W² 𝔼[∂Z^x/∂Ẑ^{Wᵀy}] Z^y`` of ``Ż^{Wx}`` [TP4 Eq. (31)]
    (:meth:`Limit.zdot_terms`).

    Attributes
    ----------
    coefficient : DotCoef
        The symbol ``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]``.
    hat : ZHat
        ``Ẑ^{Wᵀy}``, the hat differentiated against.
    y : Var
        The vector multiplying the term.
    vanishes : bool
        The coefficient is identically 0 (the term is not in ``Ż``).
    value, stderr : float
        The full coefficient ``σ_W² 𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` and its Monte Carlo standard
        error (0 when not sampled, and both 0 when it vanishes).
    method : str
        How the value was obtained (``"exact"`` when it vanishes).
    """

    coefficient: DotCoef
    hat: ZHat
    y: Var
    vanishes: bool
    value: float
    stderr: float
    method: str


class Expectation(sympy.Function):
    """``𝔼[·]`` over the base Gaussians (unevaluated; used for display)."""

    def _sympystr(self, printer: Any) -> str:
        with deep_recursion(self):  # (a deep chain: one frame per level)
            return f"𝔼[{printer._print(self.args[0])}]"

    def _latex(self, printer: Any) -> str:
        with deep_recursion(self):
            return rf"\mathbb{{E}}\left[{printer._print(self.args[0])}\right]"


class ScalarTable:
    """Values, errors and methods of a program's scalars, looked up by name or handle.

    Shared by :class:`Limit` and the saved limits of :func:`tensorprog.load`.
    """

    def __init__(
        self,
        program: Any,
        values: dict[str, float],
        stderrs: dict[str, float],
        errors: dict[str, float],
        methods: dict[str, str],
        meta: dict[str, Any],
        flags: dict[str, str] | None = None,
        khat: dict[str, float] | None = None,
        stable: dict[str, StableError] | None = None,
    ) -> None:
        self.program = program
        self._size = len(program.instructions)  # a grown program's new handles are not here
        self._values = values
        self._stderr = stderrs
        self._error = errors
        self._method = methods
        self._flags = dict(flags or {})  # name -> why the value is not trusted
        self._khat = dict(khat or {})  # name -> Pareto k̂ of a sampled Moment
        self._stable = dict(stable or {})  # name -> error law of a heavy-tailed Moment
        self.meta = meta
        self.method_requested = meta.get("method")
        self.samples = meta.get("samples")
        self.seed = meta.get("seed")

    def _var(self, key: Any, kind: str = "scalar") -> Var:
        """The variable of ``key`` (handle or name, :meth:`Program.var`), checked to be
        of ``kind`` and computed here; errors name the key and what would be valid."""
        v = self.program.var(key, "limit", before=self._size)
        if v.kind != kind:
            hint = " (use lim.Z(v) for a vector's limit law)" if v.kind == "vector" else ""
            raise ProgramTypeError(f"{v.name} is a {v.kind}, not a {kind}{hint}")
        return v

    def _name(self, key: Any) -> str:
        """The scalar's name; errors name the key and what would be valid."""
        return self._var(key).name

    def __getitem__(self, key: Any) -> float:
        return self._values[self._name(key)]

    def __contains__(self, key: Any) -> bool:
        try:
            self._name(key)
            return True
        except TensorProgramError:
            return False

    def stderr(self, key: Any) -> float:
        """Monte Carlo standard error of ``lim[key]`` (0.0 for exact and quadrature values;
        NaN for an exact or quadrature value that is not :meth:`trusted`: never a 0 that
        would vouch for it)."""
        k = self._name(key)
        if k in self._flags and self._method[k] != Method.MONTECARLO:
            return math.nan
        return self._stderr[k]

    def error(self, key: Any) -> float:
        """Estimated absolute error: 0 (exact), rule-comparison estimate (quadrature), s.e.
        (MC); ``inf`` for a value that is not :meth:`trusted` (its error is unknown)."""
        k = self._name(key)
        if k in self._flags:
            return math.inf
        return max(self._error[k], self._stderr[k])

    def method(self, key: Any) -> str:
        """How ``lim[key]`` was obtained: ``"exact"``, ``"quadrature"`` or ``"montecarlo"``."""
        return self._method[self._name(key)]

    def interval(self, key: Any, level: float = 0.95) -> tuple[float, float]:
        """An interval that holds the limit of ``key`` with probability ``level``.

        * exact: ``(v, v)``; quadrature: ``v ± error`` (the rule-comparison estimate);
        * Monte Carlo: ``v ± t·stderr``, ``t`` the ``(1 + level)/2`` quantile of Student's
          t with ``batches − 1`` degrees of freedom (the replicates are independent and,
          with a finite variance, close to normal);
        * a Monte Carlo Moment flagged for a heavy tail (``1/2 ≤ k̂ < 1``: a mean but no
          variance): the robust interval of the generalized central limit theorem,
          skewed like the error (:class:`~tensorprog.engine.tails.StableError`) — or
          ``(−inf, inf)`` when the tail is too heavy for any interval to be trusted;
        * any other value that is not :meth:`trusted`: ``(−inf, inf)``.

        The calibration of these intervals over seeds is measured in
        ``benchmarks/calibration.py``.
        """
        k = self._name(key)
        if not (isinstance(level, (int, float)) and 0 < level < 1):
            raise ProgramValueError(f"interval: level must be a number in (0, 1), got {level!r}")
        v = self._values[k]
        if k in self._stable:
            return self._stable[k].interval(v, float(level))
        if k in self._flags:
            return -math.inf, math.inf
        if self._method[k] == "montecarlo":
            from scipy.stats import t

            se = self._stderr[k]
            half = se * float(t.ppf((1 + level) / 2, (self.meta.get("batches") or 16) - 1))
        else:
            half = self._error[k]
        return v - half, v + half

    # -- reliability -------------------------------------------------------------------
    def trusted(self, key: Any) -> bool:
        """Whether ``lim[key]`` is right within its stated error as far as tensorprog can
        tell: False when its expectation (or one it depends on) is not proven to exist,
        or was sampled with a heavy-tailed integrand (Pareto ``k̂ ≥ 1/2``: an infinite
        variance, see :meth:`khat`). :attr:`warnings` says why."""
        return self._name(key) not in self._flags

    @property
    def warnings(self) -> dict[str, str]:
        """Why each untrusted value is not trusted, by name (empty when all are)."""
        return dict(self._flags)

    def khat(self, key: Any) -> float | None:
        """Pareto ``k̂`` of the Monte Carlo samples of a Moment's integrand (fitted to the
        largest of them, of at most 2¹⁴ draws; Vehtari et al., "Pareto smoothed importance
        sampling", 2024), or None when the Moment was not sampled or needs no fit: an
        integrand proven polynomially bounded (degree ≤ 4: the relu and tanh networks'
        inner products, :mod:`~tensorprog.engine.growth`) has every moment finite and
        a light tail. Below 1/2 the variance looks finite; from 1/2 the value is not
        trusted; from 1 the mean looks infinite (refused unless its existence is
        proven)."""
        return self._khat.get(self._name(key))

    @property
    def values(self) -> dict[str, float]:
        """All scalar limits by name, in program order."""
        return dict(self._values)

    @property
    def stderrs(self) -> dict[str, float]:
        """All standard errors by name (as :meth:`stderr`)."""
        return {k: self.stderr(k) for k in self._stderr}

    @property
    def errors(self) -> dict[str, float]:
        """All error estimates by name."""
        return {k: self.error(k) for k in self._values}

    @property
    def methods(self) -> dict[str, str]:
        """All methods by name."""
        return dict(self._method)

    def table(self) -> list[tuple[str, float, float, str]]:
        """Rows ``(name, value, error, method)`` of every scalar, in program order."""
        return [(k, v, self.error(k), self._method[k]) for k, v in self._values.items()]

    def _title(self) -> str:
        return f"Limit of {self.program.name!r} (method={self.method_requested!r})"

    def _robust(self, name: str) -> str:
        """`` (95 % robust interval [a, b])`` for a heavy-tailed Moment, else ``""``."""
        if name not in self._stable:
            return ""
        lo, hi = self.interval(name)
        if not math.isfinite(lo):
            return " (no interval can be trusted at this sample size)"
        return f" (95 % robust interval [{lo:.6g}, {hi:.6g}], Limit.interval)"

    def __repr__(self) -> str:
        lines = [self._title()]
        for name, val, err, m in self.table():
            e = f" ± {err:.2g}" if err else ""
            flag = ", not trusted" + self._robust(name) if name in self._flags else ""
            lines.append(f"  {name} = {val:.10g}{e}  [{m}{flag}]")
        return "\n".join(lines)

    # -- tables --------------------------------------------------------------------
    _khat: dict[str, float] = {}  # (a Limit's Pareto k̂ of sampled Moments)

    def _cells(self, key: Any) -> tuple[Any, ...]:
        """One scalar's cells under :data:`tensorprog.core.tables.LIMIT_COLUMNS`: value,
        stderr, error, method, trusted, k̂ (NaN when not sampled), warning ("" if none)."""
        k = self._name(key)
        khat = self._khat.get(k)
        return (
            self._values[k],
            self.stderr(k),
            self.error(k),
            self._method[k],
            k not in self._flags,
            math.nan if khat is None else khat,
            self._flags.get(k, ""),
        )

    def tabulate(self) -> Any:
        """Every scalar as a :class:`tensorprog.core.tables.Table` row, in program order:
        name, value, stderr, error, method, trusted, khat, warning."""
        from ..core.tables import LIMIT_COLUMNS, Column, Table, code

        return Table(
            self._title(),
            (Column("name", "name", code),) + LIMIT_COLUMNS,
            tuple((k,) + self._cells(k) for k in self._values),
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per scalar (as :meth:`tabulate`): columns
        ``name, value, stderr, error, method, trusted, khat, warning``.

        Needs pandas (``pip install 'tensorprog[notebook]'``); without it an
        :class:`~tensorprog.core.errors.OptionalDependencyError` says so.
        """
        return self.tabulate().to_pandas()


class Limit(ScalarTable):
    """The infinite-width limit of a program.

    Index by scalar handle or name: ``lim[k]`` is the limit ``θ̊`` of ``k``.

    Attributes
    ----------
    program : Program
    method_requested : str
        The ``method`` passed to :func:`tensorprog.limit`.
    samples, seed : int
        Monte Carlo settings (used only if some value needed Monte Carlo).
    """

    def __init__(
        self,
        program: Any,
        der: Derivation,
        plan: Plan,
        values: dict[str, float],
        stderrs: dict[str, float],
        errors: dict[str, float],
        methods: dict[str, str],
        coefficients: dict[int, tuple[float, float, str]],
        meta: dict[str, Any],
        flags: dict[str, str] | None = None,
        khat: dict[str, float] | None = None,
        stable: dict[str, StableError] | None = None,
    ) -> None:
        super().__init__(program, values, stderrs, errors, methods, meta, flags, khat, stable)
        self.derivation = der
        self.plan = plan
        self._coef = coefficients

    def _warn(self) -> None:
        if self._flags:
            import warnings

            from ..core.errors import UnreliableValueWarning

            lines = "; ".join(f"{k}: {why}{self._robust(k)}" for k, why in self._flags.items())
            warnings.warn(
                f"{len(self._flags)} limit value(s) of {self.program.name!r} are not "
                f"trusted — {lines}",
                UnreliableValueWarning,
                stacklevel=4,
            )

    # -- symbolic views ------------------------------------------------------------------
    def Z(self, key: Any, *, expand_dot: bool = False, numeric: bool = False) -> sympy.Expr:
        """``Z`` of a vector over base Gaussians (``Z^{x}``, ``Ẑ^{Wx}``) and limit scalars.

        Each MatMul contributes ``Ẑ^{Wx} + Ż^{Wx}``; with ``expand_dot=True`` each ``Ż`` is
        replaced by its ZDot sum, with ``numeric=True`` limit scalars and coefficients by
        their values.
        """
        v = self._var(key, "vector")
        e = self.derivation.Z(v, expand_dot=expand_dot)
        return self._numeric(e) if numeric else e

    def Zhat(self, key: Any) -> sympy.Expr:
        """``Ẑ`` of a MatMul output."""
        v = self._var(key, "vector")
        if not isinstance(self.program.definition(v), MatMul):
            raise ProgramValueError(f"{v.name} is not a MatMul output; only MatMuls have Ẑ")
        return self.derivation.hat_of[v].symbol

    def hat_covariances(self, key: Any) -> list[HatCovariance]:
        """``Cov(Ẑ^{Wx}, Ẑ^{Wy})`` of the hat of MatMul ``key = Wx`` with itself (its
        variance, first) and with each earlier hat of its family that a limit needed,
        in order of creation."""
        v = self._matmul(key)
        der, plan = self.derivation, self.plan
        base = der.hat_of[v]
        s2 = der.sigma2_of(base.family)
        out = []
        for other in [base, *(b for b in der.families[base.family] if b.bid < base.bid)]:
            rid = plan.cov_req.get((other.bid, base.bid))
            if other is not base and rid is None:
                continue  # needed by no limit
            value = method = None
            if rid is not None:
                if plan.deterministic[rid]:
                    value = s2 * float(plan.values[rid])
                    method = plan.methods[rid].reported.value
                else:
                    method = Method.MONTECARLO.value
            out.append(HatCovariance(other.symbol, der.hat_arg[other.bid], value, method))
        return out

    def zdot_terms(self, key: Any) -> list[ZDotTerm]:
        """Every candidate term of ``Ż`` of MatMul ``key = Wx`` [TP4 Eq. (31)]: one per
        hat of the transposed family that ``Z^x`` depends on, in order of creation, with
        its value (terms that vanish identically included, marked)."""
        v = self._matmul(key)
        der = self.derivation
        instr = self.program.definition(v)
        kept = {c.base.bid: c for c, _ in der.nodes[v].dot}
        out = []
        for b in der.dot_candidates(instr):
            y = der.hat_arg[b.bid]
            c = kept.get(b.bid)
            if c is None:
                out.append(
                    ZDotTerm(
                        DotCoef(instr.arg.name, b.symbol),
                        b.symbol,
                        y,
                        True,
                        0.0,
                        0.0,
                        Method.EXACT.value,
                    )
                )
                continue
            val, se, method = self._coef[c.cid]
            out.append(ZDotTerm(c.symbol, b.symbol, y, False, c.full(val), c.full(se), method))
        return out

    def _matmul(self, key: Any) -> Var:
        v = self._var(key, "vector")
        if not isinstance(self.program.definition(v), MatMul):
            raise ProgramValueError(f"{v.name} is not a MatMul output; only MatMuls have Ẑ and Ż")
        return v

    def Zdot(self, key: Any, *, numeric: bool = False) -> sympy.Expr:
        """``Ż^{Wx} = σ_W² Σ_i 𝔼[∂Z^x/∂Ẑ^{Wᵀy^i}] Z^{y^i}`` (0 when every term vanishes)."""
        v = self._var(key, "vector")
        e = self.derivation.Zdot(v)
        return self._numeric(e) if numeric else e

    def expr(self, key: Any) -> sympy.Expr:
        """The limit of a scalar as a sympy expression (``𝔼[…]`` for Moments)."""
        v = self._var(key)
        instr = self.program.definition(v)
        der = self.derivation
        if isinstance(instr, InitScalar):
            val = instr.value
            return (
                sympy.limit(val, sympy.Symbol("n", positive=True), sympy.oo)
                if val.free_symbols
                else val
            )
        consts = [der.scalar_const[p].symbol for p in instr.params]
        if isinstance(instr, ScalarFn):
            return instr.fn.apply(*consts)
        assert isinstance(instr, Moment)
        zs = [der.Z(a) for a in instr.args]
        with recursion_room(8 + max(expression_depth(z) for z in zs)):  # sympy recurses
            return Expectation(instr.fn.apply(*zs, *consts))

    def coefficient(self, h: Any, y: Any) -> float:
        """``𝔼[∂Z^x/∂Ẑ^{Wᵀy}]`` of the ZDot term of MatMul ``h = Wx`` along ``Wᵀy``."""
        hv, yv = self._var(h, "vector"), self._var(y, "vector")
        for c, yy in self.derivation.nodes[hv].dot:
            if c.base.var is yv or yy is yv:
                return self._coef[c.cid][0]
        return 0.0

    def _numeric(self, e: sympy.Expr) -> sympy.Expr:
        subs = {}
        der = self.derivation
        for v, c in der.scalar_const.items():
            if v.name in self._values:
                subs[c.symbol] = sympy.Float(self._values[v.name])
        for cid, (val, _se, _m) in self._coef.items():
            subs[der.consts[cid].symbol] = sympy.Float(val)
        return e.xreplace(subs)

    # -- display (implemented by the printers and io, reached through tensorprog.core.hooks) --
    def latex(self, document: bool = False) -> str:
        """The Master Theorem derivation as LaTeX (``document=True``: standalone)."""
        if len(self.program.instructions) > self._size:
            self.program.var(self.program.instructions[-1].out.name, "limit", before=self._size)
        return hooks.latex(self, document=document)

    def _repr_latex_(self) -> str | None:
        if len(self.program.instructions) > self._size:  # grown since: no derivation
            return None
        return hooks.repr_latex(self)

    def _repr_html_(self) -> str:
        return hooks.html(self)

    def save(self, path: Any) -> None:
        """Write values, errors, methods, settings and the program to ``path`` (JSON).

        ``tp.load(path)`` returns a :class:`tensorprog.io.LoadedLimit`.
        """
        hooks.save(self, path)
