"""Closed forms of every neural-tangents nonlinearity, and closed forms with nonzero means.

Three checks, each against something independent of the formulas under test:

* every new closed form (centred and with means) against a brute-force Gauss--Legendre
  rule written here: the pair ``u = m1 + s1 x``, ``v = m2 + s2 (rho x + r z)`` over the
  independent standard normals ``x, z`` on ``[-13, 13]``, split at the kinks of both
  functions (and refined geometrically where the kink of ``v`` moves fast, ``|rho| -> 1``),
  so it converges to rounding; random covariances, large variances, correlations near
  ``+-1`` and means; tolerance ``1e-12`` relative to the scale of the values;
* ``tp.nn.kernels`` of MLPs with each neural-tangents 0.6.5 nonlinearity against the
  values neural-tangents computed (``tests/data/nt_nonlinearities.json``, written by
  ``benchmarks/nt/nonlin_fixture.py`` in the side venv; the command is in the file),
  to ``1e-10`` relative;
* every entry of those kernels, and the non-centred moments of a program, is "exact".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sympy
from scipy import special

import tensorprog as tp
from tensorprog import gaussian as tg
from tensorprog import nn

# --------------------------------------------------------------------------------------
# The reference: Gauss-Legendre in standard-normal coordinates, split at the kinks
# --------------------------------------------------------------------------------------

_T, _W = np.polynomial.legendre.leggauss(24)
_T, _W = 0.5 * (_T + 1.0), 0.5 * _W
_L = 13.0  # P(|x| > 13) ~ 1e-38


def _density(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _panels(points):
    """Nodes and weights on [-L, L] split at ``points`` and into panels of width <= 2."""
    pts = np.unique(np.clip(np.asarray(points, dtype=float), -_L, _L))
    edges = [pts[0]]
    for b in pts[1:]:
        a = edges[-1]
        edges += list(np.linspace(a, b, max(1, math.ceil((b - a) / 2.0)) + 1)[1:])
    e = np.asarray(edges)
    lo, width = e[:-1, None], np.diff(e)[:, None]
    return (lo + width * _T).ravel(), (width * _W).ravel()


def _split(kink, npan=8):
    """Nodes and weights on [-L, kink] and [kink, L] (vectorised over ``kink``)."""
    k = np.clip(kink, -_L, _L)[..., None]
    t = ((np.arange(npan)[:, None] + _T) / npan).ravel()
    w = np.tile(_W / npan, npan)
    return (
        np.concatenate([-_L + (k + _L) * t, k + (_L - k) * t], -1),
        np.concatenate([(k + _L) * w, (_L - k) * w], -1),
    )


def ref_mean(f, k, m=0.0, kink=0.0):
    s = math.sqrt(k)
    x, w = _panels([-_L, _L, (kink - m) / s])
    return float(np.sum(w * _density(x) * f(m + s * x)))


def ref_pair(f, g, k11, k12, k22, m1=0.0, m2=0.0, kf=0.0, kg=0.0):
    """E[f(u) g(v)] for (u, v) ~ N((m1, m2), [[k11, k12], [k12, k22]]); ``kf``/``kg`` the
    kink (or jump) of ``f``/``g``, None for a smooth function."""
    s1, s2 = math.sqrt(k11), math.sqrt(k22)
    rho = max(-1.0, min(1.0, k12 / math.sqrt(k11 * k22)))  # (exactly 1 when k11 = k12 = k22)
    r = math.sqrt(max(0.0, (1.0 - rho) * (1.0 + rho)))
    pts = [-_L, _L] + ([] if kf is None else [(kf - m1) / s1])
    if rho != 0 and kg is not None:  # where v's kink crosses z = 0, graded by the width r/|rho|
        c, width = (kg - m2) / (s2 * rho), r / abs(rho)
        pts += [c] + [
            c + sg * width * 2.0**j for j in range(60) if width * 2.0**j <= 1 for sg in (-1, 1)
        ]
    x, w = _panels(pts)
    a, b = m2 + s2 * rho * x, s2 * r
    if b == 0:
        inner = g(a)
    else:
        z, wz = _split((kg - a) / b) if kg is not None else _split(np.zeros_like(a), 4)
        inner = np.sum(wz * _density(z) * g(a[:, None] + b * z), axis=1)
    return float(np.sum(w * _density(x) * f(m1 + s1 * x) * inner))


def _rms(f, k, m=0.0):
    """sqrt(E f(u)²), u ~ N(m, k): the scale of expectations with f."""
    return math.sqrt(ref_mean(lambda z: f(z) ** 2, k, m))


def _close(got, ref, scale, what):
    assert abs(got - ref) <= 1e-12 * max(1.0, abs(ref), scale), f"{what}: {got!r} vs {ref!r}"


#: (k11, k12, k22, m1, m2): random, large variance, rho near +1 and -1, with means
COVS = [
    (1.3, 0.4, 0.7, 0.0, 0.0),
    (0.8, -0.5, 2.1, 0.6, -1.1),
    (90.0, 40.0, 30.0, 3.0, -7.0),
    (1.0, 0.999999 * math.sqrt(2.5), 2.5, -0.4, 0.9),
    (2.0, -0.9999999 * math.sqrt(1.2), 0.6, 0.8, 0.5),
    (0.5, 0.5, 0.5, 0.0, 0.0),  # rho = 1 exactly, centred
    (0.5, -0.5, 0.5, 0.3, -0.2),  # rho = -1 exactly, with means
]
IDS = ["random", "means", "large", "rho+1", "rho-1", "rho=1", "rho=-1"]

# --------------------------------------------------------------------------------------
# (i) the piecewise-linear family with means: 15 pairs, 5 means
# --------------------------------------------------------------------------------------

PL = {
    "identity": (tp.identity, lambda z: z),
    "relu": (tp.relu, lambda z: np.maximum(z, 0.0)),
    "step": (tp.step, lambda z: np.heaviside(z, 0.5)),
    "sign": (tp.sign, np.sign),
    "abs": (tp.abs, np.abs),
}
PL_PAIRS = [(a, b) for i, a in enumerate(PL) for b in list(PL)[i:]]


@pytest.mark.parametrize("cov", COVS, ids=IDS)
def test_piecewise_linear_pairs_with_means(cov):
    k11, k12, k22, m1, m2 = cov
    scale = (k11 + m1 * m1) ** 0.5 * (k22 + m2 * m2) ** 0.5
    for a, b in PL_PAIRS:
        form = tg.pair_form(PL[a][0], PL[b][0], centred=False)
        got = form(k11, k12, k22, m1, m2)
        ref = ref_pair(PL[a][1], PL[b][1], k11, k12, k22, m1, m2)
        _close(got, ref, scale, f"{a}_{b}")
        # the swapped registration exchanges the means too
        got_swapped = tg.pair_form(PL[b][0], PL[a][0], centred=False)(k22, k12, k11, m2, m1)
        assert got_swapped == pytest.approx(got, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("k, m", [(1.0, 0.0), (0.7, 1.3), (50.0, -4.0), (0.0, 0.4), (0.0, 0.0)])
def test_piecewise_linear_means(k, m):
    for name, (fn, f) in PL.items():
        got = tg.mean_form(fn, centred=False)(k, m)
        ref = float(f(np.float64(m))) if k == 0 else ref_mean(f, k, m)
        _close(got, ref, math.sqrt(k + m * m), name)


def test_bivariate_normal_cdf_at_the_axes():
    """Owen's-T formula at h = 0 and/or k = 0, against the GL reference of P(X>-h, Y>-k)."""
    step = PL["step"][1]
    for h, k, rho in [(0.0, 0.0, 0.3), (0.0, 1.2, -0.6), (-0.7, 0.0, 0.9), (2.0, -1.0, 0.2)]:
        got = tg.bivariate_normal_cdf(h, k, rho)
        ref = ref_pair(step, step, 1.0, rho, 1.0, h, k)
        _close(got, ref, 1.0, f"Phi2({h}, {k}; {rho})")


