"""nn.coord_check and nn.lr_sweep (issue #18).

Independent references: the finite-width simulations themselves (every fitted
exponent and normalised RMS is measured on the finite network), TP4's ``r``
[TP4 Def 3.2] computed by ``nn.classify`` for the feature-update exponent, and the
one-step SP blow-up written out below by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorprog as tp
from tensorprog import nn
from tensorprog.nn.coordcheck import (
    WidthDegrees,
    _p_value,
    _tracked,
    fit_exponent,
    fit_vertex,
    holm,
    vertex_bootstrap,
)

pytest.importorskip("pandas")

X = np.array([[1.0, 0.5]])


def mlp(L: int, phi) -> nn.Model:
    """An L-hidden-layer MLP on 2 inputs that names its pre-activations h{l} and
    features x{l}."""
    m = nn.Model(f"mlp{L}")
    layers = ["W_in"] + [f"W{ell}" for ell in range(2, L + 1)]
    for name in layers:
        m.param(name, ("n", 2) if name == "W_in" else ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, x):
        for ell, name in enumerate(layers, 1):
            x = phi(tp.identity(p[name] @ x, name=f"h{ell}"), name=f"x{ell}")
        return p.W_out @ x

    return m


def mup_abcd(a_out):
    """μP in TP5's multiplier form for mlp(2, ·): W_out = n^{-a_out}·w, w ~ N(0, 1),
    learning rate n^{1}; a_out = 1 is μP, a_out = 1/2 the wrong output multiplier."""
    return nn.abcd({"W_in": (0, 0, -1, 0), "W2": (0, "1/2", 0, 0), "W_out": (a_out, 0, -1, 0)})


# ---------------------------------------------------------------------------------------
# μP: every tensor consistent


@pytest.mark.parametrize(
    "phi, L, limit",
    [
        (tp.relu, 2, {"samples": 4000}),
        (tp.tanh, 2, False),
        (tp.relu, 3, False),
        (tp.tanh, 3, False),
    ],
)
def test_mup_every_tensor_consistent(phi, L, limit):
    run = nn.train(
        mlp(L, phi), X, [1.0], steps=2, optimizer=nn.SGD(0.5), param=nn.muP(), coordinates=True
    )
    cc = nn.coord_check(run, widths=[128, 256, 512, 1024], seeds=6, limit=limit)
    s = cc.summary
    assert set(s.tensor) >= {f"h{L}", f"Δx{L}", "f", "Δf", f"ΔW{L} x"}
    assert (s.verdict == "consistent").all(), s[s.verdict != "consistent"]
    # μP: Θ(1) everything except the initial output, a CLT fluctuation n^{-1/2}
    f0 = (s.tensor == "f") & (s.step == 0)
    assert (s[~f0].predicted_exponent == 0).all()
    assert s[f0].predicted_exponent.item() == -0.5
    assert not s.blows_up.any()
    if limit:  # the limits were compared with the largest width (z_limit < 3)
        have = s[np.isfinite(s.limit)]
        assert len(have) == len(s) - 1
        assert (have.z_limit < 3).all()
    d = cc.data
    assert len(d) == len(s) * 4 * 6 and set(d.columns) == {"tensor", "step", "width", "seed", "rms"}


# ---------------------------------------------------------------------------------------
# SP with a width-independent learning rate: the blow-up exponents


def test_sp_blowup_predicted_and_measured():
    # One SGD step of SP (all c = 0). By hand: dh2 = ∂f/∂h2 has entries ~ n^{-1/2}
    # (W_out ~ N(0, 1/n)), so ΔW2·x1 = −η χ dh2 (x1ᵀx1) ~ n^{-1/2}·n = n^{1/2}; the
    # readout update ΔW_out = −η χ x2ᵀ moves f by −η χ x2ᵀ x2 ~ n, and by
    # W_out_0·Δx2 ~ ... ≤ n: f_1 − f_0 ~ n^{1}·(1 + n^{1/2}⟨x2_0, Δx2⟩/…), at most n^{3/2}.
    run = nn.train(
        mlp(2, tp.relu),
        X,
        [4.0],
        steps=1,
        optimizer=nn.SGD(0.5),
        param=nn.SP(),
        allow_unstable=True,
        coordinates=True,
    )
    cc = nn.coord_check(run, widths=[256, 512, 1024, 2048], seeds=6, limit=False)
    s = cc.summary.set_index(["tensor", "step"])
    assert s.loc[("Δh2", 1)].predicted_exponent == 0.5
    # ΔW2 x = Δh2 − W2_0·Δx1, the second term n^{-1/2}
    assert s.loc[("ΔW2 x", 1)].predicted_exponent == 0.5
    assert s.loc[("Δh1", 1)].predicted_exponent == -0.5  # the input layer: n^{-1/2}
    assert s.loc[("Δf", 1)].predicted_exponent == 1.5
    blow = s[s.blows_up]
    assert set(blow.index) == {(t, 1) for t in ("h2", "Δh2", "x2", "Δx2", "f", "Δf", "ΔW2 x")}
    # flagged with the predicted exponent matching the fitted one within 3 s.e.
    assert (blow.z_exponent < 3).all(), blow
    assert ((blow.exponent - 3 * blow.exponent_se) > 0).all()  # measured: it does blow up
    assert (cc.summary.verdict == "consistent").all()
    assert "no infinite-width limit" in run.problems[0] or run.problems


# ---------------------------------------------------------------------------------------
# NTK: feature updates at n^{-1/2}


def test_ntk_feature_updates_minus_half():
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.NTK(2))
    run = nn.train_sgd(net, X, [1.0], lr=1.0, steps=2)
    cc = nn.coord_check(run, widths=[128, 256, 512, 1024], seeds=6, limit={"samples": 4000})
    s = cc.summary
    upd = s[s.tensor.str.startswith("Δ")]
    assert set(upd.tensor) == {"Δh1", "Δx1", "Δh2", "Δx2"}
    assert (upd.predicted_exponent == -0.5).all()
    assert (upd.z_exponent < 3).all(), upd
    assert (s.verdict == "consistent").all()
    # n^{1/2}(h_t − h_0) = Δh, the program's normalised change [TP4 Eq. (55)]: its limit,
    # against the normalised RMS at width 1024
    dh = upd[upd.tensor.str.startswith("Δh")]
    assert np.isfinite(dh.limit).all() and (dh.z_limit < 3).all(), dh


@pytest.mark.parametrize(
    "param",
    [nn.muP(1), nn.muP(2), nn.muP(3), nn.NTK(1), nn.NTK(2), nn.NTK(3), nn.MF()]
    + [nn.muP(2).shifted("1/2"), nn.NTK(2).shifted(-1)],  # equivalent: the same r
    ids=repr,
)
def test_feature_update_degree_is_tp4_r(param):
    """The degree WidthDegrees derives for Δx^L of a train_sgd run is −r, TP4's r
    computed by nn.classify from the abc exponents alone [TP4 Def 3.2]."""
    L = param.depth
    cls = nn.classify(param)
    assert cls.stable
    net = nn.MLP(d_in=1, depth=L, nonlin="tanh", param=param)
    run = nn.train_sgd(net, [[1.0]], [1.0], lr=0.5, steps=1, feature_kernels=False)
    x = run.named[f"x{L}"]
    wd = WidthDegrees(run.program)
    assert wd.change(x[1, 0], x[0, 0]) == -float(cls.r)


# ---------------------------------------------------------------------------------------
# ΔW x: the weight updates' contribution


@pytest.mark.parametrize("param", [nn.muP(), nn.NTK()], ids=repr)
def test_weight_uses_are_w0_x(param):
    """coordinates=True exposes θ·W_0 x_t per hidden use, checked at finite width against
    the initial matrix (sim.param: θ·M as numpy) times the use's input x1_t; off by
    default, and free where the MatMul W_0 x_t exists (μP: names only; the centred NTK
    run applies W_0 to x_0 and Δx separately, one lincomb per use at t ≥ 1)."""
    Xs, kw = np.array([[1.0, 0.5], [-0.3, 1.0]]), dict(optimizer=nn.SGD(0.5), param=param)
    off = nn.train(mlp(2, tp.tanh), Xs, [1.0, -0.5], steps=2, **kw)
    on = nn.train(mlp(2, tp.tanh), Xs, [1.0, -0.5], steps=2, coordinates=True, **kw)
    assert off.weight_uses == () and on.center == (param.name == "NTK")
    assert [(u.param, u.step, u.input) for u in on.weight_uses] == [
        ("W2", t, i) for t in range(3) for i in range(2)
    ]
    assert len(on.program) == len(off.program) + (4 if on.center else 0)
    sim = on.simulate(300, seed=1)
    W0, x1, h2 = sim.param("W2"), sim.named("x1"), sim.named("h2")
    for u in on.weight_uses:
        w0x = sim.simulation.vector(u.w0x)
        np.testing.assert_allclose(w0x, W0 @ x1[u.step, u.input], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sim.simulation.vector(u.h), h2[u.step, u.input], rtol=1e-12)
        assert (u.step == 0) == np.allclose(sim.simulation.vector(u.h), w0x, rtol=1e-12)


def test_ntk_weight_updates_minus_half():
    """NTK: ΔW x = −η n^{-1}·(∂f/∂h)·(xᵀx) = n^{-1/2}, predicted from the program and
    measured; its normalised limit from the leading order of the rank-B updates."""
    run = nn.train(
        mlp(2, tp.relu), X, [1.0], steps=1, optimizer=nn.SGD(0.5), param=nn.NTK(), coordinates=True
    )
    cc = nn.coord_check(run, widths=[128, 256, 512, 1024], seeds=6, limit={"samples": 4000})
    w = cc.summary[cc.summary.tensor == "ΔW2 x"]
    assert list(w.step) == [1] and (w.predicted_exponent == -0.5).all()
    assert (w.z_exponent < 3).all() and (w.z_limit < 3).all(), w
    assert (cc.summary.verdict == "consistent").all()


def test_train_sgd_weight_updates():
    """An uncentred train_sgd run names W_0 x_t (the MatMul W2x1_t_i): ΔW2 x rows, Θ(1)
    in μP; a centred one (NTK) has no such MatMul and no ΔW rows."""
    mup = nn.train_sgd(nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(2)), X, [1.0], 1.0, 2)
    rows = [tr for tr in _tracked(mup) if tr.tensor == "ΔW2 x"]
    assert [tr.step for tr in rows] == [1, 2]
    cc = nn.coord_check(mup, widths=[128, 256, 512], seeds=4, limit=False)
    w = cc.summary[cc.summary.tensor == "ΔW2 x"]
    assert (w.predicted_exponent == 0).all() and (w.verdict == "consistent").all()
    ntk = nn.train_sgd(nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.NTK(2)), X, [1.0], 1.0, 2)
    assert ntk.center and not any(tr.tensor.startswith("ΔW") for tr in _tracked(ntk))


# ---------------------------------------------------------------------------------------
# The family-wise verdict


def test_holm_is_the_step_down_rule():
    """holm(p) ≤ α exactly for the hypotheses Holm's sequentially rejective procedure
    rejects at level α, written here from its definition: walk the sorted p-values,
    reject while p_(i) ≤ α/(m − i + 1), stop at the first that is not."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 0.05, m) ** rng.uniform(0.5, 2)
        alpha = float(rng.choice([0.01, 0.05]))
        rejected = np.zeros(m, bool)
        for i, j in enumerate(np.argsort(p, kind="stable")):
            if p[j] > alpha / (m - i):
                break
            rejected[j] = True
        np.testing.assert_array_equal(holm(p) <= alpha, rejected)


