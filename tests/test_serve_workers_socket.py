"""``quartier serve --workers N`` hands its workers a listening socket with TCP_NODELAY, which
the accepted connections inherit: without it (uvicorn binds the socket without naming the
protocol, so asyncio does not set the option) every answer on a kept-alive connection waited
40 ms for the client's delayed ACK (docs/benchmarks.md, API)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import uvicorn

from quartier.cli import runtime


def test_the_workers_listening_socket_and_its_connections_have_tcp_nodelay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, int] = {}

    class Supervisor:
        def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
            self.sock = sockets[0]

        def run(self) -> None:  # instead of forking workers: accept one connection
            seen["listener"] = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            self.sock.listen()
            with socket.create_connection(self.sock.getsockname()[:2]):
                conn, _ = self.sock.accept()
                with conn:
                    seen["accepted"] = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    monkeypatch.setattr("uvicorn.supervisors.Multiprocess", Supervisor)
    config = uvicorn.Config("quartier.cli.runtime:api_app", factory=True, workers=2, port=0)
    runtime._run_workers(config)
    assert seen == {"listener": 1, "accepted": 1}
