"""Prometheus metrics: one registry per app (no process globals, so tests can build many)."""

from __future__ import annotations

import time

from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, component: str):
        self.component = component
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "kraken_http_request_seconds",
            "HTTP request latency by endpoint and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )

    def counter(self, name: str, doc: str, labels=()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels=()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, labels=(), buckets=Histogram.DEFAULT_BUCKETS) -> Histogram:
        return Histogram(name, doc, list(labels), registry=self.registry, buckets=buckets)

    def torrent_gauges(self, session) -> None:
        """Gauges read from a torrents.session.TorrentSession when scraped."""
        for key, doc in (
            ("sent_payload_bytes", "Payload bytes this host uploaded to peers."),
            ("recv_payload_bytes", "Payload bytes this host downloaded from peers."),
            ("hash_failures", "Pieces that failed their hash check."),
        ):
            self.gauge(f"kraken_torrent_{key}", doc).set_function(lambda k=key: session.counters[k])
        self.gauge("kraken_torrent_active", "Torrents in the session.").set_function(lambda: len(session.infohashes()))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def instrument(self, app: Flask) -> None:
        @app.before_request
        def _start():
            g._kraken_t0 = time.perf_counter()

        @app.after_request
        def _observe(response):
            t0 = g.pop("_kraken_t0", None)
            if t0 is not None:
                endpoint = request.url_rule.rule if request.url_rule else "unmatched"
                self.requests.labels(endpoint, request.method, str(response.status_code)).observe(
                    time.perf_counter() - t0
                )
            return response
