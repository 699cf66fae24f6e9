"""convscope CLI commands (train)."""
