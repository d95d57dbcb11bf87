"""The Monte Carlo engine through the public API: what ``p.limit("montecarlo", …)``
promises whatever its memory layout.

A run is 16 replicates (``batches``) of ``samples/16`` samples, each drawn from its own
stream; how replicates are grouped into passes, cut into chunks to fit ``max_memory``,
or spread over threads must not change what they compute: the same bits while every
replicate fits whole, the same estimates up to the order of summation (≈ 1e-11
relative) when replicates are chunked. ``max_memory`` bounds the sample arrays, and
a bound below one sample is refused naming the minimum. References are either the same
limit computed another way or closed forms / scipy quadrature written here. (Unit
tests of the engine's internal pieces: ``tests/test_montecarlo_internals.py``.)
"""

from __future__ import annotations

import math
import os
import re
import tracemalloc

import numpy as np
import pytest
from programs import gauss1, gauss2

import tensorprog as tp
from tensorprog import nn


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


def linear_mix(opaque: bool = False):
    """Linear combinations of family inputs, of several MatMul outputs and with Moment
    coefficients, before and after W and Wᵀ; a product Moment of two inputs of W's
    family *before* the MatMuls that need their covariance. ``opaque=True`` writes every
    linear combination as one opaque ``tp.nonlin`` (no linear structure to exploit)."""

    def lin(fn, *args):
        return tp.nonlin(fn, *args) if opaque else fn(*args)

    p = tp.Program("linear_mix")
    W = p.matrix("W", var=1.5)
    x = p.vector("x")
    u = p.vector("u", cov={x: 0.4})
    y = tp.tanh(x)
    tp.inner(x, y, name="xy")  # the pair (x, y) before W y needs it
    a, b = W @ x, W @ y
    s = tp.mean(tp.tanh(a) * tp.tanh(b), name="s")
    c, d = tp.relu(a), tp.sin(b)
    e = lin(lambda x_, y_, u_, s_: 2.0 * x_ - 0.5 * y_ + s_ * u_, x, y, u, s)
    f = lin(lambda c_, d_, e_, s_: s_ * c_ + (1 - s_) * d_ + e_, c, d, e, s)
    g = W.T @ tp.tanh(f)  # Ż by regression on the hats of W
    h = lin(lambda c_, d_, g_, s_: 0.3 * c_ + s_ * d_ - g_, c, d, g, s)
    k = lin(lambda c_, d_, h_, x_, s_: s_ * c_ + s_ * d_ + 0.5 * h_ + x_, c, d, h, x, s)
    tp.mean(k * k, name="kk")
    tp.mean(tp.relu(W @ k) * y, name="out")
    return p


def bytes_per_sample(p) -> int:
    """What one Monte Carlo sample of every vector of ``p`` costs: the minimum
    ``max_memory`` the refusal of a smaller one names."""
    with pytest.raises(tp.ResourceError, match="max_memory ≥") as info:
        p.limit("montecarlo", samples=64, max_memory=1)
    return int(re.search(r"max_memory ≥ (\d+)", str(info.value)).group(1))


def estimates(lim) -> dict:
    return {k: (lim[k], lim.stderr(k), lim.khat(k)) for k in lim.values}


# ------------------------------------------------------------- layout changes nothing


@pytest.mark.parametrize("build", [relu_one_step, tanh_Wt], ids=lambda b: b.__name__)
@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_max_memory_changes_nothing_but_the_order_of_summation(build, qmc):
    """Replicates of 512 samples: all in one pass, one or five whole replicates per
    pass (the same bits: every replicate is computed on its own, from its own stream),
    or in chunks of 128 samples (sums accumulated over chunks: the same estimates up to
    the order of summation, a few hundred ulps, which these short programs propagate
    without amplification; QMC chunks draw the whole replicate's Sobol' points and iid
    normals are drawn by sample index, issue #13)."""
    p, M = build(), 512
    per = bytes_per_sample(p)

    def run(max_memory, batches=16):
        return estimates(
            p.limit(
                "montecarlo",
                samples=batches * M,
                seed=7,
                qmc=qmc,
                batches=batches,
                max_memory=max_memory,
            )
        )

    whole = run(2**30)
    assert whole
    assert run(per * M) == whole
    assert run(5 * per * M + 1) == whole
    # (chunked: 4 replicates, so that the chunks are few)
    whole, chunked = run(2**30, batches=4), run(128 * per, batches=4)
    assert chunked.keys() == whole.keys()
    for name, (val, se, _) in whole.items():
        assert chunked[name][0] == pytest.approx(val, rel=1e-11, abs=1e-13 * max(1.0, se)), name
        assert chunked[name][1] == pytest.approx(se, rel=1e-9, abs=1e-13), name


