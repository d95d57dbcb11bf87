"""Griffe extension: render the library's reST inline markup as Markdown.

tensorprog's docstrings are NumPy style (as ``help()`` shows them) and use a few reST
constructs that Markdown does not know. This extension rewrites them when mkdocstrings
loads the package; the source files are untouched.

* ``:class:`~a.b.C``` (also ``:func:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``,
  ``:exc:``, ``:obj:``) → ``C`` as inline code (full path without ``~``);
* ``:math:`…``` → ``$…$`` (MathJax through ``pymdownx.arithmatex``);
* a ``.. math::`` directive with its indented block → a ``$$ … $$`` display;
* a bare doctest block (``>>>`` lines outside an ``Examples`` section, e.g. in a module
  docstring) → a fenced ``pycon`` code block.

It also repairs one artefact of static analysis: ``tensorprog/engine/__init__.py``
defines a function ``limit`` that shadows the submodule ``tensorprog.engine.limit``.
At run time ``tensorprog.engine.limit`` is the function, but griffe keeps the
submodule under that name, so the function's docstring would not appear anywhere.
The extension gives it to ``Program.limit`` (which forwards to it), where readers look
for it anyway.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _role(m: re.Match[str]) -> str:
    tilde, target = m.groups()
    target = target.strip()
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        target = target.split("<", 1)[0].strip()
    elif tilde:
        target = target.split(".")[-1]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group("indent")
        body: list[str] = [m.group("rest")] if m.group("rest").strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        block = textwrap.dedent("\n".join(b for b in body if b.strip() or body)).strip("\n")
        out.append(f"{indent}$$")
        out.extend(f"{indent}{b}" if b.strip() else "" for b in block.splitlines())
        out.append(f"{indent}$$")
        out.append("")
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _doctest_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    in_examples = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            in_examples = line.strip() == "Examples"  # a NumPy section header
        if not in_examples and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
                i += 1
            out += [f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


# A NumPy parameter line ``name : type``: its type is shown as code, where ``$…$``
# would stay literal, so math there is written out plainly.
_PARAM_LINE = re.compile(r"^(\s*\*{0,2}\w[\w, *]* : )(.*:math:`.*)$", re.MULTILINE)


def convert(text: str) -> str:
    """The docstring ``text`` with reST roles, math and bare doctests as Markdown."""
    text = _doctest_blocks(text)
    text = _PARAM_LINE.sub(lambda m: m.group(1) + _MATH.sub(r"\1", m.group(2)), text)
    text = _math_blocks(text)
    text = _MATH.sub(lambda m: f"${m.group(1)}$", text)
    return _ROLE.sub(_role, text)


_ENGINE_LIMIT = "tensorprog.engine.limit"
_PROGRAM_LIMIT = ("program", "Program", "limit")


def _program_limit_doc(engine_doc: str) -> str:
    """The docstring of ``tensorprog.engine.limit`` rephrased for ``Program.limit``."""
    lines = engine_doc.splitlines()
    out: list[str] = []
    skip = False
    for line in lines:
        if line.strip() == "program : Program":  # the program is ``self`` here
            skip = True
            continue
        if skip and line.startswith(" "):
            continue
        skip = False
        out.append(line)
    text = "\n".join(out)
    # Everything after ``method`` is passed through ``**kwargs`` by Program.limit, so
    # it is documented as "Other Parameters" (griffe checks "Parameters" against the
    # signature).
    text = re.sub(
        r"(\nmethod : [^\n]*\n(?:    [^\n]*\n)+)(?=\w)",
        lambda m: m.group(1) + "\nOther Parameters\n----------------\n",
        text,
        count=1,
    )
    head = (
        "``p.limit(method, **options)`` is ``tensorprog.engine.limit(p, method, **options)``; "
        "the options are keyword-only.\n\n"
    )
    first, _, rest = text.partition("\n\n")
    return f"{first}\n\n{head}{rest}"


class RestToMarkdown(griffe.Extension):
    """Rewrite reST roles and math in every docstring griffe loads."""

    def __init__(self) -> None:
        super().__init__()
        self._engine_limit_doc: griffe.Docstring | None = None

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
            if obj.path == _ENGINE_LIMIT and obj.is_function:
                self._engine_limit_doc = obj.docstring

    def _attach(self, pkg: griffe.Module) -> None:
        if pkg.name != "tensorprog" or self._engine_limit_doc is None:
            return
        try:
            meth = pkg[".".join(_PROGRAM_LIMIT)]
        except KeyError:
            return
        src = self._engine_limit_doc
        meth.docstring = griffe.Docstring(
            _program_limit_doc(src.value),
            parent=meth,
            parser=src.parser,
            parser_options=src.parser_options,
        )

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe >= 2
        self._attach(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe 1.x
        self._attach(pkg)