# --------------------------------------------------------------------------------------
# (i) erf, erf', sin, cos, exp with means; gelu, gelu'; the families
# --------------------------------------------------------------------------------------

DERF = tp.erf.derivative()
DGELU = tp.gelu.derivative()
DCOS = tp.cos.derivative()
SQ2 = math.sqrt(2.0)


def _gelu(z):
    return 0.5 * z * (1.0 + special.erf(z / SQ2))


def _dgelu(z):
    return 0.5 * (1.0 + special.erf(z / SQ2)) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


SMOOTH = {
    "identity": (tp.identity, lambda z: z),
    "erf": (tp.erf, special.erf),
    "derf": (DERF, lambda z: 2.0 / math.sqrt(math.pi) * np.exp(-z * z)),
    "sin": (tp.sin, np.sin),
    "cos": (tp.cos, np.cos),
    "exp": (tp.exp, np.exp),
    "gelu": (tp.gelu, _gelu),
    "dgelu": (DGELU, _dgelu),
    "dcos": (DCOS, lambda z: -np.sin(z)),
}
#: pairs whose forms take means (every registered pair among SMOOTH but gelu/dgelu pairs,
#: and exp with dcos/gelu)
SMOOTH_PAIRS = [
    (a, b)
    for i, a in enumerate(SMOOTH)
    for b in list(SMOOTH)[i:]
    if tg.pair_form(SMOOTH[a][0], SMOOTH[b][0]) is not None
]
SMALL = [COVS[1], (9.0, 6.0, 5.0, 1.5, -2.0), COVS[3]]  # (exp: variance 9 is large enough)


