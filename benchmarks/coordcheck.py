"""Coordinate checks and learning-rate sweeps at the acceptance scale of issue #18.

Run:  python benchmarks/coordcheck.py [--seeds 4] [--quick]

In one process:

* ``nn.coord_check`` of μP MLPs (relu, tanh; L = 2, 3; 2 inputs, 3 SGD steps; built
  with ``coordinates=True``: the ``ΔW x`` rows too), widths 256–2048, with the
  predicted limits (Monte Carlo, 20,000 samples): the number of tensors and how many
  are consistent (Holm, α = 0.01), the smallest adjusted p-value, and how many rows the
  former per-row rule (3σ-level Student-t threshold) would have flagged; wall and CPU
  time per check;
* SP with a width-independent learning rate (1 step, relu and tanh): the blown-up
  tensors, predicted against fitted exponents;
* NTK (``train_sgd``; and ``nn.train`` with ``coordinates=True`` for ``ΔW x``): the
  feature and weight updates' exponents;
* the family-wise error rate under the null: families of 50 rows with exponent 0
  exactly (lognormal noise, the check's widths and seeds), the fraction with any row
  flagged by Holm at α = 0.01 and by the former per-row rule;
* the broken μP (output multiplier ``n^{-1/2}`` instead of ``n^{-1}``): the flagged tensors;
* ``nn.lr_sweep`` of a deep linear MLP in μP and in SP (exact limits) and of a
  one-hidden-layer tanh MLP in μP (Monte Carlo limits, 20,000 samples), widths 64, 256,
  1024 and ∞: the argmin per width with its bootstrap standard error, the points and
  basin it was fitted in, and the **time
  per sweep** (wall and CPU: the machine may be shared, CPU time of this process is
  the steadier measure).

Writes ``benchmarks/results/coordcheck.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

import tensorprog as tp
from tensorprog import nn

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "tests"))
from test_coordcheck import mlp  # noqa: E402  (the tests' named MLP)

WIDTHS: list = []
SEEDS = 4

OUT = pathlib.Path(__file__).parent / "results"
X = np.array([[1.0, 0.5], [-0.3, 1.0]])
Y = np.array([1.0, -0.5])


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def old_rule(s) -> int:
    """Rows the former per-row rule flagged: z above the Student-t quantile at the
    two-sided 3σ level (dof = W(S−1) − 2)."""
    from scipy.stats import norm, t

    W, S = len(WIDTHS), SEEDS
    thr = t.ppf(norm.cdf(3.0), W * (S - 1) - 2)
    return int(((s.z_exponent >= thr) | (s.z_limit.fillna(0) >= thr)).sum())


def summary_of(cc) -> dict:
    s = cc.summary
    return {
        "tensors": len(s),
        "hypotheses": cc.hypotheses,
        "consistent": int((s.verdict == "consistent").sum()),
        "flagged_by_former_per_row_rule": old_rule(s),
        "min_p_adjusted": float(np.nanmin(s.p_adjusted)),
        "blows_up": int(s.blows_up.sum()),
        "max_z_exponent": float(np.nanmax(s.z_exponent)),
        "max_z_limit": float(np.nanmax(s.z_limit)) if np.isfinite(s.z_limit).any() else None,
    }


def null_fwer(families: int, rows: int, seed: int = 0) -> dict:
    """The fraction of null families (exponent 0 exactly) with a row flagged."""
    from scipy.stats import norm, t

    from tensorprog.nn.coordcheck import _p_value, fit_exponent, holm

    rng = np.random.default_rng(seed)
    ws = np.asarray(WIDTHS)
    holm_bad = old_bad = 0
    for _ in range(families):
        p, z = [], []
        for _ in range(rows):
            fit = fit_exponent(ws, np.exp(0.05 * rng.standard_normal((len(ws), SEEDS))))
            z.append(abs(fit.exponent) / fit.se)
            p.append(_p_value(z[-1], fit.dof))
        holm_bad += bool((holm(p) <= 0.01).any())
        old_bad += max(z) >= t.ppf(norm.cdf(3.0), fit.dof)
    return {
        "families": families,
        "rows": rows,
        "holm": holm_bad / families,
        "former": old_bad / families,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="smaller widths, fewer cases")
    args = ap.parse_args()
    widths = [128, 256, 512] if args.quick else [256, 512, 1024, 2048]
    global WIDTHS, SEEDS
    WIDTHS, SEEDS = widths, args.seeds
    res: dict = {"widths": widths, "seeds": args.seeds, "coord_check": {}, "lr_sweep": {}}
    phis = {"relu": tp.relu, "tanh": tp.tanh}
    for name, phi in phis.items():
        for L in (2,) if args.quick else (2, 3):
            run = nn.train(
                mlp(L, phi),
                X,
                Y,
                steps=3,
                optimizer=nn.SGD(0.5),
                param=nn.muP(),
                coordinates=True,
            )
            cc, w, c = timed(nn.coord_check, run, widths, args.seeds, limit={"samples": 20_000})
            res["coord_check"][f"muP_{name}_L{L}"] = {**summary_of(cc), "wall_s": w, "cpu_s": c}
            print(f"μP {name} L={L}: {summary_of(cc)}  {w:.1f}s wall {c:.1f}s cpu", flush=True)
        run = nn.train(
            mlp(2, phi),
            X[:1],
            [4.0],
            steps=1,
            optimizer=nn.SGD(0.5),
            param=nn.SP(),
            allow_unstable=True,
            coordinates=True,
        )
        cc, w, c = timed(nn.coord_check, run, widths, args.seeds, limit=False)
        s = cc.summary[cc.summary.blows_up]
        rows = s[["tensor", "step", "exponent", "exponent_se", "predicted_exponent"]]
        res["coord_check"][f"SP_{name}"] = {
            **summary_of(cc),
            "blown_up": rows.to_dict("records"),
            "wall_s": w,
            "cpu_s": c,
        }
        print(f"SP {name}:\n{rows.round(3).to_string(index=False)}", flush=True)
    net = nn.MLP(d_in=2, depth=2, nonlin="relu", param=nn.NTK(2))
    run = nn.train_sgd(net, X, Y, lr=1.0, steps=2)
    cc, w, c = timed(nn.coord_check, run, widths, args.seeds, limit={"samples": 20_000})
    s = cc.summary[cc.summary.tensor.str.startswith("Δ")]
    res["coord_check"]["NTK_relu_L2"] = {
        **summary_of(cc),
        "updates": s[["tensor", "step", "exponent", "exponent_se", "predicted_exponent"]].to_dict(
            "records"
        ),
    }
    print(
        f"NTK:\n{s[['tensor', 'step', 'exponent', 'exponent_se']].round(3).to_string(index=False)}"
    )
    run = nn.train(
        mlp(2, tp.relu), X, Y, steps=2, optimizer=nn.SGD(0.5), param=nn.NTK(), coordinates=True
    )
    cc = nn.coord_check(run, widths, args.seeds, limit={"samples": 20_000})
    s = cc.summary[cc.summary.tensor.str.startswith("ΔW")]
    cols = ["tensor", "step", "exponent", "exponent_se", "predicted_exponent", "z_limit"]
    res["coord_check"]["NTK_relu_L2_train"] = {
        **summary_of(cc),
        "weight_updates": s[cols].to_dict("records"),
    }
    print(f"NTK (nn.train), ΔW x:\n{s[cols].round(3).to_string(index=False)}", flush=True)
    broken = nn.abcd({"W_in": (0, 0, -1, 0), "W2": (0, "1/2", 0, 0), "W_out": ("1/2", 0, -1, 0)})
    run = nn.train(
        mlp(2, tp.relu),
        X[:1],
        [4.0],
        steps=1,
        optimizer=nn.SGD(0.5),
        param=broken,
        allow_unstable=True,
    )
    cc = nn.coord_check(run, widths, args.seeds, limit=False)
    res["coord_check"]["broken_muP"] = {
        **summary_of(cc),
        "flagged": sorted(map(list, cc.summary[cc.summary.blows_up][["tensor", "step"]].values)),
    }
    print(f"broken μP: {summary_of(cc)}", flush=True)
    if not args.quick:
        res["null_fwer"], w, _ = timed(null_fwer, 400, 50)
        print(f"null families: {res['null_fwer']} ({w:.0f}s)", flush=True)
    sweeps = {  # (model, lrs, widths, limit keywords)
        "muP_linear_L2": (mlp(2, tp.identity), 2.0 ** np.arange(-1.5, 1.51, 0.25), nn.muP()),
        "SP_linear_L2": (mlp(2, tp.identity), 2.0 ** np.arange(-11.0, -3.99, 0.5), nn.SP()),
        "muP_tanh_L1": (mlp(1, tp.tanh), 2.0 ** np.arange(-1.0, 3.01, 0.5), nn.muP()),
    }
    for key, (model, lrs, param) in sweeps.items():
        if args.quick and key == "muP_tanh_L1":
            continue
        sw, w, c = timed(
            nn.lr_sweep,
            model,
            X,
            Y,
            lrs,
            widths=[64, 256, 1024, None],
            steps=3,
            seeds=args.seeds,
            param=param,
            limit_kw={"samples": 20_000},
        )
        res["lr_sweep"][key] = {
            "best_lr": sw.best_lr.astype(object).where(sw.best_lr.notna(), None).to_dict("records"),
            "lrs": len(lrs),
            "wall_s_per_sweep": w,
            "cpu_s_per_sweep": c,
        }
        print(f"lr_sweep {key}: {w:.1f}s wall, {c:.1f}s cpu per sweep\n{sw.best_lr.round(4)}")
        res["lr_sweep"][key]["mean_value"] = {
            str(k): v
            for k, v in sw.data.groupby(sw.data.width.fillna(0).astype(int))
            .apply(lambda g: g.groupby("lr").value.mean().round(7).tolist())
            .items()
        }
    OUT.mkdir(exist_ok=True)
    (OUT / "coordcheck.json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
