"""Monte Carlo on a Dask LocalCluster vs in-process (issue #20).

Run:  python benchmarks/distributed.py [--log2-samples 24] [--batches 256] [--label X]

The training benchmark's limit (``benchmarks/training.py``'s ``build()``: relu μP MLP,
L = 2 hidden layers, B = 3 inputs, T = 8 SGD steps; 932 instructions) at ``2^k``
samples:

1. **client**: derivation + plan + deterministic pass (done once, in the client, on a
   cluster too), the size of what travels per task (the program's JSON, zlib, and the
   deterministic pass's numbers) and the time a worker takes to re-plan from it;
2. **in-process** (a fresh process): wall time and peak RSS, before the cluster's runs
   and again after them (the machine is shared: the two bracket the load's drift);
3. **LocalCluster** of 2 worker processes × 1 thread (started before, untimed): wall
   time of the first run (workers load and plan the program) and of a second one,
   peak RSS of every worker and of the client; the result must equal the in-process
   one bit for bit;
4. **overhead per chunk**: ``K = 64`` replicates of 64 samples as 64 chunks of one
   replicate vs one chunk of 64, on the cluster and on one thread of this process
   (``(t_many − t_one)/63``, medians over repeats): the cluster's cost per task beyond
   the pass's own (the interpreter's walk, paid per chunk anywhere).

``--batches`` (default 256, ``M = 2^16`` samples per replicate at ``2^24``): with the
default 16 replicates a replicate of ``2^20`` samples needs ~9.7 GB of sample arrays
(9,216 bytes per sample), so it runs in pieces (one sweep per round of dependent
Moments) or not at all on a small worker; more replicates keep each whole (~0.6 GB)
and give the cluster more tasks. ``max_memory`` (default 2 GiB) is the same in both
runs: in-process 2 threads × 1 replicate, on the cluster 1 replicate per task.

Writes ``benchmarks/results/distributed.json`` (``--label``) and
``benchmarks/results/distributed.png``. Timings on a shared 2-core machine (other
jobs' load is recorded): ratios within one run are what to read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
# (this file's name would shadow dask's ``distributed`` package: its folder leaves sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _build() -> Any:
    """``benchmarks/training.py``'s ``build()`` (loaded by path)."""
    spec = importlib.util.spec_from_file_location("training", HERE / "training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build()


def _plan() -> tuple[Any, dict[str, float]]:
    from tensorprog.engine.derivation import Derivation
    from tensorprog.engine.evaluate import Deterministic
    from tensorprog.engine.plan import Plan

    run = _build()
    t0 = time.perf_counter()
    plan = Plan(Derivation(run.program), symbolic=True)
    Deterministic(plan, "auto").run()
    return plan, {"client_plan_s": time.perf_counter() - t0, "instructions": len(run.program)}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inprocess(a: argparse.Namespace) -> None:
    """(fresh process) the in-process run; prints JSON, pickles the result."""
    from tensorprog.engine.montecarlo import run_montecarlo

    plan, _ = _plan()
    kw = {"batches": a.batches, "max_memory": int(a.max_memory_gib * 2**30)}
    run_montecarlo(plan, a.batches * 64, 1, **kw)  # warm-up: compiled integrands
    t0 = time.perf_counter()
    out = run_montecarlo(plan, 2**a.log2_samples, 0, **kw)
    wall = time.perf_counter() - t0
    Path(a.result).write_bytes(pickle.dumps(out))
    print(json.dumps({"wall_s": wall, "peak_rss_mib": _rss_mib()}))


def _worker_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _replan_seconds(blob: bytes) -> float:
    from tensorprog.engine.montecarlo import distributed

    shipped = pickle.loads(blob)
    distributed._CACHE.clear()
    t0 = time.perf_counter()
    shipped.plan()
    return time.perf_counter() - t0


def overhead(plan: Any, executor: Any, repeats: int) -> float:
    """Seconds per chunk beyond one chunk's: 64 chunks of 1 replicate vs 1 of 64."""
    from tensorprog.engine.montecarlo import run_montecarlo

    def t(k: int) -> float:
        t0 = time.perf_counter()
        run_montecarlo(plan, 64 * 64, 3, batches=64, executor=executor, chunk_replicates=k)
        return time.perf_counter() - t0

    t(1)  # warm-up
    many = statistics.median(t(1) for _ in range(repeats))
    one = statistics.median(t(64) for _ in range(repeats))
    return (many - one) / 63


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--log2-samples", type=int, default=24)
    ap.add_argument("--batches", type=int, default=256)
    ap.add_argument("--max-memory-gib", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default="current")
    ap.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inprocess:
        return inprocess(a)

    from tensorprog.engine.montecarlo import distributed
    from tensorprog.engine.montecarlo.schedule import _Schedule

    row: dict[str, Any] = {
        "label": a.label,
        "samples": 2**a.log2_samples,
        "batches": a.batches,
        "max_memory_gib": a.max_memory_gib,
        "load_before": os.getloadavg(),
        "cores": os.cpu_count(),
    }
    plan, info = _plan()
    row.update(info)
    shipped = distributed.ShippedPlan(plan, _Schedule(plan))
    blob = pickle.dumps(shipped)
    row["task_bytes"] = len(blob)
    row["program_json_zlib_bytes"] = len(shipped.payload)
    row["worker_replan_s"] = statistics.median(_replan_seconds(blob) for _ in range(3))
    print(json.dumps({k: row[k] for k in ("client_plan_s", "task_bytes", "worker_replan_s")}))

    # 2. in-process, in a fresh process
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "inprocess.pkl"
        cmd = [sys.executable, __file__, "--inprocess", "--result", str(res)]
        cmd += [f"--log2-samples={a.log2_samples}", f"--batches={a.batches}"]
        cmd += [f"--max-memory-gib={a.max_memory_gib}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row["inprocess"] = json.loads(out.strip().splitlines()[-1])
        here = pickle.loads(res.read_bytes())
    print("in-process", json.dumps(row["inprocess"]))

    # 3. LocalCluster: 2 worker processes × 1 thread; Dask's default worker environment
    # (MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's dynamic mmap threshold: every
    # array above 128 KiB is a fresh mmap, page-faulted on first touch) and without it
    row["cluster"] = {}
    for variant in ("dask default", "glibc malloc defaults"):
        row["cluster"][variant] = cluster(plan, a, here, variant)
        print(variant, json.dumps(row["cluster"][variant]))
    # (the machine is shared: the in-process run again, after the cluster's)
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "inprocess.pkl"
        cmd[cmd.index("--result") + 1] = str(res)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row["inprocess_again"] = json.loads(out.strip().splitlines()[-1])
        row["inprocess_again"]["bit_identical"] = pickle.loads(res.read_bytes()) == here
    print("in-process again", json.dumps(row["inprocess_again"]))
    row["load_after"] = os.getloadavg()
    row["speedup"] = {
        k: row["inprocess"]["wall_s"] / v["wall_s"] for k, v in row["cluster"].items()
    }

    OUT.mkdir(exist_ok=True)
    path = OUT / "distributed.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows[a.label] = row
    path.write_text(json.dumps(rows, indent=1) + "\n")
    figure(row, OUT / "distributed.png")
    print(json.dumps(row, indent=1))


def cluster(plan: Any, a: argparse.Namespace, here: dict, variant: str) -> dict[str, Any]:
    """The run on a LocalCluster of 2 workers × 1 thread (``variant``: Dask's default
    worker environment, or without ``MALLOC_TRIM_THRESHOLD_``)."""
    import dask.config
    from dask.distributed import Client, LocalCluster

    from tensorprog.engine.montecarlo import run_montecarlo

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if variant != "dask default":
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
    kw = {"batches": a.batches, "max_memory": int(a.max_memory_gib * 2**30)}
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": env}),
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cl,
        Client(cl) as client,
    ):
        out["start_s"] = time.perf_counter() - t0
        ex = client.get_executor()
        t0 = time.perf_counter()
        run_montecarlo(plan, a.batches * 64, 1, executor=ex, **kw)  # workers plan
        out["first_small_run_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        there = run_montecarlo(plan, 2**a.log2_samples, 0, executor=ex, **kw)
        out["wall_s"] = time.perf_counter() - t0
        out["peak_rss_mib_per_worker"] = sorted(client.run(_worker_rss).values())
        out["client_peak_rss_mib"] = _rss_mib()
        out["bit_identical"] = there == here
        with ThreadPoolExecutor(1) as one:
            out["overhead_per_chunk_s"] = {
                "cluster": overhead(plan, ex, a.repeats),
                "one_thread_here": overhead(plan, one, a.repeats),
            }
    return out


def figure(row: dict[str, Any], path: Path) -> bool:
    """Wall time, peak memory per process and overhead per chunk, in-process vs the
    cluster variants; False without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cl = row["cluster"]
    short = {
        "dask default": "a: Dask's\nworker env",
        "glibc malloc defaults": "b: without\nmalloc trim",
    }
    names = ["in-process\n(2 threads)", *(short.get(k, k) for k in cl)]
    colors = ["C0", "C1", "C2"][: len(names)]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3.4))
    walls = [row["inprocess"]["wall_s"], *(v["wall_s"] for v in cl.values())]
    if "inprocess_again" in row:
        names, walls = [*names, "in-process\nagain"], [*walls, row["inprocess_again"]["wall_s"]]
        colors = [*colors, "C0"]
    ax1.bar(names, walls, color=colors)
    ax1.tick_params(axis="x", labelsize=7)
    n = row["samples"].bit_length() - 1
    ax1.set(ylabel="seconds", title=f"wall time, 2^{n} samples, {row['batches']} replicates")
    labels, rss, col = ["in-process"], [row["inprocess"]["peak_rss_mib"]], ["C0"]
    for j, v in enumerate(cl.values()):
        for i, r in enumerate(v["peak_rss_mib_per_worker"]):
            labels.append(f"{'ab'[j]}: worker {i + 1}")
            rss.append(r)
            col.append(f"C{j + 1}")
    ax2.bar(labels, rss, color=col)
    ax2.set(ylabel="MiB", title="peak RSS per process (a, b: the cluster variants)")
    ax2.tick_params(axis="x", labelsize=7)
    oh = [1e3 * v["overhead_per_chunk_s"]["cluster"] for v in cl.values()]
    here = [1e3 * v["overhead_per_chunk_s"]["one_thread_here"] for v in cl.values()]
    ax3.bar(
        [f"cluster {'ab'[j]}" for j in range(len(cl))] + ["one thread here"],
        [*oh, float(sum(here) / len(here))],
        color=[*colors[1:], "C0"],
    )
    ax3.set(ylabel="ms", title="time per extra chunk (64 chunks vs 1)")
    fig.suptitle(
        f"training limit (L=2, B=3, T=8) on a shared 2-core machine "
        f"(load {row['load_before'][0]:.1f} before, {row['load_after'][0]:.1f} after)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
