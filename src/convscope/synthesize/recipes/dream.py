"""The dream recipe (to be written)."""
