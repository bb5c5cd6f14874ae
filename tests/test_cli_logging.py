"""Structured logs: ``quartier --log-format json`` writes one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from quartier.cli import _setup_logging


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        _setup_logging(False, "json")
        log = logging.getLogger("quartier.ingest.test")
        log.info("stored %d readings", 5000, extra={"batch_ms": 12.5})
        log.debug("not shown without --verbose")
        log.warning("database unavailable; retrying")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "quartier.ingest.test", "stored 5000 readings"),
        ("WARNING", "quartier.ingest.test", "database unavailable; retrying"),
    ]
    assert records[0]["batch_ms"] == 12.5
    assert records[0]["time"].startswith("20")
