"""loopwright.agents (see DESIGN.md)."""
