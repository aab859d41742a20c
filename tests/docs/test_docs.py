"""The documentation site builds in strict mode, opens offline, renders its maths, and shows only figures made by
the commands beside them (docs/figures.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))
import figures  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _pages(site: Path) -> list[Path]:
    return [page for page in site.rglob("*.html") if page.name != "404.html"]


def test_every_page_loads_scripts_and_styles_from_the_site_only(site: Path) -> None:
    pages = _pages(site)
    assert pages
    for page in pages:
        html = page.read_text()
        external = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="(https?:)?//[^"]+"', html)
        assert external == [], f"{page.relative_to(site)} loads {external}"
    assert (site / "javascripts" / "plotly.min.js").stat().st_size > 1_000_000


def test_maths_is_mathml_and_no_tex_is_left_behind(site: Path) -> None:
    rendered = [page for page in _pages(site) if "<math" in page.read_text()]
    assert rendered
    for page in _pages(site):
        assert 'class="arithmatex"' not in page.read_text(), page


def test_figures_are_registered_drawn_and_shown_with_their_commands(site: Path) -> None:
    shown = set()
    for source in (ROOT / "docs").rglob("*.md"):
        shown |= set(re.findall(r"<!--\s*figure:\s*([a-z0-9-]+)\s*-->", source.read_text()))
    written = {path.stem for path in (ROOT / "docs" / "figures").glob("*.json")}
    assert shown == written == set(figures.SPECS), (shown, written, set(figures.SPECS))
    for name in written:
        record = json.loads((ROOT / "docs" / "figures" / f"{name}.json").read_text())
        assert record["commands"] == figures.SPECS[name].commands(), f"{name}: rebuild with docs/figures.py"
        assert record["figure"]["data"], name
    html = "".join(page.read_text() for page in _pages(site))
    assert html.count('class="plotly-figure"') >= len(written)
    assert all(f"python docs/figures.py {name}" in html for name in written)


def test_a_formula_latex2mathml_cannot_read_fails_the_build(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import mathml

    class Page:
        class file:
            src_path = "broken.md"

    with pytest.raises(ValueError, match=r"broken.md: cannot render the formula"):
        mathml.on_page_content('<span class="arithmatex">\\(\\frac{1}{\\)</span>', Page())
