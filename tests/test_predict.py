"""``nn.predict``: kernel-regime mean predictions under gradient descent on the MSE.

References, none of which imports the code under test:

* neural-tangents 0.6.5 ``predict.gradient_descent_mse`` and the cookbook's
  ``gradient_descent_mse_ensemble`` means, recorded by ``benchmarks/nt/stax_fixture.py``
  in ``tests/data/nt_predict.json``;
* ``nn.train_sgd(...).limit()`` of an NTK-parametrized MLP (the unrolled training
  program's infinite-width limit), step for step;
* the iteration ``f ← f − (η/N) K (f − y)`` written out, and ``scipy.linalg.expm``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import tensorprog as tp
from tensorprog import nn
from tensorprog.nn import stax

NT = json.loads((Path(__file__).parent / "data" / "nt_predict.json").read_text())


@pytest.mark.parametrize("case", NT["cases"], ids=lambda c: c["name"])
def test_gradient_descent_mse_agrees_with_neural_tangents(case):
    K, Kx, y = (np.array(case[k]) for k in ("k_train_train", "k_test_train", "y_train"))
    predict = nn.predict.gradient_descent_mse(
        K, y, learning_rate=case["learning_rate"], diag_reg=case["diag_reg"]
    )
    f0, g0 = case["fx_train_0"], case["fx_test_0"]
    fx, gx = predict(np.array(case["t"]), f0, g0, Kx)
    assert fx.shape == (len(case["t"]),) + y.shape and gx.shape == (len(case["t"]), 3) + y.shape[1:]
    scale = max(1.0, np.abs(case["fx_test_t"]).max())
    np.testing.assert_allclose(fx, case["fx_train_t"], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(gx, case["fx_test_t"], rtol=0, atol=1e-12 * scale)
    fi, gi = predict(None, f0, g0, Kx)
    np.testing.assert_allclose(fi, case["fx_train_inf"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(gi, case["fx_test_inf"], rtol=0, atol=1e-12 * scale)
    # one set only (fx_train_0=None: the test predictions are those of f_0(X) = 0, as in NT)
    np.testing.assert_array_equal(predict(None, f0), fi)
    np.testing.assert_array_equal(predict(None, None, g0, Kx), predict(None, 0.0, g0, Kx)[1])
    np.testing.assert_array_equal(
        predict(case["t"], None, g0, Kx), predict(case["t"], 0.0, g0, Kx)[1]
    )


def test_cookbook_regression_agrees_with_neural_tangents():
    """The neural-tangents cookbook's sin regression: NNGP and NTK means at t = ∞ of an
    Erf network (W_std 1.5, b_std 0.05), diag_reg 1e-4, on its own data."""
    cb = NT["cookbook"]
    net = stax.serial(*[getattr(stax, kind)(*args) for kind, *args in cb["layers"]])
    x, y, xt = (np.array(cb[k]) for k in ("train_xs", "train_ys", "test_xs"))
    k_train, k_test = net.kernel_fn(x), net.kernel_fn(xt, x)
    for kind in ("nngp", "ntk"):
        predict = nn.predict.gradient_descent_mse(
            getattr(k_train, kind), y, diag_reg=cb["diag_reg"]
        )
        mean = predict(None, None, 0.0, getattr(k_test, kind))
        np.testing.assert_allclose(mean, cb[kind + "_mean"], rtol=0, atol=1e-10, err_msg=kind)


def test_steps_match_train_sgd_in_the_ntk_limit():
    """``train_sgd`` of an NTK-parametrized MLP (linear activation, so every Moment of the
    unrolled program is exact) against ``gradient_descent_mse(..., discrete=True)`` on the NTK mapped
    as in nn.predict's docstring: ``Θ = nn.kernels(√d X, W_std=σ)/σ²``."""
    rng = np.random.default_rng(3)
    d, L, sigma, lr, T = 3, 2, 1.3, 0.02, 2
    X, Y, Xe = rng.standard_normal((3, d)), rng.standard_normal(3), rng.standard_normal((2, d))
    net = nn.MLP(d_in=d, depth=L, nonlin="identity", param=nn.NTK(L, init_std=sigma))
    lim = nn.train_sgd(net, X, Y, lr=lr, steps=T, X_eval=Xe, feature_kernels=False).limit()
    assert set(lim.method.ravel()) == {"exact"}
    s, kw = np.sqrt(d), dict(depth=L, nonlin="identity", W_std=sigma)
    K = nn.kernels(s * X, **kw)[1] / sigma**2
    Kx = nn.kernels(s * Xe, s * X, **kw)[1] / sigma**2
    fx, gx = nn.predict.gradient_descent_mse(K, Y, learning_rate=lr, discrete=True)(
        np.arange(T + 1), 0.0, 0.0, Kx
    )
    np.testing.assert_allclose(fx, lim.outputs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gx, lim.eval_outputs, rtol=1e-12, atol=1e-13)
    assert np.abs(fx[-1] - Y).max() < np.abs(Y).max()  # a converging run


