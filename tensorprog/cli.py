"""Command line: ``tensorprog {demo,latex} …`` (also ``python -m tensorprog …``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
