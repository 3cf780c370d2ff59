"""Agent: one per host. Fetches blobs over BitTorrent, verifies, caches and seeds them."""
