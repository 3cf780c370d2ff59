"""Build-index: tag -> digest mappings (a later issue)."""
