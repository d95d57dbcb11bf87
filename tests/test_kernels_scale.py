"""Compile once, evaluate many (``tp.compile_limit``) and kernels entry by entry.

A compiled limit must give what ``Program.limit`` gives on a program with the same
instructions and the new numbers (the same evaluators on the same laws: equal to
rounding), checked here against programs rebuilt with those numbers and against closed
forms written in the test; kernels computed entry by entry must equal the whole-batch
program's limit, block sizes must not change a bit, and the memory guard and input
checks must name what to change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorprog as tp
from tensorprog.nn import stax
from tensorprog.nn.kernels import kernels


def _relu_pair(cov: np.ndarray) -> np.ndarray:
    """Program: two correlated initial vectors, 𝔼[relu(u) relu(v)] and 𝔼[tanh(u)²]."""
    p = tp.Program("pair")
    u, v = p.vectors("h", cov=cov)
    tp.inner(tp.relu(u), tp.relu(v), name="k")
    tp.mean(tp.tanh(u) ** 2, name="t")
    return p


def test_compiled_equals_limit_for_new_covariances():
    """Batch of covariances: each set equals the limit of the program rebuilt with it,
    and the relu entry equals the arc-cosine closed form (Cho & Saul 2009):
    ``𝔼 relu(u) relu(v) = s (sin θ + (π − θ) cos θ) / (2π)``."""
    p = _relu_pair([[1.0, 0.3], [0.3, 2.0]])
    c = tp.compile_limit(p)
    covs = np.array(
        [
            [[a, r * math.sqrt(a * b)], [r * math.sqrt(a * b), b]]
            for a, b, r in [(1.0, 2.0, 0.3), (0.5, 3.0, -0.9), (2.5, 0.7, 0.0), (1.0, 1.0, 1.0)]
        ]
    )
    batch = c.evaluate(cov=covs)
    assert batch.size == 4 and batch.method("k") == "exact" and batch.method("t") == "quadrature"
    for i, cov in enumerate(covs):
        ref = _relu_pair(cov).limit()
        for name in ("k", "t"):
            assert abs(batch[name][i] - ref[name]) <= 1e-12 * max(1.0, abs(ref[name]))
        s = math.sqrt(cov[0, 0] * cov[1, 1])
        th = math.acos(max(-1.0, min(1.0, cov[0, 1] / s)))
        arc = s * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
        assert abs(batch["k"][i] - arc) <= 1e-13 * s
    # without a batch axis: floats, and the program's own numbers by default
    assert c.evaluate()["k"] == p.limit()["k"]


def test_compiled_with_scalars_matrices_and_zdot():
    """``x = Aᵀ(A·tanh(c·v))``: a hat covariance, a ZDot term [TP4 Eq. (31)], a Nonlin
    with an initial scalar ``c`` and a Moment scaled by the scalar ``d``; new ``c``,
    ``d`` and variance of ``v`` per set equal the rebuilt program's limit."""

    def build(var: float, c0: float, d0: float) -> tp.Program:
        p = tp.Program("AtA")
        A, v = p.matrix("A", var=1.5), p.vector("v", var=var)
        c, d = p.scalar("c", c0), p.scalar("d", d0)
        y = tp.tanh(v * c)
        x = A.T @ (A @ y)
        k = tp.inner(y, x, name="k")
        tp.mean(tp.tanh(x) ** 2, name="m")
        _ = k * d
        return p

    p = build(1.0, 0.7, 2.0)
    comp = tp.compile_limit(p)
    sets = [(1.0, 0.7, 2.0), (0.4, -1.3, 0.5), (2.2, 0.2, -3.0)]
    batch = comp.evaluate(
        cov=np.array([[[s[0]]] for s in sets]),
        scalars={"c": np.array([s[1] for s in sets]), p["d"]: np.array([s[2] for s in sets])},
    )
    names = [n for n in batch.values if n not in ("c", "d")]
    assert len(names) >= 3
    for i, s in enumerate(sets):
        ref = build(*s).limit()
        for n in names:
            assert abs(batch[n][i] - ref[n]) <= 1e-12 * max(1.0, abs(ref[n])), n
            assert batch.method(n) == ref.method(n)


