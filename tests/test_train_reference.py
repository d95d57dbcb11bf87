"""``nn.Model`` / ``nn.train`` against an independent numpy implementation of the finite network.

The reference (``tests/reference_nets.py``) imports nothing from tensorprog: numpy forwards,
hand-written backprop, SGD with momentum, written from the definition of the finite network
(TP5 Table 3 μP without multipliers, per parameter class). Four models (issue 15, Acceptance):

(a) a residual MLP with LayerNorm, a hidden bias and an output bias, 3-way cross-entropy;
(b) a two-hidden-layer tanh MLP with 2 outputs under mse, SGD momentum 0.9, ``lr_mult``;
(c) a trained LayerNorm gain (``init_mean=1, init_std=0``), mse on 1 output, mini-batches;
(d) a weight-shared tanh RNN over 3 time steps (one input row of 6 = three steps of 2);
(e) beyond the acceptance list: RMSNorm, a random hidden bias, an output bias with ``lr_mult``.

Checks:

* the reference's gradients equal central finite differences of its own loss (so the
  reference cannot be silently wrong), and its momentum update is the heavy-ball recursion;
* exactness: ``run.simulate(n, seed)`` equals the reference started from ``sim.param(name)``,
  outputs and loss at every step, to 1e-10 relative (both are double precision computations
  of the same finite network; they differ only in the order of floating-point operations);
* the draws of ``simulate`` have the table's means and variances (within 5 standard errors);
* the limit: ``run.limit()`` agrees with the reference's own finite-width runs (fresh draws,
  96, 48, 24 seeds at ``n = 128, 256, 512``) extrapolated linearly in ``1/n`` by weighted least
  squares, within 4 combined standard errors (seed spread of the fit's intercept and the
  limit's own error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import reference_nets as ref

import tensorprog as tp
from tensorprog import nn

HAS_MODEL = hasattr(nn, "Model") and hasattr(nn, "train")
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="nn.Model / nn.train not built yet")


# ------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    ref: ref.RefModel
    X: np.ndarray
    Y: np.ndarray
    loss: str
    steps: int
    lr: float
    momentum: float = 0.0
    batches: tuple | None = None


def _inputs(B: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, d))


CASES = {
    "resmlp_xent": Case(ref.resmlp(), _inputs(3, 3, 11), np.array([0, 1, 2]), "xent", 3, 2.0),
    "mlp_momentum_mse": Case(
        ref.mlp2(),
        _inputs(3, 2, 12),
        np.array([[1.0, -0.5], [-0.5, 0.5], [0.3, 1.0]]),
        "mse",
        3,
        0.5,
        momentum=0.9,
    ),
    "lngain_batches": Case(
        ref.lngain(),
        _inputs(4, 2, 13),
        np.array([1.0, -1.0, 0.5, -0.5]),
        "mse",
        3,
        1.0,
        batches=((0, 1), (2, 3), (0, 3)),
    ),
    "rnn_xent": Case(ref.rnn(), _inputs(2, 6, 14), np.array([0, 1]), "xent", 2, 1.0),
    "rmsmlp_mse": Case(
        ref.rmsmlp(),
        _inputs(3, 2, 15),
        np.array([[0.5, -1.0], [1.0, 0.0], [-0.5, 0.5]]),
        "mse",
        2,
        1.0,
    ),
}


# ------------------------------------------------------------------ the reference checks itself


def _random_params(model: ref.RefModel, n: int, rng) -> dict:
    """Generic (non-μP-sized) values, so that biases and gains are not at their init."""
    return {s.name: rng.standard_normal(s.concrete(n)) * 0.7 for s in model.specs}


@pytest.mark.parametrize("name", list(CASES))
def test_reference_gradients_are_finite_differences(name):
    """Every entry of every parameter gradient (loss over all rows and over a mini-batch)
    against a central difference with step 1e-5: truncation ``O(h²)·|∂³L| ≈ 1e-10``,
    rounding ``≈ 1e-16/h ≈ 1e-11``; tolerance 1e-7 (×max(1, |g|))."""
    case = CASES[name]
    rng = np.random.default_rng(5)
    P = _random_params(case.ref, 5, rng)
    for rows in (None, [0, len(case.X) - 1]):
        _, G = ref.loss_and_grad(case.ref, P, case.X, case.Y, case.loss, rows)
        h = 1e-5
        for k, v in P.items():
            fd = np.zeros_like(v)
            for idx in np.ndindex(v.shape):
                for sign in (1, -1):
                    Q = {kk: vv.copy() for kk, vv in P.items()}
                    Q[k][idx] += sign * h
                    fd[idx] += (
                        sign * ref.loss_and_grad(case.ref, Q, case.X, case.Y, case.loss, rows)[0]
                    )
            fd /= 2 * h
            assert G[k].shape == v.shape
            np.testing.assert_allclose(
                G[k], fd, rtol=0, atol=1e-7 * max(1.0, np.abs(fd).max()), err_msg=k
            )


def test_reference_momentum_is_heavy_ball():
    """``buf ← μ buf + g, w ← w − η buf`` is the heavy-ball recursion
    ``w_{t+1} = w_t − η g_t + μ (w_t − w_{t−1})`` (η the same for all t); checked with
    per-parameter rates and mini-batches, against a loop written here."""
    case = CASES["lngain_batches"]
    model = case.ref
    rng = np.random.default_rng(2)
    n = 7
    P0 = ref.init_params(model.specs, n, rng)
    P0["g"] = P0["g"] + 0.1 * rng.standard_normal(n)
    lrs = ref.learning_rates(model.specs, n, 0.3)
    outs, losses = ref.train(
        model, P0, lrs, case.X, case.Y, loss="mse", steps=3, momentum=0.8, batches=case.batches
    )
    prev, cur = None, {k: v.copy() for k, v in P0.items()}
    for t in range(3):
        np.testing.assert_allclose(
            outs[t], ref.outputs_of(model, cur, case.X), rtol=1e-13, atol=1e-15
        )
        L, _ = ref.loss_and_grad(model, cur, case.X, case.Y, "mse")
        assert losses[t] == pytest.approx(L, rel=1e-13)
        _, G = ref.loss_and_grad(model, cur, case.X, case.Y, "mse", case.batches[t])
        nxt = {k: cur[k] - lrs[k] * G[k] + (0.8 * (cur[k] - prev[k]) if prev else 0.0) for k in cur}
        prev, cur = cur, nxt
    np.testing.assert_allclose(outs[3], ref.outputs_of(model, cur, case.X), rtol=1e-12, atol=1e-14)
    assert outs.shape == (4, 4, 1) and losses.shape == (4,)


def test_reference_losses_closed_forms():
    """mse and xent at hand-computable points."""
    F = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
    L, G = ref.xent(F, np.array([0, 2]))
    e = np.exp([1.0, 0.0, -1.0])
    assert L == pytest.approx(0.5 * (np.log(3) + np.log(e.sum()) + 1.0), rel=1e-14)
    np.testing.assert_allclose(G[0], (np.full(3, 1 / 3) - [1, 0, 0]) / 2, rtol=1e-14)
    L, G = ref.mse(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))
    assert L == pytest.approx((1 + 4) / 4, rel=1e-14)
    np.testing.assert_allclose(G, [[0.5], [1.0]], rtol=1e-14)


# ------------------------------------------------------------------ the same models in the DSL


def _declare(model: ref.RefModel):
    m = nn.Model(model.name)
    for s in model.specs:
        m.param(s.name, s.shape, init_mean=s.init_mean, init_std=s.init_std, lr_mult=s.lr_mult)
    return m


def tp_model(model: ref.RefModel):
    """The reference model written with ``nn.Model`` in the DSL (DESIGN's example syntax)."""
    m = _declare(model)
    if model.name == "resmlp":

        @m.forward
        def f(p, xi):
            h = p.W_in @ xi + p.b
            h = h + 0.5 * (p.W_hid @ tp.relu(nn.layernorm(h)))
            return [o + c for o, c in zip(p.W_out @ tp.relu(h), p.c)]

    elif model.name == "mlp2":

        @m.forward
        def f(p, xi):
            return p.W_out @ tp.tanh(p.W_hid @ tp.tanh(p.W_in @ xi))

    elif model.name == "lngain":

        @m.forward
        def f(p, xi):
            return p.W_out @ tp.tanh(p.g * nn.layernorm(p.W_in @ xi))

    elif model.name == "rmsmlp":

        @m.forward
        def f(p, xi):
            x = tp.relu(p.W_hid @ nn.rmsnorm(p.W_in @ xi) + p.b)
            return [o + c for o, c in zip(p.W_out @ x, p.c)]

    elif model.name == "rnn":

        @m.forward
        def f(p, xi):
            xs = np.asarray(xi).reshape(ref.RNN_STEPS, ref.RNN_D)  # the row is the sequence
            h = tp.tanh(p.W_in @ xs[0])
            for t in range(1, ref.RNN_STEPS):
                h = tp.tanh(p.W_hid @ h + p.W_in @ xs[t])  # one W_hid, one W_in: shared
            return p.W_out @ h

    else:  # pragma: no cover
        raise AssertionError(model.name)
    return m


def _run(case: Case):
    kw = {} if case.batches is None else {"batches": [list(b) for b in case.batches]}
    return nn.train(
        tp_model(case.ref),
        case.X,
        case.Y,
        steps=case.steps,
        loss=case.loss,
        optimizer=nn.SGD(lr=case.lr, momentum=case.momentum),
        param=nn.muP(),
        **kw,
    )


_RUNS: dict = {}


def run_of(name: str):
    """One compiled run per case, shared by the tests of this module."""
    if name not in _RUNS:
        _RUNS[name] = _run(CASES[name])
    return _RUNS[name]


def _reference_run(case: Case, P0: dict, n: int):
    return ref.train(
        case.ref,
        P0,
        ref.learning_rates(case.ref.specs, n, case.lr),
        case.X,
        case.Y,
        loss=case.loss,
        steps=case.steps,
        momentum=case.momentum,
        batches=case.batches,
    )


# ------------------------------------------------------------------ A: exactness at finite width


@needs_model
@pytest.mark.parametrize("name", list(CASES))
def test_simulate_is_the_numpy_network(name):
    """``run.simulate(96, seed=3)`` and the reference trained from ``sim.param(name)`` with
    the μP learning rates at ``n = 96``: outputs ``(steps+1, B, d_out)`` and loss
    ``(steps+1,)`` agree to 1e-10 relative at every step (round-off of two orders of the
    same double-precision sums is ~1e-14)."""
    case = CASES[name]
    run = run_of(name)
    n = 96
    sim = run.simulate(n, seed=3)
    P0 = {s.name: np.asarray(sim.param(s.name), float) for s in case.ref.specs}
    for s in case.ref.specs:
        assert P0[s.name].shape == s.concrete(n), s.name
    outs, losses = _reference_run(case, P0, n)
    got = np.asarray(sim.outputs, float)
    assert got.shape == (case.steps + 1, len(case.X), case.ref.d_out)
    scale = np.abs(outs).max()
    np.testing.assert_allclose(got, outs, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(np.asarray(sim.loss, float), losses, rtol=1e-10, atol=0)
    # the run trains: the outputs move by more than their initial size
    assert np.abs(outs[-1] - outs[0]).max() > 0.1 * scale


@needs_model
@pytest.mark.parametrize("name", ["resmlp_xent", "lngain_batches", "rmsmlp_mse"])
def test_simulate_draws_follow_the_table(name):
    """``sim.param`` entries are iid ``N(init_mean, init_std² v)``, v from TP5 Table 3:
    sample mean and variance within 5 standard errors (``σ/√N`` and ``σ²√(2/N)``);
    a zero ``init_std`` gives exactly ``init_mean``."""
    case = CASES[name]
    n = 256
    sim = run_of(name).simulate(n, seed=7)
    for s in case.ref.specs:
        w = np.asarray(sim.param(s.name), float)
        v = s.mup_sgd(n)[0] * s.init_std**2
        if v == 0:
            assert np.all(w == s.init_mean), s.name
            continue
        N = w.size
        assert abs(w.mean() - s.init_mean) < 5 * np.sqrt(v / N), s.name
        assert abs(w.var() - v) < 5 * v * np.sqrt(2 / N), s.name


# ------------------------------------------------------------------ B: the limit


def _finite_width_runs(case: Case, widths, seeds, first_seed: int = 0) -> list[np.ndarray]:
    """Per width, the (outputs, loss) of ``seeds`` independent reference runs, fresh draws:
    rows ``[outputs.ravel(), loss]``."""
    out = []
    for n, S in zip(widths, seeds):
        vals = []
        for seed in range(first_seed, first_seed + S):
            P0 = ref.init_params(case.ref.specs, n, np.random.default_rng([n, seed]))
            outs, losses = _reference_run(case, P0, n)
            vals.append(np.concatenate([outs.ravel(), losses]))
        out.append(np.array(vals))
    return out


def extrapolate(widths, runs: list[np.ndarray]):
    r"""The limit of the seed means ``m_n`` by weighted least squares ``m_n = a + b/n``.

    The fluctuations of a finite network around its limit have variance ``σ²/n`` (plus
    ``O(n^{-2})``; the central limit of the Moments [TP4 §7]), so ``σ²`` is pooled over the
    widths, ``σ̂² = Σ_n n (S_n − 1) s_n² / Σ_n (S_n − 1)`` (``s_n²`` the seed variance at
    width ``n``), which gives ``Σ S_n − len(widths)`` degrees of freedom instead of
    ``S_n − 1`` per width. With ``Var m_n = σ̂²/(n S_n)`` and the design ``[1, 1/n]``:
    intercept ``a`` and its standard error ``√((XᵀWX)⁻¹)₀₀``, per quantity.
    """
    n = np.asarray(widths, float)
    S = np.array([len(r) for r in runs], float)
    means = np.array([r.mean(axis=0) for r in runs])
    s2 = np.array([r.var(axis=0, ddof=1) for r in runs])
    sigma2 = ((n * (S - 1))[:, None] * s2).sum(axis=0) / (S - 1).sum()
    A = np.stack([np.ones_like(n), 1 / n], axis=1)
    a, se = np.empty(means.shape[1]), np.empty(means.shape[1])
    for j in range(means.shape[1]):
        w = n * S / max(sigma2[j], 1e-300)
        cov = np.linalg.inv(A.T @ (w[:, None] * A))
        a[j] = (cov @ (A.T @ (w * means[:, j])))[0]
        se[j] = np.sqrt(cov[0, 0])
    return a, se


def test_extrapolation_recovers_a_known_intercept():
    """On synthetic runs ``1 + 3/n + noise·n^{-1/2}`` (the finite network's structure) the
    fit returns 1 within 4 of its standard errors, and its standard error is the known
    ``σ/√(Σ...)`` of the design (within 20 %, from the pooled variance's 180 dof)."""
    rng = np.random.default_rng(0)
    widths, seeds = (128, 256, 512), (96, 64, 32)
    runs = [
        1 + 3 / n + 0.5 * rng.standard_normal((S, 1)) / np.sqrt(n) for n, S in zip(widths, seeds)
    ]
    a, se = extrapolate(widths, runs)
    n, S = np.array(widths, float), np.array(seeds, float)
    A = np.stack([np.ones(3), 1 / n], axis=1)
    exact = np.sqrt(np.linalg.inv(A.T @ ((n * S / 0.25)[:, None] * A))[0, 0])
    assert abs(a[0] - 1) < 4 * se[0]
    assert se[0] == pytest.approx(exact, rel=0.2)


WIDTHS = (128, 256, 512)
SEEDS = (96, 48, 24)


@needs_model
@pytest.mark.slow  # ≈ 3 s per model: 168 numpy runs at n ≤ 512 and a Monte Carlo limit
@pytest.mark.parametrize("name", list(CASES))
def test_limit_is_the_extrapolated_finite_network(name):
    """``run.limit()`` (Monte Carlo, 10⁵ samples, seed 0) against the reference's seed means
    at three widths extrapolated to ``1/n → 0`` (:func:`extrapolate`): every output and loss
    of every step within 4 combined standard errors ``√(se_fit² + stderr_limit²)``."""
    case = CASES[name]
    run = run_of(name)
    lim = run.limit(method="montecarlo", samples=100_000, seed=0)
    got = np.concatenate([np.asarray(lim.outputs, float).ravel(), np.asarray(lim.loss, float)])
    err = np.concatenate(
        [np.asarray(lim.stderr, float).ravel(), np.asarray(lim.loss_stderr, float)]
    )
    a, se = extrapolate(WIDTHS, _finite_width_runs(case, WIDTHS, SEEDS))
    z = np.abs(got - a) / np.sqrt(se**2 + err**2 + 1e-24)
    assert z.max() < 4, (z.max(), got, a, se, err)
