"""``nn.MLP`` / ``nn.train_sgd``: the unrolled SGD program against independent references.

References are computed in this file, never with the code under test:

* THEORY §3.6 ``A, B, C, D`` recursion (linear μP, §10.1);
* THEORY §3.5 by tensor Gauss–Hermite quadrature over ``(Z^{u_0}, Z^{v_0})`` (§10.2);
* THEORY §10.3's published Monte Carlo value of the Ż test;
* a plain numpy implementation of DESIGN.md's finite network (``W^l = n^{-a_l} w^l``,
  ``w^l ~ N(0, σ_l² n^{-2b_l})``, full-batch GD on ``w`` with learning rate ``η n^{-c}``),
  rebuilt from the simulation's draws (``tests/programs.py``: ``numpy_mlp``);
* the NTK kernel recursion with the arc-cosine closed forms (THEORY §3.7, §6.2).

Tolerances: exact/quadrature values to ≤1e-8 / 1e-6; Monte Carlo within 4 reported
standard errors; finite width within 4 combined standard errors (seed spread and MC).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from programs import muP_step_reference, numpy_mlp

import tensorprog as tp
from tensorprog import nn
from tensorprog.core.ir import MatMul

# ------------------------------------------------------------------ references


def abcd_linear(X, Y, lr, steps):
    """THEORY §3.6 (batched): linear 1-hidden-layer μP limit, d_o = 1."""
    B, d = X.shape
    A, Bm, C, D = np.eye(1), np.zeros((1, d)), np.zeros((1, d)), np.eye(d)
    out = []
    for _ in range(steps + 1):
        f = ((A @ C + Bm @ D) @ X.T)[0]
        out.append(f)
        chi = (f - Y) / B
        G = chi[None, :] @ X
        A, Bm, C, D = (A - lr * G @ C.T, Bm - lr * G @ D.T, C - lr * A.T @ G, D - lr * Bm.T @ G)
    return np.array(out)


def tanh_mf_quadrature(xs, lr, steps, deg=200):
    """THEORY §3.5: one hidden layer, φ = tanh, trained on (ξ, y) = (1, 1), by tensor
    Gauss–Hermite quadrature over (Z^{u_0}, Z^{v_0}); returns f̊_t(ξ) for ξ in xs."""
    z, wq = hermegauss(deg)
    wq = wq / wq.sum()
    u, v = np.meshgrid(z, z, indexing="ij")
    W2 = np.outer(wq, wq)
    out = []
    for _ in range(steps + 1):
        out.append([np.sum(W2 * v * np.tanh(u * x)) for x in xs])
        chi = np.sum(W2 * v * np.tanh(u)) - 1.0
        u, v = u - lr * chi * v * (1 - np.tanh(u) ** 2), v - lr * chi * np.tanh(u)
    return np.array(out)


def relu_ntk(X, depth, first_layer=True):
    """TP4's NTK (no biases, input kernel ξᵀζ) by the arc-cosine recursion: Σ_{m} Σ^{mL};
    ``first_layer=False`` drops Σ^{0L} (SP with LR η/n, THEORY §3.7)."""
    K = X @ X.T
    theta = K.copy() if first_layer else np.zeros_like(K)
    for _ in range(depth):
        s = np.sqrt(np.diag(K))
        rho = np.clip(K / np.outer(s, s), -1, 1)
        ang = np.arccos(rho)
        K = np.outer(s, s) / (2 * np.pi) * (np.sin(ang) + (np.pi - ang) * np.cos(ang))
        theta = K + (np.pi - ang) / (2 * np.pi) * theta
    return theta


def kernel_dynamics(Theta, Y, lr, steps):
    """f_{t+1} = f_t − η Θ χ_t, f_0 = 0 (centred), χ = (f − y)/B."""
    f, out = np.zeros(len(Y)), []
    for _ in range(steps + 1):
        out.append(f.copy())
        f = f - lr * Theta @ ((f - Y) / len(Y))
    return np.array(out)


X3 = np.array([[1.0, 0.0], [0.5, 1.0], [-1.0, 0.5]])
Y3 = np.array([1.0, 0.0, -1.0])
X2 = np.array([[1.0, 0.3], [-0.5, 1.0]])
Y2 = np.array([0.5, -0.3])


# ------------------------------------------------------------------ THEORY §10 fixtures


def test_parametrizations_are_exported():
    assert nn.classify(nn.muP(2)).regime == "feature learning"
    assert nn.classify(nn.NTK(2)).regime == "kernel"
    assert nn.classify(nn.SP(2)).regime == "unstable"
    assert nn.classify(nn.SP(2, c=1)).regime == "kernel"
    assert nn.MF().equivalent(nn.muP(1))
    assert nn.abc([0, 0.5], [0, 0], 0).equivalent(nn.NTK(1))


def test_linear_muP_is_exact():
    """THEORY §10.1 through the program: exact (Wick) and equal to the A,B,C,D recursion."""
    net = nn.MLP(d_in=2, depth=1, nonlin="identity", param=nn.muP(1))
    run = nn.train_sgd(net, X3, Y3, lr=0.5, steps=5)
    lim = run.limit()
    assert np.all(lim.method == "exact")
    ref = abcd_linear(X3, Y3, 0.5, 5)
    np.testing.assert_allclose(lim.outputs, ref, atol=1e-8, rtol=0)
    table = [
        [0.6666666667, 0.1666666667, -0.75],
        [0.8590856481, 0.1541682742, -0.9967729231],
        [0.8890941532, 0.1086235788, -1.0570559020],
        [0.8902913425, 0.0780538404, -1.0738372580],
        [0.8897466535, 0.0617225093, -1.0813220622],
    ]
    np.testing.assert_allclose(lim.outputs[1:], table, atol=1e-9)
    assert np.all(lim.stderr == 0)


def test_tanh_one_layer_quadrature():
    """THEORY §10.2: quadrature to 1e-6 (reference: tensor Gauss–Hermite of §3.5)."""
    net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=3, X_eval=[[0.5]])
    lim = run.limit(method="quadrature")
    assert np.all(lim.method == "quadrature")
    ref = tanh_mf_quadrature([1.0, 0.5], 1.0, 3)
    got = np.hstack([lim.outputs, lim.eval_outputs])
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    table = [[0, 0], [0.7081912, 0.4970901], [0.8995888, 0.6373159], [0.9688581, 0.6889405]]
    np.testing.assert_allclose(got, table, atol=1e-6)


def test_tanh_one_layer_montecarlo():
    net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=3, X_eval=[[0.5]])
    lim = run.limit(method="montecarlo", samples=100_000, seed=2)
    assert np.all(lim.method == "montecarlo")
    ref = tanh_mf_quadrature([1.0, 0.5], 1.0, 3)
    got = np.hstack([lim.outputs, lim.eval_outputs])
    se = np.hstack([lim.stderr, lim.eval_stderr])
    assert np.all(se[1:] > 0)
    assert np.all(np.abs(got - ref) <= 4 * se + 1e-12), (got - ref) / np.maximum(se, 1e-300)


def test_zdot_after_one_step():
    """THEORY §10.3: 2 hidden layers, one μP step; f̊_1(0.7) needs Ż. Reference: the
    Z-calculus of TP4 Thm 6.4 written out in ``tests/programs.py``
    (:func:`muP_step_reference`, Gauss–Hermite with its degree-comparison accuracy);
    tolerance: that accuracy plus the quadrature's own error estimate."""
    net = nn.MLP(d_in=1, depth=2, nonlin="tanh", param=nn.muP(2))
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1, X_eval=[[0.7]])
    lim = run.limit()
    f1 = lim.eval_outputs[1, 0]
    ref, accuracy = muP_step_reference(0.7)
    assert abs(f1 - ref) <= accuracy + lim.limit.error(run.eval_outputs[1, 0])
    assert lim.limit.method(run.eval_outputs[1, 0]) == "quadrature"
    assert abs(f1 - 0.377) > 0.1  # the value without Ż
    # Ż^{W2 x1_1} along W2ᵀ dh2_0 is present: the MatMul of W2 in the step-1
    # pre-activation h2 of the evaluation input (h2 = W2 x1 + the rank-one update)
    p = run.program
    h2 = run.named["h2"][1, 1]
    (mm,) = [p[v.name] for v in p.definition(h2).inputs if isinstance(p.definition(v), MatMul)]
    assert p.definition(mm).matrix.name == "W2"
    assert lim.limit.Zdot(mm) != 0