@pytest.mark.parametrize("cov", SMALL, ids=["means", "large", "rho+1"])
def test_smooth_pairs_with_means(cov):
    k11, k12, k22, m1, m2 = cov
    assert {("gelu", "gelu"), ("dgelu", "dgelu"), ("erf", "erf"), ("dcos", "dcos")} <= set(
        SMOOTH_PAIRS
    )
    for a, b in SMOOTH_PAIRS:
        fa, fb = SMOOTH[a][0], SMOOTH[b][0]
        means = tg.pair_form(fa, fb, centred=False) is not None
        mm = (m1, m2) if means else (0.0, 0.0)
        got = tg.pair_form(fa, fb, centred=not means)(k11, k12, k22, *mm[: 2 * means])
        ref = ref_pair(SMOOTH[a][1], SMOOTH[b][1], k11, k12, k22, *mm, kf=None, kg=None)
        scale = _rms(SMOOTH[a][1], k11, mm[0]) * _rms(SMOOTH[b][1], k22, mm[1])
        _close(got, ref, scale, f"{a}_{b} (means={means})")


@pytest.mark.parametrize("k, m", [(1.0, 0.0), (0.7, 1.3), (6.0, -2.0)])
def test_smooth_means(k, m):
    for name, (fn, f) in SMOOTH.items():
        form = tg.mean_form(fn, centred=False)
        assert form is not None, name
        ref = ref_mean(f, k, m)
        _close(form(k, m), ref, _rms(f, k, m), name)


def test_erf_pair_with_means_is_a_bivariate_normal_cdf():
    """E[erf(u) erf(v)] with means has no elementary form; it is 4 Phi2 - 2 Phi - 2 Phi + 1."""
    doc = tg.erf_erf.__doc__
    assert "no elementary form" in doc and "Phi_2" in doc


FAMILIES = {
    "leaky_relu(0.1)": (tp.leaky_relu(0.1), lambda z: np.where(z > 0, z, 0.1 * z)),
    "ab_relu(-0.5,2)": (tp.ab_relu(-0.5, 2.0), lambda z: np.where(z > 0, 2.0 * z, -0.5 * z)),
    "rbf(0.7)": (tp.rbf(0.7), lambda z: SQ2 * np.sin(math.sqrt(1.4) * z + math.pi / 4)),
    "gaussian_bump(0.7,-0.4)": (tp.gaussian_bump(0.7, -0.4), lambda z: 0.7 * np.exp(-0.4 * z * z)),
    "gaussian_bump(1.2,0.02)": (tp.gaussian_bump(1.2, 0.02), lambda z: 1.2 * np.exp(0.02 * z * z)),
    "rectified_monomial(2)": (tp.rectified_monomial(2), lambda z: np.maximum(z, 0.0) ** 2),
    "rectified_monomial(3)": (tp.rectified_monomial(3), lambda z: np.maximum(z, 0.0) ** 3),
    "rectified_monomial(5)": (tp.rectified_monomial(5), lambda z: np.maximum(z, 0.0) ** 5),
}


