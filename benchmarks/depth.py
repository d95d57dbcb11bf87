"""Depth sweeps in the infinite-width limit: Depth-μP and the other depthwise
parametrizations of TP6 (arXiv:2310.02244) at L = 1, 2, 4, …, 64.

Run:  python benchmarks/depth.py [--parts sweep,finite,diversity] [--max-depth 64]

Parts (each writes its section of ``benchmarks/results/depth.json``; the figure
``benchmarks/results/depth.png`` is drawn from the JSON):

* ``sweep`` — the residual network of ``nn.resnet`` (one-layer relu blocks, mean
  subtraction, μP in width) trained by full-batch SGD (lr 0.5, 4 steps, 2 inputs, mse)
  under Depth-μP (α = γ = 1/2), the 1/L "ODE" scaling (α = 1, γ = 0), standard
  (α = γ = 0) and a trivial one (α = 1/2, γ = 1): the limit's loss trajectory at every
  depth (Monte Carlo, 50 000 samples), the program's size, the build and limit times, and
  the feature-diversity curve ‖x^{L/2+k}_t − x^{L/2}_t‖²/n against k/L [TP6 Def 7.6].
* ``finite`` — Depth-μP at L = 2, 4, 8: the limit against widths 256…4096 (seeds per
  width below), extrapolated in 1/n by weighted least squares ``f(n) = f_∞ + b/n``; the
  z-score of every output and loss.
* ``diversity`` — TP6 §8.3's gradient diversity 1 − ρ_h in the limit at initialisation
  for identity, relu, |·|, tanh, gelu and the positively homogeneous family
  ``ab_relu(sin θ, cos θ)``, against (Eφ')²/Eφ'² by quadrature.

Times are wall-clock on a shared machine (measure ratios within one run only).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from scipy import integrate, stats

import tensorprog as tp
from tensorprog import nn

OUT = pathlib.Path(__file__).parent / "results"
X = np.array([[1.0, 0.0], [0.6, 0.8]])
Y = np.array([1.0, -0.5])
LR, STEPS, SAMPLES = 0.5, 4, 50_000
PARAMS = {
    "Depth-μP (1/2, 1/2)": nn.depth_muP(),
    "ODE (1, 0)": nn.depth_ode(),
    "standard (0, 0)": nn.depth_standard(),
    "trivial (1/2, 1)": nn.DepthParametrization("1/2", 1, "trivial (1/2, 1)"),
}


def _load() -> dict:
    f = OUT / "depth.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _save(data: dict) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "depth.json").write_text(json.dumps(data, indent=1))


def _pairs(L: int) -> list[tuple[int, int]]:
    if L < 2:
        return [(0, 0), (L, L)]
    l0 = L // 2
    ks = [k for k in (1, 2, 4, 8, 16, 32) if l0 + k <= L]
    return [(l0, l0)] + [(l0 + k, l0 + k) for k in ks] + [(l0, l0 + k) for k in ks]


def sweep(depths: list[int]) -> dict:
    out: dict = {}
    for label, P in PARAMS.items():
        rows = []
        for L in depths:
            t0 = time.perf_counter()
            m = nn.resnet(2, 1, L, param=P, record=_pairs(L))
            run = nn.train(m, X, Y, steps=STEPS, optimizer=nn.SGD(LR))
            t1 = time.perf_counter()
            row = {"L": L, "instructions": len(run.program), "build_s": t1 - t0}
            try:
                with np.errstate(all="ignore"):
                    lim = run.limit(seed=0, method="montecarlo", samples=SAMPLES)
                ok = bool(np.all(np.isfinite(lim.loss)))
                row |= {
                    "limit_s": time.perf_counter() - t1,
                    "loss": lim.loss.tolist() if ok else None,
                    "loss_stderr": lim.loss_stderr.tolist() if ok else None,
                    "status": "ok" if ok else "non-finite",
                }
                if ok and L >= 2:
                    l0 = L // 2
                    div = {}
                    for t in (0, STEPS):
                        d = []
                        for k in (1, 2, 4, 8, 16, 32):
                            if l0 + k > L:
                                break
                            q0 = lim.named(f"xx{l0}_{l0}")[t].mean()
                            qk = lim.named(f"xx{l0 + k}_{l0 + k}")[t].mean()
                            c = lim.named(f"xx{l0}_{l0 + k}")[t].mean()
                            d.append([k / L, float(q0 + qk - 2 * c)])
                        div[str(t)] = d
                    row["diversity"] = div
            except tp.TensorProgramError as exc:  # a diverging run: say why
                row |= {"limit_s": time.perf_counter() - t1, "status": f"error: {exc}"[:300]}
            print(
                label,
                row["L"],
                row["instructions"],
                f"{row['limit_s']:.1f}s",
                row.get("loss"),
                row["status"][:60],
                flush=True,
            )
            rows.append(row)
        out[label] = rows
    return out


def _fit(ns: np.ndarray, means: np.ndarray, ses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares f(n) = f_∞ + b/n per column; f_∞ and its standard error."""
    A = np.stack([np.ones_like(ns), 1.0 / ns], axis=1)
    f_inf, se = [], []
    for j in range(means.shape[1]):
        w = 1.0 / ses[:, j] ** 2
        cov = np.linalg.inv(A.T @ (w[:, None] * A))
        coef = cov @ (A.T @ (w * means[:, j]))
        f_inf.append(coef[0])
        se.append(np.sqrt(cov[0, 0]))
    return np.array(f_inf), np.array(se)


