"""`convscope adversarial` (to be written)."""
