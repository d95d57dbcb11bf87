"""Program.section: headings in the printouts (text, LaTeX of the program and of its
limit), saved with the program; nn.train writes one section per step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pdflatex import compile_tex, needs_pdflatex

import tensorprog as tp
from tensorprog import nn


def small():
    p = tp.Program("sec")
    h = p.vector("h")
    p.section("step 1")
    x = tp.relu(h, name="x")
    p.section("empty, replaced")
    p.section("step 2 & more_")
    tp.mean(x * h, name="k")
    return p


def test_sections_cover_the_instructions_and_show_in_the_printouts():
    p = small()
    assert p.sections == (("step 1", 1, 2), ("step 2 & more_", 2, 4))
    lines = str(p).splitlines()
    assert lines[2] == "  # step 1" and lines[3].strip() == "x = relu(h)"
    assert lines[4] == "  # step 2 & more_"
    for tex in (p.latex(), p.limit().latex()):
        rows = tex.splitlines()
        k1 = rows.index(r"&\textbf{step 1} \\")
        k2 = rows.index(r"&\textbf{step 2 \& more\_} \\")
        assert "Z^{h}" in rows[k1 - 1] or "h_{" in rows[k1 - 1]
        assert rows[k1 + 1].startswith(("x &=", "Z^{x} &="))
        assert k2 == k1 + 2


@pytest.mark.parametrize("bad", ["", "  ", "two\nlines", 3])
def test_a_bad_title_is_refused(bad):
    with pytest.raises(tp.ProgramTypeError, match="section"):
        tp.Program().section(bad)


def test_sections_are_saved_and_checked_on_load(tmp_path):
    p = small()
    p.save(tmp_path / "p.json")
    q = tp.load(tmp_path / "p.json")
    assert q.sections == p.sections and str(q) == str(p)
    d = json.loads((tmp_path / "p.json").read_text())
    for bad in ([[3, "a"], [1, "b"]], [[9, "a"]], [["1", "a"]], [[1, ""]], "x"):
        d["program"]["sections"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(d))
        with pytest.raises(tp.FormatError, match="sections"):
            tp.load(tmp_path / "bad.json")


def model_run(steps=2):
    m = nn.Model("mlp")
    m.param("W_in", ("n", 2))
    m.param("W", ("n", "n"))
    m.param("W_out", (1, "n"))

    @m.forward
    def f(p, xi):
        x = tp.relu(p.W_in @ xi, name="x")
        return p.W_out @ tp.relu(p.W @ x)

    X = np.array([[1.0, 0.3], [-0.5, 1.0]])
    return nn.train(m, X, np.array([0.5, -0.3]), steps=steps, optimizer=nn.SGD(0.5))


def test_nn_train_writes_one_section_per_step():
    run = model_run(steps=2)
    titles = [t for t, _, _ in run.program.sections]
    assert titles == [
        "initial parameters",
        "step 0: forward pass on 2 inputs, loss",
        "step 0: backward pass, update 1",
        "step 1: forward pass on 2 inputs, loss",
        "step 1: backward pass, update 2",
        "step 2: forward pass on 2 inputs, loss",
    ]
    ins = run.program.instructions
    for title, _start, stop in run.program.sections:
        if title.startswith("step") and "forward" in title:
            # a forward section ends with the loss of its step
            assert ins[stop - 1].out.name == f"loss_{title.split()[1].rstrip(':')}"


@needs_pdflatex
def test_the_derivation_of_a_training_run_compiles(tmp_path):
    run = model_run(steps=1)
    tex = run.limit(method="montecarlo", samples=2**10).limit.latex(document=True)
    assert tex.count(r"&\textbf{step 0") == 4  # program and derivation, 2 sections each
    compile_tex(tmp_path, "run", tex)  # asserts that pdflatex succeeded
