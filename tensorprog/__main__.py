"""``python -m tensorprog`` — see :mod:`tensorprog.cli`."""

from .cli import main

raise SystemExit(main(prog="python -m tensorprog"))