def finite(
    depths=(2, 4, 8), widths=(256, 512, 1024, 2048, 4096), seeds=(32, 24, 16, 12, 8)
) -> dict:
    out = {}
    for L in depths:
        run = nn.train(nn.resnet(2, 1, L), X, Y, steps=2, optimizer=nn.SGD(LR))
        lim = run.limit(seed=0, method="montecarlo", samples=200_000)
        limv = np.concatenate([lim.outputs.ravel(), lim.loss])
        lims = np.concatenate([lim.stderr.ravel(), lim.loss_stderr])
        means, ses = [], []
        t0 = time.perf_counter()
        for i, (n, S) in enumerate(zip(widths, seeds)):  # distinct seeds per width
            sims = (run.simulate(n, seed=1000 * i + k) for k in range(S))
            vals = np.array([np.concatenate([s.outputs.ravel(), s.loss]) for s in sims])
            means.append(vals.mean(0))
            ses.append(vals.std(0, ddof=1) / np.sqrt(S))
        means, ses = np.array(means), np.array(ses)
        f_inf, se = _fit(np.array(widths, float), means, ses)
        z = np.abs(f_inf - limv) / np.sqrt(se**2 + lims**2)
        out[str(L)] = {
            "widths": list(widths),
            "seeds": list(seeds),
            "limit": limv.tolist(),
            "limit_stderr": lims.tolist(),
            "finite_means": means.tolist(),
            "finite_stderr": ses.tolist(),
            "extrapolated": f_inf.tolist(),
            "extrapolated_stderr": se.tolist(),
            "z": z.tolist(),
            "max_z": float(z.max()),
            "simulate_s": time.perf_counter() - t0,
        }
        print("finite L", L, "max z", round(float(z.max()), 2), flush=True)
    return out


def _ratio(dphi) -> float:
    def e(g):
        return sum(
            integrate.quad(lambda z: g(z) * stats.norm.pdf(z), a, b)[0]
            for a, b in ((-np.inf, 0), (0, np.inf))
        )

    return e(dphi) ** 2 / e(lambda z: dphi(z) ** 2)


