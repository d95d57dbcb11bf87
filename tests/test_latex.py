r"""LaTeX export: golden strings, pdflatex compilation, notebook reprs and the CLI.

The golden strings are the expected output verbatim; their numbers are checked by hand
against THEORY §2.2 (AᵀAv: Ż^{Aᵀy} = σ²Z^v, 𝔼[Z^v Z^x] = σ², 𝔼[(Z^x)²] = 2σ⁴), the
arc-cosine kernel (𝔼[relu(u) relu(w)] = σ_uσ_w(sin θ + (π − θ) cos θ)/2π) and the
first backward pass (gradient independence: Ż = 0).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pdflatex import compile_tex, needs_pdflatex

import tensorprog as tp
from tensorprog.latex import (
    ProgramLatexPrinter,
    _visible,
    compile_pdf,
    document,
    latex,
    latex_name,
)

# ---------------------------------------------------------------------------------------
# programs


def atav() -> tp.Program:
    """AᵀAv with σ_A² = 2 [THEORY §2.2]."""
    p = tp.Program("AtAv")
    A = p.matrix("A", var=2.0)
    v = p.vector("v")
    y = A.matmul(v, name="y")
    x = A.T.matmul(y, name="x")
    tp.inner(v, x, name="vx")
    tp.mean(x * x, name="xx")
    return p


def relu_net() -> tp.Program:
    """Two correlated inputs through one ReLU layer, a Nonlin+ scalar and two Moments."""
    p = tp.Program("relu")
    W1 = p.matrix("W1", var=2.0)
    xi = p.vectors("xi", cov=[[1.0, 0.5], [0.5, 1.0]])
    c = p.scalar("c", 0.5)
    h0 = W1.matmul(xi[0], name="h1_0")
    h1 = W1.matmul(xi[1], name="h1_1")
    x0 = tp.relu(h0, name="x1_0")
    x1 = tp.relu(h1, name="x1_1")
    tp.mean(x0 * x0, name="K00")
    tp.inner(x0, c * x1, name="K01")
    return p


def backward() -> tp.Program:
    """A forward pass h = Wx and the first backward pass Wᵀ(v ⊙ h): Ż = 0."""
    p = tp.Program("backward")
    W = p.matrix("W", var=2.0)
    x = p.vector("x")
    v = p.vector("v")
    h = W.matmul(x, name="h")
    dx = W.T.matmul(v * h, name="dx")
    tp.inner(dx, dx, name="k")
    tp.inner(dx, x, name="kx")
    return p


def deep_batch(B: int = 5, L: int = 3) -> tp.Program:
    """A deep ReLU network on a batch: many hats per family, many covariances."""
    p = tp.Program("deep_relu_batch")
    xs = p.vectors("xi", cov=0.5 * np.eye(B) + 0.5)
    hs = xs
    for layer in range(1, L + 1):
        W = p.matrix(f"W{layer}", var=2.0)
        hs = [W.matmul(tp.relu(h), name=f"h{layer}_{i}") for i, h in enumerate(hs)]
    for i in range(B):
        for j in range(i, B):
            tp.inner(tp.relu(hs[i]), tp.relu(hs[j]), name=f"K{i}_{j}")
    return p


def long_sums() -> tp.Program:
    """A ZDot with five surviving terms, Monte Carlo values, n-dependent scalars."""
    p = tp.Program("long_sums")
    A = p.matrix("A", var=1.5)
    xs = p.vectors("x", cov=0.5 * np.eye(5) + 0.5)
    gs = [tp.tanh(A @ x) for x in xs]
    s = gs[0]
    for g in gs[1:]:
        s = s + g
    c = p.scalar("c", 0.5)
    r = p.scalar("r", tp.n**-0.5)
    u = A.T.matmul(c * s + r * gs[0], name="u")
    tp.mean(tp.tanh(u) * gs[1], name="m")
    q = tp.mean(u * u, name="q")
    q * q + c
    return p


def odd_names() -> tp.Program:
    """Names that are not plain identifiers must still compile."""
    p = tp.Program("odd names: 50% & #1")
    W = p.matrix("W_in", var=1.0)
    a = p.vector("a.b#1")
    b = p.vector("θ1", cov={a: 0.25})
    h = W.matmul(a, name="loss_{x}")
    tp.inner(h, b, name="_tmp")
    tp.mean(tp.sigmoid(h) + tp.gelu(b) + tp.erf(h) + tp.sin(b) + tp.abs(h), name="x^2")
    return p


# ---------------------------------------------------------------------------------------
# golden strings


ATAV_PROGRAM = r"""\begin{align*}
A_{\alpha\beta} &\sim \mathcal{N}\left(0, 2/n\right) \\
v_{\alpha} &\sim \mathcal{N}\left(0, 1\right) \\
y &= A v \\
x &= A^{\top} y \\
\mathrm{vx} &= \frac{1}{n} \sum_{\alpha=1}^{n} v_{\alpha} x_{\alpha} \\
x_{1} &= x^{2} \\
\mathrm{xx} &= \frac{1}{n} \sum_{\alpha=1}^{n} x_{1,\alpha}
\end{align*}"""

ATAV_DERIVATION = r"""\begin{align*}
A_{\alpha\beta} &\sim \mathcal{N}\left(0, \sigma_{A}^{2}/n\right), \quad \sigma_{A}^{2} = 2 && \text{setup} \\
Z^{v} &\sim \mathcal{N}\left(0, 1\right) && \text{ZInit} \\
Z^{y} &= \hat{Z}^{A v} + \dot{Z}^{A v} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{A v} &= \sigma_{A}^{2}\,\mathbb{E}[Z^{v} Z^{v}] = 2 && \text{ZHat} \\
\dot{Z}^{A v} &= 0 && \text{ZDot} \\
Z^{x} &= \hat{Z}^{A^{\top} y} + \dot{Z}^{A^{\top} y} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{A^{\top} y} &= \sigma_{A}^{2}\,\mathbb{E}[Z^{y} Z^{y}] = 4 && \text{ZHat} \\
\dot{Z}^{A^{\top} y} &= \sigma_{A}^{2}\,\mathbb{E}\bigl[\partial Z^{y}/\partial \hat{Z}^{A v}\bigr] Z^{v} = 2 Z^{v} && \text{ZDot} \\
\mathring{\mathrm{vx}} &= \mathbb{E}\left[Z^{v} Z^{x}\right] = 2 && \text{ZMoment} \\
Z^{x_{1}} &= \left(Z^{x}\right)^{2} && \text{ZNonlin} \\
\mathring{\mathrm{xx}} &= \mathbb{E}\left[Z^{x_{1}}\right] = 8 && \text{ZMoment}
\end{align*}"""

RELU_PROGRAM = r"""\begin{align*}
W_{1,\alpha\beta} &\sim \mathcal{N}\left(0, 2/n\right) \\
\xi_{0,\alpha} &\sim \mathcal{N}\left(0, 1\right) \\
\xi_{1,\alpha} &\sim \mathcal{N}\left(0, 1\right), \quad \mathrm{Cov}\bigl(\xi_{1,\alpha}, \xi_{0,\alpha}\bigr) = 0.5 \\
c &= 0.5 \\
h_{1,0} &= W_{1} \xi_{0} \\
h_{1,1} &= W_{1} \xi_{1} \\
x_{1,0} &= \operatorname{relu}\left(h_{1,0}\right) \\
x_{1,1} &= \operatorname{relu}\left(h_{1,1}\right) \\
x_{1} &= x_{1,0}^{2} \\
K_{00} &= \frac{1}{n} \sum_{\alpha=1}^{n} x_{1,\alpha} \\
x_{2} &= c x_{1,1} \\
K_{01} &= \frac{1}{n} \sum_{\alpha=1}^{n} x_{1,0,\alpha} x_{2,\alpha}
\end{align*}"""

# K01 = ½ · 2 (sin θ + (π − θ) cos θ)/2π with θ = π/3: 0.3044988905.
RELU_DERIVATION = r"""\begin{align*}
W_{1,\alpha\beta} &\sim \mathcal{N}\left(0, \sigma_{W_{1}}^{2}/n\right), \quad \sigma_{W_{1}}^{2} = 2 && \text{setup} \\
Z^{\xi_{0}} &\sim \mathcal{N}\left(0, 1\right) && \text{ZInit} \\
Z^{\xi_{1}} &\sim \mathcal{N}\left(0, 1\right), \quad \mathrm{Cov}\bigl(Z^{\xi_{1}}, Z^{\xi_{0}}\bigr) = 0.5 && \text{ZInit} \\
\mathring{c} &= 0.5 && \text{ZInit} \\
Z^{h_{1,0}} &= \hat{Z}^{W_{1} \xi_{0}} + \dot{Z}^{W_{1} \xi_{0}} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{W_{1} \xi_{0}} &= \sigma_{W_{1}}^{2}\,\mathbb{E}[Z^{\xi_{0}} Z^{\xi_{0}}] = 2 && \text{ZHat} \\
\dot{Z}^{W_{1} \xi_{0}} &= 0 && \text{ZDot} \\
Z^{h_{1,1}} &= \hat{Z}^{W_{1} \xi_{1}} + \dot{Z}^{W_{1} \xi_{1}} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{W_{1} \xi_{1}} &= \sigma_{W_{1}}^{2}\,\mathbb{E}[Z^{\xi_{1}} Z^{\xi_{1}}] = 2 && \text{ZHat} \\
&\quad \mathrm{Cov}\bigl(\hat{Z}^{W_{1} \xi_{1}}, \hat{Z}^{W_{1} \xi_{0}}\bigr) = \sigma_{W_{1}}^{2}\,\mathbb{E}[Z^{\xi_{1}} Z^{\xi_{0}}] = 1 \\
\dot{Z}^{W_{1} \xi_{1}} &= 0 && \text{ZDot} \\
Z^{x_{1,0}} &= \operatorname{relu}\left(Z^{h_{1,0}}\right) && \text{ZNonlin} \\
Z^{x_{1,1}} &= \operatorname{relu}\left(Z^{h_{1,1}}\right) && \text{ZNonlin} \\
Z^{x_{1}} &= \left(Z^{x_{1,0}}\right)^{2} && \text{ZNonlin} \\
\mathring{K}_{00} &= \mathbb{E}\left[Z^{x_{1}}\right] = 1 && \text{ZMoment} \\
Z^{x_{2}} &= \mathring{c} Z^{x_{1,1}} && \text{ZNonlin} \\
\mathring{K}_{01} &= \mathbb{E}\left[Z^{x_{1,0}} Z^{x_{2}}\right] = 0.3044988905 && \text{ZMoment}
\end{align*}"""

BACKWARD_DERIVATION = r"""\begin{align*}
W_{\alpha\beta} &\sim \mathcal{N}\left(0, \sigma_{W}^{2}/n\right), \quad \sigma_{W}^{2} = 2 && \text{setup} \\
Z^{x} &\sim \mathcal{N}\left(0, 1\right) && \text{ZInit} \\
Z^{v} &\sim \mathcal{N}\left(0, 1\right) && \text{ZInit} \\
Z^{h} &= \hat{Z}^{W x} + \dot{Z}^{W x} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{W x} &= \sigma_{W}^{2}\,\mathbb{E}[Z^{x} Z^{x}] = 2 && \text{ZHat} \\
\dot{Z}^{W x} &= 0 && \text{ZDot} \\
Z^{x_{1}} &= Z^{h} Z^{v} && \text{ZNonlin} \\
Z^{\mathrm{dx}} &= \hat{Z}^{W^{\top} x_{1}} + \dot{Z}^{W^{\top} x_{1}} && \text{ZMatMul} \\
\mathrm{Var}\,\hat{Z}^{W^{\top} x_{1}} &= \sigma_{W}^{2}\,\mathbb{E}[Z^{x_{1}} Z^{x_{1}}] = 4 && \text{ZHat} \\
\dot{Z}^{W^{\top} x_{1}} &= \sigma_{W}^{2}\,\mathbb{E}\bigl[\partial Z^{x_{1}}/\partial \hat{Z}^{W x}\bigr] Z^{x} = 0 && \text{ZDot} \\
\mathring{k} &= \mathbb{E}\left[\left(Z^{\mathrm{dx}}\right)^{2}\right] = 4 && \text{ZMoment} \\
\mathring{\mathrm{kx}} &= \mathbb{E}\left[Z^{\mathrm{dx}} Z^{x}\right] = 0 && \text{ZMoment}
\end{align*}"""


def test_atav_program_golden():
    assert atav().latex() == ATAV_PROGRAM


def test_atav_derivation_golden():
    lim = atav().limit()
    assert (lim["vx"], lim["xx"]) == (2.0, 8.0)  # THEORY §2.2: σ², 2σ⁴
    assert lim.latex() == ATAV_DERIVATION


def test_relu_program_golden():
    assert relu_net().latex() == RELU_PROGRAM


def test_relu_derivation_golden():
    lim = relu_net().limit()
    theta = math.pi / 3
    k01 = 0.5 * 2 * (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
    assert lim["K01"] == pytest.approx(k01, abs=1e-12)
    assert lim.latex() == RELU_DERIVATION


def test_backward_derivation_golden_zdot_vanishes():
    p = backward()
    lim = p.limit()
    assert lim.Zdot("dx") == 0  # gradient independence in the first backward pass
    assert lim.latex() == BACKWARD_DERIVATION


def test_zdot_value_is_the_engines():
    """The printed ZDot values are ``lim.Zdot(v, numeric=True)`` (AᵀAv: Ż = σ² Z^v)."""
    lim = atav().limit()
    assert latex(lim.Zdot("x", numeric=True), derivation=lim.derivation) == "2 Z^{v}"
    assert lim.coefficient("x", "v") == 1.0
    assert (
        latex(lim.Z("x"), derivation=lim.derivation)
        == r"\dot{Z}^{A^{\top} y} + \hat{Z}^{A^{\top} y}"
    )


# ---------------------------------------------------------------------------------------
# pieces


@pytest.mark.parametrize(
    "name, tex",
    [
        ("h1", "h_{1}"),
        ("xi_0", r"\xi_{0}"),
        ("W1", "W_{1}"),
        ("h1_0", "h_{1,0}"),
        ("h10", "h_{10}"),
        ("K12", "K_{12}"),
        ("vx", r"\mathrm{vx}"),
        ("alpha", r"\alpha"),
        ("θ1", r"\theta_{1}"),
        ("a.b#1", r"\text{a.b\#1}"),
        ("x^2", r"\text{x\textasciicircum{}2}"),
    ],
)
def test_latex_name(name, tex):
    assert latex_name(name) == tex


def test_latex_name_accent_and_coordinate():
    assert latex_name("K12", accent="mathring") == r"\mathring{K}_{12}"
    assert latex_name("xi_0", sub=r"\alpha") == r"\xi_{0,\alpha}"


def test_printer_dispatches_on_instruction_classes():
    p = tp.Program()
    W = p.matrix("W", var=0.5)
    h = W.T.matmul(p.vector("x", mean=1.0, var=3.0), name="h")
    printer = ProgramLatexPrinter()
    assert (
        printer.doprint(p.definition(W))
        == r"W_{\alpha\beta} &\sim \mathcal{N}\left(0, 0.5/n\right)"
    )
    assert printer.doprint(p.definition(h)) == r"h &= W^{\top} x"
    assert printer.doprint(p.instructions[1]) == r"x_{\alpha} &\sim \mathcal{N}\left(1, 3\right)"


def test_montecarlo_values_show_error_and_method():
    lim = long_sums().limit(method="montecarlo", samples=4000, seed=0)
    tex = lim.latex()
    m = re.search(
        r"\\mathring\{m\} &= .*\\approx (-?[0-9.]+) \\pm ([0-9.]+)\\ \(\\text\{Monte Carlo\}\)", tex
    )
    assert m, tex
    assert float(m.group(2)) == pytest.approx(lim.stderr("m"), rel=0.05)
    assert r"\mathring{r} &= \lim_{n\to\infty} n^{-0.5} = 0" in tex


def test_long_sums_are_broken_over_rows():
    lim = long_sums().limit(method="montecarlo", samples=4000, seed=0)
    tex = lim.latex()
    rows = tex.split(" \\\\\n")
    i = next(k for k, r in enumerate(rows) if r.startswith(r"\dot{Z}^{A^{\top} x_{17}} &="))
    assert rows[i].endswith(r"&& \text{ZDot}")
    assert rows[i + 1].startswith(r"&\quad + \mathbb{E}")  # the symbolic sum continues
    values = next(r for r in rows[i:] if r.startswith("&\\approx"))  # then the values
    assert values.startswith(r"&\approx \left(")
    for row in rows:
        row = row.split(" && ")[0]
        assert _visible(row) <= 64 + 30, row  # one unbreakable chunk may overshoot


def test_notebook_reprs():
    p = atav()
    lim = p.limit()
    for obj in (p, lim):
        r = obj._repr_latex_()
        assert r.startswith("$$\\begin{aligned}\n") and r.endswith("\\end{aligned}$$")
    assert p._repr_latex_() == "$$" + ATAV_PROGRAM.replace("align*", "aligned") + "$$"
    html = lim._repr_html_()
    assert html.startswith("<table>") and html.endswith("</table>")
    assert "<th>name</th><th>value</th><th>± error</th><th>method</th>" in html
    assert "<tr><td><code>xx</code></td><td>8</td><td></td><td>exact</td></tr>" in html
    mc = long_sums().limit(method="montecarlo", samples=4000, seed=0)
    assert "± " in mc._repr_html_() and "montecarlo" in mc._repr_html_()


def test_documents_are_standalone():
    doc = atav().limit().latex(document=True)
    assert doc.startswith("\\documentclass[10pt]{article}\n")
    assert doc.rstrip().endswith("\\end{document}")
    packages = re.findall(r"\\usepackage(?:\[[^]]*\])?\{([^}]*)\}", doc)
    assert packages == ["amsmath", "amssymb"]
    assert ATAV_PROGRAM in doc and ATAV_DERIVATION in doc
    assert "\\allowdisplaybreaks" in doc
    pdoc = atav().latex(document=True)
    assert ATAV_PROGRAM in pdoc and "ZMatMul" not in pdoc


# ---------------------------------------------------------------------------------------
# pdflatex


def _overfull(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]


@needs_pdflatex
@pytest.mark.parametrize(
    "make, kw",
    [
        (atav, {}),
        (relu_net, {}),
        (backward, {}),
        (deep_batch, {}),
        (long_sums, {"method": "montecarlo", "samples": 4000}),
        (odd_names, {}),
    ],
    ids=["atav", "relu", "backward", "deep_batch", "long_sums", "odd_names"],
)
def test_documents_compile_with_pdflatex(tmp_path, make, kw):
    p = make()
    for kind, tex in [
        ("program", p.latex(document=True)),
        ("limit", p.limit(**kw).latex(document=True)),
    ]:
        log = compile_tex(tmp_path, kind, tex)
        bad = [w for w in _overfull(log) if w > 20.0]
        assert not bad, f"{p.name} {kind}: overfull lines {bad}"


@needs_pdflatex
def test_compile_pdf_helper(tmp_path):
    f = tmp_path / "doc.tex"
    f.write_text(document([("AtAv", atav().latex())]), encoding="utf-8")
    assert compile_pdf(f).exists()


# ---------------------------------------------------------------------------------------
# command line


def _run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tensorprog", "latex", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env=env,
    )


BUILD_FILE = textwrap.dedent("""
    import tensorprog as tp

    def build():
        p = tp.Program("AtAv")
        A = p.matrix("A", var=2.0)
        v = p.vector("v")
        y = A.matmul(v, name="y")
        x = A.T.matmul(y, name="x")
        tp.inner(v, x, name="vx")
        tp.mean(x * x, name="xx")
        q = tp.Program("second")
        tp.mean(q.vector("z") ** 2, name="m")
        return [p, q]

    print("chatter that must not end up in the document")
