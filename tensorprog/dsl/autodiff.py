r"""Reverse-mode differentiation of a Tensor Program, written as more program.

:func:`grad` takes a scalar output ``f`` of a program (typically a Moment, or a
function of Moments such as a loss) and vectors ``x¹, …, xᵏ``, and *appends*
instructions to the same program that compute the **normalised gradients**

.. math::

    dx := n\,\frac{\partial f}{\partial x}\in\mathbb R^n ,

one vector per ``x``. The rules are the backpropagation rules of NETSOR⊤ [TP2 §4,
Eqs. (10)–(12)], [TP4 §5.3]:

* ``h = W x``  (MatMul)          →  ``dx += Wᵀ dh``  (a MatMul with the transpose;
  ``h = Wᵀ x`` gives ``dx += W dh``);
* ``y = φ(x¹,…,xᵏ; θ)`` (Nonlin) →  ``dxʲ += dy ⊙ ∂ⱼφ(x¹,…,xᵏ; θ)``, with ``∂ⱼφ``
  the almost-everywhere derivative of :meth:`tensorprog.Nonlinearity.derivative`
  (``ae=True``: relu' is ``step``, sign' and step' are 0 — as in a finite network;
  the Master Theorem still treats a jump *inside* the program by Stein's lemma);
* ``m = (1/n) Σ_α φ(x_α; θ)`` (Moment) with adjoint ``m̄ = ∂f/∂m``
  →  ``dxʲ += m̄ · ∂ⱼφ(x; θ)``;
* ``s = ψ(θ¹,…)`` (scalar function) →  ``θ̄ⁱ += s̄ · ∂ᵢψ``;
* several uses of one variable: contributions are **added** (one Nonlin per sum).

Vector–Jacobian products
------------------------
``grad(y, wrt, cotangent=c)`` starts the sweep from given cotangents instead of a
scalar: for vector outputs ``y_k`` with cotangent vectors ``c_k`` (and scalar outputs
with cotangent numbers or Scalars) it is the gradient of ``F = Σ_k ⟨c_k, y_k⟩ (+ Σ c_k
y_k)``, without recording that Moment. A network's backward pass is one such product
per layer, from the readout's cotangent (:func:`tensorprog.nn.kernels`,
:func:`tensorprog.nn.train_sgd`).

What is recorded
----------------
Only the instructions on a path from ``wrt`` to the outputs are visited. Scalar
factors are carried as coefficients (a number, a Scalar, or a tuple = their product)
into the next linear combination, through MatMuls (``Wᵀ(c·v) = c·Wᵀv``) and Moments,
so they cost no ScalarFn of their own; the partial derivatives of linear combinations
are read off their monomials, not computed symbolically. A contribution to an adjoint
(``dy ⊙ ∂φ``, ``Wᵀ dy``) is recorded when the adjoint is complete, so a gradient made
of one contribution is that instruction, named by ``names=``; contributions are
summed in program order of their consumers. ``∂φ`` vectors are named ``d{y}_d{x}``.

Normalisation
-------------
A Moment is an average ``(1/n) Σ_α``, so ``∂m/∂x_α = O(1/n)``. Multiplying by ``n``
makes every gradient vector have ``Θ(1)`` coordinates, which is what the Master
Theorem needs ([TP4 App H.3]: ``∇_h f = θ_f · dh``; docs/concepts/parametrizations.md). Concretely the program computes

* for every vector ``y`` on a path to ``f``: ``dy = n ∂f/∂y`` (Θ(1) coordinates);
* for every scalar ``s`` on a path to ``f``: ``s̄ = ∂f/∂s`` (no factor ``n``).

The factor ``n`` never appears as a scalar of the program: it cancels the ``1/n`` of
each Moment symbolically. If your output carries a width power, e.g.
``f = √n ⟨v, x⟩``, differentiate the Moment ``⟨v, x⟩`` and rescale yourself.

Scalars (``through_scalars=False``, the default)
------------------------------------------------
Scalars that enter a Nonlin+ or a Moment as *parameters* are treated as constants:
the derivative does not flow through them. This is TP4's convention (Nonlin+
parameters are frozen at their limits [TP4 Def 7.3, ZNonlin+]) and is exactly what
backprop computes when those scalars are constants (learning rates, width powers,
loss derivatives χ). Scalar functions *on top of* Moments (``f = ⟨v,x⟩ − y``,
``(f − y)²/2``) are the output head and are differentiated.

With ``through_scalars=True`` the derivative also flows through scalar parameters:
a parameter ``θ`` of ``y = φ(x; θ)`` receives ``θ̄ += (1/n) Σ_α dy_α ∂_θφ`` (a Moment),
so the result is the full finite-width gradient ``n ∂f/∂x`` (e.g. through a
LayerNorm-style ``x/√(mean x²)``, or through the rank-one update terms
``⟨x_s, x⟩ dh_s`` of an unrolled SGD step, whose gradient is ``⟨dh_s, dh⟩ x_s``, the
``ΔWᵀ`` correction [TP4 App H.3]).

References
----------
[TP2] G. Yang, *Tensor Programs II: Neural Tangent Kernel for Any Architecture*, 2020.
[TP4] G. Yang, E. Hu, *Feature Learning in Infinite-Width Neural Networks*, 2021.
"""

