"""``quartier map NAME --out file.html``: a map as one self-contained HTML file (its scripts and
styles inside, so it opens without Quartier and without internet; tiles only if a basemap is
configured)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quartier.cli.common import console, fail, settings, user_errors
from quartier.cli.connect import connect

app = typer.Typer()


@app.command("map")
def map_cmd(
    name: Annotated[str, typer.Argument(help="coverage (broadband), mobile or sensors")],
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")],
    lang: Annotated[str, typer.Option("--lang", help="de (default) or en")] = "de",
) -> None:
    """Write a map (as served under /maps/NAME) to a standalone HTML file that works offline."""
    from quartier.maps.assets import Assets
    from quartier.maps.pages import MAPS, render_page
    from quartier.maps.render import MapOptions

    if name not in MAPS:
        raise fail(f"no map {name!r}; known: {', '.join(MAPS)}")
    if lang not in ("de", "en"):
        raise fail(f"--lang must be de or en, not {lang!r}")
    s = settings()
    options = MapOptions.from_settings(
        s, lang="en" if lang == "en" else "de", assets=Assets(base=None)
    )
    with user_errors(s), connect(s, autocommit=True) as conn:
        page = render_page(conn, name, options)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"wrote {out} ({len(page.encode()) / 1024:.0f} KiB, works offline)")
