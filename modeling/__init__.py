"""loopwright.modeling (see DESIGN.md)."""