def test_kernels_entry_by_entry_equal_the_whole_program():
    """relu (exact) and tanh (quadrature), symmetric and cross: to ≤ 1e-12 of the one
    program holding every entry, with the same methods and error estimates."""
    X = np.random.default_rng(0).standard_normal((5, 3))
    for nonlin, depth in (("relu", 3), ("tanh", 1)):
        a = kernels(X, depth=depth, nonlin=nonlin, W_std=1.4, b_std=0.2, return_info=True)
        b = kernels(
            X, depth=depth, nonlin=nonlin, W_std=1.4, b_std=0.2, return_info=True, pairwise=False
        )
        for kind in ("nngp", "ntk"):
            np.testing.assert_allclose(getattr(a, kind), getattr(b, kind), rtol=1e-12, atol=0)
            assert np.array_equal(a.method[kind], b.method[kind])
            np.testing.assert_allclose(a.error[kind], b.error[kind], rtol=1e-6, atol=1e-15)
        cross = kernels(X[:2], X[2:], depth=depth, nonlin=nonlin, W_std=1.4, b_std=0.2)
        np.testing.assert_allclose(cross[1], b.ntk[:2, 2:], rtol=1e-12, atol=0)


def test_batch_size_blocks_give_identical_bits():
    X = np.random.default_rng(1).standard_normal((9, 4))
    net = stax.serial(stax.Dense(1.3, 0.1), stax.Erf(), stax.Dense(1.3, 0.1))
    whole = net.kernel_fn(X, batch_size=1000)
    for size in (1, 4, 7):
        blocks = net.kernel_fn(X, batch_size=size)
        assert np.array_equal(blocks.nngp, whole.nngp) and np.array_equal(blocks.ntk, whole.ntk)
    cross = [net.kernel_fn(X[:4], X[4:], get="ntk", batch_size=s) for s in (3, 100)]
    assert np.array_equal(cross[0], cross[1])
    np.testing.assert_allclose(cross[0], whole.ntk[:4, 4:], rtol=1e-13, atol=0)


def test_repeated_call_reuses_the_compiled_program():
    X = np.random.default_rng(2).standard_normal((4, 3))
    net = stax.serial(stax.Dense(1.1), stax.Relu(), stax.Dense(1.1))
    net.kernel_fn(X)
    cached = {k: v for k, v in stax._COMPILED.items() if k[0] is net}
    assert len(cached) == 1  # the two-input entry program, with its diagonal entries
    net.kernel_fn(2 * X[:3])
    assert {k: v for k, v in stax._COMPILED.items() if k[0] is net} == cached


def test_memory_guard_names_the_knob(monkeypatch):
    """The kernels and one block of entries are estimated before anything is allocated:
    too little memory names ``X`` by default and ``batch_size`` when it is given."""
    import tensorprog.core._resources as res

    X = np.random.default_rng(3).standard_normal((6, 2))
    kernels(X, depth=4)
    (pw,) = [v for k, v in stax._COMPILED.items() if k[0] == ("mlp", 4, tp.relu, 1.0, 0.0) and k[1]]
    entry = stax._BYTES_PER_ENTRY_REQUEST * pw.compiled.requests + 8 * pw.cov.size
    budget = res.MemoryBudget(3 * entry + 2 * 8 * 36, "a test budget")
    monkeypatch.setattr(res, "memory_budget", lambda: budget)
    with pytest.raises(tp.ResourceError, match="smaller batch_size") as e:
        kernels(X, depth=4)
    assert e.value.knob == "X"
    nngp, _ = kernels(X, depth=4, batch_size=2)  # small blocks fit
    assert nngp.shape == (6, 6)
    with pytest.raises(tp.ResourceError, match="batch_size=4") as e:
        kernels(X, depth=4, batch_size=4)
    assert e.value.knob == "batch_size"


