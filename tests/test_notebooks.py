"""Execute every tutorial notebook in ``notebooks/`` from top to bottom.

Each notebook must run without a cell error in a fresh ``python3`` kernel, show at
least one figure (an ``image/png`` output) and print at least one check (a line of
standard output containing ``check``). The committed notebooks must be clean: no
outputs and no execution counts (they are executed here, not stored executed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_master_theorem.ipynb"}
CELL_TIMEOUT = 600  # seconds per cell; the notebooks take well under a minute in total

nbformat = pytest.importorskip(
    "nbformat", reason="nbformat is needed to read notebooks (pip install -e '.[dev]')"
)


def test_the_tutorial_notebooks_exist():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; strip them"


@pytest.fixture(scope="module")
def kernel_name() -> str:
    """The ``python3`` kernel; its spec is installed (user-level) only when missing."""
    pytest.importorskip(
        "nbclient", reason="nbclient is needed to execute notebooks (pip install -e '.[dev]')"
    )
    pytest.importorskip(
        "ipykernel", reason="ipykernel is needed to execute notebooks (pip install -e '.[dev]')"
    )
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--user"],
            check=True,
            capture_output=True,
            text=True,
        )
    return "python3"


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # Figures must come back as image/png outputs whatever backend the caller set.
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, kernel_name: str):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env=_kernel_env())
    except CellExecutionError as exc:  # the message holds the cell source and traceback
        pytest.fail(f"{path.name}: a cell raised an error:\n{exc}")
    elapsed = time.perf_counter() - start

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[(o.ename, o.evalue) for o in errors]}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure (image/png output) was produced"
    checks = [
        line
        for o in outputs
        if o.output_type == "stream" and o.name == "stdout"
        for line in o.text.splitlines()
        if "check" in line.lower()
    ]
    assert checks, f"{path.name}: no printed check (a stdout line containing 'check')"
    print(
        f"{path.name}: executed in {elapsed:.1f} s, {len(images)} figure(s), {len(checks)} check(s)"
    )
