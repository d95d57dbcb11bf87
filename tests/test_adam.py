"""Adam and SignSGD in ``nn.train`` (issue 16 points 1, 2, 4): checked against independent numpy.

* The reference: ``tests/reference_nets.py`` (``train_entrywise``), Adam's recursions written
  from their definition; checked here against closed forms of the updates.
* Exactness: ``run.simulate(n, seed)`` equals the reference network started from
  ``sim.param(name)`` with μP's Adam learning rates and epsilons, to 1e-10.
* The limit, one hidden layer (no n×n weight): a mean-field particle computation written
  here (10⁶ particles ``(u_α ∈ R², b_α, v_α)`` sampled from the initial law, each updated by
  the limit's equations — the finite network at ``n = 10⁶`` with the ``1/n`` readout,
  [TP4b Thm 2.5.2]); and finite widths extrapolated in ``1/n``.
* ``nn.classify`` for entrywise optimizers [TP4b §2.8].
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import reference_nets as ref
from test_train_reference import extrapolate, tp_model

import tensorprog as tp
from tensorprog import ProgramTypeError, ProgramValueError, nn

HAS_OUTER = hasattr(tp, "outer_nonlin")
needs_outer = pytest.mark.skipif(
    not HAS_OUTER,
    reason="hidden weights under Adam/SignSGD need the OuterNonlin instruction "
    "tp.outer_nonlin (NE⊗OR⊤, branch s7-outer), not in this build",
)

EPS = 0.3
BETAS = (0.9, 0.99)


def _opt(rule: str, lr: float):
    return nn.Adam(lr, betas=BETAS, eps=EPS) if rule == "adam" else nn.SignSGD(lr, eps=EPS)


def mlp1_model():
    """``ref.mlp1()`` in the DSL: ``f = W_out tanh(W_in ξ + b) + c``."""
    r = ref.mlp1()
    m = nn.Model(r.name)
    for s in r.specs:
        m.param(s.name, s.shape, init_mean=s.init_mean, init_std=s.init_std, lr_mult=s.lr_mult)

    @m.forward
    def f(p, xi):
        return p.W_out @ tp.tanh(p.W_in @ xi + p.b) + p.c

    return m


X1 = np.array([[1.0, 0.5], [-0.3, 1.0]])
Y1 = np.array([0.7, -0.4])
LR1 = 0.05
STEPS1 = 3

_RUNS: dict = {}


def mlp1_run(rule: str):
    if rule not in _RUNS:
        _RUNS[rule] = nn.train(
            mlp1_model(), X1, Y1, steps=STEPS1, optimizer=_opt(rule, LR1), param=nn.muP()
        )
    return _RUNS[rule]


# ------------------------------------------------------------------ the optimizers


def test_optimizer_records_and_validation():
    a = nn.Adam(0.1)
    assert (a.lr, a.betas, a.eps) == (0.1, (0.9, 0.999), 1e-8)
    assert nn.SignSGD(0.2, eps=0.5).eps == 0.5
    with pytest.raises(ProgramValueError, match="nn.Adam: betas\\[1\\]"):
        nn.Adam(0.1, betas=(0.9, 1.0))
    with pytest.raises(ProgramTypeError, match="nn.Adam: betas must be a pair"):
        nn.Adam(0.1, betas=0.9)
    with pytest.raises(ProgramValueError, match="nn.Adam: eps"):
        nn.Adam(0.1, eps=0.0)
    with pytest.raises(ProgramValueError, match="nn.SignSGD: lr"):
        nn.SignSGD(-1.0, eps=0.1)
    with pytest.raises(ProgramTypeError, match="nn.SignSGD: eps"):
        nn.SignSGD(1.0, eps="small")


def test_q_closed_forms():
    """``Adam.q`` against the recursions written out by hand at t = 0, 1, 2 (β = 0.5, 0.25):
    m̂₂ = (0.5·0.25·g₀ + 0.5·0.5·g₁ + 0.5·g₂)/(1 − 0.125), v̂ likewise; and the first Adam
    step is SignSGD's step (bias correction)."""
    opt = nn.Adam(1.0, betas=(0.5, 0.25), eps=0.1)
    g = [0.3, -1.2, 0.7]
    m = (0.5 * 0.25 * g[0] + 0.5 * 0.5 * g[1] + 0.5 * g[2]) / (1 - 0.5**3)
    v = (0.75 * 0.25**2 * g[0] ** 2 + 0.75 * 0.25 * g[1] ** 2 + 0.75 * g[2] ** 2) / (1 - 0.25**3)
    assert opt.q(2, g, 0.1, np.sqrt) == pytest.approx(m / np.sqrt(v + 0.01), rel=1e-14)
    s = nn.SignSGD(1.0, eps=0.1)
    assert opt.q(0, g[:1], 0.1, np.sqrt) == pytest.approx(s.q(0, g[:1], 0.1, np.sqrt), rel=1e-14)
    assert opt.memory(2) == (0, 1, 2) and s.memory(2) == (2,)


