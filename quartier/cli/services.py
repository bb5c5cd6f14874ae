"""``quartier services``: the project-local PostgreSQL and Mosquitto."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from quartier.cli.common import console, local_services, settings, user_errors
from quartier.config import redact_url

app = typer.Typer(help="Project-local PostgreSQL and Mosquitto.", no_args_is_help=True)


@app.command("up")
def services_up() -> None:
    """Install (if needed) and start PostgreSQL + PostGIS and Mosquitto under .quartier/."""
    s = settings(local=False)
    with user_errors(), console.status("starting PostgreSQL and Mosquitto …"):
        state = local_services(s).up()
    console.print(f"PostgreSQL  {redact_url(state.database_url)}")
    console.print(f"Mosquitto   {redact_url(state.mqtt_url)}")


@app.command("down")
def services_down() -> None:
    """Stop the project-local services."""
    with user_errors():
        local_services(settings(local=False)).down()
    console.print("services stopped")


@app.command("status")
def services_status() -> None:
    """Show whether the project-local services run, and where."""
    table = Table("service", "running", "url", "detail")
    for st in local_services(settings(local=False)).status():
        url = redact_url(st.url) if st.url else "-"
        table.add_row(st.name, "yes" if st.running else "no", url, st.detail)
    Console().print(table)
