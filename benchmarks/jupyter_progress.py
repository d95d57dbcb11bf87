"""``progress=True`` in a real Jupyter kernel: a widget bar, no warning (issue #21).

Run:  python benchmarks/jupyter_progress.py

Executes one notebook cell in a fresh ``python3`` kernel (nbclient): a Monte Carlo
limit with ``progress=True`` under ``warnings.catch_warnings(record=True)``. Passes
(exit 0) when the cell raises nothing, records no warning, writes no warning to
stderr, and displays the bar as an ipywidgets widget
(``application/vnd.jupyter.widget-view+json``) — what ``tqdm.auto`` does when the
notebook extra (ipywidgets) is installed. A kernel start takes seconds to tens of
seconds on a loaded machine, hence here and not in the test suite (which checks the
bar in-process: tests/test_tables.py).
"""

from __future__ import annotations

import sys
import time

import nbclient
import nbformat

CELL = """\
import warnings
import tensorprog as tp
p = tp.Program("bar")
v = p.vector("v")
k = tp.mean(tp.tanh(v) ** 2, name="k")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lim = p.limit(method="montecarlo", samples=4096, progress=True)
print("warnings:", [str(w.message) for w in caught])
"""


def main() -> int:
    t0 = time.perf_counter()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    outs = nb.cells[0].outputs
    stdout = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stdout")
    stderr = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stderr")
    widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)
    checks = {
        "no error": not [o for o in outs if o.output_type == "error"],
        "no warning recorded": "warnings: []" in stdout,
        "no warning on stderr": "Warning" not in stderr and "IProgress" not in stderr,
        "the bar is a widget": widget,
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(f"({time.perf_counter() - t0:.1f} s including the kernel start)")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
