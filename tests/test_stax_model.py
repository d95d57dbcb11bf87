"""``Layer.model``: stax networks as ``nn.Model``s trained by ``nn.train``.

References, none of which imports the code under test: the finite network written here in
numpy from the simulation's own draws (``sim.param``) — its forward at step 0 exactly, its
first SGD step by central finite differences of the numpy loss — the sample variances of
the draws against the stated μP initialisation, and finite widths extrapolated in 1/n
against the limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

import tensorprog as tp
from tensorprog import nn
from tensorprog.nn import stax

X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])


def resnet():
    """Input Dense with bias, a residual block (relu → hidden Dense with bias, beside a
    skip), LayerNorm, tanh, a two-output readout."""
    return stax.serial(
        stax.Dense(1.2, 0.3),
        stax.FanOut(2),
        stax.parallel(stax.serial(stax.Relu(), stax.Dense(1.1, 0.2)), stax.Identity()),
        stax.FanInSum(),
        stax.LayerNorm(),
        stax.Tanh(),
        stax.Dense(1.3),
    )


def ref_resnet(P, xi):
    h1 = P["W1"] @ xi + P["b1"]
    h2 = P["W2"] @ np.maximum(h1, 0.0) + P["b2"]
    s = h1 + h2
    c = s - s.mean()
    return P["W3"] @ np.tanh(c / np.sqrt((c * c).mean() + 1e-12))


def erfnet():
    return stax.serial(stax.Dense(1.5, 0.1), stax.Erf(), stax.Dense(0.9))


def ref_erfnet(P, xi):
    return P["W2"] @ erf(P["W1"] @ xi + P["b1"])


# Learning-rate factors n^k per class under nn.muP() (SGD, s of TP5 Table 3): input
# weights and biases n, hidden weights 1, output weights 1/n.
C = nn.ParamClass
LR_POWER = {C.INPUT: 1, C.VECTOR: 1, C.HIDDEN: 0, C.OUTPUT: -1}


def test_model_parameters_and_repr():
    m = resnet().model(2, d_out=2, name="res")
    assert [(s.name, s.shape, s.init_std) for s in m.params.values()] == [
        ("W1", ("n", 2), 1.2),
        ("b1", ("n",), 0.3),
        ("W2", ("n", "n"), 1.1),
        ("b2", ("n",), 0.2),
        ("W3", (2, "n"), 1.3),
    ]
    assert m.name == "res"


@pytest.mark.parametrize(
    ("net", "ref", "d_out"), [(resnet, ref_resnet, 2), (erfnet, ref_erfnet, 1)]
)
def test_simulation_is_the_numpy_network(net, ref, d_out):
    """Step 0: the forward of the numpy network on the simulation's draws, to 1e-12.
    Step 1: one SGD step of the numpy network (full-batch MSE, gradients by central
    differences, h = 1e-6: error ~h² ≈ 1e-12 times third derivatives, and rounding
    ~1e-16/h), to 1e-7."""
    n, lr = 16, 0.3
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])[:, :d_out]
    run = nn.train(net().model(2, d_out), X, Y, steps=2, optimizer=nn.SGD(lr), param=nn.muP())
    sim = run.simulate(n, seed=3)
    P = {k: sim.param(k) for k in run.model.params}

    def outputs(P):
        return np.array([np.atleast_1d(ref(P, xi)) for xi in X])

    np.testing.assert_allclose(sim.outputs[0], outputs(P), rtol=0, atol=1e-12)

    def loss(P):
        return 0.5 * np.mean(np.sum((outputs(P) - Y) ** 2, axis=1))

    h, P1 = 1e-6, {}
    for k, v in P.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            up, dn = dict(P), dict(P)
            up[k], dn[k] = v.copy(), v.copy()
            up[k][idx] += h
            dn[k][idx] -= h
            g[idx] = (loss(up) - loss(dn)) / (2 * h)
        P1[k] = v - lr * float(n) ** LR_POWER[run.model.params[k].cls] * g
    np.testing.assert_allclose(sim.outputs[1], outputs(P1), rtol=0, atol=1e-7)
    np.testing.assert_allclose(sim.loss[:1], [loss(P)], rtol=1e-12)


def test_initialisation_is_the_stated_mu_p_variance():
    """Under nn.muP(): input weight N(0, W_std²/d), hidden N(0, W_std²/n), readout
    N(0, W_std²/n²), bias N(0, b_std²): sample variances within 5 standard errors
    (s.e. of a sample variance of N entries: var·√(2/N))."""
    n, d = 256, 2
    run = nn.train(resnet().model(d, 2), X, np.zeros((3, 2)), steps=1, param=nn.muP())
    sim = run.simulate(n, seed=0)
    expect = {
        "W1": 1.2**2 / d,
        "b1": 0.3**2,
        "W2": 1.1**2 / n,
        "b2": 0.2**2,
        "W3": 1.3**2 / n**2,
    }
    for k, var in expect.items():
        w = sim.param(k).ravel()
        se = var * np.sqrt(2 / w.size)
        assert abs(np.mean(w * w) - var) < 5 * se, (k, np.mean(w * w), var)


def richardson(run, widths, seeds):
    """Outputs and loss per width (rows: seeds), extrapolated in 1/n from two widths
    ``n`` and ``4n``: ``f_∞ ≈ (4 f_4n − f_n)/3``, with the standard error of that
    combination of the two sample means."""
    vals = np.array(
        [
            [
                np.concatenate([s.outputs.ravel(), s.loss])
                for s in map(run.simulate, [n] * len(seeds), seeds)
            ]
            for n in widths
        ]
    )  # (width, seed, value)
    coef = np.array([-1.0, 4.0]) / 3
    mean = coef @ vals.mean(axis=1)
    se = np.sqrt((coef**2) @ (vals.var(axis=1, ddof=1) / len(seeds)))
    return mean, se


def test_limit_agrees_with_finite_widths():
    """The limit against finite widths 256 and 1024 (16 seeds each) extrapolated in 1/n:
    within 4 standard errors (both sides'), outputs and loss."""
    Y = np.array([0.5, -0.3, 0.8])
    run = nn.train(erfnet().model(2), X, Y, steps=2, optimizer=nn.SGD(0.7), param=nn.muP())
    # the feature-learning limit of an erf network needs Monte Carlo for some terms
    # (method="auto" would first try quadrature, seconds); its s.e. enters the z-score
    lim = run.limit(method="montecarlo", samples=100_000, seed=0)
    finite, se = richardson(run, (256, 1024), range(16))
    limv = np.concatenate([lim.outputs.ravel(), lim.loss])
    lim_se = np.concatenate([lim.stderr.ravel(), lim.loss_stderr])
    assert np.all(np.abs(finite - limv) < 4 * np.hypot(se, lim_se)), (finite, limv)
    assert lim.loss[2] < lim.loss[0]  # it learns


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (
            stax.serial(stax.Dense(1.0), stax.Relu()),
            r"end with a Dense layer.*Elementwise\(relu\) last",
        ),
        (stax.serial(stax.Dense(1.0)), r"readout Dense\(1, 0\) reads the inputs"),
        (stax.serial(stax.Relu(), stax.Dense(1.0)), r"Elementwise\(relu\): reads the raw inputs"),
        (
            stax.serial(stax.Dense(1.0), stax.Relu(), stax.Dense(1.0, 0.5)),
            r"readout Dense\(1, 0.5\) has b_std=0.5",
        ),
        (
            stax.serial(
                stax.FanOut(2),
                stax.parallel(stax.Dense(1.0), stax.Identity()),
                stax.FanInSum(),
                stax.Dense(1.0),
            ),
            r"FanInSum\(\): a branch carries the raw inputs",
        ),
        (
            stax.serial(stax.Dense(1.0), stax.FanOut(2), stax.Dense(1.0)),
            r"readout Dense\(1, 0\) gets 2 branches",
        ),
    ],
)
def test_bad_networks_name_the_layer(net, match):
    with pytest.raises(tp.ProgramValueError, match=match):
        net.model(2)


def test_bad_dims():
    net = erfnet()
    with pytest.raises(tp.ProgramValueError, match="d_in must be an int ≥ 1"):
        net.model(0)
    with pytest.raises(tp.ProgramValueError, match="d_out must be an int ≥ 1"):
        net.model(2, d_out=1.5)