def test_bad_inputs_raise_named_errors(monkeypatch):
    p = _relu_pair([[1.0, 0.3], [0.3, 2.0]])
    c = tp.compile_limit(p)
    bad = [
        (dict(cov=np.eye(3)), tp.ProgramValueError, "shape"),
        (dict(cov=[[1.0, 0.2], [0.3, 1.0]]), tp.ProgramValueError, "symmetric"),
        (dict(cov=[[1.0, 2.0], [2.0, 1.0]]), tp.NonPSDError, "positive semidefinite"),
        (dict(cov="abc"), tp.ProgramTypeError, "real numbers"),
        (dict(cov=[[np.nan, 0], [0, 1]]), tp.ProgramValueError, "finite"),
        (dict(mean=[0.0, 1.0]), tp.ProgramValueError, "centred"),
        (dict(scalars={"k": 1.0}), tp.ProgramValueError, "not an initial scalar"),
        (dict(scalars=[1.0]), tp.ProgramTypeError, "dict"),
        (
            dict(cov=np.stack([np.eye(2)] * 2), mean=np.zeros((3, 2))),
            tp.ProgramValueError,
            "batch axes",
        ),
    ]
    for kw, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            c.evaluate(**kw)
    q = tp.Program("indep")
    x, y = q.vector("x"), q.vector("y")
    tp.inner(tp.relu(x), tp.relu(y), name="k")
    with pytest.raises(tp.ProgramValueError, match=r"cov\[x, y\] must be 0"):
        tp.compile_limit(q).evaluate(cov=[[1.0, 0.5], [0.5, 1.0]])
    with pytest.raises(tp.ProgramValueError, match="method"):
        tp.compile_limit(p, "montecarlo")
    with pytest.raises(tp.ProgramTypeError, match="Program"):
        tp.compile_limit("p")
    with pytest.raises(tp.ProgramValueError, match="uncertified"):
        c.evaluate(uncertified="ignore")
    # a set that quadrature does not certify: refused by name, or NaN on request
    import tensorprog.engine.evaluate as ev

    monkeypatch.setattr(ev, "QUADRATURE_RTOL", 0.0)
    with pytest.raises(tp.MethodUnavailableError, match="set 0 .* tensorprog.limit"):
        c.evaluate()
    b = c.evaluate(uncertified="nan")
    assert math.isnan(b["t"]) and list(b.uncertified) == [0]
    X = np.ones((2, 2))
    for kw, exc in (
        (dict(batch_size=0), tp.ProgramValueError),
        (dict(pairwise=1), tp.ProgramTypeError),
    ):
        with pytest.raises(exc, match=next(iter(kw))):
            kernels(X, depth=1, **kw)
    with pytest.raises(tp.ProgramValueError, match="samples"):
        kernels(X, depth=1, samples=-1)


def _groups(compiled: tp.CompiledLimit) -> list:
    """The groups of a compiled limit's schedule (merged ones one by one)."""
    steps = [g for s in compiled._steps for g in getattr(s, "parts", [s])]
    return [s for s in steps if hasattr(s, "fused")]


@pytest.mark.parametrize(
    "nonlin, depth, W_std, b_std",
    [("relu", 3, 1.4, 0.2), ("relu", 2, 1.2, 0.0), ("erf", 2, 1.3, 0.1), ("tanh", 1, 1.4, 0.2)],
)
def test_fused_groups_equal_the_general_path(monkeypatch, nonlin, depth, W_std, b_std):
    """Exact groups whose evaluator reads covariance entries only are evaluated from
    entries gathered straight from the numbers (``compiled._Fused``): the same bits as
    the general path (gather the laws, screen them, evaluate), and ≤ 1e-12 of the whole
    program's limit (``Program.limit``, another evaluator). The inputs have a repeated
    row (correlation 1), an opposite one and, without bias, a zero row (variance 0)."""
    from tensorprog.engine import compiled

    X = np.random.default_rng(4).standard_normal((6, 3))
    X[3], X[4], X[5] = X[1], -X[2], 0.0
    kw = dict(depth=depth, nonlin=nonlin, W_std=W_std, b_std=b_std)
    fused = kernels(X, **kw)
    cross = kernels(X[:2], X[2:], **kw)
    (entry,) = [
        v
        for (arch, kind, *_), v in stax._COMPILED.items()
        if kind == "both"
        and isinstance(arch, tuple)
        and arch[:2] == ("mlp", depth)
        and arch[2].name == nonlin
        and arch[3:] == (W_std, b_std)
    ]
    groups = _groups(entry.compiled)
    unfused = [g for g in groups if g.fused is None]
    # closed forms (relu, erf) and the input kernel's Gaussian moments (level 0:
    # ⟨h_0, h_1⟩, ⟨h_0, h_0⟩, ⟨h_1, h_1⟩) are fused; tanh's quadrature is not
    fused_levels = {g.reqs[0].level for g in groups if g.fused is not None}
    assert not unfused if nonlin != "tanh" else unfused and fused_levels == {0}
    monkeypatch.setattr(compiled, "plainly_psd", lambda *a: False)  # every group: general
    general = kernels(X, **kw)
    cross_general = kernels(X[:2], X[2:], **kw)
    whole = kernels(X, pairwise=False, **kw)
    for a, b, w in zip(fused, general, whole):
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-15)
    for a, b in zip(cross, cross_general):
        assert np.array_equal(a, b)


