"""A repeated computation is recorded once (common-subexpression elimination while the
program is traced), and a second name becomes an alias.

References are independent of the code under test: closed forms (𝔼 relu(Z)² = σ²/2,
𝔼[ZZ'] of a MatMul) and the finite-width run recomputed in numpy from the sampled
matrix and vectors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy

import tensorprog as tp
from tensorprog.core.ir import MatMul, Nonlin


def _counts(p: tp.Program) -> dict[type, int]:
    out: dict[type, int] = {}
    for ins in p.instructions:
        out[type(ins)] = out.get(type(ins), 0) + 1
    return out


def test_repeated_operations_are_one_instruction():
    p = tp.Program("cse")
    W, x, y = p.matrix("W"), p.vector("x"), p.vector("y")
    assert (W @ x) == (W @ x) and (W.T @ x) == (W.T @ x) and (W.T @ x) != (W @ x)
    assert tp.relu(x) == tp.relu(x) and tp.relu(x) != tp.relu(y) and tp.relu(x) != tp.tanh(x)
    assert 2 * x == x * 2 == x * 2.0 == np.float64(2.0) * x  # the same body 2*x0
    assert x + y == x + y and x + y != y + x  # operand order is kept
    assert tp.mean(x) == tp.mean(x) and tp.inner(x, y) == tp.inner(x, y)
    c = p.scalar("c", 0.5)
    assert c * c == c * c and tp.relu(x) * c == tp.relu(x) * c
    n = len(p)
    assert tp.mean(tp.relu(W @ x) ** 2) == tp.mean(tp.relu(W @ x) ** 2) and len(p) == n + 3
    assert _counts(p)[MatMul] == 2


def test_floating_constants_merge_only_when_equal():
    p = tp.Program("floats")
    x = p.vector("x")
    assert 0.1 * x == 0.1 * x
    assert 0.1 * x != np.nextafter(0.1, 1.0) * x  # one ulp apart: two functions
    assert 0.3 * x != (0.1 + 0.2) * x
    assert x * -0.0 == x * 0.0


def test_initial_objects_are_always_new():
    p = tp.Program("inits")
    assert p.matrix() != p.matrix() and p.vector() != p.vector()
    assert p.scalar(value=1.0) != p.scalar(value=1.0)
    assert len(p) == 6


def test_functions_with_other_names_or_bodies_are_not_merged():
    p = tp.Program("fns")
    h = p.vector("h")
    u = sympy.Symbol("u", real=True)
    myrelu = tp.Nonlinearity("myrelu", sympy.Max(0, u), [u])
    assert myrelu(h) != tp.relu(h)  # the same function under another name prints differently
    a = tp.nonlin(lambda t: sympy.tanh(2 * t), h, fn_name="g")
    b = tp.nonlin(lambda t: sympy.tanh(2 * t), h, fn_name="g")  # traced again: same key
    c = tp.nonlin(lambda t: sympy.tanh(3 * t), h, fn_name="g")
    assert a == b and a != c


def test_a_second_name_is_an_alias():
    p = tp.Program("alias")
    W, x = p.matrix("W", var=2.0), p.vector("x")
    h = W.matmul(x, name="h")
    g = W.matmul(x, name="g")
    a = tp.relu(h, name="a")
    b = tp.relu(g, name="b")
    k = tp.mean(a * a, name="k")
    k2 = tp.mean(b * b, name="k2")
    assert g == h and b == a and k2 == k and len(p) == 6
    assert p.aliases == {"g": "h", "b": "a", "k2": "k"}
    assert p["g"] == h and p["k2"].name == "k" and "g" in p
    assert "g =" not in str(p) and "b =" not in str(p) and "k2" not in str(p)
    lim = p.limit()
    assert lim["k2"] == lim["k"] == pytest.approx(1.0, abs=1e-12)  # 𝔼 relu(Z)², σ² = 2: σ²/2
    sim = p.simulate(64, seed=3)
    ref = np.mean(np.maximum(sim.matrix("W") @ sim.vector("x"), 0) ** 2)
    assert sim["k2"] == sim["k"] == pytest.approx(ref, rel=1e-12)
    assert np.array_equal(sim.vector("g"), sim.vector("h"))
    with pytest.raises(tp.ProgramValueError, match="already used"):
        tp.relu(h, name="x")  # a name of another variable
    with pytest.raises(tp.ProgramValueError, match="name must be"):
        tp.relu(h, name="a b")
    assert tp.relu(h, name="a") == a  # its own name again: the same variable
    assert p.aliases == {"g": "h", "b": "a", "k2": "k"}


def test_aliases_survive_save_and_load(tmp_path):
    p = tp.Program("saved")
    x = p.vector("x")
    tp.mean(tp.relu(x), name="m")
    tp.mean(tp.relu(x, name="r2"), name="m2")
    path = tmp_path / "p.json"
    p.save(path)
    q = tp.load(path)
    assert str(q) == str(p) and q.aliases == p.aliases == {"r2": "x1", "m2": "m"}
    assert q.limit()["m2"] == pytest.approx(1 / np.sqrt(2 * np.pi), abs=1e-12)  # 𝔼 relu(Z)


def test_a_file_with_a_repeated_instruction_loads_with_an_alias(tmp_path):
    """A program saved before computations were merged (two `relu(x)` lines) loads; the
    second name is an alias."""
    p = tp.Program("old")
    tp.relu(p.vector("x"), name="a")
    data = json.loads(tp.io.dumps(p))
    data["program"]["instructions"].append(dict(data["program"]["instructions"][-1], out="b"))
    q = tp.io.loads(json.dumps(data))
    assert len(q) == 2 and q.aliases == {"b": "a"}


def test_derivations_are_not_padded():
    """⟨relu(Wx), relu(Wx)⟩ written with the computation repeated: one Ẑ, and the limit is
    σ²/2·𝔼x² (closed form); the LaTeX and the printed program have one MatMul."""
    p = tp.Program("pad")
    W, x = p.matrix("W", var=3.0), p.vector("x", var=2.0)
    k = tp.inner(tp.relu(W @ x), tp.relu(W @ x), name="k")
    assert str(p).count("@") == 1 and len(p) == 5  # W, x, W@x, relu, k and nothing else
    assert p.latex().count(r"\operatorname{relu}") == 1
    lim = p.limit()
    assert lim[k] == pytest.approx(3.0, abs=1e-12)  # σ² = 3·2 = 6, 𝔼 relu² = 3
    assert sum(isinstance(i, Nonlin) for i in p.instructions) == 1


def test_grad_of_a_program_with_repeats():
    """tp.grad on f = ⟨v, tanh(Wx)⟩ with tanh(Wx) written twice (one instruction):
    ⟨dx, dx⟩ matches the gradient written in numpy at finite width."""
    p = tp.Program("grad")
    W, x, v = p.matrix("W"), p.vector("x"), p.vector("v")
    tp.tanh(W @ x)
    f = tp.inner(v, tp.tanh(W @ x), name="f")
    dx = tp.grad(f, x)
    k = tp.mean(dx * dx, name="k")
    sim = p.simulate(200, seed=1)
    Wm, xv, vv = sim.matrix("W"), sim.vector("x"), sim.vector("v")
    d = Wm.T @ (vv * (1 - np.tanh(Wm @ xv) ** 2))  # n·∂f/∂x
    assert sim[k] == pytest.approx(np.mean(d * d), rel=1e-10)


def test_a_bad_alias_in_a_file_is_a_format_error():
    p = tp.Program("bad")
    tp.relu(p.vector("x"), name="a")
    data = json.loads(tp.io.dumps(p))
    for aliases, msg in (
        ([["b", "nowhere"]], "not defined earlier"),
        ([["x", "a"]], "already used"),
        (["b"], r"must be \[alias, name\]"),
    ):
        data["program"]["aliases"] = aliases
        with pytest.raises(tp.FormatError, match=msg) as err:
            tp.io.loads(json.dumps(data))
        assert "alias 0" in str(err.value)
