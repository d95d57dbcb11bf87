"""MkDocs hook: bring the tutorial notebooks into the site, keep the nav buildable.

* Every ``notebooks/*.ipynb`` of the repository is added to the build twice: as a
  static file ``notebooks/x.ipynb`` (the download) and rendered as a page
  ``notebooks/x.md`` — its Markdown cells as they are (math included), its code cells as
  Python blocks, and the figures it produced (``docs/assets/gallery/NN_*.png``, made
  by the notebook with its fixed seeds) at the end. The gallery links to the pages, and
  ``mkdocs build --strict`` checks every link. The notebooks stay where they are (the
  test suite executes them there, and they are committed without outputs); nothing is
  copied into ``docs/``.
* ``kernels.md`` and ``training.md`` are written by other pages' authors. Until they
  exist, a short generated stand-in keeps the navigation (and ``--strict``) valid; as
  soon as a real file is present it is used unchanged.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
GALLERY = ROOT / "docs" / "assets" / "gallery"


def notebook_page(path: Path) -> str:
    """The Markdown page of one notebook (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for i, cell in enumerate(nb.cells):
        src = cell.source.rstrip()
        if not src:
            continue
        if cell.cell_type == "markdown":
            parts.append(src)
            if i == 0:
                parts.append(
                    f'!!! note "The notebook"\n    [Download `{path.name}`]({path.name}) and run '
                    "it (`jupyter lab notebooks/`). It is stored without outputs; the test "
                    "suite runs it from top to bottom, and the figures it makes are shown "
                    "at the end of this page."
                )
        elif cell.cell_type == "code":
            parts.append(f"```python\n{src}\n```")
    figures = sorted(GALLERY.glob(f"{path.name[:2]}_*.png"))
    if figures:
        parts.append("## Figures made by this notebook")
        parts += [f"![{fig.stem}](../assets/gallery/{fig.name})" for fig in figures]
    return "\n\n".join(parts) + "\n"


_STANDIN = {
    "kernels.md": (
        "# Kernels: NNGP and NTK\n\n"
        "This guide is being written. Until then, see the docstrings of "
        "`tensorprog.nn.kernels` in the [API reference](api/nn.md).\n"
    ),
    "training.md": (
        "# Training limits\n\n"
        "This guide is being written. Until then, see the "
        "[parametrizations](concepts/parametrizations.md) page and the "
        "[API reference](api/nn.md).\n"
    ),
}


def on_files(files: Files, config, **kwargs) -> Files:  # noqa: ANN001 - mkdocs hook signature
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        uri = f"notebooks/{nb.name}"
        if files.get_file_from_path(uri) is None:
            files.append(
                File(
                    uri,
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
        page = f"notebooks/{nb.stem}.md"
        if files.get_file_from_path(page) is None:
            files.append(File.generated(config, page, content=notebook_page(nb)))
    for uri, text in _STANDIN.items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=text))
    return files
