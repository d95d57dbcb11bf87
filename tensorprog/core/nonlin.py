"""Coordinatewise nonlinearities, each defined once by a sympy expression.

A :class:`Nonlinearity` is a function ``φ(x¹, …, xᵏ; θ¹, …, θˡ)`` of ``k`` vector
arguments (applied coordinate by coordinate) and ``l`` scalar parameters — the
``Nonlin+`` / ``Moment`` functions of NETSOR⊤+ [TP4 §7 Def 7.1]. Its only source of
truth is a sympy expression (its *body*); everything else is derived from it:

* the numpy form (``lambdify``), used by the finite-width simulator, quadrature and
  Monte Carlo;
* derivatives ``∂φ/∂xⁱ`` (again Nonlinearities, so ``relu' `` *is* ``step``), used by
  the Master Theorem's ``Ż`` rule [TP4 Eq. (31)];
* the sympy function symbol that appears in ``Z`` expressions (``relu(Ẑ^{Wx})``) and
  its LaTeX;
* its smoothness (:attr:`~Nonlinearity.is_analytic`; the kinks, jumps and
  transitions of an expression, :func:`local_features`), which decides the quadrature rule.

Closed-form Gaussian expectations are registered under the Nonlinearity *objects*
(``@pair_closed_form(relu, relu)`` on the formula, :mod:`tensorprog.gaussian.closed_forms`).

*Transparent* nonlinearities (arithmetic produced by ``+ - * / **`` in the DSL) are
substituted into ``Z`` expressions; *opaque* ones (``relu``, ``tanh``, user
functions) appear as a function application, which keeps derivations readable and
lets exact evaluation recognise them.
"""

from __future__ import annotations

import functools
import itertools
import keyword
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sympy
from sympy.core.function import AppliedUndef

from ._resources import deep_recursion
from .errors import ProgramTypeError, ProgramValueError, UnknownNameError
from .texnames import call_latex

__all__ = [
    "Nonlinearity",
    "nonlinearity",
    "get_nonlinearity",
    "BUILTINS",
    "relu",
    "step",
    "tanh",
    "erf",
    "sigmoid",
    "gelu",
    "sin",
    "cos",
    "abs",
    "sign",
    "identity",
    "sqrt",
    "exp",
    "Family",
    "FAMILIES",
    "BOUNDED",
    "inline",
    "ab_relu",
    "leaky_relu",
    "rbf",
    "gaussian_bump",
    "rectified_monomial",
    "monomial",
    "polynomial",
]

_counter = itertools.count()


def _arg_symbols(k: int, prefix: str = "x") -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"{prefix}{i}", real=True) for i in range(k))


def sympify_strict(value: Any, what: str) -> Any:
    """``sympy.sympify(value, strict=True)``: numbers and sympy objects, never a string.

    ``sympify`` of a string (or of an object converted through its ``str``) parses and
    evaluates it as Python code; tensorprog refuses strings instead of parsing them, so
    that no public API runs code from text.
    """
    if isinstance(value, (str, bytes)):
        raise ProgramTypeError(
            f"{what}: got the string {value!r:.60}; tensorprog never evaluates a string as "
            f"code — give a number or a sympy expression (e.g. sympy.Rational(1, 3), "
            f"sympy.tanh(x), tp.n**-0.5)"
        )
    return sympy.sympify(value, strict=True)


def codegen_functions(expr: sympy.Basic) -> dict[str, Callable[..., Any]]:
    """``{code name: numpy form}`` of the nonlinearities applied in ``expr``, for lambdify.

    The guard in front of every numpy code generation: ``lambdify`` prints function
    names into Python source, so each must be a tp.Nonlinearity (whose
    :attr:`~Nonlinearity.code_name` is a checked identifier) or a sympy function;
    an undefined ``sympy.Function('…')`` or a foreign Function class is refused.
    """
    fns: dict[str, Callable[..., Any]] = {}
    for f in expr.atoms(sympy.Function):
        cls = type(f)
        nl = getattr(cls, "nonlinearity", None)
        if nl is not None:
            if not nl.code_name.isidentifier() or keyword.iskeyword(nl.code_name):
                raise ProgramValueError(
                    f"nonlinearity {nl.name!r}: code name {nl.code_name!r} "
                    f"is not a Python identifier"
                )  # pragma: no cover
            fns[nl.code_name] = nl.numpy
        elif isinstance(f, AppliedUndef) or not str(cls.__module__).startswith("sympy."):
            raise ProgramValueError(
                f"cannot evaluate the function {cls.__name__!r:.60} numerically: it is neither a "
                f"sympy function nor a tp.Nonlinearity; define it as a tp.Nonlinearity"
            )
    return fns


def _heaviside(x: Any, h0: Any = 0.5) -> Any:
    # = np.heaviside(x, 0.5) (NaN stays NaN), about 5× faster
    return 0.5 + 0.5 * np.sign(x)


def _dirac_delta(*_args: Any) -> Any:
    raise ProgramValueError(
        "a derivative of a discontinuous nonlinearity (a Dirac delta) cannot be "
        "evaluated pointwise; use the Stein (regression) form of the expectation"
    )


