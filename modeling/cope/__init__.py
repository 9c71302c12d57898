"""cope (in progress)."""
