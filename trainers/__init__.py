"""loopwright.trainers (see DESIGN.md)."""
