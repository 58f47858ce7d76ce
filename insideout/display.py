"""Colour-coded matrix tables for the notebooks, in pure Python (no NumPy, no pandas).

``show(x, "name")`` takes a nested list (or anything with ``.tolist()``, e.g. a torch tensor) and returns an
object that Jupyter renders as an HTML table: each cell is coloured on a diverging scale (blue for negative,
white for zero, red for positive, symmetric around 0), and a caption gives the name, the shape and the scale.
Its plain-text form (``repr``) is an aligned table with the same numbers, so notebook tests can compare text.
A matrix wider than ``wrap`` columns is shown as blocks of at most ``wrap`` columns, one under the other, and one
taller than ``wrap`` rows as blocks of at most ``wrap`` rows (side by side in HTML), so no line runs off the page;
``sig=3`` shows every entry with 3 significant digits in scientific form instead of a fixed number of decimals
(for small values such as gradients, which fixed decimals would round to one digit or to zero).
The output is deterministic: no ids, no addresses, no timestamps.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

NEGATIVE = (33, 102, 172)  # blue end of the scale
POSITIVE = (178, 24, 43)  # red end of the scale
WHITE = (255, 255, 255)
DARK_TEXT, LIGHT_TEXT = "#111111", "#ffffff"
AUTO_WRAP = 16  # most columns (and rows) per block of a fixed-decimals table; half that for scientific entries
MASKED_BG, MASKED_TEXT = "#e6e6e6", "#777777"  # infinities (e.g. masked attention scores) and NaN
# One fixed stylesheet (no ids), repeated in every output so that each renders on its own.
STYLE = (
    "<style>"
    ".insideout-view{overflow-x:auto;margin:0.3em 0}"
    ".insideout-matrix{border-collapse:collapse;font-family:monospace;font-size:0.78em;line-height:1.3;"
    "color:#111111;background:#ffffff}"
    ".insideout-matrix td{padding:1px 4px;text-align:right;border:none}"
    ".insideout-matrix th{padding:1px 4px;color:#555555;font-weight:normal;text-align:right;background:#f7f7f7;"
    "border:none}"
    ".insideout-matrix tbody th{text-align:left}"
    ".insideout-matrix caption{caption-side:top;text-align:left;padding:2px 0;color:#333333;font-family:sans-serif}"
    ".insideout-cap{text-align:left;padding:2px 0;color:#333333;font-family:sans-serif;font-size:0.78em}"
    ".insideout-table{border-collapse:collapse;font-size:0.85em;color:#111111;background:#ffffff}"
    ".insideout-table th{padding:2px 8px;border-bottom:1px solid #999999}"
    ".insideout-table td{padding:1px 8px;font-family:monospace;border:none}"
    ".insideout-table caption{caption-side:top;text-align:left;color:#333333;font-family:sans-serif}"
    "</style>"
)


def _as_nested(data) -> object:
    if hasattr(data, "tolist") and not isinstance(data, list):
        data = data.tolist()
    if isinstance(data, tuple):
        data = list(data)
    return data


def _to_matrix(data) -> tuple[list[list], tuple[int, ...]]:
    """Normalise a scalar, vector or matrix to rows of numbers, and return it with its shape."""
    data = _as_nested(data)
    if not isinstance(data, list):
        _check_number(data)
        return [[data]], ()
    if not data:
        raise ValueError("show: got an empty sequence; there is nothing to display")
    if not isinstance(_as_nested(data[0]), list):
        for x in data:
            _check_number(x)
        return [list(data)], (len(data),)
    rows = [_as_nested(r) for r in data]
    width = len(rows[0])
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ValueError(f"show: row {i} is not a sequence; pass a vector or a matrix (list of equal rows)")
        if len(row) != width:
            raise ValueError(f"show: row {i} has {len(row)} entries but row 0 has {width}; rows must be equal")
        for x in row:
            if isinstance(_as_nested(x), list):
                raise ValueError(
                    "show: got more than 2 dimensions; pass a vector or a matrix, e.g. one head's slice x[0]"
                )
            _check_number(x)
    return rows, (len(rows), width)


def _check_number(x) -> None:
    if not isinstance(x, (int, float)):
        raise ValueError(f"show: entries must be numbers, got {type(x).__name__} {x!r}")


def _format(x, decimals: int, sig: int | None = None) -> str:
    """One entry as text: fixed ``decimals``, or ``sig`` significant digits in scientific form (exact 0 as "0")."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    if sig is not None:  # compact exponent: -1.78e-2, not -1.78e-02
        if x == 0:
            return "0"
        mantissa, exponent = f"{x:.{sig - 1}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    s = f"{x:.{decimals}f}"
    if s.startswith("-") and float(s) == 0.0:  # no "-0.0000"
        s = s[1:]
    return s


