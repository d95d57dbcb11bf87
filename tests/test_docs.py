"""The documentation: examples run, shown outputs are right, the site stands alone.

* Every public function exported by ``tensorprog`` and ``tensorprog.nn`` (their
  ``__all__``) has a NumPy-style docstring with an ``Examples`` section.
* Every ``python`` block of the README and of every page under ``docs/`` runs, in
  order, in one namespace per page, and what the page says it shows is checked:

  - **shown values**: a line ``expression  # => shown`` shows the value of the
    expression, as a REPL would print it (``repr``, or ``str``); ``shown`` is compared
    with it. Prose may follow `` — `` (an em dash between spaces). Numbers agree to the
    digits shown (rounded; ``3.1415…`` means truncated); ``…`` alone stands for any
    text; ``a ± e`` means ``|value − a| ≤ e``. A trailing comment on an expression line
    that starts like a value (a digit, a bracket, a quote, ``array(``, ``≈``) but lacks
    ``=>`` is an error: it would be an unchecked output;
  - **shown printout**: a ``text`` or ``latex`` block that directly follows a
    ``python`` block is that block's standard output, compared line by line with the
    same rules.
* No page, notebook, README or docstring cites a document a user cannot open: the
  project's internal notes (``THEORY``, ``DESIGN``, ``shared/``), or a relative ``.md``
  link that does not resolve (in ``docs/``, a page that the site does not build).
* ``mkdocs build --strict`` succeeds (broken links and anchors, missing pages,
  unresolved API references and docstring parse problems are all errors in strict
  mode), the rendered API reference contains no leftover reST markup, every notebook is
  rendered as a page, and the built site loads no script, style sheet or font from
  another host: math is rendered by the MathJax copy the site serves.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tokenize
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


ROOT_PAGES = [ROOT / "README.md"]
DOC_PAGES = ROOT_PAGES + sorted((ROOT / "docs").rglob("*.md"))

#: a fenced code block: its language and its body
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_SHOWN_TOKEN = re.compile(
    rf"(?P<num>{_NUMBER})(?P<trunc>…)?|(?P<any>…)|(?P<space>\s+)|(?P<char>.)", re.S
)
#: a trailing comment that starts like a value but is not marked ``# =>``
_UNMARKED_VALUE = re.compile(r"#\s*(?:[-+]?\d|\(|\[|\{|'|\"|array\(|True\b|False\b|None\b|≈)")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _number_agrees(shown: str, truncated: bool, actual: str) -> bool:
    s, v = float(shown), float(actual)
    mantissa, _, exponent = shown.lower().partition("e")
    if "." not in mantissa and not exponent and not truncated:
        return s == v  # an integer is shown exactly
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - decimals)
    slack = 1e-9 * unit + 1e-12
    if truncated:  # the digits of v, cut after the last shown
        lo, hi = (s, s + unit) if shown.lstrip()[0] != "-" else (s - unit, s)
        return lo - slack <= v < hi + slack
    return abs(v - s) <= 0.5 * unit + slack


def shows(shown: str, actual: str) -> bool:
    """Whether the displayed ``actual`` agrees with ``shown`` (see the module docstring)."""
    shown = shown.strip()
    if m := re.fullmatch(rf"({_NUMBER})\s*±\s*({_NUMBER})", shown):
        try:
            return abs(float(actual) - float(m.group(1))) <= float(m.group(2))
        except ValueError:
            return False
    parts, numbers = [], []
    for tok in _SHOWN_TOKEN.finditer(shown):
        if tok["num"] is not None:
            parts.append(f"({_NUMBER})")
            numbers.append((tok["num"], tok["trunc"] is not None))
        elif tok["any"] is not None:
            parts.append(".*?")
        elif tok["char"] is not None:
            parts.append(re.escape(tok["char"]))
    match = re.fullmatch(r"\s*" + r"\s*".join(parts) + r"\s*", actual.strip(), re.S)
    if match is None:
        return False
    return all(_number_agrees(s, trunc, a) for (s, trunc), a in zip(numbers, match.groups()))


def _trailing_comments(source: str) -> dict[int, str]:
    """``{line number: comment}`` of the comments of a block of Python code."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _run_block(block: str, ns: dict, where: str) -> tuple[str, list[str]]:
    """Run one block statement by statement; return its stdout and the failed checks."""
    tree = ast.parse(block)
    comments = _trailing_comments(block)
    failures = []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for stmt in tree.body:
            comment = comments.get(stmt.end_lineno, "")
            line = f"{where}, line {stmt.end_lineno}"
            marked = re.match(r"#\s*=>\s*(.*)", comment)
            if not isinstance(stmt, ast.Expr):
                if marked:
                    failures.append(f"{line}: '# =>' after a statement that has no value")
                code = compile(ast.Module([stmt], []), where, "exec")
                exec(code, ns)  # noqa: S102
                continue
            value = eval(compile(ast.Expression(stmt.value), where, "eval"), ns)  # noqa: S307
            if marked:
                shown = marked.group(1).split(" — ")[0]
                if not any(shows(shown, text) for text in (repr(value), str(value))):
                    failures.append(f"{line}: shows {shown!r}, but the value is {value!r}")
            elif _UNMARKED_VALUE.match(comment):
                failures.append(
                    f"{line}: {comment!r} looks like a shown value; write '# => …' "
                    "so that it is checked, or write it as prose"
                )
    return out.getvalue(), failures


