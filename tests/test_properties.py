"""Property-based conformance: random well-formed programs, three ways to their limit.

Hypothesis draws programs with several matrices (and their transposes), initial vectors
with random PSD covariances (singular ones included, and nonzero means), polynomial /
tanh / relu nonlinearities, products and linear combinations, and Moments feeding
Nonlin+. For each program:

* the deterministic limit (``method="auto"`` wherever it used exact forms or
  quadrature) agrees with an independent Monte Carlo run within 5 of its standard
  errors (Student t with 15 degrees of freedom: P(|t| > 5) ≈ 2e-4 per scalar);
* finite-width simulations approach it: at n = 1024 the mean over seeds is within
  6 standard errors of the limit plus a quarter of the deviation measured at n = 256
  (a ``b/n`` finite-size bias shrinks by 4 from 256 to 1024; a wrong limit would not);
* the program survives ``save``/``load`` with the same printout and the same limit.

Profiles (tests/conftest.py): ``ci`` (default) is derandomized with ~25 examples;
``HYPOTHESIS_PROFILE=dev`` runs many random ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import tensorprog as tp
from tensorprog import io as tio

# ------------------------------------------------------------------------ strategy

ENTRY = st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0])
VAR = st.sampled_from([0.5, 1.0, 2.0])


@st.composite
def program_specs(draw):
    """A program as plain data (printed by hypothesis on failure; see ``build``)."""
    n_mat = draw(st.integers(1, 3))
    mats = [draw(VAR) for _ in range(n_mat)]
    B = draw(st.integers(1, 3))
    L = np.zeros((B, B))
    for i in range(B):
        for j in range(i):
            L[i, j] = draw(ENTRY)
        L[i, i] = draw(st.sampled_from([0.0, 0.5, 1.0, 1.0]))
    cov = (L @ L.T).tolist()
    means = [draw(st.sampled_from([0.0, 0.0, 0.0, 0.5])) for _ in range(B)]
    # per vector: polynomial "degree" (growth), to keep moments' tails tame
    deg = [1] * B
    ops = []
    for _ in range(draw(st.integers(2, 6))):
        nv = len(deg)
        i = draw(st.integers(0, nv - 1))
        kind = draw(
            st.sampled_from(
                ["matmul", "matmul", "matmul", "act", "act", "poly", "mul", "lin", "plus"]
            )
        )
        if kind == "matmul":
            ops.append(("matmul", draw(st.integers(0, n_mat - 1)), draw(st.booleans()), i))
            deg.append(deg[i])
        elif kind == "act":
            name = draw(st.sampled_from(["tanh", "relu"]))
            ops.append(("act", name, i))
            deg.append(0 if name == "tanh" else deg[i])
        elif kind == "poly" and deg[i] <= 1:
            ops.append(("poly", draw(ENTRY), draw(st.sampled_from([0.5, 1.0])), i))
            deg.append(2 * deg[i])
        elif kind == "mul":
            j = draw(st.integers(0, nv - 1))
            if deg[i] + deg[j] > 2:
                continue
            ops.append(("mul", i, j))
            deg.append(deg[i] + deg[j])
        elif kind == "lin":
            j = draw(st.integers(0, nv - 1))
            ops.append(("lin", draw(ENTRY), i, draw(st.sampled_from([1.0, -1.0])), j))
            deg.append(max(deg[i], deg[j]))
        elif kind == "plus":
            # a Moment of one vector feeding a Nonlin+ of another
            j = draw(st.integers(0, nv - 1))
            form = draw(st.sampled_from(["scale", "normalise", "tanh"]))
            if deg[j] > 2:
                continue
            ops.append(("plus", form, i, j))
            deg.append(deg[i] if form != "tanh" else 0)
    nv = len(deg)
    outs = [("sq", nv - 1)]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["sq", "inner", "tanh"]))
        i = draw(st.integers(0, nv - 1))
        if kind == "inner":
            outs.append(("inner", i, draw(st.integers(0, nv - 1))))
        else:
            outs.append((kind, i))
    outs = [o for o in dict.fromkeys(outs) if _out_deg(o, deg) <= 4]
    return {"mats": mats, "cov": cov, "means": means, "ops": ops, "outs": outs}


def _out_deg(o, deg):
    if o[0] == "sq":
        return 2 * deg[o[1]]
    if o[0] == "inner":
        return deg[o[1]] + deg[o[2]]
    return 0


def build(spec) -> tp.Program:
    p = tp.Program("random")
    Ws = [p.matrix(f"W{i}", var=v) for i, v in enumerate(spec["mats"])]
    vs = list(p.vectors("x", cov=spec["cov"], mean=spec["means"]))
    for op in spec["ops"]:
        kind = op[0]
        if kind == "matmul":
            _, w, t, i = op
            vs.append((Ws[w].T if t else Ws[w]) @ vs[i])
        elif kind == "act":
            vs.append({"tanh": tp.tanh, "relu": tp.relu}[op[1]](vs[op[2]]))
        elif kind == "poly":
            _, a, b, i = op
            vs.append(a * vs[i] + b * vs[i] ** 2)
        elif kind == "mul":
            vs.append(vs[op[1]] * vs[op[2]])
        elif kind == "lin":
            _, a, i, b, j = op
            vs.append(a * vs[i] + b * vs[j])
        elif kind == "plus":
            _, form, i, j = op
            if form == "scale":
                s = tp.mean(vs[j] * vs[j])
                vs.append(vs[i] * s)
            elif form == "normalise":  # LayerNorm-like: x / √(mean x² + 1/2)
                s = tp.sqrt(tp.mean(vs[j] * vs[j]) + 0.5)
                vs.append(vs[i] / s)
            else:
                s = tp.mean(tp.tanh(vs[j]))
                vs.append(tp.tanh(vs[i] + s))
    for k, o in enumerate(spec["outs"]):
        if o[0] == "sq":
            tp.mean(vs[o[1]] * vs[o[1]], name=f"out{k}")
        elif o[0] == "inner":
            tp.inner(vs[o[1]], vs[o[2]], name=f"out{k}")
        else:
            tp.mean(tp.tanh(vs[o[1]]), name=f"out{k}")
    return p


def outputs(p):
    return [i.out.name for i in p if i.out.name.startswith("out")]


# --------------------------------------------------------------------------- tests

MC_SAMPLES = 64_000
MC_Z = 5.0


@given(program_specs())
def test_deterministic_limit_agrees_with_montecarlo(spec):
    p = build(spec)
    note(str(p))
    lim = p.limit()
    mc = p.limit(method="montecarlo", samples=MC_SAMPLES, seed=0)
    for name in outputs(p):
        if lim.method(name) == "montecarlo":
            continue  # auto was itself Monte Carlo here: nothing deterministic to check
        val, est, se = lim[name], mc[name], mc.stderr(name)
        note(f"{name}: {lim.method(name)} {val!r}, montecarlo {est!r} ± {se!r}")
        assert abs(est - val) <= MC_Z * se + 1e-9 * (1 + abs(val)) + lim.error(name), name


SEEDS = 8
WIDTHS = (256, 1024)


@given(program_specs())
def test_finite_width_approaches_the_limit(spec):
    p = build(spec)
    note(str(p))
    lim = p.limit(samples=MC_SAMPLES, seed=1)
    sims = {n: [p.simulate(n, seed=s) for s in range(SEEDS)] for n in WIDTHS}
    for name in outputs(p):
        target = lim[name]
        dev, se = {}, {}
        for n in WIDTHS:
            v = np.array([s[name] for s in sims[n]])
            dev[n] = v.mean() - target
            se[n] = v.std(ddof=1) / math.sqrt(SEEDS)
        slack = 1e-9 * (1 + abs(target)) + 6 * lim.stderr(name) + lim.error(name)
        small, large = WIDTHS
        note(f"{name} = {target!r} [{lim.method(name)}]: deviation {dev} ± {se}")
        bound = 6 * se[large] + (abs(dev[small]) + 6 * se[small]) * small / large + slack
        assert abs(dev[large]) <= bound, name


@given(program_specs())
def test_save_load_roundtrip(spec):
    p = build(spec)
    q = tio.loads(tio.dumps(p))
    assert str(q) == str(p)
    a, b = p.limit(samples=4000, seed=2), q.limit(samples=4000, seed=2)
    assert a.values == b.values
    assert [a.method(k) for k in a.values] == [b.method(k) for k in b.values]


def test_strategy_covers_the_intended_features():
    """The generated programs do use every feature (checked on a fixed sample)."""
    from hypothesis import Phase, find, settings

    def has(pred):
        return find(
            program_specs(),
            pred,
            settings=settings(
                max_examples=2000, database=None, derandomize=True, phases=[Phase.generate]
            ),
        )

    assert has(lambda s: any(o[0] == "matmul" and o[2] for o in s["ops"]))  # transposes
    assert has(
        lambda s: len(s["mats"]) >= 2 and len({o[1] for o in s["ops"] if o[0] == "matmul"}) >= 2
    )
    assert has(lambda s: any(o[0] == "plus" for o in s["ops"]))  # Moments feeding Nonlin+
    assert has(lambda s: any(o[0] == "poly" for o in s["ops"]))
    assert has(lambda s: any(o[0] == "act" and o[1] == "relu" for o in s["ops"]))
    assert has(lambda s: np.linalg.matrix_rank(np.array(s["cov"])) < len(s["cov"]))  # singular
    assert has(lambda s: any(m != 0 for m in s["means"]))
    for spec in [has(lambda s: any(o[0] == "plus" for o in s["ops"]))]:
        build(spec).check()


@pytest.mark.parametrize("profile", ["ci", "dev"])
def test_profiles_are_registered(profile):
    from hypothesis import settings

    s = settings.get_profile(profile)
    assert s.deadline is None
    if profile == "ci":
        assert s.derandomize and s.max_examples <= 30