# ------------------------------------------------------------------ finite width


CASES = [
    ("tanh", nn.muP(2)),
    ("relu", nn.muP(2)),
    ("identity", nn.muP(2)),
    ("tanh", nn.muP(3, init_std=[1.3, 0.8, 1.1, 1.5])),
    ("relu", nn.NTK(2)),
    ("tanh", nn.NTK(1)),
    ("relu", nn.SP(2, c=1)),
    ("tanh", nn.MF()),
    ("identity", nn.NTK(2)),
    ("tanh", nn.abc([-0.5, 0, 0.5], [0.5, 0.5, 0.5], 1)),  # stable but trivial
]


@pytest.mark.parametrize("phi,param", CASES, ids=lambda c: getattr(c, "name", None) or str(c))
def test_simulation_is_the_numpy_network(phi, param):
    """run.simulate(n) is DESIGN.md's finite network (same draws) up to rounding."""
    X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])
    net = nn.MLP(d_in=2, depth=param.depth, nonlin=phi, param=param)
    run = nn.train_sgd(net, X, [0.5, -0.3, 0.8], lr=0.7, steps=3, X_eval=[[0.4, 0.4]])
    sim = run.simulate(200, seed=2)
    out, ev = numpy_mlp(run, sim)
    scale = max(1.0, np.max(np.abs(out)))
    np.testing.assert_allclose(sim.outputs, out, atol=1e-10 * scale, rtol=0)
    np.testing.assert_allclose(sim.eval_outputs, ev, atol=1e-10 * scale, rtol=0)


