"""Test databases cloned from a migrated template.

``CREATE DATABASE … STRATEGY FILE_COPY`` copies the template's files and takes a checkpoint; the
default (``WAL_LOG``, PostgreSQL 15) writes every block of the template through the WAL. The
template is 17 MB (PostGIS's spatial_ref_sys is most of it) and a test database is made for
most tests, so the file copy matters. Measured on a test server (fsync off) of this machine kind,
10 clones each, load average 11.6: median WAL_LOG 2.5–3.0 s, FILE_COPY 0.8–1.4 s.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql


def clone(admin_url: str, template: str, prefix: str = "quartier_t") -> str:
    """A new database copied from ``template``; its URL (the admin URL's server and user)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {} strategy file_copy").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop(admin_url: str, url: str) -> None:
    """Drop the database of ``url`` (made by :func:`clone`), closing its sessions."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(str(name)))
        )
