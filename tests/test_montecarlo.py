"""The replicate-batched Monte Carlo engine (``tensorprog.engine.montecarlo``).

A pass carries ``K`` replicates side by side (arrays of shape ``(K, M)``); how the
replicates are grouped into passes, and whether a replicate is cut into chunks, must
not change what each replicate computes. References here are either the same
replicates computed another way (one per pass, in chunks) or plain numpy/scalar
re-implementations written in this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorprog as tp
from tensorprog import nn
from tensorprog.engine.derivation import Derivation
from tensorprog.engine.evaluate import Deterministic
from tensorprog.engine.montecarlo import (
    MonteCarloPass,
    _bytes_per_sample,
    _factor_row,
    _regression,
    run_montecarlo,
)
from tensorprog.engine.plan import Plan


def relu_one_step():
    """One μP SGD step of a 2-hidden-layer relu net: Moments, linear updates, Stein Ż."""
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.muP(2))
    X = np.array([[1.0, 0.3], [-0.5, 1.0]])
    return nn.train_sgd(net, X, np.array([0.5, -0.3]), lr=1.0, steps=1).program


def tanh_Wt():
    """Wᵀ after W (a Ż term by the regression form, a non-product Moment)."""
    p = tp.Program("tanh_Wt")
    W = p.matrix("W", var=2.0)
    x = p.vector("x")
    h = W @ x
    g = W.T @ tp.tanh(h)
    tp.mean(g * x, name="gx")
    tp.mean(tp.tanh(g) ** 2, name="t2")
    return p


def planned(p):
    plan = Plan(Derivation(p), symbolic=False)
    Deterministic(plan, "montecarlo").run()
    return plan


@pytest.mark.parametrize("build", [relu_one_step, tanh_Wt], ids=lambda b: b.__name__)
@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_grouping_replicates_into_passes_changes_nothing(build, qmc):
    """16 replicates in one pass, one per pass, or 5 per pass: the same numbers.

    Every operation of a pass acts on each replicate's row (or matrix) on its own,
    and replicate r draws from its own stream, so the results are bitwise equal.
    """
    plan = planned(build())
    M = 512
    per_replicate = _bytes_per_sample(plan.der) * M
    runs = [run_montecarlo(plan, 16 * M, 7, qmc=qmc, max_memory=mm)
            for mm in (2**30, per_replicate, 5 * per_replicate + 1)]
    assert len(runs[0]) > 0
    for other in runs[1:]:
        assert other == runs[0]


@pytest.mark.parametrize("build", [relu_one_step, tanh_Wt], ids=lambda b: b.__name__)
def test_chunked_replicates_equal_whole_ones_on_the_same_points(build):
    """With QMC a chunk draws the same Sobol points as the whole replicate would, so
    chunks (accumulated sums, sweeps) reproduce the whole-replicate estimates up to
    the order of summation: sums over 1024 samples in 8 chunks of 128 instead of one
    pass, i.e. a few hundred ulps per estimate, which this short program propagates
    without amplification."""
    plan = planned(build())
    M = 1024
    per_sample = _bytes_per_sample(plan.der)
    whole = run_montecarlo(plan, 16 * M, 3, qmc=True)
    chunked = run_montecarlo(plan, 16 * M, 3, qmc=True, max_memory=128 * per_sample)
    assert whole.keys() == chunked.keys()
    for cid, (val, se) in whole.items():
        assert chunked[cid][0] == pytest.approx(val, rel=1e-11, abs=1e-13 * max(1.0, se)), cid
        assert chunked[cid][1] == pytest.approx(se, rel=1e-9, abs=1e-13), cid


@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_a_sample_draws_the_same_normals_whatever_the_chunking(qmc):
    """The normals of sample ``s`` of a replicate depend on (seed, replicate, s) only:
    chunks of 1000, 4096 and 3000 samples (straddling the iid blocks of 4096, or not)
    concatenate bit for bit to what the whole replicate draws (issue #13: iid Monte
    Carlo differed whole vs chunked)."""
    from tensorprog.engine.montecarlo import _normal_source

    ss = np.random.SeedSequence(11).spawn(3)[2]
    D, M = 5, 9000
    whole = _normal_source([ss], M, D, qmc)()[0]
    for C in (1000, 4096, 3000):
        parts = [_normal_source([ss], min(C, M - a), D, qmc, a)()[0] for a in range(0, M, C)]
        assert np.array_equal(np.concatenate(parts, axis=1), whole), C
    # and the draws are standard normals: mean and variance within 5 standard errors
    assert abs(whole.mean()) < 5 / math.sqrt(whole.size)
    assert abs(whole.var() - 1) < 5 * math.sqrt(2 / whole.size)
    # another replicate's stream is another draw
    other = _normal_source([np.random.SeedSequence(11).spawn(3)[1]], M, D, qmc)()[0]
    assert not np.array_equal(other, whole)


def test_chunked_plain_montecarlo_equals_whole_replicates():
    """iid normals drawn by sample index: a limit computed in chunks (max_memory of 700
    samples: chunks of 512) is the whole-replicate limit up to the order of summation
    (as for QMC above), not another estimate."""
    p = tanh_Wt()
    per_sample = _bytes_per_sample(Derivation(p))
    a = p.limit(method="montecarlo", samples=64_000, seed=1, qmc=False)
    b = p.limit(method="montecarlo", samples=64_000, seed=1, max_memory=700 * per_sample,
                qmc=False)
    for name in ("gx", "t2"):
        assert b[name] == pytest.approx(a[name], rel=1e-11), name
        assert b.stderr(name) == pytest.approx(a.stderr(name), rel=1e-9), name


@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_thread_count_changes_nothing_iid_or_qmc(qmc, monkeypatch):
    """1, 2 or 4 concurrent passes, iid or QMC: the same bits (every pass has its own
    replicates and streams)."""
    import tensorprog.engine.montecarlo as mc

    plan = planned(tanh_Wt())
    runs = []
    for workers in (1, 2, 4):
        monkeypatch.setattr(mc, "_MAX_WORKERS", workers)
        monkeypatch.setattr(mc, "available_cpus", lambda: 4)
        runs.append(run_montecarlo(plan, 8_000, 5, batches=8, qmc=qmc))
    assert runs[0] == runs[1] == runs[2]


# --------------------------------------------------------------- errors per replicate


def _poisoned_normals(K, M, D, value, replicate=2, seed=0):
    """Standard normals (K, D, M), except the first draw of ``replicate`` is ``value``."""
    def draw():
        z = np.random.default_rng(seed).standard_normal((K, D, M))
        z[replicate, 0, 0] = value
        return z

    return draw


def _run_poisoned(p, value, K=4, M=200):
    plan = planned(p)
    MonteCarloPass(plan, K, M, _poisoned_normals(K, M, len(plan.der.bases), value)).run()


def test_inf_in_one_replicate_of_a_nonlin_is_an_error():
    p = tp.Program("e")
    x = p.vector("x")
    tp.mean(tp.exp(x), name="m")
    _run_poisoned(p, 0.0)  # finite everywhere: no error
    with pytest.raises(tp.NumericalError, match="exp produced NaN or inf on Monte Carlo"):
        _run_poisoned(p, 800.0)


def test_inf_in_one_replicate_of_a_moment_is_an_error():
    p = tp.Program("xy")
    x = p.vector("x")
    tp.inner(x, x + 0.0, name="m")  # an inner product (no temporary array)
    with pytest.raises(tp.NumericalError, match=r"estimate of m is not finite \(inf\)"):
        _run_poisoned(p, 1e200)


def test_inf_in_one_replicate_of_a_hat_covariance_is_an_error():
    p = tp.Program("cov")
    W = p.matrix("W")
    x = p.vector("x")
    tp.mean(tp.tanh(W @ x), name="m")
    with pytest.raises(tp.NumericalError, match=r"covariance of .* is not finite \(variance inf\)"):
        _run_poisoned(p, 1e200)


# ------------------------------------------------------ batched linear algebra pieces


def _factor_row_reference(L, cov_row, var):
    """The scalar rank-tolerant forward substitution (one replicate)."""
    k = len(cov_row)
    tol = 1e-12 * max(1.0, abs(var))
    row = np.zeros(k)
    for i in range(k):
        s = cov_row[i] - L[i, :i] @ row[:i]
        row[i] = s / L[i, i] if L[i, i] > tol else 0.0
    d = var - row @ row
    return row, math.sqrt(d) if d > tol else 0.0


def test_factor_rows_with_different_ranks_per_replicate():
    """Replicate 0's family repeats a member (rank 2 of 3), replicate 1's does not."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2, 3, 5))
    A[0, 1] = A[0, 0]  # a repeated member: its diagonal pivot is 0
    covs = A @ A.transpose(0, 2, 1)
    L, U = np.zeros((2, 3, 3)), np.zeros((2, 3, 3))
    for k in range(3):
        _factor_row(L, U, k, covs[:, k, : k + 1])
    for r in range(2):
        ref = np.zeros((3, 3))
        for k in range(3):
            ref[k, :k], ref[k, k] = _factor_row_reference(ref, covs[r, k, :k], covs[r, k, k])
        np.testing.assert_allclose(L[r], ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(L[r] @ L[r].T, covs[r], rtol=1e-10, atol=1e-10)
    assert L[0, 1, 1] == 0.0 and L[1, 1, 1] > 0.0
    # U is L's inverse where L has full rank, with the zero pivot's row zero otherwise
    np.testing.assert_allclose(U[1] @ L[1], np.eye(3), atol=1e-12)
    assert not U[0, 1].any()
    np.testing.assert_allclose((U[0] @ L[0])[[0, 2]], np.eye(3)[[0, 2]], atol=1e-12)


def test_regression_from_sums_is_least_squares_per_replicate():
    rng = np.random.default_rng(1)
    K, n, k = 3, 400, 4
    H = rng.standard_normal((K, n, k))
    H[1, :, 3] = 2 * H[1, :, 2]  # replicate 1: collinear hats share their coefficient
    z = np.einsum("rnk,k->rn", H, [0.5, -1.0, 2.0, 0.25]) + 0.1 * rng.standard_normal((K, n)) + 3
    sums = (H.sum(1), z.sum(1, keepdims=True), np.einsum("rni,rnj->rij", H, H),
            np.einsum("rni,rn->ri", H, z))
    beta = _regression(sums, n)
    for r in range(K):
        design = np.column_stack([np.ones(n), H[r]])
        ref = np.linalg.lstsq(design, z[r], rcond=None)[0][1:]  # minimum-norm slopes
        # normal equations square the condition number (≈ 1e1 here): ~1e-13 relative
        np.testing.assert_allclose(beta[r], ref, rtol=1e-10, atol=1e-12)
    assert beta[1, 3] == pytest.approx(2 * beta[1, 2], rel=1e-10)


@pytest.mark.parametrize("workers", [1, 3])
def test_concurrent_passes_change_nothing(workers, monkeypatch):
    """Passes run in threads; each has its own replicates and streams, so the result is
    bit-identical to running them one after the other."""
    import tensorprog.engine.montecarlo as mc

    plan = planned(relu_one_step())
    monkeypatch.setattr(mc, "_MAX_WORKERS", 1)
    serial = run_montecarlo(plan, 20_000, 7, batches=6)
    monkeypatch.setattr(mc, "_MAX_WORKERS", workers)
    monkeypatch.setattr(mc, "available_cpus", lambda: 4)
    assert run_montecarlo(plan, 20_000, 7, batches=6) == serial


# ------------------------------------------------------------- storage plan (stacks)


def mixed_stacks():
    """Linear Nonlins over family inputs, over vectors gathered into combination
    stacks, over both, and with loose terms; a product Moment of two inputs of one
    family *before* the MatMuls that need their covariance."""
    from tensorprog.autodiff import lincomb

    p = tp.Program("stacks")
    W = p.matrix("W", var=1.5)
    x = p.vector("x")
    u = p.vector("u", cov={x: 0.4})
    y = tp.tanh(x)
    tp.inner(x, y, name="xy")  # the pair (x, y) before W y needs it
    a, b = W @ x, W @ y
    s = tp.mean(tp.tanh(a) * tp.tanh(b), name="s")
    c, d = tp.relu(a), tp.sin(b)
    e = lincomb([(2.0, x), (-0.5, y), (s, u)])  # two family inputs (a block), a loose term
    f = lincomb([(s, c), (1 - s, d), (None, e)])  # a new combination stack, base e
    g = W.T @ tp.tanh(f)  # Ż by regression on the hats of W
    h = lincomb([(0.3, c), (s, d), (-1.0, g)])  # c, d again: their block; g loose
    k = lincomb([(s, c), (s, d), (0.5, h), (None, x)])  # extends c, d's stack by h
    tp.mean(k * k, name="kk")
    tp.mean(tp.relu(W @ k) * y, name="out")
    return p


def training_three_steps():
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.muP(2))
    X = np.array([[1.0, 0.3], [-0.5, 1.0], [0.2, -0.8]])
    return nn.train_sgd(net, X, np.array([0.5, -0.3, 0.8]), lr=1.0, steps=3,
                        feature_kernels=False).program