def test_family_wise_error_rate_under_the_null():
    """Families of 25 rows whose RMS has exponent 0 exactly (lognormal noise, 4 widths ×
    4 seeds, as a 4-seed check), each row's p-value from fit_exponent: the fraction of
    families with any row rejected by Holm at α = 0.01 is at most α (Binomial(40, 0.01)
    exceeds 2 with probability 0.8%). The per-row 3σ rule it replaces rejects some row
    in ~13% of such families (≥ 3 of 40 with probability 0.9)."""
    rng = np.random.default_rng(7)
    ws = np.array([256, 512, 1024, 2048])
    bad = 0
    for _ in range(40):
        p = []
        for _ in range(25):
            fit = fit_exponent(ws, np.exp(0.05 * rng.standard_normal((4, 4))))
            p.append(_p_value(abs(fit.exponent) / fit.se, fit.dof))
        bad += bool((holm(p) <= 0.01).any())
    assert bad <= 2


# ---------------------------------------------------------------------------------------
# The broken μP: a wrong output multiplier


def test_broken_mup_flagged():
    runs = {
        a: nn.train(
            mlp(2, tp.relu),
            X,
            [4.0],
            steps=1,
            optimizer=nn.SGD(0.5),
            param=mup_abcd(a),
            allow_unstable=True,
        )
        for a in (1, "1/2")
    }
    good = nn.coord_check(runs[1], widths=[128, 256, 512, 1024], seeds=6, limit=False)
    bad = nn.coord_check(runs["1/2"], widths=[128, 256, 512, 1024], seeds=6, limit=False)
    assert not runs[1].problems and runs["1/2"].problems
    assert not good.summary.blows_up.any()
    flagged = bad.summary[bad.summary.blows_up]
    # every tensor after the first update blows up; nothing at initialisation
    assert set(flagged.step) == {1} and len(flagged) == len(bad.summary[bad.summary.step == 1])
    assert (flagged.z_exponent < 3).all() and (
        (flagged.exponent - 3 * flagged.exponent_se) > 0
    ).all()
    # the initial output: n^{-1/2} in μP, Θ(1) (a Gaussian process) with the wrong multiplier
    # (same seeds, same draws: the broken f_0 is the μP one times n^{1/2} exactly)
    f0 = {
        k: c.summary.set_index(["tensor", "step"]).loc[("f", 0)]
        for k, c in (("g", good), ("b", bad))
    }
    assert f0["g"].predicted_exponent == -0.5 and f0["b"].predicted_exponent == 0.0
    assert f0["b"].exponent - f0["g"].exponent == pytest.approx(0.5, abs=1e-9)
    assert f0["g"].z_exponent < 3 and f0["b"].z_exponent < 3


