r"""An independent numpy implementation of the finite network that ``nn.train`` unrolls.

Written from the definition of the finite network (docs/concepts/finite-network.md), not from
tensorprog: nothing here imports the package. Parameters are plain arrays, the forward passes
are numpy, the gradients are hand-written backpropagation (checked against central finite
differences in ``tests/test_train_reference.py``), and training is SGD with momentum.

The finite network [TP5 Table 3, μP without multipliers; TP5 App B for the classes]:

=================  ================  ====================  ===================
class (shape)      init variance v   SGD learning rate s    example
=================  ================  ====================  ===================
input ``(n, d)``   ``1/d``           ``n``                  ``W_in``
vector ``(n,)``    ``1``             ``n``                  bias, gain
output ``(k, n)``  ``1/n²``          ``1/n``                ``W_out``
hidden ``(n, n)``  ``1/n``           ``1``                  ``W_hid``
scalar (no n)      ``1``             ``1``                  output bias
=================  ================  ====================  ===================

Entries are iid ``N(init_mean, init_std² v)``; a parameter's learning rate is
``lr · lr_mult · s``. Loss over the rows ``I`` used at a step: ``mse``
``(1/2|I|) Σ_i ‖f(ξ_i) − y_i‖²``, ``xent`` ``(1/|I|) Σ_i [logsumexp f(ξ_i) − f(ξ_i)_{y_i}]``.
SGD with momentum μ: ``buf ← μ buf + g``, ``w ← w − lr_P buf``, ``buf₀ = 0`` [TP4b §2.1].
LayerNorm ``(h − h̄)/√(mean((h − h̄)²) + ε)``, means over the ``n`` coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Spec:
    """One parameter: shape over the width ``"n"`` and finite dims, init and lr multiplier."""

    name: str
    shape: tuple
    init_mean: float = 0.0
    init_std: float = 1.0
    lr_mult: float = 1.0

    @property
    def cls(self) -> str:
        """``"input" | "vector" | "output" | "hidden" | "scalar"`` (TP5 App B)."""
        s = self.shape
        if s == ("n", "n"):
            return "hidden"
        if s == ("n",):
            return "vector"
        if len(s) == 2 and s[0] == "n":
            return "input"
        if len(s) == 2 and s[1] == "n":
            return "output"
        if "n" not in s:
            return "scalar"
        raise ValueError(f"no class for shape {s}")

    def concrete(self, n: int) -> tuple[int, ...]:
        return tuple(n if d == "n" else d for d in self.shape)

    def mup_sgd(self, n: int) -> tuple[float, float]:
        """``(v, s)``: init variance factor and SGD learning-rate factor, TP5 Table 3."""
        c = self.cls
        if c == "input":
            return 1.0 / self.shape[1], float(n)
        if c == "vector":
            return 1.0, float(n)
        if c == "output":
            return 1.0 / n**2, 1.0 / n
        if c == "hidden":
            return 1.0 / n, 1.0
        return 1.0, 1.0


def init_params(specs: Sequence[Spec], n: int, rng: np.random.Generator) -> dict:
    """Fresh μP draws at width ``n``: entries ``N(init_mean, init_std² v)``."""
    out = {}
    for s in specs:
        v, _ = s.mup_sgd(n)
        out[s.name] = s.init_mean + s.init_std * np.sqrt(v) * rng.standard_normal(s.concrete(n))
    return out


def learning_rates(specs: Sequence[Spec], n: int, lr: float) -> dict:
    """``lr · lr_mult · s`` per parameter (μP SGD)."""
    return {s.name: lr * s.lr_mult * s.mup_sgd(n)[1] for s in specs}


# ------------------------------------------------------------------ building blocks


def relu(x):
    return np.maximum(x, 0.0)


def step(x):
    return (x > 0).astype(float)


def tanh_d(x):
    return 1.0 - np.tanh(x) ** 2


def layernorm(h: np.ndarray, eps: float = 1e-5):
    """LayerNorm without gain over the last axis (the ``n`` coordinates), and its cache."""
    c = h - h.mean(axis=-1, keepdims=True)
    s = np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps)
    y = c / s
    return y, (y, s)


def layernorm_vjp(dy: np.ndarray, cache) -> np.ndarray:
    r"""``∂L/∂h`` from ``∂L/∂y``: :math:`(dy − \overline{dy} − y\,\overline{dy\,y})/s`.

    From ``y = c/s``, ``c = h − h̄``, ``s² = mean(c²) + ε``: ``∂s/∂c_j = c_j/(n s)``, so
    ``∂L/∂c = dy/s − y·mean(dy·y)/s``, and ``∂L/∂h = ∂L/∂c − mean(∂L/∂c)`` (mean(y) = 0).
    """
    y, s = cache
    mean = lambda a: a.mean(axis=-1, keepdims=True)  # noqa: E731
    return (dy - mean(dy) - y * mean(dy * y)) / s


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product without a multithreaded BLAS (einsum's own loop): the tests share two
    cores with other processes, where a threaded BLAS product of a few rows is ~10× slower."""
    return np.einsum("ij,jk->ik", a, b)