@pytest.mark.parametrize("build", [relu_one_step, training_three_steps, mixed_stacks],
                         ids=lambda b: b.__name__)
def test_stacked_linear_nonlins_equal_their_numpy_form(build):
    """Blocks of stack rows (one batched product) and loose terms evaluate the same
    function as the Nonlin's lambdified body on the same samples."""
    import tensorprog.engine.montecarlo as mc

    plan = planned(build())
    sched = mc._Schedule(plan)
    assert any(lin.blocks for lin in sched.linear.values())
    checked = []

    class Checked(MonteCarloPass):
        def nonlin(self, instr):
            out = super().nonlin(instr)
            if instr in self.schedule.linear and out is not None:
                args = [self.env[a] for a in instr.args]
                ref = np.broadcast_to(instr.fn.numpy(*args, *self._params(instr)), out.shape)
                np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
                checked.append(instr)
            return out

    K, M = 3, 256
    seeds = np.random.SeedSequence(0).spawn(K)
    Checked(plan, K, M, mc._normal_source(seeds, M, sched.D, False), schedule=sched).run()
    assert set(checked) == set(sched.linear)


def test_training_updates_form_contiguous_blocks():
    """In an SGD unroll every update term reads one stack block: the histories of
    family inputs (x¹, dh²) and the gathered history of dh¹ and of the readout's x²."""
    import tensorprog.engine.montecarlo as mc

    sched = mc._Schedule(planned(training_three_steps()))
    assert all(not lin.loose for lin in sched.linear.values())
    assert sum(len(lin.blocks) for lin in sched.linear.values()) > 0


