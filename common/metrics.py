"""Prometheus metrics: one registry per app (no process globals, so tests can build many)."""

from __future__ import annotations

import logging
import time
import weakref

import gevent
from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# The event loop's lag: how late it runs a timer set LOOP_TICK s ahead. A call that blocks the
# loop (an fsync, a synchronous libtorrent call) holds up every request of the process
# meanwhile; session 9 found an agent stalling 7-45 ms at a time that way. Lags above
# LOOP_LAG_WARN are logged too. Each timer is a wake-up of the process: at 0.1 s they cost
# an agent 8-12 % of its event loop's CPU in a 20-agent swarm on a busy host (session 22);
# at 0.25 s a stall still shows in the histogram, in proportion to its length.
LOOP_TICK = 0.25
LOOP_LAG_WARN = 0.25


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
        self.loop_lag = Histogram(
            "kraken_event_loop_lag_seconds",
            f"How late the event loop ran a timer set {LOOP_TICK} s ahead (blocking calls, CPU starvation).",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self._lag_watch: gevent.Greenlet | None = None

    def watch_loop(self) -> None:
        """Starts measuring the event loop's lag, once. Called from the first request: an
        app may be built before gunicorn forks its worker, and a greenlet does not survive
        the fork."""
        if self._lag_watch is None or self._lag_watch.dead:
            self._lag_watch = gevent.spawn(_watch_loop, weakref.ref(self))

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
            self.watch_loop()

        @app.after_request
        def _observe(response):
            t0 = g.pop("_kraken_t0", None)
            if t0 is not None:
                endpoint = request.url_rule.rule if request.url_rule else "unmatched"
                self.requests.labels(endpoint, request.method, str(response.status_code)).observe(
                    time.perf_counter() - t0
                )
            return response


def _watch_loop(ref: weakref.ref) -> None:
    """Observes the loop's lag every LOOP_TICK s for as long as the Metrics lives (tests
    build many apps; each watcher ends with its own)."""
    while True:
        t0 = time.monotonic()
        gevent.sleep(LOOP_TICK)
        lag = max(0.0, time.monotonic() - t0 - LOOP_TICK)
        metrics = ref()
        if metrics is None:
            return
        metrics.loop_lag.observe(lag)
        if lag > LOOP_LAG_WARN:
            log.warning("%s: the event loop ran %.0f ms late (a blocking call, or the host's CPUs are "
                        "saturated)", metrics.component, lag * 1e3)
        del metrics
