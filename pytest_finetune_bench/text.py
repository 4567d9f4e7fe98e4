"""Untrusted text (model output, names and errors read from files) made safe for where it is shown.

One place for it: the terminal and CI logs (`printable`), HTML (`html_text`) and Markdown tables
(`markdown_inline`). Control and format characters are shown as escapes, so generated
text cannot move the cursor, recolour or clear a terminal, hide text (bidirectional overrides,
zero-width characters) or break a line where the reader expects one.
"""

from __future__ import annotations

import html
import unicodedata

# Categories shown as escapes: controls (Cc: ESC, CR, BEL...), format characters (Cf: bidi overrides,
# zero-width joiners, soft hyphens), line and paragraph separators (Zl, Zp), unassigned and surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Cs", "Co"})


def printable(text: str, keep: str = "") -> str:
    """`text` with every control, format or separator character written as an escape (\\r, \\x1b, \\u202e).

    Characters in `keep` (e.g. "\\n" for a multi-line block) are left as they are.
    """
    return "".join(char if char in keep or unicodedata.category(char) not in _HIDDEN_CATEGORIES
                   else _escape(char) for char in text)


def _escape(char: str) -> str:
    shown = repr(char)[1:-1]  # Python's own spelling: \n, \r, \t, \x1b, \u202e, \U000e0001
    return shown if shown != char else f"\\u{ord(char):04x}"


def markdown_inline(value: object) -> str:
    """`value` as one line of Markdown (a table cell, a name in a sentence): no line breaks, no raw HTML,
    no column breaks."""
    text = printable(str(value).replace("\r\n", "\n").replace("\n", " "))
    return html.escape(text, quote=False).replace("|", "\\|")


def html_text(value: object) -> str:
    """`value` as HTML text or an attribute value: printable (line breaks and tabs kept), then escaped."""
    return html.escape(printable(str(value), keep="\n\t"))
