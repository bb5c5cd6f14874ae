"""The peer of ``bench/api.py --peer``: django-ogc-sensorthings 1.2.0 (PyPI), an independent
Python SensorThings v1.1 implementation (Django + django-ninja, on PostgreSQL).

    .venv/bin/python bench/peer_setup.py      # only make the virtualenv and the Django project

Bench tooling, not a dependency of Quartier: the peer lives in its own virtualenv under
``bench/.peer/venv`` (gitignored; made here with ``python3.11 -m venv`` and pip), with a small
Django project written to ``bench/.peer/project`` (settings: PostgreSQL, its own database on the
server ``bench/api.py`` uses, the Django ORM backend and the dataArray extension, ``MAX_TOP``
1000 so the weekly query's ``$top=1000`` is not cut to the default 100, DEBUG off). Its tables
are made by its own migrations and filled by COPY with the same world ``bench/api.py`` loads
into Quartier (the same Things at the same points, the same Datastreams, the same readings),
which is far quicker than its API (about 2,300 observations/s through dataArray, issue #13).
It is served by uvicorn (ASGI: the peer's views are async) with the same number of worker
processes as Quartier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

if TYPE_CHECKING:
    from api import Server

HERE = Path(__file__).resolve().parent
PEER = HERE / ".peer"
VENV = PEER / "venv"
PROJECT = PEER / "project"
PACKAGES = ["django-ogc-sensorthings==1.2.0", "psycopg2-binary==2.9.*", "uvicorn==0.54.0"]
APP = "sensorthings_v1_1_django_backend"  # the Django ORM backend's app label: table prefix
MAX_TOP = 1000


@dataclass
class Peer:
    db_url: str
    datastreams: list[str]  # UUIDs, in bench/api.py's order (thing k's datastream j)
    max_top: int = MAX_TOP
    info: dict[str, Any] = field(default_factory=dict)


def ensure_venv() -> Path:
    """The peer's virtualenv, made once; returns its python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    have = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    if "django-ogc-sensorthings==1.2.0" not in have or "uvicorn" not in have:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


SETTINGS = '''\
"""Written by bench/peer_setup.py: django-ogc-sensorthings 1.2.0 for bench/api.py --peer."""
import json
import os
from uuid import UUID

_DB = json.loads(os.environ["PEER_DB"])
SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "sensorthings.versions.v1_1",
    "sensorthings.versions.v1_1.backends.django",
    "sensorthings.versions.v1_1.extensions.dataarray",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _DB["dbname"],
        "USER": _DB["user"],
        "PASSWORD": _DB.get("password", ""),
        "HOST": _DB["host"],
        "PORT": _DB["port"],
        "CONN_MAX_AGE": 60,
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SENSORTHINGS_V1_1_SERVICE_URL = os.environ.get("PEER_SERVICE_URL", "http://127.0.0.1:8000/sensorthings")
SENSORTHINGS_V1_1_BACKEND_ADAPTER = (
    "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"
)
SENSORTHINGS_V1_1_MAX_TOP = {max_top}
SENSORTHINGS_V1_1_ID_TYPE = UUID  # its ORM backend's ids
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
'''

URLS = """\
import os

from django.urls import include, path

if os.environ.get("PEER_PATCH_ORDERBY") == "1":
    # 1.2.0 orders by the OData name turned snake_case ("phenomenon_time"), which its model
    # does not have (phenomenon_time_begin): every $orderby=phenomenonTime is a 500. The same
    # renaming its $filter already applies, applied to $orderby too (issue #13: "its ordering
    # bug patched").
    from django.db.models import F
    from pydantic.alias_generators import to_snake
    from sensorthings.types import OrderByDirection
    from sensorthings.versions.v1_1.backends.django import adapter

    def _orderby(orderby=None):
        out = []
        for fld in orderby or []:
            names = [adapter.ODATA_FIELD_REMAP.get(to_snake(p), to_snake(p)) for p in fld.path]
            expr = F("__".join(names))
            asc = fld.direction == OrderByDirection.ASC
            out.append(expr.asc() if asc else expr.desc())
        return out

    adapter.DjangoBaseBackendAdapter.build_orderby_arg = staticmethod(_orderby)

urlpatterns = [path("sensorthings/", include("sensorthings.versions.v1_1.urls"))]
"""

ASGI = """\
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
"""

MANAGE = """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.management import execute_from_command_line  # noqa: E402

execute_from_command_line(sys.argv)
"""


def write_project() -> None:
    PROJECT.mkdir(parents=True, exist_ok=True)
    (PROJECT / "settings.py").write_text(SETTINGS.replace("{max_top}", str(MAX_TOP)))
    (PROJECT / "urls.py").write_text(URLS)
    (PROJECT / "asgi.py").write_text(ASGI)
    (PROJECT / "manage.py").write_text(MANAGE)


