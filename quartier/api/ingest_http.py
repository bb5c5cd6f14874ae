"""HTTP ingest for devices that push over HTTP (Sensor.Community firmware's "custom API").

The body goes through the same decode → validate → batch writer pipeline as MQTT messages; a
refused body is stored in ``ingest_reject`` (source ``http``) with its reason, and the client gets
its ``DecodeError`` as a 400 saying what was wrong (the API's one error table). A 201 means the
readings are committed. The body is never read past ``api.max_body_bytes`` (413, the app's
``BodyCap``).

Devices authenticate with HTTP Basic (the firmware's "Send to own API" has user and password):
the user is the device key (``esp8266-12345``, as in ``X-Sensor``), the password the one
``quartier devices add sensor.community esp8266-12345`` issued, checked against
``device_credential``. No or wrong credentials: 401, and nothing is stored (not even a reject);
credentials of another device than the push names: 403. A device without credentials may push
only when the operator opens registration (``ingest.http_allow_unknown_devices``); one that has
credentials must always use them. ``X-PIN`` (the firmware's sensor pin number, not a secret) is
not read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from quartier.api.deps import AppSettings, Conn
from quartier.config import IngestSettings
from quartier.errors import AuthenticationError, DecodeError, PermissionDeniedError
from quartier.ingest.model import Batch, Reject
from quartier.ingest.sensor_community import NETWORK, decode_sensor_community_push
from quartier.ingest.validate import validate
from quartier.ingest.writer import BatchWriter
from quartier.store import credentials
from quartier.store.credentials import Credential
from quartier.store.db import DictConn

router = APIRouter(prefix="/ingest", tags=["Ingest over HTTP"])
TOPIC = "http/sensor-community"
_CHALLENGE = 'Basic realm="quartier-ingest"'
_LOG_IN = (
    "this device must authenticate: HTTP Basic with its device key as user and the password "
    "`quartier devices add` issued"
)
_device_basic = HTTPBasic(
    scheme_name="DeviceBasic",
    realm="quartier-ingest",
    description="A device's own account (`quartier devices add sensor.community DEVICE`): the "
    "device key as user, its password.",
    auto_error=False,
)


class IngestResult(BaseModel):
    device: str
    stored: int
    refused: list[str]


class _Writer:
    """One BatchWriter per app, used under a lock (a writer owns one connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writer: BatchWriter | None = None

    def write(
        self, url: str, cfg: IngestSettings, batch: Batch, personal: Sequence[str] | None = None
    ) -> int:
        with self.lock:
            if self.writer is None:
                self.writer = BatchWriter(
                    url,
                    auto_register=cfg.auto_register,
                    reject_payload_max_bytes=cfg.reject_payload_max_bytes,
                    personal_networks=personal,  # privacy.personal_networks
                )
            return self.writer.write(batch).observations

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()


def authenticate_device(conn: DictConn, login: HTTPBasicCredentials | None) -> Credential | None:
    """The active credential of the Basic login (user: the device key, or ``network/device``);
    :class:`AuthenticationError` when it is unknown, revoked or the password is wrong; None
    without a login."""
    if login is None:
        return None
    username = login.username if "/" in login.username else f"{NETWORK}/{login.username}"
    cred = credentials.get(conn, username)
    if cred is None or not credentials.verify_password(login.password, cred.password_hash):
        raise AuthenticationError("unknown device or wrong password", _CHALLENGE)
    if not cred.active:
        raise AuthenticationError(f"the credentials of {cred.username} are revoked", _CHALLENGE)
    return cred


def check_device(
    conn: DictConn, cred: Credential | None, network: str, device: str, cfg: IngestSettings
) -> None:
    """Whether the login may push for ``device``: its own credential (or its network's), or no
    login for a device without credentials when registration is open."""
    if cred is not None:
        if cred.network != network or cred.device not in (device, "*"):
            raise PermissionDeniedError(
                f"the credentials of {cred.username} do not cover the device {network}/{device}"
            )
        return
    if not cfg.http_allow_unknown_devices:
        raise AuthenticationError(_LOG_IN, _CHALLENGE)
    if credentials.find(conn, network, device) is not None:
        raise AuthenticationError(
            f"the device {network}/{device} has credentials: send them (HTTP Basic)", _CHALLENGE
        )


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
    responses={
        400: {"description": "refused; the reason is in the body and in the rejects"},
        401: {"description": "no, unknown, revoked or wrong device credentials; nothing stored"},
        403: {"description": "the credentials are another device's; nothing stored"},
    },
)
async def sensor_community_push(
    request: Request,
    settings: AppSettings,
    conn: Conn,
    login: Annotated[HTTPBasicCredentials | None, Security(_device_basic)] = None,
    x_sensor: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Accepts the JSON that Sensor.Community firmware posts to a custom API (set host, port and
    path ``/ingest/sensor-community``, and the device's user and password, in the firmware's
    "Send to own API" settings)."""
    # the password hash takes tens of milliseconds: not on the event loop
    cred = await run_in_threadpool(authenticate_device, conn, login)
    if cred is None and not settings.ingest.http_allow_unknown_devices:
        raise AuthenticationError(_LOG_IN, _CHALLENGE)  # before the body is read
    body = await request.body()
    now = datetime.now(UTC)
    headers = {"X-Sensor": x_sensor} if x_sensor is not None else {}
    # the ingester's login (quartier_ingest): under `quartier serve` database.url is the API's,
    # which may not insert observations
    url = settings.database.ingest_url or settings.require_database_url()
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
        await run_in_threadpool(
            w.write, url, cfg, Batch(rejects=[reject]), settings.privacy.personal_networks
        )
        raise
    await run_in_threadpool(check_device, conn, cred, uplink.network, uplink.device, cfg)
    batch = Batch()
    batch.uplinks.append((uplink, f"{TOPIC}/{uplink.device}", body, now))
    stored = await run_in_threadpool(w.write, url, cfg, batch, settings.privacy.personal_networks)
    result = IngestResult(
        device=uplink.device,
        stored=stored,
        refused=[f"#{i} {reason}: {detail}" for i, reason, detail in uplink.invalid],
    )
    return JSONResponse(result.model_dump(), status_code=201)
