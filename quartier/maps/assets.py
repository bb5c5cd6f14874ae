"""The scripts and styles the maps use, shipped with the package (``quartier/resources/static``,
fetched from npm by ``scripts/vendor-assets.py``, versions and licences in ``ASSETS.json`` and
``THIRD_PARTY.md`` there), and how a page gets them: linked from Quartier's own ``/static``, or
inline, for a map file that works without any server.

folium names its scripts and styles (``default_js`` / ``default_css`` of each element, pointing
at public CDNs); :func:`use_shipped` points every one of them at the shipped file, leaves out the
ones for folium features Quartier's maps do not use, and refuses any other (a ``ValueError``:
a programming error, fixed by shipping the file), so a map never silently loads something from a
third party.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import folium
from branca.element import Element, Figure
from folium.elements import JSCSSMixin

#: where the API serves the shipped files (below its root path)
STATIC_PATH = "/static"

#: folium's name of a script or style -> the shipped file (relative to the static directory)
SHIPPED: dict[str, str] = {
    "leaflet": "leaflet/leaflet.js",
    "jquery": "jquery/jquery.min.js",  # folium's popups parse their HTML with jQuery
    "leaflet_css": "leaflet/leaflet.css",
    "markerclusterjs": "leaflet.markercluster/leaflet.markercluster.js",
    "markerclustercss": "leaflet.markercluster/MarkerCluster.css",
    "markerclusterdefaultcss": "leaflet.markercluster/MarkerCluster.Default.css",
}
#: folium's defaults for Bootstrap and Font Awesome markers (``folium.Icon``), which Quartier's
#: maps do not use: left out.
UNUSED = frozenset(
    {
        "bootstrap",
        "bootstrap_css",
        "glyphicons_css",
        "awesome_markers",
        "awesome_markers_css",
        "awesome_markers_font_css",
        "awesome_rotate_css",
    }
)


def static_dir() -> Path:
    return Path(str(resources.files("quartier.resources"))) / "static"


@dataclass(frozen=True)
class Assets:
    """How a page gets the shipped files: ``base`` the URL path they are served under (e.g.
    ``/static``), or None to put them into the page itself (a file that works offline)."""

    base: str | None = STATIC_PATH

    @property
    def inline(self) -> bool:
        return self.base is None


def _walk(element: Element) -> Iterator[Element]:
    yield element
    for child in element._children.values():
        yield from _walk(child)


def _shipped(name: str, url: str) -> str | None:
    if name in SHIPPED:
        return SHIPPED[name]
    if name in UNUSED:
        return None
    raise ValueError(f"the map wants {name} ({url}), which Quartier does not ship")


def use_shipped(fmap: folium.Map, assets: Assets) -> None:
    """Point every script and style of ``fmap`` and its elements at the shipped files (call it
    once all elements are added, before rendering)."""
    scripts: list[str] = []
    styles: list[str] = []
    for element in _walk(fmap):
        if not isinstance(element, JSCSSMixin):
            continue
        js = [(n, f) for n, u in element.default_js if (f := _shipped(n, u)) is not None]
        css = [(n, f) for n, u in element.default_css if (f := _shipped(n, u)) is not None]
        if assets.inline:
            scripts += [f for _n, f in js if f not in scripts]
            styles += [f for _n, f in css if f not in styles]
            element.default_js, element.default_css = [], []
        else:
            base = str(assets.base).rstrip("/")
            element.default_js = [(n, f"{base}/{f}") for n, f in js]
            element.default_css = [(n, f"{base}/{f}") for n, f in css]
    if assets.inline:
        root = fmap.get_root()
        if not isinstance(root, Figure):  # pragma: no cover - folium always gives a Figure
            raise TypeError("folium map without a Figure root")
        for path in scripts:
            root.header.add_child(Element(f"<script>{inline_script(path)}</script>"), name=path)
        for path in styles:
            root.header.add_child(Element(f"<style>{inline_style(path)}</style>"), name=path)


@cache
def inline_script(path: str) -> str:
    """A shipped script, safe inside ``<script>…</script>``."""
    text = (static_dir() / path).read_text(encoding="utf-8")
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""")


@cache
def inline_style(path: str) -> str:
    """A shipped style sheet with the files it refers to (images) as ``data:`` URIs."""
    file = static_dir() / path
    text = file.read_text(encoding="utf-8")

    def data_uri(match: re.Match[str]) -> str:
        ref = match.group(2)
        if ref.startswith(("data:", "#")):
            return match.group(0)
        if "://" in ref or ref.startswith("//"):
            raise ValueError(f"{path} refers to {ref}, which Quartier does not ship")
        target = (file.parent / ref).resolve()
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return f'url("data:{mime};base64,{base64.b64encode(target.read_bytes()).decode()}")'

    return _CSS_URL.sub(data_uri, text).replace("</", "<\\/")
