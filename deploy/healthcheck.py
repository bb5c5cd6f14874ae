"""Health check of Quartier's containers (the image's ``quartier-healthcheck``), standard library
only: ``quartier-healthcheck [--timeout SECONDS] URL [METRIC]`` exits 0 when ``URL`` answers 200
and, with ``METRIC``, when that Prometheus metric in the answer is 1 (the ingester's
``quartier_ingest_connected`` on its ``--metrics-port``); 1 otherwise, with one line saying why.
The API's ``/health`` answers 503 when the database or the broker does not answer."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def check(url: str, metric: str | None = None, timeout: float = 4.0) -> str | None:
    """None when healthy, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url} did not answer ({exc})"
    if metric is None:
        return None
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name == metric:
            return None if float(value) == 1 else f"{metric} is {value}"
    return f"{metric} not in {url}"


def main(argv: list[str]) -> int:
    args = argv[1:]
    timeout = 4.0  # within the compose file's 5 s
    if args[:1] == ["--timeout"] and len(args) > 1:
        timeout, args = float(args[1]), args[2:]
    if len(args) not in (1, 2):
        sys.stderr.write("usage: quartier-healthcheck [--timeout SECONDS] URL [METRIC]\n")
        return 2
    reason = check(args[0], args[1] if len(args) == 2 else None, timeout)
    if reason is not None:
        sys.stderr.write(f"unhealthy: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