def _numeric(fn):
    """The numpy form of a nonlinearity's body, made here by sympy (not by tensorprog)."""
    x = fn.args[0]
    return sympy.lambdify(
        x, fn.body, modules=[{"Heaviside": lambda z, h0=0.5: np.heaviside(z, 0.5)}, np]
    )


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_closed_forms(name):
    """E[phi phi], E[phi' phi'] (phi' the a.e. derivative), E[u phi(v)], E[u phi'(v)], E phi,
    E phi' of each family member; with means where the form takes them. phi' is the
    numpy form of the sympy derivative, so its closed forms are checked against sympy's
    differentiation of the body too."""
    fn, f = FAMILIES[name]
    x = np.linspace(-3, 3, 13)
    # (lambdify prints a Float parameter with 15 digits: agreement to ~1e-15, not bits)
    np.testing.assert_allclose(_numeric(fn)(x), f(x), rtol=1e-13, atol=1e-14)
    d = fn.derivative(ae=True)
    df = _numeric(d)
    ident = lambda z: z  # noqa: E731
    covs = [(1.3, 0.4, 0.7, 0.6, -0.5), (4.0, 3.999, 4.0, 0.0, 0.0), (0.9, -0.6, 2.0, -1.0, 0.3)]
    for k11, k12, k22, m1, m2 in covs:
        for (a, fa), (b, fb) in [
            ((fn, f), (fn, f)),
            ((d, df), (d, df)),
            ((tp.identity, ident), (fn, f)),
            ((tp.identity, ident), (d, df)),
        ]:
            form = tg.pair_form(a, b)
            assert form is not None, (a.name, b.name)
            means = tg.pair_form(a, b, centred=False) is not None
            mm = (m1, m2) if means else (0.0, 0.0)
            got = form(k11, k12, k22, *mm[: 2 * means])
            ref = ref_pair(fa, fb, k11, k12, k22, *mm)
            scale = _rms(fa, k11, mm[0]) * _rms(fb, k22, mm[1])
            _close(got, ref, scale, f"{name}: {a.name}, {b.name}")
        for a, fa in ((fn, f), (d, df)):
            form = tg.mean_form(a)
            assert form is not None, a.name
            _close(form(k11), ref_mean(fa, k11), _rms(fa, k11), a.name)


def test_arc_cosine_kernel_at_rho_one():
    """J_n(0) = pi (2n-1)!!: the diagonal E relu(u)^{2n} = k^n (2n-1)!!/2, without NaN."""
    for n in (2, 3, 4, 5):
        form = tg.pair_form(tp.rectified_monomial(n), tp.rectified_monomial(n))
        k = 1.7
        want = k**n * math.prod(range(2 * n - 1, 0, -2)) / 2.0
        assert form(k, k, k) == pytest.approx(want, rel=1e-13)


# --------------------------------------------------------------------------------------
# The families: one object per value, builtins where they coincide, bad input refused
# --------------------------------------------------------------------------------------


def test_family_members_are_objects():
    assert tp.leaky_relu(0.1) is tp.leaky_relu(0.1) is tp.ab_relu(0.1, 1)
    assert tp.ab_relu(0, 1) is tp.relu and tp.ab_relu(-1, 1) is tp.abs
    assert tp.rectified_monomial(1) is tp.relu and tp.rectified_monomial(0) is tp.step
    assert tp.monomial(2).derivative().body == 2 * tp.monomial(2).args[0]
    assert tp.leaky_relu(0.1).derivative().body == (
        sympy.Float(0.1) * sympy.Heaviside(-tp.relu.args[0]) + sympy.Heaviside(tp.relu.args[0])
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: tp.leaky_relu("0.1"),
        lambda: tp.leaky_relu(float("nan")),
        lambda: tp.rbf(0.0),
        lambda: tp.rectified_monomial(-1),
        lambda: tp.rectified_monomial(1.5),
        lambda: tp.monomial(True),
        lambda: tp.polynomial([]),
        lambda: tp.gaussian_bump(1.0, "b"),
    ],
)
def test_family_bad_parameters(call):
    with pytest.raises(tp.TensorProgramError):
        call()


def test_gaussian_bump_divergence_is_an_error():
    form = tg.pair_form(tp.gaussian_bump(1.0, 0.5), tp.gaussian_bump(1.0, 0.5))
    with pytest.raises(tp.NumericalError):
        form(1.0, 0.2, 0.5)  # 1 - 2 b k11 = 0: E exp(u²/2)² is infinite


def test_new_builtins_in_derivations_and_latex():
    p = tp.Program("leaky")
    x = p.vector("x")
    W = p.matrix("W")
    tp.mean(tp.leaky_relu(0.2)(W @ x) * tp.rbf(0.5)(x), name="k")
    lim = p.limit()
    assert lim.method("k") == "exact"
    tex = p.latex() if hasattr(p, "latex") else lim.latex()
    assert "leaky" in tex or "ab\\_relu" in tex