def test_a_moment_before_the_hat_covariance_it_shares():
    """The pair estimate ⟨x, tanh x⟩ is first a Moment, then the covariance of the hats
    W x, W tanh x: in chunks (sums accumulated by the Moment, the MatMul waiting for
    them) it equals the whole replicate on the same points, and the limits agree with
    quadrature within their standard errors."""
    p = mixed_stacks()
    plan = planned(p)
    M = 1024
    per_sample = _bytes_per_sample(plan.der)
    whole = run_montecarlo(plan, 16 * M, 5, qmc=True)
    chunked = run_montecarlo(plan, 16 * M, 5, qmc=True, max_memory=200 * per_sample)
    for cid, (val, _se) in whole.items():
        assert chunked[cid][0] == pytest.approx(val, rel=1e-10, abs=1e-12), cid
    mc_lim = p.limit(method="montecarlo", samples=100_000, seed=2)
    ref = p.limit()  # quadrature / exact where the integrands are small enough
    for name in ("xy", "s"):
        assert ref.method(name) != "montecarlo"
        assert abs(mc_lim[name] - ref[name]) <= 4 * mc_lim.stderr(name), name


def test_a_vector_multiplied_by_two_matrices():
    """x and tanh(x) are inputs of both W's and V's families: they live in W's stack and
    V's copies them; a Moment of the pair is shared with W's covariance only."""
    p = tp.Program("two")
    W, V = p.matrix("W", var=1.3), p.matrix("V", var=0.7)
    x = p.vector("x")
    y = tp.tanh(x)
    a, b = W @ x, W @ y
    c, d = V @ x, V @ y
    tp.inner(x, y, name="xy")
    tp.mean(tp.tanh(a) * tp.tanh(b), name="ab")
    tp.mean(tp.tanh(c) * tp.tanh(d), name="cd")
    tp.mean(tp.relu(a) * tp.relu(c + d), name="ac")
    ref = p.limit()  # quadrature: every expectation has at most 2 linear forms
    lim = p.limit(method="montecarlo", samples=2**15, seed=4)
    for name in ("xy", "ab", "cd", "ac"):
        assert ref.method(name) != "montecarlo"
        assert abs(lim[name] - ref[name]) <= 4 * lim.stderr(name) + 1e-12, name


