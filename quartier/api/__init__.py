"""The HTTP API: SensorThings v1.1, indicators, coverage and maps. ``create_app`` is the factory."""
