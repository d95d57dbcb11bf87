"""Kernel-regime runs of ``nn.train``: centred (``f_t − f_0``), against an independent
numpy network, finite widths and the linearised (kernel gradient descent) prediction.

* ``simulate(n)`` equals :func:`reference_nets.train_centred` from the same initial
  draws (``sim.param``) to ~1e-10: NTK preset and SP with learning rate ``lr/n``
  (``nn.abcd``), a 2-hidden-layer tanh MLP with biases;
* ``limit()`` agrees with finite widths extrapolated in ``1/n`` within 4 standard errors;
* the NTK-preset limit of a relu MLP equals ``f_{t+1} − f_0 = (f_t − f_0) − η Θ χ_t``
  with ``Θ`` the NTK of :func:`tensorprog.nn.kernels` (neural-tangents conventions, an
  independent program: no training, no centring) [TP4 Thm H.32], [TP2 §2].
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from reference_nets import mlp_bias2, train_centred

import tensorprog as tp
from tensorprog import nn

X = np.array([[1.0, 0.3], [-0.4, 0.8]])
Y = np.array([0.5, -0.3])
LR = 0.8
HALF = Fraction(1, 2)


def bias_model(phi=tp.tanh, biases=True, in_lr=1.0, in_std=1.0) -> nn.Model:
    m = nn.Model("mlp_bias2")
    m.param("W_in", ("n", 2), init_std=in_std, lr_mult=in_lr)
    if biases:
        m.param("b1", ("n",))
    m.param("W_hid", ("n", "n"))
    if biases:
        m.param("b2", ("n",))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        h1 = p.W_in @ xi + p.b1 if biases else p.W_in @ xi
        h2 = p.W_hid @ phi(h1)
        return p.W_out @ phi(h2 + p.b2 if biases else h2)

    return m


def sp_lr_over_n() -> nn.PerParameter:
    """SP with learning rate lr·n^{-1}: (a, b, c) = (0, 0, 1) input and biases, (0, 1/2, 1)
    hidden and output (abcd has no fan-in factor: W_in gets init_std 1/√2 below)."""
    ex = {k: (0, 0, 1, 0) for k in ("W_in", "b1", "b2")}
    ex.update({k: (0, HALF, 1, 0) for k in ("W_hid", "W_out")})
    return nn.abcd(ex)


def _sp_model() -> nn.Model:
    return bias_model(in_std=1 / np.sqrt(2))


CASES = {
    # name: (model, param, learning rate of each parameter: lr·n^power)
    "NTK": (bias_model, nn.NTK, {"W_in": 0, "b1": 0, "b2": 0, "W_hid": -1, "W_out": -1}),
    "SP(lr/n)": (_sp_model, sp_lr_over_n, {k: -1 for k in ("W_in", "b1", "b2", "W_hid", "W_out")}),
}


def _lrs(powers: dict, n: int) -> dict:
    return {k: LR * float(n) ** p for k, p in powers.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_classified_kernel_and_centred(case):
    make, param, _ = CASES[case]
    m = make()
    c = nn.classify(m, param(), nn.SGD(LR))
    assert c.regime == "kernel" and c.r == HALF and c.limit_supported, c.limit_problems
    run = nn.train(m, X, Y, steps=2, optimizer=nn.SGD(LR), param=param())
    assert run.center and not run.problems
    # uncentred, f_0 = n^{1/2}⟨u, x_0⟩ has no limit: refused (simulated with allow_unstable)
    with pytest.raises(tp.ProgramValueError, match="Gaussian-process"):
        nn.train(m, X, Y, steps=2, optimizer=nn.SGD(LR), param=param(), center=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_simulate_is_the_centred_numpy_network(case):
    make, param, powers = CASES[case]
    run = nn.train(make(), X, Y, steps=3, optimizer=nn.SGD(LR), param=param())
    for n, seed in ((48, 0), (96, 3)):
        sim = run.simulate(n, seed=seed)
        P0 = {k: sim.param(k) for k in ("W_in", "b1", "W_hid", "b2", "W_out")}
        ref = train_centred(mlp_bias2(), P0, _lrs(powers, n), X, Y, loss="mse", steps=3)
        np.testing.assert_allclose(sim.outputs, ref, rtol=1e-9, atol=1e-11)
        assert np.all(sim.outputs[0] == 0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_limit_is_the_extrapolated_finite_widths(case):
    """Mean over seeds at n = 128, 512, fitted by a + b/n (weighted least squares
    with the seed-to-seed standard errors); ``a`` is the limit within 4 standard errors
    (of the fit and of the limit's Monte Carlo, combined)."""
    make, param, _ = CASES[case]
    run = nn.train(make(), X, Y, steps=2, optimizer=nn.SGD(LR), param=param())
    lim = run.limit(method="montecarlo", samples=30_000, seed=1)
    widths, seeds = (128, 512), 16
    means, ses = [], []
    for n in widths:
        outs = np.array([run.simulate(n, seed=s).outputs[1:, :, 0] for s in range(seeds)])
        means.append(outs.mean(axis=0))
        ses.append(outs.std(axis=0, ddof=1) / np.sqrt(seeds))
    means, ses = np.array(means), np.array(ses)
    A = np.c_[np.ones(len(widths)), 1.0 / np.array(widths)]
    for idx in np.ndindex(means.shape[1:]):
        w = 1.0 / ses[(slice(None),) + idx]
        coef, *_ = np.linalg.lstsq(A * w[:, None], means[(slice(None),) + idx] * w, rcond=None)
        cov = np.linalg.inv((A * w[:, None]).T @ (A * w[:, None]))
        se = np.hypot(np.sqrt(cov[0, 0]), lim.stderr[1:, :, 0][idx])
        assert abs(coef[0] - lim.outputs[1:, :, 0][idx]) < 4 * se, (idx, coef[0], se)


def test_ntk_limit_is_kernel_gradient_descent():
    """relu, no biases, W_in with lr_mult 1/d (neural-tangents' NTK parametrization of the
    first layer: W = w/√d, learning rate η on w): f_t − f_0 follows
    F_{t+1} = F_t − η Θ (F_t − Y)/B with Θ = nn.kernels(...).ntk (exact arc-cosine
    forms), within 4 Monte Carlo standard errors of the training limit."""
    steps = 3
    m = bias_model(phi=tp.relu, biases=False, in_lr=0.5)
    run = nn.train(m, X, Y, steps=steps, optimizer=nn.SGD(LR), param=nn.NTK())
    lim = run.limit(method="montecarlo", samples=100_000, seed=4)
    _, theta = nn.kernels(X, depth=2, nonlin="relu", W_std=1.0, b_std=0.0)
    F, pred = np.zeros(len(X)), [np.zeros(len(X))]
    for _ in range(steps):
        F = F - LR * theta @ (F - Y) / len(X)
        pred.append(F)
    got, se = lim.outputs[..., 0], lim.stderr[..., 0]
    assert np.all(np.abs(got - np.array(pred)) <= 4 * se + 1e-12), (got, pred, se)
    # and the features do not move: the change of the output is all kernel
    assert np.all(se[1:] > 0)


@pytest.mark.parametrize("name", ["mlp_momentum_mse", "lngain_batches", "rnn_xent"])
def test_simulate_generic_models_ntk(name):
    """The models of tests/test_train_reference.py under nn.NTK() — momentum, two outputs
    and a hidden lr_mult; LayerNorm with a trained gain and mini-batches; a weight-shared
    RNN over 3 time steps with xent — centred: simulate(n) is the numpy network trained
    on f − f_0 (NTK learning rates: lr for input and vector-like, lr/n for hidden and
    output, times lr_mult)."""
    from test_train_reference import CASES as REF
    from test_train_reference import tp_model

    case = REF[name]
    kw = {} if case.batches is None else {"batches": [list(b) for b in case.batches]}
    opt = nn.SGD(lr=case.lr, momentum=case.momentum)
    run = nn.train(
        tp_model(case.ref),
        case.X,
        case.Y,
        steps=case.steps,
        loss=case.loss,
        optimizer=opt,
        param=nn.NTK(),
        **kw,
    )
    assert run.center and not run.problems
    n = 64
    sim = run.simulate(n, seed=5)
    P0 = {s.name: np.asarray(sim.param(s.name), float) for s in case.ref.specs}
    per_n = {"input": 1.0, "vector": 1.0, "hidden": 1.0 / n, "output": 1.0 / n}
    lrs = {s.name: case.lr * s.lr_mult * per_n[s.cls] for s in case.ref.specs}
    kw = {k: getattr(case, k) for k in ("loss", "steps", "momentum", "batches")}
    outs = train_centred(case.ref, P0, lrs, case.X, case.Y, **kw)
    np.testing.assert_allclose(sim.outputs, outs, rtol=1e-9, atol=1e-11 * np.abs(outs).max())
    assert np.abs(outs[-1]).max() > 1e-3  # it trains


def test_what_cannot_be_centred_is_refused():
    """An output bias acts on f_0; a trained scalar-like parameter's gradient is a
    Gaussian fluctuation: the default is then the uncentred run, refused with both
    reasons (f_0 a Gaussian process, why it is not centred); center=True raises why."""

    def model(c_lr):
        m = nn.Model("outbias")
        m.param("W_in", ("n", 2))
        m.param("W_out", (1, "n"))
        m.param("c", (), init_std=0.0, lr_mult=c_lr)

        @m.forward
        def f(p, xi):
            return (p.W_out @ tp.relu(p.W_in @ xi)) + p.c

        return m

    with pytest.raises(tp.ProgramValueError, match="Gaussian-process.*not an output weight's"):
        nn.train(model(0.0), X, Y, steps=1, param=nn.NTK())
    with pytest.raises(tp.ProgramValueError, match="not an output weight's use"):
        nn.train(model(0.0), X, Y, steps=1, param=nn.NTK(), center=True)
    with pytest.raises(tp.ProgramValueError, match="scalar-like parameter 'c'"):
        nn.train(model(1.0), X, Y, steps=1, param=nn.NTK(), center=True)
    run = nn.train(model(1.0), X, Y, steps=1, param=nn.NTK(), allow_unstable=True)
    assert not run.center and run.problems
    assert not nn.classify(model(1.0), nn.NTK(), nn.SGD(0.5)).limit_supported
