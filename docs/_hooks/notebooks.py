"""MkDocs hook: bring the tutorial notebooks into the site, keep the nav buildable.

* Every ``notebooks/*.ipynb`` of the repository is added to the build as a static
  file under ``notebooks/`` so that the gallery can link to it (``[…](notebooks/x.ipynb)``)
  and the link is checked by ``mkdocs build --strict``. The notebooks stay where they
  are (the test suite executes them there); nothing is copied into ``docs/``.
* ``kernels.md`` and ``training.md`` are written by other pages' authors. Until they
  exist, a short generated stand-in keeps the navigation (and ``--strict``) valid; as
  soon as a real file is present it is used unchanged.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

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
                File(uri, src_dir=str(ROOT), dest_dir=config["site_dir"],
                     use_directory_urls=config["use_directory_urls"])
            )
    for uri, text in _STANDIN.items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=text))
    return files
