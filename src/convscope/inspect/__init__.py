"""Inspecting: filters, activation maps, feature space, maximally activating patches."""