from __future__ import annotations

import functools
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from ..core.errors import ProgramTypeError, ProgramValueError
from ..core.ir import MatMul, Moment, Nonlin, OuterNonlin, ScalarFn, Var, format_instruction
from ..core.nonlin import Nonlinearity, _arg_symbols
from .program import (
    Handle,
    Program,
    Scalar,
    Vector,
    _handle,
    apply_nonlinearity,
    inner,
    mean,
    outer_nonlin,
)

__all__ = ["grad", "lincomb", "scalar_lincomb"]

# A coefficient: None (= 1), a Python number, a Scalar handle, or a tuple of Scalar
# handles and numbers (their product, kept unevaluated until it is an instruction's
# parameter list).
Coef = Any


# ---------------------------------------------------------------------------------------
# Linear combinations as single Nonlin / ScalarFn instructions


def _pattern_coef(entry: Any, ps: list[sympy.Symbol]) -> Any:
    """The sympy coefficient of one pattern entry, consuming its parameters from ``ps``:
    an int ``j`` is the product of the next ``j`` parameters (``0``: the coefficient 1),
    ``("c", value)`` a constant, ``("c", value, j)`` a constant times ``j`` parameters."""
    if isinstance(entry, int):
        return sympy.Mul(*[ps.pop(0) for _ in range(entry)])
    value = sympy.sympify(entry[1])
    if len(entry) == 2:
        return value
    return value * sympy.Mul(*[ps.pop(0) for _ in range(entry[2])])


def _pattern_params(pattern: tuple[Any, ...]) -> int:
    return sum(c if isinstance(c, int) else (c[2] if len(c) == 3 else 0) for c in pattern)


@functools.cache
def _lincomb_fn(pattern: tuple[Any, ...]) -> Nonlinearity:
    """``Σ_k c_k x_k`` as one transparent Nonlinearity.

    ``pattern[k]`` is the coefficient of the k-th vector (see :func:`_pattern_coef`).
    """
    xs = _arg_symbols(len(pattern), "x")
    nparams = _pattern_params(pattern)
    ps = list(_arg_symbols(nparams, "p"))
    # one Add of all terms (the same canonical sum as adding them one by one, in
    # linear instead of quadratic time)
    body = sympy.Add(*[_pattern_coef(c, ps) * x for x, c in zip(xs, pattern)])
    return Nonlinearity("lincomb", body, xs, _arg_symbols(nparams, "p"), opaque=False)


@functools.cache
def _scalar_lincomb_fn(pattern: tuple[Any, ...]) -> Nonlinearity:
    """``Σ_k c_k Π_j θ_{k,j}`` over scalars only (same pattern convention, no vectors)."""
    nparams = _pattern_params(pattern)
    ps = list(_arg_symbols(nparams, "p"))
    body = sympy.Add(*[_pattern_coef(c, ps) for c in pattern])
    return Nonlinearity("sum", body, (), _arg_symbols(nparams, "p"), opaque=False)


def _split(coef: Coef) -> tuple[Any, list[Scalar]]:
    """A coefficient as (pattern entry, scalar handles)."""
    if coef is None:
        return 0, []
    if isinstance(coef, Scalar):
        return 1, [coef]
    if isinstance(coef, (tuple, list)):
        hs: list[Scalar] = []
        value, numeric = 1.0, False
        for c in coef:  # (one pass: every adjoint's coefficient comes through here)
            if isinstance(c, Scalar):
                hs.append(c)
            elif c is not None:
                if not _is_number(c):
                    raise ProgramTypeError(
                        "a product coefficient must be a tuple of Scalar handles (and numbers)"
                    )
                value *= float(c)
                numeric = True
        if not numeric:
            return len(hs), hs
        return (("c", _exact(value), len(hs)) if hs else ("c", _exact(value))), hs
    if _is_number(coef):
        return ("c", _exact(coef)), []
    raise ProgramTypeError(f"a coefficient must be None, a number or a Scalar, got {coef!r}")


def _is_number(c: Any) -> bool:
    return isinstance(c, numbers.Real) and not isinstance(c, bool)


def _exact(c: numbers.Real) -> Any:
    return _exact_float(float(c))


@functools.lru_cache(maxsize=4096)
def _exact_float(f: float) -> Any:
    """``f`` as a sympy number: an Integer when it is one (``2.0`` → ``2``), else a Float."""
    return sympy.Integer(int(f)) if f.is_integer() and abs(f) < 2**53 else sympy.Float(f)


