"""loopwright.tools (see DESIGN.md)."""
