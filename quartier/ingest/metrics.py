"""Prometheus metrics of an ingester, read from its counters when scraped (nothing is counted
twice on the hot path)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quartier.ingest.mqtt import Ingester


class IngestCollector(Collector):
    def __init__(self, ingester: Ingester) -> None:
        self.ingester = ingester

    def collect(self) -> Iterator[Metric]:
        ing = self.ingester
        st = ing.stats
        for name, doc, value in (
            ("received", "MQTT messages received", st.received),
            ("stored", "observations newly stored", st.stored),
            ("duplicates", "observations already stored (redeliveries)", st.duplicates),
            ("speedtests", "speed tests stored", st.speedtests),
            ("batches", "batches committed", st.batches),
            ("db_errors", "database errors (retried)", st.db_errors),
        ):
            yield CounterMetricFamily(f"quartier_ingest_{name}", doc, value=value)
        rejected = CounterMetricFamily(
            "quartier_ingest_rejected", "messages kept in ingest_reject", labels=["reason"]
        )
        for reason, n in sorted(st.rejected_by_reason.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield GaugeMetricFamily(
            "quartier_ingest_batch_size", "messages in the last batch", value=st.last_batch_size
        )
        yield GaugeMetricFamily(
            "quartier_ingest_batch_seconds",
            "time to store the last batch",
            value=st.last_batch_ms / 1000,
        )
        yield CounterMetricFamily(
            "quartier_ingest_batch_seconds_total",
            "time spent storing batches",
            value=st.batch_ms_total / 1000,
        )
        yield GaugeMetricFamily(
            "quartier_ingest_lag_seconds",
            "arrival to commit, oldest message of the last batch",
            value=st.lag_s,
        )
        yield GaugeMetricFamily(
            "quartier_ingest_buffer_messages",
            "messages received, waiting for the writer",
            value=ing.buffered(),
        )
        yield GaugeMetricFamily(
            "quartier_ingest_buffer_capacity",
            "buffer size before backpressure",
            value=ing.cfg.buffer_max,
        )
        yield GaugeMetricFamily(
            "quartier_ingest_connected",
            "1 while connected to the broker and subscribed (SUBACK granted every topic)",
            value=1.0 if ing.connected.is_set() else 0.0,
        )


def serve_metrics(ingester: Ingester, port: int, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on ``addr:port`` in a daemon thread."""
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingester))
    start_http_server(port, addr=addr, registry=registry)