def rmsnorm(h: np.ndarray, eps: float = 1e-5):
    """RMSNorm without gain over the last axis, and its cache."""
    s = np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + eps)
    y = h / s
    return y, (y, s)


def rmsnorm_vjp(dy: np.ndarray, cache) -> np.ndarray:
    r"""``∂L/∂h`` from ``∂L/∂y`` for ``y = h/s``, ``s² = mean(h²) + ε``:
    ``∂s/∂h_j = h_j/(n s)``, so :math:`(dy − y\,\overline{dy\,y})/s`."""
    y, s = cache
    return (dy - y * np.mean(dy * y, axis=-1, keepdims=True)) / s


# ------------------------------------------------------------------ losses


def mse(F: np.ndarray, Y: np.ndarray):
    """``(1/2B) Σ_i ‖F_i − Y_i‖²`` and its gradient ``(F − Y)/B``."""
    Y = np.asarray(Y, float).reshape(F.shape)
    r = F - Y
    B = len(F)
    return 0.5 * float(np.sum(r * r)) / B, r / B


def xent(F: np.ndarray, labels: np.ndarray):
    """``(1/B) Σ_i [logsumexp F_i − F_{i,y_i}]`` and its gradient ``(softmax F − onehot)/B``."""
    labels = np.asarray(labels, int)
    B = len(F)
    m = F.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(F - m).sum(axis=1))
    P = np.exp(F - lse[:, None])
    rows = np.arange(B)
    loss = float(np.mean(lse - F[rows, labels]))
    G = P.copy()
    G[rows, labels] -= 1.0
    return loss, G / B


LOSSES: dict[str, Callable] = {"mse": mse, "xent": xent}


# ------------------------------------------------------------------ models
# Batched: a row per input. ``forward(P, X)`` with ``X`` of shape ``(B, d_in)`` returns
# ``F (B, d_out)`` and a cache; ``backward(P, cache, dF)`` returns, per parameter, the gradient
# of ``Σ_i dF_i · F_i`` (summed over the rows).


@dataclass
class RefModel:
    """A model: its parameters, a batched forward and its hand-written backward."""

    name: str
    specs: list[Spec]
    d_in: int
    d_out: int
    forward: Callable
    backward: Callable


def _readout_vjp(g: dict, P: dict, dF: np.ndarray, X: np.ndarray) -> np.ndarray:
    """For ``F = X W_outᵀ``: store ``∂/∂W_out = dFᵀ X`` in ``g``, return ``∂/∂X = dF W_out``."""
    g["W_out"] = mm(dF.T, X)
    return mm(dF, P["W_out"])


def _resmlp_forward(P, X):
    H = mm(X, P["W_in"].T) + P["b"]
    U, ln = layernorm(H)
    A = relu(U)
    H2 = H + 0.5 * mm(A, P["W_hid"].T)
    Xo = relu(H2)
    return mm(Xo, P["W_out"].T) + P["c"], (X, U, ln, A, H2, Xo)


