"""nn.classify(model, param, optimizer): TP4's classification by parameter class.

Checked against the layer-wise ``nn.classify(abc)`` of [TP4 §3.2] on MLP models over a
grid (μP, SP, NTK, MF and random abc), against what ``nn.train`` accepts and refuses
(it builds the program and detects diverging width powers itself), and on models
with biases, gains, LayerNorm and scalar-like parameters."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import tensorprog as tp
from tensorprog import nn

FIELDS = (
    "r",
    "r_layers",
    "readout_ab",
    "readout_2ac",
    "readout_abr",
    "conditions",
    "stable",
    "initialized_maximally",
    "updated_maximally",
    "nontrivial",
    "feature_learning",
    "kernel",
    "nngp",
    "regime",
    "maximal_updates",
    "feature_learning_layers",
    "contributing_layers",
    "f0_gaussian",
    "f0_vanishes",
    "is_muP",
)


def mlp_model(L: int, d: int = 2) -> nn.Model:
    """input, hidden × (L−1), output: TP4's MLP [TP4 Eq. (1)]."""
    m = nn.Model(f"mlp{L}")
    m.param("W_in", ("n", d))
    for ell in range(2, L + 1):
        m.param(f"W{ell}", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        x = tp.tanh(p.W_in @ xi)
        for ell in range(2, L + 1):
            x = tp.tanh(getattr(p, f"W{ell}") @ x)
        return p.W_out @ x

    return m


def as_abcd(param: nn.ABC) -> nn.PerParameter:
    L = param.depth
    names = ["W_in"] + [f"W{ell}" for ell in range(2, L + 1)] + ["W_out"]
    return nn.abcd({k: (param.a[i], param.b[i], param.c, 0) for i, k in enumerate(names)})


def _grid():
    out = []
    for L in (1, 2, 3):
        out += [nn.muP(L), nn.SP(L), nn.SP(L, c=1), nn.NTK(L)]
    out.append(nn.MF())
    rng = np.random.default_rng(0)
    halves = [Fraction(k, 2) for k in range(-2, 4)]
    for _ in range(300):
        L = int(rng.integers(1, 4))
        a = [halves[i] for i in rng.integers(0, len(halves), L + 1)]
        # half of the draws satisfy the equalities of Thm 3.3 (otherwise almost none is stable)
        if rng.random() < 0.5:
            b = [-a[0]] + [Fraction(1, 2) - x for x in a[1:L]] + [halves[rng.integers(len(halves))]]
        else:
            b = [halves[i] for i in rng.integers(0, len(halves), L + 1)]
        out.append(nn.abc(a, b, halves[rng.integers(len(halves))]))
    # every one-hidden-layer parametrization with a_1 + b_1 = 0 on the lattice of halves
    # (c in {0, 1}: by the symmetry of TP4 Eq. (5) every class has a member with c = 0)
    for a1 in halves:
        for a2 in halves:
            for b2 in halves:
                for c in (0, 1):
                    out.append(nn.abc([a1, a2], [-a1, b2], c))
    return out


GRID = _grid()
MODELS = {L: mlp_model(L) for L in (1, 2, 3)}


def test_agrees_with_classify_abc_on_mlps_over_a_grid():
    regimes = set()
    for param in GRID:
        ref = nn.classify(param)
        got = nn.classify(MODELS[param.depth], as_abcd(param), nn.SGD(0.3))
        for f in FIELDS:
            assert getattr(got, f) == getattr(ref, f), (param, f)
        regimes.add(ref.regime)
        # the ABC itself (hidden layers sharing exponents) gives the same scalings
        if len({(param.a[i], param.b[i]) for i in range(1, param.depth)}) <= 1:
            direct = nn.classify(MODELS[param.depth], param, nn.SGD(0.3))
            assert all(getattr(direct, f) == getattr(ref, f) for f in FIELDS)
    assert regimes == {"unstable", "trivial", "kernel", "feature learning"}


def _train_refuses(model, param) -> bool:
    X, Y = np.array([[1.0, -0.5]]), np.array([0.7])
    try:
        nn.train(model, X, Y, steps=1, optimizer=nn.SGD(0.3), param=param)
    except tp.ProgramValueError as err:
        assert "no infinite-width limit" in str(err)
        return True
    return False


@pytest.mark.parametrize("k", [*range(0, 60, 3), *range(len(GRID) - 432, len(GRID), 29)])
def test_limit_supported_is_what_nn_train_accepts(k):
    # presets (k < 13) and random abc; nn.train finds the diverging powers by building
    param = GRID[k]
    model = MODELS[param.depth]
    c = nn.classify(model, as_abcd(param), nn.SGD(0.3))
    refused = _train_refuses(model, as_abcd(param))
    assert refused == (not c.limit_supported), (param, c.limit_problems)
    assert not (refused and c.stable and c.limit_supported)


def resnet_ln() -> nn.Model:
    """A residual MLP with LayerNorm, biases, a gain and an output bias."""
    m = nn.Model("resnet_ln")
    m.param("W_in", ("n", 2))
    m.param("b_in", ("n",), init_std=0.0)
    m.param("W", ("n", "n"))
    m.param("g", ("n",), init_mean=1.0, init_std=0.0)
    m.param("W_out", (3, "n"))
    m.param("c", (3,), init_std=0.0)

    @m.forward
    def f(p, xi):
        h = p.W_in @ xi + p.b_in
        h = h + 0.5 * tp.tanh(p.W @ nn.layernorm(h))
        return np.asarray(p.W_out @ (p.g * tp.relu(h)), dtype=object) + p.c

    return m


def test_residual_layernorm_model_presets():
    m = resnet_ln()
    mu = nn.classify(m, nn.muP(), nn.SGD(0.5, momentum=0.9))
    assert mu.regime == "feature learning" and mu.is_muP and mu.limit_supported
    # every parameter updated maximally: TP5 Table 3 is μP for every class
    assert all(mu.maximal_updates)
    assert {x.name for x in mu.parameters if x.feature_update == 0} == {"W_in", "b_in", "W", "g"}
    assert "W_out" in mu.contributing_params and "c" in mu.contributing_params
    sp = nn.classify(m, nn.SP(), nn.SGD(0.5))
    assert sp.regime == "unstable" and not sp.limit_supported
    assert sp.r == -1 and "violated by W" in sp.explain()
    ntk = nn.classify(m, nn.NTK(), nn.SGD(0.5))
    assert ntk.regime == "kernel" and ntk.r == Fraction(1, 2) and ntk.stable
    assert not ntk.limit_supported and "Gaussian-process" in ntk.explain()
    # consistent with nn.train on this model too
    X, Y = np.array([[1.0, 0.2], [-0.3, 0.8]]), np.array([0, 2])
    for param, cl in ((nn.muP(), mu), (nn.SP(), sp), (nn.NTK(), ntk)):
        try:
            nn.train(m, X, Y, steps=1, loss="xent", optimizer=nn.SGD(0.5), param=param)
            refused = False
        except tp.ProgramValueError:
            refused = True
        assert refused == (not cl.limit_supported)


def test_explanations_name_the_deciding_parameters():
    m = resnet_ln()
    # a hidden weight learning too fast: r < 0 decided by W alone
    ex = {k: (0, 0, -1, 0) for k in ("W_in", "b_in", "g")}
    ex.update({"W": (0, Fraction(1, 2), -1, 0), "W_out": (0, 1, 1, 0), "c": (0, 0, 0, 0)})
    c = nn.classify(m, nn.abcd(ex), nn.SGD(0.1))
    assert c.r == -1 and c.regime == "unstable"
    text = c.explain()
    assert "decided by W  [" in text and "(violated by W)" in text
    # a slower output: kernel regime through the feature params, decided by all of them
    ex.update({"W": (0, Fraction(1, 2), 0, 0), "W_out": (0, 1, 2, 0), "c": (0, 0, 1, 0)})
    c = nn.classify(m, nn.abcd(ex), nn.SGD(0.1))
    assert c.r == 0 and c.regime == "feature learning"
    assert "initialized maximally (s+r = 1): W_out" in c.explain()


def test_random_features_and_frozen_parameters():
    m = nn.Model("rf")
    m.param("W_in", ("n", 2), lr_mult=0.0)
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        return p.W_out @ tp.relu(p.W_in @ xi)

    c = nn.classify(m, nn.muP(), nn.SGD(1.0))
    # features never move (r = inf); only the readout learns: the NNGP regime [TP4 Cor H.35]
    assert c.r == math.inf and c.regime == "kernel" and c.nngp and c.r_layers == ()


def test_errors():
    m = MODELS[1]
    with pytest.raises(tp.ProgramTypeError, match="nn.SGD"):
        nn.classify(m, nn.muP(), object())
    with pytest.raises(tp.ProgramTypeError, match="one ABC"):
        nn.classify(nn.muP(1), nn.SGD(1.0))
    with pytest.raises(tp.ProgramTypeError, match="per-class preset"):
        nn.classify(m, "muP", nn.SGD(1.0))
    m2 = nn.Model("no_out")
    m2.param("W_in", ("n", 1))

    @m2.forward
    def f(p, xi):
        return tp.mean(p.W_in @ xi)

    with pytest.raises(tp.ProgramValueError, match="no output weight"):
        nn.classify(m2, nn.muP(), nn.SGD(1.0))
