"""The adversarial recipe (to be written)."""
