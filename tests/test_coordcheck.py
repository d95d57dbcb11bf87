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
from tensorprog.nn.coordcheck import WidthDegrees, fit_exponent

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
    run = nn.train(mlp(L, phi), X, [1.0], steps=2, optimizer=nn.SGD(0.5), param=nn.muP())
    cc = nn.coord_check(run, widths=[128, 256, 512, 1024], seeds=6, limit=limit)
    s = cc.summary
    assert set(s.tensor) >= {f"h{L}", f"Δx{L}", "f", "Δf"}
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
    )
    cc = nn.coord_check(run, widths=[256, 512, 1024, 2048], seeds=6, limit=False)
    s = cc.summary.set_index(["tensor", "step"])
    assert s.loc[("Δh2", 1)].predicted_exponent == 0.5
    assert s.loc[("Δh1", 1)].predicted_exponent == -0.5  # the input layer: n^{-1/2}
    assert s.loc[("Δf", 1)].predicted_exponent == 1.5
    blow = s[s.blows_up]
    assert set(blow.index) == {(t, 1) for t in ("h2", "Δh2", "x2", "Δx2", "f", "Δf")}
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