def test_reference_entrywise_closed_forms():
    """The reference's Adam with β₁ = β₂ = 0 is SignSGD at every step (m̂ = g, v̂ = g²), and
    one SignSGD step of one parameter is ``w − lr·g/√(g² + ε²)`` (checked on W_out)."""
    model = ref.mlp1()
    n = 5
    P0 = ref.init_params(model.specs, n, np.random.default_rng(1))
    lrs, epss = ref.adam_settings(model.specs, n, 0.1, EPS)
    kw = dict(loss="mse", steps=3)
    a, _ = ref.train_entrywise(model, P0, lrs, epss, X1, Y1, rule="adam", betas=(0, 0), **kw)
    b, _ = ref.train_entrywise(model, P0, lrs, epss, X1, Y1, rule="sign", **kw)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert lrs["W_out"] == pytest.approx(0.1 / n) and epss["W_in"] == pytest.approx(EPS / n)
    _, G = ref.loss_and_grad(model, P0, X1, Y1, "mse")
    P1 = dict(P0)
    P1["W_out"] = P0["W_out"] - lrs["W_out"] * G["W_out"] / np.sqrt(G["W_out"] ** 2 + EPS**2)
    o1, _ = ref.train_entrywise(
        model, P0, {**{k: 0.0 for k in lrs}, "W_out": lrs["W_out"]}, epss, X1, Y1,
        rule="sign", loss="mse", steps=1,
    )  # fmt: skip
    np.testing.assert_allclose(o1[1], ref.outputs_of(model, P1, X1), rtol=1e-13)


# ------------------------------------------------------------------ exactness at finite width


