"""The OuterNonlin instruction (NE⊗OR⊤ nonlinear outer product, TP IVb Def 2.6.1/2.6.5).

References, none of which imports the code under test:

* a finite-width network written here in plain numpy (``y_α = (1/n) Σ_β ψ(·)`` as an
  explicit ``n × n`` array), over widths and seeds, extrapolated linearly in ``1/n``
  (the Master Theorem's leading finite-width correction of a mean is ``O(1/n)``),
  compared with the limit within 4 combined standard errors;
* closed forms for a ψ polynomial in its col arguments.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy

import tensorprog as tp

EPS = 0.3
THETA = 0.5


def _program() -> tuple[tp.Program, list]:
    """Rows and cols that depend on MatMuls of one matrix (``b = Wᵀ tanh(W v)`` has a Ż
    term, and ``W y1`` has a Ż term through ``y1``'s row ``b``), a scalar parameter and
    a numeric constant, two non-separable ψ."""
    p = tp.Program("outer")
    W = p.matrix("W")
    v, u = p.vector("v"), p.vector("u")
    th = p.scalar("th", THETA)
    h = W @ v
    a = tp.tanh(h)
    b = W.T @ a
    c = h + th
    y1 = tp.outer_nonlin(lambda r, s, t: sympy.sign(r * s) * t, [b], [c, u * u], name="y1")
    y2 = tp.outer_nonlin(
        lambda r, s, e: r * s / sympy.sqrt(r**2 * s**2 + e**2), [b], [c], [EPS], name="y2"
    )
    z = W @ y1
    ks = [
        tp.inner(y1, v, name="k1"),
        tp.mean(y1 * y1, name="k2"),
        tp.inner(y2, b, name="k3"),
        tp.inner(z, a, name="k4"),
        tp.mean(y2 * y2, name="k5"),
    ]
    return p, ks


def _numpy_network(n: int, rng: np.random.Generator) -> np.ndarray:
    """The same program at width n, written out (explicit n × n outer arrays)."""
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    v, u = rng.standard_normal(n), rng.standard_normal(n)
    h = W @ v
    a = np.tanh(h)
    b = W.T @ a
    c = h + THETA
    B, C = b[:, None], c[None, :]
    y1 = (np.sign(B * C) * (u * u)[None, :]).mean(axis=1)
    y2 = (B * C / np.sqrt(B**2 * C**2 + EPS**2)).mean(axis=1)
    z = W @ y1
    return np.array([y1 @ v / n, y1 @ y1 / n, y2 @ b / n, z @ a / n, y2 @ y2 / n])


def _extrapolate(widths: list[int], seeds: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Intercept at 1/n = 0 of a weighted least-squares line through the seed means at
    each width, and its standard error (from the seeds' spread)."""
    means, var = [], []
    for n in widths:
        rng = np.random.default_rng(1000 + n)
        vals = np.array([_numpy_network(n, rng) for _ in range(seeds[n])])
        means.append(vals.mean(0))
        var.append(vals.var(0, ddof=1) / seeds[n])
    x = 1.0 / np.array(widths, dtype=float)
    X = np.stack([np.ones_like(x), x], axis=1)
    out, se = [], []
    for j in range(len(means[0])):
        w = 1.0 / np.array([vv[j] for vv in var])
        A = X.T @ (w[:, None] * X)
        cov = np.linalg.inv(A)
        beta = cov @ (X.T @ (w * np.array([m[j] for m in means])))
        out.append(beta[0])
        se.append(np.sqrt(cov[0, 0]))
    return np.array(out), np.array(se)


@pytest.mark.slow  # ≈ 2 s idle: 60 numpy networks (n ≤ 1024) and one limit
def test_limit_matches_finite_width_extrapolated():
    """sign(a·b)·t and a·b/√(a²b²+ε²): the Monte Carlo limit (inner expectation over the
    replicate's other samples) against numpy networks at n = 128 … 1024."""
    p, ks = _program()
    lim = p.limit(samples=2**14, seed=3)
    widths = [128, 256, 512, 1024]
    ref, ref_se = _extrapolate(widths, {128: 32, 256: 16, 512: 8, 1024: 4})
    for j, k in enumerate(ks):
        assert lim.method(k) == "montecarlo"
        se = np.hypot(ref_se[j], lim.stderr(k))
        assert abs(lim[k] - ref[j]) <= 4 * se, (k.name, lim[k], ref[j], se)


def test_simulate_is_the_numpy_network():
    """simulate(n) computes y_α = (1/n) Σ_β ψ exactly (blocks of rows), on its own draws."""
    p, ks = _program()
    n = 300
    sim = p.simulate(n, seed=7)
    W, v, u = sim.matrix("W"), sim.vector("v"), sim.vector("u")
    h = W @ v
    b = W.T @ np.tanh(h)
    c = h + THETA
    y1 = np.array([np.mean(np.sign(bi * c) * u * u) for bi in b])
    y2 = np.array([np.mean(bi * c / np.sqrt(bi**2 * c**2 + EPS**2)) for bi in b])
    np.testing.assert_allclose(sim.vector("y1"), y1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sim.vector("y2"), y2, rtol=1e-12, atol=1e-14)


def test_dsl_errors():
    p = tp.Program()
    x = p.vector("x")
    s = p.scalar("s", 1.0)
    with pytest.raises(tp.ProgramValueError, match="at least one row"):
        tp.outer_nonlin(lambda a: a, [], [x])
    with pytest.raises(tp.ProgramTypeError, match="rows must be vectors"):
        tp.outer_nonlin(lambda a, b: a * b, [s], [x])
    with pytest.raises(tp.ProgramValueError, match="takes 2 vector"):
        a, b = sympy.symbols("a b", real=True)
        tp.outer_nonlin(tp.Nonlinearity("f", a * b, [a, b]), [x], [x, x])
    q = tp.Program()
    w = q.vector("w")
    with pytest.raises(tp.ForeignHandleError):
        tp.outer_nonlin(lambda a, b: a * b, [x], [w])
    # the same computation twice is one instruction
    y = tp.outer_nonlin(lambda a, b: a * b**2, [x], [x])
    assert tp.outer_nonlin(lambda a, b: a * b**2, [x], [x]) == y


# ---------------------------------------------------------------------------------------
# ψ polynomial in its cols: the inner expectation is a moment (closed forms below)

S2 = 1.5  # σ_W²


def _separable() -> tuple[tp.Program, dict[str, float]]:
    """ψ = a·b²: Z^y = Z^{row} 𝔼[(Z^{col})²]. With v, u ~ N(0, 1), N(0, 2), h = W v
    (Var Ẑ = σ²): y1 = v·𝔼u² = 2v, y2 = h·𝔼u² = 2h, y3 = h·𝔼h² = σ² h; ZDot through
    the rows only: Ż^{Wᵀy2} = σ²·2·v, Ż^{Wᵀy3} = σ²·σ²·v."""
    p = tp.Program("separable")
    W = p.matrix("W", var=S2)
    v, u = p.vector("v"), p.vector("u", var=2.0)
    h = W.matmul(v, name="h")
    psi = lambda a, b: a * b**2  # noqa: E731
    y1 = tp.outer_nonlin(psi, [v], [u], name="y1")
    y2 = tp.outer_nonlin(psi, [h], [u], name="y2")
    y3 = tp.outer_nonlin(psi, [h], [h], name="y3")
    tp.inner(y1, v, name="k1")
    tp.inner(W.T.matmul(y2, name="z2"), v, name="k2")
    tp.inner(W.T.matmul(y3, name="z3"), v, name="k3")
    tp.mean(y3 * y3, name="k4")
    closed = {"k1": 2.0, "k2": S2 * 2.0, "k3": S2 * S2, "k4": S2**2 * S2}
    return p, closed


def test_separable_exact_equals_closed_form():
    p, closed = _separable()
    lim = p.limit(method="exact")
    for k, val in closed.items():
        assert lim.method(k) == "exact"
        assert lim[k] == pytest.approx(val, rel=1e-12, abs=1e-12), k
    mc = p.limit(method="montecarlo", samples=2**14, seed=1)
    for k, val in closed.items():
        assert abs(mc[k] - val) <= 4 * mc.stderr(k), (k, mc[k], val, mc.stderr(k))


def test_exact_refuses_naming_the_outer_nonlin():
    p = tp.Program()
    x = p.vector("x")
    y = tp.outer_nonlin(lambda a, b: sympy.sign(a - b), [x], [x + 1], name="y")
    tp.mean(y * x, name="k")
    for method in ("exact", "quadrature"):
        with pytest.raises(tp.MethodUnavailableError, match=r"OuterNonlin y(.|\n)*`y = mean_β"):
            p.limit(method=method)
    assert p.limit(samples=2**12).method("k") == "montecarlo"  # auto falls back


# ---------------------------------------------------------------------------------------
# honest standard errors: coverage over seeds against closed forms


@pytest.mark.slow  # ≈ 4 s idle: 24 limits, each run at two inner block sizes
def test_standard_error_coverage():
    """ψ = sign(a − b), rows h = W v (Var σ²), cols u ~ N(0, 1): Z^y = 2Φ(Z^h) − 1.
    𝔼[y²] and 𝔼[y h] by scipy quadrature, ⟨Wᵀy, v⟩ = σ² 𝔼[2φ(Z^h)] = 2σ²/√(2π(1+σ²)).
    ``y0`` has the limit 0, so ``𝔼[y0²]`` measures only the inner average's bias, which
    the replicates all share: the standard error must include its bound.
    Over 12 seeds each, QMC and iid, (estimate − truth)/stderr behaves like a t with
    15 degrees of freedom: 𝔼z² = 15/13 (the bound 2.75 allows three standard
    deviations, √(Var t²/12) = 0.53, of the mean of 12 values) and |z| < 2.5 with
    probability 0.975 (at least 10 of 12). A bias of the inner average that the
    replicates do not show would fail it."""
    from scipy import integrate
    from scipy.stats import norm

    p = tp.Program("coverage")
    W = p.matrix("W", var=S2)
    v, u = p.vector("v"), p.vector("u")
    h = W @ v
    y = tp.outer_nonlin(lambda a, b: sympy.sign(a - b), [h], [u], name="y")
    # Z^{y0} = 𝔼 u' · 𝔼^{(1)}[…] = 0: 𝔼[y0²] = 0 is all inner-average bias (b ∝ 1/m)
    y0 = tp.outer_nonlin(lambda a, b, c: sympy.tanh(a * c + 0.3) * b, [h], [u, h], name="y0")
    ks = [
        tp.mean(y * y, name="k1"),
        tp.inner(y, h, name="k2"),
        tp.inner(W.T @ y, v, name="k3"),
        tp.mean(y0 * y0, name="k4"),
    ]

    def gauss(f):
        dens = lambda x: np.exp(-x * x / (2 * S2)) / np.sqrt(2 * np.pi * S2)  # noqa: E731
        return integrate.quad(lambda x: f(x) * dens(x), -np.inf, np.inf, epsabs=1e-13)[0]

    truth = [
        gauss(lambda x: (2 * norm.cdf(x) - 1) ** 2),
        gauss(lambda x: (2 * norm.cdf(x) - 1) * x),
        2 * S2 / np.sqrt(2 * np.pi * (1 + S2)),
        0.0,
    ]
    for qmc in (True, False):
        z = np.array(
            [
                [(lim[k] - t) / lim.stderr(k) for k, t in zip(ks, truth)]
                for lim in (p.limit(samples=2**11, seed=s, qmc=qmc) for s in range(12))
            ]
        )
        assert (z**2).mean(axis=0).max() <= 2.75, (qmc, z)
        assert (abs(z) < 2.5).mean(axis=0).min() >= 10 / 12, (qmc, z)


# ---------------------------------------------------------------------------------------
# LaTeX (golden) and save/load


def test_latex_golden():
    p = tp.Program("latex")
    W = p.matrix("W")
    v = p.vector("v")
    th = p.scalar("th", 0.5)
    h = W.matmul(v, name="h")
    y = tp.outer_nonlin(lambda r, s, w, t: sympy.sign(r * s) * w * t, [h], [h, v], [th], name="y")
    y2 = tp.outer_nonlin(lambda r, s: r * s**2, [v], [h], name="y2")
    tp.inner(y, v, name="k")
    tp.inner(y2, v, name="k2")
    assert p.latex() == (
        "\\begin{align*}\n"
        "W_{\\alpha\\beta} &\\sim \\mathcal{N}\\left(0, 1/n\\right) \\\\\n"
        "v_{\\alpha} &\\sim \\mathcal{N}\\left(0, 1\\right) \\\\\n"
        "\\mathrm{th} &= 0.5 \\\\\n"
        "h &= W v \\\\\n"
        "y_{\\alpha} &= \\frac{1}{n} \\sum_{\\beta=1}^{n} v_{\\beta} \\mathrm{th} "
        "\\operatorname{sign}{\\left(h_{\\beta} h_{\\alpha} \\right)} \\\\\n"
        "y_{2,\\alpha} &= \\frac{1}{n} \\sum_{\\beta=1}^{n} h_{\\beta}^{2} v_{\\alpha} \\\\\n"
        "k &= \\frac{1}{n} \\sum_{\\alpha=1}^{n} v_{\\alpha} y_{\\alpha} \\\\\n"
        "k_{2} &= \\frac{1}{n} \\sum_{\\alpha=1}^{n} v_{\\alpha} y_{2,\\alpha}\n"
        "\\end{align*}"
    )
    rows = p.limit(samples=2**12).latex().split(" \\\\\n")
    outer = [i for i, r in enumerate(rows) if "ZOuterNonlin" in r]
    assert [rows[i] for i in outer] == [
        "Z^{y} &= \\mathbb{E}^{(1)}\\left[\\mathring{\\mathrm{th}} Z^{v\\,(1)} "
        "\\operatorname{sign}{\\left(Z^{h\\,(1)} Z^{h} \\right)}\\right] && \\text{ZOuterNonlin}",
        "Z^{y_{2}} &= \\mathbb{E}^{(1)}\\left[\\left(Z^{h\\,(1)}\\right)^{2} Z^{v}\\right] "
        "= \\mathbb{E}\\left[\\left(Z^{h}\\right)^{2}\\right] Z^{v} && \\text{ZOuterNonlin}",
    ]
    assert rows[outer[0] + 1] == (
        "&\\quad \\bigl(Z^{h\\,(1)}, Z^{v\\,(1)}\\bigr) \\overset{\\text{iid}}{\\sim} "
        "\\bigl(Z^{h}, Z^{v}\\bigr)"
    )
    assert rows[outer[1] + 1 : outer[1] + 3] == [
        "&\\quad Z^{h\\,(1)} \\overset{\\text{iid}}{\\sim} Z^{h}",
        "&\\quad \\mathbb{E}\\left[\\left(Z^{h}\\right)^{2}\\right] = 1",
    ]


def test_save_load_roundtrip(tmp_path):
    p, ks = _program()
    path = tmp_path / "outer.json"
    p.save(path)
    q = tp.load(path)
    assert str(q) == str(p) and q.latex() == p.latex()
    a, b = p.limit(samples=2**12, seed=5), q.limit(samples=2**12, seed=5)
    assert [a[k.name] for k in ks] == [b[k.name] for k in ks]
    s, t = _separable()[0], None
    s.save(path)
    t = tp.load(path)
    assert t.limit(method="exact").values == s.limit(method="exact").values
    saved = json.loads(path.read_text())["program"]["instructions"]
    outer = [d for d in saved if d["op"] == "outer_nonlin"]
    assert [(d["rows"], d["cols"]) for d in outer] == [
        (["v"], ["u"]),
        (["h"], ["u"]),
        (["h"], ["h"]),
    ]


def test_graph_and_chunks():
    """Program.graph has the OuterNonlin's edges with argument positions (rows, cols,
    params); a replicate run in chunks (small max_memory: 4 chunks) averages within
    its chunks and agrees with whole replicates within their standard errors."""
    p = tp.Program()
    W, v, u = p.matrix("W"), p.vector("v"), p.vector("u")
    t = p.scalar("t", 0.3)
    h = W.matmul(v, name="h")
    y = tp.outer_nonlin(lambda a, b, c, s: sympy.tanh(a * b + s) * c, [h], [u, h], [t], name="y")
    g = p.graph
    assert [g.edges[a, "y"]["positions"] for a in ("h", "u", "t")] == [[0, 2], [1], [3]]
    k = tp.inner(W.T @ y, v, name="k")
    whole = p.limit(samples=2**11, seed=2, batches=4)
    chunked = p.limit(samples=2**11, seed=2, batches=4, max_memory=32 * 2**10)
    assert abs(whole[k] - chunked[k]) <= 4 * np.hypot(whole.stderr(k), chunked.stderr(k))