@pytest.mark.parametrize("page", DOC_PAGES, ids=_page_id)
def test_python_examples_in_the_docs_run_and_show_what_they_print(page: Path):
    """Every ``python`` block of a page runs, in order, in one namespace; shown values and
    printouts (see the module docstring) are compared with what the code gives."""
    text = page.read_text(encoding="utf-8")
    blocks = list(_FENCE.finditer(text))
    ns: dict = {"__name__": "__docs__"}
    failures = []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for i, block in enumerate(blocks):
            if block["lang"] != "python":
                continue
            try:
                stdout, bad = _run_block(block["body"], ns, f"{_page_id(page)}[block {i}]")
            except ModuleNotFoundError as exc:
                if exc.name == "IPython":
                    pytest.skip("IPython is not installed (pip install -e '.[dev]')")
                raise
            failures += bad
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if (
                nxt is not None
                and nxt["lang"] in {"text", "latex"}
                and not text[block.end() : nxt.start()].strip()
            ):
                shown = nxt["body"].rstrip("\n").splitlines()
                got = stdout.rstrip("\n").splitlines()
                if len(shown) != len(got) or not all(map(shows, shown, got)):
                    failures.append(
                        f"{_page_id(page)}[block {i + 1}] shows a printout that differs "
                        f"from the output of block {i}:\n{stdout}"
                    )
    finally:
        os.chdir(cwd)
    assert not failures, "\n".join(failures)


@pytest.mark.slow  # ≈ 5 s of CPU: four simulations at each of n = 256, 1024, 4096
def test_the_demo_printout_shown_in_getting_started(monkeypatch):
    """The ``text`` block that follows the demo command of getting-started.md is the start of what
    ``python -m tensorprog demo`` prints (its first program, run here alone)."""
    from tensorprog import cli

    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    blocks = list(_FENCE.finditer(text))
    shown = [
        nxt["body"]
        for cmd, nxt in zip(blocks, blocks[1:])
        if cmd["lang"] == "bash"
        and "python -m tensorprog demo" in cmd["body"]
        and nxt["lang"] == "text"
    ]
    assert len(shown) == 1, "getting-started.md shows the demo's printout after its command"
    first = cli.demo_programs()[:1]
    monkeypatch.setattr(cli, "demo_programs", lambda: first)
    out = io.StringIO()
    assert cli.demo(out=out) == 0
    shown_lines = shown[0].rstrip("\n").splitlines()
    got = out.getvalue().rstrip("\n").splitlines()[: len(shown_lines)]
    assert len(got) == len(shown_lines) and all(map(shows, shown_lines, got)), out.getvalue()


