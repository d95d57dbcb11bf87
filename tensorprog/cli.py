"""Command line: ``tensorprog {demo,latex,coordcheck} …`` (also ``python -m tensorprog …``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "demo_programs"]


def demo_programs() -> list:
    """The demo's programs: ``AᵀAv`` [TP3 Examples 2.5, 2.8] (docs/concepts/master-theorem.md)
    and a two-layer ReLU network."""
    import tensorprog as tp

    p1 = tp.Program("AtAv")
    A = p1.matrix("A", var=2.0)
    v = p1.vector("v")
    y = A.matmul(v, name="y")
    x = A.T.matmul(y, name="x")
    tp.inner(v, x, name="vx")  # -> σ_A² = 2
    tp.mean(x * x, name="xx")  # -> 2 σ_A⁴ = 8

    p2 = tp.Program("two_layer_relu")
    W1 = p2.matrix("W1", var=2.0)
    W2 = p2.matrix("W2", var=2.0)
    xi = p2.vectors("xi", cov=[[1.0, 0.6], [0.6, 1.0]])
    hs = []
    for i, x0 in enumerate(xi):
        h1 = W1.matmul(tp.relu(x0), name=f"h1_{i}")
        h2 = W2.matmul(tp.relu(h1), name=f"h2_{i}")
        hs.append(h2)
    tp.inner(tp.relu(hs[0]), tp.relu(hs[1]), name="K12")  # relu arc-cosine kernel
    tp.mean(tp.relu(hs[0]) ** 2, name="K11")
    return [p1, p2]


def demo(widths: Sequence[int] = (256, 1024, 4096), seeds: int = 4, out=None) -> int:
    """Print the demo programs and their scalars at growing width."""
    out = out or sys.stdout
    for p in demo_programs():
        print(p, file=out)
        names = [
            i.out.name
            for i in p.instructions
            if i.out.kind == "scalar" and not i.out.name.startswith("s")
        ]
        header = "  {:>8}".format("n") + "".join(f"{nm:>22}" for nm in names)
        print(f"\nfinite width (mean ± s.e. over {seeds} seeds) and the limit n → ∞:", file=out)
        print(header, file=out)
        for n in widths:
            vals = np.array([[p.simulate(n, seed=s)[nm] for nm in names] for s in range(seeds)])
            m, se = vals.mean(0), vals.std(0, ddof=1) / np.sqrt(seeds)
            print(f"  {n:>8}" + "".join(f"{a:>13.4f} ± {b:<6.4f}" for a, b in zip(m, se)), file=out)
        lim = p.limit()
        print(
            "  {:>8}".format("∞")
            + "".join(f"{lim[nm]:>13.4f} {lim.method(nm):<8}" for nm in names),
            file=out,
        )
        print(file=out)
    return 0


def _int_at_least(lo: int):
    """An argparse ``type``: an int ≥ ``lo`` (else a usage error naming the value)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} is not ≥ {lo}")
        return v

    parse.__name__ = f"int ≥ {lo}"
    return parse


def main(argv: Sequence[str] | None = None, prog: str = "tensorprog") -> int:
    """Entry point of the ``tensorprog`` console script (and, with ``prog="python -m
    tensorprog"``, of ``python -m tensorprog``): ``prog`` is how usage and help name
    the command (argparse would otherwise show ``__main__.py`` or ``cli.py``)."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description="tensorprog: compile Tensor Programs to their infinite-width limits.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="run a small demonstration: programs, finite widths, limits")
    d.add_argument(
        "--widths",
        type=_int_at_least(1),
        nargs="+",
        default=[256, 1024, 4096],
        help="widths to simulate, positive ints (default: 256 1024 4096)",
    )
    d.add_argument(
        "--seeds",
        type=_int_at_least(2),
        default=4,
        help="seeds per width, ≥ 2 for a standard error (default: 4)",
    )
    from .latex import add_cli_parser

    add_cli_parser(sub)  # `latex FILE.py [-o out.tex] [--pdf]`
    _add_coordcheck_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .core.errors import TensorProgramError

        try:
            return demo(args.widths, args.seeds)
        except TensorProgramError as exc:  # e.g. a width that does not fit in memory
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.command == "latex":
        return _latex_command(args)
    if args.command == "coordcheck":
        return _coordcheck_command(args)
    parser.print_help()
    return 0


def _latex_command(args: argparse.Namespace) -> int:
    """``latex FILE.py [-o OUT.tex]``: the output checked before anything is computed,
    a syntax error in FILE.py or a failed write reported in one line (exit 1)."""
    out = args.output
    if out is None and args.pdf:
        out = Path(args.file).with_suffix(".tex").name
    if out is not None and out != "-":
        problem = _unwritable(Path(out))
        if problem:
            print(f"error: -o {out}: {problem}; nothing was computed", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.lineno else str(exc.filename)
        print(f"error: {where}: syntax error: {exc.msg}", file=sys.stderr)
        if exc.text:
            print(f"    {exc.text.rstrip()}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the disk filled up while writing
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written (a missing or read-only folder, a directory, a
    read-only file), or None. Probes by creating a temporary file next to it (root may
    pass ``os.access`` checks and still fail), and leaves an existing file untouched."""
    import tempfile

    if path.is_dir():
        return "is a directory"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return f"folder {folder} does not exist"
    try:
        if path.exists():
            with open(path, "a"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".tensorprog-", delete=True):
                pass
    except OSError as exc:
        return f"cannot be written ({exc.strerror or exc})"
    return None