def lincomb(terms: Sequence[tuple[Coef, Vector]], name: str | None = None) -> Vector:
    """``Σ_k c_k x_k`` as **one** Nonlin+ instruction.

    Parameters
    ----------
    terms : sequence of (coefficient, Vector)
        Each coefficient is ``None`` (1), a number, a Scalar handle, or a tuple of
        Scalar handles and numbers (their product).
    name : str, optional

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> x, y, c = p.vector("x"), p.vector("y"), p.scalar("c", 0.5)
    >>> z = tp.lincomb([(None, x), (c, y), (2.0, y)], name="z")
    >>> print(p.definition(z))  # doctest: +ELLIPSIS
    Nonlin(out=z, fn=Nonlinearity(lincomb: (x0, x1, x2; p0) ↦ ...
    """
    terms = list(terms)
    if not terms:
        raise ProgramValueError("lincomb needs at least one term")
    if len(terms) == 1 and terms[0][0] is None and name is None:
        return terms[0][1]
    pattern: list[Any] = []
    params: list[Scalar] = []
    vecs: list[Vector] = []
    for coef, v in terms:
        if not isinstance(v, Vector):
            raise ProgramTypeError(f"lincomb terms must be (coefficient, Vector), got {v!r}")
        if coef is None:  # (the two common cases of _split, inline)
            pattern.append(0)
        elif isinstance(coef, Scalar):
            pattern.append(1)
            params.append(coef)
        else:
            entry, hs = _split(coef)
            pattern.append(entry)
            params += hs
        vecs.append(v)
    fn = _lincomb_fn(tuple(pattern))
    return apply_nonlinearity(fn, vecs + params, name=name)  # type: ignore[return-value]


def scalar_lincomb(terms: Sequence[Coef], name: str | None = None) -> Scalar | float:
    """``Σ_k c_k`` of scalar terms (numbers, Scalars, tuples of Scalars and numbers =
    products) as **one** scalar-function instruction.

    Parameters
    ----------
    terms : sequence
        Each term is a number, a Scalar handle, or a tuple of Scalar handles and
        numbers (their product).
    name : str, optional

    Returns
    -------
    Scalar or float
        A number when no term is a handle (nothing is recorded).

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> a, b = p.scalar("a", 2.0), p.scalar("b", 3.0)
    >>> s = tp.scalar_lincomb([(a, b), 0.5, (a, 4.0)], name="s")   # a·b + 0.5 + 4a
    >>> p.limit()["s"]
    14.5
    """
    terms = [t for t in terms if not (isinstance(t, numbers.Real) and t == 0)]
    if all(isinstance(t, numbers.Real) for t in terms):
        return float(sum(terms))
    if len(terms) == 1 and isinstance(terms[0], Scalar) and name is None:
        return terms[0]
    pattern, params = [], []
    for t in terms:
        entry, hs = _split(t)
        pattern.append(entry)
        params += hs
    fn = _scalar_lincomb_fn(tuple(pattern))
    return apply_nonlinearity(fn, params, name=name)  # type: ignore[return-value]


def _smul(*cs: Coef) -> Coef:
    """The product of coefficients (``None`` = 1), recording no instruction: numbers are
    multiplied, Scalar handles collected into a tuple (a product that :func:`lincomb`
    and :func:`scalar_lincomb` turn into parameters of their one instruction)."""
    if len(cs) == 2:  # the common case: one coefficient times another, often None
        a, b = cs
        if b is None and not isinstance(a, tuple):
            return None if type(a) in (float, int) and a == 1 else a
        if a is None and not isinstance(b, tuple):
            return None if type(b) in (float, int) and b == 1 else b
    live = [c for c in cs if c is not None]
    if not live:
        return None
    if len(live) == 1 and not isinstance(live[0], tuple):
        c = live[0]
        return None if type(c) in (float, int) and c == 1 else c
    num = 1.0
    hs: list[Scalar] = []
    for c in live:
        if isinstance(c, tuple):
            for x in c:
                if isinstance(x, Scalar):
                    hs.append(x)
                elif x is not None:
                    num *= float(x)
        elif isinstance(c, Scalar):
            hs.append(c)
        else:
            num *= float(c)
    if not hs:
        return None if num == 1.0 else num
    if num != 1.0:
        hs.append(num)  # type: ignore[arg-type]
    return hs[0] if len(hs) == 1 else tuple(hs)


def _as_scalar(c: Coef, name: str | None = None) -> Scalar | float:
    """A coefficient as a value of the program: a number, or one Scalar handle."""
    if c is None:
        return 1.0
    if isinstance(c, Scalar):
        return c
    return scalar_lincomb([c], name=name) if isinstance(c, tuple) else float(c)


def _is_zero(c: Coef) -> bool:
    return type(c) in (float, int) and c == 0  # coefficients are None, float, Scalar, tuple


# ---------------------------------------------------------------------------------------
# Partial derivatives of one instruction's function


@functools.cache
def _monomials(
    fn: Nonlinearity,
) -> dict[int, list[tuple[float, tuple[int, ...], tuple[int, ...]]]] | None:
    """The partial derivatives of a multilinear body ``Σ_k a_k Π_{j∈J_k} θ_j Π_{i∈I_k} x_i``
    (every symbol to the first power), or ``None`` for any other body.

    Every linear combination (:func:`lincomb`, the DSL's ``+ − ·``) and every product
    Moment ``⟨x, y⟩`` has this form, and its partials are read off the terms instead of
    by symbolic differentiation: ``result[i]`` (input ``i``: the arguments, then the
    parameters) lists the terms of ``∂ᵢφ`` as ``(a, parameter indices, argument
    indices)``.
    """
    k = len(fn.args)
    arg_index = {x: i for i, x in enumerate(fn.args)}
    param_index = {x: j for j, x in enumerate(fn.params)}
    partials: dict[int, list[tuple[float, tuple[int, ...], tuple[int, ...]]]] = {}
    for term in sympy.Add.make_args(fn.body):
        num, ps, xs = 1.0, [], []
        for fac in sympy.Mul.make_args(term):
            if fac.is_Number:
                num *= float(fac)
            elif fac in param_index and param_index[fac] not in ps:
                ps.append(param_index[fac])
            elif fac in arg_index and arg_index[fac] not in xs:
                xs.append(arg_index[fac])
            else:
                return None
        ps.sort()
        xs.sort()
        for i in xs:
            partials.setdefault(i, []).append((num, tuple(ps), tuple(q for q in xs if q != i)))
        for j in ps:
            partials.setdefault(k + j, []).append((num, tuple(q for q in ps if q != j), tuple(xs)))
    return partials


