"""Benchmark: NNGP/NTK of deep MLPs through tensor programs vs neural-tangents.

For every depth ∈ {1, 3, 10} and batch B ∈ {8, 64, 256} (d = 32, relu, W_std = 1.5,
b_std = 0.1, inputs ``X = default_rng(seed).standard_normal((B, d))``) this measures

* ``fresh``: wall time of a fresh ``python -c "from tensorprog.nn.kernels import kernels;
  …; kernels(X, …)"`` process, interpreter start-up and imports included;
* ``first`` / ``second``: the first and second ``kernels(…)`` call inside one process
  (the second one reuses whatever the first left in caches);
* if ``benchmarks/nt/.venv/bin/python`` exists, ``benchmarks/nt/nt_kernels.py`` on the
  *same* inputs (``--inputs``): its fresh-process wall time, first and second
  (un-jitted) ``kernel_fn`` call, and the max abs difference between the two libraries'
  kernels;
* an independent reference for both: the closed-form recursion of THEORY §6.1 in
  50-digit mpmath arithmetic (relu: arc-cosine kernels, erf: Williams) on the diagonal
  and the first row of the kernels — where the two libraries differ, it says which is
  right (neural-tangents' relu NTK diagonal is off by ~1e-6 at depth 10: it clips the
  correlation inside ``arccos``).

Every measurement runs in its own subprocess with a timeout (``--timeout``), so a slow
configuration is reported as a timeout instead of stalling the run. Results: a table on
stdout, ``benchmarks/results/kernels.json`` (runs keyed by ``--label``; other labels in
the file are kept) and ``benchmarks/results/kernels.png`` if matplotlib is installed.

    python benchmarks/kernels.py                       # the full grid
    python benchmarks/kernels.py --depths 10 --batches 64 --fresh-repeats 3
    python benchmarks/kernels.py --pythonpath /path/to/other/tree --label patched

This is a measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
NT_PYTHON = HERE / "nt" / ".venv" / "bin" / "python"
NT_SCRIPT = HERE / "nt" / "nt_kernels.py"
RESULTS = HERE / "results"

FRESH_CODE = (
    "import numpy as np; from tensorprog.nn.kernels import kernels; "
    "X = np.load({path!r}); kernels(X, {depth}, {nonlin!r}, {W_std!r}, {b_std!r})"
)


# ---------------------------------------------------------------------------------------
# worker: runs inside a subprocess


def worker(args: argparse.Namespace) -> None:
    """Time the first and second in-process call; save the kernels; print one JSON line."""
    t0 = time.perf_counter()
    from tensorprog.nn.kernels import kernel_program, kernels

    t_import = time.perf_counter() - t0
    X = np.load(args.inputs)
    t = time.perf_counter()
    p, _, _ = kernel_program(X, args.depth, args.nonlin, args.W_std, args.b_std)
    t_build = time.perf_counter() - t
    n_instr = len(p)
    del p
    t = time.perf_counter()
    nngp, ntk = kernels(X, args.depth, args.nonlin, args.W_std, args.b_std)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    kernels(X, args.depth, args.nonlin, args.W_std, args.b_std)
    t_second = time.perf_counter() - t
    np.savez(args.save, nngp=nngp, ntk=ntk)
    print(
        json.dumps(
            {
                "t_import": t_import,
                "t_build_only": t_build,
                "t_first_call": t_first,
                "t_second_call": t_second,
                "instructions": n_instr,
            }
        )
    )


# ---------------------------------------------------------------------------------------
# driver


def _env(pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    return env


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``cmd``; wall time, return code, last stdout line (parsed as JSON if it is).

    ``cwd`` is a scratch directory, so ``python -c`` (which puts the working directory
    first on ``sys.path``) imports the installed tensorprog or ``--pythonpath``.
    """
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall": None, "timeout": timeout}
    wall = time.perf_counter() - t
    out: dict[str, Any] = {"status": "ok" if proc.returncode == 0 else "error", "wall": wall}
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-2000:]
        return out
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if lines:
        out.update(json.loads(lines[-1]))
    return out


