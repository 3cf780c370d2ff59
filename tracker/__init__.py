"""Tracker: standard BitTorrent HTTP announce/scrape with locality-ordered peers in Redis,
and the metainfo endpoint backed by the origin ring."""
