"""Benchmark: NNGP/NTK of deep MLPs at scale, tensorprog vs neural-tangents 0.6.5.

For every configuration (depth, nonlinearity, B) — by default relu at depth 10 and erf
at depth 3, B ∈ {64, 256, 1024, 4096}, d = 32, W_std = 1.5, b_std = 0.1, inputs
``default_rng(seed).standard_normal((B, d))`` — this runs ``--rounds`` times, the two
libraries alternately, each in a fresh process:

* tensorprog (``--pythonpath`` or the installed package): ``nn.kernels`` on the inputs
  (the first call, compiling the entry programs included), then five times on *new*
  inputs of the same shape (the repeated call: the compiled programs are reused); the
  process's wall time, its peak resident memory (``ru_maxrss``) and the kernels;
* neural-tangents 0.6.5 (``benchmarks/nt/.venv``, see ``benchmarks/nt/setup_env.sh``):
  ``benchmarks/nt/nt_kernels.py`` on the same inputs, the un-jitted ``kernel_fn`` (as
  :mod:`benchmarks.kernels`) called three times, its wall time and peak memory
  (``os.wait4``); for the ``--repeat-B`` configurations also the jit-compiled
  ``kernel_fn`` called repeatedly;

and compares like with like (each column a median over the rounds):

* **fresh** — *import + first call*: from the start of each script (before numpy is
  imported) to the end of the first call, in each process. The whole process's wall
  time is also recorded, but it is not compared: the two processes do different work
  after the first call (tensorprog's five repeated calls, neural-tangents' second and
  third un-jitted calls);
* **warm** — the fastest later call on the same architecture: tensorprog's repeated
  call on new inputs against neural-tangents' un-jitted ``kernel_fn`` called again (its
  second and third calls);
* **jit** — for ``--repeat-B``: tensorprog's warm call against neural-tangents'
  jit-compiled call (the fastest after the first, which compiles);
* the largest difference between the two libraries' kernels, and — relu and erf — both
  libraries' largest difference from the closed-form recursion in 50-digit mpmath on
  the diagonal and the first row (:func:`benchmarks.kernels.mpmath_reference`), which
  says who is right where they differ.

Results: a table on stdout, ``benchmarks/results/kernels_scale.json`` (runs keyed by
``--label``) and ``benchmarks/results/kernels_scale.png``. Timings on a shared machine
are noisy: compare the two libraries within one run (they run alternately, under the
same load), and read ``load`` (the 1-minute load average before each row).

    python benchmarks/kernels_scale.py
    python benchmarks/kernels_scale.py --configs relu:10:256 erf:3:1024 --label quick

This is a measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # as early as possible, before numpy: as nt/nt_kernels.py

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
NT_PYTHON = HERE / "nt" / ".venv" / "bin" / "python"
NT_SCRIPT = HERE / "nt" / "nt_kernels.py"
RESULTS = HERE / "results"
DEFAULT_CONFIGS = [f"relu:10:{B}" for B in (64, 256, 1024, 4096)] + [
    f"erf:3:{B}" for B in (64, 256, 1024, 4096)
]


# ---------------------------------------------------------------------------------------
# worker (a fresh tensorprog process)


def worker(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from tensorprog.nn.kernels import kernels

    t_import = time.perf_counter() - t0
    X, X2 = np.load(a.inputs), np.load(a.inputs2)
    kw = dict(depth=a.depth, nonlin=a.nonlin, W_std=a.W_std, b_std=a.b_std)
    t = time.perf_counter()
    nngp, ntk = kernels(X, **kw)
    t_first = time.perf_counter() - t
    t_fresh = time.perf_counter() - _T0  # script start to the end of the first call
    t_repeat, calls, cpu = None, [], []
    if not a.no_repeat:
        # repeated calls on new inputs (X2, then X2 scaled by 1.1, 1.2, …: no value is
        # reused); the warm call is the fastest, as neural-tangents' jit-warm call
        for r in range(a.repeat_calls):
            t, c = time.perf_counter(), time.process_time()
            kernels(X2 * (1.0 + 0.1 * r), **kw)
            calls.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        t_repeat = min(calls)
    np.savez(a.save, nngp=nngp, ntk=ntk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {
        "t_import": t_import,
        "t_first_call": t_first,
        "t_fresh": t_fresh,
        "t_repeat_call": t_repeat,
        "peak": peak,
    }
    if calls:
        row.update(t_repeat_calls=calls, t_repeat_cpu=cpu)
    print(json.dumps(row))


# ---------------------------------------------------------------------------------------
# driver


def _run(cmd: list[str], timeout: float, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``cmd``: wall time, peak RSS of the process (``os.wait4``), last JSON line."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        deadline = t + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"status": "timeout", "timeout": timeout}
            time.sleep(0.05)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "status": "ok" if code == 0 else "error",
        "wall": wall,
        "peak_rss": usage.ru_maxrss * 1024,
    }
    if code:
        row["stderr"] = stderr[-2000:]
        return row
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if lines:
        row.update(json.loads(lines[-1]))
    return row


def _reference(X: np.ndarray, depth: int, nonlin: str, W: float, b: float) -> dict:
    spec = importlib.util.spec_from_file_location("bench_kernels", HERE / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    B = X.shape[0]
    pairs = [(i, i) for i in range(B)] + [(0, j) for j in range(1, B)]
    return mod.mpmath_reference(X, depth, nonlin, W, b, pairs)


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return None if not xs else float(np.median(xs))


def measure(cfg: str, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One configuration: ``a.rounds`` alternating fresh processes of each library, the
    kernels' agreement, and the medians compared like with like (module docstring)."""
    nonlin, depth_s, B_s = cfg.split(":")
    depth, B = int(depth_s), int(B_s)
    rng = np.random.default_rng(a.seed)
    X, X2 = rng.standard_normal((B, a.dim)), rng.standard_normal((B, a.dim))
    xp, xp2 = tmp / f"X_{B}.npy", tmp / f"X2_{B}.npy"
    np.save(xp, X)
    np.save(xp2, X2)
    row: dict[str, Any] = {
        "config": cfg,
        "nonlin": nonlin,
        "depth": depth,
        "B": B,
        "d": a.dim,
        "load": os.getloadavg()[0],
        "rounds": [],
    }
    env = dict(os.environ)
    if a.pythonpath:
        env["PYTHONPATH"] = a.pythonpath
    save = tmp / f"tp_{cfg.replace(':', '_')}.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--inputs", str(xp)]
    cmd += ["--inputs2", str(xp2), "--save", str(save), "--depth", str(depth)]
    cmd += ["--nonlin", nonlin, "--W-std", repr(a.W_std), "--b-std", repr(a.b_std)]
    if B > a.repeat_max_B:
        cmd.append("--no-repeat")
    nt_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    nt_env.pop("PYTHONPATH", None)
    nt_out = tmp / f"nt_{cfg.replace(':', '_')}.npz"
    ncmd = [str(NT_PYTHON), str(NT_SCRIPT), "--depth", str(depth), "--inputs", str(xp)]
    ncmd += ["--nonlin", nonlin, "--W-std", repr(a.W_std), "--b-std", repr(a.b_std)]
    nt = a.nt and NT_PYTHON.exists()
    for _ in range(a.rounds):
        one: dict[str, Any] = {"load": os.getloadavg()[0], "tp": _run(cmd, a.timeout, env, tmp)}
        if nt:
            one["nt"] = _run(ncmd + ["--out", str(nt_out), "--repeat", "3"], a.timeout, nt_env, tmp)
            if B in a.repeat_B:
                one["nt_jit"] = _run(ncmd + ["--jit", "--repeat", "6"], a.timeout, nt_env, tmp)
        row["rounds"].append(one)
    rounds = row["rounds"]
    # the last round's full records under the former keys (the table's other columns)
    row.update({k: v for k, v in rounds[-1].items() if k != "load"})
    if nt and save.exists() and nt_out.exists():
        tk, nk = np.load(save), np.load(nt_out)
        for k in ("nngp", "ntk"):
            row[f"max_abs_diff_{k}"] = float(np.max(np.abs(tk[k] - nk[k])))
        if nonlin in ("relu", "erf") and a.reference:
            ref = _reference(X, depth, nonlin, a.W_std, a.b_std)
            for lib, k in (("tp", tk), ("nt", nk)):
                row[f"{lib}_vs_mpmath_ntk"] = max(
                    abs(float(k["ntk"][i, j]) - r[1]) for (i, j), r in ref.items()
                )
                row[f"{lib}_vs_mpmath_nngp"] = max(
                    abs(float(k["nngp"][i, j]) - r[0]) for (i, j), r in ref.items()
                )

    def med(lib: str, f: Any) -> float | None:
        vals = []
        for r in rounds:
            rec = r.get(lib, {})
            if rec.get("status") == "ok":
                vals.append(f(rec))
        return _median(vals)

    m = row["median"] = {
        "tp_fresh": med("tp", lambda r: r.get("t_fresh")),
        "nt_fresh": med("nt", lambda r: r["t_import"] + r["t_first_call"]),
        "tp_warm": med("tp", lambda r: r.get("t_repeat_call")),
        "nt_warm": med("nt", lambda r: min(r.get("t_calls", [r["t_second_call"]])[1:])),
        "nt_jit_warm": med("nt_jit", lambda r: min(r["t_calls"][1:])),
        "tp_process": med("tp", lambda r: r["wall"]),
        "nt_process": med("nt", lambda r: r["wall"]),
    }
    if m["tp_fresh"] and m["nt_fresh"]:
        row["ratio_fresh"] = m["tp_fresh"] / m["nt_fresh"]
    if m["tp_warm"] and m["nt_warm"]:
        row["ratio_warm"] = m["tp_warm"] / m["nt_warm"]
    if m["tp_warm"] and m["nt_jit_warm"]:
        row["nt_jit_warm"] = m["nt_jit_warm"]
        row["ratio_repeat"] = m["tp_warm"] / m["nt_jit_warm"]
    row["load"] = _median([r["load"] for r in rounds])
    return row


