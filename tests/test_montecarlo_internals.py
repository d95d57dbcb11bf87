"""Unit tests of internal pieces of the Monte Carlo engine (``tensorprog.engine.montecarlo``).

These reach below the public API on purpose — a poisoned normal source, the batched
linear algebra, the Sobol' dimension table, a run stopped after its cost line — and
move with the code when the module is split. What the Monte Carlo engine promises
through the public API (chunks, threads, memory, errors, tails, calibration) is in
``tests/test_montecarlo.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_montecarlo import tanh_Wt

import tensorprog as tp
from tensorprog.engine.derivation import Derivation
from tensorprog.engine.evaluate import Deterministic
from tensorprog.engine.montecarlo import MonteCarloPass, _factor_row, _regression
from tensorprog.engine.plan import Plan


def planned(p):
    plan = Plan(Derivation(p), symbolic=False)
    Deterministic(plan, "montecarlo").run()
    return plan


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
    sums = (
        H.sum(1),
        z.sum(1, keepdims=True),
        np.einsum("rni,rnj->rij", H, H),
        np.einsum("rni,rn->ri", H, z),
    )
    beta = _regression(sums, n)
    for r in range(K):
        design = np.column_stack([np.ones(n), H[r]])
        ref = np.linalg.lstsq(design, z[r], rcond=None)[0][1:]  # minimum-norm slopes
        # normal equations square the condition number (≈ 1e1 here): ~1e-13 relative
        np.testing.assert_allclose(beta[r], ref, rtol=1e-10, atol=1e-12)
    assert beta[1, 3] == pytest.approx(2 * beta[1, 2], rel=1e-10)


# ---------------------------------------------------------------- Sobol' dimensions


def test_programs_with_more_base_gaussians_than_sobol_dimensions(monkeypatch):
    """Dimensions beyond the direction-number table are sampled iid (here the table is
    cut to 2 of the program's 5 base Gaussians): still unbiased, with error bars."""
    import tensorprog.engine.montecarlo.sources as mc
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


# ----------------------------------------------------------------- progress line


class _Stop(Exception):
    pass


def test_progress_says_what_a_long_run_costs_before_it_starts(monkeypatch, capsys):
    """samples=10¹⁰ used to start a long run without a word: with progress=True a line
    gives replicates, samples, chunks, threads, memory and an estimated time (from
    small timed passes) before the first replicate runs."""
    import tensorprog.engine.montecarlo.chunks as mc

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


# --------------------------------------------------------------- Gram rows of a stack


def _many_inner_products(k=6):
    """``k`` heavy-tailed inputs of W's family whose pairwise inner products come before
    the MatMuls (as the backward pass of a training unroll has them), and inner
    products with W's outputs."""
    p = tp.Program("gram")
    W = p.matrix("W", var=1.3)
    x = p.vector("x")
    ys = [tp.exp(tp.tanh(x + 0.3 * i) * (1 + 0.2 * i)) for i in range(k)]
    for i, y in enumerate(ys):
        for j in range(i + 1):
            tp.inner(ys[j], y, name=f"m{j}_{i}")
        h = tp.relu(W @ y)
        tp.inner(h, ys[0], name=f"h{i}")
    return p


@pytest.mark.parametrize("max_memory", [None, 150_000])  # whole replicates; chunks
def test_gram_rows_equal_per_moment_sums_bit_for_bit(monkeypatch, max_memory):
    """The second moments of a stack's vectors taken as rows of its Gram matrix (one
    product per row) equal the per-Moment sums bit for bit, tails included, with fewer
    products."""
    from tensorprog.engine.montecarlo import rules, run
    from tensorprog.engine.montecarlo.schedule import _Schedule

    p = _many_inner_products()
    plan = planned(p)
    sched = _Schedule(plan)
    assert sum(len(keys) for _, keys in sched.gram_rows.values()) >= 21  # every y pair
    monkeypatch.setattr(run, "_Schedule", lambda plan: sched)
    products = []
    inner = rules._inner
    monkeypatch.setattr(rules, "_inner", lambda s, z: products.append(1) or inner(s, z))
    runs = []
    for rows in (sched.gram_rows, {}):
        monkeypatch.setattr(sched, "gram_rows", rows)
        products.clear()
        tails: dict[int, float] = {}
        mc = run.run_montecarlo(plan, 4000, 7, batches=4, max_memory=max_memory, tails=tails)
        runs.append((mc, tails, len(products)))
    (batched, tb, nb), (single, ts, ns) = runs
    assert batched == single and tb == ts and len(tb) >= 21
    assert nb < ns
