"""Monte Carlo on executors (``limit(..., executor=...)``, issue #20): a real
``dask.distributed.LocalCluster`` of two worker processes and a ``ProcessPoolExecutor``
give the same bits as the in-process run — ``==`` on means, standard errors and k̂,
not ``isclose`` — for programs with no closed form (a Nonlin Moment, an OuterNonlin, a
training limit of ``nn.train``), both samplers, several chunkings; a worker that dies
mid-run is survived (Dask) or reported naming the chunk (a process pool); failing
chunks are retried, then reported; the core imports without dask.

The reference is the in-process run of the same program and seed: the claim tested is
the identity itself (each program's values are checked against independent references
in ``tests/test_montecarlo.py``, ``tests/test_outer_nonlin.py`` and the training tests).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import sympy

import tensorprog as tp
from tensorprog import nn
from tensorprog.engine.derivation import Derivation
from tensorprog.engine.evaluate import Deterministic
from tensorprog.engine.montecarlo import run_montecarlo
from tensorprog.engine.montecarlo.distributed import RETRIES
from tensorprog.engine.plan import Plan

KW = {"samples": 16 * 256, "seed": 11}


# -------------------------------------------------------------------------- programs
def nonlin_moment() -> tp.Program:
    """Moments of Nonlins after W and Wᵀ (a Ż term): no closed form, Monte Carlo."""
    p = tp.Program("nonlin_moment")
    W = p.matrix("W", var=1.7)
    x = p.vector("x")
    u = p.vector("u", cov={x: 0.3})
    h = W @ tp.tanh(x)
    g = W.T @ tp.sin(h * u)
    tp.mean(tp.tanh(g) * tp.sigmoid(h + x * u), name="m")
    tp.mean(tp.exp(-g * g) * u, name="m2")
    return p


def outer() -> tp.Program:
    """An OuterNonlin whose inner average is sampled (the coarse level runs too)."""
    p = tp.Program("outer")
    W = p.matrix("W")
    v = p.vector("v")
    h = W @ v
    b = W.T @ tp.tanh(h)
    y = tp.outer_nonlin(
        lambda r, s, e: r * s / sympy.sqrt(r**2 * s**2 + e**2), [b], [h + 0.5], [0.3], name="y"
    )
    tp.inner(y, b, name="k")
    tp.mean(y * y, name="k2")
    return p


def training_run():
    """Two SGD steps of a relu network with a hidden n × n matrix (nn.train)."""
    m = nn.Model("relu2")
    for name, shape in (("W_in", ("n", 2)), ("W", ("n", "n")), ("W_out", (1, "n"))):
        m.param(name, shape)
    m.forward(lambda p, xi: p.W_out @ tp.relu(p.W @ tp.relu(p.W_in @ xi)))
    X = np.array([[1.0, 0.3], [-0.5, 1.0]])
    return nn.train(m, X, [0.5, -0.3], steps=2, optimizer=nn.SGD(0.5), param=nn.muP())


PROGRAMS = {"nonlin_moment": nonlin_moment, "outer": outer}


def estimates(lim) -> dict:
    return {k: (lim[k], lim.stderr(k), lim.khat(k)) for k in lim.values}


def training(run, **kw):
    lim = run.limit(method="montecarlo", **KW, **kw)
    return lim.outputs, lim.stderr


# -------------------------------------------------------------------------- executors
def _die_once(flag: str, fn, *args):
    """Kill the worker process running the first task that claims ``flag``."""
    try:
        os.rename(flag, flag + ".taken")
    except FileNotFoundError:
        return fn(*args)
    os._exit(3)


def _fail(flag: str, times: int, fn, *args):
    """Raise an ordinary exception the first ``times`` times (counted in ``flag``)."""
    with open(flag, "a+") as f:
        f.seek(0)
        n = len(f.read())
        if n < times:
            f.write("x")
            raise ConnectionError(f"transient failure {n + 1}")
    return fn(*args)


class Wrapped(Executor):
    """An executor that runs every task through ``wrapper(*head, fn, *args)``."""

    def __init__(self, inner: Executor, wrapper, *head) -> None:
        self.inner, self.wrapper, self.head = inner, wrapper, head

    def submit(self, fn, /, *args, **kwargs):
        return self.inner.submit(self.wrapper, *self.head, fn, *args, **kwargs)


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of 2 worker processes, 1 thread each, closed after the module."""
    distributed = pytest.importorskip("dask.distributed")
    import cloudpickle

    # (this module's helpers travel by value: the workers cannot import it)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


