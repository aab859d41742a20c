"""MkDocs hook: TeX kept by ``pymdownx.arithmatex`` (generic mode) becomes MathML at build time.

Browsers render MathML natively (Chromium since 109, Firefox, Safari), so the maths needs no script and no network
when the site is viewed. A formula latex2mathml cannot read fails the build, naming the page and the formula.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.DOTALL)
_DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.DOTALL)


def _mathml(tex: str, display: bool, where: str) -> str:
    source = html.unescape(tex).strip()
    try:
        return convert(source, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises many types for bad TeX
        raise ValueError(f"{where}: cannot render the formula {source!r} as MathML ({error})") from None


def on_page_content(html_text: str, page: Any, **_: Any) -> str:
    where = page.file.src_path
    html_text = _DISPLAY.sub(lambda m: f'<div class="math">{_mathml(m.group(1), True, where)}</div>', html_text)
    return _INLINE.sub(lambda m: _mathml(m.group(1), False, where), html_text)
