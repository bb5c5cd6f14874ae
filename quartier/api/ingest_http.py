"""HTTP ingest for devices that push over HTTP (Sensor.Community firmware's "custom API").

The body goes through the same decode → validate → batch writer pipeline as MQTT messages; a
refused body is stored in ``ingest_reject`` (source ``http``) with its reason, and the client gets
its ``DecodeError`` as a 400 saying what was wrong (the API's one error table). A 201 means the
readings are committed. The body is never read past ``api.max_body_bytes`` (413, the app's
``BodyCap``).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from quartier.api.deps import AppSettings
from quartier.config import IngestSettings
from quartier.errors import DecodeError
from quartier.ingest.model import Batch, Reject
from quartier.ingest.sensor_community import decode_sensor_community_push
from quartier.ingest.validate import validate
from quartier.ingest.writer import BatchWriter

router = APIRouter(prefix="/ingest", tags=["Ingest over HTTP"])
TOPIC = "http/sensor-community"


class IngestResult(BaseModel):
    device: str
    stored: int
    refused: list[str]


class _Writer:
    """One BatchWriter per app, used under a lock (a writer owns one connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writer: BatchWriter | None = None

    def write(self, url: str, cfg: IngestSettings, batch: Batch) -> int:
        with self.lock:
            if self.writer is None:
                self.writer = BatchWriter(
                    url,
                    auto_register=cfg.auto_register,
                    reject_payload_max_bytes=cfg.reject_payload_max_bytes,
                )
            return self.writer.write(batch).observations

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()


def _writer(request: Request) -> _Writer:
    state = request.app.state
    if not hasattr(state, "http_writer"):
        state.http_writer = _Writer()
    w: _Writer = state.http_writer
    return w


@router.post(
    "/sensor-community",
    response_model=IngestResult,
    status_code=201,
    operation_id="ingest_sensor_community",
    responses={400: {"description": "refused; the reason is in the body and in the rejects"}},
)
async def sensor_community_push(
    request: Request,
    settings: AppSettings,
    x_sensor: Annotated[str | None, Header()] = None,
    x_pin: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Accepts the JSON that Sensor.Community firmware posts to a custom API (set host, port and
    path ``/ingest/sensor-community`` in the firmware's "Send to own API" settings)."""
    body = await request.body()
    now = datetime.now(UTC)
    headers = {k: v for k, v in (("X-Sensor", x_sensor), ("X-PIN", x_pin)) if v is not None}
    url = settings.require_database_url()
    cfg = settings.ingest
    w = _writer(request)
    try:
        uplink = validate(
            decode_sensor_community_push(body, headers=headers, now=now),
            now,
            cfg.max_future_seconds,
        )
    except DecodeError as exc:  # kept as a reject; the error table answers 400
        reject = Reject(TOPIC, body, exc.reason, exc.detail, now, source="http")
        await run_in_threadpool(w.write, url, cfg, Batch(rejects=[reject]))
        raise
    batch = Batch()
    batch.uplinks.append((uplink, f"{TOPIC}/{uplink.device}", body, now))
    stored = await run_in_threadpool(w.write, url, cfg, batch)
    result = IngestResult(
        device=uplink.device,
        stored=stored,
        refused=[f"#{i} {reason}: {detail}" for i, reason, detail in uplink.invalid],
    )
    return JSONResponse(result.model_dump(), status_code=201)
