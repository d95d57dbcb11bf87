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
# numpy reference networks (independent of the library: written from docs/training-any-model.md's finite
# network — entries as drawn, μP learning rates lr·n (input, vector-like), lr (hidden,
# scalar-like), lr/n (output); SGD buf ← μ buf + g, w ← w − lr_P buf)


def _sgd(params, grads, bufs, lrs, mu):
    for k in params:
        bufs[k] = mu * bufs[k] + grads[k]
        params[k] = params[k] - lrs[k] * bufs[k]


def ref_bias_mlp(P, X, Y, steps, lr, mu, n, lrs=None):
    """f = P_out tanh(P_in ξ + b); mse; returns outputs (steps+1, B, 2) and losses.
    Learning rates: μP's unless ``lrs`` gives them."""
    P = {k: v.copy() for k, v in P.items()}
    lrs = lrs or {"W_in": lr * n, "b": lr * n, "W_out": lr / n}
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
        x = tp.tanh(p.W_in @ xi + p.b, name="x")
        tp.mean(x * x, name="q")
        return p.W_out @ x

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
        ln_rnn(),
        X3,
        Y,
        steps=3,
        loss="xent",
        optimizer=nn.SGD(0.9, momentum=0.3),
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


def test_abcd_with_multipliers_is_the_numpy_network():
    """nn.abcd with a ≠ 0 (W_in = n^{-1/2} w, w ~ N(0, n), learning rate of w lr·n²): the
    same μP network; sim.param returns P = n^{-a} w."""
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])
    param = nn.abcd({"W_in": ("1/2", "-1/2", -2, 0), "b": (0, 0, -1, 0), "W_out": (0, 1, 1, 0)})
    m = bias_mlp()
    run = nn.train(m, X3, Y, steps=2, optimizer=nn.SGD(0.4), param=param)
    n = 32
    sim = run.simulate(n, seed=5)
    P = {k: sim.param(k) for k in ("W_in", "b", "W_out")}
    outs, _ = ref_bias_mlp(P, X3, Y, 2, 0.4, 0.0, n)
    np.testing.assert_allclose(sim.outputs, outs, rtol=1e-9, atol=1e-11)


def test_limit_agrees_with_finite_widths():
    """The limit against finite widths 256 and 1024 (20 seeds each) extrapolated in 1/n
    (Richardson: f_∞ ≈ (4 f_1024 − f_256)/3, whose standard error combines both sample
    means'): within 4 standard errors, outputs and loss."""
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])
    run = nn.train(bias_mlp(), X3, Y, steps=2, optimizer=nn.SGD(0.7, momentum=0.5))
    lim = run.limit(seed=0)
    assert lim.outputs.shape == (3, 3, 2) and lim.loss.shape == (3,)
    widths, seeds = (256, 1024), range(20)
    means, ses = [], []
    for n in widths:
        S = [run.simulate(n, seed=s) for s in seeds]
        vals = np.array([np.concatenate([s.outputs.ravel(), s.loss]) for s in S])
        means.append(vals.mean(0))
        ses.append(vals.std(0, ddof=1) / np.sqrt(len(S)))
    extrap = (4 * means[1] - means[0]) / 3
    se = np.sqrt(16 * ses[1] ** 2 + ses[0] ** 2) / 3
    limv = np.concatenate([lim.outputs.ravel(), lim.loss])
    lims = np.concatenate([lim.stderr.ravel(), lim.loss_stderr])
    z = np.abs(extrap - limv) / np.sqrt(se**2 + lims**2 + 1e-30)
    assert z.max() < 4, z.max()


def test_muP_per_class_table():
    """nn.muP() gives TP5 Table 3's exponents per class: v = n^{-2b}(/d), s = n^{-c}."""
    P = nn.muP()
    C = nn.ParamClass
    expect = {  # class: (b, c, variance divided by d)
        C.INPUT: (0, -1, True),
        C.VECTOR: (0, -1, False),
        C.OUTPUT: (1, 1, False),
        C.HIDDEN: (Fraction(1, 2), 0, False),
        C.SCALAR: (0, 0, False),
    }
    for cls, (b, c, by_d) in expect.items():
        sc = P.scaling("w", cls, 4)
        assert (sc.a, sc.b, sc.c) == (0, b, c)
        assert sc.var_factor == (0.25 if by_d else 1.0)
    assert P.table[C.OUTPUT].adam_c == 1 and P.table[C.OUTPUT].adam_d == 0
    assert P.table[C.HIDDEN].adam_c == 1 and P.table[C.HIDDEN].adam_d == 1
    # the depth-taking presets are unchanged
    assert isinstance(nn.muP(2), nn.ABC) and nn.classify(nn.muP(2)).regime == "feature learning"


