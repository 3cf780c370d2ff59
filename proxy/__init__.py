"""Proxy: the push and pull side of the Docker Registry v2 / OCI distribution API. Blobs
(manifests included) go to the origin ring, tags to build-index."""
