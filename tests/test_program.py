"""Tests of the tracing DSL (:mod:`tensorprog.dsl.program`), the IR and the nonlinearities.

Issue "Foundation" acceptance, part 1 (every DSL operation) and part 2 (every
validation error). The simulator is tested in ``test_simulate.py``.

References are independent of the code under test: numpy/scipy implementations of
every nonlinearity written here (``scipy.special.erf``, ``x Φ(x)`` via
``scipy.stats.norm.cdf``, ...), closed-form derivatives, and finite differences.

Tolerances
----------
* Function values: the library evaluates a lambdified sympy body, the reference a
  different formula of the same function; both are accurate to a few ulp of the
  quantities involved, so ``|a - b| <= 64 u (1 + |b|)`` (``u`` = unit roundoff) is a
  rounding bound with a safety factor, not a fitted number.
* Finite differences: the 5-point stencil ``(f(x-2h) - 8f(x-h) + 8f(x+h) - f(x+2h))/12h``
  has truncation error ``<= h⁴ M₅/30`` and rounding error ``<= 1.5 u' M₀/h`` with
  ``M_k = max |f^{(k)}|`` on the grid and ``u'`` the accuracy of one reference evaluation;
  the bound is computed from per-function ``M₀, M₅`` stated in ``_FD_BOUNDS``.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import sympy
from scipy import special, stats

import tensorprog as tp

U = np.finfo(float).eps / 2  # unit roundoff


def _close(a, b, factor=64.0):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.all(np.abs(a - b) <= factor * U * (1.0 + np.abs(b)))


# --------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------

REF = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "erf": special.erf,
    "sigmoid": special.expit,
    "gelu": lambda z: z * stats.norm.cdf(z),
    "sin": np.sin,
    "cos": np.cos,
    "abs": np.abs,
    "step": lambda z: np.heaviside(z, 0.5),
    "identity": lambda z: np.asarray(z, float) * 1.0,
    "sqrt": np.sqrt,
    "exp": np.exp,
}

# Closed-form derivatives, written independently.
DREF = {
    "relu": lambda z: np.heaviside(z, 0.5),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "erf": lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-(z**2)),
    "sigmoid": lambda z: special.expit(z) * (1.0 - special.expit(z)),
    "gelu": lambda z: stats.norm.cdf(z) + z * stats.norm.pdf(z),
    "sin": np.cos,
    "cos": lambda z: -np.sin(z),
    "abs": np.sign,
    "identity": lambda z: np.ones_like(z),
    "sqrt": lambda z: 0.5 / np.sqrt(z),
    "exp": np.exp,
}

# A grid avoiding the kinks/jumps at 0 (relu, abs, step) and, for sqrt, x <= 0.
GRID = np.concatenate([np.linspace(-6.0, -0.05, 41), np.linspace(0.05, 6.0, 41)])
POS_GRID = np.linspace(0.05, 36.0, 81)


def _grid(name):
    return POS_GRID if name == "sqrt" else GRID


# Derivative check domain and bounds (M0 = max|f|, M5 = max|f^(5)| there; generous).
FD_GRID = np.concatenate([np.linspace(-3.0, -0.1, 30), np.linspace(0.1, 3.0, 30)])
FD_POS = np.linspace(0.5, 4.0, 30)
_FD_BOUNDS = {  # name: (M0, M5) over the grid widened by the stencil's 2h = 0.002
    "relu": (3.01, 0.0),  # piecewise linear, grid stays >= 2h away from the kink
    "abs": (3.01, 0.0),
    "identity": (3.01, 0.0),
    "tanh": (1.0, 16.0),  # max |tanh^(5)| = 16 (at 0)
    "erf": (1.0, 14.0),  # 2/√π max|H_4(x) e^{-x²}| = 13.54
    "sigmoid": (1.0, 0.25),  # max |σ^(5)| = 1/4 (at 0)
    "gelu": (3.01, 3.0),  # x Φ(x): max |gelu^(5)| = 2.84 on |x| <= 3
    "sin": (1.0, 1.0),
    "cos": (1.0, 1.0),
    "exp": (math.exp(3.01), math.exp(3.01)),
    "sqrt": (2.01, 105 / 32 * 0.498**-4.5),  # |d⁵ √x| = 105/32 x^{-9/2}
}


def _fd(f, z, h):
    return (f(z - 2 * h) - 8 * f(z - h) + 8 * f(z + h) - f(z + 2 * h)) / (12 * h)


# --------------------------------------------------------------------------------------
# Construction of initial objects
# --------------------------------------------------------------------------------------


def test_initial_objects_are_recorded_with_their_law():
    p = tp.Program("init")
    W = p.matrix("W", var=2.0)
    x = p.vector("x")
    y = p.vector("y", mean=0.5, var=2.0, cov={x: 0.3})
    c = p.scalar("c", 0.25)
    assert isinstance(W, tp.Matrix) and isinstance(x, tp.Vector) and isinstance(c, tp.Scalar)
    assert W.variance == 2.0
    iw, iy, ic = W.instruction, y.instruction, c.instruction
    assert type(iw).__name__ == "InitMatrix" and iw.var == 2.0
    assert type(iy).__name__ == "InitVector"
    assert (iy.mean, iy.var) == (0.5, 2.0)
    assert [(v.name, cv) for v, cv in iy.cov] == [("x", 0.3)]
    assert type(ic).__name__ == "InitScalar" and float(ic.value) == 0.25
    np.testing.assert_array_equal(p.initial_covariance, [[1.0, 0.3], [0.3, 2.0]])
    np.testing.assert_array_equal(p.initial_mean, [0.0, 0.5])
    assert len(p) == 4 and [i.out.name for i in p] == ["W", "x", "y", "c"]


def test_vectors_gives_jointly_gaussian_handles_with_covariance_K():
    K = np.array([[1.0, 0.5, -0.2], [0.5, 2.0, 0.0], [-0.2, 0.0, 0.7]])
    p = tp.Program("vs")
    xs = p.vectors("xi", cov=K, mean=[0.0, 1.0, -1.0])
    assert isinstance(xs, list) and len(xs) == 3
    assert [x.name for x in xs] == ["xi_0", "xi_1", "xi_2"]
    assert all(isinstance(x, tp.Vector) for x in xs)
    np.testing.assert_array_equal(p.initial_covariance, K)
    np.testing.assert_array_equal(p.initial_mean, [0.0, 1.0, -1.0])
    p.check()


def test_scalar_may_depend_on_width():
    p = tp.Program("sc")
    r = p.scalar("r", tp.n**-0.5)
    e = p.scalar("e", 1 + 3 / tp.n)
    assert isinstance(tp.n, sympy.Symbol) and str(tp.n) == "n"
    assert sympy.simplify(r.instruction.value - tp.n**-0.5) == 0
    assert sympy.limit(r.instruction.value, tp.n, sympy.oo) == 0
    assert sympy.limit(e.instruction.value, tp.n, sympy.oo) == 1
    p.check()


# --------------------------------------------------------------------------------------
# MatMul
# --------------------------------------------------------------------------------------


def test_matmul_and_transpose_are_recorded():
    p = tp.Program("mm")
    W = p.matrix("W")
    x, y = p.vector("x"), p.vector("y")
    h = W @ x
    u = W.T @ y
    assert isinstance(h, tp.Vector) and isinstance(u, tp.Vector)
    ih, iu = h.instruction, u.instruction
    assert type(ih).__name__ == "MatMul" and type(iu).__name__ == "MatMul"
    assert (ih.matrix.name, ih.arg.name, ih.transpose) == ("W", "x", False)
    assert (iu.matrix.name, iu.arg.name, iu.transpose) == ("W", "y", True)
    assert [v.name for v in ih.inputs] == ["W", "x"]
    # MatMul of a MatMul output and of a Nonlin output.
    z = W.T @ tp.tanh(W @ h)
    assert z.instruction.transpose is True


# --------------------------------------------------------------------------------------
# Arithmetic: + - * / ** and unary minus, between every kind of operand
# --------------------------------------------------------------------------------------

# Values at which the recorded functions are evaluated (positive where ** needs it).
A_VAL = np.array([0.3, 1.7, 2.2, 0.9])
B_VAL = np.array([1.1, 0.4, 3.0, 2.5])
C_VAL = 0.7
D_VAL = 1.3

# (label, build(x, y, c, d), kind, reference(a, b, c, d))
ARITH = [
    ("vec+vec", lambda x, y, c, d: x + y, "vector", lambda a, b, c, d: a + b),
    ("vec-vec", lambda x, y, c, d: x - y, "vector", lambda a, b, c, d: a - b),
    ("vec*vec", lambda x, y, c, d: x * y, "vector", lambda a, b, c, d: a * b),
    ("vec/vec", lambda x, y, c, d: x / y, "vector", lambda a, b, c, d: a / b),
    ("vec**vec", lambda x, y, c, d: x**y, "vector", lambda a, b, c, d: a**b),
    ("vec+scal", lambda x, y, c, d: x + c, "vector", lambda a, b, c, d: a + c),
    ("scal+vec", lambda x, y, c, d: c + x, "vector", lambda a, b, c, d: c + a),
    ("vec-scal", lambda x, y, c, d: x - c, "vector", lambda a, b, c, d: a - c),
    ("scal-vec", lambda x, y, c, d: c - x, "vector", lambda a, b, c, d: c - a),
    ("vec*scal", lambda x, y, c, d: x * c, "vector", lambda a, b, c, d: a * c),
    ("scal*vec", lambda x, y, c, d: c * x, "vector", lambda a, b, c, d: c * a),
    ("vec/scal", lambda x, y, c, d: x / c, "vector", lambda a, b, c, d: a / c),
    ("scal/vec", lambda x, y, c, d: c / x, "vector", lambda a, b, c, d: c / a),
    ("vec**scal", lambda x, y, c, d: x**c, "vector", lambda a, b, c, d: a**c),
    ("scal**vec", lambda x, y, c, d: c**x, "vector", lambda a, b, c, d: c**a),
    ("vec+num", lambda x, y, c, d: x + 2.5, "vector", lambda a, b, c, d: a + 2.5),
    ("num+vec", lambda x, y, c, d: 2.5 + x, "vector", lambda a, b, c, d: 2.5 + a),
    ("vec-num", lambda x, y, c, d: x - 2, "vector", lambda a, b, c, d: a - 2),
    ("num-vec", lambda x, y, c, d: 3 - x, "vector", lambda a, b, c, d: 3 - a),
    ("vec*num", lambda x, y, c, d: x * 1.5, "vector", lambda a, b, c, d: a * 1.5),
    ("num*vec", lambda x, y, c, d: 1.5 * x, "vector", lambda a, b, c, d: 1.5 * a),
    ("vec/num", lambda x, y, c, d: x / 4, "vector", lambda a, b, c, d: a / 4),
    ("num/vec", lambda x, y, c, d: 2 / x, "vector", lambda a, b, c, d: 2 / a),
    ("vec**num", lambda x, y, c, d: x**2, "vector", lambda a, b, c, d: a**2),
    ("vec**frac", lambda x, y, c, d: x**0.5, "vector", lambda a, b, c, d: np.sqrt(a)),
    ("num**vec", lambda x, y, c, d: 2**x, "vector", lambda a, b, c, d: 2.0**a),
    ("-vec", lambda x, y, c, d: -x, "vector", lambda a, b, c, d: -a),
    ("scal+scal", lambda x, y, c, d: c + d, "scalar", lambda a, b, c, d: c + d),
    ("scal-scal", lambda x, y, c, d: c - d, "scalar", lambda a, b, c, d: c - d),
    ("scal*scal", lambda x, y, c, d: c * d, "scalar", lambda a, b, c, d: c * d),
    ("scal/scal", lambda x, y, c, d: c / d, "scalar", lambda a, b, c, d: c / d),
    ("scal**scal", lambda x, y, c, d: c**d, "scalar", lambda a, b, c, d: c**d),
    ("scal+num", lambda x, y, c, d: c + 1, "scalar", lambda a, b, c, d: c + 1),
    ("num-scal", lambda x, y, c, d: 1 - c, "scalar", lambda a, b, c, d: 1 - c),
    ("scal*num", lambda x, y, c, d: c * 3.0, "scalar", lambda a, b, c, d: c * 3.0),
    ("num/scal", lambda x, y, c, d: 2 / c, "scalar", lambda a, b, c, d: 2 / c),
    ("scal**num", lambda x, y, c, d: c**2, "scalar", lambda a, b, c, d: c**2),
    ("num**scal", lambda x, y, c, d: 3**c, "scalar", lambda a, b, c, d: 3.0**c),
    ("-scal", lambda x, y, c, d: -c, "scalar", lambda a, b, c, d: -c),
    ("sqrt(scal)", lambda x, y, c, d: tp.sqrt(c), "scalar", lambda a, b, c, d: math.sqrt(c)),
]


def _small_program():
    p = tp.Program("arith")
    x, y = p.vector("x"), p.vector("y")
    c, d = p.scalar("c", C_VAL), p.scalar("d", D_VAL)
    return p, x, y, c, d


def _evaluate_recorded(instr):
    """Evaluate the recorded coordinatewise function at the test values."""
    vals = {"x": A_VAL, "y": B_VAL, "c": C_VAL, "d": D_VAL}
    args = [vals[v.name] for v in getattr(instr, "args", ())]
    params = [vals[v.name] for v in instr.params]
    return instr.fn.numpy(*args, *params)


@pytest.mark.parametrize("label,build,kind,ref", ARITH, ids=[a[0] for a in ARITH])
def test_arithmetic_records_one_instruction_with_the_right_function(label, build, kind, ref):
    p, x, y, c, d = _small_program()
    before = len(p)
    out = build(x, y, c, d)
    assert len(p) == before + 1, "each operation appends exactly one instruction"
    instr = out.instruction
    if kind == "vector":
        assert isinstance(out, tp.Vector)
        assert type(instr).__name__ == "Nonlin"
        assert all(v.kind == "vector" for v in instr.args)
    else:
        assert isinstance(out, tp.Scalar)
        assert type(instr).__name__ == "ScalarFn"
    assert all(v.kind == "scalar" for v in instr.params)
    got = _evaluate_recorded(instr)
    want = ref(A_VAL, B_VAL, C_VAL, D_VAL)
    assert np.shape(np.broadcast_to(got, np.shape(want))) == np.shape(want)
    assert _close(np.broadcast_to(got, np.shape(want)), want), (got, want)
    p.check()


def test_arithmetic_wires_operands_in_order():
    p, x, y, c, d = _small_program()
    z = y - x  # order matters
    assert [v.name for v in z.instruction.args] == ["y", "x"]
    assert _close(_evaluate_recorded(z.instruction), B_VAL - A_VAL)
    w = c / x
    assert [v.name for v in w.instruction.args] == ["x"]
    assert [v.name for v in w.instruction.params] == ["c"]
    s = d - c
    assert [v.name for v in s.instruction.params] == ["d", "c"]
    assert _close(_evaluate_recorded(s.instruction), D_VAL - C_VAL)


def test_unary_plus_is_the_same_handle():
    p, x, y, c, d = _small_program()
    n0 = len(p)
    assert (+x) is x and (+c) is c and len(p) == n0


# --------------------------------------------------------------------------------------
# Builtin nonlinearities
# --------------------------------------------------------------------------------------

NAMES = [
    "relu",
    "tanh",
    "erf",
    "sigmoid",
    "gelu",
    "sin",
    "cos",
    "abs",
    "step",
    "identity",
    "sqrt",
    "exp",
]


@pytest.mark.parametrize("name", NAMES)
def test_builtin_applied_to_vector_records_a_nonlin(name):
    fn = getattr(tp, name)
    assert tp.get_nonlinearity(name) is fn
    p = tp.Program("nl")
    x = p.vector("x")
    h = fn(x, name=f"out_{name}")
    assert isinstance(h, tp.Vector) and h.name == f"out_{name}"
    instr = h.instruction
    assert type(instr).__name__ == "Nonlin"
    assert [v.name for v in instr.args] == ["x"] and instr.params == ()
    assert p[f"out_{name}"] == h
    z = _grid(name)
    assert _close(np.broadcast_to(instr.fn.numpy(z), z.shape), REF[name](z))


@pytest.mark.parametrize("name", NAMES)
def test_numpy_form_matches_independent_reference(name):
    f = getattr(tp, name)
    z = _grid(name)
    got = np.broadcast_to(np.asarray(f.numpy(z), float), z.shape)
    assert _close(got, REF[name](z)), np.max(np.abs(got - REF[name](z)))


def test_step_and_sign_conventions_at_zero():
    # Documented conventions: step(0) = 1/2 (np.heaviside(0, 0.5)), sign(0) = 0.
    assert float(tp.step.numpy(np.array(0.0))) == 0.5
    assert float(tp.sign.numpy(np.array(0.0))) == 0.0
    assert float(tp.relu.numpy(np.array(0.0))) == 0.0


def test_gelu_is_the_exact_erf_form_not_the_tanh_approximation():
    z = np.array([-2.0, -0.5, 0.7, 1.9])
    tanh_approx = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    got = tp.gelu.numpy(z)
    assert _close(got, z * stats.norm.cdf(z))
    assert np.max(np.abs(got - tanh_approx)) > 1e-5


def test_derivatives_are_builtins_where_they_should_be():
    assert tp.relu.derivative() is tp.step
    assert tp.abs.derivative() is tp.sign
    assert tp.sin.derivative() is tp.cos
    assert tp.exp.derivative() is tp.exp


@pytest.mark.parametrize("name", sorted(DREF))
def test_derivative_matches_closed_form(name):
    d = getattr(tp, name).derivative()
    z = POS_GRID if name == "sqrt" else GRID
    got = np.broadcast_to(np.asarray(d.numpy(z), float), z.shape)
    assert _close(got, DREF[name](z), factor=256.0), np.max(np.abs(got - DREF[name](z)))


def test_erf_derivative_formula():
    z = GRID
    got = tp.erf.derivative().numpy(z)
    assert _close(got, 2.0 / math.sqrt(math.pi) * np.exp(-(z**2)))


@pytest.mark.parametrize("name", sorted(_FD_BOUNDS))
def test_derivative_matches_finite_differences_of_the_reference(name):
    h = 1e-3
    z = FD_POS if name == "sqrt" else FD_GRID
    M0, M5 = _FD_BOUNDS[name]
    u_ref = 8 * U  # one reference evaluation is accurate to a few ulp
    bound = h**4 / 30 * M5 + 1.5 * u_ref * M0 / h
    fd = _fd(REF[name], z, h)
    got = np.broadcast_to(np.asarray(getattr(tp, name).derivative().numpy(z), float), z.shape)
    err = np.max(np.abs(got - fd))
    assert err <= bound, (err, bound)


def test_step_derivative_is_a_distribution_not_a_number():
    d = tp.step.derivative()
    assert d.is_distribution
    with pytest.raises(tp.TensorProgramError):
        d.numpy(np.array([1.0]))


# --------------------------------------------------------------------------------------
# Moments and custom nonlinearities
# --------------------------------------------------------------------------------------


def test_mean_and_inner_record_moments():
    p = tp.Program("mom")
    x, y = p.vector("x"), p.vector("y")
    m = tp.mean(x, name="m")
    s = tp.inner(x, y, name="s")
    ss = tp.inner(x, x, name="ss")
    for h in (m, s, ss):
        assert isinstance(h, tp.Scalar)
        assert type(h.instruction).__name__ == "Moment"
    assert [v.name for v in m.instruction.args] == ["x"]
    assert _close(m.instruction.fn.numpy(A_VAL), A_VAL)
    assert [v.name for v in s.instruction.args] == ["x", "y"]
    assert _close(s.instruction.fn.numpy(A_VAL, B_VAL), A_VAL * B_VAL)
    assert [v.name for v in ss.instruction.args] == ["x", "x"]
    # Moment of a composite vector
    k = tp.mean(tp.tanh(x) ** 2 * y, name="k")
    assert type(k.instruction).__name__ == "Moment"
    p.check()


def test_custom_nonlin_of_two_vectors():
    p = tp.Program("custom")
    W = p.matrix("W")
    x, y = p.vector("x"), p.vector("y")
    h, u = W @ x, W.T @ y
    f = tp.nonlin(lambda a, b: a * sympy.tanh(b), h, u, name="phi")
    assert isinstance(f, tp.Vector) and f.name == "phi" and p["phi"] == f
    instr = f.instruction
    assert type(instr).__name__ == "Nonlin"
    assert [v.name for v in instr.args] == [h.name, u.name] and instr.params == ()
    assert _close(instr.fn.numpy(A_VAL, B_VAL), A_VAL * np.tanh(B_VAL))
    # its partial derivatives are the closed forms
    assert _close(instr.fn.derivative(0).numpy(A_VAL, B_VAL), np.tanh(B_VAL))
    assert _close(instr.fn.derivative(1).numpy(A_VAL, B_VAL), A_VAL * (1 - np.tanh(B_VAL) ** 2))
    p.check()


@pytest.mark.parametrize("scalar_first", [False, True])
def test_custom_nonlin_with_a_scalar_parameter(scalar_first):
    p = tp.Program("custom+")
    h, u = p.vector("h"), p.vector("u")
    c = p.scalar("c", C_VAL)
    if scalar_first:
        f = tp.nonlin(lambda s, a, b: s * a * sympy.tanh(b), c, h, u, name="phi")
    else:
        f = tp.nonlin(lambda a, b, s: s * a * sympy.tanh(b), h, u, c, name="phi")
    instr = f.instruction
    assert type(instr).__name__ == "Nonlin"
    assert [v.name for v in instr.args] == ["h", "u"]
    assert [v.name for v in instr.params] == ["c"]
    got = instr.fn.numpy(A_VAL, B_VAL, C_VAL)
    assert _close(got, C_VAL * A_VAL * np.tanh(B_VAL))
    p.check()


# --------------------------------------------------------------------------------------
# Names, lookup, printing, graph, check
# --------------------------------------------------------------------------------------


def test_name_on_every_instruction_creating_call_and_lookup():
    p = tp.Program("names")
    made = {
        "W": p.matrix("W"),
        "x": p.vector("x"),
        "y": p.vector("y", cov=None),
        "c": p.scalar("c", 1.0),
    }
    xs = p.vectors("xi", cov=np.eye(2))
    made.update({"xi_0": xs[0], "xi_1": xs[1]})
    made["h"] = made["W"].matmul(made["x"], name="h")
    made["u"] = made["W"].T.matmul(made["y"], name="u")
    made["r"] = tp.relu(made["h"], name="r")
    made["t"] = tp.tanh(made["u"], name="t")
    made["phi"] = tp.nonlin(lambda a, b: a * b, made["r"], made["t"], name="phi")
    made["m"] = tp.mean(made["phi"], name="m")
    made["k"] = tp.inner(made["r"], made["t"], name="k")
    made["q"] = tp.sqrt(made["c"], name="q")  # scalar function with a name
    for name, h in made.items():
        assert h.name == name
        got = p[name]
        assert got == h and type(got) is type(h)
        assert got.instruction is h.instruction
        assert name in p
    assert "nope" not in p


def test_generated_names_are_unique_and_avoid_user_names():
    p = tp.Program("gen")
    x = p.vector("x")
    # take names the generator might produce next
    p.vector("h1")
    p.vector("x2")
    hs = [tp.tanh(x), x * 2, x + x, tp.mean(x), p.matrix() @ x, p.vector(), p.scalar(value=1)]
    names = [i.out.name for i in p]
    assert len(names) == len(set(names))
    for h in hs:
        assert p[h.name] == h


GOLDEN_ATAV = """\
Program 'AtAv'
  A : matrix n×n, entries N(0, 2/n)
  v : vector, coordinates N(0, 1)
  h1 = A @ v
  h2 = A.T @ h1
  k = mean(h2*v)"""

GOLDEN_DEMO = """\
Program 'demo'
  W : matrix n×n, entries N(0, 2/n)
  x : vector, coordinates N(0, 1)
  y : vector, coordinates N(0.5, 2), cov x: 0.3
  h1 = W @ x
  h2 = W.T @ y
  g = relu(h1)
  phi = phi(g, h2)
  k = mean(h1*phi)
  c : scalar = 1/2
  e : scalar = 1/n
  s3 = c*k"""


def test_printing_golden_atav():
    p = tp.Program("AtAv")
    A, v = p.matrix("A", var=2.0), p.vector("v")
    tp.inner(v, A.T @ (A @ v), name="k")
    assert str(p) == GOLDEN_ATAV


def test_printing_golden_demo_one_line_per_instruction():
    p = tp.Program("demo")
    W = p.matrix("W", var=2.0)
    x = p.vector("x")
    y = p.vector("y", mean=0.5, var=2.0, cov={x: 0.3})
    h = W @ x
    u = W.T @ y
    g = tp.relu(h, name="g")
    f = tp.nonlin(lambda a, b: a * sympy.tanh(b), g, u, name="phi")
    k = tp.inner(f, h, name="k")
    c = p.scalar("c", sympy.Rational(1, 2))
    p.scalar("e", 1 / tp.n)
    _ = c * k
    assert str(p) == GOLDEN_DEMO
    assert len(str(p).splitlines()) == len(p) + 1


def test_printing_float_scalar_shows_its_value():
    p = tp.Program("s")
    p.scalar("c", 0.5)
    line = str(p).splitlines()[1]
    lhs, rhs = line.split("=")
    assert lhs.strip() == "c : scalar"
    assert float(rhs) == 0.5


def test_graph_is_derived_with_argument_positions():
    p = tp.Program("g")
    W = p.matrix("W")
    x = p.vector("x")
    c = p.scalar("c", 2.0)
    h = W @ x
    sq = tp.nonlin(lambda a, b: a * b, x, x, name="sq")  # Nonlin(x, x)
    xx = x * x
    ip = tp.inner(h, h, name="ip")
    f = tp.nonlin(lambda a, b, s: s * a + b, h, x, c, name="f")
    g = p.graph
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == [i.out.name for i in p]
    for i in p:
        assert g.nodes[i.out.name]["instruction"] is i
        assert g.nodes[i.out.name]["kind"] == i.out.kind
    assert g.edges["W", h.name]["positions"] == [0]
    assert g.edges["x", h.name]["positions"] == [1]
    assert g.edges["x", "sq"]["positions"] == [0, 1]
    assert g.edges["x", xx.name]["positions"] == [0, 1]
    assert g.edges[h.name, ip.name]["positions"] == [0, 1]
    assert g.edges[h.name, f.name]["positions"] == [0]
    assert g.edges["x", "f"]["positions"] == [1]
    assert g.edges["c", "f"]["positions"] == [2]
    # Edges correspond exactly to instruction inputs (no more, no fewer).
    want = {(v.name, i.out.name) for i in p for v in i.inputs}
    assert set(g.edges) == want
    assert nx.is_directed_acyclic_graph(g)
    order = {i.out.name: k for k, i in enumerate(p)}
    assert all(order[a] < order[b] for a, b in g.edges)
    # the graph follows later appends (no stale cache)
    m = tp.mean(sq, name="m")
    assert "m" in p.graph.nodes and p.graph.has_edge("sq", "m")
    assert m.name == "m"


def _everything_program():
    p = tp.Program("everything")
    W = p.matrix("W", var=2.0)
    V = p.matrix("V", var=0.5)
    x = p.vector("x")
    y = p.vector("y", mean=0.1, var=2.0, cov={x: 0.3})
    xs = p.vectors("xi", cov=[[1.0, 0.2], [0.2, 1.0]], mean=[0.0, 1.0])
    c = p.scalar("c", 0.5)
    r = p.scalar("r", tp.n**-0.5)
    h = W @ x
    u = W.T @ y
    g = tp.relu(h) + c * u - r / 2
    for name in NAMES:
        getattr(tp, name)(tp.abs(g) + 1)
    f = tp.nonlin(lambda a, b, s: a * sympy.tanh(b) * s, h, u, c, name="phi")
    k = tp.mean(g * g, name="k")
    s = tp.inner(f, V @ xs[0], name="s")
    t = (k * c - s / 2) ** 2 + tp.sqrt(k)
    return p, t


def test_check_passes_on_valid_programs():
    p, _ = _everything_program()
    assert p.check() is None
    assert tp.Program("empty").check() is None


# --------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------


def _fixture():
    p = tp.Program("P")
    W, V = p.matrix("W"), p.matrix("V")
    x, y = p.vector("x"), p.vector("y")
    c = p.scalar("c", 1.0)
    q = tp.Program("Q")
    xq, Wq = q.vector("xq"), q.matrix("Wq")
    return p, dict(W=W, V=V, x=x, y=y, c=c, xq=xq, Wq=Wq, q=q)


NAN, INF = float("nan"), float("inf")

# (id, call(p, h), tensorprog class, builtin, substrings the message must contain)
ERRORS = [
    # matrix @ matrix, vector @ vector
    ("W@V", lambda p, h: h["W"] @ h["V"], tp.ProgramTypeError, TypeError, ["W", "V"]),
    ("W@V.T", lambda p, h: h["W"] @ h["V"].T, tp.ProgramTypeError, TypeError, ["W", "V"]),
    ("W.T@V", lambda p, h: h["W"].T @ h["V"], tp.ProgramTypeError, TypeError, ["W", "V"]),
    ("x@y", lambda p, h: h["x"] @ h["y"], tp.ProgramTypeError, TypeError, ["x", "y"]),
    ("x@W", lambda p, h: h["x"] @ h["W"], tp.ProgramTypeError, TypeError, ["x", "W"]),
    ("W@c", lambda p, h: h["W"] @ h["c"], tp.ProgramTypeError, TypeError, ["W", "c"]),
    ("W+x", lambda p, h: h["W"] + h["x"], tp.ProgramTypeError, TypeError, ["W"]),
    # handles of different programs
    ("W@foreign", lambda p, h: h["W"] @ h["xq"], tp.ForeignHandleError, ValueError, ["xq", "Q"]),
    ("foreignW@x", lambda p, h: h["Wq"] @ h["x"], tp.ForeignHandleError, ValueError, ["x", "P"]),
    ("x+foreign", lambda p, h: h["x"] + h["xq"], tp.ForeignHandleError, ValueError, ["xq"]),
    ("c*foreign", lambda p, h: h["c"] * h["xq"], tp.ForeignHandleError, ValueError, ["xq"]),
    (
        "inner foreign",
        lambda p, h: tp.inner(h["x"], h["xq"]),
        tp.ForeignHandleError,
        ValueError,
        ["xq"],
    ),
    (
        "nonlin foreign",
        lambda p, h: tp.nonlin(lambda a, b: a * b, h["x"], h["xq"]),
        tp.ForeignHandleError,
        ValueError,
        ["xq"],
    ),
    (
        "relu foreign param",
        lambda p, h: tp.nonlin(lambda a, s: a * s, h["xq"], h["c"]),
        tp.ForeignHandleError,
        ValueError,
        ["c"],
    ),
    (
        "cov foreign",
        lambda p, h: p.vector("z", cov={h["xq"]: 0.1}),
        tp.ForeignHandleError,
        ValueError,
        ["xq", "z"],
    ),
    # non-PSD covariance
    (
        "vectors nonPSD",
        lambda p, h: p.vectors("xi", cov=[[1.0, 2.0], [2.0, 1.0]]),
        tp.NonPSDError,
        ValueError,
        ["xi", "positive semidefinite"],
    ),
    (
        "vectors nonsymmetric",
        lambda p, h: p.vectors("xi", cov=[[1.0, 0.5], [0.0, 1.0]]),
        tp.ProgramValueError,
        ValueError,
        ["xi", "symmetric"],
    ),
    (
        "vector cov nonPSD",
        lambda p, h: p.vector("z", var=1.0, cov={h["x"]: 1.5}),
        tp.NonPSDError,
        ValueError,
        ["z", "positive semidefinite"],
    ),
    # pairwise admissible (|0.3| <= √0.1 · 1) but jointly not PSD
    (
        "vector joint nonPSD",
        lambda p, h: p.vector("z", var=0.1, cov={h["x"]: 0.3, h["y"]: 0.3}),
        tp.NonPSDError,
        ValueError,
        ["z", "positive semidefinite"],
    ),
    # negative variance
    (
        "vector var<0",
        lambda p, h: p.vector("z", var=-1.0),
        tp.ProgramValueError,
        ValueError,
        ["z", "var"],
    ),
    (
        "matrix var<0",
        lambda p, h: p.matrix("M", var=-2.0),
        tp.ProgramValueError,
        ValueError,
        ["M", "var"],
    ),
    (
        "vectors var<0",
        lambda p, h: p.vectors("xs", cov=[[-1.0]]),
        tp.ProgramValueError,
        ValueError,
        ["xs"],
    ),
    # NaN / inf inputs
    (
        "vector mean nan",
        lambda p, h: p.vector("z", mean=NAN),
        tp.ProgramValueError,
        ValueError,
        ["z", "mean"],
    ),
    (
        "vector var inf",
        lambda p, h: p.vector("z", var=INF),
        tp.ProgramValueError,
        ValueError,
        ["z", "var"],
    ),
    (
        "matrix var nan",
        lambda p, h: p.matrix("M", var=NAN),
        tp.ProgramValueError,
        ValueError,
        ["M", "var"],
    ),
    ("scalar nan", lambda p, h: p.scalar("s", NAN), tp.ProgramValueError, ValueError, ["s"]),
    ("scalar inf", lambda p, h: p.scalar("s", INF), tp.ProgramValueError, ValueError, ["s"]),
    (
        "scalar np.inf",
        lambda p, h: p.scalar("s", np.float64("-inf")),
        tp.ProgramValueError,
        ValueError,
        ["s"],
    ),
    (
        "scalar diverging in n",
        lambda p, h: p.scalar("s", tp.n),
        tp.ProgramValueError,
        ValueError,
        ["s"],
    ),
    (
        "cov nan",
        lambda p, h: p.vector("z", cov={h["x"]: NAN}),
        tp.ProgramValueError,
        ValueError,
        ["z", "x"],
    ),
    (
        "vectors cov nan",
        lambda p, h: p.vectors("xn", cov=[[1.0, NAN], [NAN, 1.0]]),
        tp.ProgramValueError,
        ValueError,
        ["xn"],
    ),
    (
        "vectors cov inf",
        lambda p, h: p.vectors("xn", cov=[[INF]]),
        tp.ProgramValueError,
        ValueError,
        ["xn"],
    ),
    ("x+nan", lambda p, h: h["x"] + NAN, tp.ProgramValueError, ValueError, ["nan"]),
    ("x*inf", lambda p, h: h["x"] * INF, tp.ProgramValueError, ValueError, ["inf"]),
    ("nan*x", lambda p, h: NAN * h["x"], tp.ProgramValueError, ValueError, ["nan"]),
    ("x**nan", lambda p, h: h["x"] ** np.float64("nan"), tp.ProgramValueError, ValueError, ["nan"]),
    ("c+nan", lambda p, h: h["c"] + NAN, tp.ProgramValueError, ValueError, ["nan"]),
    ("inf/c", lambda p, h: INF / h["c"], tp.ProgramValueError, ValueError, ["inf"]),
    # Moment of a scalar
    ("mean(scalar)", lambda p, h: tp.mean(h["c"]), tp.ProgramTypeError, TypeError, ["c"]),
    (
        "inner(x, scalar)",
        lambda p, h: tp.inner(h["x"], h["c"]),
        tp.ProgramTypeError,
        TypeError,
        ["c"],
    ),
    ("mean(number)", lambda p, h: tp.mean(3.0), tp.ProgramTypeError, TypeError, ["3.0"]),
    # unknown names
    ('p["nope"]', lambda p, h: p["nope"], tp.UnknownNameError, KeyError, ["nope"]),
    (
        'get_nonlinearity("nope")',
        lambda p, h: tp.get_nonlinearity("nope"),
        tp.UnknownNameError,
        KeyError,
        ["nope", "relu"],
    ),
    # duplicate names, for every instruction-creating call
    ("dup vector", lambda p, h: p.vector("x"), tp.ProgramValueError, ValueError, ["'x'"]),
    ("dup matrix", lambda p, h: p.matrix("x"), tp.ProgramValueError, ValueError, ["'x'"]),
    ("dup scalar", lambda p, h: p.scalar("W", 1.0), tp.ProgramValueError, ValueError, ["'W'"]),
    (
        "dup vectors",
        lambda p, h: p.vectors("x", cov=[[1.0]]) and p.vectors("x", cov=[[1.0]]),
        tp.ProgramValueError,
        ValueError,
        ["'x_0'"],
    ),
    (
        "dup matmul",
        lambda p, h: h["W"].matmul(h["x"], name="y"),
        tp.ProgramValueError,
        ValueError,
        ["'y'"],
    ),
    (
        "dup matmul T",
        lambda p, h: h["W"].T.matmul(h["x"], name="y"),
        tp.ProgramValueError,
        ValueError,
        ["'y'"],
    ),
    ("dup relu", lambda p, h: tp.relu(h["x"], name="c"), tp.ProgramValueError, ValueError, ["'c'"]),
    ("dup mean", lambda p, h: tp.mean(h["x"], name="x"), tp.ProgramValueError, ValueError, ["'x'"]),
    (
        "dup inner",
        lambda p, h: tp.inner(h["x"], h["y"], name="V"),
        tp.ProgramValueError,
        ValueError,
        ["'V'"],
    ),
    (
        "dup nonlin",
        lambda p, h: tp.nonlin(lambda a: a**3, h["x"], name="y"),
        tp.ProgramValueError,
        ValueError,
        ["'y'"],
    ),
    # non-traceable custom nonlinearities (numpy / math / Python control flow)
    (
        "nonlin np.tanh",
        lambda p, h: tp.nonlin(lambda a: np.tanh(a), h["x"], name="bad"),
        tp.ProgramTypeError,
        TypeError,
        ["bad", "sympy"],
    ),
    (
        "nonlin np.maximum",
        lambda p, h: tp.nonlin(lambda a: np.maximum(a, 0), h["x"], name="bad"),
        tp.ProgramTypeError,
        TypeError,
        ["bad", "sympy"],
    ),
    (
        "nonlin math.exp",
        lambda p, h: tp.nonlin(lambda a: math.exp(a), h["x"], name="bad"),
        tp.ProgramTypeError,
        TypeError,
        ["bad", "sympy"],
    ),
    (
        "nonlin if",
        lambda p, h: tp.nonlin(lambda a: a if a > 0 else 0 * a, h["x"], name="bad"),
        tp.ProgramTypeError,
        TypeError,
        ["bad", "sympy"],
    ),
]


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_validation_errors(case):
    _, call, cls, builtin, needles = case
    p, h = _fixture()
    n_before, q_before = len(p), len(h["q"])
    with pytest.raises(cls) as info:
        call(p, h)
    err = info.value
    assert isinstance(err, tp.TensorProgramError)
    assert isinstance(err, builtin)
    msg = str(err)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    # Nothing was recorded by the failed call (a "dup vectors" call made one good call).
    extra = 1 if case[0] == "dup vectors" else 0
    assert len(p) == n_before + extra
    assert len(h["q"]) == q_before
    p.check()


def test_unknown_name_error_str_is_the_message_not_a_repr():
    p = tp.Program("P")
    with pytest.raises(KeyError) as info:
        p["nope"]
    assert str(info.value).startswith("program 'P' has no variable named 'nope'")


# --------------------------------------------------------------------------------------
# Regressions: library bugs found while writing these tests (fixed)
# --------------------------------------------------------------------------------------


def test_vectors_is_atomic_on_error():
    p = tp.Program("P")
    with pytest.raises(tp.ProgramValueError):
        p.vectors("xm", cov=np.eye(2), mean=[0.0, NAN])
    assert len(p) == 0, [i.out.name for i in p]


def test_vectors_is_atomic_on_duplicate_name():
    p = tp.Program("P")
    p.vector("xi_1")
    with pytest.raises(tp.ProgramValueError):
        p.vectors("xi", cov=np.eye(2))
    assert [i.out.name for i in p] == ["xi_1"]


def test_vectors_mean_of_wrong_length_is_a_tensorprog_error():
    p = tp.Program("P")
    with pytest.raises(tp.TensorProgramError, match="mean"):
        p.vectors("xi", cov=np.eye(2), mean=[0.0, 1.0, 2.0])


def test_lookup_with_a_foreign_handle_raises():
    p, q = tp.Program("P"), tp.Program("Q")
    p.vector("x")
    xq = q.vector("x")
    with pytest.raises(tp.ForeignHandleError):
        p[xq]
