"""``quartier sta-mqtt``: SensorThings over MQTT (publishes new entities, stores Observations
published to ``v1.1/…`` topics)."""

from __future__ import annotations

import typer

from quartier.cli.common import console, fail, settings, stop_on_signals, user_errors
from quartier.cli.connect import broker_url, database_url

app = typer.Typer()


@app.command("sta-mqtt")
def sta_mqtt() -> None:
    """Publish every new Observation and entity on the broker's SensorThings topics (v1.1/…)
    and store Observations clients publish there (Ctrl-C stops). Needs
    QUARTIER_STA__MQTT_PUBLISH=true for every process that stores data."""
    from quartier.sta_mqtt.service import StaMqtt

    s = settings()
    if not s.sta.mqtt_publish:
        raise fail(
            "SensorThings over MQTT is off: set QUARTIER_STA__MQTT_PUBLISH=true for this and "
            "every process that stores data (quartier ingest, serve, import)"
        )
    with user_errors(s):
        own = s.for_service("ingest")  # stores created Observations as the ingester does
        database_url(own)
        broker_url(s)
        service = StaMqtt(own)
    stop_on_signals(service.stop_event)
    console.print("SensorThings MQTT: publishing on v1.1/… (Ctrl-C stops)")
    with user_errors(s):
        service.run()