@pytest.mark.parametrize("phi", ["relu", "tanh"])
def test_two_hidden_layers_muP_limit_vs_finite_width(phi):
    """Limit vs seeds at n ≤ 4096 within 4 combined s.e.; RMS error ∝ n^{-1/2}."""
    net = nn.MLP(d_in=2, depth=2, nonlin=phi, param=nn.muP(2))
    run = nn.train_sgd(net, X2, Y2, lr=1.0, steps=2, X_eval=[[0.3, 0.6]])
    lim = run.limit(method="montecarlo", samples=2**17, qmc=True, seed=0)
    ref = np.hstack([lim.outputs, lim.eval_outputs])[1:]
    ref_se = np.hstack([lim.stderr, lim.eval_stderr])[1:]
    widths, seeds = [256, 1024, 4096], [16, 8, 6]
    errs = {}
    for n, S in zip(widths, seeds):
        sims = [run.simulate(n, seed=s) for s in range(S)]
        o = np.array([np.hstack([r.outputs, r.eval_outputs])[1:] for r in sims])
        errs[n] = o - ref  # (S, T, B+E)
    o4096 = errs[4096]
    S = o4096.shape[0]
    se = np.sqrt(o4096.std(axis=0, ddof=1) ** 2 / S + ref_se**2)
    assert np.all(np.abs(o4096.mean(axis=0)) <= 4 * se), o4096.mean(axis=0) / se
    # RMS error pooled over outputs; its slope in log n must be −1/2 within 4 bootstrap s.e.
    rng = np.random.default_rng(0)

    def slope(samples):
        rms = [np.sqrt(np.mean(e**2)) for e in samples]
        return np.polyfit(np.log(widths), np.log(rms), 1)[0]

    s0 = slope([errs[n] for n in widths])
    boot = [
        slope([errs[n][rng.integers(0, len(errs[n]), len(errs[n]))] for n in widths])
        for _ in range(200)
    ]
    assert abs(s0 + 0.5) <= 4 * np.std(boot), (s0, np.std(boot))


