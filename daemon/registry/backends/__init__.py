"""Record stores for the registry's rows: ``sqlite`` (one node)."""
