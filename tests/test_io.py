"""Persistence: ``p.save`` / ``lim.save`` / ``tp.load`` (tensorprog.io).

The format is versioned JSON and lossless: a loaded program prints the same
instructions, has the same names, the same law, the same finite-width runs and the
same limit (bit for bit, same methods). Builtins (and their derivatives) come back as
the builtin objects so their closed forms still apply. Bad files raise clear errors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import sympy

import tensorprog as tp
from tensorprog import io as tio

# ---------------------------------------------------------------------------- programs


def rich_program() -> tp.Program:
    """Every instruction kind, custom and derivative nonlinearities, tp.n scalars."""
    p = tp.Program("rich")
    W = p.matrix("W", var=2.0)
    V = p.matrix("V", var=0.5)
    xs = p.vectors("xi", cov=[[1.0, 0.3], [0.3, 1.5]])
    y = p.vector("y", mean=0.25, var=0.7, cov={xs[0]: 0.1})
    c = p.scalar("c", 0.1)  # a float that is not exact in binary
    r = p.scalar("r", tp.n**-0.5 + sympy.Rational(1, 3))
    e = p.scalar("e", sympy.exp(-1 / tp.n) * sympy.pi)
    h = W @ tp.relu(xs[0])
    u = W.T.matmul(tp.tanh(h), name="u")
    g = V @ (u * c + xs[1])
    k = tp.mean(tp.relu(g) ** 2, name="k")
    phi = tp.nonlin(lambda a, b, s: a * sympy.tanh(b) + s, h, g, k, name="phi")
    dt = tp.tanh.derivative()(h, name="dtanh")  # tanh' = 1 - tanh²
    de = tp.erf.derivative()(g, name="derf")  # erf' has a registered closed form
    st = tp.relu.derivative()(h, name="st")  # relu' is step
    tp.inner(de, de, name="kderf")
    tp.inner(phi, dt + st, name="m1")
    tp.mean(tp.sin(y) * r + tp.cos(h) * e, name="m2")
    s = tp.sqrt(k) / (1 + k) - r
    tp.mean(g / tp.sqrt(k + 1.0) + s * y, name="m3")
    return p


def custom_program() -> tp.Program:
    """Custom nonlinearities: a Nonlinearity object with params and LaTeX, transparent too."""
    x0, x1, p0 = sympy.symbols("a b theta", real=True)
    soft = tp.Nonlinearity("softplus", sympy.log(1 + sympy.exp(x0)), [x0], latex=r"\zeta")
    scaled = tp.Nonlinearity("scaled", p0 * x0 + x1**2, [x0, x1], [p0], opaque=False)
    p = tp.Program("custom")
    W = p.matrix("W")
    x = p.vector("x", var=0.5)
    h = W @ x
    t = p.scalar("t", 0.75)
    a = soft(h, name="a")
    b = scaled(h, x, t, name="b")
    tp.mean(a * b, name="ab")
    tp.mean(soft.derivative()(h), name="dsoft")
    tp.inner(W.T @ a, x, name="back")
    return p


def _roundtrip(p, tmp_path, name="p.json"):
    path = tmp_path / name
    p.save(path)
    return tp.load(path), path


# ------------------------------------------------------------------- program round trip


@pytest.mark.parametrize("build", [rich_program, custom_program], ids=lambda b: b.__name__)
def test_program_roundtrip_is_lossless(build, tmp_path):
    p = build()
    q, path = _roundtrip(p, tmp_path)
    assert isinstance(q, tp.Program)
    assert q is not p
    assert str(q) == str(p)
    assert q.name == p.name
    assert [i.out.name for i in q] == [i.out.name for i in p]
    assert [type(i) for i in q] == [type(i) for i in p]
    assert [i.out.kind for i in q] == [i.out.kind for i in p]
    # the initial law, bit for bit
    assert np.array_equal(q.initial_covariance, p.initial_covariance)
    assert np.array_equal(q.initial_mean, p.initial_mean)
    # the same limit, the same methods
    lp, lq = p.limit(), q.limit()
    assert lq.values == lp.values
    assert {k: lq.method(k) for k in lq.values} == {k: lp.method(k) for k in lp.values}
    assert {k: lq.stderr(k) for k in lq.values} == {k: lp.stderr(k) for k in lp.values}
    # the same finite-width run (same seed), every scalar and vector
    sp, sq = p.simulate(64, seed=5), q.simulate(64, seed=5)
    assert sq.scalars == sp.scalars
    for ins in p:
        if ins.out.kind == "vector":
            assert np.array_equal(sq.vector(ins.out.name), sp.vector(ins.out.name))
    # the same LaTeX (names, latex names of nonlinearities, scalars' values)
    assert q.latex() == p.latex()
    # saving the loaded program writes the same file
    q.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_handles_by_name_and_loaded_program_is_usable(tmp_path):
    p = rich_program()
    q, _ = _roundtrip(p, tmp_path)
    k = q["k"]
    assert isinstance(k, tp.Scalar) and k.name == "k"
    assert isinstance(q["W"], tp.Matrix) and q["W"].variance == 2.0
    assert isinstance(q["u"], tp.Vector)
    # the loaded program can be extended like any other; generated names stay unique
    z = tp.mean(q["u"] * q["u"])
    assert z.name not in p and len(q) == len(p) + 2
    with pytest.raises(tp.ForeignHandleError):
        q["u"] + p["u"]
    zp = tp.mean(p["u"] * p["u"])
    assert q.limit()[z] == p.limit()[zp]


def test_montecarlo_limit_of_loaded_program_is_bit_identical(tmp_path):
    p = custom_program()
    q, _ = _roundtrip(p, tmp_path)
    a = p.limit(method="montecarlo", samples=4000, seed=11)
    b = q.limit(method="montecarlo", samples=4000, seed=11)
    assert a.values == b.values
    assert [a.stderr(k) for k in a.values] == [b.stderr(k) for k in b.values]


def test_builtins_and_their_derivatives_come_back_as_the_builtin_objects(tmp_path):
    p = rich_program()
    q, _ = _roundtrip(p, tmp_path)
    fn = {i.out.name: i.fn for i in q if hasattr(i, "fn")}
    assert fn["dtanh"] is tp.tanh.derivative()
    assert fn["derf"] is tp.erf.derivative()
    assert fn["st"] is tp.step
    assert q.definition(q["k"]).fn is tp.identity
    # ... so the registered closed forms still give exact values
    small = tp.Program("small")
    x = small.vector("x", var=0.8)
    tp.inner(tp.erf.derivative()(x), tp.erf.derivative()(x), name="dd")
    tp.mean(tp.relu.derivative()(x) * tp.relu(x), name="sr")
    loaded, _ = _roundtrip(small, tmp_path, "small.json")
    ll = loaded.limit()
    assert ll.method("dd") == ll.method("sr") == "exact"
    assert ll["dd"] == pytest.approx(4 / math.pi / math.sqrt(1 + 4 * 0.8), rel=1e-12)
    assert ll["sr"] == pytest.approx(math.sqrt(0.8 / (2 * math.pi)), rel=1e-12)
    lim = q.limit()
    # Independent reference: 𝔼[erf'(g)²] = (4/π) / √(1 + 4 Var g), Var g = 0.5·𝔼[(c u + ξ₁)²].
    # h = W relu(ξ₀): Var h = 2·𝔼 relu(ξ₀)² = 1. u = Wᵀ tanh(h) = Ẑ + Ż with
    # Ẑ ~ N(0, 2 𝔼 tanh(h)²) and Ż = 2 𝔼[tanh'(h)] relu(ξ₀) (ZDot, THEORY §2.1), so
    # 𝔼u² = 2 𝔼tanh² + 4 (𝔼tanh')² 𝔼relu(ξ₀)², 𝔼[u ξ₁] = 2 𝔼tanh' · Cov(ξ₀,ξ₁) 𝔼[step(ξ₀)].
    from scipy import integrate

    e_tanh2 = integrate.quad(
        lambda z: math.tanh(z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
        -40,
        40,
        epsabs=1e-14,
    )[0]
    e_dtanh = 1 - e_tanh2
    e_u2 = 2 * e_tanh2 + 4 * e_dtanh**2 * 0.5
    e_uxi1 = 2 * e_dtanh * 0.3 * 0.5
    var_g = 0.5 * (0.1**2 * e_u2 + 2 * 0.1 * e_uxi1 + 1.5)
    assert lim["kderf"] == pytest.approx(4 / math.pi / math.sqrt(1 + 4 * var_g), rel=1e-9)


def test_custom_nonlinearities_keep_name_latex_opacity_and_params(tmp_path):
    p = custom_program()
    q, _ = _roundtrip(p, tmp_path)
    a, b = q.definition(q["a"]).fn, q.definition(q["b"]).fn
    pa, pb = p.definition(p["a"]).fn, p.definition(p["b"]).fn
    for new, old in ((a, pa), (b, pb)):
        assert new is not old
        assert (new.name, new.opaque, new.latex_name, new.arity, new.nparams) == (
            old.name,
            old.opaque,
            old.latex_name,
            old.arity,
            old.nparams,
        )
        assert new.body == old.body and new.args == old.args and new.params == old.params
    assert a.latex_name == r"\zeta" and a.opaque and not b.opaque
    assert b.nparams == 1
    # one object per distinct nonlinearity of the file (the program's sharing is kept)
    sq = [i.fn for i in q if hasattr(i, "fn") and i.fn.name == "softplus"]
    assert len(sq) == 1


def test_width_dependent_scalars_roundtrip_exactly(tmp_path):
    p = tp.Program("widths")
    x = p.vector("x")
    vals = [
        tp.n**-0.5,
        1 + 3 / tp.n,
        sympy.log(tp.n) / tp.n,
        sympy.Float(0.1),
        sympy.Rational(2, 7),
        sympy.sqrt(2) + sympy.pi,
        1e-300,
        -2.5e10,
    ]
    for i, v in enumerate(vals):
        tp.mean(x * p.scalar(f"c{i}", v), name=f"m{i}")
    q, _ = _roundtrip(p, tmp_path)
    for i in range(len(vals)):
        vp = p.definition(p[f"c{i}"]).value
        vq = q.definition(q[f"c{i}"]).value
        assert vq == vp and sympy.srepr(vq) == sympy.srepr(vp)
        if tp.n in vp.free_symbols:
            assert vq.free_symbols == {tp.n}
    for n in (7, 100):
        assert q.simulate(n, seed=1).scalars == p.simulate(n, seed=1).scalars


def test_float_parameters_roundtrip_bit_for_bit(tmp_path):
    p = tp.Program("floats")
    p.matrix("W", var=0.1 + 0.2)
    p.vector("x", mean=1 / 3, var=math.pi / 7)
    p.vector("y", var=2 / 3, cov={p["x"]: 1e-17})
    q, _ = _roundtrip(p, tmp_path)
    assert q.definition(q["W"]).var == 0.1 + 0.2
    assert q.definition(q["x"]).mean == 1 / 3
    assert q.definition(q["x"]).var == math.pi / 7
    assert q.definition(q["y"]).cov[0][1] == 1e-17


def test_empty_program_and_unicode_names(tmp_path):
    q, _ = _roundtrip(tp.Program("empty"), tmp_path)
    assert len(q) == 0 and q.name == "empty"
    p = tp.Program("ünï ☃")
    x = p.vector("ξ₀")
    tp.mean(tp.tanh(x) ** 2, name="θ")
    q, path = _roundtrip(p, tmp_path)
    assert str(q) == str(p) and q["θ"].name == "θ"
    assert "ξ₀" in path.read_text(encoding="utf-8")


def test_file_is_versioned_json_with_a_header(tmp_path):
    p = custom_program()
    path = tmp_path / "p.json"
    p.save(str(path))  # str paths work as well as pathlib
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "tensorprog"
    assert data["version"] == 1 == tio.VERSION
    assert data["kind"] == "program"
    assert data["library_version"] == tp.__version__
    prog = data["program"]
    assert prog["name"] == "custom"
    assert [d["out"] for d in prog["instructions"]] == [i.out.name for i in p]
    soft = next(f for f in prog["nonlinearities"] if f["name"] == "softplus")
    assert soft["latex"] == r"\zeta" and soft["opaque"] is True
    assert soft["args"] == ["Symbol('x0', real=True)"]
    assert "log" in soft["body"] and "exp" in soft["body"]
    # no temporary files are left behind
    assert sorted(os.listdir(tmp_path)) == ["p.json"]


def test_nn_training_program_roundtrip(tmp_path):
    from tensorprog import nn

    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.muP(depth=2))
    X = np.array([[1.0, 0.5], [-0.3, 1.2]])
    run = nn.train_sgd(net, X, np.array([1.0, -1.0]), lr=0.5, steps=1)
    p = run.program
    q, _ = _roundtrip(p, tmp_path)
    assert str(q) == str(p)
    assert q.simulate(32, seed=2).scalars == p.simulate(32, seed=2).scalars


# ------------------------------------------------------------------------ saved limits


def test_limit_save_and_load(tmp_path):
    p = rich_program()
    # five correlated base Gaussians: beyond quadrature, so auto mixes in Monte Carlo
    zs = p.vectors("z", cov=0.5 * np.eye(5) + 0.5)
    t = [tp.tanh(z + 0.3) for z in zs]
    tp.mean(t[0] * t[1] * t[2] * t[3] * t[4], name="mc")
    lim = p.limit(samples=20_000, seed=3)
    assert "montecarlo" in {lim.method(k) for k in lim.values}  # a mixed result
    path = tmp_path / "lim.json"
    lim.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "limit" and data["version"] == 1
    loaded = tp.load(path)
    assert isinstance(loaded, tio.LoadedLimit)
    assert loaded.values == lim.values
    for k in lim.values:
        assert loaded[k] == lim[k]
        assert loaded.stderr(k) == lim.stderr(k)
        assert loaded.error(k) == lim.error(k)
        assert loaded.method(k) == lim.method(k)
    assert loaded.meta["seed"] == 3 and loaded.seed == 3
    assert loaded.meta["samples"] == 20_000 and loaded.samples == 20_000
    assert loaded.meta["method"] == "auto" == loaded.method_requested
    assert loaded.library_version == tp.__version__
    # the program comes along; its handles index the loaded limit
    assert str(loaded.program) == str(p)
    assert loaded[loaded.program["k"]] == lim["k"]
    assert loaded.table() == lim.table()
    assert "k" in loaded and "nope" not in loaded and "u" not in loaded
    with pytest.raises(tp.UnknownNameError, match="nope"):
        loaded["nope"]
    with pytest.raises(tp.ProgramTypeError, match="u is a vector"):
        loaded["u"]
    with pytest.raises(tp.ForeignHandleError):
        loaded[p["k"]]
    assert "Saved limit of 'rich'" in repr(loaded)


def test_deterministic_limit_records_no_seed(tmp_path):
    (p,) = [custom_program()]
    lim = p.limit(method="quadrature")
    lim.save(tmp_path / "l.json")
    loaded = tp.load(tmp_path / "l.json")
    assert loaded.meta["method"] == "quadrature"
    assert loaded.seed is None and loaded.samples is None
    assert set(loaded.methods.values()) <= {"exact", "quadrature"}


def test_limit_with_generator_seed_can_be_saved(tmp_path):
    p = custom_program()
    lim = p.limit(method="montecarlo", samples=2000, seed=np.random.default_rng(0))
    lim.save(tmp_path / "g.json")
    loaded = tp.load(tmp_path / "g.json")
    assert isinstance(loaded.seed, str) and "Generator" in loaded.seed
    assert loaded.values == lim.values


# ------------------------------------------------------------------------------ errors


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def _good(program=None) -> dict:
    return tio.to_dict(program or custom_program())


def test_newer_version_is_a_format_version_error(tmp_path):
    d = _good()
    d["version"] = 2
    d["library_version"] = "9.0"
    with pytest.raises(tp.FormatVersionError) as info:
        tp.load(_write(tmp_path, d))
    err = info.value
    assert isinstance(err, tp.TensorProgramError) and isinstance(err, ValueError)
    msg = str(err)
    assert "version 2" in msg and "9.0" in msg and "≤ 1" in msg and "Upgrade" in msg


def _mutate(path_list, value):
    def f(d):
        target = d
        for key in path_list[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path_list[-1]]
        else:
            target[path_list[-1]] = value
        return d

    return f


_DELETE = object()
_INS = ["program", "instructions"]

# (id, mutation of a good file's dict, substrings the message must contain)
CORRUPT = [
    ("no format", _mutate(["format"], _DELETE), ['"format"']),
    ("other format", _mutate(["format"], "numpy"), ['"format"', "numpy"]),
    ("version str", _mutate(["version"], "1"), ["version"]),
    ("version 0", _mutate(["version"], 0), ["version"]),
    ("kind", _mutate(["kind"], "model"), ["kind", "model"]),
    ("no program", _mutate(["program"], _DELETE), ['"program"']),
    ("instructions not a list", _mutate(_INS, {}), ["instructions", "JSON array"]),
    ("instruction not an object", _mutate(_INS + [0], 3), ["instruction 0"]),
    ("unknown op", _mutate(_INS + [0, "op"], "conv2d"), ["instruction 0", "conv2d", "matmul"]),
    ("missing field", _mutate(_INS + [0, "var"], _DELETE), ["instruction 0", "'W'", '"var"']),
    ("negative var", _mutate(_INS + [0, "var"], -1.0), ["instruction 0", "'W'", "var", "≥ 0"]),
    ("var as string", _mutate(_INS + [1, "var"], "0.5"), ["instruction 1", "'x'", "number"]),
    (
        "undefined ref",
        _mutate(_INS + [2, "arg"], "ghost"),
        ["instruction 2", "ghost", "not defined"],
    ),
    ("wrong kind ref", _mutate(_INS + [2, "arg"], "W"), ["instruction 2", "'W'", "matrix"]),
    ("transpose not bool", _mutate(_INS + [2, "transpose"], "yes"), ["instruction 2", "transpose"]),
    ("fn index", _mutate(_INS + [5, "fn"], 99), ["instruction 5", "99"]),
    (
        "bad srepr",
        _mutate(["program", "nonlinearities", 0, "body"], "Add(Symbol('x0'"),
        ["nonlinearity 0", "srepr"],
    ),
    (
        "code in srepr",
        _mutate(["program", "nonlinearities", 0, "body"], "__import__('os').getcwd()"),
        ["nonlinearity 0"],
    ),
    (
        "sympified string",
        _mutate(["program", "nonlinearities", 0, "body"], "tanh('x0 + 1')"),
        ["nonlinearity 0", "string"],
    ),
    (
        "free symbol",
        _mutate(["program", "nonlinearities", 0, "body"], "Symbol('zz', real=True)"),
        ["nonlinearity 0", "zz"],
    ),
    (
        "arity mismatch",
        _mutate(["program", "nonlinearities", 0, "args"], []),
        ["nonlinearity 0", "softplus", "x0"],
    ),
    ("duplicate name", _mutate(_INS + [1, "out"], "W"), ["instruction 1", "'W'", "already used"]),
]


@pytest.mark.parametrize("case", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_files_are_clear_errors(case, tmp_path):
    _, mutate, needles = case
    d = mutate(_good())
    with pytest.raises(tio.CorruptFileError) as info:
        tp.load(_write(tmp_path, d))
    err = info.value
    assert isinstance(err, tp.ProgramValueError) and isinstance(err, ValueError)
    msg = str(err)
    assert msg.startswith("corrupt tensorprog file") and "bad.json" in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_the_custom_program_fixture_layout_matches_the_corruption_table():
    """The CORRUPT table indexes instructions 0, 1, 2, 5: check they are what it assumes."""
    ins = _good()["program"]["instructions"]
    assert [ins[i]["op"] for i in (0, 1, 2, 5)] == [
        "init_matrix",
        "init_vector",
        "matmul",
        "nonlin",
    ]
    assert _good()["program"]["nonlinearities"][0]["name"] == "softplus"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "invalid JSON"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ("null", "JSON object"),
        ('{"format": "tensorprog"}', "version"),
    ],
    ids=["empty", "garbage", "list", "null", "header only"],
)
def test_non_tensorprog_files(text, needle, tmp_path):
    with pytest.raises(tio.CorruptFileError, match=needle):
        tp.load(_write(tmp_path, text))


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(tio.CorruptFileError, match="UTF-8"):
        tp.load(path)


def test_nonpsd_initial_law_in_file_is_rejected(tmp_path):
    p = tp.Program("psd")
    x = p.vector("x")
    p.vector("y", cov={x: 0.5})
    d = tio.to_dict(p)
    d["program"]["instructions"][1]["cov"][0][1] = 3.0
    with pytest.raises(tio.CorruptFileError, match="positive semidefinite") as info:
        tp.load(_write(tmp_path, d))
    assert "'y'" in str(info.value)


def test_limit_file_errors(tmp_path):
    d = tio.to_dict(custom_program().limit())
    d["limit"]["scalars"][0]["name"] = "b"  # a vector
    with pytest.raises(tio.CorruptFileError, match="'b'. is not a scalar"):
        tp.load(_write(tmp_path, d))
    d = tio.to_dict(custom_program().limit())
    d["limit"]["scalars"][0]["method"] = "guess"
    with pytest.raises(tio.CorruptFileError, match="guess"):
        tp.load(_write(tmp_path, d))
    d = tio.to_dict(custom_program().limit())
    del d["limit"]
    with pytest.raises(tio.CorruptFileError, match='"limit"'):
        tp.load(_write(tmp_path, d))


def test_missing_file(tmp_path):
    with pytest.raises(tio.MissingFileError) as info:
        tp.load(tmp_path / "nope.json")
    assert isinstance(info.value, FileNotFoundError) and isinstance(
        info.value, tp.TensorProgramError
    )
    assert "nope.json" in str(info.value)


def test_missing_folder_and_directories(tmp_path):
    p = custom_program()
    with pytest.raises(tio.MissingFileError, match="does not exist") as info:
        p.save(tmp_path / "no" / "such" / "p.json")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(tp.ProgramValueError, match="is a directory"):
        p.save(tmp_path)
    with pytest.raises(tp.ProgramValueError, match="is a directory"):
        tp.load(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [None, 3, ["a.json"]], ids=["None", "int", "list"])
def test_bad_paths(bad, tmp_path):
    with pytest.raises(tp.ProgramTypeError, match="path"):
        tp.load(bad)
    with pytest.raises(tp.ProgramTypeError, match="path"):
        custom_program().save(bad)


def test_only_programs_and_limits_can_be_saved(tmp_path):
    with pytest.raises(tp.ProgramTypeError, match="Program"):
        tio.save(custom_program().simulate(8), tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_unsaveable_expression_is_refused_before_writing(tmp_path):
    class weird(sympy.Function):  # not a sympy class: cannot be rebuilt from its srepr
        @classmethod
        def eval(cls, x):
            return None

    p = tp.Program("weird")
    x = p.vector("x")
    tp.nonlin(lambda a: weird(a) + a, x, name="w")
    path = tmp_path / "w.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(tp.ProgramValueError, match="nonlinearity 'w'"):
        p.save(path)
    assert path.read_text(encoding="utf-8") == "old"  # untouched
    assert sorted(os.listdir(tmp_path)) == ["w.json"]


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "p.json"
    custom_program().save(path)
    rich_program().save(path)
    assert tp.load(path).name == "rich"
    assert sorted(os.listdir(tmp_path)) == ["p.json"]


def test_dumps_loads_in_memory():
    p = custom_program()
    text = tio.dumps(p)
    assert str(tio.loads(text)) == str(p)
    with pytest.raises(tp.ProgramTypeError):
        tio.loads(b"{}")


# ------------------------------------------------- a file is data, never code (issue 13)
#
# Each case of issue 13 ("Code execution and injection from files and strings", the
# loader cases of "Unbounded work" and "Raw errors") reproduced: before the fix the code
# ran, the load never returned, or a raw ValueError/RecursionError/OSError came out.


@contextlib.contextmanager
def _no_hang(seconds=60):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def alarm(*_):
        raise AssertionError(f"did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _tanh2_program():
    p = tp.Program("t")
    x = p.vector("x")
    tp.mean(tp.tanh(x) ** 2, name="m")
    return p


def _with_body(body, program=None):
    d = tio.to_dict(program or _tanh2_program())
    d["program"]["nonlinearities"][0]["body"] = body
    return d


def _format_error(d, *needles):
    """Load ``d`` (via JSON text): a FormatError whose message has every needle."""
    with _no_hang(), pytest.raises(tp.FormatError) as info:
        tio.loads(json.dumps(d), source="f.json")
    err = info.value
    assert isinstance(err, tp.TensorProgramError) and isinstance(err, ValueError)
    for needle in needles:
        assert needle in str(err), f"{needle!r} not in {str(err)!r}"
    return err


def _marker_code(path):
    """Python source that, if ever evaluated, creates ``path``."""
    return f"open({str(path)!r}, 'w').close() or 1"


def test_function_name_with_code_in_a_body_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    body = f"Function({_marker_code(marker)!r})(Symbol('x0', real=True))"
    _format_error(
        _with_body(body),
        "program.nonlinearities[0].body",
        "Function(",
        "builtin nonlinearity",
        "relu",
        "declared earlier",
        "identifier",
    )
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lambda", "x y", "os.system", "", "f'", "undeclared"])
def test_function_names_must_be_builtin_or_declared_identifiers(name):
    body = f"Function({name!r})(Symbol('x0', real=True))"
    _format_error(_with_body(body), "program.nonlinearities[0].body", "identifier")


def test_function_referring_to_a_builtin_is_that_builtin():
    d = _with_body("Pow(Function('tanh')(Symbol('x0', real=True)), Integer(2))")
    d["program"]["nonlinearities"][0]["name"] = "sq_tanh"
    q = tio.loads(json.dumps(d))
    fn = next(i.fn for i in q if getattr(i, "fn", None) and i.fn.name == "sq_tanh")
    (inner,) = [f.func.nonlinearity for f in fn.body.atoms(sympy.Function)]
    assert inner is tp.tanh
    # m = mean(sq_tanh(x)²) → E[tanh(Z)⁴], Z ~ N(0, 1), by an independent quadrature
    from scipy import integrate

    ref = integrate.quad(
        lambda z: math.tanh(z) ** 4 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
        -40,
        40,
        epsabs=1e-14,
    )[0]
    assert q.limit()["m"] == pytest.approx(ref, rel=1e-9)


def test_nested_nonlinearities_roundtrip_by_name(tmp_path):
    """A body applying tp.relu and a user nonlinearity is written with Function('name')
    references (the user one declared first) and evaluates after loading (before: the
    numpy form raised NameError and the program could not be saved)."""
    a = sympy.Symbol("a", real=True)
    soft = tp.Nonlinearity("softplus", sympy.log(1 + sympy.exp(a)), [a])
    p = tp.Program("nest")
    x = p.vector("x", var=0.7)
    y = tp.nonlin(lambda u: tp.relu.apply(u) * 2 + soft.apply(u), x, name="y", fn_name="mix")
    tp.mean(y, name="m")
    q, path = _roundtrip(p, tmp_path)
    fns = json.loads(path.read_text(encoding="utf-8"))["program"]["nonlinearities"]
    assert [f["name"] for f in fns][:2] == ["softplus", "mix"]
    assert "Function('relu')" in fns[1]["body"] and "Function('softplus')" in fns[1]["body"]
    assert q.simulate(64, seed=3).scalars == p.simulate(64, seed=3).scalars
    lq = q.limit()
    assert lq.values == p.limit().values
    # E[2 relu(X) + softplus(X)], X ~ N(0, 0.7), by quadrature written here
    from scipy import integrate

    s = math.sqrt(0.7)
    dens = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    ref = integrate.quad(
        lambda z: (2 * max(s * z, 0) + math.log1p(math.exp(s * z))) * dens(z),
        -30,
        30,
        epsabs=1e-13,
        points=[0],
    )[0]
    assert lq["m"] == pytest.approx(ref, abs=max(5 * lq.error("m"), 1e-9))


def test_forward_and_ambiguous_function_references_are_refused():
    d = tio.to_dict(custom_program())
    fns = d["program"]["nonlinearities"]
    fns[0]["body"] = f"Function({fns[1]['name']!r})(Symbol('x0', real=True))"  # declared later
    _format_error(d, "program.nonlinearities[0].body", "declared earlier")


def test_undefined_functions_never_reach_code_generation(tmp_path):
    marker = tmp_path / "ran"
    for fname in ("f", _marker_code(marker)):
        p = tp.Program("undef")
        v = p.vector("v")
        tp.mean(tp.nonlin(lambda a: sympy.Function(fname)(a) + a, v), name="m")  # noqa: B023
        with pytest.raises(tp.ProgramValueError, match="tp.Nonlinearity"):
            p.simulate(8, seed=0)
        with pytest.raises(tp.TensorProgramError):
            p.limit(method="montecarlo", samples=256, seed=0)
        with pytest.raises(tp.ProgramValueError, match="cannot save"):
            p.save(tmp_path / "u.json")
    assert not marker.exists()


@pytest.mark.parametrize("call", ["scalar", "Nonlinearity", "nonlin", "nonlinearity"])
def test_no_public_api_evaluates_a_string(call, tmp_path):
    marker = tmp_path / "ran"
    code = _marker_code(marker)
    p = tp.Program()
    v = p.vector("v")
    with pytest.raises(tp.ProgramTypeError, match="never evaluates a string"):
        if call == "scalar":
            p.scalar("c", code)
        elif call == "Nonlinearity":
            tp.Nonlinearity("f", code, [sympy.Symbol("x")])
        elif call == "nonlin":
            tp.nonlin(lambda a: code, v)
        else:
            from tensorprog.core.nonlin import nonlinearity

            nonlinearity(lambda a: code, 1)
    assert not marker.exists()
    # numbers and sympy expressions are still fine
    assert p.scalar("c", 0.5).name == "c"


# (id, body srepr) bodies whose evaluation was unbounded: load now refuses each at once
_X0 = "Symbol('x0', real=True)"
UNBOUNDED = [
    ("Pow(10, 10**9)", f"Mul({_X0}, Pow(Integer(10), Integer(1000000000)))", "exponent"),
    (
        "2**2**2**30",
        f"Mul({_X0}, Pow(Integer(2), Pow(Integer(2), Pow(Integer(2), Integer(30)))))",
        "exponent",
    ),
    (
        "factorial(10**8)",
        f"Mul({_X0}, factorial(Integer(100000000)))",
        "'factorial' is not allowed",
    ),
    (
        "Sum(x0**k, k ≤ 10**12)",
        f"Sum(Pow({_X0}, Symbol('k', integer=True)), Tuple(Symbol('k', integer=True), Integer(0), "
        f"Integer(1000000000000)))",
        "'Sum' is not allowed",
    ),
    ("exp(exp(10**39))", f"Mul({_X0}, exp(exp(Integer({'9' * 39}))))", "float64"),
    (
        "Max of near-equal towers",
        f"Max({_X0}, exp(exp(Integer({'9' * 39}))), exp(exp(Add(Integer({'9' * 39}), Integer(1)))))",
        "float64",
    ),
    (
        "x0**(10**6) by nesting",
        f"Pow(Pow(Pow({_X0}, Integer(100)), Integer(100)), Integer(100))",
        "exponent",
    ),
    ("41-digit integer", f"Mul({_X0}, Integer({'1' * 41}))", "41 digits"),
    ("huge product", "Mul(" + ", ".join([f"Integer({'9' * 40})"] * 120) + f", {_X0})", "bits"),
    ("huge Float", f"Mul({_X0}, Float('1e400', precision=53))", "float64"),
    ("Float precision", f"Mul({_X0}, Float('0.5', precision=10000000))", "precision"),
    ("deep nesting", "Add(" * 150 + _X0 + ")" * 150, "nest"),
    ("Dirac order", f"DiracDelta({_X0}, Integer(100000))", "exponent"),
]


@pytest.mark.parametrize("case", UNBOUNDED, ids=[c[0] for c in UNBOUNDED])
def test_unbounded_expressions_are_refused_at_load(case):
    _, body, needle = case
    _format_error(_with_body(body), "program.nonlinearities[0].body", needle)


def test_bounds_admit_what_they_state():
    """The stated bounds are inclusive: |exponent| = 100, 40-digit integers load."""
    big = int("9" * 40)
    for body, ref in (
        (f"Pow({_X0}, Integer(100))", "x0**100"),
        (f"Mul({_X0}, Rational(1, {big}))", f"x0/{big}"),
    ):
        d = _with_body(body)
        d["program"]["nonlinearities"][0]["name"] = "ok"
        q = tio.loads(json.dumps(d))
        fn = next(i.fn for i in q if getattr(i, "fn", None) and i.fn.name == "ok")
        assert str(fn.body) == ref


@pytest.mark.parametrize(
    "body,needle",
    [
        ("__import__('os').getcwd()", "not allowed"),
        ("Symbol('x0', real=True).__class__", "Attribute"),
        ("Symbol('x0', evaluate=True)", "assumptions"),
        ("Symbol('x0', real='yes')", "assumptions"),
        ("Add(Symbol('x0', real=True), I)", "'I' is not allowed"),
        ("Mul(Symbol('x0', real=True), oo)", "'oo' is not allowed"),
        ("Float('nan')", "Float"),
        ("Rational(1, 0)", "denominator 0"),
        ("Mul(Symbol('x0', real=True), log(Integer(0)))", "finite real"),
        ("Max(" + ", ".join(f"Symbol('x{i}', real=True)" for i in range(65)) + ")", "at most 64"),
        ("lambda: 1", "Lambda"),
        ("[Integer(1)]", "List"),
    ],
    ids=[
        "import",
        "attribute",
        "symbol kwarg",
        "assumption value",
        "I",
        "oo",
        "nan",
        "1/0",
        "log 0",
        "Max args",
        "lambda",
        "list",
    ],
)
def test_expressions_outside_the_whitelist(body, needle):
    _format_error(_with_body(body), "program.nonlinearities[0].body", needle)


def test_the_whitelist_is_what_the_writer_uses():
    """Every sympy class name written for the library's own programs (builtins and their
    derivatives, training programs with Piecewise, tp.n scalars) is in the whitelist, and
    nothing the whitelist allows is a code path (only sympy classes, no Function class)."""
    from tensorprog import nn

    net = nn.MLP(d_in=2, depth=2, nonlin="tanh", param=nn.NTK(depth=2))  # writes Piecewise
    run = nn.train_sgd(
        net, np.array([[1.0, 0.5], [-0.3, 1.2]]), np.array([1.0, -1.0]), lr=0.5, steps=1
    )
    p = rich_program()
    for name in ("gelu", "sigmoid", "sign", "abs", "exp", "sqrt", "erf"):
        tp.mean(tp.get_nonlinearity(name).derivative()(p["y"]))
    used = set()
    for prog in (p, run.program, custom_program()):
        d = tio.to_dict(prog)
        texts = [f["body"] for f in d["program"]["nonlinearities"]] + [
            i["value"] for i in d["program"]["instructions"] if i["op"] == "init_scalar"
        ]
        for t in texts:
            used |= set(re.findall(r"([A-Za-z_]\w*)\(", t)) | set(
                re.findall(r"\b(pi|E|true|false)\b", t)
            )
    allowed = set(tio.SYMPY_CLASSES) | set(tio.SYMPY_CONSTANTS) | {"Function"}
    assert used <= allowed, used - allowed
    assert {"Piecewise", "Heaviside", "DiracDelta", "Max", "erf", "Equality"} <= used
    assert all(
        isinstance(c, type) and c.__module__.startswith("sympy.")
        for c in tio.SYMPY_CLASSES.values()
    )


def test_unwritable_expressions_are_refused_before_writing(tmp_path):
    p = tp.Program("gamma")
    x = p.vector("x")
    tp.mean(tp.nonlin(lambda a: sympy.gamma(a * a + 1), x, fn_name="g"), name="m")
    with pytest.raises(tp.ProgramValueError, match="nonlinearity 'g'.*'gamma' is not allowed"):
        p.save(tmp_path / "g.json")
    assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------- LaTeX


def test_latex_field_from_a_file_must_be_safe():
    for bad in (
        r"\input{/etc/hostname}",
        r"\operatorname{f}\write18{ls}",
        "a%b",
        "f^^5cinput",
        "#1",
        r"\def\x{y}",
        "{unbalanced",
        "a\nb",
    ):
        d = tio.to_dict(_tanh2_program())
        d["program"]["nonlinearities"][0]["latex"] = bad
        _format_error(d, "program.nonlinearities[0].latex", "not safe LaTeX")


def test_unsafe_function_names_are_escaped_in_latex(tmp_path):
    """fn_name went into \\operatorname{…} raw; now an unsafe name is printed as escaped
    text by every printer, and the file stores the escaped form (which loads)."""
    p = tp.Program("inj")
    v = p.vector("v")
    y = tp.nonlin(lambda a: a * a, v, name="y", fn_name=r"f}\input{/etc/hostname")
    tp.mean(y, name="m")
    lim = p.limit()
    for tex in (p.latex(), lim.latex(), sympy.latex(lim.Z(y))):
        assert r"\input" not in tex
        assert r"\text{f\}\textbackslash{}input\{/etc/hostname}" in tex
    q, _ = _roundtrip(p, tmp_path)
    assert q.latex() == p.latex()


@pytest.mark.parametrize(
    "tex,safe",
    [
        (r"\operatorname{softplus}", True),
        (r"\zeta", True),
        (r"\tanh'", True),
        (r"\partial_{0}\operatorname{phi}", True),
        (r"\operatorname{Δtanh}", True),
        (r"\operatorname{\text{a\_b\{\}}}", True),
        (r"\mathrm{relu}^{2}", True),
        (r"\input{x}", False),
        (r"\include{x}", False),
        (r"\immediate\write18{x}", False),
        (r"\catcode`\%=12", False),
        ("^^5c", False),
        ("a\x00", False),
        ("}{", False),
        (r"\csname input\endcsname", False),
        ("x" * 501, False),
        (r"a\\b", False),
    ],
)
def test_is_safe_latex(tex, safe):
    from tensorprog.latex import is_safe_latex

    assert is_safe_latex(tex) is safe


# ------------------------------------------------------------------------ saved limits


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("value", "nan", "value nan is not finite"),
        ("value", "inf", "value inf is not finite"),
        ("stderr", -1.0, "standard error -1.0"),
        ("stderr", "inf", "standard error inf"),
        ("stderr", "nan", "standard error nan"),
        ("error", -0.5, "error estimate -0.5"),
        ("error", "nan", "error estimate nan"),
        ("method", "guess", "unknown method 'guess'; valid: exact, quadrature, montecarlo"),
    ],
)
def test_saved_limits_are_validated(field, value, needle):
    d = tio.to_dict(_tanh2_program().limit())
    d["limit"]["scalars"][0][field] = value
    _format_error(d, "limit.scalars[0]", needle)


def test_an_unknown_error_bound_loads_as_inf():
    d = tio.to_dict(_tanh2_program().limit())
    d["limit"]["scalars"][0]["error"] = "inf"
    loaded = tio.loads(json.dumps(d))
    assert loaded.error("m") == math.inf and math.isfinite(loaded["m"])


def test_limit_meta_must_be_plain_values():
    d = tio.to_dict(_tanh2_program().limit())
    d["limit"]["meta"]["seed"] = [[[1]]]
    _format_error(d, "limit.meta.seed")


def test_a_huge_seed_is_saved_as_text():
    p = _tanh2_program()
    lim = p.limit(method="montecarlo", samples=512, seed=10**60)
    loaded = tio.loads(tio.dumps(lim))
    assert loaded.seed == hex(10**60) and loaded.values == lim.values


# ---------------------------------------------------------------- sizes and raw errors


def test_dev_zero_is_refused_after_max_bytes():
    with _no_hang(), pytest.raises(tp.FormatError, match="larger than max_bytes=1024"):
        tp.load("/dev/zero", max_bytes=1024)


def test_dev_zero_with_the_default_cap():
    with _no_hang(), pytest.raises(tp.FormatError, match=f"max_bytes={tio.MAX_BYTES}"):
        tp.load("/dev/zero")


def test_large_regular_file_is_refused_without_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    custom_program().save(path)
    size = path.stat().st_size
    assert tp.load(path, max_bytes=size).name == "custom"
    reads = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def read(self, n=-1):
            reads.append(n)
            return self.fh.read(n)

    monkeypatch.setattr("builtins.open", lambda *a, **k: Spy(real_open(*a, **k)))
    with pytest.raises(tp.FormatError, match=f"max_bytes={size - 1}"):
        tp.load(path, max_bytes=size - 1)
    assert reads == []
    monkeypatch.undo()
    with pytest.raises(tp.FormatError, match="max_bytes=10 characters"):
        tio.loads(path.read_text(encoding="utf-8"), max_bytes=10)
    with pytest.raises(tp.ProgramValueError, match="max_bytes"):
        tp.load(path, max_bytes=0)


def test_5000_digit_json_integer():
    text = tio.dumps(custom_program()).replace('"fn": 0', '"fn": ' + "7" * 5000, 1)
    with pytest.raises(
        tp.FormatError, match=r"5000 digits; at most 40 .* \(line \d+, column \d+\)"
    ):
        tio.loads(text)


def test_nan_and_infinity_json_literals():
    text = tio.dumps(custom_program()).replace('"var": 1.0', '"var": Infinity', 1)
    with pytest.raises(tp.FormatError, match="Infinity is not valid"):
        tio.loads(text)


@pytest.mark.parametrize("depth", [100_000, tio.MAX_JSON_DEPTH + 1])
def test_deep_json_nesting(depth):
    text = tio.dumps(custom_program()).replace(
        '"cov": []', '"cov": ' + "[" * depth + "]" * depth, 1
    )
    with _no_hang(), pytest.raises(tp.FormatError, match=f"deeper than {tio.MAX_JSON_DEPTH}"):
        tio.loads(text)


def test_nesting_at_the_bound_is_a_field_error_not_a_depth_error():
    inner = tio.MAX_JSON_DEPTH - 4  # the cov list already sits 4 levels deep
    text = tio.dumps(custom_program()).replace(
        '"cov": []', '"cov": ' + "[" * inner + "]" * inner, 1
    )
    with pytest.raises(
        tio.CorruptFileError, match=r"cov entries .*program\.instructions\[1\]\.cov\[0\]"
    ):
        tio.loads(text)


def test_error_hierarchy():
    assert issubclass(tio.CorruptFileError, tp.FormatError)
    assert issubclass(tp.FormatVersionError, tp.FormatError)
    assert issubclass(tp.FormatError, tp.TensorProgramError) and issubclass(
        tp.FormatError, ValueError
    )
    assert issubclass(tp.FileAccessError, tp.TensorProgramError) and issubclass(
        tp.FileAccessError, OSError
    )
    assert issubclass(tio.MissingFileError, tp.FileAccessError)
    assert issubclass(tio.MissingFileError, FileNotFoundError)


def test_save_into_a_missing_folder_names_the_path(tmp_path):
    target = tmp_path / "missing" / "p.json"
    with pytest.raises(tio.MissingFileError) as info:
        custom_program().save(target)
    assert isinstance(info.value, tp.FileAccessError) and isinstance(info.value, OSError)
    assert str(target.parent) in str(info.value)


def test_save_below_a_file_names_the_path(tmp_path):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(tp.FileAccessError, match="is not a directory") as info:
        custom_program().save(tmp_path / "afile" / "p.json")
    assert "afile" in str(info.value)


def _read_only_folder(tmp_path):
    """A folder this process cannot write into (for root: /sys, read-only nearly everywhere)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        fd = os.open("/sys/.tp_probe", os.O_CREAT | os.O_WRONLY)
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink("/sys/.tp_probe")
    pytest.skip("no read-only folder available to root here")


