"""MkDocs hook: serve MathJax from the ``jupyter-server-mathjax`` package, never a CDN.

The site renders its formulas with MathJax 2.7 — the combined configuration
``TeX-AMS-MML_HTMLorMML-full`` (TeX input, HTML-CSS output) with the STIX-Web fonts, as
the classic Jupyter notebook serves it. The files come from the PyPI package
``jupyter-server-mathjax`` (BSD-3 wrapper of MathJax, Apache-2.0), a dependency of the
``dev`` extra; this hook adds them to the build under ``assets/mathjax/`` (all but the
translations of MathJax's menus). ``mkdocs.yml`` loads
``javascripts/mathjax.js`` (the configuration) and then ``assets/mathjax/MathJax.js``.

``tests/test_docs.py`` checks that the built site loads no script or style sheet from
another host.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: where the assets go in the site (``extra_javascript`` of mkdocs.yml points here)
DEST = "assets/mathjax"

#: the parts of MathJax 2.7 that javascripts/mathjax.js loads: the loader, the combined
#: configuration (input and output jax), the extensions, the jax' data and the fonts
_PARTS = ("MathJax.js", "LICENSE", "config", "extensions", "jax", "fonts")


def mathjax_root() -> Path:
    """The ``static`` folder of the installed ``jupyter_server_mathjax`` package."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        raise PluginError(
            "the documentation renders math with the MathJax files of the "
            "'jupyter-server-mathjax' package: pip install -e '.[dev]'"
        )
    return Path(spec.origin).parent / "static"


def mathjax_files() -> list[tuple[Path, str]]:
    """``(source file, path in the site)`` for every MathJax file the site needs."""
    root = mathjax_root()
    out = []
    for part in _PARTS:
        src = root / part
        paths = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        out += [(p, f"{DEST}/{p.relative_to(root).as_posix()}") for p in paths]
    if not out or not (root / "MathJax.js").is_file():
        raise PluginError(f"no MathJax.js in {root}; reinstall jupyter-server-mathjax")
    return out


def on_files(files: Files, config, **kwargs) -> Files:  # noqa: ANN001 - mkdocs hook signature
    for src, uri in mathjax_files():
        files.append(File.generated(config, uri, abs_src_path=str(src)))
    return files
