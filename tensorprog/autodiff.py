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
from collections.abc import Sequence
from typing import Any

import sympy

from .errors import ProgramTypeError, ProgramValueError
from .ir import InitMatrix, InitScalar, InitVector, MatMul, Moment, Nonlin, ScalarFn, Var
from .nonlin import Nonlinearity, _arg_symbols
from .program import Handle, Program, Scalar, Vector, apply_nonlinearity

__all__ = ["grad", "lincomb", "scalar_lincomb"]

# A coefficient: None (= 1), a Python number, or a Scalar handle.
Coef = Any


# ---------------------------------------------------------------------------------------
# Linear combinations as single Nonlin / ScalarFn instructions


@functools.cache
def _lincomb_fn(pattern: tuple[Any, ...]) -> Nonlinearity:
    """``Σ_k c_k x_k`` as one transparent Nonlinearity.

    ``pattern[k]`` is the coefficient of the k-th vector: an int ``j`` = the product
    of the next ``j`` scalar parameters (0 means coefficient 1), or a tuple
    ``("c", value)`` for a numeric constant.
    """
    xs = _arg_symbols(len(pattern), "x")
    nparams = sum(c for c in pattern if isinstance(c, int))
    ps = list(_arg_symbols(nparams, "p"))
    body = sympy.Integer(0)
    for x, c in zip(xs, pattern):
        if isinstance(c, int):
            coef = sympy.Mul(*[ps.pop(0) for _ in range(c)])
        else:
            coef = sympy.sympify(c[1])
        body = body + coef * x
    return Nonlinearity("lincomb", body, xs, _arg_symbols(nparams, "p"), opaque=False)


@functools.cache
def _scalar_lincomb_fn(pattern: tuple[Any, ...]) -> Nonlinearity:
    """``Σ_k c_k Π_j θ_{k,j}`` over scalars only (same pattern convention, no vectors)."""
    nparams = sum(c for c in pattern if isinstance(c, int))
    ps = list(_arg_symbols(nparams, "p"))
    body = sympy.Integer(0)
    for c in pattern:
        if isinstance(c, int):
            body = body + sympy.Mul(*[ps.pop(0) for _ in range(c)])
        else:
            body = body + sympy.sympify(c[1])
    return Nonlinearity("sum", body, (), _arg_symbols(nparams, "p"), opaque=False)


def _split(coef: Coef) -> tuple[Any, list[Scalar]]:
    """A coefficient as (pattern entry, scalar handles)."""
    if coef is None:
        return 0, []
    if isinstance(coef, Scalar):
        return 1, [coef]
    if isinstance(coef, (tuple, list)):
        hs = [c for c in coef if c is not None]
        if not all(isinstance(c, Scalar) for c in hs):
            raise ProgramTypeError("a product coefficient must be a tuple of Scalar handles")
        return len(hs), hs
    if isinstance(coef, numbers.Real) and not isinstance(coef, bool):
        return ("c", _exact(coef)), []
    raise ProgramTypeError(f"a coefficient must be None, a number or a Scalar, got {coef!r}")


def _exact(c: numbers.Real) -> Any:
    f = float(c)
    return sympy.Integer(int(f)) if f.is_integer() and abs(f) < 2**53 else sympy.Float(f)


