from torrents.config import TorrentConfig
from torrents.settings import RAMP_SECONDS, fresh_tick, ramp_bytes, session_settings

TICK_MS = TorrentConfig().tick_ms


def test_only_a_capped_session_starts_with_the_fresh_tick():
    assert fresh_tick(TorrentConfig()) == 0 and ramp_bytes(TorrentConfig()) == 0
    assert session_settings(TorrentConfig(), "ua")["tick_interval"] == TICK_MS
    for capped in (TorrentConfig(upload_rate_limit=1 << 20), TorrentConfig(download_rate_limit=1 << 20)):
        assert fresh_tick(capped) == capped.fresh_tick_ms < TICK_MS
        assert session_settings(capped, "ua")["tick_interval"] == capped.fresh_tick_ms
        assert ramp_bytes(capped) == RAMP_SECONDS << 20


def test_an_explicit_tick_or_none_wins():
    told = TorrentConfig(upload_rate_limit=1 << 20, settings={"tick_interval": 100})
    assert fresh_tick(told) == 0 and session_settings(told, "ua")["tick_interval"] == 100
    off = TorrentConfig(upload_rate_limit=1 << 20, fresh_tick_ms=0)
    assert fresh_tick(off) == 0 and session_settings(off, "ua")["tick_interval"] == TICK_MS


def test_an_uncapped_session_ticks_at_the_configured_tick_throughout():
    assert session_settings(TorrentConfig(tick_ms=25), "ua")["tick_interval"] == 25
