"""`convscope dream` (to be written)."""