def test_fused_batch_sizes_and_overflow_fall_back_by_name():
    """Fused blocks are bit-identical across batch sizes (relu, erf with biases), and
    an overflowing law leaves the fused path for the general one, which names it."""
    X = np.random.default_rng(5).standard_normal((7, 4))
    for nonlin in ("relu", "erf"):
        kw = dict(depth=3, nonlin=nonlin, W_std=1.5, b_std=0.1)
        ref = kernels(X, batch_size=10_000, **kw)
        for size in (1, 9):
            got = kernels(X, batch_size=size, **kw)
            assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    # a block of more than 512 entries: whether sorting can share values is first judged
    # on a sample of its rows (compiled._unique_rows); shared or not, the same bits
    X = np.random.default_rng(6).standard_normal((40, 3))
    ref = kernels(X, depth=2, W_std=1.5, b_std=0.1, batch_size=10_000)
    got = kernels(X, depth=2, W_std=1.5, b_std=0.1, batch_size=64)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    with pytest.raises(tp.NumericalError, match="relu_relu: k11, k12, k22 must be finite"):
        kernels(np.ones((3, 2)), depth=4, W_std=1e80)


def test_diagonal_and_merged_groups_equal_the_separate_programs(monkeypatch):
    """The repeated-call path (issue 19): the diagonal entries come from the two-input
    entry program (kind "both") and fused groups differing only by footprint run as one
    call (``compiled._Merged``). Against the separate evaluations — every diagonal entry
    from the one-input program (a kernel of one input), every group on its own (merging
    switched off, entry programs recompiled) — the same bits; batch sizes change none."""
    from tensorprog.engine import compiled

    X = np.random.default_rng(7).standard_normal((7, 5))
    X[6] = X[2]  # a repeated input: the per-input requests share their values
    for nonlin, depth in (("relu", 10), ("erf", 3)):
        kw = dict(depth=depth, nonlin=nonlin, W_std=1.5, b_std=0.1)
        ref = kernels(X, **kw)
        entry = [v for (a, kind, *_), v in stax._COMPILED.items() if kind == "both"][-1]
        assert any(isinstance(s, compiled._Merged) for s in entry.compiled._steps)
        for i in range(len(X)):
            one = kernels(X[i : i + 1], **kw)
            assert all(np.array_equal(k[i, i], o[0, 0]) for k, o in zip(ref, one))
        for size in (1, 4):
            got = kernels(X, batch_size=size, **kw)
            assert all(np.array_equal(a, b) for a, b in zip(got, ref))
        with monkeypatch.context() as m:
            m.setattr(compiled, "_merge", lambda groups: groups)
            m.setattr(stax, "_COMPILED", type(stax._COMPILED)())
            apart = kernels(X, **kw)
            entry = next(v for (a, kind, *_), v in stax._COMPILED.items() if kind == "both")
            assert not any(isinstance(s, compiled._Merged) for s in entry.compiled._steps)
        assert all(np.array_equal(a, b) for a, b in zip(apart, ref))


