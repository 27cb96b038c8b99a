"""Formulas rendered when the site is built, so the guide needs no network to show them.

``pymdownx.arithmatex`` (generic mode) wraps each ``$...$`` in ``<span class="arithmatex">\\(...\\)</span>``
and each ``$$...$$`` in ``<div class="arithmatex">\\[...\\]</div>``. This MkDocs hook replaces
every one with MathML written by ``latex2mathml`` (pure Python), which browsers draw natively
(MathML Core: Chromium 109+, Firefox, Safari) — no script, no font fetched from a CDN, so the pages
read the same on a cluster or a plane. A formula the converter cannot read fails the build
with the page and the TeX, rather than reaching a reader as raw TeX.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
UNKNOWN = re.compile(r"<m[io]>(\\[A-Za-z]+)</m[io]>")


class FormulaError(ValueError):
    """TeX that cannot be written as MathML."""


def to_mathml(tex: str, display: bool) -> str:
    """One formula (TeX as arithmatex left it, HTML-escaped) as a ``<math>`` element."""
    source = html.unescape(tex).strip()
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as e:  # the converter raises many kinds; each means the same to an author
        raise FormulaError(f"cannot render ${source}$: {type(e).__name__}: {e}") from None
    unknown = UNKNOWN.search(out)
    if unknown:  # the converter prints a command it does not know as text
        raise FormulaError(f"cannot render ${source}$: unknown command {unknown.group(1)}")
    return out


def render(page_html: str) -> str:
    """``page_html`` with every arithmatex span and div replaced by MathML."""
    out = BLOCK.sub(lambda m: f'<div class="math-block">{to_mathml(m.group(1), True)}</div>', page_html)
    return INLINE.sub(lambda m: to_mathml(m.group(1), False), out)


def on_page_content(html_text: str, page: Any, **_: Any) -> str:
    """MkDocs hook: render the page's formulas."""
    try:
        return render(html_text)
    except FormulaError as e:
        raise FormulaError(f"{page.file.src_path}: {e}") from None