# --------------------------------------------------------------------------------------
# (ii), (iii) tp.nn.kernels against neural-tangents 0.6.5, every entry exact
# --------------------------------------------------------------------------------------

NT = json.loads((Path(__file__).parent / "data" / "nt_nonlinearities.json").read_text())


def _nonlinearity(spec):
    fn = getattr(tp, spec["name"])
    return fn(*spec["params"]) if spec["params"] else fn


@pytest.mark.filterwarnings("error::tensorprog.MonteCarloWarning")
@pytest.mark.parametrize("case", NT["cases"], ids=lambda c: c["name"])
def test_kernels_match_neural_tangents(case):
    """Relative to the largest entry, |ours - NT| <= 1e-10 (both float64 closed forms; NT's
    RectifiedMonomial diagonal is NaN, recorded as null, and not compared)."""
    phi = _nonlinearity(case["nonlin"])
    res = nn.kernels(
        np.array(case["X"]),
        case["depth"],
        nonlin=phi,
        W_std=case["W_std"],
        b_std=case["b_std"],
        return_info=True,
    )
    for kind in ("nngp", "ntk"):
        ref = np.array(case[kind], dtype=float)
        ok = np.isfinite(ref)
        assert ok.sum() >= ref.size - len(ref)
        got = getattr(res, kind)
        assert np.max(np.abs(got[ok] - ref[ok])) <= 1e-10 * np.max(np.abs(ref[ok])), kind
        assert set(res.method[kind].ravel()) == {"exact"}, kind


# --------------------------------------------------------------------------------------
# Nonzero means in programs: exact, and equal to the reference
# --------------------------------------------------------------------------------------


def test_nonzero_means_are_exact():
    """A mean-0.7 input and shifted arguments: relu, sign, abs, erf, sin, exp, gelu and a
    leaky relu of non-centred Gaussians are exact (they used to be quadrature or Monte
    Carlo), and agree with the reference."""
    p = tp.Program("means")
    xi = p.vector("xi", var=1.0, mean=0.7)
    h = p.vector("h", var=2.0, cov={xi: 0.5})
    W = p.matrix("W")
    z = W @ xi  # centred, variance E xi² = 1.49
    cases = {  # name: (handle, (mean of the xi side, mean of the h side), f, g)
        "relu_relu": (tp.inner(tp.relu(xi), tp.relu(h - 0.3), name="relu_relu"), (0.7, -0.3)),
        "sign_abs": (tp.inner(tp.sign(xi + 1.0), tp.abs(h), name="sign_abs"), (1.7, 0.0)),
        "step_identity": (tp.inner(tp.step(xi), h, name="step_identity"), (0.7, 0.0)),
        "erf_erf": (tp.inner(tp.erf(xi), tp.erf(h + 0.4), name="erf_erf"), (0.7, 0.4)),
        "sin_exp": (tp.inner(tp.sin(xi), tp.exp(0.5 * h), name="sin_exp"), (0.7, 0.0)),
    }
    g = tp.mean(tp.gelu(xi - 0.2), name="gelu")
    lk = tp.inner(tp.leaky_relu(0.1)(xi), tp.relu(z + 0.5), name="leaky")
    lim = p.limit()
    F = {**{k: v[1] for k, v in PL.items()}, **{k: v[1] for k, v in SMOOTH.items()}}
    F["exp"] = lambda v: np.exp(0.5 * v)  # exp(h/2)
    for name, (handle, (m1, m2)) in cases.items():
        a, b = name.split("_")
        assert lim.method(handle) == "exact", name
        ref = ref_pair(F[a], F[b], 1.0, 0.5, 2.0, m1, m2)
        _close(lim[handle], ref, 3.0, name)
    assert lim.method(g) == "exact" and lim.method(lk) == "exact"
    _close(lim[g], ref_mean(_gelu, 1.0, 0.5), 1.0, "gelu")
    # xi and z = W xi are independent (z is centred): E leaky(xi) · E relu(z + 0.5)
    leaky = FAMILIES["leaky_relu(0.1)"][1]
    want = ref_mean(leaky, 1.0, 0.7) * ref_mean(PL["relu"][1], 1.49, 0.5)
    _close(lim[lk], want, 1.0, "leaky")
