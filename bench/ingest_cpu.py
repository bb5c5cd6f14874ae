"""CPU per message of the ingester's own Python stages, without the servers: load-robust numbers
for a machine shared with other work (thread CPU time, not wall time).

    .venv/bin/python bench/ingest_cpu.py [--messages 200000] [--batch 1500] [--rounds 5]
        [--read-bytes 4096] [--ref COMMIT]

Stages, each measured on the thread that does it in production:
  mqtt:   the MQTT thread: the broker's PUBLISH packets (QoS 1, MQTT 5, as Mosquitto sends them
          to a shared subscription) read from a socket by ``FastClient.loop_read`` and handed to
          ``Ingester._received`` (buffered);
  decode: the decode thread: ``Ingester._collect`` + ``build_batch`` on batches of ``--batch``;
  ack:    after commit: ``Ingester._acknowledge`` (the batch's PUBACKs in one write).
The payloads are the live benchmark's (bench/mqtt_pub.c): one pm25 reading with an RFC 3339 time.

``--ref COMMIT`` measures the ``quartier`` package of that commit too (exported with ``git
archive`` into a temporary directory), alternating with the working tree round by round, and
prints same-run ratios. No database or broker is started (the writers are not exercised).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def packets(n: int, devices: int = 200) -> tuple[bytes, list[bytes]]:
    """``n`` PUBLISH packets (QoS 1, no properties) as one byte string, and their payloads."""
    out = bytearray()
    payloads = []
    t = datetime.now(UTC) - timedelta(seconds=30)
    for i in range(n):
        topic = f"quartier/v1/bench/dev-{i % devices}/up".encode()
        stamp = (t + timedelta(microseconds=137 * i)).isoformat()
        payload = f'{{"time":"{stamp}","quantity":"pm25","value":{(i % 500) / 10:.1f}}}'.encode()
        payloads.append(payload)
        mid = i % 65535 + 1
        body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + b"\x00" + payload
        length = len(body)
        enc = bytearray()
        while True:
            byte, length = length % 128, length // 128
            enc.append(byte | (0x80 if length else 0))
            if not length:
                break
        out += bytes([0x32]) + enc + body
    return bytes(out), payloads


class _Limited:
    """A socket whose reads return at most ``limit`` bytes: what one loop turn finds under
    live traffic (at 15,000 msgs/s of ~120 bytes, a turn every millisecond finds ~2 KiB)."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit

    def recv(self, n: int) -> bytes:
        return self._sock.recv(min(n, self._limit))

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def measure(n: int, batch: int, read_bytes: int) -> dict[str, float]:
    """One round in this process: µs of thread CPU per message for each stage."""
    from quartier.config import Settings
    from quartier.ingest.mqtt import Ingester

    settings = Settings(
        _env_file=None,
        database={"url": "postgresql://bench@127.0.0.1:1/none"},
        mqtt={"url": "mqtt://127.0.0.1:1"},
        ingest={"client_id": "bench-cpu", "buffer_max": n + 1, "batch_max": batch},
    )
    ing = Ingester(settings)
    client = ing._client
    data, _ = packets(n)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    # the client's own socket wrapper (what _create_socket returns around a connected socket)
    import quartier.ingest.mqtt_client as mc

    client._sock = mc._BufferedSocket(_Limited(a, read_bytes))
    sent = [0]

    def feed() -> None:
        view = memoryview(data)
        while sent[0] < len(data):
            try:
                sent[0] += b.send(view[sent[0] : sent[0] + (1 << 16)])
            except BlockingIOError:
                time.sleep(0.0002)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    t0 = time.thread_time()
    idle = 0.0
    while len(ing._buffer) < n:
        rc = client.loop_read()
        if rc:
            raise RuntimeError(f"loop_read: {rc}")
        if len(ing._buffer) < n:
            w = time.thread_time()
            time.sleep(0.0005)  # no data yet (the feeder is behind): not the client's CPU
            idle += time.thread_time() - w
    mqtt_us = (time.thread_time() - t0 - idle) / n * 1e6
    feeder.join()
    client._out_packet.clear()

    t0 = time.thread_time()
    works = []
    done = 0
    while done < n:
        items = ing._collect()
        msgs = [m for m, _, _ in items]
        works.append((ing._seq, items, msgs, ing._batch(msgs)))
        ing._seq += 1
        done += len(items)
    decode_us = (time.thread_time() - t0) / n * 1e6
    stored = sum(len(w[3].columns.value) + len(w[3].uplinks) for w in works)
    rejects = sum(len(w[3].rejects) for w in works)
    if stored != n or rejects:
        raise RuntimeError(f"decoded {stored} readings and {rejects} rejects of {n}")

    # as under loop_start: the acks are queued for the MQTT thread, which writes them
    client._thread = threading.current_thread()
    t0 = time.thread_time()
    for seq, items, _, _ in works:
        ing._acknowledge(seq, items)
    ack_us = (time.thread_time() - t0) / n * 1e6
    a.close()
    b.close()
    return {"mqtt": mqtt_us, "decode": decode_us, "ack": ack_us}


def run_round(pythonpath: Path | None, n: int, batch: int, read_bytes: int) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, __file__, "--child", str(n), str(batch), str(read_bytes)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, os.environ.get("PYTHONPATH") or str(ROOT))
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--read-bytes",
        type=int,
        default=4096,
        help="at most this many bytes per socket read (live traffic: a few KiB a loop turn)",
    )
    ap.add_argument("--ref", help="a commit to compare with, alternating round by round")
    args = ap.parse_args()
    variants: dict[str, Path | None] = {"working tree": ROOT}
    tmp = None
    if args.ref:
        tmp = tempfile.TemporaryDirectory(prefix="quartier-ref-")
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.ref, "quartier"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        variants = {f"ref {args.ref}": Path(tmp.name), "working tree": ROOT}
    print(f"bench/ingest_cpu.py {' '.join(sys.argv[1:])}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()}")
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, path in variants.items():
            res = run_round(path, args.messages, args.batch, args.read_bytes)
            results[name].append(res)
            print(
                f"  round {r + 1} {name:>20}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in res.items())
                + f" µs/msg (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    print(f"\nµs of CPU per message, median of {args.rounds} rounds ({args.messages:,} messages):")
    med: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        med[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        med[name]["total"] = sum(med[name].values())
        print(f"  {name:>20}: " + ", ".join(f"{k} {v:.2f}" for k, v in med[name].items()))
    if args.ref:
        ref, cur = med[f"ref {args.ref}"], med["working tree"]
        print("  working tree / ref: " + ", ".join(f"{k} {cur[k] / ref[k]:.2f}" for k in cur))
    print(f"load average at the end: {os.getloadavg()}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