def _erf(x: Any) -> Any:
    from scipy.special import erf  # imported on first use: scipy is slow to import

    return erf(x)


def _erfc(x: Any) -> Any:
    from scipy.special import erfc

    return erfc(x)


_NUMPY_MODULES: list[Any] = [
    {
        "Heaviside": _heaviside,
        "DiracDelta": _dirac_delta,
        "erf": _erf,
        "erfc": _erfc,
    },
    # the module object, not "numpy": sympy's string form probes every numpy name,
    # which imports numpy.f2py and numpy.testing (~0.1 s on the first lambdify)
    np,
]


@functools.lru_cache(maxsize=8192)
def _lambdify_body(body: sympy.Expr, nargs: int, nparams: int) -> Callable[..., Any]:
    """numpy form of a canonical body in ``x0…``/``p0…`` (shared by equal bodies); other
    nonlinearities applied inside it (e.g. the backward ``g·φ'(h)`` of a training run)
    by their own numpy forms (:func:`codegen_functions`)."""
    syms = _arg_symbols(nargs, "x") + _arg_symbols(nparams, "p")
    return sympy.lambdify(syms, body, modules=[codegen_functions(body), *_NUMPY_MODULES])


#: sympy functions analytic in a strip around the real axis (entire, or with their
#: singularities off it: tanh's poles at ±iπ/2), where quadrature on a uniform grid
#: converges geometrically.
ANALYTIC_FUNCTIONS: tuple[type, ...] = (
    sympy.exp,
    sympy.log,
    sympy.sin,
    sympy.cos,
    sympy.tanh,
    sympy.sinh,
    sympy.cosh,
    sympy.atan,
    sympy.erf,
    sympy.erfc,
)
#: sympy functions with a kink or jump where their (first) argument is 0.
KINKED_FUNCTIONS: tuple[type, ...] = (sympy.Heaviside, sympy.Abs, sympy.sign, sympy.DiracDelta)


