"""rip (in progress)."""
