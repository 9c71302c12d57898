"""reverse (in progress)."""
