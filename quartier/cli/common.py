"""What every command shares: the console, settings per invocation, the one place that turns
Quartier's errors into a one-line message and an exit status, and Ctrl-C handling."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from quartier.config import Settings
from quartier.errors import QuartierError, UnreachableError

console = Console(stderr=True)

#: exit status per error type (the first that matches); any other QuartierError exits with 1
EXIT_CODES: dict[type[QuartierError], int] = {UnreachableError: 2}


def settings(local: bool = True) -> Settings:
    """The settings of this invocation; ``local`` fills missing URLs from the local services."""
    s = Settings()
    return s.with_local_services() if local else s


def local_services(s: Settings) -> Any:
    from quartier.services import LocalServices

    return LocalServices.from_settings(s.services)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` as one line (never wrapped) on stderr; the exit to raise."""
    console.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors(s: Settings | None = None) -> Iterator[None]:
    """Quartier's errors as one line and their exit status (:data:`EXIT_CODES`), no traceback.
    With the settings, a database that goes away in the middle is named like one that was
    never there."""
    from quartier.cli.connect import database_error

    try:
        yield
    except QuartierError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        raise fail(str(exc), code) from None
    except Exception as exc:
        unreachable = database_error(exc, s)
        if unreachable is None:
            raise
        raise fail(str(unreachable), EXIT_CODES[UnreachableError]) from None


def stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            sys.exit(130)
        console.print("stopping … (again to force)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