def test_sp_is_refused_but_simulates_with_allow_unstable():
    """SP: the output's width power n^{1/2} diverges (f_0 is a Gaussian-process
    fluctuation): refused, naming the parameter and exponent; with allow_unstable=True the
    finite network simulates (= the numpy SP network: learning rate lr for every class,
    output variance 1/n) and limit() refuses."""
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])
    m = bias_mlp()
    with pytest.raises(tp.ProgramValueError, match=r"'W_out'.*n\^\(1/2\)"):
        nn.train(m, X3, Y, steps=2, optimizer=nn.SGD(0.3), param=nn.SP())
    run = nn.train(m, X3, Y, steps=2, optimizer=nn.SGD(0.3), param=nn.SP(), allow_unstable=True)
    assert run.problems
    n = 64
    sim = run.simulate(n, seed=2)
    P = {k: sim.param(k) for k in ("W_in", "b", "W_out")}
    outs, _ = ref_bias_mlp(P, X3, Y, 2, 0.3, 0.0, n, lrs={"W_in": 0.3, "b": 0.3, "W_out": 0.3})
    np.testing.assert_allclose(sim.outputs, outs, rtol=1e-9, atol=1e-11)
    with pytest.raises(tp.ProgramValueError, match="no infinite-width limit"):
        run.limit()
    # NTK (a stable readout update): centred instead (tests/test_train_kernel.py)
    ntk = nn.train(m, X3, Y, steps=1, param=nn.NTK())
    assert ntk.center and not ntk.problems


def test_sp_output_variance():
    """SP's output weights have variance 1/n (entries of sim.param; relative standard
    error of the variance estimate √(2/(2n)) ≈ 1.6% at n = 4096: 5 of them)."""
    Y = np.zeros((3, 2))
    run = nn.train(bias_mlp(), X3, Y, steps=1, param=nn.SP(), allow_unstable=True)
    W = run.simulate(4096, seed=0).param("W_out")
    assert abs(W.var() * 4096 - 1) < 5 * np.sqrt(2 / W.size)


def _one_layer(d=2, k=2, phi=tp.relu):
    m = nn.Model("one")
    m.param("W_in", ("n", d))
    m.param("W_out", (k, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ phi(p.W_in @ xi)

    return m


def test_mf_abc_on_a_model():
    """nn.MF() (TP4's depth-1 ABC) on a model: the per-class exponents of its layers; the
    same limit as nn.train_sgd's MF network; a hidden weight has no MF exponents."""
    m = _one_layer(d=1, k=1, phi=tp.tanh)
    X, Y = [[1.0]], [1.0]
    a = nn.train(m, X, Y, steps=2, optimizer=nn.SGD(0.8), param=nn.MF()).limit()
    b = nn.train_sgd(nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.MF()), X, Y, lr=0.8, steps=2)
    lb = b.limit()
    np.testing.assert_allclose(
        a.outputs[..., 0], lb.outputs, atol=4 * (a.stderr[..., 0] + lb.stderr).max() + 1e-12
    )
    with pytest.raises(tp.ProgramValueError, match="no hidden"):
        nn.train(ln_rnn(), X3, [0, 1, 2], steps=1, loss="xent", param=nn.MF())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"loss": "xent", "Y": [0, 2, 1]}, r"labels in \[0, d_out\)"),
        ({"loss": "xent", "Y": [0.5, 1, 1]}, "integer labels"),
        ({"Y": [1.0, 2.0, 3.0]}, r"shape \(B, d_out\)"),
        ({"Y": [[1.0, 2.0]]}, "one row per row of X"),
        ({"batches": [[0, 3]]}, r"batches\[0\]"),
        ({"batches": [[0], [1]]}, "each of the 1 steps"),
        ({"steps": 0}, "steps must be an int"),
        ({"param": nn.abcd({"W_in": (0, 0, -1, 0)})}, "no exponents for parameter 'W_out'"),
        (
            {"param": nn.abcd({"W_in": (0, 0, -1, 0), "W_out": (0, 1, 1, 0), "V": (0, 0, 0, 0)})},
            "unknown parameters",
        ),
        ({"optimizer": "sgd"}, "optimizer must be nn.SGD"),
        ({"X": [[1.0, 2.0, 3.0]] * 3}, "length 2"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"X": X3[:, :2], "Y": np.zeros((3, 2)), "steps": 1}
    args.update(kwargs)
    X, Y, steps = args.pop("X"), args.pop("Y"), args.pop("steps")
    with pytest.raises(tp.TensorProgramError, match=match):
        nn.train(_one_layer(), X, Y, steps, **args)


def test_bad_models():
    m = nn.Model("bad")
    for shape in (("n", "n", "n"), (2, 3), ("m",), ("n", 0)):
        with pytest.raises(tp.ProgramValueError, match="shape"):
            m.param("w", shape)
    with pytest.raises(tp.ProgramValueError, match="init_mean 0"):
        m.param("W", ("n", "n"), init_mean=1.0)
    with pytest.raises(tp.ProgramValueError, match="init_std=0"):
        m.param("c", ())
    m.param("W_in", ("n", 2))
    with pytest.raises(tp.ProgramValueError, match="already declared"):
        m.param("W_in", ("n", 2))
    with pytest.raises(tp.ProgramValueError, match="no forward"):
        nn.train(m, X3, [1.0, 1.0, 1.0], 1)

    @m.forward
    def f(p, xi):
        return p.W_nope @ xi

    with pytest.raises(tp.ProgramValueError, match="no parameter 'W_nope'"):
        nn.train(m, X3, [1.0, 1.0, 1.0], 1)

    @m.forward
    def g(p, xi):
        return p.W_in @ xi  # a vector, not outputs

    with pytest.raises(tp.ProgramTypeError, match="Scalar"):
        nn.train(m, X3, [1.0, 1.0, 1.0], 1)
    with pytest.raises(tp.ProgramValueError, match="momentum"):
        nn.SGD(0.1, momentum=1.0)


