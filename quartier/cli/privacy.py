"""``quartier privacy``: answer a data subject's access (DSGVO Art. 15) and erasure (Art. 17)
requests for one device (docs/privacy.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from quartier.cli.common import console, settings, user_errors
from quartier.cli.connect import connect
from quartier.config import Settings

app = typer.Typer(
    help="Personal data of one device: export it (Art. 15 DSGVO) or erase it (Art. 17).",
    no_args_is_help=True,
)

DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="the device's key as the app or sensor sends it (hashed with the current secret), "
        "or its pseudonym (p1-…)",
    ),
]


def _device(s: Settings, device: str) -> tuple[str, str | None]:
    """(pseudonym, raw key or None) for what the operator typed."""
    from quartier.pseudonym import is_pseudonym, pseudonymizer

    if is_pseudonym(device):
        return device, None
    return pseudonymizer(s)(device), device


@app.command("export")
def privacy_export(
    device: DeviceOption,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the JSON here (default: standard output)")
    ] = None,
) -> None:
    """Everything stored for the device as JSON: speed tests, signal measurements, refused
    messages, Things with their Locations and Observations."""
    from quartier.store import privacy

    s = settings()
    with user_errors(s), connect(s) as conn:
        pseudonym, raw = _device(s, device)
        data = privacy.export_device(conn, pseudonym, raw)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    console.print(
        f"exported {len(data['speedtests'])} speed tests, "
        f"{len(data['signal_measurements'])} signal measurements, {len(data['rejects'])} "
        f"refused messages, {len(data['things'])} Things to {out}"
    )


@app.command("erase")
def privacy_erase(
    device: DeviceOption,
    reference: Annotated[
        str | None,
        typer.Option(help="your case reference (Aktenzeichen), recorded with the erasure"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete everything stored for the device and record the erasure (counts and your
    reference, no personal data). New aggregates no longer include it."""
    from quartier.store import privacy

    s = settings()
    with user_errors(s), connect(s) as conn:
        pseudonym, raw = _device(s, device)
        if not yes and not typer.confirm(
            f"Delete all data of device {pseudonym}? This cannot be undone."
        ):
            raise typer.Exit(1)
        deleted = privacy.erase_device(conn, pseudonym, raw, reference=reference)
        conn.commit()
    console.print("erased: " + ", ".join(f"{n} {table}" for table, n in sorted(deleted.items())))
    if deleted.get("thing"):
        console.print(
            "note: a registered device was erased: revoke its account first (quartier devices "
            "revoke) so that it sends nothing more, and restart running ingesters, which keep "
            "the device's ids until then"
        )
    if raw is None:
        console.print(
            "note: given as a pseudonym, refused messages and registered Things (kept under "
            "the raw key) were not searched; give the raw key to erase those too"
        )
