"""``nn.stax`` layer combinators and ``nn.kernels(X, X2)`` cross-kernels.

References, none of which imports the code under test:

* neural-tangents 0.6.5 ``stax`` kernels, recorded by ``benchmarks/nt/stax_fixture.py`` in
  ``tests/data/nt_stax.json`` (cross-kernels, LayerNorm, residual FanOut/FanInSum blocks,
  every nonlinearity of the stax vocabulary);
* identities between networks that compute the same function of the same parameters
  (a block of the kernel of stacked inputs, a doubled skip connection = a doubled weight);
* a finite-width simulation of the same program.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy

import tensorprog as tp
from tensorprog import nn
from tensorprog.nn import stax

NT = json.loads((Path(__file__).parent / "data" / "nt_stax.json").read_text())
CASES = {c["name"]: c for c in NT["cases"]}


def build(specs):
    """The network of a fixture's layer specs (the fixture script reads them the same way)."""

    def layer(spec):
        kind, *args = spec
        if kind == "parallel":
            return stax.parallel(*[stax.serial(*map(layer, branch)) for branch in args[0]])
        return getattr(stax, kind)(*args)

    return stax.serial(*map(layer, specs))


def arr(x):
    return None if x is None else np.array(x, dtype=float)


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_fn_agrees_with_neural_tangents(name):
    """1e-10 (relative to max(1, |entry|): exp's entries reach 3.5e7) for exact entries,
    which every case but sigmoid_like and a LayerNorm after a Relu is (exp, rbf,
    leaky/AB-relu included); quadrature entries are within that + 10× their estimated
    error. On the
    diagonal of a kernel of x1 with itself neural-tangents clips the correlation inside
    its arccos, which costs it ~3e-9 relative per layer (docs/kernels.md, 'Diagonal
    entries'): there 1e-7 relative."""
    case = CASES[name]
    res = build(case["layers"]).kernel_fn(arr(case["x1"]), arr(case["x2"]), return_info=True)
    for kind in ("nngp", "ntk"):
        ours, ref = getattr(res, kind), np.array(case[kind])
        assert ours.shape == ref.shape
        tol = 1e-10 * np.maximum(1.0, np.abs(ref)) + 10 * res.error[kind]
        off = ~np.eye(*ref.shape, dtype=bool) if case["x2"] is None else np.ones(ref.shape, bool)
        np.testing.assert_array_less(np.abs(ours - ref)[off], tol[off], err_msg=f"{name} {kind}")
        if case["x2"] is None:
            np.testing.assert_allclose(np.diag(ours), np.diag(ref), rtol=1e-7, err_msg=kind)
    assert res.symmetric == (case["x2"] is None)