# ------------------------------------------------------------------ regimes


def _kernel_motion(param, phi="relu", steps=2, **kw):
    net = nn.MLP(d_in=2, depth=param.depth, nonlin=phi, param=param)
    run = nn.train_sgd(net, X2, Y2, lr=1.0, steps=steps)
    lim = run.limit(**kw)
    K, Kse = lim.feature_kernels, lim.feature_kernels_stderr
    dK = K[-1, -1] - K[0, -1]  # last hidden layer, last step vs init
    se = np.sqrt(Kse[-1, -1] ** 2 + Kse[0, -1] ** 2)
    df = lim.outputs[-1] - lim.outputs[0]
    dfse = np.sqrt(lim.stderr[-1] ** 2 + lim.stderr[0] ** 2)
    return dK, se, df, dfse


def test_dynamical_dichotomy():
    """μP: the last-layer feature kernel moves by Θ(1); NTK: it stays at its initial
    value (bit for bit when both are evaluated on the same Monte Carlo samples)."""
    dK, se, _, _ = _kernel_motion(nn.muP(2), method="montecarlo", samples=50_000, seed=1)
    assert np.max(np.abs(dK)) > 0.05 and np.max(np.abs(dK) / se) > 20
    dK, se, df, dfse = _kernel_motion(nn.NTK(2), method="montecarlo", samples=50_000, seed=1)
    assert np.max(np.abs(dK)) <= 1e-12
    assert np.max(np.abs(df) / dfse) > 20  # but the function is trained
    dK, se, _, _ = _kernel_motion(nn.NTK(2), samples=50_000, seed=1)  # auto: exact vs MC
    assert np.all(np.abs(dK) <= 4 * se + 1e-12)


def test_kernel_regime_follows_the_ntk():
    """NTK parametrization: f̊ follows f ← f − ηΘχ with TP4's NTK (THEORY §3.7)."""
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.NTK(2))
    run = nn.train_sgd(net, X3, Y3, lr=0.5, steps=3, feature_kernels=False)
    assert run.center
    lim = run.limit(method="montecarlo", samples=2**16, qmc=True, seed=0)
    ref = kernel_dynamics(relu_ntk(X3, 2), Y3, 0.5, 3)
    assert np.all(np.abs(lim.outputs - ref) <= 4 * lim.stderr + 1e-12)


@pytest.mark.parametrize(
    "param",
    [
        nn.muP(2),
        nn.NTK(2),
        nn.SP(2, c=1),
        nn.abc([-0.5, 0, 0.5], [0.5, 0.5, 0.5], 1),
        nn.abc([-0.5, 0, 0.5], [0.5, 0.5, 1.0], 0),
    ],
    ids=["muP", "NTK", "SP_c1", "trivial", "muP_small_readout"],
)
def test_classify_agrees_with_the_limit(param):
    """Feature learning ⇔ the feature kernel moves; kernel/trivial ⇔ it does not;
    nontrivial ⇔ f moves (TP4 Thms 3.4, 3.6, 3.8)."""
    cls = nn.classify(param)
    assert cls.stable
    dK, se, df, dfse = _kernel_motion(param, steps=3, method="montecarlo", samples=50_000, seed=3)
    moves = np.max(np.abs(dK) / np.maximum(se, 1e-300)) > 10
    assert moves == cls.feature_learning, (cls.regime, dK, se)
    if not cls.feature_learning:
        assert np.max(np.abs(dK)) <= 1e-12
    trained = np.max(np.abs(df) / np.maximum(dfse, 1e-300)) > 10
    assert trained == cls.nontrivial, (cls.regime, df, dfse)
    if not cls.nontrivial:
        assert np.max(np.abs(df)) <= 1e-12


