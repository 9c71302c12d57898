"""rewire (in progress)."""
