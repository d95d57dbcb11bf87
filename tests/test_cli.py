"""The command line and the packaging: ``tensorprog --version``, the program's name in
usage, and what a wheel ships (LICENSE, ``py.typed``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tensorprog
from tensorprog.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_usage_name_the_console_script(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"tensorprog {tensorprog.__version__}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert usage.startswith("usage: tensorprog [-h] [--version]")
    assert "__main__" not in usage and "cli.py" not in usage


def test_python_dash_m_names_itself(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tensorprog", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout == f"python -m tensorprog {tensorprog.__version__}\n"
    res = subprocess.run(
        [sys.executable, "-m", "tensorprog", "latex", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.stdout.startswith("usage: python -m tensorprog latex")


def test_the_package_declares_its_license_types_and_version():
    """What `pip wheel .` packs (checked by building one: see the report of issue #21):
    LICENSE as a license file, py.typed as package data, the version from tensorprog/_version.py."""
    tomllib = pytest.importorskip("tomllib")  # (Python ≥ 3.11)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["license"] == "MIT" and meta["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["tensorprog"]
    assert (ROOT / "tensorprog" / "py.typed").is_file()
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tensorprog._version.__version__"
    }
    assert meta["project"]["scripts"]["tensorprog"] == "tensorprog.cli:main"
    extras = meta["project"]["optional-dependencies"]
    assert {d.split(">")[0] for d in extras["notebook"]} == {"pandas", "ipywidgets", "matplotlib"}
    assert "tensorprog[notebook]" in extras["dev"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_pdflatex_leaves_only_the_pdf_beside_the_input(tmp_path):
    from tensorprog.latex import compile_pdf, document

    p = tensorprog.Program("AtAv")
    A, v = p.matrix("A", var=2.0), p.vector("v")
    tensorprog.inner(v, A.T @ (A @ v), name="k")
    tex = tmp_path / "doc.tex"
    tex.write_text(document([("AtAv", p.latex())]), encoding="utf-8")
    assert compile_pdf(tex) == tmp_path / "doc.pdf"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["doc.pdf", "doc.tex"]
    bad = tmp_path / "bad.tex"
    bad.write_text("\\documentclass{article}\\begin{document}\\undefinedmacro\\end{document}\n")
    with pytest.raises(tensorprog.ResourceError, match="pdflatex failed"):
        compile_pdf(bad)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["bad.tex", "doc.pdf", "doc.tex"]
