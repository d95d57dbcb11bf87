"""nn.Model + nn.train: the unrolled program's finite network against numpy networks
written here (forward and backward by hand, from the same draws: ``sim.param``), the
limit against finite widths, the presets' exponents, and the API's errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import tensorprog as tp
from tensorprog import nn

X3 = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])


# ---------------------------------------------------------------------------------------
# numpy reference networks (independent of the library: written from DESIGN's finite
# network — entries as drawn, μP learning rates lr·n (input, vector-like), lr (hidden,
# scalar-like), lr/n (output); SGD buf ← μ buf + g, w ← w − lr_P buf)


def _sgd(params, grads, bufs, lrs, mu):
    for k in params:
        bufs[k] = mu * bufs[k] + grads[k]
        params[k] = params[k] - lrs[k] * bufs[k]


def ref_bias_mlp(P, X, Y, steps, lr, mu, n):
    """f = P_out tanh(P_in ξ + b); mse; returns outputs (steps+1, B, 2) and losses."""
    P = {k: v.copy() for k, v in P.items()}
    lrs = {"W_in": lr * n, "b": lr * n, "W_out": lr / n}
    bufs = {k: np.zeros_like(v) for k, v in P.items()}
    B = X.shape[0]
    outs, losses = [], []
    for t in range(steps + 1):
        H = X @ P["W_in"].T + P["b"]  # (B, n)
        A = np.tanh(H)
        F = A @ P["W_out"].T  # (B, 2)
        outs.append(F)
        losses.append(((F - Y) ** 2).sum() / (2 * B))
        if t == steps:
            break
        chi = (F - Y) / B
        dA = chi @ P["W_out"]
        dH = dA * (1 - A**2)
        grads = {"W_out": chi.T @ A, "W_in": dH.T @ X, "b": dH.sum(0)}
        _sgd(P, grads, bufs, lrs, mu)
    return np.array(outs), np.array(losses)


def _ln_forward(P, X, eps=1e-5):
    """LayerNorm, a hidden weight used twice, a gain, a scalar-like bias: outputs (B, 3)."""
    F, cache = np.zeros((X.shape[0], 3)), []
    for xi in X:
        h1 = P["W_in"] @ xi
        c = h1 - h1.mean()
        s = np.sqrt((c * c).mean() + eps)
        z = c / s
        a1 = np.maximum(z, 0)
        a2 = np.tanh(P["W"] @ a1)
        a3 = np.tanh(P["W"] @ a2)
        x = P["g"] * a3
        F[len(cache)] = P["W_out"] @ x + P["c"]
        cache.append((z, s, a1, a2, a3, x))
    return F, cache


def _ln_grads(P, X, Y):
    """∇ of the cross-entropy (1/B) Σ_i [logsumexp f_i − f_{i,y_i}], by hand."""
    F, cache = _ln_forward(P, X)
    B = X.shape[0]
    soft = np.exp(F - np.log(np.exp(F).sum(1))[:, None])
    soft[np.arange(B), Y] -= 1
    dF = soft / B
    G = {k: np.zeros_like(v) for k, v in P.items()}
    for i, (z, s, a1, a2, a3, x) in enumerate(cache):
        df = dF[i]
        G["W_out"] += np.outer(df, x)
        G["c"] += df
        dx = P["W_out"].T @ df
        G["g"] += dx * a3
        dh3 = dx * P["g"] * (1 - a3**2)
        G["W"] += np.outer(dh3, a2)
        dh2 = (P["W"].T @ dh3) * (1 - a2**2)
        G["W"] += np.outer(dh2, a1)
        dz = (P["W"].T @ dh2) * (z > 0)
        dh1 = (dz - dz.mean() - z * (dz * z).mean()) / s  # through the mean and variance
        G["W_in"] += np.outer(dh1, X[i])
    return G


def ref_ln_rnn(P, X, Y, batches, lr, mu, n):
    """Outputs on all rows (steps+1, B, 3); step t trains on rows batches[t]."""
    P = {k: np.array(v, dtype=float) for k, v in P.items()}
    lrs = {"W_in": lr * n, "W": lr, "g": lr * n, "W_out": lr / n, "c": lr}
    bufs = {k: np.zeros_like(v) for k, v in P.items()}
    outs = [_ln_forward(P, X)[0]]
    for rows in batches:
        rows = np.asarray(rows)
        _sgd(P, _ln_grads(P, X[rows], Y[rows]), bufs, lrs, mu)
        outs.append(_ln_forward(P, X)[0])
    return np.array(outs)


def bias_mlp():
    m = nn.Model("bias_mlp")
    m.param("W_in", ("n", 2), init_std=np.sqrt(2))
    m.param("b", ("n",), init_std=0.5)
    m.param("W_out", (2, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ tp.tanh(p.W_in @ xi + p.b, name="x")

    return m


def ln_rnn():
    m = nn.Model("ln_rnn")
    m.param("W_in", ("n", 2), init_std=np.sqrt(2))
    m.param("W", ("n", "n"))
    m.param("g", ("n",), init_mean=1.0, init_std=0.0)
    m.param("W_out", (3, "n"))
    m.param("c", (3,), init_mean=0.1, init_std=0.0)

    @m.forward
    def f(p, xi):
        z = nn.layernorm(p.W_in @ xi)
        a = tp.relu(z)
        for _ in range(2):  # the same hidden weight, twice
            a = tp.tanh(p.W @ a)
        x = p.g * a
        tp.mean(x * x, name="q")
        return np.asarray(p.W_out @ x, dtype=object) + p.c

    return m


# ---------------------------------------------------------------------------------------
# The finite network


def test_simulation_is_the_numpy_network_bias_momentum_mse():
    """simulate(n) equals the hand-written network from the same draws (2 outputs, a
    bias, momentum 0.5): exact up to float rounding."""
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])
    run = nn.train(bias_mlp(), X3, Y, steps=3, optimizer=nn.SGD(0.7, momentum=0.5))
    n = 64
    sim = run.simulate(n, seed=3)
    P = {k: sim.param(k) for k in ("W_in", "b", "W_out")}
    assert P["W_in"].shape == (n, 2) and P["b"].shape == (n,) and P["W_out"].shape == (2, n)
    outs, losses = ref_bias_mlp(P, X3, Y, 3, 0.7, 0.5, n)
    assert sim.outputs.shape == (4, 3, 2)
    np.testing.assert_allclose(sim.outputs, outs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(sim.loss, losses, rtol=1e-9, atol=1e-11)
    x = sim.named("x")
    assert x.shape == (4, 3, n)
    np.testing.assert_allclose(x[0, 1], np.tanh(P["W_in"] @ X3[1] + P["b"]), rtol=1e-12)


def test_simulation_is_the_numpy_network_layernorm_reuse_xent():
    """LayerNorm (gradient through its statistics), a hidden weight used twice, a trained
    gain and a scalar-like output bias, cross-entropy over 3 logits, mini-batches."""
    Y = np.array([2, 0, 1])
    batches = [[0, 1, 2], [2, 0], [1]]
    run = nn.train(
        ln_rnn(), X3, Y, steps=3, loss="xent", optimizer=nn.SGD(0.9, momentum=0.3),
        batches=batches,
    )
    n = 48
    sim = run.simulate(n, seed=1)
    P = {k: sim.param(k) for k in ("W_in", "W", "g", "W_out", "c")}
    assert P["W"].shape == (n, n) and np.array(P["c"]).shape == (3,)
    outs = ref_ln_rnn(P, X3, Y, batches, 0.9, 0.3, n)
    np.testing.assert_allclose(sim.outputs, outs, rtol=1e-9, atol=1e-11)
    q = sim.named("q")
    assert q.shape == (4, 3)