class _Rule:
    """How ``∂ᵢφ`` of one function and input index is formed at an instruction's inputs
    (:func:`_partial_rule`); :meth:`at` gives it as ``coefficient × vector``."""

    __slots__ = ()

    def at(
        self,
        args: Sequence[Var],
        params: Sequence[Var],
        handle: Callable[[Var], Any],
        name: Callable[[], str | None],
    ) -> tuple[Coef, Vector | None] | None:
        raise NotImplementedError


class _Zero(_Rule):
    """``∂ᵢφ = 0`` (also a derivative that is a Dirac delta almost everywhere)."""

    __slots__ = ()

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        return None


class _Monomial(_Rule):
    """``∂ᵢφ = a · Π_{j∈J} θ_j · x_k`` (or without ``x_k``): a term of a linear
    combination, read off :func:`_monomials`; it records nothing, its factors are
    inputs of the instruction."""

    __slots__ = ("a", "params", "arg")

    def __init__(self, a: float, params: tuple[int, ...], arg: int | None) -> None:
        self.a, self.params, self.arg = a, params, arg

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        a = self.a
        if self.params:  # the product a·Πθ (see _smul): the handles, then a unless it is 1
            hs = [handle(params[j]) for j in self.params]
            if a != 1.0:
                hs.append(a)
            coef = hs[0] if len(hs) == 1 else tuple(hs)
        else:
            coef = None if a == 1.0 else a
        return coef, (None if self.arg is None else handle(args[self.arg]))


class _Constant(_Rule):
    """``∂ᵢφ`` is a number."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        return self.value, None


class _Argument(_Rule):
    """``∂ᵢφ = x_k``, one of the vector arguments."""

    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        return None, handle(args[self.k])


class _OfParams(_Rule):
    """``∂ᵢφ = ψ(θ)`` depends on the parameters only: one ScalarFn."""

    __slots__ = ("D",)

    def __init__(self, D: Nonlinearity) -> None:
        self.D = D

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        D = self.D
        f2 = Nonlinearity(f"{D.name}", D.body, (), D.params, opaque=False)
        return apply_nonlinearity(f2, [handle(v) for v in params]), None


class _Jacobian(_Rule):
    """``∂ᵢφ(x; θ)`` as one new Nonlin of the instruction's inputs."""

    __slots__ = ("D",)

    def __init__(self, D: Nonlinearity) -> None:
        self.D = D

    def at(self, args, params, handle, name):  # type: ignore[no-untyped-def]
        inputs = [handle(v) for v in args] + [handle(v) for v in params]
        return None, apply_nonlinearity(self.D, inputs, name=name())  # type: ignore[return-value]


_ZERO = _Zero()


@functools.cache
def _partial_rule(fn: Nonlinearity, i: int) -> _Rule:
    """How ``∂ᵢφ`` is formed (once per function and input index; the rule then applies
    at every instruction of ``fn``).

    The almost-everywhere derivative (a Dirac delta is 0, e.g. sign' = step' = 0) —
    what backpropagation through a finite network computes (see
    :meth:`~tensorprog.Nonlinearity.derivative`). A monomial ``a · Π θ · x_k`` (every
    derivative of a linear combination, see :func:`_monomials`) records nothing:
    ``c = a·Πθ`` and ``v = x_k`` are inputs of the instruction, in their order. Anything
    else is a number, an argument, or one new ScalarFn (``c = ∂ᵢφ(θ)``) or Nonlin
    (``v = ∂ᵢφ(x; θ)``).
    """
    partials = _monomials(fn)
    if partials is not None:
        hits = partials.get(i)
        if not hits:
            return _ZERO
        if len(hits) == 1 and len(hits[0][2]) <= 1:
            a, ps, xs = hits[0]
            return _Monomial(a, ps, xs[0] if xs else None)
    D = fn.derivative(i, ae=True)
    body = D.body
    if body == 0:
        return _ZERO
    argsyms = D.args[: len(fn.args)]
    if not body.free_symbols & set(argsyms):
        return _Constant(float(body)) if body.is_Number else _OfParams(D)
    if body in argsyms:
        return _Argument(argsyms.index(body))
    return _Jacobian(D)


@functools.cache
def _product_fn() -> Nonlinearity:
    """``(x0, x1) ↦ x0·x1``: the chain rule's ``dy ⊙ ∂φ`` as one transparent Nonlin."""
    x0, x1 = _arg_symbols(2, "x")
    return Nonlinearity("mul", x0 * x1, (x0, x1), opaque=False)


# ---------------------------------------------------------------------------------------
# grad