def _env(db_url: str, service_url: str = "", patched: bool = True) -> dict[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    env = dict(os.environ) | {"PEER_DB": json.dumps({k: str(v) for k, v in info.items()})}
    env["PEER_PATCH_ORDERBY"] = "1" if patched else "0"
    if service_url:
        env["PEER_SERVICE_URL"] = service_url
    return env


def _table(name: str) -> str:
    return f"{APP}_{name}"


def load(
    db_url: str,
    things: int,
    per_thing: int,
    steps: int,
    step: timedelta,
    start: datetime,
    points: list[tuple[float, float]],
) -> list[str]:
    """The world of ``bench/api.py`` in the peer's tables; returns the datastream UUIDs."""
    ds_ids: list[str] = []
    with psycopg.connect(db_url) as conn:
        sensor, op = str(uuid.uuid4()), str(uuid.uuid4())
        conn.execute(
            f"insert into {_table('sensor')} (id, name, description, encoding_type, metadata)"
            " values (%s, 'bench', '', 'text/html', '')",
            (sensor,),
        )
        conn.execute(
            f"insert into {_table('observedproperty')} (id, name, definition, description)"
            " values (%s, 'pm25', 'bench:pm25', '')",
            (op,),
        )
        fois: list[str] = []
        for k, (x, y) in enumerate(points[:things]):
            thing, loc, foi = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
            point = json.dumps({"type": "Point", "coordinates": [x, y]})
            conn.execute(
                f"insert into {_table('thing')} (id, name, description) values (%s, %s, 'bench')",
                (thing, f"thing {k}"),
            )
            conn.execute(
                f"insert into {_table('location')} (id, name, description, encoding_type,"
                " location) values (%s, %s, '', 'application/geo+json', %s)",
                (loc, f"location {k}", point),
            )
            conn.execute(
                f"insert into {_table('location_things')} (location_id, thing_id) values (%s, %s)",
                (loc, thing),
            )
            conn.execute(
                f"insert into {_table('featureofinterest')} (id, name, description,"
                " encoding_type, feature) values (%s, %s, '', 'application/geo+json', %s)",
                (foi, f"location {k}", point),
            )
            for j in range(per_thing):
                # phenomenonTime and resultTime left null, as a Datastream created through its
                # API has them: 1.2.0 renders a stored one as an instant, which its own response
                # model refuses (every read of that Datastream is a 500)
                ds = str(uuid.uuid4())
                conn.execute(
                    f"insert into {_table('datastream')} (id, name, description,"
                    " unit_of_measurement, observation_type, thing_id, sensor_id,"
                    " observed_property_id) values (%s, %s, '', %s, %s, %s, %s, %s)",
                    (
                        ds,
                        f"thing {k} ds {j}",
                        json.dumps(
                            {"name": "µg/m³", "symbol": "µg/m³", "definition": "ucum:ug/m3"}
                        ),
                        "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                        thing,
                        sensor,
                        op,
                    ),
                )
                ds_ids.append(ds)
                fois.append(foi)
        # the readings, as bench/store.py's generator makes them (same values per instant)
        copy = (
            f"copy {_table('observation')} (id, phenomenon_time_begin, result, result_time,"
            " datastream_id, feature_of_interest_id) from stdin"
        )
        step_s = step.total_seconds()
        with conn.cursor().copy(copy) as cp:
            for s in range(steps):
                t = start + timedelta(seconds=s * step_s)
                hours = t.hour
                for n, (ds, foi) in enumerate(zip(ds_ids, fois, strict=True)):
                    v = round(
                        (n % 50) + 5.0 * float(np.sin(hours / 24.0 * 2 * np.pi)) + (s % 100) / 10,
                        2,
                    )
                    cp.write_row((str(uuid.uuid4()), t, v, t, ds, foi))
        conn.commit()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("vacuum (analyze)")
    return ds_ids


def setup(
    admin_url: str,
    things: int,
    per_thing: int,
    steps: int,
    step: timedelta,
    start: datetime,
    points: list[tuple[float, float]],
) -> Peer:
    """A fresh database for the peer on ``admin_url``'s server, its schema by its migrations,
    and the world loaded."""
    python = ensure_venv()
    write_project()
    name = f"bench_peer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    db_url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    subprocess.run(
        [str(python), "manage.py", "migrate", "-v", "0"],
        cwd=PROJECT,
        env=_env(db_url),
        check=True,
    )
    ds_ids = load(db_url, things, per_thing, steps, step, start, points)
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = ("django-ogc-sensorthings", "django==", "django-ninja", "odata-query", "uvicorn")
    info = {"packages": [p for p in freeze if p.lower().startswith(wanted)]}
    return Peer(db_url, ds_ids, info=info)


@contextmanager
def server(peer: Peer, workers: int, patched: bool = True) -> Iterator[Server]:
    """The peer under uvicorn with ``workers`` processes on a free port (``patched``: its
    ``$orderby`` bug fixed, see ``URLS``); yields its service root (…/sensorthings/v1.1) and
    pid."""
    sys.path.insert(0, str(HERE))
    from api import Server, free_port, wait_http  # bench/api.py

    port = free_port()
    root = f"http://127.0.0.1:{port}/sensorthings"
    cmd = [
        str(VENV / "bin" / "uvicorn"),
        "asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--timeout-worker-healthcheck",
        "60",
    ]
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT, env=_env(peer.db_url, root, patched), stdout=log_file, stderr=log_file
        )
        try:
            try:
                wait_http(f"{root}/v1.1", proc)
            except RuntimeError as exc:
                proc.kill()
                log_file.seek(0)
                err = log_file.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"peer: {exc}\n{err}") from None
            yield Server(f"{root}/v1.1", proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    ensure_venv()
    write_project()
    print(f"peer virtualenv {VENV}, project {PROJECT}")