def test_cross_kernels_are_the_block_of_the_stacked_kernel_and_cost_only_their_entries():
    rng = np.random.default_rng(0)
    X1, X2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    kw = dict(depth=3, nonlin="erf", W_std=1.4, b_std=0.2)
    nngp, ntk = nn.kernels(X1, X2, **kw)
    full_nngp, full_ntk = nn.kernels(np.vstack([X1, X2]), **kw)
    np.testing.assert_allclose(nngp, full_nngp[:3, 3:], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(ntk, full_ntk[:3, 3:], rtol=1e-14, atol=1e-15)
    # the program holds the 3×2 entries only (2·depth + 1 Moments each), not the 5×5 kernel
    p, nngp_h, _ = nn.kernel_program(X1, X2, **kw)
    moments = [i for i in p.instructions if type(i).__name__ == "Moment"]
    assert len(moments) == 3 * 2 * (2 * kw["depth"] + 1)
    assert nngp_h.shape == (3, 2) and len({h.name for h in nngp_h.ravel()}) == 6
    # the same through stax, and the former positional signature still works
    net = stax.serial(*[stax.Dense(1.4, 0.2), stax.Erf()] * 3, stax.Dense(1.4, 0.2))
    k = net.kernel_fn(X1, X2)
    np.testing.assert_array_equal(k.nngp, nngp)
    np.testing.assert_array_equal(k.ntk, ntk)
    legacy = nn.kernels(X1, 3, "erf", 1.4, 0.2)
    np.testing.assert_array_equal(legacy[1], full_ntk[:3, :3])


def test_kernel_fn_get():
    X = np.array([[1.0, 0.0], [0.6, 0.8]])
    net = stax.serial(stax.Dense(1.5, 0.1), stax.Relu(), stax.Dense(1.5, 0.1))
    both = net.kernel_fn(X)
    assert both._fields == ("nngp", "ntk")
    np.testing.assert_array_equal(net.kernel_fn(X, None, "ntk"), both.ntk)
    swapped = net.kernel_fn(X, get=("ntk", "nngp"))
    assert swapped._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(swapped[1], both.nngp)
    nngp, ntk = nn.kernels(X, depth=1, W_std=1.5, b_std=0.1)
    np.testing.assert_array_equal(both.nngp, nngp)
    np.testing.assert_array_equal(both.ntk, ntk)


def test_fan_in_sum_of_correlated_branches_is_the_sum_not_the_sum_of_kernels():
    """x + x = 2x: the network is the one with W_std doubled in the first layer (same
    function of the same parameters, so the same NNGP and NTK). A sum of the branches'
    kernels (neural-tangents' FanInSum, which assumes independent branches) would give
    2K instead of 4K."""
    X = np.random.default_rng(1).standard_normal((3, 2))
    skip = stax.serial(
        stax.Dense(1.0, 0.0),
        stax.FanOut(2),
        stax.parallel(stax.Identity(), stax.Identity()),
        stax.FanInSum(),
        stax.Relu(),
        stax.Dense(1.0, 0.3),
    )
    doubled = stax.serial(stax.Dense(2.0, 0.0), stax.Relu(), stax.Dense(1.0, 0.3))
    a, b = skip.kernel_fn(X), doubled.kernel_fn(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-14)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-14)


@pytest.mark.filterwarnings("ignore::tensorprog.UnreliableValueWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_residual_layernorm_program_against_finite_width():
    """The program of a residual block with a LayerNorm after a Relu (a non-centred
    input, which neural-tangents refuses) simulated at n = 1500 over 4 seeds: the mean of
    every kernel entry is within 5 standard errors (+ an O(1/n) bias allowance) of the limit.
    (The engine marks an off-diagonal NTK entry as untrusted: the step functions of the
    backward pass jump at the LayerNorm's mean, off the axes of its quadrature rule, so it
    has no error estimate — and its error arithmetic multiplies by that NaN, a
    RuntimeWarning from tensorprog/engine/evaluate.py; the simulation is the check.)"""
    X = np.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.8]])
    net = stax.serial(
        stax.Dense(1.2, 0.1),
        stax.Relu(),
        stax.LayerNorm(),
        stax.FanOut(2),
        stax.parallel(stax.serial(stax.Relu(), stax.Dense(1.3, 0.2)), stax.Identity()),
        stax.FanInSum(),
        stax.Dense(1.1, 0.05),
    )
    p, nngp_h, ntk_h = net.program(X)
    lim = p.limit()
    handles = [h for h in np.concatenate([nngp_h.ravel(), ntk_h.ravel()])]
    sims = np.array([[p.simulate(1500, seed=s)[h] for h in handles] for s in range(4)])
    mean, se = sims.mean(0), sims.std(0, ddof=1) / np.sqrt(len(sims))
    limit = np.array([lim[h] for h in handles])
    assert np.all(np.abs(mean - limit) < 5 * se + 2e-3), (mean, limit, se)


