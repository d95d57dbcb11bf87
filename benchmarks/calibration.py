"""Calibration of Monte Carlo standard errors over a panel of programs.

Run:  python benchmarks/calibration.py [--seeds 100] [--samples 16384]   (≈ 15 min on 2 cores)

For every program and both samplers (randomised QMC and iid), ``limit(method=
"montecarlo")`` is run with ``--seeds`` seeds. Reported per cell:

* ``ratio`` — (standard deviation of the estimates over seeds) / (root-mean-square
  reported standard error): 1 when the reported errors are honest. The square of the
  spread estimates the *mean of the variances* ``𝔼[se²]``, so that is what it is
  compared with; ``ratio_mean`` divides by the mean standard error instead, which
  is smaller than the RMS by ``√(1 + CV²)`` when the reported errors vary from seed
  to seed (QMC on kinked integrands: a CV of 1 makes an honest error bar look 1.41
  times too small). With 100 seeds the ratio's own sampling spread is about
  ``1/√(2·99) ≈ 0.07`` for normal estimates (more for the skewed ones of heavy
  integrands), so [0.8, 1.25] is a ≈ 3σ band;
* ``frac_z2`` — the fraction of seeds with ``|estimate − reference| > 2 s.e.`` (about
  6 % expected with 16 replicates: the t distribution with 15 degrees of freedom);
* ``khat`` — the mean Pareto ``k̂`` of the integrand's samples, and ``flagged`` the
  fraction of seeds whose value was flagged (not trusted: the library itself says the
  standard error is not to be believed);
* ``coverage`` — the fraction of seeds whose 95 % interval ``lim.interval(k)`` holds
  the reference (Student's t for trusted values; for flagged heavy-tailed ones the
  generalized-CLT interval, or an infinite one), and ``infinite`` the fraction of
  seeds with an infinite interval.

Acceptance: a cell never flagged has ``ratio`` in [0.8, 1.25]; a cell flagged on some
seed has ``coverage ≥ 0.95 − 2·√(0.95·0.05/seeds)`` (its ratio is reported, but the
spread of estimates without a variance measures nothing).

References are exact (closed forms, or the deterministic limit ``method="auto"``
when it uses no Monte Carlo); for programs whose deterministic limit needs Monte
Carlo the reference is the mean of all runs (then ``frac_z2`` uses the spread only).

Writes ``benchmarks/results/calibration.json`` and ``calibration.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
import warnings

import numpy as np

import tensorprog as tp
from tensorprog import nn

OUT = pathlib.Path(__file__).parent / "results"


def lognormal():
    """𝔼 e^{2Z} = e² (heavy-tailed: Pareto k̂ ≈ 0.57 untilted; sampled under the tilt)."""
    p = tp.Program("lognormal")
    k = tp.mean(tp.exp(2 * p.vector("v")), name="k")
    return p, k, math.exp(2.0)


def exp5():
    """𝔼 e^{5Z} = e^{12.5} (the issue's 74844 ± 19190)."""
    p = tp.Program("exp5")
    k = tp.mean(tp.exp(5 * p.vector("v")), name="k")
    return p, k, math.exp(12.5)


def lognormal_tanh():
    """𝔼[e^{2Z} tanh(Z)²]: a tilted heavy integrand with a non-trivial remainder."""
    p = tp.Program("lognormal_tanh")
    v = p.vector("v")
    k = tp.mean(tp.exp(2 * v) * tp.tanh(v) ** 2, name="k")
    return p, k, None


def exp_relu():
    """𝔼 e^{2 relu(Z)} = 1/2 + e²Φ(2): k̂ ≈ 0.6 as plain samples; a defensive mixture."""
    p = tp.Program("exp_relu")
    k = tp.mean(tp.exp(2 * tp.relu(p.vector("v"))), name="k")
    from scipy.special import ndtr

    return p, k, 0.5 + math.exp(2.0) * ndtr(2.0)


def exp_hat():
    """𝔼 e^{Ẑ}, Ẑ = Wx (a hat: its law is estimated, no tilt), = e^{1/2}."""
    p = tp.Program("exp_hat")
    W, x = p.matrix("W"), p.vector("x")
    k = tp.mean(tp.exp(W @ x), name="k")
    return p, k, math.exp(0.5)


def relu_product():
    """⟨relu(Wx), relu(Wy)⟩ for Corr(x, y) = 0.6: the arc-cosine kernel."""
    p = tp.Program("relu_product")
    W = p.matrix("W")
    x, y = p.vectors("xi", cov=[[1.0, 0.6], [0.6, 1.0]])
    k = tp.inner(tp.relu(W @ x), tp.relu(W @ y), name="k")
    return p, k, None


def tanh_sq():
    """𝔼 tanh(Ẑ)² with Var Ẑ = 2."""
    p = tp.Program("tanh_sq")
    W, x = p.matrix("W", var=2.0), p.vector("x")
    k = tp.mean(tp.tanh(W @ x) ** 2, name="k")
    return p, k, None


def tanh_Wt():
    """Wᵀ tanh(Wx): a Ż term (regression) feeding a Moment."""
    p = tp.Program("tanh_Wt")
    W = p.matrix("W", var=2.0)
    x = p.vector("x")
    g = W.T @ tp.tanh(W @ x)
    k = tp.mean(tp.tanh(g) ** 2, name="k")
    return p, k, None


def training():
    """Two μP SGD steps of a 2-hidden-layer tanh MLP: the output after training."""
    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(2))
    X = np.array([[1.0, 0.3], [-0.5, 1.0]])
    run = nn.train_sgd(net, X, np.array([0.5, -0.3]), lr=0.5, steps=2)
    p = run.program
    k = [i.out for i in p.instructions if i.out.kind == "scalar"][-1]
    return p, k.name, None