def test_mean_field_is_muP_by_symmetry():
    """MF ≡ μP (L=1) modulo (a+θ, b−θ, c−2θ): same limit, same finite network."""
    runs = [
        nn.train_sgd(nn.MLP(1, 1, "tanh", p), [[1.0], [-0.5]], [1.0, 0.2], lr=1.0, steps=2)
        for p in (nn.MF(), nn.muP(1))
    ]
    a, b = (r.limit(method="quadrature").outputs for r in runs)
    np.testing.assert_allclose(a, b, atol=1e-12)
    a, b = (r.simulate(64, seed=1).outputs for r in runs)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_sp_with_lr_over_n_has_the_ntk_without_first_layer():
    """THEORY §3.7 (DERIVED): SP, LR η/n, L = 2: Θ = Σ^{1L} + Σ^{2L}."""
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.SP(2, c=1))
    run = nn.train_sgd(net, X3, Y3, lr=0.5, steps=2, feature_kernels=False)
    lim = run.limit(method="montecarlo", samples=2**16, qmc=True, seed=0)
    ref = kernel_dynamics(relu_ntk(X3, 2, first_layer=False), Y3, 0.5, 2)
    assert np.all(np.abs(lim.outputs - ref) <= 4 * lim.stderr + 1e-12)


# ------------------------------------------------------------------ program and API


def test_program_structure_and_results():
    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.NTK(2))
    run = nn.train_sgd(net, X2, Y2, lr=0.5, steps=2, X_eval=[[0.1, 0.2]])
    p = run.program
    from tensorprog.core.ir import InitMatrix, InitScalar, MatMul

    matrices = {i.out for i in p.instructions if isinstance(i, InitMatrix)}
    assert all(i.matrix in matrices for i in p.instructions if isinstance(i, MatMul))
    assert any(tp.n in i.value.free_symbols for i in p.instructions if isinstance(i, InitScalar))
    assert run.outputs.shape == (3, 2) and run.eval_outputs.shape == (3, 1)
    assert run.feature_kernels.shape == (3, 2, 2, 2)
    assert run.feature_kernels[1, 0, 0, 1] is run.feature_kernels[1, 0, 1, 0]
    assert run.chi.shape == (2, 2)
    assert set(run.initial) == {"W1_columns", "hidden", "readout"}
    sim = run.simulate(64, seed=0)
    assert sim.outputs.shape == (3, 2) and sim.feature_kernels.shape == (3, 2, 2, 2)
    assert sim.n == 64 and sim.matrix("W2").shape == (64, 64)