@pytest.mark.filterwarnings("ignore::tensorprog.UnreliableValueWarning")  # (k̂ ≈ 0.5)
def test_khat_of_chunked_replicates_equals_whole_ones():
    """A replicate's tail is merged over its chunks: the same k̂ (QMC: the same points)."""
    p = tp.Program("chunks")
    v = p.vector("v")
    tp.mean(tp.exp(2 * tp.relu(v)), name="k")
    kw = {"samples": 16 * 1024, "seed": 3, "qmc": True}
    a = p.limit("montecarlo", **kw)
    b = p.limit("montecarlo", max_memory=128 * bytes_per_sample(p), **kw)
    assert a.khat("k") is not None and b.khat("k") == a.khat("k")


def _on_one_core_and_on_all(qmc, extra=False):
    """(limit on the cores this process may use, the same limit on one core); ``extra``:
    with sigmoid Moments of the program's vectors (integrands not polynomially bounded)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("one core: nothing to compare")
    p = relu_one_step()
    if extra:
        vecs = [i.out for i in p.instructions if i.out.kind == "vector"]
        for j, v in enumerate(vecs[-3:]):
            tp.mean(tp.sigmoid(p[v.name]), name=f"sig{j}")
    kw = {"samples": 20_000, "seed": 7, "batches": 6, "qmc": qmc}
    everywhere = p.limit("montecarlo", **kw)
    try:
        os.sched_setaffinity(0, {min(cores)})
        one_core = p.limit("montecarlo", **kw)
    finally:
        os.sched_setaffinity(0, cores)
    return everywhere, one_core


@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_the_same_bits_whatever_the_cores(qmc):
    """Replicates run in threads, at most one per core the process may use (its CPU
    affinity): on one core or on all of them, the same values and standard errors."""
    a, b = _on_one_core_and_on_all(qmc)
    assert [(a[k], a.stderr(k)) for k in a.values] == [(b[k], b.stderr(k)) for k in a.values]


@pytest.mark.parametrize("qmc", [False, True], ids=["mc", "qmc"])
def test_the_same_khat_whatever_the_cores(qmc):
    """The tails are merged over passes (the largest draws of the union), so k̂ does not
    depend on how replicates are grouped into passes: it used to (k̂ = 0.135 on 2 cores,
    0.019 on 1, with per-replicate tops). The sigmoid Moments are fitted (the relu
    ones are polynomially bounded: k̂ None)."""
    a, b = _on_one_core_and_on_all(qmc, extra=True)
    ks = [a.khat(k) for k in a.values]
    assert ks == [b.khat(k) for k in a.values]
    assert any(k is not None for k in ks)


def test_max_memory_bounds_the_sample_arrays():
    """With ``max_memory`` = 256 KiB the run allocates at most that much more than a run
    of 32 samples (the plan and its bookkeeping) — as numpy reports its arrays to
    tracemalloc — while the whole run allocates several MiB."""
    p = tanh_Wt()
    kw = {"samples": 2**14, "seed": 1}
    p.limit("montecarlo", samples=64)  # (compiled functions are cached on first use)

    def peak(**more):
        tracemalloc.start()
        try:
            p.limit("montecarlo", **{**kw, **more})
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    fixed = peak(samples=32)
    bounded, whole = peak(max_memory=2**18), peak()
    assert bounded <= fixed + 2**18, (bounded, fixed)
    assert whole > fixed + 4 * 2**18, (whole, fixed)


def test_a_max_memory_below_one_sample_is_refused_naming_the_minimum():
    p = tanh_Wt()
    per = bytes_per_sample(p)
    assert np.isfinite(p.limit("montecarlo", samples=64, max_memory=per)["gx"])
    with pytest.raises(tp.ResourceError, match=f"max_memory ≥ {per}") as info:
        p.limit("montecarlo", samples=64, max_memory=per - 1)
    assert info.value.knob == "max_memory" and isinstance(info.value, MemoryError)


def test_how_a_linear_combination_is_written_changes_nothing():
    """The same program with its linear combinations as arithmetic (the engine may
    gather them into stacked products) or as opaque ``tp.nonlin``s: the same limits
    within 5 standard errors of the difference (two Monte Carlo estimates of one
    limit; positive correlation through shared points only narrows the difference)."""
    kw = {"samples": 2**14, "seed": 2}
    lin, opq = (linear_mix(o).limit("montecarlo", **kw) for o in (False, True))
    for name in ("xy", "s", "kk", "out"):
        tol = 5 * math.hypot(lin.stderr(name), opq.stderr(name)) + 1e-12
        assert abs(lin[name] - opq[name]) <= tol, name


def test_a_moment_before_the_hat_covariance_it_shares():
    """The pair estimate ⟨x, tanh x⟩ is first a Moment, then the covariance of the hats
    W x, W tanh x: in chunks (sums accumulated by the Moment, the MatMul waiting for
    them) it equals the whole replicate on the same points, and the limits agree with
    scipy quadrature within 5 standard errors (Student-t, 3 d.o.f. here: 1.5e-2 per
    value; the 16-replicate runs elsewhere are at 1.6e-4): 𝔼[x tanh x] = 𝔼 tanh'(x)
    (Stein) and s = 𝔼 tanh(a) tanh(b), (a, b) ~ N(0, 1.5·[[1, c], [c, 𝔼 tanh² x]])."""
    p = linear_mix()
    kw = {"samples": 4 * 512, "batches": 4, "seed": 5, "qmc": True}
    whole = p.limit("montecarlo", **kw)
    chunked = p.limit("montecarlo", max_memory=256 * bytes_per_sample(p), **kw)
    for name in whole.values:
        assert chunked[name] == pytest.approx(whole[name], rel=1e-10, abs=1e-12), name
    c = gauss1(lambda z: 1 - math.tanh(z) ** 2)
    t2 = gauss1(lambda z: math.tanh(z) ** 2)
    ref = {"xy": c, "s": gauss2(lambda a, b: math.tanh(a) * math.tanh(b), 1.5, 1.5 * c, 1.5 * t2)}
    lim = p.limit("montecarlo", samples=2**14, seed=5)
    for name, val in ref.items():
        assert abs(lim[name] - val) <= 5 * lim.stderr(name) + 1e-10, name


def test_a_vector_multiplied_by_two_matrices():
    """x and tanh(x) are inputs of both W's and V's families; a Moment of the pair is
    shared with W's covariance only: Monte Carlo agrees with quadrature."""
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
        assert abs(lim[name] - ref[name]) <= 5 * lim.stderr(name) + ref.error(name) + 1e-12, name


