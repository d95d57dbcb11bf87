"""Heavy tails in Monte Carlo: the defensive mixture for ``e^{a·relu}``, robust intervals
for values without a variance, the tail draws of QMC runs, and rounding noise.

References: closed forms written here — ``𝔼|Z|^p = 2^{p/2} Γ((p+1)/2)/√π`` and, for
``v ~ N(μ, s²)``, ``𝔼 e^{a relu(v)} = Φ(−μ/s) + e^{aμ + a²s²/2} Φ(μ/s + as)``.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import sympy
from scipy.special import gamma, ndtr
from scipy.stats import t as student_t

import tensorprog as tp
from tensorprog.engine.derivation import Derivation
from tensorprog.engine.existence import degree
from tensorprog.engine.growth import moment_degrees
from tensorprog.engine.tails import khat_of_tops


def abs_moment(p: float) -> float:
    """𝔼|Z|^p, Z ~ N(0, 1), p > −1."""
    return 2 ** (p / 2) * gamma((p + 1) / 2) / math.sqrt(math.pi)


def exp_relu_mean(a: float, mu: float, s: float) -> float:
    return ndtr(-mu / s) + math.exp(a * mu + a * a * s * s / 2) * ndtr(mu / s + a * s)


def heavy_program(power: float = 0.7):
    p = tp.Program("heavy")
    v = p.vector("v")
    k = tp.mean(tp.abs(v) ** -power, name="k")
    t = tp.mean(tp.tanh(v) ** 2, name="t")
    return p, k, t


@pytest.mark.parametrize("qmc", [True, False], ids=["qmc", "iid"])
@pytest.mark.parametrize("a", [2.0, 4.0])
def test_exp_relu_is_sampled_from_a_defensive_mixture(a, qmc):
    """𝔼 e^{a relu(v)}: the tilt e^{av} leaves h = e^{a relu(−v)}, which the mixture of the
    two laws keeps bounded — a light tail (k̂ < 1/2, trusted) and a value within 5
    standard errors of the closed form. Without the mixture, a = 2 gave k̂ ≈ 0.65
    (flagged) and a = 4 missed by 2.5 of its standard errors."""
    p = tp.Program("exprelu")
    v = p.vector("v", mean=0.3, var=0.8)
    k = tp.mean(tp.exp(a * tp.relu(v)), name="k")
    lim = p.limit(method="montecarlo", samples=2**16, seed=3, qmc=qmc)
    ref = exp_relu_mean(a, 0.3, math.sqrt(0.8))
    assert lim.trusted(k) and lim.khat(k) < 0.5
    assert abs(lim[k] - ref) <= 5 * lim.stderr(k)
    assert lim.stderr(k) < 3e-3 * ref  # (the untilted estimate's is ~0.4 % at a = 2, QMC)


def test_robust_interval_of_a_value_without_variance():
    """𝔼|v|^{−0.7} (k = 0.7) is flagged, and its interval (the generalized CLT's)
    contains the closed form on most seeds: 95 % nominal, ≥ 7 of 8 asked here (the
    benchmark measures 94 % over 100 seeds). A trusted value's interval is Student's t
    with batches − 1 degrees of freedom."""
    p, k, t = heavy_program()
    ref = abs_moment(-0.7)
    hits, finite = 0, 0
    for seed in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tp.UnreliableValueWarning)
            lim = p.limit(method="montecarlo", samples=2**16, seed=seed, qmc=seed % 2 == 0)
        lo, hi = lim.interval(k)
        assert lo < lim[k] < hi
        if lim.trusted(k):  # (k̂ below 1/2 by chance)
            hits += lo <= ref <= hi
            continue
        finite += math.isfinite(hi)
        hits += lo <= ref <= hi
        lo_t, hi_t = lim.interval(t)
        half = student_t.ppf(0.975, 15) * lim.stderr(t)
        assert (lo_t, hi_t) == pytest.approx((lim[t] - half, lim[t] + half), rel=1e-12)
    assert hits >= 7 and finite >= 4


def test_interval_of_exact_and_quadrature_values_and_bad_levels():
    p = tp.Program("det")
    W, x = p.matrix("W", var=2.0), p.vector("x")
    k = tp.inner(x, W.T @ (W @ x), name="k")
    q = tp.mean(tp.tanh(W @ x) ** 2, name="q")
    lim = p.limit()
    assert lim.interval(k) == (2.0, 2.0)
    lo, hi = lim.interval(q)
    assert lo <= lim[q] <= hi and hi - lo == pytest.approx(2 * lim.error(q))
    for bad in (0, 1, 1.5, "0.9", float("nan")):
        with pytest.raises(tp.TensorProgramError, match="level"):
            lim.interval(k, bad)


def test_saved_limits_keep_flags_khat_and_intervals(tmp_path):
    p, k, t = heavy_program()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tp.UnreliableValueWarning)
        lim = p.limit(method="montecarlo", samples=2**16, seed=0)
    assert not lim.trusted(k)
    path = tmp_path / "heavy.json"
    tp.io.save(lim, path)
    back = tp.load(path)
    for name in ("k", "t"):
        assert back.trusted(name) == lim.trusted(name)
        assert back.khat(name) == lim.khat(name)
        assert back.interval(name) == lim.interval(name)
        assert back.stderr(name) == lim.stderr(name) and back.error(name) == lim.error(name)
    assert back.warnings == lim.warnings
    assert "not trusted" in repr(back)
    doc = json.loads(path.read_text())
    row = next(r for r in doc["limit"]["scalars"] if r["name"] == "k")
    for bad in (
        {"alpha": 2.5, "scale": 0.1},
        {"alpha": 0.0, "scale": 0.1},
        {"alpha": 1.5, "scale": -1.0},
        {"alpha": 1.5},
        "x",
    ):
        row["stable"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(tp.FormatError, match="stable|scale|alpha"):
            tp.load(path)
    row["stable"] = {"alpha": 1.5, "scale": 0.1}
    del row["warning"]
    path.write_text(json.dumps(doc))
    with pytest.raises(tp.FormatError, match="not trusted"):
        tp.load(path)


def test_a_flagged_quadrature_value_can_be_saved(tmp_path):
    """An unproven expectation computed by quadrature has stderr NaN in the API (never a
    0 that vouches for it); saving it used to fail on that NaN."""
    p = tp.Program("unproven")
    v = p.vector("v")
    k = tp.mean(tp.nonlin(lambda z: 1 / (2 + sympy.sin(z)), v), name="k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lim = p.limit(method="quadrature")
    assert not lim.trusted(k) and math.isnan(lim.stderr(k))
    path = tmp_path / "u.json"
    tp.io.save(lim, path)
    back = tp.load(path)
    assert back[k.name] == lim[k] and back.trusted("k") == lim.trusted(k)


def test_qmc_tail_draws_see_the_singularity():
    """The tail diagnostic of a QMC run sees a prefix of each replicate: every 16th point
    of a Sobol' sequence lies in one slab of width 1/16 of its first coordinate and
    missed v = 0 — 𝔼|v|^{−0.7} then looked light-tailed (k̂ ≈ −0.9, trusted, 9 standard
    errors off) on 4 of 20 seeds."""
    p, k, _ = heavy_program()
    for seed in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tp.UnreliableValueWarning)
            lim = p.limit(method="montecarlo", samples=2**18, seed=seed, qmc=True)
        assert lim.khat(k) > 0.4, seed


def test_rounding_noise_is_not_a_heavy_tail():
    """Tops with only a few distinct values (rounding noise of an integrand that is 0 in
    exact arithmetic) are an atom, not a Pareto tail: a fit to two values gave 6·10¹⁵."""
    tops = np.concatenate([np.full(334, 7.9e-31), np.full(51, 3.2e-30)])[None]  # (as seen)
    assert khat_of_tops(tops)[0] == -np.inf
    p = tp.Program("noise")
    W, x = p.matrix("W", var=1.5), p.vector("x")
    h1, h2 = W @ x, W @ (2 * x)
    z = tp.mean(tp.tanh(h2 - 2 * h1) ** 2, name="zero")
    for seed in (4, 6, 7):  # (the seeds that were flagged)
        lim = p.limit(method="montecarlo", seed=seed)
        assert lim.trusted(z) and abs(lim[z]) < 1e-25


def test_polynomial_degree_of_moment_integrands():
    """Degrees read off the Z-DAG: tanh² is bounded (0), |v|^{−0.7} and e^v have no
    polynomial bound, relu(Wv)·Wᵀrelu(Wv) is of degree 2 (Ż = c·v), v⁶ of degree 6;
    a sum takes the largest, a product adds."""
    p = tp.Program("deg")
    v, W = p.vector("v"), p.matrix("W")
    h = tp.relu(W @ v)
    names = {
        "a": tp.tanh(v) ** 2,
        "b": tp.abs(v) ** -0.7,
        "c": tp.exp(v),
        "d": h * (W.T @ h),
        "e": v**6,
        "f": tp.sigmoid(v) + v * tp.tanh(v) * v,
    }
    for name, vec in names.items():
        tp.mean(vec, name=name)
    got = {k.name: d for k, d in moment_degrees(Derivation(p)).items()}
    assert got == {"a": 0.0, "b": None, "c": None, "d": 2.0, "e": 6.0, "f": None}
    x, y = sympy.symbols("x y", real=True)
    assert degree(x**2 * y + sympy.Max(x, 0), {x: 1.0, y: 2.0}) == 4.0
    assert degree(sympy.sqrt(x**2 + 1), {x: 1.0}) == 1.0
    assert degree(1 / (1 + x**2), {x: 1.0}) == 0.0  # 1 + x² ≥ 1: bounded
    assert degree(1 / x, {x: 1.0}) is None  # a pole at 0
    assert degree(sympy.log(1 + x**2), {x: 1.0}) is None  # (log: at infinity only)
    assert degree(sympy.log(1 + x**2), {x: 1.0}, at_infinity=True) == 1.0


def test_errors_of_scalar_functions_are_propagated():
    """A ScalarFn of quadrature Moments carries the first-order error Σ|∂f/∂θᵢ|δθᵢ (it
    reported 0): √m and 3m² against scipy, each within its reported error, and the
    reported errors equal the formula."""
    from scipy import integrate

    p = tp.Program("sf")
    W, x = p.matrix("W", var=2.0), p.vector("x")
    m = tp.mean(tp.sign(W @ x) * tp.relu(W @ x + 0.3), name="m")  # (a kink and a jump)
    s, q = tp.sqrt(m), 3 * m * m
    lim = p.limit(method="quadrature")
    em = lim.error(m)
    assert em > 0
    assert lim.error(s) == pytest.approx(em / (2 * math.sqrt(lim[m])), rel=1e-9)
    assert lim.error(q) == pytest.approx(6 * lim[m] * em, rel=1e-9)
    ref = integrate.quad(
        lambda u: (
            math.exp(-u * u / 4) / math.sqrt(4 * math.pi) * math.copysign(max(u + 0.3, 0.0), u)
        ),
        -40,
        40,
        points=[-0.3, 0.0],
        epsabs=1e-13,
    )[0]
    assert abs(lim[m] - ref) <= em
    assert abs(lim[s] - math.sqrt(ref)) <= lim.error(s) + 1e-15
    assert abs(lim[q] - 3 * ref**2) <= lim.error(q) + 1e-15


def test_forced_quadrature_of_a_singular_integrand_is_flagged():
    """𝔼|x|^{−1/2} = 2^{−1/4}Γ(1/4)/√π = 1.7201 came out 1.5680 ± 0.011 by forced
    quadrature (trusted): now flagged, with an infinite error; auto uses Monte Carlo."""
    p = tp.Program("sing")
    k = tp.mean(tp.abs(p.vector("v")) ** -0.5, name="k")
    with pytest.warns(tp.UnreliableValueWarning, match="singularity"):
        lim = p.limit(method="quadrature")
    assert not lim.trusted(k) and lim.error(k) == math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tp.UnreliableValueWarning)
        auto = p.limit(seed=0)
    assert auto.method(k) == "montecarlo"
    lo, hi = auto.interval(k)
    assert lo <= abs_moment(-0.5) <= hi


def test_forced_quadrature_of_a_2d_jump_is_flagged():
    """𝔼[step(u)·step(v)], Corr(u, v) = 0.6, is 1/4 + arcsin(0.6)/(2π) [Sheppard]; forced
    quadrature gave it with an error estimate 20 times too small (the relu NTK's step·step
    Moments): now without an estimate, and flagged."""
    p = tp.Program("jump")
    W = p.matrix("W")
    x, y = p.vectors("xi", cov=[[1.0, 0.6], [0.6, 1.0]])
    k = tp.mean(tp.step(W @ x) * tp.step(W @ y + 0.1), name="k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tp.UnreliableValueWarning)
        lim = p.limit(method="quadrature")
    assert lim.trusted(k) or lim.error(k) == math.inf
    if lim.trusted(k):  # (the panel rule, aligned with the jumps, vouches for it)
        from scipy.stats import multivariate_normal

        ref = multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]]).cdf([0, 0.1])
        assert abs(lim[k] - ref) <= lim.error(k) + 1e-12