def _edges(instr: Any, through: bool) -> tuple[Var, ...]:
    """The inputs of ``instr`` through which the derivative flows."""
    if isinstance(instr, MatMul):
        return (instr.arg,)
    if isinstance(instr, (Nonlin, Moment)):
        return instr.args + (instr.params if through else ())
    if isinstance(instr, ScalarFn):
        return instr.params
    if isinstance(instr, OuterNonlin):
        return instr.rows + instr.cols + (instr.params if through else ())
    return ()


def _on_paths(p: Program, outs: Sequence[Var], starts: Sequence[Var], through: bool) -> list[Any]:
    """The instructions of the variables on a path from ``starts`` to ``outs``, in
    program order.

    Only the ancestors of ``outs`` defined at or after the first start are visited,
    so the cost is that of the paths, not of the program.
    """
    lo = min(v.id for v in starts)
    instructions = p._instructions  # (Vars of p: outs and starts are checked handles)
    need: dict[Var, tuple[Any, tuple[Var, ...]]] = {}
    stack = [v for v in outs if v.id >= lo]
    while stack:
        v = stack.pop()
        if v in need:
            continue
        instr = instructions[v.id]
        ins = _edges(instr, through)
        need[v] = (instr, ins)
        stack += [u for u in ins if u.id >= lo and u not in need]
    reach = set(starts)
    on = []
    for v in sorted(need, key=_var_id):
        instr, ins = need[v]
        if v in reach or not reach.isdisjoint(ins):
            reach.add(v)
            on.append(instr)
    return on


_var_id = operator.attrgetter("id")


def _outputs(f: Any, cotangent: Any) -> tuple[list[Handle], list[Any]]:
    """The outputs and their cotangents, validated (see :func:`grad`)."""
    if cotangent is None:
        if not isinstance(f, Scalar):
            raise ProgramTypeError(
                f"grad: f must be a Scalar of a program (a Moment or a function of Moments), "
                f"got {type(f).__name__}; a Vector output needs a cotangent"
            )
        return [f], [None]
    single = isinstance(f, (Vector, Scalar))
    outs = [f] if single else list(f) if isinstance(f, (list, tuple)) else None
    cots = (
        [cotangent] if single else list(cotangent) if isinstance(cotangent, (list, tuple)) else None
    )
    if outs is None or cots is None or len(outs) != len(cots) or not outs:
        raise ProgramTypeError(
            "grad: with a cotangent, f is a Vector or Scalar (or a non-empty list of them) "
            "and cotangent is one cotangent per output (a list when f is a list)"
        )
    p = outs[0].program if isinstance(outs[0], Handle) else None
    for y, c in zip(outs, cots):
        if isinstance(y, Vector):
            if not isinstance(c, Vector):
                raise ProgramTypeError(
                    f"grad: the cotangent of the vector {y.name} must be a Vector of its "
                    f"program, got {c!r}"
                )
            p._own(c, "grad(cotangent=…)")  # type: ignore[union-attr]
        elif isinstance(y, Scalar):
            if not (isinstance(c, Scalar) or _is_number(c)):
                raise ProgramTypeError(
                    f"grad: the cotangent of the scalar {y.name} must be a number or a "
                    f"Scalar, got {c!r}"
                )
            if isinstance(c, Scalar):
                p._own(c, "grad(cotangent=…)")  # type: ignore[union-attr]
        else:
            raise ProgramTypeError(f"grad: outputs must be Vectors or Scalars, got {y!r}")
        p._own(y, "grad(f=…)")  # type: ignore[union-attr]
    return outs, cots