def test_programs_with_more_base_gaussians_than_sobol_dimensions(monkeypatch):
    """Dimensions beyond the direction-number table are sampled iid (here the table is
    cut to 2 of the program's 5 base Gaussians): still unbiased, with error bars."""
    import tensorprog.engine.montecarlo as mc
    import tensorprog.engine.qmc as qmc

    p = tp.Program("wide")
    W = p.matrix("W")
    xs = p.vectors("x", cov=np.eye(2) + 0.3)
    hs = [W @ tp.tanh(x) for x in xs]
    g = W.T @ tp.relu(hs[0] + hs[1])
    tp.mean(tp.relu(g) * tp.tanh(hs[1]), name="m")
    tp.mean(tp.tanh(hs[0]) * tp.tanh(hs[1]), name="k")
    ref = p.limit(method="montecarlo", samples=2**17, seed=1)
    monkeypatch.setattr(mc, "MAX_DIM", 2)
    monkeypatch.setattr(qmc, "MAX_DIM", 2)
    assert len(Derivation(p).bases) > 2
    lim = p.limit(method="montecarlo", samples=2**15, seed=2)
    for name in ("m", "k"):
        assert abs(lim[name] - ref[name]) <= 4 * math.hypot(lim.stderr(name), ref.stderr(name))


