"""The documentation: public docstrings have examples, and the site builds strictly.

* Every public function exported by ``tensorprog`` and ``tensorprog.nn`` (their
  ``__all__``) has a NumPy-style docstring with an ``Examples`` section.
* ``mkdocs build --strict`` succeeds (broken links, missing pages, unresolved API
  references and docstring parse problems are all errors in strict mode), and the
  rendered API reference contains no leftover reST markup.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tensorprog
import tensorprog.nn

ROOT = Path(__file__).resolve().parents[1]
_EXAMPLES = re.compile(r"^Examples\n-{3,}\n", re.MULTILINE)


def _public_functions(module) -> list[tuple[str, object]]:
    return [
        (f"{module.__name__}.{name}", obj)
        for name in module.__all__
        if inspect.isfunction(obj := getattr(module, name))
    ]


PUBLIC_FUNCTIONS = _public_functions(tensorprog) + _public_functions(tensorprog.nn)


def test_there_are_public_functions_to_check():
    names = {name for name, _ in PUBLIC_FUNCTIONS}
    assert {"tensorprog.mean", "tensorprog.inner", "tensorprog.nn.classify"} <= names


def test_every_public_function_has_an_examples_section():
    offenders = []
    for name, fn in PUBLIC_FUNCTIONS:
        doc = inspect.getdoc(fn)
        if not doc:
            offenders.append(f"{name}: no docstring")
        elif not _EXAMPLES.search(doc + "\n"):
            offenders.append(f"{name}: no 'Examples' section")
    assert not offenders, "public functions without examples:\n  " + "\n  ".join(offenders)


DOC_PAGES = sorted(
    p for p in (ROOT / "docs").rglob("*.md")
    if p.name not in {"kernels.md", "training.md"}  # written (and tested) with their modules
)


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_python_examples_in_the_docs_run(page: Path):
    """Every ``python`` code block of a page runs, in order, in one namespace."""
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)
    ns: dict = {"__name__": "__docs__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"{page.name}[block {i}]", "exec"), ns)  # noqa: S102
            except ModuleNotFoundError as exc:
                if exc.name == "IPython":
                    pytest.skip("IPython is not installed (pip install -e '.[dev]')")
                raise


def _load_griffe_extension():
    pytest.importorskip("griffe", reason="griffe (mkdocstrings[python]) is not installed")
    path = ROOT / "docs" / "_hooks" / "griffe_rst.py"
    spec = importlib.util.spec_from_file_location("_tp_griffe_rst", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_rest_markup_is_converted_for_the_site():
    conv = _load_griffe_extension().convert
    assert conv("see :class:`~tensorprog.engine.Limit`") == "see `Limit`"
    assert conv(":func:`tensorprog.gaussian.relu_relu`") == "`tensorprog.gaussian.relu_relu`"
    assert conv(r"variance :math:`\sigma_W^2/n`") == r"variance $\sigma_W^2/n$"
    block = "Text\n\n.. math::\n\n    h = W x\n\nMore text"
    assert conv(block) == "Text\n\n$$\nh = W x\n$$\n\nMore text"
    # a bare doctest (module docstring) becomes a code block; Examples sections stay
    assert conv("Intro.\n\n>>> 1 + 1\n2") == "Intro.\n\n```pycon\n>>> 1 + 1\n2\n```"
    ex = "Examples\n--------\n>>> 1 + 1\n2"
    assert conv(ex) == ex
    # math in a parameter's type (rendered as code) is written out plainly
    assert conv("a : sequence, length :math:`L+1`\n    Text :math:`x`.") == (
        "a : sequence, length L+1\n    Text $x$."
    )


def test_mkdocs_build_strict(tmp_path: Path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]' installs the docs toolchain)")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"

    for page in ("index.html", "getting-started/index.html", "kernels/index.html",
                 "training/index.html", "gallery/index.html", "api/tensorprog/index.html",
                 "api/nn/index.html", "api/gaussian/index.html", "api/latex/index.html",
                 "api/engine/index.html", "notebooks/01_quickstart.ipynb",
                 "notebooks/02_master_theorem.ipynb"):
        assert (site / page).is_file(), f"the site has no {page}"

    api = {p: (site / "api" / p / "index.html").read_text(encoding="utf-8")
           for p in ("tensorprog", "nn", "gaussian", "latex", "engine")}
    assert 'id="tensorprog.Program"' in api["tensorprog"]
    assert 'id="tensorprog.engine.Limit"' in api["engine"]
    leftovers = {
        page: sorted(set(re.findall(r":(?:class|func|meth|data|mod|attr|math):`", html)))
        for page, html in api.items()
    }
    leftovers = {k: v for k, v in leftovers.items() if v}
    assert not leftovers, f"reST roles left in the rendered API reference: {leftovers}"