# ------------------------------------------------------------------ the same bits
@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "iid"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_executors_give_the_in_process_bits(name, qmc, dask_client, process_pool):
    p = PROGRAMS[name]()
    here = estimates(p.limit("montecarlo", qmc=qmc, **KW))
    assert here and all(np.isfinite(v) and se > 0 for v, se, _ in here.values())
    assert estimates(p.limit("montecarlo", qmc=qmc, executor=dask_client, **KW)) == here
    assert estimates(p.limit("montecarlo", qmc=qmc, executor=process_pool, **KW)) == here


@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "iid"])
def test_a_training_limit_on_executors(qmc, dask_client, process_pool):
    """``nn.train(...).limit(executor=...)``: outputs and standard errors, bit for bit."""
    run = training_run()
    f, se = training(run, qmc=qmc)
    assert np.all(se[1:] > 0)  # (after a step, the outputs are Monte Carlo estimates)
    for ex in (dask_client.get_executor(), process_pool):
        g, sg = training(run, qmc=qmc, executor=ex)
        assert np.array_equal(g, f) and np.array_equal(sg, se)


def _plan(p):
    plan = Plan(Derivation(p), symbolic=False)
    Deterministic(plan, "montecarlo").run()
    return plan


@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "iid"])
def test_any_chunking_gives_the_same_bits(qmc, dask_client):
    """Chunks of 1, 5 (uneven: 5+5+5+1) or all 16 replicates on two workers, and
    in-process passes of any size and thread count: one result. Tails too."""
    plan = _plan(nonlin_moment())

    def run(**kw):
        tails = {}
        out = run_montecarlo(plan, 16 * 256, 5, qmc=qmc, tails=tails, **kw)
        return out, tails

    here = run()
    assert here[1]  # (k̂ fitted for the Moments)
    for k in (1, 5, 16):
        assert run(executor=dask_client, chunk_replicates=k) == here, k
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(2) as two:
        assert run(executor=one, chunk_replicates=3) == here
        assert run(executor=two, chunk_replicates=2) == here
    # in-process: passes of 1 replicate (max_memory holds one), of 5, of all
    per = max(8 * (len(plan.der.program) + 4 * len(plan.der.bases) + 4), 1)
    M = 256
    for mm in (per * M, 5 * per * M + 1, 2**30):
        assert run(max_memory=mm) == here, mm


def test_replicates_in_pieces_are_the_same_bits_on_workers(process_pool):
    """A replicate larger than ``max_memory`` runs in pieces fixed by the client (a
    power of two of samples): a worker computes the very same sums."""
    plan = _plan(outer())
    mm = 100 * 8 * (len(plan.der.program) + 4 * len(plan.der.bases) + 4 + 4)
    here = run_montecarlo(plan, 4 * 512, 2, batches=4, max_memory=mm)
    assert run_montecarlo(plan, 4 * 512, 2, batches=4, max_memory=mm, executor=process_pool) == here
    whole = run_montecarlo(plan, 4 * 512, 2, batches=4)
    assert whole.keys() == here.keys() and whole != here  # (other pieces, other sums)


# ------------------------------------------------------------------ failures
def test_a_killed_dask_worker_is_survived(dask_client, tmp_path):
    """The first task kills its worker process (``os._exit``): Dask reschedules it on
    the other worker (the nanny restarts the dead one) and the result is unchanged."""
    p = nonlin_moment()
    here = estimates(p.limit("montecarlo", **KW))
    flag = tmp_path / "die"
    flag.write_text("")
    ex = Wrapped(dask_client.get_executor(), _die_once, str(flag))
    assert estimates(p.limit("montecarlo", executor=ex, **KW)) == here
    assert not flag.exists() and (tmp_path / "die.taken").exists()  # (a worker did die)


def test_a_killed_pool_worker_is_reported_naming_the_chunk(tmp_path):
    """A ProcessPoolExecutor whose worker dies is broken for good: an ExecutorError
    names a chunk and its replicates, says what to do, and chains BrokenProcessPool."""
    flag = tmp_path / "die"
    flag.write_text("")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(tp.ExecutorError, match=r"chunk \d+ \(replicate") as info:
            nonlin_moment().limit("montecarlo", executor=Wrapped(pool, _die_once, str(flag)), **KW)
    assert isinstance(info.value.__cause__, BrokenProcessPool)
    assert "dask.distributed" in str(info.value) and info.value.chunk is not None


@pytest.mark.parametrize("where", ["threads", "dask"])
def test_a_failing_chunk_is_retried_then_reported(where, tmp_path, request):
    """Ordinary exceptions: retried (the same bits after two failures); after
    ``RETRIES`` resubmissions an ExecutorError names the chunk and the exception. (Dask
    keys a task by its arguments: a retry is a new task, not the failed one again.)"""
    p = nonlin_moment()
    here = estimates(p.limit("montecarlo", **KW))
    with contextlib.ExitStack() as stack:
        if where == "dask":
            pool = request.getfixturevalue("dask_client").get_executor()
        else:
            pool = stack.enter_context(ThreadPoolExecutor(2))
        ok = Wrapped(pool, _fail, str(tmp_path / "twice"), 2)
        assert estimates(p.limit("montecarlo", executor=ok, **KW)) == here
        bad = Wrapped(pool, _fail, str(tmp_path / "always"), 10**6)
        with pytest.raises(tp.ExecutorError, match=r"chunk \d+ .*ConnectionError") as info:
            p.limit("montecarlo", executor=bad, **KW)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert f"failed {RETRIES + 1} time(s)" in str(info.value)