def exp4_relu():
    """𝔼 e^{4 relu(Z)}: k̂ ≈ 1.3 as plain samples; a defensive mixture."""
    p = tp.Program("exp4_relu")
    k = tp.mean(tp.exp(4 * tp.relu(p.vector("v"))), name="k")
    from scipy.special import ndtr

    return p, k, 0.5 + math.exp(8.0) * ndtr(4.0)


def abs_pow():
    """𝔼|Z|^{−0.7} = 2^{−0.35}Γ(0.15)/√π: a mean but no variance (k = 0.7)."""
    p = tp.Program("abs_pow")
    k = tp.mean(tp.abs(p.vector("v")) ** -0.7, name="k")
    return p, k, 2**-0.35 * math.gamma(0.15) / math.sqrt(math.pi)


def abs_pow_hat():
    """𝔼|Ẑ|^{−0.6}, Ẑ = Wx (law estimated), Var Ẑ = 1: k = 0.6."""
    p = tp.Program("abs_pow_hat")
    W, x = p.matrix("W"), p.vector("x")
    k = tp.mean(tp.abs(W @ x) ** -0.6, name="k")
    return p, k, 2**-0.3 * math.gamma(0.2) / math.sqrt(math.pi)


PANEL = [
    lognormal,
    exp5,
    lognormal_tanh,
    exp_relu,
    exp_hat,
    relu_product,
    tanh_sq,
    tanh_Wt,
    training,
    exp4_relu,
    abs_pow,
    abs_pow_hat,
]


def reference(p, k, exact):
    if exact is not None:
        return exact, "closed form"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lim = p.limit()
    if lim.method(k) != "montecarlo":
        return lim[k], f"limit ({lim.method(k)})"
    return None, "mean of the runs"


