"""One exception root for the project; HTTP translation happens at the edges (httputil)."""


class KrakenError(Exception):
    """Root of every error kraken-p2p raises on purpose."""


class ConfigError(KrakenError):
    """A configuration file or value is wrong."""


class InvalidDigest(KrakenError):
    """A string is not a well-formed digest."""


class DigestMismatch(KrakenError):
    """Content does not hash to the digest it was announced with."""

    def __init__(self, expected, actual):
        super().__init__(f"digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class NotFound(KrakenError):
    """The thing asked for exists nowhere this component can see."""


class Conflict(KrakenError):
    """The thing being created exists already."""


class Unavailable(KrakenError):
    """A dependency (peer, origin, tracker, disk) cannot serve the request right now."""


class DownloadError(Unavailable):
    """A P2P download failed or timed out."""


class Pending(KrakenError):
    """The thing exists but is not ready yet (an origin is fetching it); ask again later."""


class Rejected(KrakenError):
    """Another component refused a request as invalid (HTTP 400 from it)."""