def test_center_option():
    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(2))
    plain = nn.train_sgd(net, X2, Y2, lr=1.0, steps=2)
    centred = nn.train_sgd(net, X2, Y2, lr=1.0, steps=2, center=True)
    assert not plain.center and centred.center
    sim = centred.simulate(128, seed=0)
    np.testing.assert_allclose(sim.outputs, numpy_mlp(centred, sim)[0], atol=1e-10)
    assert np.all(sim.outputs[0] == 0)
    # f_0 → 0 in μP, so centring does not change the limit
    a = plain.limit(method="montecarlo", samples=2**15, qmc=True, seed=0)
    b = centred.limit(method="montecarlo", samples=2**15, qmc=True, seed=0)
    assert np.all(np.abs(a.outputs - b.outputs) <= 4 * np.hypot(a.stderr, b.stderr) + 1e-12)
    with pytest.raises(tp.ProgramValueError, match="center"):
        nn.train_sgd(nn.MLP(2, 2, "relu", nn.NTK(2)), X2, Y2, lr=1.0, steps=1, center=False)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(X=[1.0, 2.0]), tp.ProgramValueError, "X must be 2-D"),
        (dict(X=np.ones((2, 3))), tp.ProgramValueError, "X has 3 columns"),
        (dict(Y=[1.0, 2.0, 3.0]), tp.ProgramValueError, "Y must have shape"),
        (dict(Y=[[1.0], [2.0]]), tp.ProgramValueError, "Y must have shape"),
        (dict(lr=0.0), tp.ProgramValueError, "lr"),
        (dict(lr=-1.0), tp.ProgramValueError, "lr"),
        (dict(lr="big"), tp.ProgramTypeError, "lr"),
        (dict(steps=0), tp.ProgramValueError, "steps"),
        (dict(steps=-2), tp.ProgramValueError, "steps"),
        (dict(steps=1.5), tp.ProgramTypeError, "steps"),
        (dict(X_eval=[0.1, 0.2]), tp.ProgramValueError, "X_eval must be 2-D"),
        (dict(net="mlp"), tp.ProgramTypeError, "net"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, exc, match):
    args = dict(net=nn.MLP(2, 1, "tanh"), X=X2, Y=Y2, lr=0.5, steps=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        nn.train_sgd(args.pop("net"), args.pop("X"), args.pop("Y"), **args)


def test_bad_networks():
    with pytest.raises(tp.ProgramValueError, match="unstable"):
        nn.train_sgd(nn.MLP(2, 2, "relu", nn.SP(2)), X2, Y2, lr=0.1, steps=1)
    with pytest.raises(tp.ProgramValueError, match="depth"):
        nn.MLP(d_in=2, depth=3, param=nn.muP(2))
    with pytest.raises(tp.ProgramValueError, match="d_in"):
        nn.MLP(d_in=0, depth=1)
    with pytest.raises(tp.UnknownNameError):
        nn.MLP(d_in=2, depth=1, nonlin="swishy")
    assert math.isclose(nn.MLP(2, 1).param.c, 0)


def test_nn_imports_only_public_names():
    """``tensorprog.nn`` is built on the public API: every import of tensorprog in its
    modules is ``from .. import name`` (or ``from tensorprog import name``) with ``name``
    exported by ``tensorprog.__all__``, or a public name of a public module
    (:mod:`tensorprog.core.tables`, the one table renderer of every result; the IR
    records of :mod:`tensorprog.core.ir`, documented for interpreters; the nonlinearity
    definitions of :mod:`tensorprog.core.nonlin`) — no other submodule, no underscore
    name."""
    public_modules = {"core.tables", "core.ir", "core.nonlin"}
    import ast
    import pathlib

    offenders = []
    for path in sorted(pathlib.Path(nn.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (
                node.level == 1 or node.module == "__future__"
            ):
                continue  # nn's own modules, __future__
            if isinstance(node, ast.ImportFrom):
                top = node.level == 2 and node.module is None or node.module == "tensorprog"
                sub = (node.module or "").removeprefix("tensorprog.")
                names = [a.name for a in node.names]
                bad = [
                    f"{path.name}: from {'.' * node.level}{node.module or ''} import {nm}"
                    for nm in names
                    if not (top and nm in tp.__all__)
                    and not (sub in public_modules and not nm.startswith("_"))
                ]
                if node.level == 0 and not (node.module or "").startswith("tensorprog"):
                    bad = []  # numpy, sympy, the standard library
                offenders += bad
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("tensorprog")
                ]
    assert not offenders, offenders


# ------------------------------------------------------------------ nn.train options train_sgd uses


def _tanh_model():
    m = nn.Model("tanh2")
    for name, shape in (("W_in", ("n", 2)), ("W2", ("n", "n")), ("W_out", (1, "n"))):
        m.param(name, shape)

    @m.forward
    def f(p, xi):
        x = tp.tanh(p.W_in.matmul(xi, name="h1"), name="x1")
        return p.W_out @ tp.tanh(p.W2.matmul(x, name="h2"), name="x2")

    return m


@pytest.mark.parametrize("param", [nn.muP(), nn.NTK()], ids=["muP", "NTK"])
def test_train_eval_rows_and_feature_kernels(param):
    """X_eval rows are the forward at each step's parameters, never trained on: they equal
    the outputs of extra rows that every batch leaves out (same draws: the initial
    parameters come first); feature_kernels are xᵀx'/n of the named vectors at width n."""
    Xe = np.array([[0.3, 0.6]])
    kw = dict(steps=2, optimizer=nn.SGD(0.7), param=param)
    run = nn.train(_tanh_model(), X2, Y2, X_eval=Xe, feature_kernels=["x1", "x2"], **kw)
    ref = nn.train(
        _tanh_model(), np.vstack([X2, Xe]), np.append(Y2, 9.0), batches=[[0, 1]] * 2, **kw
    )
    assert run.center == ref.center == (param.name == "NTK")
    a, b = run.simulate(128, seed=3), ref.simulate(128, seed=3)
    np.testing.assert_allclose(a.outputs, b.outputs[:, :2], atol=1e-12, rtol=0)
    np.testing.assert_allclose(a.eval_outputs, b.outputs[:, 2:], atol=1e-12, rtol=0)
    x2 = a.named("x2")[:, :2]  # (steps+1, B, n)
    gram = np.einsum("tin,tjn->tij", x2, x2) / 128
    np.testing.assert_allclose(a.feature_kernel("x2"), gram, atol=1e-12, rtol=0)
    assert run.named["h1"].shape == (3, 3) and run.eval_outputs.shape == (3, 1, 1)
    assert run.chi.shape == (2, 2, 1)


def test_train_changes_is_the_same_network():
    """changes=True (an uncentred run carried as changes) simulates the same finite network."""
    trivial = nn.abcd({"W_in": (0, 0, 1, 0), "W2": (0, "1/2", 1, 0), "W_out": (0, 1, 2, 0)})
    kw = dict(steps=2, optimizer=nn.SGD(0.7), param=trivial)
    ra = nn.train(_tanh_model(), X2, Y2, changes=True, **kw)
    rb = nn.train(_tanh_model(), X2, Y2, **kw)
    assert not ra.center and str(ra.program) != str(rb.program)
    a, b = ra.simulate(96, seed=1), rb.simulate(96, seed=1)
    np.testing.assert_allclose(a.outputs, b.outputs, atol=1e-12, rtol=0)


def test_train_option_errors():
    m = _tanh_model()
    with pytest.raises(tp.ProgramValueError, match="feature_kernels names 'x3'"):
        nn.train(m, X2, Y2, steps=1, feature_kernels=["x3"])
    with pytest.raises(tp.ProgramTypeError, match="feature_kernels"):
        nn.train(m, X2, Y2, steps=1, feature_kernels="x1")
    with pytest.raises(tp.ProgramValueError, match="X_eval"):
        nn.train(m, X2, Y2, steps=1, X_eval=[[0.1, 0.2, 0.3]])
    with pytest.raises(tp.ProgramValueError, match="changes=True"):
        nn.train(m, X2, Y2, steps=1, param=nn.NTK(), center=False, changes=True)
    with pytest.raises(tp.ProgramValueError, match="unstable"):
        nn.train_sgd(nn.MLP(2, 2, "relu", nn.SP(2)), X2, Y2, lr=0.1, steps=1)
    run = nn.train_sgd(nn.MLP(2, 2, "relu", nn.SP(2)), X2, Y2, lr=0.1, steps=1, allow_unstable=True)
    assert run.problems and np.all(np.isfinite(run.simulate(64).outputs))
    with pytest.raises(tp.ProgramValueError, match="no infinite-width limit"):
        run.limit()