def lincomb(terms: Sequence[tuple[Coef, Vector]], name: str | None = None) -> Vector:
    """``Σ_k c_k x_k`` as **one** Nonlin+ instruction.

    Parameters
    ----------
    terms : sequence of (coefficient, Vector)
        Each coefficient is ``None`` (1), a number, a Scalar handle, or a tuple of
        Scalar handles (their product).
    name : str, optional

    Examples
    --------
    >>> import tensorprog as tp
    >>> p = tp.Program()
    >>> x, y, c = p.vector("x"), p.vector("y"), p.scalar("c", 0.5)
    >>> z = lincomb([(None, x), (c, y), (2.0, y)], name="z")
    >>> print(p.definition(z))  # doctest: +ELLIPSIS
    Nonlin(out=z, fn=Nonlinearity(lincomb: (x0, x1, x2; p0) ↦ ...
    """
    terms = list(terms)
    if not terms:
        raise ProgramValueError("lincomb needs at least one term")
    if len(terms) == 1 and terms[0][0] is None and name is None:
        return terms[0][1]
    pattern, params, vecs = [], [], []
    for coef, v in terms:
        if not isinstance(v, Vector):
            raise ProgramTypeError(f"lincomb terms must be (coefficient, Vector), got {v!r}")
        entry, hs = _split(coef)
        pattern.append(entry)
        params += hs
        vecs.append(v)
    fn = _lincomb_fn(tuple(pattern))
    return apply_nonlinearity(fn, vecs + params, name=name)  # type: ignore[return-value]


def scalar_lincomb(terms: Sequence[Coef], name: str | None = None) -> Scalar | float:
    """``Σ_k c_k`` of scalar terms (numbers, Scalars, tuples of Scalars = products).

    Returns a number when no term is a handle.
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


def _smul(a: Coef, b: Coef) -> Coef:
    """Product of two coefficients (None = 1), as a number, a Scalar or a tuple."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return float(a) * float(b)
    if isinstance(a, numbers.Real):
        a, b = b, a
    if isinstance(b, numbers.Real):
        if b == 1:
            return a
        return a * float(b)  # Scalar arithmetic: one ScalarFn
    ta = a if isinstance(a, tuple) else (a,)
    tb = b if isinstance(b, tuple) else (b,)
    return ta + tb


def _as_handle(c: Coef) -> Coef:
    """Collapse a tuple product to one Scalar handle (numbers and None unchanged)."""
    if isinstance(c, tuple):
        return scalar_lincomb([c])
    return c


# ---------------------------------------------------------------------------------------
# Partial derivatives of one instruction's function


def _partial(fn: Nonlinearity, i: int, args: list[Vector], params: list[Scalar]) -> tuple[str, Any]:
    """``∂ᵢφ`` at the instruction's inputs: the almost-everywhere derivative (a Dirac
    delta is 0, e.g. sign' = step' = 0), which is what backpropagation through a finite
    network computes (see :meth:`~tensorprog.Nonlinearity.derivative`).

    Returns ``("zero", None)``, ``("coef", c)`` when the derivative does not depend on
    the vector arguments (a number or a Scalar), or ``("vec", v)`` (a Vector).
    """
    D = fn.derivative(i, ae=True)
    body = D.body
    k = len(fn.args)
    argsyms = D.args[:k]
    if body == 0:
        return "zero", None
    if not body.free_symbols & set(argsyms):
        if body.is_Number:
            return "coef", float(body)
        if body in D.params:
            return "coef", params[D.params.index(body)]
        f2 = Nonlinearity(f"{D.name}", body, (), D.params, opaque=False)
        return "coef", apply_nonlinearity(f2, params)
    if body in argsyms:
        return "vec", args[argsyms.index(body)]
    if fn.arity == 0:  # pragma: no cover - scalar functions have no vector arguments
        raise AssertionError
    return "vec", apply_nonlinearity(D, list(args) + list(params))


# ---------------------------------------------------------------------------------------
# grad


def _handle(p: Program, v: Var) -> Handle:
    return p[v.name]


