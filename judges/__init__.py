"""loopwright.judges (see DESIGN.md)."""
