"""Fuzzing the loader: mutated saved files load as a valid program or raise FormatError.

The seeds are real files written by the library's own ``save`` (a program with custom,
parametrised and transparent nonlinearities; a program with every instruction kind,
builtin derivatives and ``tp.n`` scalars; a one-step NTK training program, whose bodies
hold ``Piecewise``; a saved limit). Hypothesis mutates them:

* JSON values replaced by other JSON (wrong types, huge and negative integers,
  non-finite floats, strings of code or srepr, nested arrays and objects), keys deleted or
  renamed, values wrapped in deep nesting, names pointed at other names;
* the srepr text of expressions: class names swapped for others (``Sum``,
  ``factorial``, ``Function('…')``, ``__import__``, ``Lambda``, ...), integers replaced by
  huge ones, subexpressions raised to large powers or nested deeply;
* the raw text truncated or with a character inserted.

Each mutated file must either load (a :class:`~tensorprog.Program` or
:class:`~tensorprog.io.LoadedLimit` that prints) or raise
:class:`~tensorprog.FormatError` — never another exception, never code run (a marker
file that any injected code would create is checked), and never a hang (a 30 s alarm
fails the test instead of hanging the suite; the hypothesis ``deadline`` reports slow
examples). ``max_examples`` keeps the suite to a few seconds in CI; run more with
``HYPOTHESIS_PROFILE=dev`` (the per-test ``max_examples`` is then scaled up 10×).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import tensorprog as tp
from tensorprog import io as tio

sys.path.insert(0, str(Path(__file__).parent))
from test_io import _no_hang as no_hang  # noqa: E402
from test_io import custom_program, rich_program  # noqa: E402

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"tensorprog_fuzz_marker_{os.getpid()}"
_SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 1


def fuzz_settings(n: int):
    return settings(
        max_examples=n * _SCALE,
        deadline=timedelta(seconds=10),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@functools.cache
def seeds() -> tuple[dict, ...]:
    from tensorprog import nn

    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.NTK(depth=2))
    run = nn.train_sgd(
        net, np.array([[1.0, 0.5], [-0.3, 1.2]]), np.array([1.0, -1.0]), lr=0.5, steps=1
    )
    lim = custom_program().limit(method="montecarlo", samples=256, seed=0)
    return tuple(tio.to_dict(x) for x in (custom_program(), rich_program(), run.program, lim))


def check_loader(text: str) -> None:
    """The property: a valid result or a FormatError, no code run, no hang."""
    note(text[:2000])
    MARKER.unlink(missing_ok=True)
    with no_hang():
        try:
            obj = tio.loads(text)
        except tp.FormatError:
            obj = None
        if obj is not None:
            assert isinstance(obj, (tp.Program, tio.LoadedLimit))
            repr(obj)
            str(obj.program if isinstance(obj, tio.LoadedLimit) else obj)
    assert not MARKER.exists(), "code from the file ran"


# ------------------------------------------------------------------------ strategies

CODE = [
    f"open({str(MARKER)!r}, 'w').close()",
    f"__import__('os').system('touch {MARKER}')",
    "x0 + 1",
    "1/0",
    "Integer(1)",
    "Symbol('x0', real=True)",
    "exp(Integer(1000))",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(10**60), 10**60),
    st.sampled_from([2**53, -(2**63), 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(CODE + ["nan", "inf", "-inf", "relu", "matmul"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(node, prefix=()):
    """Every path (tuple of keys/indices) to a value inside ``node``, the root excluded."""
    out = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        out.append(prefix + (k,))
        out += paths(v, prefix + (k,))
    return out


def parent(data, path):
    for k in path[:-1]:
        data = data[k]
    return data


@st.composite
def mutated_json(draw):
    data = copy.deepcopy(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 3))):
        ps = paths(data)
        if not ps:
            break
        path = draw(st.sampled_from(ps))
        box, key = parent(data, path), path[-1]
        kind = draw(st.sampled_from(["replace", "delete", "rename", "nest", "other name"]))
        if kind == "replace":
            box[key] = draw(JSON)
        elif kind == "delete":
            del box[key]
        elif kind == "rename" and isinstance(box, dict):
            box[draw(st.text(max_size=8) | st.sampled_from(sorted(box)))] = box.pop(key)
        elif kind == "nest":
            value = box[key]
            for _ in range(draw(st.integers(1, 40))):
                value = [value] if draw(st.booleans()) else {"k": value}
            box[key] = value
        elif kind == "other name":
            names = sorted({v for v in _strings(data) if len(v) < 20})
            if names:
                box[key] = draw(st.sampled_from(names))
    return data


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


CLASSES = [
    "Sum",
    "factorial",
    "Function('f')",
    "Function('relu')",
    "Function('lambda')",
    f"Function({CODE[0]!r})",
    "__import__",
    "eval",
    "Lambda",
    "Integral",
    "Tuple",
    "I",
    "oo",
    "zoo",
    "nan",
    "Symbol",
    "Integer",
    "Pow",
    "exp",
    "Max",
    "Heaviside",
    "gamma",
    "Piecewise",
    "Float",
    "Rational",
    "tanh",
    "DiracDelta",
    "Dummy",
    "Wild",
]
INTS = ["0", "-1", "100", "101", "1000000000", "9" * 40, "9" * 41, "1" * 5000, "2**2**30"]


def _srepr_fields(data):
    """(box, key) of every srepr string: bodies, args, params, scalar values."""
    prog = data.get("program", {})
    out = []
    for f in prog.get("nonlinearities", []):
        out += [(f, "body")] + [(f["args"], i) for i in range(len(f["args"]))]
    out += [(i, "value") for i in prog.get("instructions", []) if i.get("op") == "init_scalar"]
    return out


@st.composite
def mutated_srepr(draw):
    data = copy.deepcopy(draw(st.sampled_from(seeds())))
    box, key = draw(st.sampled_from(_srepr_fields(data)))
    text = box[key]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["class", "int", "power", "nest", "splice"]))
        if kind == "class":
            names = re.findall(r"[A-Za-z_]\w*(?=\()", text) or ["Symbol"]
            old = draw(st.sampled_from(names))
            text = text.replace(old, draw(st.sampled_from(CLASSES)), 1)
        elif kind == "int":
            nums = re.findall(r"(?<![\w.'])\d+(?![\w.'])", text)
            if nums:
                text = text.replace(draw(st.sampled_from(nums)), draw(st.sampled_from(INTS)), 1)
        elif kind == "power":
            text = f"Pow({text}, Integer({draw(st.sampled_from(INTS[:7]))}))"
        elif kind == "nest":
            k = draw(st.sampled_from([2, 50, 99, 101, 150, 300]))
            text = "Add(" * k + text + ", Integer(1))" * k
        else:  # splice another field's expression or a code string into this one
            other = draw(st.sampled_from([b[k] for b, k in _srepr_fields(data)] + CODE))
            text = f"Mul({text}, {other})"
    box[key] = text
    return data


# ------------------------------------------------------------------------------ tests


@fuzz_settings(40)
@given(mutated_json())
def test_mutated_json_loads_or_is_a_format_error(data):
    check_loader(json.dumps(data, allow_nan=True, ensure_ascii=False))


@fuzz_settings(40)
@given(mutated_srepr())
def test_mutated_expressions_load_or_are_a_format_error(data):
    check_loader(json.dumps(data, ensure_ascii=False))


@fuzz_settings(25)
@given(st.data())
def test_damaged_text_loads_or_is_a_format_error(data):
    text = json.dumps(
        data.draw(st.sampled_from(seeds()), label="seed"), indent=1, ensure_ascii=False
    )
    pos = data.draw(st.integers(0, len(text)), label="position")
    if data.draw(st.booleans(), label="truncate"):
        text = text[:pos]
    else:
        text = (
            text[:pos]
            + data.draw(st.sampled_from(list('[]{}",:0\\e-') + ["NaN", "\x00"]), label="insert")
            + text[pos:]
        )
    check_loader(text)


def test_the_seeds_load_unchanged():
    """The property's baseline: every unmutated seed loads (so mutations are what fail)."""
    for d in seeds():
        assert isinstance(tio.loads(json.dumps(d)), (tp.Program, tio.LoadedLimit))


@pytest.mark.parametrize("code", CODE[:2], ids=["open", "os.system"])
def test_the_marker_would_catch_code(code):
    """The marker check is live: the injected code, if evaluated, does create it; loaded
    as a function name it is refused and does not run."""
    MARKER.unlink(missing_ok=True)
    eval(code)  # noqa: S307 - the point: this is what a file must never make tensorprog do
    assert MARKER.exists()
    MARKER.unlink()
    d = copy.deepcopy(seeds()[0])
    d["program"]["nonlinearities"][0]["body"] = f"Function({code!r})(Symbol('x0', real=True))"
    with pytest.raises(tp.FormatError):
        tio.loads(json.dumps(d))
    assert not MARKER.exists()