def _check_exact(run, model: ref.RefModel, X, Y, loss, steps, lr, rule, n, batches=None):
    sim = run.simulate(n, seed=3)
    P0 = {s.name: np.asarray(sim.param(s.name), float) for s in model.specs}
    lrs, epss = ref.adam_settings(model.specs, n, lr, EPS)
    outs, losses = ref.train_entrywise(
        model, P0, lrs, epss, X, Y, loss=loss, steps=steps, rule=rule, betas=BETAS,
        batches=batches,
    )  # fmt: skip
    got = np.asarray(sim.outputs, float)
    scale = np.abs(outs).max()
    np.testing.assert_allclose(got, outs, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(np.asarray(sim.loss, float), losses, rtol=1e-10, atol=0)
    assert np.abs(outs[-1] - outs[0]).max() > 0.05 * scale  # it trains


@pytest.mark.parametrize("rule", ["adam", "sign"])
def test_simulate_is_the_numpy_network_one_hidden_layer(rule):
    """Input weights, a bias, output weights and a scalar output bias: ``simulate(64)`` is
    the reference network to 1e-10 (two orders of the same double-precision sums)."""
    _check_exact(mlp1_run(rule), ref.mlp1(), X1, Y1, "mse", STEPS1, LR1, rule, 64)


def test_simulate_is_the_numpy_network_layernorm_gain_batches():
    """A trained LayerNorm gain (vector-like, init 1), mini-batches, Adam."""
    model = ref.lngain()
    X = np.random.default_rng(13).standard_normal((4, 2))
    Y = np.array([1.0, -1.0, 0.5, -0.5])
    batches = ((0, 1), (2, 3), (0, 3))
    run = nn.train(
        tp_model(model), X, Y, steps=3, optimizer=_opt("adam", 0.1), param=nn.muP(),
        batches=[list(b) for b in batches],
    )  # fmt: skip
    _check_exact(run, model, X, Y, "mse", 3, 0.1, "adam", 48, batches)


@needs_outer
@pytest.mark.parametrize("name", ["resmlp", "rnn"])
def test_simulate_is_the_numpy_network_residual_and_recurrent(name):
    """Adam on (a) a residual MLP with LayerNorm, a bias, a hidden weight and a 3-logit
    output bias under cross-entropy, (b) a weight-shared RNN (one hidden weight used at two
    time steps: its gradient history sums both uses, inside ``Q``): 1e-10."""
    model = ref.resmlp() if name == "resmlp" else ref.rnn()
    rng = np.random.default_rng(11)
    X = rng.standard_normal((2, model.d_in))
    Y = np.array([0, 2]) if name == "resmlp" else np.array([0, 1])
    run = nn.train(
        tp_model(model), X, Y, steps=2, loss="xent", optimizer=_opt("adam", 0.1), param=nn.muP()
    )
    _check_exact(run, model, X, Y, "xent", 2, 0.1, "adam", 32)


@needs_outer
@pytest.mark.parametrize("rule", ["adam", "sign"])
def test_simulate_is_the_numpy_network_two_hidden_layers(rule):
    """Two hidden layers (an n×n weight with ``lr_mult = 0.5``): ``ΔW x`` is a nonlinear
    outer product; ``simulate(48)`` is the reference network to 1e-10."""
    model = ref.mlp2()
    X = np.random.default_rng(12).standard_normal((2, 2))
    Y = np.array([[1.0, -0.5], [-0.5, 0.5]])
    run = nn.train(tp_model(model), X, Y, steps=2, optimizer=_opt(rule, 0.05), param=nn.muP())
    _check_exact(run, model, X, Y, "mse", 2, 0.05, rule, 48)


# ------------------------------------------------------------------ the limit: particles


def particles(rule: str, N: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The μP limit of ``mlp1`` by 10⁶-scale mean-field particles, written from the limit's
    equations [TP4b Thm 2.5.2, §2.1]: particle ``α`` carries ``u_α ∈ R²`` (a row of W_in,
    ``N(0, I/2)``), ``b_α ~ N(0, 0.5²)``, ``v_α = n·W_out,α ~ N(0, 1)``;
    ``f(ξ) = mean_α v_α tanh(u_α·ξ + b_α) + c``; with ``χ_i = (f(ξ_i) − y_i)/B``, ``φ = tanh``,
    ``h_{iα} = u_α·ξ_i + b_α``:

    * ``u_α −= lr·Q(Σ_i χ_i v_α φ'(h_{iα}) ξ_i)``, ``b_α −= lr·Q(Σ_i χ_i v_α φ'(h_{iα}))``,
    * ``v_α −= lr·Q(Σ_i χ_i φ(h_{iα}))``, ``c −= lr·Q(Σ_i χ_i)``,

    ``Q`` Adam's/SignSGD's with ``ε`` itself (μP's ``ε_P`` is ``ε/n`` where the gradient
    entries are ``Θ(1/n)``, ``ε`` for the output weights and ``c``). Antithetic pairs
    ``(u, b, ±v)`` (an exact sample of the symmetric initial law) make ``f₀ = c`` exactly.
    Returns ``f`` per step and input, and its standard error from the spread of the pairs."""
    rng = np.random.default_rng(seed)
    half = N // 2
    u = rng.standard_normal((half, 2)) * np.sqrt(0.5)
    b = 0.5 * rng.standard_normal(half)
    v = rng.standard_normal(half)
    u, b, v = np.concatenate([u, u]), np.concatenate([b, b]), np.concatenate([v, -v])
    c = 0.1
    state = {k: [0.0, 0.0] for k in "ubvc"}
    b1, b2 = BETAS

    def Q(key, g, t):
        if rule == "sign":
            return g / np.sqrt(g * g + EPS**2)
        m, s = state[key]
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        state[key] = [m, s]
        return (m / (1 - b1 ** (t + 1))) / np.sqrt(s / (1 - b2 ** (t + 1)) + EPS**2)

    fs, ses = [], []
    for t in range(STEPS1 + 1):
        H = u[:, :1] * X1[:, 0] + u[:, 1:] * X1[:, 1] + b[:, None]  # (N, B), no threaded BLAS
        A = np.tanh(H)
        contrib = v[:, None] * A
        f = contrib.mean(axis=0) + c
        pair = 0.5 * (contrib[:half] + contrib[half:])
        fs.append(f)
        ses.append(pair.std(axis=0, ddof=1) / np.sqrt(half))
        if t == STEPS1:
            break
        chi = (f - Y1) / len(Y1)
        dH = (1 - A**2) * v[:, None] * chi  # Σ_i over columns below
        gu = np.stack([dH @ X1[:, 0], dH @ X1[:, 1]], axis=1)
        gb, gv, gc = dH.sum(axis=1), A @ chi, chi.sum()
        u = u - LR1 * Q("u", gu, t)
        b = b - LR1 * Q("b", gb, t)
        v = v - LR1 * Q("v", gv, t)
        c = c - LR1 * Q("c", gc, t)
    return np.array(fs), np.array(ses)


@pytest.mark.parametrize("rule", ["adam", "sign"])
def test_limit_is_the_mean_field_particle_system(rule):
    """``run.limit()`` (Monte Carlo) against 10⁶ particles: every output within 4 combined
    standard errors ``√(stderr_limit² + se_particles²)`` (the particles' bias from
    ``n = 10⁶`` is ``O(1/n)``, far below); and the training moved ``f`` by many of them."""
    lim = mlp1_run(rule).limit(method="montecarlo", samples=100_000, seed=0)
    got, err = np.asarray(lim.outputs, float)[:, :, 0], np.asarray(lim.stderr, float)[:, :, 0]
    f, se = particles(rule, 1_000_000, seed=5)
    z = np.abs(got - f) / np.sqrt(err**2 + se**2 + 1e-30)
    assert z.max() < 4, (z, got, f)
    assert np.abs(f[-1] - f[0]).min() > 50 * np.sqrt(err[-1] ** 2 + se[-1] ** 2).max()


@pytest.mark.slow  # ≈ 4 s: 3 widths × 16 seeds of the numpy network
def test_finite_widths_converge_to_the_limit():
    """Adam, one hidden layer: the reference network's seed means at n = 256, 512, 1024
    (16 seeds each, fresh draws) extrapolated in 1/n agree with ``run.limit()`` within 4
    combined standard errors."""
    model = ref.mlp1()
    widths, seeds = (256, 512, 1024), (16, 16, 16)
    runs = []
    for n, S in zip(widths, seeds):
        lrs, epss = ref.adam_settings(model.specs, n, LR1, EPS)
        vals = []
        for seed in range(S):
            P0 = ref.init_params(model.specs, n, np.random.default_rng([n, seed, 16]))
            outs, _ = ref.train_entrywise(
                model, P0, lrs, epss, X1, Y1, loss="mse", steps=STEPS1, rule="adam",
                betas=BETAS,
            )  # fmt: skip
            vals.append(outs.ravel())
        runs.append(np.array(vals))
    a, se_fit = extrapolate(widths, runs)
    lim = mlp1_run("adam").limit(method="montecarlo", samples=200_000, seed=0)
    got, err = np.asarray(lim.outputs, float).ravel(), np.asarray(lim.stderr, float).ravel()
    z = np.abs(got - a) / np.sqrt(se_fit**2 + err**2 + 1e-24)
    assert z.max() < 4, (z, got, a)


# ------------------------------------------------------------------ refusals


def test_entrywise_needs_abcd_exponents():
    with pytest.raises(ProgramTypeError, match="nn.ABC such as nn.MF"):
        nn.train(mlp1_model(), X1, Y1, steps=1, optimizer=nn.Adam(0.1), param=nn.MF())


def test_vanishing_epsilon_is_refused_naming_the_parameter():
    """ε_P = eps·n^{-2} on the bias (d = 2 where the gradient entries are Θ(1/n)): Q tends to
    a sign, outside the Master Theorem; the run simulates with allow_unstable=True."""
    expo = {"W_in": (0, 0, 0, 1), "b": (0, 0, 0, 2), "W_out": (0, 1, 1, 0), "c": (0, 0, 0, 0)}
    with pytest.raises(ProgramValueError, match="'b'.*ε_P.*vanishes"):
        nn.train(mlp1_model(), X1, Y1, steps=1, optimizer=nn.SignSGD(0.1, 0.3),
                 param=nn.abcd(expo))  # fmt: skip
    run = nn.train(mlp1_model(), X1, Y1, steps=1, optimizer=nn.SignSGD(0.1, 0.3),
                   param=nn.abcd(expo), allow_unstable=True)  # fmt: skip
    assert np.all(np.isfinite(run.simulate(32).outputs.astype(float)))


# ------------------------------------------------------------------ classification [TP4b §2.8]


def test_classify_presets_with_adam():
    """μP: feature learning, faithful, every parameter updated maximally, limit built;
    NTK (TP4b's NTP without multipliers): the operator regime with r = 1/2 (TP4b §2.4),
    built by nn.train as the centred K_Q recursion (tests/test_operator_regime.py);
    SP with Adam's learning rate Θ(1): unstable (r = −1: hidden lr·n diverges) and
    unfaithful (ε constant, gradient entries n^{-1/2})."""
    m = tp_model(ref.mlp2())
    mu = nn.classify(m, nn.muP(), nn.Adam(0.01))
    assert (mu.regime, mu.r, mu.stable, mu.limit_supported) == ("feature learning", 0, True, True)
    assert all(mu.faithful.values()) and all(mu.maximal_updates)
    ntk = nn.classify(m, nn.NTK(), nn.SignSGD(0.01, eps=0.1))
    assert (ntk.regime, ntk.r, ntk.stable) == ("operator", Fraction(1, 2), True)
    assert all(ntk.faithful.values()) and ntk.feature_learning_layers == ()
    assert ntk.limit_supported and "K_Q" in ntk.explain()
    assert nn.train(
        m, X1, np.zeros((2, 2)), steps=1, optimizer=nn.Adam(0.01), param=nn.NTK()
    ).operator
    sp = nn.classify(m, nn.SP(), nn.Adam(0.01))
    assert sp.regime == "unstable" and sp.r == -1
    assert sp.faithful == {"W_in": False, "W_hid": False, "W_out": True}


def test_classify_sp_with_lr_one_over_n_learns_features():
    """[TP4b Remark 2.2.7]: SP with learning rate Θ(1/n) (c = 1; faithful d = a + 1/2)
    has r = 0 under Adam — the hidden features move by Θ(1) — and classify says so; with
    SGD the same learning rate is the kernel regime [TP4 Thm 4.1]."""
    m = tp_model(ref.mlp2())
    h = Fraction(1, 2)
    sp = nn.abcd({"W_in": (0, 0, 1, h), "W_hid": (0, h, 1, h), "W_out": (0, h, 1, 0)})
    c = nn.classify(m, sp, nn.Adam(0.01))
    assert c.r == 0 and c.r_layers == (1, 0) and c.feature_learning_layers == (2,)
    assert "Remark 2.2.7" in c.explain() and "hidden features move by Theta(1)" in c.explain()
    sgd = nn.classify(
        m, nn.abcd({"W_in": (0, 0, 1, 0), "W_hid": (0, h, 1, 0), "W_out": (0, h, 1, 0)})
    )
    assert sgd.r > 0


def test_classify_limit_problems_agree_with_train():
    """``limit_supported`` is exactly whether nn.train builds the limit, on a grid of abcd
    exponents of the one-hidden-layer model (learning rates and epsilons)."""
    m = mlp1_model()
    seen = set()
    # (c, d) of W_in, c of W_out: μP; lr diverging; ε vanishing; ε large (a lazy limit);
    # the readout's lr diverging
    for c_in, d_in, c_out in ((0, 1, 1), (-1, 1, 1), (0, 2, 1), (1, 0, 1), (0, 1, 0)):
        expo = {"W_in": (0, 0, c_in, d_in), "b": (0, 0, 0, 1),
                "W_out": (0, 1, c_out, 0), "c": (0, 0, 0, 0)}  # fmt: skip
        cls = nn.classify(m, nn.abcd(expo), nn.SignSGD(0.1, 0.3))
        try:
            nn.train(m, X1, Y1, steps=1, optimizer=nn.SignSGD(0.1, 0.3), param=nn.abcd(expo))
            built = True
        except ProgramValueError:
            built = False
        assert cls.limit_supported == built, expo
        seen.add(built)
    assert seen == {True, False}


@pytest.mark.slow  # ≈ 5 s: a Monte Carlo limit with OuterNonlins and 48 numpy networks
def test_two_hidden_layer_limit_against_finite_widths():
    """The small version of ``benchmarks/adam.py``: two hidden layers, Adam, μP, one step
    (the forward of step 1 multiplies ``W_1 = W_0 + ΔW_0`` through a nonlinear outer
    product): ``run.limit()`` against the numpy network's seed means at n = 128, 256, 512
    (16 seeds each) extrapolated in 1/n, within 4 combined standard errors."""
    model = ref.mlp2()
    X = np.random.default_rng(12).standard_normal((2, 2))
    Y = np.array([[1.0, -0.5], [-0.5, 0.5]])
    lr = 0.2
    run = nn.train(tp_model(model), X, Y, steps=1, optimizer=_opt("adam", lr), param=nn.muP())
    lim = run.limit(method="montecarlo", samples=8_000, seed=0)
    got, err = np.asarray(lim.outputs, float).ravel(), np.asarray(lim.stderr, float).ravel()
    widths = (128, 256, 512)
    runs = []
    for n in widths:
        lrs, epss = ref.adam_settings(model.specs, n, lr, EPS)
        vals = []
        for seed in range(16):
            P0 = ref.init_params(model.specs, n, np.random.default_rng([n, seed, 2]))
            outs, _ = ref.train_entrywise(
                model, P0, lrs, epss, X, Y, loss="mse", steps=1, rule="adam", betas=BETAS
            )
            vals.append(outs.ravel())
        runs.append(np.array(vals))
    a, se_fit = extrapolate(widths, runs)
    z = np.abs(got - a) / np.sqrt(se_fit**2 + err**2 + 1e-24)
    assert z.max() < 4, (z, got, a)
    assert np.abs(got[4:]).max() > 10 * np.sqrt(se_fit**2 + err**2).max()  # it moved


# ------------------------------------------------------------------ tp.grad through an OuterNonlin


@needs_outer
def test_grad_through_outer_nonlin_is_finite_differences():
    r"""``F = ⟨y, z⟩``, ``y_α = (1/n) Σ_β tanh(θ x_α x_β) z_β`` (x a row and a col, z a col,
    θ a scalar): ``tp.grad`` at ``n = 24`` against central differences of the same function
    in numpy (step 1e-6: truncation ~1e-12, rounding ~1e-10), for ``n ∂F/∂x``,
    ``n ∂F/∂z`` and ``∂F/∂θ``."""
    import sympy

    p = tp.Program("outer_grad")
    x, z = p.vector("x"), p.vector("z")
    th = p.scalar("th", 0.7)
    y = tp.outer_nonlin(lambda a, b, c, t: sympy.tanh(t * a * b) * c, [x], [x, z], [th])
    F = tp.inner(y, z)
    gx, gz, gth = tp.grad(F, [x, z, th], through_scalars=True)
    n = 24
    sim = p.simulate(n, seed=1)
    X, Z = sim.vector(x), sim.vector(z)

    def f(X, Z, t):
        Y = (np.tanh(t * X[:, None] * X[None, :]) * Z[None, :]).mean(axis=1)
        return float(np.mean(Y * Z))

    h = 1e-6
    eye = np.eye(n)
    fx = np.array([(f(X + h * e, Z, 0.7) - f(X - h * e, Z, 0.7)) / (2 * h) for e in eye])
    fz = np.array([(f(X, Z + h * e, 0.7) - f(X, Z - h * e, 0.7)) / (2 * h) for e in eye])
    ft = (f(X, Z, 0.7 + h) - f(X, Z, 0.7 - h)) / (2 * h)
    np.testing.assert_allclose(sim.vector(gx), n * fx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sim.vector(gz), n * fz, rtol=1e-6, atol=1e-8)
    assert sim[gth] == pytest.approx(ft, rel=1e-6, abs=1e-9)
