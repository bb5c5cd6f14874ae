"""Structured logs: ``quartier --log-format json`` writes one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from quartier.cli import _setup_logging


@pytest.fixture
def root_logger_kept() -> Iterator[None]:
    """The root logger's handlers and level as they were, after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line(
    root_logger_kept: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _setup_logging(False, "json")
    log = logging.getLogger("quartier.ingest.test")
    log.info("stored %d readings", 5000, extra={"batch_ms": 12.5})
    log.debug("not shown without --verbose")
    log.warning("database unavailable; retrying")
    lines = capsys.readouterr().err.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "quartier.ingest.test", "stored 5000 readings"),
        ("WARNING", "quartier.ingest.test", "database unavailable; retrying"),
    ]
    assert records[0]["batch_ms"] == 12.5
    assert records[0]["time"].startswith("20")


def test_demo_start_up_keeps_the_parts_info_lines_to_itself(
    root_logger_kept: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """One INFO line per registered device or migration is the demo's own ✓ line instead;
    warnings still show, and the levels come back afterwards."""
    from quartier.demo import quiet_startup

    _setup_logging(False, "json")
    writer = logging.getLogger("quartier.ingest.writer")
    with quiet_startup():
        for i in range(40):
            writer.info("registered device sim/air-%04d", i)
        writer.warning("database unavailable; retrying")
    writer.info("after the start-up")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [json.loads(line)["message"] for line in lines] == [
        "database unavailable; retrying",
        "after the start-up",
    ]
    assert writer.level == logging.NOTSET
