"""Results as tables: ``to_pandas()`` and HTML of limits, simulations and training runs.

Every number in a table is checked against the result's own accessors *and* against an
independent value: a closed form, scipy quadrature, or the same finite-width run
recomputed in numpy from the sampled matrices.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import integrate, special

import tensorprog as tp
from tensorprog import nn
from tensorprog.core.tables import Column, Table, code, number

pd = pytest.importorskip("pandas", reason="pandas is in the notebook and dev extras")

LIMIT_COLUMNS = ["name", "value", "stderr", "error", "method", "trusted", "khat", "warning"]


def _quartic() -> float:
    """𝔼[1/(v⁴ − v + 2)], v ~ N(0, 1), by scipy quadrature."""
    return integrate.quad(
        lambda u: math.exp(-u * u / 2) / math.sqrt(2 * math.pi) / (u**4 - u + 2), -np.inf, np.inf
    )[0]


def test_limit_to_pandas_one_row_per_scalar():
    """Exact (𝔼 relu(Z)² = σ²/2 with σ² = 2·𝔼x² = 2), quadrature of an expectation whose
    existence is not proven (untrusted: stderr NaN, error inf, a warning), in order."""
    p = tp.Program("table")
    W, x, v = p.matrix("W", var=2.0), p.vector("x"), p.vector("v")
    tp.mean(tp.relu(W @ x) ** 2, name="k")
    tp.mean(1 / (v**4 - v + 2), name="q")
    with pytest.warns(tp.UnreliableValueWarning):
        lim = p.limit("quadrature")
    df = lim.to_pandas()
    assert list(df.columns) == LIMIT_COLUMNS
    assert list(df.name) == ["k", "q"] == list(lim.values)
    k, q = df.iloc[0], df.iloc[1]
    assert k.value == pytest.approx(1.0, abs=1e-12) and k.method in ("exact", "quadrature")
    assert k.trusted and k.warning == "" and k.error <= 1e-9 and math.isnan(k.khat)
    assert q.value == pytest.approx(_quartic(), abs=1e-9) and q.method == "quadrature"
    assert not q.trusted and "existence not proven" in q.warning
    assert math.isnan(q.stderr) and q.error == math.inf
    for row in df.itertuples():  # the same numbers as the accessors
        assert (row.value, row.method, row.trusted) == (
            lim[row.name],
            lim.method(row.name),
            lim.trusted(row.name),
        )
        assert row.error == lim.error(row.name)


def test_limit_to_pandas_montecarlo_stderr_and_khat():
    """𝔼 sigmoid(v)² by Monte Carlo: the row's stderr and k̂ are the Limit's, and the value
    is within 6 standard errors of quadrature. (A sigmoid's body, 1/(1 + e^{−v}), is not
    read as polynomially bounded, so its tail is fitted.)"""
    p = tp.Program("mc")
    v = p.vector("v")
    tp.mean(tp.sigmoid(v) ** 2, name="t")
    lim = p.limit(method="montecarlo", samples=2**14, seed=1)
    row = lim.to_pandas().iloc[0]
    ref = integrate.quad(
        lambda u: math.exp(-u * u / 2) / math.sqrt(2 * math.pi) * special.expit(u) ** 2,
        -np.inf,
        np.inf,
    )[0]
    assert row.method == "montecarlo" and row.stderr == lim.stderr("t") > 0
    assert abs(row.value - ref) <= 6 * row.stderr
    assert row.khat == lim.khat("t") and row.khat < 0.5 and row.trusted


def test_html_is_the_same_table():
    p = tp.Program("html")
    v = p.vector("v")
    tp.mean(v * v, name="vv")
    lim, sim = p.limit(), p.simulate(64, seed=2)
    h = lim._repr_html_()
    assert "<tr><td><code>vv</code></td><td>1</td><td></td><td>exact</td></tr>" in h
    assert h == lim.tabulate().html()
    s = sim._repr_html_()
    assert f"<td><code>vv</code></td><td>{float(np.mean(sim.vector('v') ** 2)):.10g}</td>" in s


def test_long_tables_elide_the_middle_in_html():
    rows = tuple((f"s{i}", float(i)) for i in range(1000))
    t = Table("long", (Column("name", "name", code), Column("value", "value", number)), rows)
    h = t.html()
    assert h.count("<tr><td>") == t.max_html_rows and "800 more rows" in h
    assert "<code>s0</code>" in h and "<code>s999</code>" in h and "<code>s500</code>" not in h
    assert len(t.to_pandas()) == 1000


def test_simulation_to_pandas_matches_numpy():
    """The simulated scalars, recomputed in numpy from the run's own matrix and vector."""
    p = tp.Program("sim")
    W, x = p.matrix("W", var=2.0), p.vector("x")
    tp.mean(tp.relu(W @ x) ** 2, name="k")
    tp.inner(x, x, name="q")
    sim = p.simulate(128, seed=5)
    df = sim.to_pandas()
    assert list(df.columns) == ["name", "value", "n", "seed"]
    Wm, xv = sim.matrix("W"), sim.vector("x")
    want = {"k": np.mean(np.maximum(Wm @ xv, 0) ** 2), "q": np.mean(xv * xv)}
    assert dict(zip(df.name, df.value)) == pytest.approx(want, rel=1e-12)
    assert set(df.n) == {128} and set(df.seed) == {5}


