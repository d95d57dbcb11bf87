"""Tests of ``tensorprog.nn.parametrization`` against THEORY.md §4 ([TP4 §3.2, §5]).

Every expected exponent below is computed by hand from [TP4 Def 3.2, Prop 5.3, Thm 3.3,
Thm 3.4] and written into the test as a literal; nothing is recomputed with the code
under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest

from tensorprog.core.errors import ProgramTypeError, ProgramValueError
from tensorprog.nn.parametrization import (
    ABC,
    MF,
    NTK,
    SP,
    Classification,
    LayerScaling,
    abc,
    classify,
    muP,
    scalings,
)

H = F(1, 2)
CONDITION_NAMES = (
    "a1+b1=0",
    "al+bl=1/2 (2<=l<=L)",
    "a_{L+1}+b_{L+1}>=1/2",
    "r>=0",
    "2a_{L+1}+c>=1",
    "a_{L+1}+b_{L+1}+r>=1",
)


# ----------------------------------------------------------------------------------------
# THEORY §4.3 (TP4 Table 1), row by row. Columns: exponents written by hand, then the
# hand-computed r, r_l, 2a_{L+1}+c, a_{L+1}+b_{L+1}+r and the verdict.
# ----------------------------------------------------------------------------------------

TABLE = [
    # id, constructor, a, b, c, r, r_l, 2a+c, a+b+r, regime, nngp
    # SP, LR Theta(1), L >= 2: r = min(1/2, 0) + 0 - 1 + min(1, 0, ...) = -1.
    ("SP-c0-L2", lambda: SP(2), (0, 0, 0), (0, H, H), 0,
     F(-1), (F(0), F(-1)), F(0), F(-1, 2), "unstable", False),
    ("SP-c0-L3", lambda: SP(3), (0, 0, 0, 0), (0, H, H, H), 0,
     F(-1), (F(0), F(-1), F(-1)), F(0), F(-1, 2), "unstable", False),
    # SP, LR eta/n, L >= 2: r = min(1/2, 1) + 1 - 1 + min(1, 0) = 1/2.
    ("SP-c1-L2", lambda: SP(2, c=1), (0, 0, 0), (0, H, H), 1,
     H, (F(3, 2), H), F(1), F(1), "kernel", False),
    ("SP-c1-L3", lambda: SP(3, c=1), (0, 0, 0, 0), (0, H, H, H), 1,
     H, (F(3, 2), H, H), F(1), F(1), "kernel", False),
    # SP, LR eta/n, L = 1: r = 1/2 + 0 + 1 = 3/2 and a+b+r = 2 > 1: NNGP limit.
    ("SP-c1-L1", lambda: SP(1, c=1), (0, 0), (0, H), 1,
     F(3, 2), (F(3, 2),), F(1), F(2), "kernel", True),
    # NTP: r = min(1/2, 1) + 0 - 1 + min(1, 1) = 1/2.
    ("NTP-L1", lambda: NTK(1), (0, H), (0, 0), 0,
     H, (H,), F(1), F(1), "kernel", False),
    ("NTP-L2", lambda: NTK(2), (0, H, H), (0, 0, 0), 0,
     H, (H, H), F(1), F(1), "kernel", False),
    ("NTP-L3", lambda: NTK(3), (0, H, H, H), (0, 0, 0, 0), 0,
     H, (H, H, H), F(1), F(1), "kernel", False),
    # MFP (L = 1): r = min(1, 1) - 1 - 1 + 1 = 0.
    ("MF", MF, (0, 1), (0, 0), -1,
     F(0), (F(0),), F(1), F(1), "feature learning", False),
    # muP: r = min(1, 1) + 0 - 1 + min(0, 0, ...) = 0.
    ("muP-L1", lambda: muP(1), (-H, H), (H, H), 0,
     F(0), (F(0),), F(1), F(1), "feature learning", False),
    ("muP-L2", lambda: muP(2), (-H, 0, H), (H, H, H), 0,
     F(0), (F(0), F(0)), F(1), F(1), "feature learning", False),
    ("muP-L4", lambda: muP(4), (-H, 0, 0, 0, H), (H, H, H, H, H), 0,
     F(0), (F(0),) * 4, F(1), F(1), "feature learning", False),
]  # fmt: skip


@pytest.mark.parametrize(
    "make, a, b, c, r, r_l, two_a_c, abr, regime, nngp",
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_table_rows(make, a, b, c, r, r_l, two_a_c, abr, regime, nngp):
    p = make()
    # the constructor builds exactly the hand-written exponents
    assert p.a == tuple(F(x) for x in a)
    assert p.b == tuple(F(x) for x in b)
    assert p.c == F(c)
    assert p.depth == len(a) - 1
    for param in (p, abc(a, b, c)):
        cl = classify(param)
        assert isinstance(cl, Classification)
        assert cl.r == r and isinstance(cl.r, F)
        assert cl.r_layers == r_l
        assert cl.readout_2ac == two_a_c
        assert cl.readout_abr == abr
        assert cl.regime == regime
        assert cl.nngp is nngp
        assert cl.stable is (regime != "unstable")
        assert cl.nontrivial is (regime in ("kernel", "feature learning"))
        assert cl.feature_learning is (regime == "feature learning")
        assert cl.kernel is (regime == "kernel")
        assert tuple(cl.conditions) == CONDITION_NAMES


def test_sp_lr_theta1_conditions_by_name():
    cl = classify(SP(2))
    assert cl.conditions == {
        "a1+b1=0": True,
        "al+bl=1/2 (2<=l<=L)": True,
        "a_{L+1}+b_{L+1}>=1/2": True,
        "r>=0": False,  # r = -1
        "2a_{L+1}+c>=1": False,  # 0
        "a_{L+1}+b_{L+1}+r>=1": False,  # -1/2
    }
    assert not cl.nontrivial and not cl.feature_learning and not cl.kernel


def test_facets_and_maximal_updates_in_table():
    # muP: both facets, every layer updated maximally, the unique such (Thm 5.6).
    cl = classify(muP(3))
    assert cl.initialized_maximally and cl.updated_maximally
    assert cl.maximal_updates == (True, True, True, True)
    assert cl.is_muP
    assert cl.feature_learning_layers == (1, 2, 3)
    assert cl.contributing_layers == (1, 2, 3, 4)
    # SP with LR 1/n, L = 2: both facets (a+b+r = 1, 2a+c = 1); r_1 = 3/2, r_2 = 1/2.
    cl = classify(SP(2, c=1))
    assert cl.initialized_maximally and cl.updated_maximally
    assert cl.maximal_updates == (False, False, True)
    assert not cl.is_muP
    # THEORY §3.7 (DERIVED): the kernel lacks the first-layer-weight term.
    assert cl.contributing_layers == (2, 3)
    # SP with LR 1/n, L = 1: only updated maximally -> NNGP (Cor H.35).
    cl = classify(SP(1, c=1))
    assert not cl.initialized_maximally and cl.updated_maximally
    assert cl.contributing_layers == (2,)
    # NTP: the full NTK, all layers contribute.
    cl = classify(NTK(3))
    assert cl.contributing_layers == (1, 2, 3, 4)
    assert cl.maximal_updates == (False, False, False, True)


def test_f0_flags():
    # a_{L+1}+b_{L+1} = 1/2 for SP and NTP: f_0 is a nondegenerate GP (THEORY §3.3).
    for p in (SP(2), SP(3, c=1), NTK(2)):
        cl = classify(p)
        assert cl.f0_gaussian and not cl.f0_vanishes
    # = 1 for muP and MF: f_0 -> 0.
    for p in (muP(2), MF()):
        cl = classify(p)
        assert cl.f0_vanishes and not cl.f0_gaussian
    # = 1/4 < 1/2: f_0 blows up; unstable.
    cl = classify(abc([0, 0], [0, "1/4"], 1))
    assert not cl.f0_gaussian and not cl.f0_vanishes
    assert cl.regime == "unstable"
    assert cl.conditions["a_{L+1}+b_{L+1}>=1/2"] is False


# ----------------------------------------------------------------------------------------
# Too small a learning rate is trivial
# ----------------------------------------------------------------------------------------


def test_too_small_lr_is_trivial():
    # muP with c = 1/2: r = min(1, 3/2) + 1/2 - 1 + 0 = 1/2; a+b+r = 3/2; 2a+c = 3/2.
    cl = classify(abc([-H, 0, H], [H, H, H], H))
    assert cl.stable and not cl.nontrivial
    assert cl.regime == "trivial"
    assert cl.r == H
    assert cl.readout_abr == F(3, 2) and cl.readout_2ac == F(3, 2)
    assert not cl.initialized_maximally and not cl.updated_maximally
    assert not cl.feature_learning and not cl.kernel and not cl.nngp
    assert cl.feature_learning_layers == () and cl.contributing_layers == ()
    # NTP with c = 1/2, L = 2: r = min(1/2, 3/2) + 1/2 - 1 + min(1, 1) = 1.
    cl = classify(abc([0, H, H], [0, 0, 0], H))
    assert cl.regime == "trivial" and cl.r == 1


def test_feature_learning_only_in_upper_layers():
    # L = 2, a = (-1/4, 0, 1/2), b = (1/4, 1/2, 1/2), c = 0:
    # r_1 = 1 + 0 - 1 + (-1/2 + 1) = 1/2, r_2 = 0 + 0 = 0, r = 0.
    cl = classify(abc([F(-1, 4), 0, H], [F(1, 4), H, H], 0))
    assert cl.regime == "feature learning"
    assert cl.r_layers == (H, F(0))
    assert cl.feature_learning_layers == (2,)
    assert cl.maximal_updates == (False, True, True)
    assert not cl.is_muP
    assert cl.equivalent_to == ()


# ----------------------------------------------------------------------------------------
# Symmetry [TP4 Eq. (5)]
# ----------------------------------------------------------------------------------------


def test_mf_equivalent_to_mup_for_one_hidden_layer():
    # MFP shifted by theta = -1/2 is muP (THEORY §4.3).
    shifted = MF().shifted(-0.5)
    assert shifted.a == (-H, H) and shifted.b == (H, H) and shifted.c == 0
    assert MF().equivalent(muP(1))
    assert muP(1).equivalent(MF())
    assert MF().canonical() == muP(1)  # equality ignores the name
    assert not muP(2).equivalent(NTK(2))
    assert not muP(1).equivalent(muP(2))  # different depth
    assert not SP(2).equivalent(SP(2, c=1))
    assert classify(MF()).equivalent_to == ("muP", "MF", "UP_0")
    assert "muP" in classify(muP(3).shifted("2/7")).equivalent_to
    assert classify(NTK(2)).equivalent_to == ("NTK", "UP_1/2")
    assert classify(SP(3, c=1).shifted(0.25)).equivalent_to == ("SP(c=1)",)


def test_canonical_normal_form():
    for p in (muP(2), SP(3), NTK(1), MF(), SP(2, c=1), abc([1, 2], [3, 4], "5/3")):
        q = p.canonical()
        assert q.c == 0  # the documented normal form
        assert q.canonical() == q
        assert q.equivalent(p)
        assert q.name == p.name and q.init_std == p.init_std
    # muP, NTP and SP(c=0) are already canonical
    for p in (muP(3), NTK(3), SP(3)):
        assert p.canonical() == p
    # SP with c = 1 -> theta = 1/2: a = 1/2, b = (-1/2, 0, 0), c = 0
    q = SP(2, c=1).canonical()
    assert q.a == (H, H, H) and q.b == (-H, 0, 0) and q.c == 0


def test_shift_composition_and_values():
    p = abc([F(1, 3), 0, 2], [0, F(-1, 5), 1], F(7, 4))
    q = p.shifted(F(1, 6))
    assert q.a == (H, F(1, 6), F(13, 6))
    assert q.b == (F(-1, 6), F(-11, 30), F(5, 6))
    assert q.c == F(17, 12)
    assert p.shifted(F(1, 6)).shifted(F(-2, 3)) == p.shifted(-H)
    assert p.shifted(0) == p


@pytest.mark.parametrize(
    "param",
    [
        muP(1),
        muP(3),
        SP(2),
        SP(2, c=1),
        SP(1, c=1),
        NTK(3),
        MF(),
        abc([F(-1, 4), 0, H], [F(1, 4), H, H], 0),
        abc([-H, 0, H], [H, H, H], H),
        abc([0, 0], [0, "1/4"], 1),
    ],
    ids=repr,
)
def test_classification_invariant_under_symmetry(param):
    rng = np.random.default_rng(12345)
    ref = classify(param)
    fields = [f.name for f in dataclasses.fields(Classification) if f.name != "param"]
    thetas = [F(int(rng.integers(-40, 41)), int(rng.integers(1, 13))) for _ in range(15)]
    thetas += [float(x) for x in rng.uniform(-3, 3, size=5)]
    for theta in thetas:
        shifted = param.shifted(theta)
        assert shifted.equivalent(param)
        got = classify(shifted)
        for name in fields:
            assert getattr(got, name) == getattr(ref, name), (theta, name)


# ----------------------------------------------------------------------------------------
# Uniform parametrizations UP_r [TP4 Thm G.4]
# ----------------------------------------------------------------------------------------


def _up(r: F, depth: int) -> ABC:
    # a_l = -1/2 * 1(l=1) + r (l <= L), a_{L+1} = 1/2, b_l = 1/2 - r, c = 0.
    a = [r - H] + [r] * (depth - 1) + [H]
    return abc(a, [H - r] * (depth + 1), 0)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("r", [F(0), F(1, 4), F(1, 2)])
def test_uniform_parametrizations(r, depth):
    cl = classify(_up(r, depth))
    # hand computation: a+b = 1 - r, 2a+c = 1, r_l = r for every l <= L.
    assert cl.r == r
    assert cl.r_layers == (r,) * depth
    assert cl.readout_ab == 1 - r and cl.readout_2ac == 1 and cl.readout_abr == 1
    assert cl.stable and cl.nontrivial
    assert cl.initialized_maximally and cl.updated_maximally
    assert cl.feature_learning is (r == 0)
    assert cl.kernel is (r > 0)
    assert not cl.nngp
    assert cl.regime == ("feature learning" if r == 0 else "kernel")
    assert f"UP_{r}" in cl.equivalent_to
    assert _up(r, depth).equivalent(muP(depth)) is (r == 0)
    assert _up(r, depth).equivalent(NTK(depth)) is (r == H)


def test_up_beyond_half_is_unstable():
    # r = 3/4: a_{L+1}+b_{L+1} = 1/4 < 1/2 (the edge of the polyhedron ends at 1/2).
    cl = classify(_up(F(3, 4), 2))
    assert not cl.stable
    assert cl.conditions["a_{L+1}+b_{L+1}>=1/2"] is False


def test_mup_unique_maximal_parametrization():
    # [TP4 Thm 5.6], brute force over canonical (c = 0) representatives, L = 2,
    # exponents in {-1/2, 0, 1/2, 1}.
    grid = [-H, F(0), H, F(1)]
    found = []
    for a1, a2, a3, b1, b2, b3 in itertools.product(grid, repeat=6):
        p = abc([a1, a2, a3], [b1, b2, b3], 0)
        cl = classify(p)
        if cl.stable and all(cl.maximal_updates) and cl.initialized_maximally:
            found.append(p)
    assert found == [muP(2)]


# ----------------------------------------------------------------------------------------
# Construction, conversion, printing
# ----------------------------------------------------------------------------------------


def test_exact_conversion_of_exponents():
    p = abc([0.5, "1/3", F(2, 7), np.int64(1)], [1 / 3, "-0.25", np.float32(0.1), -2], "3/2")
    assert p.a == (H, F(1, 3), F(2, 7), F(1))
    assert p.b == (F(1, 3), F(-1, 4), F(1, 10), F(-2))
    assert p.c == F(3, 2)
    assert all(isinstance(x, F) for x in p.a + p.b + (p.c,))
    assert abc(np.array([-0.5, 0.5]), (0.5, 0.5), 0) == muP(1)


def test_repr_and_constructors():
    assert repr(muP(2)) == "ABC(name='muP', a=(-1/2, 0, 1/2), b=(1/2, 1/2, 1/2), c=0)"
    assert repr(MF()) == "ABC(name='MF', a=(0, 1), b=(0, 0), c=-1)"
    assert repr(abc([0, 0], [0, H], 1)) == "ABC(a=(0, 0), b=(0, 1/2), c=1)"
    assert "init_std=(1.0, 2.0)" in repr(muP(1, init_std=[1, 2]))
    assert SP(2).name == "SP" and NTK(2).name == "NTK" and MF().name == "MF"
    assert muP(2).depth == 2 and MF().depth == 1
    cl = classify(muP(2))
    assert "r=0" in repr(cl) and "feature learning" in repr(cl)
    assert repr(classify(SP(2, c=1))).count("r=1/2") == 1


def test_init_std():
    assert muP(2).init_std == (1.0, 1.0, 1.0)
    assert muP(2, init_std=2).init_std == (2.0, 2.0, 2.0)
    assert SP(1, init_std=[0.5, 3]).init_std == (0.5, 3.0)
    assert NTK(1, init_std=(1, 2)).init_std == (1.0, 2.0)
    assert MF(init_std=[2, 3]).init_std == (2.0, 3.0)
    # constants change equality but not the symmetry class or the classification
    p, q = muP(2), muP(2, init_std=[1, 2, 1])
    assert p != q and p.equivalent(q)
    assert classify(p).regime == classify(q).regime
    assert q.shifted(1).init_std == (1.0, 2.0, 1.0)


def test_equality_hash_frozen():
    assert muP(2) == abc([-H, 0, H], [H, H, H], 0)  # the name is not compared
    assert hash(muP(2)) == hash(abc([-H, 0, H], [H, H, H], 0))
    assert len({muP(2), muP(2).shifted(0), NTK(2)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        muP(2).c = F(1)  # type: ignore[misc]
    hash(classify(muP(2)))  # a Classification is hashable


def test_explain_words_and_numbers():
    text = classify(muP(2)).explain()
    assert "stable: yes (all six conditions" in text
    assert "r = 0" in text and "feature learning" in text
    assert "initialized maximally: yes" in text and "updated maximally: yes" in text
    assert "this is μP (unique, Thm 5.6)" in text
    assert str(classify(muP(2))) == text

    text = classify(MF()).explain()
    assert "MFP" in text and "μP" in text and "θ = -1/2" in text

    text = classify(SP(2)).explain()
    assert "stable: no (3 of the six conditions" in text
    assert "[FAIL] r>=0" in text and "(r = -1)" in text
    assert "regime: unstable" in text

    text = classify(SP(1, c=1)).explain()
    assert "r = 3/2" in text and "NNGP" in text

    text = classify(NTK(2)).explain()
    assert "kernel (r = 1/2 > 0" in text and "NTP" in text

    text = classify(abc([-H, 0, H], [H, H, H], H)).explain()
    assert "regime: trivial" in text


def test_scalings():
    sc = scalings(muP(2, init_std=[1.0, 2.0, 3.0]))
    assert len(sc) == 3 and all(isinstance(s, LayerScaling) for s in sc)
    assert [s.layer for s in sc] == [1, 2, 3]
    assert [s.shape for s in sc] == [("n", "d"), ("n", "n"), ("1", "n")]
    assert [s.a for s in sc] == [-H, F(0), H]
    assert [s.init_std_exponent for s in sc] == [-H, -H, -H]
    assert [s.b for s in sc] == [H, H, H]
    assert [s.lr_exponent for s in sc] == [0, 0, 0]
    assert [s.init_std for s in sc] == [1.0, 2.0, 3.0]
    n = 400
    assert math.isclose(sc[0].multiplier(n), 20.0)  # n^{1/2}
    assert math.isclose(sc[2].multiplier(n), 0.05)  # n^{-1/2}
    assert math.isclose(sc[1].std(n), 2.0 / 20.0)  # 2 n^{-1/2}
    assert math.isclose(sc[1].learning_rate(0.3, n), 0.3)
    sp = scalings(SP(3, c=1))
    assert [s.lr_exponent for s in sp] == [-1] * 4
    assert math.isclose(sp[0].learning_rate(1.0, n), 1 / 400)
    assert [s.init_std_exponent for s in sp] == [0, -H, -H, -H]
    assert [s.a for s in scalings(MF())] == [0, 1]
    assert [s.lr_exponent for s in scalings(MF())] == [1, 1]


# ----------------------------------------------------------------------------------------
# Bad input: the right exception, and a message naming the argument
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(a=[0, 0, 0], b=[0, H], c=0), ProgramValueError, ["a and b", "len(a) = 3"]),
        (dict(a=[0], b=[0], c=0), ProgramValueError, ["length L+1 >= 2"]),
        (dict(a=[0, 0], b=[0, float("nan")], c=0), ProgramValueError, ["b[1]", "finite"]),
        (dict(a=[0, math.inf], b=[0, 0], c=0), ProgramValueError, ["a[1]", "finite"]),
        (dict(a=[0, 0], b=[0, H], c=float("nan")), ProgramValueError, ["c ", "finite"]),
        (dict(a=[0, 0], b=[0, "x/2"], c=0), ProgramValueError, ["b[1]", "'x/2'"]),
        (dict(a=[0, 0], b=[0, "1/0"], c=0), ProgramValueError, ["b[1]"]),
        (dict(a=3, b=[0, H], c=0), ProgramTypeError, ["a must be a sequence"]),
        (dict(a="0,0", b=[0, H], c=0), ProgramTypeError, ["a must be a sequence"]),
        (dict(a=[0, None], b=[0, H], c=0), ProgramTypeError, ["a[1]", "NoneType"]),
        (dict(a=[True, 0], b=[0, H], c=0), ProgramTypeError, ["a[0]", "boolean"]),
        (dict(a=[0, 0], b=[0, H], c=[0, 1]), ProgramTypeError, ["c must be a single"]),
        (dict(a=[0, 0], b=[0, H], c=object()), ProgramTypeError, ["c must be"]),
        (dict(a=np.zeros((2, 2)), b=[0, H], c=0), ProgramValueError, ["a must be", "(2, 2)"]),
        (dict(a=[0, 0], b=[0, H], c=0, name=3), ProgramTypeError, ["name"]),
        (dict(a=[0, 0], b=[0, H], c=0, init_std=[1.0]), ProgramValueError, ["init_std", "L+1 = 2"]),
        (dict(a=[0, 0], b=[0, H], c=0, init_std=[1.0, -1.0]), ProgramValueError, ["init_std[1]", "positive"]),
        (dict(a=[0, 0], b=[0, H], c=0, init_std=0.0), ProgramValueError, ["init_std", "positive"]),
        (dict(a=[0, 0], b=[0, H], c=0, init_std=["1", 1]), ProgramTypeError, ["init_std[0]"]),
    ],
)  # fmt: skip
def test_bad_inputs(kwargs, exc, words):
    for build in (abc, ABC):
        with pytest.raises(exc) as info:
            build(**kwargs)
        msg = str(info.value)
        for w in words:
            assert w in msg, (w, msg)
        assert "must" in msg  # says what would be valid


def test_bad_inputs_are_builtin_subclasses():
    with pytest.raises(ValueError):
        abc([0, 0, 0], [0, 0], 0)
    with pytest.raises(TypeError):
        abc(3, [0, 0], 0)


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: muP(0), ProgramValueError, "depth"),
        (lambda: muP(1.5), ProgramTypeError, "depth"),
        (lambda: SP(True), ProgramTypeError, "depth"),
        (lambda: NTK("2"), ProgramTypeError, "depth"),
        (lambda: SP(2, c=math.inf), ProgramValueError, "c "),
        (lambda: classify("muP"), ProgramTypeError, "param"),
        (lambda: classify((0, 0, 0)), ProgramTypeError, "param"),
        (lambda: scalings([0, 1]), ProgramTypeError, "param"),
        (lambda: muP(2).shifted(float("nan")), ProgramValueError, "theta"),
        (lambda: muP(2).shifted(None), ProgramTypeError, "theta"),
        (lambda: muP(2).equivalent("muP"), ProgramTypeError, "other"),
        (lambda: scalings(muP(1))[0].multiplier(-3), ProgramValueError, "n "),
    ],
)
def test_bad_calls(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_numpy_depth_accepted():
    assert muP(np.int64(2)) == muP(2)