def diversity(depths=(4, 16, 64)) -> dict:
    named = {
        "identity": ("identity", lambda z: 1.0),
        "relu": ("relu", lambda z: float(z > 0)),
        "abs": ("abs", lambda z: float(np.sign(z))),
        "tanh": ("tanh", lambda z: 1 - np.tanh(z) ** 2),
        "gelu": ("gelu", lambda z: stats.norm.cdf(z) + z * stats.norm.pdf(z)),
    }
    out: dict = {"named": {}, "homogeneous": []}
    for key, (phi, dphi) in named.items():
        rows = []
        for L in depths:
            g = nn.gradient_diversity(
                phi, L, layers=[L // 2], seed=0, method="montecarlo", samples=200_000
            )
            rows.append(
                {
                    "L": L,
                    "rho_h": float(g.rho_h[0]),
                    "rho_h_stderr": float(g.rho_h_stderr[0]),
                    "rho_x": float(g.rho_x[0]),
                }
            )
        # for tanh/gelu the factorisation is only approximate: h^l's variance drifts with l
        out["named"][key] = {"rows": rows, "ratio_quadrature_unit_variance": _ratio(dphi)}
        print("diversity", key, [round(r["rho_h"], 4) for r in rows], flush=True)
    for th in np.linspace(-np.pi / 2, np.pi / 2, 17):
        q, p = (
            (-1.0, 1.0)
            if np.isclose(th, -np.pi / 4)
            else (round(np.sin(th), 12), round(np.cos(th), 12))
        )
        g = nn.gradient_diversity(
            tp.ab_relu(q, p), 16, layers=[8], seed=0, method="montecarlo", samples=100_000
        )
        out["homogeneous"].append(
            {
                "theta": float(th),
                "q": q,
                "p": p,
                "diversity": float(g.diversity[0]),
                "stderr": float(g.rho_h_stderr[0]),
                "predicted": float(1 - g.rho_x[0] * (p + q) ** 2 / (2 * (p * p + q * q))),
            }
        )
    return out


def _label(ax, xlabel: str, ylabel: str, title: str, log: str = "xy") -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if "x" in log:
        ax.set_xscale("log")
    if "y" in log:
        ax.set_yscale("log")


def figure(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    sw = data.get("sweep", {})
    for label, rows in sw.items():
        Ls = [r["L"] for r in rows if r.get("loss")]
        ax[0, 0].plot(Ls, [r["loss"][-1] for r in rows if r.get("loss")], "o-", label=label)
    _label(ax[0, 0], "depth L", f"limit loss after {STEPS} steps", "loss after training (width ∞)")
    ax[0, 0].legend(fontsize=8)
    mu = sw.get("Depth-μP (1/2, 1/2)", [])
    for r in mu:
        if r.get("loss"):
            ax[0, 1].plot(range(len(r["loss"])), r["loss"], "o-", label=f"L={r['L']}")
    _label(ax[0, 1], "step t", "limit loss", "Depth-μP: trajectories converge as L grows", "")
    ax[0, 1].legend(fontsize=8)
    for label, rows in sw.items():
        ax[0, 2].plot([r["L"] for r in rows], [r["instructions"] for r in rows], "o-", label=label)
    ax2 = ax[0, 2].twinx()
    ax2.plot([r["L"] for r in mu], [r["limit_s"] for r in mu], "k--", label="limit time (Depth-μP)")
    _label(ax[0, 2], "depth L", "instructions", "program size and limit time")
    ax2.set(yscale="log", ylabel="seconds (shared machine)")
    ax[0, 2].legend(fontsize=7, loc="upper left")
    for label in ("Depth-μP (1/2, 1/2)", "ODE (1, 0)"):
        rows = [r for r in sw.get(label, []) if r.get("diversity")]
        if rows:
            r = rows[-1]
            d = np.array(r["diversity"][str(STEPS)])
            ax[1, 0].plot(d[:, 0], d[:, 1], "o-", label=f"{label}, L={r['L']}, t={STEPS}")
    e = np.array([1 / 64, 0.5])
    ax[1, 0].plot(e, 0.3 * e, "k:", label="∝ ε (κ = 1/2)")
    ax[1, 0].plot(e, 0.3 * e**2, "k--", label="∝ ε² (κ = 0)")
    _label(ax[1, 0], "ε = k/L", "‖x^{L/2+k} − x^{L/2}‖²/n", "feature diversity [TP6 Def 7.6]")
    ax[1, 0].legend(fontsize=7)
    fin = data.get("finite", {})
    for L, r in fin.items():
        ns = np.array(r["widths"], float)
        fm = np.array(r["finite_means"])
        fe = np.array(r.get("finite_stderr", np.zeros_like(fm)))
        ax[1, 1].errorbar(
            1 / ns, fm[:, -1], yerr=fe[:, -1], fmt="o-", label=f"L={L}: final loss, n=256…4096"
        )
        ax[1, 1].errorbar([0], [r["limit"][-1]], yerr=[r["limit_stderr"][-1]], fmt="k*")
    ax[1, 1].set(xlabel="1/n", ylabel="loss after 2 steps", title="finite widths → the limit (★)")
    ax[1, 1].legend(fontsize=7)
    hom = data.get("diversity", {}).get("homogeneous", [])
    if hom:
        th = [h["theta"] for h in hom]
        ax[1, 2].errorbar(
            th,
            [h["diversity"] for h in hom],
            yerr=[h["stderr"] for h in hom],
            fmt="o",
            label="limit, L = 16",
        )
        ax[1, 2].plot(th, [h["predicted"] for h in hom], "-", label="1 − ρ_x (p+q)²/2(p²+q²)")
        for x, s in ((-np.pi / 4, "|·|"), (0, "relu"), (np.pi / 4, "identity")):
            ax[1, 2].axvline(x, color="grey", lw=0.5)
            ax[1, 2].text(x, 0.02, s)
        xl = "θ: φ = cos θ·max(z,0) + sin θ·min(z,0)"
        _label(ax[1, 2], xl, "gradient diversity 1 − ρ_h", "TP6 §8.3: |·| maximises it", "")
        ax[1, 2].legend(fontsize=7)
    from matplotlib.ticker import NullFormatter

    for a in ax.flat:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(OUT / "depth.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="sweep,finite,diversity")
    ap.add_argument("--max-depth", type=int, default=64)
    args = ap.parse_args()
    data = _load()
    parts = args.parts.split(",")
    if "sweep" in parts:
        depths = [L for L in (1, 2, 4, 8, 16, 32, 64) if L <= args.max_depth]
        data["sweep"] = sweep(depths)
        _save(data)
    if "finite" in parts:
        data["finite"] = finite()
        _save(data)
    if "diversity" in parts:
        data["diversity"] = diversity()
        _save(data)
    figure(data)


if __name__ == "__main__":
    main()