def test_named_scalars_and_reproducibility():
    """Named scalars: limit values with standard errors, finite-width values; a named
    vector has no limit value; the same seed gives the same bits."""
    Y = np.array([[0.5, -0.2], [-0.3, 0.4], [0.8, 0.1]])
    run = nn.train(bias_mlp(), X3, Y, steps=1, optimizer=nn.SGD(0.5))
    s1, s2 = run.simulate(32, seed=7), run.simulate(32, seed=7)
    assert np.array_equal(s1.outputs, s2.outputs) and np.array_equal(s1.named("q"), s2.named("q"))
    np.testing.assert_allclose(s1.named("q"), (s1.named("x") ** 2).mean(-1), rtol=1e-12)
    lim = run.limit(seed=0, samples=20_000)
    q, qe = lim.named("q"), lim.named_stderr("q")
    assert q.shape == qe.shape == (2, 3) and np.all(q > 0) and np.all(qe >= 0)
    assert lim.method.shape == (2, 3, 2) and set(lim.method.flat) <= {
        "exact",
        "quadrature",
        "montecarlo",
    }
    with pytest.raises(tp.ProgramValueError, match="is a vector"):
        lim.named("x")
    with pytest.raises(tp.ProgramValueError, match="named no quantity"):
        lim.named("h")
    with pytest.raises(tp.ProgramValueError, match="no parameter"):
        s1.param("V")


def _three_layer(name, in_std, forward):
    """Input weights (d = 2, init_std ``in_std``), a hidden weight W, one output."""
    m = nn.Model(name)
    m.param("W_in", ("n", 2), init_std=in_std)
    m.param("W", ("n", "n"))
    m.param("W_out", (1, "n"))
    m.forward(forward)
    return m


def test_same_network_as_train_sgd():
    """The MLP of nn.train_sgd (μP, L = 2, relu), written as an nn.Model with nn.abcd
    giving its exponents (a+b, c+2a per layer), is the same finite network: from the same
    seed the simulations agree to rounding (train_sgd is checked against its own numpy
    network in tests/test_training.py)."""
    m = _three_layer("mlp2", 1.0, lambda p, xi: p.W_out @ tp.relu(p.W @ tp.relu(p.W_in @ xi)))
    Y = np.array([0.5, -0.3, 0.8])
    param = nn.abcd({"W_in": (0, 0, -1, 0), "W": (0, "1/2", 0, 0), "W_out": (0, 1, 1, 0)})
    run = nn.train(m, X3, Y, steps=3, optimizer=nn.SGD(0.8), param=param)
    ref = nn.train_sgd(nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.muP(2)), X3, Y, 0.8, 3)
    a, b = run.simulate(64, seed=4), ref.simulate(64, seed=4)
    np.testing.assert_allclose(a.outputs[..., 0], b.outputs, rtol=1e-12, atol=1e-13)


def test_transposed_use_of_a_hidden_weight():
    """A hidden weight used as W and as Wᵀ (tied): ∂L/∂W collects both uses (the Wᵀ use
    contributes ``a dzᵀ``); simulate(n) equals the numpy network from the same draws."""
    m = _three_layer(
        "tied", np.sqrt(2), lambda p, xi: p.W_out @ tp.tanh(p.W.T @ tp.tanh(p.W @ (p.W_in @ xi)))
    )

    Y = np.array([0.5, -0.3, 0.8])
    run = nn.train(m, X3, Y, steps=3, optimizer=nn.SGD(0.6))
    n = 40
    sim = run.simulate(n, seed=2)
    P = {k: sim.param(k) for k in ("W_in", "W", "W_out")}
    lrs = {"W_in": 0.6 * n, "W": 0.6, "W_out": 0.6 / n}
    outs = []
    for _ in range(4):
        G = {k: np.zeros_like(v) for k, v in P.items()}
        F = np.zeros(3)
        for i, xi in enumerate(X3):
            h = P["W_in"] @ xi
            a = np.tanh(P["W"] @ h)
            bb = np.tanh(P["W"].T @ a)
            F[i] = P["W_out"][0] @ bb
            df = (F[i] - Y[i]) / 3
            G["W_out"][0] += df * bb
            dz = df * P["W_out"][0] * (1 - bb**2)
            G["W"] += np.outer(a, dz)  # the Wᵀ use
            dha = (P["W"] @ dz) * (1 - a**2)
            G["W"] += np.outer(dha, h)
            G["W_in"] += np.outer(P["W"].T @ dha, xi)
        outs.append(F)
        for k in P:
            P[k] = P[k] - lrs[k] * G[k]
    np.testing.assert_allclose(sim.outputs[..., 0], np.array(outs), rtol=1e-9, atol=1e-11)