# ---------------------------------------------------------------------------------------
# The fit and the arguments


def test_fit_exponent_recovers_a_power():
    rng = np.random.default_rng(0)
    ws = np.array([128, 256, 512, 1024])
    R = 2.0 * ws[:, None] ** 0.75 * np.exp(0.05 * rng.standard_normal((4, 50)))
    fit = fit_exponent(ws, R)
    e, se = fit.exponent, fit.se
    assert fit.dof == 4 * 49 - 2
    # se of a slope on log2-spaced widths: σ/√S / sqrt(Σ(x − x̄)²), σ = 0.05
    x = np.log(ws)
    assert se == pytest.approx(0.05 / np.sqrt(50) / np.sqrt(np.sum((x - x.mean()) ** 2)), rel=0.3)
    assert abs(e - 0.75) < 3 * se


def test_bad_arguments():
    run = nn.train(mlp(1, tp.tanh), X, [1.0], steps=1)
    with pytest.raises(tp.ProgramValueError, match="widths"):
        nn.coord_check(run, widths=[128])
    with pytest.raises(tp.ProgramValueError, match="widths"):
        nn.coord_check(run, widths=[128, 1])
    with pytest.raises(tp.ProgramValueError, match="seeds"):
        nn.coord_check(run, widths=[64, 128], seeds=1)
    with pytest.raises(tp.ProgramValueError, match="alpha"):
        nn.coord_check(run, widths=[64, 128], alpha=1.5)
    with pytest.raises(tp.ProgramTypeError, match="coordinates"):
        nn.train(mlp(1, tp.tanh), X, [1.0], steps=1, coordinates="yes")
    with pytest.raises(tp.ProgramTypeError, match="run must be"):
        nn.coord_check(run.program, widths=[64, 128])
    with pytest.raises(tp.ProgramValueError, match="lrs"):
        nn.lr_sweep(mlp(1, tp.tanh), X, [1.0], lrs=[0.1, 0.2])
    with pytest.raises(tp.ProgramTypeError, match="model_or_factory"):
        nn.lr_sweep("model", X, [1.0], lrs=[0.1, 0.2, 0.4])