def grad(
    f: Any,
    wrt: Sequence[Vector | Scalar] | Vector | Scalar,
    *,
    cotangent: Any = None,
    through_scalars: bool = False,
    names: Sequence[str | None] | str | None = None,
) -> Any:
    r"""Append the normalised gradients ``dx = n ∂F/∂x`` to the program of ``f``.

    Parameters
    ----------
    f : Scalar, or (with ``cotangent``) a Vector, Scalar, or a list of them
        The output. Without ``cotangent``: a scalar ``F = f`` (a Moment, or a scalar
        function of Moments such as a loss). With ``cotangent``: outputs ``y_k``
        whose vector–Jacobian product is asked for (below).
    wrt : Vector, Scalar, or a sequence of them
        What to differentiate with respect to: any vectors of the program (initial
        vectors, MatMul or Nonlin outputs), and any scalars (initial scalars, Moments,
        scalar functions). A scalar that reaches ``f`` through a Nonlin+/Moment
        parameter needs ``through_scalars=True``.
    cotangent : Vector, number, Scalar, or a list of them, optional
        One per output: the **vector–Jacobian product** of the outputs with these
        cotangents, i.e. the gradient of

        .. math::

            F = \sum_{k:\,y_k\text{ vector}} \langle c_k, y_k\rangle
                + \sum_{k:\,y_k\text{ scalar}} c_k\, y_k ,
            \qquad \langle c, y\rangle = \tfrac1n c^\top y ,

        so ``n ∂F/∂y_k = c_k`` for a vector output (the cotangent is the normalised
        gradient flowing into ``y_k``, e.g. ``n^{m}∇_{x^L} f`` of a network's
        readout) and ``∂F/∂y_k = c_k`` for a scalar one. The Moment ``⟨c, y⟩`` is
        not recorded.
    through_scalars : bool, default False
        ``False``: scalar parameters of Nonlin+/Moment instructions are constants
        (TP4's frozen Nonlin+ parameters). ``True``: differentiate through them too
        (the full finite-width gradient).
    names : str or sequence of (str or None), optional
        Names of the gradient vectors and scalars, one per ``wrt`` (a str when
        ``wrt`` is one handle). A gradient that is an existing variable of the
        program (e.g. the cotangent itself, passed through unchanged) keeps its name.

    Returns
    -------
    Vector, Scalar, float, or a list of them
        ``n ∂F/∂x`` for each vector ``x`` and ``∂F/∂c`` (no factor ``n``) for each
        scalar ``c`` (a single result if ``wrt`` was one handle). A vector ``F`` does
        not depend on gets a zero vector; a scalar, the number ``0.0``.

    Notes
    -----
    Reverse mode over the instructions on a path from ``wrt`` to the outputs (only
    those are visited, so one call costs O(number of instructions on those paths),
    not O(program)): every such variable gets one adjoint, the sum of its consumers'
    contributions in program order of the consumers. Scalar factors are carried
    unevaluated — as coefficients of the next linear combination, through MatMuls
    (``Wᵀ(c·v) = c·Wᵀv``) and Moments — so a coefficient costs no instruction of its
    own; a vector used by one consumer passes its contribution on unchanged. See
    the module docstring for the rules and the normalisation.

    A path through an OuterNonlin (:func:`tensorprog.outer_nonlin`) is differentiated
    through its rows (a Nonlin of them, by ψ's partial derivatives averaged over the
    cols), its cols (an OuterNonlin with the roles exchanged) and its scalars: the
    backward pass of a network trained by Adam crosses the hidden weights' updates.

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> W, x, v = p.matrix("W"), p.vector("x"), p.vector("v")
    >>> f = tp.inner(v, tp.tanh(W @ x), name="f")
    >>> dx = tp.grad(f, x)           # = Wᵀ (v ⊙ tanh'(W x))
    >>> k = tp.mean(dx * dx, name="k")
    >>> p.limit()["k"] > 0
    True

    A vector–Jacobian product: the backward pass of ``y = tanh(W x)`` from the
    cotangent ``v`` is the same gradient, without the Moment ``f``:

    >>> y = tp.tanh(W @ x)
    >>> dx2 = tp.grad(y, x, cotangent=v, names="dx2")
    >>> print(p.definition(dx2))  # doctest: +ELLIPSIS
    MatMul(out=dx2, matrix=W, arg=..., transpose=True)
    """
    outs, cots = _outputs(f, cotangent)
    p = outs[0].program
    single = isinstance(wrt, (Vector, Scalar))
    targets = [wrt] if single else list(wrt)  # type: ignore[list-item,arg-type]
    if not targets:
        raise ProgramValueError("grad: wrt must name at least one vector or scalar")
    for x in targets:
        if not isinstance(x, (Vector, Scalar)):
            raise ProgramTypeError(
                f"grad: wrt must be Vectors or Scalars of the program, got {x!r}"
            )
        p._own(x, "grad(wrt=…)")
    if names is None:
        labels: list[str | None] = [None] * len(targets)
    else:
        labels = [names] if isinstance(names, str) else list(names)  # type: ignore[list-item]
        if len(labels) != len(targets) or not all(s is None or isinstance(s, str) for s in labels):
            raise ProgramTypeError(
                f"grad: names must give one str (or None) per wrt handle ({len(targets)}), "
                f"got {names!r}"
            )
    out_vars = [y.var for y in outs]
    if not through_scalars:
        _check_scalar_targets(p, out_vars, [x for x in targets if isinstance(x, Scalar)])
    sweep = _Sweep(p, through_scalars, {x.var: s for x, s in zip(targets, labels) if s})
    end = len(p)
    for y, c in zip(outs, cots):
        if isinstance(y, Vector):
            sweep.add_vec(y.var, end, None, c)
        else:
            sweep.add_scal(y.var, end, c)
    sweep.run(_on_paths(p, out_vars, [x.var for x in targets], through_scalars))
    res = [sweep.result(x) for x in targets]
    return res[0] if single else res


@dataclass(frozen=True)
class _Transposed:
    """The MatMul rule's ``Wᵀ dy`` (``W dy`` for ``h = Wᵀx``), recorded when the adjoint
    it contributes to is complete."""

    W: Any
    transpose: bool
    dy: Vector


#: A contribution to a vector's adjoint: a Vector, a product ``(dy, ∂φ)``, or a MatMul.
Term = Any


def _record(term: Term, name: str | None = None) -> Vector:
    """The instruction of a contribution (none for a Vector)."""
    if isinstance(term, Vector):
        return term
    if isinstance(term, _Transposed):
        M = term.W if term.transpose else term.W.T
        return M.matmul(term.dy, name=name)
    return apply_nonlinearity(_product_fn(), term, name=name)  # type: ignore[return-value]


