"""The invert recipe (to be written)."""