def _resmlp_backward(P, cache, dF):
    X, U, ln, A, H2, Xo = cache
    g = {"c": dF.sum(axis=0)}
    dH2 = _readout_vjp(g, P, dF, Xo) * step(H2)
    dM = 0.5 * dH2
    g["W_hid"] = mm(dM.T, A)
    dU = mm(dM, P["W_hid"]) * step(U)
    dH = dH2 + layernorm_vjp(dU, ln)
    g["W_in"] = mm(dH.T, X)
    g["b"] = dH.sum(axis=0)
    return g


def resmlp() -> RefModel:
    """(a) Residual MLP with LayerNorm and biases, 3 inputs, 3 logits:
    ``h = W_in ξ + b;  h₂ = h + ½ W_hid relu(LN(h));  f = W_out relu(h₂) + c``."""
    specs = [
        Spec("W_in", ("n", 3)),
        Spec("b", ("n",), init_std=0.0),
        Spec("W_hid", ("n", "n")),
        Spec("W_out", (3, "n")),
        Spec("c", (3,), init_std=0.0),
    ]
    return RefModel("resmlp", specs, 3, 3, _resmlp_forward, _resmlp_backward)


def _mlp_forward(P, X):
    H1 = mm(X, P["W_in"].T)
    X1 = np.tanh(H1)
    H2 = mm(X1, P["W_hid"].T)
    X2 = np.tanh(H2)
    return mm(X2, P["W_out"].T), (X, H1, X1, H2, X2)


def _mlp_backward(P, cache, dF):
    X, H1, X1, H2, X2 = cache
    g = {}
    dH2 = _readout_vjp(g, P, dF, X2) * tanh_d(H2)
    g["W_hid"] = mm(dH2.T, X1)
    dH1 = mm(dH2, P["W_hid"]) * tanh_d(H1)
    g["W_in"] = mm(dH1.T, X)
    return g


def mlp2() -> RefModel:
    """(b) Two-hidden-layer tanh MLP with 2 outputs (trained with momentum under mse);
    the hidden weights have ``lr_mult = 0.5``:
    ``f = W_out tanh(W_hid tanh(W_in ξ))``."""
    specs = [
        Spec("W_in", ("n", 2)),
        Spec("W_hid", ("n", "n"), lr_mult=0.5),
        Spec("W_out", (2, "n")),
    ]
    return RefModel("mlp2", specs, 2, 2, _mlp_forward, _mlp_backward)


def _gain_forward(P, X):
    U, ln = layernorm(mm(X, P["W_in"].T))
    Yg = P["g"] * U
    Xo = np.tanh(Yg)
    return mm(Xo, P["W_out"].T), (X, U, ln, Yg, Xo)


def _gain_backward(P, cache, dF):
    X, U, ln, Yg, Xo = cache
    g = {}
    dY = _readout_vjp(g, P, dF, Xo) * tanh_d(Yg)
    g["g"] = (dY * U).sum(axis=0)
    dH = layernorm_vjp(dY * P["g"], ln)
    g["W_in"] = mm(dH.T, X)
    return g


def lngain() -> RefModel:
    """(c) A trained LayerNorm gain, one output:
    ``f = W_out tanh(g ⊙ LN(W_in ξ))``, ``g`` vector-like with ``init_mean = 1, init_std = 0``."""
    specs = [
        Spec("W_in", ("n", 2)),
        Spec("g", ("n",), init_mean=1.0, init_std=0.0),
        Spec("W_out", (1, "n")),
    ]
    return RefModel("lngain", specs, 2, 1, _gain_forward, _gain_backward)


def _rms_forward(P, X):
    U, rms = rmsnorm(mm(X, P["W_in"].T))
    H = mm(U, P["W_hid"].T) + P["b"]
    Xo = relu(H)
    return mm(Xo, P["W_out"].T) + P["c"], (X, rms, U, H, Xo)