def measure(depth: int, B: int, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    X = np.random.default_rng(a.seed).standard_normal((B, a.dim))
    xpath = tmp / f"X_{B}.npy"
    np.save(xpath, X)
    env = _env(a.pythonpath)
    row: dict[str, Any] = {"depth": depth, "B": B, "d": a.dim, "load_before": os.getloadavg()[0]}

    code = FRESH_CODE.format(
        path=str(xpath), depth=depth, nonlin=a.nonlin, W_std=a.W_std, b_std=a.b_std
    )
    fresh = [
        _run([sys.executable, "-c", code], a.timeout, env, tmp) for _ in range(a.fresh_repeats)
    ]
    row["tp_fresh"] = fresh
    walls = [f["wall"] for f in fresh if f["status"] == "ok"]
    row["tp_fresh_min"] = min(walls) if walls else None

    save = tmp / f"tp_{depth}_{B}.npz"
    wcmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--inputs",
        str(xpath),
        "--depth",
        str(depth),
        "--nonlin",
        a.nonlin,
        "--W-std",
        repr(a.W_std),
        "--b-std",
        repr(a.b_std),
        "--save",
        str(save),
    ]
    row["tp_inprocess"] = _run(wcmd, a.timeout, env, tmp)

    if a.nt and NT_PYTHON.exists():
        nt_out = tmp / f"nt_{depth}_{B}.npz"
        ncmd = [
            str(NT_PYTHON),
            str(NT_SCRIPT),
            "--depth",
            str(depth),
            "--inputs",
            str(xpath),
            "--nonlin",
            a.nonlin,
            "--W-std",
            repr(a.W_std),
            "--b-std",
            repr(a.b_std),
            "--out",
            str(nt_out),
        ]
        nt_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        nt_env.pop("PYTHONPATH", None)
        nts = [_run(ncmd, a.timeout, nt_env, tmp) for _ in range(a.fresh_repeats)]
        row["nt"] = nts
        walls = [r["wall"] for r in nts if r["status"] == "ok"]
        row["nt_fresh_min"] = min(walls) if walls else None
        if save.exists() and nt_out.exists():
            tp_k, nt_k = np.load(save), np.load(nt_out)
            row["max_abs_diff_nngp"] = float(np.max(np.abs(tp_k["nngp"] - nt_k["nngp"])))
            row["max_abs_diff_ntk"] = float(np.max(np.abs(tp_k["ntk"] - nt_k["ntk"])))
    if a.nonlin in ("relu", "erf") and save.exists():
        pairs = [(i, i) for i in range(B)] + [(0, j) for j in range(1, B)]
        ref = mpmath_reference(X, depth, a.nonlin, a.W_std, a.b_std, pairs)
        for lib, path in (("tp", save), ("nt", tmp / f"nt_{depth}_{B}.npz")):
            if path.exists():
                k = np.load(path)
                row[f"{lib}_vs_mpmath_nngp"] = _vs_reference(k["nngp"], ref, 0)
                row[f"{lib}_vs_mpmath_ntk"] = _vs_reference(k["ntk"], ref, 1)
    if row.get("tp_fresh_min") and row.get("nt_fresh_min"):
        row["fresh_ratio_tp_over_nt"] = row["tp_fresh_min"] / row["nt_fresh_min"]
    return row


def mpmath_reference(
    X: np.ndarray, depth: int, nonlin: str, W_std: float, b_std: float, pairs: list[tuple[int, int]]
) -> dict[tuple[int, int], tuple[float, float]]:
    """``(nngp, ntk)`` of the given entries by the THEORY §6.1 recursion, 50 digits."""
    import mpmath as mp

    mp.mp.dps = 50
    w2, b2 = mp.mpf(W_std) ** 2, mp.mpf(b_std) ** 2
    d = X.shape[1]
    rows = [[mp.mpf(float(v)) for v in x] for x in X]

    def dot(u: list, v: list) -> Any:
        return mp.fsum(a * b for a, b in zip(u, v))

    out = {}
    for i, j in pairs:
        k11, k22, k12 = (w2 * dot(rows[a], rows[b]) / d + b2 for a, b in ((i, i), (j, j), (i, j)))
        theta = k12
        for _ in range(depth):
            if nonlin == "relu":
                c = max(min(k12 / mp.sqrt(k11 * k22), mp.mpf(1)), mp.mpf(-1))
                t = mp.acos(c)
                S = mp.sqrt(k11 * k22) * (mp.sin(t) + (mp.pi - t) * mp.cos(t)) / (2 * mp.pi)
                Sd = (mp.pi - t) / (2 * mp.pi)
                n11, n22 = w2 * k11 / 2 + b2, w2 * k22 / 2 + b2
            else:  # erf [Williams 1997]
                den = mp.sqrt((1 + 2 * k11) * (1 + 2 * k22))
                S = 2 / mp.pi * mp.asin(2 * k12 / den)
                Sd = 4 / mp.pi / mp.sqrt(den**2 - 4 * k12**2)
                n11 = w2 * 2 / mp.pi * mp.asin(2 * k11 / (1 + 2 * k11)) + b2
                n22 = w2 * 2 / mp.pi * mp.asin(2 * k22 / (1 + 2 * k22)) + b2
            k12 = w2 * S + b2
            theta = k12 + w2 * Sd * theta
            k11, k22 = n11, n22
        out[(i, j)] = (float(k12), float(theta))
    return out


def _vs_reference(K: Any, ref: dict, which: int) -> float:
    return max(abs(float(K[i, j]) - r[which]) for (i, j), r in ref.items())


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "—"
    return format(x, spec)