# ------------------------------------------------------------------ resources (issue #13)


def test_monte_carlo_plan_that_does_not_fit_names_max_memory(monkeypatch):
    from tensorprog.core import _resources

    p = tanh_Wt()
    monkeypatch.setattr(
        _resources, "memory_budget", lambda: _resources.MemoryBudget(2**20, "cgroup memory.max")
    )
    with pytest.raises(tp.ResourceError) as info:
        # an explicit max_memory above the budget (the default is a share of the budget)
        p.limit("montecarlo", samples=10**7, max_memory=2**30)
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
    ref_a = integrate.quad(
        lambda u: (
            np.tanh(u) ** 2 * np.exp(2 * u - (u - 0.3) ** 2 / 1.6) / (s * math.sqrt(2 * math.pi))
        ),
        -30,
        30,
        limit=200,
    )[0]
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

    exact = integrate.quad(
        lambda u: np.exp(2 * u) * np.tanh(u) ** 2 * np.exp(-u * u / 2) / math.sqrt(2 * math.pi),
        -40,
        40,
        limit=200,
    )[0]
    return p, k, exact


def _relu_product():
    p = tp.Program("rp")
    W, x = p.matrix("W"), p.vector("x")
    h = W @ x
    k = tp.mean(tp.relu(h) * tp.relu(h), name="k")
    return p, k, 0.5  # 𝔼 relu(Z)² = Var/2


@pytest.mark.parametrize(
    "build", [_lognormal_times_tanh, _relu_product], ids=["exp(2v)tanh(v)^2", "relu^2"]
)
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


# ------------------------------------------------- default memory and threads (#19.4)


def test_the_default_max_memory_is_a_share_of_what_the_process_may_allocate(monkeypatch):
    """Without ``max_memory`` the sample arrays may take MONTECARLO_SHARE of the memory
    budget: a replicate runs whole when the budget's share holds it and in chunks when
    it does not — and the estimates are those of an explicit ``max_memory`` of that
    share."""
    from tensorprog.core import _resources

    p = tanh_Wt()
    per = bytes_per_sample(p)
    kw = {"samples": 2**12, "batches": 4, "seed": 3, "progress": True}
    M = kw["samples"] // kw["batches"]
    lines = []
    monkeypatch.setattr("tqdm.auto.tqdm.write", lambda s, file=None: lines.append(s))
    monkeypatch.setattr(_resources, "_MONTECARLO_FLOOR", 1)
    for budget, chunked in ((per * M // 2, True), (per * M * 64, False)):
        monkeypatch.setattr(
            _resources, "memory_budget", lambda b=budget: _resources.MemoryBudget(b, "test")
        )
        share = int(_resources.MONTECARLO_SHARE * budget)
        assert _resources.montecarlo_memory() == share
        lines.clear()
        default = p.limit("montecarlo", **kw)
        assert ("chunks of" in lines[0]) is chunked, lines
        explicit = p.limit("montecarlo", max_memory=share, **kw)
        assert estimates(default) == estimates(explicit)


def test_blas_threads_leave_one_core_per_pass(monkeypatch):
    """While ``w`` passes run, the BLAS library gets ``cores // w`` threads; afterwards
    its own setting is back."""
    import numpy as np  # noqa: F401  (loads the BLAS library threadpoolctl inspects)
    from threadpoolctl import threadpool_info

    from tensorprog.core import _resources

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can control")
    monkeypatch.setattr(_resources, "available_cpus", lambda: 4)
    with _resources.blas_threads(2):
        assert blas() == [2] * len(before)
    with _resources.blas_threads(4):
        assert blas() == [1] * len(before)
    with _resources.blas_threads(1):
        assert blas() == before
    assert blas() == before