def _rms_backward(P, cache, dF):
    X, rms, U, H, Xo = cache
    g = {"c": dF.sum(axis=0)}
    dH = _readout_vjp(g, P, dF, Xo) * step(H)
    g["b"] = dH.sum(axis=0)
    g["W_hid"] = mm(dH.T, U)
    dX = rmsnorm_vjp(mm(dH, P["W_hid"]), rms)
    g["W_in"] = mm(dX.T, X)
    return g


def rmsmlp() -> RefModel:
    """(e) RMSNorm, a randomly initialised hidden bias and a trained output bias with its own
    learning-rate multiplier, 2 outputs:
    ``f = W_out relu(W_hid RMS(W_in ξ) + b) + c``, ``b ~ N(0, 0.5²)``, ``c₀ = 0.3``,
    ``lr_mult(c) = 0.5``."""
    specs = [
        Spec("W_in", ("n", 2)),
        Spec("W_hid", ("n", "n")),
        Spec("b", ("n",), init_std=0.5),
        Spec("W_out", (2, "n")),
        Spec("c", (2,), init_mean=0.3, init_std=0.0, lr_mult=0.5),
    ]
    return RefModel("rmsmlp", specs, 2, 2, _rms_forward, _rms_backward)


RNN_STEPS, RNN_D = 3, 2


def _rnn_forward(P, X):
    xs = X.reshape(len(X), RNN_STEPS, RNN_D)
    hs, pre = [], []
    for t in range(RNN_STEPS):
        Z = mm(xs[:, t], P["W_in"].T)
        if t:
            Z = Z + mm(hs[-1], P["W_hid"].T)
        pre.append(Z)
        hs.append(np.tanh(Z))
    return mm(hs[-1], P["W_out"].T), (xs, pre, hs)


def _rnn_backward(P, cache, dF):
    xs, pre, hs = cache
    g = {"W_hid": 0.0, "W_in": 0.0}
    dH = _readout_vjp(g, P, dF, hs[-1])
    for t in reversed(range(RNN_STEPS)):
        dZ = dH * tanh_d(pre[t])
        g["W_in"] = g["W_in"] + mm(dZ.T, xs[:, t])
        if t:
            g["W_hid"] = g["W_hid"] + mm(dZ.T, hs[t - 1])
            dH = mm(dZ, P["W_hid"])
    return g


def rnn() -> RefModel:
    """(d) A weight-shared tanh RNN over 3 time steps, one input row ``ξ ∈ R⁶`` read as
    ``(ξ₁, ξ₂, ξ₃)``, ``ξ_t ∈ R²``; two logits:
    ``h₁ = tanh(W_in ξ₁)``, ``h_t = tanh(W_hid h_{t−1} + W_in ξ_t)``, ``f = W_out h₃``."""
    specs = [
        Spec("W_in", ("n", RNN_D)),
        Spec("W_hid", ("n", "n")),
        Spec("W_out", (2, "n")),
    ]
    return RefModel("rnn", specs, RNN_STEPS * RNN_D, 2, _rnn_forward, _rnn_backward)


# ------------------------------------------------------------------ training


def loss_and_grad(model: RefModel, P: dict, X, Y, loss: str, rows=None):
    """Loss over ``rows`` (default all) of ``X`` and its exact gradient per parameter."""
    rows = np.arange(len(X)) if rows is None else np.asarray(rows)
    F, cache = model.forward(P, np.asarray(X, float)[rows])
    L, dF = LOSSES[loss](F, np.asarray(Y)[rows])
    G = model.backward(P, cache, dF)
    return L, {k: np.broadcast_to(G[k], v.shape).copy() for k, v in P.items()}


def outputs_of(model: RefModel, P: dict, X) -> np.ndarray:
    return model.forward(P, np.asarray(X, float))[0]