COORDCHECK_HELP = """\
A quantitative coordinate check (nn.coord_check) of the training run a Python file
defines. The file is executed as a script (like `python FILE.py`: run only files you
trust) and must define `run` (an nn.train or nn.train_sgd run) or `build()` returning
one. Writes DIR/coordcheck.csv (one row per tensor and step: fitted and predicted
exponents, limit, verdict), DIR/coordcheck_data.csv (the RMS per width and seed) and
DIR/coordcheck.png (the panels). Exit status 0 if every tensor is consistent, 1 if some
is not (or on an error), 2 on bad usage."""


def _add_coordcheck_parser(sub: Any) -> None:
    ap = sub.add_parser(
        "coordcheck",
        help="coordinate check of a training run: exponents, limits, verdicts (CSV + PNG)",
        description=COORDCHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("file", metavar="FILE.py", help="Python file defining `run` or `build()`")
    ap.add_argument(
        "-o", "--output", metavar="DIR", default=".", help="folder of the outputs (default: .)"
    )
    ap.add_argument(
        "--widths",
        type=_int_at_least(2),
        nargs="+",
        default=[256, 512, 1024, 2048],
        help="widths (default: 256 512 1024 2048)",
    )
    ap.add_argument(
        "--seeds", type=_int_at_least(2), default=4, help="seeds per width, ≥ 2 (default: 4)"
    )
    ap.add_argument(
        "--samples",
        type=_int_at_least(32),
        default=None,
        help="Monte Carlo samples of the limit (default: Program.limit's)",
    )
    ap.add_argument("--no-limit", action="store_true", help="fit the exponents only")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")


def _coordcheck_command(args: argparse.Namespace) -> int:
    import runpy

    from .core.errors import TensorProgramError

    out = Path(args.output)
    if not out.is_dir():
        print(f"error: -o {out}: not a folder; nothing was computed", file=sys.stderr)
        return 2
    problem = _unwritable(out / "coordcheck.csv")
    if problem:
        print(f"error: -o {out}: {problem}; nothing was computed", file=sys.stderr)
        return 2
    try:
        ns = runpy.run_path(args.file, run_name="__coordcheck__")
    except SyntaxError as exc:
        print(f"error: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "run" in ns:
        run = ns["run"]
    elif callable(ns.get("build")):
        run = ns["build"]()
    else:
        print(
            f"error: {args.file} defines neither `run` (an nn.train or nn.train_sgd run) nor "
            f"`build()` returning one",
            file=sys.stderr,
        )
        return 1
    from .nn import coord_check

    limit: Any = False if args.no_limit else ({"samples": args.samples} if args.samples else True)
    try:
        cc = coord_check(
            run, widths=args.widths, seeds=args.seeds, limit=limit, progress=args.progress
        )
        cc.summary.to_csv(out / "coordcheck.csv", index=False)
        cc.data.to_csv(out / "coordcheck_data.csv", index=False)
        import matplotlib

        matplotlib.use("Agg")
        cc.plot().savefig(out / "coordcheck.png", dpi=120, bbox_inches="tight")
    except (TensorProgramError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cols = ["tensor", "step", "exponent", "exponent_se", "predicted_exponent", "verdict"]
    print(cc.summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    bad = int((cc.summary.verdict == "inconsistent").sum())
    print(
        f"\n{len(cc.summary) - bad} of {len(cc.summary)} consistent; wrote {out}/coordcheck.csv, "
        f"{out}/coordcheck_data.csv, {out}/coordcheck.png"
    )
    return 1 if bad else 0