def test_the_programs_own_errors_are_not_retried():
    """A TensorProgramError raised in a task is the program's own (the same
    in-process): re-raised at once, never resubmitted."""
    calls = []
    lock = threading.Lock()

    def numerical(fn, shipped, work, chunk, attempt):
        if chunk.index == 0:
            with lock:
                calls.append(attempt)
            raise tp.NumericalError("Monte Carlo estimate of m is not finite (nan)")
        return fn(shipped, work, chunk, attempt)

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(tp.NumericalError, match="not finite"):
            nonlin_moment().limit("montecarlo", executor=Wrapped(pool, numerical), **KW)
    assert calls == [0]


def test_executor_must_be_an_executor():
    with pytest.raises(tp.ProgramTypeError, match="executor must be None"):
        nonlin_moment().limit("montecarlo", executor="dask", **KW)


# ------------------------------------------------------------------ progress, imports
def test_the_progress_bar_advances_as_chunks_complete(monkeypatch, process_pool):
    updates, lines = [], []

    class Bar:
        def __init__(self, total, **kw):
            self.total = total

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

        @staticmethod
        def write(s, file=None):
            lines.append(s)

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    nonlin_moment().limit("montecarlo", executor=process_pool, progress=True, **KW)
    assert sum(updates) == 16 and len(updates) == 16  # (16 chunks of one replicate)
    assert "16 chunks on ProcessPoolExecutor" in lines[0]


def test_the_core_runs_without_dask():
    """``import tensorprog`` and an in-process Monte Carlo limit import no dask."""
    code = (
        "import sys, tensorprog as tp\n"
        "p = tp.Program('p'); v = p.vector('v'); tp.mean(tp.sin(tp.tanh(v) * v), name='k')\n"
        "p.limit('montecarlo', samples=64)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_coordinate_check_and_lr_sweep_on_an_executor(dask_client):
    """``executor=`` reaches the Monte Carlo of a coordinate check's limits and of a
    learning-rate sweep's width-∞ points: the same bits as in-process."""
    pd = pytest.importorskip("pandas")
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.NTK(2))
    run = nn.train_sgd(net, np.array([[1.0, 0.5]]), [1.0], lr=1.0, steps=1)
    cols = ["tensor", "step", "limit", "limit_se"]
    here = nn.coord_check(run, widths=[64, 128], seeds=2, limit=dict(KW)).summary
    there = nn.coord_check(
        run, widths=[64, 128], seeds=2, limit={**KW, "executor": dask_client}
    ).summary
    assert here["limit_se"].gt(0).any()  # (Monte Carlo limits)
    pd.testing.assert_frame_equal(here[cols], there[cols], check_exact=True)

    def sweep(**kw):
        return nn.lr_sweep(
            lambda lr: nn.train_sgd(net, np.array([[1.0, 0.5]]), [1.0], lr=lr, steps=1),
            lrs=[0.25, 0.5, 1.0],
            widths=[None],
            steps=1,
            limit_kw={**KW, **kw},
            bootstrap=20,
        ).data

    data = sweep()
    assert data["stderr"].gt(0).all()  # (the limit's points are Monte Carlo estimates)
    pd.testing.assert_frame_equal(data, sweep(executor=dask_client), check_exact=True)


def test_a_worker_plan_of_another_structure_is_refused():
    """A worker's re-derived plan must have the client's structure (its requests'
    dependencies and constants), not only as many requests: otherwise the client's
    numbers would land on other requests. Checked in a fresh process's view of the
    shipped plan (pickled: no local plan)."""
    import pickle

    from tensorprog.engine.montecarlo.distributed import ShippedPlan, plan_structure
    from tensorprog.engine.montecarlo.schedule import _Schedule

    plan = _plan(nonlin_moment())
    shipped = ShippedPlan(plan, _Schedule(plan))
    there = pickle.loads(pickle.dumps(shipped))
    assert there.local is None
    assert plan_structure(there.plan()[0]) == shipped.structure  # the same structure
    bad = pickle.loads(pickle.dumps(shipped))
    bad.structure, bad.digest = plan_structure(_plan(outer())), "another"
    with pytest.raises(tp.ExecutorError, match="differs from the client's"):
        bad.plan()