# ------------------------------------------------------------------ resources (issue #13)


class _Stop(Exception):
    pass


def test_progress_says_what_a_long_run_costs_before_it_starts(monkeypatch, capsys):
    """samples=10¹⁰ used to start a long run without a word: with progress=True a line
    gives replicates, samples, chunks, threads, memory and an estimated time (from
    small timed passes) before the first replicate runs."""
    import tensorprog.engine.montecarlo as mc

    original = mc._chunked_replicate

    def stop_real_runs(*args, sweeps=None, **kw):
        if sweeps is None:  # (the estimate's calibration passes a list to count sweeps)
            raise _Stop
        return original(*args, sweeps=sweeps, **kw)

    monkeypatch.setattr(mc, "_chunked_replicate", stop_real_runs)
    with pytest.raises(_Stop):
        tanh_Wt().limit("montecarlo", samples=10**10, progress=True)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("Monte Carlo:"))
    assert "16 replicates × 625000000 samples, chunks of" in line
    assert "GiB of sample arrays" in line and "estimated time" in line
    # the time is given in hours: 10¹⁰ samples at ≥ 10 ns each are ≥ 100 s per core
    assert line.rstrip().endswith((" h", " min")), line


def test_monte_carlo_plan_that_does_not_fit_names_max_memory(monkeypatch):
    from tensorprog import _resources

    p = tanh_Wt()
    monkeypatch.setattr(_resources, "memory_budget",
                        lambda: _resources.MemoryBudget(2**20, "cgroup memory.max"))
    with pytest.raises(tp.ResourceError) as info:
        p.limit("montecarlo", samples=10**7)  # 1 GiB of chunks by default
    assert info.value.knob == "max_memory" and isinstance(info.value, MemoryError)
    assert "max_memory" in str(info.value) and "cgroup" in str(info.value)
    # a max_memory that fits runs in chunks instead
    lim = p.limit("montecarlo", samples=64_000, max_memory=2**19)
    assert np.isfinite(lim["gx"])
    # and a max_memory below one sample is refused, naming the minimum
    with pytest.raises(tp.ResourceError, match="max_memory ≥"):
        p.limit("montecarlo", samples=64_000, max_memory=8)


