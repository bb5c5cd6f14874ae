"""The ``quartier`` command: the process composition root.

Settings are created once per invocation (``common.settings``) and passed down; servers are
reached through ``connect`` only; Quartier's errors become one line and an exit status in one
place (``common.user_errors``, ``common.EXIT_CODES``). One module per command group: ``services``,
``db``, ``runtime`` (ingest, serve, simulate, demo), ``imports``, ``coverage_gaps``,
``evaluation`` (evaluate, indicators), ``rejects``; ``main`` assembles them.
"""

from __future__ import annotations

from quartier.cli.main import app, run
from quartier.cli.main import setup_logging as _setup_logging

__all__ = ["_setup_logging", "app", "run"]
