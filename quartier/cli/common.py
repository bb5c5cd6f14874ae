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
from quartier.errors import NotMigratedError, QuartierError, UnreachableError

console = Console(stderr=True)

#: exit status per error type (the tree in ``quartier.errors``); the most specific class wins:
#: 2 a server does not answer, 3 the database is not migrated, 1 any other error
EXIT_CODES: dict[type[QuartierError], int] = {
    QuartierError: 1,
    UnreachableError: 2,
    NotMigratedError: 3,
}


def exit_code(exc: QuartierError) -> int:
    """The exit status of ``exc``: that of the nearest class in :data:`EXIT_CODES`."""
    return next(EXIT_CODES[t] for t in type(exc).__mro__ if t in EXIT_CODES)


def settings(local: bool = True) -> Settings:
    """The settings of this invocation; ``local`` fills missing URLs from the local services.
    Invalid settings (e.g. a default password in production) end the command with one line."""
    from pydantic import ValidationError

    try:
        s = Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "__".join(str(p) for p in err.get("loc", ())).upper()
            what = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"QUARTIER_{where}: {what}" if where else what)
        raise fail("invalid settings: " + "; ".join(problems)) from None
    except QuartierError as exc:  # e.g. a password file that cannot be read
        raise fail(str(exc), exit_code(exc)) from None
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
        raise fail(str(exc), exit_code(exc)) from None
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
