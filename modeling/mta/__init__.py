"""mta (in progress)."""