# -- tail diagnostics (Pareto k̂) and calibration ------------------------------------------
def test_gpd_fit_matches_scipy_and_known_shapes():
    """Zhang–Stephens fit vs scipy's maximum likelihood on the same samples (the two
    estimators differ by O(1/√n) sampling noise: 0.05 at n = 1000 is ~2 of scipy's own
    standard errors √((1+k)²/n) ≈ 0.04), and vs the true shape over 40 replicates
    (mean within 4 standard errors of the replicate spread, plus the prior's shrinkage
    of 10/(n + 10) towards 1/2)."""
    from scipy import stats

    from tensorprog.engine.tails import gpd_fit

    rng = np.random.default_rng(0)
    n = 1000
    for k in (-0.3, 0.2, 0.5, 0.9, 1.3):
        x = np.sort(stats.genpareto.rvs(k, scale=2.0, size=(40, n), random_state=rng), axis=1)
        kk, ss = gpd_fit(x)
        c, _, sc = stats.genpareto.fit(x[0], floc=0)
        assert kk[0] == pytest.approx(c, abs=0.05) and ss[0] == pytest.approx(sc, rel=0.1)
        shrink = 10 / (n + 10) * abs(0.5 - k)
        assert abs(kk.mean() - k) <= 4 * kk.std(ddof=1) / math.sqrt(40) + shrink


def test_pareto_khat_of_gaussian_functions():
    """Known tails: |1/Z| has P(|1/Z| > t) ~ t⁻¹ (k = 1), Z⁻² k = 2, |Z|^{-1/2} k = 1/2 — on
    12,500 draws per replicate, 16 replicates, within 0.1 (the estimator's spread at this
    tail size, ~0.05, is checked in the GPD test); tanh is bounded (k < 0)."""
    from tensorprog.engine.tails import pareto_khat

    z = np.random.default_rng(1).standard_normal((16, 12_500))
    assert pareto_khat(1 / z).mean() == pytest.approx(1.0, abs=0.1)
    assert pareto_khat(z**-2.0).mean() == pytest.approx(2.0, abs=0.1)
    assert pareto_khat(np.abs(z) ** -0.5).mean() == pytest.approx(0.5, abs=0.1)
    assert pareto_khat(np.tanh(z)).mean() < 0


def test_every_montecarlo_moment_carries_khat_and_heavy_ones_are_flagged():
    """𝔼|v|^{−0.7} exists (order 0.7 < 1 at v = 0) but has no variance (Pareto k = 0.7):
    flagged (not refused, since existence is proven), with a warning; a sigmoid's k̂ is
    negative and trusted; tanh(v)², proven bounded, needs no fit (k̂ None)."""
    p = tp.Program("heavy")
    v = p.vector("v")
    t = tp.mean(tp.sigmoid(v) ** 2, name="t")
    b = tp.mean(tp.tanh(v) ** 2, name="b")
    k = tp.mean(tp.abs(v) ** -0.7, name="k")
    with pytest.warns(tp.UnreliableValueWarning, match="k̂ = "):
        lim = p.limit(method="montecarlo")
    assert lim.khat(t) < 0 and lim.trusted(t)
    assert lim.khat(b) is None and lim.trusted(b)
    assert lim.khat(k) > 0.5 and not lim.trusted(k) and "heavy tail" in lim.warnings["k"]


