"""common.metrics: the event-loop lag every component exports."""

from __future__ import annotations

import time

import gevent
from flask import Flask

from common import metrics as m


def test_a_blocked_event_loop_shows_in_the_lag_histogram_and_the_log(caplog):
    metrics = m.Metrics("test")
    app = Flask("test")
    metrics.instrument(app)
    app.add_url_rule("/", "index", lambda: "ok")

    def count(le: str | None = None) -> float:
        if le is None:
            return metrics.registry.get_sample_value("kraken_event_loop_lag_seconds_count") or 0.0
        return metrics.registry.get_sample_value("kraken_event_loop_lag_seconds_bucket", {"le": le}) or 0.0

    assert count() == 0  # measured from the first request on
    assert app.test_client().get("/").status_code == 200
    gevent.sleep(m.LOOP_TICK * 3.5)
    # An idle loop's ticks are on time, unless this process was held up on a busy host: so
    # the late ones are counted before the block rather than taken to be none.
    assert count() >= 2
    try:
        gevent.sleep(0.01)  # the watcher is now sleeping on its timer
        late = count() - count("0.25")
        time.sleep(m.LOOP_TICK + m.LOOP_LAG_WARN + 0.1)  # a call that blocks the loop
        gevent.sleep(0.01)
        assert count() - count("0.25") == late + 1
        assert "the event loop ran" in caplog.text
        body, _ = metrics.render()
        assert b"kraken_event_loop_lag_seconds_bucket" in body
        # One watcher per Metrics however many requests come.
        watcher = metrics._lag_watch
        app.test_client().get("/")
        assert metrics._lag_watch is watcher
    finally:
        metrics._lag_watch.kill()


def test_the_watcher_ends_with_its_metrics():
    import gc

    metrics = m.Metrics("test")
    metrics.watch_loop()
    watcher = metrics._lag_watch
    gevent.sleep(m.LOOP_TICK * 1.5)
    assert not watcher.dead
    del metrics
    gc.collect()
    watcher.join(timeout=m.LOOP_TICK * 3)
    assert watcher.dead
