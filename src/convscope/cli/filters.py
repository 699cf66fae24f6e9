"""convscope CLI commands (filters)."""