def test_khat_of_chunked_replicates_equals_whole_ones():
    """A replicate's tail is merged over its chunks: the same k̂ (QMC: the same points)."""
    p = tp.Program("chunks")
    v = p.vector("v")
    tp.mean(tp.exp(2 * tp.relu(v)), name="k")
    plan = planned(p)
    per_sample = _bytes_per_sample(plan.der)
    a, b = {}, {}
    run_montecarlo(plan, 16 * 1024, 3, qmc=True, tails=a)
    run_montecarlo(plan, 16 * 1024, 3, qmc=True, max_memory=128 * per_sample, tails=b)
    assert a and a == b


@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "mc"])
def test_tilted_moments_are_exact_changes_of_measure(qmc):
    """𝔼[tanh(v)² e^{2v}] for v ~ N(0.3, 0.8) and 𝔼[e^{v w/2}] (v, w iid N(0, 1)) by Monte
    Carlo under the exponential tilt vs scipy quadrature: within 5 standard errors."""
    from scipy import integrate

    p = tp.Program("tilt")
    v = p.vector("v", mean=0.3, var=0.8)
    x, y = p.vector("x"), p.vector("y")
    a = tp.mean(tp.tanh(v) ** 2 * tp.exp(2 * v), name="a")
    b = tp.mean(tp.exp(0.5 * x * y), name="b")
    lim = p.limit(method="montecarlo", samples=2**14, qmc=qmc, seed=5)
    s = math.sqrt(0.8)
    ref_a = integrate.quad(lambda u: np.tanh(u) ** 2 * np.exp(2 * u - (u - 0.3) ** 2 / 1.6)
                           / (s * math.sqrt(2 * math.pi)), -30, 30, limit=200)[0]
    ref_b = 1 / math.sqrt(1 - 0.25)  # 𝔼_y e^{y²/8} = (1 − 1/4)^{-1/2}
    assert abs(lim[a] - ref_a) <= 5 * lim.stderr(a)
    assert abs(lim[b] - ref_b) <= 5 * lim.stderr(b) + 1e-12


def _calibration(build, qmc, seeds=30, samples=2**12):
    """(spread of estimates over seeds)/(mean reported stderr), and the fraction of
    |z| > 2, against the exact value ``build`` returns."""
    p, k, exact = build()
    est, se = [], []
    for s in range(seeds):
        lim = p.limit(method="montecarlo", samples=samples, seed=s, qmc=qmc)
        est.append(lim[k])
        se.append(lim.stderr(k))
    est, se = np.array(est), np.array(se)
    return est.std(ddof=1) / se.mean(), float(np.mean(np.abs(est - exact) > 2 * se))


def _lognormal_times_tanh():
    p = tp.Program("ln")
    v = p.vector("v")
    k = tp.mean(tp.exp(2 * v) * tp.tanh(v) ** 2, name="k")
    from scipy import integrate

    exact = integrate.quad(lambda u: np.exp(2 * u) * np.tanh(u) ** 2 * np.exp(-u * u / 2)
                           / math.sqrt(2 * math.pi), -40, 40, limit=200)[0]
    return p, k, exact


def _relu_product():
    p = tp.Program("rp")
    W, x = p.matrix("W"), p.vector("x")
    h = W @ x
    k = tp.mean(tp.relu(h) * tp.relu(h), name="k")
    return p, k, 0.5  # 𝔼 relu(Z)² = Var/2


@pytest.mark.parametrize("build", [_lognormal_times_tanh, _relu_product],
                         ids=["exp(2v)tanh(v)^2", "relu^2"])
@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "mc"])
def test_replicate_stderr_is_calibrated(build, qmc):
    """Cheap version of ``benchmarks/calibration.py``: over 30 seeds the spread of the
    estimates matches the mean reported standard error. With normal replicate means the
    ratio's sampling spread over 30 seeds is ≈ 1/√58 ≈ 0.13 (plus the scatter of the
    reported stderrs themselves), so [0.6, 1.5] is a ≈ 3σ band; |z| > 2 happens for 6 %
    of seeds with 15 degrees of freedom, and > 30 % of 30 is a ≈ 4σ excess."""
    ratio, frac = _calibration(build, qmc)
    assert 0.6 <= ratio <= 1.5, ratio
    assert frac <= 0.3, frac
