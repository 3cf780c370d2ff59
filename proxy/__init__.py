"""Proxy: the Docker Registry v2 push and pull API (a later issue)."""
