"""The ingester's in-process stages, without servers (its connections are never opened)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quartier.config import Settings
from quartier.ingest.mqtt import Ingester
from quartier.ingest.pipeline import Message


def ingester() -> Ingester:
    return Ingester(
        Settings(
            _env_file=None,
            database={"url": "postgresql://nobody@127.0.0.1:1/none"},
            mqtt={"url": "mqtt://127.0.0.1:1"},  # type: ignore[call-arg]
            ingest={"batch_ms": 0},
        )
    )


def msg(i: int) -> tuple[Message, int, int]:
    return Message(f"quartier/v1/n/d{i}/up", b"{}", datetime.now(UTC)), i, 1


def test_collect_trusts_the_buffer_not_the_wakeup_event() -> None:
    ing = ingester()
    # the event may be set with nothing left (taken with the previous batch): no batch, no error
    ing._has_data.set()
    assert ing._collect() == []
    # and a message that arrives without setting the event again is still taken
    ing._buffer.append(msg(1))
    assert not ing._has_data.is_set()
    assert [mid for _, mid, _ in ing._collect()] == [1]
    assert ing._collect() == []


def test_an_internal_error_stops_the_ingester_without_acknowledging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ing = ingester()
    ing._buffer.extend([msg(1), msg(2)])

    def broken(msgs: list[Message]) -> None:
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(ing, "_batch", broken)
    ing._decode_loop()  # returns instead of hanging or dying silently
    assert isinstance(ing.failed, RuntimeError)
    assert ing.stop_event.is_set()
    assert ing._pipe.get_nowait() is None  # the writers are told to end; nothing was stored
    assert ing._next_ack == 0
