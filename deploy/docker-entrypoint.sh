#!/bin/sh
# Entry point of Quartier's image: `quartier ARGS...`. An ingester started without its own
# QUARTIER_INGEST__CLIENT_ID gets one made of the container's host name, so that
# `docker compose up --scale ingest=3` runs three MQTT sessions in one shared subscription
# (the same client id would make the broker drop one session for the next). The host name is
# the container's id: it stays the same across restarts of that container, so a restarted
# ingester takes over its own persistent session and what the broker kept for it.
set -eu
if [ "${1:-}" = "ingest" ] && [ -z "${QUARTIER_INGEST__CLIENT_ID:-}" ]; then
    QUARTIER_INGEST__CLIENT_ID="quartier-ingest-$(hostname)"
    export QUARTIER_INGEST__CLIENT_ID
fi
exec quartier "$@"