def test_the_shown_value_convention():
    assert shows("(2.0, 'exact')", "(2.0, 'exact')")
    assert shows("(2.0, 'exact')", "(1.9999999999999996, 'exact')")
    assert not shows("(2.0, 'exact')", "(2.0, 'quadrature')")
    assert not shows("2.0", "2.1")
    assert shows("array([4.34195312, 2.25999961])", "array([4.341953121, 2.259999609])")
    assert not shows("array([4.34195312, 2.25999961])", "array([4.34195412, 2.25999961])")
    assert shows("104.47397097…", "104.473970973") and not shows("104.47397097…", "104.47397096")
    assert shows("2.0 ± 0.1", "1.95") and not shows("2.0 ± 0.1", "2.2")
    assert shows("(2048,)", "(2048,)") and not shows("(2048,)", "(2047,)")
    assert shows("the limit of r does not exist: …", "the limit of r does not exist: 1/(Z^{y})")
    assert shows("2.0*Z^{v}", "2.0*Z^{v}") and not shows("2.0·Z^{v}", "2.0*Z^{v}")
    stdout, failures = _run_block("x = 2\nx + 1  # => 3\nx  # 2\nx  # => 4\n", {}, "t")
    assert (
        len(failures) == 2
        and "looks like a shown value" in failures[0]
        and "shows '4'" in failures[1]
    )


# ------------------------------------------------------------------ references


#: documents of the project that a user cannot open: they must never be cited
_INTERNAL = re.compile(
    r"\bTHEORY\b|\bDESIGN(?:\.md)?\b|(?:\.\./)+shared\b|\bshared/(?:THEORY|DESIGN|STYLE)"
)
_MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+?\.md)(?P<anchor>#[^)\s]*)?\)")
_DOCS_PATH = re.compile(r"\bdocs/(?P<path>[\w./-]+?\.md)\b")


def _nav_pages() -> set[str]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of mkdocs) is needed")

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506

    def walk(node):  # the nav is a list of pages and of {title: page or list}
        if isinstance(node, str):
            return {node}
        items = node.values() if isinstance(node, dict) else node
        return set().union(*map(walk, items))

    return walk(config["nav"])


def _sources() -> list[tuple[str, str, Path]]:
    """``(where, text, folder its relative links start from)`` for every text a user reads."""
    out = [(_page_id(p), p.read_text(encoding="utf-8"), p.parent) for p in DOC_PAGES]
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            out.append((f"{_page_id(nb_path)}[cell {i}]", "".join(cell["source"]), nb_path.parent))
    for py in sorted((ROOT / "tensorprog").rglob("*.py")):
        out.append((_page_id(py), py.read_text(encoding="utf-8"), py.parent))
    return out


def test_every_notebook_is_a_page_of_the_site():
    nav = _nav_pages()
    missing = [
        nb.name
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
        if f"notebooks/{nb.stem}.md" not in nav
    ]
    assert not missing, f"notebooks without an entry in the nav of mkdocs.yml: {missing}"


