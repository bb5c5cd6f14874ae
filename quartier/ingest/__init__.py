"""Ingest: MQTT to store. Decoders are pure; the writer batches, validates and stores."""