def grad(
    f: Scalar,
    wrt: Sequence[Vector] | Vector,
    *,
    through_scalars: bool = False,
) -> list[Vector] | Vector:
    r"""Append the normalised gradients ``dx = n ∂f/∂x`` of a scalar ``f`` to its program.

    Parameters
    ----------
    f : Scalar
        The output: a Moment, or a scalar function of Moments (e.g. a loss).
    wrt : Vector, Scalar, or a sequence of them
        What to differentiate with respect to: any vectors of the program (initial
        vectors, MatMul or Nonlin outputs), and any scalars (initial scalars, Moments,
        scalar functions). A scalar that reaches ``f`` through a Nonlin+/Moment
        parameter needs ``through_scalars=True``.
    through_scalars : bool, default False
        ``False``: scalar parameters of Nonlin+/Moment instructions are constants
        (TP4's frozen Nonlin+ parameters). ``True``: differentiate through them too
        (the full finite-width gradient).

    Returns
    -------
    Vector, Scalar, or a list of them
        ``n ∂f/∂x`` for each vector ``x`` and ``∂f/∂c`` (no factor ``n``) for each scalar
        ``c`` (a single result if ``wrt`` was one handle). A vector ``f`` does not depend
        on gets a zero vector; a scalar, the number ``0.0``.

    Notes
    -----
    Reverse mode over the instruction list: every variable on a path from ``wrt``
    to ``f`` gets one adjoint, the sum of its consumers' contributions (see the
    module docstring for the rules and the normalisation). The number of appended
    instructions is O(number of instructions on those paths).

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
    """
    if not isinstance(f, Scalar):
        raise ProgramTypeError(
            f"grad: f must be a Scalar of a program (a Moment or a function of Moments), "
            f"got {type(f).__name__}"
        )
    single = isinstance(wrt, (Vector, Scalar))
    targets = [wrt] if single else list(wrt)  # type: ignore[list-item]
    if not targets:
        raise ProgramValueError("grad: wrt must name at least one vector or scalar")
    p = f.program
    for x in targets:
        if not isinstance(x, (Vector, Scalar)):
            raise ProgramTypeError(f"grad: wrt must be Vectors or Scalars of the program, got {x!r}")
        p._own(x, "grad(wrt=…)")
    instrs = p.instructions[: f.var.id + 1]

    def edges(instr: Any, through: bool = through_scalars) -> tuple[Var, ...]:
        """Inputs through which the derivative flows."""
        if isinstance(instr, MatMul):
            return (instr.arg,)
        if isinstance(instr, (Nonlin, Moment)):
            return instr.args + (instr.params if through else ())
        if isinstance(instr, ScalarFn):
            return instr.params
        return ()

    if not through_scalars:
        _check_scalar_targets(f, [x for x in targets if isinstance(x, Scalar)], instrs, edges)

    # Variables on a path wrt → f.
    reach = {x.var for x in targets}
    for instr in instrs:
        if instr.out not in reach and any(v in reach for v in edges(instr)):
            reach.add(instr.out)
    need = {f.var}
    for instr in reversed(instrs):
        if instr.out in need:
            need.update(edges(instr))
    relevant = reach & need

    vec_adj: dict[Var, list[tuple[Coef, Vector]]] = {}
    scal_adj: dict[Var, list[Coef]] = {f.var: [1.0]}
    done: dict[Var, Any] = {}

    def add_vec(v: Var, coef: Coef, vec: Vector) -> None:
        if v in relevant:
            vec_adj.setdefault(v, []).append((coef, vec))

    def add_scal(v: Var, coef: Coef) -> None:
        if v in relevant and coef is not None:
            scal_adj.setdefault(v, []).append(coef)

    for instr in reversed(instrs):
        out = instr.out
        if out not in relevant or isinstance(instr, (InitMatrix, InitVector, InitScalar)):
            continue
        if out.kind == "scalar":
            terms = scal_adj.get(out)
            if not terms:
                continue
            bar = scalar_lincomb(terms) if len(terms) > 1 else _as_handle(terms[0])
            done[out] = bar
            if isinstance(instr, ScalarFn):
                params = [_handle(p, v) for v in instr.params]
                for i, v in enumerate(instr.params):
                    if v not in relevant:
                        continue
                    kind, d = _partial(instr.fn, i, [], params)
                    if kind == "coef":
                        add_scal(v, _smul(bar, d))
            elif isinstance(instr, Moment):
                args = [_handle(p, v) for v in instr.args]
                params = [_handle(p, v) for v in instr.params]
                for j, v in enumerate(instr.args):
                    if v not in relevant:
                        continue
                    kind, d = _partial(instr.fn, j, args, params)
                    if kind == "vec":
                        add_vec(v, _as_handle(bar) if bar != 1.0 else None, d)
                    elif kind == "coef":
                        # ∂ⱼφ is constant in x: n ∂f/∂x = m̄ · c · 1 (a constant vector).
                        c = _smul(bar, d)
                        add_vec(v, _as_handle(c), _ones_like(args[j]))
                if through_scalars:
                    for j, v in enumerate(instr.params):
                        if v not in relevant:
                            continue
                        kind, d = _partial(instr.fn, len(args) + j, args, params)
                        if kind == "vec":
                            add_scal(v, _smul(bar, _mean(d)))
                        elif kind == "coef":
                            add_scal(v, _smul(bar, d))
            continue
        # a vector
        terms = vec_adj.get(out)
        if not terms:
            continue
        dy = lincomb(terms) if not (len(terms) == 1 and terms[0][0] is None) else terms[0][1]
        done[out] = dy
        if isinstance(instr, MatMul):
            if instr.arg in relevant:
                W = _handle(p, instr.matrix)
                add_vec(instr.arg, None, (W @ dy) if instr.transpose else (W.T @ dy))
        elif isinstance(instr, Nonlin):
            args = [_handle(p, v) for v in instr.args]
            params = [_handle(p, v) for v in instr.params]
            for j, v in enumerate(instr.args):
                if v not in relevant:
                    continue
                kind, d = _partial(instr.fn, j, args, params)
                if kind == "vec":
                    add_vec(v, None, dy * d)
                elif kind == "coef":
                    add_vec(v, None if d == 1.0 else _as_handle(d), dy)
            if through_scalars:
                for j, v in enumerate(instr.params):
                    if v not in relevant:
                        continue
                    kind, d = _partial(instr.fn, len(args) + j, args, params)
                    if kind == "vec":
                        add_scal(v, _inner_or_mean(dy, d))
                    elif kind == "coef":
                        add_scal(v, _smul(_mean(dy), d))

    out: list[Any] = []
    for x in targets:
        g = done.get(x.var)
        if g is None and isinstance(x, Scalar):
            terms = scal_adj.get(x.var)
            g = scalar_lincomb(terms) if terms else 0.0
        elif g is None:
            terms = vec_adj.get(x.var)
            g = lincomb(terms) if terms else x * 0
        out.append(g)
    return out[0] if single else out