@functools.lru_cache(maxsize=4096)
def is_analytic(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is built of sums, products, integer powers, the functions of
    :data:`ANALYTIC_FUNCTIONS` and nonlinearities whose bodies are — no kinks (relu,
    abs), jumps (step, sign), branch points (sqrt) or piecewise definitions.

    Examples
    --------
    >>> x = sympy.Symbol("x", real=True)
    >>> is_analytic(sympy.tanh(x) ** 2 * gelu.apply(x)), is_analytic(relu.apply(x) + x)
    (True, False)
    """
    if expr.is_Atom:
        return True
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        return all(is_analytic(a) for a in expr.args)
    if isinstance(expr, sympy.Pow):
        if not (expr.base.free_symbols or expr.exp.free_symbols):
            return True  # a constant such as √2 (gelu's x/√2)
        return bool(expr.exp.is_Integer) and is_analytic(expr.base)
    if isinstance(expr, ANALYTIC_FUNCTIONS):
        return all(is_analytic(a) for a in expr.args)
    nl = getattr(expr.func, "nonlinearity", None)
    if nl is not None:
        return nl.is_analytic and all(is_analytic(a) for a in expr.args)
    return False


def local_features(e: sympy.Expr) -> tuple[tuple[sympy.Expr, bool], ...]:
    """Where the head of ``e`` (not its arguments) is not smooth, or changes fast:
    ``(a, kink)`` pairs whose level set ``a = 0`` is a kink or jump (``kink=True``: the
    arguments of relu, step, abs, sign, sqrt, a ``Piecewise`` condition, ``Max``/``Min``)
    or the centre of a smooth transition (``kink=False``: tanh, erf, … of ``a``).

    A nonlinearity's application has none of its own: its body carries them
    (:meth:`Nonlinearity.inline`).

    Examples
    --------
    >>> x, y = sympy.symbols("x y", real=True)
    >>> local_features(sympy.Max(x, y)), local_features(sympy.tanh(x + 1)), local_features(x * y)
    (((x - y, True),), ((x + 1, False),), ())
    """
    if getattr(e.func, "nonlinearity", None) is not None:
        return ()
    if isinstance(e, (sympy.Max, sympy.Min)) and len(e.args) == 2:
        return ((e.args[0] - e.args[1], True),)
    if isinstance(e, sympy.Piecewise):
        return tuple(
            (rel.lhs - rel.rhs, True)
            for _, cond in e.args
            for rel in cond.atoms(sympy.core.relational.Relational)
        )
    if isinstance(e, sympy.Pow) and not e.exp.is_Integer:
        return ((e.base, True),)
    if isinstance(e, KINKED_FUNCTIONS):
        return ((e.args[0], True),)
    if isinstance(e, sympy.Function) and e.args:
        return ((e.args[0], not isinstance(e, ANALYTIC_FUNCTIONS)),)
    return ()


class Nonlinearity:
    """A coordinatewise function ``φ(x¹, …, xᵏ; θ¹, …, θˡ)`` defined by sympy.

    Parameters
    ----------
    name : str
        Name used when printing (``relu``) and as the sympy function name.
    body : sympy.Expr
        The definition, an expression in ``args`` and ``params``.
    args : sequence of sympy.Symbol
        The symbols standing for the vector (coordinate) arguments.
    params : sequence of sympy.Symbol, optional
        The symbols standing for scalar parameters (Nonlin+).
    opaque : bool, default True
        Whether ``Z`` expressions show ``name(…)`` (True) or the substituted body.
    latex : str, optional
        LaTeX name of the function, e.g. ``r"\\operatorname{relu}"``.

    Examples
    --------
    >>> import sympy, tensorprog as tp
    >>> x = sympy.Symbol("x", real=True)
    >>> softplus = tp.Nonlinearity("softplus", sympy.log(1 + sympy.exp(x)), [x])
    >>> softplus.derivative().body
    exp(x0)/(exp(x0) + 1)
    """

    def __init__(
        self,
        name: str,
        body: Any,
        args: Sequence[sympy.Symbol],
        params: Sequence[sympy.Symbol] = (),
        *,
        opaque: bool = True,
        latex: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ProgramTypeError(f"a nonlinearity needs a non-empty str name, got {name!r}")
        try:
            body = sympify_strict(body, f"nonlinearity {name!r}: its body")
        except ProgramTypeError:
            raise
        except (sympy.SympifyError, TypeError, SyntaxError) as exc:
            raise ProgramTypeError(
                f"nonlinearity {name!r}: its body must be a sympy expression, got {body!r:.80} ({exc})"
            ) from None
        if not isinstance(body, sympy.Expr):
            raise ProgramTypeError(
                f"nonlinearity {name!r}: its body must be a sympy expression, "
                f"got {type(body).__name__}"
            )
        # Canonical real symbols x0.., p0.. so that bodies compare structurally.
        new_args = _arg_symbols(len(args), "x")
        new_params = _arg_symbols(len(params), "p")
        subs = dict(zip(tuple(args) + tuple(params), new_args + new_params))
        body = body.xreplace(subs)
        free = body.free_symbols - set(new_args) - set(new_params)
        if free:
            raise ProgramValueError(
                f"nonlinearity {name!r}: its body {body} has free symbols "
                f"{sorted(map(str, free))} that are neither arguments nor parameters"
            )
        if body.has(sympy.I):
            raise ProgramValueError(
                f"nonlinearity {name!r}: its body {body} is complex (contains I); a coordinatewise "
                f"function must be real-valued"
            )
        if body.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise ProgramValueError(
                f"nonlinearity {name!r}: its body {body} is infinite or undefined "
                f"(e.g. a division by zero); a coordinatewise function must be finite"
            )
        self.name = name
        self.body: sympy.Expr = body
        self.args: tuple[sympy.Symbol, ...] = new_args
        self.params: tuple[sympy.Symbol, ...] = new_params
        self.opaque = opaque
        self.latex_name = latex if latex is not None else rf"\operatorname{{{name}}}"
        self._uid = next(_counter)

    # -- identity ---------------------------------------------------------------
    @property
    def arity(self) -> int:
        """Number of vector arguments ``k``."""
        return len(self.args)

    @property
    def nparams(self) -> int:
        """Number of scalar parameters ``l``."""
        return len(self.params)

    @functools.cached_property
    def key(self) -> tuple:
        """Structural key: two nonlinearities with the same key are the same function."""
        return (self.arity, self.nparams, sympy.srepr(self.body))

    def __repr__(self) -> str:
        sig = ", ".join(map(str, self.args))
        if self.params:
            sig += "; " + ", ".join(map(str, self.params))
        return f"Nonlinearity({self.name}: ({sig}) ↦ {self.body})"

    # -- derived views ----------------------------------------------------------
    @functools.cached_property
    def numpy(self) -> Callable[..., Any]:
        """Vectorised numpy form ``f(*args, *params)`` (lambdified body)."""
        if self.body.has(sympy.DiracDelta):
            return _dirac_delta
        return _lambdify_body(self.body, len(self.args), len(self.params))

    @functools.cached_property
    def as_scalar_function(self) -> "Nonlinearity":
        """The same function with every input a scalar parameter (for ``ScalarFn``)."""
        return Nonlinearity(
            self.name,
            self.body,
            (),
            self.args + self.params,
            opaque=self.opaque,
            latex=self.latex_name,
        )

    @functools.cached_property
    def is_distribution(self) -> bool:
        """True when the body contains a Dirac delta (e.g. ``step'``)."""
        return bool(self.body.has(sympy.DiracDelta))

    @functools.cached_property
    def divisors(self) -> tuple[sympy.Expr, ...]:
        """Denominators of the body that depend on the parameters alone (``x/θ`` → ``θ``,
        ``x/√θ`` → ``θ``): where one vanishes, ``φ`` is undefined for every argument.
        (Inside a ``Piecewise`` a denominator may be guarded, so none is read there.)

        Examples
        --------
        >>> x, t = sympy.symbols("x t", real=True)
        >>> Nonlinearity("f", x / sympy.sqrt(t) + 1 / (x + t), [x], [t]).divisors
        (p0,)
        """
        args = set(self.args)
        out: list[sympy.Expr] = []
        stack = [self.body]
        while stack:
            e = stack.pop()
            if isinstance(e, sympy.Piecewise):
                continue
            if (
                isinstance(e, sympy.Pow)
                and e.exp.is_negative
                and not (e.base.free_symbols & args)
                and e.base.free_symbols
            ):
                if e.base not in out:
                    out.append(e.base)
                continue
            stack.extend(e.args)
        return tuple(out)

    @functools.cached_property
    def is_analytic(self) -> bool:
        """True when the body is analytic near the real axis (:func:`is_analytic`): no
        kinks, jumps, branch points or piecewise definitions.

        Examples
        --------
        >>> tanh.is_analytic, gelu.is_analytic, relu.is_analytic, sqrt.is_analytic
        (True, True, False, False)
        """
        return is_analytic(self.body)

    @functools.cached_property
    def is_polynomial(self) -> bool:
        """True when the body is a polynomial in the vector arguments."""
        return bool(self.body.is_polynomial(*self.args))

    def derivative(self, i: int = 0, ae: bool = False) -> "Nonlinearity":
        """``∂φ/∂xⁱ`` as a Nonlinearity (a builtin when it is one, e.g. relu' = step).

        Parameters
        ----------
        i : int, default 0
            Index among the arguments, then the parameters.
        ae : bool, default False
            ``False``: the distributional derivative — ``step' = δ``, ``sign' = 2δ``,
            what the Master Theorem's ``𝔼[∂Z/∂Ẑ]`` needs (by Stein's lemma, [TP4
            Remark F.2]). ``True``: the **almost-everywhere** derivative — every Dirac
            delta dropped (``step' = sign' = 0``), what backpropagation through a finite
            network computes, and what the backward passes of :func:`tensorprog.grad`
            and :func:`tensorprog.nn.kernels` use (as neural-tangents does).

        Examples
        --------
        >>> sign.derivative().body, sign.derivative(ae=True).body
        (2*DiracDelta(x0), 0)
        >>> relu.derivative(ae=True) is step
        True
        """
        if not 0 <= i < self.arity + self.nparams:
            raise ProgramValueError(
                f"{self.name} has {self.arity} arguments and {self.nparams} parameters; "
                f"no derivative index {i}"
            )
        D = _derivative(self, i)
        # one object where the two agree (closed forms are registered by object: erf')
        return _derivative(self, i, True) if ae and D.is_distribution else D

    @functools.cached_property
    def function(self) -> type[sympy.Function]:
        """The sympy function class that represents ``φ`` inside ``Z`` expressions."""
        owner = self

        def fdiff(self: sympy.Function, argindex: int = 1) -> sympy.Expr:
            return owner.derivative(argindex - 1).apply(*self.args)

        def _latex(self: sympy.Function, printer: Any, exp: Any = None) -> str:
            with deep_recursion(self):  # (a deep chain: one frame per level)
                inner = ", ".join(printer._print(a) for a in self.args)
            out = call_latex(owner, inner)  # (a file's name: escaped)
            return out if exp is None else rf"{{{out}}}^{{{exp}}}"  # (printing a power)

        def _sympystr(self: sympy.Function, printer: Any) -> str:
            with deep_recursion(self):
                return f"{owner.name}({', '.join(printer._print(a) for a in self.args)})"

        cls = type(
            self.code_name,
            (sympy.Function,),
            {
                "nargs": self.arity + self.nparams,
                "fdiff": fdiff,
                "_latex": _latex,
                "_sympystr": _sympystr,
                "nonlinearity": self,
                "_eval_is_real": lambda self: True,
            },
        )
        return cls

    @functools.cached_property
    def code_name(self) -> str:
        """A Python identifier naming this function in generated numpy code."""
        safe = "".join(c if c.isalnum() else "_" for c in self.name.replace("'", "_d"))
        return f"{safe}_{self._uid}" if safe.isidentifier() else f"fn_{self._uid}"

    def apply(self, *exprs: Any) -> sympy.Expr:
        """``φ`` applied to sympy expressions (arguments then parameters)."""
        if len(exprs) != self.arity + self.nparams:
            raise ProgramValueError(
                f"{self.name} takes {self.arity} vector argument(s) and {self.nparams} "
                f"parameter(s); got {len(exprs)} expressions"
            )
        if self.opaque:
            return self.function(*exprs)
        return self.inline(*exprs)

    def inline(self, *exprs: Any) -> sympy.Expr:
        """The body with the arguments then parameters replaced by ``exprs`` (what
        :meth:`apply` gives a transparent nonlinearity, for any)."""
        return self.body.xreplace(dict(zip(self.args + self.params, exprs)))

    def __call__(self, *inputs: Any, name: str | None = None) -> Any:
        """Apply to DSL handles: vectors (then scalars) record a Nonlin instruction.

        The handles' program records it (``Handle._apply_nonlinearity``, i.e.
        :func:`tensorprog.dsl.program.apply_nonlinearity`): the DSL sits above this module.
        """
        for x in inputs:
            record = getattr(type(x), "_apply_nonlinearity", None)
            if record is not None:
                return record(self, inputs, name=name)
        raise ProgramTypeError(f"{self.name}(…) needs at least one vector or scalar of a program")


_DERIVATIVES: dict[tuple[int, int, bool], Nonlinearity] = {}


def _derivative(f: Nonlinearity, i: int, ae: bool = False) -> Nonlinearity:
    cache_key = (f._uid, i, ae)
    if cache_key in _DERIVATIVES:
        return _DERIVATIVES[cache_key]
    syms = f.args + f.params
    body = sympy.diff(f.body, syms[i])
    if ae:  # the almost-everywhere derivative: Dirac deltas (and their derivatives) are 0
        body = body.replace(sympy.DiracDelta, lambda *_: sympy.S.Zero)
    candidate = Nonlinearity(
        f"{f.name}'" if f.arity + f.nparams == 1 else f"∂{i}{f.name}",
        body,
        f.args,
        f.params,
        opaque=f.opaque,
        latex=(
            f"{f.latex_name}'" if f.arity + f.nparams == 1 else rf"\partial_{{{i}}}{f.latex_name}"
        ),
    )
    result = _BY_KEY.get(candidate.key, candidate) if f.opaque else candidate
    _DERIVATIVES[cache_key] = result
    return result


#: Builtins by structural key, so a derived function is recognised (relu' is step).
_BY_KEY: dict[tuple, Nonlinearity] = {}
#: Builtins by name (``tp.nn`` accepts names).
BUILTINS: dict[str, Nonlinearity] = {}


def _builtin(
    name: str, body_fn: Callable[[sympy.Symbol], Any], latex: str | None = None, opaque: bool = True
) -> Nonlinearity:
    x = sympy.Symbol("x", real=True)
    f = Nonlinearity(name, body_fn(x), [x], opaque=opaque, latex=latex)
    _BY_KEY.setdefault(f.key, f)
    BUILTINS[name] = f
    return f


relu = _builtin("relu", lambda x: sympy.Max(x, 0))
relu.__doc__ = "relu(x) = max(x, 0); its derivative is :data:`step`."
step = _builtin("step", lambda x: sympy.Heaviside(x), latex=r"\operatorname{step}")
tanh = _builtin("tanh", sympy.tanh, latex=r"\tanh")
erf = _builtin("erf", sympy.erf, latex=r"\operatorname{erf}")
sigmoid = _builtin("sigmoid", lambda x: 1 / (1 + sympy.exp(-x)), latex=r"\sigma")
gelu = _builtin(
    "gelu",
    lambda x: x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2,
    latex=r"\operatorname{gelu}",
)
sin = _builtin("sin", sympy.sin, latex=r"\sin")
cos = _builtin("cos", sympy.cos, latex=r"\cos")
abs = _builtin("abs", sympy.Abs, latex=r"\operatorname{abs}")  # noqa: A001
sign = _builtin("sign", sympy.sign, latex=r"\operatorname{sign}")
identity = _builtin("identity", lambda x: x, opaque=False)
sqrt = _builtin("sqrt", sympy.sqrt, latex=r"\sqrt")
exp = _builtin("exp", sympy.exp, latex=r"\exp")

_DOCS = {
    "step": "Heaviside step, step(x) = 1[x > 0] (step(0) = 1/2); the derivative of relu.",
    "tanh": "Hyperbolic tangent; tanh' = 1 - tanh².",
    "erf": "Error function erf(x) = 2/√π ∫₀ˣ e^{-t²} dt; erf' = 2/√π e^{-x²}.",
    "sigmoid": "Logistic sigmoid σ(x) = 1/(1 + e^{-x}).",
    "gelu": (
        "GELU, the *exact* erf-based form gelu(x) = x Φ(x) = x (1 + erf(x/√2))/2 "
        "(not the tanh approximation)."
    ),
    "sin": "Sine.",
    "cos": "Cosine.",
    "abs": "Absolute value |x|; its derivative is sign.",
    "sign": "Sign function (sign(0) = 0).",
    "identity": "The identity, x ↦ x.",
    "sqrt": "Square root (defined for x ≥ 0).",
    "exp": "Exponential.",
}


def get_nonlinearity(spec: Any) -> Nonlinearity:
    """Resolve a nonlinearity given by name (``"relu"``) or as a Nonlinearity.

    Examples
    --------
    >>> get_nonlinearity("relu") is relu
    True
    """
    if isinstance(spec, Nonlinearity):
        return spec
    if isinstance(spec, str):
        try:
            return BUILTINS[spec]
        except KeyError:
            raise UnknownNameError(
                f"unknown nonlinearity {spec!r}; valid names: {', '.join(sorted(BUILTINS))}"
            ) from None
    raise ProgramTypeError(
        f"expected a nonlinearity name or a tp.Nonlinearity, got {type(spec).__name__}"
    )


def nonlinearity(
    fn: Callable[..., Any],
    arity: int,
    nparams: int = 0,
    *,
    name: str | None = None,
    latex: str | None = None,
) -> Nonlinearity:
    """Build a Nonlinearity by tracing a Python function with sympy symbols.

    Parameters
    ----------
    fn : callable
        ``fn(x1, …, xk, θ1, …, θl)`` written with sympy functions.
    arity, nparams : int
        Number of vector arguments and scalar parameters.
    name : str, optional
        Printed name; defaults to ``fn.__name__`` (``phi`` for lambdas).

    Examples
    --------
    >>> import sympy
    >>> f = nonlinearity(lambda a, b: a * sympy.tanh(b), 2, name="phi")
    >>> f.derivative(1).body
    x0*(1 - tanh(x1)**2)
    """
    if not callable(fn):
        raise ProgramTypeError(f"tp.nonlin needs a callable, got {type(fn).__name__}")
    if name is None:
        name = getattr(fn, "__name__", "phi")
        if name == "<lambda>":
            name = "phi"
    args = _arg_symbols(arity, "x")
    params = _arg_symbols(nparams, "p")
    try:
        body = sympify_strict(fn(*args, *params), f"nonlinearity {name!r}")
    except ProgramTypeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "not traceable"
        raise ProgramTypeError(
            f"nonlinearity {name!r} is not traceable by sympy: calling it on sympy symbols "
            f"raised {type(exc).__name__}: {exc}. Write it with sympy functions "
            f"(sympy.tanh, sympy.exp, …), not numpy."
        ) from exc
    if not isinstance(body, sympy.Expr):
        raise ProgramTypeError(
            f"nonlinearity {name!r} must return a sympy expression, got {body!r}"
        )
    return Nonlinearity(name, body, args, params, latex=latex)


for _name, _doc in _DOCS.items():
    BUILTINS[_name].__doc__ = _doc
del _name, _doc


# --------------------------------------------------------------------------------------
# Parametrised builtins: one Nonlinearity object per parameter value
# --------------------------------------------------------------------------------------


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ProgramTypeError(f"{what} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v):
        raise ProgramValueError(f"{what} must be finite, got {v!r}")
    return v


def _degree(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ProgramValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def _num(v: float) -> sympy.Expr:
    """A parameter in a body: an integer-valued float as an Integer (so ``ab_relu(0, 1)``
    simplifies to relu's body), otherwise the exact binary value as a Float."""
    return sympy.Integer(int(v)) if float(v).is_integer() else sympy.Float(v)


class Family:
    """A family of nonlinearities ``φ_θ`` built from parameters, one object per value.

    Calling the family returns the *same* :class:`Nonlinearity` for equal parameters
    (closed forms are registered by object), and calls every hook registered with
    :meth:`on_create` on each new member -- how :mod:`tensorprog.gaussian.closed_forms`
    attaches a member's closed forms beside the formulas, without this module
    importing that one. A member equal to a builtin (``ab_relu(0, 1)`` is ``relu``)
    is that builtin, whose closed forms exist already.

    Parameters
    ----------
    build : callable
        ``build(*params) -> (member, key, new)``: validates the parameters and returns
        the member, the tuple of parameters that identifies it, and whether it is a new
        object (False for a builtin or another family's member, whose closed forms
        exist already).

    Examples
    --------
    >>> leaky_relu(0.2) is leaky_relu(0.2), leaky_relu(0.2) in ab_relu.members
    (True, True)
    """

    def __init__(self, build: Callable[..., tuple[Nonlinearity, tuple, bool]]) -> None:
        self._build = build
        self._members: dict[tuple, Nonlinearity] = {}
        self._calls: dict[tuple, tuple] = {}  # key -> the parameters it was first built from
        self._hooks: list[Callable[..., None]] = []
        functools.update_wrapper(self, build)
        FAMILIES[build.__name__] = self

    def __call__(self, *params: Any) -> Nonlinearity:
        phi, key, new = self._build(*params)
        old = self._members.get(key)
        if old is not None:
            return old
        self._members[key] = phi
        self._calls[key] = params
        if new:
            for hook in self._hooks:
                hook(phi, *key)
        return phi

    def on_create(self, hook: Callable[..., None]) -> Callable[..., None]:
        """Decorator: call ``hook(φ, *params)`` for every new member (also those made
        before the hook was registered)."""
        self._hooks.append(hook)
        for key, phi in list(self._members.items()):
            if not _is_builtin(phi):
                hook(phi, *key)
        return hook

    @property
    def members(self) -> tuple[Nonlinearity, ...]:
        """The members made so far."""
        return tuple(self._members.values())

    def origin(self, fn: Nonlinearity) -> tuple[tuple, int] | None:
        """``(params, k)`` when ``fn`` is the ``k``-th derivative (``k ≤ 2``, the
        distributional one of :meth:`Nonlinearity.derivative`) of the member built from
        ``params``, else None: what a file records so that loading rebuilds the member,
        closed forms included, instead of a look-alike of its body."""
        for key, phi in self._members.items():
            if not fn.name.startswith(phi.name):
                continue
            d = phi
            for k in range(3):
                if d is fn:
                    return self._calls[key], k
                if d.arity + d.nparams != 1:
                    break
                d = d.derivative()
        return None


#: The families by name (:class:`Family`): a saved member records its family and
#: parameters, and :func:`tensorprog.load` rebuilds it through this table.
FAMILIES: dict[str, Family] = {}


def _is_builtin(phi: Nonlinearity) -> bool:
    return BUILTINS.get(phi.name) is phi


def _member(name: str, body: sympy.Expr, x: sympy.Symbol, latex: str, opaque: bool = True):
    f = Nonlinearity(name, body, [x], opaque=opaque, latex=latex)
    same = _BY_KEY.get(f.key)
    if same is not None and opaque:
        return same, False
    return f, True


def _tag(v: float) -> str:
    return repr(int(v)) if float(v).is_integer() else repr(v)


@Family
def ab_relu(a: float, b: float) -> tuple[Nonlinearity, tuple, bool]:
    r"""The piecewise-linear :math:`\phi(x)=a\min(x,0)+b\max(x,0)` (slope ``a`` left of 0,
    ``b`` right of it; neural-tangents' ``stax.ABRelu(a, b)``).

    ``ab_relu(0, 1)`` is :data:`relu`, ``ab_relu(-1, 1)`` is :data:`abs`. Its
    derivative is :math:`a\,\mathrm{step}(-x)+b\,\mathrm{step}(x)`; the Gaussian
    expectations of both are exact, also for nonzero means
    (docs/concepts/kernel-limits.md).

    Examples
    --------
    >>> ab_relu(0, 1) is relu, ab_relu(-0.5, 2) is ab_relu(-0.5, 2.0)
    (True, True)
    >>> ab_relu(-0.5, 2).derivative().body
    -0.5*Heaviside(-x0) + 2*Heaviside(x0)
    """
    a, b = _real(a, "ab_relu: a"), _real(b, "ab_relu: b")
    if (a, b) == (-1.0, 1.0):
        return abs, (a, b), False
    x = sympy.Symbol("x", real=True)
    body = _num(a) * sympy.Min(x, 0) + _num(b) * sympy.Max(x, 0)
    name = f"ab_relu[{_tag(a)},{_tag(b)}]"
    phi, new = _member(name, body, x, rf"\operatorname{{ab\_relu}}_{{{_tag(a)},{_tag(b)}}}")
    return phi, (a, b), new


@Family
def leaky_relu(alpha: float) -> tuple[Nonlinearity, tuple, bool]:
    r"""Leaky relu :math:`\phi(x)=\max(x,0)+\alpha\min(x,0)` (neural-tangents'
    ``stax.LeakyRelu(alpha)``): the member ``ab_relu(alpha, 1)`` of :data:`ab_relu`.

    Examples
    --------
    >>> leaky_relu(0.1) is ab_relu(0.1, 1), leaky_relu(0) is relu
    (True, True)
    """
    alpha = _real(alpha, "leaky_relu: alpha")
    phi = ab_relu(alpha, 1.0)
    return phi, (alpha,), False


@Family
def rbf(gamma: float = 1.0) -> tuple[Nonlinearity, tuple, bool]:
    r"""The activation of the RBF kernel, :math:`\phi(x)=\sqrt2\sin(\sqrt{2\gamma}\,x+\pi/4)`
    (neural-tangents' ``stax.Rbf(gamma)``), ``γ > 0``.

    For a centred pair :math:`\mathbb E[\phi(u)\phi(v)]=e^{-\gamma(k_{11}-2k_{12}+k_{22})}`:
    one layer on inputs with :math:`k=\xi^\top\xi'/d` gives the RBF kernel
    :math:`e^{-\gamma\|\xi-\xi'\|^2/d}`.

    Examples
    --------
    >>> rbf(0.5).body, rbf(2).body
    (sqrt(2)*sin(x0 + pi/4), sqrt(2)*sin(2*x0 + pi/4))
    """
    gamma = _real(gamma, "rbf: gamma")
    if gamma <= 0:
        raise ProgramValueError(f"rbf: gamma must be > 0, got {gamma!r}")
    x = sympy.Symbol("x", real=True)
    beta = np.sqrt(2.0 * gamma)
    body = sympy.sqrt(2) * sympy.sin(_num(beta) * x + sympy.pi / 4)
    phi, new = _member(f"rbf[{_tag(gamma)}]", body, x, rf"\operatorname{{rbf}}_{{{_tag(gamma)}}}")
    return phi, (gamma,), new


@Family
def gaussian_bump(a: float = 1.0, b: float = -1.0) -> tuple[Nonlinearity, tuple, bool]:
    r"""The Gaussian function :math:`\phi(x)=a\,e^{bx^2}` (neural-tangents'
    ``stax.Gaussian(a, b)``; called ``gaussian_bump`` here because ``tp.gaussian`` is
    the package of Gaussian expectations).

    For ``b > 0`` the expectations :math:`\mathbb E\,\phi(u)^2` are finite only while
    :math:`4bk<1`; beyond, evaluation raises :class:`~tensorprog.core.errors.NumericalError`.

    Examples
    --------
    >>> gaussian_bump().body
    exp(-x0**2)
    """
    a, b = _real(a, "gaussian_bump: a"), _real(b, "gaussian_bump: b")
    x = sympy.Symbol("x", real=True)
    body = _num(a) * sympy.exp(_num(b) * x**2)
    name = f"gaussian_bump[{_tag(a)},{_tag(b)}]"
    phi, new = _member(name, body, x, rf"\operatorname{{gauss}}_{{{_tag(a)},{_tag(b)}}}")
    return phi, (a, b), new


@Family
def rectified_monomial(degree: int) -> tuple[Nonlinearity, tuple, bool]:
    r"""The rectified monomial :math:`\phi(x)=\max(x,0)^k` (neural-tangents'
    ``stax.RectifiedMonomial(k)``; the activation of Cho & Saul's arc-cosine kernel of
    degree ``k``). ``rectified_monomial(0)`` is :data:`step`, ``rectified_monomial(1)``
    is :data:`relu`.

    Examples
    --------
    >>> rectified_monomial(1) is relu, rectified_monomial(2).derivative().body
    (True, 2*Heaviside(x0)*Max(0, x0))
    """
    k = _degree(degree, "rectified_monomial: degree")
    if k == 0:
        return step, (k,), False
    x = sympy.Symbol("x", real=True)
    name = f"rectified_monomial[{k}]"
    phi, new = _member(name, sympy.Max(x, 0) ** k, x, rf"\operatorname{{relu}}^{{{k}}}")
    return phi, (k,), new


@Family
def polynomial(coef: Sequence[float]) -> tuple[Nonlinearity, tuple, bool]:
    r"""The polynomial :math:`\phi(x)=\sum_i c_i x^i` of ``coef = (c_0, c_1, …)``
    (neural-tangents' ``stax.Polynomial(coef)``).

    *Transparent*: ``Z`` expressions show the polynomial itself, and every Gaussian
    expectation of it (any degree, any means) is exact by Isserlis' theorem
    (:func:`tensorprog.gaussian.gaussian_moment`).

    Examples
    --------
    >>> polynomial([0.5, -1, 0.25]).body
    0.25*x0**2 - x0 + 0.5
    """
    if isinstance(coef, (str, bytes)) or not hasattr(coef, "__len__") or len(coef) == 0:
        raise ProgramValueError(
            f"polynomial: coef must be a non-empty sequence of real numbers, got {coef!r:.60}"
        )
    cs = tuple(_real(c, f"polynomial: coef[{i}]") for i, c in enumerate(coef))
    x = sympy.Symbol("x", real=True)
    body = sympy.Add(*[_num(c) * x**i for i, c in enumerate(cs)])
    name = "polynomial[" + ",".join(map(_tag, cs)) + "]"
    phi, new = _member(name, body, x, r"\operatorname{poly}", opaque=False)
    return phi, cs, new


@Family
def monomial(degree: int) -> tuple[Nonlinearity, tuple, bool]:
    r"""The monomial :math:`\phi(x)=x^k` (neural-tangents' ``stax.Monomial(k)``):
    transparent, like :data:`polynomial`, so its expectations are exact by Isserlis'
    theorem for any means.

    Examples
    --------
    >>> monomial(3).body, monomial(3).derivative().body
    (x0**3, 3*x0**2)
    """
    k = _degree(degree, "monomial: degree")
    x = sympy.Symbol("x", real=True)
    phi, new = _member(f"monomial[{k}]", x**k, x, rf"(\cdot)^{{{k}}}", opaque=False)
    return phi, (k,), new


#: Functions bounded on the real line (degree 0 in the growth and width analyses).
BOUNDED = (
    sympy.tanh,
    sympy.sin,
    sympy.cos,
    sympy.erf,
    sympy.erfc,
    sympy.atan,
    sympy.Heaviside,
    sympy.sign,
)


def inline(expr: sympy.Expr, of: frozenset | None = None) -> sympy.Expr:
    """``expr`` with every opaque nonlinearity replaced by its sympy body (recursively):
    ``relu(u)`` → ``Max(u, 0)``, ``sigmoid(u)`` → ``1/(1 + e^{−u})``. With ``of``,
    only the applications to arguments involving those symbols: the others are
    constants of the analysis (inlining them only costs time)."""
    for _ in range(64):
        apps = [
            a
            for a in expr.atoms(sympy.Function)
            if hasattr(a.func, "nonlinearity") and (of is None or a.free_symbols & of)
        ]
        if not apps:
            return expr
        repl = {}
        for a in apps:
            nl = a.func.nonlinearity
            repl[a] = nl.body.xreplace(dict(zip(nl.args + nl.params, a.args)))
        expr = expr.xreplace(repl)
    return expr  # pragma: no cover - nonlinearities do not nest 64 deep
