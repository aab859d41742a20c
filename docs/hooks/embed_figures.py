"""MkDocs hook: ``<!-- figure: NAME -->`` in a page becomes the plotly figure ``docs/figures/NAME.json`` (written by
``python docs/figures.py NAME``), drawn by the bundled plotly.js, with the commands that produced it beneath.

The figure's data is inlined in the page, so it shows offline and from ``file://``; plotly.js is copied from the
installed plotly package into the site (no CDN). A placeholder without its JSON fails the build.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"<!--\s*figure:\s*([a-z0-9-]+)\s*-->")
FIGURES = Path(__file__).resolve().parent.parent / "figures"


def _figure(name: str, where: str) -> str:
    path = FIGURES / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"{where}: figure {name!r} has no {path}; run `python docs/figures.py {name}`")
    record = json.loads(path.read_text())
    data = json.dumps(record["figure"]).replace("</", "<\\/")
    commands = "\n".join(record["commands"])
    return (
        f'<div class="plotly-figure" id="figure-{name}"><script type="application/json">{data}</script></div>\n'
        f'<p class="figure-commands">Produced by:</p>\n<pre><code>{html.escape(commands)}</code></pre>\n'
    )


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return _PLACEHOLDER.sub(lambda m: _figure(m.group(1), page.file.src_path), markdown)


def on_post_build(config: Any, **_: Any) -> None:
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = Path(config["site_dir"]) / "javascripts" / "plotly.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
