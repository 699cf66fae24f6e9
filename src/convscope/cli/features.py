"""convscope CLI commands (features)."""
