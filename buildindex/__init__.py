"""Build-index: tag -> digest mappings in Redis, shared by every instance; tag types check
that an image is complete in the origin ring before its tag may point at it; tags are
replicated to remote clusters."""