def cell(p, k, ref, qmc, seeds, samples):
    est, se, kh, flagged, inside, infinite = [], [], [], [], [], []
    t0 = time.perf_counter()
    for s in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lim = p.limit(method="montecarlo", samples=samples, seed=s, qmc=qmc)
        est.append(lim[k])
        se.append(lim.stderr(k))
        kh.append(lim.khat(k) if lim.khat(k) is not None else float("nan"))
        flagged.append(not lim.trusted(k))
        lo, hi = lim.interval(k)
        infinite.append(not math.isfinite(hi - lo))
        if ref is not None:
            inside.append(lo <= ref <= hi)
    est, se = np.array(est), np.array(se)
    r = ref if ref is not None else float(est.mean())
    spread = float(est.std(ddof=1))
    exact = bool(se.max() == 0.0)
    ratio = None if exact else spread / float(np.sqrt(np.mean(se**2)))
    ratio_mean = None if exact else spread / float(se.mean())
    z = (est - r) / np.where(se > 0, se, np.inf)
    return {
        "ratio": ratio,
        "ratio_mean": ratio_mean,
        "frac_z2": float(np.mean(np.abs(z) > 2)),
        "bias_over_se": None if exact else float((est.mean() - r) / se.mean()),
        "max_abs_error": float(np.abs(est - r).max()),
        "khat": float(np.nanmean(kh)) if np.isfinite(kh).any() else None,
        "trusted": not any(flagged),
        "flagged": float(np.mean(flagged)),
        "coverage": float(np.mean(inside)) if inside else None,
        "infinite": float(np.mean(infinite)),
        "exact": exact,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--samples", type=int, default=2**14)
    args = ap.parse_args()
    res = {"seeds": args.seeds, "samples": args.samples, "batches": 16, "programs": {}}
    floor = 0.95 - 2 * math.sqrt(0.95 * 0.05 / args.seeds)
    print(
        f"{'program':16s} {'sampler':7s} {'ratio':>7s} {'|z|>2':>6s} {'k̂':>6s} {'cover':>6s}  note"
    )
    for build in PANEL:
        p, k, exact = build()
        ref, how = reference(p, k, exact)
        row = {"reference": ref, "reference_from": how, "doc": build.__doc__}
        for qmc in (True, False):
            c = cell(p, k, ref, qmc, args.seeds, args.samples)
            row["qmc" if qmc else "iid"] = c
            note = (
                "exact (stderr 0, error {:.1e})".format(c["max_abs_error"])
                if c["exact"]
                else ""
                if c["trusted"]
                else f"flagged on {c['flagged']:.0%} of seeds, infinite interval on "
                f"{c['infinite']:.0%}"
            )
            if c["exact"]:
                bad = ""
            elif c["trusted"]:
                bad = "" if 0.8 <= c["ratio"] <= 1.25 else "  OUTSIDE [0.8, 1.25]"
            else:
                bad = (
                    ""
                    if c["coverage"] is None or c["coverage"] >= floor
                    else f"  COVERAGE BELOW {floor:.2f}"
                )
            ratio = "   —  " if c["ratio"] is None else f"{c['ratio']:7.3f}"
            kh = "  —  " if c["khat"] is None else f"{c['khat']:6.2f}"
            cov = "  —  " if c["coverage"] is None else f"{c['coverage']:6.2f}"
            print(
                f"{build.__name__:16s} {'qmc' if qmc else 'iid':7s} {ratio} "
                f"{c['frac_z2']:6.2f} {kh} {cov}  {note}{bad}",
                flush=True,
            )
        res["programs"][build.__name__] = row
    OUT.mkdir(exist_ok=True)
    (OUT / "calibration.json").write_text(json.dumps(res, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    names = list(res["programs"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for j, (s, col) in enumerate((("qmc", "C0"), ("iid", "C1"))):
        xs = np.arange(len(names)) + (j - 0.5) * 0.35
        cells = [res["programs"][n][s] for n in names]
        vals = [c["ratio"] if c["ratio"] is not None else 1.0 for c in cells]
        bars = ax.bar(xs, vals, 0.35, color=col, label=s)
        for b, c in zip(bars, cells):
            if c["exact"]:
                b.set_hatch("//")
            elif not c["trusted"]:
                b.set_alpha(0.35)
    ax.axhspan(0.8, 1.25, color="0.9", zorder=0)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("spread over seeds / RMS stderr")
    ax.set_title(
        f"Monte Carlo calibration, {args.seeds} seeds, {args.samples} samples "
        "(hatched: exact; faded: flagged)"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "calibration.png", dpi=120)


if __name__ == "__main__":
    main()