def train(
    model: RefModel,
    P0: dict,
    lrs: dict,
    X,
    Y,
    *,
    loss: str,
    steps: int,
    momentum: float = 0.0,
    batches=None,
):
    """SGD with momentum from ``P0``; returns ``outputs (steps+1, B, d_out)`` over all rows
    of ``X`` and ``loss (steps+1,)`` of ``f_t`` over all rows (before update ``t+1``)."""
    P = {k: np.array(v, float) for k, v in P0.items()}
    buf = {k: np.zeros_like(v) for k, v in P.items()}
    outs, losses = [], []
    for t in range(steps + 1):
        F = outputs_of(model, P, X)
        outs.append(F)
        losses.append(LOSSES[loss](F, Y)[0])
        if t == steps:
            break
        _, G = loss_and_grad(model, P, X, Y, loss, None if batches is None else batches[t])
        for k in P:
            buf[k] = momentum * buf[k] + G[k] if momentum else G[k]
            P[k] = P[k] - lrs[k] * buf[k]
    return np.array(outs), np.array(losses)


# ------------------------------------------------------------------ entrywise optimizers
# Adam and SignSGD on the same finite networks (docs/concepts/finite-network.md, "The presets
# for Adam and SignSGD" and "Updates"): μP without multipliers [TP5 Table 3, Adam column],
# with each parameter's epsilon ε_P = ε·n^{-e} [TP4b Remark 2.2.6].


def mup_adam(spec: Spec, n: int) -> tuple[float, float]:
    """``(s, e)``: learning-rate factor and epsilon exponent of μP for Adam/SignSGD."""
    return {
        "input": (1.0, 1.0),
        "vector": (1.0, 1.0),
        "output": (1.0 / n, 0.0),
        "hidden": (1.0 / n, 1.0),
        "scalar": (1.0, 0.0),
    }[spec.cls]


def adam_settings(specs: Sequence[Spec], n: int, lr: float, eps: float) -> tuple[dict, dict]:
    """``({name: lr·lr_mult·s}, {name: ε·n^{-e}})`` per parameter (μP, Adam/SignSGD)."""
    lrs, epss = {}, {}
    for s in specs:
        f, e = mup_adam(s, n)
        lrs[s.name] = lr * s.lr_mult * f
        epss[s.name] = eps * float(n) ** (-e)
    return lrs, epss


class _Record:
    """Outputs and loss over all rows of ``X``, appended at every call (``f_t`` before
    update ``t+1``)."""

    def __init__(self, model: RefModel, X, Y, loss: str) -> None:
        self.model, self.X, self.Y, self.loss = model, X, Y, loss
        self.outs: list = []
        self.losses: list = []

    def __call__(self, P: dict) -> None:
        F = outputs_of(self.model, P, self.X)
        self.outs.append(F)
        self.losses.append(LOSSES[self.loss](F, self.Y)[0])


def train_entrywise(
    model: RefModel,
    P0: dict,
    lrs: dict,
    epss: dict,
    X,
    Y,
    *,
    loss: str,
    steps: int,
    rule: str,
    betas: tuple[float, float] = (0.9, 0.999),
    batches=None,
):
    """Adam (``rule="adam"``: ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
    ``w ← w − lr_P (m/(1−β₁^{t+1}))/√(v/(1−β₂^{t+1}) + ε_P²)``) or SignSGD
    (``rule="sign"``: ``w ← w − lr_P g/√(g² + ε_P²)``) from ``P0``, entry by entry [TP4b §2.1];
    returns ``outputs (steps+1, B, d_out)`` and ``loss (steps+1,)`` over all rows."""
    P = {k: np.array(v, float) for k, v in P0.items()}
    m1 = {k: np.zeros_like(v) for k, v in P.items()}
    m2 = {k: np.zeros_like(v) for k, v in P.items()}
    b1, b2 = betas
    record = _Record(model, X, Y, loss)
    for t in range(steps):
        record(P)
        _, G = loss_and_grad(model, P, X, Y, loss, None if batches is None else batches[t])
        for k in P:
            g, e2 = G[k], epss[k] ** 2
            if rule == "sign":
                upd = g / np.sqrt(g * g + e2)
            elif rule == "adam":
                m1[k] = b1 * m1[k] + (1 - b1) * g
                m2[k] = b2 * m2[k] + (1 - b2) * g * g
                upd = (m1[k] / (1 - b1 ** (t + 1))) / np.sqrt(m2[k] / (1 - b2 ** (t + 1)) + e2)
            else:
                raise ValueError(f"rule must be 'adam' or 'sign', got {rule!r}")
            P[k] = P[k] - lrs[k] * upd
    record(P)
    return np.array(record.outs), np.array(record.losses)