def test_missing_pandas_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.delitem(__import__("sys").modules, "pandas")
    run = nn.train(mlp(1, tp.tanh), X, [1.0], steps=1)
    with pytest.raises(tp.OptionalDependencyError, match=r"tensorprog\[notebook\]"):
        nn.coord_check(run, widths=[64, 128])


# ---------------------------------------------------------------------------------------
# lr_sweep: μTransfer from the limit


def test_lr_sweep_mup_argmins_approach_the_limit():
    """A linear μP network (exact limit): the finite-width argmins approach the limit's.

    At width n the mean loss exceeds the limit's by the outputs' variance, O(1/n), so the
    argmin carries an O(1/n) bias besides its seed (bootstrap) standard error: at the
    larger width the distance to the limit's argmin is at most 3 s.e. plus the smaller
    width's distance (≤ its value + 3 s.e.) scaled by n_small/n_large."""
    lrs = 2.0 ** np.arange(-0.5, 2.01, 0.5)
    Xs = np.array([[1.0, 0.5], [-0.3, 1.0]])
    sw = nn.lr_sweep(
        mlp(1, tp.identity),
        Xs,
        [1.0, -0.5],
        lrs,
        widths=[64, 1024, None],
        steps=3,
        seeds=4,
        param=nn.muP(),
    )
    b = sw.best_lr.set_index(sw.best_lr.width.fillna(0).astype(int))
    assert not b.at_edge.any()
    inf, small, large = b.loc[0], b.loc[64], b.loc[1024]
    assert inf.log_lr_se < 1e-12  # an exact limit
    d_small = abs(small.log_lr - inf.log_lr)
    d_large = abs(large.log_lr - inf.log_lr)
    assert d_large < d_small
    assert d_large <= 3 * large.log_lr_se + (d_small + 3 * small.log_lr_se) * 64 / 1024
    assert set(sw.data.columns) == {"width", "lr", "seed", "value", "stderr"}
    assert np.isclose(sw.best_lr.lr, np.exp(sw.best_lr.log_lr)).all()