def _f(x: Any, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """Medians over the rounds: *fresh* = import + first call of each script (from its
    start, numpy's import included), *warm* = the fastest later call (tensorprog on new
    inputs, neural-tangents un-jitted on the same), *jit* = neural-tangents' jit-compiled
    warm call; then agreement, peak memory (last round) and the load."""
    head = (
        "| φ, depth | B | fresh tp / NT (s) | fresh tp/NT | warm tp / NT (s) | warm tp/NT "
        "| NT jit warm (s) | tp warm / NT jit | max abs diff NNGP / NTK "
        "| NTK − mpmath tp / NT | peak tp / NT (GiB) | rounds | load |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        m = r.get("median", {})
        tp_, nt = r["tp"], r.get("nt", {})
        status = tp_["status"] if tp_["status"] != "ok" else ""
        nt_peak = nt.get("peak_rss", 0) / 2**30 if nt else None
        cells = [
            f"{r['nonlin']}, {r['depth']}",
            str(r["B"]),
            f"{_f(m.get('tp_fresh'))}{status} / {_f(m.get('nt_fresh'))}",
            _f(r.get("ratio_fresh")),
            f"{_f(m.get('tp_warm'), '.3f')} / {_f(m.get('nt_warm'), '.3f')}",
            _f(r.get("ratio_warm")),
            _f(m.get("nt_jit_warm"), ".4f"),
            _f(r.get("ratio_repeat"), ".1f"),
            f"{_f(r.get('max_abs_diff_nngp'), '.1e')} / {_f(r.get('max_abs_diff_ntk'), '.1e')}",
            f"{_f(r.get('tp_vs_mpmath_ntk'), '.1e')} / {_f(r.get('nt_vs_mpmath_ntk'), '.1e')}",
            f"{_f(tp_.get('peak_rss', 0) / 2**30)} / {_f(nt_peak)}",
            str(len(r.get("rounds", [])) or 1),
            f"{r['load']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], path: Path, label: str) -> bool:
    """Times against B per (nonlinearity, depth); False without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")
    kinds = sorted({(r["nonlin"], r["depth"]) for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.8), squeeze=False)
    for ax, (nonlin, depth) in zip(axes[0], kinds):
        rs = sorted(
            (r for r in rows if (r["nonlin"], r["depth"]) == (nonlin, depth)), key=lambda r: r["B"]
        )
        med = [r.get("median") for r in rs]
        series = {
            "tensorprog import + first call": [m and m.get("tp_fresh") for m in med],
            "tensorprog warm call": [m and m.get("tp_warm") for m in med],
            "neural-tangents import + first call": [m and m.get("nt_fresh") for m in med],
            "neural-tangents warm call (un-jitted)": [m and m.get("nt_warm") for m in med],
            "neural-tangents jit warm": [r.get("nt_jit_warm") for r in rs],
        }
        for name, ys in series.items():
            pts = [(r["B"], y) for r, y in zip(rs, ys) if y is not None]
            if pts:
                ax.plot(
                    *zip(*pts), "--" if name.startswith("neural") else "-", marker="o", label=name
                )
        ax.set(yscale="log", xlabel="inputs B", ylabel="seconds", title=f"{nonlin}, depth {depth}")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"NNGP + NTK, d = 32 ({label}; shared machine, see load)", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="nonlin:depth:B")
    ap.add_argument("--repeat-B", dest="repeat_B", type=int, nargs="+", default=[64])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    ap.add_argument("--b-std", dest="b_std", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--rounds", type=int, default=3, help="fresh processes per library and configuration"
    )
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--no-nt", dest="nt", action="store_false")
    ap.add_argument("--no-reference", dest="reference", action="store_false")
    ap.add_argument("--pythonpath", default=None)
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", default=str(RESULTS / "kernels_scale.json"))
    ap.add_argument(
        "--repeat-max-B",
        dest="repeat_max_B",
        type=int,
        default=10**9,
        help="largest B whose tensorprog process also makes the repeated call",
    )
    for flag in ("--worker", "--no-repeat"):  # the worker process (internal)
        ap.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in ("--inputs", "--inputs2", "--save", "--nonlin"):
        ap.add_argument(flag, help=argparse.SUPPRESS)
    ap.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--repeat-calls", dest="repeat_calls", type=int, default=5, help=argparse.SUPPRESS
    )
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for cfg in a.configs:
            row = measure(cfg, a, Path(tmpdir))
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    text = table(rows)
    print()
    print(text)
    print(
        "fresh: import + first call (from each script's start); warm: fastest later call "
        "(tp on new inputs, NT un-jitted); NT jit: jit-compiled warm call; medians of "
        f"{a.rounds} alternating rounds"
    )
    out = Path(a.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[a.label] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {
            k: v
            for k, v in vars(a).items()
            if k not in ("worker", "inputs", "inputs2", "save", "depth", "nonlin", "no_repeat")
        },
        "rows": rows,
        "table": text,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))
    if figure(rows, out.with_suffix(".png"), a.label):
        print(f"figure: {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
