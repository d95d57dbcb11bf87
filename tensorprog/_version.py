"""The version of tensorprog, written once (pyproject.toml reads it; ``tp.__version__``)."""

__version__ = "0.1.0"
