"""meta_rewarding (in progress)."""
