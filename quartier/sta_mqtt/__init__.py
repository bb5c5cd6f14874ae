"""The SensorThings MQTT extension (OGC 18-088 v1.1, A.7 create and A.8 receive updates) on the
platform's broker: ``topics`` (pure: topics, ``$select``, subscriptions), ``notice`` (what
every writer announces after a commit), ``service`` (``quartier sta-mqtt``: publishes what was
stored, stores what clients publish). See docs/mqtt.md and docs/security.md."""