def test_steps_are_the_iteration_and_tend_to_the_flow():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((4, 4))
    K, Kx = A @ A.T, rng.standard_normal((2, 4))
    y, f0, g0, lr = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(2), 0.3
    f, g = f0.copy(), g0.copy()
    fx, gx = nn.predict.gradient_descent_mse(K, y, learning_rate=lr, discrete=True)(
        np.arange(6), f0, g0, Kx
    )
    for t in range(6):
        np.testing.assert_allclose(fx[t], f, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gx[t], g, rtol=1e-12, atol=1e-13)
        f, g = f - lr / 4 * K @ (f - y), g - lr / 4 * Kx @ (f - y)
    # m steps of size lr/m approach the flow at time 1 (in units of lr) with error O(1/m)
    flow = nn.predict.gradient_descent_mse(K, y, learning_rate=lr)(1.0, f0)
    err = [
        np.abs(
            nn.predict.gradient_descent_mse(K, y, learning_rate=lr / m, discrete=True)(m, f0) - flow
        ).max()
        for m in (50, 100, 200)
    ]
    assert 1.8 < err[0] / err[1] < 2.2 and 1.8 < err[1] / err[2] < 2.2, err


def test_flow_with_a_zero_eigenvalue_is_finite_and_is_the_matrix_exponential():
    """A singular kernel (rank 2 of 3): neural-tangents divides 0 by 0 there; the flow is
    ``y + expm(−ηtK/N)(f0 − y)`` on the training set and, with the training inputs as test
    inputs, the same on the test set."""
    v = np.array([[1.0, 0.5, -1.0], [0.0, 1.0, 2.0]])
    K = v.T @ v
    y, f0, lr, t = np.array([1.0, -0.5, 0.25]), np.array([0.1, 0.2, -0.3]), 0.8, 2.5
    fx, gx = nn.predict.gradient_descent_mse(K, y, learning_rate=lr)(t, f0, f0, K)
    ref = y + scipy.linalg.expm(-lr * t * K / 3) @ (f0 - y)
    np.testing.assert_allclose(fx, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, ref, rtol=1e-12, atol=1e-14)


K2 = np.array([[2.0, 0.5], [0.5, 1.0]])
Y2 = np.array([1.0, 0.0])


@pytest.mark.parametrize(
    "call, error, needles",
    [
        (
            lambda: nn.predict.gradient_descent_mse(np.ones((2, 3)), Y2),
            tp.ProgramValueError,
            ["k_train_train", "square"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(np.array([[1.0, 2.0], [0.0, 1.0]]), Y2),
            tp.ProgramValueError,
            ["k_train_train", "symmetric"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, np.ones(3)),
            tp.ProgramValueError,
            ["y_train", "(B,)"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2, learning_rate=0),
            tp.ProgramValueError,
            ["learning_rate"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2, diag_reg=-1),
            tp.ProgramValueError,
            ["diag_reg"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2)(None, None),
            tp.ProgramValueError,
            ["fx_train_0", "fx_test_0"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2)(1.0, 0.0, 0.0),
            tp.ProgramValueError,
            ["k_test_train"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2)(1.0, 0.0, 0.0, np.ones((3, 3))),
            tp.ProgramValueError,
            ["k_test_train", "shape"],
        ),
        (lambda: nn.predict.gradient_descent_mse(K2, Y2)(-1.0), tp.ProgramValueError, ["t", "≥ 0"]),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2)(1.0, np.ones(3)),
            tp.ProgramValueError,
            ["fx_train_0", "shape"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2, discrete=True)(1.5),
            tp.ProgramValueError,
            ["t", "whole"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2, learning_rate=10.0, discrete=True)(
                None
            ),
            tp.ProgramValueError,
            ["learning_rate", "diverges"],
        ),
        (
            lambda: nn.predict.gradient_descent_mse(np.zeros((2, 2)), Y2)(
                None, 0.0, 0.0, np.ones((1, 2))
            ),
            tp.ProgramValueError,
            ["positive definite", "diag_reg"],
        ),
        (lambda: nn.predict.gradient_descent_mse("K", Y2), tp.ProgramTypeError, ["k_train_train"]),
        (
            lambda: nn.predict.gradient_descent_mse(K2, Y2, discrete=1),
            tp.ProgramTypeError,
            ["discrete"],
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, needles):
    with pytest.raises(error) as info:
        call()
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
