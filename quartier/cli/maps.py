"""``quartier map NAME --out file.html``: a map as one self-contained HTML file (its scripts and
styles inside, so it opens without Quartier and without internet; tiles only if a basemap is
configured). ``--png file.png``: the broadband or district map as a static image (reports,
council slides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quartier.cli.common import console, fail, settings, user_errors
from quartier.cli.connect import connect

app = typer.Typer()


@app.command("map")
def map_cmd(
    name: Annotated[
        str,
        typer.Argument(help="coverage (or broadband), mobile, measured, sensors or districts"),
    ],
    out: Annotated[Path | None, typer.Option("--out", help="the HTML file to write")] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="a PNG image to write (broadband/coverage and districts)"),
    ] = None,
    indicator: Annotated[
        str | None,
        typer.Option("--indicator", help="the district map's indicator (quartier indicators)"),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="de (default) or en")] = "de",
) -> None:
    """Write a map (as served under /maps/NAME) to a standalone HTML file that works offline,
    or (--png) as an image."""
    from quartier.maps.assets import Assets
    from quartier.maps.pages import ALIASES, IMAGES, MAPS, render_image, render_page
    from quartier.maps.render import MapOptions

    known = ", ".join([*MAPS, *ALIASES])
    resolved = ALIASES.get(name, name)
    if resolved not in MAPS:
        raise fail(f"no map {name!r}; known: {known}")
    if out is None and png is None:
        raise fail("say where to write the map: --out FILE.html and/or --png FILE.png")
    if png is not None and resolved not in IMAGES:
        raise fail(f"--png is available for the broadband and districts maps, not {name!r}")
    if resolved == "districts" and not indicator:
        raise fail("the district map needs --indicator ID (`quartier indicators` lists them)")
    if lang not in ("de", "en"):
        raise fail(f"--lang must be de or en, not {lang!r}")
    s = settings()
    options = MapOptions.from_settings(
        s, lang="en" if lang == "en" else "de", assets=Assets(base=None), indicator=indicator
    )
    page: str | None = None
    image: bytes | None = None
    with user_errors(s), connect(s, autocommit=True) as conn:
        if out is not None:
            page = render_page(conn, resolved, options)
        if png is not None:
            image = render_image(conn, resolved, options)
    for path, data in ((out, page), (png, image)):
        if path is None or data is None:
            continue
        try:
            if isinstance(data, str):
                path.write_text(data, encoding="utf-8")
            else:
                path.write_bytes(data)
        except OSError as exc:
            raise fail(f"cannot write {path}: {exc.strerror or exc}") from None
        size = len(data.encode()) if isinstance(data, str) else len(data)
        what = "works offline" if isinstance(data, str) else "PNG"
        console.print(f"wrote {path} ({size / 1024:.0f} KiB, {what})")
