"""Simulated city devices: a deterministic sensor fleet and crowdsourced speed tests published over
MQTT exactly as real devices do (``docs/mqtt.md``)."""