def table(rows: list[dict[str, Any]], timeout: float) -> str:
    head = (
        "| depth | B | tp fresh (s) | tp 1st call | tp 2nd call | #instr | NT fresh (s) | "
        "NT 1st | NT 2nd | tp/NT fresh | max|Δ| NNGP | max|Δ| NTK | "
        "NTK tp−mpmath | NTK NT−mpmath |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        ip = r.get("tp_inprocess", {})
        nt = next((x for x in r.get("nt", []) if x.get("status") == "ok"), {})
        fresh = r.get("tp_fresh_min")
        fresh_s = (
            _fmt(fresh)
            if fresh is not None
            else (
                f">{timeout:.0f} (timeout)"
                if any(f["status"] == "timeout" for f in r["tp_fresh"])
                else "error"
            )
        )
        first = ip.get("t_first_call")
        first_s = (
            _fmt(first)
            if first is not None
            else (
                f">{timeout:.0f} (timeout)"
                if ip.get("status") == "timeout"
                else ip.get("status", "—")
            )
        )
        lines.append(
            f"| {r['depth']} | {r['B']} | {fresh_s} | {first_s} | "
            f"{_fmt(ip.get('t_second_call'))} | "
            f"{ip.get('instructions', '—')} | {_fmt(r.get('nt_fresh_min'))} | "
            f"{_fmt(nt.get('t_first_call'), '.3f')} | {_fmt(nt.get('t_second_call'), '.3f')} | "
            f"{_fmt(r.get('fresh_ratio_tp_over_nt'))} | "
            f"{_fmt(r.get('max_abs_diff_nngp'), '.1e')} | "
            f"{_fmt(r.get('max_abs_diff_ntk'), '.1e')} | "
            f"{_fmt(r.get('tp_vs_mpmath_ntk'), '.1e')} | {_fmt(r.get('nt_vs_mpmath_ntk'), '.1e')} |"
        )
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], path: Path, label: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        rs = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["B"])
        Bs = [r["B"] for r in rs]
        series = {
            "tensorprog fresh process": [r.get("tp_fresh_min") for r in rs],
            "tensorprog 1st call": [r.get("tp_inprocess", {}).get("t_first_call") for r in rs],
            "tensorprog 2nd call": [r.get("tp_inprocess", {}).get("t_second_call") for r in rs],
            "neural-tangents fresh process": [r.get("nt_fresh_min") for r in rs],
            "neural-tangents 1st call": [
                next(
                    (x.get("t_first_call") for x in r.get("nt", []) if x.get("status") == "ok"),
                    None,
                )
                for r in rs
            ],
        }
        for name, ys in series.items():
            pts = [(b, y) for b, y in zip(Bs, ys) if y is not None]
            if pts:
                style = "--" if name.startswith("neural") else "-"
                ax.plot(*zip(*pts), style, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch B")
        ax.set_ylabel("seconds")
        ax.set_title(f"depth {depth}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"NNGP+NTK, relu MLP, d=32 ({label}); missing points: timeouts", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--nonlin", default="relu")
    ap.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    ap.add_argument("--b-std", dest="b_std", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per subprocess")
    ap.add_argument(
        "--fresh-repeats",
        type=int,
        default=1,
        help="fresh-process runs per configuration (the minimum is reported)",
    )
    ap.add_argument("--no-nt", dest="nt", action="store_false", help="skip neural-tangents")
    ap.add_argument(
        "--pythonpath",
        default=None,
        help="prepend to PYTHONPATH of the tensorprog subprocesses (another tree)",
    )
    ap.add_argument("--label", default="current", help="key of this run in the JSON file")
    ap.add_argument("--note", default="", help="free text stored with the run")
    ap.add_argument("--out", default=str(RESULTS / "kernels.json"))
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for depth in a.depths:
            for B in a.batches:
                row = measure(depth, B, a, Path(tmpdir))
                rows.append(row)
                print(
                    f"depth={depth:>2} B={B:>3}: tp fresh {_fmt(row.get('tp_fresh_min'))} s, "
                    f"first {_fmt(row['tp_inprocess'].get('t_first_call'))} s "
                    f"[{row['tp_inprocess']['status']}], "
                    f"NT fresh {_fmt(row.get('nt_fresh_min'))} s",
                    flush=True,
                )
    text = table(rows, a.timeout)
    print()
    print(text)

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("runs", {})[a.label] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "pythonpath": a.pythonpath,
        "note": a.note,
        "settings": {
            "nonlin": a.nonlin,
            "W_std": a.W_std,
            "b_std": a.b_std,
            "d": a.dim,
            "seed": a.seed,
            "timeout": a.timeout,
            "fresh_repeats": a.fresh_repeats,
        },
        "rows": rows,
        "table": text,
    }
    out.write_text(json.dumps(data, indent=2))
    png = (
        out.with_suffix(".png")
        if a.label == "current"
        else out.with_name(f"{out.stem}_{a.label}.png")
    )
    made = figure(rows, png, a.label)
    print(f"\nsaved {out}" + (f" and {png}" if made else " (matplotlib not installed: no figure)"))


if __name__ == "__main__":
    main()
