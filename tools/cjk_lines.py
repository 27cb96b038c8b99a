"""Line breaks inside Chinese sentences, removed when the site is built.

The Markdown sources are wrapped at a fixed width. A browser turns each line break inside a
paragraph into a space, which is right between English words and wrong between Chinese
characters: "每种 策略" would read with a gap in the middle of a word. This MkDocs hook joins the
lines of a paragraph wherever the break falls between two CJK characters (or CJK punctuation),
outside code blocks, and leaves every other break alone.
"""

from __future__ import annotations

import re
from typing import Any

CJK = "\u2014\u2026\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"  # with — and … as Chinese uses them
# a break between two CJK characters, also where emphasis or a link's text opens, or emphasis closes
BREAK = re.compile(rf"(?:(?<=[{CJK}])|(?<=[{CJK}]\*)|(?<=[{CJK}]\*\*))[ \t]*\n[ \t]*(?=(?:\*{{1,2}}|\[)?[{CJK}])")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)


def join_lines(markdown: str) -> str:
    """``markdown`` with the breaks between two CJK characters removed, code blocks untouched."""
    out, last = [], 0
    for m in FENCE.finditer(markdown):
        out += [BREAK.sub("", markdown[last : m.start()]), m.group(0)]
        last = m.end()
    out.append(BREAK.sub("", markdown[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: join the Chinese lines of every page (English pages have none to join)."""
    return join_lines(markdown)
