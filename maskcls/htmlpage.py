"""The shared parts of the self-contained HTML pages that `eda` and `report` write.

A page carries its images as data URIs and its style inline, so the one file opens anywhere
(mailed, archived, or served from a folder without the PNGs). Only the standard library is used,
so the page skeleton stays free of the plotting and image stacks that build its contents.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Iterable

# Rules both pages share; each page passes its own additions to `page`, which come after these
# and so win where they differ.
BASE_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; }
"""


def escape(value) -> str:
    """Any value as HTML text, quotes included, so it is also safe inside an attribute."""
    return html.escape(str(value))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """`data` embedded as a base64 data URI, for an <img src> that needs no other file."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def table(columns: Iterable[str], rows: Iterable[Iterable[str]], css_class: str | None = None) -> str:
    """A table with one header row of `columns` (plain text, escaped here) and `rows` of ready <td> cells.

    The cells come as HTML so each caller can give a cell a class or put an image in it.
    """
    header = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    opening = f'<table class="{escape(css_class)}">' if css_class else "<table>"
    return f"{opening}<tr>{header}</tr>{body}</table>"


def page(title: str, body_html: str, style: str = "") -> str:
    """A complete HTML document: `title` as both the window title and the first heading, then `body_html`.

    `style` holds the page's own CSS rules, added after BASE_STYLE.
    """
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title><style>{BASE_STYLE}{style}</style></head>
<body>
<h1>{escape(title)}</h1>
{body_html}
</body></html>
"""
