"""The package's layers import downward only, and no modules import each other in a circle.

Every ``import`` counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only). ``LAYERS`` is the layering of
docs/concepts/architecture.md, lowest first: a module may import only modules of
strictly lower levels, except that the modules of one entry that names a package
without listing its modules (``engine.montecarlo``) may import each other. A new module
must be placed in the table.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tensorprog"

# (layer, levels): each level a tuple of table entries (module names relative to
# ``tensorprog``; "" is the package ``__init__``), lowest first. An entry covers the
# module and, if it is a package not listed further, its submodules.
LAYERS: list[tuple[str, list[tuple[str, ...]]]] = [
    (
        "core",
        [
            ("core", "core.errors", "core.texnames", "_version", "core._gc"),
            ("core._resources", "core.rng", "core.psd", "core.tables", "core.hooks"),
            ("core.nonlin",),
            ("core.ir",),
            ("core.interpreter",),
        ],
    ),
    (
        "dsl",
        [
            ("dsl",),
            ("dsl.program",),
            ("dsl.autodiff",),
        ],
    ),
    (
        "gaussian",
        [
            ("gaussian.quadrature", "gaussian.moments", "gaussian.closed_forms"),
            ("gaussian",),
        ],
    ),
    (
        "engine",
        [
            ("engine.symbols", "engine.methods", "engine.qmc"),
            ("engine.derivation", "engine.exact"),
            ("engine.forms",),
            ("engine.plan",),
            ("engine.existence",),
            ("engine.tails", "engine.growth"),
            ("engine.montecarlo.linalg", "engine.montecarlo.sources"),
            ("engine.montecarlo.estimates",),
            ("engine.montecarlo.schedule",),
            ("engine.montecarlo.passes",),
            ("engine.montecarlo.rules",),
            ("engine.montecarlo.chunks",),
            ("engine.montecarlo.distributed",),
            ("engine.montecarlo.run",),
            ("engine.evaluate", "engine.montecarlo", "engine.limit"),
            ("engine.compiled",),
            ("engine",),
        ],
    ),
    (
        "finite width, printers, file format",
        [
            ("simulate", "latex", "io"),
        ],
    ),
    (
        "package",
        [
            ("",),
        ],
    ),
    # nn is built on the public API (``from .. import name``: test_training.py) and the
    # package does not import it
    (
        "nn",
        [
            ("nn.parametrization", "nn.predict"),
            ("nn.mlp", "nn.model", "nn.optim", "nn.norms"),
            ("nn.stax", "nn.operator"),
            ("nn.kernels",),
            ("nn.train",),
            ("nn.training",),
            ("nn.classification", "nn.depth", "nn.coordcheck"),
            ("nn",),
        ],
    ),
    (
        "command line",
        [
            ("cli",),
            ("__main__",),
        ],
    ),
]


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name relative to ``tensorprog`` ("" for
    the package itself; a package by its own name)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _relative(dotted: str) -> str | None:
    """``tensorprog.a.b`` -> ``a.b`` (``tensorprog`` -> ""); None outside the package."""
    if dotted == "tensorprog":
        return ""
    return dotted[len("tensorprog.") :] if dotted.startswith("tensorprog.") else None


def _module_of(rel: str | None, modules: set[str]) -> str | None:
    """The module that defines ``rel`` (a module, or a name inside one)."""
    while rel is not None and rel not in modules:
        rel = rel.rpartition(".")[0] if rel else None
    return rel


def imports(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that the module ``name`` (its ``source``) imports: every
    import statement, anywhere in the file, except under ``if TYPE_CHECKING:``.
    ``from . import x`` is an import of module ``x`` when ``x`` is one, else of the
    package; ``from .m import f`` an import of ``m``."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(sub) for sub in ast.walk(node))
    here = ["tensorprog"] + ([p for p in name.split(".") if p])
    package = here if is_package else here[:-1]
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from . import m` imports module m, `from .m import f` m
                sub = _relative(f"{target}.{a.name}")
                found.add(sub if sub in modules else _module_of(_relative(target), modules))
        elif isinstance(node, ast.Import):
            found.update(_module_of(_relative(a.name), modules) for a in node.names)
    return {m for m in found if m is not None and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    names = set(mods)
    return {
        m: imports(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", names)
        for m, p in mods.items()
    }


def _levels() -> dict[str, tuple[int, str, str]]:
    """Table entry -> (level, layer, entry)."""
    out = {}
    level = 0
    for layer, levels in LAYERS:
        for entries in levels:
            for e in entries:
                assert e not in out, f"{e!r} is twice in LAYERS"
                out[e] = (level, layer, e)
            level += 1
    return out


def _place(module: str, table: dict[str, tuple[int, str, str]]) -> tuple[int, str, str]:
    """The table entry covering ``module``: itself, else its nearest listed package."""
    m = module
    while True:
        if m in table:
            return table[m]
        if not m:
            break
        m = m.rpartition(".")[0]
    raise AssertionError(
        f"tensorprog.{module} is in no layer: add it to LAYERS in "
        f"{Path(__file__).name} (and to docs/concepts/architecture.md)"
    )


def _show(m: str) -> str:
    return f"tensorprog.{m}" if m else "tensorprog"


def test_every_module_has_a_layer_and_every_entry_a_module():
    table = _levels()
    mods = _modules()
    for m in mods:
        _place(m, table)
    missing = [e for e in table if e not in mods]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


def test_imports_go_only_to_lower_layers():
    table = _levels()
    bad = []
    for m, targets in sorted(_graph().items()):
        lm, layer_m, entry_m = _place(m, table)
        for t in sorted(targets):
            lt, layer_t, entry_t = _place(t, table)
            if entry_t == entry_m and entry_m != m:
                continue  # inside a package listed as one entry
            if lt >= lm:
                bad.append(
                    f"{_show(m)} ({layer_m}) imports {_show(t)} ({layer_t}), which is "
                    f"{'at the same level' if lt == lm else 'above it'}"
                )
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = _graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(
            "modules import each other in a circle: " + " -> ".join(_show(m) for m in exc.args[1])
        )


def test_the_import_parser_counts_function_level_imports_and_skips_type_checking():
    """The checker itself: a function-level import counts, ``TYPE_CHECKING`` imports do
    not, ``from . import m`` is an import of ``m``, ``from .m import f`` of ``m``."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import hooks, ir\n"
        "from .errors import ProgramTypeError\n"
        "if TYPE_CHECKING:\n"
        "    from .engine.plan import Plan\n"
        "def f():\n"
        "    from .engine import limit\n"
        "    import tensorprog\n"
        "    return limit, tensorprog\n"
    )
    mods = {"", "hooks", "ir", "errors", "program", "engine", "engine.plan"}
    assert imports(source, "program", False, mods) == {"hooks", "ir", "errors", "engine", ""}
    # relative imports from inside a subpackage
    assert imports(
        "from ..ir import Var\nfrom .plan import Plan\n", "engine.limit", False, mods
    ) == {"ir", "engine.plan"}
    # and an upward import is reported
    table = _levels()
    assert _place("dsl.program", table)[0] < _place("engine", table)[0]


def test_every_hook_is_implemented_once_tensorprog_is_imported():
    """The methods of lower layers implemented above (``p.limit()``, ``lim.latex()``,
    ...) find their implementations: ``import tensorprog`` imports every registering
    module (tensorprog.core.hooks)."""
    import tensorprog as tp
    from tensorprog.core import hooks
    from tensorprog.engine.limit import Limit

    want = {
        hooks.simulate: {tp.Program},
        hooks.limit: {tp.Program},
        hooks.latex: {tp.Program, Limit},
        hooks.repr_latex: {tp.Program, Limit},
        hooks.html: {Limit},
        hooks.save: {tp.Program, Limit},
        hooks.dumps: {tp.Program},
        hooks.loads: {str},
    }
    assert set(want) == {getattr(hooks, h) for h in hooks.__all__}
    for hook, classes in want.items():
        assert set(hook.registry) - {object} == classes, hook.__name__
    with pytest.raises(tp.ProgramTypeError, match="no implementation for a int"):
        hooks.save(3, "x.json")