@pytest.mark.parametrize(
    "call, error, needles",
    [
        (lambda: stax.Dense(0.0), tp.ProgramValueError, ["Dense", "W_std", "> 0"]),
        (lambda: stax.Dense(1.0, -1.0), tp.ProgramValueError, ["b_std"]),
        (lambda: stax.Dense(1.0, 0.0, "standard"), tp.ProgramValueError, ["parameterization"]),
        (lambda: stax.serial(stax.Dense(), 3), tp.ProgramTypeError, ["serial", "layer 1"]),
        (lambda: stax.Elementwise("nope"), tp.ProgramValueError, ["nonlin", "nope"]),
        (lambda: stax.Gelu(approximate=True), tp.ProgramValueError, ["approximate"]),
        (lambda: stax.FanOut(0), tp.ProgramValueError, ["FanOut", "num"]),
        (
            lambda: stax.serial(stax.Dense(), stax.Relu()).kernel_fn(np.eye(2)),
            tp.ProgramValueError,
            ["must end with a Dense"],
        ),
        (
            lambda: stax.serial(stax.Relu(), stax.Dense()).kernel_fn(np.eye(2)),
            tp.ProgramValueError,
            ["start", "Dense"],
        ),
        (
            lambda: stax.serial(stax.Dense(), stax.FanOut(2), stax.Dense()).kernel_fn(np.eye(2)),
            tp.ProgramValueError,
            ["FanInSum"],
        ),
        (
            lambda: stax.serial(stax.Dense(), stax.FanInSum(), stax.Dense()).kernel_fn(np.eye(2)),
            tp.ProgramValueError,
            ["FanInSum", "branches"],
        ),
        (
            lambda: stax.serial(stax.Dense()).kernel_fn(np.eye(2), np.eye(3)),
            tp.ProgramValueError,
            ["x2", "columns"],
        ),
        (
            lambda: stax.serial(stax.Dense()).kernel_fn(np.eye(2), get="cov"),
            tp.ProgramValueError,
            ["get"],
        ),
        (
            lambda: stax.serial(stax.Dense()).kernel_fn([[np.nan]]),
            tp.ProgramValueError,
            ["x1", "finite"],
        ),
        (lambda: nn.kernels(np.eye(2)), tp.ProgramTypeError, ["depth", "required"]),
        (
            lambda: nn.kernels(np.eye(2), 2, "relu", nonlin="tanh"),
            tp.ProgramTypeError,
            ["nonlin", "both"],
        ),
        (
            lambda: nn.kernels(np.eye(2), np.ones((1, 3)), depth=1),
            tp.ProgramValueError,
            ["X2", "columns"],
        ),
        (lambda: nn.kernels(np.eye(2), "x", depth=1), tp.ProgramTypeError, ["X2"]),
    ],
)
def test_bad_input_names_the_argument(call, error, needles):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, tp.TensorProgramError)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_single_dense_network_is_the_input_kernel():
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    k = stax.serial(stax.Dense(1.5, 0.3)).kernel_fn(X)
    K = 1.5**2 * X @ X.T / 2 + 0.09
    np.testing.assert_allclose(k.nngp, K, rtol=1e-14)
    np.testing.assert_allclose(k.ntk, K, rtol=1e-14)


@pytest.mark.parametrize(
    ("layer", "body"),
    [
        (stax.Sin(0.8, 1.3, 0.4), lambda x: 0.8 * sympy.sin(1.3 * x + 0.4)),
        (stax.Cos(1.2, 0.7, -0.9), lambda x: 1.2 * sympy.cos(0.7 * x - 0.9)),
        (stax.Exp(0.6, -0.4), lambda x: 0.6 * sympy.exp(-0.4 * x)),
        (stax.Erf(2.0, 0.5), lambda x: 2.0 * sympy.erf(0.5 * x)),
    ],
)
def test_scaled_nonlinearities_are_exact_and_the_function_they_name(layer, body):
    """NT's a·φ(b·x + c) layers are written with builtins of b·x (closed forms: every
    entry exact); the same function as one sympy nonlinearity (quadrature) gives the
    same kernels within its estimated error."""
    X = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]])
    x = sympy.Symbol("x", real=True)
    ref_layer = stax.Elementwise(tp.Nonlinearity(f"ref_{layer!r}", body(x), [x]))

    def net(la):
        return stax.serial(stax.Dense(1.3, 0.2), la, stax.Dense(1.1, 0.1), la, stax.Dense(0.9))

    ours = net(layer).kernel_fn(X, return_info=True)
    ref = net(ref_layer).kernel_fn(X, return_info=True)
    for kind in ("nngp", "ntk"):
        assert set(ours.method[kind].ravel()) == {"exact"}
        tol = 1e-10 * np.maximum(1.0, np.abs(getattr(ref, kind)))
        np.testing.assert_array_less(
            np.abs(getattr(ours, kind) - getattr(ref, kind)), tol + 10 * ref.error[kind]
        )
