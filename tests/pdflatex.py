"""pdflatex for the tests that compile what the LaTeX printers write (test_latex.py,
test_backends.py): one helper, run independently of the library's own ``--pdf``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None,
    reason="pdflatex is not installed (apt-get install -y texlive-latex-base "
    "texlive-latex-recommended); CI installs it",
)


def compile_tex(tmp_path: Path, name: str, tex: str) -> str:
    """Compile ``tex`` as ``tmp_path/name.tex``; assert it succeeded and wrote a
    non-empty PDF; return the log."""
    f = tmp_path / f"{name}.tex"
    f.write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", f.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    log = (tmp_path / f"{name}.log").read_text(encoding="latin-1")
    assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / f"{name}.pdf").stat().st_size > 0
    return log
