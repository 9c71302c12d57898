"""pathfinder (in progress)."""
