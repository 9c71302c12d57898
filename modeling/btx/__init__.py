"""btx (in progress)."""
