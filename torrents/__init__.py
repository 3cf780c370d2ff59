"""Everything that touches libtorrent lives here, behind a small interface:
`metainfo` builds deterministic .torrent files (pure Python), `session.TorrentSession`
downloads and seeds them. Nothing outside this package imports libtorrent."""