""")

MODULE_FILE = textwrap.dedent("""
    import tensorprog as tp

    first = tp.Program("first")
    tp.mean(first.vector("a") * 2, name="m")
    second = tp.Program("second")
    tp.mean(second.vector("b") ** 2, name="k")
    alias = first  # listed once
    if __name__ == "__main__":
        raise SystemExit("the main block must not run")
""")


def test_cli_build_convention(tmp_path):
    (tmp_path / "prog.py").write_text(BUILD_FILE)
    res = _run_cli("prog.py", "-o", "out.tex", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = (tmp_path / "out.tex").read_text()
    assert doc.startswith("\\documentclass") and doc.rstrip().endswith("\\end{document}")
    assert ATAV_PROGRAM in doc and ATAV_DERIVATION in doc
    assert r"\section*{Tensor Program \texttt{second}}" in doc
    assert "chatter" not in doc and "chatter" in res.stderr
    # without -o the document goes to stdout
    res = _run_cli("prog.py", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == doc


def test_cli_module_level_programs(tmp_path):
    (tmp_path / "mod.py").write_text(MODULE_FILE)
    res = _run_cli("mod.py", "--no-limit", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    titles = re.findall(r"\\section\*\{([^}]*\})\}", res.stdout)
    assert titles == [r"Tensor Program \texttt{first}", r"Tensor Program \texttt{second}"]
    assert "ZMoment" not in res.stdout


def test_cli_errors(tmp_path):
    (tmp_path / "none.py").write_text("x = 1\n")
    res = _run_cli("none.py", cwd=tmp_path)
    assert res.returncode == 1
    assert "no build() function and no module-level tp.Program" in res.stderr
    res = _run_cli("missing.py", cwd=tmp_path)
    assert res.returncode == 1 and "no such file" in res.stderr


def test_cli_help_documents_the_convention(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tensorprog", "latex", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0
    assert "build()" in res.stdout and "module-level tp.Program" in res.stdout
    assert "--pdf" in res.stdout


def test_cli_pdf_without_pdflatex_is_a_clear_error(tmp_path):
    (tmp_path / "prog.py").write_text(BUILD_FILE)
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    res = _run_cli("prog.py", "--pdf", cwd=tmp_path, env=env)
    assert res.returncode == 1
    assert "pdflatex was not found on PATH" in res.stderr
    assert (tmp_path / "prog.tex").exists()  # the .tex is written first


@needs_pdflatex
def test_cli_pdf(tmp_path):
    (tmp_path / "prog.py").write_text(BUILD_FILE)
    res = _run_cli("prog.py", "-o", "out.tex", "--pdf", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.pdf").stat().st_size > 0
    # pdflatex ran in a temporary folder: only the document and its PDF are left
    # (overfull lines are checked on the same documents by test_documents_compile_…)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.pdf", "out.tex", "prog.py"]