@pytest.fixture(scope="module")
def run():
    net = nn.MLP(d_in=1, depth=1, nonlin="tanh", param=nn.muP(1))
    return nn.train_sgd(net, [[1.0], [0.5]], [1.0, 0.0], lr=0.5, steps=1, X_eval=[[0.2]])


def test_training_tables_hold_the_arrays(run):
    lim, sim = run.limit(), run.simulate(256, seed=0)
    for res, cols in ((lim, LIMIT_COLUMNS[1:]), (sim, ["value", "n", "seed"])):
        df = res.to_pandas()
        assert list(df.columns) == ["quantity", "step", "layer", "i", "j", "name"] + cols
        assert len(df) == res.outputs.size + res.eval_outputs.size + res.feature_kernels.size
        assert str(df.step.dtype) == "Int64" and df[df.quantity == "output"].layer.isna().all()
        out = df[df.quantity == "output"].pivot(index="step", columns="i", values="value")
        np.testing.assert_array_equal(out.to_numpy(), res.outputs)
        ev = df[df.quantity == "eval_output"].pivot(index="step", columns="i", values="value")
        np.testing.assert_array_equal(ev.to_numpy(), res.eval_outputs)
        fk = df[df.quantity == "feature_kernel"]
        got = np.full(res.feature_kernels.shape, np.nan)
        got[fk.step, fk.layer - 1, fk.i, fk.j] = fk.value
        np.testing.assert_array_equal(got, res.feature_kernels)
        assert res._repr_html_().startswith("<table>")
    stderr = (
        lim.to_pandas()
        .query("quantity == 'output'")
        .pivot(index="step", columns="i", values="stderr")
    )
    np.testing.assert_array_equal(stderr.to_numpy(), lim.stderr)
    f1 = run.outputs[1]  # the rows are the Simulation's own values, in array order
    assert [sim.simulation[h] for h in f1] == list(sim.to_pandas().value[2:4])


def test_training_result_without_its_run_says_so(run):
    sim = run.simulate(8, seed=0)
    bare = nn.training.TrainingSimulation(sim.outputs, sim.eval_outputs, None, sim.simulation)
    with pytest.raises(tp.ProgramValueError, match="run=None"):
        bare.to_pandas()


def test_missing_pandas_names_the_extra(monkeypatch):
    p = tp.Program("nopd")
    tp.mean(p.vector("v") ** 2, name="m")
    lim = p.limit()
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    with pytest.raises(tp.OptionalDependencyError, match=r"tensorprog\[notebook\]") as err:
        lim.to_pandas()
    assert isinstance(err.value, ImportError)
    assert lim._repr_html_().startswith("<table>")  # HTML does not need pandas


def test_notebook_progress_bar_is_a_widget_without_warnings():
    """What ``progress=True`` (``tqdm.auto``) draws in Jupyter: with ipywidgets installed
    (the notebook extra) the notebook bar is an ipywidgets box and tqdm warns nothing
    (without it: "IProgress not found"). The whole path in a real kernel is checked by
    ``python benchmarks/jupyter_progress.py`` (a kernel start is too slow for the suite)."""
    import warnings

    ipywidgets = pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = tqdm(total=2, desc="Monte Carlo", leave=False)
        bar.update(2)
        bar.close()
    assert not caught, [str(w.message) for w in caught]
    assert isinstance(bar.container, ipywidgets.HBox)
