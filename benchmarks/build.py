"""Benchmark: the cost of *building* programs (tracing + ``tp.grad``), two source trees side by side.

Measures, for each source tree given with ``--tree`` (a checkout whose ``tensorprog``
package is imported through ``PYTHONPATH``), in fresh subprocesses:

* ``train``: ``benchmarks/training.py``'s ``build()`` of *that* tree (ReLU μP MLP,
  L = 2, B = 3, T = 8 SGD steps, ``feature_kernels=False``): the first call in the
  process (cold: sympy derivatives, function caches) and the median of three further
  calls (warm); and its number of instructions;
* ``kprog3`` / ``kprog10``: ``nn.kernel_program(X, L, "relu", 1.5, 0.1)`` on
  ``X = default_rng(0).standard_normal((64, 32))`` (the inputs of
  ``benchmarks/kernels.py``), L = 3 and L = 10: first and second call;
* ``kernels3`` / ``kernels10``: the end-to-end ``nn.kernels`` (program and limit) on the
  same inputs: the first call in the process.

Each (case, tree) pair runs in its own process; the trees alternate inside every repeat
and swap their order from one repeat to the next (A B, B A, A B, …), so a drift of the
machine's load hits both alike. Wall time (``perf_counter``) and CPU time of the process
(``process_time``, less sensitive to other processes on a loaded machine) are recorded;
the table prints, per case, the median over repeats for each tree with its spread
(min–max), the ratio of medians, and the median of the per-repeat ratios (each pair of
runs adjacent in time). Program builds run with one BLAS thread (``OMP_NUM_THREADS=1``
and friends), so idle BLAS threads do not add to their CPU time; ``nn.kernels`` runs with
the library's defaults. The worker also prints a fingerprint of the built program (its
instructions, names, operands, functions and aliases), so two trees that build the very
same program show the same ``sha``.

    python benchmarks/build.py --tree /path/to/baseline --tree . --repeats 7
    python benchmarks/build.py --tree A=/path/one --tree B=/path/two --cases train,kprog10

Results: a table on stdout and ``benchmarks/results/build.json`` (runs keyed by
``--label``; other labels in the file are kept; rewritten after every repeat, so an
interrupted run keeps its complete repeats; ``--table LABEL`` prints a stored run's
table). This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CASES = ("train", "kprog3", "kprog10", "kernels3", "kernels10")
KERNEL_ARGS = dict(B=64, d=32, W_std=1.5, b_std=0.1, seed=0)


# ---------------------------------------------------------------------------------------
# worker: runs inside a subprocess, with the measured tree first on PYTHONPATH


def fingerprint(p: Any) -> str:
    """sha256 of everything a program records: per instruction its class, output name,
    operands and (for Nonlin, Moment, ScalarFn) the function's name, LaTeX name,
    opacity and body; then the aliases."""
    h = hashlib.sha256()
    for instr in p.instructions:
        fn = getattr(instr, "fn", None)
        parts = [type(instr).__name__, instr.out.name, *(v.name for v in instr.inputs)]
        if fn is not None:
            parts += [fn.name, str(fn.latex_name), str(fn.opaque), str(fn.body)]
        else:
            parts.append(repr({k: v for k, v in vars(instr).items() if k != "out"}))
        h.update("\x1f".join(parts).encode() + b"\n")
    h.update(repr(sorted(getattr(p, "aliases", {}).items())).encode())
    return h.hexdigest()[:16]


def _timed(fn: Any, *a: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - w, time.process_time() - c


def worker(case: str, tree: Path) -> dict[str, Any]:
    """Time one case in this (fresh) process; the result as a dict."""
    import numpy as np

    import tensorprog

    row: dict[str, Any] = {"tensorprog": str(Path(tensorprog.__file__).parent)}
    if case == "train":
        spec = importlib.util.spec_from_file_location(
            "_training_bench", tree / "benchmarks" / "training.py"
        )
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        run, row["first_wall"], row["first_cpu"] = _timed(mod.build)
        warm = [_timed(mod.build) for _ in range(3)]
        row["warm_wall"] = statistics.median(t for _, t, _ in warm)
        row["warm_cpu"] = statistics.median(c for _, _, c in warm)
        row["instructions"] = len(run.program)
        row["sha"] = fingerprint(run.program)
        return row
    from tensorprog.nn.kernels import kernel_program, kernels

    depth = int(case.removeprefix("kprog").removeprefix("kernels"))
    a = KERNEL_ARGS
    X = np.random.default_rng(a["seed"]).standard_normal((a["B"], a["d"]))
    args = (X, depth, "relu", a["W_std"], a["b_std"])
    if case.startswith("kprog"):
        (p, _, _), row["first_wall"], row["first_cpu"] = _timed(kernel_program, *args)
        row["instructions"] = len(p)
        row["sha"] = fingerprint(p)
        del p
        _, row["warm_wall"], row["warm_cpu"] = _timed(kernel_program, *args)
    else:
        (nngp, ntk), row["first_wall"], row["first_cpu"] = _timed(kernels, *args)
        row["sha"] = hashlib.sha256(np.round(np.stack([nngp, ntk]), 10).tobytes()).hexdigest()[:16]
    return row


# ---------------------------------------------------------------------------------------
# driver


def run_one(case: str, tree: Path, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    if not case.startswith("kernels"):  # building is single-threaded: keep BLAS from spinning
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--tree", str(tree)]
    with tempfile.TemporaryDirectory() as tmp:  # cwd off every tree
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp
            )
        except subprocess.TimeoutExpired:
            return {"status": "timeout"}
    if proc.returncode != 0:
        return {"status": "error", "stderr": proc.stderr[-2000:]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(row["tensorprog"]).resolve() != (tree / "tensorprog").resolve():
        raise RuntimeError(f"{case}: imported {row['tensorprog']}, not the tree {tree}")
    return {"status": "ok", **row}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def summarize(runs: dict[str, dict[str, list[dict]]], labels: list[str]) -> dict[str, Any]:
    """Per case and metric: median/min/max per tree, ratios to the first tree."""
    out: dict[str, Any] = {}
    base = labels[0]
    for case, per in runs.items():
        out[case] = {}
        for metric in ("first_wall", "first_cpu", "warm_wall", "warm_cpu"):
            cols = {lab: [r.get(metric) for r in per[lab]] for lab in labels}
            if any(x is None for xs in cols.values() for x in xs):
                continue
            m: dict[str, Any] = {lab: _spread(xs) for lab, xs in cols.items()}
            for lab in labels[1:]:
                m[f"{lab}/{base}"] = {
                    "ratio_of_medians": m[lab]["median"] / m[base]["median"],
                    "median_paired_ratio": statistics.median(
                        b / a for a, b in zip(cols[base], cols[lab])
                    ),
                }
            out[case][metric] = m
        for lab in labels:
            rs = per[lab]
            out[case][f"{lab}_instructions"] = sorted({r.get("instructions") for r in rs} - {None})
            out[case][f"{lab}_sha"] = sorted({r.get("sha") for r in rs} - {None})
    return out


def table(summary: dict[str, Any], labels: list[str]) -> str:
    base = labels[0]
    head = f"{'case':10s} {'metric':10s}" + "".join(
        f" {lab + ' median [min–max] ms':>28s}" for lab in labels
    )
    head += "".join(f" {lab + '/' + base:>8s} {'paired':>7s}" for lab in labels[1:])
    lines = [head]
    for case, ms in summary.items():
        for metric, m in ms.items():
            if not isinstance(m, dict):
                continue
            row = f"{case:10s} {metric:10s}"
            for lab in labels:
                s = m[lab]
                cell = f"{1e3 * s['median']:.0f} [{1e3 * s['min']:.0f}–{1e3 * s['max']:.0f}]"
                row += f" {cell:>28s}"
            for lab in labels[1:]:
                r = m[f"{lab}/{base}"]
                row += f" {r['ratio_of_medians']:8.2f} {r['median_paired_ratio']:7.2f}"
            lines.append(row)
        info = "  ".join(
            f"{lab}: {ms[f'{lab}_instructions'] or '-'} instr, sha {ms[f'{lab}_sha']}"
            for lab in labels
        )
        lines.append(f"{'':21s}{info}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="[LABEL=]PATH")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--label", default="latest", help="key of this run in build.json")
    ap.add_argument("--output", type=Path, default=RESULTS / "build.json", help="results file")
    ap.add_argument("--table", metavar="LABEL", help="print the table of a stored run")
    a = ap.parse_args()
    if a.table:
        rec = json.loads(a.output.read_text())[a.table]
        print(f"{a.table}: {rec['repeats']} repeats, trees {rec['commits']}")
        print(table(rec["summary"], list(rec["trees"])))
        return
    if not a.tree:
        ap.error("give the source trees to compare with --tree")
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.tree[0]))))
        return
    trees: dict[str, Path] = {}
    for i, t in enumerate(a.tree):
        lab, _, path = t.rpartition("=")
        trees[lab or "ABCDEFGH"[i]] = Path(path).resolve()
    labels = list(trees)
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; cases are {', '.join(CASES)}")
    runs: dict[str, dict[str, list[dict]]] = {c: {lab: [] for lab in labels} for c in cases}
    t0 = time.time()
    record = {
        "trees": {lab: str(p) for lab, p in trees.items()},
        "commits": {lab: _commit(p) for lab, p in trees.items()},
        "repeats": 0,
        "kernel_inputs": KERNEL_ARGS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
    }
    for r in range(a.repeats):
        order = labels if r % 2 == 0 else labels[::-1]
        for c in cases:
            for lab in order:
                res = run_one(c, trees[lab], a.timeout)
                if res["status"] != "ok":
                    raise RuntimeError(f"{c} on {lab} ({trees[lab]}): {res}")
                res["repeat"], res["load"] = r, os.getloadavg()[0]
                runs[c][lab].append(res)
        # saved after every repeat: an interrupted run keeps its complete repeats
        record.update(repeats=r + 1, summary=summarize(runs, labels), runs=runs)
        _save(a.output, a.label, record)
        print(f"repeat {r + 1}/{a.repeats} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(table(record["summary"], labels))
    print(f"saved {a.output} [{a.label}]")


def _save(path: Path, label: str, record: dict[str, Any]) -> None:
    """Store ``record`` under ``label`` in the results file ``path`` (other labels kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[label] = record
    path.write_text(json.dumps(data, indent=1))


def _commit(tree: Path) -> str:
    """The tree's HEAD commit, with ``+dirty`` if it has uncommitted changes."""

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(tree), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