def _blocks(n: int, size: int) -> list[range]:
    """Split range(n) into consecutive ranges of at most ``size``."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _colour(x, vmax: float) -> tuple[str, str]:
    """(background, text colour) for one value on the symmetric diverging scale."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return MASKED_BG, MASKED_TEXT
    t = 0.0 if vmax == 0 else max(-1.0, min(1.0, x / vmax))
    end = POSITIVE if t > 0 else NEGATIVE
    a = abs(t)
    rgb = tuple(round(w + a * (e - w)) for w, e in zip(WHITE, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), (LIGHT_TEXT if a > 0.55 else DARK_TEXT)


def _shape_text(shape: tuple[int, ...]) -> str:
    if not shape:
        return "scalar"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return f"{shape[0]}×{shape[1]}"


class MatrixView:
    """A vector or matrix with a name, rendered as a colour-coded HTML table (text table as fallback)."""

    def __init__(self, data, name: str | None = None, *, decimals: int = 4,
                 row_labels: Sequence | None = None, col_labels: Sequence | None = None,
                 vmax: float | None = None, sig: int | None = None, wrap: int | str | None = "auto"):
        if not isinstance(decimals, int) or not 0 <= decimals <= 12:
            raise ValueError(f"show: decimals={decimals!r} must be an integer between 0 and 12")
        if sig is not None and (not isinstance(sig, int) or isinstance(sig, bool) or not 1 <= sig <= 17):
            raise ValueError(f"show: sig={sig!r} must be None or an integer between 1 and 17 (significant digits)")
        if wrap == "auto":  # scientific entries are wider: fewer of them per line
            wrap = AUTO_WRAP if sig is None else AUTO_WRAP // 2
        if wrap is not None and (not isinstance(wrap, int) or isinstance(wrap, bool) or wrap < 1):
            raise ValueError(f"show: wrap={wrap!r} must be 'auto', None (never wrap) or a positive number of columns")
        self.rows, self.shape = _to_matrix(data)
        self.name = name
        self.decimals = decimals
        self.sig = sig
        n_rows, n_cols = len(self.rows), len(self.rows[0])
        self.row_labels = [str(x) for x in (row_labels if row_labels is not None else range(n_rows))]
        self.col_labels = [str(x) for x in (col_labels if col_labels is not None else range(n_cols))]
        if len(self.row_labels) != n_rows:
            raise ValueError(f"show: {len(self.row_labels)} row labels for {n_rows} rows; give one per row")
        if len(self.col_labels) != n_cols:
            raise ValueError(f"show: {len(self.col_labels)} column labels for {n_cols} columns; give one per column")
        finite = [abs(float(x)) for row in self.rows for x in row if math.isfinite(float(x))]
        self.vmax = float(vmax) if vmax is not None else (max(finite) if finite else 0.0)
        if self.vmax < 0 or math.isnan(self.vmax):
            raise ValueError(f"show: vmax={vmax!r} must be a non-negative number")
        size = max(n_rows, n_cols) if wrap is None else wrap
        self.row_blocks, self.col_blocks = _blocks(n_rows, size), _blocks(n_cols, size)

    def _fmt(self, x) -> str:
        return _format(x, self.decimals, self.sig)

    def _block_title(self, rows: range, cols: range) -> str:
        """'rows a–b, columns c–d' for one block of a split matrix (only the split dimensions)."""
        parts = []
        if len(self.row_blocks) > 1:
            parts.append(f"rows {self.row_labels[rows[0]]}–{self.row_labels[rows[-1]]}")
        if len(self.col_blocks) > 1:
            parts.append(f"columns {self.col_labels[cols[0]]}–{self.col_labels[cols[-1]]}")
        return ", ".join(parts)

    def _block_pairs(self) -> list[tuple[range, range]]:
        return [(r, c) for r in self.row_blocks for c in self.col_blocks]

    @property
    def caption(self) -> str:
        """'name · shape · colour scale' in plain text."""
        parts = [self.name] if self.name else []
        parts.append(_shape_text(self.shape))
        parts.append(f"colour scale ±{self._fmt(self.vmax)}")
        return " · ".join(parts)

    def to_text(self) -> str:
        """An aligned plain-text table: caption line, then per block a column header and one line per row."""
        cells = [[self._fmt(x) for x in row] for row in self.rows]
        lines = [self.caption]
        for rows, cols in self._block_pairs():
            title = self._block_title(rows, cols)
            if title:
                lines.append(f"[{title}]")
            widths = [max(len(self.col_labels[j]), *(len(cells[i][j]) for i in rows)) for j in cols]
            lab_w = max(len(self.row_labels[i]) for i in rows)
            lines.append(" " * lab_w + "  " + "  ".join(self.col_labels[j].rjust(w) for j, w in zip(cols, widths,
                                                                                                    strict=True)))
            for i in rows:
                lines.append(self.row_labels[i].ljust(lab_w) + "  "
                             + "  ".join(cells[i][j].rjust(w) for j, w in zip(cols, widths, strict=True)))
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self) -> str:
        return self.to_text()

    def _caption_html(self) -> str:
        name = f"<b>{html.escape(self.name)}</b> · " if self.name else ""
        lo, hi = _colour(-self.vmax, self.vmax)[0], _colour(self.vmax, self.vmax)[0]
        v = html.escape(self._fmt(self.vmax))
        swatch = 'display:inline-block;width:0.9em;height:0.9em;vertical-align:middle;border:1px solid #999;'
        return (
            f"<caption>{name}{html.escape(_shape_text(self.shape))} · colour "
            f'<span style="{swatch}background:{lo}"></span> −{v} '
            f'<span style="{swatch}background:#ffffff"></span> 0 '
            f'<span style="{swatch}background:{hi}"></span> +{v}</caption>'
        )

    def _repr_html_(self) -> str:
        return STYLE + self._table_html()

    def _one_table(self, rows: range, cols: range, caption: str) -> str:
        out = ['<table class="insideout-matrix">', caption, "<thead><tr><th></th>"]
        out += [f"<th>{html.escape(self.col_labels[j])}</th>" for j in cols]
        out.append("</tr></thead><tbody>")
        for i in rows:
            out.append(f"<tr><th>{html.escape(self.row_labels[i])}</th>")
            for j in cols:
                x = self.rows[i][j]
                bg, fg = _colour(x, self.vmax)
                colour = "" if fg == DARK_TEXT else f";color:{fg}"
                out.append(f'<td style="background:{bg}{colour}">{html.escape(self._fmt(x))}</td>')
            out.append("</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    def _table_html(self) -> str:
        pairs = self._block_pairs()
        if len(pairs) == 1:
            return '<div class="insideout-view">' + self._one_table(*pairs[0], self._caption_html()) + "</div>"
        # split: the caption once, then the blocks (row blocks side by side, column blocks one under the other)
        out = ['<div class="insideout-view">', self._caption_html().replace("<caption>", '<div class="insideout-cap">')
               .replace("</caption>", "</div>")]
        for cols in self.col_blocks:
            out.append('<div style="display:flex;flex-wrap:wrap;gap:0 1em;align-items:flex-start">')
            for rows in self.row_blocks:
                title = f'<caption>{html.escape(self._block_title(rows, cols))}</caption>'
                out.append(f"<div>{self._one_table(rows, cols, title)}</div>")
            out.append("</div>")
        out.append("</div>")
        return "".join(out)


class Row:
    """Several views side by side (HTML) or one under the other (text)."""

    def __init__(self, *views):
        for v in views:
            if not hasattr(v, "_table_html") or not hasattr(v, "to_text"):
                raise ValueError(f"side_by_side: {type(v).__name__} is not a view; build each item with show(...)")
        self.views = list(views)

    def to_text(self) -> str:
        """The views' text tables separated by blank lines."""
        return "\n\n".join(v.to_text() for v in self.views)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        items = "".join(f'<div style="flex:0 1 auto;min-width:0">{v._table_html()}</div>' for v in self.views)
        return STYLE + f'<div style="display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start">{items}</div>'


def _is_numeric(x) -> bool:
    if isinstance(x, (int, float)):
        return True
    try:
        float(str(x))
    except ValueError:
        return False
    return True


class TableView:
    """A plain table of labelled values (strings or numbers), e.g. a model card: HTML with a text fallback."""

    def __init__(self, rows: Sequence[Sequence], headers: Sequence[str], name: str | None = None,
                 decimals: int = 4):
        self.headers = [str(h) for h in headers]
        self.rows = [list(r) for r in rows]
        for i, r in enumerate(self.rows):
            if len(r) != len(self.headers):
                raise ValueError(f"table: row {i} has {len(r)} cells for {len(self.headers)} headers")
        self.name = name
        self.decimals = decimals

    def _cell(self, x) -> str:
        return _format(x, self.decimals) if isinstance(x, (int, float)) else str(x)

    def to_text(self) -> str:
        """An aligned plain-text table (numbers right-aligned, text left-aligned)."""
        cells = [[self._cell(x) for x in r] for r in self.rows]
        widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(self.headers)]
        numeric = [all(_is_numeric(r[j]) for r in self.rows) for j in range(len(self.headers))]

        def line(items):
            cells = zip(items, widths, numeric, strict=True)
            return "  ".join(s.rjust(w) if num else s.ljust(w) for s, w, num in cells).rstrip()

        lines = [self.name] if self.name else []
        lines += [line(self.headers), "  ".join("-" * w for w in widths)]
        lines += [line(r) for r in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return STYLE + self._table_html()

    def _table_html(self) -> str:
        numeric = [all(_is_numeric(r[j]) for r in self.rows) for j in range(len(self.headers))]
        cap = f"<caption><b>{html.escape(self.name)}</b></caption>" if self.name else ""
        out = ['<div class="insideout-view"><table class="insideout-table">', cap, "<thead><tr>"]
        out += [f'<th style="text-align:{"right" if n else "left"}">{html.escape(h)}</th>'
                for h, n in zip(self.headers, numeric, strict=True)]
        out.append("</tr></thead><tbody>")
        for r in self.rows:
            out.append("<tr>")
            out += [f'<td style="text-align:{"right" if n else "left"}">{html.escape(self._cell(x))}</td>'
                    for x, n in zip(r, numeric, strict=True)]
            out.append("</tr>")
        out.append("</tbody></table></div>")
        return "".join(out)


def show(data, name: str | None = None, *, decimals: int = 4, row_labels: Sequence | None = None,
         col_labels: Sequence | None = None, vmax: float | None = None, sig: int | None = None,
         wrap: int | str | None = "auto") -> MatrixView:
    """A colour-coded view of a scalar, vector or matrix (nested lists or anything with ``.tolist()``).

    ``decimals``: fixed decimals per entry; ``sig``: significant digits in scientific form instead; ``wrap``: the
    most columns (and rows) per block before the matrix is split into blocks ("auto": 16, or 8 with ``sig``;
    None: never split).
    """
    return MatrixView(data, name, decimals=decimals, row_labels=row_labels, col_labels=col_labels, vmax=vmax,
                      sig=sig, wrap=wrap)


def side_by_side(*views) -> Row:
    """Show several views next to each other (wrapping on narrow screens)."""
    return Row(*views)


def table(rows: Sequence[Sequence], headers: Sequence[str], name: str | None = None, decimals: int = 4) -> TableView:
    """A plain labelled table (no colours) with an aligned text fallback."""
    return TableView(rows, headers, name, decimals)


__all__ = ["MatrixView", "Row", "TableView", "show", "side_by_side", "table"]