def _anchors(md: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    text = re.sub(r"^```.*?^```", "", md.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slugify(h.strip(), "-") for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def test_no_reference_to_a_document_outside_the_site():
    nav = _nav_pages()
    docs = ROOT / "docs"
    generated = {f"notebooks/{p.stem}.md" for p in (ROOT / "notebooks").glob("*.ipynb")}
    problems = []
    for where, text, base in _sources():
        for m in _INTERNAL.finditer(text):
            problems.append(f"{where}: cites the internal document {m.group(0)!r}")
        for m in _MD_LINK.finditer(text):
            target = m["target"]
            if "://" in target:
                continue
            path = (base / target).resolve()
            in_docs = path.is_relative_to(docs)
            rel = path.relative_to(docs).as_posix() if in_docs else None
            if in_docs and rel not in nav and rel not in generated:
                problems.append(
                    f"{where}: links to {target!r}, which the site does not build "
                    "(not in the nav of mkdocs.yml)"
                )
            elif path.is_file():
                anchor = (m["anchor"] or "#")[1:]
                if anchor and anchor not in _anchors(path):
                    problems.append(
                        f"{where}: links to {target}#{anchor}, a heading that does not exist"
                    )
            elif rel not in generated:
                problems.append(f"{where}: links to {target!r}, which does not exist")
        if where.endswith(".py"):
            for m in _DOCS_PATH.finditer(text):
                if not (docs / m["path"]).is_file() or m["path"] not in nav:
                    problems.append(
                        f"{where}: refers to docs/{m['path']}, which is not a page of the site"
                    )
    assert not problems, "\n".join(problems)


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
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"

    for page in (
        "index.html",
        "getting-started/index.html",
        "kernels/index.html",
        "training/index.html",
        "gallery/index.html",
        "api/tensorprog/index.html",
        "api/nn/index.html",
        "api/gaussian/index.html",
        "api/latex/index.html",
        "api/engine/index.html",
        "notebooks/01_quickstart.ipynb",
        "notebooks/02_master_theorem.ipynb",
    ):
        assert (site / page).is_file(), f"the site has no {page}"

    api = {
        p: (site / "api" / p / "index.html").read_text(encoding="utf-8")
        for p in ("tensorprog", "nn", "gaussian", "latex", "engine")
    }
    assert 'id="tensorprog.Program"' in api["tensorprog"]
    assert 'id="tensorprog.engine.Limit"' in api["engine"]
    leftovers = {
        page: sorted(set(re.findall(r":(?:class|func|meth|data|mod|attr|math):`", html)))
        for page, html in api.items()
    }
    leftovers = {k: v for k, v in leftovers.items() if v}
    assert not leftovers, f"reST roles left in the rendered API reference: {leftovers}"

    # every notebook is rendered as a page, and the gallery links to the pages
    gallery = (site / "gallery" / "index.html").read_text(encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "notebooks" / nb.stem / "index.html"
        assert page.is_file(), f"the notebook {nb.name} has no rendered page"
        assert f'href="../notebooks/{nb.stem}/"' in gallery, (
            f"the gallery does not link to {nb.stem}"
        )
        assert f'href="../{nb.name}"' in page.read_text(encoding="utf-8"), (
            f"{page} has no download link"
        )

    # the site stands alone: nothing is loaded from another host, and MathJax is served
    external = []
    for html in site.rglob("*.html"):
        for tag in re.findall(
            r"<(?:script|link|img|iframe|source)\b[^>]*>", html.read_text(encoding="utf-8")
        ):
            if re.search(r"""\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag) and (
                not tag.startswith("<link")
                or re.search(r"rel=[\"']?(?:stylesheet|preconnect|preload|icon|modulepreload)", tag)
            ):
                external.append(f"{html.relative_to(site)}: {tag}")
    for css in site.rglob("*.css"):
        for url in re.findall(
            r"""(?:@import\s+|url\()\s*["']?((?:https?:)?//[^"')\s]+)""",
            css.read_text(encoding="utf-8", errors="replace"),
        ):
            external.append(f"{css.relative_to(site)}: {url}")
    assert not external, "the site loads resources from another host:\n" + "\n".join(
        sorted(set(external))[:20]
    )
    master = (site / "concepts" / "master-theorem" / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<script src="[./]*assets/mathjax/MathJax\.js"', master), (
        "MathJax is not loaded from the site"
    )
    assert 'class="arithmatex"' in master
    for part in (
        "MathJax.js",
        "config/TeX-AMS-MML_HTMLorMML-full.js",
        "extensions/tex2jax.js",
        "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js",
        "fonts/HTML-CSS/STIX-Web/woff/STIXMathJax_Main-Regular.woff",
    ):
        assert (site / "assets" / "mathjax" / part).is_file(), (
            f"the site has no assets/mathjax/{part}"
        )