class _Sweep:
    """The reverse sweep of :func:`grad`: adjoints, rules, and their instructions.

    A vector's adjoint is kept as ``(coefficient, Vector)`` and a scalar's as a
    coefficient until an instruction needs them as one value (see :func:`_smul`).
    """

    def __init__(self, p: Program, through: bool, labels: dict[Var, str]) -> None:
        self.p, self.through, self.labels = p, through, labels
        self.vec_terms: dict[Var, list[tuple[int, Coef, Term]]] = {}
        self.scal_terms: dict[Var, list[tuple[int, Coef]]] = {}
        self.vec: dict[Var, tuple[Coef, Vector]] = {}
        self.scal: dict[Var, Coef] = {}
        self.on: set[Var] = set()
        self.handles: dict[Var, Any] = {}

    def add_vec(self, v: Var, key: int, coef: Coef, term: Term) -> None:
        if not _is_zero(coef):
            terms = self.vec_terms.get(v)
            if terms is None:
                self.vec_terms[v] = [(key, coef, term)]
            else:
                terms.append((key, coef, term))

    def add_scal(self, v: Var, key: int, coef: Coef) -> None:
        if not _is_zero(coef):
            terms = self.scal_terms.get(v)
            if terms is None:
                self.scal_terms[v] = [(key, coef)]
            else:
                terms.append((key, coef))

    def handle(self, v: Var) -> Any:
        """The handle of a variable of the program (one per variable and sweep)."""
        h = self.handles.get(v)
        if h is None:
            h = self.handles[v] = _handle(self.p, v)
        return h

    # -- adjoints -------------------------------------------------------------------
    def finish_vec(self, v: Var) -> tuple[Coef, Vector] | None:
        """Sum the contributions to ``v``'s adjoint (in program order of the consumers).

        A contribution's instruction (a product ``dy ⊙ ∂φ``, a MatMul ``Wᵀdy``) is
        recorded here, so a gradient made of one contribution is that instruction,
        named after ``names``."""
        terms = self.vec_terms.pop(v, None)
        if not terms:
            return None
        if len(terms) > 1:
            terms.sort(key=_first)
        label = self.labels.get(v)
        if len(terms) == 1:
            _, c, term = terms[0]
            adj = (c, _record(term, label if c is None else None))
        else:
            adj = (None, lincomb([(c, _record(term)) for _, c, term in terms], name=label))
        self.vec[v] = adj
        return adj

    def vector(self, v: Var) -> Vector:
        """``v``'s adjoint as one vector (a coefficient becomes one Nonlin)."""
        c, x = self.vec[v]
        if c is not None:
            x = lincomb([(c, x)], name=self.labels.get(v))
            self.vec[v] = (None, x)
        return x

    def finish_scal(self, v: Var) -> Coef:
        terms = self.scal_terms.pop(v)
        if len(terms) > 1:
            terms.sort(key=_first)
        bar = terms[0][1] if len(terms) == 1 else scalar_lincomb([c for _, c in terms])
        self.scal[v] = bar
        return bar

    # -- the sweep ------------------------------------------------------------------
    def run(self, on_paths: list[Any]) -> None:
        self.on = {instr.out for instr in on_paths}
        for instr in reversed(on_paths):
            v = instr.out
            if v.kind == "scalar":
                if v not in self.scal_terms:
                    continue
                bar = self.finish_scal(v)
                if isinstance(instr, ScalarFn):
                    self.scalar_fn(instr, bar)
                elif isinstance(instr, Moment):
                    self.moment(instr, bar)
            elif self.finish_vec(v) is not None:
                if isinstance(instr, MatMul):
                    self.matmul(instr)
                elif isinstance(instr, Nonlin):
                    self.nonlin(instr)
                elif isinstance(instr, OuterNonlin):
                    self.outer_nonlin(instr)

    def matmul(self, instr: MatMul) -> None:
        """``h = W x``: ``dx += Wᵀ dh`` (``h = Wᵀx``: ``dx += W dh``); a coefficient of
        ``dh`` moves past the MatMul."""
        if instr.arg not in self.on:
            return
        c, dh = self.vec[instr.out]
        W = self.handle(instr.matrix)
        self.add_vec(instr.arg, instr.out.id, c, _Transposed(W, instr.transpose, dh))

    def nonlin(self, instr: Nonlin) -> None:
        """``y = φ(x¹,…; θ)``: ``dxʲ += dy ⊙ ∂ⱼφ``; through scalars ``θ̄ⁱ += ⟨dy, ∂_θφ⟩``."""
        k, dy = self.vec[instr.out]
        fn, args, params, y = instr.fn, instr.args, instr.params, instr.out
        key, on, handle = y.id, self.on, self.handle
        for j, v in enumerate(args):
            if v not in on:
                continue
            part = _partial_rule(fn, j).at(
                args, params, handle, lambda v=v: self.jacobian_name(y, v)
            )
            if part is None:
                continue
            c, d = part
            if d is None:
                self.add_vec(v, key, _smul(k, c), dy)
            else:
                self.add_vec(v, key, c, (self.vector(y), d))  # dy ⊙ ∂ⱼφ
        if self.through:
            n = len(args)
            for j, v in enumerate(params):
                if v not in on:
                    continue
                part = _partial_rule(fn, n + j).at(args, params, handle, _no_name)
                if part is None:
                    continue
                c, d = part
                self.add_scal(v, key, _smul(k, c, mean(dy) if d is None else inner(d, dy)))

    def outer_nonlin(self, instr: OuterNonlin) -> None:
        r"""``y_α = (1/n) Σ_β ψ(R_α; C_β; θ)`` [TP4b Def 2.6.1]: with ``dy`` the adjoint,

        * a col: ``dC_{j,β} += (1/n) Σ_α dy_α ∂_{C_j}ψ(R_α; C_β; θ)`` — an OuterNonlin
          with the roles swapped (rows ``C``, cols ``R`` and ``dy``);
        * a row: ``dR_{i,α} += dy_α · (1/n) Σ_β ∂_{R_i}ψ(R_α; C_β; θ)``;
        * through scalars: ``θ̄ += ⟨dy, (1/n) Σ_β ∂_θψ⟩``.

        (The normalised adjoints ``n ∂F/∂z`` obey the same formulas, the ``1/n`` of the
        sum being the ``1/n`` of ``∂y_α/∂C_β``.)"""
        fn, rows, cols, params = instr.fn, instr.rows, instr.cols, instr.params
        on, handle, key = self.on, self.handle, instr.out.id
        dy = self.vector(instr.out)
        nr = len(rows)
        R, C, P = fn.args[:nr], fn.args[nr:], fn.params
        hs = [[handle(v) for v in grp] for grp in (rows, cols, params)]
        w = sympy.Dummy("dy", real=True)
        groups = [("c", cols, C), ("r", rows, R)] + [("p", params, P)] * self.through
        for kind, grp, syms in groups:
            for j, v in enumerate(grp):
                d = sympy.diff(fn.body, syms[j]) if v in on else 0
                if d == 0:
                    continue
                name = f"d{fn.name}_d{kind}{j}"
                if kind == "c":  # rows C, cols R and dy
                    g = Nonlinearity(name, w * d, list(C) + list(R) + [w], list(P))
                    self.add_vec(v, key, None, outer_nonlin(g, hs[1], hs[0] + [dy], hs[2]))
                    continue
                z = outer_nonlin(Nonlinearity(name, d, list(R) + list(C), list(P)), *hs)
                if kind == "r":
                    self.add_vec(v, key, None, (dy, z))
                else:
                    self.add_scal(v, key, inner(z, dy))

    def scalar_fn(self, instr: ScalarFn, bar: Coef) -> None:
        """``s = ψ(θ)``: ``θ̄ⁱ += s̄ ∂ᵢψ``."""
        fn, params, on = instr.fn, instr.params, self.on
        for i, v in enumerate(params):
            if v not in on:
                continue
            part = _partial_rule(fn, i).at((), params, self.handle, _no_name)
            if part is not None:
                self.add_scal(v, instr.out.id, _smul(bar, part[0]))

    def moment(self, instr: Moment, bar: Coef) -> None:
        """``m = mean φ(x; θ)``: ``dxʲ += m̄ ∂ⱼφ``; through scalars ``θ̄ += m̄ mean ∂_θφ``."""
        fn, args, params, key = instr.fn, instr.args, instr.params, instr.out.id
        on, handle = self.on, self.handle
        for j, v in enumerate(args):
            if v not in on:
                continue
            part = _partial_rule(fn, j).at(args, params, handle, _no_name)
            if part is not None:
                c, d = part
                # ∂ⱼφ constant in x: n ∂F/∂x = m̄ · c · 1 (a constant vector).
                self.add_vec(v, key, _smul(bar, c), _ones_like(handle(v)) if d is None else d)
        if self.through:
            n = len(args)
            for j, v in enumerate(params):
                if v not in on:
                    continue
                part = _partial_rule(fn, n + j).at(args, params, handle, _no_name)
                if part is not None:
                    c, d = part
                    self.add_scal(v, key, _smul(bar, c, None if d is None else mean(d)))

    def jacobian_name(self, y: Var, x: Var) -> str | None:
        """``d{y}_d{x}`` for the vector ``∂y/∂x = ∂φ(x)`` (unless the name is taken)."""
        name = f"d{y.name}_d{x.name}"
        return None if name in self.p else name

    # -- results --------------------------------------------------------------------
    def result(self, x: Vector | Scalar) -> Any:
        v = x.var
        label = self.labels.get(v)
        if isinstance(x, Scalar):
            if v in self.scal_terms:  # a target not on any path, or an output
                self.finish_scal(v)
            if v not in self.scal:
                return 0.0
            return _as_scalar(self.scal[v], label)
        if v in self.vec_terms:
            self.finish_vec(v)
        if v not in self.vec:
            return x * 0
        return self.vector(v)


_first = operator.itemgetter(0)


def _no_name() -> None:
    return None


def _check_scalar_targets(p: Program, outs: list[Var], scalars: list[Scalar]) -> None:
    """A scalar target that reaches the outputs through a Nonlin+/Moment *parameter*
    needs ``through_scalars=True`` (otherwise that path would silently count as constant)."""
    for c in scalars:
        on = _on_paths(p, outs, [c.var], True)
        reached = {instr.out for instr in on} | {c.var}
        for instr in on:
            if isinstance(instr, (Nonlin, Moment)) and any(u in reached for u in instr.params):
                raise ProgramValueError(
                    f"grad: the scalar {c.var.name} enters `{format_instruction(instr)}` "
                    f"as a Nonlin+/Moment parameter; the gradient with respect to it "
                    f"flows through parameters only with through_scalars=True"
                )


def _ones_like(x: Vector) -> Vector:
    return x * 0 + 1