def test_fit_vertex_stays_in_the_basin():
    """A curve with two basins: the parabola fitted to all points has its vertex between
    them; fit_vertex finds the deeper basin's minimum (exact for a parabola) from the
    points of that basin only and says which."""
    x = np.linspace(-2.0, 2.0, 17)  # spacing 1/4
    y = np.minimum(3 * (x + 0.9) ** 2, 0.2 + 2 * (x - 1.1) ** 2)
    a2, a1, _ = np.polyfit(x, y, 2)
    assert abs(-a1 / (2 * a2) - (-0.9)) > 0.5  # the global parabola is wrong
    fit = fit_vertex(x, y)
    assert fit.log_lr == pytest.approx(-0.9, abs=1e-12) and not fit.at_edge
    # the basin: from the left edge down to x = -1 and up to where the branches cross
    cross = x[np.argmax(3 * (x + 0.9) ** 2 > 0.2 + 2 * (x - 1.1) ** 2)]
    assert fit.basin == (0, int(np.flatnonzero(x == cross)[0]) - 1)
    assert fit.used == (3, 4, 5) and all(fit.basin[0] <= i <= fit.basin[1] for i in fit.used)
    # restricted to the other basin: its own minimum, 1.1
    other = fit_vertex(x, y, within=(fit.basin[1] + 1, 16))
    assert other.log_lr == pytest.approx(1.1, abs=1e-12)


def test_vertex_bootstrap_within_the_basin():
    """Two basins almost as deep, 8 noisy seeds: some resamples' minimum falls in the
    other basin (p_basin < 1); fitted within the basin, the bootstrap s.e. matches the
    spread of the vertex over independent repetitions of the experiment (fresh seeds),
    which a bootstrap that lets the minimum jump would overstate by the basins' distance."""
    x = np.linspace(-2.0, 2.0, 17)
    f = np.minimum(3 * (x + 0.9) ** 2, 0.004 + 2 * (x - 1.1) ** 2)
    rng = np.random.default_rng(11)

    def seeds():
        return f + 0.01 * rng.standard_normal((8, len(x)))

    V = seeds()
    fit, se, p_in = vertex_bootstrap(
        x, V.mean(axis=0), (V[rng.integers(0, 8, 8)].mean(axis=0) for _ in range(400))
    )
    assert 0.5 < p_in < 1.0 and fit.basin in ((0, 8), (8, 16))  # (the peak in both)
    reps = [fit_vertex(x, seeds().mean(axis=0), within=fit.basin).log_lr for _ in range(400)]
    # the bootstrap of 8 seeds underestimates by sqrt(7/8) on average; its own spread
    # over data sets is ~25% (400 resamples, 8 seeds): a factor 1.6 either way
    assert np.std(reps) / 1.6 < se < 1.6 * np.std(reps)
    assert se < 0.1  # the basins' minima are 2.0 apart


# ---------------------------------------------------------------------------------------
# The command line


def test_cli_coordcheck_writes_table_and_figure(tmp_path, capsys):
    from tensorprog.cli import main

    src = tmp_path / "net.py"
    src.write_text(
        "from tensorprog import nn\n"
        "net = nn.MLP(d_in=1, depth=1, nonlin='tanh', param=nn.muP(1))\n"
        "run = nn.train_sgd(net, [[1.0]], [1.0], lr=1.0, steps=1)\n"
    )
    rc = main(
        [
            "coordcheck",
            str(src),
            "-o",
            str(tmp_path),
            "--widths",
            "64",
            "128",
            "256",
            "--seeds",
            "4",
            "--no-limit",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "consistent" in out
    import pandas as pd

    s = pd.read_csv(tmp_path / "coordcheck.csv")
    assert (
        set(s.tensor) == {"h1", "Δh1", "x1", "Δx1", "f", "Δf"} and (s.verdict == "consistent").all()
    )
    assert (tmp_path / "coordcheck.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "coordcheck_data.csv")) == len(s) * 3 * 4
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["coordcheck", str(tmp_path / "empty.py"), "-o", str(tmp_path)]) == 1
    assert "neither `run`" in capsys.readouterr().err
    assert main(["coordcheck", str(src), "-o", str(tmp_path / "missing")]) == 2
