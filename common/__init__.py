"""Pieces shared by every kraken-p2p component: config, digests, the hash ring, the
content-addressed store, HTTP errors, logging and metrics."""
