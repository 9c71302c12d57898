"""loopwright.kernels (see DESIGN.md)."""