def _mlp1_forward(P, X):
    H = mm(X, P["W_in"].T) + P["b"]
    A = np.tanh(H)
    return mm(A, P["W_out"].T) + P["c"], (X, H, A)


def _mlp1_backward(P, cache, dF):
    X, H, A = cache
    g = {"c": dF.sum()}  # c has shape (): one output
    dH = _readout_vjp(g, P, dF, A) * tanh_d(H)
    g["W_in"] = mm(dH.T, X)
    g["b"] = dH.sum(axis=0)
    return g


def mlp1() -> RefModel:
    """(f) One hidden layer (no n×n weight) with a random bias and a scalar output bias:
    ``f = W_out tanh(W_in ξ + b) + c``, ``b ~ N(0, 0.5²)``, ``c₀ = 0.1``."""
    specs = [
        Spec("W_in", ("n", 2)),
        Spec("b", ("n",), init_std=0.5),
        Spec("W_out", (1, "n")),
        Spec("c", (), init_mean=0.1, init_std=0.0),
    ]
    return RefModel("mlp1", specs, 2, 1, _mlp1_forward, _mlp1_backward)


# ------------------------------------------------------------------ kernel-regime runs


_MLPB_LAYERS = (("W_in", "b1"), ("W_hid", "b2"))


def _mlpb_forward(P, X):
    cache, x = [X], X
    for W, b in _MLPB_LAYERS:
        h = mm(x, P[W].T) + P[b]
        x = np.tanh(h)
        cache += [h, x]
    return mm(x, P["W_out"].T), cache


def _mlpb_backward(P, cache, dF):
    g = {}
    dx = _readout_vjp(g, P, dF, cache[-1])
    for k in reversed(range(len(_MLPB_LAYERS))):
        W, b = _MLPB_LAYERS[k]
        dh = dx * tanh_d(cache[2 * k + 1])
        g[b] = dh.sum(axis=0)
        g[W] = mm(dh.T, cache[2 * k])
        dx = mm(dh, P[W])
    return g


def mlp_bias2() -> RefModel:
    """(e) Two-hidden-layer tanh MLP with biases, 2 inputs, 1 output (the kernel-regime
    runs): ``f = W_out tanh(W_hid tanh(W_in ξ + b1) + b2)``."""
    specs = [
        Spec("W_in", ("n", 2)),
        Spec("b1", ("n",)),
        Spec("W_hid", ("n", "n")),
        Spec("b2", ("n",)),
        Spec("W_out", (1, "n")),
    ]
    return RefModel("mlp_bias2", specs, 2, 1, _mlpb_forward, _mlpb_backward)


def train_centred(model: RefModel, P0: dict, lrs: dict, X, Y, **kw):
    """:func:`train` (same keywords) of the centred network ``f − f_0`` (``f_0``: the
    outputs of ``P0`` on each input row, a constant: the loss is of ``f − f_0``, its
    gradient ``∂L/∂F · ∂f/∂P``). Returns the outputs ``f_t − f_0`` ``(steps+1, B, d_out)``."""
    X = np.asarray(X, float)
    F0 = {x.tobytes(): f for x, f in zip(X, outputs_of(model, P0, X))}

    def forward(P, rows):
        F, cache = model.forward(P, rows)
        return F - np.array([F0[x.tobytes()] for x in rows]), cache

    centred = RefModel(
        model.name + "_centred", model.specs, model.d_in, model.d_out, forward, model.backward
    )
    return train(centred, P0, lrs, X, Y, **kw)[0]
