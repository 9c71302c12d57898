"""self_taught (in progress)."""
