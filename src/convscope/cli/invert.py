"""`convscope invert` (to be written)."""