def _check_scalar_targets(f: Scalar, scalars: list[Scalar], instrs: list[Any],
                          edges: Any) -> None:
    """A scalar target that reaches ``f`` through a Nonlin+/Moment *parameter* needs
    ``through_scalars=True`` (otherwise that path would silently count as constant)."""
    from .ir import format_instruction

    need = {f.var}
    for instr in reversed(instrs):
        if instr.out in need:
            need.update(edges(instr, True))
    for c in scalars:
        reach = {c.var}
        for instr in instrs:
            if instr.out not in reach and any(v in reach for v in edges(instr, True)):
                if (isinstance(instr, (Nonlin, Moment)) and instr.out in need
                        and any(v in reach for v in instr.params)):
                    raise ProgramValueError(
                        f"grad: the scalar {c.var.name} enters `{format_instruction(instr)}` "
                        f"as a Nonlin+/Moment parameter; the gradient with respect to it "
                        f"flows through parameters only with through_scalars=True")
                reach.add(instr.out)


def _ones_like(x: Vector) -> Vector:
    return x * 0 + 1


def _mean(v: Vector) -> Scalar:
    from .program import mean

    return mean(v)


def _inner_or_mean(a: Vector, b: Vector) -> Scalar:
    from .program import inner

    return inner(a, b)
