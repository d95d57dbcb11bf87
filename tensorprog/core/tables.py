"""Results as tables: one record, one HTML renderer, one pandas conversion.

Every result with rows of numbers — a :class:`~tensorprog.engine.Limit`, a
:class:`~tensorprog.Simulation`, the limit and finite-width runs of
:func:`tensorprog.nn.train_sgd` — builds a :class:`Table` (typed columns, raw row
values) and shows it through the same two views: :meth:`Table.html` (what Jupyter
displays) and :meth:`Table.to_pandas` (a ``pandas.DataFrame``, one row per scalar).

pandas is optional: ``pip install 'tensorprog[notebook]'`` (or the ``dev`` extra)
installs it, together with ``ipywidgets`` for the Jupyter progress bars of
``progress=True``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import OptionalDependencyError

__all__ = ["Column", "Table", "require_pandas"]

#: The pip extra that installs the optional notebook dependencies (pandas, ipywidgets).
EXTRA = "notebook"


def require_pandas() -> Any:
    """The ``pandas`` module, or an :class:`~tensorprog.core.errors.OptionalDependencyError`
    naming the extra that installs it."""
    try:
        import pandas
    except ImportError as exc:
        raise OptionalDependencyError(
            f"to_pandas() needs pandas, an optional dependency of tensorprog; install it "
            f"with `pip install 'tensorprog[{EXTRA}]'` (or `pip install pandas`)"
        ) from exc
    return pandas


# -- cell formats (HTML) ----------------------------------------------------------------
def text(x: Any) -> str:
    """A string or number as text (``None``: an empty cell)."""
    return "" if x is None else html.escape(str(x))


def code(x: Any) -> str:
    """A variable name, in ``<code>``."""
    return f"<code>{html.escape(str(x))}</code>"


def number(x: float) -> str:
    """A value with 10 significant digits."""
    return f"{x:.10g}"


def plusminus(x: float) -> str:
    """An error ``± e`` (2 significant digits), empty when it is 0 (``± inf``: unknown)."""
    return f"± {x:.2g}" if x else ""


@dataclass(frozen=True)
class Column:
    """One column: its ``name`` (the DataFrame's), its HTML ``header`` (None: not shown
    in HTML) and the HTML ``cell`` format of its values."""

    name: str
    header: str | None = None
    cell: Callable[[Any], str] = text
    dtype: str | None = None  # the DataFrame column's dtype (e.g. "Int64": ints or missing)


@dataclass(frozen=True)
class Table:
    """Rows of raw values under typed :class:`Column` s, with a ``title``.

    Examples
    --------
    >>> t = Table("demo", (Column("name", "name", code), Column("value", "value", number)),
    ...           (("k", 2.0),))
    >>> print(t.html())
    <table>
    <caption>demo</caption>
    <thead><tr><th>name</th><th>value</th></tr></thead>
    <tbody>
    <tr><td><code>k</code></td><td>2</td></tr>
    </tbody>
    </table>
    """

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    #: Rows shown in HTML before the middle ones are elided (half at each end).
    max_html_rows = 200

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: one row per table row, one column per :class:`Column`
        (raw values: floats, ints, strings, booleans; ``None`` where a row has no entry)."""
        pd = require_pandas()
        df = pd.DataFrame(list(self.rows), columns=[c.name for c in self.columns])
        return df.astype({c.name: c.dtype for c in self.columns if c.dtype is not None})

    def html(self) -> str:
        """An HTML table of the columns with a header (``max_html_rows`` rows at most:
        the first and last halves, with a row saying how many are left out)."""
        shown = [(j, c) for j, c in enumerate(self.columns) if c.header is not None]
        rows = list(self.rows)
        half = self.max_html_rows // 2
        skipped = len(rows) - 2 * half if len(rows) > self.max_html_rows else 0
        body = []
        for k, row in enumerate(rows[:half] + rows[-half:] if skipped else rows):
            if skipped and k == half:
                body.append(
                    f'<tr><td colspan="{len(shown)}">… {skipped} more rows '
                    f"(to_pandas() has them all) …</td></tr>"
                )
            body.append("<tr>" + "".join(f"<td>{c.cell(row[j])}</td>" for j, c in shown) + "</tr>")
        head = "".join(f"<th>{html.escape(c.header)}</th>" for _, c in shown)  # type: ignore[arg-type]
        return (
            "<table>\n"
            f"<caption>{html.escape(self.title)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n"
            "<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
        )


def indexed_rows(
    arrays: Sequence[tuple[str, Any, Sequence[str]]], per_scalar: Callable[[Any], tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Rows ``(quantity, step, layer, i, j, name, *per_scalar(handle))`` of arrays of
    scalar handles, in array order.

    ``arrays`` lists ``(quantity, handles, axes)``, ``axes`` naming each array axis
    among ``"step", "layer", "i", "j"`` (a layer is counted from 1, like ``x¹``); an
    axis an array does not have is ``None`` in its rows. ``per_scalar(handle)`` gives
    the remaining cells (computed once per distinct handle: a symmetric kernel's
    ``[i, j]`` and ``[j, i]`` are one scalar).
    """
    import numpy as np

    out: list[tuple[Any, ...]] = []
    cache: dict[str, tuple[Any, ...]] = {}
    for quantity, handles, axes in arrays:
        if handles is None:
            continue
        for idx, h in np.ndenumerate(handles):
            at = dict(zip(axes, (int(i) for i in idx)))
            if "layer" in at:
                at["layer"] += 1
            if h.name not in cache:
                cache[h.name] = per_scalar(h)
            out.append(
                (quantity, at.get("step"), at.get("layer"), at.get("i"), at.get("j"), h.name)
                + cache[h.name]
            )
    return out


#: The index columns of :func:`indexed_rows`.
INDEX_COLUMNS = (
    Column("quantity", "quantity"),
    *(
        Column(k, h, dtype="Int64")
        for k, h in (("step", "t"), ("layer", "layer"), ("i", "i"), ("j", "j"))
    ),
    Column("name", "name", code),
)

#: The columns of a table of limit scalars (:meth:`tensorprog.engine.Limit.tabulate`):
#: the HTML shows name, value, ± error and method.
LIMIT_COLUMNS = (
    Column("value", "value", number),
    Column("stderr"),
    Column("error", "± error", plusminus),
    Column("method", "method"),
    Column("trusted"),
    Column("khat"),
    Column("warning"),
)
