"""The ``quartier`` command assembled: logging options and one sub-app per command group."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Annotated

import typer
from pythonjsonlogger.json import JsonFormatter
from rich.logging import RichHandler

from quartier.cli import (
    coverage_gaps,
    db,
    devices,
    evaluation,
    imports,
    keys,
    maps,
    privacy,
    rejects,
    runtime,
    services,
    sta_mqtt,
)
from quartier.cli.common import console

app = typer.Typer(
    help="Quartier: smart-city data platform.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(services.app, name="services")
app.add_typer(db.app, name="db")
app.add_typer(runtime.app)  # ingest, serve, simulate, demo
app.add_typer(imports.app, name="import")
app.add_typer(coverage_gaps.app, name="coverage")
app.add_typer(evaluation.app)  # evaluate
app.add_typer(maps.app)  # map
app.add_typer(evaluation.indicators_app, name="indicators")
app.add_typer(rejects.app, name="rejects")
app.add_typer(devices.app, name="devices")
app.add_typer(keys.app, name="keys")
app.add_typer(privacy.app, name="privacy")
app.add_typer(sta_mqtt.app)  # sta-mqtt


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler: logging.Handler
    if log_format == "json":  # one JSON object per line on stderr, for log collectors
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(threadName)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if log_format == "json" else "%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )
    logging.getLogger("paho").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="text (for people) or json (one object per line, for log collectors)",
        ),
    ] = LogFormat.text,
) -> None:
    setup_logging(verbose, log_format.value)
    from quartier.sta_mqtt.notice import install_if_enabled

    install_if_enabled()  # sta.mqtt_publish: every writer announces its commits (docs/mqtt.md)


def run() -> None:  # pragma: no cover - console entry for python -m
    app()