def test_uncertified_entry_redoes_its_diagonal(monkeypatch):
    """A set the compiled methods do not certify has NaN values — its off-diagonal entry
    and the two diagonal entries it carries (one block), or, with several blocks, an
    input's set ``(i, i)``, whose per-input requests every entry of ``i`` is given: those
    entries come from the whole-program limit of their inputs (``Program.limit``),
    equal to the compiled values to 1e-12."""
    from tensorprog.engine import compiled

    X = np.random.default_rng(8).standard_normal((3, 4))
    kw = dict(depth=2, nonlin="relu", W_std=1.5, b_std=0.1)
    ref = kernels(X, **kw)
    run = compiled.CompiledLimit._run

    def forced(self, C, M, Q, *a, **k):  # the last set: input 2's (2, 2), and entry (1, 2)
        V, E, bad = run(self, C, M, Q, *a, **k)
        return V, E, {**bad, C.shape[0] - 1: "forced"}

    monkeypatch.setattr(compiled.CompiledLimit, "_run", forced)
    got = kernels(X, **kw)
    for a, b in zip(got, ref):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    # several blocks: each input's own requests on the sets (i, i) first; the last input's
    # are not certified, so all its entries are redone, and each block's last entry
    split = kernels(X, batch_size=1, **kw)
    for a, b in zip(split, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    cross = kernels(X[:1], X[1:], batch_size=1, **kw)  # a cross-kernel has no diagonal
    for a, b in zip(cross, ref):
        np.testing.assert_allclose(a, b[:1, 1:], rtol=1e-12, atol=0)


def test_given_per_input_values_skip_their_steps_and_change_no_bit():
    """Many blocks (issue 19, erf at B = 1024): each input's own requests — the Moments of
    its forward and backward pass, which every entry (i, j) needs — are evaluated once,
    on the sets (i, i), and given to the entries (``CompiledLimit._run_built``); the
    steps computing only given requests are skipped. Every request's value is the one
    computed without them, bit for bit, and so are the kernels, whatever the blocks."""
    X = np.random.default_rng(9).standard_normal((12, 5))
    X[7] = X[3]
    kw = dict(depth=3, nonlin="erf", W_std=1.5, b_std=0.1)
    ref = kernels(X, batch_size=10_000, **kw)  # one block: nothing given
    entry = next(v for (a, kind, *_), v in stax._COMPILED.items() if kind == "both")
    cpl = entry.compiled
    assert len(entry.per_input) == 2 and all(len(r) for r in entry.per_input)
    rows, cols = np.triu_indices(len(X), 1)
    sq = np.einsum("ij,ij->i", X, X)
    V, E, bad = cpl._run_built(stax._entry_laws(entry, X, sq, rows, cols))
    idx = np.arange(len(X))
    Vd, _, _ = cpl._run_built(stax._entry_laws(entry, X, sq, idx, idx))
    given = [(r, Vd.T[r], None, at) for r, at in zip(entry.per_input, (rows, cols))]
    Vg, Eg, badg = cpl._run_built(stax._entry_laws(entry, X, sq, rows, cols), given)
    assert np.array_equal(V, Vg) and not bad and not badg
    assert len(cpl._without(np.concatenate(entry.per_input))) < len(cpl._steps)
    for size in (1, 5, 40):  # several blocks: the per-input values given
        got = kernels(X, batch_size=size, **kw)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref))


def test_input_cross_products_are_the_same_sums_in_every_block():
    """The input kernel's ``ξ_iᵀξ_j`` of a block (``stax._dots``: one product of its
    distinct rows and columns) equal the per-pair sums, bit for bit — whatever the
    block, and for a repeated input equal to ``ξ_iᵀξ_i`` (a correlation of exactly 1,
    which the arc-cosine and arcsine kernels need)."""
    rng = np.random.default_rng(10)
    X = rng.standard_normal((50, 32))
    X[9] = X[4]
    sq = np.einsum("ij,ij->i", X, X)
    rows, cols = np.triu_indices(50, 1)
    ref = np.einsum("pk,pk->p", X[rows], X[cols])
    for size in (7, 64, 1225):
        for a in range(0, len(rows), size):
            r, c = rows[a : a + size], cols[a : a + size]
            assert np.array_equal(stax._dots(X, sq, r, c), ref[a : a + size])
    assert stax._dots(X, sq, np.array([4]), np.array([9]))[0] == sq[4]
    perm = rng.permutation(len(rows))  # no few rows or columns: the per-pair sums
    assert np.array_equal(stax._dots(X, sq, rows[perm], cols[perm]), ref[perm])