def test_save_into_a_read_only_folder_names_the_path(tmp_path):
    folder = _read_only_folder(tmp_path)
    target = folder / "p.json"
    with pytest.raises(tp.FileAccessError) as info:
        custom_program().save(target)
    err = info.value
    assert isinstance(err, OSError) and isinstance(err.__cause__, OSError)
    assert str(target) in str(err) and "writable" in str(err)
    assert not target.exists()


def _family_program():
    phi = tp.ab_relu(-0.5, 2)
    p = tp.Program("fam")
    x = p.vector("x", var=1.3)
    W = p.matrix("W")
    h = W @ x
    tp.mean(phi(h) * tp.relu(h), name="k")
    tp.mean(phi.derivative()(h) * h, name="k1")
    return p, phi


def test_family_members_load_as_themselves(tmp_path):
    """A family member (and its derivative) is rebuilt by its family on load, so its
    registered closed forms apply: the loaded limit is exact, as the original's. The
    same file stripped of the family records loads look-alikes of the bodies, which
    quadrature evaluates (the difference the records make)."""
    p, phi = _family_program()
    lim = p.limit()
    path = tmp_path / "fam.json"
    p.save(path)
    q = tp.load(path)
    fns = {i.fn for i in q.instructions if hasattr(i, "fn")}
    assert phi in fns and phi.derivative() in fns
    lq = q.limit()
    for k in ("k", "k1"):
        assert lim.method(p[k]) == lq.method(q[k]) == "exact"
        assert lq[q[k]] == lim[p[k]]
    # 𝔼[φ(h) relu(h)] = 2·𝔼[h²; h > 0] = Var h = 1.3 (φ = relu's slope 2 where relu ≠ 0)
    assert lim[p["k"]] == pytest.approx(1.3, rel=1e-12)
    d = json.loads(path.read_text())
    for spec in d["program"]["nonlinearities"]:
        spec.pop("family", None)
    bare = tp.load(_write(tmp_path, d))
    assert bare.limit().method(bare["k"]) == "quadrature"


@pytest.mark.parametrize(
    "record,needle",
    [
        (["no_such_family", [1.0], 0], "valid: ab_relu"),
        (["ab_relu", [-0.5], 0], "ab_relu"),
        (["ab_relu", [-0.25, 2.0], 0], "not the nonlinearity this record defines"),
        (["ab_relu", [-0.5, 2.0], 3], "derivative order 0..2"),
        (["ab_relu", ["__import__('os')", 2.0], 0], "numbers or lists of numbers"),
    ],
    ids=["unknown", "arity", "mismatch", "order", "not-a-number"],
)
def test_corrupt_family_records_are_clear_errors(record, needle, tmp_path):
    p, _ = _family_program()
    d = json.loads(json.dumps(tio.to_dict(p)))
    specs = [s for s in d["program"]["nonlinearities"] if "family" in s]
    assert [s["family"][2] for s in specs] == [0, 1]
    specs[0]["family"] = record
    with pytest.raises(tio.CorruptFileError, match=re.escape(needle)):
        tp.load(_write(tmp_path, d))
